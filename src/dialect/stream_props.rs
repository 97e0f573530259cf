//! Property tests of the stream translators: any Ollama frame sequence yields well-formed
//! Anthropic and OpenAI streams, and tool arguments survive round trips through each dialect.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::sse::SseParser;
use super::{anthropic, ollama, openai};
use crate::error::{ErrorKind, GatewayError};
use crate::ir::StreamEvent;

/// One generated upstream frame.
#[derive(Debug, Clone)]
struct Frame {
    thinking: Option<String>,
    content: Option<String>,
    calls: Vec<(Option<String>, String, Value)>,
}

#[derive(Debug, Clone)]
struct Script {
    frames: Vec<Frame>,
    /// The payload of the `done:true` frame (tool calls may ride on it).
    last: Frame,
    length: bool,
    /// Replace the done frame by an error line after this many frames.
    error_at: Option<usize>,
}

fn text() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-zé \"\\\\\n\u{2028}\u{2029}\u{85}]{1,8}").expect("regex")
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1000i32..1000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        text().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arguments() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn call() -> impl Strategy<Value = (Option<String>, String, Value)> {
    (
        prop::option::of("call_[a-z0-9]{8}"),
        "[a-z_]{1,10}",
        arguments(),
    )
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(call(), 0..3),
    )
        .prop_map(|(thinking, content, calls)| Frame {
            thinking,
            content,
            calls,
        })
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(frame(), 0..8),
        frame(),
        any::<bool>(),
        prop::option::of(0usize..10),
    )
        .prop_map(|(frames, last, length, error_at)| Script {
            error_at: error_at.map(|e| e.min(frames.len())),
            frames,
            last,
            length,
        })
}

fn frame_json(f: &Frame, done: Option<bool>) -> Value {
    let mut msg = json!({"role": "assistant", "content": f.content.clone().unwrap_or_default()});
    if let Some(t) = &f.thinking {
        msg["thinking"] = t.clone().into();
    }
    if !f.calls.is_empty() {
        let calls: Vec<Value> = f
            .calls
            .iter()
            .map(|(id, name, args)| {
                let mut c = json!({"function": {"index": 0, "name": name, "arguments": args}});
                if let Some(id) = id {
                    c["id"] = id.clone().into();
                }
                c
            })
            .collect();
        msg["tool_calls"] = calls.into();
    }
    let mut v = json!({"model": "m", "created_at": "2026-11-23T06:00:00Z", "message": msg,
                       "done": done.is_some()});
    if let Some(length) = done {
        v["done_reason"] = if length { "length" } else { "stop" }.into();
        v["prompt_eval_count"] = 11.into();
        v["eval_count"] = 7.into();
    }
    v
}

/// The NDJSON lines an Ollama upstream would send for `s`.
fn lines(s: &Script) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, f) in s.frames.iter().enumerate() {
        if s.error_at == Some(i) {
            out.push(br#"{"error":"runner exited"}"#.to_vec());
            return out;
        }
        out.push(serde_json::to_vec(&frame_json(f, None)).unwrap_or_default());
    }
    if s.error_at.is_some() {
        out.push(br#"{"error":"runner exited"}"#.to_vec());
    } else {
        out.push(serde_json::to_vec(&frame_json(&s.last, Some(s.length))).unwrap_or_default());
    }
    out
}

/// What the client should end up with: text, thinking, calls (name, args), error?
struct Expect {
    text: String,
    calls: Vec<(String, Value)>,
    error: bool,
    length: bool,
}

fn expect(s: &Script) -> Expect {
    let upto = s.error_at.unwrap_or(s.frames.len());
    let mut frames: Vec<&Frame> = s.frames[..upto].iter().collect();
    if s.error_at.is_none() {
        frames.push(&s.last);
    }
    Expect {
        text: frames.iter().filter_map(|f| f.content.as_deref()).collect(),
        calls: frames
            .iter()
            .flat_map(|f| f.calls.iter().map(|c| (c.1.clone(), c.2.clone())))
            .collect(),
        error: s.error_at.is_some(),
        length: s.length,
    }
}

/// Drives a writer with the parsed Ollama lines, the way the proxy will.
fn translate(
    s: &Script,
    mut push: impl FnMut(&StreamEvent) -> Vec<Bytes>,
    mut error: impl FnMut(&GatewayError) -> Bytes,
) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines(s) {
        match ollama::parse_frame(&line) {
            Ok(evs) => {
                for ev in &evs {
                    for b in push(ev) {
                        out.extend_from_slice(&b);
                    }
                }
            }
            Err(e) => {
                out.extend_from_slice(&error(&e));
                break;
            }
        }
    }
    out
}

fn sse_frames(bytes: &[u8]) -> Vec<(Option<String>, String)> {
    let mut p = SseParser::default();
    let mut f: Vec<_> = p
        .feed(bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.event, f.data))
        .collect();
    if let Ok(Some(last)) = p.finish() {
        f.push((last.event, last.data));
    }
    f
}

/// Checks every Anthropic stream rule of docs/PROTOCOLS.md §3.4 and §5.8.
fn check_anthropic(bytes: &[u8], want: &Expect) -> Result<(), TestCaseError> {
    let frames = sse_frames(bytes);
    prop_assert!(!frames.is_empty());
    let mut open: Option<(u64, String)> = None;
    let mut next = 0u64;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut tool_json: Option<(String, String)> = None;
    let mut saw_delta = false;
    for (i, (event, data)) in frames.iter().enumerate() {
        let v: Value =
            serde_json::from_str(data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let name = event.as_deref().unwrap_or_default();
        prop_assert_eq!(v["type"].as_str(), Some(name), "event name equals type");
        if i == 0 {
            prop_assert!(name == "message_start" || (want.error && name == "error"));
        } else {
            prop_assert!(name != "message_start");
        }
        match name {
            "content_block_start" => {
                prop_assert!(open.is_none(), "one block open at a time");
                prop_assert_eq!(v["index"].as_u64(), Some(next));
                let kind = v["content_block"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                match kind.as_str() {
                    "text" => prop_assert_eq!(&v["content_block"]["text"], ""),
                    "thinking" => prop_assert_eq!(&v["content_block"]["signature"], ""),
                    "tool_use" => {
                        prop_assert_eq!(&v["content_block"]["input"], &json!({}));
                        prop_assert!(
                            !v["content_block"]["id"]
                                .as_str()
                                .unwrap_or_default()
                                .is_empty()
                        );
                        let name = v["content_block"]["name"].as_str().unwrap_or_default();
                        tool_json = Some((name.to_string(), String::new()));
                    }
                    other => prop_assert!(false, "unexpected block {}", other),
                }
                open = Some((next, kind));
                next += 1;
            }
            "content_block_delta" => {
                let (idx, kind) = open
                    .clone()
                    .ok_or_else(|| TestCaseError::fail("delta outside a block"))?;
                prop_assert_eq!(v["index"].as_u64(), Some(idx));
                let dt = v["delta"]["type"].as_str().unwrap_or_default();
                let ok = matches!(
                    (kind.as_str(), dt),
                    ("text", "text_delta")
                        | ("thinking", "thinking_delta" | "signature_delta")
                        | ("tool_use", "input_json_delta")
                );
                prop_assert!(ok, "{} delta in a {} block", dt, kind);
                if dt == "text_delta" {
                    text.push_str(v["delta"]["text"].as_str().unwrap_or_default());
                }
                if let (Some((_, buf)), Some(p)) =
                    (tool_json.as_mut(), v["delta"]["partial_json"].as_str())
                {
                    buf.push_str(p);
                }
            }
            "content_block_stop" => {
                let (idx, _) = open
                    .take()
                    .ok_or_else(|| TestCaseError::fail("stop without start"))?;
                prop_assert_eq!(v["index"].as_u64(), Some(idx));
                if let Some((name, buf)) = tool_json.take() {
                    let args: Value = serde_json::from_str(&buf)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    calls.push((name, args));
                }
            }
            "message_delta" => {
                prop_assert!(open.is_none() && !saw_delta);
                prop_assert!(!want.error);
                saw_delta = true;
                let reason = match (want.length, want.calls.is_empty()) {
                    (true, _) => "max_tokens",
                    (false, false) => "tool_use",
                    (false, true) => "end_turn",
                };
                prop_assert_eq!(v["delta"]["stop_reason"].as_str(), Some(reason));
                prop_assert!(v["usage"]["output_tokens"].is_u64());
            }
            "message_start" => {
                prop_assert_eq!(&v["message"]["content"], &json!([]));
                prop_assert_eq!(&v["message"]["id"], "msg_p");
            }
            "message_stop" => {
                prop_assert!(saw_delta);
                prop_assert_eq!(i, frames.len() - 1, "message_stop is last");
            }
            "error" => {
                prop_assert!(want.error);
                prop_assert_eq!(i, frames.len() - 1, "nothing after error");
            }
            other => prop_assert!(false, "unexpected event {}", other),
        }
    }
    let last = frames.last().and_then(|f| f.0.clone()).unwrap_or_default();
    prop_assert_eq!(last, if want.error { "error" } else { "message_stop" });
    if !want.error {
        prop_assert_eq!(&text, &want.text);
        prop_assert_eq!(&calls, &want.calls);
    }
    Ok(())
}

/// Checks every OpenAI chunk rule of docs/PROTOCOLS.md §2.4 and §5.8.
fn check_openai(bytes: &[u8], want: &Expect) -> Result<(), TestCaseError> {
    let raw = std::str::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(!raw.contains("event:"), "no event lines");
    let frames = sse_frames(bytes);
    let mut text = String::new();
    let mut calls: Vec<(String, Value)> = Vec::new();
    let mut finished = false;
    for (i, (event, data)) in frames.iter().enumerate() {
        prop_assert!(event.is_none());
        let last = i == frames.len() - 1;
        if data == "[DONE]" {
            prop_assert!(last && finished && !want.error);
            continue;
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if v.get("error").is_some() {
            prop_assert!(last && want.error);
            continue;
        }
        prop_assert_eq!(&v["id"], "chatcmpl-p");
        prop_assert_eq!(&v["created"], 42);
        let choices = v["choices"].as_array().cloned().unwrap_or_default();
        if choices.is_empty() {
            prop_assert!(
                finished && v["usage"]["total_tokens"].is_u64(),
                "usage chunk after finish"
            );
            continue;
        }
        prop_assert!(
            !finished,
            "nothing but usage and [DONE] after the finish chunk"
        );
        let c = &choices[0];
        prop_assert_eq!(
            c["delta"].get("role").is_some(),
            i == 0,
            "role only in the first delta"
        );
        if let Some(t) = c["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for tc in c["delta"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            prop_assert_eq!(
                tc["index"].as_u64(),
                Some(calls.len() as u64),
                "indexes from 0, no gaps"
            );
            prop_assert!(tc["id"].as_str().is_some_and(|s| s.starts_with("call_")));
            prop_assert_eq!(&tc["type"], "function");
            let args: Value =
                serde_json::from_str(tc["function"]["arguments"].as_str().unwrap_or_default())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            calls.push((
                tc["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                args,
            ));
        }
        if !c["finish_reason"].is_null() {
            prop_assert_eq!(c["delta"].as_object().map(|d| d.len()), Some(0));
            let reason = match (want.length, want.calls.is_empty()) {
                (true, _) => "length",
                (false, false) => "tool_calls",
                (false, true) => "stop",
            };
            prop_assert_eq!(c["finish_reason"].as_str(), Some(reason));
            finished = true;
        }
    }
    if want.error {
        prop_assert!(!raw.contains("[DONE]") && !finished);
    } else {
        prop_assert!(raw.ends_with("data: [DONE]\n\n"));
        prop_assert_eq!(&text, &want.text);
        prop_assert_eq!(&calls, &want.calls);
    }
    Ok(())
}

/// An Ollama client stream read back: text, calls (name, args), error line seen.
type OllamaSeen = (String, Vec<(String, Value)>, bool);

fn read_ollama(bytes: &[u8]) -> Result<OllamaSeen, TestCaseError> {
    prop_assert!(!ollama::needs_escape(bytes), "U+2028/2029/0085 escaped");
    prop_assert!(bytes.is_empty() || bytes.ends_with(b"\n"));
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut error = false;
    let mut done = false;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        prop_assert!(!done && !error, "nothing after done or error");
        let v: Value =
            serde_json::from_slice(line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if v.get("error").is_some() {
            error = true;
            continue;
        }
        text.push_str(v["message"]["content"].as_str().unwrap_or_default());
        for c in v["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            prop_assert!(c["function"]["arguments"].is_object());
            calls.push((
                c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c["function"]["arguments"].clone(),
            ));
        }
        done = v["done"] == true;
    }
    prop_assert!(done || error);
    Ok((text, calls, error))
}

/// Feeds `bytes` to an SSE parser in pieces cut at `cuts`.
fn split_frames(bytes: &[u8], cuts: &[usize]) -> Vec<(Option<String>, String)> {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut last = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        out.extend(
            p.feed(&bytes[last..c])
                .unwrap_or_default()
                .into_iter()
                .map(|f| (f.event, f.data)),
        );
        last = c;
    }
    if let Ok(Some(f)) = p.finish() {
        out.push((f.event, f.data));
    }
    out
}

/// Re-reads a client stream as an upstream one and writes it out as Ollama NDJSON.
fn back_to_ollama(
    frames: Vec<(Option<String>, String)>,
    mut parse: impl FnMut(Option<&str>, &str) -> Result<Vec<StreamEvent>, GatewayError>,
    finish: impl FnOnce() -> Result<Vec<StreamEvent>, GatewayError>,
) -> Vec<u8> {
    let mut w = ollama::StreamWriter::new("m", true);
    let mut out = Vec::new();
    let mut res: Result<(), GatewayError> = Ok(());
    for (event, data) in &frames {
        match parse(event.as_deref(), data) {
            Ok(evs) => evs
                .iter()
                .flat_map(|e| w.push(e))
                .for_each(|b| out.extend_from_slice(&b)),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    if res.is_ok() {
        match finish() {
            Ok(evs) => evs
                .iter()
                .flat_map(|e| w.push(e))
                .for_each(|b| out.extend_from_slice(&b)),
            Err(e) => res = Err(e),
        }
    }
    if let Err(e) = res {
        out.extend_from_slice(&w.error(&e));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn ollama_to_anthropic_is_well_formed(s in script()) {
        let w = std::cell::RefCell::new(anthropic::StreamWriter::new("msg_p", "claude-x", 9));
        let bytes = translate(&s, |e| w.borrow_mut().push(e), |e| w.borrow_mut().error(e));
        prop_assert!(w.borrow().finished());
        check_anthropic(&bytes, &expect(&s))?;
    }

    #[test]
    fn ollama_to_openai_is_well_formed(s in script(), usage in any::<bool>()) {
        let w = std::cell::RefCell::new(openai::StreamWriter::new("chatcmpl-p", 42, "gpt-x", usage));
        let bytes = translate(&s, |e| w.borrow_mut().push(e), |e| w.borrow_mut().error(e));
        prop_assert!(w.borrow().finished());
        check_openai(&bytes, &expect(&s))?;
        if usage && !expect(&s).error {
            prop_assert!(String::from_utf8_lossy(&bytes).contains("\"choices\":[],\"usage\""));
        }
    }

    #[test]
    fn round_trip_through_openai(s in script(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let w = std::cell::RefCell::new(openai::StreamWriter::new("chatcmpl-p", 42, "gpt-x", true));
        let sse = translate(&s, |e| w.borrow_mut().push(e), |e| w.borrow_mut().error(e));
        let parser = std::cell::RefCell::new(openai::StreamParser::new());
        let back = back_to_ollama(
            split_frames(&sse, &cuts),
            |_, d| parser.borrow_mut().push(d),
            || parser.borrow_mut().finish(),
        );
        let (text, calls, error) = read_ollama(&back)?;
        let want = expect(&s);
        prop_assert_eq!(error, want.error);
        if !want.error {
            prop_assert_eq!(text, want.text);
            prop_assert_eq!(calls, want.calls);
        }
    }

    #[test]
    fn round_trip_through_anthropic(s in script(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let w = std::cell::RefCell::new(anthropic::StreamWriter::new("msg_p", "claude-x", 9));
        let sse = translate(&s, |e| w.borrow_mut().push(e), |e| w.borrow_mut().error(e));
        let parser = std::cell::RefCell::new(anthropic::StreamParser::new());
        let back = back_to_ollama(
            split_frames(&sse, &cuts),
            |e, d| parser.borrow_mut().push(e, d),
            || parser.borrow_mut().finish(),
        );
        let (text, calls, error) = read_ollama(&back)?;
        let want = expect(&s);
        prop_assert_eq!(error, want.error);
        if !want.error {
            prop_assert_eq!(text, want.text);
            prop_assert_eq!(calls, want.calls);
        }
    }
}

#[test]
fn upstream_error_kinds_survive_into_anthropic_frames() {
    let mut w = anthropic::StreamWriter::new("msg", "m", 1);
    let f = w.error(&GatewayError::new(ErrorKind::NoCapacity, "busy"));
    assert!(String::from_utf8_lossy(&f).contains("overloaded_error"));
}
