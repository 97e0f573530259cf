//! The request path shared by every dialect: place, send, fail over before the first
//! byte, relay the answer frame by frame, and account for it once at the end.

use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest};
use futures_util::{Stream, StreamExt};

use crate::Gateway;
use crate::actors::supervisor::{BackendInfo, FailureReason, Lease, PlaceRequest};
use crate::dialect::Dialect;
use crate::error::{ErrorKind, GatewayError};
use crate::keys::{KeyLease, KeyOutcome};
use crate::upstream::{self, BodyStream, Call, UpstreamClients};

/// Who asked what, carried from the handler to the final accounting.
#[derive(Debug)]
pub struct Ctx {
    pub request_id: String,
    /// The client's own `x-request-id`, kept in its own column.
    pub client_request_id: Option<String>,
    pub dialect: Dialect,
    pub started: Instant,
    pub user: String,
    pub client_ip: Option<std::net::IpAddr>,
    /// The model name the client sent, echoed back in answers.
    pub requested_model: String,
    /// Set for the virtual `auto` model.
    pub category: Option<String>,
    /// The request body, for token estimates and (when enabled) the request log.
    pub body: Option<Bytes>,
    /// The user's rate-limit grant, reconciled with the real token count at the end.
    pub reservation: Option<crate::ratelimit::Reservation>,
    /// The request generates an answer (chat, completion): it reserves an output allowance.
    pub generates: bool,
}

impl Ctx {
    pub fn new(req: &HttpRequest, dialect: Dialect, user: String) -> Ctx {
        // Taken, not copied: one context is made per request.
        let (request_id, client_request_id) = req
            .extensions_mut()
            .remove::<crate::api::RequestId>()
            .map(|r| (r.0, r.1))
            .unwrap_or_default();
        let client_ip = req.peer_addr().map(|a| a.ip());
        Ctx {
            request_id,
            client_request_id,
            dialect,
            started: Instant::now(),
            user,
            client_ip,
            requested_model: String::new(),
            category: None,
            body: None,
            reservation: None,
            generates: false,
        }
    }
}

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

/// Places `model` (then its fallbacks) and sends the call `build` makes for each backend,
/// moving on after any retryable failure until the first body bytes are in hand.
pub async fn open(
    gw: &Gateway,
    clients: &UpstreamClients,
    model: &str,
    build: &dyn Fn(&BackendInfo, &str) -> Result<Call, GatewayError>,
) -> Result<Served, GatewayError> {
    let fallbacks = gw.config.routing.fallbacks.get(model);
    let chain = std::iter::once(model).chain(fallbacks.into_iter().flatten().map(String::as_str));
    let mut last: Option<GatewayError> = None;
    let mut resends = upstream::Resends::default();
    for (step, candidate) in chain.enumerate() {
        if step > 0 {
            gw.metrics.failovers.with_label_values(&["fallback"]).inc();
        }
        match try_model(gw, clients, candidate, build, &mut resends).await {
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
        match try_backend(gw, clients, lease, build, resends).await {
            Ok(served) => return Ok(served),
            Err(mut f) => {
                if !f.error.retryable || !resends.allow(&backend, &mut f) {
                    return Err(f.error);
                }
                exclude.push(backend.id);
                gw.metrics
                    .failovers
                    .with_label_values(&[f.reason.as_str()])
                    .inc();
                last = Some(f.error);
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
) -> Result<Served, upstream::Failure> {
    let backend = lease.backend.clone();
    let model = lease.model.clone();
    let Some(client) = clients.get(backend.id) else {
        return Err(upstream::Failure::unsent(
            GatewayError::internal("backend has no client"),
            FailureReason::Protocol,
        ));
    };
    let mut tries = 0;
    // Keys the upstream refused in this request: counted once each, never sent again.
    let mut refused: Vec<KeyLease> = Vec::new();
    loop {
        tries += 1;
        let key = match &backend.config.key_pool {
            Some(pool) => match gw.keys.pick_avoiding(pool, &model, &refused) {
                Ok(k) => Some(k),
                Err(e) => {
                    // Every key cooling down: another backend may still serve.
                    lease.failed(FailureReason::Overloaded);
                    let retryable =
                        e.kind != ErrorKind::RateLimited || gw.fleet.backends().len() > 1;
                    return Err(upstream::Failure::unsent(
                        e.with_retryable(retryable),
                        FailureReason::Overloaded,
                    ));
                }
            },
            None => None,
        };
        let mut call = build(&backend, &model)
            .map_err(|e| upstream::Failure::unsent(e, FailureReason::Client4xx))?;
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
                    Ok(Some(Err(e))) => upstream::Failure::new(
                        GatewayError::new(
                            ErrorKind::UpstreamProtocol,
                            format!("backend {} broke off: {e}", backend.name),
                        ),
                        FailureReason::Protocol,
                    ),
                    // `opened` is dropped with its connection: the upstream sees the close.
                    Err(_) => upstream::Failure::new(
                        GatewayError::new(
                            ErrorKind::UpstreamTimeout,
                            format!("backend {} sent no answer in time", backend.name),
                        ),
                        FailureReason::Timeout,
                    ),
                }
            }
            Err(f) => f,
        };
        let label = failure.reason.as_str();
        gw.metrics
            .upstream_errors
            .with_label_values(&[backend.name.as_str(), label])
            .inc();
        if let Some(k) = &key {
            if let Some(outcome) = key_outcome(&failure, &model) {
                if matches!(outcome, KeyOutcome::RateLimited { .. }) {
                    gw.metrics.rate_limited.with_label_values(&["key"]).inc();
                }
                if outcome == KeyOutcome::AuthFailed {
                    refused.push(k.clone());
                }
                gw.keys.report(k, outcome);
                if tries < KEY_TRIES && resends.allow(&backend, &mut failure) {
                    tracing::info!(backend = %backend.name, key = %k.prefix(), "upstream key refused; trying another key");
                    continue;
                }
            }
        }
        if key.is_none() || !matches!(failure.status, Some(401 | 403 | 429)) {
            lease.failed(failure.reason);
        }
        tracing::warn!(backend = %backend.name, model = %model, reason = label, "upstream attempt failed: {}", failure.error);
        return Err(failure);
    }
}

/// What an upstream failure says about the key that was used; `None`: not the key's fault.
fn key_outcome(f: &upstream::Failure, model: &str) -> Option<KeyOutcome> {
    match f.status? {
        429 => Some(KeyOutcome::RateLimited {
            retry_after: f.retry_after,
            body: f.body.clone(),
        }),
        403 if f.body.contains("subscription") => Some(KeyOutcome::ModelDenied {
            model: model.to_string(),
        }),
        401 | 403 => Some(KeyOutcome::AuthFailed),
        // 5xx, 529 and the rest are the backend's health, never the key's.
        _ => None,
    }
}

/// The error for an upstream stream that stopped before its final frame.
pub fn incomplete() -> GatewayError {
    GatewayError::new(
        ErrorKind::UpstreamProtocol,
        "upstream stream ended before the answer was complete",
    )
}

/// Turns upstream bytes into client bytes for one answer.
pub trait Relay {
    /// Translates one upstream chunk (arbitrary byte boundaries) into `out`.
    fn chunk(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), GatewayError>;
    /// The upstream ended; an incomplete answer is an error.
    fn end(&mut self, out: &mut BytesMut) -> Result<(), GatewayError>;
    /// The frame that ends the client's stream after a failure.
    fn error_frame(&mut self, e: &GatewayError) -> Bytes;
    /// Tokens in and out, when the upstream said.
    fn usage(&self) -> Option<(u64, u64)>;
}

/// Final accounting of one request: metrics now, the request log later. Recorded on drop,
/// so a client that goes away mid-stream is counted too.
pub struct Tally {
    gw: web::Data<Gateway>,
    pub ctx: Ctx,
    pub backend: String,
    pub served_model: String,
    pub status: u16,
    pub key_id: Option<String>,
    key: Option<KeyLease>,
    pub tokens: Option<(u64, u64)>,
    pub ttfb: Option<Duration>,
    pub error: Option<String>,
    pub finished: bool,
    /// A duplicate served another request's answer (see `api::dedup`): its upstream tokens
    /// were spent, and counted, once by that request.
    pub shared: bool,
}

impl Tally {
    /// Final accounting of one request: its request-log row, made of this tally's own
    /// strings (it is being dropped), submitted without waiting.
    fn take_record(&mut self) -> crate::actors::log_writer::RequestRecord {
        let take = std::mem::take::<String>;
        let some = |s: &mut String| (!s.is_empty()).then(|| take(s));
        let body_len = self.ctx.body.as_ref().map_or(0, |b| b.len());
        let (tokens_in, tokens_out, estimated) = match self.tokens {
            Some((i, o)) => (i, o, false),
            // Never reached a backend: nothing was consumed.
            None if self.backend.is_empty() => (0, 0, false),
            None => (crate::ir::estimate_tokens(body_len), 0, true),
        };
        let ctx = &mut self.ctx;
        crate::actors::log_writer::RequestRecord {
            request_id: take(&mut ctx.request_id),
            time: chrono::Utc::now(),
            user: take(&mut ctx.user),
            client_ip: ctx.client_ip,
            dialect: ctx.dialect.label(),
            model_requested: take(&mut ctx.requested_model),
            model_served: some(&mut self.served_model),
            backend: some(&mut self.backend),
            key_id: self.key_id.take(),
            status: self.status,
            tokens_in,
            tokens_out,
            tokens_estimated: estimated,
            shared: self.shared,
            ttfb_ms: self.ttfb.map(|t| t.as_millis() as u64),
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            error: self.error.take(),
            category: ctx.category.take(),
            body: ctx.body.take(),
            client_request_id: ctx.client_request_id.take(),
        }
    }

    pub fn new(gw: web::Data<Gateway>, ctx: Ctx) -> Tally {
        Tally {
            gw,
            ctx,
            backend: String::new(),
            served_model: String::new(),
            status: 0,
            key_id: None,
            key: None,
            tokens: None,
            ttfb: None,
            error: None,
            finished: false,
            shared: false,
        }
    }

    pub fn served(&mut self, s: &Served) {
        self.key = s.key.clone();
        self.key_id = s.key.as_ref().map(|k| k.id.clone());
        self.backend = s.backend().name.clone();
        self.served_model = s.model.clone();
        self.status = s.status.as_u16();
        self.ttfb = Some(self.ctx.started.elapsed());
    }

    pub fn fail(&mut self, status: u16, e: &GatewayError) {
        self.status = status;
        self.error = Some(e.message.clone());
        self.finished = true;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away before the answer was complete.
            self.status = 499;
            self.error
                .get_or_insert_with(|| "client closed the connection".into());
        }
        let m = &self.gw.metrics;
        let dialect = self.ctx.dialect.label();
        // Only placed models are label values; unknown client strings are not.
        let model = if self.served_model.is_empty() {
            "-"
        } else {
            &self.served_model
        };
        let backend = if self.backend.is_empty() {
            "-"
        } else {
            &self.backend
        };
        // Three-digit statuses (all of them, in practice) without a String per request.
        let digits = [100, 10, 1].map(|d| b'0' + (self.status / d % 10) as u8);
        let other;
        let status = match std::str::from_utf8(&digits) {
            Ok(three) if (100..1000).contains(&self.status) => three,
            _ => {
                other = self.status.to_string();
                other.as_str()
            }
        };
        m.requests
            .with_label_values(&[dialect, model, backend, status])
            .inc();
        m.request_duration
            .with_label_values(&[dialect, model])
            .observe(self.ctx.started.elapsed().as_secs_f64());
        if let Some(t) = self.ttfb {
            m.ttfb
                .with_label_values(&[dialect, model])
                .observe(t.as_secs_f64());
        }
        if let Some((tin, tout)) = self.tokens.filter(|_| !self.shared) {
            m.tokens
                .with_label_values(&["in", model, backend])
                .inc_by(tin);
            m.tokens
                .with_label_values(&["out", model, backend])
                .inc_by(tout);
        }
        let used = self.tokens.map_or(0, |(i, o)| i + o);
        // An answer cut off before the upstream counted it may have cost its whole
        // reservation: a client must not free its limit by hanging up.
        let charged = match self.tokens {
            Some(_) => used,
            None if self.backend.is_empty() => 0,
            None => self.ctx.reservation.as_ref().map_or(0, |r| r.estimated()),
        };
        if let Some(key) = self.key.take() {
            if self.finished && self.error.is_none() {
                self.gw.keys.report(&key, KeyOutcome::Ok { tokens: used });
            }
        }
        if let Some(grant) = self.ctx.reservation.take() {
            // Only a correction that must go to Redis is worth a task.
            if let Some(correction) = self.gw.limiter.reconcile_local(&grant, charged) {
                let gw = self.gw.clone();
                actix_web::rt::spawn(async move { gw.limiter.reconcile_shared(correction).await });
            }
        }
        // Last: the log row takes the strings over instead of copying them.
        let row = self.take_record();
        self.gw.logs.submit(row);
    }
}

/// Streams the served answer through `relay`, enforcing the idle limit between chunks.
/// A failure after the first byte ends the stream with the dialect's error frame.
pub fn relay_stream(
    mut served: Served,
    mut relay: Box<dyn Relay>,
    mut tally: Tally,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let idle = served.backend().config.idle_timeout;
    tally.served(&served);
    async_stream::stream! {
        let mut out = BytesMut::new();
        let mut pending = served.first.take();
        loop {
            let step = match pending.take() {
                Some(chunk) => Ok(Some(Ok(chunk))),
                None => tokio::time::timeout(idle, served.body.next()).await,
            };
            let outcome = match step {
                Err(_) => Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("backend {} stopped responding", served.backend().name),
                )),
                Ok(Some(Err(e))) => Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("backend {} broke off: {e}", served.backend().name),
                )),
                Ok(Some(Ok(chunk))) => relay.chunk(&chunk, &mut out).map(|()| false),
                Ok(None) => relay.end(&mut out).map(|()| true),
            };
            // Whatever else the upstream already sent goes to the client in the same write.
            let outcome = match outcome {
                Ok(false) => batch(&mut served.body, &mut *relay, &mut out),
                other => other,
            };
            if !out.is_empty() {
                yield Ok(out.split().freeze());
            }
            match outcome {
                Ok(false) => continue,
                Ok(true) => {
                    tally.tokens = relay.usage();
                    tally.finished = true;
                    served.lease.succeeded(tally.ttfb.unwrap_or_default(), tally.ctx.started.elapsed());
                    break;
                }
                Err(e) => {
                    tally.tokens = relay.usage();
                    let reason = match e.kind {
                        ErrorKind::UpstreamTimeout => FailureReason::Timeout,
                        _ => FailureReason::Protocol,
                    };
                    served.lease.failed(reason);
                    tracing::warn!(request_id = %tally.ctx.request_id, "stream ended with an error: {e}");
                    tally.fail(502, &e);
                    yield Ok(relay.error_frame(&e));
                    break;
                }
            }
        }
    }
}

/// Most client bytes gathered from ready upstream frames before they are written.
const BATCH_MAX: usize = 64 * 1024;

/// Feeds `relay` the body frames that are ready now, without waiting, up to [`BATCH_MAX`]
/// bytes of output: true when the body ended among them.
fn batch(
    body: &mut BodyStream,
    relay: &mut dyn Relay,
    out: &mut BytesMut,
) -> Result<bool, GatewayError> {
    use futures_util::FutureExt as _;
    while out.len() < BATCH_MAX {
        match body.next().now_or_never() {
            None => return Ok(false),
            Some(Some(Ok(chunk))) => relay.chunk(&chunk, out)?,
            Some(None) => return relay.end(out).map(|()| true),
            Some(Some(Err(e))) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("upstream broke off: {e}"),
                ));
            }
        }
    }
    Ok(false)
}

/// Reads a whole (non-streamed) upstream answer within the idle limit and the backend's
/// `answer_timeout`, holding its bytes against `server.max_buffered_answers`.
pub async fn collect(served: &mut Served, limit: usize) -> Result<Bytes, GatewayError> {
    let config = &served.lease.backend.config;
    let (idle, deadline) = (config.idle_timeout, Instant::now() + config.answer_timeout);
    let name = served.lease.backend.name.clone();
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
                        ));
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
