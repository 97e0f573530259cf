//! The end of every request: metrics, the request-log row, key usage, rate-limit
//! reconciliation, lease release and the serving backend's health are written here and
//! nowhere else, once, when the request's [`Record`] is dropped - after a whole answer,
//! at the end of a stream, on an error, or when the client goes away mid-way. (The one
//! thing said earlier: a failed attempt's health goes to the placer at once, by the
//! failover loop, which notes the attempt in `forward::Attempts` for the metrics counted
//! here.)
//!
//! Deciding what to write ([`State::settle`]) is pure and unit-tested per outcome; writing
//! it ([`finish`]) has nothing left to decide.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponseBuilder};

use crate::Gateway;
use crate::actors::log_writer::RequestRecord;
use crate::api::dedup::{How, Spent};
use crate::api::forward::{Attempts, Served, Upstream};
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::keys::{KeyLease, KeyOutcome};
use crate::ratelimit::Reservation;
use crate::routing::fleet::{BackendInfo, FailureReason, Lease};

/// One request's accounting, settled by [`finish`] when it is dropped.
pub struct Record {
    gw: web::Data<Gateway>,
    state: State,
}

impl Record {
    /// Starts the record of a request that `user` sent for `model`; the request id is
    /// taken (not copied) from the request's extensions.
    pub fn new(
        gw: web::Data<Gateway>,
        req: &HttpRequest,
        dialect: Dialect,
        user: String,
        model: String,
        body: Bytes,
    ) -> Record {
        let (request_id, client_request_id) = req
            .extensions_mut()
            .remove::<crate::api::RequestId>()
            .map(|r| (r.0, r.1))
            .unwrap_or_default();
        let mut state = State::new(request_id, dialect, user, model);
        state.client_request_id = client_request_id;
        state.client_ip = req.peer_addr().map(|a| a.ip());
        state.body = Some(body);
        Record { gw, state }
    }
}

impl Deref for Record {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Record {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let settled = self.state.settle();
        finish(&self.gw, settled);
    }
}

/// What the phases learn about a request, in the order they learn it. The fields are
/// private: the phases say what happened through the methods below.
pub struct State {
    request_id: String,
    /// The client's own `x-request-id`, kept in its own column.
    client_request_id: Option<String>,
    dialect: Dialect,
    started: Instant,
    user: String,
    client_ip: Option<IpAddr>,
    requested_model: String,
    /// Set for the virtual `auto` model.
    category: Option<String>,
    /// The request body, for token estimates and (when enabled) the request log.
    body: Option<Bytes>,
    reservation: Option<Reservation>,
    /// Who served: backend and model names, filled in once an upstream answered (or from
    /// the shared answer of a duplicate).
    backend: String,
    served_model: String,
    key: Option<KeyLease>,
    /// The key's id, named in the row whatever the outcome.
    key_id: Option<String>,
    lease: Option<Lease>,
    /// Time to the upstream's first byte, for the backend's latency averages.
    upstream_ttfb: Duration,
    /// Time from the start of the request until the answer began.
    ttfb: Option<Duration>,
    /// What the failover loop tried before an upstream answered (or all failed).
    attempts: Attempts,
    outcome: Outcome,
}

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    /// Nothing settled it: the client went away first.
    Open,
    /// Answered in full; the tokens when the upstream said.
    Answered { tokens: Option<(u64, u64)> },
    /// Failed with `status`. `health` is what the failure says about the serving backend
    /// (`None` when no backend is to blame); `tokens` what was streamed before it.
    Failed {
        status: u16,
        error: String,
        health: Option<FailureReason>,
        tokens: Option<(u64, u64)>,
    },
    /// A duplicate answered with another request's answer.
    Shared {
        how: How,
        status: u16,
        tokens: Option<(u64, u64)>,
        error: Option<String>,
    },
}

/// What a settled request tells the serving backend's health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Health {
    Succeeded { ttfb: Duration, total: Duration },
    Failed(FailureReason),
}

/// Everything [`finish`] writes, decided by [`State::settle`].
pub struct Settlement {
    row: RequestRecord,
    /// Token counter increments (none for a shared answer: its tokens were counted once).
    counted_tokens: Option<(u64, u64)>,
    ttfb: Option<Duration>,
    duration: Duration,
    shared: Option<How>,
    attempts: Attempts,
    key: Option<(KeyLease, KeyOutcome)>,
    lease: Option<Lease>,
    health: Option<Health>,
    reservation: Option<Reservation>,
    /// Tokens the request is charged for by the rate limiter.
    used_tokens: u64,
}

impl State {
    pub fn new(request_id: String, dialect: Dialect, user: String, model: String) -> State {
        State {
            request_id,
            client_request_id: None,
            dialect,
            started: Instant::now(),
            user,
            client_ip: None,
            requested_model: model,
            category: None,
            body: None,
            reservation: None,
            backend: String::new(),
            served_model: String::new(),
            key: None,
            key_id: None,
            lease: None,
            upstream_ttfb: Duration::ZERO,
            ttfb: None,
            attempts: Attempts::default(),
            outcome: Outcome::Open,
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }

    /// The model name the client sent.
    pub fn requested(&self) -> &str {
        &self.requested_model
    }

    /// The model that serves (after aliases and fallbacks).
    pub fn served_model(&self) -> &str {
        &self.served_model
    }

    /// The model the client sent, and where the failover loop notes its attempts.
    pub fn for_attempts(&mut self) -> (&str, &mut Attempts) {
        (&self.requested_model, &mut self.attempts)
    }

    /// The user's rate-limit grant, reconciled with the real token count at the end.
    pub fn reserve(&mut self, grant: Reservation) {
        self.reservation = Some(grant);
    }

    pub fn set_category(&mut self, category: String) {
        self.category = Some(category);
    }

    /// An upstream answered: its lease, key and names are kept for the end; the body
    /// goes on to the relay.
    pub fn served(&mut self, served: Served) -> Upstream {
        let Served {
            lease,
            key,
            model,
            first,
            body,
            ttfb,
            buffered,
            ..
        } = served;
        let backend = lease.backend.clone();
        self.backend.clone_from(&backend.name);
        self.served_model = model;
        self.key_id = key.as_ref().map(|k| k.id.clone());
        self.key = key;
        self.lease = Some(lease);
        self.upstream_ttfb = ttfb;
        self.ttfb = Some(self.started.elapsed());
        Upstream {
            backend,
            first,
            body,
            buffered,
        }
    }

    /// The whole answer went out.
    pub fn answered(&mut self, tokens: Option<(u64, u64)>) {
        self.outcome = Outcome::Answered { tokens };
    }

    /// The request failed with `status`; `health` blames the serving backend.
    pub fn failed(
        &mut self,
        status: u16,
        e: &GatewayError,
        health: Option<FailureReason>,
        tokens: Option<(u64, u64)>,
    ) {
        self.outcome = Outcome::Failed {
            status,
            error: e.message.clone(),
            health,
            tokens,
        };
    }

    /// A duplicate got another request's answer, sent by `backend` serving `model`.
    #[allow(clippy::too_many_arguments)]
    pub fn shared(
        &mut self,
        how: How,
        status: u16,
        backend: Option<String>,
        model: Option<String>,
        category: Option<String>,
        tokens: Option<(u64, u64)>,
        error: Option<String>,
    ) {
        self.backend = backend.unwrap_or_default();
        self.served_model = model.unwrap_or_default();
        self.category = category;
        self.ttfb = Some(self.started.elapsed());
        self.outcome = Outcome::Shared {
            how,
            status,
            tokens,
            error,
        };
    }

    /// The answer headers that say who served, and for a whole answer the tokens it cost
    /// (read back by duplicate suppression for the followers' rows).
    pub fn served_headers(
        &self,
        resp: &mut HttpResponseBuilder,
        backend: &BackendInfo,
        tokens: Option<(u64, u64)>,
    ) {
        if let Some((tin, tout)) = tokens {
            resp.extensions_mut().insert(Spent(tin, tout));
        }
        // Names and fixed values are static: nothing to parse or check per request.
        if let Some(c) = self.category.as_deref() {
            resp.insert_header((HeaderName::from_static("x-corral-category"), c));
        }
        if let Some(name) = &backend.name_header {
            resp.insert_header((HeaderName::from_static("x-corral-backend"), name.clone()));
        }
        resp.insert_header((
            HeaderName::from_static("x-corral-model"),
            self.served_model.as_str(),
        ))
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ));
    }

    /// Decides everything the end of this request writes. Takes the strings over instead
    /// of copying them: the state is being dropped.
    pub fn settle(&mut self) -> Settlement {
        let take = std::mem::take::<String>;
        let some = |s: &mut String| (!s.is_empty()).then(|| take(s));
        let outcome = std::mem::replace(&mut self.outcome, Outcome::Open);
        let (status, error, tokens, shared, health) = match outcome {
            Outcome::Open => (
                499,
                Some("client closed the connection".to_string()),
                None,
                None,
                None,
            ),
            Outcome::Answered { tokens } => {
                let health = Health::Succeeded {
                    ttfb: self.upstream_ttfb,
                    total: self.started.elapsed(),
                };
                (200, None, tokens, None, Some(health))
            }
            Outcome::Failed {
                status,
                error,
                health,
                tokens,
            } => (
                status,
                Some(error),
                tokens,
                None,
                health.map(Health::Failed),
            ),
            Outcome::Shared {
                how,
                status,
                tokens,
                error,
            } => (status, error, tokens, Some(how), None),
        };
        let used_tokens = tokens.map_or(0, |(i, o)| i + o);
        // An answer cut off before the upstream counted it may have cost its whole
        // reservation: a client must not free its limit by hanging up.
        let charged = match tokens {
            Some(_) => used_tokens,
            None if self.backend.is_empty() => 0,
            None => self.reservation.as_ref().map_or(0, |r| r.estimated()),
        };
        // A key's usage counts what it served; failures were reported by the attempt.
        let key = self.key.take().and_then(|k| {
            let ok = matches!(health, Some(Health::Succeeded { .. }));
            ok.then_some((
                k,
                KeyOutcome::Ok {
                    tokens: used_tokens,
                },
            ))
        });
        let lease = self.lease.take();
        let body_len = self.body.as_ref().map_or(0, |b| b.len());
        let (tokens_in, tokens_out, estimated) = match tokens {
            Some((i, o)) => (i, o, false),
            // Never reached a backend: nothing was consumed.
            None if self.backend.is_empty() => (0, 0, false),
            None => (crate::ir::estimate_tokens(body_len), 0, true),
        };
        let duration = self.started.elapsed();
        let row = RequestRecord {
            request_id: take(&mut self.request_id),
            time: chrono::Utc::now(),
            user: take(&mut self.user),
            client_ip: self.client_ip,
            dialect: self.dialect.label(),
            model_requested: take(&mut self.requested_model),
            model_served: some(&mut self.served_model),
            backend: some(&mut self.backend),
            key_id: self.key_id.take(),
            status,
            tokens_in,
            tokens_out,
            tokens_estimated: estimated,
            shared: shared.is_some(),
            ttfb_ms: self.ttfb.map(|t| t.as_millis() as u64),
            duration_ms: duration.as_millis() as u64,
            error,
            category: self.category.take(),
            body: self.body.take(),
            client_request_id: self.client_request_id.take(),
        };
        Settlement {
            row,
            counted_tokens: tokens.filter(|_| shared.is_none()),
            ttfb: self.ttfb,
            duration,
            shared,
            attempts: std::mem::take(&mut self.attempts),
            key,
            health,
            lease,
            reservation: self.reservation.take(),
            used_tokens: charged,
        }
    }
}

/// What a failure mid-answer says about the backend that was sending it.
pub fn health_of(e: &GatewayError) -> FailureReason {
    e.failure_reason()
}

/// Writes what `s` decided: the only place a request's outcome is recorded.
fn finish(gw: &web::Data<Gateway>, s: Settlement) {
    let m = &gw.metrics;
    let row = &s.row;
    let dialect = row.dialect;
    // Only placed models are label values; unknown client strings are not.
    let model = row.model_served.as_deref().unwrap_or("-");
    let backend = row.backend.as_deref().unwrap_or("-");
    // Three-digit statuses (all of them, in practice) without a String per request.
    let digits = [100, 10, 1].map(|d| b'0' + (row.status / d % 10) as u8);
    let other;
    let status = match std::str::from_utf8(&digits) {
        Ok(three) if (100..1000).contains(&row.status) => three,
        _ => {
            other = row.status.to_string();
            other.as_str()
        }
    };
    m.requests
        .with_label_values(&[dialect, model, backend, status])
        .inc();
    m.request_duration
        .with_label_values(&[dialect, model])
        .observe(s.duration.as_secs_f64());
    if let Some(t) = s.ttfb {
        m.ttfb
            .with_label_values(&[dialect, model])
            .observe(t.as_secs_f64());
    }
    if let Some((tin, tout)) = s.counted_tokens {
        m.tokens
            .with_label_values(&["in", model, backend])
            .inc_by(tin);
        m.tokens
            .with_label_values(&["out", model, backend])
            .inc_by(tout);
    }
    if let Some(how) = s.shared {
        m.dedup_shared.with_label_values(&[how.as_str()]).inc();
    }
    let a = &s.attempts;
    for (backend, reason) in &a.failed {
        m.upstream_errors
            .with_label_values(&[backend.as_str(), reason.as_str()])
            .inc();
    }
    for reason in &a.failovers {
        m.failovers.with_label_values(&[reason.as_str()]).inc();
    }
    if a.fallbacks > 0 {
        m.failovers
            .with_label_values(&["fallback"])
            .inc_by(a.fallbacks);
    }
    if a.keys_rate_limited > 0 {
        m.rate_limited
            .with_label_values(&["key"])
            .inc_by(a.keys_rate_limited);
    }
    if let Some((key, outcome)) = s.key {
        gw.keys.report(&key, outcome);
    }
    if let Some(lease) = s.lease {
        match s.health {
            Some(Health::Succeeded { ttfb, total }) => lease.succeeded(ttfb, total),
            Some(Health::Failed(reason)) => lease.failed(reason),
            None => {}
        }
        // Dropping the lease gives its in-flight slot and memory back.
    }
    if let Some(grant) = s.reservation {
        // Only a correction that must go to Redis is worth a task.
        if let Some(correction) = gw.limiter.reconcile_local(&grant, s.used_tokens) {
            let gw = gw.clone();
            actix_web::rt::spawn(async move { gw.limiter.reconcile_shared(correction).await });
        }
    }
    gw.logs.submit(s.row);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn state() -> State {
        let mut s = State::new(
            "req-1".into(),
            Dialect::OpenAi,
            "alice".into(),
            "big".into(),
        );
        s.body = Some(Bytes::from(vec![b'x'; 400]));
        s
    }

    /// What `served` records, without a live fleet behind the lease.
    fn serve(s: &mut State, backend: &str, model: &str) {
        s.backend = backend.into();
        s.served_model = model.into();
        s.key_id = Some("key-7".into());
        s.upstream_ttfb = Duration::from_millis(5);
        s.ttfb = Some(Duration::from_millis(6));
    }

    fn upstream_error() -> GatewayError {
        GatewayError::new(ErrorKind::UpstreamStatus, "backend a: boom")
    }

    #[test]
    fn success_counts_tokens_reports_health_and_names_the_key() {
        let mut s = state();
        serve(&mut s, "a", "big:7b");
        s.answered(Some((3, 5)));
        let done = s.settle();
        let row = &done.row;
        assert_eq!(row.status, 200);
        assert_eq!(
            (row.tokens_in, row.tokens_out, row.tokens_estimated),
            (3, 5, false)
        );
        assert_eq!(row.backend.as_deref(), Some("a"));
        assert_eq!(row.model_served.as_deref(), Some("big:7b"));
        assert_eq!(row.model_requested, "big");
        assert_eq!(row.key_id.as_deref(), Some("key-7"));
        assert_eq!(row.error, None);
        assert!(!row.shared);
        assert_eq!(done.counted_tokens, Some((3, 5)));
        assert_eq!(done.used_tokens, 8);
        assert!(matches!(
            done.health,
            Some(Health::Succeeded { ttfb, .. }) if ttfb == Duration::from_millis(5)
        ));
        assert!(done.shared.is_none());
    }

    #[test]
    fn an_upstream_error_before_the_first_byte_blames_no_backend_and_costs_nothing() {
        let mut s = state();
        s.failed(502, &upstream_error(), None, None);
        let done = s.settle();
        assert_eq!(done.row.status, 502);
        assert_eq!(done.row.error.as_deref(), Some("backend a: boom"));
        assert_eq!(done.row.backend, None);
        assert_eq!(done.row.model_served, None);
        assert_eq!((done.row.tokens_in, done.row.tokens_estimated), (0, false));
        assert_eq!(done.row.ttfb_ms, None);
        assert_eq!(done.counted_tokens, None);
        assert_eq!(done.used_tokens, 0);
        // The failed attempts were reported by the failover loop, at once.
        assert_eq!(done.health, None);
    }

    #[test]
    fn an_upstream_error_after_the_first_byte_fails_the_backend_and_keeps_partial_usage() {
        let mut s = state();
        serve(&mut s, "a", "big:7b");
        let idle = GatewayError::new(ErrorKind::UpstreamTimeout, "backend a stopped responding");
        s.failed(502, &idle, Some(health_of(&idle)), Some((3, 1)));
        let done = s.settle();
        assert_eq!(done.row.status, 502);
        assert_eq!(done.row.backend.as_deref(), Some("a"));
        assert_eq!((done.row.tokens_in, done.row.tokens_out), (3, 1));
        assert_eq!(done.health, Some(Health::Failed(FailureReason::Timeout)));
        assert!(
            done.key.is_none(),
            "a failed answer is no usage for the key"
        );

        let mut s = state();
        serve(&mut s, "a", "big:7b");
        let garbage = GatewayError::new(ErrorKind::UpstreamProtocol, "upstream sent invalid JSON");
        s.failed(502, &garbage, Some(health_of(&garbage)), None);
        let done = s.settle();
        assert_eq!(done.health, Some(Health::Failed(FailureReason::Protocol)));
        assert!(done.row.tokens_estimated, "the upstream read the prompt");
        assert_eq!(done.row.tokens_in, crate::ir::estimate_tokens(400));
    }

    #[test]
    fn a_client_gone_mid_answer_is_a_499_that_blames_no_backend() {
        let mut s = state();
        serve(&mut s, "a", "big:7b");
        let done = s.settle();
        assert_eq!(done.row.status, 499);
        assert_eq!(
            done.row.error.as_deref(),
            Some("client closed the connection")
        );
        assert_eq!(done.row.backend.as_deref(), Some("a"));
        assert!(done.row.tokens_estimated);
        assert_eq!(done.health, None);
        assert!(done.key.is_none());

        // Gone before any upstream was asked (waiting for a duplicate's leader).
        let done = state().settle();
        assert_eq!(done.row.status, 499);
        assert_eq!((done.row.tokens_in, done.row.tokens_estimated), (0, false));
    }

    #[test]
    fn a_limiter_refusal_is_recorded_with_its_status_and_nothing_else() {
        let mut s = state();
        let e = GatewayError::new(ErrorKind::RateLimited, "rate limit: 1 requests per minute")
            .with_retry_after(Duration::from_secs(30));
        s.failed(e.status(Dialect::OpenAi).as_u16(), &e, None, None);
        let done = s.settle();
        assert_eq!(done.row.status, 429);
        assert_eq!(done.row.backend, None);
        assert_eq!(done.row.ttfb_ms, None);
        assert!(done.reservation.is_none(), "nothing was reserved");
        assert_eq!(done.health, None);
        assert_eq!(done.used_tokens, 0);
    }

    #[test]
    fn a_duplicate_follower_logs_the_shared_tokens_but_does_not_count_them_again() {
        let mut s = state();
        s.shared(
            How::Inflight,
            200,
            Some("a".into()),
            Some("big:7b".into()),
            Some("code".into()),
            Some((3, 5)),
            None,
        );
        let done = s.settle();
        assert_eq!(done.row.status, 200);
        assert!(done.row.shared);
        assert_eq!((done.row.tokens_in, done.row.tokens_out), (3, 5));
        assert_eq!(done.row.backend.as_deref(), Some("a"));
        assert_eq!(done.row.category.as_deref(), Some("code"));
        assert_eq!(done.counted_tokens, None);
        assert_eq!(done.shared, Some(How::Inflight));
        assert_eq!(
            done.health, None,
            "the leader reported the backend's health"
        );
        assert!(done.key.is_none());
        // The follower's user is charged like any other request.
        assert_eq!(done.used_tokens, 8);
    }

    /// A backend as the failover loop names it.
    fn backend(name: &str) -> BackendInfo {
        BackendInfo {
            id: 0,
            name: name.into(),
            name_header: None,
            base_url: "http://127.0.0.1:1".into(),
            config: crate::config::BackendConfig::default(),
        }
    }

    #[test]
    fn after_a_failover_only_the_serving_backend_and_model_are_recorded() {
        let mut s = state();
        // Backend "a" failed before the first byte (its health went to the placer at once),
        // the failover found no other backend for "big", and the fallback model on "b"
        // served.
        let (requested, attempts) = s.for_attempts();
        assert_eq!(requested, "big");
        attempts.failed(&backend("a"), FailureReason::Status5xx);
        attempts.failed_over(FailureReason::Status5xx);
        attempts.fell_back();
        serve(&mut s, "b", "small:1b");
        s.answered(Some((2, 2)));
        let done = s.settle();
        assert_eq!(done.row.status, 200);
        assert_eq!(done.row.backend.as_deref(), Some("b"));
        assert_eq!(done.row.model_served.as_deref(), Some("small:1b"));
        assert_eq!(done.row.model_requested, "big");
        assert_eq!(done.row.error, None);
        assert!(matches!(done.health, Some(Health::Succeeded { .. })));
        // The attempts are counted once, at the end, whatever served.
        assert_eq!(
            done.attempts.failed,
            [("a".to_string(), FailureReason::Status5xx)]
        );
        assert_eq!(done.attempts.failovers, [FailureReason::Status5xx]);
        assert_eq!(done.attempts.fallbacks, 1);
        assert_eq!(done.attempts.keys_rate_limited, 0);
    }

    #[test]
    fn failed_attempts_are_counted_when_every_backend_failed_and_when_the_client_left() {
        // Two keys refused for their rate limit, then the backend's attempts ran out.
        let mut s = state();
        let (_, attempts) = s.for_attempts();
        attempts.failed(&backend("cloud"), FailureReason::Overloaded);
        attempts.key_rate_limited();
        attempts.failed(&backend("cloud"), FailureReason::Overloaded);
        attempts.key_rate_limited();
        let e = GatewayError::new(ErrorKind::UpstreamStatus, "backend cloud: rate limited")
            .with_upstream_status(429);
        s.failed(429, &e, None, None);
        let done = s.settle();
        assert_eq!(done.row.status, 429);
        assert_eq!(done.attempts.failed.len(), 2);
        assert_eq!(done.attempts.keys_rate_limited, 2);
        assert!(done.attempts.failovers.is_empty());
        assert_eq!(done.health, None, "the attempts reported themselves");

        // A client that hangs up during the failover still has its attempts counted.
        let mut s = state();
        let (_, attempts) = s.for_attempts();
        attempts.failed(&backend("a"), FailureReason::Timeout);
        attempts.failed_over(FailureReason::Timeout);
        let done = s.settle();
        assert_eq!(done.row.status, 499);
        assert_eq!(done.attempts.failovers, [FailureReason::Timeout]);

        // A request served at the first attempt has nothing to count.
        let mut s = state();
        serve(&mut s, "a", "big:7b");
        s.answered(None);
        assert_eq!(s.settle().attempts, Attempts::default());
    }
}
