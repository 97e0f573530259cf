//! The OpenAI Responses dialect (`POST /v1/responses`): input items to a canonical chat, a
//! canonical answer to a `response` object, canonical stream events to the Responses SSE
//! event sequence (`response.created` … `response.completed`). Pure: no I/O, no clock.
//!
//! corral keeps no responses, so everything that needs stored state (`previous_response_id`,
//! `conversation`, `item_reference`, stored prompts, background runs) is a 400 that says so.
//! Only function tools can be translated; hosted tools (web search, file search, custom
//! grammars...) are left out of the upstream request and out of the echoed `tools`.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::wire::{self, Obj};
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, Image, Message, ResponseFormat, Role, StopReason,
    StreamEvent, Think, ThinkLevel, Tool, ToolCall, ToolChoice, Usage, new_call_id, random_id,
};

/// A fresh `resp_...` id.
pub fn new_response_id() -> String {
    random_id("resp_", 24)
}

/// What a `response` object repeats of its request, fixed when the request is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The model the client asked for.
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub parallel_tool_calls: bool,
    pub tool_choice: Value,
    /// The function tools as the client sent them (the ones corral translates).
    pub tools: Vec<Value>,
    /// `{"effort", "summary"}` as asked, both null when not.
    pub reasoning: Value,
    /// Reasoning summaries were asked for: thinking is shown as `reasoning` items.
    pub summary: bool,
    /// `text.format` as asked (`{"type":"text"}` by default).
    pub format: Value,
    pub metadata: Value,
}

/// A decoded request: the canonical chat plus what its answer echoes.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub chat: ChatRequest,
    pub echo: Echo,
}

// ---------------------------------------------------------------------------------------------
// Client requests

/// Decodes a `/v1/responses` body; `created_at` stamps the answer.
pub fn decode(body: &[u8], created_at: i64) -> Result<Decoded, GatewayError> {
    let mut m = wire::parse_body(body)?;
    refuse_stored_state(&mut m)?;
    let model = wire::req_str(&mut m, "model", "")?;
    let instructions = wire::take_str(&mut m, "instructions", "")?;
    let mut chat = ChatRequest {
        model: model.clone(),
        max_tokens: wire::take_u32(&mut m, "max_output_tokens", "")?,
        temperature: wire::take_f64(&mut m, "temperature", "")?,
        top_p: wire::take_f64(&mut m, "top_p", "")?,
        stream: wire::take_bool(&mut m, "stream", "")?.unwrap_or(false),
        // The final `response.completed` always carries usage.
        include_usage: true,
        ..ChatRequest::default()
    };
    if let Some(text) = instructions.as_ref().filter(|t| !t.is_empty()) {
        chat.messages.push(Message::new(Role::System, text.clone()));
    }
    match wire::take(&mut m, "input") {
        None => return Err(wire::missing("", "input")),
        Some(Value::String(s)) => chat.messages.push(Message::new(Role::User, s)),
        Some(Value::Array(items)) => decode_items(items, &mut chat.messages)?,
        Some(_) => {
            return Err(wire::wrong_type(
                "",
                "input",
                "a string or an array of items",
            ));
        }
    }
    if !chat.messages.iter().any(|m| m.role != Role::System) {
        return Err(GatewayError::bad_field("input", "must not be empty"));
    }
    let mut tools_echo = Vec::new();
    if let Some(tools) = wire::take_array(&mut m, "tools", "")? {
        (chat.tools, tools_echo) = decode_tools(tools)?;
    }
    let tool_choice = wire::take(&mut m, "tool_choice");
    chat.tool_choice = tool_choice.clone().map(decode_tool_choice).transpose()?;
    chat.parallel_tool_calls = wire::take_bool(&mut m, "parallel_tool_calls", "")?;
    let (think, summary, reasoning) = decode_reasoning(&mut m)?;
    chat.think = think;
    let format = decode_text(&mut m, &mut chat)?;
    let echo = Echo {
        id: new_response_id(),
        created_at,
        model,
        instructions,
        max_output_tokens: chat.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        parallel_tool_calls: chat.parallel_tool_calls.unwrap_or(true),
        tool_choice: tool_choice.unwrap_or_else(|| json!("auto")),
        tools: tools_echo,
        reasoning,
        summary,
        format,
        metadata: wire::take(&mut m, "metadata").unwrap_or_else(|| json!({})),
    };
    Ok(Decoded { chat, echo })
}

/// Fields that only mean something to a server that keeps responses.
fn refuse_stored_state(m: &mut Obj) -> Result<(), GatewayError> {
    const STATELESS: &str = "corral does not store responses; send the whole conversation in \
                             `input` instead";
    for key in ["previous_response_id", "conversation", "prompt"] {
        if wire::take(m, key).is_some() {
            return Err(GatewayError::bad_field(key, STATELESS));
        }
    }
    if wire::take_bool(m, "background", "")? == Some(true) {
        return Err(GatewayError::bad_field(
            "background",
            "background responses are not supported (corral does not store responses)",
        ));
    }
    Ok(())
}

fn decode_items(items: Vec<Value>, out: &mut Vec<Message>) -> Result<(), GatewayError> {
    let mut ledger = CallLedger::default();
    // A reasoning item belongs to the assistant turn that follows it.
    let mut thinking: Option<String> = None;
    for (i, v) in items.into_iter().enumerate() {
        let at = wire::index("input", i);
        let mut o = wire::into_obj(v, &at)?;
        match wire::take_str(&mut o, "type", &at)?.as_deref() {
            None | Some("message") => {
                let mut msg = decode_message(o, &at)?;
                if msg.role == Role::Assistant {
                    msg.thinking = thinking.take();
                }
                out.push(msg);
            }
            Some("function_call") => {
                let mut call = ToolCall {
                    id: wire::req_str(&mut o, "call_id", &at)?,
                    name: wire::req_str(&mut o, "name", &at)?,
                    arguments: wire::arguments_from_value(
                        o.remove("arguments").unwrap_or(Value::Null),
                        &wire::path(&at, "arguments"),
                    )?,
                };
                ledger.record(&mut call);
                match out.last_mut() {
                    Some(last) if last.role == Role::Assistant => {
                        if last.thinking.is_none() {
                            last.thinking = thinking.take();
                        }
                        last.tool_calls.push(call);
                    }
                    _ => {
                        let mut msg = Message::new(Role::Assistant, "");
                        msg.thinking = thinking.take();
                        msg.tool_calls.push(call);
                        out.push(msg);
                    }
                }
            }
            Some("function_call_output") => {
                let id = wire::req_str(&mut o, "call_id", &at)?;
                let (id, name) = ledger.resolve(Some(&id), None).ok_or_else(|| {
                    GatewayError::bad_field(
                        &wire::path(&at, "call_id"),
                        "does not match any earlier function_call item",
                    )
                })?;
                let oat = wire::path(&at, "output");
                let text = parts_text(wire::take(&mut o, "output"), &oat)?;
                let mut msg = Message::new(Role::Tool, text);
                msg.tool_call_id = Some(id);
                msg.tool_name = Some(name);
                out.push(msg);
            }
            Some("reasoning") => {
                let text = reasoning_text(&mut o, &at)?;
                if !text.is_empty() {
                    thinking = Some(text);
                }
            }
            Some("item_reference") => {
                return Err(GatewayError::bad_field(
                    &wire::path(&at, "type"),
                    "item references need stored responses, which corral does not keep; \
                     send the item itself",
                ));
            }
            Some(other) => {
                return Err(GatewayError::bad_field(
                    &wire::path(&at, "type"),
                    format!("input item type `{other}` is not supported"),
                ));
            }
        }
    }
    Ok(())
}

fn decode_message(mut o: Obj, at: &str) -> Result<Message, GatewayError> {
    let role = match wire::req_str(&mut o, "role", at)?.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        _ => {
            return Err(GatewayError::bad_field(
                &wire::path(at, "role"),
                "expected user, assistant, system or developer",
            ));
        }
    };
    let cat = wire::path(at, "content");
    let mut msg = Message::new(role, String::new());
    match wire::take(&mut o, "content") {
        None => {}
        Some(Value::String(s)) => msg.text = s,
        Some(Value::Array(parts)) => {
            for (j, p) in parts.into_iter().enumerate() {
                content_part(p, &wire::index(&cat, j), &mut msg)?;
            }
        }
        Some(_) => {
            return Err(wire::wrong_type(
                at,
                "content",
                "a string or an array of parts",
            ));
        }
    }
    Ok(msg)
}

/// One part of a message's content: text of any kind, or (for users) an inline image.
fn content_part(p: Value, at: &str, msg: &mut Message) -> Result<(), GatewayError> {
    let mut p = wire::into_obj(p, at)?;
    match wire::take_str(&mut p, "type", at)?.as_deref() {
        Some("input_text" | "output_text" | "text") | None => {
            wire::push_line(&mut msg.text, &wire::req_str(&mut p, "text", at)?);
        }
        Some("refusal") => wire::push_line(&mut msg.text, &wire::req_str(&mut p, "refusal", at)?),
        Some("input_image") if msg.role == Role::User => {
            let url = wire::take_str(&mut p, "image_url", at)?.unwrap_or_default();
            let image = Image::from_data_url(&url).ok_or_else(|| {
                GatewayError::bad_field(
                    &wire::path(at, "image_url"),
                    "only base64 data: URLs are supported",
                )
            })?;
            msg.images.push(image);
        }
        Some(other) => {
            return Err(GatewayError::bad_field(
                &wire::path(at, "type"),
                format!("content part type `{other}` is not supported here"),
            ));
        }
    }
    Ok(())
}

/// A function result: a string, or text parts.
fn parts_text(v: Option<Value>, at: &str) -> Result<String, GatewayError> {
    let parts = match v {
        None => return Ok(String::new()),
        Some(Value::String(s)) => return Ok(s),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(GatewayError::bad_field(at, "expected a string or parts")),
    };
    let mut msg = Message::new(Role::Tool, String::new());
    for (j, p) in parts.into_iter().enumerate() {
        content_part(p, &wire::index(at, j), &mut msg)?;
    }
    Ok(msg.text)
}

/// The text of a reasoning item sent back: its full content when given, else its summary.
fn reasoning_text(o: &mut Obj, at: &str) -> Result<String, GatewayError> {
    let mut text = String::new();
    for key in ["content", "summary"] {
        for (j, p) in wire::take_array(o, key, at)?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let pat = wire::index(&wire::path(at, key), j);
            let mut p = wire::into_obj(p, &pat)?;
            if let Some(t) = wire::take_str(&mut p, "text", &pat)? {
                wire::push_line(&mut text, &t);
            }
        }
        if !text.is_empty() {
            break;
        }
    }
    Ok(text)
}

/// Function tools (flat: `{type, name, description, parameters, strict}`) and their echo.
/// Hosted tools cannot be served by an upstream model and are left out.
fn decode_tools(tools: Vec<Value>) -> Result<(Vec<Tool>, Vec<Value>), GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    let mut echo = Vec::with_capacity(tools.len());
    for (i, v) in tools.into_iter().enumerate() {
        let at = wire::index("tools", i);
        let mut t = wire::into_obj(v, &at)?;
        match wire::take_str(&mut t, "type", &at)?.as_deref() {
            None | Some("function") => {}
            Some(_) => continue,
        }
        let name = wire::req_str(&mut t, "name", &at)?;
        let description = wire::take_str(&mut t, "description", &at)?;
        let parameters = match wire::take(&mut t, "parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(wire::wrong_type(&at, "parameters", "a JSON schema object")),
        };
        let strict = wire::take_bool(&mut t, "strict", &at)?.unwrap_or(false);
        echo.push(
            json!({"type": "function", "name": name, "description": description,
                         "parameters": parameters, "strict": strict}),
        );
        out.push(Tool {
            name,
            description,
            parameters,
        });
    }
    Ok((out, echo))
}

fn decode_tool_choice(v: Value) -> Result<ToolChoice, GatewayError> {
    let bad = |what: &str| {
        GatewayError::bad_field(
            "tool_choice",
            format!("{what}; expected auto, none, required or a function"),
        )
    };
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(&format!("`{other}` is not a choice"))),
        },
        Value::Object(mut o) => match wire::take_str(&mut o, "type", "tool_choice")?.as_deref() {
            Some("function") => Ok(ToolChoice::Named(wire::req_str(
                &mut o,
                "name",
                "tool_choice",
            )?)),
            Some("allowed_tools") => {
                match wire::take_str(&mut o, "mode", "tool_choice")?.as_deref() {
                    Some("required") => Ok(ToolChoice::Required),
                    _ => Ok(ToolChoice::Auto),
                }
            }
            Some(other) => Err(bad(&format!("tool type `{other}` is not supported"))),
            None => Err(bad("no type")),
        },
        _ => Err(bad("not a string or an object")),
    }
}

/// `reasoning: {effort, summary}` → what to ask the upstream, whether to show summaries, and
/// the echo. Asking for a summary alone turns thinking on.
fn decode_reasoning(m: &mut Obj) -> Result<(Option<Think>, bool, Value), GatewayError> {
    let Some(mut r) = wire::take_obj(m, "reasoning", "")? else {
        return Ok((None, false, json!({"effort": null, "summary": null})));
    };
    let effort = wire::take_str(&mut r, "effort", "reasoning")?;
    let summary = match wire::take_str(&mut r, "summary", "reasoning")? {
        Some(s) => Some(s),
        None => wire::take_str(&mut r, "generate_summary", "reasoning")?,
    };
    let think = match effort.as_deref() {
        None => None,
        Some("none") => Some(Think::Off),
        Some(s) => Some(Think::Level(ThinkLevel::parse(s).ok_or_else(|| {
            GatewayError::bad_field(
                "reasoning.effort",
                "expected none, minimal, low, medium, high or xhigh",
            )
        })?)),
    };
    let show = match summary.as_deref() {
        None => false,
        Some("auto" | "concise" | "detailed") => think != Some(Think::Off),
        Some(_) => {
            return Err(GatewayError::bad_field(
                "reasoning.summary",
                "expected auto, concise or detailed",
            ));
        }
    };
    let think = match think {
        None if show => Some(Think::On),
        t => t,
    };
    Ok((think, show, json!({"effort": effort, "summary": summary})))
}

/// `text.format` → the canonical format; returns the echo.
fn decode_text(m: &mut Obj, chat: &mut ChatRequest) -> Result<Value, GatewayError> {
    let plain = json!({"type": "text"});
    let Some(mut text) = wire::take_obj(m, "text", "")? else {
        return Ok(plain);
    };
    let Some(mut f) = wire::take_obj(&mut text, "format", "text")? else {
        return Ok(plain);
    };
    let echo = Value::Object(f.clone());
    chat.format = match wire::take_str(&mut f, "type", "text.format")?.as_deref() {
        None | Some("text") => None,
        Some("json_object") => Some(ResponseFormat::Json),
        Some("json_schema") => match wire::take(&mut f, "schema") {
            Some(s @ Value::Object(_)) => Some(ResponseFormat::Schema(s)),
            _ => return Err(wire::missing("text.format", "schema")),
        },
        Some(_) => {
            return Err(GatewayError::bad_field(
                "text.format.type",
                "expected text, json_object or json_schema",
            ));
        }
    };
    Ok(echo)
}

// ---------------------------------------------------------------------------------------------
// Client responses

/// `status` and `incomplete_details.reason` for how generation ended.
fn status_of(stop: StopReason) -> (&'static str, Option<&'static str>) {
    match stop {
        StopReason::Length => ("incomplete", Some("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", Some("content_filter")),
        StopReason::Stop | StopReason::StopSequence | StopReason::ToolUse => ("completed", None),
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input + u.output,
    })
}

impl Echo {
    /// The `response` object in a given state.
    fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<Usage>,
        error: Option<Value>,
        incomplete: Option<&str>,
    ) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": error,
            "incomplete_details": incomplete.map(|r| json!({"reason": r})),
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": null,
            "reasoning": self.reasoning,
            "store": false,
            "temperature": self.temperature,
            "text": {"format": self.format},
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": usage.map(usage_json),
            "user": null,
        })
    }
}

fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    json!({"id": id, "type": "reasoning", "summary": summary, "status": status})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, text: Option<&str>, status: &str) -> Value {
    let content = match text {
        Some(t) => json!([text_part(t)]),
        None => json!([]),
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call: &ToolCall, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id_of(call),
           "name": call.name, "arguments": arguments})
}

fn call_id_of(call: &ToolCall) -> String {
    if call.id.is_empty() {
        new_call_id()
    } else {
        call.id.clone()
    }
}

/// A non-streamed answer: reasoning (when summaries were asked), the message, function calls.
pub fn encode_response(resp: &ChatResponse, echo: &Echo) -> Value {
    let mut output = Vec::with_capacity(2 + resp.tool_calls.len());
    if echo.summary && !resp.thinking.is_empty() {
        output.push(reasoning_item(
            &random_id("rs_", 24),
            &resp.thinking,
            "completed",
        ));
    }
    if !resp.text.is_empty() || resp.tool_calls.is_empty() {
        output.push(message_item(
            &random_id("msg_", 24),
            Some(&resp.text),
            "completed",
        ));
    }
    for c in &resp.tool_calls {
        let call = ToolCall {
            id: call_id_of(c),
            ..c.clone()
        };
        output.push(call_item(
            &random_id("fc_", 24),
            &call,
            &wire::to_string(&c.arguments),
            "completed",
        ));
    }
    let (status, incomplete) = status_of(resp.stop);
    echo.object(status, &output, Some(resp.usage), None, incomplete)
}

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
}

/// Writes the Responses SSE sequence: `response.created`, `response.in_progress`, per output
/// item `output_item.added` → deltas → `.done` events → `output_item.done`, then
/// `response.completed` (or `response.incomplete`) carrying every item and the usage. Every
/// event has `event:` set to its type and a `sequence_number` counting from 0.
#[derive(Debug)]
pub struct StreamWriter {
    echo: Echo,
    seq: u64,
    started: bool,
    open: Option<Open>,
    /// Finished items; the next item's `output_index` is its length.
    items: Vec<Value>,
    finished: bool,
}

impl StreamWriter {
    pub fn new(echo: Echo) -> StreamWriter {
        StreamWriter {
            echo,
            seq: 0,
            started: false,
            open: None,
            items: Vec::new(),
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
        self.start(&mut out);
        match ev {
            StreamEvent::ThinkingDelta(t) if self.echo.summary && !t.is_empty() => {
                self.reasoning_delta(t, &mut out)
            }
            StreamEvent::TextDelta(t) if !t.is_empty() => self.text_delta(t, &mut out),
            StreamEvent::ToolCall(c) => {
                self.close(&mut out);
                self.call(c, &mut out);
            }
            StreamEvent::Done { stop, usage } => {
                self.close(&mut out);
                if self.items.is_empty() {
                    // Clients read `output[0]` / `output_text`; an empty answer is an empty message.
                    self.open_message(&mut out);
                    self.close(&mut out);
                }
                let (status, incomplete) = status_of(*stop);
                let response =
                    self.echo
                        .object(status, &self.items, Some(*usage), None, incomplete);
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                out.push(self.event(kind, json!({"response": response})));
                self.finished = true;
            }
            _ => {}
        }
        out
    }

    /// Ends a stream that failed after it started: an `error` event, then `response.failed`.
    /// The error event carries its fields both flat (as documented) and under `error` (as
    /// OpenAI sends them), so both official SDKs raise on it.
    pub fn error(&mut self, e: &GatewayError) -> Bytes {
        let mut out = Vec::new();
        if self.finished {
            return Bytes::new();
        }
        self.start(&mut out);
        let error = json!({"type": "server_error", "code": "server_error",
                           "message": e.message, "param": null});
        out.push(self.event(
            "error",
            json!({"code": "server_error", "message": e.message, "param": null,
                   "error": error}),
        ));
        let failed = json!({"code": "server_error", "message": e.message});
        let response = self
            .echo
            .object("failed", &self.items, None, Some(failed), None);
        out.push(self.event("response.failed", json!({"response": response})));
        self.finished = true;
        Bytes::from(out.concat())
    }

    /// An SSE comment, ignored by clients; empty once finished.
    pub fn keepalive(&self) -> Bytes {
        if self.finished {
            return Bytes::new();
        }
        Bytes::from_static(b": keepalive\n\n")
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.echo.object("in_progress", &[], None, None, None);
        out.push(self.event("response.created", json!({"response": response})));
        out.push(self.event("response.in_progress", json!({"response": response})));
    }

    fn event(&mut self, kind: &str, body: Value) -> Bytes {
        let mut o = match body {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        o.insert("type".into(), kind.into());
        o.insert("sequence_number".into(), self.seq.into());
        self.seq += 1;
        wire::sse_event(kind, &o)
    }

    fn index(&self) -> usize {
        self.items.len()
    }

    fn reasoning_delta(&mut self, t: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = random_id("rs_", 24);
            let index = self.index();
            let item = reasoning_item(&id, "", "in_progress");
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            out.push(self.event(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            ));
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.index();
        let Some(Open::Reasoning { id, text }) = &mut self.open else {
            return;
        };
        text.push_str(t);
        let body = json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": t});
        out.push(self.event("response.reasoning_summary_text.delta", body));
    }

    fn open_message(&mut self, out: &mut Vec<Bytes>) {
        let id = random_id("msg_", 24);
        let index = self.index();
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(&id, None, "in_progress")}),
        ));
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        ));
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    fn text_delta(&mut self, t: &str, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            self.open_message(out);
        }
        let index = self.index();
        let Some(Open::Message { id, text }) = &mut self.open else {
            return;
        };
        text.push_str(t);
        let body = json!({"item_id": id, "output_index": index, "content_index": 0,
                          "delta": t, "logprobs": []});
        out.push(self.event("response.output_text.delta", body));
    }

    /// Finishes the open item, if any.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let index = self.index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                out.push(self.event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "text": text}),
                ));
                out.push(self.event(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                ));
                reasoning_item(&id, &text, "completed")
            }
            Some(Open::Message { id, text }) => {
                out.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                ));
                out.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": text_part(&text)}),
                ));
                message_item(&id, Some(&text), "completed")
            }
        };
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.items.push(item);
    }

    /// A whole function call: added, its arguments in one delta, done.
    fn call(&mut self, c: &ToolCall, out: &mut Vec<Bytes>) {
        let id = random_id("fc_", 24);
        let index = self.index();
        let call = ToolCall {
            id: call_id_of(c),
            ..c.clone()
        };
        let arguments = wire::to_string(&c.arguments);
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(&id, &call, "", "in_progress")}),
        ));
        out.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": arguments}),
        ));
        out.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "name": call.name,
                   "arguments": arguments}),
        ));
        let item = call_item(&id, &call, &arguments, "completed");
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.items.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::sse::{DEFAULT_MAX_FRAME, SseParser};

    fn dec(v: Value) -> Result<Decoded, GatewayError> {
        decode(v.to_string().as_bytes(), 1_763_877_600)
    }

    fn events(frames: &[Bytes]) -> Vec<(String, Value)> {
        let mut p = SseParser::new(DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        for f in frames {
            for frame in p.feed(f).unwrap() {
                let v: Value = serde_json::from_str(&frame.data).unwrap();
                let event = frame.event.unwrap();
                assert_eq!(v["type"], event.as_str(), "event: line matches type");
                out.push((event, v));
            }
        }
        out
    }

    fn kinds(evs: &[(String, Value)]) -> Vec<&str> {
        evs.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn run(writer: &mut StreamWriter, evs: &[StreamEvent]) -> Vec<(String, Value)> {
        let frames: Vec<Bytes> = evs.iter().flat_map(|e| writer.push(e)).collect();
        events(&frames)
    }

    fn done(stop: StopReason) -> StreamEvent {
        StreamEvent::Done {
            stop,
            usage: Usage {
                input: 7,
                output: 3,
                estimated: false,
            },
        }
    }

    #[test]
    fn a_string_input_and_instructions() {
        let d = dec(
            json!({"model": "m", "input": "hi", "instructions": "be brief",
                           "max_output_tokens": 50, "temperature": 0.2, "stream": true}),
        )
        .unwrap();
        assert_eq!(d.chat.system_text().as_deref(), Some("be brief"));
        assert_eq!(d.chat.messages[1], Message::new(Role::User, "hi"));
        assert_eq!(d.chat.max_tokens, Some(50));
        assert!(d.chat.stream && d.chat.include_usage);
        assert!(d.echo.id.starts_with("resp_"));
        assert_eq!(d.echo.instructions.as_deref(), Some("be brief"));
    }

    #[test]
    fn items_become_a_conversation_with_tool_results() {
        let d = dec(json!({"model": "m", "input": [
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "weather?"},
                         {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
            {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "sunny"}]},
        ]}))
        .unwrap();
        let m = &d.chat.messages;
        assert_eq!(m.len(), 5);
        assert_eq!((m[0].role, m[0].text.as_str()), (Role::System, "rules"));
        assert_eq!(m[1].images.len(), 1);
        assert_eq!(m[2].role, Role::Assistant);
        assert_eq!(m[2].text, "Let me look.");
        assert_eq!(m[2].thinking.as_deref(), Some("think"));
        assert_eq!(m[2].tool_calls.len(), 2);
        assert_eq!(m[2].tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(m[2].tool_calls[1].arguments, json!({}));
        assert_eq!(m[3].tool_name.as_deref(), Some("get_time"));
        assert_eq!(m[3].text, "noon");
        assert_eq!(m[4].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(m[4].text, "sunny");
    }

    #[test]
    fn a_call_with_no_assistant_message_before_it_starts_one() {
        let d = dec(json!({"model": "m", "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
        ]}))
        .unwrap();
        assert_eq!(d.chat.messages[1].role, Role::Assistant);
        assert_eq!(d.chat.messages[1].tool_calls[0].id, "c");
    }

    #[test]
    fn stored_state_is_a_clear_400() {
        for (key, v) in [
            ("previous_response_id", json!("resp_1")),
            ("conversation", json!("conv_1")),
            ("prompt", json!({"id": "pmpt_1"})),
        ] {
            let mut body = json!({"model": "m", "input": "hi"});
            body[key] = v;
            let e = dec(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(key));
            assert!(
                e.message.contains("does not store responses"),
                "{}",
                e.message
            );
        }
        let e = dec(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].type"));
        // `previous_response_id: null` is what some clients send when there is none.
        assert!(dec(json!({"model": "m", "input": "hi", "previous_response_id": null})).is_ok());
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({"input": "hi"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "x", "output": "o"}]}),
                "input[0].call_id",
            ),
            (
                json!({"model": "m", "input": [{"type": "computer_call"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}),
                "reasoning.effort",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
                "text.format.schema",
            ),
        ];
        for (body, param) in cases {
            let e = dec(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn function_tools_are_kept_and_hosted_tools_left_out() {
        let d = dec(json!({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": false,
            "tools": [{"type": "function", "name": "f", "description": "d",
                       "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true},
                      {"type": "web_search"},
                      {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]}))
        .unwrap();
        assert_eq!(d.chat.tools.len(), 1);
        assert_eq!(d.chat.tools[0].name, "f");
        assert_eq!(d.chat.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(d.chat.parallel_tool_calls, Some(false));
        assert_eq!(d.echo.tools.len(), 1);
        assert_eq!(d.echo.tools[0]["strict"], true);
        assert!(!d.echo.parallel_tool_calls);
    }

    #[test]
    fn reasoning_effort_and_summary() {
        let r = |v: Value| dec(json!({"model": "m", "input": "x", "reasoning": v})).unwrap();
        let d = r(json!({"effort": "high", "summary": "auto"}));
        assert_eq!(d.chat.think, Some(Think::Level(ThinkLevel::High)));
        assert!(d.echo.summary);
        assert_eq!(
            d.echo.reasoning,
            json!({"effort": "high", "summary": "auto"})
        );
        let d = r(json!({"effort": "low"}));
        assert_eq!(d.chat.think, Some(Think::Level(ThinkLevel::Low)));
        assert!(!d.echo.summary);
        let d = r(json!({"summary": "detailed"}));
        assert_eq!(d.chat.think, Some(Think::On));
        assert!(d.echo.summary);
        let d = r(json!({"effort": "none", "summary": "auto"}));
        assert_eq!(d.chat.think, Some(Think::Off));
        assert!(!d.echo.summary);
        let d = dec(json!({"model": "m", "input": "x"})).unwrap();
        assert_eq!(d.chat.think, None);
    }

    #[test]
    fn text_formats() {
        let f = |v: Value| {
            dec(json!({"model": "m", "input": "x", "text": {"format": v}}))
                .unwrap()
                .chat
                .format
        };
        assert_eq!(f(json!({"type": "text"})), None);
        assert_eq!(
            f(json!({"type": "json_object"})),
            Some(ResponseFormat::Json)
        );
        assert_eq!(
            f(json!({"type": "json_schema", "name": "n", "schema": {"type": "object"}})),
            Some(ResponseFormat::Schema(json!({"type": "object"})))
        );
    }

    fn echo(summary: bool) -> Echo {
        let mut d = dec(json!({"model": "gpt-x", "input": "x"})).unwrap();
        d.echo.id = "resp_1".into();
        d.echo.summary = summary;
        d.echo
    }

    #[test]
    fn a_whole_answer_has_reasoning_message_and_calls_in_order() {
        let resp = ChatResponse {
            text: "Checking.".into(),
            thinking: "hmm".into(),
            tool_calls: vec![ToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: json!({"a": 1}),
            }],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: 10,
                output: 4,
                estimated: false,
            },
            ..ChatResponse::default()
        };
        let v = encode_response(&resp, &echo(true));
        assert_eq!(v["object"], "response");
        assert_eq!(v["id"], "resp_1");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["status"], "completed");
        let out = v["output"].as_array().unwrap();
        assert_eq!(out[0]["type"], "reasoning");
        assert_eq!(out[0]["summary"][0]["text"], "hmm");
        assert_eq!(out[1]["type"], "message");
        assert_eq!(out[1]["content"][0]["text"], "Checking.");
        assert_eq!(out[2]["type"], "function_call");
        assert_eq!(out[2]["call_id"], "call_9");
        assert_eq!(out[2]["arguments"], "{\"a\":1}");
        assert!(out[2]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(v["usage"]["total_tokens"], 14);
        // Without a summary asked, thinking stays out.
        let v = encode_response(&resp, &echo(false));
        assert_eq!(v["output"][0]["type"], "message");
    }

    #[test]
    fn a_cut_answer_is_incomplete() {
        let resp = ChatResponse {
            text: "The".into(),
            stop: StopReason::Length,
            ..ChatResponse::default()
        };
        let v = encode_response(&resp, &echo(false));
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn a_text_stream_follows_the_documented_sequence() {
        let mut w = StreamWriter::new(echo(false));
        let evs = run(
            &mut w,
            &[
                StreamEvent::ThinkingDelta("hidden".into()),
                StreamEvent::TextDelta("Hel".into()),
                StreamEvent::TextDelta("lo".into()),
                done(StopReason::Stop),
            ],
        );
        assert_eq!(
            kinds(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (_, v)) in evs.iter().enumerate() {
            assert_eq!(v["sequence_number"], i as u64);
        }
        assert_eq!(evs[0].1["response"]["status"], "in_progress");
        assert_eq!(evs[0].1["response"]["output"], json!([]));
        let item_id = evs[2].1["item"]["id"].clone();
        assert_eq!(evs[4].1["item_id"], item_id);
        assert_eq!(evs[6].1["text"], "Hello");
        let last = &evs[9].1["response"];
        assert_eq!(last["status"], "completed");
        assert_eq!(last["output"][0]["id"], item_id);
        assert_eq!(last["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(last["usage"]["input_tokens"], 7);
        assert!(w.finished());
        assert!(w.push(&StreamEvent::TextDelta("late".into())).is_empty());
        assert!(w.keepalive().is_empty());
    }

    #[test]
    fn reasoning_then_text_then_calls_get_their_own_output_indexes() {
        let call = |n: &str| {
            StreamEvent::ToolCall(ToolCall {
                id: String::new(),
                name: n.into(),
                arguments: json!({"x": n}),
            })
        };
        let mut w = StreamWriter::new(echo(true));
        let evs = run(
            &mut w,
            &[
                StreamEvent::ThinkingDelta("a".into()),
                StreamEvent::ThinkingDelta("b".into()),
                StreamEvent::TextDelta("t".into()),
                call("f"),
                call("g"),
                done(StopReason::ToolUse),
            ],
        );
        let added: Vec<(u64, &str)> = evs
            .iter()
            .filter(|(k, _)| k == "response.output_item.added")
            .map(|(_, v)| {
                (
                    v["output_index"].as_u64().unwrap(),
                    v["item"]["type"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            added,
            [
                (0, "reasoning"),
                (1, "message"),
                (2, "function_call"),
                (3, "function_call")
            ]
        );
        let summary = evs
            .iter()
            .find(|(k, _)| k == "response.reasoning_summary_text.done")
            .unwrap();
        assert_eq!(summary.1["text"], "ab");
        let args = evs
            .iter()
            .find(|(k, _)| k == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(args.1["arguments"], "{\"x\":\"f\"}");
        let last = &evs.last().unwrap().1["response"];
        let out = last["output"].as_array().unwrap();
        assert_eq!(out.len(), 4);
        assert!(out[2]["call_id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(out[2]["status"], "completed");
        // Every item's done event carries the same id as its added event.
        let ids = |kind: &str| -> Vec<Value> {
            evs.iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, v)| v["item"]["id"].clone())
                .collect()
        };
        assert_eq!(
            ids("response.output_item.added"),
            ids("response.output_item.done")
        );
    }

    #[test]
    fn an_empty_answer_still_has_a_message_and_a_cut_one_is_incomplete() {
        let mut w = StreamWriter::new(echo(false));
        let evs = run(&mut w, &[done(StopReason::Length)]);
        let last = evs.last().unwrap();
        assert_eq!(last.0, "response.incomplete");
        assert_eq!(last.1["response"]["output"][0]["type"], "message");
        assert_eq!(
            last.1["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }

    #[test]
    fn a_failure_mid_stream_ends_with_error_and_response_failed() {
        let mut w = StreamWriter::new(echo(false));
        let mut frames = w.push(&StreamEvent::TextDelta("Hi".into()));
        frames.push(w.error(&GatewayError::internal("upstream died")));
        let evs = events(&frames);
        let n = evs.len();
        assert_eq!(evs[n - 2].0, "error");
        assert_eq!(evs[n - 2].1["message"], "upstream died");
        assert_eq!(evs[n - 2].1["error"]["message"], "upstream died");
        assert_eq!(evs[n - 1].0, "response.failed");
        assert_eq!(evs[n - 1].1["response"]["status"], "failed");
        assert_eq!(
            evs[n - 1].1["response"]["error"]["message"],
            "upstream died"
        );
        assert!(!kinds(&evs).contains(&"response.completed"));
        assert!(w.error(&GatewayError::internal("again")).is_empty());
    }

    #[test]
    fn a_failure_before_any_event_still_opens_the_response() {
        let mut w = StreamWriter::new(echo(false));
        let evs = events(&[w.error(&GatewayError::internal("x"))]);
        assert_eq!(
            kinds(&evs),
            [
                "response.created",
                "response.in_progress",
                "error",
                "response.failed"
            ]
        );
    }
}
