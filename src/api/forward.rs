//! Place and send with failover: the placed backend, then others, then the model's
//! fallbacks, until an upstream has answered with its first body bytes.

use std::time::{Duration, Instant};

use std::sync::Arc;

use actix_web::web::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::Gateway;
use crate::error::{ErrorKind, GatewayError};
use crate::keys::{KeyLease, KeyOutcome};
use crate::routing::fleet::{BackendInfo, FailureReason, Lease, PlaceRequest};
use crate::upstream::classify::KeyBlame;
use crate::upstream::{self, BodyStream, Call, UpstreamClients};

/// An upstream that answered 2xx and has produced its first body bytes.
pub struct Served {
    pub lease: Lease,
    /// The upstream key used, for keyed backends; told the token count at the end.
    pub key: Option<KeyLease>,
    /// The model that is actually serving (after aliases and fallbacks).
    pub model: String,
    pub status: actix_web::http::StatusCode,
    pub first: Option<Bytes>,
    pub body: BodyStream,
    pub ttfb: Duration,
    /// What a whole-read answer holds of `server.max_buffered_answers`, given back on drop.
    pub buffered: upstream::Claim,
}

impl Served {
    pub fn backend(&self) -> &BackendInfo {
        &self.lease.backend
    }
}

/// The body of an upstream answer, for the relay, and the backend it comes from.
pub struct Upstream {
    pub backend: Arc<BackendInfo>,
    pub first: Option<Bytes>,
    pub body: BodyStream,
    /// What a whole-read answer holds of `server.max_buffered_answers`, given back on drop.
    pub buffered: upstream::Claim,
}

/// What the failover loop did, noted as it happens and counted by the request's finish
/// (`api/finish.rs`):
/// `corral_upstream_errors_total`, `corral_failovers_total` and the upstream keys'
/// `corral_rate_limited_total`. Allocates only when an attempt fails.
#[derive(Debug, Default, PartialEq)]
pub struct Attempts {
    /// Each failed attempt: the backend's name and why.
    pub(super) failed: Vec<(String, FailureReason)>,
    /// Each move to another backend, by the reason of the attempt that failed.
    pub(super) failovers: Vec<FailureReason>,
    /// Moves to the next fallback model.
    pub(super) fallbacks: u64,
    /// Attempts an upstream refused because of the key's rate or usage limit.
    pub(super) keys_rate_limited: u64,
}

impl Attempts {
    /// An attempt on `backend` failed for `reason`.
    pub fn failed(&mut self, backend: &BackendInfo, reason: FailureReason) {
        self.failed.push((backend.name.clone(), reason));
    }

    /// The request moves on to another backend after an attempt that failed for `reason`.
    pub fn failed_over(&mut self, reason: FailureReason) {
        self.failovers.push(reason);
    }

    /// The request moves on to the next fallback model.
    pub fn fell_back(&mut self) {
        self.fallbacks += 1;
    }

    /// The upstream refused the attempt's key for its rate or usage limit.
    pub fn key_rate_limited(&mut self) {
        self.keys_rate_limited += 1;
    }
}

/// Places `model` (then its fallbacks) and sends the call `build` makes for each backend,
/// moving on after any retryable failure until the first body bytes are in hand. A failed
/// attempt is reported to the placer at once (the next placement must see it) and noted
/// in `attempts`, which the request's finish counts.
pub async fn open(
    gw: &Gateway,
    clients: &UpstreamClients,
    model: &str,
    build: &dyn Fn(&BackendInfo, &str) -> Result<Call, GatewayError>,
    attempts: &mut Attempts,
) -> Result<Served, GatewayError> {
    let fallbacks = gw.config.routing.fallbacks.get(model);
    let chain = std::iter::once(model).chain(fallbacks.into_iter().flatten().map(String::as_str));
    let mut last: Option<GatewayError> = None;
    let mut resends = upstream::Resends::default();
    for (step, candidate) in chain.enumerate() {
        if step > 0 {
            attempts.fell_back();
        }
        match try_model(gw, clients, candidate, build, &mut resends, attempts).await {
            Ok(served) => return Ok(served),
            Err(e)
                if e.retryable || matches!(e.kind, ErrorKind::NotFound | ErrorKind::NoCapacity) =>
            {
                // An unknown fallback must not hide that the requested model failed.
                let keep_previous = step > 0 && e.kind == ErrorKind::NotFound && last.is_some();
                if !keep_previous {
                    last = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        GatewayError::new(
            ErrorKind::NoCapacity,
            format!("no backend can serve \"{model}\""),
        )
    }))
}

async fn try_model(
    gw: &Gateway,
    clients: &UpstreamClients,
    model: &str,
    build: &dyn Fn(&BackendInfo, &str) -> Result<Call, GatewayError>,
    resends: &mut upstream::Resends,
    attempts: &mut Attempts,
) -> Result<Served, GatewayError> {
    let mut exclude = Vec::new();
    let mut last: Option<GatewayError> = None;
    for _ in 0..gw.config.routing.max_attempts {
        let place = PlaceRequest {
            model,
            exclude: &exclude,
        };
        let lease = match gw.fleet.place(place).await {
            Ok(l) => l,
            // Nothing left to try: report the last real failure if there was one.
            Err(e) => return Err(last.unwrap_or(e)),
        };
        let backend = lease.backend.clone();
        match try_backend(gw, clients, lease, build, resends, attempts).await {
            Ok(served) => return Ok(served),
            Err(mut f) => {
                if !f.retryable || !resends.allow(&backend, &mut f) {
                    return Err(f);
                }
                exclude.push(backend.id);
                attempts.failed_over(f.failure_reason());
                last = Some(f);
            }
        }
    }
    Err(last.unwrap_or_else(|| GatewayError::new(ErrorKind::NoCapacity, "no attempt left")))
}

/// How many keys one request may burn through on one backend before moving on.
const KEY_TRIES: usize = 8;

/// One placed backend: with a keyed backend, a 429 or a bad key is retried at once with
/// another key, invisibly to the client, while keys remain.
async fn try_backend(
    gw: &Gateway,
    clients: &UpstreamClients,
    lease: Lease,
    build: &dyn Fn(&BackendInfo, &str) -> Result<Call, GatewayError>,
    resends: &mut upstream::Resends,
    attempts: &mut Attempts,
) -> Result<Served, GatewayError> {
    let backend = lease.backend.clone();
    let model = lease.model.clone();
    let Some(client) = clients.get(backend.id) else {
        return Err(GatewayError::internal("backend has no client").unsent(FailureReason::Protocol));
    };
    let mut tries = 0;
    // Keys the upstream refused in this request: counted once each, never sent again.
    let mut refused: Vec<KeyLease> = Vec::new();
    let mut last_refusal: Option<GatewayError> = None;
    loop {
        tries += 1;
        let key = match &backend.config.key_pool {
            Some(pool) => match gw.keys.pick_avoiding(pool, &model, &refused) {
                Ok(k) => Some(k),
                // No key left that was not refused: say what the upstream said.
                Err(e) if e.kind == ErrorKind::NoCapacity && last_refusal.is_some() => {
                    return Err(last_refusal
                        .take()
                        .unwrap_or_else(|| e.attempt(FailureReason::Overloaded)));
                }
                Err(e) => {
                    // Every key cooling down: another backend may still serve.
                    lease.failed(FailureReason::Overloaded);
                    let retryable =
                        e.kind != ErrorKind::RateLimited || gw.fleet.backends().len() > 1;
                    return Err(e
                        .with_retryable(retryable)
                        .unsent(FailureReason::Overloaded));
                }
            },
            None => None,
        };
        let mut call = build(&backend, &model).map_err(|e| e.unsent(FailureReason::Client4xx))?;
        if let Some(h) = upstream::credential(&backend, key.as_ref().map(|k| k.secret())) {
            call.headers.push(h);
        }
        resends.sending(&gw.metrics);
        let sent_at = Instant::now();
        let deadline = sent_at + backend.config.first_byte_timeout;
        let mut failure = match upstream::send(client, &backend, call, deadline).await {
            Ok(mut opened) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, opened.body.next()).await {
                    Ok(first @ (None | Some(Ok(_)))) => {
                        return Ok(Served {
                            lease,
                            key,
                            model,
                            status: opened.status,
                            first: first.and_then(Result::ok),
                            body: opened.body,
                            ttfb: sent_at.elapsed(),
                            buffered: gw.answers.claim(),
                        });
                    }
                    Ok(Some(Err(e))) => GatewayError::new(
                        ErrorKind::UpstreamProtocol,
                        format!("backend {} broke off: {e}", backend.name),
                    )
                    .with_cause(e)
                    .attempt(FailureReason::Protocol),
                    // `opened` is dropped with its connection: the upstream sees the close.
                    Err(_) => GatewayError::new(
                        ErrorKind::UpstreamTimeout,
                        format!("backend {} sent no answer in time", backend.name),
                    )
                    .attempt(FailureReason::Timeout),
                }
            }
            Err(f) => f,
        };
        let reason = failure.failure_reason();
        attempts.failed(&backend, reason);
        if let Some(k) = &key {
            if let Some(outcome) = key_outcome(&failure, &model) {
                if matches!(outcome, KeyOutcome::RateLimited { .. }) {
                    attempts.key_rate_limited();
                }
                let auth_failed = outcome == KeyOutcome::AuthFailed;
                if auth_failed {
                    refused.push(k.clone());
                }
                gw.keys.report(k, outcome);
                if tries < KEY_TRIES && resends.allow(&backend, &mut failure) {
                    tracing::info!(backend = %backend.name, key = %k.prefix(), "upstream key refused; trying another key");
                    if auth_failed {
                        last_refusal = Some(failure);
                    }
                    continue;
                }
            }
        }
        if key.is_none() || !matches!(failure.upstream_status, Some(401 | 403 | 429)) {
            lease.failed(reason);
        }
        tracing::warn!(backend = %backend.name, model = %model, reason = reason.as_str(), "upstream attempt failed: {failure}");
        return Err(failure);
    }
}

/// What an upstream failure says about the key that was used; `None`: not the key's fault
/// (5xx, 529 and the rest are the backend's health, never the key's).
fn key_outcome(f: &GatewayError, model: &str) -> Option<KeyOutcome> {
    match upstream::classify::classify(f.upstream_status?, &f.upstream_text).key {
        KeyBlame::RateLimited | KeyBlame::UsageLimited => Some(KeyOutcome::RateLimited {
            retry_after: f.retry_after,
            body: f.upstream_text.to_string(),
        }),
        KeyBlame::ModelDenied => Some(KeyOutcome::ModelDenied {
            model: model.to_string(),
        }),
        KeyBlame::AuthFailed => Some(KeyOutcome::AuthFailed),
        KeyBlame::None => None,
    }
}

/// Reads a whole (non-streamed) upstream answer within the idle limit and the backend's
/// `answer_timeout`, holding its bytes against `server.max_buffered_answers`.
pub async fn collect(served: &mut Upstream, limit: usize) -> Result<Bytes, GatewayError> {
    let config = &served.backend.config;
    let (idle, deadline) = (config.idle_timeout, Instant::now() + config.answer_timeout);
    let name = served.backend.name.clone();
    let mut buf = BytesMut::new();
    let mut next = served.first.take();
    loop {
        let chunk = match next.take() {
            Some(chunk) => chunk,
            None => {
                let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(wait, served.body.next()).await {
                    Err(_) if Instant::now() >= deadline => {
                        return Err(GatewayError::new(
                            ErrorKind::UpstreamTimeout,
                            format!("backend {name} did not finish its answer in time"),
                        ));
                    }
                    Err(_) => {
                        return Err(GatewayError::new(
                            ErrorKind::UpstreamTimeout,
                            format!("backend {name} stopped responding"),
                        ));
                    }
                    Ok(None) => return Ok(buf.freeze()),
                    Ok(Some(Err(e))) => {
                        return Err(GatewayError::new(
                            ErrorKind::UpstreamProtocol,
                            format!("backend {name} broke off: {e}"),
                        )
                        .with_cause(e));
                    }
                    Ok(Some(Ok(chunk))) => chunk,
                }
            }
        };
        if buf.len() + chunk.len() > limit {
            return Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                format!("upstream answer larger than {limit} bytes"),
            ));
        }
        if !served.buffered.grow(chunk.len()) {
            return Err(GatewayError::new(
                ErrorKind::NoCapacity,
                "too many answers are being buffered (server.max_buffered_answers); try again",
            )
            .with_retryable(false));
        }
        buf.extend_from_slice(&chunk);
    }
}
