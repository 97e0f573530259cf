//! What an upstream's error answer means, decided by one table: why the attempt failed
//! (for the backend's health and the failover), whether another backend may still serve,
//! and what it says about the API key that was used. Every rule is backed by a recorded or
//! faithfully transcribed answer under `tests/fixtures/<kind>/`, checked by the test below.

use std::ops::RangeInclusive;

use crate::routing::fleet::FailureReason;

/// What an error answer says about the upstream key that was sent with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBlame {
    /// Not the key's business (the backend's health, or the request's).
    None,
    /// A short-term limit: cool the key down.
    RateLimited,
    /// A session or weekly quota is used up: a long cool-down.
    UsageLimited,
    /// The key was refused.
    AuthFailed,
    /// This key may not use this model (a subscription tier), other models are fine.
    ModelDenied,
}

impl KeyBlame {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyBlame::None => "none",
            KeyBlame::RateLimited => "rate_limited",
            KeyBlame::UsageLimited => "usage_limited",
            KeyBlame::AuthFailed => "auth_failed",
            KeyBlame::ModelDenied => "model_denied",
        }
    }
}

/// The meaning of one error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub reason: FailureReason,
    /// Another backend (or key) may serve the request: the upstream said it did not
    /// process it.
    pub retryable: bool,
    pub key: KeyBlame,
}

struct Rule {
    statuses: RangeInclusive<u16>,
    /// Lower-case text the answer's message must contain, if any.
    text: Option<&'static str>,
    reason: FailureReason,
    key: KeyBlame,
}

const fn rule(
    statuses: RangeInclusive<u16>,
    text: Option<&'static str>,
    reason: FailureReason,
    key: KeyBlame,
) -> Rule {
    Rule {
        statuses,
        text,
        reason,
        key,
    }
}

use FailureReason as R;
use KeyBlame as K;

/// The first matching rule decides. Anything not listed is the request's own fault
/// (`Client4xx`): passed to the client, not retried elsewhere.
const RULES: &[Rule] = &[
    rule(404..=404, None, R::ModelNotFound, K::None),
    // Ollama Cloud's quotas, by their wording; no Retry-After comes with them.
    rule(
        429..=429,
        Some("weekly usage limit"),
        R::Overloaded,
        K::UsageLimited,
    ),
    rule(
        429..=429,
        Some("session usage limit"),
        R::Overloaded,
        K::UsageLimited,
    ),
    rule(429..=429, None, R::Overloaded, K::RateLimited),
    // A full queue (Ollama's `OLLAMA_MAX_QUEUE`, a provider's "overloaded").
    rule(503..=503, None, R::Overloaded, K::None),
    // A per-(key, model) denial, not a bad key.
    rule(
        403..=403,
        Some("subscription"),
        R::Status5xx,
        K::ModelDenied,
    ),
    // A backend refusing corral's own credentials is the backend's fault, not the client's.
    rule(401..=401, None, R::Status5xx, K::AuthFailed),
    rule(403..=403, None, R::Status5xx, K::AuthFailed),
    rule(500..=599, Some("memory"), R::OutOfMemory, K::None),
    rule(500..=599, None, R::Status5xx, K::None),
];

/// The verdict for an error answer with `status` whose message is `message`.
pub fn classify(status: u16, message: &str) -> Verdict {
    let lower = message.to_ascii_lowercase();
    RULES
        .iter()
        .find(|r| r.statuses.contains(&status) && r.text.is_none_or(|t| lower.contains(t)))
        .map_or(
            Verdict {
                reason: R::Client4xx,
                retryable: false,
                key: K::None,
            },
            |r| Verdict {
                reason: r.reason,
                retryable: r.reason != R::Client4xx,
                key: r.key,
            },
        )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;

    /// Every fixture: an upstream's error answer (status and body as sent) and what it
    /// must mean.
    fn fixtures() -> Vec<(String, Value)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out = Vec::new();
        for kind in ["ollama", "openai", "anthropic"] {
            let dir = root.join(kind);
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("error-") && n.ends_with(".json"))
                })
                .collect();
            names.sort();
            for path in names {
                let text = std::fs::read_to_string(&path).unwrap();
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push((format!("{kind}/{}", path.display()), v));
            }
        }
        out
    }

    #[test]
    fn every_recorded_error_answer_means_what_its_fixture_says() {
        let all = fixtures();
        assert!(all.len() >= 15, "fixtures went missing: {}", all.len());
        for (name, f) in all {
            let status = f["status"].as_u64().unwrap() as u16;
            let body = f["body"].as_str().unwrap();
            let message = crate::upstream::upstream_message(body.as_bytes())
                .unwrap_or_else(|| status.to_string());
            let v = classify(status, &message);
            let want = &f["expect"];
            assert_eq!(v.reason.as_str(), want["reason"], "{name}");
            assert_eq!(v.retryable, want["retryable"], "{name}");
            assert_eq!(v.key.as_str(), want["key"], "{name}");
            if let Some(m) = want["message"].as_str() {
                assert_eq!(message, m, "{name}");
            }
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_unknown_statuses_are_the_clients() {
        assert_eq!(classify(429, "Weekly usage limit").key, K::UsageLimited);
        assert_eq!(classify(429, "slow down").key, K::RateLimited);
        assert_eq!(classify(500, "CUDA out of memory").reason, R::OutOfMemory);
        let v = classify(422, "bad");
        assert_eq!(
            (v.reason, v.retryable, v.key),
            (R::Client4xx, false, K::None)
        );
    }
}
