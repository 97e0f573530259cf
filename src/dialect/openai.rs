//! The OpenAI dialect: decoding client requests, encoding upstream requests, parsing upstream
//! answers and SSE chunks, and writing client responses and streams (docs/PROTOCOLS.md §2, §5.8).

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ollama::{decode_tools, openai_tool};
use super::wire::{self, Obj};
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, EmbedEncoding, EmbedRequest, EmbedResponse, Image,
    Message, ModelEntry, ResponseFormat, Role, StopReason, StreamEvent, Think, ThinkLevel,
    ToolCall, ToolChoice, Usage, estimate_tokens, new_call_id, random_id,
};

/// A fresh `chatcmpl-...` id for a response.
pub fn new_completion_id() -> String {
    random_id("chatcmpl-", 24)
}

// ---------------------------------------------------------------------------------------------
// Client requests

/// Decodes a `/v1/chat/completions` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut m = wire::parse_body(body)?;
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
    let mut m = wire::parse_body(body)?;
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
                let mut call = decode_tool_call(c, &wire::index(&tat, j))?;
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

fn decode_tool_call(v: Value, at: &str) -> Result<ToolCall, GatewayError> {
    let mut c = wire::into_obj(v, at)?;
    let id = wire::take_str(&mut c, "id", at)?.unwrap_or_default();
    let fat = wire::path(at, "function");
    let mut f =
        wire::take_obj(&mut c, "function", at)?.ok_or_else(|| wire::missing(at, "function"))?;
    let name = wire::req_str(&mut f, "name", &fat)?;
    let arguments = wire::arguments_from_value(
        f.remove("arguments").unwrap_or(Value::Null),
        &wire::path(&fat, "arguments"),
    )?;
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

// ---------------------------------------------------------------------------------------------
// Upstream requests (to an OpenAI-compatible server)

/// The `/v1/chat/completions` body for an OpenAI-compatible upstream. Streams always ask for
/// usage so corral can count tokens.
pub fn encode_chat_upstream(req: &ChatRequest, upstream_model: &str) -> Value {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = req.system_text() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        messages.push(encode_message(m));
    }
    let mut b = Map::new();
    b.insert("model".into(), upstream_model.into());
    b.insert("messages".into(), Value::Array(messages));
    b.insert("stream".into(), req.stream.into());
    if req.stream {
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            b.insert(k.into(), v);
        }
    };
    put("max_tokens", req.max_tokens.map(Value::from));
    put("temperature", req.temperature.map(Value::from));
    put("top_p", req.top_p.map(Value::from));
    put("seed", req.seed.map(Value::from));
    put("frequency_penalty", req.frequency_penalty.map(Value::from));
    put("presence_penalty", req.presence_penalty.map(Value::from));
    put(
        "parallel_tool_calls",
        req.parallel_tool_calls.map(Value::from),
    );
    if !req.stop.is_empty() {
        b.insert("stop".into(), req.stop.iter().map(String::as_str).collect());
    }
    match &req.format {
        Some(ResponseFormat::Json) => {
            b.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::Schema(s)) => {
            b.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": s}}),
            );
        }
        None => {}
    }
    if !req.tools.is_empty() {
        b.insert("tools".into(), req.tools.iter().map(openai_tool).collect());
        if let Some(choice) = &req.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
            };
            b.insert("tool_choice".into(), v);
        }
    }
    if let Some(think) = req.think {
        let effort = match think {
            Think::Off => "none",
            Think::On => "medium",
            Think::Budget(n) if n < 4096 => "low",
            Think::Budget(n) if n < 16384 => "medium",
            Think::Budget(_) => "high",
            Think::Level(ThinkLevel::Low) => "low",
            Think::Level(ThinkLevel::Medium) => "medium",
            // `xhigh` is not accepted by most compatible servers.
            Think::Level(ThinkLevel::High | ThinkLevel::Max) => "high",
        };
        b.insert("reasoning_effort".into(), effort.into());
    }
    Value::Object(b)
}

fn encode_message(m: &Message) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.text}),
        Role::User if m.images.is_empty() => json!({"role": "user", "content": m.text}),
        Role::User => {
            let mut parts = Vec::with_capacity(m.images.len() + 1);
            if !m.text.is_empty() {
                parts.push(json!({"type": "text", "text": m.text}));
            }
            for i in &m.images {
                parts.push(json!({"type": "image_url", "image_url": {"url": i.data_url()}}));
            }
            json!({"role": "user", "content": parts})
        }
        Role::Assistant => {
            let mut o = Map::new();
            o.insert("role".into(), "assistant".into());
            let content = if m.text.is_empty() && !m.tool_calls.is_empty() {
                Value::Null
            } else {
                m.text.as_str().into()
            };
            o.insert("content".into(), content);
            if !m.tool_calls.is_empty() {
                let calls = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": wire::to_string(&c.arguments)}})
                    })
                    .collect();
                o.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(o)
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.as_deref().unwrap_or_default(),
            "content": wire::tool_result_text(&m.text, m.is_error),
        }),
    }
}

/// The `/v1/embeddings` body for an OpenAI-compatible upstream (floats, always).
pub fn encode_embeddings_upstream(req: &EmbedRequest, upstream_model: &str) -> Value {
    let mut b = json!({"model": upstream_model, "input": req.inputs, "encoding_format": "float"});
    if let Some(d) = req.dimensions {
        b["dimensions"] = d.into();
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Upstream responses

fn finish_reason_in(s: &str) -> StopReason {
    match s {
        "length" => StopReason::Length,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::Stop,
    }
}

fn error_of(v: &Value) -> Option<GatewayError> {
    let e = v.get("error").filter(|e| !e.is_null())?;
    let msg = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    Some(wire::upstream_error(msg))
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input: n("prompt_tokens"),
        output: n("completion_tokens"),
        estimated: false,
    })
}

/// Translates a non-streamed chat completion (or text completion) body.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| wire::protocol(format!("upstream sent an unreadable body: {e}")))?;
    if let Some(e) = error_of(&v) {
        return Err(e);
    }
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| wire::protocol("upstream answer has no choices"))?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let msg = choice.get("message");
    let text = match msg {
        Some(m) => s(m.get("content")),
        None => s(choice.get("text")),
    };
    let thinking = msg
        .and_then(|m| m.get("reasoning").or_else(|| m.get("reasoning_content")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
    {
        for c in calls {
            let name = s(c.pointer("/function/name"));
            let args = c
                .pointer("/function/arguments")
                .cloned()
                .unwrap_or(Value::Null);
            let arguments = wire::arguments_from_value(args, "arguments").map_err(|e| {
                wire::protocol(format!("upstream tool call `{name}`: {}", e.message))
            })?;
            tool_calls.push(ToolCall {
                id: s(c.get("id")),
                name,
                arguments,
            });
        }
    }
    let mut stop = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or(StopReason::Stop, finish_reason_in);
    if stop == StopReason::Stop && !tool_calls.is_empty() {
        stop = StopReason::ToolUse;
    }
    let usage = usage_of(&v).unwrap_or(Usage {
        input: 0,
        output: estimate_tokens(text.len() + thinking.len()),
        estimated: true,
    });
    Ok(ChatResponse {
        text,
        thinking,
        thinking_signature: None,
        tool_calls,
        stop,
        usage,
    })
}

/// Translates an upstream `/v1/embeddings` body (float or base64 vectors).
pub fn parse_embeddings_response(body: &[u8]) -> Result<EmbedResponse, GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| wire::protocol(format!("upstream sent an unreadable body: {e}")))?;
    if let Some(e) = error_of(&v) {
        return Err(e);
    }
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| wire::protocol("upstream embedding answer has no data"))?;
    let mut rows: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        let vector = match d.get("embedding") {
            Some(Value::Array(a)) => a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect(),
            Some(Value::String(b64)) => decode_base64_f32(b64)?,
            _ => return Err(wire::protocol("upstream embedding has no vector")),
        };
        rows.push((index, vector));
    }
    rows.sort_by_key(|r| r.0);
    Ok(EmbedResponse {
        vectors: rows.into_iter().map(|r| r.1).collect(),
        input_tokens: usage_of(&v).map_or(0, |u| u.input),
    })
}

fn decode_base64_f32(b64: &str) -> Result<Vec<f32>, GatewayError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| wire::protocol("upstream embedding is not valid base64"))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<ChunkDelta>,
    /// Text completions.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<DeltaCall>>,
}

#[derive(Deserialize)]
struct DeltaCall {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Debug)]
struct PendingCall {
    index: u64,
    id: String,
    name: String,
    args: String,
}

impl PendingCall {
    fn finish(self) -> Result<StreamEvent, GatewayError> {
        let arguments = wire::arguments_from_str(&self.args, "arguments").map_err(|e| {
            wire::protocol(format!("upstream tool call `{}`: {}", self.name, e.message))
        })?;
        Ok(StreamEvent::ToolCall(ToolCall {
            id: self.id,
            name: self.name,
            arguments,
        }))
    }
}

/// Turns the `data:` payloads of an OpenAI-compatible upstream stream into events. Text and
/// reasoning pass at once; tool-call fragments are buffered per index until the choice
/// finishes (or the same index starts a call with a new id, as Ollama's /v1 layer does), then
/// each call is emitted whole. `Done` comes at `[DONE]`, after the usage chunk.
#[derive(Debug, Default)]
pub struct StreamParser {
    pending: Vec<PendingCall>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    output_bytes: usize,
    done: bool,
}

impl StreamParser {
    pub fn new() -> StreamParser {
        StreamParser::default()
    }

    /// Consumes one SSE `data:` payload.
    pub fn push(&mut self, data: &str) -> Result<Vec<StreamEvent>, GatewayError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.end(&mut out)?;
            return Ok(out);
        }
        if data.is_empty() {
            return Ok(out);
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| wire::protocol(format!("upstream sent an unreadable chunk: {e}")))?;
        if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(error_of(&json!({ "error": err }))
                .unwrap_or_else(|| wire::upstream_error("upstream error")));
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                input: u.prompt_tokens,
                output: u.completion_tokens,
                estimated: false,
            });
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(t) = choice.text.filter(|t| !t.is_empty()) {
                self.output_bytes += t.len();
                out.push(StreamEvent::TextDelta(t));
            }
            if let Some(d) = choice.delta {
                self.delta(d, &mut out)?;
            }
            if let Some(reason) = choice.finish_reason {
                self.stop = Some(finish_reason_in(&reason));
                self.flush(&mut out)?;
            }
        }
        Ok(out)
    }

    /// At end of input: a stream that finished but lacked `[DONE]` still ends cleanly; one
    /// that never finished is an error.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, GatewayError> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        if self.stop.is_none() {
            self.done = true;
            return Err(wire::protocol("upstream stream ended before it finished"));
        }
        self.end(&mut out)?;
        Ok(out)
    }

    fn delta(&mut self, d: ChunkDelta, out: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        if let Some(t) = d
            .reasoning
            .or(d.reasoning_content)
            .filter(|t| !t.is_empty())
        {
            self.output_bytes += t.len();
            out.push(StreamEvent::ThinkingDelta(t));
        }
        if let Some(t) = d.content.filter(|t| !t.is_empty()) {
            self.output_bytes += t.len();
            out.push(StreamEvent::TextDelta(t));
        }
        for c in d.tool_calls.unwrap_or_default() {
            self.call_fragment(c, out)?;
        }
        Ok(())
    }

    fn call_fragment(
        &mut self,
        c: DeltaCall,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), GatewayError> {
        let id = c.id.filter(|s| !s.is_empty());
        let (name, args) = match c.function {
            Some(f) => (
                f.name.filter(|s| !s.is_empty()),
                f.arguments.unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        self.output_bytes += args.len();
        let index = match c.index {
            Some(i) => i,
            // No index: a new id starts a call, anything else continues the last one.
            None => match (&id, self.pending.last()) {
                (None, Some(last)) => last.index,
                _ => self.pending.iter().map(|p| p.index + 1).max().unwrap_or(0),
            },
        };
        let pos = self.pending.iter().position(|p| p.index == index);
        if let Some(p) = pos
            && let Some(new_id) = &id
            && !self.pending[p].id.is_empty()
            && &self.pending[p].id != new_id
        {
            out.push(self.pending.remove(p).finish()?);
        } else if let Some(p) = pos {
            let call = &mut self.pending[p];
            if call.id.is_empty()
                && let Some(id) = id
            {
                call.id = id;
            }
            if call.name.is_empty()
                && let Some(name) = name
            {
                call.name = name;
            }
            call.args.push_str(&args);
            return Ok(());
        }
        self.pending.push(PendingCall {
            index,
            id: id.unwrap_or_default(),
            name: name.unwrap_or_default(),
            args,
        });
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        self.pending.sort_by_key(|p| p.index);
        for p in self.pending.drain(..) {
            out.push(p.finish()?);
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), GatewayError> {
        self.done = true;
        self.flush(out)?;
        let usage = self.usage.unwrap_or(Usage {
            input: 0,
            output: estimate_tokens(self.output_bytes),
            estimated: true,
        });
        out.push(StreamEvent::Done {
            stop: self.stop.unwrap_or_default(),
            usage,
        });
        Ok(())
    }
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
    use crate::dialect::sse::SseParser;

    fn upstream(sse: &str) -> Vec<Result<Vec<StreamEvent>, GatewayError>> {
        let mut p = SseParser::default();
        let mut sp = StreamParser::new();
        let mut out: Vec<_> = p
            .feed(sse.as_bytes())
            .unwrap()
            .into_iter()
            .map(|f| sp.push(&f.data))
            .collect();
        out.push(sp.finish());
        out
    }

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
            "../../tests/fixtures/openai/chat_request.json"
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
    fn encodes_upstream_chat() {
        let req = decode_chat(include_bytes!(
            "../../tests/fixtures/openai/chat_request.json"
        ))
        .unwrap();
        let b = encode_chat_upstream(&req, "up-model");
        assert_eq!(b["model"], "up-model");
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["role"], "system");
        assert_eq!(msgs.iter().filter(|m| m["role"] == "system").count(), 1);
        assert_eq!(
            msgs[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"
        );
        assert_eq!(msgs[2]["content"], Value::Null);
        assert_eq!(
            msgs[2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"src/main.rs\"}"
        );
        assert_eq!(
            msgs[3],
            json!({"role": "tool", "tool_call_id": "call_q81mz0ra", "content": "fn main() {}"})
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_tokens"], 256);
        assert_eq!(b["stop"], json!(["</done>"]));
        assert_eq!(
            b["response_format"]["json_schema"]["schema"]["type"],
            "object"
        );
        assert_eq!(b["reasoning_effort"], "low");
        assert_eq!(b["tool_choice"], "auto");
        assert!(b.get("temperature").is_some() && b.get("top_k").is_none());
    }

    #[test]
    fn upstream_stream_buffers_tool_fragments() {
        let evs: Vec<StreamEvent> = upstream(include_str!(
            "../../tests/fixtures/openai/chat_stream_tools.sse"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        assert_eq!(evs[0], StreamEvent::ThinkingDelta("Two files.".into()));
        assert_eq!(evs[1], StreamEvent::TextDelta("Reading.".into()));
        let StreamEvent::ToolCall(c0) = &evs[2] else {
            panic!("{:?}", evs[2])
        };
        assert_eq!(
            (c0.id.as_str(), c0.name.as_str()),
            ("call_q81mz0ra", "read_file")
        );
        assert_eq!(c0.arguments, json!({"path": "src/main.rs"}));
        let StreamEvent::ToolCall(c1) = &evs[3] else {
            panic!()
        };
        assert_eq!(c1.name, "list_dir");
        assert_eq!(
            evs[4],
            StreamEvent::Done {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: 212,
                    output: 19,
                    estimated: false
                }
            }
        );
        assert_eq!(evs.len(), 5);
    }

    #[test]
    fn upstream_stream_splits_ollama_index_zero_calls() {
        let evs: Vec<StreamEvent> = upstream(include_str!(
            "../../tests/fixtures/openai/chat_stream_ollama_v1_index0.sse"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        let ids: Vec<&str> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(c) => Some(c.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["call_aaaa1111", "call_bbbb2222"]);
        assert!(matches!(
            evs.last(),
            Some(StreamEvent::Done {
                usage: Usage {
                    estimated: true,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn upstream_stream_errors() {
        let res = upstream(include_str!(
            "../../tests/fixtures/openai/chat_stream_error.sse"
        ));
        assert!(res[0].is_ok());
        assert!(
            res[1]
                .as_ref()
                .unwrap_err()
                .message
                .contains("server had an error")
        );
        let mut p = StreamParser::new();
        p.push(r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#)
            .unwrap();
        assert!(
            p.finish().is_err(),
            "a stream that stops without finishing is an error"
        );
    }

    #[test]
    fn parses_upstream_bodies() {
        let r = parse_response(include_bytes!(
            "../../tests/fixtures/openai/chat_response.json"
        ))
        .unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.tool_calls[0].arguments, json!({"path": "src/main.rs"}));
        assert_eq!(
            r.usage,
            Usage {
                input: 212,
                output: 19,
                estimated: false
            }
        );
        let e = parse_embeddings_response(include_bytes!(
            "../../tests/fixtures/openai/embeddings_response.json"
        ))
        .unwrap();
        assert_eq!(e.vectors, vec![vec![0.5, -1.25], vec![2.0, 3.0]]);
        assert_eq!(e.input_tokens, 4);
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
