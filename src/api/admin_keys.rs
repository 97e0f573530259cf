//! Admin API for upstream keys: `/admin/api/keys` list, enable/disable, health check.
//!
//! Shapes as in docs/ADMIN_API.md; errors in the OpenAI shape. State changes go to the
//! database when the key is stored there (so they outlive a restart) and to the live
//! [`KeyPools`] (which shares them with the cluster). A key imported with
//! `corral keys import` after start-up joins its pool the first time one of these
//! endpoints touches it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::auth::require_admin;
use crate::dialect::Dialect;
use crate::error::{DialectError, GatewayError};
use crate::keys::import::file_keys;
use crate::keys::probe::{self, ProbeTarget, Verdict};
use crate::keys::{KeyPools, StoredKey, derive_key_id, secret_prefix};
use crate::store::{StoreError, keys};

type Answer = Result<HttpResponse, DialectError>;

/// Registers this module's routes (full paths, beside the other `/admin/api` ones).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/api/keys").route(web::get().to(list_keys)))
        .service(web::resource("/admin/api/keys/health-check").route(web::post().to(health_check)))
        .service(web::resource("/admin/api/keys/{id}/{action}").route(web::post().to(key_action)));
}

fn fail(e: GatewayError) -> DialectError {
    e.in_dialect(Dialect::OpenAi)
}

fn db(e: StoreError) -> DialectError {
    fail(e.to_gateway())
}

async fn admin(req: &HttpRequest, gw: &Gateway) -> Result<(), DialectError> {
    let p = crate::api::authenticate(req, gw).await.map_err(fail)?;
    require_admin(&p).map_err(fail)
}

#[derive(Debug, Deserialize)]
struct PoolQuery {
    pool: Option<String>,
}

fn pool_query(req: &HttpRequest) -> Result<Option<String>, DialectError> {
    let q = web::Query::<PoolQuery>::from_query(req.query_string())
        .map_err(|e| fail(GatewayError::bad_request(format!("bad query string: {e}"))))?;
    Ok(q.into_inner().pool.filter(|p| !p.is_empty()))
}

fn known_pool(pools: &KeyPools, pool: &str) -> Result<(), DialectError> {
    if pools.pool_names().iter().any(|p| p == pool) {
        Ok(())
    } else {
        Err(fail(GatewayError::not_found(format!(
            "no key pool named `{pool}`"
        ))))
    }
}

async fn list_keys(req: HttpRequest, gw: web::Data<Gateway>, pools: web::Data<KeyPools>) -> Answer {
    admin(&req, &gw).await?;
    let pool = pool_query(&req)?;
    if let Some(p) = &pool {
        known_pool(&pools, p)?;
    }
    Ok(HttpResponse::Ok().json(pools.list(pool.as_deref())))
}

async fn key_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    gw: web::Data<Gateway>,
    pools: web::Data<KeyPools>,
) -> Answer {
    admin(&req, &gw).await?;
    let (id, action) = path.into_inner();
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(fail(GatewayError::not_found(format!(
                "no key action `{other}`: use enable or disable"
            ))));
        }
    };
    let lookup = id.clone();
    let stored = gw
        .store
        .run(move |c| {
            keys::set_state(c, &lookup, enabled)?;
            keys::get_stored(c, &lookup)
        })
        .await
        .map_err(db)?;
    if !pools.set_enabled(&id, enabled) {
        // Stored after start-up: it joins its pool now, in the state just set.
        if let Some((pool, key)) = stored {
            join_pool(&pools, &pool, key);
        }
    }
    let Some(key) = pools.key(&id) else {
        return Err(fail(GatewayError::not_found(format!("no key `{id}`"))));
    };
    tracing::info!(key = %id, enabled, "key state set through the admin API");
    Ok(HttpResponse::Ok().json(key))
}

/// Adds a stored key to a configured pool (a no-op, logged, for a pool the config lacks).
fn join_pool(pools: &KeyPools, pool: &str, key: StoredKey) {
    if pools.pool_names().iter().any(|p| p == pool) {
        pools.add_keys(pool, vec![key]);
    } else {
        tracing::warn!(pool, key = %key.id, "stored key of a pool the configuration does not have");
    }
}

async fn health_check(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    pools: web::Data<KeyPools>,
) -> Answer {
    admin(&req, &gw).await?;
    let Some(pool) = pool_query(&req)? else {
        return Err(fail(GatewayError::bad_field(
            "pool",
            "name the pool to check: ?pool=NAME",
        )));
    };
    known_pool(&pools, &pool)?;
    let target =
        ProbeTarget::for_pool(&gw.config, &pool).map_err(|m| fail(GatewayError::bad_request(m)))?;
    let candidates = pool_keys(&gw, &pool).await.map_err(db)?;
    for k in &candidates {
        if pools.key(&k.key.id).is_none() {
            join_pool(&pools, &pool, k.key.clone());
        }
    }
    let probes = candidates
        .iter()
        .map(|k| (k.key.id.clone(), k.key.secret.clone()))
        .collect();
    let verdicts = probe::probe_all(&target, probes).await;

    let mut ok = 0usize;
    let mut failed = Vec::new();
    let mut rejected_stored = Vec::new();
    for (cand, (id, verdict)) in candidates.iter().zip(verdicts) {
        let prefix = secret_prefix(&cand.key.secret);
        match &verdict {
            Verdict::Valid { .. } => {
                ok += 1;
                continue;
            }
            Verdict::Rejected { reason } => {
                tracing::warn!(pool = %pool, key = %id, prefix = %prefix, reason = %reason, "key refused by the upstream; disabled");
                pools.set_enabled(&id, false);
                if cand.stored {
                    rejected_stored.push(id.clone());
                }
            }
            Verdict::Unknown { .. } => {}
        }
        failed.push(json!({"id": id, "prefix": prefix, "reason": verdict.describe()}));
    }
    if !rejected_stored.is_empty() {
        gw.store
            .run(move |c| {
                for id in &rejected_stored {
                    keys::set_state(c, id, false)?;
                }
                Ok(())
            })
            .await
            .map_err(db)?;
    }
    let body: Value = json!({"checked": ok + failed.len(), "ok": ok, "failed": failed});
    Ok(HttpResponse::Ok().json(body))
}

/// A key of the pool with its secret, and whether the database has it.
struct Candidate {
    key: StoredKey,
    stored: bool,
}

/// The pool's keys: stored ones, then those of its `keys_file` not stored (file reads and
/// queries off the async workers).
async fn pool_keys(gw: &Gateway, pool: &str) -> Result<Vec<Candidate>, StoreError> {
    let stored = {
        let pool = pool.to_string();
        gw.store
            .run(move |c| {
                Ok(keys::load_stored(c)?
                    .into_iter()
                    .filter(|(p, _)| *p == pool)
                    .map(|(_, k)| k)
                    .collect::<Vec<_>>())
            })
            .await?
    };
    let from_file = {
        let (cfg, pool) = (gw.config.clone(), pool.to_string());
        actix_web::rt::task::spawn_blocking(move || file_keys(&cfg, Some(&pool)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading the keys file failed: {e}")))?
    };
    // By secret: a stored key keeps its stored id even when its file id differs.
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for key in stored {
        if seen.insert(key.secret.clone()) {
            out.push(Candidate { key, stored: true });
        }
    }
    for (_, _, secret) in from_file {
        if seen.insert(secret.clone()) {
            let id = derive_key_id(&secret);
            out.push(Candidate {
                key: StoredKey {
                    id,
                    secret,
                    enabled: true,
                    category: None,
                },
                stored: false,
            });
        }
    }
    Ok(out)
}
