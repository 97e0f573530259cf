//! The key probe that `corral keys import --validate` and `POST
//! /admin/api/keys/health-check` share.
//!
//! The probe is one request the upstream must authenticate but cannot serve: an empty
//! chat body. A good key gets 400 (body refused after auth), a bad one 401; no tokens are
//! spent. `GET /api/tags` and `GET /v1/models` are public on ollama.com, so they prove
//! nothing about a key.

use std::time::Duration;

use futures_util::StreamExt;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::{BackendKind, Config, redact_url};
use crate::keys::secret_prefix;
use crate::upstream::Reach;

/// How long one key's probe may take, connect included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keys probed at the same time.
pub const PROBE_CONCURRENCY: usize = 8;
/// Longest upstream text kept in a reason.
const REASON_LEN: usize = 200;

/// Where a pool's keys are checked: the first `[[backends]]` entry using the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub backend: String,
    pub url: String,
    pub kind: BackendKind,
    pub reach: Reach,
}

impl ProbeTarget {
    pub fn for_pool(cfg: &Config, pool: &str) -> Result<ProbeTarget, String> {
        let b = cfg
            .backends
            .iter()
            .find(|b| b.key_pool.as_deref() == Some(pool))
            .ok_or_else(|| {
                format!(
                    "no [[backends]] entry has key_pool = \"{pool}\", so there is nothing to \
                     validate its keys against"
                )
            })?;
        Ok(ProbeTarget {
            backend: b.name.clone(),
            url: b.url.trim_end_matches('/').to_string(),
            kind: b.kind,
            reach: Reach::of(b),
        })
    }

    /// `backend `x` (https://…)`, credentials in the URL redacted.
    pub fn describe(&self) -> String {
        format!("backend `{}` ({})", self.backend, redact_url(&self.url))
    }

    /// The path probed: a chat endpoint, which always needs a key.
    pub fn path(&self) -> &'static str {
        match self.kind {
            BackendKind::Anthropic => "/v1/messages",
            BackendKind::Ollama | BackendKind::Openai => "/v1/chat/completions",
        }
    }

    fn credential(&self, secret: &str) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self.kind {
            BackendKind::Anthropic => ("x-api-key", secret.to_string()),
            BackendKind::Ollama | BackendKind::Openai => {
                ("authorization", format!("Bearer {secret}"))
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((HeaderName::from_static(name), value))
    }
}

/// What the upstream said about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream authenticated the key (`note`: anything worth knowing, like a usage limit).
    Valid { note: Option<String> },
    /// The upstream refused the key (401, 403): it must not be used.
    Rejected { reason: String },
    /// Nothing was learnt about the key (unreachable, timeout, 5xx, unexpected answer).
    Unknown { reason: String },
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Valid { note: None } => "ok".into(),
            Verdict::Valid { note: Some(n) } => format!("ok ({n})"),
            Verdict::Rejected { reason } => format!("disabled: {reason}"),
            Verdict::Unknown { reason } => format!("not checked: {reason}"),
        }
    }
}

/// Reads an upstream answer to the probe. Pure; `secret` is scrubbed from the reason.
pub fn classify(status: u16, body: &[u8], secret: &str) -> Verdict {
    let json_message = crate::upstream::upstream_message(body);
    let text = || {
        let raw = json_message
            .clone()
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        scrub(&raw, secret)
    };
    let with_text = |what: &str| {
        let t = text();
        if t.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {t}")
        }
    };
    match status {
        200..=299 | 400 | 422 => Verdict::Valid { note: None },
        // A JSON 404 is the upstream refusing the empty body after auth ("model not found").
        404 if json_message.is_some() => Verdict::Valid { note: None },
        404 => Verdict::Unknown {
            reason: "the backend has no such endpoint (404); is its url right?".into(),
        },
        429 => Verdict::Valid {
            note: Some(with_text("at a usage limit now (429)")),
        },
        401 => Verdict::Rejected {
            reason: with_text("unauthorized (401)"),
        },
        403 => Verdict::Rejected {
            reason: with_text("forbidden (403)"),
        },
        other => Verdict::Unknown {
            reason: with_text(&format!("unexpected answer {other}")),
        },
    }
}

/// One line, bounded, and never the secret itself.
fn scrub(text: &str, secret: &str) -> String {
    let text = if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, &secret_prefix(secret))
    };
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > REASON_LEN {
        let cut: String = one_line.chars().take(REASON_LEN).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// Probes one key. Needs an actix system (the client's connections are local tasks).
pub async fn probe(
    client: &crate::upstream::Client,
    target: &ProbeTarget,
    secret: &str,
    timeout: Duration,
) -> Verdict {
    let Some(credential) = target.credential(secret) else {
        return Verdict::Rejected {
            reason: "the key cannot be sent in an HTTP header".into(),
        };
    };
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        ),
        credential,
    ];
    if target.kind == BackendKind::Anthropic {
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ));
    }
    let deadline = std::time::Instant::now() + timeout;
    let exchange = async {
        let body = bytes::Bytes::from_static(b"{}");
        let resp = client
            .send(http::Method::POST, target.path(), headers, body)
            .await
            .map_err(|e| e.to_string())?;
        // The body only explains the status; a body that does not arrive is no reason to fail.
        let body = crate::upstream::read_limited(Box::pin(resp.body), 64 * 1024, deadline)
            .await
            .unwrap_or_default();
        Ok::<_, String>((resp.status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Verdict::Unknown {
            reason: format!("no answer within {}s", timeout.as_secs()),
        },
        Ok(Err(e)) => Verdict::Unknown {
            reason: format!(
                "could not reach {}: {}",
                target.describe(),
                scrub(&e, secret)
            ),
        },
        Ok(Ok((status, body))) => classify(status, &body, secret),
    }
}

/// Probes `(id, secret)` pairs, [`PROBE_CONCURRENCY`] at a time; answers in input order.
pub async fn probe_all(
    target: &ProbeTarget,
    keys: Vec<(String, String)>,
) -> Vec<(String, Verdict)> {
    let client = match crate::upstream::Client::new(&target.url, &target.reach) {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot use {}: {e}", target.describe());
            let unknown = |(id, _)| {
                (
                    id,
                    Verdict::Unknown {
                        reason: reason.clone(),
                    },
                )
            };
            return keys.into_iter().map(unknown).collect();
        }
    };
    let client = &client;
    futures_util::stream::iter(keys)
        .map(|(id, secret)| async move {
            let verdict = probe(client, target, &secret, PROBE_TIMEOUT).await;
            (id, verdict)
        })
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await
}

/// [`probe_all`] from blocking code: runs its own actix system on a fresh thread, so it
/// works whether or not the caller is inside a runtime.
pub fn probe_all_blocking(
    target: &ProbeTarget,
    keys: Vec<(String, String)>,
) -> Result<Vec<(String, Verdict)>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    std::thread::scope(|s| {
        s.spawn(|| actix_web::rt::System::new().block_on(probe_all(target, keys)))
            .join()
            .map_err(|_| "the key probe thread failed".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-live-abcdef0123456789";

    #[test]
    fn classify_reads_statuses_the_way_ollama_cloud_answers() {
        assert_eq!(
            classify(400, br#"{"error":"model is required"}"#, SECRET),
            Verdict::Valid { note: None }
        );
        assert_eq!(classify(200, b"{}", SECRET), Verdict::Valid { note: None });
        assert_eq!(
            classify(401, br#"{"error":"unauthorized"}"#, SECRET),
            Verdict::Rejected {
                reason: "unauthorized (401): unauthorized".into()
            }
        );
        assert!(matches!(
            classify(403, b"", SECRET),
            Verdict::Rejected { reason } if reason == "forbidden (403)"
        ));
        assert!(matches!(
            classify(429, br#"{"error":"you (x) have reached your weekly usage limit"}"#, SECRET),
            Verdict::Valid { note: Some(n) } if n.contains("weekly usage limit")
        ));
        assert!(matches!(
            classify(404, b"404 page not found", SECRET),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            classify(503, br#"{"error":"Server overloaded"}"#, SECRET),
            Verdict::Unknown { reason } if reason.contains("503")
        ));
    }

    #[test]
    fn reasons_never_carry_the_secret() {
        let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {SECRET}\n"}}}}"#);
        let Verdict::Rejected { reason } = classify(401, body.as_bytes(), SECRET) else {
            panic!("401 is a rejection");
        };
        assert!(!reason.contains(SECRET), "{reason}");
        assert!(reason.contains(&secret_prefix(SECRET)), "{reason}");
        let long = "x".repeat(1000);
        assert!(scrub(&long, SECRET).chars().count() <= REASON_LEN + 1);
    }

    #[test]
    fn probe_target_is_the_first_backend_of_the_pool() {
        let cfg = Config::from_toml(
            "[[key_pools]]\nname = \"cloud\"\n\
             [[backends]]\nname = \"local\"\nurl = \"http://127.0.0.1:1\"\n\
             [[backends]]\nname = \"cloud-a\"\nurl = \"https://ollama.com/\"\nkey_pool = \"cloud\"\n\
             [[backends]]\nname = \"cloud-b\"\nurl = \"https://b.example\"\nkey_pool = \"cloud\"\n",
        )
        .unwrap();
        let t = ProbeTarget::for_pool(&cfg, "cloud").unwrap();
        assert_eq!(
            (t.backend.as_str(), t.url.as_str()),
            ("cloud-a", "https://ollama.com")
        );
        assert_eq!(t.path(), "/v1/chat/completions");
    }
}
