//! The Supervisor actor (owns the `Placer`, answers Place/Release/Report) and `Fleet`, the
//! handle the HTTP layer uses: place a request, get a `Lease` whose drop gives everything back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, MessageResult};
use prometheus::IntGauge;
use serde::Serialize;
use serde_json::Value;

use crate::actors::backend::{
    BackendActor, BackendState, BackendStatus, HealthPolicy, ModelEntry, ResidentEntry,
};
use crate::actors::messages::{IsReady, Outcome, Report, Snapshot, StatusUpdate, Totals};
use crate::config::{BackendConfig, BackendKind, Config, redact_url};
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Metrics;
use crate::routing::placer::{Circuit, PlaceError, Placer, Query, Ticket};

pub use crate::actors::messages::{FailureReason, PlaceRequest};
pub use crate::routing::placer::BackendId;

/// Messages the Supervisor may hold before `send` waits (Release uses `do_send`, which is
/// always queued, so a full mailbox never loses a release).
const MAILBOX: usize = 4096;
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

/// The placement view. The Supervisor keeps it current from backend status; requests place
/// and release on it directly under a short lock, so the hot path crosses no thread.
type SharedPlacer = Arc<Mutex<Placer>>;

/// Owns the backends' status and feeds it into the shared placement view.
pub struct Supervisor {
    placer: SharedPlacer,
    infos: Arc<Vec<Arc<BackendInfo>>>,
    statuses: Vec<BackendStatus>,
    backends: Vec<Addr<BackendActor>>,
}

impl Supervisor {
    fn view(&self, id: BackendId, now: Instant) -> Option<BackendView> {
        let info = self.infos.get(id)?;
        let st = self.statuses.get(id)?;
        let (inflight, reserved_memory) = self.placer.lock().load(id);
        Some(BackendView {
            id,
            name: info.name.clone(),
            url: redact_url(&info.base_url),
            kind: info.config.kind,
            priority: info.config.priority,
            up: st.polled && !matches!(st.circuit.at(now), Circuit::Open { .. }),
            circuit: st.circuit.name(now),
            models: st.models.clone(),
            resident: st.resident.clone(),
            memory_used: st.memory_used,
            memory_max: info.config.max_memory.map(|m| m.as_u64()),
            reserved_memory,
            inflight,
            ewma_latency_ms: st.ewma_latency_ms,
            ewma_ttfb_ms: st.ewma_ttfb_ms,
            consecutive_failures: st.consecutive_failures,
            last_error: st.last_error.clone(),
            version: st.version.clone(),
            tags: st.tags.as_ref().clone(),
            ps: st.ps.as_ref().clone(),
        })
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<Report> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Report, _: &mut Self::Context) {
        if let Some(b) = self.backends.get(msg.backend) {
            b.do_send(msg);
        }
    }
}

impl Handler<StatusUpdate> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StatusUpdate, _: &mut Self::Context) {
        if let Some(slot) = self.statuses.get_mut(msg.backend) {
            self.placer
                .lock()
                .update(msg.backend, &msg.status.placer_snapshot());
            *slot = msg.status;
        }
    }
}

impl Handler<Snapshot> for Supervisor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        MessageResult(
            (0..self.infos.len())
                .filter_map(|id| self.view(id, now))
                .collect(),
        )
    }
}

impl Handler<Totals> for Supervisor {
    type Result = MessageResult<Totals>;

    fn handle(&mut self, _: Totals, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.placer.lock().totals())
    }
}

impl Handler<IsReady> for Supervisor {
    type Result = bool;

    fn handle(&mut self, _: IsReady, _: &mut Self::Context) -> bool {
        self.statuses.iter().all(|s| s.polled)
    }
}

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
    actors: Arc<Vec<Addr<BackendActor>>>,
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
        let Some(actor) = self.actors.get(self.backend.id) else {
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
    supervisor: Addr<Supervisor>,
    actors: Arc<Vec<Addr<BackendActor>>>,
    health: Arc<Health>,
    placer: SharedPlacer,
    inflight_gauges: Arc<Vec<IntGauge>>,
    backends: Arc<Vec<Arc<BackendInfo>>>,
}

impl Fleet {
    /// Starts one BackendActor per configured backend and the Supervisor on the current
    /// arbiter. Must run inside an actix System, once, before `HttpServer::new`.
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> Fleet {
        let backends: Arc<Vec<Arc<BackendInfo>>> = Arc::new(
            cfg.backends
                .iter()
                .enumerate()
                .map(|(id, b)| {
                    Arc::new(BackendInfo {
                        id,
                        name: b.name.clone(),
                        name_header: actix_web::http::header::HeaderValue::from_str(&b.name).ok(),
                        base_url: b.url.trim_end_matches('/').to_string(),
                        config: b.clone(),
                    })
                })
                .collect(),
        );
        for b in backends.iter() {
            if let Ok(Some(p)) =
                crate::upstream::proxy::for_url(&b.base_url, b.config.proxy.as_deref())
            {
                tracing::info!(backend = %b.name, proxy = %p.shown, "upstream reached through a proxy");
            }
        }
        // Start-up: `Config::validate` already rejected bad memory patterns.
        let placer = Placer::from_config(&cfg.backends, &cfg.routing, rand::random())
            .expect("routing.memory_patterns are valid regexes (checked by Config::validate)");
        let ctx = Context::<Supervisor>::new();
        let supervisor = ctx.address();
        let actors: Vec<Addr<BackendActor>> = backends
            .iter()
            .map(|info| BackendActor::new(Arc::clone(info), supervisor.clone(), &metrics).start())
            .collect();
        let fleet_actors = Arc::new(actors.clone());
        let statuses = cfg
            .backends
            .iter()
            .map(|b| BackendState::new(b, HealthPolicy::default()).status())
            .collect();
        let inflight_gauges: Arc<Vec<IntGauge>> = Arc::new(
            backends
                .iter()
                .map(|b| metrics.inflight.with_label_values(&[b.name.as_str()]))
                .collect(),
        );
        let placer = Arc::new(Mutex::new(placer));
        ctx.run(Supervisor {
            placer: Arc::clone(&placer),
            infos: Arc::clone(&backends),
            statuses,
            backends: actors,
        });
        Fleet {
            supervisor,
            health: Arc::new(Health {
                started: Instant::now(),
                flags: backends.iter().map(|_| HealthFlags::default()).collect(),
            }),
            actors: fleet_actors,
            placer,
            inflight_gauges,
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
            actors: Arc::clone(&self.actors),
            health: Arc::clone(&self.health),
        })
    }

    /// Whether placing `model` could find a backend that knows it (see [`Placer::knows`]).
    pub fn knows(&self, model: &str) -> bool {
        self.placer.lock().knows(model)
    }

    /// Every backend's state, in configuration order; empty if the Supervisor does not answer.
    pub async fn snapshot(&self) -> Vec<BackendView> {
        match self.supervisor.send(Snapshot).timeout(SEND_TIMEOUT).await {
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
            let asked = self
                .supervisor
                .send(IsReady)
                .timeout(left.min(SEND_TIMEOUT));
            if let Ok(true) = asked.await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    /// Fleet-wide in-flight requests and reserved memory. `(u64::MAX, u64::MAX)` when the
    /// Supervisor does not answer, so a check for zero cannot pass by accident.
    pub async fn totals(&self) -> (u64, u64) {
        match self.supervisor.send(Totals).timeout(SEND_TIMEOUT).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "fleet totals failed");
                (u64::MAX, u64::MAX)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use serde_json::json;

    const GIB: u64 = 1 << 30;

    /// A tiny Ollama answering the discovery endpoints with docs/PROTOCOLS.md §1.5 shapes. It
    /// answers 403 to a wrong `Host`, like a loopback-bound Ollama.
    fn fake_ollama(unauthorized: bool) -> (String, actix_web::dev::ServerHandle) {
        let tags = json!({"models": [
            {"name": "qwen3:8b", "model": "qwen3:8b", "modified_at": "2026-10-02T11:04:19.5+02:00",
             "size": 5225388164u64, "digest": "500a1f06",
             "details": {"format": "gguf", "family": "qwen3", "parameter_size": "8.2B",
                         "quantization_level": "Q4_K_M"}},
            {"name": "llama3.1:70b", "model": "llama3.1:70b", "size": 42520413916u64}
        ]});
        let ps = json!({"models": [
            {"name": "qwen3:8b", "model": "qwen3:8b", "size": 6654289920u64,
             "size_vram": 6654289920u64, "expires_at": "2026-10-02T11:09:19.5+02:00",
             "context_length": 4096}
        ]});
        let server = HttpServer::new(move || {
            let (tags, ps) = (tags.clone(), ps.clone());
            let answer = move |req: HttpRequest, body: Value| {
                let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                let local = req.app_config().local_addr().to_string();
                if unauthorized {
                    HttpResponse::Unauthorized().json(json!({"error": "unauthorized"}))
                } else if host != Some(local.as_str()) {
                    HttpResponse::Forbidden().finish()
                } else {
                    HttpResponse::Ok().json(body)
                }
            };
            App::new()
                .route(
                    "/api/tags",
                    web::get().to({
                        move |r: HttpRequest| {
                            let out = answer(r, tags.clone());
                            async move { out }
                        }
                    }),
                )
                .route(
                    "/api/ps",
                    web::get().to({
                        move |r: HttpRequest| {
                            let out = answer(r, ps.clone());
                            async move { out }
                        }
                    }),
                )
                .route(
                    "/api/version",
                    web::get().to(move |r: HttpRequest| {
                        let out = answer(r, json!({"version": "0.12.3"}));
                        async move { out }
                    }),
                )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (format!("http://{addr}/"), handle)
    }

    fn free_port_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn config(backends: &str) -> Config {
        Config::from_toml(backends).unwrap()
    }

    fn gpu(url: &str) -> String {
        format!(
            "[[backends]]\nname = \"gpu\"\nurl = \"{url}\"\nmax_memory = \"48GiB\"\npoll_interval = \"200ms\"\n"
        )
    }

    async fn start(cfg: &Config) -> (Fleet, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let fleet = Fleet::start(cfg, Arc::clone(&metrics));
        assert!(fleet.wait_ready(Duration::from_secs(10)).await);
        (fleet, metrics)
    }

    fn req(model: &str) -> PlaceRequest<'_> {
        PlaceRequest {
            model,
            exclude: &[],
        }
    }

    #[actix_web::test]
    async fn leases_reserve_and_their_drop_returns_totals_to_zero() {
        let (url, srv) = fake_ollama(false);
        let (fleet, metrics) = start(&config(&gpu(&url))).await;
        assert_eq!(fleet.backends()[0].base_url, url.trim_end_matches('/'));

        let warm = fleet.place(req("qwen3:8b")).await.unwrap();
        assert_eq!(
            (warm.backend.name.as_str(), warm.memory_reserved()),
            ("gpu", 0)
        );
        let cold = fleet.place(req("llama3.1:70b")).await.unwrap();
        assert_eq!(cold.memory_reserved(), 42520413916);
        assert_eq!(fleet.totals().await, (2, 42520413916));
        assert!(
            metrics
                .render()
                .contains("corral_inflight_requests{backend=\"gpu\"} 2")
        );
        // 42 GB reserved + another 42 GB will not fit in 48 GiB beside it... but the same
        // model is loading already, so a second request for it needs nothing new.
        let again = fleet.place(req("llama3.1:70b")).await.unwrap();
        assert_eq!(again.memory_reserved(), 0);
        drop((warm, cold, again));
        assert_eq!(fleet.totals().await, (0, 0));
        assert!(
            metrics
                .render()
                .contains("corral_inflight_requests{backend=\"gpu\"} 0")
        );
        srv.stop(false).await;
    }

    #[actix_web::test]
    async fn unknown_models_are_not_found() {
        let (url, srv) = fake_ollama(false);
        let (fleet, _) = start(&config(&gpu(&url))).await;
        let err = fleet.place(req("nope:1b")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(fleet.totals().await, (0, 0));
        srv.stop(false).await;
    }

    #[actix_web::test]
    async fn a_lease_in_a_cancelled_task_is_released() {
        let (url, srv) = fake_ollama(false);
        let (fleet, _) = start(&config(&gpu(&url))).await;
        let f = fleet.clone();
        let task = actix_web::rt::spawn(async move {
            let _lease = f.place(req("qwen3:8b")).await;
            std::future::pending::<()>().await;
        });
        for _ in 0..100 {
            if fleet.totals().await.0 == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fleet.totals().await.0, 1);
        task.abort();
        let _ = task.await;
        assert_eq!(fleet.totals().await, (0, 0));
        srv.stop(false).await;
    }

    #[actix_web::test]
    async fn snapshot_has_the_admin_shape_and_raw_items() {
        let (url, srv) = fake_ollama(false);
        let (fleet, metrics) = start(&config(&gpu(&url))).await;
        let views = fleet.snapshot().await;
        let v = &views[0];
        assert_eq!(v.version.as_deref(), Some("0.12.3"));
        assert_eq!(v.tags.len(), 2);
        assert_eq!(v.ps[0]["context_length"], 4096);
        let json = serde_json::to_value(&views).unwrap();
        let b = &json[0];
        for key in [
            "name",
            "url",
            "kind",
            "priority",
            "up",
            "circuit",
            "models",
            "resident",
            "memory_used",
            "memory_max",
            "reserved_memory",
            "inflight",
            "ewma_latency_ms",
            "ewma_ttfb_ms",
            "consecutive_failures",
            "last_error",
        ] {
            assert!(b.get(key).is_some(), "missing {key}");
        }
        assert!(b.get("tags").is_none() && b.get("ps").is_none());
        assert_eq!(b["up"], true);
        assert_eq!(b["circuit"], "closed");
        assert_eq!(b["kind"], "ollama");
        assert_eq!(b["memory_max"], 48 * GIB);
        assert_eq!(b["memory_used"], 6654289920u64);
        assert_eq!(
            b["resident"][0]["expires_at"],
            "2026-10-02T11:09:19.5+02:00"
        );
        let text = metrics.render();
        assert!(
            text.contains("corral_backend_up{backend=\"gpu\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corral_backend_memory_bytes{backend=\"gpu\",kind=\"used\"} 6654289920")
        );
        srv.stop(false).await;
    }

    #[actix_web::test]
    async fn failures_reported_by_leases_eject_and_fail_over() {
        let (url_a, srv_a) = fake_ollama(false);
        let (url_b, srv_b) = fake_ollama(false);
        let toml = format!(
            "{}\n[[backends]]\nname = \"spare\"\nurl = \"{url_b}\"\npriority = 2\npoll_interval = \"1h\"\n",
            gpu(&url_a).replace("200ms", "1h")
        );
        let (fleet, _) = start(&config(&toml)).await;
        for _ in 0..3 {
            let lease = fleet.place(req("qwen3:8b")).await.unwrap();
            assert_eq!(lease.backend.name, "gpu");
            lease.failed(FailureReason::Connect);
        }
        let mut moved = false;
        for _ in 0..200 {
            let lease = fleet.place(req("qwen3:8b")).await.unwrap();
            if lease.backend.name == "spare" {
                moved = true;
                break;
            }
            drop(lease);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(moved, "the ejected backend kept getting requests");
        let views = fleet.snapshot().await;
        assert_eq!((views[0].up, views[0].circuit), (false, "open"));
        assert_eq!(views[0].consecutive_failures, 3);
        // excluding the spare too leaves nothing
        let err = fleet
            .place(PlaceRequest {
                model: "qwen3:8b",
                exclude: &[1],
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoCapacity);
        assert_eq!(fleet.totals().await, (0, 0));
        srv_a.stop(false).await;
        srv_b.stop(false).await;
    }

    #[actix_web::test]
    async fn dead_keyed_and_api_backends_after_the_first_poll() {
        let (keyed, srv) = fake_ollama(true);
        let dead = free_port_url();
        let toml = format!(
            r#"
            [[backends]]
            name = "dead"
            url = "{dead}"
            poll_interval = "1h"
            [[backends]]
            name = "cloud"
            url = "{keyed}"
            models = ["gpt-oss:120b-cloud"]
            poll_interval = "1h"
            [[backends]]
            name = "oai"
            url = "http://127.0.0.1:9/v1"
            kind = "openai"
            models = ["gpt-4o"]
            "#
        );
        let (fleet, metrics) = start(&config(&toml)).await;
        let views = fleet.snapshot().await;
        let up: Vec<_> = views.iter().map(|v| (v.name.as_str(), v.up)).collect();
        assert_eq!(up, [("dead", false), ("cloud", true), ("oai", true)]);
        assert!(views[0].last_error.is_some());
        assert!(
            metrics
                .render()
                .contains("corral_backend_up{backend=\"dead\"} 0")
        );
        let cloud = fleet.place(req("gpt-oss:120b-cloud")).await.unwrap();
        assert_eq!(cloud.backend.name, "cloud");
        let oai = fleet.place(req("gpt-4o")).await.unwrap();
        assert_eq!(
            (oai.backend.name.as_str(), oai.model.as_str()),
            ("oai", "gpt-4o")
        );
        drop((cloud, oai));
        assert_eq!(fleet.totals().await, (0, 0));
        srv.stop(false).await;
    }
}
