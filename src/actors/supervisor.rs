//! Placeholder fleet handle (round robin) until the Supervisor actor lands; same public API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::{BackendConfig, Config};
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::Metrics;

pub type BackendId = usize;

pub struct BackendInfo {
    pub id: BackendId,
    pub name: String,
    pub base_url: String,
    pub config: BackendConfig,
}

#[derive(Clone)]
pub struct Fleet {
    backends: Arc<Vec<Arc<BackendInfo>>>,
    next: Arc<AtomicUsize>,
    inflight: Arc<AtomicUsize>,
}

pub struct PlaceRequest {
    pub model: String,
    pub exclude: Vec<BackendId>,
}

pub struct Lease {
    pub backend: Arc<BackendInfo>,
    pub model: String,
    inflight: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Connect,
    Timeout,
    Status5xx,
    OutOfMemory,
    ModelNotFound,
    Overloaded,
    Protocol,
    Client4xx,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    pub name: String,
    pub url: String,
    pub up: bool,
    #[serde(skip_serializing)]
    pub tags: Vec<serde_json::Value>,
    #[serde(skip_serializing)]
    pub ps: Vec<serde_json::Value>,
}

impl Fleet {
    pub fn start(cfg: &Config, _metrics: Arc<Metrics>) -> Fleet {
        let backends = cfg
            .backends
            .iter()
            .enumerate()
            .map(|(id, b)| {
                Arc::new(BackendInfo {
                    id,
                    name: b.name.clone(),
                    base_url: b.url.trim_end_matches('/').to_string(),
                    config: b.clone(),
                })
            })
            .collect();
        Fleet {
            backends: Arc::new(backends),
            next: Arc::default(),
            inflight: Arc::default(),
        }
    }

    pub fn backends(&self) -> &[Arc<BackendInfo>] {
        &self.backends
    }

    pub async fn place(&self, req: PlaceRequest) -> Result<Lease, GatewayError> {
        let n = self.backends.len();
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if !req.exclude.contains(&i) {
                self.inflight.fetch_add(1, Ordering::Relaxed);
                return Ok(Lease {
                    backend: self.backends[i].clone(),
                    model: req.model,
                    inflight: self.inflight.clone(),
                });
            }
        }
        Err(GatewayError::new(
            ErrorKind::NoCapacity,
            format!("no backend can serve model \"{}\" right now", req.model),
        ))
    }

    pub async fn snapshot(&self) -> Vec<BackendView> {
        Vec::new()
    }

    pub async fn wait_ready(&self, _timeout: Duration) -> bool {
        true
    }

    pub async fn totals(&self) -> (u64, u64) {
        (self.inflight.load(Ordering::Relaxed) as u64, 0)
    }
}

impl Lease {
    pub fn succeeded(&self, _ttfb: Duration, _total: Duration) {}
    pub fn failed(&self, _reason: FailureReason) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
