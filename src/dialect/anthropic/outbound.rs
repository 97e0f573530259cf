//! Anthropic upstreams: the Messages call a canonical request becomes, and reading the
//! upstream's whole answer and SSE events back into the canonical IR (docs/PROTOCOLS.md §3).

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::dialect::native;
use crate::dialect::wire;
use crate::error::{ErrorKind, GatewayError};
use crate::ir::{
    ChatRequest, ChatResponse, Image, Message, Role, StopReason, StreamEvent, Think, ThinkLevel,
    ToolCall, ToolChoice, Usage,
};

/// `max_tokens` sent to an Anthropic upstream when the client (OpenAI/Ollama) set none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The smallest thinking budget Anthropic accepts.
const MIN_THINKING_BUDGET: u32 = 1024;

// ---------------------------------------------------------------------------------------------
// Upstream requests (to an Anthropic-compatible server)

/// The `/v1/messages` body for an Anthropic upstream. System entries are lifted into
/// `system`; the tool results of one turn go into one user message, tool_result blocks first.
pub fn encode_upstream(req: &ChatRequest, upstream_model: &str) -> Value {
    let mut messages: Vec<(Role, Vec<Value>)> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => (Role::User, user_blocks(m)),
            Role::Tool => (Role::User, vec![tool_result_block(m)]),
            Role::Assistant => (Role::Assistant, assistant_blocks(m)),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((last, content)) if *last == role => {
                if m.role == Role::Tool {
                    let at = content
                        .iter()
                        .take_while(|b| b["type"] == "tool_result")
                        .count();
                    content.splice(at..at, blocks);
                } else {
                    content.extend(blocks);
                }
            }
            _ => messages.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| {
            let role = if role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": content})
        })
        .collect();

    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).max(1);
    let mut b = Map::new();
    b.insert("model".into(), upstream_model.into());
    b.insert("max_tokens".into(), max_tokens.into());
    if let Some(system) = req.system_text() {
        b.insert("system".into(), system.into());
    }
    b.insert("messages".into(), Value::Array(messages));
    b.insert("stream".into(), req.stream.into());
    let forced_tool = matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Named(_))
    );
    let budget = thinking_budget(req.think, max_tokens).filter(|_| !forced_tool);
    match (req.think, budget) {
        (_, Some(n)) => {
            b.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": n}),
            );
            // Anthropic rejects sampling tweaks with thinking on; top_p only from 0.95.
            if let Some(p) = req.top_p.filter(|p| *p >= 0.95) {
                b.insert("top_p".into(), p.into());
            }
        }
        (Some(Think::Off), None) => {
            b.insert("thinking".into(), json!({"type": "disabled"}));
        }
        _ => {}
    }
    if budget.is_none() {
        if let Some(t) = req.temperature {
            b.insert("temperature".into(), t.clamp(0.0, 1.0).into());
        }
        if let Some(p) = req.top_p {
            b.insert("top_p".into(), p.into());
        }
        if let Some(k) = req.top_k {
            b.insert("top_k".into(), k.into());
        }
    }
    if !req.stop.is_empty() {
        b.insert(
            "stop_sequences".into(),
            req.stop.iter().map(String::as_str).collect(),
        );
    }
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("name".into(), t.name.as_str().into());
                if let Some(d) = &t.description {
                    o.insert("description".into(), d.as_str().into());
                }
                o.insert("input_schema".into(), t.parameters.clone());
                Value::Object(o)
            })
            .collect();
        b.insert("tools".into(), tools);
        let mut choice = match &req.tool_choice {
            None if req.parallel_tool_calls == Some(false) => Some(json!({"type": "auto"})),
            None => None,
            Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
            Some(ToolChoice::None) => Some(json!({"type": "none"})),
            Some(ToolChoice::Required) => Some(json!({"type": "any"})),
            Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
        };
        if let Some(c) = choice
            .as_mut()
            .filter(|_| req.parallel_tool_calls == Some(false))
        {
            c["disable_parallel_tool_use"] = true.into();
        }
        if let Some(c) = choice {
            b.insert("tool_choice".into(), c);
        }
    }
    Value::Object(b)
}

/// The thinking budget to send, if thinking is on and fits under `max_tokens`.
fn thinking_budget(think: Option<Think>, max_tokens: u32) -> Option<u32> {
    let want = match think? {
        Think::Off => return None,
        Think::On => ThinkLevel::Medium.budget(),
        Think::Budget(n) => n,
        Think::Level(l) => l.budget(),
    };
    let n = want
        .max(MIN_THINKING_BUDGET)
        .min(max_tokens.saturating_sub(1));
    (n >= MIN_THINKING_BUDGET).then_some(n)
}

fn image_block(i: &Image) -> Value {
    json!({"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": i.data}})
}

fn user_blocks(m: &Message) -> Vec<Value> {
    let mut out: Vec<Value> = m.images.iter().map(image_block).collect();
    if !m.text.is_empty() {
        out.push(json!({"type": "text", "text": m.text}));
    }
    out
}

fn tool_result_block(m: &Message) -> Value {
    let content = if m.images.is_empty() {
        Value::String(m.text.clone())
    } else {
        let mut parts: Vec<Value> = Vec::with_capacity(m.images.len() + 1);
        if !m.text.is_empty() {
            parts.push(json!({"type": "text", "text": m.text}));
        }
        parts.extend(m.images.iter().map(image_block));
        Value::Array(parts)
    };
    let mut b = json!({
        "type": "tool_result",
        "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
        "content": content,
    });
    if m.is_error {
        b["is_error"] = true.into();
    }
    b
}

fn assistant_blocks(m: &Message) -> Vec<Value> {
    let mut out = Vec::with_capacity(m.tool_calls.len() + 2);
    // Unsigned thinking (from other dialects) would be rejected by Anthropic: drop it.
    if let (Some(t), Some(sig)) = (&m.thinking, &m.thinking_signature) {
        out.push(json!({"type": "thinking", "thinking": t, "signature": sig}));
    }
    if !m.text.is_empty() {
        out.push(json!({"type": "text", "text": m.text}));
    }
    for c in &m.tool_calls {
        out.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Upstream responses

fn stop_reason_in(s: &str) -> StopReason {
    match s {
        "max_tokens" | "pause_turn" | "model_context_window_exceeded" => StopReason::Length,
        "tool_use" => StopReason::ToolUse,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::ContentFilter,
        _ => StopReason::Stop,
    }
}

#[derive(Deserialize, Default)]
struct InUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl InUsage {
    /// The whole prompt, cached parts included (what the other dialects call input).
    fn input(&self) -> Option<u64> {
        let base = self.input_tokens?;
        Some(
            base + self.cache_creation_input_tokens.unwrap_or(0)
                + self.cache_read_input_tokens.unwrap_or(0),
        )
    }
}

#[derive(Deserialize)]
struct InError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn error_from(e: &InError) -> GatewayError {
    let msg = e.message.clone().unwrap_or_else(|| "upstream error".into());
    match e.kind.as_deref() {
        Some("overloaded_error") => {
            GatewayError::new(ErrorKind::NoCapacity, msg).with_retryable(true)
        }
        _ => wire::upstream_error(msg),
    }
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    content: Vec<InBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    error: Option<InError>,
}

#[derive(Deserialize)]
struct InBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

/// Translates a non-streamed `/v1/messages` body.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, GatewayError> {
    parse_response_at(body).map(|(r, _)| r)
}

/// [`parse_response`], and where the answer's `model` value is, from the same parse (a
/// passed-through answer gets the client's model name there).
pub fn parse_response_at(body: &[u8]) -> Result<(ChatResponse, Vec<Range<usize>>), GatewayError> {
    let m: InMessage = serde_json::from_slice(body)
        .map_err(|e| wire::protocol(format!("upstream sent an unreadable message: {e}")))?;
    if let Some(e) = &m.error {
        return Err(error_from(e));
    }
    let model = m.model.and_then(|v| native::span_of(body, v));
    let mut r = ChatResponse::default();
    for b in m.content {
        match b.kind.as_str() {
            "text" => r.text.push_str(b.text.as_deref().unwrap_or_default()),
            "thinking" => {
                r.thinking
                    .push_str(b.thinking.as_deref().unwrap_or_default());
                r.thinking_signature = b.signature.filter(|s| !s.is_empty());
            }
            "tool_use" => r.tool_calls.push(ToolCall {
                id: b.id.unwrap_or_default(),
                name: b.name.unwrap_or_default(),
                arguments: b
                    .input
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({})),
            }),
            _ => {}
        }
    }
    r.stop = m
        .stop_reason
        .as_deref()
        .map_or(StopReason::Stop, stop_reason_in);
    let u = m.usage.unwrap_or_default();
    r.usage = Usage {
        input: u.input().unwrap_or(0),
        output: u.output_tokens.unwrap_or(0),
        estimated: false,
    };
    Ok((r, model.into_iter().collect()))
}

#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    #[serde(borrow)]
    message: Option<InStart<'a>>,
    #[serde(default)]
    content_block: Option<InBlock>,
    #[serde(default)]
    delta: Option<InDelta>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    error: Option<InError>,
}

#[derive(Deserialize)]
struct InStart<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug)]
struct OpenTool {
    index: usize,
    id: String,
    name: String,
    json: String,
}

/// Turns an Anthropic upstream's SSE events into canonical events: text and thinking pass at
/// once, each tool_use block is emitted whole at its `content_block_stop`, `Done` comes at
/// `message_stop` with the cumulative usage.
#[derive(Debug, Default)]
pub struct StreamParser {
    tools: Vec<OpenTool>,
    stop: Option<StopReason>,
    input: u64,
    output: u64,
    done: bool,
}

impl StreamParser {
    pub fn new() -> StreamParser {
        StreamParser::default()
    }

    /// Consumes one SSE frame (`event:` name, if any, and its data).
    pub fn push(
        &mut self,
        _event: Option<&str>,
        data: &str,
    ) -> Result<Vec<StreamEvent>, GatewayError> {
        let mut out = Vec::new();
        self.read(data, &mut out)?;
        Ok(out)
    }

    /// Consumes one SSE frame's data into `out`; returns where in `data` the message's
    /// `model` value is (in `message_start`), from the same parse (a passed-through frame
    /// gets the client's model name there). The event name is the data's `type`.
    pub fn read(
        &mut self,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Option<Range<usize>>, GatewayError> {
        let mut model = None;
        if self.done || data.trim().is_empty() {
            return Ok(model);
        }
        let ev: InEvent = serde_json::from_str(data)
            .map_err(|e| wire::protocol(format!("upstream sent an unreadable event: {e}")))?;
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    model = m.model.and_then(|v| native::span_of(data.as_bytes(), v));
                    if let Some(u) = m.usage {
                        self.usage(&u);
                    }
                }
            }
            "content_block_start" => {
                let Some(b) = ev.content_block else {
                    return Ok(model);
                };
                match b.kind.as_str() {
                    "text" => push_text(out, b.text, StreamEvent::TextDelta),
                    "thinking" => push_text(out, b.thinking, StreamEvent::ThinkingDelta),
                    "tool_use" => {
                        let json = match b.input {
                            Some(Value::Object(o)) if !o.is_empty() => wire::to_string(&o),
                            _ => String::new(),
                        };
                        self.tools.push(OpenTool {
                            index: ev.index.unwrap_or(0),
                            id: b.id.unwrap_or_default(),
                            name: b.name.unwrap_or_default(),
                            json,
                        });
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(d) = ev.delta else {
                    return Ok(model);
                };
                match d.kind.as_deref() {
                    Some("text_delta") => push_text(out, d.text, StreamEvent::TextDelta),
                    Some("thinking_delta") => {
                        push_text(out, d.thinking, StreamEvent::ThinkingDelta)
                    }
                    Some("signature_delta") => {
                        push_text(out, d.signature, StreamEvent::ThinkingSignature)
                    }
                    Some("input_json_delta") => {
                        let index = ev.index.unwrap_or(0);
                        if let Some(t) = self.tools.iter_mut().find(|t| t.index == index) {
                            t.json
                                .push_str(d.partial_json.as_deref().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = ev.index.unwrap_or(0);
                if let Some(pos) = self.tools.iter().position(|t| t.index == index) {
                    let t = self.tools.remove(pos);
                    let arguments = wire::arguments_from_str(&t.json, "input").map_err(|e| {
                        wire::protocol(format!("upstream tool_use `{}`: {}", t.name, e.message))
                    })?;
                    out.push(StreamEvent::ToolCall(ToolCall {
                        id: t.id,
                        name: t.name,
                        arguments,
                    }));
                }
            }
            "message_delta" => {
                if let Some(r) = ev.delta.and_then(|d| d.stop_reason) {
                    self.stop = Some(stop_reason_in(&r));
                }
                if let Some(u) = ev.usage {
                    self.usage(&u);
                }
            }
            "message_stop" => {
                self.done = true;
                out.push(StreamEvent::Done {
                    stop: self.stop.unwrap_or_default(),
                    usage: Usage {
                        input: self.input,
                        output: self.output,
                        estimated: false,
                    },
                });
            }
            "error" => {
                self.done = true;
                let e = ev.error.unwrap_or(InError {
                    kind: None,
                    message: None,
                });
                return Err(error_from(&e));
            }
            _ => {} // ping and future events
        }
        Ok(model)
    }

    /// At end of input: a stream without `message_stop` is an error.
    pub fn finish(&mut self) -> Result<Vec<StreamEvent>, GatewayError> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        Err(wire::protocol("upstream stream ended before message_stop"))
    }

    fn usage(&mut self, u: &InUsage) {
        if let Some(i) = u.input() {
            self.input = i;
        }
        if let Some(o) = u.output_tokens {
            self.output = o;
        }
    }
}

fn push_text(out: &mut Vec<StreamEvent>, t: Option<String>, f: fn(String) -> StreamEvent) {
    if let Some(t) = t.filter(|t| !t.is_empty()) {
        out.push(f(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::anthropic::decode_messages;
    use crate::dialect::sse::SseParser;

    fn upstream(sse: &str) -> Vec<Result<Vec<StreamEvent>, GatewayError>> {
        let mut p = SseParser::default();
        let mut sp = StreamParser::new();
        let mut out: Vec<_> = p
            .feed(sse.as_bytes())
            .unwrap()
            .into_iter()
            .map(|f| sp.push(f.event.as_deref(), &f.data))
            .collect();
        out.push(sp.finish());
        out
    }

    #[test]
    fn encodes_upstream_with_grouped_tool_results() {
        let req = decode_messages(include_bytes!(
            "../../../tests/fixtures/anthropic/messages_request.json"
        ))
        .unwrap();
        let b = encode_upstream(&req, "claude-up");
        assert_eq!(b["model"], "claude-up");
        assert_eq!(
            b["system"],
            "You are a careful reviewer.\n\nBe concise from now on."
        );
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0]["content"][0]["type"], "image");
        assert_eq!(msgs[1]["content"][0]["type"], "thinking");
        assert_eq!(
            msgs[1]["content"][3]["input"],
            json!({"path": "Cargo.toml"})
        );
        let last = msgs[2]["content"].as_array().unwrap();
        assert_eq!(last[0]["type"], "tool_result");
        assert_eq!(last[1]["type"], "tool_result");
        assert_eq!(last[1]["is_error"], true);
        assert_eq!(last[2], json!({"type": "text", "text": "Anything wrong?"}));
        assert_eq!(
            b["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert!(
            b.get("temperature").is_none(),
            "no temperature with thinking"
        );
        assert_eq!(b["tools"][0]["input_schema"]["required"], json!(["path"]));
        assert!(b["tools"][0].get("cache_control").is_none());
    }

    #[test]
    fn openai_tool_turns_group_into_one_user_message() {
        let req = crate::dialect::openai::decode_chat(include_bytes!(
            "../../../tests/fixtures/openai/chat_request.json"
        ))
        .unwrap();
        let b = encode_upstream(&req, "c");
        let msgs = b["messages"].as_array().unwrap();
        let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        let last = msgs[2]["content"].as_array().unwrap();
        assert_eq!(last[0]["tool_use_id"], "call_q81mz0ra");
        assert_eq!(last[1]["tool_use_id"], "call_7hw2kq1x");
        assert_eq!(last[2]["text"], "And?");
        assert_eq!(b["max_tokens"], 256);
        assert_eq!(b["temperature"], 0.3);
        // reasoning_effort low → 2048, under max_tokens 256 it cannot fit: thinking omitted.
        assert!(b.get("thinking").is_none());
    }

    #[test]
    fn upstream_stream_becomes_events() {
        let evs: Vec<StreamEvent> = upstream(include_str!(
            "../../../tests/fixtures/anthropic/messages_stream_tool.sse"
        ))
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
        assert_eq!(
            evs,
            vec![
                StreamEvent::ThinkingDelta("Need the file.".into()),
                StreamEvent::ThinkingSignature("EqQBCkYIBhgC".into()),
                StreamEvent::TextDelta("Reading it.".into()),
                StreamEvent::ToolCall(ToolCall {
                    id: "toolu_q81mz0ra".into(),
                    name: "read_file".into(),
                    arguments: json!({"path": "src/main.rs"})
                }),
                StreamEvent::Done {
                    stop: StopReason::ToolUse,
                    usage: Usage {
                        input: 1550,
                        output: 21,
                        estimated: false
                    }
                },
            ]
        );
    }

    #[test]
    fn upstream_stream_error_and_truncation() {
        let res = upstream(include_str!(
            "../../../tests/fixtures/anthropic/messages_stream_error.sse"
        ));
        let err = res.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(err.kind, ErrorKind::NoCapacity);
        let mut p = StreamParser::new();
        p.push(
            Some("message_start"),
            r#"{"type":"message_start","message":{"usage":{"input_tokens":1}}}"#,
        )
        .unwrap();
        assert!(p.finish().is_err());
    }

    #[test]
    fn parses_upstream_body() {
        let r = parse_response(include_bytes!(
            "../../../tests/fixtures/anthropic/messages_response.json"
        ))
        .unwrap();
        assert_eq!(r.text, "Looks fine.");
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.tool_calls[0].arguments, json!({"path": "Cargo.toml"}));
        assert_eq!(r.usage.input, 1450);
        let e =
            parse_response(br#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#)
                .unwrap_err();
        assert_eq!(e.message, "boom");
    }
}
