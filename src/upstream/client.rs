//! The HTTP/1.1 client for upstream calls: connections kept per worker and origin, read
//! in the calling task.
//!
//! A [`Client`] is bound to one upstream origin and owned by one worker thread. Idle
//! connections wait in a stack; a call takes the most recently used live one or dials a
//! new one (TCP, then TLS for `https`, both within the connect timeout). The answer is
//! parsed and its body decoded (length, chunked, or until close) by the task that reads
//! it: no task, channel or timer per call, and every chunk already received is handed
//! over before the task waits, so a relay writes them to its client together. A body
//! read to its end returns the connection for reuse; one dropped half-read closes it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::{X509, X509VerifyResult};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::proxy::{self, Proxy};
use crate::config::BackendConfig;

/// An idle connection unused this long is not reused (upstreams close theirs around here).
const IDLE_MAX: Duration = Duration::from_secs(15);
/// Most idle connections kept per client; more are closed when their answer ends.
const IDLE_KEPT: usize = 512;
/// Largest answer head (status line and headers).
const HEAD_MAX: usize = 64 * 1024;
/// Most header lines in an answer head.
const HEADERS_MAX: usize = 128;
/// Longest chunk-size line or trailer section of a chunked body.
const CHUNK_LINE_MAX: usize = 4096;
/// A request body up to this size goes out in the same write as its head.
const INLINE_BODY: usize = 64 * 1024;

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
    Exchange(io::Error),
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

fn broken(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
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
    authority: String,
    /// The URL's path without its trailing `/`, put before every call's path; through a
    /// proxy, a plain upstream is asked in absolute form and this starts `http://host`.
    prefix: String,
    /// Head lines after `host` on every call: `proxy-authorization` for a plain upstream
    /// behind a proxy that wants it, else empty.
    extra_head: String,
    /// The backend's `proxy`, else the environment's for this upstream (`proxy.rs`).
    proxy: Option<Proxy>,
    tls: Option<SslConnector>,
    connect_timeout: Duration,
    idle: RefCell<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One connection and the bytes read from it but not yet used.
struct Conn {
    io: Io,
    buf: BytesMut,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
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

/// An answer's status, the one header corral acts on beyond framing, and its body. Other
/// headers are read for framing and reuse only: nothing downstream needs them, and
/// keeping them cost every answer a map and an allocation per header.
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
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let proxy = proxy::choose(https, host, reach.proxy.as_deref()).map_err(Error::BadUrl)?;
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        let mut extra_head = String::new();
        if let (Some(p), false) = (&proxy, https) {
            prefix = format!("http://{authority}{prefix}");
            if let Some(auth) = &p.authorization {
                extra_head = format!("\r\nproxy-authorization: {auth}");
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
                authority,
                prefix,
                extra_head,
                proxy,
                tls,
                connect_timeout: reach.connect_timeout,
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
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::BadUrl(format!("{path:?} is not a request path")));
        }
        let mut head = BytesMut::with_capacity(512 + body.len().min(INLINE_BODY));
        for part in [
            method.as_str(),
            " ",
            &self.inner.prefix,
            path,
            " HTTP/1.1\r\nhost: ",
        ] {
            head.extend_from_slice(part.as_bytes());
        }
        head.extend_from_slice(self.inner.authority.as_bytes());
        head.extend_from_slice(self.inner.extra_head.as_bytes());
        for (name, value) in headers {
            if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
                continue;
            }
            for part in [b"\r\n", name.as_str().as_bytes(), b": ", value.as_bytes()] {
                head.extend_from_slice(part);
            }
        }
        let has_body = !body.is_empty() || !matches!(method, Method::GET | Method::HEAD);
        if has_body {
            // Written straight into the head: no string per call.
            let _ = write!(head, "\r\ncontent-length: {}", body.len());
        }
        head.extend_from_slice(b"\r\n\r\n");
        let inline = body.len() <= INLINE_BODY;
        if inline {
            head.extend_from_slice(&body);
        }
        let mut conn = self.connection().await?;
        conn.io.write_all(&head).await.map_err(Error::Exchange)?;
        if !inline {
            conn.io.write_all(&body).await.map_err(Error::Exchange)?;
        }
        let (status, retry_after, framing, reusable) = loop {
            let head = std::future::poll_fn(|cx| conn.poll_head(cx))
                .await
                .map_err(Error::Exchange)?;
            // 1xx answers (100 Continue, 103 Early Hints) precede the real one.
            if !(100..200).contains(&head.0) {
                break head;
            }
        };
        let framing = if method == Method::HEAD || matches!(status, 204 | 304) {
            Framing::Done
        } else {
            framing
        };
        let mut body = Body {
            conn: Some(conn),
            framing,
            reusable,
            pool: Rc::downgrade(&self.inner),
        };
        body.finish_if_done();
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }

    /// The most recently used live idle connection, else a new one.
    async fn connection(&self) -> Result<Conn, Error> {
        loop {
            let idle = self.inner.idle.borrow_mut().pop_back();
            let Some(idle) = idle else {
                return self.dial().await;
            };
            if idle.since.elapsed() <= IDLE_MAX && idle.conn.is_quiet() {
                return Ok(idle.conn);
            }
        }
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
                return Ok(Io::Plain(tcp));
            };
            if let Some(p) = &inner.proxy {
                let target = proxy::host_port(&inner.host, inner.port);
                proxy::tunnel(&mut tcp, p, &target)
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
            Ok(Io::Tls(Box::new(stream)))
        };
        let io = tokio::time::timeout(inner.connect_timeout, connect)
            .await
            .map_err(|_| Error::ConnectTimeout)??;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(8192),
        })
    }
}

/// The certificates of a PEM file of trusted CAs (`backends[].tls_ca`).
pub fn read_ca_file(path: &Path) -> Result<Vec<X509>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Err(format!(
            "{} is not a PEM certificate file: {e}",
            path.display()
        )),
    }
}

impl Inner {
    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        while idle.front().is_some_and(|c| c.since.elapsed() > IDLE_MAX) {
            idle.pop_front();
        }
        if idle.len() < IDLE_KEPT {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

type Head = (u16, Option<Duration>, Framing, bool);

impl Conn {
    /// True when nothing arrived while idle: no close from the upstream, no stray bytes.
    fn is_quiet(&self) -> bool {
        let tcp = match &self.io {
            Io::Plain(t) => t,
            Io::Tls(s) => s.get_ref(),
        };
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        self.buf.is_empty() && tcp.poll_peek(&mut cx, &mut probe).is_pending()
    }

    /// Reads until one answer head is complete and parses it.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Head>> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&mut self.buf)? {
                    return Poll::Ready(Ok(head));
                }
                if self.buf.len() > HEAD_MAX {
                    return Poll::Ready(Err(broken("answer head too large")));
                }
            }
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before the answer head",
                    )));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Reads what is available into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Parses one answer head off the front of `buf`; `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<Head>> {
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(broken(format!("bad answer head: {e}"))),
    };
    let status = parsed.code.unwrap_or(0);
    let mut reusable = parsed.version == Some(1);
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut retry_after = None;
    for h in parsed.headers.iter() {
        let name = h.name;
        let value = || std::str::from_utf8(h.value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding frames the body.
            let last = value().rsplit(',').next().unwrap_or("");
            chunked = last.trim().eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value()
                .parse::<u64>()
                .map_err(|_| broken("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(broken("conflicting content-length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            if value()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                reusable = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value().parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    buf.advance(len);
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked(Chunk::Size),
        (false, Some(0)) => Framing::Done,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => {
            reusable = false;
            Framing::UntilClose
        }
    };
    Ok(Some((status, retry_after, framing, reusable)))
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left (more than none).
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// An answer body as a stream of data chunks. Read to its end, it returns its connection
/// for reuse.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    pool: Weak<Inner>,
}

impl Body {
    /// At the end: the connection goes back to its pool when it can carry another call.
    fn finish_if_done(&mut self) {
        if self.framing != Framing::Done {
            return;
        }
        let conn = self.conn.take();
        if let (Some(conn), Some(pool), true) = (conn, self.pool.upgrade(), self.reusable) {
            if conn.buf.is_empty() {
                pool.give_back(conn);
            }
        }
    }

    /// The next piece of body already in the buffer, if any.
    fn decode(&mut self) -> io::Result<Option<Bytes>> {
        match self.conn.as_mut() {
            Some(conn) => decode(&mut self.framing, &mut conn.buf),
            None => Ok(None),
        }
    }
}

/// At most `left` bytes off the front of `buf`, and how many of `left` remain after them;
/// `None` while `buf` is empty. Both counted framings (a length, a chunk) read this way.
fn take_counted(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    Some((buf.split_to(n).freeze(), left - n as u64))
}

/// The next piece of body at the front of `buf`, if any; moves `framing` along.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    loop {
        match *framing {
            Framing::Done => return Ok(None),
            Framing::Length(left) => {
                let Some((piece, rest)) = take_counted(buf, left) else {
                    return Ok(None);
                };
                *framing = if rest == 0 {
                    Framing::Done
                } else {
                    Framing::Length(rest)
                };
                return Ok(Some(piece));
            }
            Framing::UntilClose => {
                return Ok((!buf.is_empty()).then(|| buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
                let digits = std::str::from_utf8(digits).unwrap_or("").trim();
                let size = u64::from_str_radix(digits, 16)
                    .map_err(|_| broken(format!("bad chunk size {digits:?}")))?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let Some((piece, rest)) = take_counted(buf, left) else {
                    return Ok(None);
                };
                *framing = Framing::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                return Ok(Some(piece));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if !line.is_empty() {
                    return Err(broken("chunk longer than its size"));
                }
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                let Some(line) = take_line(buf)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    *framing = Framing::Done;
                }
            }
        }
    }
}

/// One CRLF-terminated line off the front of `buf` (without the CRLF); `None` while
/// incomplete.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > CHUNK_LINE_MAX => Err(broken("chunk line too long")),
        None => Ok(None),
    }
}

impl Stream for Body {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.decode() {
                Ok(Some(piece)) => {
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(piece)));
                }
                Ok(None) if this.framing == Framing::Done => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(Ok(_)) if this.framing == Framing::UntilClose => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(result) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    let e = result.err().unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "closed in mid-answer")
                    });
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
        assert_eq!(c.inner.authority, "127.0.0.1:11434");
        assert_eq!(c.inner.prefix, "");
        let c = Client::new("https://ollama.com:443/", &Reach::default()).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("ollama.com", 443));
        assert_eq!(c.inner.authority, "ollama.com");
        assert!(c.inner.tls.is_some());
        let c = Client::new("http://[::1]/ollama/", &Reach::default()).unwrap();
        assert_eq!((c.inner.host.as_str(), c.inner.port), ("::1", 80));
        assert_eq!(c.inner.authority, "[::1]");
        assert_eq!(c.inner.prefix, "/ollama");
        assert!(Client::new("ftp://x", &Reach::default()).is_err());
        assert!(Client::new("not a url", &Reach::default()).is_err());
    }

    fn head(text: &str) -> Head {
        let mut buf = BytesMut::from(text);
        let parsed = parse_head(&mut buf).unwrap().expect("complete head");
        assert!(buf.is_empty());
        parsed
    }

    #[test]
    fn heads_choose_framing_and_reuse() {
        let (status, retry_after, framing, reusable) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n");
        assert_eq!(
            (status, retry_after, framing, reusable),
            (200, None, Framing::Length(12), true)
        );
        let (_, _, framing, _) =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        let (_, _, framing, reusable) = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((framing, reusable), (Framing::UntilClose, false));
        let (_, _, _, reusable) =
            head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!reusable);
        let (_, _, _, reusable) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!reusable);
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse_head(&mut partial).unwrap().is_none());
        let mut bad =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(parse_head(&mut bad).is_err());
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        let (_, after, _, _) = head("HTTP/1.1 429 Too Many\r\nRetry-After:  17 \r\n\r\n");
        assert_eq!(after, Some(Duration::from_secs(17)));
        let (_, after, _, _) =
            head("HTTP/1.1 503 Busy\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n");
        assert_eq!(after, None);
    }

    /// Feeds `wire` to a chunked decoder in pieces of `step` bytes; returns the data.
    fn dechunk(wire: &[u8], step: usize) -> io::Result<(Vec<u8>, Framing)> {
        let mut buf = BytesMut::new();
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decode(&mut framing, &mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, framing))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, framing) = dechunk(wire, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(framing, Framing::Done, "step {step}");
        }
        assert!(dechunk(b"zz\r\n", 4).is_err());
        assert!(dechunk(b"2\r\nabc\r\n", 8).is_err());
        assert!(dechunk(&[b'1'; CHUNK_LINE_MAX + 2], CHUNK_LINE_MAX + 2).is_err());
    }
}
