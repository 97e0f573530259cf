//! What differs between upstream kinds (Ollama, OpenAI-compatible, Anthropic-compatible):
//! the call a canonical request becomes, and how a whole answer is read back. Streams are
//! read by `dialect::relay::UpstreamReader`; this module only builds and parses.

use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use std::ops::Range;

use crate::config::BackendKind;
use crate::dialect::native::Native;
use crate::dialect::{Dialect, anthropic, ollama, openai};
use crate::error::GatewayError;
use crate::ir::{ChatRequest, ChatResponse, EmbedRequest, EmbedResponse};
use crate::upstream::Call;

/// The API version sent to Anthropic upstreams when the client named none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Does an upstream of `kind` speak `dialect` natively (so the client's bytes can go as
/// they are)?
pub fn speaks(kind: BackendKind, dialect: Dialect) -> bool {
    matches!(
        (dialect, kind),
        (Dialect::OpenAi, BackendKind::Openai)
            | (Dialect::Anthropic, BackendKind::Anthropic)
            | (Dialect::Ollama, BackendKind::Ollama)
    )
}

/// The chat call for an upstream of `kind`, translated from the canonical request.
pub fn chat_call(kind: BackendKind, served: &str, req: &ChatRequest, client: &HeaderMap) -> Call {
    match kind {
        BackendKind::Ollama if req.completion => Call::post_json(
            "/api/generate",
            Bytes::from(ollama::encode_generate(req, served).to_string()),
        ),
        BackendKind::Ollama => Call::post_json(
            "/api/chat",
            Bytes::from(ollama::encode_chat(req, served).to_string()),
        ),
        BackendKind::Openai => Call::post_json(
            "/v1/chat/completions",
            Bytes::from(openai::encode_chat_upstream(req, served).to_string()),
        ),
        BackendKind::Anthropic => {
            let mut call = Call::post_json(
                "/v1/messages",
                Bytes::from(anthropic::encode_upstream(req, served).to_string()),
            );
            call.headers.extend(anthropic_headers(client));
            call
        }
    }
}

/// The client's own bytes for an upstream of its dialect, with only `model` changed (at
/// the place the one parse of the body recorded).
pub fn raw_call(
    kind: BackendKind,
    served: &str,
    raw: &Native,
    path: &'static str,
    client: &HeaderMap,
) -> Call {
    let mut call = Call::post_json(path, raw.body(Some(served), false));
    if kind == BackendKind::Anthropic {
        call.headers.extend(anthropic_headers(client));
    }
    call
}

/// The embeddings call for an upstream of `kind`.
pub fn embed_call(
    kind: BackendKind,
    backend: &str,
    served: &str,
    req: &EmbedRequest,
) -> Result<Call, GatewayError> {
    match kind {
        BackendKind::Ollama => Ok(Call::post_json(
            "/api/embed",
            Bytes::from(ollama::encode_embed(req, served).to_string()),
        )),
        BackendKind::Openai => Ok(Call::post_json(
            "/v1/embeddings",
            Bytes::from(openai::encode_embeddings_upstream(req, served).to_string()),
        )),
        BackendKind::Anthropic => Err(GatewayError::bad_request(format!(
            "backend {backend} (Anthropic) has no embeddings"
        ))),
    }
}

/// A whole chat answer of an upstream of `kind`, and where its top-level `model` values
/// are (found by the same parse, for an answer passed through to the client).
pub fn parse_chat(
    kind: BackendKind,
    body: &[u8],
) -> Result<(ChatResponse, Vec<Range<usize>>), GatewayError> {
    match kind {
        BackendKind::Ollama => ollama::parse_response(body).map(|r| (r, Vec::new())),
        BackendKind::Openai => openai::parse_response_at(body),
        BackendKind::Anthropic => anthropic::parse_response_at(body),
    }
}

/// A whole embeddings answer of an upstream of `kind`.
pub fn parse_embed(kind: BackendKind, body: &[u8]) -> Result<EmbedResponse, GatewayError> {
    match kind {
        BackendKind::Openai => openai::parse_embeddings_response(body),
        _ => ollama::parse_embed_response(body),
    }
}

/// `anthropic-version` and `anthropic-beta` go to Anthropic upstreams byte for byte.
fn anthropic_headers(client: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let copied = |name: &str| {
        let value = client.get(name)?;
        HeaderValue::from_bytes(value.as_bytes()).ok()
    };
    let mut out = Vec::with_capacity(2);
    let version =
        copied("anthropic-version").unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
    out.push((HeaderName::from_static("anthropic-version"), version));
    if let Some(beta) = copied("anthropic-beta") {
        out.push((HeaderName::from_static("anthropic-beta"), beta));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_calls_carry_the_clients_version_or_a_default() {
        let req = anthropic::decode_messages(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let call = chat_call(BackendKind::Anthropic, "real", &req, &HeaderMap::new());
        assert_eq!(call.path, "/v1/messages");
        assert_eq!(call.headers[0].1, ANTHROPIC_VERSION);
        let mut client = HeaderMap::new();
        client.insert(
            actix_web::http::header::HeaderName::from_static("anthropic-beta"),
            actix_web::http::header::HeaderValue::from_static("x"),
        );
        let call = chat_call(BackendKind::Anthropic, "real", &req, &client);
        assert_eq!(call.headers.len(), 2);
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["model"], "real");
    }

    #[test]
    fn a_raw_call_changes_only_the_model() {
        let raw = Bytes::from_static(br#"{"model":"alias","messages":[],"x":1.50}"#);
        let (_, native) = crate::dialect::native::parse(raw).unwrap();
        let call = raw_call(
            BackendKind::Openai,
            "real",
            &native,
            "/v1/chat/completions",
            &HeaderMap::new(),
        );
        assert_eq!(
            &call.body[..],
            br#"{"model":"real","messages":[],"x":1.50}"#,
            "the client's bytes but the model"
        );
        assert!(call.headers.is_empty());
    }
}
