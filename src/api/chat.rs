//! Translated chat and embeddings: a canonical request goes to any kind of upstream and the
//! answer comes back in the client's dialect, streamed frame by frame or whole.

use std::cell::OnceCell;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use http::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::Gateway;
use crate::actors::supervisor::{BackendInfo, FailureReason};
use crate::api::forward::{self, Ctx, Relay, Served, Tally};
use crate::api::{dedup, with_served_headers};
use crate::config::BackendKind;
use crate::dialect::sse::{DEFAULT_MAX_FRAME, SseParser};
use crate::dialect::{Dialect, anthropic, ollama, openai, responses};
use crate::error::{DialectError, ErrorKind, GatewayError};
use crate::ir::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, StreamEvent, Usage};
use crate::upstream::lines::LineSplitter;
use crate::upstream::{Call, UpstreamClients};

/// Largest non-streamed upstream answer read whole.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_LINE: usize = 16 * 1024 * 1024;
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The request body for `backend`, translated from the canonical request.
pub fn chat_call(
    backend: &BackendInfo,
    served: &str,
    req: &ChatRequest,
    client: &HttpRequest,
) -> Call {
    match backend.config.kind {
        BackendKind::Ollama if req.completion => Call::post_json(
            "/api/generate",
            Bytes::from(ollama::encode_generate(req, served).to_string()),
        ),
        BackendKind::Ollama => Call::post_json(
            "/api/chat",
            Bytes::from(ollama::encode_chat(req, served).to_string()),
        ),
        BackendKind::Openai => Call::post_json(
            "/v1/chat/completions",
            Bytes::from(openai::encode_chat_upstream(req, served).to_string()),
        ),
        BackendKind::Anthropic => {
            let mut call = Call::post_json(
                "/v1/messages",
                Bytes::from(anthropic::encode_upstream(req, served).to_string()),
            );
            call.headers.extend(anthropic_headers(client));
            call
        }
    }
}

/// `anthropic-version` and `anthropic-beta` go to Anthropic upstreams byte for byte.
fn anthropic_headers(client: &HttpRequest) -> Vec<(HeaderName, HeaderValue)> {
    let copied = |name: &str| {
        let value = client.headers().get(name)?;
        HeaderValue::from_bytes(value.as_bytes()).ok()
    };
    let mut out = Vec::new();
    let version =
        copied("anthropic-version").unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
    out.push((HeaderName::from_static("anthropic-version"), version));
    if let Some(beta) = copied("anthropic-beta") {
        out.push((HeaderName::from_static("anthropic-beta"), beta));
    }
    out
}

/// Reads events out of an upstream stream of any kind.
enum UpstreamReader {
    Ndjson(LineSplitter),
    OpenAi(SseParser, openai::StreamParser),
    Anthropic(SseParser, anthropic::StreamParser),
}

impl UpstreamReader {
    fn for_kind(kind: BackendKind) -> UpstreamReader {
        match kind {
            BackendKind::Ollama => UpstreamReader::Ndjson(LineSplitter::new(MAX_LINE)),
            BackendKind::Openai => UpstreamReader::OpenAi(
                SseParser::new(DEFAULT_MAX_FRAME),
                openai::StreamParser::new(),
            ),
            BackendKind::Anthropic => UpstreamReader::Anthropic(
                SseParser::new(DEFAULT_MAX_FRAME),
                anthropic::StreamParser::new(),
            ),
        }
    }

    fn feed(&mut self, chunk: &[u8], events: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        match self {
            UpstreamReader::Ndjson(lines) => {
                let mut batch = Vec::new();
                lines.feed(chunk, &mut batch).map_err(|e| {
                    GatewayError::new(
                        ErrorKind::UpstreamProtocol,
                        format!("upstream line longer than {} bytes", e.0),
                    )
                })?;
                for line in batch {
                    events.extend(ollama::parse_frame(&line)?);
                }
            }
            UpstreamReader::OpenAi(sse, parser) => {
                for frame in sse.feed(chunk)? {
                    events.extend(parser.push(&frame.data)?);
                }
            }
            UpstreamReader::Anthropic(sse, parser) => {
                for frame in sse.feed(chunk)? {
                    events.extend(parser.push(frame.event.as_deref(), &frame.data)?);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, events: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        match self {
            UpstreamReader::Ndjson(lines) => {
                if let Some(line) = lines.finish() {
                    events.extend(ollama::parse_frame(&line)?);
                }
            }
            UpstreamReader::OpenAi(sse, parser) => {
                if let Some(frame) = sse.finish()? {
                    events.extend(parser.push(&frame.data)?);
                }
                events.extend(parser.finish()?);
            }
            UpstreamReader::Anthropic(sse, parser) => {
                if let Some(frame) = sse.finish()? {
                    events.extend(parser.push(frame.event.as_deref(), &frame.data)?);
                }
                events.extend(parser.finish()?);
            }
        }
        Ok(())
    }
}

/// Writes events in the client's dialect.
pub enum ClientWriter {
    Ollama(ollama::StreamWriter),
    OpenAi(openai::StreamWriter),
    Anthropic(anthropic::StreamWriter),
    Responses(Box<responses::StreamWriter>),
}

impl ClientWriter {
    fn push(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        let frames = match self {
            ClientWriter::Ollama(w) => w.push(ev),
            ClientWriter::OpenAi(w) => w.push(ev),
            ClientWriter::Anthropic(w) => w.push(ev),
            ClientWriter::Responses(w) => w.push(ev),
        };
        for f in frames {
            out.extend_from_slice(&f);
        }
    }

    fn error(&mut self, e: &GatewayError) -> Bytes {
        match self {
            ClientWriter::Ollama(w) => w.error(e),
            ClientWriter::OpenAi(w) => w.error(e),
            ClientWriter::Anthropic(w) => w.error(e),
            ClientWriter::Responses(w) => w.error(e),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            ClientWriter::Ollama(_) => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }
}

/// Upstream stream of any kind → client stream of any dialect, through canonical events.
pub struct TranslateRelay {
    reader: UpstreamReader,
    writer: ClientWriter,
    events: Vec<StreamEvent>,
    usage: Option<Usage>,
    hide_thinking: bool,
}

impl TranslateRelay {
    pub fn new(kind: BackendKind, writer: ClientWriter) -> TranslateRelay {
        TranslateRelay {
            reader: UpstreamReader::for_kind(kind),
            writer,
            events: Vec::new(),
            usage: None,
            hide_thinking: false,
        }
    }

    /// Drops reasoning the client did not ask for (a model that thinks by default).
    pub fn hiding_thinking(mut self, hide: bool) -> TranslateRelay {
        self.hide_thinking = hide;
        self
    }

    fn write_events(&mut self, out: &mut BytesMut) {
        for ev in self.events.drain(..) {
            match &ev {
                StreamEvent::Done { usage, .. } => self.usage = Some(*usage),
                StreamEvent::ThinkingDelta(_) | StreamEvent::ThinkingSignature(_)
                    if self.hide_thinking =>
                {
                    continue;
                }
                _ => {}
            }
            self.writer.push(&ev, out);
        }
    }
}

impl Relay for TranslateRelay {
    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let fed = self.reader.feed(bytes, &mut self.events);
        self.write_events(out);
        fed
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let finished = self.reader.finish(&mut self.events);
        self.write_events(out);
        finished?;
        self.usage.map(|_| ()).ok_or_else(forward::incomplete)
    }

    fn error_frame(&mut self, e: &GatewayError) -> Bytes {
        self.writer.error(e)
    }

    fn usage(&self) -> Option<(u64, u64)> {
        self.usage.map(|u| (u.input, u.output))
    }
}

/// Same dialect on both sides (OpenAI→openai, Anthropic→anthropic): SSE frames go through
/// as the upstream wrote them, read on the side only for usage and a clean end; the model
/// name is rewritten only when an alias or fallback served the request.
pub struct SsePassthrough {
    reader: UpstreamReader,
    frames: SseParser,
    rewrite: Option<String>,
    writer: ClientWriter,
    events: Vec<StreamEvent>,
    usage: Option<Usage>,
}

impl SsePassthrough {
    pub fn new(kind: BackendKind, rewrite: Option<String>, writer: ClientWriter) -> SsePassthrough {
        SsePassthrough {
            reader: UpstreamReader::for_kind(kind),
            frames: SseParser::new(DEFAULT_MAX_FRAME),
            rewrite,
            writer,
            events: Vec::new(),
            usage: None,
        }
    }

    fn frame(&self, event: Option<&str>, data: &str, out: &mut BytesMut) {
        if let Some(e) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        // An upstream's error event is upstream text like any error body.
        if event == Some("error") || data.starts_with("{\"error\"") {
            out.extend_from_slice(crate::redact::scrub(data).as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        }
        match &self.rewrite {
            Some(model) if data.contains("\"model\"") => {
                out.extend_from_slice(rewrite_model(data, model).as_bytes());
            }
            _ => out.extend_from_slice(data.as_bytes()),
        }
        out.extend_from_slice(b"\n\n");
    }

    fn note(&mut self) {
        for ev in self.events.drain(..) {
            if let StreamEvent::Done { usage, .. } = ev {
                self.usage = Some(usage);
            }
        }
    }
}

/// The same JSON with `model` (top level or in Anthropic's `message`) set to `model`.
fn rewrite_model(data: &str, model: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(data) else {
        return data.to_string();
    };
    if v.get("model").is_some() {
        v["model"] = Value::String(model.to_string());
    }
    if v.pointer("/message/model").is_some() {
        v["message"]["model"] = Value::String(model.to_string());
    }
    v.to_string()
}

impl Relay for SsePassthrough {
    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let read = self.reader.feed(bytes, &mut self.events);
        self.note();
        for f in self.frames.feed(bytes)? {
            self.frame(f.event.as_deref(), &f.data, out);
        }
        read
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let read = self.reader.finish(&mut self.events);
        self.note();
        if let Some(f) = self.frames.finish()? {
            self.frame(f.event.as_deref(), &f.data, out);
        }
        read?;
        self.usage.map(|_| ()).ok_or_else(forward::incomplete)
    }

    fn error_frame(&mut self, e: &GatewayError) -> Bytes {
        self.writer.error(e)
    }

    fn usage(&self) -> Option<(u64, u64)> {
        self.usage.map(|u| (u.input, u.output))
    }
}

/// Does an upstream of `kind` speak `dialect` natively?
fn same_dialect(dialect: Dialect, kind: BackendKind) -> bool {
    matches!(
        (dialect, kind),
        (Dialect::OpenAi, BackendKind::Openai) | (Dialect::Anthropic, BackendKind::Anthropic)
    )
}

/// The client's own bytes for a same-dialect upstream, with only `model` changed.
fn raw_call(
    backend: &BackendInfo,
    served: &str,
    raw: &Bytes,
    path: &str,
    client: &HttpRequest,
) -> Result<Call, GatewayError> {
    let mut v: Value = serde_json::from_slice(raw)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    v["model"] = Value::String(served.to_string());
    let mut call = Call::post_json(path.to_string(), Bytes::from(v.to_string()));
    if backend.config.kind == BackendKind::Anthropic {
        call.headers.extend(anthropic_headers(client));
    }
    Ok(call)
}

/// A whole upstream chat answer, parsed by upstream kind.
pub fn parse_chat_response(kind: BackendKind, body: &[u8]) -> Result<ChatResponse, GatewayError> {
    match kind {
        BackendKind::Ollama => ollama::parse_response(body),
        BackendKind::Openai => openai::parse_response(body),
        BackendKind::Anthropic => anthropic::parse_response(body),
    }
}

/// How a translated answer is written back to the client.
pub struct Answer {
    pub dialect: Dialect,
    /// The client's body and the upstream path it goes to when the upstream speaks the
    /// client's dialect.
    pub raw: Option<(Bytes, &'static str)>,
    /// A fresh writer for a streamed answer.
    pub writer: Box<dyn Fn() -> ClientWriter>,
    /// The body of a whole answer.
    pub whole: Box<dyn Fn(&ChatResponse) -> Value>,
}

/// Places and forwards a canonical chat request; answers in `answer.dialect`. A whole
/// answer is shared by identical requests (see [`dedup`]).
pub async fn serve_chat(
    req: &HttpRequest,
    gw: web::Data<Gateway>,
    clients: &UpstreamClients,
    ctx: Ctx,
    chat: ChatRequest,
    answer: Answer,
) -> Result<HttpResponse, DialectError> {
    let key = if chat.stream {
        None
    } else {
        gw.dedup.key(&ctx, req)
    };
    dedup::serve(gw.clone(), key, ctx, |ctx| {
        place_chat(req, gw, clients, ctx, chat, answer)
    })
    .await
}

/// `raw` in `answer` lets same-dialect upstreams take the client's bytes and relay them.
async fn place_chat(
    req: &HttpRequest,
    gw: web::Data<Gateway>,
    clients: &UpstreamClients,
    mut ctx: Ctx,
    chat: ChatRequest,
    answer: Answer,
) -> Result<HttpResponse, DialectError> {
    let dialect = answer.dialect;
    let chat = std::sync::Arc::new(chat);
    let target = crate::api::resolve_model(
        &gw,
        clients,
        &chat.model,
        || Ok(Some(chat.clone())),
        &mut ctx,
    )
    .await
    .map_err(|e| e.in_dialect(dialect))?;
    let wants = crate::routing::features::Wants::of(&chat);
    let fit = crate::api::fit_features(&gw, clients, target, wants)
        .await
        .map_err(|e| e.in_dialect(dialect))?;
    let (target, show_thinking) = (fit.model, fit.thinking);
    let mut chat = std::sync::Arc::try_unwrap(chat).unwrap_or_else(|c| (*c).clone());
    if wants.thinking && !show_thinking {
        chat.think = None;
    }
    let chat = &chat;
    let build = |b: &BackendInfo, served: &str| match &answer.raw {
        Some((raw, path)) if same_dialect(dialect, b.config.kind) => {
            raw_call(b, served, raw, path, req)
        }
        _ => Ok(chat_call(b, served, chat, req)),
    };
    let mut tally = Tally::new(gw.clone(), ctx);
    let served = match forward::open(&gw, clients, &target, &build).await {
        Ok(s) => s,
        Err(e) => {
            tally.fail(e.status(dialect).as_u16(), &e);
            return Err(e.in_dialect(dialect));
        }
    };
    let kind = served.backend().config.kind;
    let passthrough = answer.raw.is_some() && same_dialect(dialect, kind);
    if chat.stream {
        let writer = (answer.writer)();
        let relay: Box<dyn Relay> = if passthrough {
            let rewrite = (served.model != chat.model).then(|| chat.model.clone());
            Box::new(SsePassthrough::new(kind, rewrite, writer))
        } else {
            Box::new(TranslateRelay::new(kind, writer).hiding_thinking(!show_thinking))
        };
        return Ok(stream_response(served, relay, tally, dialect));
    }
    let mut passthrough_body: Option<Value> = None;
    let keep = std::cell::RefCell::new(&mut passthrough_body);
    let (mut resp, served) = whole(served, &mut tally, |kind, bytes| {
        let parsed = parse_chat_response(kind, bytes)?;
        if passthrough {
            **keep.borrow_mut() = serde_json::from_slice(bytes).ok();
        }
        Ok(parsed)
    })
    .await
    .map_err(|e| e.in_dialect(dialect))?;

    tally.tokens = Some((resp.usage.input, resp.usage.output));
    if !show_thinking {
        resp.thinking.clear();
        resp.thinking_signature = None;
    }
    let body = (answer.whole)(&resp);
    let body = match passthrough_body {
        Some(mut v) => {
            if v.get("model").is_some() {
                v["model"] = Value::String(chat.model.clone());
            }
            v
        }
        None => body,
    };
    let mut out = HttpResponse::Ok();
    with_served_headers(&mut out, &served, &tally);
    Ok(out.json(body))
}

/// A streamed answer with the right content type and headers.
pub fn stream_response(
    served: Served,
    relay: Box<dyn Relay>,
    tally: Tally,
    dialect: Dialect,
) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.content_type(match dialect {
        Dialect::Ollama => "application/x-ndjson",
        _ => "text/event-stream",
    });
    with_served_headers(&mut resp, &served, &tally);
    resp.streaming(forward::relay_stream(served, relay, tally))
}

/// Reads and parses a whole upstream answer, settling the lease and tally.
pub async fn whole<T>(
    mut served: Served,
    tally: &mut Tally,
    parse: impl Fn(BackendKind, &[u8]) -> Result<T, GatewayError>,
) -> Result<(T, Served), GatewayError> {
    tally.served(&served);
    let kind = served.backend().config.kind;
    let parsed = forward::collect(&mut served, MAX_BODY)
        .await
        .and_then(|bytes| parse(kind, &bytes));
    match parsed {
        Ok(v) => {
            tally.finished = true;
            served
                .lease
                .succeeded(served.ttfb, tally.ctx.started.elapsed());
            Ok((v, served))
        }
        Err(e) => {
            served.lease.failed(FailureReason::Protocol);
            tally.fail(502, &e);
            Err(e)
        }
    }
}

/// The embeddings call for `backend`.
pub fn embed_call(
    backend: &BackendInfo,
    served: &str,
    req: &EmbedRequest,
) -> Result<Call, GatewayError> {
    match backend.config.kind {
        BackendKind::Ollama => Ok(Call::post_json(
            "/api/embed",
            Bytes::from(ollama::encode_embed(req, served).to_string()),
        )),
        BackendKind::Openai => Ok(Call::post_json(
            "/v1/embeddings",
            Bytes::from(openai::encode_embeddings_upstream(req, served).to_string()),
        )),
        BackendKind::Anthropic => Err(GatewayError::bad_request(format!(
            "backend {} (Anthropic) has no embeddings",
            backend.name
        ))),
    }
}

/// Places and forwards an embeddings request; `encode` writes the client's shape.
pub async fn serve_embed(
    gw: web::Data<Gateway>,
    clients: &UpstreamClients,
    ctx: Ctx,
    req: &EmbedRequest,
    dialect: Dialect,
    encode: impl Fn(&EmbedResponse) -> Value,
) -> Result<HttpResponse, DialectError> {
    let target = gw.aliases.resolve(&req.model).to_string();
    let build = |b: &BackendInfo, served: &str| embed_call(b, served, req);
    let mut tally = Tally::new(gw.clone(), ctx);
    let served = match forward::open(&gw, clients, &target, &build).await {
        Ok(s) => s,
        Err(e) => {
            tally.fail(e.status(dialect).as_u16(), &e);
            return Err(e.in_dialect(dialect));
        }
    };
    let parse = |kind: BackendKind, b: &[u8]| match kind {
        BackendKind::Openai => openai::parse_embeddings_response(b),
        _ => ollama::parse_embed_response(b),
    };
    let (resp, served) = whole(served, &mut tally, parse)
        .await
        .map_err(|e| e.in_dialect(dialect))?;
    tally.tokens = Some((resp.input_tokens, 0));
    let mut out = HttpResponse::Ok();
    with_served_headers(&mut out, &served, &tally);
    Ok(out.json(encode(&resp)))
}

/// Decodes lazily, once, for handlers that only need the canonical form on some paths.
pub struct Lazy<T> {
    cell: OnceCell<Result<T, GatewayError>>,
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy {
            cell: OnceCell::new(),
        }
    }
}

impl<T> Lazy<T> {
    pub fn get(
        &self,
        decode: impl FnOnce() -> Result<T, GatewayError>,
    ) -> Result<&T, GatewayError> {
        self.cell.get_or_init(decode).as_ref().map_err(Clone::clone)
    }
}
