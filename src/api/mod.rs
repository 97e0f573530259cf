//! actix-web handlers, one module per dialect plus admin, health and the dashboard,
//! the request path they share ([`exchange`]), and request ids, bounded body reading and
//! caller identity.

pub mod admin;
pub mod admin_fleet;
pub mod admin_keys;
pub mod anthropic;
pub mod dashboard;
pub mod dedup;
pub mod exchange;
mod finish;
pub mod forward;
pub mod frontend;
pub mod health;
pub mod manage;
pub mod ollama;
pub mod openai;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest};
use futures_util::StreamExt;

use crate::Gateway;
use crate::error::{ErrorKind, GatewayError};

/// The id of one request, echoed in `x-request-id` and written to the request log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Largest request head accepted, header names and values summed (nginx's default is
/// 4 × 8 KiB); larger heads get 431 in the dialect of the path.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the client's, when it is short and plain) and echoes it, and
/// refuses oversized request heads before any handler runs. One middleware rather than two:
/// each `from_fn` layer costs every request a boxed future.
pub async fn request_head(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let given = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string);
    // Time-ordered ids (UUIDv7) keep request-log inserts sequential in the primary key.
    let id = given.unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let echo = HeaderValue::from_str(&id).ok();
    let mut res = if size > MAX_HEADER_BYTES {
        let e = GatewayError::bad_request(format!(
            "request headers are {size} bytes; the limit is {MAX_HEADER_BYTES}"
        ));
        let mut resp = e.response(dialect_of(req.path()));
        *resp.status_mut() = actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        req.into_response(resp).map_into_right_body()
    } else {
        req.extensions_mut().insert(RequestId(id));
        next.call(req).await?.map_into_left_body()
    };
    if let Some(v) = echo {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    Ok(res)
}

/// The dialect a path speaks, for answers given before any handler runs.
pub fn dialect_of(path: &str) -> crate::dialect::Dialect {
    if path.starts_with("/v1/messages") {
        crate::dialect::Dialect::Anthropic
    } else if path.starts_with("/v1/") || path.starts_with("/admin/") {
        crate::dialect::Dialect::OpenAi
    } else {
        crate::dialect::Dialect::Ollama
    }
}

/// Reads the request body, refusing with 413 as soon as it exceeds `limit`.
pub async fn read_body(
    mut payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            GatewayError::bad_request(format!("could not read the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Resolves the caller from `Authorization: Bearer` or `x-api-key`.
pub async fn authenticate(
    req: &HttpRequest,
    gw: &Gateway,
) -> Result<crate::auth::Principal, GatewayError> {
    gw.auth.authenticate(req.headers()).await
}

/// Every route of the gateway.
/// The generation routes come first: actix tries routes in order, and each dynamic admin
/// path before them would cost every request a regex match.
pub fn configure(cfg: &mut web::ServiceConfig) {
    ollama::configure(cfg);
    openai::configure(cfg);
    anthropic::configure(cfg);
    health::configure(cfg);
    admin::configure(cfg);
    admin_fleet::configure(cfg);
    admin_keys::configure(cfg);
    dashboard::configure(cfg);
}

/// Unknown paths: 404 in the dialect the path suggests.
pub async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let dialect = dialect_of(req.path());
    GatewayError::not_found(format!("no route for {} {}", req.method(), req.path()))
        .response(dialect)
}
