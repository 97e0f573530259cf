//! The HTTP/1.1 client for upstream calls: hyper connections kept per worker and origin.
//!
//! A [`Client`] is bound to one upstream origin and owned by one worker thread. Idle
//! connections wait in a stack; a call takes the most recently used open one or dials a
//! new one (TCP, then TLS for `https`, both within the connect timeout). A connection goes
//! back on the stack when its answer has been read to the end; an answer dropped half-read
//! takes its connection with it. Nothing is spawned or timed per call: each connection's
//! driver is one local task for the connection's lifetime.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::net::TcpStream;

/// An idle connection unused this long is not reused (upstreams close theirs around here).
const IDLE_MAX: Duration = Duration::from_secs(15);
/// Most idle connections kept per client; more are closed when their answer ends.
const IDLE_KEPT: usize = 512;

type Sender = SendRequest<Full<Bytes>>;

/// Why a call got no answer head.
#[derive(Debug)]
pub enum Error {
    /// The URL the client was made for is not a usable `http`/`https` URL.
    BadUrl(String),
    /// TCP or TLS could not be set up.
    Connect(String),
    /// TCP and TLS together took longer than the connect timeout.
    ConnectTimeout,
    /// The connection failed while sending or before the answer head was complete.
    Exchange(hyper::Error),
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

/// A client for one origin (`http[s]://host[:port][/prefix]`), for one thread.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    /// The `Host` header value: the host, and the port unless it is the scheme's default.
    authority: HeaderValue,
    /// The URL's path without its trailing `/`, put before every call's path.
    prefix: String,
    tls: Option<SslConnector>,
    connect_timeout: Duration,
    idle: RefCell<VecDeque<Idle>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// An answer head and its body.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Client {
    /// A client for `url`. Fails only on a URL that is not `http`/`https` with a host.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<Client, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(Error::BadUrl(format!("{url}: not http or https"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::BadUrl(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let authority = match authority.strip_suffix(&format!(":{default_port}")) {
            Some(bare) => bare,
            None => authority,
        };
        let authority =
            HeaderValue::from_str(authority).map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
        let tls = if https {
            let builder = SslConnector::builder(SslMethod::tls())
                .map_err(|e| Error::Connect(format!("TLS setup: {e}")))?;
            Some(builder.build())
        } else {
            None
        };
        Ok(Client {
            inner: Rc::new(Inner {
                host,
                port,
                authority,
                prefix: uri.path().trim_end_matches('/').to_string(),
                tls,
                connect_timeout,
                idle: RefCell::new(VecDeque::new()),
            }),
        })
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
        let uri = if self.inner.prefix.is_empty() {
            Uri::try_from(path)
        } else {
            Uri::try_from(format!("{}{path}", self.inner.prefix))
        }
        .map_err(|e| Error::BadUrl(format!("{path}: {e}")))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let map = req.headers_mut();
        map.insert(HOST, self.inner.authority.clone());
        for (name, value) in headers {
            map.insert(name, value);
        }
        let mut sender = self.connection().await?;
        let resp = sender.send_request(req).await.map_err(Error::Exchange)?;
        let (head, incoming) = resp.into_parts();
        Ok(Response {
            status: head.status.as_u16(),
            headers: head.headers,
            body: Body {
                incoming,
                back: Some((sender, Rc::downgrade(&self.inner))),
            },
        })
    }

    /// The most recently used open idle connection, else a new one.
    async fn connection(&self) -> Result<Sender, Error> {
        loop {
            let idle = self.inner.idle.borrow_mut().pop_back();
            let Some(mut idle) = idle else {
                return self.dial().await;
            };
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_MAX {
                continue;
            }
            // Ready at once unless the connection just failed; then it is dropped.
            if poll_fn(|cx| idle.sender.poll_ready(cx)).await.is_ok() {
                return Ok(idle.sender);
            }
        }
    }

    async fn dial(&self) -> Result<Sender, Error> {
        let inner = &self.inner;
        let connect = async {
            let tcp = TcpStream::connect((inner.host.as_str(), inner.port))
                .await
                .map_err(|e| Error::Connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &inner.tls else {
                return handshake(TokioIo::new(tcp)).await;
            };
            let tls_failed = |e: &dyn fmt::Display| Error::Connect(format!("TLS: {e}"));
            let ssl = tls
                .configure()
                .and_then(|c| c.into_ssl(&inner.host))
                .map_err(|e| tls_failed(&e))?;
            let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_failed(&e))?;
            Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|e| tls_failed(&e))?;
            handshake(TokioIo::new(stream)).await
        };
        tokio::time::timeout(inner.connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout)?
    }
}

async fn handshake<T>(io: T) -> Result<Sender, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(io).await.map_err(Error::Exchange)?;
    tokio::task::spawn_local(async move {
        // The connection's end (closed by either side) needs no report: the next call
        // finds the sender closed and dials again.
        let _ = conn.await;
    });
    Ok(sender)
}

impl Inner {
    fn give_back(&self, sender: Sender) {
        let mut idle = self.idle.borrow_mut();
        while idle
            .front()
            .is_some_and(|c| c.sender.is_closed() || c.since.elapsed() > IDLE_MAX)
        {
            idle.pop_front();
        }
        if idle.len() < IDLE_KEPT {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// An answer body as a stream of data chunks (trailers are skipped). Read to its end, it
/// returns its connection for reuse.
pub struct Body {
    incoming: Incoming,
    back: Option<(Sender, Weak<Inner>)>,
}

impl Stream for Body {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(e)) => {
                    self.back = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    if let Some((sender, pool)) = self.back.take() {
                        if let Some(pool) = pool.upgrade() {
                            pool.give_back(sender);
                        }
                    }
                    return Poll::Ready(None);
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
        let c = Client::new("http://127.0.0.1:11434", Duration::from_secs(1)).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("127.0.0.1", 11434));
        assert_eq!(c.inner.authority, "127.0.0.1:11434");
        assert_eq!(c.inner.prefix, "");
        let c = Client::new("https://ollama.com:443/", Duration::from_secs(1)).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("ollama.com", 443));
        assert_eq!(c.inner.authority, "ollama.com");
        assert!(c.inner.tls.is_some());
        let c = Client::new("http://[::1]/ollama/", Duration::from_secs(1)).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("::1", 80));
        assert_eq!(c.inner.authority, "[::1]");
        assert_eq!(c.inner.prefix, "/ollama");
        assert!(Client::new("ftp://x", Duration::from_secs(1)).is_err());
        assert!(Client::new("not a url", Duration::from_secs(1)).is_err());
    }
}
