//! The virtual `auto` model: classify the request, then pick a model from the live catalogue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde_json::Value;

use crate::config::{BackendKind, RoutingConfig};
use crate::ir::{ChatRequest, Role};
use crate::routing::catalog::Catalogue;
use crate::routing::classifier::{Classification, ClassifyInput, MessageView, classify};
use crate::routing::fleet::{BackendId, BackendView, Fleet};
use crate::routing::select::{Choice, Load, Needs, NoModel, select};

/// How long a built catalogue is trusted before the fleet view is read again.
const CATALOGUE_TTL: Duration = Duration::from_secs(5);
/// Room assumed for the answer when checking that a context fits.
const ANSWER_TOKENS: u32 = 1024;

/// The catalogue cache and `/api/show` answers per model, shared by every worker.
pub struct AutoRouter {
    names: Vec<String>,
    overrides: Vec<crate::config::ModelAttrs>,
    catalogue: RwLock<Option<(Instant, Arc<Catalogue>)>>,
    shows: RwLock<HashMap<String, Value>>,
}

/// A decision with everything needed to explain it.
pub struct Decision {
    pub classification: Classification,
    pub choice: Result<Choice, NoModel>,
}

impl AutoRouter {
    pub fn new(cfg: &RoutingConfig) -> AutoRouter {
        AutoRouter {
            names: cfg.auto_models.clone(),
            overrides: cfg.models.clone(),
            catalogue: RwLock::new(None),
            shows: RwLock::new(HashMap::new()),
        }
    }

    pub fn is_auto(&self, model: &str) -> bool {
        self.names.iter().any(|n| n == model)
    }

    /// The catalogue, rebuilt from the fleet when stale; `/api/show` is asked once per model,
    /// through `show` (the caller's upstream clients: routing sends nothing itself).
    pub async fn catalogue<F, Fut>(&self, fleet: &Fleet, show: F) -> Arc<Catalogue>
    where
        F: Fn(BackendId, String) -> Fut,
        Fut: Future<Output = Option<Value>>,
    {
        if let Some((at, c)) = self.catalogue.read().as_ref() {
            if at.elapsed() < CATALOGUE_TTL {
                return c.clone();
            }
        }
        let views = fleet.snapshot().await;
        self.fetch_missing_shows(show, &views).await;
        let shows = self.shows.read();
        let mut tags: Vec<Value> = Vec::new();
        for v in views.iter().filter(|v| v.up) {
            tags.extend(v.tags.iter().cloned());
            for m in &v.models {
                if v.kind != BackendKind::Ollama {
                    tags.push(serde_json::json!({"name": m.name, "model": m.name}));
                }
            }
        }
        let pairs = tags.iter().map(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            (t, shows.get(name))
        });
        let (catalogue, _unmatched) = Catalogue::build(pairs, &self.overrides);
        let catalogue = Arc::new(catalogue);
        *self.catalogue.write() = Some((Instant::now(), catalogue.clone()));
        catalogue
    }

    async fn fetch_missing_shows<F, Fut>(&self, show: F, views: &[BackendView])
    where
        F: Fn(BackendId, String) -> Fut,
        Fut: Future<Output = Option<Value>>,
    {
        let mut wanted: Vec<(usize, String)> = Vec::new();
        {
            let shows = self.shows.read();
            for v in views
                .iter()
                .filter(|v| v.up && v.kind == BackendKind::Ollama)
            {
                for t in &v.tags {
                    if let Some(name) = t.get("name").and_then(Value::as_str) {
                        if !shows.contains_key(name) && !wanted.iter().any(|(_, n)| n == name) {
                            wanted.push((v.id, name.to_string()));
                        }
                    }
                }
            }
        }
        let asks = wanted.into_iter().map(|(id, name)| {
            let asked = show(id, name.clone());
            async move { Some((name, asked.await?)) }
        });
        let found = futures_util::future::join_all(asks).await;
        let mut shows = self.shows.write();
        for (name, show) in found.into_iter().flatten() {
            shows.insert(name, show);
        }
    }

    /// Classifies `chat` and picks a model given the live load of `views`.
    pub fn decide(
        &self,
        chat: &ChatRequest,
        catalogue: &Catalogue,
        views: &[BackendView],
    ) -> Decision {
        let classification = classify_chat(chat);
        let needs = Needs::of(&classification, !chat.tools.is_empty(), ANSWER_TOKENS);
        let load = |model: &str| load_of(views, model);
        let choice = select(&classification, needs, catalogue, &load);
        Decision {
            classification,
            choice,
        }
    }
}

/// The classifier's view of a canonical request.
pub fn classify_chat(chat: &ChatRequest) -> Classification {
    let system = chat.system_text().unwrap_or_default();
    let messages = chat
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| MessageView {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            },
            text: &m.text,
            images: m.images.len(),
        })
        .collect();
    classify(&ClassifyInput {
        system: &system,
        messages,
        has_tools: !chat.tools.is_empty(),
        embedding: false,
    })
}

/// A model's live state across the healthy backends that list it.
fn load_of(views: &[BackendView], model: &str) -> Option<Load> {
    let mut found = false;
    let mut load = Load::default();
    for v in views.iter().filter(|v| v.up) {
        if !v.models.iter().any(|m| m.name == model) {
            continue;
        }
        found = true;
        load.resident |= v.resident.iter().any(|r| r.name == model);
        load.inflight = load.inflight.saturating_add(v.inflight as u32);
        load.capacity_ok |= v.memory_max.is_none_or(|max| v.reserved_memory < max);
    }
    found.then_some(load)
}
