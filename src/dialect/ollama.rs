//! The Ollama dialect: NDJSON framing rules shared by every writer of Ollama streams.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_line_separators() {
        let line = ndjson_line(&serde_json::json!({"c": "a\u{2028}b\u{2029}c\u{85}"}));
        assert_eq!(&line[..], b"{\"c\":\"a\\u2028b\\u2029c\\u0085\"}\n");
        assert!(!needs_escape(&line));
        assert!(needs_escape("x\u{2028}".as_bytes()));
    }
}
