//! Ollama-native endpoints: generation proxied frame by frame, and the fleet seen as one Ollama.

use std::collections::BTreeMap;

use actix_web::http::header::ContentType;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::Gateway;
use crate::api::{self as api, exchange, frontend::Inbound};
use crate::config::BackendKind;
use crate::dialect::Dialect;
use crate::error::{DialectError, GatewayError};
use crate::upstream::{Call, UpstreamClients};

/// The Ollama version corral reports; clients gate features on it.
pub const OLLAMA_COMPAT_VERSION: &str = "0.12.6";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/chat", web::post().to(chat))
        .route("/api/generate", web::post().to(generate))
        .route("/api/embed", web::post().to(embed))
        .route("/api/embeddings", web::post().to(embeddings))
        .route("/api/show", web::post().to(show))
        .route("/api/tags", web::get().to(tags))
        .route("/api/tags", web::head().to(ok_empty))
        .route("/api/ps", web::get().to(ps))
        .route("/api/version", web::get().to(version))
        .route("/api/version", web::head().to(ok_empty))
        .route("/", web::get().to(root))
        .route("/", web::head().to(ok_empty));
    for path in [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
        "/api/blobs/{digest}",
        "/api/me",
        "/api/signout",
        "/api/user/keys/{key}",
        "/api/experimental/{tool}",
    ] {
        cfg.route(path, web::route().to(crate::api::manage::management));
    }
}

fn err(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::Ollama)
}

async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("Ollama is running")
}

async fn ok_empty() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "version": OLLAMA_COMPAT_VERSION }))
}

async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    generation(req, payload, gw, clients, "/api/chat").await
}

async fn generate(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    generation(req, payload, gw, clients, "/api/generate").await
}

async fn embed(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    generation(req, payload, gw, clients, "/api/embed").await
}

async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    generation(req, payload, gw, clients, "/api/embeddings").await
}

async fn show(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    generation(req, payload, gw, clients, "/api/show").await
}

/// Every model endpoint goes through the one request path; the body goes to Ollama
/// upstreams as the client sent it.
async fn generation(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    path: &'static str,
) -> HttpResponse {
    let decode = |body| Inbound::ollama(path, body);
    exchange::serve(req, payload, gw, clients, Dialect::Ollama, decode).await
}

/// `/api/tags`: the union of every backend's models, the largest size winning.
async fn tags(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, DialectError> {
    api::authenticate(&req, &gw).await.map_err(err)?;
    let mut models: BTreeMap<String, Value> = BTreeMap::new();
    for view in gw.fleet.snapshot().await {
        for item in view.tags {
            let Some(name) = item.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let size = |v: &Value| v.get("size").and_then(Value::as_u64).unwrap_or(0);
            match models.get(&name) {
                Some(existing) if size(existing) >= size(&item) => {}
                _ => {
                    models.insert(name, item);
                }
            }
        }
    }
    for name in &gw.config.routing.auto_models {
        models
            .entry(name.clone())
            .or_insert_with(|| virtual_tag(name));
    }
    let list: Vec<Value> = models.into_values().collect();
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

fn virtual_tag(name: &str) -> Value {
    json!({
        "name": name, "model": name, "modified_at": "2026-01-01T00:00:00Z", "size": 0,
        "digest": format!("{:0>64}", ""),
        "details": {"parent_model": "", "format": "virtual", "family": "corral", "families": ["corral"],
                    "parameter_size": "", "quantization_level": ""}
    })
}

/// `/api/ps`: residency merged from every backend, asked live (residency changes by the
/// second), each item hinting where it lives; the last poll stands in for a backend that
/// does not answer at once.
async fn ps(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Result<HttpResponse, DialectError> {
    api::authenticate(&req, &gw).await.map_err(err)?;
    let views = gw.fleet.snapshot().await;
    let asks = views
        .iter()
        .filter(|v| v.up)
        .map(|v| live_ps(&gw, &clients, v));
    let mut list = Vec::new();
    for items in futures_util::future::join_all(asks).await {
        list.extend(items);
    }
    list.sort_by(|a, b| {
        let exp = |v: &Value| {
            v.get("expires_at")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        exp(a).cmp(&exp(b))
    });
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

async fn live_ps(
    gw: &Gateway,
    clients: &UpstreamClients,
    view: &crate::routing::fleet::BackendView,
) -> Vec<Value> {
    let backend = gw.fleet.backends().iter().find(|b| b.name == view.name);
    let live = match (backend, backend.and_then(|b| clients.get(b.id))) {
        (Some(b), Some(client)) if b.config.kind == BackendKind::Ollama => {
            let call = Call {
                method: http::Method::GET,
                path: "/api/ps".into(),
                body: Bytes::new(),
                headers: Vec::new(),
            };
            crate::upstream::fetch_json(client, b, call, 4 << 20)
                .await
                .and_then(|v| v.get("models").and_then(Value::as_array).cloned())
        }
        _ => None,
    };
    let mut items = live.unwrap_or_else(|| view.ps.clone());
    for item in &mut items {
        item["backend"] = Value::String(view.name.clone());
    }
    items
}
