//! Typed messages between the actors (no bodies). The fleet's own messages (`Report`,
//! `Snapshot`, `IsReady`) are in `routing::fleet`, beside the `Fleet` that sends them.

use std::sync::Arc;

use actix::Message;
use serde_json::Value;

use crate::routing::fleet::{ModelEntry, ResidentEntry};
use crate::routing::placer::{BackendId, BackendSnapshot, Circuit};

/// BackendActor → Supervisor: the backend's state changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StatusUpdate {
    pub backend: BackendId,
    pub status: BackendStatus,
}

/// The state pushed to the Supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    pub polled: bool,
    pub circuit: Circuit,
    pub consecutive_failures: u32,
    pub models: Vec<ModelEntry>,
    pub resident: Vec<ResidentEntry>,
    pub memory_used: u64,
    pub version: Option<String>,
    pub last_error: Option<String>,
    pub ewma_latency_ms: Option<f64>,
    pub ewma_ttfb_ms: Option<f64>,
    /// Raw `/api/tags` and `/api/ps` items, for the fleet-as-one-Ollama endpoints.
    pub tags: Arc<Vec<Value>>,
    pub ps: Arc<Vec<Value>>,
}

impl BackendStatus {
    /// Worth telling the Supervisor: anything but a small drift of the latency averages.
    pub fn differs_materially(&self, other: &BackendStatus) -> bool {
        fn drift(a: Option<f64>, b: Option<f64>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() > 0.1 * a.abs().max(b.abs()),
                (a, b) => a.is_some() != b.is_some(),
            }
        }
        self.polled != other.polled
            || self.circuit != other.circuit
            || self.consecutive_failures != other.consecutive_failures
            || self.models != other.models
            || self.resident != other.resident
            || self.memory_used != other.memory_used
            || self.version != other.version
            || self.last_error != other.last_error
            || drift(self.ewma_latency_ms, other.ewma_latency_ms)
            || drift(self.ewma_ttfb_ms, other.ewma_ttfb_ms)
            || !Arc::ptr_eq(&self.tags, &other.tags) && self.tags != other.tags
            || !Arc::ptr_eq(&self.ps, &other.ps) && self.ps != other.ps
    }

    /// What the placer needs of it.
    pub fn placer_snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            polled: self.polled,
            circuit: self.circuit,
            models: self
                .models
                .iter()
                .map(|m| (m.name.clone(), m.size))
                .collect(),
            resident: self
                .resident
                .iter()
                .map(|r| (r.name.clone(), r.size))
                .collect(),
            ewma_ttfb_ms: self.ewma_ttfb_ms,
        }
    }
}
