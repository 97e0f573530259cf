//! Browser access (CORS) for the origins in `[server] cors_origins`, answered by actix-cors
//! before any handler, so a preflight never meets authentication.

use actix_cors::Cors;
use actix_web::http::Method;

/// Headers a browser client may read: the request id both SDKs report, the retry hints they
/// obey, and which backend and model served.
const EXPOSED: [&str; 8] = [
    "x-request-id",
    "request-id",
    "x-should-retry",
    "retry-after",
    "x-corral-backend",
    "x-corral-model",
    "x-corral-category",
    "x-corral-shared",
];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: usize = 600;

/// The CORS layer for `origins` (validated by the configuration): `*` answers every origin
/// with a wildcard and never allows credentials; listed origins are echoed and may send
/// credentials. Requests from other origins are served without CORS headers, so the
/// browser, not corral, withholds the answer.
pub fn layer(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD])
        .allow_any_header()
        .expose_headers(EXPOSED)
        .max_age(PREFLIGHT_MAX_AGE_SECS)
        .block_on_origin_mismatch(false);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
        cors = cors.supports_credentials();
    }
    cors
}
