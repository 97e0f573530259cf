//! Anthropic Messages dialect (what Claude Code speaks): `/v1/messages` and `count_tokens`.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::Gateway;
use crate::api::chat::{self, Answer, ClientWriter};
use crate::api::forward::Ctx;
use crate::api::{self as api};
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
) -> Result<HttpResponse, DialectError> {
    let caller = api::authenticate(&req, &gw).await.map_err(err)?;
    let body = api::read_body(payload, &req, gw.config.server.body_limit.as_u64() as usize)
        .await
        .map_err(err)?;
    api::body::json_object(&body).map_err(err)?;
    let chat = anthropic::decode_messages(&body).map_err(err)?;
    api::body::model_name(&chat.model).map_err(err)?;
    let mut ctx = Ctx::new(&req, Dialect::Anthropic, caller.name);
    ctx.requested_model = chat.model.clone();
    ctx.generates = true;
    ctx.body = Some(body.clone());
    let ctx = api::admit(&gw, (caller.rpm, caller.tpm), ctx)
        .await
        .map_err(err)?;
    let id = anthropic::new_message_id();
    let (model, estimate) = (chat.model.clone(), chat.estimate_input_tokens());
    let (id2, model2) = (id.clone(), model.clone());
    let answer = Answer {
        dialect: Dialect::Anthropic,
        raw: Some((body.clone(), "/v1/messages")),
        writer: Box::new(move || {
            ClientWriter::Anthropic(anthropic::StreamWriter::new(&id, &model, estimate))
        }),
        whole: Box::new(move |resp| anthropic::encode_response(resp, &model2, &id2)),
    };
    chat::serve_chat(&req, gw, &clients, ctx, chat, answer).await
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
