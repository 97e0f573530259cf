//! Ollama's Anthropic-compatible `/v1/messages` as the sim serves it (JSON and SSE).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};

use super::engine::{self, Dialect, Framer, Metrics, SimError, Task, gate, parse_body};
use super::script::{GenRequest, Piece, Plan, ToolCall, Turn, call_id};
use super::state::SimState;

type State = web::Data<Arc<SimState>>;

fn block_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b.get("text").and_then(Value::as_str).map(str::to_string),
                Some("tool_result") => Some(block_text(b.get("content"))),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn has_tool_result(content: Option<&Value>) -> bool {
    content
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
}

fn request(body: &Value) -> Result<GenRequest, SimError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SimError::bad_request("model: Field required"))?
        .to_string();
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_i64)
        .ok_or_else(|| SimError::bad_request("max_tokens: Field required"))?;
    let mut turns = Vec::new();
    let system = block_text(body.get("system"));
    if !system.is_empty() {
        turns.push(Turn {
            role: "system".into(),
            content: system,
        });
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| SimError::bad_request("messages: Field required"))?
    {
        // A user turn carrying tool results answers a tool call: the model replies in text.
        let role = if has_tool_result(m.get("content")) {
            "tool"
        } else {
            m["role"].as_str().unwrap_or("user")
        };
        turns.push(Turn {
            role: role.to_string(),
            content: block_text(m.get("content")),
        });
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let think = match body.pointer("/thinking/type").and_then(Value::as_str) {
        Some("enabled") | Some("adaptive") => Some(true),
        _ => Some(false),
    };
    let prompt_bytes = turns.iter().map(|t| t.content.len()).sum::<usize>()
        + tools.iter().map(|t| t.to_string().len()).sum::<usize>();
    Ok(GenRequest {
        model,
        turns,
        tools,
        num_predict: Some(max_tokens),
        think,
        prompt_bytes,
        ..GenRequest::default()
    })
}

fn stop_reason(plan: &Plan, saw_tool: bool) -> &'static str {
    if saw_tool {
        "tool_use"
    } else if plan.done_reason == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn tool_block(call: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
}

/// Anthropic SSE: `event:` lines matching each JSON `type`, one open block at a time.
struct AnthropicFramer {
    id: String,
    model: String,
    input_tokens: u64,
    started: bool,
    open: Open,
    next_index: usize,
    saw_tool: bool,
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl AnthropicFramer {
    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}}),
        ));
        out.push(event("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            let index = self.next_index - 1;
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            self.open = Open::None;
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) -> usize {
        if self.open != kind {
            self.close(out);
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.next_index,
                        "content_block": block}),
            ));
            self.next_index += 1;
            self.open = kind;
        }
        self.next_index - 1
    }

    fn delta(index: usize, delta: Value) -> Bytes {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    fn calls(&mut self, calls: &[ToolCall], out: &mut Vec<Bytes>) {
        for call in calls {
            self.close(out);
            let index = self.next_index;
            self.next_index += 1;
            let block = json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block}),
            ));
            out.push(Self::delta(
                index,
                json!({"type": "input_json_delta", "partial_json": call.arguments.to_string()}),
            ));
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            self.saw_tool = true;
        }
    }
}

impl Framer for AnthropicFramer {
    fn piece(&mut self, piece: &Piece) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        match piece {
            Piece::Thinking(t) => {
                let block = json!({"type": "thinking", "thinking": "", "signature": ""});
                let i = self.open(Open::Thinking, block, &mut out);
                out.push(Self::delta(
                    i,
                    json!({"type": "thinking_delta", "thinking": t}),
                ));
            }
            Piece::Content(t) => {
                let i = self.open(Open::Text, json!({"type": "text", "text": ""}), &mut out);
                out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
            }
            Piece::Calls(calls) => self.calls(calls, &mut out),
            Piece::Garbage => out.push(Bytes::from_static(
                b"event: content_block_delta\ndata: {this is not json\n\n",
            )),
        }
        out
    }

    fn done(&mut self, plan: &Plan, calls: &[ToolCall], _metrics: &Metrics) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.calls(calls, &mut out);
        self.close(&mut out);
        out.push(event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(plan, self.saw_tool), "stop_sequence": null},
                    "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.eval_count}}),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
        out
    }

    fn error(&mut self, message: &str) -> Vec<Bytes> {
        vec![event(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        )]
    }
}

pub async fn messages(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    state.record_body(req.path(), &body);
    let parsed = gate(&state, &req, true).and_then(|()| {
        let body = parse_body(&body)?;
        let gen_req = request(&body)?;
        Ok((body, gen_req))
    });
    let (body, gen_req) = match parsed {
        Ok(ok) => ok,
        Err(e) => return e.render(Dialect::Anthropic),
    };
    let started = match engine::start(&state, &gen_req, Task::Chat).await {
        Ok(s) => s,
        Err(e) => return e.render(Dialect::Anthropic),
    };
    let framer = AnthropicFramer {
        id: call_id("msg_01"),
        model: gen_req.model.clone(),
        input_tokens: started.plan.prompt_tokens,
        started: false,
        open: Open::None,
        next_index: 0,
        saw_tool: false,
    };
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(engine::drive(started, framer));
    }
    engine::finish_unary(started, Dialect::Anthropic, move |plan, _, _| {
        let mut content = Vec::new();
        let thinking = plan.thinking();
        if !thinking.is_empty() {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        let text = plan.text();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        let calls = plan.calls();
        content.extend(calls.iter().map(tool_block));
        json!({
            "id": framer.id, "type": "message", "role": "assistant", "model": framer.model,
            "content": content, "stop_reason": stop_reason(plan, !calls.is_empty()),
            "stop_sequence": null,
            "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.eval_count},
        })
    })
    .await
}
