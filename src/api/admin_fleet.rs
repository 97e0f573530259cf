//! Admin API for the fleet: backends, the effective config, the `auto` catalogue and
//! explanations of its choices (shapes in docs/ADMIN_API.md).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::Gateway;
use crate::api::{self as api};
use crate::auth::require_admin;
use crate::dialect::Dialect;
use crate::error::{DialectError, GatewayError};
use crate::upstream::UpstreamClients;

type Answer = Result<HttpResponse, DialectError>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/api/backends", web::get().to(backends))
        .route("/admin/api/config", web::get().to(config))
        .route("/admin/api/models", web::get().to(models))
        .route("/admin/api/models/{category}", web::get().to(models_in))
        .route("/admin/api/classify", web::post().to(classify));
}

fn fail(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::OpenAi)
}

async fn admin(req: &HttpRequest, gw: &Gateway) -> Result<(), DialectError> {
    let who = api::authenticate(req, gw).await.map_err(fail)?;
    require_admin(&who).map_err(fail)
}

async fn backends(req: HttpRequest, gw: web::Data<Gateway>) -> Answer {
    admin(&req, &gw).await?;
    Ok(HttpResponse::Ok().json(json!({ "backends": gw.fleet.snapshot().await })))
}

async fn config(req: HttpRequest, gw: web::Data<Gateway>) -> Answer {
    admin(&req, &gw).await?;
    Ok(HttpResponse::Ok().json(gw.config.redacted()))
}

async fn models(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> Answer {
    admin(&req, &gw).await?;
    let catalogue = api::auto_catalogue(&gw, &clients).await;
    Ok(HttpResponse::Ok().json(&*catalogue))
}

async fn models_in(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    category: web::Path<String>,
) -> Answer {
    admin(&req, &gw).await?;
    let catalogue = api::auto_catalogue(&gw, &clients).await;
    let list = catalogue.by_category(&category);
    Ok(HttpResponse::Ok().json(json!({ "category": *category, "models": list })))
}

#[derive(serde::Deserialize)]
struct ClassifyQuery {
    /// The route the body would be sent to (`/api/chat`, `/v1/messages`...); guessed if absent.
    path: Option<String>,
}

/// A chat body in any dialect, decoded as its route would, classified and routed on paper:
/// no model is called.
async fn classify(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    query: web::Query<ClassifyQuery>,
) -> Answer {
    admin(&req, &gw).await?;
    let body = api::read_body(payload, &req, crate::api::admin::ADMIN_BODY_LIMIT)
        .await
        .map_err(fail)?;
    api::body::json_object(&body).map_err(fail)?;
    let chat = crate::dialect::detect::decode_chat(&body, query.path.as_deref()).map_err(fail)?;
    let catalogue = api::auto_catalogue(&gw, &clients).await;
    let views = gw.fleet.snapshot().await;
    let decision = gw.auto.decide(&chat, &catalogue, &views);
    let c = &decision.classification;
    let mut out = json!({
        "category": c.category.to_string(),
        "complexity": c.complexity,
        "signals": c.signals,
        "context_tokens": c.context_tokens,
    });
    match decision.choice {
        Ok(choice) => {
            out["model"] = json!(choice.model);
            out["reason"] = json!(choice.reason);
            out["runners_up"] = json!(
                choice
                    .runners_up
                    .iter()
                    .map(|(m, r)| json!({"model": m, "reason": r}))
                    .collect::<Vec<_>>()
            );
        }
        Err(none) => {
            out["model"] = serde_json::Value::Null;
            out["reason"] = json!(none.to_string());
            out["runners_up"] = json!([]);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}
