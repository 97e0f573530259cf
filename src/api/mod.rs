//! actix-web handlers, one module per dialect plus admin, health and the dashboard,
//! the request path they share ([`exchange`]), and request ids, bounded body reading and
//! caller identity.

pub mod admin;
pub mod admin_fleet;
pub mod admin_keys;
pub mod anthropic;
pub mod body;
pub mod content_encoding;
pub mod cors;
pub mod dashboard;
pub mod dedup;
pub mod exchange;
mod finish;
pub mod forward;
pub mod frontend;
pub mod gateway;
pub mod health;
pub mod manage;
pub mod ollama;
pub mod openai;
pub mod policy;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest};

use crate::Gateway;
use crate::error::{ErrorKind, GatewayError};

/// The id of one request: made by corral, echoed in `x-request-id` and the key of its
/// request-log row; with the client's own `x-request-id`, when it sent one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String, pub Option<String>);

/// Longest client `x-request-id` kept and echoed, in bytes.
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

/// Largest request head accepted, header names and values summed (nginx's default is
/// 4 × 8 KiB); larger heads get 431 in the dialect of the path.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");
/// The Anthropic SDK reads the request id from `request-id` (its `_request_id`).
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Gives every request an id of corral's own (a client's id could repeat another's row)
/// and echoes it, keeps and echoes the client's `x-request-id` (printable ASCII, capped)
/// as `x-client-request-id`, tells the SDKs whether an error answer is worth retrying,
/// refuses oversized request heads, and authenticates a request with a body before
/// anything reads it. One middleware rather than several: each `from_fn` layer costs
/// every request a boxed future.
pub async fn request_head(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let given = req
        .headers()
        .get(X_REQUEST_ID)
        .map(|v| client_request_id(v.as_bytes()))
        .filter(|s| !s.is_empty());
    // Time-ordered ids (UUIDv7) keep request-log inserts sequential in the primary key.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let echo = HeaderValue::from_str(&id).ok();
    let echo_client = given.as_deref().and_then(|g| HeaderValue::from_str(g).ok());
    let mut res = if size > MAX_HEADER_BYTES {
        let e = GatewayError::bad_request(format!(
            "request headers are {size} bytes; the limit is {MAX_HEADER_BYTES}"
        ));
        let mut resp = e.response(dialect_of(req.path()));
        *resp.status_mut() = actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        req.into_response(resp).map_into_right_body()
    } else if let Err(e) = body::caller_first(&req).await {
        let resp = e.response(dialect_of(req.path()));
        req.into_response(resp).map_into_right_body()
    } else {
        req.extensions_mut().insert(RequestId(id, given));
        policy::filter_betas(&mut req);
        next.call(req).await?.map_into_left_body()
    };
    let hint = crate::error::should_retry(res.status());
    let headers = res.headers_mut();
    if let Some(v) = echo {
        headers.insert(REQUEST_ID, v.clone());
        headers.insert(X_REQUEST_ID, v);
    }
    if let Some(hint) = hint.filter(|_| !headers.contains_key(X_SHOULD_RETRY)) {
        headers.insert(X_SHOULD_RETRY, HeaderValue::from_static(hint));
    }
    if let Some(v) = echo_client {
        headers.insert(X_CLIENT_REQUEST_ID, v);
    }
    Ok(res)
}

/// A client's request id as kept: printable ASCII only, at most
/// [`MAX_CLIENT_REQUEST_ID`] bytes.
pub fn client_request_id(raw: &[u8]) -> String {
    raw.iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_CLIENT_REQUEST_ID)
        .map(|&b| char::from(b))
        .collect::<String>()
        .trim()
        .to_string()
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

/// Reads the request body, decoding its `Content-Encoding` as it arrives (see
/// [`content_encoding`]): 413 as soon as the plain body exceeds `limit`, 408 when it does
/// not arrive within `server.body_timeout`, 503 when bodies arriving at once would hold
/// more than `server.body_memory`.
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
    let mut arriving = body::Arriving::start(req);
    // Grown as bytes arrive: a declared length is only a claim.
    let capacity = declared.unwrap_or(1024).min(64 * 1024);
    let mut plain = content_encoding::BodyDecoder::for_request(req.headers(), limit, capacity)?;
    while let Some(chunk) = arriving.next(&mut payload).await? {
        let grown = plain.push(&chunk, limit)?;
        arriving.hold(grown)?;
    }
    plain.finish()
}

/// Resolves the caller from `Authorization: Bearer` or `x-api-key`.
pub async fn authenticate(
    req: &HttpRequest,
    gw: &Gateway,
) -> Result<crate::auth::Principal, GatewayError> {
    body::caller(req, &gw.auth).await
}

/// Whether chat would find `requested`: through an alias to a virtual model or to one some
/// backend knows (`qwen3` is `qwen3:latest`), or through one of its fallbacks.
pub fn model_known(gw: &Gateway, requested: &str) -> bool {
    let target = gw.aliases.resolve(requested);
    let fallbacks = gw.config.routing.fallbacks.get(target);
    gw.auto.is_auto(target)
        || std::iter::once(target)
            .chain(fallbacks.into_iter().flatten().map(String::as_str))
            .any(|m| gw.fleet.knows(m))
}

/// The model to serve `target` with, fitted to what the request wants (see
/// [`crate::routing::features`]); the catalogue is read only when a capability is wanted.
pub async fn fit_features(
    gw: &Gateway,
    clients: &crate::upstream::UpstreamClients,
    target: String,
    wants: crate::routing::features::Wants,
) -> Result<crate::routing::features::Fit, GatewayError> {
    if !wants.any() {
        return Ok(crate::routing::features::Fit {
            model: target,
            thinking: false,
        });
    }
    let catalogue = auto_catalogue(gw, clients).await;
    let fallbacks = gw.config.routing.fallbacks.get(&target);
    let chain =
        std::iter::once(target.as_str()).chain(fallbacks.into_iter().flatten().map(String::as_str));
    crate::routing::features::fit(chain, &catalogue, wants)
}

/// The `auto` catalogue (`routing::auto`), asking Ollama backends' `/api/show` through this
/// worker's upstream clients.
pub async fn auto_catalogue(
    gw: &Gateway,
    clients: &crate::upstream::UpstreamClients,
) -> std::sync::Arc<crate::routing::catalog::Catalogue> {
    let show = |id: crate::routing::fleet::BackendId, name: String| async move {
        let backend = gw.fleet.backends().get(id)?;
        let client = clients.get(id)?;
        let body = serde_json::json!({ "model": name }).to_string();
        let call = crate::upstream::Call::post_json("/api/show", body.into());
        crate::upstream::fetch_json(client, backend, call, 8 << 20).await
    };
    gw.auto.catalogue(&gw.fleet, show).await
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
