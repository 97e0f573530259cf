//! ClusterSync: shares key state, key usage, token revocations and replica liveness through Redis.
//!
//! Three background tasks around one `ConnectionManager` (commands) and one pub/sub
//! connection (events): a publisher (key events and revocations, as they happen), a ticker
//! (heartbeat, usage flush, replica count, `corral_redis_up`) and a subscriber (applies
//! other replicas' events; on every (re)connect replays what failed and resyncs state).
//! Nothing here sits on the request path: when Redis is away every replica keeps serving
//! from its own state and catches up when it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::keys::{KeyEvent, KeyPools, UsageDelta};
use crate::metrics::Metrics;

/// The pub/sub channel every replica listens on.
pub const EVENTS_CHANNEL: &str = "corral:events";
const PENALTY_HASH: &str = "corral:keys:penalty";
const DISABLED_HASH: &str = "corral:keys:disabled";
/// Present while Redis still holds the state replicas wrote; missing after a restart.
const SEEDED_KEY: &str = "corral:keys:seeded";
const REPLICA_PREFIX: &str = "corral:replica:";
/// Usage counters live a little longer than the 2 h window they serve.
const USAGE_TTL_SECS: i64 = 2 * 3600 + 120;
/// Failed publications kept for replay after a reconnect.
const REPLAY_CAP: usize = 10_000;

/// What travels on [`EVENTS_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Wire {
    Key {
        origin: String,
        event: KeyEvent,
    },
    Usage {
        origin: String,
        deltas: Vec<UsageDelta>,
    },
    Revoke {
        origin: String,
        user: String,
    },
}

impl Wire {
    pub fn origin(&self) -> &str {
        match self {
            Wire::Key { origin, .. } | Wire::Usage { origin, .. } | Wire::Revoke { origin, .. } => {
                origin
            }
        }
    }
}

/// Revokes `user`'s tokens on every running replica, from a process without a
/// `ClusterSync` (the `corral users` CLI): one blocking PUBLISH.
pub fn publish_revocation_once(redis_url: &str, user: &str) -> Result<(), String> {
    let wire = Wire::Revoke {
        origin: format!("cli-{}", std::process::id()),
        user: user.to_string(),
    };
    let payload = serde_json::to_string(&wire).map_err(|e| e.to_string())?;
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    redis::cmd("PUBLISH")
        .arg(EVENTS_CHANNEL)
        .arg(payload)
        .query::<i64>(&mut conn)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Timings; the defaults suit production, tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Heartbeat, usage flush and replica count period.
    pub every: Duration,
    /// Bound on each Redis call made by the background tasks.
    pub redis_timeout: Duration,
    /// A replica not heard from for this long no longer counts.
    pub heartbeat_ttl_secs: u64,
    /// Longest wait between two reconnection attempts.
    pub backoff_max: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            every: Duration::from_millis(500),
            redis_timeout: Duration::from_millis(500),
            heartbeat_ttl_secs: 5,
            backoff_max: Duration::from_secs(2),
        }
    }
}

struct Shared {
    replica_id: String,
    conn: Option<ConnectionManager>,
    client: Option<redis::Client>,
    pools: KeyPools,
    metrics: Arc<Metrics>,
    opts: SyncOptions,
    commands_ok: AtomicBool,
    /// The ticker has tried Redis at least once (before that "down" means "unknown").
    checked: AtomicBool,
    subscribed: AtomicBool,
    live: AtomicU32,
    revocations: broadcast::Sender<String>,
    outbox: mpsc::Sender<Wire>,
    replay: Mutex<VecDeque<Wire>>,
    stop: watch::Sender<bool>,
}

/// Handle to the cluster; cheap to clone. With an empty URL every method works locally.
#[derive(Clone)]
pub struct ClusterSync {
    shared: Arc<Shared>,
}

impl ClusterSync {
    /// Starts the background tasks (inside a tokio runtime, e.g. the actix system).
    pub fn start(
        redis_url: &str,
        replica_id: String,
        pools: KeyPools,
        metrics: Arc<Metrics>,
    ) -> ClusterSync {
        ClusterSync::start_with(
            redis_url,
            replica_id,
            pools,
            metrics,
            SyncOptions::default(),
        )
    }

    pub fn start_with(
        redis_url: &str,
        replica_id: String,
        pools: KeyPools,
        metrics: Arc<Metrics>,
        opts: SyncOptions,
    ) -> ClusterSync {
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        if !redis_url.is_empty() && !in_runtime {
            tracing::error!(
                "ClusterSync started outside a tokio runtime; cluster state stays local"
            );
        }
        let url = if in_runtime { redis_url } else { "" };
        let (client, conn) = match connect_lazy(url, &opts) {
            Ok(Some((client, conn))) => (Some(client), Some(conn)),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(error = %e, "redis.url unusable; cluster state stays local");
                (None, None)
            }
        };
        let (revocations, _) = broadcast::channel(1024);
        let (outbox, outbox_rx) = mpsc::channel(4096);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            replica_id,
            conn,
            client,
            pools,
            metrics,
            opts,
            commands_ok: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            live: AtomicU32::new(1),
            revocations,
            outbox,
            replay: Mutex::new(VecDeque::new()),
            stop,
        });
        if shared.conn.is_some() {
            shared.pools.set_clustered(true);
            shared.metrics.redis_up.set(0);
            tokio::spawn(publisher(shared.clone(), outbox_rx));
            tokio::spawn(ticker(shared.clone()));
            tokio::spawn(subscriber(shared.clone()));
        }
        ClusterSync { shared }
    }

    /// True when a Redis URL was configured.
    pub fn is_clustered(&self) -> bool {
        self.shared.conn.is_some()
    }

    /// True while both the command and the pub/sub connection work.
    pub fn is_up(&self) -> bool {
        self.shared.commands_ok.load(Ordering::Relaxed)
            && self.shared.subscribed.load(Ordering::Relaxed)
    }

    /// True once the last background call to Redis failed: callers should not wait on it.
    pub fn is_down(&self) -> bool {
        self.is_clustered()
            && self.shared.checked.load(Ordering::Relaxed)
            && !self.shared.commands_ok.load(Ordering::Relaxed)
    }

    /// Replicas that sent a heartbeat recently (at least 1; the last count while Redis is away).
    pub fn live_replicas(&self) -> u32 {
        self.shared.live.load(Ordering::Relaxed).max(1)
    }

    pub fn replica_id(&self) -> &str {
        &self.shared.replica_id
    }

    /// The command connection, for the rate limiter's script.
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.shared.conn.clone()
    }

    /// User names whose tokens were revoked, on this replica or any other.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.shared.revocations.subscribe()
    }

    /// Revokes `user`'s cached tokens everywhere: here at once, elsewhere through Redis.
    pub fn publish_revocation(&self, user: &str) {
        let _ = self.shared.revocations.send(user.to_string());
        if self.is_clustered() {
            let wire = Wire::Revoke {
                origin: self.shared.replica_id.clone(),
                user: user.to_string(),
            };
            if let Err(mpsc::error::TrySendError::Full(w) | mpsc::error::TrySendError::Closed(w)) =
                self.shared.outbox.try_send(wire)
            {
                remember(&self.shared, w);
            }
        }
    }

    /// Stops the background tasks and removes this replica's heartbeat.
    pub fn stop(&self) {
        let _ = self.shared.stop.send(true);
    }
}

fn connect_lazy(
    url: &str,
    opts: &SyncOptions,
) -> Result<Option<(redis::Client, ConnectionManager)>, redis::RedisError> {
    if url.is_empty() {
        return Ok(None);
    }
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.redis_timeout))
        .set_response_timeout(Some(opts.redis_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(opts.backoff_max);
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
    Ok(Some((client, conn)))
}

/// Runs one Redis call with the task's bound; errors and timeouts become one message.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

fn remember(shared: &Shared, wire: Wire) {
    let mut q = shared.replay.lock();
    if q.len() >= REPLAY_CAP {
        q.pop_front();
    }
    q.push_back(wire);
}

fn key_field(pool: &str, id: &str) -> String {
    format!("{pool}|{id}")
}

fn usage_key(pool: &str, minute: i64) -> String {
    format!("corral:usage:{pool}:{minute}")
}

/// The state write that goes with a published event (so late joiners and reconnects see it).
fn state_write(pipe: &mut redis::Pipeline, event: &KeyEvent) {
    match event {
        KeyEvent::Penalized {
            pool,
            id,
            until_unix_ms,
            strikes,
        } => {
            pipe.hset(
                PENALTY_HASH,
                key_field(pool, id),
                format!("{until_unix_ms}:{strikes}"),
            )
            .ignore();
        }
        KeyEvent::Disabled { pool, id, reason } => {
            let reason = serde_json::to_string(reason).unwrap_or_default();
            pipe.hset(DISABLED_HASH, key_field(pool, id), reason.trim_matches('"'))
                .ignore();
        }
        KeyEvent::Enabled { pool, id } => {
            pipe.hdel(DISABLED_HASH, key_field(pool, id)).ignore();
            pipe.hdel(PENALTY_HASH, key_field(pool, id)).ignore();
        }
    }
}

/// Publishes one message (and its state write) in one round trip.
async fn send_wire(
    shared: &Shared,
    conn: &mut ConnectionManager,
    wire: &Wire,
) -> Result<(), String> {
    let payload = serde_json::to_string(wire).map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    if let Wire::Key { event, .. } = wire {
        state_write(&mut pipe, event);
    }
    pipe.publish(EVENTS_CHANNEL, payload).ignore();
    bounded(shared.opts.redis_timeout, pipe.query_async::<()>(conn)).await
}

async fn publisher(shared: Arc<Shared>, mut outbox: mpsc::Receiver<Wire>) {
    let Some(mut conn) = shared.conn.clone() else {
        return;
    };
    let mut events = shared.pools.events();
    let mut stop = shared.stop.subscribe();
    loop {
        let wire = tokio::select! {
            _ = stop.changed() => return,
            ev = events.recv() => match ev {
                Ok(event) => Wire::Key { origin: shared.replica_id.clone(), event },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // The resync after the next reconnect repairs what was skipped.
                    tracing::warn!(skipped = n, "key events came faster than Redis took them");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            w = outbox.recv() => match w {
                Some(w) => w,
                None => return,
            },
        };
        if let Err(e) = send_wire(&shared, &mut conn, &wire).await {
            tracing::debug!(error = %e, "publish failed; kept for replay");
            remember(&shared, wire);
        }
    }
}

async fn ticker(shared: Arc<Shared>) {
    let Some(mut conn) = shared.conn.clone() else {
        return;
    };
    let mut stop = shared.stop.subscribe();
    let mut every = tokio::time::interval(shared.opts.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = every.tick() => {}
        }
        let ok = tick_once(&shared, &mut conn).await;
        if let Err(e) = &ok {
            if shared.commands_ok.load(Ordering::Relaxed) {
                tracing::warn!(error = %e, "redis unreachable; cluster state is local until it returns");
            }
        }
        shared.commands_ok.store(ok.is_ok(), Ordering::Relaxed);
        shared.checked.store(true, Ordering::Relaxed);
        update_gauge(&shared);
    }
    let key = format!("{REPLICA_PREFIX}{}", shared.replica_id);
    let _ = bounded(
        shared.opts.redis_timeout,
        redis::cmd("DEL").arg(key).query_async::<()>(&mut conn),
    )
    .await;
}

fn update_gauge(shared: &Shared) {
    let up =
        shared.commands_ok.load(Ordering::Relaxed) && shared.subscribed.load(Ordering::Relaxed);
    shared.metrics.redis_up.set(i64::from(up));
}

/// Heartbeat, usage flush and replica count.
async fn tick_once(shared: &Shared, conn: &mut ConnectionManager) -> Result<(), String> {
    let limit = shared.opts.redis_timeout;
    let now_ms = shared.pools.clock().unix_ms(std::time::Instant::now());
    let key = format!("{REPLICA_PREFIX}{}", shared.replica_id);
    let mut heartbeat = redis::cmd("SET");
    heartbeat
        .arg(&key)
        .arg(now_ms)
        .arg("EX")
        .arg(shared.opts.heartbeat_ttl_secs);
    bounded(limit, heartbeat.query_async::<()>(conn)).await?;
    // Usage is only flushed once the subscriber has loaded the cluster's counters, so this
    // replica's own first requests are not counted twice.
    if shared.subscribed.load(Ordering::Relaxed) {
        flush_usage(shared, conn).await?;
    }
    let live = count_replicas(conn, limit).await?;
    shared.live.store(live.max(1), Ordering::Relaxed);
    Ok(())
}

async fn flush_usage(shared: &Shared, conn: &mut ConnectionManager) -> Result<(), String> {
    let deltas = shared.pools.drain_usage();
    if deltas.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for d in &deltas {
        let key = usage_key(&d.pool, d.minute);
        if d.requests > 0 {
            pipe.hincr(&key, format!("{}|r", d.id), d.requests).ignore();
        }
        if d.tokens > 0 {
            pipe.hincr(&key, format!("{}|t", d.id), d.tokens).ignore();
        }
        pipe.expire(&key, USAGE_TTL_SECS).ignore();
    }
    let wire = Wire::Usage {
        origin: shared.replica_id.clone(),
        deltas,
    };
    let payload = serde_json::to_string(&wire).map_err(|e| e.to_string())?;
    pipe.publish(EVENTS_CHANNEL, payload).ignore();
    bounded(shared.opts.redis_timeout, pipe.query_async::<()>(conn)).await
}

async fn count_replicas(conn: &mut ConnectionManager, limit: Duration) -> Result<u32, String> {
    let mut cursor: u64 = 0;
    let mut count = 0u32;
    loop {
        let (next, keys): (u64, Vec<String>) = bounded(
            limit,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{REPLICA_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn),
        )
        .await?;
        count += keys.len() as u32;
        if next == 0 {
            return Ok(count);
        }
        cursor = next;
    }
}

async fn subscriber(shared: Arc<Shared>) {
    let (Some(client), Some(mut conn)) = (shared.client.clone(), shared.conn.clone()) else {
        return;
    };
    let mut stop = shared.stop.subscribe();
    let mut backoff = Duration::from_millis(100);
    let mut bootstrapped = false;
    loop {
        let session = async {
            let mut pubsub = bounded(shared.opts.redis_timeout, client.get_async_pubsub()).await?;
            bounded(shared.opts.redis_timeout, pubsub.subscribe(EVENTS_CHANNEL)).await?;
            resync(&shared, &mut conn, !bootstrapped).await?;
            Ok::<_, String>(pubsub)
        };
        let connected = tokio::select! {
            _ = stop.changed() => return,
            s = session => s,
        };
        match connected {
            Ok(pubsub) => {
                bootstrapped = true;
                backoff = Duration::from_millis(100);
                shared.subscribed.store(true, Ordering::Relaxed);
                update_gauge(&shared);
                tracing::info!("cluster sync connected to redis");
                let mut stream = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = stop.changed() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match msg.get_payload::<String>() {
                        Ok(text) => handle_message(&shared, &text),
                        Err(e) => tracing::debug!(error = %e, "unreadable cluster message"),
                    }
                }
                shared.subscribed.store(false, Ordering::Relaxed);
                update_gauge(&shared);
                tracing::warn!("cluster sync lost its redis subscription; reconnecting");
            }
            Err(e) => {
                shared.subscribed.store(false, Ordering::Relaxed);
                update_gauge(&shared);
                tracing::debug!(error = %e, ?backoff, "cluster sync cannot reach redis yet");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.opts.backoff_max);
    }
}

/// Applies one message from another replica.
pub fn handle_message_for(
    pools: &KeyPools,
    revocations: &broadcast::Sender<String>,
    me: &str,
    text: &str,
) {
    let wire: Wire = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a malformed cluster message");
            return;
        }
    };
    if wire.origin() == me {
        return;
    }
    match wire {
        Wire::Key { event, .. } => pools.apply_remote(&event),
        Wire::Usage { deltas, .. } => pools.apply_remote_usage(&deltas),
        Wire::Revoke { user, .. } => {
            let _ = revocations.send(user);
        }
    }
}

fn handle_message(shared: &Shared, text: &str) {
    handle_message_for(&shared.pools, &shared.revocations, &shared.replica_id, text);
}

/// After every (re)connect: replay what failed, seed a Redis that lost its state, then take
/// every penalty and disable the cluster knows; the first time also load usage counters.
async fn resync(shared: &Shared, conn: &mut ConnectionManager, first: bool) -> Result<(), String> {
    let limit = shared.opts.redis_timeout;
    let pending: Vec<Wire> = shared.replay.lock().drain(..).collect();
    for (i, wire) in pending.iter().enumerate() {
        if let Err(e) = send_wire(shared, conn, wire).await {
            let mut q = shared.replay.lock();
            for w in pending[i..].iter().rev() {
                q.push_front(w.clone());
            }
            return Err(e);
        }
    }
    let seeded: Option<String> = bounded(
        limit,
        redis::cmd("SET")
            .arg(SEEDED_KEY)
            .arg(&shared.replica_id)
            .arg("NX")
            .query_async(conn),
    )
    .await?;
    if seeded.is_some() {
        let snapshot = shared.pools.snapshot_events();
        if !snapshot.is_empty() {
            let mut pipe = redis::pipe();
            snapshot.iter().for_each(|ev| state_write(&mut pipe, ev));
            bounded(limit, pipe.query_async::<()>(conn)).await?;
        }
        tracing::info!(
            entries = snapshot.len(),
            "seeded redis with this replica's key state"
        );
    }
    let (penalties, disabled): (HashMap<String, String>, HashMap<String, String>) = bounded(
        limit,
        redis::pipe()
            .hgetall(PENALTY_HASH)
            .hgetall(DISABLED_HASH)
            .query_async(conn),
    )
    .await?;
    let now_ms = shared.pools.clock().unix_ms(std::time::Instant::now());
    let mut expired = Vec::new();
    for (field, value) in &penalties {
        let Some(ev) = parse_penalty(field, value) else {
            continue;
        };
        match &ev {
            KeyEvent::Penalized { until_unix_ms, .. } if *until_unix_ms <= now_ms => {
                expired.push(field.clone())
            }
            _ => shared.pools.apply_remote(&ev),
        }
    }
    for (field, reason) in &disabled {
        if let Some(ev) = parse_disabled(field, reason) {
            shared.pools.apply_remote(&ev);
        }
    }
    if !expired.is_empty() {
        let _ = bounded(
            limit,
            redis::cmd("HDEL")
                .arg(PENALTY_HASH)
                .arg(expired)
                .query_async::<()>(conn),
        )
        .await;
    }
    if first {
        load_usage(shared, conn, now_ms).await?;
    }
    Ok(())
}

fn parse_penalty(field: &str, value: &str) -> Option<KeyEvent> {
    let (pool, id) = field.split_once('|')?;
    let (until, strikes) = value.split_once(':')?;
    Some(KeyEvent::Penalized {
        pool: pool.to_string(),
        id: id.to_string(),
        until_unix_ms: until.parse().ok()?,
        strikes: strikes.parse().ok()?,
    })
}

fn parse_disabled(field: &str, reason: &str) -> Option<KeyEvent> {
    let (pool, id) = field.split_once('|')?;
    Some(KeyEvent::Disabled {
        pool: pool.to_string(),
        id: id.to_string(),
        reason: serde_json::from_str(&format!("\"{reason}\"")).ok()?,
    })
}

/// Loads the cluster's per-minute counters of the last 2 h (once, at start).
async fn load_usage(
    shared: &Shared,
    conn: &mut ConnectionManager,
    now_ms: i64,
) -> Result<(), String> {
    let current = now_ms.div_euclid(60_000);
    let minutes: Vec<i64> = (current - crate::keys::state::WINDOW_MINUTES + 1..=current).collect();
    for pool in shared.pools.pool_names() {
        let mut pipe = redis::pipe();
        for m in &minutes {
            pipe.hgetall(usage_key(&pool, *m));
        }
        let maps: Vec<HashMap<String, u64>> =
            bounded(shared.opts.redis_timeout * 4, pipe.query_async(conn)).await?;
        let deltas = usage_deltas(&pool, &minutes, maps);
        shared.pools.apply_remote_usage(&deltas);
    }
    Ok(())
}

/// Turns `{ "<id>|r": n, "<id>|t": n }` hashes into deltas.
fn usage_deltas(pool: &str, minutes: &[i64], maps: Vec<HashMap<String, u64>>) -> Vec<UsageDelta> {
    let mut out = Vec::new();
    for (minute, map) in minutes.iter().zip(maps) {
        let mut per_key: HashMap<String, (u64, u64)> = HashMap::new();
        for (field, n) in map {
            let Some((id, kind)) = field.rsplit_once('|') else {
                continue;
            };
            let e = per_key.entry(id.to_string()).or_default();
            match kind {
                "r" => e.0 += n,
                "t" => e.1 += n,
                _ => {}
            }
        }
        out.extend(
            per_key
                .into_iter()
                .map(|(id, (requests, tokens))| UsageDelta {
                    pool: pool.to_string(),
                    id,
                    minute: *minute,
                    requests,
                    tokens,
                }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::state::DisableReason;

    #[test]
    fn wire_round_trips_and_ignores_own_messages() {
        let w = Wire::Key {
            origin: "a".into(),
            event: KeyEvent::Penalized {
                pool: "cloud".into(),
                id: "k1".into(),
                until_unix_ms: 5,
                strikes: 2,
            },
        };
        let text = serde_json::to_string(&w).unwrap();
        assert!(text.contains(r#""type":"key""#), "{text}");
        assert_eq!(serde_json::from_str::<Wire>(&text).unwrap(), w);
        let cfg = crate::config::Config::default();
        let pools = KeyPools::empty(&cfg, &Metrics::new(), crate::keys::Clock::now());
        let (tx, mut rx) = broadcast::channel(4);
        let revoke = serde_json::to_string(&Wire::Revoke {
            origin: "b".into(),
            user: "bob".into(),
        })
        .unwrap();
        handle_message_for(&pools, &tx, "a", &revoke);
        assert_eq!(rx.try_recv().unwrap(), "bob");
        handle_message_for(&pools, &tx, "b", &revoke);
        assert!(rx.try_recv().is_err(), "own echo is ignored");
        handle_message_for(&pools, &tx, "a", "not json");
    }

    #[test]
    fn state_fields_parse() {
        assert_eq!(
            parse_penalty("cloud|k|1", "123:4"),
            Some(KeyEvent::Penalized {
                pool: "cloud".into(),
                id: "k|1".into(),
                until_unix_ms: 123,
                strikes: 4
            })
        );
        assert_eq!(parse_penalty("nobar", "1:1"), None);
        assert_eq!(
            parse_disabled("cloud|k", "failures"),
            Some(KeyEvent::Disabled {
                pool: "cloud".into(),
                id: "k".into(),
                reason: DisableReason::Failures
            })
        );
        assert_eq!(parse_disabled("cloud|k", "bogus"), None);
    }

    #[test]
    fn usage_hashes_become_deltas() {
        let map: HashMap<String, u64> = [
            ("k1|r".to_string(), 3),
            ("k1|t".to_string(), 90),
            ("k2|r".to_string(), 1),
        ]
        .into();
        let mut d = usage_deltas("cloud", &[7], vec![map]);
        d.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].id.as_str(), d[0].minute, d[0].requests, d[0].tokens),
            ("k1", 7, 3, 90)
        );
        assert_eq!((d[1].requests, d[1].tokens), (1, 0));
    }

    #[tokio::test]
    async fn empty_url_is_local() {
        let cfg = crate::config::Config::default();
        let pools = KeyPools::empty(&cfg, &Metrics::new(), crate::keys::Clock::now());
        let sync = ClusterSync::start("", "r1".into(), pools, Arc::new(Metrics::new()));
        assert!(!sync.is_clustered());
        assert_eq!(sync.live_replicas(), 1);
        let mut rx = sync.revocations();
        sync.publish_revocation("alice");
        assert_eq!(rx.recv().await.unwrap(), "alice");
    }
}
