//! corral: one endpoint in front of a fleet of LLM upstreams.
#![forbid(unsafe_code)]

pub mod actors;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
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

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, middleware, web};

use crate::config::Config;
use crate::store::Store;
use crate::upstream::UpstreamClients;

pub use crate::api::gateway::Gateway;

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
///
/// actix-web's `HttpServer` with one change: every connection is read through
/// [`api::body::Paced`], so what a client sends before it is known (or after it was
/// refused) waits in the kernel rather than in a buffer of ours.
pub async fn serve(config: Config, listen: &str) -> std::io::Result<Running> {
    use actix_http::{HttpService, KeepAlive, Protocol};
    use actix_service::{ServiceFactoryExt, fn_service, map_config};

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
    let mut builder = actix_server::Server::build();
    let drain = builder.graceful_shutdown_signal();
    builder = builder
        .listen("corral", listener, move || {
            let drain = drain.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let drain = drain.clone();
                    async move { drain.notified().await }
                })
                .keep_alive(KeepAlive::Timeout(std::time::Duration::from_secs(5)))
                // A head that trickles in holds a connection; the body has its own deadline.
                .client_request_timeout(head_timeout)
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                // A client that closes its side cancels its request, so the upstream one
                // stops too.
                .h1_allow_half_closed(false)
                .local_addr(addr)
                .on_connect_ext(|io: &api::body::Paced<_>, ext| no_delay(io.get_ref(), ext))
                .finish(map_config(app(data.clone()), move |_| {
                    // The config HttpServer gives its apps; actix-web names no other public
                    // constructor (this one is semver-exempt: an upgrade that drops it fails
                    // to compile, it cannot change behaviour unseen).
                    actix_web::dev::AppConfig::__priv_test_new(false, addr.to_string(), addr)
                }));
            fn_service(|io: actix_web::rt::net::TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((
                    api::body::Paced::new(io),
                    Protocol::Http1,
                    peer,
                ))
            })
            .and_then(http)
        })?
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1));
    if workers > 0 {
        builder = builder.workers(workers);
    }
    let server = builder.run();
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    Ok(Running {
        addr,
        gateway,
        handle,
        task: Some(task),
    })
}
