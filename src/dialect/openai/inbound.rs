//! OpenAI clients: decoding chat, completion and embedding requests into the canonical
//! request, and writing the whole answer and the SSE stream back to them
//! (docs/PROTOCOLS.md §2, §5.8).

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::dialect::Dialect;
use crate::dialect::ollama::decode_tools;
use crate::dialect::wire::{self, Obj};
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, EmbedEncoding, EmbedRequest, EmbedResponse, Image,
    Message, ModelEntry, ResponseFormat, Role, StopReason, StreamEvent, Think, ThinkLevel,
    ToolChoice, Usage, new_call_id, random_id,
};

/// A fresh `chatcmpl-...` id for a response.
pub fn new_completion_id() -> String {
    random_id("chatcmpl-", 24)
}

// ---------------------------------------------------------------------------------------------
// Client requests

/// Decodes a `/v1/chat/completions` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode_chat_object(wire::parse_body(body)?)
}

/// Decodes a `/v1/chat/completions` body already parsed into an object.
pub fn decode_chat_object(mut m: Obj) -> Result<ChatRequest, GatewayError> {
    let mut req = common_fields(&mut m)?;
    let msgs =
        wire::take_array(&mut m, "messages", "")?.ok_or_else(|| wire::missing("", "messages"))?;
    if msgs.is_empty() {
        return Err(GatewayError::bad_field("messages", "must not be empty"));
    }
    let mut ledger = CallLedger::default();
    req.messages.reserve(msgs.len());
    for (i, v) in msgs.into_iter().enumerate() {
        let at = wire::index("messages", i);
        req.messages
            .push(decode_message(wire::into_obj(v, &at)?, &at, &mut ledger)?);
    }
    if let Some(tools) = wire::take_array(&mut m, "tools", "")? {
        req.tools = decode_tools(tools)?;
    }
    req.tool_choice = match wire::take(&mut m, "tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(GatewayError::bad_field(
                    "tool_choice",
                    "expected auto, none, required or a named function",
                ));
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    GatewayError::bad_field("tool_choice.function.name", "field required")
                })?;
            Some(ToolChoice::Named(name.to_string()))
        }
    };
    req.parallel_tool_calls = wire::take_bool(&mut m, "parallel_tool_calls", "")?;
    req.format = match wire::take_obj(&mut m, "response_format", "")? {
        None => None,
        Some(mut f) => match wire::take_str(&mut f, "type", "response_format")?.as_deref() {
            None | Some("text") => None,
            Some("json_object") => Some(ResponseFormat::Json),
            Some("json_schema") => {
                let schema = f
                    .get_mut("json_schema")
                    .and_then(|s| s.get_mut("schema"))
                    .map(Value::take)
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        GatewayError::bad_field(
                            "response_format.json_schema.schema",
                            "field required",
                        )
                    })?;
                Some(ResponseFormat::Schema(schema))
            }
            Some(_) => {
                return Err(GatewayError::bad_field(
                    "response_format.type",
                    "expected text, json_object or json_schema",
                ));
            }
        },
    };
    req.think = match wire::take_str(&mut m, "reasoning_effort", "")?.as_deref() {
        None => None,
        Some("none") => Some(Think::Off),
        Some(s) => Some(Think::Level(ThinkLevel::parse(s).ok_or_else(|| {
            GatewayError::bad_field(
                "reasoning_effort",
                "expected none, minimal, low, medium, high or xhigh",
            )
        })?)),
    };
    Ok(req)
}

/// Decodes a `/v1/completions` body into a one-turn chat (`completion` set).
pub fn decode_completion(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode_completion_object(wire::parse_body(body)?)
}

/// Decodes a `/v1/completions` body already parsed into an object.
pub fn decode_completion_object(mut m: Obj) -> Result<ChatRequest, GatewayError> {
    let mut req = common_fields(&mut m)?;
    req.completion = true;
    let prompt = match wire::take(&mut m, "prompt") {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(mut a)) if a.len() <= 1 => match a.pop() {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(_) => return Err(GatewayError::bad_field("prompt[0]", "expected a string")),
        },
        Some(Value::Array(_)) => {
            return Err(GatewayError::bad_field(
                "prompt",
                "only one prompt per request is supported",
            ));
        }
        Some(_) => return Err(wire::wrong_type("", "prompt", "a string")),
    };
    req.messages.push(Message::new(Role::User, prompt));
    Ok(req)
}

/// Decodes a `/v1/embeddings` body.
pub fn decode_embeddings(body: &[u8]) -> Result<EmbedRequest, GatewayError> {
    let mut m = wire::parse_body(body)?;
    let model = wire::req_str(&mut m, "model", "")?;
    let inputs = match wire::take(&mut m, "input") {
        None => return Err(wire::missing("", "input")),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.into_iter().enumerate() {
                match v {
                    Value::String(s) => out.push(s),
                    _ => {
                        return Err(GatewayError::bad_field(
                            &wire::index("input", i),
                            "expected a string (token arrays are not supported)",
                        ));
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(wire::wrong_type(
                "",
                "input",
                "a string or an array of strings",
            ));
        }
    };
    if inputs.is_empty() {
        return Err(GatewayError::bad_field("input", "must not be empty"));
    }
    let encoding = match wire::take_str(&mut m, "encoding_format", "")?.as_deref() {
        None | Some("float") => EmbedEncoding::Float,
        Some("base64") => EmbedEncoding::Base64,
        Some(_) => {
            return Err(GatewayError::bad_field(
                "encoding_format",
                "expected float or base64",
            ));
        }
    };
    Ok(EmbedRequest {
        model,
        inputs,
        dimensions: wire::take_u32(&mut m, "dimensions", "")?,
        encoding,
        ..EmbedRequest::default()
    })
}

/// Fields shared by chat and completions.
fn common_fields(m: &mut Obj) -> Result<ChatRequest, GatewayError> {
    let model = wire::req_str(m, "model", "")?;
    if let Some(n) = wire::take_u32(m, "n", "")?
        && n != 1
    {
        return Err(GatewayError::bad_field("n", "only n=1 is supported"));
    }
    let max_completion = wire::take_u32(m, "max_completion_tokens", "")?;
    let max_tokens = wire::take_u32(m, "max_tokens", "")?;
    let stream = wire::take_bool(m, "stream", "")?.unwrap_or(false);
    let include_usage = match wire::take_obj(m, "stream_options", "")? {
        Some(mut o) => wire::take_bool(&mut o, "include_usage", "stream_options")?.unwrap_or(false),
        None => false,
    };
    Ok(ChatRequest {
        model,
        max_tokens: max_completion.or(max_tokens),
        temperature: wire::take_f64(m, "temperature", "")?,
        top_p: wire::take_f64(m, "top_p", "")?,
        top_k: wire::take_u32(m, "top_k", "")?,
        seed: wire::take_i64(m, "seed", "")?,
        frequency_penalty: wire::take_f64(m, "frequency_penalty", "")?,
        presence_penalty: wire::take_f64(m, "presence_penalty", "")?,
        stop: wire::take_stop(m, "stop", "")?,
        stream,
        include_usage,
        ..ChatRequest::default()
    })
}

fn decode_message(mut m: Obj, at: &str, ledger: &mut CallLedger) -> Result<Message, GatewayError> {
    let role = match wire::req_str(&mut m, "role", at)?.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => {
            return Err(GatewayError::bad_field(
                &wire::path(at, "role"),
                "expected system, developer, user, assistant or tool",
            ));
        }
    };
    let mut msg = Message::new(role, String::new());
    let cat = wire::path(at, "content");
    let content = wire::take(&mut m, "content").unwrap_or(Value::Null);
    match role {
        Role::User => (msg.text, msg.images) = decode_user_content(content, &cat)?,
        Role::Assistant => msg.text = decode_assistant_content(content, &cat)?,
        Role::System | Role::Tool => msg.text = wire::text_of(content, &cat)?,
    }
    if role == Role::Assistant {
        let thinking = match wire::take_str(&mut m, "reasoning", at)? {
            Some(t) => Some(t),
            None => wire::take_str(&mut m, "reasoning_content", at)?,
        };
        msg.thinking = thinking.filter(|t| !t.is_empty());
        if let Some(calls) = wire::take_array(&mut m, "tool_calls", at)? {
            let tat = wire::path(at, "tool_calls");
            for (j, c) in calls.into_iter().enumerate() {
                let mut call = wire::decode_tool_call(c, &wire::index(&tat, j))?;
                ledger.record(&mut call);
                msg.tool_calls.push(call);
            }
        }
    }
    if role == Role::Tool {
        let id = wire::req_str(&mut m, "tool_call_id", at)?;
        let (id, name) = ledger.resolve(Some(&id), None).ok_or_else(|| {
            GatewayError::bad_field(
                &wire::path(at, "tool_call_id"),
                "does not match any earlier assistant tool call",
            )
        })?;
        msg.tool_call_id = Some(id);
        msg.tool_name = Some(name);
    }
    Ok(msg)
}

fn decode_user_content(v: Value, at: &str) -> Result<(String, Vec<Image>), GatewayError> {
    let parts = match v {
        Value::Array(parts) => parts,
        other => return Ok((wire::text_of(other, at)?, Vec::new())),
    };
    let mut text = String::new();
    let mut images = Vec::new();
    for (j, p) in parts.into_iter().enumerate() {
        let pat = wire::index(at, j);
        let mut p = wire::into_obj(p, &pat)?;
        match wire::take_str(&mut p, "type", &pat)?.as_deref() {
            Some("text") | None => {
                wire::push_line(&mut text, &wire::req_str(&mut p, "text", &pat)?)
            }
            Some("image_url") => {
                let url = match wire::take(&mut p, "image_url") {
                    Some(Value::String(s)) => s,
                    Some(Value::Object(mut o)) => {
                        wire::req_str(&mut o, "url", &wire::path(&pat, "image_url"))?
                    }
                    _ => return Err(wire::missing(&pat, "image_url")),
                };
                let image = Image::from_data_url(&url).ok_or_else(|| {
                    GatewayError::bad_field(
                        &wire::path(&pat, "image_url.url"),
                        "only base64 data: URLs are supported",
                    )
                })?;
                images.push(image);
            }
            Some(other) => {
                return Err(GatewayError::bad_field(
                    &wire::path(&pat, "type"),
                    format!("content part type `{other}` is not supported"),
                ));
            }
        }
    }
    Ok((text, images))
}

fn decode_assistant_content(v: Value, at: &str) -> Result<String, GatewayError> {
    let Value::Array(parts) = v else {
        return wire::text_of(v, at);
    };
    let mut text = String::new();
    for (j, p) in parts.into_iter().enumerate() {
        let pat = wire::index(at, j);
        let mut p = wire::into_obj(p, &pat)?;
        let t = match wire::take_str(&mut p, "type", &pat)?.as_deref() {
            Some("refusal") => wire::req_str(&mut p, "refusal", &pat)?,
            _ => wire::req_str(&mut p, "text", &pat)?,
        };
        wire::push_line(&mut text, &t);
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// Client responses

fn finish_reason_out(stop: StopReason, saw_tool: bool) -> &'static str {
    match stop {
        StopReason::Stop if saw_tool => "tool_calls",
        StopReason::Stop | StopReason::StopSequence => "stop",
        StopReason::ToolUse => "tool_calls",
        StopReason::Length => "length",
        StopReason::ContentFilter => "content_filter",
    }
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> OutUsage {
        OutUsage {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.input + u.output,
        }
    }
}

#[derive(Serialize)]
struct OutChunk<'a, C: Serialize> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [C],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [OutCall<'a>],
}

#[derive(Serialize)]
struct OutCall<'a> {
    index: usize,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTextChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// Writes an OpenAI SSE stream (chat chunks, or text-completion chunks) per
/// docs/PROTOCOLS.md §5.8: role only in the first delta, tool calls numbered by its own
/// counter and sent whole, `finish_reason` only in the final chunk, optional usage chunk,
/// then `[DONE]`.
#[derive(Debug)]
pub struct StreamWriter {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    reasoning: bool,
    completion: bool,
    role_sent: bool,
    tool_counter: usize,
    finished: bool,
}

impl StreamWriter {
    /// A `chat.completion.chunk` writer.
    pub fn new(id: &str, created: i64, requested_model: &str, include_usage: bool) -> StreamWriter {
        StreamWriter {
            id: id.to_string(),
            created,
            model: requested_model.to_string(),
            include_usage,
            reasoning: false,
            completion: false,
            role_sent: false,
            tool_counter: 0,
            finished: false,
        }
    }

    /// A `text_completion` writer (`/v1/completions`); thinking and tool calls are dropped.
    pub fn completion(
        id: &str,
        created: i64,
        requested_model: &str,
        include_usage: bool,
    ) -> StreamWriter {
        StreamWriter {
            completion: true,
            ..StreamWriter::new(id, created, requested_model, include_usage)
        }
    }

    /// Sends thinking as the non-standard `delta.reasoning` (Ollama's /v1 spelling) instead of
    /// dropping it; for clients that opted in.
    pub fn with_reasoning(mut self, on: bool) -> StreamWriter {
        self.reasoning = on;
        self
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The SSE frames for one event.
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        if self.completion {
            return self.push_completion(ev);
        }
        match ev {
            StreamEvent::TextDelta(t) if !t.is_empty() => vec![self.delta(OutDelta {
                content: Some(t),
                ..OutDelta::default()
            })],
            StreamEvent::ThinkingDelta(t) if self.reasoning && !t.is_empty() => {
                vec![self.delta(OutDelta {
                    reasoning: Some(t),
                    ..OutDelta::default()
                })]
            }
            StreamEvent::ToolCall(c) => {
                let generated;
                let id = if c.id.is_empty() {
                    generated = new_call_id();
                    generated.as_str()
                } else {
                    c.id.as_str()
                };
                let arguments = wire::to_string(&c.arguments);
                let call = [OutCall {
                    index: self.tool_counter,
                    id,
                    kind: "function",
                    function: OutFunction {
                        name: &c.name,
                        arguments: &arguments,
                    },
                }];
                self.tool_counter += 1;
                vec![self.delta(OutDelta {
                    tool_calls: &call,
                    ..OutDelta::default()
                })]
            }
            StreamEvent::Done { stop, usage } => {
                let mut out = Vec::with_capacity(4);
                if !self.role_sent {
                    out.push(self.delta(OutDelta {
                        content: Some(""),
                        ..OutDelta::default()
                    }));
                }
                let reason = finish_reason_out(*stop, self.tool_counter > 0);
                let choice = [OutChoice {
                    index: 0,
                    delta: OutDelta::default(),
                    finish_reason: Some(reason),
                }];
                out.push(self.chunk(&choice, None));
                self.end(*usage, &mut out);
                out
            }
            _ => Vec::new(),
        }
    }

    fn push_completion(&mut self, ev: &StreamEvent) -> Vec<Bytes> {
        let (text, finish) = match ev {
            StreamEvent::TextDelta(t) if !t.is_empty() => (t.as_str(), None),
            StreamEvent::Done { stop, .. } => ("", Some(finish_reason_out(*stop, false))),
            _ => return Vec::new(),
        };
        let choice = [OutTextChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason: finish,
        }];
        let mut out = vec![self.chunk(&choice, None)];
        if let StreamEvent::Done { usage, .. } = ev {
            self.end(*usage, &mut out);
        }
        out
    }

    fn end(&mut self, usage: Usage, out: &mut Vec<Bytes>) {
        if self.include_usage {
            out.push(self.chunk::<OutChoice>(&[], Some(usage.into())));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        self.finished = true;
    }

    /// The mid-stream error chunk; no `[DONE]` follows.
    pub fn error(&mut self, e: &GatewayError) -> Bytes {
        self.finished = true;
        e.stream_frame(Dialect::OpenAi)
    }

    /// An SSE comment, ignored by the SDK; empty once finished.
    pub fn keepalive(&self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        Bytes::from_static(b": keepalive\n\n")
    }

    fn delta(&mut self, mut delta: OutDelta<'_>) -> Bytes {
        if !self.role_sent {
            delta.role = Some("assistant");
            self.role_sent = true;
        }
        let choice = [OutChoice {
            index: 0,
            delta,
            finish_reason: None,
        }];
        self.chunk(&choice, None)
    }

    fn chunk<C: Serialize>(&self, choices: &[C], usage: Option<OutUsage>) -> Bytes {
        wire::sse_data(&OutChunk {
            id: &self.id,
            object: if self.completion {
                "text_completion"
            } else {
                "chat.completion.chunk"
            },
            created: self.created,
            model: &self.model,
            choices,
            usage,
        })
    }
}

/// A non-streamed `chat.completion` answer (content `null` when there are only tool calls).
pub fn encode_response(
    resp: &ChatResponse,
    requested_model: &str,
    id: &str,
    created: i64,
) -> Value {
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    let content = if resp.text.is_empty() && !resp.tool_calls.is_empty() {
        Value::Null
    } else {
        resp.text.as_str().into()
    };
    msg.insert("content".into(), content);
    // Ollama's /v1 spelling; present only when the client asked (corral clears it otherwise).
    if !resp.thinking.is_empty() {
        msg.insert("reasoning".into(), resp.thinking.as_str().into());
    }
    if !resp.tool_calls.is_empty() {
        let calls = resp
            .tool_calls
            .iter()
            .map(|c| {
                let id = if c.id.is_empty() {
                    new_call_id()
                } else {
                    c.id.clone()
                };
                json!({"id": id, "type": "function",
                       "function": {"name": c.name, "arguments": wire::to_string(&c.arguments)}})
            })
            .collect();
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": requested_model,
        "system_fingerprint": "fp_corral",
        "choices": [{
            "index": 0,
            "message": msg,
            "logprobs": null,
            "finish_reason": finish_reason_out(resp.stop, !resp.tool_calls.is_empty()),
        }],
        "usage": OutUsage::from(resp.usage),
    })
}

/// A non-streamed `text_completion` answer.
pub fn encode_completion_response(
    resp: &ChatResponse,
    requested_model: &str,
    id: &str,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": requested_model,
        "system_fingerprint": "fp_corral",
        "choices": [{
            "index": 0,
            "text": resp.text,
            "logprobs": null,
            "finish_reason": finish_reason_out(resp.stop, false),
        }],
        "usage": OutUsage::from(resp.usage),
    })
}

/// A `/v1/embeddings` answer: float arrays, or base64 of little-endian f32s when asked.
pub fn encode_embeddings_response(
    resp: &EmbedResponse,
    requested_model: &str,
    encoding: EmbedEncoding,
) -> Value {
    let data: Vec<Value> = resp
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match encoding {
                EmbedEncoding::Float => json!(v),
                EmbedEncoding::Base64 => {
                    let mut bytes = Vec::with_capacity(v.len() * 4);
                    for f in v {
                        bytes.extend_from_slice(&f.to_le_bytes());
                    }
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into()
                }
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": requested_model,
        "usage": {"prompt_tokens": resp.input_tokens, "total_tokens": resp.input_tokens},
    })
}

/// One `/v1/models/{id}` object.
pub fn model_object(m: &ModelEntry) -> Value {
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by})
}

/// The OpenAI-shaped `/v1/models` listing.
pub fn models_list(models: &[ModelEntry]) -> Value {
    json!({"object": "list", "data": models.iter().map(model_object).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ToolCall;

    fn chunks(frames: &[Bytes]) -> Vec<Value> {
        frames
            .iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap();
                let body = s
                    .strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap();
                if body == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(body).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn decodes_chat_request() {
        let req = decode_chat(include_bytes!(
            "../../../tests/fixtures/openai/chat_request.json"
        ))
        .unwrap();
        assert_eq!(req.model, "gpt-4o");
        assert_eq!(
            req.system_text().as_deref(),
            Some("You are terse.\n\nMention the file name.")
        );
        assert_eq!(req.messages[1].text, "What is this?");
        assert_eq!(req.messages[1].images[0].media_type, "image/png");
        assert_eq!(
            req.messages[2].tool_calls[0].arguments,
            json!({"path": "src/main.rs"})
        );
        assert_eq!(
            req.messages[2].tool_calls[1].arguments,
            json!({}),
            "empty arguments become an empty object"
        );
        assert_eq!(req.messages[3].tool_name.as_deref(), Some("read_file"));
        assert_eq!(req.messages[4].tool_name.as_deref(), Some("list_dir"));
        assert_eq!(req.messages[4].text, "main.rs");
        assert_eq!(req.max_tokens, Some(256), "max_completion_tokens wins");
        assert_eq!(req.stop, vec!["</done>"]);
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(
            req.tools[1].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert!(matches!(req.format, Some(ResponseFormat::Schema(_))));
        assert_eq!(req.think, Some(Think::Level(ThinkLevel::Low)));
        assert!(req.stream && req.include_usage);
        assert_eq!(req.seed, Some(42));
    }

    #[test]
    fn decode_errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}"#, "messages[0].tool_call_id"),
            (br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#, "messages[0].content[0].image_url.url"),
            (br#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{oops"}}]}]}"#, "messages[0].tool_calls[0].function.arguments"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, "n"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"warm"}"#, "temperature"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#, "tools[0].function.parameters"),
        ];
        for (body, field) in cases {
            let e = decode_chat(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(*field), "{}", e.message);
        }
    }

    #[test]
    fn decodes_completion_and_embeddings() {
        let r =
            decode_completion(br#"{"model":"m","prompt":["Say hi"],"max_tokens":5,"stream":true}"#)
                .unwrap();
        assert!(r.completion && r.stream);
        assert_eq!(r.messages[0].text, "Say hi");
        assert!(decode_completion(br#"{"model":"m","prompt":["a","b"]}"#).is_err());
        let e = decode_embeddings(br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#)
            .unwrap();
        assert_eq!(e.encoding, EmbedEncoding::Base64);
        assert_eq!(e.inputs.len(), 2);
        let e = decode_embeddings(br#"{"model":"e","input":[[1,2]]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0]"));
    }

    #[test]
    fn writer_follows_the_chunk_rules() {
        let mut w = StreamWriter::new("chatcmpl-x", 1763877600, "gpt-4o", true);
        let mut out = Vec::new();
        out.extend(w.push(&StreamEvent::ThinkingDelta("hidden".into())));
        out.extend(w.push(&StreamEvent::TextDelta("Hi".into())));
        out.extend(w.push(&StreamEvent::ToolCall(ToolCall {
            id: String::new(),
            name: "f".into(),
            arguments: json!({"a": [1]}),
        })));
        out.extend(w.push(&StreamEvent::ToolCall(ToolCall {
            id: "call_2".into(),
            name: "g".into(),
            arguments: json!({}),
        })));
        out.extend(w.push(&StreamEvent::Done {
            stop: StopReason::Stop,
            usage: Usage {
                input: 3,
                output: 4,
                estimated: false,
            },
        }));
        assert!(w.push(&StreamEvent::TextDelta("late".into())).is_empty());
        let c = chunks(&out);
        assert_eq!(c.len(), 6);
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hi"})
        );
        assert!(c[1]["choices"][0]["delta"].get("role").is_none());
        let call = &c[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["function"]["arguments"], "{\"a\":[1]}");
        assert_eq!(c[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(
            c[3]["choices"][0],
            json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})
        );
        assert_eq!(c[4]["choices"], json!([]));
        assert_eq!(c[4]["usage"]["total_tokens"], 7);
        assert_eq!(c[5], "[DONE]");
        for x in &c[..5] {
            assert_eq!(x["id"], "chatcmpl-x");
            assert_eq!(x["created"], 1763877600);
            assert_eq!(x["object"], "chat.completion.chunk");
        }
    }

    #[test]
    fn writer_opt_in_reasoning_errors_and_keepalive() {
        let mut w = StreamWriter::new("i", 1, "m", false).with_reasoning(true);
        let c = chunks(&w.push(&StreamEvent::ThinkingDelta("r".into())));
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "reasoning": "r"})
        );
        assert_eq!(&w.keepalive()[..], b": keepalive\n\n");
        let e = w.error(&GatewayError::internal("gone"));
        assert!(e.starts_with(b"data: {\"error\""));
        assert!(
            w.push(&StreamEvent::Done {
                stop: StopReason::Stop,
                usage: Usage::default()
            })
            .is_empty()
        );
        assert!(w.keepalive().is_empty());

        let mut w = StreamWriter::new("i", 1, "m", false);
        let c = chunks(&w.push(&StreamEvent::Done {
            stop: StopReason::Length,
            usage: Usage::default(),
        }));
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(c[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(c[2], "[DONE]");
    }

    #[test]
    fn completion_writer() {
        let mut w = StreamWriter::completion("cmpl-1", 1, "m", false);
        let mut out = w.push(&StreamEvent::TextDelta("Hi".into()));
        out.extend(w.push(&StreamEvent::Done {
            stop: StopReason::Stop,
            usage: Usage::default(),
        }));
        let c = chunks(&out);
        assert_eq!(c[0]["object"], "text_completion");
        assert_eq!(c[0]["choices"][0]["text"], "Hi");
        assert_eq!(c[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(c[2], "[DONE]");
    }

    #[test]
    fn non_stream_encoders() {
        let r = ChatResponse {
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: json!({"x": 1}),
            }],
            usage: Usage {
                input: 2,
                output: 3,
                estimated: false,
            },
            ..ChatResponse::default()
        };
        let v = encode_response(&r, "gpt-4o", "chatcmpl-1", 5);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(v["usage"]["total_tokens"], 5);
        let v = encode_completion_response(
            &ChatResponse {
                text: "t".into(),
                ..ChatResponse::default()
            },
            "m",
            "c",
            1,
        );
        assert_eq!(v["choices"][0]["text"], "t");

        let e = EmbedResponse {
            vectors: vec![vec![2.0, 3.0]],
            input_tokens: 1,
        };
        let v = encode_embeddings_response(&e, "emb", EmbedEncoding::Base64);
        assert_eq!(v["data"][0]["embedding"], "AAAAQAAAQEA=");
        let v = encode_embeddings_response(&e, "emb", EmbedEncoding::Float);
        assert_eq!(v["data"][0]["embedding"], json!([2.0, 3.0]));

        let models = [ModelEntry {
            id: "qwen3:8b".into(),
            created: 1759395859,
            owned_by: "library".into(),
            display_name: None,
        }];
        let v = models_list(&models);
        assert_eq!(v["object"], "list");
        assert_eq!(
            v["data"][0],
            json!({"id": "qwen3:8b", "object": "model", "created": 1759395859, "owned_by": "library"})
        );
    }
}
