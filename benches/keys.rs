//! Key selection with 100k keys and the latency one Redis rate-limit check adds (p50/p99,
//! each beside a baseline measured in the same run).

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::actors::cluster_sync::ClusterSync;
use corral::config::{Config, KeyPoolConfig};
use corral::keys::{Clock, KeyOutcome, KeyPools, StoredKey};
use corral::metrics::Metrics;
use corral::ratelimit::RateLimiter;
use criterion::Criterion;

const KEYS: usize = 100_000;

fn pools(n: usize) -> KeyPools {
    let cfg = Config {
        key_pools: vec![KeyPoolConfig {
            name: "cloud".into(),
            ..KeyPoolConfig::default()
        }],
        ..Config::default()
    };
    let pools = KeyPools::empty(&cfg, &Metrics::new(), Clock::now());
    let keys = (0..n)
        .map(|i| StoredKey {
            id: format!("k{i}"),
            secret: format!("sk-bench-{i:010}"),
            enabled: true,
            category: None,
        })
        .collect();
    pools.add_keys("cloud", keys);
    pools
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn row(name: &str, (p50, p99): (f64, f64)) {
    println!("{name:<48} p50 {p50:>9.2} µs   p99 {p99:>9.2} µs");
}

fn selection() {
    let pools = pools(KEYS);
    // A quarter of the pool cooling down, as on a bad day.
    for _ in 0..KEYS / 4 {
        if let Ok(l) = pools.pick("cloud", "m") {
            pools.report(
                &l,
                KeyOutcome::RateLimited {
                    retry_after: None,
                    body: String::new(),
                },
            );
        }
    }
    let mut picks = Vec::with_capacity(200_000);
    for i in 0..200_000u64 {
        let t = Instant::now();
        let lease = pools.pick("cloud", "m");
        picks.push(t.elapsed().as_nanos() as u64);
        if let Ok(l) = lease {
            pools.report(&l, KeyOutcome::Ok { tokens: i % 2000 });
        }
    }
    // Baseline: the naive way, a scan for the least-used key on every request.
    let usage: Vec<(u64, u64)> = (0..KEYS as u64).map(|i| (i * 7919 % 1000, i)).collect();
    let mut scans = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        black_box(usage.iter().min());
        scans.push(t.elapsed().as_nanos() as u64);
    }
    println!("\n== key selection, {KEYS} keys in one pool (25 % penalized)");
    row("KeyPools::pick (index)", percentiles(picks));
    row("baseline: linear scan for least usage", percentiles(scans));
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

fn redis_check() {
    let Some(port) = free_port() else { return };
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("\n(redis-server not found: Redis check not measured)");
        return;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async {
        let url = format!("redis://127.0.0.1:{port}/");
        let metrics = Arc::new(Metrics::new());
        let sync = ClusterSync::start(&url, "bench".into(), pools(0), metrics.clone());
        let start = Instant::now();
        while !sync.is_up() && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let limiter = RateLimiter::new(Some(sync.clone()), metrics)
            .with_redis_timeout(Duration::from_secs(1));
        let Some(mut conn) = sync.connection() else {
            return;
        };
        let (mut checks, mut pings, mut local) = (Vec::new(), Vec::new(), 0);
        for i in 0..20_000u32 {
            let user = format!("user{}", i % 100);
            let t = Instant::now();
            let r = limiter
                .check(&user, Some(1_000_000), Some(100_000_000), 500)
                .await;
            checks.push(t.elapsed().as_nanos() as u64);
            if let Ok(r) = r {
                local += u32::from(!r.is_shared());
                limiter.reconcile(r, 450).await;
            }
            let t = Instant::now();
            let _: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
            pings.push(t.elapsed().as_nanos() as u64);
        }
        println!(
            "\n== per-user limit check against a local redis-server ({local} fell back to local)"
        );
        row(
            "RateLimiter::check (rpm + tpm, Lua script)",
            percentiles(checks),
        );
        row(
            "baseline: PING round trip, same connection",
            percentiles(pings),
        );
        sync.stop();
    });
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    selection();
    redis_check();
    let pools = pools(KEYS);
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("pick + report, 100k keys", |b| {
        b.iter(|| {
            if let Ok(l) = pools.pick("cloud", "m") {
                pools.report(&l, KeyOutcome::Ok { tokens: 100 });
            }
        })
    });
    c.final_summary();
}
