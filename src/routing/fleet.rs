//! The fleet as routing sees it: a configured backend and why an attempt on it failed, what
//! a backend looks like from outside, and `Fleet`, the handle the HTTP layer uses: place a
//! request on the shared `Placer` under a short lock, get a `Lease` whose drop gives
//! everything back and whose health reports go straight to the backend's actor.
//!
//! The actors own the status behind it (`actors::supervisor` starts them and builds the
//! `Fleet`); this module only knows the messages it sends them, as actix `Recipient`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::{Message, Recipient};
use parking_lot::Mutex;
use prometheus::IntGauge;
use serde::Serialize;
use serde_json::Value;

use crate::config::{BackendConfig, BackendKind};
use crate::error::{ErrorKind, GatewayError};
use crate::routing::placer::{PlaceError, Placer, Query, Ticket};

pub use crate::error::FailureReason;
pub use crate::routing::placer::BackendId;

/// Longest a caller waits for the Supervisor; placement itself takes microseconds.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry-After sent with "no capacity".
const NO_CAPACITY_RETRY: Duration = Duration::from_secs(1);

/// A configured upstream, shared by every request that goes to it.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub id: BackendId,
    pub name: String,
    /// `name` as the `x-corral-backend` answer header, made once (`None` if it cannot be one).
    pub name_header: Option<actix_web::http::header::HeaderValue>,
    /// The configured URL without a trailing slash.
    pub base_url: String,
    pub config: BackendConfig,
}

/// A model a backend has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub size: Option<u64>,
}

/// A model loaded in a backend's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResidentEntry {
    pub name: String,
    pub size: u64,
    pub size_vram: u64,
    pub expires_at: Option<String>,
}

/// One backend as `GET /admin/api/backends` shows it, plus raw Ollama items for the
/// fleet-as-one-Ollama endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    #[serde(skip)]
    pub id: BackendId,
    pub name: String,
    /// Credentials masked.
    pub url: String,
    pub kind: BackendKind,
    pub priority: u32,
    pub up: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    pub models: Vec<ModelEntry>,
    pub resident: Vec<ResidentEntry>,
    pub memory_used: u64,
    /// `null` = unlimited.
    pub memory_max: Option<u64>,
    pub reserved_memory: u64,
    pub inflight: u64,
    pub ewma_latency_ms: Option<f64>,
    pub ewma_ttfb_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub version: Option<String>,
    /// Raw `/api/tags` items.
    #[serde(skip)]
    pub tags: Vec<Value>,
    /// Raw `/api/ps` items.
    #[serde(skip)]
    pub ps: Vec<Value>,
}

/// What the HTTP layer asks for: a model, minus the backends already tried for this request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaceRequest<'a> {
    pub model: &'a str,
    pub exclude: &'a [BackendId],
}

/// How one request on a backend ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Success { ttfb: Duration, total: Duration },
    Failure(FailureReason),
}

/// Lease → the backend's actor: passive health from a real request.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Report {
    pub backend: BackendId,
    pub model: String,
    pub outcome: Outcome,
}

/// Fleet → Supervisor: every backend's view, in configuration order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<BackendView>")]
pub struct Snapshot;

/// Fleet → Supervisor: has every backend been polled at least once?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct IsReady;

/// The placement view. The Supervisor keeps it current from backend status; requests place
/// and release on it directly under a short lock, so the hot path crosses no thread.
pub type SharedPlacer = Arc<Mutex<Placer>>;

/// A reservation on one backend for one request. Dropping it releases in-flight and memory,
/// whatever the path (success, error, panic, client disconnect).
pub struct Lease {
    pub backend: Arc<BackendInfo>,
    /// The model name to send upstream, as that backend spells it.
    pub model: String,
    memory_reserved: u64,
    ticket: Ticket,
    placer: SharedPlacer,
    inflight_gauge: Option<IntGauge>,
    /// Passive health goes straight to the backend's actor (found by backend id: an
    /// address clone costs two allocations, the shared list none).
    reporters: Arc<Vec<Recipient<Report>>>,
    health: Arc<Health>,
}

/// At most one success report per backend per this interval reaches its actor: the
/// averages need samples, not every request, and each report wakes another thread.
const SUCCESS_EVERY: Duration = Duration::from_millis(20);

/// Per-backend state shared by every lease, for sampling success reports.
struct Health {
    started: Instant,
    flags: Vec<HealthFlags>,
}

#[derive(Default)]
struct HealthFlags {
    /// Milliseconds since `Health::started` of the last success reported.
    last_success_ms: AtomicU64,
    failed_since_success: AtomicBool,
}

impl Lease {
    /// New memory this request reserved (0 when the model was loaded or loading already).
    pub fn memory_reserved(&self) -> u64 {
        self.memory_reserved
    }

    /// The request succeeded: feeds passive health and the latency averages.
    /// Successes are sampled (one per [`SUCCESS_EVERY`]) for the latency averages, but the
    /// first success after any failure always goes through, so circuits close at once.
    pub fn succeeded(&self, ttfb: Duration, total: Duration) {
        if let Some(flags) = self.health.flags.get(self.backend.id) {
            let after_failure = flags.failed_since_success.swap(false, Ordering::Relaxed);
            let now = self.health.started.elapsed().as_millis() as u64 + 1;
            let last = flags.last_success_ms.load(Ordering::Relaxed);
            let due = now.saturating_sub(last) >= SUCCESS_EVERY.as_millis() as u64
                && flags
                    .last_success_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !(after_failure || due) {
                return;
            }
        }
        self.report(Outcome::Success { ttfb, total });
    }

    /// The request failed on this backend.
    pub fn failed(&self, reason: FailureReason) {
        if let Some(flags) = self.health.flags.get(self.backend.id) {
            flags.failed_since_success.store(true, Ordering::Relaxed);
        }
        self.report(Outcome::Failure(reason));
    }

    fn report(&self, outcome: Outcome) {
        let Some(actor) = self.reporters.get(self.backend.id) else {
            return;
        };
        actor.do_send(Report {
            backend: self.backend.id,
            model: self.model.clone(),
            outcome,
        });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Synchronous: nothing can be lost between the request and its release.
        let mut placer = self.placer.lock();
        placer.release(self.ticket);
        if let Some(g) = &self.inflight_gauge {
            g.set(i64::try_from(placer.load(self.backend.id).0).unwrap_or(i64::MAX));
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.backend.name)
            .field("model", &self.model)
            .field("memory_reserved", &self.memory_reserved)
            .finish()
    }
}

/// The fleet of upstreams as the HTTP layer sees it. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Fleet {
    snapshots: Recipient<Snapshot>,
    readiness: Recipient<IsReady>,
    reporters: Arc<Vec<Recipient<Report>>>,
    health: Arc<Health>,
    placer: SharedPlacer,
    inflight_gauges: Arc<Vec<IntGauge>>,
    backends: Arc<Vec<Arc<BackendInfo>>>,
}

/// What a `Fleet` is made of; the actors that answer its messages are started by
/// `actors::supervisor::start`.
pub struct FleetParts {
    /// Every configured backend, indexed by `BackendId`.
    pub backends: Arc<Vec<Arc<BackendInfo>>>,
    pub placer: SharedPlacer,
    /// Where each backend's passive health goes, indexed by `BackendId`.
    pub reporters: Vec<Recipient<Report>>,
    /// `corral_inflight_requests` per backend, indexed by `BackendId`.
    pub inflight_gauges: Vec<IntGauge>,
    pub snapshots: Recipient<Snapshot>,
    pub readiness: Recipient<IsReady>,
}

impl Fleet {
    pub fn new(parts: FleetParts) -> Fleet {
        let FleetParts {
            backends,
            placer,
            reporters,
            inflight_gauges,
            snapshots,
            readiness,
        } = parts;
        Fleet {
            snapshots,
            readiness,
            health: Arc::new(Health {
                started: Instant::now(),
                flags: backends.iter().map(|_| HealthFlags::default()).collect(),
            }),
            reporters: Arc::new(reporters),
            placer,
            inflight_gauges: Arc::new(inflight_gauges),
            backends,
        }
    }

    /// Every configured backend, indexed by `BackendId`.
    pub fn backends(&self) -> &[Arc<BackendInfo>] {
        &self.backends
    }

    /// Reserves a backend for `req.model`: 404-style `unknown_model` when no backend lists it,
    /// `NoCapacity` when none can take it now.
    pub async fn place(&self, req: PlaceRequest<'_>) -> Result<Lease, GatewayError> {
        let query = Query {
            model: req.model,
            exclude: req.exclude,
        };
        let mut placer = self.placer.lock();
        let placed = placer.place(query, Instant::now());
        let p = match placed {
            Ok(p) => p,
            Err(PlaceError::UnknownModel) => return Err(GatewayError::unknown_model(req.model)),
            Err(PlaceError::NoCapacity) => {
                return Err(GatewayError::new(
                    ErrorKind::NoCapacity,
                    format!("no backend can take model \"{}\" right now", req.model),
                )
                .with_retry_after(NO_CAPACITY_RETRY));
            }
        };
        let inflight_gauge = self.inflight_gauges.get(p.backend).cloned();
        if let Some(g) = &inflight_gauge {
            g.set(i64::try_from(placer.load(p.backend).0).unwrap_or(i64::MAX));
        }
        drop(placer);
        let Some(backend) = self.backends.get(p.backend).cloned() else {
            // The placer only returns ids it was built with; this keeps the books straight anyway.
            self.placer.lock().release(p.ticket());
            return Err(GatewayError::internal("placement named an unknown backend"));
        };
        Ok(Lease {
            backend,
            ticket: p.ticket(),
            memory_reserved: p.memory_reserved,
            model: p.model,
            placer: Arc::clone(&self.placer),
            inflight_gauge,
            reporters: Arc::clone(&self.reporters),
            health: Arc::clone(&self.health),
        })
    }

    /// Whether placing `model` could find a backend that knows it (see [`Placer::knows`]).
    pub fn knows(&self, model: &str) -> bool {
        self.placer.lock().knows(model)
    }

    /// Every backend's state, in configuration order; empty if the Supervisor does not answer.
    pub async fn snapshot(&self) -> Vec<BackendView> {
        match self.snapshots.send(Snapshot).timeout(SEND_TIMEOUT).await {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(error = %e, "fleet snapshot failed");
                Vec::new()
            }
        }
    }

    /// True once every backend was polled once (or is a kind that is not polled).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = self.readiness.send(IsReady).timeout(left.min(SEND_TIMEOUT));
            if let Ok(true) = asked.await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    /// Fleet-wide in-flight requests and reserved memory, read from the placer that every
    /// lease releases into synchronously.
    pub fn totals(&self) -> (u64, u64) {
        self.placer.lock().totals()
    }
}
