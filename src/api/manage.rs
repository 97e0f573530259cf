//! Ollama model management for admins: one backend with `?backend=NAME`, else fanned out
//! (pull to every backend that can hold the model, delete/copy to every Ollama backend),
//! each backend's answer streamed in turn and tagged with its name.

use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Gateway;
use crate::api::{self as api};
use crate::config::BackendKind;
use crate::dialect::Dialect;
use crate::dialect::lines::LineSplitter;
use crate::dialect::ollama::ndjson_line;
use crate::error::{DialectError, ErrorKind, GatewayError};
use crate::routing::fleet::BackendInfo;
use crate::routing::memory::normalize_model;
use crate::upstream::{self, Call, UpstreamClients};

/// Pulls of big models take long; each backend gets this long between progress lines.
const IDLE: Duration = Duration::from_secs(600);

fn err(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::Ollama)
}

#[derive(serde::Deserialize)]
pub struct Target {
    pub backend: Option<String>,
}

pub async fn management(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    target: web::Query<Target>,
) -> Result<HttpResponse, DialectError> {
    let caller = api::authenticate(&req, &gw).await.map_err(err)?;
    if !caller.admin {
        return Err(err(GatewayError::new(
            ErrorKind::Forbidden,
            format!("{} is reserved for administrators", req.path()),
        )));
    }
    let body = api::read_body(payload, &req, gw.config.server.body_limit.as_u64() as usize)
        .await
        .map_err(err)?;
    let path = req.path().to_string();
    let method = http::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|e| err(GatewayError::new(ErrorKind::BadRequest, e.to_string())))?;
    let backends = targets(&gw, &path, &body, target.backend.as_deref())
        .await
        .map_err(err)?;
    tracing::info!(user = %caller.name, path = %path, backends = backends.len(), "model management");
    let clients = clients.into_inner();
    let streamed = path == "/api/pull"
        && serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("stream").and_then(Value::as_bool))
            != Some(false);
    let stream = async_stream::stream! {
        let mut failures = 0usize;
        let total = backends.len();
        for b in backends {
            let Some(client) = clients.get(b.id) else { continue };
            let call = Call { method: method.clone(), path: path.clone().into(), body: body.clone(), headers: Vec::new() };
            let deadline = Instant::now() + b.config.first_byte_timeout;
            let outcome = match upstream::send(client, &b, call, deadline).await {
                Ok(opened) => relay_tagged(opened.body, &b.name).await.map_err(|m| (None, m)),
                Err(f) => Err((f.upstream_status, f.message)),
            };
            match outcome {
                Ok(lines) => yield Ok::<Bytes, actix_web::Error>(lines),
                Err((code, message)) => {
                    failures += 1;
                    yield Ok(ndjson_line(&json!({"backend": b.name, "status": "failed", "code": code, "detail": message})));
                }
            }
        }
        if failures == total {
            yield Ok(ndjson_line(&json!({"error": format!("{failures} of {total} backends failed")})));
        } else {
            yield Ok(ndjson_line(&json!({"status": "success", "backends": total - failures})));
        }
    };
    if streamed {
        return Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .insert_header(("x-accel-buffering", "no"))
            .streaming(stream));
    }
    // One answer: the last line says how it went; per-backend failures are kept.
    let lines: Vec<Bytes> = stream.filter_map(|r| async move { r.ok() }).collect().await;
    let parsed: Vec<Value> = lines
        .iter()
        .flat_map(|b| b.split(|c| *c == b'\n'))
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok(summary(&parsed))
}

/// One answer for a fanned-out call: each backend's outcome in `backends`; 200 when any
/// backend did it, else the status they agree on (404 when none has the model) or 502.
fn summary(lines: &[Value]) -> HttpResponse {
    let mut backends: Vec<Value> = Vec::new();
    for line in lines {
        let Some(name) = line.get("backend").and_then(Value::as_str) else {
            continue;
        };
        let failed = line["status"] == "failed";
        match backends.iter_mut().find(|b| b["backend"] == name) {
            Some(seen) if failed => *seen = line.clone(),
            Some(_) => {}
            None if failed => backends.push(line.clone()),
            None => backends.push(json!({"backend": name, "status": "success"})),
        }
    }
    let failed: Vec<&Value> = backends
        .iter()
        .filter(|b| b["status"] == "failed")
        .collect();
    if failed.is_empty() || failed.len() < backends.len() {
        let failed = failed.into_iter().cloned().collect::<Vec<_>>();
        return HttpResponse::Ok()
            .json(json!({"status": "success", "backends": backends, "failed": failed}));
    }
    let all_404 = failed.iter().all(|b| b["code"] == 404);
    // One backend, or every one lacking the model: its own words (Ollama's 404 text).
    let message = match (all_404, failed.as_slice()) {
        (true, [first, ..]) | (false, [first]) => {
            first["detail"].as_str().unwrap_or("failed").to_string()
        }
        _ => format!("{} of {} backends failed", failed.len(), backends.len()),
    };
    let status = if all_404 {
        actix_web::http::StatusCode::NOT_FOUND
    } else {
        actix_web::http::StatusCode::BAD_GATEWAY
    };
    HttpResponse::build(status).json(json!({"error": message, "backends": backends}))
}

/// The model a management body names: `model`, or `name` as ollama-js and older clients
/// send it, or copy's `source`.
fn named_model(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    ["model", "name", "source"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .find(|m| !m.is_empty())
        .map(str::to_string)
}

/// Reads one backend's answer; each JSON line gets a `backend` field.
async fn relay_tagged(mut body: upstream::BodyStream, name: &str) -> Result<Bytes, String> {
    let mut lines = LineSplitter::new(16 << 20);
    let mut batch = Vec::new();
    let mut out = BytesMut::new();
    loop {
        match tokio::time::timeout(IDLE, body.next()).await {
            Err(_) => return Err(format!("backend {name} went silent")),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("backend {name} broke off: {e}")),
            Ok(Some(Ok(chunk))) => lines
                .feed(&chunk, &mut batch)
                .map_err(|e| format!("line of {} bytes", e.0))?,
        }
    }
    batch.extend(lines.finish());
    for line in batch {
        let mut v: Value = serde_json::from_slice(&line)
            .unwrap_or_else(|_| json!({"status": String::from_utf8_lossy(&line)}));
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(e.to_string());
        }
        if let Value::Object(o) = &mut v {
            o.insert("backend".into(), json!(name));
        }
        out.extend_from_slice(&ndjson_line(&v));
    }
    if out.is_empty() {
        out.extend_from_slice(&ndjson_line(&json!({"backend": name, "status": "success"})));
    }
    Ok(out.freeze())
}

/// The backends a management call goes to.
async fn targets(
    gw: &Gateway,
    path: &str,
    body: &[u8],
    named: Option<&str>,
) -> Result<Vec<std::sync::Arc<BackendInfo>>, GatewayError> {
    let ollama = gw
        .fleet
        .backends()
        .iter()
        .filter(|b| b.config.kind == BackendKind::Ollama && b.config.key_pool.is_none());
    if let Some(name) = named {
        return ollama
            .filter(|b| b.name == name)
            .cloned()
            .map(|b| vec![b])
            .next()
            .ok_or_else(|| GatewayError::not_found(format!("no Ollama backend named `{name}`")));
    }
    if !(path == "/api/pull" || path == "/api/delete" || path == "/api/copy") {
        return Err(GatewayError::bad_field(
            "backend",
            format!("{path} needs ?backend=NAME: it is not fanned out"),
        ));
    }
    let views = gw.fleet.snapshot().await;
    let model = named_model(body).ok_or_else(|| GatewayError::bad_field("model", "is required"))?;
    let wanted = normalize_model(&model);
    let same = |name: &str| normalize_model(name) == wanted;
    let size = views
        .iter()
        .flat_map(|v| v.models.iter())
        .filter(|m| same(&m.name))
        .filter_map(|m| m.size)
        .max();
    let up: Vec<_> = ollama
        .filter(|b| views.iter().any(|v| v.name == b.name && v.up))
        .filter(|b| path != "/api/pull" || fits(b, size))
        .cloned()
        .collect();
    if up.is_empty() {
        return Err(GatewayError::new(
            ErrorKind::NoCapacity,
            "no healthy Ollama backend can take this",
        ));
    }
    Ok(up)
}

fn fits(b: &BackendInfo, size: Option<u64>) -> bool {
    match (b.config.max_memory, size) {
        (Some(max), Some(size)) => size <= max.as_u64(),
        _ => true,
    }
}
