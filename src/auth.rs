//! Authentication: bearer tokens and x-api-key resolved to users.
//!
//! The authenticator keeps every active user's token hash in memory, refreshed from the
//! database when older than `auth.cache_ttl` (at most 60 s), so a deactivated or rotated
//! token stops working within that time on every replica. An unknown hash triggers at
//! most one reload per [`MISS_RELOAD_INTERVAL`]: a flood of wrong tokens costs a hash
//! and a map lookup each, not a query each. `invalidate_user` drops a user at once in
//! this process (and forces the next lookup to reload).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{AUTHORIZATION, HeaderMap, HeaderName};
use parking_lot::RwLock;
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::store::Store;
use crate::store::users::{self, looks_like_token, token_digest};

/// Longest a cached answer may be trusted, whatever the configuration says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// Unknown tokens reload the user table at most this often.
pub const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// While the database is down, cached users keep working this many TTLs.
const STALE_GRACE_TTLS: u32 = 10;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub admin: bool,
    /// Requests per minute allowed; `None` is unlimited.
    pub rpm: Option<u32>,
    /// Tokens per minute allowed; `None` is unlimited.
    pub tpm: Option<u32>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            admin: false,
            rpm: None,
            tpm: None,
        }
    }

    fn from_user(u: &users::User) -> Principal {
        let limit = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok());
        Principal {
            name: u.name.clone(),
            admin: u.admin,
            rpm: limit(u.rpm),
            tpm: limit(u.tpm),
        }
    }
}

/// 403 unless the caller is an admin.
pub fn require_admin(p: &Principal) -> Result<(), GatewayError> {
    if p.admin {
        Ok(())
    } else {
        Err(GatewayError::new(
            ErrorKind::Forbidden,
            "this endpoint needs an admin token",
        ))
    }
}

#[derive(Default)]
struct Snapshot {
    by_hash: HashMap<[u8; 32], ([u8; 32], Principal)>,
    loaded_at: Option<Instant>,
    /// Last failed reload: while the database is down, lookups don't queue up on it.
    failed_at: Option<Instant>,
}

struct Inner {
    store: Store,
    ttl: Duration,
    allow_anonymous: bool,
    snapshot: RwLock<Snapshot>,
    /// Single flight: one reload at a time; the others wait and reuse its result.
    reload: tokio::sync::Mutex<()>,
}

/// Resolves request headers to a [`Principal`]. Clone it into `web::Data`.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

enum Lookup {
    Found(Principal),
    Unknown,
}

impl Authenticator {
    pub fn new(store: Store, cfg: &AuthConfig) -> Authenticator {
        if cfg.allow_anonymous {
            tracing::warn!(
                "auth.allow_anonymous is ON: requests without a valid token are served as \
                 user `anonymous`; use this only on a trusted network"
            );
        }
        Authenticator {
            inner: Arc::new(Inner {
                store,
                ttl: cfg.cache_ttl.min(MAX_CACHE_TTL),
                allow_anonymous: cfg.allow_anonymous,
                snapshot: RwLock::new(Snapshot::default()),
                reload: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Checks `Authorization: Bearer` first, then `x-api-key`; either valid token is
    /// enough (Claude Code may send both). A missing or wrong token is `Unauthorized`,
    /// unless anonymous access is allowed.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, GatewayError> {
        let candidates = candidates(headers);
        for token in candidates.iter().copied() {
            if let Lookup::Found(p) = self.lookup(token).await? {
                return Ok(p);
            }
        }
        if self.inner.allow_anonymous {
            return Ok(Principal::anonymous());
        }
        let message = if candidates.is_empty() && !has_credentials(headers) {
            "missing token: send `Authorization: Bearer crl_…` or `x-api-key: crl_…`"
        } else {
            "invalid token"
        };
        Err(GatewayError::new(ErrorKind::Unauthorized, message))
    }

    /// Forgets a user's cached token at once (deactivated, rotated, deleted) and makes
    /// the next lookup reload from the database.
    pub fn invalidate_user(&self, name: &str) {
        let mut snap = self.inner.snapshot.write();
        snap.by_hash.retain(|_, (_, p)| p.name != name);
        snap.loaded_at = None;
    }

    async fn lookup(&self, token: &str) -> Result<Lookup, GatewayError> {
        let digest = token_digest(token);
        let (hit, age) = self.cached(&digest);
        let ttl = self.inner.ttl;
        let fresh = age.is_some_and(|a| a < ttl);
        let recent_miss_reload = age.is_some_and(|a| a < MISS_RELOAD_INTERVAL);
        let hit = match hit {
            Some(p) if fresh => return Ok(Lookup::Found(p)),
            None if recent_miss_reload => return Ok(Lookup::Unknown),
            stale => stale,
        };
        match self.reload(age).await {
            Ok(()) => Ok(match self.cached(&digest).0 {
                Some(p) => Lookup::Found(p),
                None => Lookup::Unknown,
            }),
            Err(e) => {
                let grace = ttl * STALE_GRACE_TTLS;
                match hit {
                    Some(p) if age.is_some_and(|a| a < grace) => {
                        tracing::warn!(error = %e, "user table unreachable; using cached users");
                        Ok(Lookup::Found(p))
                    }
                    _ => {
                        tracing::error!(error = %e, "cannot verify a token: user table unreachable");
                        Err(GatewayError::new(
                            ErrorKind::Internal,
                            "cannot verify the token right now: the user database is unavailable",
                        ))
                    }
                }
            }
        }
    }

    /// The cached principal for `digest` (compared in constant time) and the cache's age.
    fn cached(&self, digest: &[u8; 32]) -> (Option<Principal>, Option<Duration>) {
        let snap = self.inner.snapshot.read();
        let age = snap.loaded_at.map(|t| t.elapsed());
        // The map is keyed by the digest; the explicit constant-time check keeps the
        // final comparison free of early exits whatever the map does internally.
        let hit = snap
            .by_hash
            .get(digest)
            .filter(|(stored, _)| bool::from(stored.as_slice().ct_eq(digest.as_slice())))
            .map(|(_, p)| p.clone());
        (hit, age)
    }

    /// Reloads every active user unless another task already did while we waited.
    async fn reload(&self, seen_age: Option<Duration>) -> Result<(), crate::store::StoreError> {
        let _guard = self.inner.reload.lock().await;
        let now_age = self.inner.snapshot.read().loaded_at.map(|t| t.elapsed());
        let reloaded_meanwhile = match (seen_age, now_age) {
            (Some(before), Some(now)) => now < before,
            (None, Some(_)) => true,
            _ => false,
        };
        if reloaded_meanwhile {
            return Ok(());
        }
        let failed_at = self.inner.snapshot.read().failed_at;
        if failed_at.is_some_and(|t| t.elapsed() < MISS_RELOAD_INTERVAL) {
            return Err(crate::store::StoreError::Unavailable(
                "the last reload failed moments ago".into(),
            ));
        }
        let started = Instant::now();
        let active = match self.inner.store.run(users::active).await {
            Ok(a) => a,
            Err(e) => {
                self.inner.snapshot.write().failed_at = Some(Instant::now());
                return Err(e);
            }
        };
        let by_hash = active
            .iter()
            .filter_map(|u| {
                let bytes: [u8; 32] = hex_decode(&u.token_hash).try_into().ok()?;
                Some((bytes, (bytes, Principal::from_user(u))))
            })
            .collect();
        let mut snap = self.inner.snapshot.write();
        snap.by_hash = by_hash;
        snap.loaded_at = Some(started);
        snap.failed_at = None;
        Ok(())
    }
}

/// Well-formed tokens from `Authorization: Bearer` then `x-api-key`, in that order.
fn candidates(headers: &HeaderMap) -> Vec<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let api_key = headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let mut out = Vec::with_capacity(2);
    for t in [bearer, api_key].into_iter().flatten() {
        if looks_like_token(t) && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// A static name: looking a header up by `&str` parses (and, for a name outside the
/// standard set, allocates) the name on every request.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key(X_API_KEY)
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_comes_before_x_api_key_and_junk_is_ignored() {
        let a = users::new_token();
        let b = users::new_token();
        let h = headers(&[("authorization", &format!("bearer {a}")), ("x-api-key", &b)]);
        assert_eq!(candidates(&h), vec![a.clone(), b]);
        let h = headers(&[("authorization", "Bearer ' OR 1=1; --"), ("x-api-key", &a)]);
        assert_eq!(candidates(&h), vec![a.clone()]);
        let h = headers(&[("authorization", &format!("Basic {a}"))]);
        assert!(candidates(&h).is_empty());
        assert!(has_credentials(&h));
    }

    #[test]
    fn hex_round_trips() {
        let d = token_digest("x");
        assert_eq!(hex_decode(&users::hex(&d)), d.to_vec());
    }

    #[test]
    fn only_admins_pass_require_admin() {
        let mut p = Principal::anonymous();
        assert_eq!(require_admin(&p).unwrap_err().kind, ErrorKind::Forbidden);
        p.admin = true;
        assert!(require_admin(&p).is_ok());
    }
}
