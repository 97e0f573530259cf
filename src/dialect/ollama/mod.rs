//! The Ollama dialect, in two halves that meet only in the canonical IR (`ir.rs`): `inbound`
//! serves Ollama clients (their request in, the answer and the NDJSON stream out), `outbound`
//! talks to Ollama upstreams (the call out, their answer and NDJSON frames in). What stays here
//! is shared by both and by the native path, where an Ollama client's bytes go to an Ollama
//! upstream as they are: NDJSON line escaping, turning reasoning off in a native body, and
//! stripping reasoning from a native frame.

mod inbound;
mod outbound;

pub(crate) use inbound::decode_tools;
pub use inbound::{
    StreamWriter, decode_chat, decode_embed, decode_generate, encode_embed_response,
    encode_response,
};
pub(crate) use outbound::openai_tool;
pub use outbound::{
    encode_chat, encode_embed, encode_generate, parse_embed_response, parse_frame, parse_response,
};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::GatewayError;

/// Serializes `value` as one NDJSON line, escaping U+2028, U+2029 and U+0085, which
/// Python's `str.splitlines()` (used by ollama-python via httpx) would split on.
pub fn ndjson_line(value: &serde_json::Value) -> bytes::Bytes {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 1);
    for ch in text.chars() {
        match ch {
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            '\u{0085}' => out.push_str("\\u0085"),
            c => out.push(c),
        }
    }
    out.push('\n');
    bytes::Bytes::from(out)
}

/// True when the bytes contain a code point that must be escaped before an NDJSON line goes out.
pub fn needs_escape(line: &[u8]) -> bool {
    // U+2028/2029 are E2 80 A8/A9; U+0085 is C2 85.
    line.windows(2).any(|w| w == [0xC2, 0x85])
        || line
            .windows(3)
            .any(|w| w[0] == 0xE2 && w[1] == 0x80 && (w[2] == 0xA8 || w[2] == 0xA9))
}

/// A native chat or generate body with `think` set to `false`: the model must not reason
/// (not asked, or it cannot). When `think` is absent the field is put in front of the
/// client's bytes, which stay as they are; otherwise the object is rewritten.
pub fn with_think_off(body: &Bytes, had_think: bool) -> Result<Bytes, GatewayError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    if let (false, Some(i)) = (had_think, start) {
        if body[i] == b'{' {
            let rest = &body[i + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = Vec::with_capacity(body.len() + 16);
            out.extend_from_slice(b"{\"think\":false");
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            return Ok(Bytes::from(out));
        }
    }
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert("think".into(), Value::Bool(false));
        }
        None => return Err(GatewayError::bad_request("the body must be a JSON object")),
    }
    Ok(Bytes::from(v.to_string()))
}

/// Removes reasoning from one native answer or frame (chat `message.thinking`, generate
/// `thinking`). Returns whether the frame still says anything; a frame that only carried
/// reasoning says nothing and is dropped by the caller.
pub fn strip_thinking(v: &mut Value) -> bool {
    let said = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let top = v
        .as_object_mut()
        .and_then(|o| o.remove("thinking"))
        .is_some();
    let nested = v
        .get_mut("message")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("thinking"))
        .is_some();
    if !(top || nested) || v.get("done").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let calls = v
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    said(v.get("response")) || said(v.pointer("/message/content")) || calls
}

/// Serializes any value as one escaped NDJSON line (see [`ndjson_line`]) without building a
/// `serde_json::Value` first.
pub fn ndjson_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(160);
    let _ = serde_json::to_writer(&mut out, value);
    if needs_escape(&out) {
        // serde_json output is valid UTF-8; the code points can only sit inside strings.
        let text = String::from_utf8_lossy(&out)
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .replace('\u{0085}', "\\u0085");
        out = text.into_bytes();
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn think_off_keeps_the_client_bytes_when_it_can() {
        let body = Bytes::from_static(br#" {"model":"qwen3:8b","messages":[]}"#);
        let out = with_think_off(&body, false).unwrap();
        assert_eq!(
            &out[..],
            br#"{"think":false,"model":"qwen3:8b","messages":[]}"#
        );
        let empty = with_think_off(&Bytes::from_static(b"{ }"), false).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).unwrap(),
            json!({"think": false})
        );
        let asked = Bytes::from_static(br#"{"model":"m","think":"high"}"#);
        let out: Value = serde_json::from_slice(&with_think_off(&asked, true).unwrap()).unwrap();
        assert_eq!(out, json!({"model": "m", "think": false}));
        assert!(with_think_off(&Bytes::from_static(b"[1]"), false).is_err());
    }

    #[test]
    fn stripped_thinking_frames_say_nothing() {
        let mut thought = json!({"model": "m", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": false});
        assert!(!strip_thinking(&mut thought));
        assert!(thought["message"].get("thinking").is_none());
        let mut both = json!({"model": "m", "response": "Hi", "thinking": "hmm", "done": false});
        assert!(strip_thinking(&mut both));
        assert!(both.get("thinking").is_none());
        let mut done = json!({"model": "m", "message": {"role": "assistant", "content": "", "thinking": "x"}, "done": true});
        assert!(strip_thinking(&mut done), "the final frame always goes out");
        let mut plain =
            json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": false});
        assert!(
            strip_thinking(&mut plain),
            "frames without thinking are left alone"
        );
    }

    #[test]
    fn escapes_line_separators() {
        let line = ndjson_line(&serde_json::json!({"c": "a\u{2028}b\u{2029}c\u{85}"}));
        assert_eq!(&line[..], b"{\"c\":\"a\\u2028b\\u2029c\\u0085\"}\n");
        assert!(!needs_escape(&line));
        assert!(needs_escape("x\u{2028}".as_bytes()));
    }
}
