//! CoreDNS-like health endpoints for the embedded backend: `GET /health` (the `health`
//! plugin, :8080) and `GET /ready` (the `ready` plugin, :8181), on one listener.
//!
//! Minimal HTTP/1.1: only the request line is parsed, every response carries
//! `Connection: close`. Garbage gets a 400; nothing a client sends can make it panic.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Largest request head read before answering 400.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle [`serve_health`] returns.
pub use super::task::TaskHandle as HttpHandle;

/// Serves `GET /health` → 200 `OK` and `GET /ready` → 200 `OK`, or 503 `kubernetes` while
/// `ready()` is false; 404 for other paths, 400 for requests it cannot parse.
pub async fn serve_health(
    addr: SocketAddr,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> io::Result<HttpHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let ready = Arc::clone(&ready);
                        conns.spawn(async move {
                            if let Err(error) = handle(stream, ready).await {
                                tracing::debug!(%error, %peer, "health connection failed");
                            }
                        });
                    }
                    Err(error) => {
                        tracing::debug!(%error, "health accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = &mut rx => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        // Dropping the listener and the JoinSet closes everything.
    });
    tracing::debug!(%local_addr, "health server listening");
    Ok(HttpHandle::new(local_addr, tx, task))
}

/// The status line and body for a request head.
fn route(head: &[u8], ready: &dyn Fn() -> bool) -> (&'static str, &'static str) {
    const BAD: (&str, &str) = ("400 Bad Request", "Bad Request");
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .or_else(|| head.iter().position(|b| *b == b'\n'));
    let Some(end) = line_end else {
        return BAD;
    };
    let Ok(line) = std::str::from_utf8(&head[..end]) else {
        return BAD;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return BAD;
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
    {
        return BAD;
    }
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "Method Not Allowed");
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/health" => ("200 OK", "OK"),
        "/ready" if ready() => ("200 OK", "OK"),
        "/ready" => ("503 Service Unavailable", "kubernetes"),
        _ => ("404 Not Found", "404 page not found"),
    }
}

async fn handle(
    mut stream: TcpStream,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n")
                || head.windows(2).any(|w| w == b"\n\n")
                || head.len() >= MAX_HEAD
            {
                break;
            }
        }
        Ok::<(), io::Error>(())
    };
    // A slow client gets an answer to what it sent so far (an incomplete head gets a 400).
    if let Ok(read) = tokio::time::timeout(READ_TIMEOUT, read_head).await {
        read?;
    }
    if head.is_empty() {
        return Ok(());
    }
    let (status, body) = route(&head, &*ready);
    let head_only = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        // Half-close so a request without a blank line still ends.
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
    }

    fn status(resp: &str) -> &str {
        resp.lines().next().unwrap_or_default()
    }

    fn body(resp: &str) -> &str {
        resp.split("\r\n\r\n").nth(1).unwrap_or_default()
    }

    #[tokio::test]
    async fn health_and_ready_follow_the_flag() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ready);
        let h = serve_health(
            SocketAddr::from(([127, 200, 16, 2], 0)),
            Arc::new(move || flag.load(Ordering::SeqCst)),
        )
        .await
        .unwrap();
        let a = h.local_addr();
        assert_ne!(a.port(), 0);
        let r = get(a, "/health").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "OK");
        assert!(r.contains("Connection: close\r\n"));
        let r = get(a, "/ready").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body(&r), "kubernetes");
        ready.store(true, Ordering::SeqCst);
        let r = get(a, "/ready?verbose").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "OK");
        assert_eq!(status(&get(a, "/metrics").await), "HTTP/1.1 404 Not Found");
        let r = request(a, b"HEAD /health HTTP/1.0\r\n\r\n").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "");
        h.stop().await;
    }

    #[tokio::test]
    async fn garbage_gets_400_and_never_kills_the_server() {
        let h = serve_health(SocketAddr::from(([127, 201, 16, 2], 0)), Arc::new(|| true))
            .await
            .unwrap();
        let a = h.local_addr();
        for raw in [
            &b"\x00\xff\xfe garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /health\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"get /health HTTP/1.1\r\n\r\n",
            b"GET health HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1 extra\r\n\r\n",
            b"no newline at all",
        ] {
            let r = request(a, raw).await;
            assert_eq!(status(&r), "HTTP/1.1 400 Bad Request", "{raw:?}");
        }
        assert!(status(&request(a, b"POST /ready HTTP/1.1\r\n\r\n").await).contains("405"));
        let huge = vec![b'A'; MAX_HEAD * 2];
        let mut s = TcpStream::connect(a).await.unwrap();
        let _ = s.write_all(&huge).await;
        drop(s);
        // A client that connects and says nothing is dropped on close.
        drop(TcpStream::connect(a).await.unwrap());
        assert_eq!(status(&get(a, "/health").await), "HTTP/1.1 200 OK");
        h.stop().await;
    }

    #[tokio::test]
    async fn stop_and_drop_refuse_later_connections() {
        let h = serve_health(SocketAddr::from(([127, 202, 16, 2], 0)), Arc::new(|| true))
            .await
            .unwrap();
        let a = h.local_addr();
        assert_eq!(status(&get(a, "/health").await), "HTTP/1.1 200 OK");
        h.stop().await;
        let err = TcpStream::connect(a).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        let h = serve_health(SocketAddr::from(([127, 202, 16, 3], 0)), Arc::new(|| true))
            .await
            .unwrap();
        let a = h.local_addr();
        drop(h);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while TcpStream::connect(a).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "dropped server still accepting"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
