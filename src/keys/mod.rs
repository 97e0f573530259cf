//! Upstream API key pools: the handle the proxy uses to pick keys and report how they fared.
//!
//! Each pool is a [`pool::KeyPool`] (an ordered index over [`state::KeyState`]s) behind its
//! own mutex. Picking is a lookup in that index, O(log n), never a round of messages.

pub mod import;
pub mod pool;
pub mod probe;
pub mod state;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Metrics;

pub use import::{ImportReport, parse_keys, secret_prefix};
pub use pool::{KeyEvent, KeyPool, PickError, UsageDelta};
pub use state::{Clock, KeyOutcome, PoolPolicy};

/// A key as the database holds it. `Debug` never shows the secret.
#[derive(Clone)]
pub struct StoredKey {
    pub id: String,
    pub secret: String,
    pub enabled: bool,
    pub category: Option<String>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("id", &self.id)
            .field("secret", &secret_prefix(&self.secret))
            .field("enabled", &self.enabled)
            .field("category", &self.category)
            .finish()
    }
}

/// The id of a key that came from a keys file: stable across replicas and restarts, and
/// reveals nothing of the secret.
pub fn derive_key_id(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("f-{hex}")
}

/// One key handed to one upstream attempt. Report its outcome with [`KeyPools::report`].
#[derive(Clone)]
pub struct KeyLease {
    pub pool: String,
    pub id: String,
    secret: Arc<str>,
    pool_idx: usize,
    key_idx: pool::KeyIdx,
}

impl KeyLease {
    /// The key to send upstream (`Authorization: Bearer …`). Never log it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Safe to log and show: `sk-ab12…`.
    pub fn prefix(&self) -> String {
        secret_prefix(&self.secret)
    }
}

impl fmt::Debug for KeyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLease")
            .field("pool", &self.pool)
            .field("id", &self.id)
            .field("prefix", &self.prefix())
            .finish()
    }
}

struct PoolEntry {
    name: String,
    pool: Mutex<KeyPool>,
    /// `corral_key_state{pool, state}` for active, penalized, disabled.
    gauges: [IntGauge; 3],
}

struct Inner {
    pools: Vec<PoolEntry>,
    by_name: HashMap<String, usize>,
    clock: Clock,
    events: broadcast::Sender<KeyEvent>,
    clustered: AtomicBool,
    /// `corral_rate_limited_total{scope="key"}`: upstream 429s on a pooled key.
    key_limited: IntCounter,
}

/// Every key pool of the gateway; cheap to clone.
#[derive(Clone)]
pub struct KeyPools {
    inner: Arc<Inner>,
}

impl KeyPools {
    /// Builds the pools of `cfg` and loads each pool's `keys_file` (a missing or unreadable
    /// file is logged and leaves the pool to the database's keys).
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> KeyPools {
        let pools = KeyPools::empty(cfg, &metrics, Clock::now());
        for p in &cfg.key_pools {
            let Some(path) = &p.keys_file else { continue };
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let report = parse_keys(&text);
                    for l in &report.lines {
                        if let import::LineOutcome::Invalid { reason } = l.outcome {
                            tracing::warn!(pool = %p.name, file = %path.display(), line = l.line, reason, "skipping a line of the keys file");
                        }
                    }
                    let keys = report
                        .keys
                        .into_iter()
                        .map(|k| StoredKey {
                            id: derive_key_id(&k.secret),
                            secret: k.secret,
                            enabled: true,
                            category: None,
                        })
                        .collect::<Vec<_>>();
                    tracing::info!(pool = %p.name, file = %path.display(), keys = keys.len(), "loaded keys file");
                    pools.add_keys(&p.name, keys);
                }
                Err(e) => {
                    tracing::error!(pool = %p.name, file = %path.display(), error = %e, "cannot read keys file");
                }
            }
        }
        pools
    }

    /// Pools with no keys and a given clock (tests and benches).
    pub fn empty(cfg: &Config, metrics: &Metrics, clock: Clock) -> KeyPools {
        let mut pools = Vec::new();
        let mut by_name = HashMap::new();
        for p in &cfg.key_pools {
            let gauges = ["active", "penalized", "disabled"]
                .map(|s| metrics.key_state.with_label_values(&[p.name.as_str(), s]));
            by_name.insert(p.name.clone(), pools.len());
            pools.push(PoolEntry {
                name: p.name.clone(),
                pool: Mutex::new(KeyPool::new(&p.name, PoolPolicy::from(p), clock)),
                gauges,
            });
        }
        for e in &pools {
            e.gauges.iter().for_each(|g| g.set(0));
        }
        let (events, _) = broadcast::channel(4096);
        KeyPools {
            inner: Arc::new(Inner {
                pools,
                by_name,
                clock,
                events,
                clustered: AtomicBool::new(false),
                key_limited: metrics.rate_limited.with_label_values(&["key"]),
            }),
        }
    }

    pub fn clock(&self) -> Clock {
        self.inner.clock
    }

    pub fn pool_names(&self) -> Vec<String> {
        self.inner.pools.iter().map(|p| p.name.clone()).collect()
    }

    /// Adds keys from the database (or updates their state when already known).
    pub fn add_keys(&self, pool: &str, keys: Vec<StoredKey>) {
        let Some(entry) = self.entry(pool) else {
            tracing::warn!(pool, "keys for an unknown pool ignored");
            return;
        };
        let now = Instant::now();
        let mut p = entry.pool.lock();
        for k in keys {
            p.upsert(&k.id, &k.secret, k.enabled, k.category, now);
        }
        set_gauges(entry, &p);
    }

    /// The active key with the least recent usage (cluster-wide when clustered) that may
    /// serve `model`. `RateLimited` with `retry_after` when every usable key is cooling
    /// down; `NoCapacity` when none is usable at all.
    pub fn pick(&self, pool: &str, model: &str) -> Result<KeyLease, GatewayError> {
        self.pick_at(pool, model, Instant::now())
    }

    /// [`pick`](Self::pick) passing over keys this request already saw refused.
    pub fn pick_avoiding(
        &self,
        pool: &str,
        model: &str,
        refused: &[KeyLease],
    ) -> Result<KeyLease, GatewayError> {
        let except: Vec<pool::KeyIdx> = refused.iter().map(|k| k.key_idx).collect();
        self.pick_except_at(pool, model, &except, Instant::now())
    }

    pub fn pick_at(&self, pool: &str, model: &str, now: Instant) -> Result<KeyLease, GatewayError> {
        self.pick_except_at(pool, model, &[], now)
    }

    fn pick_except_at(
        &self,
        pool: &str,
        model: &str,
        except: &[pool::KeyIdx],
        now: Instant,
    ) -> Result<KeyLease, GatewayError> {
        let Some(&pool_idx) = self.inner.by_name.get(pool) else {
            return Err(GatewayError::new(
                ErrorKind::NoCapacity,
                format!("no key pool named `{pool}`"),
            ));
        };
        let entry = &self.inner.pools[pool_idx];
        let mut p = entry.pool.lock();
        let result = p.pick_except(model, now, except);
        set_gauges(entry, &p);
        drop(p);
        match result {
            Ok(k) => Ok(KeyLease {
                pool: entry.name.clone(),
                id: k.id,
                secret: k.secret,
                pool_idx,
                key_idx: k.idx,
            }),
            Err(PickError::AllPenalized(wait)) => Err(GatewayError::new(
                ErrorKind::RateLimited,
                format!("every key of pool `{pool}` is rate limited upstream"),
            )
            .with_retry_after(wait.max(std::time::Duration::from_secs(1)))),
            Err(PickError::NoKeys) => Err(GatewayError::new(
                ErrorKind::NoCapacity,
                format!("no usable key in pool `{pool}` for model `{model}`"),
            )),
        }
    }

    /// How the upstream answered the request made with `lease`.
    pub fn report(&self, lease: &KeyLease, outcome: KeyOutcome) {
        self.report_at(lease, outcome, Instant::now());
    }

    pub fn report_at(&self, lease: &KeyLease, outcome: KeyOutcome, now: Instant) {
        let Some(entry) = self.inner.pools.get(lease.pool_idx) else {
            return;
        };
        if matches!(outcome, KeyOutcome::RateLimited { .. }) {
            self.inner.key_limited.inc();
        }
        let mut p = entry.pool.lock();
        let event = p.report(lease.key_idx, &outcome, now);
        set_gauges(entry, &p);
        drop(p);
        if let Some(ev) = event {
            match &ev {
                KeyEvent::Disabled { .. } => {
                    tracing::warn!(pool = %lease.pool, key = %lease.id, prefix = %lease.prefix(), "key disabled after consecutive failures");
                }
                KeyEvent::Penalized { until_unix_ms, .. } => {
                    tracing::info!(pool = %lease.pool, key = %lease.id, until_unix_ms, "key penalized after 429");
                }
                KeyEvent::Enabled { .. } => {}
            }
            self.publish(ev);
        }
    }

    /// The `/admin/api/keys` answer, for one pool or all.
    pub fn list(&self, pool: Option<&str>) -> Value {
        let now = Instant::now();
        let pools: Vec<Value> = self
            .inner
            .pools
            .iter()
            .filter(|e| pool.is_none_or(|n| n == e.name))
            .map(|e| {
                let mut p = e.pool.lock();
                p.advance(now);
                set_gauges(e, &p);
                p.to_json(now)
            })
            .collect();
        json!({ "pools": pools })
    }

    /// One key object (`POST /admin/api/keys/{id}/enable` answers with it).
    pub fn key(&self, id: &str) -> Option<Value> {
        let now = Instant::now();
        self.inner.pools.iter().find_map(|e| {
            let p = e.pool.lock();
            p.idx_of(id).map(|idx| p.key_json(idx, now))
        })
    }

    /// Manual enable/disable, shared with the cluster. False when no pool has `id`.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> bool {
        let now = Instant::now();
        for e in &self.inner.pools {
            let mut p = e.pool.lock();
            let Some(idx) = p.idx_of(id) else { continue };
            let ev = p.set_enabled(idx, enabled, now);
            set_gauges(e, &p);
            drop(p);
            tracing::info!(pool = %e.name, key = id, enabled, "key state set by an operator");
            self.publish(ev);
            return true;
        }
        false
    }

    /// Releases penalties that ran out and slides usage windows so gauges stay current
    /// between requests (the KeyActor calls this on a timer).
    pub fn tick(&self, now: Instant) {
        for e in &self.inner.pools {
            let mut p = e.pool.lock();
            p.advance(now);
            set_gauges(e, &p);
        }
    }

    /// Keys disabled after refused credentials, as (pool, id, secret), for the re-probe.
    pub fn failure_disabled(&self) -> Vec<(String, String, Arc<str>)> {
        let mut out = Vec::new();
        for e in &self.inner.pools {
            let p = e.pool.lock();
            out.extend(
                p.failure_disabled()
                    .into_iter()
                    .map(|(id, secret)| (e.name.clone(), id, secret)),
            );
        }
        out
    }

    /// Re-enables a key a probe found accepted, unless an operator changed it meanwhile.
    pub fn reenable_probed(&self, pool: &str, id: &str) -> bool {
        let Some(entry) = self.entry(pool) else {
            return false;
        };
        let mut p = entry.pool.lock();
        let event = p.reenable_probed(id, Instant::now());
        set_gauges(entry, &p);
        drop(p);
        match event {
            Some(ev) => {
                tracing::info!(pool, key = %id, "key re-enabled: the upstream accepts it again");
                self.publish(ev);
                true
            }
            None => false,
        }
    }

    /// A disable the database recorded (reason and time), restored at start-up.
    pub fn restore_disabled(&self, id: &str, reason: state::DisableReason, since: Instant) {
        let now = Instant::now();
        for e in &self.inner.pools {
            let mut p = e.pool.lock();
            if p.idx_of(id).is_some() {
                p.restore_disabled(id, reason, since, now);
                set_gauges(e, &p);
                return;
            }
        }
    }

    /// State changes made on this replica, for ClusterSync (and anyone persisting them).
    pub fn events(&self) -> broadcast::Receiver<KeyEvent> {
        self.inner.events.subscribe()
    }

    fn publish(&self, ev: KeyEvent) {
        // No receiver (no cluster) is fine: the change is already in effect here.
        let _ = self.inner.events.send(ev);
    }

    /// A change decided on another replica.
    pub fn apply_remote(&self, ev: &KeyEvent) {
        let (KeyEvent::Penalized { pool, .. }
        | KeyEvent::Disabled { pool, .. }
        | KeyEvent::Enabled { pool, .. }) = ev;
        let Some(entry) = self.entry(pool) else {
            return;
        };
        let mut p = entry.pool.lock();
        p.apply_event(ev, Instant::now());
        set_gauges(entry, &p);
    }

    /// Usage recorded on other replicas.
    pub fn apply_remote_usage(&self, deltas: &[UsageDelta]) {
        let now = Instant::now();
        for e in &self.inner.pools {
            let mine: Vec<&UsageDelta> = deltas.iter().filter(|d| d.pool == e.name).collect();
            if mine.is_empty() {
                continue;
            }
            let mut p = e.pool.lock();
            for d in mine {
                p.apply_usage(&d.id, d.minute, d.requests, d.tokens, now);
            }
        }
    }

    /// Turns on collection of usage deltas for the cluster.
    pub fn set_clustered(&self, on: bool) {
        self.inner.clustered.store(on, Ordering::Relaxed);
        for e in &self.inner.pools {
            e.pool.lock().track_pending(on);
        }
    }

    /// Usage recorded here since the last call.
    pub fn drain_usage(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for e in &self.inner.pools {
            out.extend(e.pool.lock().drain_pending());
        }
        out
    }

    /// Running penalties and disabled keys of every pool.
    pub fn snapshot_events(&self) -> Vec<KeyEvent> {
        let now = Instant::now();
        let mut out = Vec::new();
        for e in &self.inner.pools {
            out.extend(e.pool.lock().snapshot_events(now));
        }
        out
    }

    /// Runs `f` on the named pool under its lock (tests and benches).
    pub fn with_pool<R>(&self, pool: &str, f: impl FnOnce(&mut KeyPool) -> R) -> Option<R> {
        let entry = self.entry(pool)?;
        let mut p = entry.pool.lock();
        let r = f(&mut p);
        set_gauges(entry, &p);
        Some(r)
    }

    fn entry(&self, pool: &str) -> Option<&PoolEntry> {
        self.inner
            .by_name
            .get(pool)
            .and_then(|&i| self.inner.pools.get(i))
    }
}

fn set_gauges(entry: &PoolEntry, p: &KeyPool) {
    let c = p.counts();
    entry.gauges[0].set(c.active);
    entry.gauges[1].set(c.penalized);
    entry.gauges[2].set(c.disabled);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPoolConfig;
    use std::time::Duration;

    fn config(keys_file: Option<std::path::PathBuf>) -> Config {
        Config {
            key_pools: vec![KeyPoolConfig {
                name: "cloud".into(),
                keys_file,
                ..KeyPoolConfig::default()
            }],
            ..Config::default()
        }
    }

    #[test]
    fn loads_keys_file_and_lists_the_admin_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apikeys.txt");
        std::fs::write(
            &path,
            "# keys\r\nsk-aaaaaaaaaaaa1\r\nx@y----pw----sess----sk-bbbbbbbbbbbb2\r\n",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let pools = KeyPools::new(&config(Some(path)), metrics.clone());
        let list = pools.list(None);
        let pool = &list["pools"][0];
        assert_eq!(pool["name"], "cloud");
        assert_eq!(pool["active"], 2);
        let key = &pool["keys"][0];
        for field in [
            "id",
            "prefix",
            "state",
            "penalty_until",
            "requests_2h",
            "tokens_2h",
            "last_used",
            "category",
        ] {
            assert!(key.get(field).is_some(), "missing {field}");
        }
        assert_eq!(key["id"], derive_key_id("sk-aaaaaaaaaaaa1"));
        let text = list.to_string() + &metrics.render();
        assert!(!text.contains("sk-aaaaaaaaaaaa1") && !text.contains("sk-bbbbbbbbbbbb2"));
        assert!(
            metrics
                .render()
                .contains(r#"corral_key_state{pool="cloud",state="active"} 2"#)
        );
    }

    #[test]
    fn pick_report_errors_and_gauges() {
        let metrics = Arc::new(Metrics::new());
        let pools = KeyPools::empty(&config(None), &metrics, Clock::now());
        let err = pools.pick("cloud", "m").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoCapacity);
        pools.add_keys(
            "cloud",
            vec![StoredKey {
                id: "1".into(),
                secret: "sk-secret-one-111".into(),
                enabled: true,
                category: None,
            }],
        );
        let mut events = pools.events();
        let now = Instant::now();
        let lease = pools.pick_at("cloud", "m", now).unwrap();
        assert_eq!(lease.secret(), "sk-secret-one-111");
        assert_eq!(lease.prefix(), "sk-secr…");
        assert!(!format!("{lease:?}").contains("sk-secret-one-111"));
        pools.report_at(
            &lease,
            KeyOutcome::RateLimited {
                retry_after: None,
                body: String::new(),
            },
            now,
        );
        let err = pools.pick_at("cloud", "m", now).unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
        assert!(matches!(events.try_recv(), Ok(KeyEvent::Penalized { .. })));
        assert!(
            metrics
                .render()
                .contains(r#"corral_rate_limited_total{scope="key"} 1"#)
        );
        assert!(
            metrics
                .render()
                .contains(r#"corral_key_state{pool="cloud",state="penalized"} 1"#)
        );
        assert!(pools.set_enabled("1", false));
        assert!(!pools.set_enabled("nope", false));
        assert_eq!(
            pools.pick("cloud", "m").unwrap_err().kind,
            ErrorKind::NoCapacity
        );
        assert!(
            metrics
                .render()
                .contains(r#"corral_key_state{pool="cloud",state="disabled"} 1"#)
        );
        assert_eq!(pools.key("1").unwrap()["state"], "disabled");
    }
}
