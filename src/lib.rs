//! corral: one endpoint in front of a fleet of LLM upstreams.
#![forbid(unsafe_code)]

pub mod actors;
pub mod api;
pub mod auth;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod error;
pub mod ir;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod redact;
pub mod routing;
pub mod sim;
pub mod store;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, middleware, web};

use crate::actors::log_writer::{LogSink, LogWriter};
use crate::actors::supervisor::Fleet;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routing::aliases::Aliases;
use crate::store::Store;
use crate::upstream::UpstreamClients;

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
        let fleet = Fleet::start(&config, metrics.clone());
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

/// A fresh token for a `corral demo` user (created, or rotated when it exists).
pub fn demo_token(cfg: &Config, name: &str, admin: bool) -> Result<String, String> {
    let store = Store::connect_once(&cfg.database).map_err(|e| e.to_string())?;
    store
        .blocking(|conn| match store::users::get(conn, name)? {
            Some(_) => store::users::rotate(conn, name).map(|(_, t)| t),
            None => store::users::create(conn, name, admin, None, None).map(|(_, t)| t),
        })
        .map_err(|e| e.to_string())
}

/// The actix application for one worker: shared state plus a per-worker upstream client.
pub fn app(
    gw: web::Data<Gateway>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let clients = web::Data::new(UpstreamClients::new(gw.fleet.backends(), &gw.metrics));
    let (gw_store, gw_auth, gw_keys) = (gw.store.clone(), gw.auth.clone(), gw.keys.clone());
    let origins = &gw.config.server.cors_origins;
    let cors = middleware::Condition::new(!origins.is_empty(), api::cors::layer(origins));
    App::new()
        .app_data(gw)
        .app_data(clients)
        .wrap(middleware::from_fn(api::request_head))
        .app_data(web::Data::new(gw_store))
        .app_data(web::Data::new(gw_auth))
        .app_data(web::Data::new(gw_keys))
        .configure(api::configure)
        .default_service(web::to(api::not_found))
        // Outermost: preflights are answered before anything else, errors get CORS too.
        .wrap(cors)
}

/// A gateway serving on a bound address.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: web::Data<Gateway>,
    pub handle: ServerHandle,
    task: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the server stops (after `shutdown`).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Graceful stop: readiness turns 503, the listener closes, in-flight requests get
    /// `shutdown_grace` to finish, then queued request-log rows are written.
    pub async fn shutdown(&self) {
        self.gateway.set_draining();
        self.handle.stop(true).await;
        self.gateway.drain_logs().await;
    }
}

/// Turns Nagle off on an accepted connection. Streams end with a small write (the last
/// chunk, then the terminator) that Nagle would hold until the client's delayed ACK,
/// about 40 ms; token streams are small writes throughout. Go's net/http (Ollama) does
/// the same by default.
pub fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        // Without it the connection still works, only slower; nothing to report.
        let _ = tcp.set_nodelay(true);
    }
}

/// Binds `listen` (port 0 = any) and starts serving in the current actix system;
/// returns at once.
pub async fn serve(config: Config, listen: &str) -> std::io::Result<Running> {
    let grace = config.server.shutdown_grace;
    let head_timeout = config.server.head_timeout;
    let workers = config.server.workers;
    let gateway = Gateway::start(config)
        .await
        .map_err(std::io::Error::other)?;
    let gateway = web::Data::new(gateway);
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let data = gateway.clone();
    let mut server = HttpServer::new(move || app(data.clone()))
        .on_connect(no_delay)
        .listen(listener)?
        .disable_signals()
        // A client that closes its side cancels its request, so the upstream one stops too.
        .h1_allow_half_closed(false)
        // A head that trickles in holds a connection; the body has its own deadline.
        .client_request_timeout(head_timeout)
        .shutdown_timeout(grace.as_secs().max(1));
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.run();
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    Ok(Running {
        addr,
        gateway,
        handle,
        task: Some(task),
    })
}
