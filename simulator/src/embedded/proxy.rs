//! A userspace proxy with kube-proxy's Service semantics for the embedded lab.
//!
//! Each (ClusterIP, port, protocol) with ready endpoints gets a listener that relays to a random
//! ready endpoint. A Service port without ready endpoints has no listener at all, so the kernel
//! answers like kube-proxy's REJECT rule: ICMP port unreachable for UDP, RST for TCP.

use rand::seq::IndexedRandom;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// One frontend the proxy serves: a Service VIP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// VIP and port.
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: Proto,
}

type Backends = Arc<RwLock<Vec<SocketAddr>>>;

struct Listener {
    backends: Backends,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

type StopRx = tokio::sync::oneshot::Receiver<()>;

/// How long an idle UDP flow (the proxy's conntrack entry) lives.
const UDP_FLOW_IDLE: Duration = Duration::from_secs(30);
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy: a set of frontends, reconciled against the desired state.
#[derive(Default)]
pub struct Proxy {
    listeners: HashMap<Frontend, Listener>,
}

impl Proxy {
    /// An empty proxy.
    pub fn new() -> Self {
        Proxy::default()
    }

    /// The frontends currently served.
    pub fn frontends(&self) -> Vec<Frontend> {
        let mut v: Vec<_> = self.listeners.keys().copied().collect();
        v.sort();
        v
    }

    /// Makes the served frontends match `desired`: frontends with no backends are closed
    /// (REJECT semantics), new ones are bound, existing ones get their backend list replaced.
    /// Returns one message per frontend that could not be bound.
    pub async fn reconcile(&mut self, desired: &[(Frontend, Vec<SocketAddr>)]) -> Vec<String> {
        let wanted: HashMap<Frontend, &Vec<SocketAddr>> = desired
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(f, b)| (*f, b))
            .collect();
        let stale: Vec<Frontend> = self
            .listeners
            .keys()
            .filter(|f| !wanted.contains_key(f))
            .copied()
            .collect();
        for f in stale {
            if let Some(l) = self.listeners.remove(&f) {
                stop(l).await;
            }
        }
        let mut problems = Vec::new();
        for (f, backends) in wanted {
            if let Some(l) = self.listeners.get(&f) {
                *l.backends.write().unwrap_or_else(|e| e.into_inner()) = backends.clone();
                continue;
            }
            let shared: Backends = Arc::new(RwLock::new(backends.clone()));
            let (stop, rx) = tokio::sync::oneshot::channel();
            let task = match f.proto {
                Proto::Udp => UdpSocket::bind(f.addr)
                    .await
                    .map(|s| tokio::spawn(serve_udp(s, shared.clone(), rx))),
                Proto::Tcp => TcpListener::bind(f.addr)
                    .await
                    .map(|s| tokio::spawn(serve_tcp(s, shared.clone(), rx))),
            };
            match task {
                Ok(task) => {
                    self.listeners.insert(
                        f,
                        Listener {
                            backends: shared,
                            stop,
                            task,
                        },
                    );
                }
                Err(e) => problems.push(format!(
                    "failed to bind {}/{}: {e}",
                    f.addr,
                    if f.proto == Proto::Udp { "udp" } else { "tcp" }
                )),
            }
        }
        problems
    }

    /// Closes every frontend.
    pub async fn shutdown(&mut self) {
        for (_, l) in self.listeners.drain() {
            stop(l).await;
        }
    }
}

async fn stop(l: Listener) {
    // The serve task stops its flow tasks, waits for them, and drops the socket; waiting for it
    // means the port is closed when reconcile returns.
    let _ = l.stop.send(());
    let _ = l.task.await;
}

fn pick(backends: &Backends) -> Option<SocketAddr> {
    let b = backends.read().unwrap_or_else(|e| e.into_inner());
    b.choose(&mut rand::rng()).copied()
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

async fn serve_udp(sock: UdpSocket, backends: Backends, mut stop: StopRx) {
    let sock = Arc::new(sock);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    // Flow tasks live in this set: aborting the serve task drops it and aborts them all.
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let received = tokio::select! {
            _ = &mut stop => break,
            r = sock.recv_from(&mut buf) => r,
        };
        let (n, client) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "udp frontend recv");
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(backend) = pick(&backends) else {
                    continue;
                };
                let Ok(u) = UdpSocket::bind(unspecified_for(backend)).await else {
                    continue;
                };
                if u.connect(backend).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, u.clone());
                tasks.spawn(relay_back(u.clone(), sock.clone(), client, flows.clone()));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
    tasks.shutdown().await;
}

async fn relay_back(
    upstream: Arc<UdpSocket>,
    frontend: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match tokio::time::timeout(UDP_FLOW_IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = frontend.send_to(&buf[..n], client).await;
            }
            // ICMP from a dead backend: the client just sees no answer, as through DNAT.
            Ok(Err(_)) => continue,
            Err(_) => break,
        }
    }
    flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&client);
}

async fn serve_tcp(listener: TcpListener, backends: Backends, mut stop: StopRx) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => r,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        while tasks.try_join_next().is_some() {}
        let Some(backend) = pick(&backends) else {
            continue;
        };
        tasks.spawn(async move {
            match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
                Ok(Ok(mut server)) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                _ => {
                    // Reset the client like a DNAT to a dead endpoint eventually does.
                    let _ = client.set_zero_linger();
                }
            }
        });
    }
    tasks.shutdown().await;
}

/// A helper for callers that only need to know whether an address is bindable.
pub async fn can_bind_udp(addr: SocketAddr) -> io::Result<()> {
    UdpSocket::bind(addr).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_relays_and_closes_to_refused() {
        // an echo backend
        let backend = UdpSocket::bind("127.201.16.2:0").await.unwrap();
        let baddr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = backend.recv_from(&mut buf).await {
                let _ = backend.send_to(&buf[..n], from).await;
            }
        });
        let mut p = Proxy::new();
        let fe = Frontend {
            addr: addr("127.201.1.10:5353"),
            proto: Proto::Udp,
        };
        assert!(p.reconcile(&[(fe, vec![baddr])]).await.is_empty());
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.connect(fe.addr).unwrap();
        c.send(b"ping").unwrap();
        let mut buf = [0u8; 16];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        // no endpoints: the frontend disappears and the kernel refuses
        assert!(p.reconcile(&[(fe, vec![])]).await.is_empty());
        assert!(p.frontends().is_empty());
        c.send(b"ping").unwrap();
        let err = c.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn tcp_relays_and_rejects_without_endpoints() {
        let backend = TcpListener::bind("127.201.16.3:0").await.unwrap();
        let baddr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(b"hello").await;
            }
        });
        let mut p = Proxy::new();
        let fe = Frontend {
            addr: addr("127.201.1.11:8080"),
            proto: Proto::Tcp,
        };
        assert!(p.reconcile(&[(fe, vec![baddr])]).await.is_empty());
        let mut s = TcpStream::connect(fe.addr).await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        p.shutdown().await;
        let e = TcpStream::connect(fe.addr).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
