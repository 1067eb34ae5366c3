//! Pods as small servers in the embedded lab:
//!
//! - **serve_hostname** (agnhost `serve-hostname`, the "Debug Services" `hostnames` pods):
//!   answers an HTTP request with the pod name; a client that half-closes without a request
//!   gets the bare name (its TCP mode).
//! - **the seed's web app** (`webapp-mysql`): on start it prints its config, logs into the
//!   database behind `DB_Host` through the Service VIP, from its own pod IP; with the wrong
//!   password it exits, leaving MySQL's error as its termination message. Once connected, it
//!   serves HTTP on :8080.
//! - **MySQL look-alike** (`mysql-0`, :3306): a line protocol — a greeting on connect, then
//!   `AUTH <user> <password>` → `OK` or `ERR 1045 (28000): Access denied ...`.

use super::task::TaskHandle;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the web app waits for the database at start.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a bind waits for an address still held by the lab that had this slice before
/// (its servers close their sockets asynchronously as they stop).
const BIND_WAIT: Duration = Duration::from_secs(2);

/// Binds `addr`; an address in use is retried briefly: the slice is this lab's (file-locked),
/// so only a server of the lab that held the slice before can still hold it, and it is
/// closing.
async fn bind_owned(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            r => return r,
        }
    }
}

async fn serve_tcp<F, Fut>(addr: SocketAddr, handler: F) -> io::Result<TaskHandle>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = bind_owned(addr).await?;
    let local_addr = listener.local_addr()?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let fut = handler(stream, peer);
                        conns.spawn(async move {
                            if let Err(error) = fut.await {
                                tracing::debug!(%error, %peer, "workload connection failed");
                            }
                        });
                    }
                    Err(error) => {
                        tracing::debug!(%error, "workload accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = &mut rx => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(TaskHandle::new(local_addr, tx, task))
}

/// Reads what the client sends until the end of an HTTP request head, EOF, or the timeout.
async fn read_request(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n")
                || head.windows(2).any(|w| w == b"\n\n")
                || head.len() > 8192
            {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(r) => r.map(|_| head),
        Err(_) => Ok(head),
    }
}

/// Answers with `body`: as an HTTP 200 to a request, or bare to a client that half-closed
/// without sending anything.
async fn answer_text(mut stream: TcpStream, body: String) -> io::Result<()> {
    let req = read_request(&mut stream).await?;
    let out = if req.is_empty() {
        body
    } else if req.starts_with(b"GET ") || req.starts_with(b"HEAD ") {
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if req.starts_with(b"HEAD ") { "" } else { body.as_str() }
        )
    } else {
        "HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n".to_string()
    };
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// serve_hostname on `addr`, answering with `pod`.
pub async fn serve_hostname(addr: SocketAddr, pod: &str) -> io::Result<TaskHandle> {
    let body = format!("{pod}\n");
    serve_tcp(addr, move |s, _| answer_text(s, body.clone())).await
}

/// The MySQL greeting line.
pub fn mysql_greeting(pod: &str) -> String {
    format!("5.7.44-kdiag {pod} ready\n")
}

/// MySQL's answer to one `AUTH user password` line from `peer`.
pub fn mysql_auth(line: &str, root_password: &str, peer: IpAddr) -> String {
    let mut w = line.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("AUTH"), Some(user), pass) => {
            if user == "root" && pass == Some(root_password) {
                "OK\n".into()
            } else {
                format!(
                    "ERR 1045 (28000): Access denied for user '{user}'@'{peer}' (using password: {})\n",
                    if pass.is_some() { "YES" } else { "NO" }
                )
            }
        }
        (Some("PING"), None, None) => "PONG\n".into(),
        _ => "ERR 1064 (42000): You have an error in your SQL syntax\n".into(),
    }
}

/// The MySQL look-alike on `addr`.
pub async fn serve_mysql(
    addr: SocketAddr,
    pod: &str,
    root_password: &str,
) -> io::Result<TaskHandle> {
    let greeting = mysql_greeting(pod);
    let password = root_password.to_string();
    serve_tcp(addr, move |stream, peer| {
        let greeting = greeting.clone();
        let password = password.clone();
        async move {
            let (r, mut w) = stream.into_split();
            w.write_all(greeting.as_bytes()).await?;
            let mut lines = BufReader::new(r).lines();
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(READ_TIMEOUT, lines.next_line()).await
            {
                w.write_all(mysql_auth(&line, &password, peer.ip()).as_bytes())
                    .await?;
            }
            Ok(())
        }
    })
    .await
}

/// Why the web app exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// What it wrote to /dev/termination-log.
    pub message: String,
    /// Its log lines.
    pub logs: Vec<String>,
}

/// The web app after its start.
#[derive(Debug)]
pub enum Started {
    /// Connected to the database and serving on its port.
    Serving(TaskHandle),
    /// Exited.
    Crashed(Crash),
}

/// Starts the seed's web app of pod `pod` on `addr` (its pod IP and port). `db` is where
/// `DB_Host` leads (its Service's VIP and port, as cluster DNS would answer), `None` when the
/// name does not resolve.
pub async fn start_webapp(
    addr: SocketAddr,
    pod: &str,
    env: &BTreeMap<String, String>,
    db: Option<SocketAddr>,
) -> io::Result<Started> {
    let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| "Not Set".into());
    let host = get("DB_Host");
    let mut logs = vec![
        format!(" * Serving Flask app 'app' ({pod})"),
        format!(
            "Environment Variables: DB_Host={host}; DB_Database={}; DB_User={}; DB_Password={};",
            get("DB_Database"),
            get("DB_User"),
            get("DB_Password")
        ),
        format!("Connecting to mysql at {host}:3306 ..."),
    ];
    let crash = |mut logs: Vec<String>, message: String| {
        logs.push(message.clone());
        Ok(Started::Crashed(Crash { message, logs }))
    };
    let Some(db) = db else {
        return crash(
            logs,
            format!("2005 (HY000): Unknown MySQL server host '{host}' (-2)"),
        );
    };
    let result = tokio::time::timeout(DB_TIMEOUT, async {
        let sock = match addr.ip() {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // From the pod's own address, as a pod would.
        sock.bind(SocketAddr::new(addr.ip(), 0))?;
        let stream = sock.connect(db).await?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        let _greeting = lines.next_line().await?;
        w.write_all(format!("AUTH {} {}\n", get("DB_User"), get("DB_Password")).as_bytes())
            .await?;
        lines.next_line().await
    })
    .await;
    let reply = match result {
        Err(_) => {
            return crash(
                logs,
                format!("2003 (HY000): Can't connect to MySQL server on '{host}:3306' (110)"),
            )
        }
        Ok(Err(e)) => {
            return crash(
                logs,
                format!(
                    "2003 (HY000): Can't connect to MySQL server on '{host}:3306' ({})",
                    e.raw_os_error().unwrap_or(111)
                ),
            )
        }
        Ok(Ok(None)) => {
            return crash(
                logs,
                format!("2013 (HY000): Lost connection to MySQL server at '{host}:3306'"),
            )
        }
        Ok(Ok(Some(line))) => line,
    };
    if let Some(err) = reply.strip_prefix("ERR ") {
        return crash(logs, err.to_string());
    }
    logs.push(format!("Connected to {host} as {}", get("DB_User")));
    let body = format!(
        "Hello from {pod}: connected to database {host} as {}\n",
        get("DB_User")
    );
    let handle = serve_tcp(addr, move |s, _| answer_text(s, body.clone())).await?;
    Ok(Started::Serving(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pass: &str) -> BTreeMap<String, String> {
        [
            ("DB_Host", "mysql-service"),
            ("DB_User", "root"),
            ("DB_Password", pass),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn get(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if req.is_empty() {
            s.shutdown().await.unwrap();
        } else {
            s.write_all(req).await.unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn hostname_answers_http_and_bare() {
        let h = serve_hostname("127.202.16.20:0".parse().unwrap(), "hostnames-a")
            .await
            .unwrap();
        let http = get(h.local_addr(), b"GET / HTTP/1.0\r\n\r\n").await;
        assert!(http.starts_with("HTTP/1.0 200 OK"), "{http}");
        assert!(http.ends_with("\r\n\r\nhostnames-a\n"), "{http}");
        assert_eq!(get(h.local_addr(), b"").await, "hostnames-a\n");
        h.stop().await;
    }

    #[tokio::test]
    async fn webapp_needs_the_right_password() {
        let db = serve_mysql("127.202.17.11:0".parse().unwrap(), "mysql-0", "paswrd")
            .await
            .unwrap();
        let addr: SocketAddr = "127.202.16.10:0".parse().unwrap();
        let Started::Serving(web) =
            start_webapp(addr, "webapp-a", &env("paswrd"), Some(db.local_addr()))
                .await
                .unwrap()
        else {
            panic!("the right password must connect")
        };
        let http = get(web.local_addr(), b"GET / HTTP/1.0\r\n\r\n").await;
        assert!(http.contains("Hello from webapp-a"), "{http}");
        web.stop().await;
        let Started::Crashed(c) =
            start_webapp(addr, "webapp-a", &env("wrong"), Some(db.local_addr()))
                .await
                .unwrap()
        else {
            panic!("a wrong password must crash")
        };
        assert_eq!(
            c.message,
            "1045 (28000): Access denied for user 'root'@'127.202.16.10' (using password: YES)"
        );
        assert!(c.logs.iter().any(|l| l.contains("DB_Password=wrong")));
        db.stop().await;
        let Started::Crashed(c) = start_webapp(addr, "webapp-a", &env("paswrd"), None)
            .await
            .unwrap()
        else {
            panic!("no database host must crash")
        };
        assert!(
            c.message.contains("Unknown MySQL server host"),
            "{}",
            c.message
        );
    }

    #[test]
    fn mysql_protocol() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(mysql_auth("AUTH root pw", "pw", ip), "OK\n");
        assert!(mysql_auth("AUTH root", "pw", ip).contains("using password: NO"));
        assert!(mysql_auth("AUTH app pw", "pw", ip).contains("'app'@'10.0.0.1'"));
        assert_eq!(mysql_auth("PING", "pw", ip), "PONG\n");
        assert!(mysql_auth("", "pw", ip).starts_with("ERR 1064"));
    }
}
