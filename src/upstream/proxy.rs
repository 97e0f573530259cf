//! Reaching an upstream through an outbound HTTP proxy (which one: `config::proxy`). An
//! https upstream is reached through a `CONNECT` tunnel, so TLS runs end to end and the
//! proxy sees only the host name; a plain one is asked in absolute form
//! (`POST http://gpu1:11434/api/chat`). Credentials go out as `Proxy-Authorization` and
//! never into messages.

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use crate::config::proxy::{Proxy, choose, host_port};

/// Longest `CONNECT` answer head read.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the proxy on `tcp` for a tunnel to `target` (`host:port`) and gives the stream
/// back once the proxy agreed: from then on it carries the upstream's bytes.
pub async fn tunnel(tcp: TcpStream, proxy: &Proxy, target: &str) -> Result<TcpStream, String> {
    let failed = |e: &dyn std::fmt::Display| format!("proxy {}: {e}", proxy.shown);
    let mut ask = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header(header::HOST, target);
    if let Some(auth) = &proxy.authorization {
        let mut value = HeaderValue::from_str(auth).map_err(|e| failed(&e))?;
        value.set_sensitive(true);
        ask = ask.header(header::PROXY_AUTHORIZATION, value);
    }
    let ask = ask.body(Empty::<Bytes>::new()).map_err(|e| failed(&e))?;
    let (mut sender, connection) = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(|e| failed(&e))?;
    // The connection is driven here until hyper hands its socket over: no task.
    let mut connection = std::pin::pin!(connection.without_shutdown());
    let asked = async {
        let answer = sender.send_request(ask).await.map_err(|e| failed(&e))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(failed(&format_args!(
                "answered {} {} to CONNECT {target}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        Ok(())
    };
    let asked = std::pin::pin!(asked);
    let parts = match futures_util::future::select(asked, connection.as_mut()).await {
        Either::Left((Ok(()), connection)) => connection.await.map_err(|e| failed(&e))?,
        Either::Left((Err(e), _)) => return Err(e),
        // The proxy may have answered and closed at once: its answer still decides.
        Either::Right((ended, asked)) => asked.await.and(ended.map_err(|e| failed(&e)))?,
    };
    // The upstream speaks only after the client's TLS hello: nothing may follow.
    if !parts.read_buf.is_empty() {
        return Err(failed(&"sent bytes after its CONNECT answer"));
    }
    Ok(parts.io.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A proxy on a loopback port that reads one request head and answers `reply`.
    async fn fake_proxy(reply: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 512];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (port, task)
    }

    async fn try_tunnel(reply: &'static [u8]) -> (Result<(), String>, String) {
        let (port, asked) = fake_proxy(reply).await;
        let p = choose(
            false,
            "ollama.com",
            Some(&format!("http://u:pw@127.0.0.1:{port}")),
        )
        .unwrap()
        .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let out = tunnel(tcp, &p, "ollama.com:443").await.map(|_| ());
        (out, asked.await.unwrap())
    }

    #[tokio::test]
    async fn tunnel_asks_with_credentials_and_reads_the_whole_answer_head() {
        let (ok, asked) =
            try_tunnel(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n").await;
        assert_eq!(ok, Ok(()));
        assert!(asked.starts_with("CONNECT ollama.com:443 HTTP/1.1\r\nhost: ollama.com:443\r\n"));
        assert!(
            asked.contains("proxy-authorization: Basic dTpwdw==\r\n"),
            "{asked}"
        );
    }

    #[tokio::test]
    async fn tunnel_refusals_are_named_without_the_password() {
        let (refused, _) = try_tunnel(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let e = refused.unwrap_err();
        assert!(
            e.contains("answered 407 Proxy Authentication Required to CONNECT ollama.com:443"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
        let (early, _) = try_tunnel(b"HTTP/1.1 200 OK\r\n\r\nsurprise").await;
        assert!(
            early
                .unwrap_err()
                .contains("bytes after its CONNECT answer")
        );
        let (closed, _) = try_tunnel(b"HTTP/1.1 200").await;
        let e = closed.unwrap_err();
        assert!(
            e.starts_with("proxy http://127.0.0.1:") && !e.contains("pw"),
            "{e}"
        );
        let (garbage, _) = try_tunnel(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let e = garbage.unwrap_err();
        assert!(
            e.starts_with("proxy http://127.0.0.1:") && !e.contains("pw"),
            "{e}"
        );
    }
}
