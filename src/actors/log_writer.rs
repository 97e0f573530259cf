//! LogWriter: request-log rows from handlers to the database, batched, off the async workers.
//!
//! Handlers call [`LogSink::submit`], which only tries to push onto a bounded channel:
//! it never blocks or awaits. One dedicated thread drains the channel into batches (up to
//! [`BATCH_ROWS`] rows gathered for [`GATHER`]), writes each in one transaction
//! (idempotent on `request_id`, usage aggregates upserted alongside) and, while the
//! database is down, retries the same batch with backoff: rows stay queued, and only
//! what overflows the queue is dropped, counted in `corral_log_dropped_total`.
//! A thread rather than an actor: the work is blocking, and a plain thread needs no
//! actix system (the CLI and benchmarks use it too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LoggingConfig;
use crate::metrics::Metrics;
use crate::store::logs::{self, LogRow};
use crate::store::{Store, StoreError, now};

pub use crate::store::logs::RequestRecord;

/// Most rows written in one transaction.
pub const BATCH_ROWS: usize = 4000;
/// How long the writer waits for more rows once one arrives. It sleeps rather than
/// waiting on the channel, so a busy gateway does not wake it once per row.
pub const GATHER: Duration = Duration::from_millis(50);
/// How long an idle writer waits on the channel before doing housekeeping.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest one write attempt waits for a connection.
const ATTEMPT_MAX: Duration = Duration::from_secs(5);
/// At most one "queue full" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Shared {
    metrics: Arc<Metrics>,
    closing: AtomicBool,
    /// When closing: give up on an unreachable database after this instant.
    deadline: Mutex<Option<Instant>>,
    started: Instant,
    /// Milliseconds since `started` of the last overflow warning (+1; 0 = never).
    last_warn_ms: AtomicU64,
    dropped_since_warn: AtomicU64,
    /// Every row this writer dropped, for `shutdown`'s answer.
    dropped_total: AtomicU64,
    /// Set when `shutdown` gave up waiting and counted every unwritten row as dropped: the
    /// writer, possibly still inside a database call, then counts nothing more. The lock
    /// makes that hand-over exact (no row counted twice, none forgotten).
    abandoned: Mutex<bool>,
}

impl Shared {
    fn dropped(&self, n: u64, why: &str) {
        self.metrics.log_dropped.inc_by(n);
        self.dropped_total.fetch_add(n, Ordering::Relaxed);
        self.dropped_since_warn.fetch_add(n, Ordering::Relaxed);
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let count = self.dropped_since_warn.swap(0, Ordering::Relaxed);
            tracing::warn!(dropped = count, reason = why, "request log rows dropped");
        }
    }

    /// Runs the writer's accounting for rows it finished with, unless `shutdown` already
    /// counted them.
    fn account(&self, f: impl FnOnce(&Self)) {
        let abandoned = self.abandoned.lock().unwrap_or_else(|e| e.into_inner());
        if !*abandoned {
            f(self);
        }
    }

    /// Counts every row not yet written as dropped and stops the writer's own counting.
    fn abandon(&self) {
        let mut abandoned = self.abandoned.lock().unwrap_or_else(|e| e.into_inner());
        if !*abandoned {
            *abandoned = true;
            let left = self.metrics.log_queue_depth.get();
            if left > 0 {
                self.metrics.log_queue_depth.sub(left);
                self.dropped(
                    left as u64,
                    "log writer still busy at the end of the shutdown grace",
                );
            }
        }
    }

    /// How long one database attempt may wait: until the shutdown deadline once closing.
    fn attempt_budget(&self) -> Duration {
        let deadline = if self.closing.load(Ordering::Acquire) {
            self.deadline.lock().ok().and_then(|d| *d)
        } else {
            None
        };
        match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(50), ATTEMPT_MAX),
            None => ATTEMPT_MAX,
        }
    }

    fn deadline_passed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
            && self
                .deadline
                .lock()
                .ok()
                .and_then(|d| *d)
                .is_some_and(|d| Instant::now() >= d)
    }
}

/// Handle for submitting rows. Cheap to clone; put it in `web::Data`.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<RequestRecord>,
    shared: Arc<Shared>,
    store_bodies: bool,
    body_cap: u64,
    done: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

impl LogSink {
    /// Queues a row; never blocks. A full queue (or a sink shut down) drops the row and
    /// counts it. The body is kept only when `logging.store_bodies` and within `body_cap`.
    pub fn submit(&self, mut rec: RequestRecord) {
        let keep_body = self.store_bodies
            && rec
                .body
                .as_ref()
                .is_some_and(|b| b.len() as u64 <= self.body_cap);
        if !keep_body {
            rec.body = None;
        }
        if self.shared.closing.load(Ordering::Acquire) && *self.done.borrow() {
            self.shared.dropped(1, "log writer already stopped");
            return;
        }
        // Count before sending so the writer's decrement can never run first.
        self.shared.metrics.log_queue_depth.inc();
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.metrics.log_queue_depth.dec();
                self.shared.dropped(1, "log queue full");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.metrics.log_queue_depth.dec();
                self.shared.dropped(1, "log writer stopped");
            }
        }
    }

    /// Writes everything queued, then stops the writer. Waits at most `grace`; rows still
    /// unwritten then (database down) are counted as dropped. Returns true when everything
    /// queued was written.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let dropped_before = self.shared.dropped_total.load(Ordering::Relaxed);
        if let Ok(mut d) = self.shared.deadline.lock() {
            *d = Some(Instant::now() + grace);
        }
        self.shared.closing.store(true, Ordering::Release);
        let mut done = self.done.clone();
        // The writer gives up at the deadline itself; the extra second covers one last
        // statement in flight.
        let waited = tokio::time::timeout(grace + Duration::from_secs(1), done.wait_for(|d| *d));
        let finished = matches!(waited.await, Ok(Ok(_)));
        let left = self.shared.metrics.log_queue_depth.get();
        if !finished {
            // A database call that began before the shutdown may still be waiting for a
            // connection (up to `ATTEMPT_MAX`); the grace is the promise, so what is
            // unwritten now is lost and counted.
            if left > 0 {
                tracing::error!(
                    rows = left,
                    "log writer still busy at the end of the shutdown grace; these rows are lost"
                );
            }
            self.shared.abandon();
        }
        let lost = self.shared.dropped_total.load(Ordering::Relaxed) > dropped_before;
        finished && left == 0 && !lost
    }

    /// Rows accepted and not yet written or dropped.
    pub fn queued(&self) -> i64 {
        self.shared.metrics.log_queue_depth.get()
    }
}

/// Starts the writer thread.
pub struct LogWriter;

impl LogWriter {
    /// Spawns the writer thread and returns the handle handlers submit to.
    pub fn start(store: Store, metrics: Arc<Metrics>, cfg: &LoggingConfig) -> LogSink {
        let capacity = cfg.queue_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            metrics,
            closing: AtomicBool::new(false),
            deadline: Mutex::new(None),
            started: Instant::now(),
            last_warn_ms: AtomicU64::new(0),
            dropped_since_warn: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            abandoned: Mutex::new(false),
        });
        let writer = Writer {
            store,
            rx,
            shared: shared.clone(),
            store_bodies: cfg.store_bodies,
            retention: cfg.retention,
            next_prune: Instant::now(),
            gave_up: false,
        };
        let spawned = std::thread::Builder::new()
            .name("corral-log-writer".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(true);
            });
        if let Err(e) = spawned {
            // Without a writer every row would pile up unseen; say so and count them.
            tracing::error!(error = %e, "cannot start the log writer thread; request logs are dropped");
            shared.closing.store(true, Ordering::Release);
        }
        LogSink {
            tx,
            shared,
            store_bodies: cfg.store_bodies,
            body_cap: cfg.body_cap.as_u64(),
            done,
        }
    }
}

struct Writer {
    store: Store,
    rx: Receiver<RequestRecord>,
    shared: Arc<Shared>,
    store_bodies: bool,
    retention: Duration,
    next_prune: Instant,
    /// Set once the database stayed unreachable past the shutdown deadline.
    gave_up: bool,
}

enum Next {
    Batch(Vec<RequestRecord>),
    Idle,
    Stop,
}

impl Writer {
    fn run(mut self) {
        loop {
            match self.collect() {
                Next::Batch(batch) => {
                    let rows: Vec<LogRow> = batch
                        .into_iter()
                        .map(|r| LogRow::from_record(r, self.store_bodies))
                        .collect();
                    self.write(rows);
                }
                Next::Idle => self.maybe_prune(),
                Next::Stop => break,
            }
        }
    }

    fn closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Up to `BATCH_ROWS` rows: the first one, then what arrived during `GATHER`.
    fn collect(&self) -> Next {
        let first = match self.rx.recv_timeout(IDLE_WAIT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if self.closing() => return Next::Stop,
            Err(RecvTimeoutError::Timeout) => return Next::Idle,
            Err(RecvTimeoutError::Disconnected) => return Next::Stop,
        };
        if !self.closing() {
            std::thread::sleep(GATHER);
        }
        let mut batch = Vec::with_capacity(BATCH_ROWS.min(1024));
        batch.push(first);
        while batch.len() < BATCH_ROWS {
            match self.rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        Next::Batch(batch)
    }

    /// Writes one batch, retrying while the database is unreachable. A batch the database
    /// refuses while reachable is written row by row so one bad row loses only itself.
    fn write(&mut self, rows: Vec<LogRow>) {
        let n = rows.len() as i64;
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            if self.gave_up {
                self.shared.account(|s| {
                    s.metrics.log_queue_depth.sub(n);
                    s.dropped(n as u64, "database unreachable at shutdown");
                });
                return;
            }
            let budget = self.shared.attempt_budget();
            let written = self
                .store
                .blocking_within(budget, |c| logs::insert_batch(c, &rows));
            let reachable = || {
                let budget = self.shared.attempt_budget();
                self.store.ping_within(budget).is_ok()
            };
            match written {
                Ok(_) => break,
                Err(e) if reachable() => {
                    failures += 1;
                    if failures < 3 {
                        continue;
                    }
                    tracing::error!(error = %e, rows = n, "database refused a log batch; writing rows one by one");
                    self.write_one_by_one(&rows);
                    break;
                }
                Err(e) => {
                    if self.shared.deadline_passed() {
                        tracing::error!(error = %e, queued = self.shared.metrics.log_queue_depth.get(),
                            "database unreachable at shutdown; queued log rows are lost");
                        self.gave_up = true;
                        continue;
                    }
                    if backoff == BACKOFF_MIN || backoff == BACKOFF_MAX {
                        tracing::warn!(error = %e, queued = self.shared.metrics.log_queue_depth.get(),
                            "database unreachable; holding log rows and retrying");
                    }
                    std::thread::sleep(backoff.min(self.shared.attempt_budget()));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.shared.account(|s| s.metrics.log_queue_depth.sub(n));
    }

    fn write_one_by_one(&self, rows: &[LogRow]) {
        for row in rows {
            let one = std::slice::from_ref(row);
            if let Err(e) = self.store.blocking(|c| logs::insert_batch(c, one)) {
                tracing::error!(error = %e, request_id = %row.request_id, "log row refused");
                self.shared
                    .account(|s| s.dropped(1, "database refused the row"));
            }
        }
    }

    fn maybe_prune(&mut self) {
        if Instant::now() < self.next_prune || self.closing() {
            return;
        }
        let retention = self.retention;
        match self.store.blocking(|c| logs::prune(c, now(), retention)) {
            Ok((requests, usage)) => {
                self.next_prune = Instant::now() + PRUNE_EVERY;
                if requests + usage > 0 {
                    tracing::info!(requests, usage, "pruned old request logs");
                }
            }
            Err(StoreError::Unavailable(_)) => {
                self.next_prune = Instant::now() + Duration::from_secs(60);
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning request logs failed");
                self.next_prune = Instant::now() + PRUNE_EVERY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    #[test]
    fn bodies_are_kept_only_when_enabled_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("t.db").display()),
            pool_size: 2,
        })
        .unwrap();
        let cfg = LoggingConfig {
            store_bodies: true,
            body_cap: bytesize::ByteSize::b(16),
            ..Default::default()
        };
        let sink = LogWriter::start(store.clone(), Arc::new(Metrics::new()), &cfg);
        let rec = |id: &str, body: &'static [u8]| RequestRecord {
            request_id: id.into(),
            time: chrono::Utc::now(),
            user: "u".into(),
            dialect: "ollama",
            model_requested: "m".into(),
            status: 200,
            body: Some(bytes::Bytes::from_static(body)),
            ..Default::default()
        };
        sink.submit(rec("small", b"{\"a\":1}"));
        sink.submit(rec("big", b"{\"a\":\"0123456789abcdef\"}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(sink.shutdown(Duration::from_secs(10))));
        let small = store.blocking(|c| logs::one(c, "small")).unwrap().unwrap();
        assert_eq!(small.1.as_deref(), Some("{\"a\":1}"));
        let big = store.blocking(|c| logs::one(c, "big")).unwrap().unwrap();
        assert!(!big.0.has_body && big.1.is_none());
    }
}
