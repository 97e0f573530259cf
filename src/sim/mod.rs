//! `corral sim`: a simulated Ollama server, wire-faithful enough for the official clients.
//!
//! It is the only stand-in upstream corral's tests, `corral demo` and benchmarks use. It speaks
//! Ollama's native API (`/api/*`), Ollama's OpenAI layer (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/models`) and its Anthropic layer (`/v1/messages`),
//! keeps models resident in a simulated VRAM (load delay, LRU eviction, `keep_alive`), and
//! answers errors the way Ollama and Ollama Cloud do (404, 400, 401, 429 usage limits without
//! Retry-After, 500 out of memory, 503 busy).
//!
//! # Test directives
//! Written anywhere in the last user message (or prompt, or embed input), they steer one request:
//! - `[[tokens=N]]`: answer with N content tokens (`options.num_predict` still caps, giving
//!   `done_reason: "length"`).
//! - `[[token_ms=N]]`, `[[latency_ms=N]]`: delay between tokens / before the first one.
//! - `[[fail_mid]]`: a few frames, then an `{"error":...}` line and a clean close, no done frame.
//! - `[[truncate]]`: a few frames, then the connection drops (no error line, no done frame).
//! - `[[hang]]`: never answer, not even headers. `[[hang_mid]]`: stall forever after a few frames.
//! - `[[error=oom|busy|500|429|401|403|404]]`: that error before the first byte (429 uses the
//!   current limit wording; 403 is Ollama Cloud's "requires a subscription").
//! - `[[tool_on_done]]`: the tool call rides on the `done:true` frame.
//! - `[[two_tools]]`: two tool calls (to the first two tools), in separate frames.
//! - `[[tool=NAME]]`: call the tool named NAME rather than the first (`[[tool=none]]`: answer in
//!   text although tools are offered); `[[args={"k":"v"}]]`: the call's arguments, verbatim.
//!   Agents that always offer tools (Claude Code, Codex) need these to get a plain answer or
//!   to run one chosen command.
//! - `[[unicode]]`: the output contains U+2028, U+2029 and U+0085.
//! - `[[big_line]]`: one frame carries 5 MiB of content.
//! - `[[garbage]]`: a line that is not JSON appears mid-stream.
//!
//! # Behaviour
//! Text is deterministic (seeded by the last user message), 20 tokens by default. When `tools`
//! are given and the last message is not a tool result the model calls the first tool, with
//! arguments built from the schema's required properties. Thinking models (`qwen3:8b`,
//! `gpt-oss:20b`) emit `thinking` first unless `think: false`.
//!
//! # Knobs and counters
//! [`SimState`] has them as methods; out of process, `GET /_sim/stats` returns counters, knobs
//! and residency, and `POST /_sim/control` takes a JSON object of knobs (`fail_rate`,
//! `busy_rate`, `hang`, `hang_mid`, `oom`, `limit_mode` = session|weekly|hourly, `latency_ms`,
//! `token_ms`, `load_ms`, `default_tokens`, `key_budget` (null = none), `budget_window` ("60s"))
//! and actions (`unload_all`, `reset_counters`, `reset_budgets`: true). `/_sim/*` needs no key.

pub mod anthropic;
pub mod catalogue;
pub mod engine;
pub mod ollama;
pub mod openai;
pub mod script;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::Service, http::StatusCode, web};
use serde_json::json;

pub use catalogue::ModelSpec;
pub use state::{Knobs, LimitMode, SimState};

/// Flags of `corral sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 11434)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Models served: empty = the default catalogue; `name` picks from it; `name=4GiB` makes one.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Simulated GPU memory; resident models are evicted (LRU) to stay under it.
    #[arg(long, default_value = "24GiB")]
    pub vram: bytesize::ByteSize,
    /// Delay before the first token.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between tokens.
    #[arg(long, default_value_t = 0)]
    pub token_ms: u64,
    /// Load delay for a model that is not resident.
    #[arg(long, default_value_t = 0)]
    pub load_ms: u64,
    /// Share of inference requests answered 500 before the first byte.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of inference requests answered 503 (queue full) before the first byte.
    #[arg(long, default_value_t = 0.0)]
    pub busy_rate: f64,
    /// Bearer keys accepted (repeat the flag); none = no auth.
    #[arg(long)]
    pub require_key: Vec<String>,
    /// Inference requests per key per --budget-window before a 429 usage-limit answer.
    #[arg(long)]
    pub key_budget: Option<u64>,
    #[arg(long, default_value = "60s")]
    pub budget_window: humantime::Duration,
    /// Wording of usage-limit 429s (Ollama Cloud's session, weekly or older hourly limit).
    #[arg(long, value_enum, default_value_t = LimitMode::Session)]
    pub limit_mode: LimitMode,
    /// Name shown in usage-limit messages (`you (NAME) have reached ...`).
    #[arg(long, default_value = "sim")]
    pub name: String,
    /// Every model load fails with Ollama's out-of-memory error.
    #[arg(long)]
    pub oom: bool,
    /// Inference requests never answer.
    #[arg(long)]
    pub hang: bool,
    /// Inference streams stall forever after a few frames.
    #[arg(long)]
    pub hang_mid: bool,
    /// Content tokens per answer unless a directive or num_predict says otherwise.
    #[arg(long, default_value_t = 20)]
    pub tokens: u64,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

impl Default for SimArgs {
    /// The CLI defaults, except port 0 (any free port), which is what tests want.
    fn default() -> Self {
        Self {
            port: 0,
            host: "127.0.0.1".into(),
            models: Vec::new(),
            vram: bytesize::ByteSize::gib(24),
            latency_ms: 0,
            token_ms: 0,
            load_ms: 0,
            fail_rate: 0.0,
            busy_rate: 0.0,
            require_key: Vec::new(),
            key_budget: None,
            budget_window: std::time::Duration::from_secs(60).into(),
            limit_mode: LimitMode::Session,
            name: "sim".into(),
            oom: false,
            hang: false,
            hang_mid: false,
            tokens: 20,
            workers: 2,
        }
    }
}

impl SimArgs {
    fn knobs(&self) -> Knobs {
        Knobs {
            fail_rate: self.fail_rate.clamp(0.0, 1.0),
            busy_rate: self.busy_rate.clamp(0.0, 1.0),
            hang: self.hang,
            hang_mid: self.hang_mid,
            oom: self.oom,
            limit_mode: self.limit_mode,
            latency_ms: self.latency_ms,
            token_ms: self.token_ms,
            load_ms: self.load_ms,
            default_tokens: self.tokens,
            key_budget: self.key_budget,
            budget_window: *self.budget_window,
        }
    }

    /// The state these flags describe.
    pub fn build_state(&self) -> std::io::Result<SimState> {
        let models = catalogue::from_flags(&self.models)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(SimState::new(
            self.name.clone(),
            self.vram.as_u64(),
            models,
            self.knobs(),
            self.require_key.clone(),
        ))
    }
}

/// A running sim.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:40123` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops at once: open streams are dropped, not drained.
    pub async fn stop(self) {
        self.server.stop(false).await;
        // The server future ends right after stop; its result carries nothing to act on.
        let _ = self.task.await;
    }
}

/// Binds and spawns the sim inside the current tokio (or actix) runtime; returns at once.
pub async fn start(args: SimArgs) -> std::io::Result<SimHandle> {
    let state = Arc::new(args.build_state()?);
    let data = web::Data::new(Arc::clone(&state));
    let counted = state.clone();
    let server = HttpServer::new(move || app(data.clone()))
        .on_connect(move |conn, ext| {
            counted.connection_opened();
            crate::no_delay(conn, ext);
        })
        .workers(args.workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        // A client that closes its side cancels the request, as Go's net/http does for Ollama.
        .h1_allow_half_closed(false)
        .bind((args.host.as_str(), args.port))?;
    let addr = server
        .addrs()
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("sim bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(SimHandle {
        addr,
        state,
        server: handle,
        task,
    })
}

/// For the CLI: start, print the URL, run until Ctrl-C or SIGTERM.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let handle = start(args).await?;
    println!("corral sim listening on {}", handle.url());
    wait_for_shutdown().await;
    handle.stop().await;
    Ok(())
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The sim's routes, usable with `actix_web::test::init_service` too.
pub fn app(
    data: web::Data<Arc<SimState>>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let counter = data.clone();
    App::new()
        .app_data(data)
        // Claude Code and agent contexts run to megabytes.
        .app_data(web::PayloadConfig::new(256 << 20))
        .wrap_fn(move |req, srv| {
            counter.count_path(req.path());
            counter.record_headers(req.path(), req.headers());
            srv.call(req)
        })
        .configure(routes)
}

fn routes(cfg: &mut web::ServiceConfig) {
    use ollama as o;
    cfg.route("/", web::get().to(o::root))
        .route("/", web::head().to(o::root))
        .route("/api/version", web::get().to(o::version))
        .route("/api/version", web::head().to(o::version))
        .route("/api/tags", web::get().to(o::tags))
        .route("/api/tags", web::head().to(o::tags))
        .route("/api/ps", web::get().to(o::ps))
        .route("/api/show", web::post().to(o::show))
        .route("/api/chat", web::post().to(o::chat))
        .route("/api/generate", web::post().to(o::generate))
        .route("/api/embed", web::post().to(o::embed))
        .route("/api/embeddings", web::post().to(o::embeddings))
        .route("/api/pull", web::post().to(o::pull))
        .route("/api/delete", web::delete().to(o::delete))
        .route("/api/copy", web::post().to(o::copy))
        .route("/v1/models", web::get().to(openai::models))
        .route("/v1/models/{id:.*}", web::get().to(openai::model))
        .route("/v1/chat/completions", web::post().to(openai::chat))
        .route("/v1/completions", web::post().to(openai::completions))
        .route("/v1/embeddings", web::post().to(openai::embeddings))
        .route("/v1/messages", web::post().to(anthropic::messages))
        .route("/_sim/stats", web::get().to(stats))
        .route("/_sim/control", web::post().to(control))
        .default_service(web::to(not_found));
}

/// Gin's answer for unknown paths.
async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain")
        .body("404 page not found")
}

async fn stats(state: web::Data<Arc<SimState>>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}

async fn control(
    state: web::Data<Arc<SimState>>,
    _req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    match parsed
        .map_err(|e| e.to_string())
        .and_then(|v| state.apply_control(&v))
    {
        Ok(()) => HttpResponse::Ok().json(state.stats()),
        Err(e) => HttpResponse::build(StatusCode::BAD_REQUEST).json(json!({"error": e})),
    }
}

#[cfg(test)]
mod tests;
