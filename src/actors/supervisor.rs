//! The Supervisor actor: owns every backend's latest status, keeps the shared `Placer`
//! current from it, and answers snapshots (admin API, `/api/tags`, `/api/ps`) and readiness.
//! [`start`] starts it with one `BackendActor` per backend and hands back the
//! `routing::fleet::Fleet` the HTTP layer places requests with.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, AsyncContext, Context, Handler, MessageResult};
use parking_lot::Mutex;
use prometheus::IntGauge;

use crate::actors::backend::{BackendActor, BackendState, HealthPolicy};
use crate::actors::messages::{BackendStatus, StatusUpdate};
use crate::config::{Config, redact_url};
use crate::metrics::Metrics;
use crate::routing::fleet::{
    BackendInfo, BackendView, Fleet, FleetParts, IsReady, SharedPlacer, Snapshot,
};
use crate::routing::placer::{BackendId, Circuit, Placer};

/// Messages the Supervisor may hold before `send` waits (status updates use `do_send`,
/// which is always queued).
const MAILBOX: usize = 4096;

/// Owns the backends' status and feeds it into the shared placement view.
pub struct Supervisor {
    placer: SharedPlacer,
    infos: Arc<Vec<Arc<BackendInfo>>>,
    statuses: Vec<BackendStatus>,
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

impl Handler<IsReady> for Supervisor {
    type Result = bool;

    fn handle(&mut self, _: IsReady, _: &mut Self::Context) -> bool {
        self.statuses.iter().all(|s| s.polled)
    }
}

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
        if let Ok(Some(p)) = crate::config::proxy::for_url(&b.base_url, b.config.proxy.as_deref()) {
            tracing::info!(backend = %b.name, proxy = %p.shown, "upstream reached through a proxy");
        }
    }
    // Start-up: `Config::validate` already rejected bad memory patterns.
    let placer = Placer::from_config(&cfg.backends, &cfg.routing, rand::random())
        .expect("routing.memory_patterns are valid regexes (checked by Config::validate)");
    let ctx = Context::<Supervisor>::new();
    let supervisor: Addr<Supervisor> = ctx.address();
    let reporters = backends
        .iter()
        .map(|info| {
            BackendActor::new(Arc::clone(info), supervisor.clone().recipient(), &metrics)
                .start()
                .recipient()
        })
        .collect();
    let statuses = cfg
        .backends
        .iter()
        .map(|b| BackendState::new(b, HealthPolicy::default()).status())
        .collect();
    let inflight_gauges: Vec<IntGauge> = backends
        .iter()
        .map(|b| metrics.inflight.with_label_values(&[b.name.as_str()]))
        .collect();
    let placer = Arc::new(Mutex::new(placer));
    ctx.run(Supervisor {
        placer: Arc::clone(&placer),
        infos: Arc::clone(&backends),
        statuses,
    });
    Fleet::new(FleetParts {
        backends,
        placer,
        reporters,
        inflight_gauges,
        snapshots: supervisor.clone().recipient(),
        readiness: supervisor.recipient(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::routing::fleet::{FailureReason, PlaceRequest};
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use serde_json::Value;
    use serde_json::json;
    use std::time::Duration;

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
        let fleet = super::start(cfg, Arc::clone(&metrics));
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
        assert_eq!(fleet.totals(), (2, 42520413916));
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
        assert_eq!(fleet.totals(), (0, 0));
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
        assert_eq!(fleet.totals(), (0, 0));
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
            if fleet.totals().0 == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fleet.totals().0, 1);
        task.abort();
        let _ = task.await;
        assert_eq!(fleet.totals(), (0, 0));
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
        assert_eq!(fleet.totals(), (0, 0));
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
        assert_eq!(fleet.totals(), (0, 0));
        srv.stop(false).await;
    }
}
