//! One redaction step for every secret corral holds (pool keys, `api_key_env` values,
//! database, Redis and proxy passwords): text that came from outside (upstream error
//! bodies, connection errors) passes through [`scrub`] before it can reach a client, a log
//! line, the database or a metric.
//!
//! The set is process-wide and only grows: every `GatewayError` message is scrubbed when it
//! is made, so no path that renders, logs or stores one can forget the step, and a secret
//! registered by one gateway in a test process is harmless to another.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use aho_corasick::AhoCorasick;
use parking_lot::RwLock;

use crate::config::Config;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Shorter strings are not treated as secrets: they would blank ordinary words.
pub const MIN_SECRET_LEN: usize = 6;

#[derive(Default)]
struct Secrets {
    all: BTreeSet<String>,
    /// Built on first use after a change; `None` while stale.
    matcher: Option<Arc<AhoCorasick>>,
}

static SECRETS: LazyLock<RwLock<Secrets>> = LazyLock::new(|| RwLock::new(Secrets::default()));

/// Adds `secret` to what [`scrub`] removes (ignored when shorter than [`MIN_SECRET_LEN`]).
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if SECRETS.read().all.contains(secret) {
        return;
    }
    let mut s = SECRETS.write();
    if s.all.insert(secret.to_string()) {
        s.matcher = None;
    }
}

/// Every secret of a configuration: `api_key_env` values as the environment holds them
/// now, and the passwords of the database, Redis and proxy URLs (pool keys register
/// themselves as pools learn them).
pub fn register_config(cfg: &Config) {
    for b in &cfg.backends {
        if let Some(var) = &b.api_key_env {
            if let Ok(v) = std::env::var(var) {
                register(&v);
            }
        }
        if let Some(p) = &b.proxy {
            register_url(p);
        }
    }
    register_url(&cfg.database.url);
    register_url(&cfg.redis.url);
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        if let Ok(v) = std::env::var(var) {
            register_url(&v);
        }
    }
}

/// The credentials of `[scheme://]user:pass@host...`, as written and percent-decoded.
pub fn register_url(url: &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some((creds, _)) = authority.rsplit_once('@') else {
        return;
    };
    let secret = creds.split_once(':').map_or(creds, |(_, pass)| pass);
    register(secret);
    if let Ok(decoded) = percent_encoding::percent_decode_str(secret).decode_utf8() {
        register(&decoded);
    }
}

fn matcher() -> Option<Arc<AhoCorasick>> {
    if let Some(m) = &SECRETS.read().matcher {
        return Some(m.clone());
    }
    let mut s = SECRETS.write();
    if s.all.is_empty() {
        return None;
    }
    if s.matcher.is_none() {
        // Leftmost-longest: a secret that contains another is removed whole.
        let built = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(s.all.iter())
            .map_err(|e| tracing::error!(error = %e, "secret matcher could not be built"))
            .ok()?;
        s.matcher = Some(Arc::new(built));
    }
    s.matcher.clone()
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    if text.len() < MIN_SECRET_LEN {
        return Cow::Borrowed(text);
    }
    let Some(m) = matcher() else {
        return Cow::Borrowed(text);
    };
    if !m.is_match(text) {
        return Cow::Borrowed(text);
    }
    let replacements = vec![REDACTED; m.patterns_len()];
    Cow::Owned(m.replace_all(text, &replacements))
}

/// [`scrub`] for an owned string, reusing it when nothing matched.
pub fn scrub_owned(text: String) -> String {
    match scrub(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn url_passwords_and_tokens_are_registered() {
        register_url("postgres://corral:s3cr%2Fet-pw@db:5432/corral");
        register_url("redis://only-a-token-here@redis:6379/0");
        register_url("user:proxy-pass-1@proxy:3128");
        let out = scrub("login s3cr/et-pw or s3cr%2Fet-pw, only-a-token-here, proxy-pass-1");
        for s in [
            "s3cr/et-pw",
            "s3cr%2Fet-pw",
            "only-a-token-here",
            "proxy-pass-1",
        ] {
            assert!(!out.contains(s), "{s} left in {out}");
        }
    }

    #[test]
    fn short_strings_are_not_secrets() {
        register("abc");
        assert_eq!(scrub("abc abc"), "abc abc");
    }

    proptest! {
        #[test]
        fn a_registered_secret_never_survives(
            secret in "[A-Za-z0-9_\\-]{8,64}",
            before in "\\PC{0,200}",
            after in "\\PC{0,200}",
            times in 1usize..4,
        ) {
            register(&secret);
            let text = format!("{before}{}{after}", secret.repeat(times));
            let out = scrub(&text);
            prop_assert!(!out.contains(&secret), "{out}");
        }
    }
}
