//! Admin API (users, stats, request log) under `/admin/api`, shapes as in docs/ADMIN_API.md.
//!
//! Every handler authenticates, requires an admin and answers errors in the OpenAI
//! shape. Routes are registered as full-path resources, not a `/admin/api` scope, so
//! other modules can add their own `/admin/api/...` routes beside these.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Authenticator, Principal, require_admin};
use crate::dialect::Dialect;
use crate::error::{DialectError, GatewayError};
use crate::store::{Store, StoreError, logs, now, stats, users};

type Answer = Result<HttpResponse, DialectError>;

/// Largest admin request body: admin bodies are small JSON documents.
pub const ADMIN_BODY_LIMIT: usize = 256 * 1024;

/// Registers this module's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/api/users")
            .route(web::get().to(list_users))
            .route(web::post().to(create_user)),
    )
    .service(web::resource("/admin/api/users/{name}/{action}").route(web::post().to(user_action)))
    .service(web::resource("/admin/api/stats").route(web::get().to(stats_window)))
    .service(web::resource("/admin/api/stats/24h").route(web::get().to(stats_24h)))
    .service(web::resource("/admin/api/stats/models").route(web::get().to(stats_models)))
    .service(web::resource("/admin/api/requests").route(web::get().to(list_requests)))
    .service(web::resource("/admin/api/requests/{id}").route(web::get().to(one_request)));
}

fn fail(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::OpenAi)
}

fn db(e: StoreError) -> DialectError {
    fail(e.to_gateway())
}

async fn admin(req: &HttpRequest, auth: &Authenticator) -> Result<Principal, DialectError> {
    let p = crate::api::body::caller(req, auth).await.map_err(fail)?;
    require_admin(&p).map_err(fail)?;
    Ok(p)
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, DialectError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| fail(GatewayError::bad_request(format!("bad query string: {e}"))))
}

async fn list_users(
    req: HttpRequest,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let all = store.run(users::list).await.map_err(db)?;
    let all: Vec<_> = all.iter().map(users::User::to_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "users": all })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
    rpm: Option<u32>,
    tpm: Option<u32>,
}

async fn create_user(
    req: HttpRequest,
    payload: web::Payload,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let body = crate::api::read_body(payload, &req, ADMIN_BODY_LIMIT)
        .await
        .map_err(fail)?;
    crate::api::body::json_object(&body).map_err(fail)?;
    let new: NewUser = serde_json::from_slice(&body)
        .map_err(|e| fail(GatewayError::bad_request(format!("bad user JSON: {e}"))))?;
    let NewUser {
        name,
        admin,
        rpm,
        tpm,
    } = new;
    let (user, token) = store
        .run(move |c| users::create(c, &name, admin, rpm, tpm))
        .await
        .map_err(db)?;
    // The next lookup reloads, so the new token works at once rather than after the
    // miss-reload throttle.
    auth.invalidate_user(&user.name);
    tracing::info!(user = %user.name, admin = user.admin, "user created through the admin API");
    Ok(HttpResponse::Created().json(json!({ "user": user.to_json(), "token": token })))
}

async fn user_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let (name, action) = path.into_inner();
    let who = name.clone();
    let (user, token) = match action.as_str() {
        "deactivate" | "activate" => {
            let active = action == "activate";
            let u = store
                .run(move |c| users::set_active(c, &who, active))
                .await
                .map_err(db)?;
            (u, None)
        }
        "rotate" => {
            let (u, t) = store
                .run(move |c| users::rotate(c, &who))
                .await
                .map_err(db)?;
            (u, Some(t))
        }
        other => {
            return Err(fail(GatewayError::not_found(format!(
                "no user action `{other}`: use deactivate, activate or rotate"
            ))));
        }
    };
    auth.invalidate_user(&name);
    if let Some(gw) = req.app_data::<web::Data<crate::Gateway>>() {
        gw.cluster.publish_revocation(&name);
    }
    tracing::info!(user = %name, action = %action, "user changed through the admin API");
    let mut out = json!({ "user": user.to_json() });
    if let Some(t) = token {
        out["token"] = json!(t);
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Debug, Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

async fn stats_window(
    req: HttpRequest,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let q: WindowQuery = query(&req)?;
    let label = q.window.unwrap_or_else(|| "60m".into());
    let minutes = stats::window_minutes(&label).ok_or_else(|| {
        fail(GatewayError::bad_field(
            "window",
            format!("`{label}` is not one of 60m, 2h, 4h, 6h, 12h, 24h"),
        ))
    })?;
    let body = store
        .run(move |c| stats::window(c, now(), &label, minutes))
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(body))
}

async fn stats_24h(
    req: HttpRequest,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let body = store.run(|c| stats::last_24h(c, now())).await.map_err(db)?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct ModelsQuery {
    window: Option<String>,
}

/// Per-model and per-category latency, errors and tokens (`?window=60m..24h`, default 24h).
async fn stats_models(
    req: HttpRequest,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let q: ModelsQuery = query(&req)?;
    let label = q.window.unwrap_or_else(|| "24h".into());
    let minutes = stats::window_minutes(&label).ok_or_else(|| {
        fail(GatewayError::bad_field(
            "window",
            "must be one of 60m, 2h, 4h, 6h, 12h, 24h",
        ))
    })?;
    let body = store
        .run(move |c| stats::models(c, now(), minutes))
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct RequestsQuery {
    limit: Option<i64>,
    user: Option<String>,
    model: Option<String>,
}

/// Most rows one `/requests` call returns.
const MAX_LIMIT: i64 = 1000;

async fn list_requests(
    req: HttpRequest,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let q: RequestsQuery = query(&req)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let user = q.user.filter(|s| !s.is_empty());
    let model = q.model.filter(|s| !s.is_empty());
    let rows = store
        .run(move |c| logs::recent(c, limit, user.as_deref(), model.as_deref()))
        .await
        .map_err(db)?;
    let rows: Vec<_> = rows.iter().map(logs::LogEntry::to_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "requests": rows })))
}

async fn one_request(
    req: HttpRequest,
    path: web::Path<String>,
    store: web::Data<Store>,
    auth: web::Data<Authenticator>,
) -> Answer {
    admin(&req, &auth).await?;
    let id = path.into_inner();
    let lookup = id.clone();
    let found = store
        .run(move |c| logs::one(c, &lookup))
        .await
        .map_err(db)?;
    let Some((entry, body)) = found else {
        return Err(fail(GatewayError::not_found(format!(
            "no request `{id}` in the log"
        ))));
    };
    let mut out = entry.to_json();
    out["body"] = json!(body);
    Ok(HttpResponse::Ok().json(out))
}
