//! Ollama's OpenAI-compatible layer as the sim serves it: chat and legacy completions
//! (JSON and SSE), models, embeddings (float or base64).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use base64::Engine as _;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};

use super::catalogue::ModelSpec;
use super::engine::{
    self, Dialect, Framer, Metrics, SimError, Task, gate, json_response, parse_body,
};
use super::ollama::{embed_vectors, inputs};
use super::script::{GenRequest, Piece, Plan, ToolCall, Turn};
use super::state::SimState;

type State = web::Data<Arc<SimState>>;

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn created_of(spec: &ModelSpec) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&spec.modified_at)
        .map(|t| t.timestamp())
        .unwrap_or_else(|_| unix_now())
}

fn model_entry(spec: &ModelSpec) -> Value {
    json!({"id": spec.name, "object": "model", "created": created_of(spec), "owned_by": "library"})
}

pub async fn models(state: State, req: HttpRequest) -> HttpResponse {
    if let Err(e) = gate(&state, &req, false) {
        return e.render(Dialect::OpenAi);
    }
    let data: Vec<Value> = state.catalogue().iter().map(model_entry).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

pub async fn model(state: State, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    if let Err(e) = gate(&state, &req, false) {
        return e.render(Dialect::OpenAi);
    }
    match state.model(&id) {
        Some(spec) => json_response(StatusCode::OK, &model_entry(&spec)),
        None => SimError::new(StatusCode::NOT_FOUND, format!("model \"{id}\" not found"))
            .render(Dialect::OpenAi),
    }
}

/// Text of an OpenAI `content`: a string, or the text parts of an array joined by newlines.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `reasoning_effort` (or `reasoning.effort`) as Ollama's `think`.
fn think_of(body: &Value) -> Option<bool> {
    let effort = body
        .get("reasoning_effort")
        .or_else(|| body.get("reasoning").and_then(|r| r.get("effort")))?
        .as_str()?;
    Some(effort != "none")
}

/// `response_format` as Ollama's `format`: `json_object` → `"json"`, `json_schema` → its schema.
fn response_format(body: &Value) -> Option<Value> {
    let format = body.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!("json")),
        "json_schema" => format.pointer("/json_schema/schema").cloned(),
        _ => None,
    }
}

fn num_predict(body: &Value) -> Option<i64> {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_i64)
}

fn model_of(body: &Value) -> Result<String, SimError> {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| SimError::bad_request("model is required"))
}

fn chat_request(body: &Value) -> Result<GenRequest, SimError> {
    let model = model_of(body)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| SimError::bad_request("invalid message format"))?;
    let turns: Vec<Turn> = messages
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap_or("user") {
                "developer" => "system",
                r => r,
            };
            Turn {
                role: role.to_string(),
                content: content_text(m.get("content")),
            }
        })
        .collect();
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let prompt_bytes = turns.iter().map(|t| t.content.len()).sum::<usize>()
        + tools.iter().map(|t| t.to_string().len()).sum::<usize>();
    Ok(GenRequest {
        model,
        turns,
        tools,
        num_predict: num_predict(body),
        think: think_of(body),
        prompt_bytes,
        format: response_format(body),
        ..GenRequest::default()
    })
}

fn completion_request(body: &Value) -> Result<GenRequest, SimError> {
    let model = model_of(body)?;
    let prompt = match body.get("prompt") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        other => content_text(other),
    };
    Ok(GenRequest {
        model,
        prompt_bytes: prompt.len(),
        turns: vec![Turn {
            role: "user".into(),
            content: prompt,
        }],
        num_predict: num_predict(body),
        think: Some(false),
        ..GenRequest::default()
    })
}

fn finish_reason(plan: &Plan, saw_tool: bool) -> &'static str {
    if saw_tool {
        "tool_calls"
    } else if plan.done_reason == "length" {
        "length"
    } else {
        "stop"
    }
}

fn usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.eval_count,
        "total_tokens": plan.prompt_tokens + plan.eval_count,
    })
}

fn openai_call(call: &ToolCall, index: usize) -> Value {
    json!({
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// SSE frames of Ollama's OpenAI layer, with the SDK's accumulation rules honoured: `role`
/// only in the first delta, tool-call indexes 0, 1, 2... in call order.
struct OpenAiFramer {
    kind: Kind,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    tool_counter: usize,
}

impl OpenAiFramer {
    fn new(kind: Kind, model: &str, include_usage: bool) -> Self {
        let n: u32 = rand::thread_rng().gen_range(100..1_000_000);
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Self {
            kind,
            id: format!("{prefix}-{n}"),
            created: unix_now(),
            model: model.to_string(),
            include_usage,
            role_sent: false,
            tool_counter: 0,
        }
    }

    fn object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }

    fn event(value: &Value) -> Bytes {
        Bytes::from(format!("data: {value}\n\n"))
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id, "object": self.object(), "created": self.created,
            "model": self.model, "system_fingerprint": "fp_ollama", "choices": choices,
        })
    }

    fn delta(&mut self, mut delta: Value) -> Bytes {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        let chunk = self.chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]));
        Self::event(&chunk)
    }

    fn calls_delta(&mut self, calls: &[ToolCall]) -> Bytes {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let v = openai_call(c, self.tool_counter);
                self.tool_counter += 1;
                v
            })
            .collect();
        self.delta(json!({"content": null, "tool_calls": calls}))
    }

    fn text_chunk(&self, text: &str, finish: Option<&str>) -> Bytes {
        let chunk = self.chunk(json!([{"index": 0, "text": text, "finish_reason": finish}]));
        Self::event(&chunk)
    }
}

impl Framer for OpenAiFramer {
    fn piece(&mut self, piece: &Piece) -> Vec<Bytes> {
        if let Piece::Garbage = piece {
            return vec![Bytes::from_static(b"data: {this is not json\n\n")];
        }
        match self.kind {
            Kind::Chat => vec![match piece {
                Piece::Thinking(t) => self.delta(json!({"content": "", "reasoning": t})),
                Piece::Content(t) => self.delta(json!({"content": t})),
                Piece::Calls(calls) => self.calls_delta(calls),
                Piece::Garbage => return Vec::new(),
            }],
            Kind::Completion => match piece {
                Piece::Content(t) => vec![self.text_chunk(t, None)],
                _ => Vec::new(),
            },
        }
    }

    fn done(&mut self, plan: &Plan, calls: &[ToolCall], _metrics: &Metrics) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !calls.is_empty() {
            out.push(self.calls_delta(calls));
        }
        let reason = finish_reason(plan, self.tool_counter > 0);
        match self.kind {
            Kind::Chat => {
                if !self.role_sent {
                    out.push(self.delta(json!({"content": ""})));
                }
                let chunk = self.chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]));
                out.push(Self::event(&chunk));
            }
            Kind::Completion => out.push(self.text_chunk("", Some(reason))),
        }
        if self.include_usage {
            let mut chunk = self.chunk(json!([]));
            chunk["usage"] = usage(plan);
            out.push(Self::event(&chunk));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    fn error(&mut self, message: &str) -> Vec<Bytes> {
        let body = json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}});
        vec![Self::event(&body)]
    }
}

fn sse(
    body: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

pub async fn chat(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    state.record_body(req.path(), &body);
    completion_like(state, req, body, Kind::Chat).await
}

pub async fn completions(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    completion_like(state, req, body, Kind::Completion).await
}

async fn completion_like(state: State, req: HttpRequest, body: Bytes, kind: Kind) -> HttpResponse {
    let parsed = gate(&state, &req, true).and_then(|()| {
        let body = parse_body(&body)?;
        let gen_req = match kind {
            Kind::Chat => chat_request(&body)?,
            Kind::Completion => completion_request(&body)?,
        };
        Ok((body, gen_req))
    });
    let (body, gen_req) = match parsed {
        Ok(ok) => ok,
        Err(e) => return e.render(Dialect::OpenAi),
    };
    let started = match engine::start(&state, &gen_req, Task::Chat).await {
        Ok(s) => s,
        Err(e) => return e.render(Dialect::OpenAi),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let framer = OpenAiFramer::new(kind, &gen_req.model, include_usage);
    if stream {
        return sse(engine::drive(started, framer));
    }
    engine::finish_unary(started, Dialect::OpenAi, move |plan, _, _| {
        let calls = plan.calls();
        let reason = finish_reason(plan, !calls.is_empty());
        let choice = match kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": plan.text()});
                let thinking = plan.thinking();
                if !thinking.is_empty() {
                    message["reasoning"] = json!(thinking);
                }
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| openai_call(c, i))
                        .collect();
                    message["tool_calls"] = json!(calls);
                }
                json!({"index": 0, "message": message, "finish_reason": reason})
            }
            Kind::Completion => json!({"index": 0, "text": plan.text(), "finish_reason": reason}),
        };
        let object = match kind {
            Kind::Chat => "chat.completion",
            Kind::Completion => "text_completion",
        };
        json!({
            "id": framer.id, "object": object, "created": framer.created,
            "model": framer.model, "system_fingerprint": "fp_ollama",
            "choices": [choice], "usage": usage(plan),
        })
    })
    .await
}

pub async fn embeddings(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = async {
        gate(&state, &req, true)?;
        let body = parse_body(&body)?;
        let model = model_of(&body)?;
        let texts = inputs(body.get("input"))?;
        if texts.is_empty() {
            return Err(SimError::bad_request("invalid input"));
        }
        let dims = body
            .get("dimensions")
            .and_then(Value::as_u64)
            .map(|d| d as usize);
        let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let (vectors, mut started) = embed_vectors(&state, &model, &texts, None, dims).await?;
        started.guard.finish();
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "embedding": embedding, "index": i})
            })
            .collect();
        let tokens = started.plan.prompt_tokens;
        Ok(json!({
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
    }
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.render(Dialect::OpenAi),
    }
}
