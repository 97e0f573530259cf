//! One frontend per client dialect: how a request body is decoded, which call it becomes
//! for each upstream kind, and how the answer (whole, streamed, or an error) is written back.

use std::cell::OnceCell;

use actix_web::HttpResponse;
use actix_web::http::header::HeaderMap;
use actix_web::web::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::config::BackendKind;
use crate::dialect::relay::{ClientWriter, OllamaRelay, Relay, SsePassthrough, TranslateRelay};
use crate::dialect::{Dialect, anthropic, ollama, openai, responses};
use crate::error::GatewayError;
use crate::ir::{ChatRequest, EmbedEncoding, EmbedRequest, EmbedResponse};
use crate::routing::features::{self, Wants};
use crate::routing::fleet::BackendInfo;
use crate::upstream::{Call, kind};

/// A decoded request: what the client asked for, and how to answer it.
pub struct Inbound {
    pub front: Frontend,
    pub request: Request,
    /// The model name the client sent, echoed back in answers.
    pub model: String,
    pub stream: bool,
    /// The request generates an answer (chat, completion): it reserves an output allowance.
    pub generates: bool,
}

impl Inbound {
    /// A generating chat request decoded into the IR; `raw` keeps the client's bytes for a
    /// same-dialect passthrough.
    fn chat(front: Frontend, chat: ChatRequest, raw: Option<(Bytes, &'static str)>) -> Inbound {
        Inbound {
            front,
            model: chat.model.clone(),
            stream: chat.stream,
            generates: true,
            request: Request::Chat {
                chat: Box::new(chat),
                raw,
            },
        }
    }
}

/// How the answer is written: per dialect, with what the writer needs to know up front.
pub enum Frontend {
    Ollama {
        path: &'static str,
    },
    OpenAi {
        legacy: bool,
        id: String,
        created: i64,
        include_usage: bool,
        /// The client asked for reasoning (`reasoning_effort`), so answers carry it.
        reasoning: bool,
    },
    OpenAiEmbeddings {
        encoding: EmbedEncoding,
    },
    Anthropic {
        id: String,
        estimate: u64,
    },
    /// The OpenAI Responses API: always through the canonical form, errors in the OpenAI
    /// shape.
    Responses {
        echo: Box<responses::Echo>,
    },
}

/// What the client asked for, decoded once.
pub enum Request {
    /// OpenAI or Anthropic chat. `raw` is the client's body and its upstream path, for an
    /// upstream that speaks the client's dialect.
    Chat {
        chat: Box<ChatRequest>,
        raw: Option<(Bytes, &'static str)>,
    },
    Embed(EmbedRequest),
    /// An Ollama request: its bytes go to Ollama upstreams as they are; the canonical form
    /// is decoded only if an upstream of another kind or the `auto` model needs it.
    Ollama {
        path: &'static str,
        body: Bytes,
        canonical: OnceCell<Result<Canonical, GatewayError>>,
        /// What the request wants from its model, read from the client's bytes.
        wants: Wants,
        /// The body has a `think` field (kept as sent when the model may think).
        had_think: bool,
        /// The body for Ollama upstreams when it differs from the client's (`think: false`
        /// for a model that cannot show reasoning).
        native: Option<Bytes>,
    },
}

/// An Ollama request in canonical form.
pub enum Canonical {
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

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Inbound {
    /// `POST /v1/chat/completions` (`legacy`: `/v1/completions`, which always goes through
    /// the canonical form).
    pub fn openai_chat(body: Bytes, legacy: bool) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let chat = if legacy {
            openai::decode_completion(&body)?
        } else {
            openai::decode_chat(&body)?
        };
        super::body::model_name(&chat.model)?;
        let front = Frontend::OpenAi {
            legacy,
            id: openai::new_completion_id(),
            created: now(),
            include_usage: chat.include_usage,
            reasoning: features::asks_thinking(chat.think),
        };
        let raw = (!legacy).then_some((body, "/v1/chat/completions"));
        Ok(Inbound::chat(front, chat, raw))
    }

    /// `POST /v1/responses`.
    pub fn responses(body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let responses::Decoded { chat, echo } = responses::decode(&body, now())?;
        super::body::model_name(&chat.model)?;
        let front = Frontend::Responses {
            echo: Box::new(echo),
        };
        Ok(Inbound::chat(front, chat, None))
    }

    /// `POST /v1/embeddings`.
    pub fn openai_embeddings(body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let embed = openai::decode_embeddings(&body)?;
        super::body::model_name(&embed.model)?;
        Ok(Inbound {
            front: Frontend::OpenAiEmbeddings {
                encoding: embed.encoding,
            },
            model: embed.model.clone(),
            stream: false,
            generates: false,
            request: Request::Embed(embed),
        })
    }

    /// `POST /v1/messages`.
    pub fn anthropic(body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let chat = anthropic::decode_messages(&body)?;
        super::body::model_name(&chat.model)?;
        let front = Frontend::Anthropic {
            id: anthropic::new_message_id(),
            estimate: chat.estimate_input_tokens(),
        };
        Ok(Inbound::chat(front, chat, Some((body, "/v1/messages"))))
    }

    /// An Ollama generation endpoint at `path`; chat and generate stream by default.
    pub fn ollama(path: &'static str, body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let p: Peek = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
        let generates = generates(path);
        let wants = if generates {
            p.wants()
        } else {
            Wants::default()
        };
        // `name` is what older clients (and ollama-js for show) send instead of `model`.
        let model = match p.model.filter(|m| !m.is_empty()).or(p.name) {
            Some(m) if !m.is_empty() => m,
            _ => return Err(GatewayError::bad_field("model", "is required")),
        };
        super::body::model_name(&model)?;
        Ok(Inbound {
            front: Frontend::Ollama { path },
            model,
            stream: generates && p.stream.unwrap_or(true),
            generates,
            request: Request::Ollama {
                path,
                body,
                canonical: OnceCell::new(),
                wants,
                had_think: p.think.is_some(),
                native: None,
            },
        })
    }
}

/// Chat and generate stream by default and generate text; embeddings and show do neither.
fn generates(path: &str) -> bool {
    matches!(path, "/api/chat" | "/api/generate")
}

/// The fields corral needs from an Ollama request; the rest passes through untouched.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
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

impl Request {
    /// The canonical chat request, for the virtual `auto` model; `None` for embeddings.
    pub fn chat(&self) -> Result<Option<&ChatRequest>, GatewayError> {
        match self {
            Request::Chat { chat, .. } => Ok(Some(chat)),
            Request::Embed(_) => Ok(None),
            Request::Ollama { .. } => match self.canonical()? {
                Canonical::Chat(c) => Ok(Some(c)),
                _ => Ok(None),
            },
        }
    }

    /// What the request wants from its model (thinking, tools, images).
    pub fn wants(&self) -> Wants {
        match self {
            Request::Chat { chat, .. } => Wants::of(chat),
            Request::Embed(_) => Wants::default(),
            Request::Ollama { wants, .. } => *wants,
        }
    }

    /// Fits the request to a model that cannot show reasoning (`thinking` false): no
    /// thinking is asked upstream. Returns whether reasoning the model sends anyway must be
    /// hidden from the client.
    pub fn fit_thinking(&mut self, thinking: bool) -> Result<bool, GatewayError> {
        match self {
            Request::Chat { chat, .. } => {
                if !thinking && Wants::of(chat).thinking {
                    chat.think = None;
                }
                Ok(!thinking)
            }
            Request::Embed(_) => Ok(false),
            Request::Ollama {
                path,
                body,
                had_think,
                native,
                ..
            } => {
                let hide = generates(path) && !thinking;
                // Reasoning only when asked and possible: Ollama backends get `think: false`.
                if hide {
                    *native = Some(ollama::with_think_off(body, *had_think)?);
                }
                Ok(hide)
            }
        }
    }

    /// Embeddings name a real model: the virtual `auto` model is for chat.
    pub fn may_be_auto(&self) -> bool {
        !matches!(self, Request::Embed(_))
    }

    fn canonical(&self) -> Result<&Canonical, GatewayError> {
        match self {
            Request::Ollama {
                path,
                body,
                canonical,
                ..
            } => canonical
                .get_or_init(|| Canonical::decode(path, body))
                .as_ref()
                .map_err(Clone::clone),
            _ => Err(GatewayError::internal("not an Ollama request")),
        }
    }

    /// Is the answer relayed as the upstream wrote it (the upstream speaks the client's
    /// dialect and has its bytes)?
    fn passes_through(&self, dialect: Dialect, kind: BackendKind) -> bool {
        match self {
            Request::Chat { raw, .. } => raw.is_some() && kind::speaks(kind, dialect),
            Request::Ollama { .. } => kind == BackendKind::Ollama,
            Request::Embed(_) => false,
        }
    }

    /// The call for `backend`, which serves the model as `served`; `requested` is the
    /// client's name for it.
    pub fn call(
        &self,
        backend: &BackendInfo,
        served: &str,
        requested: &str,
        client: &HeaderMap,
    ) -> Result<Call, GatewayError> {
        let kind = backend.config.kind;
        match self {
            Request::Chat {
                raw: Some((raw, path)),
                ..
            } if kind::speaks(kind, dialect_of_raw(path)) => {
                kind::raw_call(kind, served, raw, path, client)
            }
            Request::Chat { chat, .. } => Ok(kind::chat_call(kind, served, chat, client)),
            Request::Embed(e) => kind::embed_call(kind, &backend.name, served, e),
            Request::Ollama {
                path, body, native, ..
            } if kind == BackendKind::Ollama => {
                let body = native.as_ref().unwrap_or(body);
                Ok(Call::post_json(
                    *path,
                    passthrough_body(body, requested, served)?,
                ))
            }
            Request::Ollama { .. } => match self.canonical()? {
                Canonical::Chat(chat) => Ok(kind::chat_call(kind, served, chat, client)),
                Canonical::Embed(e) => kind::embed_call(kind, &backend.name, served, e),
                Canonical::Show => Err(GatewayError::internal("show is answered locally")),
            },
        }
    }
}

/// The dialect of a passed-through body, from the upstream path it goes to.
fn dialect_of_raw(path: &str) -> Dialect {
    if path == "/v1/messages" {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Body for an Ollama upstream: the client's bytes untouched unless the model name must
/// change.
fn passthrough_body(body: &Bytes, requested: &str, served: &str) -> Result<Bytes, GatewayError> {
    if requested == served {
        return Ok(body.clone());
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    v["model"] = Value::String(served.to_string());
    Ok(Bytes::from(v.to_string()))
}

/// A whole answer, ready to send.
pub enum Whole {
    Json(Value),
    /// Bytes that are already JSON (an Ollama answer relayed as it came).
    Bytes(Bytes),
}

impl Frontend {
    pub fn dialect(&self) -> Dialect {
        match self {
            Frontend::Ollama { .. } => Dialect::Ollama,
            Frontend::OpenAi { .. }
            | Frontend::OpenAiEmbeddings { .. }
            | Frontend::Responses { .. } => Dialect::OpenAi,
            Frontend::Anthropic { .. } => Dialect::Anthropic,
        }
    }

    /// The content type of a streamed answer.
    pub fn stream_type(&self) -> &'static str {
        match self {
            Frontend::Ollama { .. } => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// The answer to an error before any byte reached the client.
    pub fn error(&self, e: &GatewayError) -> HttpResponse {
        e.response(self.dialect())
    }

    fn writer(&self, requested: &str) -> ClientWriter {
        match self {
            Frontend::Ollama { path } => ClientWriter::Ollama(ollama::StreamWriter::new(
                requested,
                *path != "/api/generate",
            )),
            Frontend::OpenAi {
                legacy,
                id,
                created,
                include_usage,
                reasoning,
            } => ClientWriter::OpenAi(if *legacy {
                openai::StreamWriter::completion(id, *created, requested, *include_usage)
            } else {
                openai::StreamWriter::new(id, *created, requested, *include_usage)
                    .with_reasoning(*reasoning)
            }),
            Frontend::Anthropic { id, estimate } => {
                ClientWriter::Anthropic(anthropic::StreamWriter::new(id, requested, *estimate))
            }
            Frontend::Responses { echo } => {
                ClientWriter::Responses(Box::new(responses::StreamWriter::new((**echo).clone())))
            }
            // Embeddings never stream; an Ollama writer would do if they did.
            Frontend::OpenAiEmbeddings { .. } => {
                ClientWriter::Ollama(ollama::StreamWriter::new(requested, true))
            }
        }
    }

    /// The relay for a streamed answer from an upstream of `kind`. `rewrite` is the client's
    /// model name when a passed-through stream must say it instead of the served one.
    pub fn relay(
        &self,
        request: &Request,
        kind: BackendKind,
        requested: &str,
        rewrite: Option<String>,
        hide_thinking: bool,
    ) -> Relay {
        let dialect = self.dialect();
        if !request.passes_through(dialect, kind) {
            let relay = TranslateRelay::new(kind, self.writer(requested));
            return Relay::Translate(relay.hiding_thinking(hide_thinking));
        }
        match dialect {
            Dialect::Ollama => {
                Relay::Ollama(OllamaRelay::new(rewrite).hiding_thinking(hide_thinking))
            }
            _ => Relay::Sse(SsePassthrough::new(kind, rewrite, self.writer(requested))),
        }
    }

    /// The whole answer and its tokens (in, out), from the upstream's bytes.
    pub fn whole(
        &self,
        request: &Request,
        kind: BackendKind,
        bytes: Bytes,
        requested: &str,
        rewrite: Option<&str>,
        hide_thinking: bool,
    ) -> Result<(Whole, Option<(u64, u64)>), GatewayError> {
        let passthrough = request.passes_through(self.dialect(), kind);
        if let (Frontend::Ollama { .. }, true) = (self, passthrough) {
            let (bytes, tokens) =
                crate::dialect::relay::ollama_whole(bytes, rewrite, hide_thinking)?;
            return Ok((Whole::Bytes(bytes), tokens));
        }
        let embed = match request {
            Request::Embed(_) => true,
            Request::Ollama { .. } => matches!(request.canonical()?, Canonical::Embed(_)),
            Request::Chat { .. } => false,
        };
        if embed {
            let resp = kind::parse_embed(kind, &bytes)?;
            let tokens = Some((resp.input_tokens, 0));
            return Ok((
                Whole::Json(self.embed_body(request, &resp, requested)?),
                tokens,
            ));
        }
        let mut resp = kind::parse_chat(kind, &bytes)?;
        let tokens = Some((resp.usage.input, resp.usage.output));
        if hide_thinking {
            resp.thinking.clear();
            resp.thinking_signature = None;
        }
        if passthrough {
            // The upstream's own answer, with the client's model name.
            if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
                if v.get("model").is_some() {
                    v["model"] = Value::String(requested.to_string());
                }
                return Ok((Whole::Json(v), tokens));
            }
        }
        let body = match self {
            Frontend::Ollama { path } => {
                ollama::encode_response(&resp, requested, *path != "/api/generate")
            }
            Frontend::OpenAi {
                legacy: true,
                id,
                created,
                ..
            } => openai::encode_completion_response(&resp, requested, id, *created),
            Frontend::OpenAi { id, created, .. } => {
                openai::encode_response(&resp, requested, id, *created)
            }
            Frontend::Anthropic { id, .. } => anthropic::encode_response(&resp, requested, id),
            Frontend::Responses { echo } => responses::encode_response(&resp, echo),
            Frontend::OpenAiEmbeddings { .. } => {
                return Err(GatewayError::internal(
                    "a chat answer to an embeddings request",
                ));
            }
        };
        Ok((Whole::Json(body), tokens))
    }

    fn embed_body(
        &self,
        request: &Request,
        resp: &EmbedResponse,
        requested: &str,
    ) -> Result<Value, GatewayError> {
        match (self, request) {
            (Frontend::OpenAiEmbeddings { encoding }, _) => Ok(openai::encode_embeddings_response(
                resp, requested, *encoding,
            )),
            (Frontend::Ollama { .. }, Request::Ollama { .. }) => match request.canonical()? {
                Canonical::Embed(e) => Ok(ollama::encode_embed_response(resp, requested, e.legacy)),
                _ => Err(GatewayError::internal(
                    "an embeddings answer to a chat request",
                )),
            },
            _ => Err(GatewayError::internal(
                "an embeddings answer to a chat request",
            )),
        }
    }

    /// `/api/show` for models only upstreams of another dialect serve (or the virtual
    /// `auto` model): a faithful minimal answer made here.
    pub fn local_answer(&self, gw: &Gateway, target: &str, requested: &str) -> Option<Value> {
        if !matches!(self, Frontend::Ollama { path: "/api/show" }) || gw.fleet.backends().is_empty()
        {
            return None;
        }
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
        Some(json!({
            "modelfile": "", "parameters": "", "template": "",
            "details": {"parent_model": "", "format": "", "family": "corral", "families": ["corral"],
                        "parameter_size": "", "quantization_level": ""},
            "model_info": {},
            "capabilities": if is_auto { json!(["completion", "tools", "vision"]) } else { json!(["completion", "tools"]) },
            "modified_at": "2026-01-01T00:00:00Z",
        }))
    }
}
