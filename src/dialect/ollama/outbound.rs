//! Ollama upstreams: the `/api/chat`, `/api/generate` and `/api/embed` calls a canonical
//! request becomes, and reading the upstream's whole answer and NDJSON frames back into the
//! canonical IR.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::dialect::wire::{self, Obj};
use crate::error::GatewayError;
use crate::ir::{
    ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Message, ResponseFormat, Role,
    StopReason, StreamEvent, Think, Tool, ToolCall, ToolChoice, Usage,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::ollama::decode_chat;

    fn events(ndjson: &str) -> Vec<Result<Vec<StreamEvent>, GatewayError>> {
        ndjson.lines().map(|l| parse_frame(l.as_bytes())).collect()
    }

    #[test]
    fn text_stream_frames_become_events() {
        let evs: Vec<StreamEvent> = events(include_str!(
            "../../../tests/fixtures/ollama/chat_stream_text.ndjson"
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
            "../../../tests/fixtures/ollama/chat_stream_tools.ndjson"
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
            "../../../tests/fixtures/ollama/chat_stream_error.ndjson"
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
            "../../../tests/fixtures/ollama/generate_stream.ndjson"
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
            "../../../tests/fixtures/ollama/chat_response_tools.json"
        ))
        .unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.thinking, "Need the file.");
        assert_eq!(r.tool_calls[0].arguments, json!({"path": "src/main.rs"}));
        assert_eq!(r.usage.input, 212);
        assert!(parse_response(br#"{"error":"model \"x\" not found"}"#).is_err());
    }

    #[test]
    fn encodes_upstream_chat() {
        let mut req = decode_chat(include_bytes!(
            "../../../tests/fixtures/ollama/chat_request.json"
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
}
