//! Talking to upstreams: per-worker clients, request sending with separate connect,
//! first-byte and idle limits, classification of upstream failures, the resend policy,
//! and the global budget for buffered answers.

pub mod classify;
pub mod client;
pub mod kind;
pub mod proxy;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::Method;
use http::header::{HeaderName, HeaderValue};

use crate::error::{ErrorKind, GatewayError};
use crate::routing::fleet::{BackendInfo, FailureReason};
pub use client::{Client, Reach};

/// A response body as it arrives from the upstream.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>>>>;

/// One client per backend, built per worker (clients are not `Send`). A backend whose URL
/// cannot be used has none, and calls to it fail as a protocol error.
pub struct UpstreamClients {
    clients: Vec<Option<Client>>,
}

impl UpstreamClients {
    pub fn new(
        backends: &[Arc<BackendInfo>],
        metrics: &crate::metrics::Metrics,
    ) -> UpstreamClients {
        let clients = backends
            .iter()
            .map(|b| {
                client_for(b, metrics)
                    .map_err(|e| tracing::error!(backend = %b.name, error = %e, "backend unusable"))
                    .ok()
            })
            .collect();
        UpstreamClients { clients }
    }

    pub fn get(&self, id: usize) -> Option<&Client> {
        self.clients.get(id)?.as_ref()
    }
}

/// A client for `backend` that counts its resends on stale pooled connections; every
/// caller (requests, the status poller, the key prober) makes its clients here.
pub fn client_for(
    backend: &BackendInfo,
    metrics: &crate::metrics::Metrics,
) -> Result<Client, client::Error> {
    let client = Client::new(&backend.base_url, &Reach::of(&backend.config))?;
    client.count_stale_resends(
        metrics
            .upstream_resends
            .with_label_values(&[backend.name.as_str(), STALE_CONNECTION]),
    );
    Ok(client)
}

/// What to send to one backend.
pub struct Call {
    pub method: Method,
    /// Most calls go to a fixed path; only passed-through management calls build one.
    pub path: Cow<'static, str>,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    pub fn post_json(path: impl Into<Cow<'static, str>>, body: Bytes) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            body,
            headers: Vec::new(),
        }
    }
}

/// The status of a successful upstream answer and its body stream.
pub struct Opened {
    pub status: StatusCode,
    pub body: BodyStream,
}

pub use crate::metrics::{RESEND_REASONS, STALE_CONNECTION};

/// The resend policy: may the request of failed attempt `f` be sent again (to the same or
/// another backend), and under which `reason` label? Without question only when the
/// upstream cannot have received it. Once written, only on the upstream's word that it did
/// not process it (an error status before any answer body: 5xx, 429/503, out of memory,
/// model not found) or a first-byte timeout, on which corral has closed the connection so
/// that the upstream cancels. A malformed answer or a connection dropped after the write
/// is an error for this request: a resend could bill a generation twice. An error that
/// is no failed attempt (no `reason`) or that reached the client is never resent.
pub fn resend_reason(f: &GatewayError) -> Option<&'static str> {
    let reason = f.reason.filter(|_| !f.after_first_byte)?;
    if !f.written {
        return Some("connect");
    }
    match reason {
        FailureReason::Timeout => Some("first_byte_timeout"),
        FailureReason::Status5xx
        | FailureReason::Overloaded
        | FailureReason::OutOfMemory
        | FailureReason::ModelNotFound
            if f.upstream_status.is_some() =>
        {
            Some(reason.as_str())
        }
        _ => None,
    }
}

/// The one resend a failed attempt earned, counted when the request actually goes out
/// again (a failover that finds no other backend sends nothing).
#[derive(Default)]
pub struct Resends {
    owed: Option<(String, &'static str)>,
}

impl Resends {
    /// Applies [`resend_reason`] to `f`: true when another attempt may follow; otherwise
    /// the error is made final, so that no fallback model sends it again either.
    pub fn allow(&mut self, backend: &BackendInfo, f: &mut GatewayError) -> bool {
        match resend_reason(f) {
            Some(reason) => {
                self.owed = Some((backend.name.clone(), reason));
                true
            }
            None => {
                self.owed = None;
                f.retryable = false;
                false
            }
        }
    }

    /// Call just before an attempt is sent: counts the resend it is, if it is one.
    pub fn sending(&mut self, metrics: &crate::metrics::Metrics) {
        if let Some((backend, reason)) = self.owed.take() {
            metrics
                .upstream_resends
                .with_label_values(&[backend.as_str(), reason])
                .inc();
        }
    }
}

/// Bytes of non-streamed answers held in memory at once by every request of the process
/// together (`server.max_buffered_answers`).
pub struct AnswerBudget {
    used: AtomicUsize,
    cap: usize,
}

impl AnswerBudget {
    pub fn new(cap: usize) -> AnswerBudget {
        AnswerBudget {
            used: AtomicUsize::new(0),
            cap,
        }
    }

    /// An empty claim on the budget, grown as an answer is read.
    pub fn claim(self: &Arc<Self>) -> Claim {
        Claim {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one answer holds of the [`AnswerBudget`]; given back on drop.
pub struct Claim {
    budget: Arc<AnswerBudget>,
    bytes: usize,
}

impl Claim {
    /// Takes `n` more bytes; false (and nothing taken) when that would pass the cap.
    pub fn grow(&mut self, n: usize) -> bool {
        let b = &self.budget;
        let taken = b
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= b.cap)
            })
            .is_ok();
        if taken {
            self.bytes += n;
        }
        taken
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The credential for one upstream attempt: a pool key, else the backend's `api_key_env`.
/// Anthropic upstreams take `x-api-key`; everything else (Ollama Cloud included) Bearer.
pub fn credential(backend: &BackendInfo, key: Option<&str>) -> Option<(HeaderName, HeaderValue)> {
    let secret = match key {
        Some(k) => k.to_string(),
        None => std::env::var(backend.config.api_key_env.as_deref()?).ok()?,
    };
    let (name, value) = match backend.config.kind {
        crate::config::BackendKind::Anthropic => ("x-api-key", secret),
        _ => ("authorization", format!("Bearer {secret}")),
    };
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((HeaderName::from_static(name), value))
}

/// Sends `call` to `backend` and waits for the response head until `deadline`.
/// Non-2xx heads are read (bounded) and classified; an upstream redirect is relayed as
/// an answer, not followed. First-byte and idle limits are the caller's.
pub async fn send(
    client: &Client,
    backend: &BackendInfo,
    call: Call,
    deadline: Instant,
) -> Result<Opened, GatewayError> {
    let headers = [
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        ),
    ]
    .into_iter()
    .chain(call.headers);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let sent = tokio::time::timeout(
        remaining,
        client.send(call.method, &call.path, headers, call.body),
    )
    .await;
    let resp = match sent {
        // Dropping the call closed its connection: the upstream sees the request cancelled.
        Err(_) => {
            return Err(GatewayError::new(
                ErrorKind::UpstreamTimeout,
                format!("backend {} did not answer in time", backend.name),
            )
            .attempt(FailureReason::Timeout));
        }
        Ok(Err(e)) => return Err(send_failure(backend, e)),
        Ok(Ok(r)) => r,
    };
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body: BodyStream = Box::pin(resp.body);
    if status.is_success() {
        return Ok(Opened { status, body });
    }
    let retry_after = resp.retry_after;
    let text = read_limited(body, 64 * 1024, deadline)
        .await
        .unwrap_or_default();
    let mut failure = classify_status(backend, status, &text);
    failure.retry_after = retry_after;
    Err(failure)
}

/// Why a call that got no answer head failed, for health and failover.
pub fn failure_reason(e: &client::Error) -> FailureReason {
    match e {
        client::Error::ConnectTimeout => FailureReason::Timeout,
        client::Error::Connect(_) => FailureReason::Connect,
        client::Error::BadUrl(_) | client::Error::Exchange(_) => FailureReason::Protocol,
    }
}

fn send_failure(backend: &BackendInfo, e: client::Error) -> GatewayError {
    let reason = failure_reason(&e);
    let kind = match reason {
        FailureReason::Timeout => ErrorKind::UpstreamTimeout,
        FailureReason::Protocol => ErrorKind::UpstreamProtocol,
        _ => ErrorKind::UpstreamConnect,
    };
    let error = GatewayError::new(kind, format!("backend {}: {e}", backend.name));
    if e.unsent() {
        error.unsent(reason)
    } else {
        error.attempt(reason)
    }
}

/// An upstream's error answer as a failed attempt, its meaning read from [`classify`]
/// (docs/PROTOCOLS.md §1.7).
/// The upstream's text is scrubbed of every secret here, the one place it enters corral;
/// a refused credential (401/403) is not quoted at all: providers echo the key they saw.
pub fn classify_status(backend: &BackendInfo, status: StatusCode, body: &[u8]) -> GatewayError {
    let message = upstream_message(body).unwrap_or_else(|| status.to_string());
    let message = crate::error::capped(crate::redact::scrub_owned(message));
    let code = status.as_u16();
    let classify::Verdict {
        reason, retryable, ..
    } = classify::classify(code, &message);
    let kind = if retryable {
        ErrorKind::UpstreamStatus
    } else {
        ErrorKind::BadRequest
    };
    let shown = match code {
        401 | 403 => format!(
            "backend {} refused corral's credentials ({status})",
            backend.name
        ),
        _ if !retryable => message.clone(),
        _ => format!("backend {}: {message}", backend.name),
    };
    let mut error = GatewayError::from_upstream(kind, shown)
        .with_retryable(retryable)
        .with_upstream_status(code)
        .attempt(reason);
    error.upstream_text = message.into_boxed_str();
    error
}

/// The human text of an upstream error body in any of the three shapes.
pub fn upstream_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    match e {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("message")?.as_str().map(str::to_string),
        _ => None,
    }
    .or_else(|| {
        let text = String::from_utf8_lossy(body).trim().to_string();
        (!text.is_empty()).then_some(text)
    })
}

/// A small JSON answer from a backend (fleet views, not client traffic): `None` when the
/// backend fails, is slower than 2 s, or answers more than `limit` bytes or not JSON.
pub async fn fetch_json(
    client: &Client,
    backend: &BackendInfo,
    call: Call,
    limit: usize,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let opened = send(client, backend, call, deadline).await.ok()?;
    let bytes = read_limited(opened.body, limit, deadline).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads a whole body up to `limit` bytes, giving up at `deadline`.
pub async fn read_limited(
    mut body: BodyStream,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, body.next()).await {
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream stopped sending its answer",
                ));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("upstream answer broke off: {e}"),
                ));
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::new(
                        ErrorKind::UpstreamProtocol,
                        format!("upstream answer larger than {limit} bytes"),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> BackendInfo {
        BackendInfo {
            id: 0,
            name: "gpu".into(),
            name_header: None,
            base_url: "http://127.0.0.1:1".into(),
            config: crate::config::BackendConfig::default(),
        }
    }

    fn failed(kind: ErrorKind) -> GatewayError {
        GatewayError::new(kind, "backend gpu: failed")
    }

    #[test]
    fn a_request_is_resent_only_when_the_upstream_cannot_have_processed_it() {
        let b = backend();
        let unsent = failed(ErrorKind::UpstreamConnect).unsent(FailureReason::Connect);
        assert_eq!(resend_reason(&unsent), Some("connect"));
        let timeout = failed(ErrorKind::UpstreamTimeout).attempt(FailureReason::Timeout);
        assert_eq!(resend_reason(&timeout), Some("first_byte_timeout"));
        for (status, body, label) in [
            (502, "bad gateway", "status_5xx"),
            (
                503,
                r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#,
                "overloaded",
            ),
            (
                404,
                r#"{"error":"model \"x\" not found, try pulling it first"}"#,
                "model_not_found",
            ),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let f = classify_status(&b, status, body.as_bytes());
            assert_eq!(resend_reason(&f), Some(label), "{status}");
            assert!(f.written && f.upstream_status.is_some());
        }
        // Written, and nothing says the upstream did not process it.
        let dropped = failed(ErrorKind::UpstreamConnect).attempt(FailureReason::Connect);
        assert_eq!(resend_reason(&dropped), None);
        let garbage = failed(ErrorKind::UpstreamProtocol).attempt(FailureReason::Protocol);
        assert_eq!(resend_reason(&garbage), None);
        let no_status = failed(ErrorKind::UpstreamStatus).attempt(FailureReason::Status5xx);
        assert_eq!(resend_reason(&no_status), None);
        let refused = classify_status(&b, StatusCode::BAD_REQUEST, br#"{"error":"bad"}"#);
        assert_eq!(resend_reason(&refused), None);
        // Not an attempt at all, or an answer that had begun.
        assert_eq!(resend_reason(&failed(ErrorKind::UpstreamTimeout)), None);
        assert_eq!(resend_reason(&timeout.clone().after_first_byte()), None);
    }

    #[test]
    fn resends_are_counted_when_sent_and_a_refused_resend_makes_the_error_final() {
        let b = backend();
        let metrics = crate::metrics::Metrics::new();
        let count = |m: &crate::metrics::Metrics, reason: &str| {
            m.upstream_resends.with_label_values(&["gpu", reason]).get()
        };
        let mut resends = Resends::default();
        let mut timeout = failed(ErrorKind::UpstreamTimeout).attempt(FailureReason::Timeout);
        assert!(resends.allow(&b, &mut timeout));
        assert!(timeout.retryable);
        assert_eq!(count(&metrics, "first_byte_timeout"), 0, "nothing sent yet");
        resends.sending(&metrics);
        resends.sending(&metrics);
        assert_eq!(
            count(&metrics, "first_byte_timeout"),
            1,
            "one resend per failure"
        );
        let mut garbage = failed(ErrorKind::UpstreamProtocol).attempt(FailureReason::Protocol);
        assert!(garbage.retryable);
        assert!(!resends.allow(&b, &mut garbage));
        assert!(!garbage.retryable, "no fallback may send it again either");
    }
}
