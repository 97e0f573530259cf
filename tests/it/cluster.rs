//! Two or three replicas in one process sharing key state, revocations and rate limits
//! through a real redis-server, including an outage and a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral::actors::cluster_sync::{ClusterSync, SyncOptions};
use corral::config::{Config, KeyPoolConfig};
use corral::keys::{Clock, KeyOutcome, KeyPools, StoredKey};
use corral::metrics::Metrics;
use corral::ratelimit::RateLimiter;

use crate::support_redis::RedisServer;

const POOL: &str = "cloud";

struct Replica {
    pools: KeyPools,
    sync: ClusterSync,
    metrics: Arc<Metrics>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sync.stop();
    }
}

fn opts() -> SyncOptions {
    SyncOptions {
        every: Duration::from_millis(100),
        redis_timeout: Duration::from_millis(500),
        heartbeat_ttl_secs: 2,
        backoff_max: Duration::from_millis(300),
    }
}

fn replica(url: &str, id: &str, keys: usize) -> Replica {
    let cfg = Config {
        key_pools: vec![KeyPoolConfig {
            name: POOL.into(),
            penalty: Duration::from_secs(30),
            ..KeyPoolConfig::default()
        }],
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::new());
    let pools = KeyPools::empty(&cfg, &metrics, Clock::now());
    pools.add_keys(
        POOL,
        (0..keys)
            .map(|i| StoredKey {
                id: format!("k{i}"),
                secret: format!("sk-test-secret-{i:04}"),
                enabled: true,
                category: None,
            })
            .collect(),
    );
    let sync = ClusterSync::start_with(url, id.into(), pools.clone(), metrics.clone(), opts());
    Replica {
        pools,
        sync,
        metrics,
    }
}

/// Polls `f` every 10 ms; the time it took, or None after `limit`.
async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn key_state(pools: &KeyPools, id: &str) -> String {
    pools
        .key(id)
        .and_then(|k| k["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Replicas a, b and c without keys, connected to Redis at `url`.
async fn three_keyless_replicas(url: &str) -> Vec<Replica> {
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|id| replica(url, id, 0))
        .collect();
    all_up(&replicas.iter().collect::<Vec<_>>()).await;
    replicas
}

async fn all_up(replicas: &[&Replica]) {
    let up = wait_until(Duration::from_secs(10), || {
        replicas.iter().all(|r| r.sync.is_up())
    })
    .await;
    assert!(up.is_some(), "replicas did not connect to redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_and_disables_reach_the_other_replica_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url(), "a", 4), replica(&redis.url(), "b", 4));
    all_up(&[&a, &b]).await;

    let lease = a.pools.pick(POOL, "m").unwrap();
    let id = lease.id.clone();
    a.pools.report(
        &lease,
        KeyOutcome::RateLimited {
            retry_after: None,
            body: r#"{"error":"you (x) have reached your weekly usage limit"}"#.into(),
        },
    );
    let took = wait_until(Duration::from_secs(3), || {
        key_state(&b.pools, &id) == "penalized"
    })
    .await
    .expect("B never saw the penalty");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for _ in 0..20 {
        assert_ne!(
            b.pools.pick(POOL, "m").unwrap().id,
            id,
            "B used a penalized key"
        );
    }
    let until = b.pools.key(&id).unwrap()["penalty_until"].clone();
    assert!(until.is_string(), "{until}");

    assert!(b.pools.set_enabled("k3", false));
    let took = wait_until(Duration::from_secs(3), || {
        key_state(&a.pools, "k3") == "disabled"
    })
    .await
    .expect("A never saw the disable");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        a.metrics
            .render()
            .contains(r#"corral_key_state{pool="cloud",state="disabled"} 1"#)
    );
    assert!(a.pools.set_enabled("k3", true));
    wait_until(Duration::from_secs(1), || {
        key_state(&b.pools, "k3") == "active"
    })
    .await
    .expect("B never saw the enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_the_other_replica_within_a_second() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url(), "a", 0), replica(&redis.url(), "b", 0));
    all_up(&[&a, &b]).await;
    let mut on_a = a.sync.revocations();
    let mut on_b = b.sync.revocations();
    let start = Instant::now();
    a.sync.publish_revocation("mallory");
    assert_eq!(
        on_a.recv().await.unwrap(),
        "mallory",
        "the local cache hears at once"
    );
    let user = tokio::time::timeout(Duration::from_secs(1), on_b.recv())
        .await
        .expect("B did not hear the revocation within 1 s")
        .unwrap();
    assert_eq!(user, "mallory");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_merged_so_selection_sees_the_whole_cluster() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url(), "a", 2), replica(&redis.url(), "b", 2));
    all_up(&[&a, &b]).await;
    // A hammers: its picks alternate between both keys; B must see those requests.
    for _ in 0..40 {
        let l = a.pools.pick(POOL, "m").unwrap();
        a.pools.report(&l, KeyOutcome::Ok { tokens: 100 });
    }
    let seen = wait_until(Duration::from_secs(3), || {
        let list = b.pools.list(Some(POOL));
        list["pools"][0]["keys"].as_array().is_some_and(|keys| {
            keys.iter()
                .all(|k| k["requests_2h"] == 20 && k["tokens_2h"] == 2000)
        })
    })
    .await;
    assert!(seen.is_some(), "B: {}", b.pools.list(Some(POOL)));
    // B now uses k0 a lot; A must steer its next pick to k1.
    for _ in 0..10 {
        let l = b.pools.pick(POOL, "m").unwrap();
        assert!(l.id == "k0" || l.id == "k1");
    }
    let before = b.pools.key("k0").unwrap()["requests_2h"].as_u64().unwrap();
    let after_a = wait_until(Duration::from_secs(3), || {
        a.pools.key("k0").unwrap()["requests_2h"].as_u64() == Some(before)
    })
    .await;
    assert!(after_a.is_some(), "A: {}", a.pools.list(Some(POOL)));

    // A replica started later loads the counters from Redis.
    let c = replica(&redis.url(), "c", 2);
    all_up(&[&c]).await;
    let loaded = wait_until(Duration::from_secs(3), || {
        c.pools.key("k0").unwrap()["requests_2h"].as_u64() == Some(before)
    })
    .await;
    assert!(loaded.is_some(), "C: {}", c.pools.list(Some(POOL)));
    assert_eq!(c.sync.live_replicas(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_share_one_budget() {
    let redis = RedisServer::start();
    let replicas = three_keyless_replicas(&redis.url()).await;
    wait_until(Duration::from_secs(5), || {
        replicas.iter().all(|r| r.sync.live_replicas() == 3)
    })
    .await
    .expect("every replica counts three");

    // 60 requests per (compressed) window of 2 s, hammered from three replicas for 2.75
    // windows: the shared log must admit exactly 3 × 60 = 180 (±5 %).
    let window = Duration::from_secs(2);
    let allowed = Arc::new(AtomicU32::new(0));
    let local = Arc::new(AtomicU32::new(0));
    let run_for = window * 11 / 4;
    let mut tasks = Vec::new();
    for r in &replicas {
        let limiter = RateLimiter::new(Some(r.sync.clone()), r.metrics.clone())
            .with_window(window)
            .with_redis_timeout(Duration::from_secs(1));
        let (allowed, local) = (allowed.clone(), local.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < run_for {
                if let Ok(res) = limiter.check("carol", Some(60), None, 0).await {
                    allowed.fetch_add(1, Ordering::Relaxed);
                    if !res.is_shared() {
                        local.fetch_add(1, Ordering::Relaxed);
                    }
                    limiter.reconcile(res, 0).await;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = allowed.load(Ordering::Relaxed);
    eprintln!("three limiters admitted {n} requests in 2.75 windows of 60");
    assert_eq!(
        local.load(Ordering::Relaxed),
        0,
        "every decision came from Redis"
    );
    assert!((171..=189).contains(&n), "admitted {n}, expected 180 ± 5 %");
    let refused: u64 = replicas
        .iter()
        .map(|r| r.metrics.rate_limited.with_label_values(&["user"]).get())
        .sum();
    assert!(refused > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reserved_and_reconciled_in_redis() {
    let redis = RedisServer::start();
    let a = replica(&redis.url(), "a", 0);
    all_up(&[&a]).await;
    let limiter = RateLimiter::new(Some(a.sync.clone()), a.metrics.clone())
        .with_redis_timeout(Duration::from_secs(1));
    let r = limiter.check("dave", None, Some(1000), 900).await.unwrap();
    assert!(r.is_shared());
    let err = limiter
        .check("dave", None, Some(1000), 200)
        .await
        .unwrap_err();
    let wait = err.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    limiter.reconcile(r, 100).await;
    let r = limiter.check("dave", None, Some(1000), 200).await.unwrap();
    assert!(r.is_shared());
}

/// A parallel burst from three replicas sharing Redis against `tpm = 1000`: each request
/// reserves its input estimate plus its output allowance (150 tokens here), nobody is
/// exempt, and what was admitted in the window stays within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_token_burst_from_three_replicas_holds_to_tpm() {
    let redis = RedisServer::start();
    let replicas = three_keyless_replicas(&redis.url()).await;
    let mut tasks = Vec::new();
    for r in &replicas {
        for _ in 0..10 {
            let limiter = RateLimiter::new(Some(r.sync.clone()), r.metrics.clone())
                .with_redis_timeout(Duration::from_secs(1));
            tasks.push(tokio::spawn(async move {
                match limiter.check("frank", None, Some(1000), 150).await {
                    Ok(res) => {
                        assert!(res.is_shared(), "decided in Redis");
                        // Keep the reservation: the answer used all of it.
                        limiter.reconcile(res, 150).await;
                        150
                    }
                    Err(_) => 0,
                }
            }));
        }
    }
    let mut admitted = 0u64;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    eprintln!(
        "30 parallel requests of 150 tokens from 3 replicas: {admitted} tokens admitted against tpm = 1000"
    );
    assert!(admitted <= 1000, "{admitted} tokens admitted");
    assert_eq!(admitted, 900, "six requests fit");
    let never = RateLimiter::new(Some(replicas[0].sync.clone()), replicas[0].metrics.clone())
        .with_redis_timeout(Duration::from_secs(1));
    let err = never
        .check("gina", None, Some(1000), 1001)
        .await
        .unwrap_err();
    assert!(err.message.contains("never"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_local_shares_and_a_restart_restores_sync() {
    let mut redis = RedisServer::start();
    let (a, b) = (replica(&redis.url(), "a", 4), replica(&redis.url(), "b", 4));
    all_up(&[&a, &b]).await;
    wait_until(Duration::from_secs(5), || a.sync.live_replicas() == 2)
        .await
        .expect("A counts two replicas");
    assert!(a.metrics.render().contains("corral_redis_up 1"));
    let limiter = RateLimiter::new(Some(a.sync.clone()), a.metrics.clone());
    let r = limiter.check("erin", Some(10), None, 0).await.unwrap();
    assert!(r.is_shared());
    limiter.reconcile(r, 0).await;

    redis.stop();
    let down = wait_until(Duration::from_secs(3), || {
        a.metrics.render().contains("corral_redis_up 0")
            && b.metrics.render().contains("corral_redis_up 0")
    })
    .await;
    assert!(down.is_some(), "corral_redis_up never went to 0");
    assert!(!a.sync.is_up());
    // Local fallback: answers at once and enforces this replica's share (10 / 2 replicas).
    let mut admitted = 0;
    for _ in 0..8 {
        let start = Instant::now();
        let answer = limiter.check("erin", Some(10), None, 0).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "check blocked on redis"
        );
        if let Ok(r) = answer {
            assert!(r.is_local());
            admitted += 1;
            limiter.reconcile(r, 0).await;
        }
    }
    assert_eq!(admitted, 5);
    // A penalty decided during the outage is kept for replay.
    let lease = a.pools.pick(POOL, "m").unwrap();
    let id = lease.id.clone();
    a.pools.report(
        &lease,
        KeyOutcome::RateLimited {
            retry_after: None,
            body: String::new(),
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(key_state(&b.pools, &id), "active");

    redis.restart();
    all_up(&[&a, &b]).await;
    assert!(a.metrics.render().contains("corral_redis_up 1"));
    wait_until(Duration::from_secs(3), || {
        key_state(&b.pools, &id) == "penalized"
    })
    .await
    .expect("the outage's penalty reached B after the restart");
    // Live sync is back: a new penalty on B reaches A within a second.
    let lease = b.pools.pick(POOL, "m").unwrap();
    let id = lease.id.clone();
    b.pools.report(
        &lease,
        KeyOutcome::RateLimited {
            retry_after: None,
            body: String::new(),
        },
    );
    let took = wait_until(Duration::from_secs(2), || {
        key_state(&a.pools, &id) == "penalized"
    })
    .await
    .expect("A saw B's penalty");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And the limiter goes back to Redis once its back-off ends.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = limiter.check("erin", Some(10), None, 0).await.unwrap();
    assert!(r.is_shared());
    limiter.reconcile(r, 0).await;
}
