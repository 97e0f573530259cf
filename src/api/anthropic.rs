//! Anthropic Messages dialect (what Claude Code speaks): `/v1/messages` and `count_tokens`.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::Gateway;
use crate::api::{self as api, exchange, frontend::Inbound};
use crate::dialect::{Dialect, anthropic};
use crate::error::{DialectError, GatewayError};
use crate::upstream::UpstreamClients;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // `?beta=true` is part of the query, not the path: routing on the path accepts it.
    cfg.route("/v1/messages", web::post().to(messages))
        .route("/v1/messages/count_tokens", web::post().to(count_tokens));
}

fn err(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::Anthropic)
}

async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
) -> HttpResponse {
    exchange::serve(
        req,
        payload,
        gw,
        clients,
        Dialect::Anthropic,
        Inbound::anthropic,
    )
    .await
}

/// Ollama has no tokenizer endpoint: corral estimates (bytes/4), as Ollama's own code does.
async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, DialectError> {
    api::authenticate(&req, &gw).await.map_err(err)?;
    let body = api::read_body(payload, &req, gw.config.server.body_limit.as_u64() as usize)
        .await
        .map_err(err)?;
    api::body::json_object(&body).map_err(err)?;
    let chat = anthropic::decode_count_tokens(&body).map_err(err)?;
    // The same answer /v1/messages would give for a model no backend has.
    if !api::model_known(&gw, &chat.model) {
        return Err(err(GatewayError::unknown_model(&chat.model)));
    }
    Ok(HttpResponse::Ok().json(anthropic::count_tokens_response(
        chat.estimate_input_tokens().max(1),
    )))
}
