//! A chat body of unknown dialect (the admin classifier's input), decoded the way the route
//! that would receive it decodes it: by the route when it is named, else by its own marks.

use serde_json::Value;

use super::{anthropic, ollama, openai};
use crate::error::GatewayError;
use crate::ir::ChatRequest;

/// Decodes `body` as the route `path` would (`/api/chat`, `/api/generate`,
/// `/v1/chat/completions`, `/v1/completions`, `/v1/messages`), or, without a path, by what
/// only one dialect writes: Ollama's `prompt`, per-message `images`, `options`, `think`,
/// `keep_alive` or `format`; OpenAI's `image_url` parts, tool turns and own fields; Anthropic's `system`, `max_tokens` or typed content
/// blocks; OpenAI otherwise.
pub fn decode_chat(body: &[u8], path: Option<&str>) -> Result<ChatRequest, GatewayError> {
    match path {
        Some("/api/chat") => return ollama::decode_chat(body),
        Some("/api/generate") => return ollama::decode_generate(body),
        Some("/v1/chat/completions") => return openai::decode_chat(body),
        Some("/v1/completions") => return openai::decode_completion(body),
        Some("/v1/messages") => return anthropic::decode_messages(body),
        Some(other) => {
            return Err(GatewayError::bad_field(
                "path",
                format!("`{other}` is not a chat route"),
            ));
        }
        None => {}
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}")))?;
    if v.get("prompt").is_some_and(Value::is_string) && v.get("messages").is_none() {
        return match v.get("max_tokens") {
            Some(_) if v.get("options").is_none() => openai::decode_completion(body),
            _ => ollama::decode_generate(body),
        };
    }
    if looks_ollama(&v) {
        return ollama::decode_chat(body);
    }
    if looks_anthropic(&v) && !looks_openai(&v) {
        if let Ok(c) = anthropic::decode_messages(body) {
            return Ok(c);
        }
    }
    openai::decode_chat(body).or_else(|_| ollama::decode_chat(body))
}

fn messages(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn looks_ollama(v: &Value) -> bool {
    ["options", "think", "keep_alive"]
        .iter()
        .any(|k| v.get(*k).is_some())
        || v.get("format").is_some()
        || messages(v).any(|m| m.get("images").is_some() || m.get("tool_name").is_some())
}

fn looks_openai(v: &Value) -> bool {
    let marks = [
        "max_completion_tokens",
        "response_format",
        "reasoning_effort",
        "stream_options",
    ];
    let part = |m: &Value| {
        m.get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|b| b.get("type").and_then(Value::as_str) == Some("image_url"))
    };
    marks.iter().any(|k| v.get(*k).is_some())
        || messages(v).any(|m| {
            part(m)
                || m.get("tool_calls").is_some()
                || matches!(
                    m.get("role").and_then(Value::as_str),
                    Some("developer" | "tool")
                )
        })
}

fn looks_anthropic(v: &Value) -> bool {
    let typed_block = |m: &Value| {
        m.get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("type").and_then(Value::as_str))
            .any(|t| {
                matches!(
                    t,
                    "image" | "tool_use" | "tool_result" | "thinking" | "document"
                )
            })
    };
    v.get("system").is_some() || v.get("max_tokens").is_some() || messages(v).any(typed_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    #[test]
    fn ollama_images_are_kept() {
        let body = format!(
            r#"{{"model":"auto","messages":[{{"role":"user","content":"what is this","images":["{PNG}"]}}]}}"#
        );
        let chat = decode_chat(body.as_bytes(), None).unwrap();
        assert_eq!(chat.messages[0].images.len(), 1);
        let by_path = decode_chat(body.as_bytes(), Some("/api/chat")).unwrap();
        assert_eq!(by_path.messages[0].images.len(), 1);
    }

    #[test]
    fn each_dialect_by_its_marks() {
        let openai = br#"{"model":"auto","max_tokens":64,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}"#;
        assert_eq!(
            decode_chat(openai, None).unwrap().messages[0].images.len(),
            1
        );
        let anthropic = br#"{"model":"auto","max_tokens":64,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}]}"#;
        assert_eq!(
            decode_chat(anthropic, None).unwrap().messages[0]
                .images
                .len(),
            1
        );
        let generate = br#"{"model":"auto","prompt":"write a sort in rust"}"#;
        assert!(decode_chat(generate, None).unwrap().completion);
        assert!(decode_chat(generate, Some("/api/embed")).is_err());
    }
}
