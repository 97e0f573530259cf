//! Ollama's native API as the sim serves it: discovery, chat, generate, embeddings, management.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::catalogue::{ModelSpec, canonical, default_catalogue};
use super::engine::{
    self, Dialect, Framer, Metrics, SimError, Started, Task, gate, json_response, now_rfc3339,
    parse_body,
};
use super::script::{self, GenRequest, Piece, Plan, ToolCall, Turn};
use super::state::{KeepAlive, LoadError, SimState};
use crate::dialect::ollama::ndjson_line;

type State = web::Data<Arc<SimState>>;

/// Ollama's version string; clients and the gateway's health poll read it.
pub const VERSION: &str = "0.12.6";

pub async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Ollama is running")
}

pub async fn version() -> HttpResponse {
    json_response(StatusCode::OK, &json!({"version": VERSION}))
}

/// Like ollama.com, the model list needs no key.
pub async fn tags(state: State) -> HttpResponse {
    let models: Vec<Value> = state.catalogue().iter().map(ModelSpec::tag_entry).collect();
    json_response(StatusCode::OK, &json!({"models": models}))
}

pub async fn ps(state: State, req: HttpRequest) -> HttpResponse {
    if let Err(e) = gate(&state, &req, false) {
        return e.render(Dialect::Ollama);
    }
    json_response(StatusCode::OK, &json!({"models": state.ps_entries()}))
}

pub async fn show(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = (|| {
        gate(&state, &req, false)?;
        let body = parse_body(&body)?;
        let name = model_field(&body)?;
        let spec = state.model(&name).ok_or_else(|| {
            SimError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found"))
        })?;
        Ok::<_, SimError>(spec.show())
    })();
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// `model`, or the older `name`, of a request body.
fn model_field(body: &Value) -> Result<String, SimError> {
    body.get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| SimError::bad_request("model is required"))
}

fn options(body: &Value) -> (Option<i64>, Option<u64>) {
    let opts = body.get("options");
    let num_predict = opts
        .and_then(|o| o.get("num_predict"))
        .and_then(Value::as_i64);
    let num_ctx = opts.and_then(|o| o.get("num_ctx")).and_then(Value::as_u64);
    (num_predict, num_ctx)
}

/// Ollama's `format`: `"json"` or a schema object; anything else (`""`, null) means none.
fn format_of(value: Option<&Value>) -> Option<Value> {
    match value? {
        Value::String(s) if s == "json" => Some(Value::String(s.clone())),
        v @ Value::Object(_) => Some(v.clone()),
        _ => None,
    }
}

fn stream_flag(body: &Value) -> bool {
    // `stream` is a pointer in Ollama's Go types: absent means true.
    body.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

fn chat_request(body: &Value) -> Result<GenRequest, SimError> {
    let model = model_field(body)?;
    let mut turns = Vec::new();
    let mut bytes = 0;
    if let Some(messages) = body.get("messages") {
        let messages = messages.as_array().ok_or_else(|| {
            SimError::bad_request("json: cannot unmarshal messages into Go struct field")
        })?;
        for m in messages {
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(SimError::bad_request(
                        "json: cannot unmarshal array into Go struct field Message.messages.content of type string",
                    ));
                }
            };
            bytes += content.len();
            turns.push(Turn {
                role: m["role"].as_str().unwrap_or("user").to_lowercase(),
                content,
            });
        }
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    bytes += tools.iter().map(|t| t.to_string().len()).sum::<usize>();
    let (num_predict, num_ctx) = options(body);
    Ok(GenRequest {
        model,
        turns,
        tools,
        num_predict,
        num_ctx,
        think: script::parse_think(body.get("think")),
        keep_alive: body.get("keep_alive").cloned(),
        prompt_bytes: bytes,
        format: format_of(body.get("format")),
    })
}

fn generate_request(body: &Value) -> Result<GenRequest, SimError> {
    let model = model_field(body)?;
    let mut turns = Vec::new();
    for (role, field) in [("system", "system"), ("user", "prompt")] {
        if let Some(text) = body.get(field).and_then(Value::as_str) {
            turns.push(Turn {
                role: role.into(),
                content: text.to_string(),
            });
        }
    }
    let (num_predict, num_ctx) = options(body);
    Ok(GenRequest {
        model,
        prompt_bytes: turns.iter().map(|t| t.content.len()).sum(),
        turns,
        tools: Vec::new(),
        num_predict,
        num_ctx,
        think: script::parse_think(body.get("think")),
        keep_alive: body.get("keep_alive").cloned(),
        format: format_of(body.get("format")),
    })
}

/// Which of Ollama's two generation endpoints a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Generate,
}

/// Frames for `/api/chat` and `/api/generate`.
pub struct OllamaFramer {
    model: String,
    endpoint: Endpoint,
}

impl OllamaFramer {
    fn frame(&self, text: &str, thinking: Option<&str>, calls: &[ToolCall]) -> Map<String, Value> {
        let mut obj = Map::new();
        obj.insert("model".into(), json!(self.model));
        obj.insert("created_at".into(), json!(now_rfc3339()));
        match self.endpoint {
            Endpoint::Chat => {
                let mut message = Map::new();
                message.insert("role".into(), json!("assistant"));
                message.insert("content".into(), json!(text));
                if let Some(t) = thinking {
                    message.insert("thinking".into(), json!(t));
                }
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls.iter().map(ToolCall::ollama).collect();
                    message.insert("tool_calls".into(), json!(calls));
                }
                obj.insert("message".into(), Value::Object(message));
            }
            Endpoint::Generate => {
                obj.insert("response".into(), json!(text));
                if let Some(t) = thinking {
                    obj.insert("thinking".into(), json!(t));
                }
            }
        }
        obj
    }

    /// The last object of an answer: `done:true`, the reason and the metrics.
    fn final_object(
        &self,
        plan: &Plan,
        text: &str,
        thinking: Option<&str>,
        calls: &[ToolCall],
        metrics: &Metrics,
    ) -> Value {
        let mut obj = self.frame(text, thinking, calls);
        obj.insert("done".into(), json!(true));
        obj.insert("done_reason".into(), json!(plan.done_reason));
        if self.endpoint == Endpoint::Generate {
            let n = (plan.prompt_tokens + plan.eval_count).min(16);
            obj.insert("context".into(), json!((1..=n).collect::<Vec<u64>>()));
        }
        metrics.write_into(&mut obj);
        Value::Object(obj)
    }
}

impl Framer for OllamaFramer {
    fn piece(&mut self, piece: &Piece) -> Vec<Bytes> {
        let mut obj = match piece {
            Piece::Thinking(t) => self.frame("", Some(t), &[]),
            Piece::Content(t) => self.frame(t, None, &[]),
            Piece::Calls(calls) => self.frame("", None, calls),
            Piece::Garbage => return vec![Bytes::from_static(b"this is not json\n")],
        };
        obj.insert("done".into(), json!(false));
        vec![ndjson_line(&Value::Object(obj))]
    }

    fn done(&mut self, plan: &Plan, calls: &[ToolCall], metrics: &Metrics) -> Vec<Bytes> {
        vec![ndjson_line(
            &self.final_object(plan, "", None, calls, metrics),
        )]
    }

    fn error(&mut self, message: &str) -> Vec<Bytes> {
        vec![ndjson_line(&json!({"error": message}))]
    }
}

pub async fn chat(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    state.record_body(req.path(), &body);
    generation(state, req, body, Endpoint::Chat).await
}

pub async fn generate(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    generation(state, req, body, Endpoint::Generate).await
}

async fn generation(
    state: State,
    req: HttpRequest,
    body: Bytes,
    endpoint: Endpoint,
) -> HttpResponse {
    let parsed = gate(&state, &req, true).and_then(|()| {
        let body = parse_body(&body)?;
        let gen_req = match endpoint {
            Endpoint::Chat => chat_request(&body)?,
            Endpoint::Generate => generate_request(&body)?,
        };
        Ok((body, gen_req))
    });
    let (body, gen_req) = match parsed {
        Ok(ok) => ok,
        Err(e) => return e.render(Dialect::Ollama),
    };
    if gen_req.is_empty() && gen_req.tools.is_empty() {
        return load_only(&state, &gen_req, endpoint).await;
    }
    let task = match endpoint {
        Endpoint::Chat => Task::Chat,
        Endpoint::Generate => Task::Generate,
    };
    let started = match engine::start(&state, &gen_req, task).await {
        Ok(s) => s,
        Err(e) => return e.render(Dialect::Ollama),
    };
    let framer = OllamaFramer {
        model: gen_req.model.clone(),
        endpoint,
    };
    if stream_flag(&body) {
        HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .streaming(engine::drive(started, framer))
    } else {
        unary(started, framer).await
    }
}

async fn unary(started: Started, framer: OllamaFramer) -> HttpResponse {
    engine::finish_unary(started, Dialect::Ollama, move |plan, _, metrics| {
        let thinking = plan.thinking();
        let thinking = (!thinking.is_empty()).then_some(thinking);
        framer.final_object(
            plan,
            &plan.text(),
            thinking.as_deref(),
            &plan.calls(),
            metrics,
        )
    })
    .await
}

/// An empty prompt loads the model (or, with `keep_alive: 0`, unloads it) and answers at once.
async fn load_only(state: &Arc<SimState>, req: &GenRequest, endpoint: Endpoint) -> HttpResponse {
    let start = Instant::now();
    let result = async {
        let spec = state
            .model(&req.model)
            .ok_or_else(|| SimError::not_found(&req.model))?;
        let keep_alive =
            KeepAlive::parse(req.keep_alive.as_ref()).map_err(SimError::bad_request)?;
        if keep_alive == KeepAlive::For(Duration::ZERO) {
            state.unload(&spec.name);
            return Ok("unload");
        }
        let (model_use, ready_at) =
            state
                .acquire(&req.model, keep_alive, req.num_ctx)
                .map_err(|e| match e {
                    LoadError::NotFound => SimError::not_found(&req.model),
                    LoadError::OutOfMemory { need, available } => SimError::oom(need, available),
                })?;
        tokio::time::sleep_until(ready_at.into()).await;
        drop(model_use);
        Ok::<_, SimError>("load")
    }
    .await;
    let reason = match result {
        Ok(r) => r,
        Err(e) => return e.render(Dialect::Ollama),
    };
    let framer = OllamaFramer {
        model: req.model.clone(),
        endpoint,
    };
    let mut obj = framer.frame("", None, &[]);
    obj.insert("done".into(), json!(true));
    obj.insert("done_reason".into(), json!(reason));
    if reason == "load" {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if ns > 0 {
            obj.insert("total_duration".into(), json!(ns));
            obj.insert("load_duration".into(), json!(ns));
        }
    }
    json_response(StatusCode::OK, &Value::Object(obj))
}

/// The texts of an embed request's `input` (a string or an array of strings).
pub fn inputs(value: Option<&Value>) -> Result<Vec<String>, SimError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                // Token arrays (OpenAI allows them) embed as their text form.
                Value::Array(_) | Value::Number(_) => Ok(v.to_string()),
                _ => Err(SimError::bad_request("invalid input type")),
            })
            .collect(),
        Some(_) => Err(SimError::bad_request("invalid input type")),
    }
}

/// Runs the shared pre-first-byte path for an embedding request and returns the vectors.
pub async fn embed_vectors(
    state: &Arc<SimState>,
    model: &str,
    texts: &[String],
    keep_alive: Option<Value>,
    dimensions: Option<usize>,
) -> Result<(Vec<Vec<f32>>, Started), SimError> {
    let req = GenRequest {
        model: model.to_string(),
        turns: texts
            .iter()
            .map(|t| Turn {
                role: "user".into(),
                content: t.clone(),
            })
            .collect(),
        keep_alive,
        prompt_bytes: texts.iter().map(String::len).sum(),
        ..GenRequest::default()
    };
    let started = engine::start(state, &req, Task::Embed).await?;
    let dim = started.spec.embedding_length as usize;
    let dim = dimensions.filter(|d| *d > 0 && *d < dim).unwrap_or(dim);
    let vectors = texts
        .iter()
        .map(|t| script::embedding(&started.spec.name, t, dim))
        .collect();
    Ok((vectors, started))
}

pub async fn embed(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = async {
        gate(&state, &req, true)?;
        let body = parse_body(&body)?;
        let model = model_field(&body)?;
        let texts = inputs(body.get("input"))?;
        let dims = body
            .get("dimensions")
            .and_then(Value::as_u64)
            .map(|d| d as usize);
        let (vectors, mut started) = embed_vectors(
            &state,
            &model,
            &texts,
            body.get("keep_alive").cloned(),
            dims,
        )
        .await?;
        started.guard.finish();
        let metrics = Metrics::new(&started.plan, &started.timing);
        let mut obj = Map::new();
        obj.insert("model".into(), json!(model));
        obj.insert("embeddings".into(), json!(vectors));
        if metrics.total_duration > 0 {
            obj.insert("total_duration".into(), json!(metrics.total_duration));
        }
        if metrics.load_duration > 0 {
            obj.insert("load_duration".into(), json!(metrics.load_duration));
        }
        obj.insert(
            "prompt_eval_count".into(),
            json!(started.plan.prompt_tokens),
        );
        Ok::<_, SimError>(Value::Object(obj))
    }
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// The legacy single-vector endpoint.
pub async fn embeddings(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = async {
        gate(&state, &req, true)?;
        let body = parse_body(&body)?;
        let model = model_field(&body)?;
        let prompt = body["prompt"].as_str().unwrap_or("").to_string();
        if prompt.is_empty() {
            return Ok(json!({"embedding": []}));
        }
        let (vectors, mut started) = embed_vectors(
            &state,
            &model,
            std::slice::from_ref(&prompt),
            body.get("keep_alive").cloned(),
            None,
        )
        .await?;
        started.guard.finish();
        Ok::<_, SimError>(json!({"embedding": vectors.into_iter().next().unwrap_or_default()}))
    }
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// Progress like Ollama's puller, then the model joins the catalogue.
pub async fn pull(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let parsed = gate(&state, &req, false)
        .and_then(|()| parse_body(&body))
        .and_then(|b| Ok((model_field(&b)?, stream_flag(&b))));
    let (name, stream) = match parsed {
        Ok(ok) => ok,
        Err(e) => return e.render(Dialect::Ollama),
    };
    let spec = default_catalogue()
        .into_iter()
        .find(|m| m.name == canonical(&name))
        .or_else(|| state.model(&name))
        .unwrap_or_else(|| ModelSpec::custom(&name, 4 << 30));
    if !stream {
        state.add_model(spec);
        return json_response(StatusCode::OK, &json!({"status": "success"}));
    }
    let state = Arc::clone(&state);
    let body = async_stream::stream! {
        let digest = format!("sha256:{}", spec.digest());
        let short = &spec.digest()[..12];
        yield Ok::<_, actix_web::Error>(ndjson_line(&json!({"status": "pulling manifest"})));
        for step in 0..=4u64 {
            let completed = spec.size / 4 * step;
            let completed = if step == 4 { spec.size } else { completed };
            let mut frame = json!({"status": format!("pulling {short}"), "digest": digest,
                                   "total": spec.size});
            if completed > 0 {
                frame["completed"] = json!(completed);
            }
            yield Ok(ndjson_line(&frame));
        }
        yield Ok(ndjson_line(&json!({"status": "verifying sha256 digest"})));
        yield Ok(ndjson_line(&json!({"status": "writing manifest"})));
        state.add_model(spec.clone());
        yield Ok(ndjson_line(&json!({"status": "success"})));
    };
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body)
}

pub async fn delete(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = gate(&state, &req, false)
        .and_then(|()| parse_body(&body))
        .and_then(|b| model_field(&b))
        .and_then(|name| {
            if state.remove_model(&name) {
                Ok(())
            } else {
                Err(SimError::new(
                    StatusCode::NOT_FOUND,
                    format!("model '{name}' not found"),
                ))
            }
        });
    match result {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(e) => e.render(Dialect::Ollama),
    }
}

pub async fn copy(state: State, req: HttpRequest, body: Bytes) -> HttpResponse {
    let result = gate(&state, &req, false)
        .and_then(|()| parse_body(&body))
        .and_then(|b| {
            let field = |k: &str| {
                b.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| SimError::bad_request("source and destination are required"))
            };
            let (source, destination) = (field("source")?, field("destination")?);
            let spec = state.model(&source).ok_or_else(|| {
                SimError::new(StatusCode::NOT_FOUND, format!("model '{source}' not found"))
            })?;
            state.add_model(ModelSpec {
                name: canonical(&destination),
                ..spec
            });
            Ok(())
        });
    match result {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(e) => e.render(Dialect::Ollama),
    }
}
