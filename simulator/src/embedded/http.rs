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
use tokio::task::{JoinHandle, JoinSet};

/// Largest request head read before answering 400.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running health server started by [`serve_health`]. Stopping or dropping it closes the
/// listener (later connects are refused) and drops open connections.
#[derive(Debug)]
pub struct HttpHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HttpHandle {
    /// The address it listens on, with the port actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::debug!(%error, "health server task ended abnormally");
            }
        }
    }
}

impl Drop for HttpHandle {
    fn drop(&mut self) {
        self.stop.take();
    }
}

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
    Ok(HttpHandle {
        local_addr,
        stop: Some(tx),
        task: Some(task),
    })
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
    match tokio::time::timeout(READ_TIMEOUT, read_head).await {
        Ok(r) => r?,
        Err(_) => return Ok(()), // slow client: just close
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
