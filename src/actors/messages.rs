//! Typed messages between the HTTP layer, the Supervisor and the BackendActors (no bodies).

use std::time::Duration;

use actix::Message;

use crate::actors::backend::BackendStatus;
use crate::actors::supervisor::BackendView;
use crate::routing::placer::BackendId;

pub use crate::routing::fleet::FailureReason;

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
