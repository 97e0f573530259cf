//! The Ollama dialect: NDJSON framing, request decoding/encoding, frame parsing and stream writing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::wire::{self, Obj};
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Image, Message,
    ResponseFormat, Role, StopReason, StreamEvent, Think, ThinkLevel, Tool, ToolCall, ToolChoice,
    Usage, new_call_id,
};

/// Serializes `value` as one NDJSON line, escaping U+2028, U+2029 and U+0085, which
/// Python's `str.splitlines()` (used by ollama-python via httpx) would split on.
pub fn ndjson_line(value: &serde_json::Value) -> bytes::Bytes {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 1);
    for ch in text.chars() {
        match ch {
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            '\u{0085}' => out.push_str("\\u0085"),
            c => out.push(c),
        }
    }
    out.push('\n');
    bytes::Bytes::from(out)
}

/// True when the bytes contain a code point that must be escaped before an NDJSON line goes out.
pub fn needs_escape(line: &[u8]) -> bool {
    // U+2028/2029 are E2 80 A8/A9; U+0085 is C2 85.
    line.windows(2).any(|w| w == [0xC2, 0x85])
        || line
            .windows(3)
            .any(|w| w[0] == 0xE2 && w[1] == 0x80 && (w[2] == 0xA8 || w[2] == 0xA9))
}

/// A native chat or generate body with `think` set to `false`: the model must not reason
/// (not asked, or it cannot). When `think` is absent the field is put in front of the
/// client's bytes, which stay as they are; otherwise the object is rewritten.
pub fn with_think_off(body: &Bytes, had_think: bool) -> Result<Bytes, GatewayError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    if let (false, Some(i)) = (had_think, start) {
        if body[i] == b'{' {
            let rest = &body[i + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = Vec::with_capacity(body.len() + 16);
            out.extend_from_slice(b"{\"think\":false");
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            return Ok(Bytes::from(out));
        }
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("think".into(), Value::Bool(false));
        }
        None => return Err(GatewayError::bad_request("the body must be a JSON object")),
    }
    Ok(Bytes::from(v.to_string()))
}

/// Removes reasoning from one native answer or frame (chat `message.thinking`, generate
/// `thinking`). Returns whether the frame still says anything; a frame that only carried
/// reasoning says nothing and is dropped by the caller.
pub fn strip_thinking(v: &mut Value) -> bool {
    let said = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let top = v
        .as_object_mut()
        .and_then(|o| o.remove("thinking"))
        .is_some();
    let nested = v
        .get_mut("message")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("thinking"))
        .is_some();
    if !(top || nested) || v.get("done").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let calls = v
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    said(v.get("response")) || said(v.pointer("/message/content")) || calls
}

/// Serializes any value as one escaped NDJSON line (see [`ndjson_line`]) without building a
/// `serde_json::Value` first.
pub fn ndjson_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(160);
    let _ = serde_json::to_writer(&mut out, value);
    if needs_escape(&out) {
        // serde_json output is valid UTF-8; the code points can only sit inside strings.
        let text = String::from_utf8_lossy(&out)
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .replace('\u{0085}', "\\u0085");
        out = text.into_bytes();
    }
    out.push(b'\n');
    Bytes::from(out)
}

// ---------------------------------------------------------------------------------------------
// Client requests (Ollama clients served by OpenAI/Anthropic upstreams)

/// Decodes a `/api/chat` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut m = wire::parse_body(body)?;
    let mut req = common_fields(&mut m)?;
    let mut ledger = CallLedger::default();
    if let Some(msgs) = wire::take_array(&mut m, "messages", "")? {
        req.messages.reserve(msgs.len());
        for (i, v) in msgs.into_iter().enumerate() {
            let at = wire::index("messages", i);
            req.messages
                .push(decode_message(wire::into_obj(v, &at)?, &at, &mut ledger)?);
        }
    }
    if let Some(tools) = wire::take_array(&mut m, "tools", "")? {
        req.tools = decode_tools(tools)?;
    }
    Ok(req)
}

/// Decodes a `/api/generate` body into a one-turn chat (`completion` set).
pub fn decode_generate(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut m = wire::parse_body(body)?;
    let mut req = common_fields(&mut m)?;
    req.completion = true;
    if let Some(system) = wire::take_str(&mut m, "system", "")? {
        req.messages.push(Message::new(Role::System, system));
    }
    let prompt = wire::take_str(&mut m, "prompt", "")?.unwrap_or_default();
    let images = decode_images(&mut m, "")?;
    if !prompt.is_empty() || !images.is_empty() {
        let mut user = Message::new(Role::User, prompt);
        user.images = images;
        req.messages.push(user);
    }
    Ok(req)
}

/// Decodes `/api/embed` (`input`) and the legacy `/api/embeddings` (`prompt`) bodies.
pub fn decode_embed(body: &[u8]) -> Result<EmbedRequest, GatewayError> {
    let mut m = wire::parse_body(body)?;
    let model = wire::req_str(&mut m, "model", "")?;
    let (inputs, legacy) = match wire::take(&mut m, "input") {
        Some(Value::String(s)) => (vec![s], false),
        Some(Value::Array(a)) => {
            let mut inputs = Vec::with_capacity(a.len());
            for (i, v) in a.into_iter().enumerate() {
                match v {
                    Value::String(s) => inputs.push(s),
                    _ => {
                        return Err(GatewayError::bad_field(
                            &wire::index("input", i),
                            "expected a string",
                        ));
                    }
                }
            }
            (inputs, false)
        }
        Some(_) => {
            return Err(wire::wrong_type(
                "",
                "input",
                "a string or array of strings",
            ));
        }
        None => match wire::take_str(&mut m, "prompt", "")? {
            Some(p) => (vec![p], true),
            None => return Err(wire::missing("", "input")),
        },
    };
    Ok(EmbedRequest {
        model,
        inputs,
        dimensions: wire::take_u32(&mut m, "dimensions", "")?,
        truncate: wire::take_bool(&mut m, "truncate", "")?,
        keep_alive: wire::take(&mut m, "keep_alive"),
        legacy,
        ..EmbedRequest::default()
    })
}

/// Fields shared by chat and generate: model, stream, format, options, keep_alive, think.
fn common_fields(m: &mut Obj) -> Result<ChatRequest, GatewayError> {
    let mut req = ChatRequest {
        model: wire::req_str(m, "model", "")?,
        stream: wire::take_bool(m, "stream", "")?.unwrap_or(true),
        include_usage: true,
        keep_alive: wire::take(m, "keep_alive"),
        ..ChatRequest::default()
    };
    req.format = match wire::take(m, "format") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s == "json" => Some(ResponseFormat::Json),
        Some(v @ Value::Object(_)) => Some(ResponseFormat::Schema(v)),
        Some(_) => {
            return Err(GatewayError::bad_field(
                "format",
                "expected \"json\" or a JSON schema object",
            ));
        }
    };
    req.think = match wire::take(m, "think") {
        None => None,
        Some(Value::Bool(true)) => Some(Think::On),
        Some(Value::Bool(false)) => Some(Think::Off),
        Some(Value::String(s)) => Some(Think::Level(ThinkLevel::parse(&s).ok_or_else(|| {
            GatewayError::bad_field("think", "expected a boolean or low|medium|high|max")
        })?)),
        Some(_) => return Err(wire::wrong_type("", "think", "a boolean or a level")),
    };
    if let Some(mut o) = wire::take_obj(m, "options", "")? {
        let p = "options";
        req.max_tokens = match wire::take_i64(&mut o, "num_predict", p)? {
            Some(n) if n >= 0 => u32::try_from(n).ok(),
            _ => None, // -1 (infinite) and -2 (fill context) mean "no limit".
        };
        req.temperature = wire::take_f64(&mut o, "temperature", p)?;
        req.top_p = wire::take_f64(&mut o, "top_p", p)?;
        req.top_k = wire::take_u32(&mut o, "top_k", p)?;
        req.seed = wire::take_i64(&mut o, "seed", p)?;
        req.frequency_penalty = wire::take_f64(&mut o, "frequency_penalty", p)?;
        req.presence_penalty = wire::take_f64(&mut o, "presence_penalty", p)?;
        req.stop = wire::take_stop(&mut o, "stop", p)?;
        req.options = o;
    }
    Ok(req)
}

fn decode_images(m: &mut Obj, parent: &str) -> Result<Vec<Image>, GatewayError> {
    let Some(arr) = wire::take_array(m, "images", parent)? else {
        return Ok(Vec::new());
    };
    let at = wire::path(parent, "images");
    arr.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
                Err(GatewayError::bad_field(
                    &wire::index(&at, i),
                    "image URLs are not supported; send base64",
                ))
            }
            Value::String(s) => Ok(Image::from_base64(&s)),
            _ => Err(GatewayError::bad_field(
                &wire::index(&at, i),
                "expected a base64 string",
            )),
        })
        .collect()
}

fn decode_message(mut m: Obj, at: &str, ledger: &mut CallLedger) -> Result<Message, GatewayError> {
    let role = wire::req_str(&mut m, "role", at)?.to_ascii_lowercase();
    let role = match role.as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => {
            return Err(GatewayError::bad_field(
                &wire::path(at, "role"),
                "expected system, user, assistant or tool",
            ));
        }
    };
    let mut msg = Message::new(role, String::new());
    if let Some(c) = wire::take(&mut m, "content") {
        msg.text = wire::text_of(c, &wire::path(at, "content"))?;
    }
    msg.images = decode_images(&mut m, at)?;
    msg.thinking = wire::take_str(&mut m, "thinking", at)?.filter(|t| !t.is_empty());
    if let Some(calls) = wire::take_array(&mut m, "tool_calls", at)? {
        let cat = wire::path(at, "tool_calls");
        for (j, c) in calls.into_iter().enumerate() {
            let mut call = decode_tool_call(c, &wire::index(&cat, j))?;
            ledger.record(&mut call);
            msg.tool_calls.push(call);
        }
    }
    let id = wire::take_str(&mut m, "tool_call_id", at)?.filter(|s| !s.is_empty());
    let name = wire::take_str(&mut m, "tool_name", at)?.filter(|s| !s.is_empty());
    if role == Role::Tool {
        let (id, name) = ledger
            .resolve(id.as_deref(), name.as_deref())
            .ok_or_else(|| {
                let field = if id.is_some() {
                    "tool_call_id"
                } else {
                    "tool_name"
                };
                GatewayError::bad_field(
                    &wire::path(at, field),
                    "tool result does not answer any earlier tool call",
                )
            })?;
        msg.tool_call_id = Some(id);
        msg.tool_name = Some(name);
    }
    Ok(msg)
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

/// Decodes OpenAI-style function tool definitions (shared by Ollama and OpenAI clients).
pub(crate) fn decode_tools(tools: Vec<Value>) -> Result<Vec<Tool>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, v) in tools.into_iter().enumerate() {
        let at = wire::index("tools", i);
        let mut t = wire::into_obj(v, &at)?;
        match wire::take_str(&mut t, "type", &at)?.as_deref() {
            None | Some("function") => {}
            Some(other) => {
                return Err(GatewayError::bad_field(
                    &wire::path(&at, "type"),
                    format!("tool type `{other}` is not supported"),
                ));
            }
        }
        let fat = wire::path(&at, "function");
        let mut f = wire::take_obj(&mut t, "function", &at)?
            .ok_or_else(|| wire::missing(&at, "function"))?;
        let name = wire::req_str(&mut f, "name", &fat)?;
        let parameters = match wire::take(&mut f, "parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(wire::wrong_type(&fat, "parameters", "a JSON schema object")),
        };
        out.push(Tool {
            name,
            description: wire::take_str(&mut f, "description", &fat)?,
            parameters,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Upstream requests (to an Ollama server)

/// The `/api/chat` body for an Ollama upstream.
pub fn encode_chat(req: &ChatRequest, upstream_model: &str) -> Value {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = req.system_text() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        messages.push(encode_message(req, m));
    }
    let mut body = Map::new();
    body.insert("model".into(), upstream_model.into());
    body.insert("messages".into(), Value::Array(messages));
    encode_common(req, &mut body);
    let tools = tools_for(req);
    if !tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(tools.iter().map(|t| openai_tool(t)).collect()),
        );
    }
    Value::Object(body)
}

/// The `/api/generate` body for an Ollama upstream (completion requests).
pub fn encode_generate(req: &ChatRequest, upstream_model: &str) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), upstream_model.into());
    let last_user = req.messages.iter().rev().find(|m| m.role == Role::User);
    let prompt = last_user.map_or("", |m| m.text.as_str());
    body.insert("prompt".into(), prompt.into());
    if let Some(system) = req.system_text() {
        body.insert("system".into(), system.into());
    }
    if let Some(u) = last_user.filter(|u| !u.images.is_empty()) {
        body.insert(
            "images".into(),
            u.images.iter().map(|i| i.data.as_str()).collect(),
        );
    }
    encode_common(req, &mut body);
    Value::Object(body)
}

/// The `/api/embed` body for an Ollama upstream.
pub fn encode_embed(req: &EmbedRequest, upstream_model: &str) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), upstream_model.into());
    body.insert(
        "input".into(),
        req.inputs.iter().map(String::as_str).collect(),
    );
    if let Some(t) = req.truncate {
        body.insert("truncate".into(), t.into());
    }
    if let Some(d) = req.dimensions {
        body.insert("dimensions".into(), d.into());
    }
    if let Some(k) = &req.keep_alive {
        body.insert("keep_alive".into(), k.clone());
    }
    Value::Object(body)
}

/// The tools an upstream without `tool_choice` should see (docs/PROTOCOLS.md §5.3).
pub(crate) fn tools_for(req: &ChatRequest) -> Vec<&Tool> {
    match &req.tool_choice {
        Some(ToolChoice::None) => Vec::new(),
        Some(ToolChoice::Named(n)) if req.tools.iter().any(|t| &t.name == n) => {
            req.tools.iter().filter(|t| &t.name == n).collect()
        }
        _ => req.tools.iter().collect(),
    }
}

/// `{"type":"function","function":{name, description, parameters}}`.
pub(crate) fn openai_tool(t: &Tool) -> Value {
    let mut f = Map::new();
    f.insert("name".into(), t.name.as_str().into());
    if let Some(d) = &t.description {
        f.insert("description".into(), d.as_str().into());
    }
    f.insert("parameters".into(), t.parameters.clone());
    json!({"type": "function", "function": f})
}

fn encode_message(req: &ChatRequest, m: &Message) -> Value {
    let mut o = Map::new();
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    o.insert("role".into(), role.into());
    let content = match m.role {
        Role::Tool => wire::tool_result_text(&m.text, m.is_error),
        _ => m.text.clone(),
    };
    o.insert("content".into(), content.into());
    if !m.images.is_empty() {
        o.insert(
            "images".into(),
            m.images.iter().map(|i| i.data.as_str()).collect(),
        );
    }
    if let Some(t) = &m.thinking {
        o.insert("thinking".into(), t.as_str().into());
    }
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.arguments}})
            })
            .collect();
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    if m.role == Role::Tool {
        let id = m.tool_call_id.as_deref().unwrap_or_default();
        let name = m
            .tool_name
            .as_deref()
            .or_else(|| req.tool_name_for(id))
            .unwrap_or_default();
        o.insert("tool_name".into(), name.into());
        if !id.is_empty() {
            o.insert("tool_call_id".into(), id.into());
        }
    }
    Value::Object(o)
}

/// stream, options, format, think, keep_alive. Temperature and top_p are sent only when the
/// client set them, so the Modelfile defaults apply otherwise (unlike Ollama's /v1 layer).
fn encode_common(req: &ChatRequest, body: &mut Obj) {
    body.insert("stream".into(), req.stream.into());
    let mut options = req.options.clone();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            options.insert(k.into(), v);
        }
    };
    put("num_predict", req.max_tokens.map(Value::from));
    put("temperature", req.temperature.map(Value::from));
    put("top_p", req.top_p.map(Value::from));
    put("top_k", req.top_k.map(Value::from));
    put("seed", req.seed.map(Value::from));
    put("frequency_penalty", req.frequency_penalty.map(Value::from));
    put("presence_penalty", req.presence_penalty.map(Value::from));
    if !req.stop.is_empty() {
        options.insert("stop".into(), req.stop.iter().map(String::as_str).collect());
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    match &req.format {
        Some(ResponseFormat::Json) => {
            body.insert("format".into(), "json".into());
        }
        Some(ResponseFormat::Schema(s)) => {
            body.insert("format".into(), s.clone());
        }
        None => {}
    }
    // Not asked is off: a model that thinks by default would otherwise spend its tokens and
    // time on reasoning the client never sees. `false` is safe for any model.
    let think = match req.think {
        None | Some(Think::Off) => Value::Bool(false),
        Some(Think::On | Think::Budget(_)) => Value::Bool(true),
        Some(Think::Level(l)) => l.as_str().into(),
    };
    body.insert("think".into(), think);
    if let Some(k) = &req.keep_alive {
        body.insert("keep_alive".into(), k.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream responses (from an Ollama server)

#[derive(Deserialize)]
struct Frame {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<FrameMessage>,
    /// `/api/generate` frames.
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

#[derive(Deserialize)]
struct FrameMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<FrameToolCall>>,
}

#[derive(Deserialize)]
struct FrameToolCall {
    #[serde(default)]
    id: Option<String>,
    function: FrameFunction,
}

#[derive(Deserialize)]
struct FrameFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl Frame {
    fn parse(bytes: &[u8]) -> Result<Frame, GatewayError> {
        let f: Frame = serde_json::from_slice(bytes).map_err(|e| {
            wire::protocol(format!("upstream sent an unreadable NDJSON frame: {e}"))
        })?;
        match &f.error {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(f),
            Some(Value::String(s)) if s.is_empty() => Ok(f),
            Some(Value::String(s)) => Err(wire::upstream_error(s.clone())),
            Some(other) => Err(wire::upstream_error(other.to_string())),
        }
    }

    /// Moves the thinking text out (chat `message.thinking` or generate `thinking`).
    fn take_thinking(&mut self) -> Option<String> {
        self.message
            .as_mut()
            .and_then(|m| m.thinking.take())
            .or_else(|| self.thinking.take())
            .filter(|t| !t.is_empty())
    }

    /// Moves the answer text out (chat `message.content` or generate `response`).
    fn take_text(&mut self) -> Option<String> {
        self.message
            .as_mut()
            .and_then(|m| m.content.take())
            .or_else(|| self.response.take())
            .filter(|t| !t.is_empty())
    }

    fn take_calls(&mut self) -> Result<Vec<ToolCall>, GatewayError> {
        let Some(calls) = self.message.as_mut().and_then(|m| m.tool_calls.take()) else {
            return Ok(Vec::new());
        };
        calls
            .into_iter()
            .map(|c| {
                let arguments = wire::arguments_from_value(c.function.arguments, "arguments")
                    .map_err(|e| wire::protocol(format!("upstream tool call: {}", e.message)))?;
                Ok(ToolCall {
                    id: c.id.unwrap_or_default(),
                    name: c.function.name,
                    arguments,
                })
            })
            .collect()
    }

    fn stop(&self) -> StopReason {
        match self.done_reason.as_deref() {
            Some("length") => StopReason::Length,
            _ => StopReason::Stop,
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            input: self.prompt_eval_count.unwrap_or(0),
            output: self.eval_count.unwrap_or(0),
            estimated: false,
        }
    }
}

/// Translates one NDJSON line of an Ollama stream (`/api/chat` or `/api/generate`) into events.
/// An `{"error":..}` line is an `Err`; tool calls may ride on the `done:true` frame, which
/// yields its payload first and `Done` last.
pub fn parse_frame(line: &[u8]) -> Result<Vec<StreamEvent>, GatewayError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut f = Frame::parse(line)?;
    let mut out = Vec::new();
    if let Some(t) = f.take_thinking() {
        out.push(StreamEvent::ThinkingDelta(t));
    }
    if let Some(t) = f.take_text() {
        out.push(StreamEvent::TextDelta(t));
    }
    out.extend(f.take_calls()?.into_iter().map(StreamEvent::ToolCall));
    if f.done {
        out.push(StreamEvent::Done {
            stop: f.stop(),
            usage: f.usage(),
        });
    }
    Ok(out)
}

/// Translates a non-streamed `/api/chat` or `/api/generate` body.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    let mut f = Frame::parse(body)?;
    let tool_calls = f.take_calls()?;
    let stop = match f.stop() {
        StopReason::Stop if !tool_calls.is_empty() => StopReason::ToolUse,
        s => s,
    };
    Ok(ChatResponse {
        text: f.take_text().unwrap_or_default(),
        thinking: f.take_thinking().unwrap_or_default(),
        thinking_signature: None,
        tool_calls,
        stop,
        usage: f.usage(),
    })
}

/// Translates an `/api/embed` (or legacy `/api/embeddings`) body.
pub fn parse_embed_response(body: &[u8]) -> Result<EmbedResponse, GatewayError> {
    #[derive(Deserialize)]
    struct Embed {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        embeddings: Option<Vec<Vec<f32>>>,
        #[serde(default)]
        embedding: Option<Vec<f32>>,
        #[serde(default)]
        prompt_eval_count: u64,
    }
    let e: Embed = serde_json::from_slice(body)
        .map_err(|e| wire::protocol(format!("upstream sent an unreadable embedding: {e}")))?;
    if let Some(err) = e.error.filter(|s| !s.is_empty()) {
        return Err(wire::upstream_error(err));
    }
    let vectors = match (e.embeddings, e.embedding) {
        (Some(v), _) => v,
        (None, Some(v)) => vec![v],
        (None, None) => return Err(wire::protocol("upstream embedding response has no vectors")),
    };
    Ok(EmbedResponse {
        vectors,
        input_tokens: e.prompt_eval_count,
    })
}

// ---------------------------------------------------------------------------------------------
// Client responses (to an Ollama client)

#[derive(Serialize)]
struct OutFrame<'a> {
    model: &'a str,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<u64>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [OutToolCall<'a>],
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    index: usize,
    name: &'a str,
    arguments: &'a Value,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn done_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Length => "length",
        _ => "stop",
    }
}

/// What one output frame carries.
struct Payload<'a> {
    text: &'a str,
    thinking: Option<&'a str>,
    calls: &'a [OutToolCall<'a>],
    done: Option<(StopReason, Usage)>,
}

/// Writes an Ollama NDJSON stream (`/api/chat` or `/api/generate` frames) from events of an
/// OpenAI or Anthropic upstream. After `Done` or an error it writes nothing more.
#[derive(Debug)]
pub struct StreamWriter {
    model: String,
    chat: bool,
    tool_counter: usize,
    finished: bool,
}

impl StreamWriter {
    pub fn new(requested_model: &str, chat: bool) -> StreamWriter {
        StreamWriter {
            model: requested_model.to_string(),
            chat,
            tool_counter: 0,
            finished: false,
        }
    }

    /// True once `Done` or an error was written.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The frames for one event (none, or one line).
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<Bytes> {
        if self.finished {
            return Vec::new();
        }
        let frame = match ev {
            StreamEvent::TextDelta(t) if !t.is_empty() => self.frame(Payload {
                text: t,
                thinking: None,
                calls: &[],
                done: None,
            }),
            StreamEvent::ThinkingDelta(t) if !t.is_empty() => self.frame(Payload {
                text: "",
                thinking: Some(t),
                calls: &[],
                done: None,
            }),
            StreamEvent::ToolCall(c) if self.chat => {
                let generated;
                let id = if c.id.is_empty() {
                    generated = new_call_id();
                    generated.as_str()
                } else {
                    c.id.as_str()
                };
                let call = [OutToolCall {
                    id,
                    function: OutFunction {
                        index: self.tool_counter,
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                }];
                self.tool_counter += 1;
                self.frame(Payload {
                    text: "",
                    thinking: None,
                    calls: &call,
                    done: None,
                })
            }
            StreamEvent::Done { stop, usage } => {
                self.finished = true;
                self.frame(Payload {
                    text: "",
                    thinking: None,
                    calls: &[],
                    done: Some((*stop, *usage)),
                })
            }
            _ => return Vec::new(),
        };
        vec![frame]
    }

    /// The mid-stream error line; afterwards the writer is finished.
    pub fn error(&mut self, e: &GatewayError) -> Bytes {
        self.finished = true;
        ndjson_line(&e.body(Dialect::Ollama))
    }

    /// An empty `done:false` frame (never a blank line); empty once finished.
    pub fn keepalive(&self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        self.frame(Payload {
            text: "",
            thinking: None,
            calls: &[],
            done: None,
        })
    }

    fn frame(&self, p: Payload<'_>) -> Bytes {
        let created_at = now_rfc3339();
        let (message, response, thinking) = if self.chat {
            let m = OutMessage {
                role: "assistant",
                content: p.text,
                thinking: p.thinking,
                tool_calls: p.calls,
            };
            (Some(m), None, None)
        } else {
            (None, Some(p.text), p.thinking)
        };
        ndjson_bytes(&OutFrame {
            model: &self.model,
            created_at: &created_at,
            message,
            response,
            thinking,
            done: p.done.is_some(),
            done_reason: p.done.map(|d| done_reason(d.0)),
            prompt_eval_count: p.done.map(|d| d.1.input),
            eval_count: p.done.map(|d| d.1.output),
        })
    }
}

/// A non-streamed `/api/chat` (`chat`) or `/api/generate` answer.
pub fn encode_response(resp: &ChatResponse, requested_model: &str, chat: bool) -> Value {
    let mut o = Map::new();
    o.insert("model".into(), requested_model.into());
    o.insert("created_at".into(), now_rfc3339().into());
    let thinking = Some(resp.thinking.as_str()).filter(|t| !t.is_empty());
    if chat {
        let mut m = Map::new();
        m.insert("role".into(), "assistant".into());
        m.insert("content".into(), resp.text.as_str().into());
        if let Some(t) = thinking {
            m.insert("thinking".into(), t.into());
        }
        if !resp.tool_calls.is_empty() {
            let calls = resp
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let id = if c.id.is_empty() { new_call_id() } else { c.id.clone() };
                    json!({"id": id, "function": {"index": i, "name": c.name, "arguments": c.arguments}})
                })
                .collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        o.insert("message".into(), Value::Object(m));
    } else {
        o.insert("response".into(), resp.text.as_str().into());
        if let Some(t) = thinking {
            o.insert("thinking".into(), t.into());
        }
    }
    o.insert("done".into(), true.into());
    o.insert("done_reason".into(), done_reason(resp.stop).into());
    o.insert("prompt_eval_count".into(), resp.usage.input.into());
    o.insert("eval_count".into(), resp.usage.output.into());
    Value::Object(o)
}

/// An `/api/embed` answer, or the legacy `/api/embeddings` one (`{"embedding":[..]}`).
pub fn encode_embed_response(resp: &EmbedResponse, requested_model: &str, legacy: bool) -> Value {
    if legacy {
        let first = resp.vectors.first().map(Vec::as_slice).unwrap_or_default();
        return json!({ "embedding": first });
    }
    json!({
        "model": requested_model,
        "embeddings": resp.vectors,
        "prompt_eval_count": resp.input_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_off_keeps_the_client_bytes_when_it_can() {
        let body = Bytes::from_static(br#" {"model":"qwen3:8b","messages":[]}"#);
        let out = with_think_off(&body, false).unwrap();
        assert_eq!(
            &out[..],
            br#"{"think":false,"model":"qwen3:8b","messages":[]}"#
        );
        let empty = with_think_off(&Bytes::from_static(b"{ }"), false).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).unwrap(),
            json!({"think": false})
        );
        let asked = Bytes::from_static(br#"{"model":"m","think":"high"}"#);
        let out: Value = serde_json::from_slice(&with_think_off(&asked, true).unwrap()).unwrap();
        assert_eq!(out, json!({"model": "m", "think": false}));
        assert!(with_think_off(&Bytes::from_static(b"[1]"), false).is_err());
    }

    #[test]
    fn stripped_thinking_frames_say_nothing() {
        let mut thought = json!({"model": "m", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": false});
        assert!(!strip_thinking(&mut thought));
        assert!(thought["message"].get("thinking").is_none());
        let mut both = json!({"model": "m", "response": "Hi", "thinking": "hmm", "done": false});
        assert!(strip_thinking(&mut both));
        assert!(both.get("thinking").is_none());
        let mut done = json!({"model": "m", "message": {"role": "assistant", "content": "", "thinking": "x"}, "done": true});
        assert!(strip_thinking(&mut done), "the final frame always goes out");
        let mut plain =
            json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": false});
        assert!(
            strip_thinking(&mut plain),
            "frames without thinking are left alone"
        );
    }

    #[test]
    fn escapes_line_separators() {
        let line = ndjson_line(&serde_json::json!({"c": "a\u{2028}b\u{2029}c\u{85}"}));
        assert_eq!(&line[..], b"{\"c\":\"a\\u2028b\\u2029c\\u0085\"}\n");
        assert!(!needs_escape(&line));
        assert!(needs_escape("x\u{2028}".as_bytes()));
    }

    fn events(ndjson: &str) -> Vec<Result<Vec<StreamEvent>, GatewayError>> {
        ndjson.lines().map(|l| parse_frame(l.as_bytes())).collect()
    }

    fn lines(frames: &[Bytes]) -> Vec<Value> {
        frames
            .iter()
            .map(|b| {
                assert!(b.ends_with(b"\n") && !b[..b.len() - 1].contains(&b'\n'));
                serde_json::from_slice(b).unwrap()
            })
            .collect()
    }

    #[test]
    fn text_stream_frames_become_events() {
        let evs: Vec<StreamEvent> = events(include_str!(
            "../../tests/fixtures/ollama/chat_stream_text.ndjson"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        assert_eq!(
            evs,
            vec![
                StreamEvent::ThinkingDelta("The user wants".into()),
                StreamEvent::ThinkingDelta(" a greeting.".into()),
                StreamEvent::TextDelta("Sure".into()),
                StreamEvent::TextDelta(", here".into()),
                StreamEvent::Done {
                    stop: StopReason::Stop,
                    usage: Usage {
                        input: 57,
                        output: 3,
                        estimated: false
                    }
                },
            ]
        );
    }

    #[test]
    fn tool_calls_ride_on_any_frame_including_done() {
        let evs: Vec<StreamEvent> = events(include_str!(
            "../../tests/fixtures/ollama/chat_stream_tools.ndjson"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        let calls: Vec<&ToolCall> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].id, "call_7hw2kq1x");
        assert_eq!(calls[2].id, "", "old servers send no id");
        assert_eq!(calls[2].arguments, json!({"path": "src", "depth": 2}));
        assert!(matches!(evs.last(), Some(StreamEvent::Done { .. })));
    }

    #[test]
    fn error_line_is_an_error() {
        let res = events(include_str!(
            "../../tests/fixtures/ollama/chat_stream_error.ndjson"
        ));
        assert!(res[0].is_ok());
        let e = res[1].as_ref().unwrap_err();
        assert_eq!(e.message, "upstream runner exited unexpectedly");
        assert!(parse_frame(b"not json").is_err());
        assert!(parse_frame(b"").unwrap().is_empty());
    }

    #[test]
    fn generate_frames_use_response() {
        let evs: Vec<StreamEvent> = events(include_str!(
            "../../tests/fixtures/ollama/generate_stream.ndjson"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        assert_eq!(evs[0], StreamEvent::ThinkingDelta("hmm".into()));
        assert_eq!(evs[1], StreamEvent::TextDelta("Once upon".into()));
        assert!(matches!(
            evs[2],
            StreamEvent::Done {
                stop: StopReason::Length,
                ..
            }
        ));
    }

    #[test]
    fn non_stream_tool_answer_is_tool_use() {
        let r = parse_response(include_bytes!(
            "../../tests/fixtures/ollama/chat_response_tools.json"
        ))
        .unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.thinking, "Need the file.");
        assert_eq!(r.tool_calls[0].arguments, json!({"path": "src/main.rs"}));
        assert_eq!(r.usage.input, 212);
        assert!(parse_response(br#"{"error":"model \"x\" not found"}"#).is_err());
    }

    #[test]
    fn embed_response_parses_and_reencodes() {
        let r = parse_embed_response(include_bytes!(
            "../../tests/fixtures/ollama/embed_response.json"
        ))
        .unwrap();
        assert_eq!(r.vectors.len(), 2);
        assert_eq!(r.input_tokens, 8);
        let legacy = encode_embed_response(&r, "m", true);
        assert_eq!(legacy["embedding"], json!([0.5, -1.25, 0.0]));
        assert_eq!(
            encode_embed_response(&r, "m", false)["embeddings"][1],
            json!([1.0, 2.0, 3.0])
        );
    }

    #[test]
    fn decodes_chat_request() {
        let req = decode_chat(include_bytes!(
            "../../tests/fixtures/ollama/chat_request.json"
        ))
        .unwrap();
        assert_eq!(req.model, "qwen3:8b");
        assert!(req.stream, "absent stream means true");
        assert_eq!(req.messages.len(), 6);
        assert_eq!(req.messages[1].images[0].media_type, "image/png");
        let call_id = req.messages[2].tool_calls[0].id.clone();
        assert!(call_id.starts_with("call_"), "missing ids are generated");
        assert_eq!(
            req.messages[3].tool_call_id.as_deref(),
            Some(call_id.as_str())
        );
        assert_eq!(req.messages[4].role, Role::Assistant);
        assert_eq!(req.messages[4].thinking.as_deref(), Some("short file"));
        assert_eq!(req.max_tokens, Some(512));
        assert_eq!(req.temperature, Some(0.2));
        assert_eq!(req.top_k, Some(40));
        assert_eq!(req.seed, Some(7));
        assert_eq!(req.stop, vec!["</answer>"]);
        assert_eq!(req.options.get("num_ctx"), Some(&json!(32768)));
        assert_eq!(req.format, Some(ResponseFormat::Json));
        assert_eq!(req.think, Some(Think::Level(ThinkLevel::High)));
        assert_eq!(req.keep_alive, Some(json!("10m")));
        assert_eq!(req.tools[0].name, "read_file");
    }

    #[test]
    fn decode_errors_name_the_field() {
        let e = decode_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"robot"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        let e = decode_chat(br#"{"model":"m","options":{"temperature":"hot"}}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("options.temperature"));
        let e = decode_chat(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = decode_chat(
            br#"{"model":"m","messages":[{"role":"tool","tool_call_id":"call_x","content":"1"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
        let e = decode_chat(
            br#"{"model":"m","messages":[{"role":"user","images":["https://x/y.png"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].images[0]"));
        let e = decode_chat(
            br#"{"model":"m","tools":[{"type":"function","function":{"parameters":{}}}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
    }

    #[test]
    fn decodes_generate_and_embed() {
        let req = decode_generate(include_bytes!(
            "../../tests/fixtures/ollama/generate_request.json"
        ))
        .unwrap();
        assert!(req.completion);
        assert_eq!(req.system_text().as_deref(), Some("Be brief."));
        assert_eq!(req.messages[1].text, "Why is the sky blue?");
        assert_eq!(req.messages[1].images[0].media_type, "image/jpeg");
        assert_eq!(req.max_tokens, None, "num_predict -1 means unlimited");
        let e = decode_embed(br#"{"model":"e","input":["a","b"]}"#).unwrap();
        assert_eq!(e.inputs, vec!["a", "b"]);
        assert!(!e.legacy);
        let e = decode_embed(br#"{"model":"e","prompt":"a"}"#).unwrap();
        assert!(e.legacy);
        assert_eq!(encode_embed(&e, "up")["input"], json!(["a"]));
    }

    #[test]
    fn encodes_upstream_chat() {
        let mut req = decode_chat(include_bytes!(
            "../../tests/fixtures/ollama/chat_request.json"
        ))
        .unwrap();
        req.messages.push(Message::new(Role::System, "Late rule."));
        let body = encode_chat(&req, "qwen3:8b-q8");
        assert_eq!(body["model"], "qwen3:8b-q8");
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(
            msgs[0],
            json!({"role": "system", "content": "Answer tersely.\n\nLate rule."})
        );
        assert_eq!(msgs.iter().filter(|m| m["role"] == "system").count(), 1);
        assert_eq!(msgs[1]["images"], json!(["iVBORw0KGgoAAAANSUhEUg"]));
        assert_eq!(msgs[3]["role"], "tool");
        assert_eq!(msgs[3]["tool_name"], "read_file");
        assert_eq!(msgs[3]["tool_call_id"], msgs[2]["tool_calls"][0]["id"]);
        assert_eq!(
            msgs[2]["tool_calls"][0]["function"]["arguments"],
            json!({"path": "src/main.rs"})
        );
        assert_eq!(body["options"]["num_predict"], 512);
        assert_eq!(body["options"]["num_ctx"], 32768);
        assert_eq!(body["options"]["stop"], json!(["</answer>"]));
        assert_eq!(body["format"], "json");
        assert_eq!(body["think"], "high");
        assert_eq!(body["keep_alive"], "10m");
        assert_eq!(body["tools"][0]["function"]["name"], "read_file");
        req.think = None;
        req.tool_choice = Some(ToolChoice::None);
        let body = encode_chat(&req, "m");
        assert_eq!(body["think"], false, "no reasoning unless asked");
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn writer_emits_chat_frames_and_done() {
        let mut w = StreamWriter::new("qwen3:8b", true);
        let mut out = Vec::new();
        out.extend(w.push(&StreamEvent::ThinkingDelta("t".into())));
        out.extend(w.push(&StreamEvent::TextDelta("Hi".into())));
        out.extend(w.push(&StreamEvent::ToolCall(ToolCall {
            id: String::new(),
            name: "f".into(),
            arguments: json!({"a": 1}),
        })));
        out.extend(w.push(&StreamEvent::ToolCall(ToolCall {
            id: "call_b".into(),
            name: "g".into(),
            arguments: json!({}),
        })));
        out.extend(w.push(&StreamEvent::Done {
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 5,
                output: 7,
                estimated: false,
            },
        }));
        assert!(w.push(&StreamEvent::TextDelta("late".into())).is_empty());
        let v = lines(&out);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0]["message"]["thinking"], "t");
        assert_eq!(
            v[1]["message"],
            json!({"role": "assistant", "content": "Hi"})
        );
        let c0 = &v[2]["message"]["tool_calls"][0];
        assert!(c0["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(c0["function"]["arguments"], json!({"a": 1}));
        assert_eq!(v[3]["message"]["tool_calls"][0]["function"]["index"], 1);
        assert_eq!(v[4]["done"], true);
        assert_eq!(v[4]["done_reason"], "stop");
        assert_eq!(v[4]["eval_count"], 7);
        assert_eq!(v[4]["model"], "qwen3:8b");
        assert!(w.keepalive().is_empty());
    }

    #[test]
    fn writer_generate_frames_and_errors() {
        let mut w = StreamWriter::new("m", false);
        let v = lines(&w.push(&StreamEvent::TextDelta("x".into())));
        assert_eq!(v[0]["response"], "x");
        assert!(v[0].get("message").is_none());
        let k = lines(&[w.keepalive()]);
        assert_eq!(k[0]["done"], false);
        assert_eq!(k[0]["response"], "");
        let e = w.error(&GatewayError::bad_request("boom\u{2028}"));
        assert_eq!(&e[..], b"{\"error\":\"boom\\u2028\"}\n");
        assert!(
            w.push(&StreamEvent::Done {
                stop: StopReason::Stop,
                usage: Usage::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn writer_escapes_line_separators() {
        let mut w = StreamWriter::new("m", true);
        let out = w.push(&StreamEvent::TextDelta("a\u{2028}b\u{2029}c\u{85}".into()));
        assert!(!needs_escape(&out[0]));
        assert_eq!(
            lines(&out)[0]["message"]["content"],
            "a\u{2028}b\u{2029}c\u{85}"
        );
    }

    #[test]
    fn non_stream_encoding() {
        let r = parse_response(include_bytes!(
            "../../tests/fixtures/ollama/chat_response_tools.json"
        ))
        .unwrap();
        let v = encode_response(&r, "alias", true);
        assert_eq!(v["model"], "alias");
        assert_eq!(v["done_reason"], "stop");
        assert_eq!(
            v["message"]["tool_calls"][0]["function"]["name"],
            "read_file"
        );
        let v = encode_response(
            &ChatResponse {
                text: "t".into(),
                stop: StopReason::Length,
                ..ChatResponse::default()
            },
            "m",
            false,
        );
        assert_eq!(v["response"], "t");
        assert_eq!(v["done_reason"], "length");
    }
}
