//! The Ollama dialect, in two halves that meet only in the canonical IR (`ir.rs`): `inbound`
//! serves Ollama clients (their request in, the answer and the NDJSON stream out), `outbound`
//! talks to Ollama upstreams (the call out, their answer and NDJSON frames in). What stays here
//! is shared by both and by the native path, where an Ollama client's bytes go to an Ollama
//! upstream as they are (with `model` or `think` spliced in by `dialect::native`): NDJSON line
//! escaping, and stripping reasoning from a native frame.

mod inbound;
mod outbound;

pub(crate) use inbound::decode_tools;
pub use inbound::{
    StreamWriter, decode_chat, decode_chat_object, decode_embed, decode_embed_object,
    decode_generate, decode_generate_object, encode_embed_response, encode_response,
};
pub(crate) use outbound::openai_tool;
pub use outbound::{
    encode_chat, encode_embed, encode_generate, parse_embed_response, parse_frame, parse_response,
};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

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
