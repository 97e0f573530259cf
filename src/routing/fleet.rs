//! The fleet's plain types, shared by routing, the upstream client and the actors: a
//! configured backend and why an attempt on it failed.

use crate::config::BackendConfig;
use crate::routing::placer::BackendId;

/// A configured upstream, shared by every request that goes to it.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub id: BackendId,
    pub name: String,
    /// `name` as the `x-corral-backend` answer header, made once (`None` if it cannot be one).
    pub name_header: Option<actix_web::http::header::HeaderValue>,
    /// The configured URL without a trailing slash.
    pub base_url: String,
    pub config: BackendConfig,
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
