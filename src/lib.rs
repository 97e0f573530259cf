//! corral: one endpoint in front of a fleet of LLM upstreams.
#![forbid(unsafe_code)]

pub mod actors;
pub mod api;
pub mod auth;
pub mod config;
pub mod dialect;
pub mod error;
pub mod ir;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
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

use crate::actors::supervisor::Fleet;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routing::aliases::Aliases;
use crate::upstream::UpstreamClients;

/// Everything the handlers share, built once before the HTTP server starts.
pub struct Gateway {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub fleet: Fleet,
    pub aliases: Aliases,
    draining: AtomicBool,
}

impl Gateway {
    /// Starts the actors; must run inside an actix system.
    pub async fn start(config: Config) -> Result<Gateway, String> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let fleet = Fleet::start(&config, metrics.clone());
        Ok(Gateway {
            aliases: Aliases::new(&config.routing),
            config,
            metrics,
            fleet,
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Final accounting of one request (the request log).
    pub fn record(&self, tally: &api::forward::Tally) {
        tracing::debug!(
            request_id = %tally.ctx.request_id,
            status = tally.status,
            model = %tally.served_model,
            backend = %tally.backend,
            "request finished"
        );
    }
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
    let clients = web::Data::new(UpstreamClients::new(gw.fleet.backends()));
    App::new()
        .app_data(gw)
        .app_data(clients)
        .wrap(middleware::from_fn(api::request_id))
        .configure(api::configure)
        .default_service(web::to(api::not_found))
}

/// A gateway serving on a bound address.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: web::Data<Gateway>,
    pub handle: ServerHandle,
    server: Option<actix_web::dev::Server>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the server stops (after `shutdown`).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.server.take() {
            Some(s) => s.await,
            None => Ok(()),
        }
    }

    /// Graceful stop: readiness turns 503, the listener closes, in-flight requests get
    /// `shutdown_grace` to finish.
    pub async fn shutdown(&self) {
        self.gateway.set_draining();
        self.handle.stop(true).await;
    }
}

/// Binds `listen` (port 0 = any) and starts serving in the current actix system.
pub async fn serve(config: Config, listen: &str) -> std::io::Result<Running> {
    let grace = config.server.shutdown_grace;
    let workers = config.server.workers;
    let gateway = Gateway::start(config)
        .await
        .map_err(std::io::Error::other)?;
    let gateway = web::Data::new(gateway);
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let data = gateway.clone();
    let mut server = HttpServer::new(move || app(data.clone()))
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1));
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.run();
    let handle = server.handle();
    Ok(Running {
        addr,
        gateway,
        handle,
        server: Some(server),
    })
}
