//! Key health that outlives a process: disables and re-enables decided here are written to
//! the database with their reason and time (a `keys_file` key's in `key_states`), and a key disabled by refused credentials is
//! re-probed with a cheap authenticated listing, backing off, and enabled again once the
//! upstream accepts it. An operator's disable is never probed nor undone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http::header::{HeaderName, HeaderValue};

use crate::config::{BackendKind, Config};
use crate::keys::state::DisableReason;
use crate::keys::{KeyEvent, KeyPools};
use crate::metrics::Metrics;
use crate::routing::fleet::BackendInfo;
use crate::store::{Store, keys};
use crate::upstream::{self, Call, Client};

/// How often due probes are looked for.
const TICK: Duration = Duration::from_secs(1);
/// A probe's whole exchange.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The back-off grows to at most this many times the pool's `reprobe_after`.
const MAX_BACKOFF_FACTOR: u32 = 32;

/// Starts the persistence listener and the re-probe loop (inside an actix system).
pub fn start(
    cfg: &Config,
    store: Store,
    pools: KeyPools,
    backends: Vec<Arc<BackendInfo>>,
    metrics: Arc<Metrics>,
) {
    persist(store, pools.clone());
    let first: HashMap<String, Duration> = cfg
        .key_pools
        .iter()
        .map(|p| (p.name.clone(), p.reprobe_after))
        .collect();
    actix_web::rt::spawn(reprobe(pools, backends, first, metrics));
}

/// Writes this replica's disables and enables to the database, off the request path.
fn persist(store: Store, pools: KeyPools) {
    let mut events = pools.events();
    actix_web::rt::spawn(async move {
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let written = match ev {
                KeyEvent::Disabled { id, pool, reason } => {
                    store
                        .run(move |c| {
                            // An operator's disable of a stored key is written by the admin
                            // API or CLI that made it; one of a `keys_file` key only here.
                            if reason == DisableReason::Failures {
                                keys::record_disabled(c, &id, reason)?;
                            }
                            keys::record_file_disabled(c, &id, &pool, reason).map(drop)
                        })
                        .await
                }
                KeyEvent::Enabled { id, .. } => {
                    store
                        .run(move |c| {
                            keys::record_enabled(c, &id)?;
                            keys::clear_file_disabled(c, &id)
                        })
                        .await
                }
                _ => continue,
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, "key state could not be written to the database");
            }
        }
    });
}

/// When a key is probed next and the wait after a refusal.
struct Due {
    at: Instant,
    backoff: Duration,
}

async fn reprobe(
    pools: KeyPools,
    backends: Vec<Arc<BackendInfo>>,
    first: HashMap<String, Duration>,
    metrics: Arc<Metrics>,
) {
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut due: HashMap<String, Due> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let disabled = pools.failure_disabled();
        due.retain(|id, _| disabled.iter().any(|(_, d, _)| d == id));
        for (pool, id, secret) in disabled {
            let start = first.get(&pool).copied().unwrap_or(Duration::from_secs(60));
            let now = Instant::now();
            let d = due.entry(id.clone()).or_insert(Due {
                at: now + start,
                backoff: start,
            });
            if d.at > now {
                continue;
            }
            let backoff = d.backoff;
            let Some(backend) = backends
                .iter()
                .find(|b| b.config.key_pool.as_deref() == Some(pool.as_str()))
            else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(v) = clients.entry(backend.id) {
                match upstream::client_for(backend, &metrics) {
                    Ok(c) => {
                        v.insert(c);
                    }
                    Err(_) => continue,
                }
            }
            let Some(client) = clients.get(&backend.id) else {
                continue;
            };
            let next = match probe(client, backend, &secret).await {
                Verdict::Accepted => {
                    pools.reenable_probed(&pool, &id);
                    due.remove(&id);
                    continue;
                }
                Verdict::Refused => {
                    let longer = (backoff * 2).min(start * MAX_BACKOFF_FACTOR);
                    tracing::info!(pool, key = %id, next_in = ?longer, "disabled key still refused");
                    longer
                }
                Verdict::Unknown => backoff,
            };
            due.insert(
                id,
                Due {
                    at: Instant::now() + next,
                    backoff: next,
                },
            );
        }
    }
}

enum Verdict {
    Accepted,
    Refused,
    /// The upstream could not tell (down, 5xx): not the key's fault, try again later.
    Unknown,
}

/// The cheapest authenticated call of each kind: the model listing.
async fn probe(client: &Client, backend: &BackendInfo, secret: &str) -> Verdict {
    let path = match backend.config.kind {
        // Ollama lists its tags without a key; its running models need one.
        BackendKind::Ollama => "/api/ps",
        BackendKind::Openai | BackendKind::Anthropic => "/v1/models",
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if backend.config.kind == BackendKind::Anthropic {
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ));
    }
    headers.extend(upstream::credential(backend, Some(secret)));
    let call = Call {
        method: Method::GET,
        path: path.into(),
        body: Bytes::new(),
        headers,
    };
    match upstream::send(client, backend, call, Instant::now() + PROBE_TIMEOUT).await {
        Ok(_) => Verdict::Accepted,
        Err(f) if matches!(f.upstream_status, Some(401 | 403)) => Verdict::Refused,
        Err(_) => Verdict::Unknown,
    }
}
