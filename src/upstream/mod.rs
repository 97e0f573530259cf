//! Talking to upstreams: per-worker awc clients, request sending with separate connect,
//! first-byte and idle limits, and classification of upstream failures.

pub mod lines;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use awc::error::{PayloadError, SendRequestError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::actors::supervisor::{BackendInfo, FailureReason};
use crate::error::{ErrorKind, GatewayError};

/// A response body as it arrives from the upstream.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// One awc client per backend, built per worker (awc clients are not `Send`).
pub struct UpstreamClients {
    clients: Vec<awc::Client>,
}

impl UpstreamClients {
    pub fn new(backends: &[Arc<BackendInfo>]) -> UpstreamClients {
        let clients = backends
            .iter()
            .map(|b| client_for(b.config.connect_timeout))
            .collect();
        UpstreamClients { clients }
    }

    pub fn get(&self, id: usize) -> Option<&awc::Client> {
        self.clients.get(id)
    }
}

/// A client with only a connect limit: awc's default 5 s response timeout would kill
/// every request that makes Ollama load a model, so first-byte and idle limits are ours.
pub fn client_for(connect_timeout: Duration) -> awc::Client {
    let mut connector = awc::Connector::new()
        .timeout(connect_timeout)
        .conn_keep_alive(Duration::from_secs(15))
        .limit(0);
    if let Ok(tls) = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()) {
        connector = connector.openssl(tls.build());
    }
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        // An upstream redirect is an answer to relay, not to follow (and skipping the
        // redirect layer saves work on every call).
        .disable_redirects()
        .no_default_headers()
        .finish()
}

/// What to send to one backend.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Call {
    pub fn post_json(path: impl Into<String>, body: Bytes) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            body,
            headers: Vec::new(),
        }
    }
}

/// The head of a successful upstream answer and its body stream.
pub struct Opened {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// A failed attempt: the error for the client and why, for health and failover.
pub struct Failure {
    pub error: GatewayError,
    pub reason: FailureReason,
    /// The upstream's status, its `Retry-After` and error text, when it answered at all.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl Failure {
    pub fn new(error: GatewayError, reason: FailureReason) -> Failure {
        Failure {
            error,
            reason,
            status: None,
            retry_after: None,
            body: String::new(),
        }
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
/// Non-2xx heads are read (bounded) and classified.
pub async fn send(
    client: &awc::Client,
    backend: &BackendInfo,
    call: Call,
    deadline: Instant,
) -> Result<Opened, Failure> {
    let url = format!("{}{}", backend.base_url, call.path);
    let mut req = client
        .request(call.method, url)
        .insert_header(("content-type", "application/json"))
        .insert_header(("accept-encoding", "identity"));
    for (k, v) in call.headers {
        req = req.insert_header((k, v));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let sent = tokio::time::timeout(remaining, req.send_body(call.body)).await;
    let resp = match sent {
        Err(_) => {
            return Err(Failure::new(
                GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("backend {} did not answer in time", backend.name),
                ),
                FailureReason::Timeout,
            ));
        }
        Ok(Err(e)) => return Err(send_failure(backend, e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body: BodyStream = Box::pin(resp);
    if status.is_success() {
        return Ok(Opened {
            status,
            headers,
            body,
        });
    }
    let text = read_limited(body, 64 * 1024, deadline)
        .await
        .unwrap_or_default();
    Err(classify_status(backend, status, &text))
}

fn send_failure(backend: &BackendInfo, e: SendRequestError) -> Failure {
    let (kind, reason) = match &e {
        SendRequestError::Timeout => (ErrorKind::UpstreamTimeout, FailureReason::Timeout),
        SendRequestError::Connect(_) => (ErrorKind::UpstreamConnect, FailureReason::Connect),
        _ => (ErrorKind::UpstreamConnect, FailureReason::Protocol),
    };
    Failure::new(
        GatewayError::new(kind, format!("backend {}: {e}", backend.name)),
        reason,
    )
}

/// Maps an upstream error status and body to a failover decision (PROTOCOLS.md §1.7).
pub fn classify_status(backend: &BackendInfo, status: StatusCode, body: &[u8]) -> Failure {
    let message = upstream_message(body).unwrap_or_else(|| status.to_string());
    let lower = message.to_ascii_lowercase();
    let code = status.as_u16();
    let reason = match code {
        404 => FailureReason::ModelNotFound,
        429 | 503 => FailureReason::Overloaded,
        500..=599 if lower.contains("memory") => FailureReason::OutOfMemory,
        500..=599 => FailureReason::Status5xx,
        // A backend refusing its own credentials is the backend's fault, not the client's.
        401 | 403 => FailureReason::Status5xx,
        _ => FailureReason::Client4xx,
    };
    let retryable = reason != FailureReason::Client4xx;
    let kind = if retryable {
        ErrorKind::UpstreamStatus
    } else {
        ErrorKind::BadRequest
    };
    let mut error = GatewayError::new(kind, format!("backend {}: {message}", backend.name))
        .with_retryable(retryable)
        .with_upstream_status(code);
    if !retryable {
        error.message = message.clone();
    }
    Failure {
        error,
        reason,
        status: Some(code),
        retry_after: None,
        body: message,
    }
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
    client: &awc::Client,
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
