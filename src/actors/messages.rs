//! Typed messages between the HTTP layer, the Supervisor and the BackendActors (no bodies).

use std::time::Duration;

use actix::Message;

use crate::actors::backend::BackendStatus;
use crate::actors::supervisor::BackendView;
use crate::routing::placer::BackendId;

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

/// What the HTTP layer asks for: a model, minus the backends already tried for this request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaceRequest<'a> {
    pub model: &'a str,
    pub exclude: &'a [BackendId],
}

/// How one request on a backend ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Success { ttfb: Duration, total: Duration },
    Failure(FailureReason),
}

/// Lease → BackendActor: passive health from a real request.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Report {
    pub backend: BackendId,
    pub model: String,
    pub outcome: Outcome,
}

/// BackendActor → Supervisor: the backend's state changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StatusUpdate {
    pub backend: BackendId,
    pub status: BackendStatus,
}

/// Admin API and fleet-as-one-Ollama endpoints → Supervisor.
#[derive(Debug, Message)]
#[rtype(result = "Vec<BackendView>")]
pub struct Snapshot;

/// Tests and shutdown → Supervisor: fleet-wide in-flight count and reserved memory.
#[derive(Debug, Message)]
#[rtype(result = "(u64, u64)")]
pub struct Totals;

/// Has every backend been polled at least once?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct IsReady;
