//! OpenAI dialect: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`, `/v1/embeddings`,
//! `/v1/models`.

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::Gateway;
use crate::api::{self as api, exchange, frontend::Inbound};
use crate::dialect::{Dialect, anthropic, openai};
use crate::error::{DialectError, GatewayError};
use crate::ir::ModelEntry;
use crate::upstream::UpstreamClients;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/v1/completions", web::post().to(completions))
        .route("/v1/responses", web::post().to(create_response))
        .route("/v1/embeddings", web::post().to(embeddings))
        .route("/v1/models", web::get().to(models))
        .route("/v1/models/{id:.*}", web::get().to(model));
}

async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    let decode = |body| Inbound::openai_chat(body, false);
    exchange::serve(req, payload, gw, clients, Dialect::OpenAi, decode).await
}

async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    let decode = |body| Inbound::openai_chat(body, true);
    exchange::serve(req, payload, gw, clients, Dialect::OpenAi, decode).await
}

/// The Responses API, always through the canonical form: no upstream kind is assumed to
/// serve `/v1/responses` itself.
async fn create_response(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    let decode = Inbound::responses;
    exchange::serve(req, payload, gw, clients, Dialect::OpenAi, decode).await
}

async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    let decode = Inbound::openai_embeddings;
    exchange::serve(req, payload, gw, clients, Dialect::OpenAi, decode).await
}

/// Every model the fleet serves plus the virtual ones, for both `/v1/models` shapes.
pub async fn model_entries(gw: &Gateway) -> Vec<ModelEntry> {
    let mut names = std::collections::BTreeSet::new();
    for view in gw.fleet.snapshot().await {
        for item in &view.tags {
            if let Some(n) = item.get("name").and_then(|v| v.as_str()) {
                names.insert(n.to_string());
            }
        }
    }
    for b in gw.fleet.backends() {
        names.extend(b.config.models.iter().cloned());
    }
    names.extend(gw.config.routing.auto_models.iter().cloned());
    names
        .into_iter()
        .map(|id| ModelEntry {
            id,
            created: 1_759_395_859,
            owned_by: "corral".into(),
            display_name: None,
        })
        .collect()
}

fn wants_anthropic(req: &HttpRequest) -> bool {
    req.headers()
        .contains_key(HeaderName::from_static("anthropic-version"))
}

#[derive(serde::Deserialize)]
struct Page {
    limit: Option<u32>,
    after_id: Option<String>,
}

async fn models(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    page: web::Query<Page>,
) -> Result<HttpResponse, DialectError> {
    let dialect = if wants_anthropic(&req) {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    api::authenticate(&req, &gw)
        .await
        .map_err(|e| e.in_dialect(dialect))?;
    let entries = model_entries(&gw).await;
    let body = match dialect {
        Dialect::Anthropic => {
            anthropic::models_list(&entries, page.limit, page.after_id.as_deref())
        }
        _ => openai::models_list(&entries),
    };
    Ok(HttpResponse::Ok().json(body))
}

async fn model(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, DialectError> {
    let dialect = if wants_anthropic(&req) {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    api::authenticate(&req, &gw)
        .await
        .map_err(|e| e.in_dialect(dialect))?;
    let id = id.into_inner();
    let entries = model_entries(&gw).await;
    // Listed names first; otherwise the name resolves as chat would resolve it (aliases,
    // `:latest`, virtual models) and is answered under the name the client used.
    let resolved;
    let entry = match entries.iter().find(|m| m.id == id) {
        Some(e) => e,
        None if api::model_known(&gw, &id) => {
            resolved = ModelEntry {
                id: id.clone(),
                created: 1_759_395_859,
                owned_by: "corral".into(),
                display_name: None,
            };
            &resolved
        }
        None => return Err(GatewayError::unknown_model(&id).in_dialect(dialect)),
    };
    let body = match dialect {
        Dialect::Anthropic => {
            let list = anthropic::models_list(std::slice::from_ref(entry), Some(1), None);
            list["data"][0].clone()
        }
        _ => openai::model_object(entry),
    };
    Ok(HttpResponse::Ok().json(body))
}
