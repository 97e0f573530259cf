//! Operator policy over what clients may steer on shared upstreams: a user's Ollama
//! `keep_alive` (unloading a model others use, or pinning it forever) is passed, dropped or
//! clamped before the request is decoded (admins' values pass); only listed top-level body
//! fields reach OpenAI- and Anthropic-kind upstreams (so `mcp_servers` does not), and only
//! listed `anthropic-beta` values.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web;

use crate::Gateway;
use crate::config::RoutingConfig;

pub use crate::config::KeepAlive;

impl KeepAlive {
    /// The `keep_alive` to send for a client's value; `None` drops it.
    fn apply(self, given: &Value) -> Option<Value> {
        let (lo, hi) = match self {
            KeepAlive::Pass => return Some(given.clone()),
            KeepAlive::Drop => return None,
            KeepAlive::Clamp(lo, hi) => (lo, hi),
        };
        // Ollama: a number is seconds, a string a Go duration; negative means forever.
        let secs = match given {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s.trim_start().starts_with('-') => Some(-1.0),
            Value::String(s) => s.trim().parse::<f64>().ok().or_else(|| {
                humantime::parse_duration(s.trim())
                    .ok()
                    .map(|d| d.as_secs_f64())
            }),
            _ => None,
        };
        let wanted = match secs {
            Some(s) if s < 0.0 => hi,
            Some(s) => Duration::from_secs_f64(s.min(hi.as_secs_f64())),
            None => return None,
        };
        Some(Value::String(format!(
            "{}s",
            wanted.clamp(lo, hi).as_secs()
        )))
    }
}

/// The top-level fields of a body to `path` that may reach an upstream, when the body can
/// be forwarded as the client sent it: `/v1/messages` to Anthropic-kind upstreams,
/// `/v1/chat/completions` to OpenAI-kind ones. Other bodies are re-encoded from the fields
/// corral decodes, so nothing else passes anyway.
fn allowed_fields<'a>(routing: &'a RoutingConfig, path: &str) -> Option<&'a [String]> {
    match path {
        "/v1/messages" | "/v1/messages/count_tokens" => Some(&routing.anthropic_fields),
        "/v1/chat/completions" => Some(&routing.openai_fields),
        _ => None,
    }
}

/// The client's body to `path` as it may be forwarded: only the top-level fields
/// `[routing] anthropic_fields` / `openai_fields` list, and a non-admin's `keep_alive`
/// under `client_keep_alive`. A body that needs neither is not parsed here.
pub fn client_body(routing: &RoutingConfig, path: &str, admin: bool, body: Bytes) -> Bytes {
    let steer_keep_alive = !admin && contains(&body, b"\"keep_alive\"");
    let allowed = allowed_fields(routing, path);
    if !steer_keep_alive && allowed.is_none() {
        return body;
    }
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let before = m.len();
    if let Some(allowed) = allowed {
        m.retain(|k, _| allowed.iter().any(|a| a == k));
    }
    let mut changed = m.len() != before;
    if steer_keep_alive {
        if let (Ok(policy), Some(given)) = (
            KeepAlive::parse(&routing.client_keep_alive),
            m.remove("keep_alive"),
        ) {
            if let Some(v) = policy.apply(&given) {
                m.insert("keep_alive".into(), v);
            }
            changed = true;
        }
    }
    if !changed {
        return body;
    }
    Bytes::from(Value::Object(m).to_string())
}

const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Removes the `anthropic-beta` values `[routing] anthropic_betas` does not list, before
/// any handler (or the key that pays for them) sees the request.
pub fn filter_betas(req: &mut ServiceRequest) {
    let Some(given) = req.headers().get(ANTHROPIC_BETA) else {
        return;
    };
    let Some(gw) = req.app_data::<web::Data<Gateway>>() else {
        return;
    };
    let kept = given
        .to_str()
        .ok()
        .and_then(|h| allowed_betas(h, &gw.config.routing.anthropic_betas))
        .and_then(|k| HeaderValue::from_str(&k).ok());
    match kept {
        Some(v) => {
            req.headers_mut().insert(ANTHROPIC_BETA, v);
        }
        None => {
            req.headers_mut().remove(ANTHROPIC_BETA);
        }
    }
}

/// The `anthropic-beta` values of `header` that `allowed` lists, comma-joined; `None` when
/// none is left.
pub fn allowed_betas(header: &str, allowed: &[String]) -> Option<String> {
    let kept: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|b| allowed.iter().any(|a| a == b))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(policy: &str, admin: bool, keep_alive: Value) -> Option<Value> {
        let routing = RoutingConfig {
            client_keep_alive: policy.into(),
            ..RoutingConfig::default()
        };
        let body = Bytes::from(json!({"model": "m", "keep_alive": keep_alive}).to_string());
        let out: Value =
            serde_json::from_slice(&client_body(&routing, "/api/chat", admin, body)).unwrap();
        out.get("keep_alive").cloned()
    }

    #[test]
    fn only_listed_fields_pass_and_betas_are_filtered() {
        let routing = RoutingConfig::default();
        let body = Bytes::from(
            json!({"model": "m", "messages": [], "max_tokens": 5, "stream": true,
                   "mcp_servers": [{"url": "http://evil"}], "container": "c", "x": 1})
            .to_string(),
        );
        let out: Value =
            serde_json::from_slice(&client_body(&routing, "/v1/messages", true, body)).unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "messages": [], "max_tokens": 5, "stream": true})
        );
        let body = Bytes::from(
            json!({"model": "m", "messages": [], "service_tier": "priority", "top_p": 0.5})
                .to_string(),
        );
        let out: Value =
            serde_json::from_slice(&client_body(&routing, "/v1/chat/completions", true, body))
                .unwrap();
        assert_eq!(out, json!({"model": "m", "messages": [], "top_p": 0.5}));
        // Bytes with nothing to remove, and bodies of other routes, are passed as sent.
        let plain = Bytes::from_static(br#"{"model":"m", "messages":[]}"#);
        assert_eq!(
            client_body(&routing, "/v1/chat/completions", false, plain.clone()),
            plain
        );
        let ollama = Bytes::from_static(br#"{"model":"m","mcp_servers":1,"options":{}}"#);
        assert_eq!(
            client_body(&routing, "/api/chat", false, ollama.clone()),
            ollama
        );
        assert_eq!(
            allowed_betas(
                "claude-code-20250219, mcp-client-2025-04-04,interleaved-thinking-2025-05-14",
                &routing.anthropic_betas
            )
            .as_deref(),
            Some("claude-code-20250219,interleaved-thinking-2025-05-14")
        );
        assert_eq!(
            allowed_betas("mcp-client-2025-04-04", &routing.anthropic_betas),
            None
        );
    }

    #[test]
    fn users_can_neither_unload_nor_pin_forever_by_default() {
        let d = "1m..1h";
        assert_eq!(sent(d, false, json!(0)), Some(json!("60s")));
        assert_eq!(sent(d, false, json!("0")), Some(json!("60s")));
        assert_eq!(sent(d, false, json!(-1)), Some(json!("3600s")));
        assert_eq!(sent(d, false, json!("-1m")), Some(json!("3600s")));
        assert_eq!(sent(d, false, json!("10m")), Some(json!("600s")));
        assert_eq!(sent(d, false, json!("24h")), Some(json!("3600s")));
        assert_eq!(sent(d, true, json!(-1)), Some(json!(-1)), "admins pass");
        assert_eq!(sent("drop", false, json!("5m")), None);
        assert_eq!(sent("pass", false, json!(0)), Some(json!(0)));
    }

    #[test]
    fn policies_parse() {
        assert!(KeepAlive::parse("1h..1m").is_err());
        assert!(KeepAlive::parse("forever").is_err());
        assert_eq!(
            KeepAlive::parse("30s..2h"),
            Ok(KeepAlive::Clamp(
                Duration::from_secs(30),
                Duration::from_secs(7200)
            ))
        );
    }
}
