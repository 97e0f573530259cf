//! Ollama model management for admins: one backend with `?backend=NAME`, else fanned out
//! (pull to every backend that can hold the model, delete/copy to every Ollama backend),
//! each backend's answer streamed in turn and tagged with its name.

use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Gateway;
use crate::actors::supervisor::BackendInfo;
use crate::api::{self as api};
use crate::config::BackendKind;
use crate::dialect::Dialect;
use crate::dialect::lines::LineSplitter;
use crate::dialect::ollama::ndjson_line;
use crate::error::{DialectError, ErrorKind, GatewayError};
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
                Ok(opened) => relay_tagged(opened.body, &b.name).await,
                Err(f) => Err(f.error.message),
            };
            match outcome {
                Ok(lines) => yield Ok::<Bytes, actix_web::Error>(lines),
                Err(message) => {
                    failures += 1;
                    yield Ok(ndjson_line(&json!({"backend": b.name, "status": "failed", "detail": message})));
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
    let failed: Vec<&Value> = parsed.iter().filter(|v| v["status"] == "failed").collect();
    match parsed.last() {
        Some(last) if last.get("error").is_some() => Err(err(GatewayError::new(
            ErrorKind::UpstreamStatus,
            last["error"]
                .as_str()
                .unwrap_or("management call failed")
                .to_string(),
        ))),
        _ => Ok(HttpResponse::Ok().json(json!({"status": "success", "failed": failed}))),
    }
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
    let model = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("model")
                .or_else(|| v.get("source"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| GatewayError::bad_field("model", "is required"))?;
    let size = views
        .iter()
        .flat_map(|v| v.models.iter())
        .filter(|m| m.name == model)
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
