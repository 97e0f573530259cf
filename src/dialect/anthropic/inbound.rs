//! Anthropic clients: decoding Messages requests into the canonical request, and writing
//! the whole answer and the SSE stream back to them (docs/PROTOCOLS.md §3).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::dialect::Dialect;
use crate::dialect::wire::{self, Obj};
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, Image, Message, ModelEntry, ResponseFormat, Role,
    StopReason, StreamEvent, Think, ThinkLevel, Tool, ToolCall, ToolChoice, new_tool_use_id,
    random_id,
};

/// Claude Code's per-request attribution line; dropped so prefix caches keep working
/// (docs/PROTOCOLS.md §4).
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// A fresh `msg_...` id for a response.
pub fn new_message_id() -> String {
    random_id("msg_", 24)
}

// ---------------------------------------------------------------------------------------------
// Client requests

/// Decodes a `/v1/messages` body; `max_tokens` is required.
pub fn decode_messages(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode(wire::parse_body(body)?, true)
}

/// Decodes a `/v1/messages` body already parsed into an object.
pub fn decode_messages_object(m: Obj) -> Result<ChatRequest, GatewayError> {
    decode(m, true)
}

/// Decodes a `/v1/messages/count_tokens` body (no `max_tokens`).
pub fn decode_count_tokens(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode(wire::parse_body(body)?, false)
}

fn decode(mut m: Obj, need_max_tokens: bool) -> Result<ChatRequest, GatewayError> {
    let model = wire::req_str(&mut m, "model", "")?;
    let max_tokens = wire::take_u32(&mut m, "max_tokens", "")?;
    if need_max_tokens && max_tokens.is_none() {
        return Err(wire::missing("", "max_tokens"));
    }
    let mut req = ChatRequest {
        model,
        max_tokens,
        temperature: wire::take_f64(&mut m, "temperature", "")?,
        top_p: wire::take_f64(&mut m, "top_p", "")?,
        top_k: wire::take_u32(&mut m, "top_k", "")?,
        stream: wire::take_bool(&mut m, "stream", "")?.unwrap_or(false),
        include_usage: true,
        ..ChatRequest::default()
    };
    if let Some(stop) = wire::take(&mut m, "stop_sequences") {
        let mut o = Map::new();
        o.insert("stop_sequences".into(), stop);
        req.stop = wire::take_stop(&mut o, "stop_sequences", "")?;
    }
    if let Some(system) = wire::take(&mut m, "system") {
        let text = system_text(system, "system")?;
        if !text.is_empty() {
            req.messages.push(Message::new(Role::System, text));
        }
    }
    let msgs =
        wire::take_array(&mut m, "messages", "")?.ok_or_else(|| wire::missing("", "messages"))?;
    let mut ledger = CallLedger::default();
    for (i, v) in msgs.into_iter().enumerate() {
        let at = wire::index("messages", i);
        decode_message(wire::into_obj(v, &at)?, &at, &mut ledger, &mut req.messages)?;
    }
    if let Some(tools) = wire::take_array(&mut m, "tools", "")? {
        req.tools = decode_tools(tools)?;
    }
    if let Some(mut tc) = wire::take_obj(&mut m, "tool_choice", "")? {
        req.tool_choice = Some(
            match wire::req_str(&mut tc, "type", "tool_choice")?.as_str() {
                "auto" => ToolChoice::Auto,
                "any" => ToolChoice::Required,
                "none" => ToolChoice::None,
                "tool" => ToolChoice::Named(wire::req_str(&mut tc, "name", "tool_choice")?),
                _ => {
                    return Err(GatewayError::bad_field(
                        "tool_choice.type",
                        "expected auto, any, none or tool",
                    ));
                }
            },
        );
        if let Some(disable) = wire::take_bool(&mut tc, "disable_parallel_tool_use", "tool_choice")?
        {
            req.parallel_tool_calls = Some(!disable);
        }
    }
    if let Some(mut t) = wire::take_obj(&mut m, "thinking", "")? {
        req.think = match wire::req_str(&mut t, "type", "thinking")?.as_str() {
            "enabled" => Some(match wire::take_u32(&mut t, "budget_tokens", "thinking")? {
                Some(n) => Think::Budget(n),
                None => Think::On,
            }),
            "adaptive" => Some(Think::On),
            "disabled" => Some(Think::Off),
            _ => {
                return Err(GatewayError::bad_field(
                    "thinking.type",
                    "expected enabled, adaptive or disabled",
                ));
            }
        };
    }
    if let Some(mut oc) = wire::take_obj(&mut m, "output_config", "")? {
        if let Some(effort) = wire::take_str(&mut oc, "effort", "output_config")? {
            let level = ThinkLevel::parse(&effort).ok_or_else(|| {
                GatewayError::bad_field(
                    "output_config.effort",
                    "expected low, medium, high, xhigh or max",
                )
            })?;
            if req.think != Some(Think::Off) {
                req.think = Some(Think::Level(level));
            }
        }
        if let Some(mut f) = wire::take_obj(&mut oc, "format", "output_config")? {
            if let Some(schema) = wire::take(&mut f, "schema").filter(Value::is_object) {
                req.format = Some(ResponseFormat::Schema(schema));
            }
        }
    }
    Ok(req)
}

/// A `system` value (string or text blocks), without Claude Code's billing header block.
fn system_text(v: Value, at: &str) -> Result<String, GatewayError> {
    let blocks = match v {
        Value::String(s) if s.starts_with(BILLING_HEADER) => return Ok(String::new()),
        Value::String(s) => return Ok(s),
        Value::Array(b) => b,
        _ => {
            return Err(GatewayError::bad_field(
                at,
                "expected a string or an array of text blocks",
            ));
        }
    };
    let mut out = String::new();
    for (j, b) in blocks.into_iter().enumerate() {
        let bat = wire::index(at, j);
        let mut b = wire::into_obj(b, &bat)?;
        match wire::take_str(&mut b, "type", &bat)?.as_deref() {
            Some("text") | None => {
                let t = wire::req_str(&mut b, "text", &bat)?;
                if !t.starts_with(BILLING_HEADER) {
                    push_paragraph(&mut out, &t);
                }
            }
            Some("mid_conv_system") => {
                let inner = wire::take(&mut b, "content").unwrap_or(Value::Null);
                push_paragraph(&mut out, &system_text(inner, &wire::path(&bat, "content"))?);
            }
            Some(_) => {} // cache markers and future block kinds carry no prompt text.
        }
    }
    Ok(out)
}

fn push_paragraph(buf: &mut String, s: &str) {
    if s.is_empty() {
        return;
    }
    if !buf.is_empty() {
        buf.push_str("\n\n");
    }
    buf.push_str(s);
}

fn decode_message(
    mut m: Obj,
    at: &str,
    ledger: &mut CallLedger,
    out: &mut Vec<Message>,
) -> Result<(), GatewayError> {
    let role = wire::req_str(&mut m, "role", at)?;
    let cat = wire::path(at, "content");
    let content = wire::take(&mut m, "content").ok_or_else(|| wire::missing(at, "content"))?;
    match role.as_str() {
        "system" => {
            let text = system_text(content, &cat)?;
            if !text.is_empty() {
                out.push(Message::new(Role::System, text));
            }
        }
        "user" => decode_user(content, &cat, ledger, out)?,
        "assistant" => out.push(decode_assistant(content, &cat, ledger)?),
        _ => {
            return Err(GatewayError::bad_field(
                &wire::path(at, "role"),
                "expected user, assistant or system",
            ));
        }
    }
    Ok(())
}

fn blocks(content: Value, at: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(b) => Ok(b),
        _ => Err(GatewayError::bad_field(
            at,
            "expected a string or an array of content blocks",
        )),
    }
}

/// User turns: tool results become `Role::Tool` messages (first, as Anthropic orders them),
/// the rest one user message.
fn decode_user(
    content: Value,
    at: &str,
    ledger: &mut CallLedger,
    out: &mut Vec<Message>,
) -> Result<(), GatewayError> {
    let mut user = Message::new(Role::User, String::new());
    for (j, b) in blocks(content, at)?.into_iter().enumerate() {
        let bat = wire::index(at, j);
        let mut b = wire::into_obj(b, &bat)?;
        match wire::take_str(&mut b, "type", &bat)?.as_deref() {
            Some("text") => wire::push_line(&mut user.text, &wire::req_str(&mut b, "text", &bat)?),
            Some("image") => user.images.push(decode_image(&mut b, &bat)?),
            Some("document") => wire::push_line(&mut user.text, &decode_document(&mut b, &bat)?),
            Some("tool_result") => {
                let id = wire::req_str(&mut b, "tool_use_id", &bat)?;
                let (id, name) = ledger.resolve(Some(&id), None).ok_or_else(|| {
                    GatewayError::bad_field(
                        &wire::path(&bat, "tool_use_id"),
                        "does not match any earlier tool_use block",
                    )
                })?;
                let mut result = Message::new(Role::Tool, String::new());
                result.tool_call_id = Some(id);
                result.tool_name = Some(name);
                result.is_error = wire::take_bool(&mut b, "is_error", &bat)?.unwrap_or(false);
                if let Some(c) = wire::take(&mut b, "content") {
                    let rat = wire::path(&bat, "content");
                    for (k, rb) in blocks(c, &rat)?.into_iter().enumerate() {
                        let rbat = wire::index(&rat, k);
                        let mut rb = wire::into_obj(rb, &rbat)?;
                        match wire::take_str(&mut rb, "type", &rbat)?.as_deref() {
                            Some("text") => wire::push_line(
                                &mut result.text,
                                &wire::req_str(&mut rb, "text", &rbat)?,
                            ),
                            Some("image") => result.images.push(decode_image(&mut rb, &rbat)?),
                            Some("document") => {
                                wire::push_line(&mut result.text, &decode_document(&mut rb, &rbat)?)
                            }
                            _ => {}
                        }
                    }
                }
                out.push(result);
            }
            // Thinking echoed in a user turn, server-tool results, future kinds: nothing to say.
            _ => {}
        }
    }
    if !user.text.is_empty() || !user.images.is_empty() {
        out.push(user);
    }
    Ok(())
}

fn decode_assistant(
    content: Value,
    at: &str,
    ledger: &mut CallLedger,
) -> Result<Message, GatewayError> {
    let mut msg = Message::new(Role::Assistant, String::new());
    for (j, b) in blocks(content, at)?.into_iter().enumerate() {
        let bat = wire::index(at, j);
        let mut b = wire::into_obj(b, &bat)?;
        match wire::take_str(&mut b, "type", &bat)?.as_deref() {
            Some("text") => wire::push_line(&mut msg.text, &wire::req_str(&mut b, "text", &bat)?),
            Some("thinking") => {
                let t = wire::take_str(&mut b, "thinking", &bat)?.unwrap_or_default();
                msg.thinking.get_or_insert_with(String::new).push_str(&t);
                if let Some(sig) =
                    wire::take_str(&mut b, "signature", &bat)?.filter(|s| !s.is_empty())
                {
                    msg.thinking_signature = Some(sig);
                }
            }
            Some("tool_use") => {
                let id = wire::req_str(&mut b, "id", &bat)?;
                let name = wire::req_str(&mut b, "name", &bat)?;
                let arguments = match wire::take(&mut b, "input") {
                    None => Value::Object(Map::new()),
                    Some(v @ Value::Object(_)) => v,
                    Some(_) => return Err(wire::wrong_type(&bat, "input", "an object")),
                };
                let mut call = ToolCall {
                    id,
                    name,
                    arguments,
                };
                ledger.record(&mut call);
                msg.tool_calls.push(call);
            }
            _ => {}
        }
    }
    Ok(msg)
}

fn decode_image(b: &mut Obj, at: &str) -> Result<Image, GatewayError> {
    let sat = wire::path(at, "source");
    let mut s = wire::take_obj(b, "source", at)?.ok_or_else(|| wire::missing(at, "source"))?;
    match wire::take_str(&mut s, "type", &sat)?.as_deref() {
        Some("base64") => {
            let data = wire::req_str(&mut s, "data", &sat)?;
            let media_type = match wire::take_str(&mut s, "media_type", &sat)? {
                Some(mt) => mt,
                None => Image::from_base64(&data).media_type,
            };
            Ok(Image { media_type, data })
        }
        _ => Err(GatewayError::bad_field(
            &sat,
            "only base64 image sources are supported",
        )),
    }
}

fn decode_document(b: &mut Obj, at: &str) -> Result<String, GatewayError> {
    let sat = wire::path(at, "source");
    let mut s = wire::take_obj(b, "source", at)?.ok_or_else(|| wire::missing(at, "source"))?;
    match wire::take_str(&mut s, "type", &sat)?.as_deref() {
        Some("text") => wire::req_str(&mut s, "data", &sat),
        _ => Err(GatewayError::bad_field(
            &sat,
            "only text document sources are supported",
        )),
    }
}

fn decode_tools(tools: Vec<Value>) -> Result<Vec<Tool>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, v) in tools.into_iter().enumerate() {
        let at = wire::index("tools", i);
        let mut t = wire::into_obj(v, &at)?;
        let kind = wire::take_str(&mut t, "type", &at)?;
        // Server tools (`web_search_20250305`...) run at Anthropic; nothing to translate.
        if kind.as_deref().is_some_and(|k| k != "custom") && !t.contains_key("input_schema") {
            continue;
        }
        let name = wire::req_str(&mut t, "name", &at)?;
        let parameters = match wire::take(&mut t, "input_schema") {
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                return Err(wire::wrong_type(
                    &at,
                    "input_schema",
                    "a JSON schema object",
                ));
            }
            None => return Err(wire::missing(&at, "input_schema")),
        };
        out.push(Tool {
            name,
            description: wire::take_str(&mut t, "description", &at)?,
            parameters,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Client responses

fn stop_reason_out(stop: StopReason, saw_tool: bool) -> &'static str {
    match stop {
        StopReason::Stop if saw_tool => "tool_use",
        StopReason::Stop => "end_turn",
        StopReason::ToolUse => "tool_use",
        StopReason::Length => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ContentFilter => "refusal",
    }
}

#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: OutUsage,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'static str,
    },
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: Delta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: OutUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(usize),
    Thinking(usize),
}

/// Writes an Anthropic SSE stream per docs/PROTOCOLS.md §5.8: `message_start` first, one
/// block open at a time with indexes 0, 1, 2..., each tool call a whole `tool_use` block,
/// then `message_delta` and `message_stop`; after an `error` event nothing more.
#[derive(Debug)]
pub struct StreamWriter {
    id: String,
    model: String,
    input_estimate: u64,
    started: bool,
    open: Open,
    next_index: usize,
    saw_tool: bool,
    finished: bool,
}

impl StreamWriter {
    pub fn new(id: &str, requested_model: &str, input_estimate: u64) -> StreamWriter {
        StreamWriter {
            id: id.to_string(),
            model: requested_model.to_string(),
            input_estimate,
            started: false,
            open: Open::None,
            next_index: 0,
            saw_tool: false,
            finished: false,
        }
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The SSE frames for one event.
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match ev {
            StreamEvent::TextDelta(t) if !t.is_empty() => {
                let i = self.ensure_open(&mut out, false);
                out.push(delta(i, Delta::Text { text: t }));
            }
            StreamEvent::ThinkingDelta(t) if !t.is_empty() => {
                let i = self.ensure_open(&mut out, true);
                out.push(delta(i, Delta::Thinking { thinking: t }));
            }
            StreamEvent::ThinkingSignature(s) => {
                if let Open::Thinking(i) = self.open {
                    out.push(delta(i, Delta::Signature { signature: s }));
                }
            }
            StreamEvent::ToolCall(c) => {
                self.start(&mut out);
                self.close(&mut out);
                let i = self.next_index;
                self.next_index += 1;
                let generated;
                let id = if c.id.is_empty() {
                    generated = new_tool_use_id();
                    generated.as_str()
                } else {
                    c.id.as_str()
                };
                out.push(block_start(
                    i,
                    StartBlock::ToolUse {
                        id,
                        name: &c.name,
                        input: Empty {},
                    },
                ));
                let json = wire::to_string(&c.arguments);
                out.push(delta(
                    i,
                    Delta::InputJson {
                        partial_json: &json,
                    },
                ));
                out.push(block_stop(i));
                self.saw_tool = true;
            }
            StreamEvent::Done { stop, usage } => {
                self.start(&mut out);
                self.close(&mut out);
                // One count per message, as the API gives: `message_start` had to be sent
                // before the upstream counted (Ollama counts at the end), so its figure
                // stands, and it is the one count_tokens gives for the same request. The
                // upstream's own count goes to the request log and the metrics.
                let input = self.input_estimate;
                out.push(wire::sse_event(
                    "message_delta",
                    &MessageDelta {
                        kind: "message_delta",
                        delta: StopDelta {
                            stop_reason: stop_reason_out(*stop, self.saw_tool),
                            stop_sequence: None,
                        },
                        usage: OutUsage {
                            input_tokens: input,
                            output_tokens: usage.output,
                        },
                    },
                ));
                out.push(Bytes::from_static(
                    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                ));
                self.finished = true;
            }
            _ => {}
        }
        out
    }

    /// The `event: error` frame; afterwards the writer is finished.
    pub fn error(&mut self, e: &GatewayError) -> Bytes {
        self.finished = true;
        e.stream_frame(Dialect::Anthropic)
    }

    /// A `ping` event (the SDK skips it anywhere); empty once finished.
    pub fn keepalive(&self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(wire::sse_event(
            "message_start",
            &MessageStart {
                kind: "message_start",
                message: StartMessage {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    model: &self.model,
                    content: [],
                    stop_reason: None,
                    stop_sequence: None,
                    usage: OutUsage {
                        input_tokens: self.input_estimate,
                        output_tokens: 0,
                    },
                },
            },
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Open::Text(i) | Open::Thinking(i) = self.open {
            out.push(block_stop(i));
        }
        self.open = Open::None;
    }

    /// Makes sure a text (or thinking) block is open, returning its index.
    fn ensure_open(&mut self, out: &mut Vec<Bytes>, thinking: bool) -> usize {
        self.start(out);
        match (self.open, thinking) {
            (Open::Text(i), false) | (Open::Thinking(i), true) => return i,
            _ => {}
        }
        self.close(out);
        let i = self.next_index;
        self.next_index += 1;
        if thinking {
            self.open = Open::Thinking(i);
            out.push(block_start(
                i,
                StartBlock::Thinking {
                    thinking: "",
                    signature: "",
                },
            ));
        } else {
            self.open = Open::Text(i);
            out.push(block_start(i, StartBlock::Text { text: "" }));
        }
        i
    }
}

fn block_start(index: usize, block: StartBlock<'_>) -> Bytes {
    wire::sse_event(
        "content_block_start",
        &BlockStart {
            kind: "content_block_start",
            index,
            content_block: block,
        },
    )
}

fn delta(index: usize, delta: Delta<'_>) -> Bytes {
    wire::sse_event(
        "content_block_delta",
        &BlockDelta {
            kind: "content_block_delta",
            index,
            delta,
        },
    )
}

fn block_stop(index: usize) -> Bytes {
    wire::sse_event(
        "content_block_stop",
        &BlockStop {
            kind: "content_block_stop",
            index,
        },
    )
}

/// A non-streamed Messages answer.
pub fn encode_response(resp: &ChatResponse, requested_model: &str, id: &str) -> Value {
    let mut content = Vec::with_capacity(resp.tool_calls.len() + 2);
    if !resp.thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": resp.thinking,
                            "signature": resp.thinking_signature.as_deref().unwrap_or_default()}));
    }
    if !resp.text.is_empty() || resp.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": resp.text}));
    }
    for c in &resp.tool_calls {
        let id = if c.id.is_empty() {
            new_tool_use_id()
        } else {
            c.id.clone()
        };
        content.push(json!({"type": "tool_use", "id": id, "name": c.name, "input": c.arguments}));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason_out(resp.stop, !resp.tool_calls.is_empty()),
        "stop_sequence": null,
        "usage": {"input_tokens": resp.usage.input, "output_tokens": resp.usage.output},
    })
}

/// The `count_tokens` answer.
pub fn count_tokens_response(input_tokens: u64) -> Value {
    json!({ "input_tokens": input_tokens })
}

/// One page of the Anthropic-shaped `/v1/models` listing: up to `limit` (default 20, at most
/// 1000) entries after `after_id`. `has_more` is always explicit; an unknown cursor gives an
/// empty last page so a pager cannot loop.
pub fn models_list(models: &[ModelEntry], limit: Option<u32>, after_id: Option<&str>) -> Value {
    let limit = limit.unwrap_or(20).clamp(1, 1000) as usize;
    let start = match after_id {
        None => 0,
        Some(after) => models
            .iter()
            .position(|m| m.id == after)
            .map_or(models.len(), |p| p + 1),
    };
    let page = &models[start.min(models.len())..];
    let has_more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let data: Vec<Value> = page
        .iter()
        .map(|m| {
            let created = chrono::DateTime::from_timestamp(m.created, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            json!({
                "type": "model",
                "id": m.id,
                "display_name": m.display_name.as_deref().unwrap_or(&m.id),
                "created_at": created,
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": has_more,
        "first_id": page.first().map(|m| m.id.as_str()),
        "last_id": page.last().map(|m| m.id.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::sse::SseParser;
    use crate::error::ErrorKind;
    use crate::ir::Usage;

    fn frames(out: &[Bytes]) -> Vec<(String, Value)> {
        let mut p = SseParser::default();
        let all: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        p.feed(&all)
            .unwrap()
            .into_iter()
            .map(|f| (f.event.unwrap(), serde_json::from_str(&f.data).unwrap()))
            .collect()
    }

    #[test]
    fn decodes_a_claude_code_request() {
        let req = decode_messages(include_bytes!(
            "../../../tests/fixtures/anthropic/messages_request.json"
        ))
        .unwrap();
        assert_eq!(req.model, "claude-sonnet-4-6");
        assert_eq!(req.max_tokens, Some(8192));
        assert_eq!(
            req.system_text().as_deref(),
            Some("You are a careful reviewer.\n\nBe concise from now on."),
            "billing header dropped, mid-conversation system merged"
        );
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::System,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(req.messages[1].images[0].media_type, "image/webp");
        let a = &req.messages[2];
        assert_eq!(a.thinking.as_deref(), Some("I should read it."));
        assert!(a.thinking_signature.is_some());
        assert_eq!(a.tool_calls[1].arguments, json!({"path": "Cargo.toml"}));
        assert_eq!(req.messages[4].tool_name.as_deref(), Some("read_file"));
        assert!(req.messages[5].is_error);
        assert_eq!(req.messages[5].text, "permission denied");
        assert_eq!(req.messages[6].text, "Anything wrong?");
        assert_eq!(req.tools.len(), 1, "server tools are skipped");
        assert_eq!(req.think, Some(Think::Budget(2048)));
        assert_eq!(req.stop, vec!["</done>"]);
        assert!(req.stream);
    }

    #[test]
    fn decode_errors_name_the_field() {
        let e = decode_messages(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(decode_count_tokens(br#"{"model":"m","messages":[]}"#).is_ok());
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"1"}]}]}"#, "messages[0].content[0].tool_use_id"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":"no"}]}"#, "tools[0].input_schema"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f"}]}"#, "tools[0].input_schema"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}]}"#, "messages[0].content[0].source"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"bot","content":"x"}]}"#, "messages[0].role"),
            (br#"{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"f","input":[1]}]}]}"#, "messages[0].content[0].input"),
        ];
        for (body, field) in cases {
            let e = decode_messages(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(*field), "{}", e.message);
        }
    }

    #[test]
    fn writer_emits_the_documented_sequence() {
        let mut w = StreamWriter::new("msg_1", "claude-sonnet-4-6", 1450);
        let mut out = Vec::new();
        for ev in [
            StreamEvent::ThinkingDelta("t".into()),
            StreamEvent::ThinkingSignature("sig".into()),
            StreamEvent::TextDelta("Reading".into()),
            StreamEvent::TextDelta(" it.".into()),
            StreamEvent::ToolCall(ToolCall {
                id: String::new(),
                name: "read_file".into(),
                arguments: json!({"path": "a"}),
            }),
            StreamEvent::TextDelta("more".into()),
            StreamEvent::Done {
                stop: StopReason::Stop,
                usage: Usage {
                    input: 1377,
                    output: 21,
                    estimated: false,
                },
            },
        ] {
            out.extend(w.push(&ev));
        }
        assert!(w.push(&StreamEvent::TextDelta("late".into())).is_empty());
        let f = frames(&out);
        for (name, v) in &f {
            assert_eq!(v["type"], name.as_str(), "event name equals JSON type");
        }
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(
            f[0].1["message"]["usage"],
            json!({"input_tokens": 1450, "output_tokens": 0})
        );
        assert_eq!(f[0].1["message"]["content"], json!([]));
        assert_eq!(
            f[1].1["content_block"],
            json!({"type": "thinking", "thinking": "", "signature": ""})
        );
        assert_eq!(
            f[3].1["delta"],
            json!({"type": "signature_delta", "signature": "sig"})
        );
        assert_eq!(f[5].1["content_block"], json!({"type": "text", "text": ""}));
        let tool = &f[9].1;
        assert_eq!(tool["index"], 2);
        assert_eq!(tool["content_block"]["input"], json!({}));
        assert!(
            tool["content_block"]["id"]
                .as_str()
                .unwrap()
                .starts_with("toolu_")
        );
        assert_eq!(f[10].1["delta"]["partial_json"], "{\"path\":\"a\"}");
        assert_eq!(f[12].1["index"], 3);
        assert_eq!(f[15].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            f[15].1["usage"],
            json!({"input_tokens": 1450, "output_tokens": 21})
        );
    }

    #[test]
    fn writer_error_and_keepalive() {
        let mut w = StreamWriter::new("msg_1", "m", 1);
        assert!(w.keepalive().starts_with(b"event: ping\n"));
        w.push(&StreamEvent::TextDelta("x".into()));
        let e = w.error(&GatewayError::new(ErrorKind::NoCapacity, "busy"));
        assert!(e.starts_with(b"event: error\n"));
        assert!(
            w.push(&StreamEvent::Done {
                stop: StopReason::Stop,
                usage: Usage::default()
            })
            .is_empty()
        );
        assert!(w.keepalive().is_empty());
        // An immediate Done still yields a well-formed (empty) message.
        let mut w = StreamWriter::new("msg_2", "m", 1);
        let names: Vec<String> = frames(&w.push(&StreamEvent::Done {
            stop: StopReason::Length,
            usage: Usage::default(),
        }))
        .into_iter()
        .map(|f| f.0)
        .collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }

    #[test]
    fn non_stream_encoders() {
        let r = ChatResponse {
            text: "Looks fine.".into(),
            usage: Usage {
                input: 1450,
                output: 6,
                estimated: false,
            },
            ..ChatResponse::default()
        };
        let v = encode_response(&r, "claude-sonnet-4-6", "msg_01");
        assert_eq!(v["type"], "message");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "Looks fine."}])
        );
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 1450, "output_tokens": 6})
        );
        assert!(new_message_id().starts_with("msg_"));
        assert_eq!(count_tokens_response(7), json!({"input_tokens": 7}));
    }

    #[test]
    fn models_pages_end_explicitly() {
        let models: Vec<ModelEntry> = ["claude-a", "claude-b", "claude-c"]
            .iter()
            .map(|id| ModelEntry {
                id: (*id).into(),
                created: 1759395859,
                owned_by: "corral".into(),
                display_name: None,
            })
            .collect();
        let p = models_list(&models, Some(2), None);
        assert_eq!(p["has_more"], true);
        assert_eq!(p["first_id"], "claude-a");
        assert_eq!(p["last_id"], "claude-b");
        assert_eq!(p["data"][0]["created_at"], "2025-10-02T09:04:19Z");
        let p = models_list(&models, Some(2), Some("claude-b"));
        assert_eq!(p["has_more"], false);
        assert_eq!(p["data"].as_array().unwrap().len(), 1);
        let p = models_list(&models, None, Some("unknown"));
        assert_eq!(p["has_more"], false);
        assert_eq!(p["data"], json!([]));
        assert_eq!(p["last_id"], Value::Null);
    }
}
