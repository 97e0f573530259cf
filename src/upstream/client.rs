//! The HTTP/1.1 client for upstream calls: hyper's `client::conn::http1` under a pool kept
//! per worker and origin.
//!
//! A [`Client`] is bound to one upstream origin and owned by one worker thread. hyper
//! parses and frames every message (RFC 9112: strict lengths and chunk lines, 1xx,
//! 204/304, read-until-close, early answers); this file only dials (TCP, the proxy's
//! `CONNECT` tunnel, TLS, all within the connect timeout), keeps idle connections, and
//! tells a request that never left corral from one that may have reached the upstream.
//!
//! A connection has no task of its own: hyper's side of it is polled by whoever uses it (the
//! call waiting for its answer head, then the answer body), so frames hyper has already read
//! come out one after another in the reader's task, and a relay can gather them into one
//! client write, with no task switch per frame. Idle connections are polled by the pool
//! (when one is taken, and by the reaper), which is how one the upstream closed, or that
//! received bytes nobody asked for, is found and closed. A connection goes back to the
//! pool only when its answer was read to the end; dropping it anywhere else (an answer
//! abandoned, a timeout, an idle one reaped) drops hyper's side, which closes the socket,
//! so the upstream sees the close and a half-read answer can never reach the next caller.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509VerifyResult;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_openssl::SslStream;

use super::proxy::{self, Proxy};
use crate::config::{BackendConfig, read_ca_file};

/// An idle connection unused this long is closed (upstreams close theirs around here).
const IDLE_MAX: Duration = Duration::from_secs(15);
/// How often idle connections are looked over while any are kept.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// Most idle connections kept per client; more are closed when their answer ends.
const IDLE_KEPT: usize = 512;
/// Largest answer head (status line and headers), checked on the parsed head: hyper's
/// read buffer alone would let a head grow to its whole size.
pub const HEAD_MAX: usize = 64 * 1024;
/// Most header lines in an answer head.
const HEADERS_MAX: usize = 128;

/// Why a call got no answer head.
#[derive(Debug)]
pub enum Error {
    /// The URL the client was made for is not a usable `http`/`https` URL.
    BadUrl(String),
    /// TCP, the proxy tunnel or TLS could not be set up: nothing was sent.
    Connect(String),
    /// TCP, the tunnel and TLS together took longer than the connect timeout.
    ConnectTimeout,
    /// The request was (or may have been) written, and then the exchange failed: the
    /// connection dropped, or the answer head was malformed or too large.
    Exchange(String),
}

impl Error {
    /// True when the upstream cannot have received the request.
    pub fn unsent(&self) -> bool {
        matches!(
            self,
            Error::BadUrl(_) | Error::Connect(_) | Error::ConnectTimeout
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadUrl(e) => write!(f, "bad upstream URL: {e}"),
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::ConnectTimeout => f.write_str("connect timed out"),
            Error::Exchange(e) => write!(f, "connection failed: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// hyper's error with its causes, which name what was wrong ("invalid chunk size").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A client for one origin (`http[s]://host[:port][/prefix]`), for one thread.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    /// The `Host` header value: the host, and the port unless it is the scheme's default.
    host_header: HeaderValue,
    /// The URL's path without its trailing `/`, put before every call's path; through a
    /// proxy, a plain upstream is asked in absolute form and this starts `http://host`.
    prefix: String,
    /// `proxy-authorization` for a plain upstream behind a proxy that wants it.
    proxy_auth: Option<HeaderValue>,
    /// The backend's `proxy`, else the environment's for this upstream (`proxy.rs`).
    proxy: Option<Proxy>,
    tls: Option<SslConnector>,
    connect_timeout: Duration,
    idle: RefCell<VecDeque<Idle>>,
    /// [`IDLE_MAX`] and [`REAP_EVERY`], shorter in tests.
    idle_max: Duration,
    reap_every: Duration,
    /// Whether a reaper task is looking after `idle`.
    reaping: Cell<bool>,
    /// Requests sent again on a new connection because a pooled one was found closed
    /// before they were written; set by whoever counts resends.
    stale_resends: RefCell<Option<prometheus::IntCounter>>,
}

/// hyper's side of one connection: the future that reads and writes its socket.
type Driver = Pin<Box<dyn Future<Output = Result<(), hyper::Error>>>>;

/// One connection: the handle requests go through and hyper's side of it.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended; dropping it closes the socket.
    driver: Option<Driver>,
}

impl Conn {
    /// Lets hyper read and write what it can now: false once the connection has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        let Poll::Ready(ended) = driver.as_mut().poll(cx) else {
            return true;
        };
        if let Err(e) = ended {
            tracing::debug!("upstream connection ended: {}", describe(&e));
        }
        // Closes the socket; whatever waited on the connection gets hyper's error.
        self.driver = None;
        false
    }

    /// Whether the connection was open when last driven.
    fn open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Whether an idle connection is still open, found by letting hyper read what arrived
    /// (an end of stream, or bytes nobody asked for, ends it). No task is woken for it:
    /// whoever uses the connection next drives it again.
    fn still_open(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.open()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// How a client reaches its origin, beyond the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// TCP, proxy tunnel and TLS handshake together.
    pub connect_timeout: Duration,
    /// CA certificates trusted besides the system's (`backends[].tls_ca`).
    pub tls_ca: Option<PathBuf>,
    /// `backends[].proxy`: `None` = the environment's, `Some("")` = none.
    pub proxy: Option<String>,
}

impl Reach {
    pub fn of(b: &BackendConfig) -> Reach {
        Reach {
            connect_timeout: b.connect_timeout,
            tls_ca: b.tls_ca.clone(),
            proxy: b.proxy.clone(),
        }
    }
}

/// An answer's status, the one header corral acts on, and its body.
pub struct Response {
    pub status: u16,
    /// `Retry-After` in seconds (the HTTP-date form is not used by LLM APIs).
    pub retry_after: Option<Duration>,
    pub body: Body,
}

impl Client {
    /// A client for `url`. Fails on a URL that is not `http`/`https` with a host, an
    /// unusable proxy URL, and a `tls_ca` file that cannot be used.
    pub fn new(url: &str, reach: &Reach) -> Result<Client, Error> {
        let bad = |e: &dyn fmt::Display| Error::BadUrl(format!("{url}: {e}"));
        let uri: Uri = url.parse().map_err(|e| bad(&e))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad(&"not http or https")),
        };
        let host = uri.host().ok_or_else(|| bad(&"no host"))?;
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let host_header = HeaderValue::from_str(&authority).map_err(|e| bad(&e))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let proxy = proxy::choose(https, host, reach.proxy.as_deref()).map_err(Error::BadUrl)?;
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        let mut proxy_auth = None;
        if let (Some(p), false) = (&proxy, https) {
            prefix = format!("http://{authority}{prefix}");
            if let Some(auth) = &p.authorization {
                let mut value = HeaderValue::from_str(auth).map_err(|e| bad(&e))?;
                value.set_sensitive(true);
                proxy_auth = Some(value);
            }
        }
        let tls = if https {
            let setup = |e: &dyn fmt::Display| Error::Connect(format!("TLS setup: {e}"));
            let mut builder = SslConnector::builder(SslMethod::tls()).map_err(|e| setup(&e))?;
            let extra_cas = reach
                .tls_ca
                .as_deref()
                .map(read_ca_file)
                .transpose()
                .map_err(|e| setup(&e))?;
            for cert in extra_cas.into_iter().flatten() {
                builder
                    .cert_store_mut()
                    .add_cert(cert)
                    .map_err(|e| setup(&e))?;
            }
            Some(builder.build())
        } else {
            None
        };
        Ok(Client {
            inner: Rc::new(Inner {
                host: host.to_string(),
                port,
                host_header,
                prefix,
                proxy_auth,
                proxy,
                tls,
                connect_timeout: reach.connect_timeout,
                idle: RefCell::new(VecDeque::new()),
                idle_max: IDLE_MAX,
                reap_every: REAP_EVERY,
                reaping: Cell::new(false),
                stale_resends: RefCell::new(None),
            }),
        })
    }

    /// Counts into `counter` every request sent again because its pooled connection was
    /// found closed before the request went out.
    pub fn count_stale_resends(&self, counter: prometheus::IntCounter) {
        *self.inner.stale_resends.borrow_mut() = Some(counter);
    }

    /// Sends one request and waits for the answer head. `path` is appended to the
    /// client's URL; the body is sent with its length.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Response, Error> {
        if !path.starts_with('/') {
            return Err(Error::BadUrl(format!("{path:?} is not a request path")));
        }
        let uri: Uri = format!("{}{path}", self.inner.prefix)
            .parse()
            .map_err(|e| Error::BadUrl(format!("{path:?}: {e}")))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let map = req.headers_mut();
        map.insert(http::header::HOST, self.inner.host_header.clone());
        if let Some(auth) = &self.inner.proxy_auth {
            map.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        for (name, value) in headers {
            if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                map.append(name, value);
            }
        }
        let mut req = Some(req);
        loop {
            let (mut conn, pooled) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.dial().await?, false),
            };
            // Driven once, hyper sees what arrived while the connection sat idle: a pooled
            // one the upstream closed (or sent stray bytes on) ends here, before anything
            // was written on it, and the next one is tried.
            if let Err(e) = ready(&mut conn).await {
                if pooled {
                    continue;
                }
                return Err(closed_unsent(e));
            }
            let Some(message) = req.take() else {
                return Err(Error::Exchange("request lost".into()));
            };
            let mut sending = std::pin::pin!(conn.sender.try_send_request(message));
            let sent = poll_fn(|cx| {
                // hyper writes the request and reads the answer head as it is driven; once
                // the connection ended, the call has hyper's error.
                conn.drive(cx);
                sending.as_mut().poll(cx)
            })
            .await;
            let mut e = match sent {
                Ok(resp) => return self.answer(resp, conn),
                Err(e) => e,
            };
            // hyper gives the request back only when none of it was written: the connection
            // closed as it went out, and the request is sent again on another one.
            let Some(message) = e.take_message() else {
                return Err(Error::Exchange(describe(&e.into_error())));
            };
            if !pooled {
                return Err(closed_unsent(Some(e.into_error())));
            }
            req = Some(message);
            if let Some(c) = self.inner.stale_resends.borrow().as_ref() {
                c.inc();
            }
        }
    }

    /// The answer head checked, and its body bound to the connection.
    fn answer(&self, resp: http::Response<Incoming>, conn: Conn) -> Result<Response, Error> {
        let (head, incoming) = resp.into_parts();
        // "HTTP/1.1 200 " + reason + CRLF, each header line, the closing CRLF.
        let reason = head.status.canonical_reason().unwrap_or("").len();
        let size = head
            .headers
            .iter()
            .fold(15 + reason, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
        if size > HEAD_MAX {
            return Err(Error::Exchange(format!(
                "answer head of {size} bytes, more than {HEAD_MAX}"
            )));
        }
        let retry_after = head
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Body {
            incoming,
            conn: Some(conn),
            pool: Rc::downgrade(&self.inner),
        };
        body.finish_if_done();
        Ok(Response {
            status: head.status.as_u16(),
            retry_after,
            body,
        })
    }

    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.inner.idle.borrow_mut();
        while let Some(entry) = idle.pop_back() {
            if entry.since.elapsed() <= self.inner.idle_max && entry.conn.open() {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn dial(&self) -> Result<Conn, Error> {
        let inner = &self.inner;
        let connect = async {
            let (host, port) = match &inner.proxy {
                Some(p) => (p.host.as_str(), p.port),
                None => (inner.host.as_str(), inner.port),
            };
            let mut tcp = TcpStream::connect((host, port)).await.map_err(|e| {
                Error::Connect(match &inner.proxy {
                    Some(p) => format!("proxy {}: {e}", p.shown),
                    None => e.to_string(),
                })
            })?;
            // Requests go out in one write; nothing is gained by holding small packets.
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &inner.tls else {
                return handshake(tcp).await;
            };
            if let Some(p) = &inner.proxy {
                let target = proxy::host_port(&inner.host, inner.port);
                tcp = proxy::tunnel(tcp, p, &target)
                    .await
                    .map_err(Error::Connect)?;
            }
            let tls_failed = |e: &dyn fmt::Display| Error::Connect(format!("TLS: {e}"));
            let ssl = tls
                .configure()
                .and_then(|c| c.into_ssl(&inner.host))
                .map_err(|e| tls_failed(&e))?;
            let mut stream = SslStream::new(ssl, tcp).map_err(|e| tls_failed(&e))?;
            if let Err(e) = Pin::new(&mut stream).connect().await {
                // "certificate verify failed" alone does not say which check failed.
                let why = stream.ssl().verify_result();
                return Err(if why == X509VerifyResult::OK {
                    tls_failed(&e)
                } else {
                    tls_failed(&format_args!("{e} ({})", why.error_string()))
                });
            }
            handshake(stream).await
        };
        tokio::time::timeout(inner.connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout)?
    }
}

/// Waits until hyper takes a request on `conn`, driving it: `Err` when the connection
/// ended first (with hyper's error, if it gave one).
async fn ready(conn: &mut Conn) -> Result<(), Option<hyper::Error>> {
    poll_fn(|cx| {
        if !conn.drive(cx) {
            return Poll::Ready(Err(None));
        }
        conn.sender.poll_ready(cx).map_err(Some)
    })
    .await
}

fn closed_unsent(e: Option<hyper::Error>) -> Error {
    let why = e.map_or_else(|| "connection ended".to_string(), |e| describe(&e));
    Error::Connect(format!("closed before the request was sent: {why}"))
}

/// hyper's side of a new connection.
async fn handshake<T>(io: T) -> Result<Conn, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_headers(HEADERS_MAX)
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| Error::Connect(describe(&e)))?;
    Ok(Conn {
        sender,
        driver: Some(Box::pin(connection)),
    })
}

impl Inner {
    fn give_back(self: &Rc<Self>, conn: Conn) {
        // An answer that ended the connection (`Connection: close`) ended hyper's side as
        // its last frame was read.
        if !conn.open() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < IDLE_KEPT {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
        drop(idle);
        if !self.reaping.replace(true) {
            tokio::task::spawn_local(reap(Rc::downgrade(self)));
        }
    }
}

/// Closes idle connections unused for `idle_max` and those the upstream closed (which
/// would otherwise sit in CLOSE-WAIT), while any are kept; a client with none left has no
/// task.
async fn reap(pool: Weak<Inner>) {
    loop {
        let every = match pool.upgrade() {
            Some(inner) => inner.reap_every,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let mut idle = inner.idle.borrow_mut();
        idle.retain_mut(|c| c.since.elapsed() <= inner.idle_max && c.conn.still_open());
        if idle.is_empty() {
            inner.reaping.set(false);
            return;
        }
    }
}

/// An answer body as a stream of data chunks. Read to its end, it returns its connection
/// for reuse; dropped before, it closes it.
pub struct Body {
    incoming: Incoming,
    conn: Option<Conn>,
    pool: Weak<Inner>,
}

impl Body {
    /// When the body has ended, as far as its length tells: the connection goes back to
    /// its pool.
    fn finish_if_done(&mut self) {
        if self.incoming.is_end_stream() {
            self.finish();
        }
    }

    /// The body was read to its end: the connection goes back to its pool.
    fn finish(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.give_back(conn);
        }
    }
}

impl Stream for Body {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.conn.is_none() && this.incoming.is_end_stream() {
                return Poll::Ready(None);
            }
            // hyper hands over one frame per poll of its side: driving it here, in the
            // reader's task, makes every frame it has already read ready at once.
            if let Some(conn) = this.conn.as_mut() {
                conn.drive(cx);
            }
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        describe(&e),
                    ))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.finish_if_done();
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        // Trailers and empty frames carry nothing for corral.
                        _ => continue,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_authority_and_prefix() {
        let c = Client::new("http://127.0.0.1:11434", &Reach::default()).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("127.0.0.1", 11434));
        assert_eq!(c.inner.host_header, "127.0.0.1:11434");
        assert_eq!(c.inner.prefix, "");
        let c = Client::new("https://ollama.com:443/", &Reach::default()).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("ollama.com", 443));
        assert_eq!(c.inner.host_header, "ollama.com");
        assert!(c.inner.tls.is_some());
        let c = Client::new("http://[::1]/ollama/", &Reach::default()).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("::1", 80));
        assert_eq!(c.inner.host_header, "[::1]");
        assert_eq!(c.inner.prefix, "/ollama");
        let c = Client::new(
            "http://gpu1:11434/x",
            &Reach {
                proxy: Some("http://u:p@proxy:3128".into()),
                ..Reach::default()
            },
        )
        .unwrap();
        assert_eq!(c.inner.prefix, "http://gpu1:11434/x");
        assert!(c.inner.proxy_auth.is_some());
        assert!(Client::new("ftp://x", &Reach::default()).is_err());
        assert!(Client::new("not a url", &Reach::default()).is_err());
    }

    /// An upstream on a loopback port that answers `answer` to one request on each
    /// connection, then closes its side when `hang_up`; it sends `()` on the channel each
    /// time corral closes a connection.
    async fn upstream(
        answer: &'static [u8],
        hang_up: bool,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (closed, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::task::spawn_local(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::task::spawn_local(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 4096];
                    while !head.ends_with(b"\r\n\r\n") {
                        match sock.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    sock.write_all(answer).await.unwrap();
                    if hang_up {
                        sock.shutdown().await.unwrap();
                    }
                    while matches!(sock.read(&mut b).await, Ok(n) if n > 0) {}
                    let _ = closed.send(());
                });
            }
        });
        (url, seen)
    }

    fn client(url: &str, idle_max: Duration) -> Client {
        let reach = Reach {
            connect_timeout: Duration::from_secs(10),
            ..Reach::default()
        };
        let mut c = Client::new(url, &reach).unwrap();
        let inner = Rc::get_mut(&mut c.inner).unwrap();
        inner.idle_max = idle_max;
        inner.reap_every = Duration::from_millis(20);
        c
    }

    /// Two calls at once, so that two connections are opened, each answer read to its end.
    async fn two_calls(client: &Client) {
        use futures_util::StreamExt as _;
        let call = || async {
            let resp = client
                .send(Method::GET, "/", [], Bytes::new())
                .await
                .unwrap();
            let body: Vec<io::Result<Bytes>> = resp.body.collect().await;
            assert_eq!(body.len(), 1);
            assert_eq!(&body[0].as_ref().unwrap()[..], b"ok");
        };
        futures_util::join!(call(), call());
    }

    /// Waits (bounded) until the upstream saw `n` connections closed by the client.
    async fn closed_by_corral(seen: &mut tokio::sync::mpsc::UnboundedReceiver<()>, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(60), seen.recv())
                .await
                .expect("an idle connection was never closed")
                .unwrap();
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[actix_web::test]
    async fn idle_connections_the_upstream_closed_are_closed_long_before_idle_max() {
        let (url, mut seen) = upstream(OK, true).await;
        let client = client(&url, Duration::from_secs(3600));
        two_calls(&client).await;
        // Left alone, these sockets would sit in CLOSE-WAIT for the hour.
        closed_by_corral(&mut seen, 2).await;
        assert!(client.inner.idle.borrow().is_empty());
    }

    #[actix_web::test]
    async fn idle_connections_the_upstream_keeps_open_are_closed_after_idle_max() {
        let (url, mut seen) = upstream(OK, false).await;
        let client = client(&url, Duration::from_millis(200));
        two_calls(&client).await;
        assert_eq!(client.inner.idle.borrow().len(), 2);
        closed_by_corral(&mut seen, 2).await;
        assert!(client.inner.idle.borrow().is_empty());
    }

    #[actix_web::test]
    async fn frames_already_read_are_ready_together_for_one_client_write() {
        use futures_util::{FutureExt as _, StreamExt as _};
        let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for i in 0..20 {
            let line = format!("{{\"n\":{i}}}\n");
            answer.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let (url, _seen) = upstream(answer.leak(), false).await;
        let client = client(&url, IDLE_MAX);
        let mut resp = client
            .send(Method::GET, "/", [], Bytes::new())
            .await
            .unwrap();
        let first = resp.body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"{\"n\":0}\n");
        // The upstream wrote the answer at once: every other frame, and the end, must be
        // there without waiting (a relay gathers them into one write to its client).
        let mut frames = 1;
        while let Some(frame) = resp.body.next().now_or_never().expect("a frame not ready") {
            assert_eq!(frame.unwrap(), format!("{{\"n\":{frames}}}\n"));
            frames += 1;
        }
        assert_eq!(frames, 20);
        assert_eq!(client.inner.idle.borrow().len(), 1);
    }
}
