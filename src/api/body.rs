//! What a request may hold before and while its body arrives: the caller is known before
//! any body byte is read, the whole body has a deadline, the bodies still arriving share
//! one memory budget, and a connection is read a little at a time ([`Paced`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap, TRANSFER_ENCODING};
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Gateway;
use crate::auth::Principal;
use crate::error::{ErrorKind, GatewayError};

/// A client connection read at most [`PACED_READ`] bytes at a time, once per wake-up.
///
/// actix-http reads whatever the socket holds, up to 128 KiB, into a buffer of the
/// connection before it parses the request head, and again while it drains a body it
/// refused during its close linger (growing that buffer as it goes): 2,000 connections
/// that each sent 260 KB without a token held 150 to 250 MiB in those buffers. Read this
/// way the buffer stays near its first size and the rest waits in the kernel until the
/// request is known; a body being read still streams, one read per wake-up.
/// The most one read of a client connection takes (actix-http's own first buffer size).
pub const PACED_READ: usize = 4 * 1024;

pub struct Paced<T> {
    io: T,
    just_read: bool,
}

impl<T> Paced<T> {
    pub fn new(io: T) -> Paced<T> {
        Paced {
            io,
            just_read: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.just_read {
            self.just_read = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let want = buf.remaining().min(PACED_READ);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.advance(n);
        self.just_read = matches!(polled, Poll::Ready(Ok(()))) && n > 0;
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Memory held by request bodies still arriving, across every worker.
#[derive(Clone)]
pub struct BodyBudget {
    held: Arc<AtomicUsize>,
    limit: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        BodyBudget {
            held: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Bytes held right now by bodies being read.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes, or refuses when the budget would be exceeded.
    fn take(&self, n: usize) -> bool {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= self.limit) else {
                return false;
            };
            match self
                .held
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One body being read: its deadline and the bytes it holds of the budget, given back on
/// drop whatever way the read ends.
pub struct Arriving {
    deadline: Instant,
    timeout: Duration,
    budget: Option<BodyBudget>,
    held: usize,
}

impl Arriving {
    /// The limits of the gateway serving `req` (none for an app built without one).
    pub fn start(req: &HttpRequest) -> Arriving {
        let gw = req.app_data::<web::Data<Gateway>>();
        let timeout = gw.map_or(Duration::from_secs(30), |g| g.config.server.body_timeout);
        Arriving {
            deadline: Instant::now() + timeout,
            timeout,
            budget: gw.map(|g| g.bodies.clone()),
            held: 0,
        }
    }

    /// The next chunk of `payload`, `None` at its end; 408 once the deadline passes.
    pub async fn next(&self, payload: &mut web::Payload) -> Result<Option<Bytes>, GatewayError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, payload.next()).await {
            Err(_) => Err(GatewayError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(GatewayError::bad_request(format!(
                "could not read the request body: {e}"
            ))),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        }
    }

    /// Counts `n` more bytes held by this body against the shared budget.
    pub fn hold(&mut self, n: usize) -> Result<(), GatewayError> {
        if let Some(b) = &self.budget {
            if !b.take(n) {
                return Err(GatewayError::new(
                    ErrorKind::NoCapacity,
                    "too many request bodies are arriving at once; retry shortly",
                )
                .with_retry_after(Duration::from_secs(1)));
            }
        }
        self.held += n;
        Ok(())
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.held);
        }
    }
}

/// Does the request announce a body? Only such requests are authenticated before their
/// handler runs; the rest authenticate in the handler as before.
fn carries_body(headers: &HeaderMap) -> bool {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() != "0");
    declared.unwrap_or(false) || headers.contains_key(TRANSFER_ENCODING)
}

/// Authenticates a request that carries a body before anything reads it: a caller without
/// a valid token is answered (and its connection closed by actix, the body unread) at the
/// cost of a hash. The principal is kept for the handler.
pub async fn caller_first(req: &ServiceRequest) -> Result<(), GatewayError> {
    if !carries_body(req.headers()) {
        return Ok(());
    }
    let Some(gw) = req.app_data::<web::Data<Gateway>>() else {
        return Ok(());
    };
    let p = gw.auth.authenticate(req.headers()).await?;
    req.extensions_mut().insert(p);
    Ok(())
}

/// The caller: the principal found before the body was read, else the request's token.
pub async fn caller(
    req: &HttpRequest,
    auth: &crate::auth::Authenticator,
) -> Result<Principal, GatewayError> {
    if let Some(p) = req.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    auth.authenticate(req.headers()).await
}

/// Longest model name accepted from a client, in bytes.
pub const MAX_MODEL_NAME: usize = 256;

/// 400 unless the body is a JSON object: the dialects' requests all are, and code that
/// edits a request's fields assumes one.
pub fn json_object(body: &[u8]) -> Result<(), GatewayError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(GatewayError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

/// 400 for a model name no upstream could have: it would be echoed and stored.
pub fn model_name(model: &str) -> Result<(), GatewayError> {
    if model.len() > MAX_MODEL_NAME {
        return Err(GatewayError::bad_field(
            "model",
            format!(
                "is {} bytes long; the limit is {MAX_MODEL_NAME}",
                model.len()
            ),
        ));
    }
    Ok(())
}

/// The output tokens a request asks for at most, in any dialect's field: OpenAI's
/// `max_completion_tokens` / `max_tokens` / `max_output_tokens` (Responses), Anthropic's
/// `max_tokens`, Ollama's `options.num_predict` (negative there means "no limit": `None`);
/// read from the request's one parse.
pub fn output_allowance(body: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    let field = |k: &str| body.get(k).and_then(serde_json::Value::as_u64);
    field("max_completion_tokens")
        .or_else(|| field("max_tokens"))
        .or_else(|| field("max_output_tokens"))
        .or_else(|| {
            let n = body.get("options")?.get("num_predict")?.as_i64()?;
            u64::try_from(n).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_takes_back_what_is_given() {
        let b = BodyBudget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        b.give_back(60);
        assert_eq!(b.held(), 40);
        assert!(b.take(60));
    }

    #[test]
    fn only_objects_and_short_models_pass() {
        assert!(json_object(b" \n{\"model\":1}").is_ok());
        for bad in [&b"[\"claude-x\"]"[..], b"\"x\"", b"3", b"null", b"", b"  "] {
            assert_eq!(json_object(bad).unwrap_err().kind, ErrorKind::BadRequest);
        }
        assert!(model_name(&"m".repeat(MAX_MODEL_NAME)).is_ok());
        let e = model_name(&"m".repeat(MAX_MODEL_NAME + 1)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(e.message.len() < 100, "the name itself is not echoed");
    }

    #[test]
    fn output_allowances_of_every_dialect() {
        let output_allowance = |body: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            output_allowance(v.as_object().unwrap())
        };
        assert_eq!(output_allowance(br#"{"max_tokens": 100}"#), Some(100));
        assert_eq!(
            output_allowance(br#"{"max_tokens": 100, "max_completion_tokens": 7}"#),
            Some(7)
        );
        assert_eq!(
            output_allowance(br#"{"options": {"num_predict": 42}}"#),
            Some(42)
        );
        assert_eq!(
            output_allowance(br#"{"options": {"num_predict": -1}}"#),
            None
        );
        assert_eq!(output_allowance(br#"{"model": "x"}"#), None);
        assert_eq!(output_allowance(br#"{"max_tokens": "many"}"#), None);
    }

    #[test]
    fn only_announced_bodies_count() {
        let mut h = HeaderMap::new();
        assert!(!carries_body(&h));
        h.insert(CONTENT_LENGTH, "0".parse().unwrap());
        assert!(!carries_body(&h));
        h.insert(CONTENT_LENGTH, "12".parse().unwrap());
        assert!(carries_body(&h));
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(carries_body(&h));
    }
}
