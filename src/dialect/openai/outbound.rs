//! OpenAI-compatible upstreams: the chat and embedding calls a canonical request becomes,
//! and reading the upstream's whole answer and SSE chunks back into the canonical IR
//! (docs/PROTOCOLS.md §2).

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use std::ops::Range;

use crate::dialect::native;
use crate::dialect::ollama::openai_tool;
use crate::dialect::wire;
use crate::error::GatewayError;
use crate::ir::{
    ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Message, ResponseFormat, Role,
    StopReason, StreamEvent, Think, ThinkLevel, ToolCall, ToolChoice, Usage, estimate_tokens,
};

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
    parse_response_at(body).map(|(r, _)| r)
}

/// [`parse_response`], and where the answer's top-level `model` values are, from the same
/// parse (a passed-through answer gets the client's model name there).
pub fn parse_response_at(body: &[u8]) -> Result<(ChatResponse, Vec<Range<usize>>), GatewayError> {
    let mut spans = Vec::new();
    let v = native::object_at(body, &["model"], &mut spans)
        .map_err(|e| wire::protocol(format!("upstream sent an unreadable body: {e}")))?;
    let v = Value::Object(v);
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
    let resp = ChatResponse {
        text,
        thinking,
        thinking_signature: None,
        tool_calls,
        stop,
        usage,
    };
    Ok((resp, spans.into_iter().map(|(_, r)| r).collect()))
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
struct Chunk<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
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
        self.read(data, &mut out)?;
        Ok(out)
    }

    /// Consumes one SSE `data:` payload into `out`; returns where in `data` the chunk's
    /// `model` value is, from the same parse (a passed-through frame gets the client's
    /// model name there).
    pub fn read(
        &mut self,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Option<Range<usize>>, GatewayError> {
        if self.done {
            return Ok(None);
        }
        let payload = data.trim();
        if payload == "[DONE]" {
            self.end(out)?;
            return Ok(None);
        }
        if payload.is_empty() {
            return Ok(None);
        }
        let chunk: Chunk = serde_json::from_str(payload)
            .map_err(|e| wire::protocol(format!("upstream sent an unreadable chunk: {e}")))?;
        let model = chunk
            .model
            .and_then(|m| native::span_of(data.as_bytes(), m));
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
                self.delta(d, out)?;
            }
            if let Some(reason) = choice.finish_reason {
                self.stop = Some(finish_reason_in(&reason));
                self.flush(out)?;
            }
        }
        Ok(model)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::openai::decode_chat;
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

    #[test]
    fn encodes_upstream_chat() {
        let req = decode_chat(include_bytes!(
            "../../../tests/fixtures/openai/chat_request.json"
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
            "../../../tests/fixtures/openai/chat_stream_tools.sse"
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
            "../../../tests/fixtures/openai/chat_stream_ollama_v1_index0.sse"
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
            "../../../tests/fixtures/openai/chat_stream_error.sse"
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
            "../../../tests/fixtures/openai/chat_response.json"
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
            "../../../tests/fixtures/openai/embeddings_response.json"
        ))
        .unwrap();
        assert_eq!(e.vectors, vec![vec![0.5, -1.25], vec![2.0, 3.0]]);
        assert_eq!(e.input_tokens, 4);
    }
}
