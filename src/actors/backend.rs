//! One upstream's health and inventory: `BackendState` (pure, fake-clock tested) and the
//! `BackendActor` shell that polls `/api/tags`, `/api/ps`, `/api/version` and hears passive reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Recipient, SpawnHandle, WrapFuture,
};
use actix_web::http::StatusCode;
use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderValue};
use prometheus::{IntCounter, IntGauge};
use rand::Rng;
use serde_json::Value;

use crate::actors::messages::{BackendStatus, StatusUpdate};
use crate::config::{BackendConfig, BackendKind};
use crate::metrics::Metrics;
use crate::routing::fleet::{
    BackendInfo, FailureReason, ModelEntry, Outcome, Report, ResidentEntry,
};
use crate::routing::memory::normalize_model;
use crate::routing::placer::{BackendId, Circuit};
use crate::upstream;

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive health failures that open the circuit.
    pub open_after: u32,
    /// 5xx/timeouts within `burst_window` that open it even between successes.
    pub burst: usize,
    pub burst_window: Duration,
    /// First cool-down before half-open; doubles after each failed probe, up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Weight of the newest sample in the latency averages.
    pub ewma_alpha: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            open_after: 3,
            burst: 5,
            burst_window: Duration::from_secs(10),
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(120),
            ewma_alpha: 0.3,
        }
    }
}

/// What one poll round found.
#[derive(Debug, Clone, PartialEq)]
pub enum PollResult {
    /// `/api/tags` answered; `/api/ps` and `/api/version` may not have.
    Answered {
        tags: Value,
        ps: Option<Value>,
        version: Option<Value>,
    },
    /// 401 on `/api/tags`: a keyed upstream that is up; its models come from configuration.
    Unauthorized,
    Failed {
        reason: FailureReason,
        message: String,
    },
}

/// Health and inventory of one backend. All transitions take `now`; nothing reads the clock.
#[derive(Debug, Clone)]
pub struct BackendState {
    policy: HealthPolicy,
    configured: Vec<ModelEntry>,
    polled: bool,
    consecutive_failures: u32,
    circuit: Circuit,
    cooldown: Duration,
    recent: VecDeque<Instant>,
    ewma_latency_ms: Option<f64>,
    ewma_ttfb_ms: Option<f64>,
    models: Vec<ModelEntry>,
    tags: Arc<Vec<Value>>,
    resident: Vec<ResidentEntry>,
    ps: Arc<Vec<Value>>,
    version: Option<String>,
    last_error: Option<String>,
}

impl BackendState {
    /// Openai/anthropic upstreams are not polled: they start up, serving their configured models.
    pub fn new(cfg: &BackendConfig, policy: HealthPolicy) -> BackendState {
        let configured: Vec<ModelEntry> = cfg
            .models
            .iter()
            .map(|m| ModelEntry {
                name: m.clone(),
                size: None,
            })
            .collect();
        let polled = cfg.kind != BackendKind::Ollama;
        BackendState {
            policy,
            models: if polled {
                configured.clone()
            } else {
                Vec::new()
            },
            configured,
            polled,
            consecutive_failures: 0,
            circuit: Circuit::Closed,
            cooldown: policy.cooldown,
            recent: VecDeque::new(),
            ewma_latency_ms: None,
            ewma_ttfb_ms: None,
            tags: Arc::new(Vec::new()),
            resident: Vec::new(),
            ps: Arc::new(Vec::new()),
            version: None,
            last_error: None,
        }
    }

    pub fn circuit(&self, now: Instant) -> Circuit {
        self.circuit.at(now)
    }

    /// Polled once and not ejected.
    pub fn is_up(&self, now: Instant) -> bool {
        self.polled && !matches!(self.circuit(now), Circuit::Open { .. })
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn ewma_ms(&self) -> (Option<f64>, Option<f64>) {
        (self.ewma_latency_ms, self.ewma_ttfb_ms)
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// When an open circuit turns half-open, if it is open.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        match self.circuit(now) {
            Circuit::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The backend answered: close a half-open circuit, forget failures.
    fn alive(&mut self, now: Instant) {
        self.consecutive_failures = 0;
        match self.circuit(now) {
            Circuit::HalfOpen => {
                self.circuit = Circuit::Closed;
                self.cooldown = self.policy.cooldown;
                self.recent.clear();
            }
            // Still cooling down: a request placed before the circuit opened succeeded,
            // which does not undo the failures that opened it.
            Circuit::Open { .. } | Circuit::Closed => {}
        }
    }

    fn open(&mut self, now: Instant) {
        let cooldown = match self.circuit(now) {
            Circuit::HalfOpen => (self.cooldown * 2).min(self.policy.max_cooldown),
            _ => self.policy.cooldown,
        };
        self.cooldown = cooldown;
        self.circuit = Circuit::Open {
            until: now + cooldown,
        };
    }

    /// A real request succeeded.
    pub fn record_success(&mut self, ttfb: Duration, total: Duration, now: Instant) {
        let a = self.policy.ewma_alpha;
        let mix = |old: Option<f64>, sample: Duration| {
            let s = sample.as_secs_f64() * 1000.0;
            Some(old.map_or(s, |o| a * s + (1.0 - a) * o))
        };
        self.ewma_ttfb_ms = mix(self.ewma_ttfb_ms, ttfb);
        self.ewma_latency_ms = mix(self.ewma_latency_ms, total);
        self.alive(now);
    }

    /// A real request failed for `reason` while asking for `model`.
    pub fn record_failure(&mut self, reason: FailureReason, model: &str, now: Instant) {
        self.last_error = Some(format!("{} ({model})", reason.as_str()));
        if reason == FailureReason::ModelNotFound {
            // It lacks the model after all; the next poll says otherwise if it pulls it.
            let want = normalize_model(model);
            self.models.retain(|m| normalize_model(&m.name) != want);
        }
        if !reason.is_health_failure() {
            self.alive(now);
            return;
        }
        self.consecutive_failures += 1;
        if reason.is_burst_failure() {
            self.recent.push_back(now);
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.policy.burst_window)
        {
            self.recent.pop_front();
        }
        let tripped = match self.circuit(now) {
            Circuit::HalfOpen => true,
            Circuit::Open { .. } => false,
            Circuit::Closed => {
                self.consecutive_failures >= self.policy.open_after
                    || self.recent.len() >= self.policy.burst
            }
        };
        if tripped {
            self.open(now);
        }
    }

    /// Applies one poll round. A failed poll ejects at once: the server did not answer its
    /// cheapest endpoint.
    pub fn apply_poll(&mut self, poll: PollResult, now: Instant) {
        self.polled = true;
        match poll {
            PollResult::Answered { tags, ps, version } => {
                let (models, tag_items) = parse_tags(&tags);
                self.models = merge(models, &self.configured);
                self.tags = Arc::new(tag_items);
                let (resident, ps_items) = ps.as_ref().map(parse_ps).unwrap_or_default();
                self.resident = resident;
                self.ps = Arc::new(ps_items);
                self.version = version
                    .as_ref()
                    .and_then(|v| v.get("version"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or(self.version.take());
                self.last_error = None;
                self.alive(now);
            }
            PollResult::Unauthorized => {
                self.models = self.configured.clone();
                self.tags = Arc::new(Vec::new());
                self.resident.clear();
                self.ps = Arc::new(Vec::new());
                self.alive(now);
            }
            PollResult::Failed { message, .. } => {
                self.last_error = Some(message);
                self.consecutive_failures += 1;
                if !matches!(self.circuit(now), Circuit::Open { .. }) {
                    self.open(now);
                }
            }
        }
    }

    /// Memory taken by loaded models.
    pub fn memory_used(&self) -> u64 {
        self.resident.iter().map(|r| r.size).sum()
    }

    pub fn status(&self) -> BackendStatus {
        BackendStatus {
            polled: self.polled,
            circuit: self.circuit,
            consecutive_failures: self.consecutive_failures,
            models: self.models.clone(),
            resident: self.resident.clone(),
            memory_used: self.memory_used(),
            version: self.version.clone(),
            last_error: self.last_error.clone(),
            ewma_latency_ms: self.ewma_latency_ms,
            ewma_ttfb_ms: self.ewma_ttfb_ms,
            tags: Arc::clone(&self.tags),
            ps: Arc::clone(&self.ps),
        }
    }
}

/// Listed models first, then configured ones the listing lacks.
fn merge(mut models: Vec<ModelEntry>, configured: &[ModelEntry]) -> Vec<ModelEntry> {
    for c in configured {
        let key = normalize_model(&c.name);
        if !models.iter().any(|m| normalize_model(&m.name) == key) {
            models.push(c.clone());
        }
    }
    models
}

fn items(body: &Value) -> Vec<Value> {
    body.get("models")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn item_name(item: &Value) -> Option<String> {
    item.get("name")
        .or_else(|| item.get("model"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// `/api/tags` → models with sizes, and the raw items. Lenient: unknown fields are kept,
/// items without a name are skipped.
pub fn parse_tags(body: &Value) -> (Vec<ModelEntry>, Vec<Value>) {
    let raw = items(body);
    let models = raw
        .iter()
        .filter_map(|item| {
            Some(ModelEntry {
                name: item_name(item)?,
                size: item.get("size").and_then(Value::as_u64),
            })
        })
        .collect();
    (models, raw)
}

/// `/api/ps` → loaded models and the raw items.
pub fn parse_ps(body: &Value) -> (Vec<ResidentEntry>, Vec<Value>) {
    let raw = items(body);
    let resident = raw
        .iter()
        .filter_map(|item| {
            let size = item.get("size").and_then(Value::as_u64).unwrap_or(0);
            Some(ResidentEntry {
                name: item_name(item)?,
                size,
                size_vram: item
                    .get("size_vram")
                    .and_then(Value::as_u64)
                    .unwrap_or(size),
                expires_at: item
                    .get("expires_at")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect();
    (resident, raw)
}

/// Mailbox size of a BackendActor: reports arrive with `do_send`, polls are its own.
const MAILBOX: usize = 1024;
/// Largest `/api/tags` answer read (ollama.com lists hundreds of models).
const POLL_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// A poll must answer quickly or the backend counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Actor shell around `BackendState` for one upstream.
pub struct BackendActor {
    info: Arc<BackendInfo>,
    state: BackendState,
    supervisor: Recipient<StatusUpdate>,
    client: Option<upstream::Client>,
    api_key: Option<String>,
    last_pushed: Option<BackendStatus>,
    wake: Option<SpawnHandle>,
    up_gauge: IntGauge,
    used_gauge: IntGauge,
    /// The status poller's resends on stale pooled connections.
    stale_resends: IntCounter,
}

impl BackendActor {
    pub fn new(
        info: Arc<BackendInfo>,
        supervisor: Recipient<StatusUpdate>,
        metrics: &Metrics,
    ) -> BackendActor {
        let name = info.name.as_str();
        let max = metrics.backend_memory.with_label_values(&[name, "max"]);
        if let Some(m) = info.config.max_memory {
            max.set(i64::try_from(m.as_u64()).unwrap_or(i64::MAX));
        }
        // The key is read once; it is never logged.
        let api_key = info
            .config
            .api_key_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        BackendActor {
            state: BackendState::new(&info.config, HealthPolicy::default()),
            up_gauge: metrics.backend_up.with_label_values(&[name]),
            used_gauge: metrics.backend_memory.with_label_values(&[name, "used"]),
            stale_resends: metrics
                .upstream_resends
                .with_label_values(&[name, upstream::STALE_CONNECTION]),
            info,
            supervisor,
            client: None,
            api_key,
            last_pushed: None,
            wake: None,
        }
    }

    fn id(&self) -> BackendId {
        self.info.id
    }

    /// Updates gauges and tells the Supervisor if anything material changed.
    fn publish(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.up_gauge.set(i64::from(self.state.is_up(now)));
        self.used_gauge
            .set(i64::try_from(self.state.memory_used()).unwrap_or(i64::MAX));
        let status = self.state.status();
        let changed = self
            .last_pushed
            .as_ref()
            .is_none_or(|last| status.differs_materially(last));
        if changed {
            self.supervisor.do_send(StatusUpdate {
                backend: self.id(),
                status: status.clone(),
            });
            self.last_pushed = Some(status);
        }
        // Refresh the `up` gauge when the cool-down ends and the circuit turns half-open.
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        if let Some(until) = self.state.open_until(now) {
            let after = until.saturating_duration_since(now) + Duration::from_millis(1);
            self.wake = Some(ctx.run_later(after, |act, ctx| {
                act.wake = None;
                act.publish(ctx);
            }));
        }
    }

    fn schedule_poll(&self, ctx: &mut Context<Self>) {
        let base = self
            .info
            .config
            .poll_interval
            .max(Duration::from_millis(100));
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        ctx.run_later(base.mul_f64(jitter), |act, ctx| act.poll(ctx));
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let api_key = self.api_key.clone();
        let round = async move { poll_round(&client, api_key.as_deref()).await };
        ctx.spawn(round.into_actor(self).map(|result, act, ctx| {
            if let PollResult::Failed { message, .. } = &result {
                tracing::warn!(backend = %act.info.name, error = %message, "backend poll failed");
            }
            act.state.apply_poll(result, Instant::now());
            act.publish(ctx);
            act.schedule_poll(ctx);
        }));
    }
}

impl Actor for BackendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        if self.info.config.kind == BackendKind::Ollama {
            let reach = upstream::Reach::of(&self.info.config);
            match upstream::Client::new(&self.info.base_url, &reach) {
                Ok(client) => {
                    client.count_stale_resends(self.stale_resends.clone());
                    self.client = Some(client);
                    self.poll(ctx);
                }
                Err(e) => {
                    tracing::error!(backend = %self.info.name, error = %e, "backend not polled")
                }
            }
        }
        self.publish(ctx);
    }
}

impl Handler<Report> for BackendActor {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Self::Context) {
        let now = Instant::now();
        match msg.outcome {
            Outcome::Success { ttfb, total } => self.state.record_success(ttfb, total, now),
            Outcome::Failure(reason) => self.state.record_failure(reason, &msg.model, now),
        }
        self.publish(ctx);
    }
}

struct PollError {
    reason: FailureReason,
    status: Option<StatusCode>,
    message: String,
}

async fn poll_round(client: &upstream::Client, api_key: Option<&str>) -> PollResult {
    match get_json(client, api_key, "/api/tags").await {
        Ok(tags) => {
            let (ps, version) = futures_util::future::join(
                get_json(client, api_key, "/api/ps"),
                get_json(client, api_key, "/api/version"),
            )
            .await;
            PollResult::Answered {
                tags,
                ps: ps.ok(),
                version: version.ok(),
            }
        }
        Err(e) if e.status == Some(StatusCode::UNAUTHORIZED) => PollResult::Unauthorized,
        Err(e) => PollResult::Failed {
            reason: e.reason,
            message: e.message,
        },
    }
}

async fn get_json(
    client: &upstream::Client,
    api_key: Option<&str>,
    path: &str,
) -> Result<Value, PollError> {
    let fail = |reason, status, message: String| PollError {
        reason,
        status,
        message,
    };
    let mut headers = vec![(header::ACCEPT, HeaderValue::from_static("application/json"))];
    if let Some(key) = api_key {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|e| fail(FailureReason::Protocol, None, format!("api key: {e}")))?;
        value.set_sensitive(true);
        headers.push((header::AUTHORIZATION, value));
    }
    let deadline = Instant::now() + POLL_TIMEOUT;
    let sent = client.send(Method::GET, path, headers, Bytes::new());
    let resp = match tokio::time::timeout(POLL_TIMEOUT, sent).await {
        Err(_) => {
            return Err(fail(
                FailureReason::Timeout,
                None,
                format!("GET {path}: no answer in {}s", POLL_TIMEOUT.as_secs()),
            ));
        }
        Ok(Err(e)) => {
            let reason = upstream::failure_reason(&e);
            return Err(fail(reason, None, format!("GET {path}: {e}")));
        }
        Ok(Ok(resp)) => resp,
    };
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        let reason = if status.is_server_error() {
            FailureReason::Status5xx
        } else {
            FailureReason::Client4xx
        };
        return Err(fail(
            reason,
            Some(status),
            format!("GET {path}: HTTP {status}"),
        ));
    }
    let body = upstream::read_limited(Box::pin(resp.body), POLL_BODY_LIMIT, deadline)
        .await
        .map_err(|e| {
            fail(
                FailureReason::Protocol,
                None,
                format!("GET {path}: {}", e.message),
            )
        })?;
    serde_json::from_slice(&body).map_err(|e| {
        fail(
            FailureReason::Protocol,
            None,
            format!("GET {path}: not JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ollama() -> BackendConfig {
        BackendConfig {
            name: "gpu".into(),
            url: "http://127.0.0.1:11434".into(),
            ..BackendConfig::default()
        }
    }

    fn tags() -> Value {
        json!({"models": [{
            "name": "qwen3:8b", "model": "qwen3:8b",
            "modified_at": "2026-10-02T11:04:19.5+02:00", "size": 5225388164u64,
            "digest": "500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41",
            "details": {"parent_model": "", "format": "gguf", "family": "qwen3",
                        "families": ["qwen3"], "parameter_size": "8.2B",
                        "quantization_level": "Q4_K_M"}
        }, {"name": "llama3.1:70b", "size": 42520413916u64}]})
    }

    fn ps() -> Value {
        json!({"models": [{
            "name": "qwen3:8b", "model": "qwen3:8b", "size": 6654289920u64,
            "size_vram": 6654289920u64, "expires_at": "2026-10-02T11:09:19.5+02:00",
            "context_length": 4096
        }]})
    }

    fn answered() -> PollResult {
        PollResult::Answered {
            tags: tags(),
            ps: Some(ps()),
            version: Some(json!({"version": "0.12.3"})),
        }
    }

    fn fresh(now: Instant) -> BackendState {
        let mut s = BackendState::new(&ollama(), HealthPolicy::default());
        s.apply_poll(answered(), now);
        s
    }

    #[test]
    fn poll_fills_models_residency_memory_and_version() {
        let s = fresh(Instant::now());
        let st = s.status();
        assert!(st.polled);
        assert_eq!(st.models.len(), 2);
        assert_eq!(st.models[0].size, Some(5225388164));
        assert_eq!(st.resident[0].name, "qwen3:8b");
        assert_eq!(st.memory_used, 6654289920);
        assert_eq!(st.version.as_deref(), Some("0.12.3"));
        assert_eq!(st.tags.len(), 2);
        assert_eq!(st.ps[0]["context_length"], 4096);
    }

    #[test]
    fn unpolled_ollama_is_not_up_but_openai_kinds_are() {
        let now = Instant::now();
        assert!(!BackendState::new(&ollama(), HealthPolicy::default()).is_up(now));
        let cfg = BackendConfig {
            kind: BackendKind::Openai,
            models: vec!["gpt-4o".into()],
            ..ollama()
        };
        let s = BackendState::new(&cfg, HealthPolicy::default());
        assert!(s.is_up(now));
        assert_eq!(s.models()[0].name, "gpt-4o");
    }

    #[test]
    fn unauthorized_poll_is_up_with_configured_models() {
        let now = Instant::now();
        let cfg = BackendConfig {
            models: vec!["gpt-oss:120b-cloud".into()],
            ..ollama()
        };
        let mut s = BackendState::new(&cfg, HealthPolicy::default());
        s.apply_poll(PollResult::Unauthorized, now);
        assert!(s.is_up(now));
        assert_eq!(s.models()[0].name, "gpt-oss:120b-cloud");
    }

    #[test]
    fn consecutive_failures_open_then_half_open_then_close() {
        let t0 = Instant::now();
        let p = HealthPolicy::default();
        let mut s = fresh(t0);
        s.record_failure(FailureReason::Connect, "qwen3:8b", t0);
        s.record_failure(FailureReason::Connect, "qwen3:8b", t0);
        assert_eq!(s.circuit(t0), Circuit::Closed);
        s.record_failure(FailureReason::Connect, "qwen3:8b", t0);
        assert!(matches!(s.circuit(t0), Circuit::Open { .. }));
        assert!(!s.is_up(t0));
        let t1 = t0 + p.cooldown;
        assert_eq!(s.circuit(t1), Circuit::HalfOpen);
        assert!(s.is_up(t1));
        s.record_success(Duration::from_millis(100), Duration::from_secs(1), t1);
        assert_eq!(s.circuit(t1), Circuit::Closed);
        assert_eq!(s.consecutive_failures(), 0);
    }

    #[test]
    fn failed_probe_reopens_with_a_longer_cool_down() {
        let t0 = Instant::now();
        let p = HealthPolicy::default();
        let mut s = fresh(t0);
        for _ in 0..p.open_after {
            s.record_failure(FailureReason::Timeout, "m", t0);
        }
        let t1 = t0 + p.cooldown;
        s.record_failure(FailureReason::Timeout, "m", t1);
        assert_eq!(s.open_until(t1), Some(t1 + p.cooldown * 2));
        assert_eq!(s.circuit(t1 + p.cooldown * 2), Circuit::HalfOpen);
    }

    #[test]
    fn a_burst_of_5xx_opens_even_between_successes() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let ok = (Duration::from_millis(50), Duration::from_millis(500));
        for i in 0..4 {
            let t = t0 + Duration::from_secs(i);
            s.record_failure(FailureReason::Status5xx, "m", t);
            s.record_success(ok.0, ok.1, t);
        }
        assert_eq!(s.circuit(t0 + Duration::from_secs(4)), Circuit::Closed);
        s.record_failure(FailureReason::Status5xx, "m", t0 + Duration::from_secs(4));
        assert!(!s.is_up(t0 + Duration::from_secs(4)));
    }

    #[test]
    fn old_5xx_fall_out_of_the_burst_window() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        let ok = (Duration::from_millis(50), Duration::from_millis(500));
        for i in 0..8 {
            let t = t0 + Duration::from_secs(3 * i);
            s.record_failure(FailureReason::Status5xx, "m", t);
            s.record_success(ok.0, ok.1, t);
        }
        assert_eq!(s.circuit(t0 + Duration::from_secs(24)), Circuit::Closed);
    }

    #[test]
    fn model_errors_do_not_eject_but_forget_the_model() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        for _ in 0..5 {
            s.record_failure(FailureReason::ModelNotFound, "llama3.1:70b", t0);
            s.record_failure(FailureReason::OutOfMemory, "qwen3:8b", t0);
            s.record_failure(FailureReason::Client4xx, "qwen3:8b", t0);
        }
        assert!(s.is_up(t0));
        assert!(s.models().iter().all(|m| m.name != "llama3.1:70b"));
        s.apply_poll(answered(), t0);
        assert!(s.models().iter().any(|m| m.name == "llama3.1:70b"));
    }

    #[test]
    fn failed_poll_ejects_at_once_and_a_good_poll_after_cool_down_restores() {
        let t0 = Instant::now();
        let p = HealthPolicy::default();
        let mut s = fresh(t0);
        let failed = PollResult::Failed {
            reason: FailureReason::Connect,
            message: "GET /api/tags: connection refused".into(),
        };
        s.apply_poll(failed, t0);
        assert!(!s.is_up(t0));
        assert!(s.status().last_error.unwrap().contains("refused"));
        // a poll answering before the cool-down ends does not close it early
        s.apply_poll(answered(), t0 + Duration::from_secs(1));
        assert!(!s.is_up(t0 + Duration::from_secs(1)));
        let t1 = t0 + p.cooldown;
        s.apply_poll(answered(), t1);
        assert_eq!(s.circuit(t1), Circuit::Closed);
        assert_eq!(s.status().last_error, None);
    }

    #[test]
    fn ewma_moves_toward_new_samples() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        s.record_success(Duration::from_millis(100), Duration::from_millis(1000), t0);
        assert_eq!(s.ewma_ms(), (Some(1000.0), Some(100.0)));
        s.record_success(Duration::from_millis(200), Duration::from_millis(2000), t0);
        let (lat, ttfb) = s.ewma_ms();
        assert!((lat.unwrap() - 1300.0).abs() < 1e-6);
        assert!((ttfb.unwrap() - 130.0).abs() < 1e-6);
    }

    #[test]
    fn small_latency_drift_is_not_pushed() {
        let t0 = Instant::now();
        let mut s = fresh(t0);
        s.record_success(Duration::from_millis(100), Duration::from_millis(1000), t0);
        let before = s.status();
        s.record_success(Duration::from_millis(110), Duration::from_millis(1050), t0);
        assert!(!s.status().differs_materially(&before));
        s.record_success(Duration::from_secs(1), Duration::from_secs(5), t0);
        assert!(s.status().differs_materially(&before));
    }

    #[test]
    fn lenient_parsing_skips_nameless_items_and_null_lists() {
        let (models, raw) = parse_tags(&json!({"models": [{"size": 1}, {"model": "x:1b"}]}));
        assert_eq!(raw.len(), 2);
        assert_eq!(
            models,
            vec![ModelEntry {
                name: "x:1b".into(),
                size: None
            }]
        );
        assert!(parse_ps(&json!({"models": null})).0.is_empty());
    }
}
