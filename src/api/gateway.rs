//! `Gateway`: everything the handlers share, built once before the HTTP server starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::actors;
use crate::actors::log_writer::{LogSink, LogWriter};
use crate::api;
use crate::auth::Authenticator;
use crate::config::{self, Config};
use crate::keys;
use crate::metrics::Metrics;
use crate::ratelimit;
use crate::redact;
use crate::routing;
use crate::routing::aliases::Aliases;
use crate::routing::fleet::Fleet;
use crate::store::{self, Store};
use crate::upstream;

/// Everything the handlers share, built once before the HTTP server starts.
pub struct Gateway {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub auth: Authenticator,
    pub logs: LogSink,
    pub keys: keys::KeyPools,
    pub cluster: actors::cluster_sync::ClusterSync,
    pub limiter: ratelimit::RateLimiter,
    pub fleet: Fleet,
    pub aliases: Aliases,
    pub auto: routing::auto::AutoRouter,
    /// Identical non-streaming requests in flight or just answered, shared by every worker.
    pub dedup: api::dedup::Dedup,
    /// Memory held by request bodies still arriving, shared by every worker.
    pub bodies: api::body::BodyBudget,
    /// Bytes of non-streamed answers buffered by every worker (`server.max_buffered_answers`).
    pub answers: Arc<upstream::AnswerBudget>,
    draining: AtomicBool,
}

impl Gateway {
    /// Starts the actors; must run inside an actix system.
    pub async fn start(config: Config) -> Result<Gateway, String> {
        let config = Arc::new(config);
        redact::register_config(&config);
        let metrics = Arc::new(Metrics::new());
        let db = config.database.clone();
        let store = actix_web::rt::task::spawn_blocking(move || Store::connect(&db))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("database {}: {e}", config::redact_url(&config.database.url)))?;
        let auth = Authenticator::new(store.clone(), &config.auth);
        let logs = LogWriter::start(store.clone(), metrics.clone(), &config.logging);
        metrics.zero_series(config.backends.iter().map(|b| b.name.as_str()));
        let fleet = actors::supervisor::start(&config, metrics.clone());
        let keys = keys::KeyPools::new(&config, metrics.clone());
        store::keys::load_into(&store, &keys)
            .await
            .map_err(|e| format!("loading stored keys: {e}"))?;
        actors::key::KeyActor::start(keys.clone(), actors::key::TICK);
        actors::key_health::start(
            &config,
            store.clone(),
            keys.clone(),
            fleet.backends().to_vec(),
            metrics.clone(),
        );
        let replica = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let cluster = actors::cluster_sync::ClusterSync::start(
            &config.redis.url,
            format!("{replica}-{}", std::process::id()),
            keys.clone(),
            metrics.clone(),
        );
        let limiter = ratelimit::RateLimiter::new(Some(cluster.clone()), metrics.clone());
        if config.redis.url.is_empty() {
            // One replica without Redis: a `corral_redis_up 0` would only raise false alarms.
            let _ = metrics
                .registry
                .unregister(Box::new(metrics.redis_up.clone()));
        }
        follow_revocations(&cluster, &auth);
        if config.auth.allow_anonymous {
            tracing::warn!(
                "auth.allow_anonymous = true: requests without a valid token are served as `anonymous`"
            );
        }
        Ok(Gateway {
            store,
            auth,
            logs,
            keys,
            cluster,
            limiter,
            aliases: Aliases::new(&config.routing),
            auto: routing::auto::AutoRouter::new(&config.routing),
            dedup: api::dedup::Dedup::new(config.routing.dedup_window),
            bodies: api::body::BodyBudget::new(config.server.body_memory.as_u64() as usize),
            answers: Arc::new(upstream::AnswerBudget::new(
                usize::try_from(config.server.max_buffered_answers.as_u64()).unwrap_or(usize::MAX),
            )),
            config,
            metrics,
            fleet,
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Writes what the request log still holds, within `shutdown_grace`.
    pub async fn drain_logs(&self) {
        if !self.logs.shutdown(self.config.server.shutdown_grace).await {
            tracing::warn!(
                "some request-log rows could not be written before shutdown (counted as dropped)"
            );
        }
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Tokens revoked on another replica stop working here at once.
fn follow_revocations(cluster: &actors::cluster_sync::ClusterSync, auth: &Authenticator) {
    let mut rx = cluster.revocations();
    let auth = auth.clone();
    actix_web::rt::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(user) => auth.invalidate_user(&user),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
