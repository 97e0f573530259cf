//! The dialect-independent path of one generation: gatekeeping (auth, budgets, forced
//! failures), model residency, first-token latency, and the paced body stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode};
use bytes::Bytes;
use futures_util::Stream;
use rand::Rng;
use serde_json::{Value, json};

use super::catalogue::ModelSpec;
use super::script::{self, Directives, Ending, ForcedError, GenRequest, Piece, Plan, ToolCall};
use super::state::{KeepAlive, LimitMode, LoadError, ModelUse, SimState, StreamGuard};

/// Which wire dialect an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Ollama,
    OpenAi,
    Anthropic,
}

/// An answer given instead of a generation, before any byte of the body.
#[derive(Debug, Clone, PartialEq)]
pub struct SimError {
    pub status: StatusCode,
    pub message: String,
}

impl SimError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("model \"{model}\" not found, try pulling it first"),
        )
    }

    pub fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy, please try again.  maximum pending requests exceeded",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized")
    }

    pub fn oom(need: u64, available: u64) -> Self {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "model requires more system memory ({:.1} GiB) than is available ({:.1} GiB)",
                gib(need),
                gib(available)
            ),
        )
    }

    /// Ollama Cloud's usage-limit answer; no Retry-After, as observed.
    pub fn limit(user: &str, mode: LimitMode) -> Self {
        let reference = uuid::Uuid::new_v4();
        let message = match mode {
            LimitMode::Session => format!(
                "you ({user}) have reached your session usage limit, please wait or upgrade to continue: https://ollama.com/upgrade (ref: {reference})"
            ),
            LimitMode::Weekly => format!(
                "you ({user}) have reached your weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade or add extra usage: https://ollama.com/settings (ref: {reference})"
            ),
            LimitMode::Hourly => {
                "you've reached your hourly usage limit, please wait or upgrade to continue"
                    .to_string()
            }
        };
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    fn forced(kind: ForcedError, state: &SimState, spec: &ModelSpec) -> Self {
        match kind {
            ForcedError::Oom => Self::oom(spec.size, state.vram().min(spec.size / 2)),
            ForcedError::Busy => Self::busy(),
            ForcedError::Internal => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "llama runner process has terminated: exit status 2",
            ),
            ForcedError::Limit => Self::limit(state.name(), state.knobs().limit_mode),
            ForcedError::Unauthorized => Self::unauthorized(),
            ForcedError::Subscription => Self::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this model requires a subscription, upgrade for access: https://ollama.com/upgrade (ref: {})",
                    uuid::Uuid::new_v4()
                ),
            ),
            ForcedError::NotFound => Self::not_found(&spec.name),
        }
    }

    /// The error body in `dialect`'s shape, with the status.
    pub fn render(&self, dialect: Dialect) -> HttpResponse {
        let body = match dialect {
            Dialect::Ollama => json!({"error": self.message}),
            Dialect::OpenAi => {
                // Ollama's OpenAI layer: 400 and 404 have their own types, all else api_error.
                let kind = match self.status.as_u16() {
                    400 => "invalid_request_error",
                    404 => "not_found_error",
                    _ => "api_error",
                };
                json!({"error": {"message": self.message, "type": kind, "param": null, "code": null}})
            }
            Dialect::Anthropic => {
                let kind = match self.status.as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    503 | 529 => "overloaded_error",
                    s if s >= 500 => "api_error",
                    _ => "invalid_request_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": self.message},
                       "request_id": format!("req_{}", uuid::Uuid::new_v4().simple())})
            }
        };
        json_response(self.status, &body)
    }
}

/// A JSON body with Ollama's content type (gin's `c.JSON`).
pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

/// Parses a request body as a JSON object, with Ollama's wording for the common failures.
pub fn parse_body(body: &[u8]) -> Result<Value, SimError> {
    if body.is_empty() {
        return Err(SimError::bad_request("missing request body"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| SimError::bad_request(e.to_string()))?;
    if !value.is_object() {
        return Err(SimError::bad_request(
            "json: cannot unmarshal non-object into Go value",
        ));
    }
    Ok(value)
}

/// The bearer token of `req`, if any.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// Auth for every keyed path; for inference also the per-key counter and budget.
pub fn gate(state: &SimState, req: &HttpRequest, inference: bool) -> Result<(), SimError> {
    let key = bearer(req);
    if state.requires_key() && !key.as_deref().is_some_and(|k| state.key_accepted(k)) {
        return Err(SimError::unauthorized());
    }
    if inference {
        let key = key.unwrap_or_default();
        if !key.is_empty() {
            state.count_key(&key);
        }
        if !state.spend_budget(&key) {
            return Err(SimError::limit(state.name(), state.knobs().limit_mode));
        }
    }
    Ok(())
}

/// What the caller needs from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Chat,
    Generate,
    Embed,
}

/// A generation that passed every check and whose model is loaded: ready for its first token.
pub struct Started {
    pub plan: Plan,
    pub spec: ModelSpec,
    pub guard: StreamGuard,
    pub model_use: ModelUse,
    pub timing: Timing,
}

/// Wall-clock facts of one generation, for the metrics on the final frame.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start: Instant,
    pub load: Duration,
    pub first_token: Instant,
}

/// Final-frame metrics in nanoseconds; zero ones are left out, like Ollama's `omitempty`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

impl Metrics {
    pub fn new(plan: &Plan, timing: &Timing) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = Instant::now();
        let loaded = timing.start + timing.load;
        Self {
            total_duration: ns(now.duration_since(timing.start)),
            load_duration: ns(timing.load),
            prompt_eval_count: plan.prompt_tokens,
            prompt_eval_duration: ns(timing.first_token.saturating_duration_since(loaded)),
            eval_count: plan.eval_count,
            eval_duration: ns(now.saturating_duration_since(timing.first_token)),
        }
    }

    pub fn write_into(&self, obj: &mut serde_json::Map<String, Value>) {
        for (k, v) in [
            ("total_duration", self.total_duration),
            ("load_duration", self.load_duration),
            ("prompt_eval_count", self.prompt_eval_count),
            ("prompt_eval_duration", self.prompt_eval_duration),
            ("eval_count", self.eval_count),
            ("eval_duration", self.eval_duration),
        ] {
            if v != 0 {
                obj.insert(k.into(), json!(v));
            }
        }
    }
}

/// Checks the request, applies forced failures, waits for a model load and the first-token
/// latency. Returns `Err` for an answer with a real status; never returns on a hang.
pub async fn start(
    state: &Arc<SimState>,
    req: &GenRequest,
    task: Task,
) -> Result<Started, SimError> {
    let start = Instant::now();
    state.count_model(&req.model);
    let spec = state
        .model(&req.model)
        .ok_or_else(|| SimError::not_found(&req.model))?;
    check_capabilities(&spec, req, task)?;
    let keep_alive = KeepAlive::parse(req.keep_alive.as_ref()).map_err(SimError::bad_request)?;
    let directives = Directives::parse(req.last_user_text());
    let knobs = state.knobs();
    if let Some(kind) = directives.error {
        return Err(SimError::forced(kind, state, &spec));
    }
    {
        let mut rng = rand::thread_rng();
        if knobs.fail_rate > 0.0 && rng.gen_bool(knobs.fail_rate.clamp(0.0, 1.0)) {
            return Err(SimError::forced(ForcedError::Internal, state, &spec));
        }
        if knobs.busy_rate > 0.0 && rng.gen_bool(knobs.busy_rate.clamp(0.0, 1.0)) {
            return Err(SimError::busy());
        }
    }
    let guard = state.open_stream();
    if knobs.hang || directives.hang {
        // The guard lives in this future: a client that gives up drops it, counting a cancel.
        std::future::pending::<()>().await;
    }
    let (model_use, ready_at) = match state.acquire(&req.model, keep_alive, req.num_ctx) {
        Ok(ok) => ok,
        Err(LoadError::NotFound) => return Err(SimError::not_found(&req.model)),
        Err(LoadError::OutOfMemory { need, available }) => {
            return Err(SimError::oom(need, available));
        }
    };
    tokio::time::sleep_until(ready_at.into()).await;
    let load = start.elapsed();
    let latency = directives.latency_ms.unwrap_or(knobs.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    // gpt-oss cannot turn reasoning off: it ignores `think: false` and reasons anyway.
    let thinking = spec.has("thinking")
        && task != Task::Embed
        && (req.think != Some(false) || spec.family == "gptoss");
    let plan = script::plan(
        req,
        &directives,
        thinking,
        knobs.default_tokens,
        knobs.token_ms,
        knobs.hang_mid,
    );
    Ok(Started {
        plan,
        spec,
        guard,
        model_use,
        timing: Timing {
            start,
            load,
            first_token: Instant::now(),
        },
    })
}

fn check_capabilities(spec: &ModelSpec, req: &GenRequest, task: Task) -> Result<(), SimError> {
    let name = &req.model;
    let missing = |what: &str| SimError::bad_request(format!("\"{name}\" does not support {what}"));
    match task {
        Task::Chat if !spec.has("completion") => return Err(missing("chat")),
        Task::Generate if !spec.has("completion") => return Err(missing("generate")),
        Task::Embed if !spec.has("embedding") && !spec.has("completion") => {
            return Err(missing("embeddings"));
        }
        _ => {}
    }
    if !req.tools.is_empty() && !spec.has("tools") {
        return Err(missing("tools"));
    }
    if req.think == Some(true) && !spec.has("thinking") {
        return Err(missing("thinking"));
    }
    Ok(())
}

/// Turns plan pieces into wire frames for one dialect.
pub trait Framer: 'static {
    fn piece(&mut self, piece: &Piece) -> Vec<Bytes>;
    fn done(&mut self, plan: &Plan, calls: &[ToolCall], metrics: &Metrics) -> Vec<Bytes>;
    fn error(&mut self, message: &str) -> Vec<Bytes>;
}

/// The paced body of a streaming answer. Owns the stream guard and the model use, so both
/// are released when the body ends or the client goes away.
pub fn drive<F: Framer>(
    started: Started,
    mut framer: F,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let Started {
        plan,
        mut guard,
        model_use,
        timing,
        ..
    } = started;
    async_stream::stream! {
        let _model_use = model_use;
        for (i, piece) in plan.pieces.iter().enumerate() {
            if i > 0 && plan.token_ms > 0 {
                tokio::time::sleep(Duration::from_millis(plan.token_ms)).await;
            }
            for frame in framer.piece(piece) {
                yield Ok(frame);
            }
        }
        match &plan.ending {
            Ending::Done => {
                let metrics = Metrics::new(&plan, &timing);
                guard.finish();
                for frame in framer.done(&plan, &plan.done_calls, &metrics) {
                    yield Ok(frame);
                }
            }
            Ending::Fail(message) => {
                guard.finish();
                for frame in framer.error(message) {
                    yield Ok(frame);
                }
            }
            Ending::Truncate => {
                guard.finish();
                // Let the frames so far reach the socket first: an error from the body makes
                // actix drop the connection at once, even before the head is written.
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(actix_web::error::ErrorInternalServerError("simulated truncation"));
            }
            Ending::Hang => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Waits as long as streaming the plan would have taken, for non-streamed answers.
pub async fn pace(plan: &Plan) {
    let steps = plan.pieces.len().saturating_sub(1) as u64;
    if plan.token_ms > 0 && steps > 0 {
        tokio::time::sleep(Duration::from_millis(plan.token_ms * steps)).await;
    }
}

/// How a non-streamed answer ends when the plan does not finish cleanly.
pub async fn finish_unary(
    started: Started,
    dialect: Dialect,
    ok: impl FnOnce(&Plan, &ModelSpec, &Metrics) -> Value,
) -> HttpResponse {
    let Started {
        plan,
        spec,
        mut guard,
        model_use,
        timing,
    } = started;
    pace(&plan).await;
    match &plan.ending {
        Ending::Done => {
            let metrics = Metrics::new(&plan, &timing);
            let body = ok(&plan, &spec, &metrics);
            guard.finish();
            drop(model_use);
            json_response(StatusCode::OK, &body)
        }
        Ending::Fail(message) => {
            guard.finish();
            SimError::new(StatusCode::INTERNAL_SERVER_ERROR, message.clone()).render(dialect)
        }
        Ending::Truncate => {
            guard.finish();
            let body = async_stream::stream! {
                yield Ok(Bytes::from_static(b"{\"model\":\""));
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(actix_web::error::ErrorInternalServerError("simulated truncation"));
            };
            HttpResponse::Ok()
                .content_type("application/json; charset=utf-8")
                .streaming(body)
        }
        Ending::Hang => {
            let _hold = (guard, model_use);
            std::future::pending::<HttpResponse>().await
        }
    }
}

/// RFC 3339 with nanoseconds, as Go prints `time.Time`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
