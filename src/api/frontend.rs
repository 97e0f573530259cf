//! One frontend per client dialect: how a request body is decoded, which call it becomes
//! for each upstream kind, and how the answer (whole, streamed, or an error) is written back.

use std::cell::{Cell, OnceCell};

use actix_web::HttpResponse;
use actix_web::http::header::HeaderMap;
use actix_web::web::Bytes;
use serde_json::{Map, Value, json};

use crate::Gateway;
use crate::config::BackendKind;
use crate::dialect::native::{self, Native};
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
    /// The most output tokens the request asks for, when it says.
    pub output: Option<u64>,
}

impl Inbound {
    /// A generating chat request decoded into the IR; `raw` keeps the client's bytes for a
    /// same-dialect passthrough.
    fn chat(
        front: Frontend,
        chat: ChatRequest,
        output: Option<u64>,
        raw: Option<(Native, &'static str)>,
    ) -> Inbound {
        Inbound {
            front,
            model: chat.model.clone(),
            stream: chat.stream,
            generates: true,
            output,
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
        raw: Option<(Native, &'static str)>,
    },
    Embed(EmbedRequest),
    /// An Ollama request: its bytes go to Ollama upstreams as they are; the canonical form
    /// is decoded (from the one parse of the body, kept until then) only if an upstream of
    /// another kind or the `auto` model needs it.
    Ollama {
        path: &'static str,
        body: Native,
        /// The parsed body, until the canonical form is decoded from it.
        parsed: Cell<Option<Map<String, Value>>>,
        canonical: OnceCell<Result<Canonical, GatewayError>>,
        /// What the request wants from its model, read from the parsed body.
        wants: Wants,
        /// Ollama upstreams get `think: false` (a model that cannot show reasoning).
        think_off: bool,
    },
}

/// An Ollama request in canonical form.
pub enum Canonical {
    Chat(Box<ChatRequest>),
    Embed(EmbedRequest),
    Show,
}

impl Canonical {
    fn decode(path: &str, body: Map<String, Value>) -> Result<Canonical, GatewayError> {
        Ok(match path {
            "/api/chat" => Canonical::Chat(Box::new(ollama::decode_chat_object(body)?)),
            "/api/generate" => Canonical::Chat(Box::new(ollama::decode_generate_object(body)?)),
            "/api/embed" | "/api/embeddings" => {
                Canonical::Embed(ollama::decode_embed_object(body)?)
            }
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
        let (obj, raw) = native::parse(body)?;
        let output = super::body::output_allowance(&obj);
        let chat = if legacy {
            openai::decode_completion_object(obj)?
        } else {
            openai::decode_chat_object(obj)?
        };
        super::body::model_name(&chat.model)?;
        let front = Frontend::OpenAi {
            legacy,
            id: openai::new_completion_id(),
            created: now(),
            include_usage: chat.include_usage,
            reasoning: features::asks_thinking(chat.think),
        };
        let raw = (!legacy).then_some((raw, "/v1/chat/completions"));
        Ok(Inbound::chat(front, chat, output, raw))
    }

    /// `POST /v1/responses`.
    pub fn responses(body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let responses::Decoded { chat, echo } = responses::decode(&body, now())?;
        super::body::model_name(&chat.model)?;
        let front = Frontend::Responses {
            echo: Box::new(echo),
        };
        let output = chat.max_tokens.map(u64::from);
        Ok(Inbound::chat(front, chat, output, None))
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
            output: None,
            request: Request::Embed(embed),
        })
    }

    /// `POST /v1/messages`.
    pub fn anthropic(body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let (obj, raw) = native::parse(body)?;
        let output = super::body::output_allowance(&obj);
        let chat = anthropic::decode_messages_object(obj)?;
        super::body::model_name(&chat.model)?;
        let front = Frontend::Anthropic {
            id: anthropic::new_message_id(),
            estimate: chat.estimate_input_tokens(),
        };
        Ok(Inbound::chat(
            front,
            chat,
            output,
            Some((raw, "/v1/messages")),
        ))
    }

    /// An Ollama generation endpoint at `path`; chat and generate stream by default.
    pub fn ollama(path: &'static str, body: Bytes) -> Result<Inbound, GatewayError> {
        super::body::json_object(&body)?;
        let (obj, body) = native::parse(body)?;
        let generates = generates(path);
        let wants = peek_wants(&obj)?;
        let wants = if generates { wants } else { Wants::default() };
        // `name` is what older clients (and ollama-js for show) send instead of `model`.
        let model = match peek_str(&obj, "model")?.filter(|m| !m.is_empty()) {
            Some(m) => m,
            None => peek_str(&obj, "name")?.unwrap_or_default(),
        };
        if model.is_empty() {
            return Err(GatewayError::bad_field("model", "is required"));
        }
        super::body::model_name(model)?;
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(GatewayError::bad_field("stream", "expected a boolean")),
        };
        Ok(Inbound {
            front: Frontend::Ollama { path },
            model: model.to_string(),
            stream: generates && stream,
            generates,
            output: super::body::output_allowance(&obj),
            request: Request::Ollama {
                path,
                body,
                parsed: Cell::new(Some(obj)),
                canonical: OnceCell::new(),
                wants,
                think_off: false,
            },
        })
    }
}

/// Chat and generate stream by default and generate text; embeddings and show do neither.
fn generates(path: &str) -> bool {
    matches!(path, "/api/chat" | "/api/generate")
}

/// A top-level string field of an Ollama body (`null` reads as absent).
fn peek_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, GatewayError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(GatewayError::bad_field(key, "expected a string")),
    }
}

/// What an Ollama request wants from its model: `think` counts when it is not `false` (or
/// `null`, which reads as absent, as Ollama's pointer field does), tools and images when
/// there are some.
fn peek_wants(obj: &Map<String, Value>) -> Result<Wants, GatewayError> {
    fn some(v: Option<&Value>, at: &str) -> Result<bool, GatewayError> {
        match v {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Array(a)) => Ok(!a.is_empty()),
            Some(_) => Err(GatewayError::bad_field(at, "expected an array")),
        }
    }
    let mut vision = some(obj.get("images"), "images")?;
    match obj.get("messages") {
        None | Some(Value::Null) => {}
        Some(Value::Array(msgs)) => {
            for (i, m) in msgs.iter().enumerate() {
                let Value::Object(m) = m else {
                    return Err(GatewayError::bad_field(
                        &format!("messages[{i}]"),
                        "expected an object",
                    ));
                };
                vision |= some(m.get("images"), &format!("messages[{i}].images"))?;
            }
        }
        Some(_) => return Err(GatewayError::bad_field("messages", "expected an array")),
    }
    Ok(Wants {
        thinking: !matches!(
            obj.get("think"),
            None | Some(Value::Null | Value::Bool(false))
        ),
        tools: some(obj.get("tools"), "tools")?,
        vision,
    })
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
                path, think_off, ..
            } => {
                let hide = generates(path) && !thinking;
                // Reasoning only when asked and possible: Ollama backends get `think: false`.
                *think_off = hide;
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
                parsed,
                canonical,
                ..
            } => canonical
                .get_or_init(|| match parsed.take() {
                    Some(body) => Canonical::decode(path, body),
                    None => Err(GatewayError::internal("the request was decoded already")),
                })
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
                Ok(kind::raw_call(kind, served, raw, path, client))
            }
            Request::Chat { chat, .. } => Ok(kind::chat_call(kind, served, chat, client)),
            Request::Embed(e) => kind::embed_call(kind, &backend.name, served, e),
            Request::Ollama {
                path,
                body,
                think_off,
                ..
            } if kind == BackendKind::Ollama => {
                let rename = (requested != served).then_some(served);
                Ok(Call::post_json(*path, body.body(rename, *think_off)))
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

/// A whole answer, ready to send.
pub enum Whole {
    Json(Value),
    /// Bytes that are already JSON (an upstream's answer relayed as it came).
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
        let (mut resp, model_at) = kind::parse_chat(kind, &bytes)?;
        let tokens = Some((resp.usage.input, resp.usage.output));
        if passthrough {
            // The upstream's own answer, with the client's model name where the parse
            // above found the upstream's.
            let name = native::quoted(requested);
            let edits = model_at.into_iter().map(|r| (r, name.as_bytes())).collect();
            return Ok((Whole::Bytes(native::splice(&bytes, edits)), tokens));
        }
        if hide_thinking {
            resp.thinking.clear();
            resp.thinking_signature = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(w: Whole) -> Bytes {
        match w {
            Whole::Bytes(b) => b,
            Whole::Json(v) => Bytes::from(v.to_string()),
        }
    }

    #[test]
    fn a_passed_through_answer_is_the_upstreams_bytes_with_the_clients_model() {
        let inbound = Inbound::openai_chat(
            Bytes::from_static(br#"{"model":"alias","messages":[{"role":"user","content":"hi"}]}"#),
            false,
        )
        .unwrap();
        let answer = Bytes::from_static(
            br#"{"id":"c", "model" : "real-2025","choices":[{"index":0,"message":{"role":"assistant","content":"model real"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1},"x":1.50}"#,
        );
        let (whole, tokens) = inbound
            .front
            .whole(
                &inbound.request,
                BackendKind::Openai,
                answer,
                "alias",
                None,
                false,
            )
            .unwrap();
        assert_eq!(
            &bytes(whole)[..],
            br#"{"id":"c", "model" : "alias","choices":[{"index":0,"message":{"role":"assistant","content":"model real"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1},"x":1.50}"#
        );
        assert_eq!(tokens, Some((3, 1)));

        let inbound = Inbound::anthropic(Bytes::from_static(
            br#"{"model":"alias","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
        assert_eq!(inbound.output, Some(9));
        let answer = Bytes::from_static(
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"real","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":2}}"#,
        );
        let (whole, tokens) = inbound
            .front
            .whole(
                &inbound.request,
                BackendKind::Anthropic,
                answer,
                "alias",
                None,
                false,
            )
            .unwrap();
        assert_eq!(
            &bytes(whole)[..],
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"alias","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":2}}"#
        );
        assert_eq!(tokens, Some((4, 2)));
    }

    #[test]
    fn an_ollama_request_is_read_once_and_decoded_from_that_read() {
        let body = br#"{"model":"alias","think":"high","stream":false,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"hi","images":["aGk="]}],"options":{"num_predict":12}}"#;
        let mut inbound = Inbound::ollama("/api/chat", Bytes::from_static(body)).unwrap();
        assert_eq!(inbound.model, "alias");
        assert!(!inbound.stream);
        assert_eq!(inbound.output, Some(12));
        let wants = inbound.request.wants();
        assert!(wants.thinking && wants.tools && wants.vision);
        // The canonical form comes from the kept parse, once.
        let chat = inbound.request.chat().unwrap().unwrap();
        assert_eq!(chat.messages[0].images.len(), 1);
        assert_eq!(chat.max_tokens, Some(12));
        assert!(inbound.request.chat().unwrap().is_some());
        assert!(inbound.request.fit_thinking(false).unwrap());
        let Request::Ollama {
            body: native,
            think_off,
            ..
        } = &inbound.request
        else {
            panic!("an Ollama request");
        };
        let sent = native.body(Some("real"), *think_off);
        assert_eq!(
            std::str::from_utf8(&sent).unwrap(),
            std::str::from_utf8(body).unwrap().replace(
                r#""model":"alias","think":"high""#,
                r#""model":"real","think":false"#
            )
        );
    }

    #[test]
    fn ollama_fields_of_the_wrong_type_are_refused_by_name() {
        for (body, field) in [
            (&br#"{"model":1}"#[..], "model"),
            (br#"{"model":"m","stream":"yes"}"#, "stream"),
            (br#"{"model":"m","tools":{}}"#, "tools"),
            (br#"{"model":"m","messages":[1]}"#, "messages[0]"),
            (
                br#"{"model":"m","messages":[{"images":"x"}]}"#,
                "messages[0].images",
            ),
            (br#"{"stream":true}"#, "model"),
        ] {
            let e = Inbound::ollama("/api/chat", Bytes::from_static(body))
                .err()
                .unwrap();
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
        }
        let show = Inbound::ollama("/api/show", Bytes::from_static(br#"{"name":"m"}"#)).unwrap();
        assert_eq!(show.model, "m");
        assert!(!show.stream && !show.generates);
    }
}
