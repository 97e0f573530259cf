//! Ollama-native endpoints: generation proxied frame by frame, and the fleet seen as one Ollama.

use std::collections::BTreeMap;

use actix_web::http::header::ContentType;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::actors::supervisor::BackendInfo;
use crate::actors::supervisor::FailureReason;
use crate::api::chat::{self, ClientWriter, Lazy};
use crate::api::forward::{self, Ctx, Relay, Tally};
use crate::api::{self as api, dedup, with_served_headers};
use crate::config::BackendKind;
use crate::dialect::Dialect;
use crate::dialect::ollama;
use crate::dialect::ollama::{ndjson_line, needs_escape};
use crate::error::{DialectError, ErrorKind, GatewayError};
use crate::ir::{ChatRequest, EmbedRequest};
use crate::routing::features::Wants;
use crate::upstream::lines::LineSplitter;
use crate::upstream::{self, Call, UpstreamClients};

/// The Ollama version corral reports; clients gate features on it.
pub const OLLAMA_COMPAT_VERSION: &str = "0.12.6";
/// Longest NDJSON line accepted from an upstream (a 5 MiB frame must fit).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Largest non-streamed upstream answer read whole (embeddings of long batches).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/chat", web::post().to(chat))
        .route("/api/generate", web::post().to(generate))
        .route("/api/embed", web::post().to(embed))
        .route("/api/embeddings", web::post().to(embeddings))
        .route("/api/show", web::post().to(show))
        .route("/api/tags", web::get().to(tags))
        .route("/api/tags", web::head().to(ok_empty))
        .route("/api/ps", web::get().to(ps))
        .route("/api/version", web::get().to(version))
        .route("/api/version", web::head().to(ok_empty))
        .route("/", web::get().to(root))
        .route("/", web::head().to(ok_empty));
    for path in [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
        "/api/blobs/{digest}",
        "/api/me",
        "/api/signout",
        "/api/user/keys/{key}",
        "/api/experimental/{tool}",
    ] {
        cfg.route(path, web::route().to(crate::api::manage::management));
    }
}

fn err(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::Ollama)
}

async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("Ollama is running")
}

async fn ok_empty() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "version": OLLAMA_COMPAT_VERSION }))
}

/// The fields corral needs from a generation request; the rest passes through untouched.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    /// `null` reads as absent, as Ollama's pointer field does.
    #[serde(default)]
    think: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<serde::de::IgnoredAny>>,
    /// `/api/generate` images.
    #[serde(default)]
    images: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    messages: Option<Vec<PeekMessage>>,
}

#[derive(Deserialize)]
struct PeekMessage {
    #[serde(default)]
    images: Option<Vec<serde::de::IgnoredAny>>,
}

impl Peek {
    /// What the request wants from its model; `think` counts when it is not `false`.
    fn wants(&self) -> Wants {
        let some =
            |v: &Option<Vec<serde::de::IgnoredAny>>| v.as_ref().is_some_and(|v| !v.is_empty());
        Wants {
            thinking: self
                .think
                .as_ref()
                .is_some_and(|t| !matches!(t, Value::Bool(false))),
            tools: some(&self.tools),
            vision: some(&self.images) || self.messages.iter().flatten().any(|m| some(&m.images)),
        }
    }
}

fn peek(body: &[u8]) -> Result<Peek, GatewayError> {
    let p: Peek = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    match &p.model {
        Some(m) if !m.is_empty() => api::body::model_name(m).map(|()| p),
        _ => Err(GatewayError::bad_field("model", "is required")),
    }
}

async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    generation(req, payload, gw, clients, "/api/chat", true).await
}

async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    generation(req, payload, gw, clients, "/api/generate", true).await
}

async fn embed(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    generation(req, payload, gw, clients, "/api/embed", false).await
}

async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    generation(req, payload, gw, clients, "/api/embeddings", false).await
}

async fn show(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    generation(req, payload, gw, clients, "/api/show", false).await
}

/// Body for `backend`: the client's bytes untouched unless the model name must change.
fn passthrough_body(body: &Bytes, requested: &str, served: &str) -> Result<Bytes, GatewayError> {
    if requested == served {
        return Ok(body.clone());
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    v["model"] = Value::String(served.to_string());
    Ok(Bytes::from(v.to_string()))
}

async fn generation(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    path: &'static str,
    streams_by_default: bool,
) -> Result<HttpResponse, DialectError> {
    let caller = api::authenticate(&req, &gw).await.map_err(err)?;
    let body = api::read_body(payload, &req, gw.config.server.body_limit.as_u64() as usize)
        .await
        .map_err(err)?;
    api::body::json_object(&body).map_err(err)?;
    let p = peek(&body).map_err(err)?;
    let stream = streams_by_default && p.stream.unwrap_or(true);
    let generates = matches!(path, "/api/chat" | "/api/generate");
    let wants = if generates {
        p.wants()
    } else {
        Wants::default()
    };
    let had_think = p.think.is_some();
    let mut ctx = Ctx::new(&req, Dialect::Ollama, caller.name);
    ctx.requested_model = p.model.unwrap_or_default();
    ctx.generates = generates;
    ctx.body = Some(body.clone());
    let ctx = api::admit(&gw, (caller.rpm, caller.tpm), ctx)
        .await
        .map_err(err)?;
    // A whole answer of an inference endpoint is shared by identical requests.
    let key = if stream || path == "/api/show" {
        None
    } else {
        gw.dedup.key(&ctx, &req)
    };
    let asked = Asked {
        wants,
        had_think,
        generates,
    };
    dedup::serve(gw.clone(), key, ctx, |ctx| {
        place(req, gw, clients, path, body, stream, asked, ctx)
    })
    .await
}

/// What a generation request asked of its model, read from the client's bytes.
#[derive(Clone, Copy)]
struct Asked {
    wants: Wants,
    /// The body has a `think` field (kept as sent when the model may think).
    had_think: bool,
    /// Chat or generate, not embeddings or show.
    generates: bool,
}

/// Places and forwards one generation request, streamed or whole.
#[allow(clippy::too_many_arguments)]
async fn place(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    path: &'static str,
    body: Bytes,
    stream: bool,
    asked: Asked,
    mut ctx: Ctx,
) -> Result<HttpResponse, DialectError> {
    let requested = ctx.requested_model.clone();
    // Decoded only if the virtual `auto` model or a backend of another dialect needs it.
    let canonical: Lazy<Canonical> = Lazy::default();
    let decode = || Canonical::decode(path, &body);
    let auto_view = || match canonical.get(decode)? {
        Canonical::Chat(c) => Ok(Some(std::sync::Arc::new((**c).clone()))),
        _ => Ok(None),
    };
    let target = api::resolve_model(&gw, &clients, &requested, auto_view, &mut ctx)
        .await
        .map_err(err)?;
    let fit = api::fit_features(&gw, &clients, target, asked.wants)
        .await
        .map_err(err)?;
    let (target, show_thinking) = (fit.model, fit.thinking);
    // Reasoning only when asked and possible: Ollama backends get `think: false` otherwise.
    let native = if asked.generates && !show_thinking {
        ollama::with_think_off(&body, asked.had_think).map_err(err)?
    } else {
        body.clone()
    };
    let hide_thinking = asked.generates && !show_thinking;
    let build = |backend: &BackendInfo, served: &str| -> Result<Call, GatewayError> {
        if backend.config.kind == BackendKind::Ollama {
            return Ok(Call::post_json(
                path,
                passthrough_body(&native, &requested, served)?,
            ));
        }
        match canonical.get(decode)? {
            Canonical::Chat(chat) => Ok(chat::chat_call(backend, served, chat, &req)),
            Canonical::Embed(e) => chat::embed_call(backend, served, e),
            Canonical::Show => Err(GatewayError::internal("show is answered locally")),
        }
    };
    if path == "/api/show" && !gw.fleet.backends().is_empty() {
        if let Some(resp) = show_configured(&gw, &target, &requested) {
            return Ok(resp);
        }
    }
    let mut tally = Tally::new(gw.clone(), ctx);
    let mut served = match forward::open(&gw, &clients, &target, &build).await {
        Ok(s) => s,
        Err(e) => {
            tally.fail(e.status(Dialect::Ollama).as_u16(), &e);
            return Err(err(e));
        }
    };
    if served.backend().config.kind != BackendKind::Ollama {
        return translated(
            served,
            tally,
            canonical.get(decode).map_err(err)?,
            &requested,
            stream,
            hide_thinking,
        )
        .await;
    }
    let rewrite = (served.model != requested).then(|| requested.clone());
    if stream {
        let relay = Box::new(OllamaRelay::new(rewrite).hiding_thinking(hide_thinking));
        return Ok(chat::stream_response(served, relay, tally, Dialect::Ollama));
    }
    tally.served(&served);
    let bytes = match forward::collect(&mut served, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tally.fail(e.status(Dialect::Ollama).as_u16(), &e);
            served.lease.failed(FailureReason::Protocol);
            return Err(err(e));
        }
    };
    let (bytes, usage) = finish_single(bytes, rewrite.as_deref(), hide_thinking).map_err(err)?;
    tally.tokens = usage;
    tally.finished = true;
    served
        .lease
        .succeeded(served.ttfb, tally.ctx.started.elapsed());
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json; charset=utf-8");
    with_served_headers(&mut resp, &served, &tally);
    Ok(resp.body(bytes))
}

/// An Ollama request in canonical form, for upstreams of another dialect.
enum Canonical {
    Chat(Box<ChatRequest>),
    Embed(EmbedRequest),
    Show,
}

impl Canonical {
    fn decode(path: &str, body: &[u8]) -> Result<Canonical, GatewayError> {
        Ok(match path {
            "/api/chat" => Canonical::Chat(Box::new(ollama::decode_chat(body)?)),
            "/api/generate" => Canonical::Chat(Box::new(ollama::decode_generate(body)?)),
            "/api/embed" | "/api/embeddings" => Canonical::Embed(ollama::decode_embed(body)?),
            _ => Canonical::Show,
        })
    }
}

/// An answer from an OpenAI or Anthropic upstream, written as Ollama would.
async fn translated(
    served: forward::Served,
    mut tally: Tally,
    canonical: &Canonical,
    requested: &str,
    stream: bool,
    hide_thinking: bool,
) -> Result<HttpResponse, DialectError> {
    match canonical {
        Canonical::Chat(c) if stream => {
            let writer = ClientWriter::Ollama(ollama::StreamWriter::new(requested, !c.completion));
            let relay = chat::TranslateRelay::new(served.backend().config.kind, writer)
                .hiding_thinking(hide_thinking);
            Ok(chat::stream_response(
                served,
                Box::new(relay),
                tally,
                Dialect::Ollama,
            ))
        }
        Canonical::Chat(c) => {
            let (mut resp, served) = chat::whole(served, &mut tally, chat::parse_chat_response)
                .await
                .map_err(err)?;
            if hide_thinking {
                resp.thinking.clear();
            }
            tally.tokens = Some((resp.usage.input, resp.usage.output));
            let mut out = HttpResponse::Ok();
            with_served_headers(&mut out, &served, &tally);
            Ok(out.json(ollama::encode_response(&resp, requested, !c.completion)))
        }
        Canonical::Embed(e) => {
            let parse = |_, b: &[u8]| crate::dialect::openai::parse_embeddings_response(b);
            let (resp, served) = chat::whole(served, &mut tally, parse).await.map_err(err)?;
            tally.tokens = Some((resp.input_tokens, 0));
            let mut out = HttpResponse::Ok();
            with_served_headers(&mut out, &served, &tally);
            Ok(out.json(ollama::encode_embed_response(&resp, requested, e.legacy)))
        }
        Canonical::Show => Err(err(GatewayError::internal("show is answered locally"))),
    }
}

/// `/api/show` for models only upstreams of another dialect serve: a faithful minimal answer.
fn show_configured(gw: &Gateway, target: &str, requested: &str) -> Option<HttpResponse> {
    let on_ollama = gw
        .fleet
        .backends()
        .iter()
        .any(|b| b.config.kind == BackendKind::Ollama);
    let listed = gw.fleet.backends().iter().any(|b| {
        b.config.kind != BackendKind::Ollama && b.config.models.iter().any(|m| m == target)
    });
    let is_auto = gw.config.routing.auto_models.iter().any(|m| m == requested);
    if !(is_auto || (listed && !on_ollama)) {
        return None;
    }
    Some(HttpResponse::Ok().json(json!({
        "modelfile": "", "parameters": "", "template": "",
        "details": {"parent_model": "", "format": "", "family": "corral", "families": ["corral"],
                    "parameter_size": "", "quantization_level": ""},
        "model_info": {},
        "capabilities": if is_auto { json!(["completion", "tools", "vision"]) } else { json!(["completion", "tools"]) },
        "modified_at": "2026-01-01T00:00:00Z",
    })))
}

/// A whole upstream answer: checked to be JSON, model name echoed, tokens read. The tree is
/// built only when the model name must change.
fn finish_single(
    bytes: Bytes,
    rewrite: Option<&str>,
    hide_thinking: bool,
) -> Result<(Bytes, Option<(u64, u64)>), GatewayError> {
    let invalid = |e: serde_json::Error| {
        GatewayError::new(
            ErrorKind::UpstreamProtocol,
            format!("upstream sent invalid JSON: {e}"),
        )
    };
    if hide_thinking && contains(&bytes, b"\"thinking\"") {
        let mut v: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
        ollama::strip_thinking(&mut v);
        if let (Some(model), Some(_)) = (rewrite, v.get("model")) {
            v["model"] = Value::String(model.to_string());
        }
        let usage = usage_of(&v);
        return Ok((Bytes::from(v.to_string()), usage));
    }
    let Some(model) = rewrite else {
        let counts: Counts = serde_json::from_slice(&bytes).map_err(invalid)?;
        let usage =
            (counts.prompt_eval_count.is_some() || counts.eval_count.is_some()).then(|| {
                (
                    counts.prompt_eval_count.unwrap_or(0),
                    counts.eval_count.unwrap_or(0),
                )
            });
        return Ok((bytes, usage));
    };
    let mut v: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let usage = usage_of(&v);
    if v.get("model").is_some() {
        v["model"] = Value::String(model.to_string());
        return Ok((Bytes::from(v.to_string()), usage));
    }
    Ok((bytes, usage))
}

/// Token counts of an Ollama answer, read without building a tree.
#[derive(Deserialize)]
struct Counts {
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let tin = v.get("prompt_eval_count").and_then(Value::as_u64);
    let tout = v.get("eval_count").and_then(Value::as_u64);
    (tin.is_some() || tout.is_some()).then(|| (tin.unwrap_or(0), tout.unwrap_or(0)))
}

/// Ollama NDJSON to Ollama NDJSON: lines pass through as they are, checked and escaped,
/// with the model name rewritten only when an alias or fallback served the request.
pub struct OllamaRelay {
    lines: LineSplitter,
    batch: Vec<Bytes>,
    rewrite: Option<String>,
    hide_thinking: bool,
    done: bool,
    usage: Option<(u64, u64)>,
}

impl OllamaRelay {
    pub fn new(rewrite: Option<String>) -> OllamaRelay {
        OllamaRelay {
            lines: LineSplitter::new(MAX_LINE),
            batch: Vec::new(),
            rewrite,
            hide_thinking: false,
            done: false,
            usage: None,
        }
    }

    /// Drops reasoning the client did not ask for (gpt-oss reasons even with `think: false`).
    pub fn hiding_thinking(mut self, hide: bool) -> OllamaRelay {
        self.hide_thinking = hide;
        self
    }

    fn line(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        if self.done {
            return Ok(());
        }
        // Validates the line and reads the two fields that matter, whatever their order or
        // spacing, without building a tree.
        let peek: LinePeek = serde_json::from_slice(line).map_err(garbage)?;
        let is_error = peek.error.is_some();
        let is_done = peek.done == Some(true);
        let thinks = self.hide_thinking && contains(line, b"\"thinking\"");
        if !is_error && !is_done && !thinks && self.rewrite.is_none() && !needs_escape(line) {
            // The hot path: forward the bytes.
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
            return Ok(());
        }
        let mut v: Value = serde_json::from_slice(line).map_err(garbage)?;
        if let Some(e) = v.get("error") {
            let message = e.as_str().map_or_else(|| e.to_string(), str::to_string);
            return Err(upstream::from_upstream(ErrorKind::UpstreamStatus, message));
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            self.done = true;
            self.usage = usage_of(&v);
        }
        if thinks && !ollama::strip_thinking(&mut v) {
            return Ok(());
        }
        if let Some(model) = &self.rewrite {
            if v.get("model").is_some() {
                v["model"] = Value::String(model.clone());
            }
        }
        out.extend_from_slice(&ndjson_line(&v));
        Ok(())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The fields of an Ollama stream line that decide how it is handled.
#[derive(Deserialize)]
struct LinePeek {
    done: Option<bool>,
    error: Option<serde::de::IgnoredAny>,
}

fn garbage(e: serde_json::Error) -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        format!("upstream sent invalid JSON: {e}"),
    )
}

impl Relay for OllamaRelay {
    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let mut batch = std::mem::take(&mut self.batch);
        let fed = self.lines.feed(bytes, &mut batch);
        let mut result = fed.map_err(|e| {
            GatewayError::new(
                ErrorKind::UpstreamProtocol,
                format!("upstream line longer than {} bytes", e.0),
            )
        });
        for line in batch.drain(..) {
            if result.is_ok() {
                result = self.line(&line, out);
            }
        }
        self.batch = batch;
        result
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        if let Some(rest) = self.lines.finish() {
            self.line(&rest, out)?;
        }
        if self.done {
            Ok(())
        } else {
            Err(forward::incomplete())
        }
    }

    fn error_frame(&mut self, e: &GatewayError) -> Bytes {
        e.stream_frame(Dialect::Ollama)
    }

    fn usage(&self) -> Option<(u64, u64)> {
        self.usage
    }
}

/// `/api/tags`: the union of every backend's models, the largest size winning.
async fn tags(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, DialectError> {
    api::authenticate(&req, &gw).await.map_err(err)?;
    let mut models: BTreeMap<String, Value> = BTreeMap::new();
    for view in gw.fleet.snapshot().await {
        for item in view.tags {
            let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let size = |v: &Value| v.get("size").and_then(Value::as_u64).unwrap_or(0);
            match models.get(&name) {
                Some(existing) if size(existing) >= size(&item) => {}
                _ => {
                    models.insert(name, item);
                }
            }
        }
    }
    for name in &gw.config.routing.auto_models {
        models
            .entry(name.clone())
            .or_insert_with(|| virtual_tag(name));
    }
    let list: Vec<Value> = models.into_values().collect();
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

fn virtual_tag(name: &str) -> Value {
    json!({
        "name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0,
        "digest": format!("{:0>64}", ""),
        "details": {"parent_model": "", "format": "virtual", "family": "corral", "families": ["corral"],
                    "parameter_size": "", "quantization_level": ""}
    })
}

/// `/api/ps`: residency merged from every backend, asked live (residency changes by the
/// second), each item hinting where it lives; the last poll stands in for a backend that
/// does not answer at once.
async fn ps(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    api::authenticate(&req, &gw).await.map_err(err)?;
    let views = gw.fleet.snapshot().await;
    let asks = views
        .iter()
        .filter(|v| v.up)
        .map(|v| live_ps(&gw, &clients, v));
    let mut list = Vec::new();
    for items in futures_util::future::join_all(asks).await {
        list.extend(items);
    }
    list.sort_by(|a, b| {
        let exp = |v: &Value| {
            v.get("expires_at")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        exp(a).cmp(&exp(b))
    });
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

async fn live_ps(
    gw: &Gateway,
    clients: &UpstreamClients,
    view: &crate::actors::supervisor::BackendView,
) -> Vec<Value> {
    let backend = gw.fleet.backends().iter().find(|b| b.name == view.name);
    let live = match (backend, backend.and_then(|b| clients.get(b.id))) {
        (Some(b), Some(client)) if b.config.kind == BackendKind::Ollama => {
            let call = Call {
                method: http::Method::GET,
                path: "/api/ps".into(),
                body: Bytes::new(),
                headers: Vec::new(),
            };
            crate::upstream::fetch_json(client, b, call, 4 << 20)
                .await
                .and_then(|v| v.get("models").and_then(Value::as_array).cloned())
        }
        _ => None,
    };
    let mut items = live.unwrap_or_else(|| view.ps.clone());
    for item in &mut items {
        item["backend"] = Value::String(view.name.clone());
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(relay: &mut OllamaRelay, chunks: &[&[u8]]) -> (String, Result<(), GatewayError>) {
        let mut out = BytesMut::new();
        for c in chunks {
            if let Err(e) = relay.chunk(c, &mut out) {
                return (String::from_utf8_lossy(&out).into(), Err(e));
            }
        }
        let r = relay.end(&mut out);
        (String::from_utf8_lossy(&out).into(), r)
    }

    #[test]
    fn passes_lines_through_and_reads_usage() {
        let mut r = OllamaRelay::new(None);
        let (out, res) = run(
            &mut r,
            &[b"{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n{\"model\":\"m\",\"do",
              b"ne\":true,\"prompt_eval_count\":3,\"eval_count\":5}\n"],
        );
        res.unwrap();
        assert_eq!(out.lines().count(), 2);
        assert_eq!(r.usage(), Some((3, 5)));
    }

    #[test]
    fn the_end_is_read_from_done_whatever_the_spacing_and_key_order() {
        for last in [
            "{\"model\":\"m\", \"done\": true, \"eval_count\": 2}\n",
            "{ \"eval_count\" : 2 ,\"done\"\t:\ttrue , \"model\":\"m\" }\n",
        ] {
            let mut r = OllamaRelay::new(None);
            let (out, res) = run(&mut r, &[b"{\"done\": false}\n", last.as_bytes()]);
            res.unwrap();
            assert_eq!(out.lines().count(), 2, "{out}");
            assert_eq!(r.usage(), Some((0, 2)));
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut r = OllamaRelay::new(None);
        let (_, res) = run(&mut r, &[b"{\"done\":false}\n"]);
        assert!(res.is_err());
    }

    #[test]
    fn garbage_and_error_lines_stop_the_stream() {
        let mut r = OllamaRelay::new(None);
        assert!(run(&mut r, &[b"not json\n"]).1.is_err());
        let mut r = OllamaRelay::new(None);
        let (_, res) = run(&mut r, &[b"{\"error\":\"runner died\"}\n"]);
        assert_eq!(res.unwrap_err().message, "runner died");
    }

    #[test]
    fn rewrites_model_and_escapes_separators() {
        let mut r = OllamaRelay::new(Some("alias".into()));
        let (out, res) = run(
            &mut r,
            &["{\"model\":\"real\",\"response\":\"a\u{2028}b\",\"done\":true}\n".as_bytes()],
        );
        res.unwrap();
        assert!(out.contains("\"model\":\"alias\""));
        assert!(out.contains("\\u2028"));
    }
}
