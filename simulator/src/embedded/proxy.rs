//! A userspace proxy with kube-proxy's Service semantics for the embedded lab.
//!
//! Each frontend (a ClusterIP:port, or a node IP:NodePort) with endpoints gets a listener that
//! relays each new flow to a random endpoint of its [`Route`]:
//!
//! - **no endpoints**: no listener at all, so the kernel answers like kube-proxy's REJECT rule
//!   ("has no endpoints"): ICMP port unreachable for UDP, RST for TCP;
//! - **sessionAffinity ClientIP**: a client IP keeps its endpoint while that endpoint stays;
//! - **internalTrafficPolicy Local**: only endpoints on the client's node (found from its source
//!   address: a node IP or a pod IP in a node's pod CIDR; anything else — the host's
//!   127.0.0.1 — counts as the first node, the one the host plays). A client on a node without
//!   local endpoints is reset, where kube-proxy drops;
//! - **externalTrafficPolicy Local** is the caller's filter: it hands a NodePort frontend only
//!   that node's endpoints (none: no listener, refused, where kube-proxy drops).

use rand::seq::IndexedRandom;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// One frontend the proxy serves: a Service VIP and port, or a node IP and NodePort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// VIP and port.
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: Proto,
}

/// One endpoint behind a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Pod IP and port.
    pub addr: SocketAddr,
    /// The node the pod runs on.
    pub node: String,
}

/// Where a frontend's flows go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// Ready endpoints.
    pub backends: Vec<Backend>,
    /// sessionAffinity ClientIP.
    pub client_ip_affinity: bool,
    /// internalTrafficPolicy Local.
    pub client_node_local: bool,
}

impl Route {
    /// A route to these addresses with default policies (backends on no particular node).
    pub fn to(addrs: Vec<SocketAddr>) -> Route {
        Route {
            backends: addrs
                .into_iter()
                .map(|addr| Backend {
                    addr,
                    node: String::new(),
                })
                .collect(),
            ..Route::default()
        }
    }
}

/// Which node a client address is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// (node name, node IP, pod CIDR network, prefix length), in node order.
    pub nodes: Vec<(String, IpAddr, Ipv4Addr, u8)>,
}

impl Topology {
    /// The node of a client address; the first node for addresses that are no node's.
    pub fn node_of(&self, ip: IpAddr) -> Option<&str> {
        let hit = self.nodes.iter().find(|(_, node_ip, net, len)| {
            *node_ip == ip
                || match ip {
                    IpAddr::V4(v4) => {
                        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                        u32::from(v4) & mask == u32::from(*net) & mask
                    }
                    IpAddr::V6(_) => false,
                }
        });
        hit.or(self.nodes.first()).map(|n| n.0.as_str())
    }
}

struct Shared {
    route: RwLock<Route>,
    topology: Arc<RwLock<Topology>>,
    affinity: Mutex<HashMap<IpAddr, SocketAddr>>,
}

type Backends = Arc<Shared>;

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
    topology: Arc<RwLock<Topology>>,
}

impl Proxy {
    /// An empty proxy.
    pub fn new() -> Self {
        Proxy::default()
    }

    /// Sets where client addresses are (for internalTrafficPolicy Local).
    pub fn set_topology(&mut self, t: Topology) {
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The frontends currently served.
    pub fn frontends(&self) -> Vec<Frontend> {
        let mut v: Vec<_> = self.listeners.keys().copied().collect();
        v.sort();
        v
    }

    /// The route a served frontend relays to (`None` when it is not served).
    pub fn route(&self, f: &Frontend) -> Option<Route> {
        self.listeners.get(f).map(|l| {
            l.backends
                .route
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Makes the served frontends match `desired`: frontends with no backends are closed
    /// (REJECT semantics), new ones are bound, existing ones get their route replaced.
    /// Returns one message per frontend that could not be bound.
    pub async fn reconcile(&mut self, desired: &[(Frontend, Route)]) -> Vec<String> {
        let wanted: HashMap<Frontend, &Route> = desired
            .iter()
            .filter(|(_, r)| !r.backends.is_empty())
            .map(|(f, r)| (*f, r))
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
        for (f, route) in wanted {
            if let Some(l) = self.listeners.get(&f) {
                *l.backends.route.write().unwrap_or_else(|e| e.into_inner()) = route.clone();
                // Affinity entries for endpoints that left are forgotten.
                l.backends
                    .affinity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|_, b| route.backends.iter().any(|x| x.addr == *b));
                continue;
            }
            let shared: Backends = Arc::new(Shared {
                route: RwLock::new(route.clone()),
                topology: self.topology.clone(),
                affinity: Mutex::default(),
            });
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

fn pick(shared: &Backends, client: IpAddr) -> Option<SocketAddr> {
    let route = shared.route.read().unwrap_or_else(|e| e.into_inner());
    let topology = shared.topology.read().unwrap_or_else(|e| e.into_inner());
    let node = route
        .client_node_local
        .then(|| topology.node_of(client).unwrap_or_default().to_string());
    let candidates: Vec<SocketAddr> = route
        .backends
        .iter()
        .filter(|b| node.as_ref().is_none_or(|n| &b.node == n))
        .map(|b| b.addr)
        .collect();
    if !route.client_ip_affinity {
        return candidates.choose(&mut rand::rng()).copied();
    }
    let mut sticky = shared.affinity.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = sticky.get(&client).filter(|b| candidates.contains(b)) {
        return Some(*b);
    }
    let b = candidates.choose(&mut rand::rng()).copied()?;
    sticky.insert(client, b);
    Some(b)
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
                let Some(backend) = pick(&backends, client.ip()) else {
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
        let Ok((mut client, peer)) = accepted else {
            continue;
        };
        while tasks.try_join_next().is_some() {}
        let Some(backend) = pick(&backends, peer.ip()) else {
            // No endpoint for this client (internalTrafficPolicy Local): reset it.
            let _ = client.set_zero_linger();
            continue;
        };
        tasks.spawn(async move {
            let connect = connect_from(peer.ip(), backend);
            match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect).await {
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

/// Connects to the backend from the client's own address, as DNAT without masquerade keeps
/// the source: the backend sees the pod (or node) that called the Service. Falls back to any
/// source when that address cannot be bound.
async fn connect_from(source: IpAddr, backend: SocketAddr) -> io::Result<TcpStream> {
    let sock = match backend {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if source.is_ipv4() == backend.is_ipv4() && sock.bind(SocketAddr::new(source, 0)).is_ok() {
        return sock.connect(backend).await;
    }
    TcpStream::connect(backend).await
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
        assert!(p
            .reconcile(&[(fe, Route::to(vec![baddr]))])
            .await
            .is_empty());
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.connect(fe.addr).unwrap();
        c.send(b"ping").unwrap();
        let mut buf = [0u8; 16];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        // no endpoints: the frontend disappears and the kernel refuses
        assert!(p.reconcile(&[(fe, Route::to(vec![]))]).await.is_empty());
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
        assert!(p
            .reconcile(&[(fe, Route::to(vec![baddr]))])
            .await
            .is_empty());
        let mut s = TcpStream::connect(fe.addr).await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        p.shutdown().await;
        let e = TcpStream::connect(fe.addr).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn named(addr: &str, name: &'static str) -> SocketAddr {
        let l = TcpListener::bind(addr).await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        a
    }

    async fn ask(fe: SocketAddr) -> String {
        let mut s = TcpStream::connect(fe).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn affinity_pins_a_client_and_internal_local_keeps_to_its_node() {
        let a = named("127.203.16.2:0", "a").await;
        let b = named("127.203.17.2:0", "b").await;
        let backends = vec![
            Backend {
                addr: a,
                node: "node-1".into(),
            },
            Backend {
                addr: b,
                node: "node-2".into(),
            },
        ];
        let mut p = Proxy::new();
        p.set_topology(Topology {
            nodes: vec![
                (
                    "node-1".into(),
                    "127.203.0.10".parse().unwrap(),
                    "127.203.16.0".parse().unwrap(),
                    24,
                ),
                (
                    "node-2".into(),
                    "127.203.0.11".parse().unwrap(),
                    "127.203.17.0".parse().unwrap(),
                    24,
                ),
            ],
        });
        let spread = "127.203.1.1:80".parse().unwrap();
        let sticky = "127.203.1.2:80".parse().unwrap();
        let local = "127.203.1.3:80".parse().unwrap();
        let tcp = |addr| Frontend {
            addr,
            proto: Proto::Tcp,
        };
        let route = |aff, local| Route {
            backends: backends.clone(),
            client_ip_affinity: aff,
            client_node_local: local,
        };
        assert!(p
            .reconcile(&[
                (tcp(spread), route(false, false)),
                (tcp(sticky), route(true, false)),
                (tcp(local), route(false, true)),
            ])
            .await
            .is_empty());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            seen.insert(ask(spread).await);
        }
        assert_eq!(seen.len(), 2, "random over both: {seen:?}");
        let first = ask(sticky).await;
        for _ in 0..15 {
            assert_eq!(ask(sticky).await, first);
        }
        // the host (127.0.0.1) plays node-1: only node-1's endpoint
        for _ in 0..10 {
            assert_eq!(ask(local).await, "a");
        }
        assert_eq!(
            Topology::default().node_of("127.0.0.1".parse().unwrap()),
            None
        );
        p.shutdown().await;
    }
}
