//! Ollama clients served by upstreams of another kind: decoding `/api/chat`, `/api/generate`
//! and `/api/embed` requests into the canonical request, and writing the whole answer and the
//! NDJSON stream back to them.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{ndjson_bytes, ndjson_line};
use crate::dialect::Dialect;
use crate::dialect::wire::{self, Obj};
use crate::error::GatewayError;
use crate::ir::{
    CallLedger, ChatRequest, ChatResponse, EmbedRequest, EmbedResponse, Image, Message,
    ResponseFormat, Role, StopReason, StreamEvent, Think, ThinkLevel, Tool, Usage, new_call_id,
};

// ---------------------------------------------------------------------------------------------
// Client requests (Ollama clients served by OpenAI/Anthropic upstreams)

/// Decodes a `/api/chat` body.
pub fn decode_chat(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode_chat_object(wire::parse_body(body)?)
}

/// Decodes a `/api/chat` body already parsed into an object.
pub fn decode_chat_object(mut m: Obj) -> Result<ChatRequest, GatewayError> {
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
    decode_generate_object(wire::parse_body(body)?)
}

/// Decodes a `/api/generate` body already parsed into an object.
pub fn decode_generate_object(mut m: Obj) -> Result<ChatRequest, GatewayError> {
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
    decode_embed_object(wire::parse_body(body)?)
}

/// Decodes an `/api/embed` or `/api/embeddings` body already parsed into an object.
pub fn decode_embed_object(mut m: Obj) -> Result<EmbedRequest, GatewayError> {
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
            let mut call = wire::decode_tool_call(c, &wire::index(&cat, j))?;
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
    use crate::dialect::ollama::{
        encode_embed, needs_escape, parse_embed_response, parse_response,
    };
    use crate::ir::ToolCall;

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
    fn decodes_chat_request() {
        let req = decode_chat(include_bytes!(
            "../../../tests/fixtures/ollama/chat_request.json"
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
            "../../../tests/fixtures/ollama/generate_request.json"
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
            "../../../tests/fixtures/ollama/chat_response_tools.json"
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

    #[test]
    fn embed_response_parses_and_reencodes() {
        let r = parse_embed_response(include_bytes!(
            "../../../tests/fixtures/ollama/embed_response.json"
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
}
