//! `/health` (liveness, touches nothing), `/ready` (readiness) and `/metrics`.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::Gateway;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when not draining and at least one backend is up.
async fn ready(gw: web::Data<Gateway>) -> HttpResponse {
    let mut problems = Vec::new();
    if gw.is_draining() {
        problems.push("draining".to_string());
    }
    if let Err(e) = gw.store.ping().await {
        problems.push(format!("database: {e}"));
    }
    let views = gw.fleet.snapshot().await;
    if !gw.config.backends.is_empty() && !views.iter().any(|v| v.up) {
        problems.push("no healthy backend".to_string());
    }
    if gw.config.backends.is_empty() {
        problems.push("no backends configured".to_string());
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not ready", "problems": problems }))
    }
}

async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(gw.metrics.render())
}
