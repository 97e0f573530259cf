//! One error type for the whole gateway, rendered in the dialect of the path that was called.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use bytes::Bytes;
use serde_json::json;

use crate::ir::Dialect;

/// What went wrong, independent of how it is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something malformed or inconsistent.
    BadRequest,
    Unauthorized,
    Forbidden,
    /// Unknown model or path.
    NotFound,
    PayloadTooLarge,
    /// A request body in a `Content-Encoding` corral cannot decode.
    UnsupportedMediaType,
    /// The client did not send its whole request body in time.
    RequestTimeout,
    /// A corral limit (user rate) or every upstream key is cooling down.
    RateLimited,
    /// No backend can take the request right now.
    NoCapacity,
    /// Could not connect to the upstream.
    UpstreamConnect,
    /// The upstream did not answer (first byte or idle gap) in time.
    UpstreamTimeout,
    /// The upstream answered with an error status.
    UpstreamStatus,
    /// The upstream answered something unreadable.
    UpstreamProtocol,
    /// A dependency of corral itself (database, actor) failed.
    Internal,
    /// corral is shutting down.
    Draining,
}

/// Pingora-style: the error knows its kind, whether retrying elsewhere may help, its
/// cause, and whether bytes had already reached the client; for a failed upstream attempt
/// also why it failed, whether the request may have reached the upstream, and the
/// upstream's status, `Retry-After` and error text.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// Another backend (or key) may still serve the request.
    pub retryable: bool,
    /// Why an upstream attempt failed, for the backend's health and the failover; `None`
    /// for errors that are no upstream's (see [`GatewayError::failure_reason`]).
    pub reason: Option<FailureReason>,
    /// Whether the upstream may have received the request: false only when nothing was
    /// written (no connection, no key, no client). True unless said otherwise, so that
    /// nothing is sent twice by mistake.
    pub written: bool,
    /// The upstream's status and `Retry-After`, when it answered at all.
    pub upstream_status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// The upstream's error text (scrubbed of secrets), as the classify table read it.
    pub upstream_text: Box<str>,
    /// The field at fault, for 400s (OpenAI's `param`).
    pub param: Option<String>,
    /// The answer had begun: the client saw bytes, so the error ends its stream instead
    /// of replacing the answer, and nothing can be retried.
    pub after_first_byte: bool,
    /// The lower-level error behind this one, for logs (`source()` walks the chain).
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Why a request to a backend failed, as the proxy classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// TCP/TLS connection failed.
    Connect,
    /// No first byte, or too long a gap between chunks.
    Timeout,
    /// 500/502/504 and other server errors.
    Status5xx,
    /// The backend could not load the model (out of memory).
    OutOfMemory,
    /// The backend does not have the model (404).
    ModelNotFound,
    /// The backend's queue is full (503 "server busy"). A 429 for one upstream key belongs to
    /// that key, not to the backend: don't report it here or the whole backend is ejected.
    Overloaded,
    /// The backend answered something unreadable.
    Protocol,
    /// The backend refused the request itself (400, 401, 403, 413...).
    Client4xx,
}

impl FailureReason {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Timeout => "timeout",
            FailureReason::Status5xx => "status_5xx",
            FailureReason::OutOfMemory => "out_of_memory",
            FailureReason::ModelNotFound => "model_not_found",
            FailureReason::Overloaded => "overloaded",
            FailureReason::Protocol => "protocol",
            FailureReason::Client4xx => "client_4xx",
        }
    }

    /// Does this say the backend itself is unhealthy (and count toward opening its circuit)?
    /// The others prove it is alive: it answered, about a model or a request.
    pub fn is_health_failure(self) -> bool {
        matches!(
            self,
            FailureReason::Connect
                | FailureReason::Timeout
                | FailureReason::Status5xx
                | FailureReason::Overloaded
                | FailureReason::Protocol
        )
    }

    /// Failures that count toward a burst (5xx and timeouts) even between successes.
    pub fn is_burst_failure(self) -> bool {
        matches!(
            self,
            FailureReason::Timeout | FailureReason::Status5xx | FailureReason::Overloaded
        )
    }
}

/// Longest error text a client sees or the request log stores: messages may quote what a
/// client or an upstream sent.
pub const MAX_MESSAGE: usize = 4096;

/// `s` cut to at most [`MAX_MESSAGE`] bytes on a character boundary, marked when cut.
pub fn capped(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl GatewayError {
    /// The one place where error text an upstream wrote becomes an error a client may see.
    pub fn from_upstream(kind: ErrorKind, text: String) -> GatewayError {
        GatewayError::new(kind, text)
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(
            kind,
            ErrorKind::UpstreamConnect
                | ErrorKind::UpstreamTimeout
                | ErrorKind::UpstreamStatus
                | ErrorKind::UpstreamProtocol
        );
        Self {
            kind,
            message: capped(crate::redact::scrub_owned(message.into())),
            retryable,
            reason: None,
            written: true,
            upstream_status: None,
            retry_after: None,
            upstream_text: Box::default(),
            param: None,
            after_first_byte: false,
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A 400 naming the field at fault.
    pub fn bad_field(field: &str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::new(ErrorKind::BadRequest, format!("{field}: {message}"));
        e.param = Some(field.to_string());
        e
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unknown_model(model: &str) -> Self {
        let mut e = Self::not_found(format!("model \"{model}\" not found"));
        e.param = Some("model".into());
        e
    }

    /// Keeps `cause` as this error's source.
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The error happened after bytes of the answer reached the client.
    pub fn after_first_byte(mut self) -> Self {
        self.after_first_byte = true;
        self.retryable = false;
        self
    }

    /// A failed upstream attempt, after the request may have reached the upstream.
    pub fn attempt(mut self, reason: FailureReason) -> Self {
        self.reason = Some(reason);
        self.written = true;
        self
    }

    /// A failed upstream attempt before anything was sent.
    pub fn unsent(mut self, reason: FailureReason) -> Self {
        self.reason = Some(reason);
        self.written = false;
        self
    }

    /// Why the attempt failed, for the backend's health: the classified reason when there
    /// is one, else what the kind says (an idle upstream timed out; anything else broke
    /// the exchange).
    pub fn failure_reason(&self) -> FailureReason {
        self.reason.unwrap_or(match self.kind {
            ErrorKind::UpstreamTimeout => FailureReason::Timeout,
            _ => FailureReason::Protocol,
        })
    }

    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn with_upstream_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The status a client sees for this error in `dialect`.
    pub fn status(&self, dialect: Dialect) -> StatusCode {
        match self.kind {
            // An upstream's refusal of the request (413, 422) keeps the upstream's status.
            ErrorKind::BadRequest => match self.upstream_status {
                Some(s @ 400..=499) => StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
                _ => StatusCode::BAD_REQUEST,
            },
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::NoCapacity | ErrorKind::Draining => match dialect {
                Dialect::Anthropic => {
                    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamStatus => match self.upstream_status {
                // A refused upstream credential is corral's fault, not the caller's.
                Some(401 | 403) => StatusCode::BAD_GATEWAY,
                Some(s @ 400..=499) if s != 429 => {
                    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                Some(429) => StatusCode::TOO_MANY_REQUESTS,
                Some(503) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::NoCapacity | ErrorKind::Draining => "overloaded_error",
            _ => "server_error",
        }
    }

    fn anthropic_type(&self, status: StatusCode) -> &'static str {
        match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 => "timeout_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The JSON body for this error in `dialect`.
    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        let status = self.status(dialect);
        match dialect {
            Dialect::Ollama => json!({ "error": self.message }),
            Dialect::OpenAi => json!({ "error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": self.param,
                "code": status.as_u16().to_string(),
            }}),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(status), "message": self.message },
            }),
        }
    }

    /// A complete HTTP response for an error before any byte went to the client.
    pub fn response(&self, dialect: Dialect) -> HttpResponse {
        let mut b = HttpResponse::build(self.status(dialect));
        if let Some(after) = self.retry_after {
            b.insert_header(("retry-after", after.as_secs().max(1).to_string()));
        }
        b.json(self.body(dialect))
    }

    /// The frame that ends a stream after bytes already reached the client.
    pub fn stream_frame(&self, dialect: Dialect) -> Bytes {
        match dialect {
            Dialect::Ollama => {
                let mut line = json!({ "error": self.message }).to_string();
                line.push('\n');
                Bytes::from(line)
            }
            Dialect::OpenAi => {
                let body = json!({ "error": {
                    "message": self.message, "type": "server_error", "param": null, "code": null,
                }});
                Bytes::from(format!("data: {body}\n\n"))
            }
            Dialect::Anthropic => {
                let kind = match self.kind {
                    ErrorKind::NoCapacity | ErrorKind::Draining => "overloaded_error",
                    ErrorKind::UpstreamTimeout => "timeout_error",
                    _ => "api_error",
                };
                let body =
                    json!({"type": "error", "error": {"type": kind, "message": self.message}});
                Bytes::from(format!("event: error\ndata: {body}\n\n"))
            }
        }
    }
}

/// The `x-should-retry` value for an answer with `status`, which both official SDKs obey
/// over their own rules: `None` for a success. A retry helps only where the cause can pass
/// (timeouts, conflicts, rate limits, server trouble); a bad request, a bad token or an
/// unknown model stays what it is, so clients such as Claude Code give up at once.
pub fn should_retry(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        0..=399 => None,
        408 | 409 | 429 | 500..=599 => Some("true"),
        _ => Some("false"),
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Handlers return `Result<_, DialectError>` so `?` renders in the right dialect.
#[derive(Debug)]
pub struct DialectError {
    pub dialect: Dialect,
    pub error: GatewayError,
}

impl std::fmt::Display for DialectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for DialectError {
    fn status_code(&self) -> StatusCode {
        self.error.status(self.dialect)
    }
    fn error_response(&self) -> HttpResponse {
        self.error.response(self.dialect)
    }
}

impl GatewayError {
    pub fn in_dialect(self, dialect: Dialect) -> DialectError {
        DialectError {
            dialect,
            error: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_per_dialect() {
        let e = GatewayError::unknown_model("nope");
        assert_eq!(e.body(Dialect::Ollama)["error"], "model \"nope\" not found");
        assert_eq!(
            e.body(Dialect::OpenAi)["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(
            e.body(Dialect::Anthropic)["error"]["type"],
            "not_found_error"
        );
        assert_eq!(e.status(Dialect::OpenAi), StatusCode::NOT_FOUND);
    }

    #[test]
    fn messages_are_capped_on_a_char_boundary() {
        let e = GatewayError::unknown_model(&"é".repeat(10_000));
        assert!(e.message.len() <= MAX_MESSAGE);
        assert!(e.message.ends_with('…'));
        assert_eq!(capped("short".into()), "short");
    }

    #[test]
    fn retry_hints_follow_the_status() {
        let hint = |s: u16| should_retry(StatusCode::from_u16(s).unwrap());
        for s in [400, 401, 403, 404, 413, 415, 422, 431] {
            assert_eq!(hint(s), Some("false"), "{s}");
        }
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert_eq!(hint(s), Some("true"), "{s}");
        }
        assert_eq!(hint(200), None);
    }

    #[test]
    fn the_cause_chain_and_the_first_byte_are_kept() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e =
            GatewayError::new(ErrorKind::UpstreamProtocol, "backend a broke off").with_cause(io);
        assert!(e.retryable && !e.after_first_byte);
        assert_eq!(e.source().unwrap().to_string(), "reset by peer");
        let e = e.after_first_byte();
        assert!(
            e.after_first_byte && !e.retryable,
            "a started answer is never retried"
        );
    }

    #[test]
    fn no_capacity_is_529_for_anthropic_only() {
        let e = GatewayError::new(ErrorKind::NoCapacity, "no backend");
        assert_eq!(e.status(Dialect::Anthropic).as_u16(), 529);
        assert_eq!(e.status(Dialect::Ollama).as_u16(), 503);
        assert_eq!(
            e.body(Dialect::Anthropic)["error"]["type"],
            "overloaded_error"
        );
    }

    #[test]
    fn stream_frames_end_streams_in_each_dialect() {
        let e = GatewayError::new(ErrorKind::UpstreamTimeout, "idle");
        assert_eq!(
            &e.stream_frame(Dialect::Ollama)[..],
            b"{\"error\":\"idle\"}\n"
        );
        assert!(
            e.stream_frame(Dialect::OpenAi)
                .starts_with(b"data: {\"error\"")
        );
        assert!(
            e.stream_frame(Dialect::Anthropic)
                .starts_with(b"event: error\n")
        );
    }
}
