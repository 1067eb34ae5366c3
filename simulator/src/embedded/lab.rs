//! The embedded lab: the demo cluster brought to life on the lab's own slice of 127.0.0.0/8 —
//! CoreDNS pods, the upstream resolver, Service VIPs — with faults applied and reverted exactly.

use super::dns::{
    serve, CoreDns, CoreDnsConfig, CoreDnsFaults, ServerHandle, Upstream, UpstreamMode,
};
use super::http::{serve_health, HttpHandle};
use super::proxy::{Backend, Frontend, Proto, Proxy, Route, Topology};
use super::root::{render_node, render_node_ipvs, NodeDns, POD_RESOLV_CONF};
use super::task::TaskHandle;
use super::workloads::{serve_hostname, serve_mysql, start_webapp, Started};
use crate::model::{AddressPlan, Cluster, TargetPort, Workload};
use crate::scenario::{Fault, LoopPath, ServiceRef};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A lab failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The backend cannot express this fault; the scenario is skipped with this reason.
    #[error("{0}")]
    Unsupported(String),
    /// No free slice of 127.0.0.0/8 or no bindable port.
    #[error("failed to allocate lab addresses: {0}")]
    Allocate(String),
    /// The fault's parameters do not fit this cluster (no such Service, pods, node).
    #[error("failed to apply the fault: {0}")]
    Fault(String),
    /// File or socket trouble.
    #[error("failed to {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// How to bring a lab up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Where lab directories live (`$KDIAG_LAB_DIR`, else `<tmp>/kdiag-labs`).
    pub base_dir: PathBuf,
    /// Force this DNS port; `None` tries 53, then a free high port.
    pub port: Option<u16>,
    /// CoreDNS forward's upstream read timeout.
    pub forward_timeout: Duration,
}

impl LabConfig {
    /// The default base directory.
    pub fn default_base_dir() -> PathBuf {
        std::env::var_os("KDIAG_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("kdiag-labs"))
    }
}

/// One way to undo one change, captured before the change is made.
#[derive(Debug, Clone)]
pub enum Undo {
    /// Restore the cluster model.
    Cluster(Box<Cluster>),
    /// Restore CoreDNS's fault switches.
    CoreDns(CoreDnsFaults),
    /// Restore the upstream resolver's mode.
    Upstream(UpstreamMode),
    /// Restore the node DNS files' inputs.
    NodeDns(NodeDns),
    /// Restore whether the proxy runs.
    ProxyDown(bool),
    /// Restore the NodePort firewall (node, port) rejections.
    Firewall(Vec<(String, u16)>),
    /// Restore kube-proxy's view: `None` follows the API again, `Some` stays frozen there.
    ProxyView(Option<Box<Cluster>>),
}

/// Where a running lab can be reached; `kdiag lab up -o json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabInfo {
    /// Lab id.
    pub id: String,
    /// Backend name.
    pub backend: &'static str,
    /// The cluster DNS VIP and port.
    pub dns: SocketAddr,
    /// The upstream resolver CoreDNS forwards to.
    pub upstream: SocketAddr,
    /// Node name → node root directory (for `--root`).
    pub nodes: BTreeMap<String, PathBuf>,
    /// A resolv.conf as kubelet hands a pod in `default`.
    pub resolv_conf: PathBuf,
    /// The `kubectl get ... -o json` capture of the cluster (for `--cluster-state`).
    pub cluster_state: PathBuf,
    /// The lab directory.
    pub dir: PathBuf,
    /// `namespace/name` → ClusterIP:port (first port) of every Service with a ClusterIP.
    pub services: BTreeMap<String, SocketAddr>,
}

struct PodServers {
    dns: ServerHandle,
    health: Vec<HttpHandle>,
    config: CoreDnsConfig,
}

impl PodServers {
    /// Stops the pod's servers and waits until their sockets are closed.
    async fn stop(self) {
        self.dns.stop().await;
        for h in self.health {
            h.stop().await;
        }
    }
}

/// forward's max_concurrent in the lab (kubeadm sets 1000; a lab keeps a loop's fan-out small).
const MAX_CONCURRENT: usize = 100;

/// How long the loop plugin's start-up exchange waits (miekg/dns's default timeout).
const LOOP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a forward target points from inside a CoreDNS pod: loopback is the pod itself.
fn from_pod(ip: IpAddr, pod: SocketAddr, owned: &[IpAddr], port: u16) -> SocketAddr {
    let loopback = match ip {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback(),
    };
    if loopback && !owned.contains(&ip) {
        pod
    } else {
        SocketAddr::new(ip, port)
    }
}

/// CoreDNS's loop plugin at start-up: send `HINFO <u62>.<u62>.` to itself; if the name comes
/// back a third time the plugin logs the fatal line and CoreDNS exits.
async fn loop_self_check(
    addr: SocketAddr,
    plugin: &std::sync::Mutex<super::dns::LoopPlugin>,
) -> Option<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let qname = kdiag_probes::dns::loops::probe_name(rand::random(), rand::random(), ".");
    plugin.lock().unwrap_or_else(|e| e.into_inner()).arm(&qname);
    let exchange = async {
        let name: Name = qname.parse().ok()?;
        let mut m = Message::query();
        m.metadata.id = rand::random();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, RecordType::HINFO));
        let bytes = m.to_vec().ok()?;
        let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
        sock.connect(addr).await.ok()?;
        sock.send(&bytes).await.ok()?;
        let mut buf = [0u8; 512];
        sock.recv(&mut buf).await.ok()
    };
    let _ = tokio::time::timeout(LOOP_CHECK_TIMEOUT, exchange).await;
    let mut p = plugin.lock().unwrap_or_else(|e| e.into_inner());
    let fatal = p.fatal().map(str::to_string);
    p.disarm();
    fatal
}

/// A workload pod's servers, and the spec they were started from.
struct WorkloadServers {
    fingerprint: String,
    _servers: Vec<TaskHandle>,
    /// kubelet restarting a crashed container; aborted when dropped.
    restarter: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for WorkloadServers {
    fn drop(&mut self) {
        if let Some(r) = self.restarter.take() {
            r.abort();
        }
    }
}

/// First back-off before kubelet restarts a crashed container (doubling, capped).
const RESTART_BACKOFF: Duration = Duration::from_secs(2);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A running embedded lab. Dropping it stops everything and removes its directory.
pub struct EmbeddedLab {
    id: String,
    plan: AddressPlan,
    port: u16,
    dir: PathBuf,
    cluster: Arc<RwLock<Cluster>>,
    coredns: Arc<RwLock<CoreDnsFaults>>,
    upstream_mode: Arc<RwLock<UpstreamMode>>,
    node_dns: NodeDns,
    config: CoreDnsConfig,
    loop_plugin: bool,
    pods: BTreeMap<String, PodServers>,
    workloads: BTreeMap<String, WorkloadServers>,
    _upstream: ServerHandle,
    proxy: Proxy,
    proxy_down: bool,
    /// The cluster as kube-proxy last synced it, while it does not sync (proxy-rules-stale):
    /// the proxy and the node's rule files follow this instead of the model.
    proxy_view: Option<Box<Cluster>>,
    firewall: Vec<(String, u16)>,
    applied: Vec<&'static str>,
    warnings: Vec<String>,
    _lock: File,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|e| e.into_inner()) = v;
}

/// Takes the lock of a free slice; the lock is released when the returned file is dropped
/// (also when the process dies), so a killed lab never blocks its slice.
fn lock_slice(base: &Path) -> Result<(u8, File), LabError> {
    let locks = base.join("locks");
    std::fs::create_dir_all(&locks).map_err(io_err(format!("create {}", locks.display())))?;
    let start: u8 = rand::random_range(1..=254);
    for i in 0..254u16 {
        let slice = ((u16::from(start) - 1 + i) % 254 + 1) as u8;
        let path = locks.join(format!("slice-{slice}.lock"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        match f.try_lock() {
            Ok(()) => return Ok((slice, f)),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("lock {}", path.display()))(e))
            }
        }
    }
    Err(LabError::Allocate(
        "all 254 slices of 127.0.0.0/8 are in use by other labs".into(),
    ))
}

async fn bindable(ip: IpAddr, port: u16) -> bool {
    let addr = SocketAddr::new(ip, port);
    let udp = tokio::net::UdpSocket::bind(addr).await;
    let tcp = tokio::net::TcpListener::bind(addr).await;
    udp.is_ok() && tcp.is_ok()
}

async fn choose_port(plan: &AddressPlan, forced: Option<u16>) -> Result<u16, LabError> {
    let ip = IpAddr::V4(plan.upstream_ip());
    if let Some(p) = forced {
        return if bindable(ip, p).await {
            Ok(p)
        } else {
            Err(LabError::Allocate(format!("cannot bind {ip}:{p}")))
        };
    }
    if bindable(ip, 53).await {
        return Ok(53);
    }
    for _ in 0..50 {
        let p = rand::random_range(20_000..60_000);
        if bindable(ip, p).await {
            return Ok(p);
        }
    }
    Err(LabError::Allocate(format!("no bindable DNS port on {ip}")))
}

impl EmbeddedLab {
    /// Brings a healthy lab up: upstream resolver, CoreDNS pods, Service VIPs, node roots.
    pub async fn up(config: &LabConfig) -> Result<EmbeddedLab, LabError> {
        let (slice, lock) = lock_slice(&config.base_dir)?;
        let plan = AddressPlan { slice };
        let port = choose_port(&plan, config.port).await?;
        let id = format!("embedded-{slice}");
        let dir = config.base_dir.join(&id);
        if dir.exists() {
            // left behind by a killed run that held this slice: we hold the lock now
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let upstream_addr = SocketAddr::new(IpAddr::V4(plan.upstream_ip()), port);
        let upstream_mode = Arc::new(RwLock::new(UpstreamMode::Healthy));
        let upstream = serve(upstream_addr, Upstream::new(upstream_mode.clone()), true)
            .await
            .map_err(io_err(format!(
                "serve the upstream resolver on {upstream_addr}"
            )))?;
        let cluster = Cluster::demo(&plan, port);
        let core = CoreDnsConfig {
            zone: cluster.domain.clone(),
            ttl: 30,
            upstream: upstream_addr,
            forward_timeout: config.forward_timeout,
            recursion_available: false,
            zone_forwards: vec![],
            max_concurrent: MAX_CONCURRENT,
        };
        let mut lab = EmbeddedLab {
            id,
            plan,
            port,
            dir,
            cluster: Arc::new(RwLock::new(cluster)),
            coredns: Arc::default(),
            upstream_mode,
            node_dns: NodeDns {
                upstreams: vec![upstream_addr.ip()],
                search: vec![],
                port,
                zone_forwards: vec![],
                max_concurrent: MAX_CONCURRENT,
            },
            config: core,
            loop_plugin: true,
            pods: BTreeMap::new(),
            workloads: BTreeMap::new(),
            _upstream: upstream,
            proxy: Proxy::new(),
            proxy_down: false,
            proxy_view: None,
            firewall: vec![],
            applied: vec![],
            warnings: vec![],
            _lock: lock,
        };
        lab.sync().await?;
        Ok(lab)
    }

    /// Where the lab can be reached.
    pub fn info(&self) -> LabInfo {
        let cluster = read(&self.cluster);
        let vip = cluster
            .service("kube-system", "kube-dns")
            .and_then(|s| s.cluster_ip)
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V4(self.plan.service_ip(10)));
        let nodes: BTreeMap<String, PathBuf> = cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), self.node_root(&n.name)))
            .collect();
        let first = cluster
            .nodes
            .first()
            .map(|n| n.name.clone())
            .unwrap_or_default();
        LabInfo {
            id: self.id.clone(),
            backend: "embedded",
            dns: SocketAddr::new(vip, self.port),
            upstream: self.config.upstream,
            resolv_conf: self.node_root(&first).join(POD_RESOLV_CONF),
            nodes,
            cluster_state: self.dir.join("cluster-state.json"),
            dir: self.dir.clone(),
            services: cluster
                .services
                .iter()
                .filter_map(|s| {
                    let ip = s.cluster_ip?;
                    let port = s.ports.first()?.port;
                    Some((
                        format!("{}/{}", s.namespace, s.name),
                        SocketAddr::new(IpAddr::V4(ip), port),
                    ))
                })
                .collect(),
        }
    }

    /// Things that did not come up (a VIP port that could not be bound), for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A snapshot of the cluster model.
    pub fn cluster(&self) -> Cluster {
        read(&self.cluster)
    }

    /// The root directory of a node.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    /// Applies a fault and returns how to undo it. `Unsupported` when this backend cannot
    /// express it; nothing has changed then.
    pub async fn apply(&mut self, fault: &Fault) -> Result<Vec<Undo>, LabError> {
        let undo = match fault {
            Fault::DnsUpstreamServfail
            | Fault::DnsUpstreamTimeout
            | Fault::DnsUpstreamRefusesHinfo
            | Fault::DnsUpstreamDropsHinfo => {
                let before = read(&self.upstream_mode);
                let mode = match fault {
                    Fault::DnsUpstreamServfail => UpstreamMode::ServFail,
                    Fault::DnsUpstreamTimeout => UpstreamMode::Timeout,
                    Fault::DnsUpstreamDropsHinfo => UpstreamMode::DropHinfo,
                    _ => UpstreamMode::RefuseHinfo,
                };
                write(&self.upstream_mode, mode);
                vec![Undo::Upstream(before)]
            }
            Fault::DnsPodsDown => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                for p in c.pods.iter_mut().filter(|p| {
                    p.namespace == "kube-system"
                        && p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
                }) {
                    p.ready = false;
                    p.restarts += 5;
                    p.waiting_reason = Some("CrashLoopBackOff".into());
                    p.termination_message = Some("container coredns exited with code 1".into());
                }
                write(&self.cluster, c);
                vec![Undo::Cluster(Box::new(before))]
            }
            Fault::DnsApiUnsynced | Fault::DnsSlow { .. } => {
                let before = read(&self.coredns);
                let mut f = before.clone();
                match fault {
                    Fault::DnsSlow { delay } => f.delay = *delay,
                    _ => f.unsynced = true,
                }
                write(&self.coredns, f);
                vec![Undo::CoreDns(before)]
            }
            Fault::DnsTruncated => {
                let before_faults = read(&self.coredns);
                let before_cluster = read(&self.cluster);
                let mut f = before_faults.clone();
                f.truncate_udp = true;
                let mut c = before_cluster.clone();
                if let Some(svc) = c.service_mut("kube-system", "kube-dns") {
                    svc.ports
                        .retain(|p| p.protocol != "TCP" || p.port != self.port);
                }
                write(&self.coredns, f);
                write(&self.cluster, c);
                vec![
                    Undo::CoreDns(before_faults),
                    Undo::Cluster(Box::new(before_cluster)),
                ]
            }
            Fault::DnsSearchDomains { domains } => {
                let before = self.node_dns.clone();
                self.node_dns.search.extend(domains.iter().cloned());
                vec![Undo::NodeDns(before)]
            }
            Fault::ClientWrongServiceName { .. } => vec![],
            Fault::ServiceSelectorMismatch { service, selector } => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                find_service(&mut c, service)?.selector = selector.clone();
                write(&self.cluster, c);
                vec![Undo::Cluster(Box::new(before))]
            }
            Fault::ServiceTargetportWrong {
                service,
                target_port,
            } => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                let svc = find_service(&mut c, service)?;
                let Some(p) = svc.ports.first_mut() else {
                    return Err(LabError::Fault(format!("service {service} has no port")));
                };
                p.target = TargetPort::Number(*target_port);
                write(&self.cluster, c);
                vec![Undo::Cluster(Box::new(before))]
            }
            Fault::EndpointPartialDown { service, count } => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                let svc = find_service(&mut c, service)?.clone();
                let mut ready: Vec<String> =
                    c.ready_endpoints(&svc).into_iter().map(|e| e.pod).collect();
                ready.sort();
                if *count >= ready.len() {
                    return Err(LabError::Fault(format!(
                        "endpoint-partial-down: {service} has {} ready endpoint(s); count {count} \
                         must leave at least one serving",
                        ready.len()
                    )));
                }
                // The last ones by name stop serving (deterministic for scenarios).
                let down = &ready[ready.len() - count..];
                for p in c
                    .pods
                    .iter_mut()
                    .filter(|p| p.namespace == service.namespace && down.contains(&p.name))
                {
                    p.listening = false;
                }
                write(&self.cluster, c);
                vec![Undo::Cluster(Box::new(before))]
            }
            Fault::ProxyDown => {
                let before = self.proxy_down;
                self.proxy_down = true;
                vec![Undo::ProxyDown(before)]
            }
            Fault::ProxyRulesStale { service } => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                let svc = find_service(&mut c, service)?.clone();
                let moved = reschedule(&mut c, &svc, &self.plan);
                if moved == 0 {
                    return Err(LabError::Fault(format!(
                        "proxy-rules-stale: {service} selects no pod to reschedule"
                    )));
                }
                let before_view = self.proxy_view.clone();
                // kube-proxy stops syncing first: its view is the cluster before the rollout
                if self.proxy_view.is_none() {
                    self.proxy_view = Some(Box::new(before.clone()));
                }
                write(&self.cluster, c);
                vec![
                    Undo::ProxyView(before_view),
                    Undo::Cluster(Box::new(before)),
                ]
            }
            Fault::NodeportBlocked { service, nodes } => {
                let mut c = read(&self.cluster);
                let svc = find_service(&mut c, service)?;
                let ports: Vec<u16> = svc.ports.iter().filter_map(|p| p.node_port).collect();
                if ports.is_empty() {
                    return Err(LabError::Fault(format!(
                        "service {service} has no NodePort"
                    )));
                }
                let all: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
                for n in nodes {
                    if !all.contains(n) {
                        return Err(LabError::Fault(format!(
                            "no node {n:?} (nodes: {})",
                            all.join(", ")
                        )));
                    }
                }
                let targets = if nodes.is_empty() { &all } else { nodes };
                let before = self.firewall.clone();
                for n in targets {
                    for p in &ports {
                        self.firewall.push((n.clone(), *p));
                    }
                }
                vec![Undo::Firewall(before)]
            }
            Fault::AppBadConfig {
                namespace,
                selector,
                key,
                value,
            } => {
                let before = read(&self.cluster);
                let mut c = before.clone();
                let mut changed = 0;
                for p in c.pods.iter_mut().filter(|p| {
                    &p.namespace == namespace
                        && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                }) {
                    if let Workload::WebApp { env } = &mut p.workload {
                        env.insert(key.clone(), value.clone());
                        changed += 1;
                    }
                }
                if changed == 0 {
                    return Err(LabError::Unsupported(format!(
                        "app-bad-config: no pod in {namespace} matching the selector runs an \
                         application whose configuration the embedded backend models"
                    )));
                }
                write(&self.cluster, c);
                vec![Undo::Cluster(Box::new(before))]
            }
            Fault::DnsExtraForward { zone } => {
                let before = self.node_dns.clone();
                self.node_dns
                    .zone_forwards
                    .push((zone.clone(), self.config.upstream.ip()));
                vec![Undo::NodeDns(before)]
            }
            Fault::DnsForwardLoop { via, zone, path } => {
                let before_dns = self.node_dns.clone();
                let before_cluster = read(&self.cluster);
                let before_up = read(&self.upstream_mode);
                match path {
                    LoopPath::Upstream => {
                        // The site resolver forwards back to the cluster DNS VIP: A -> B -> A.
                        // CoreDNS keeps running: its loop plugin only checked at start-up.
                        let vip = SocketAddr::new(IpAddr::V4(self.plan.service_ip(10)), self.port);
                        write(&self.upstream_mode, UpstreamMode::Forward(vip));
                    }
                    LoopPath::SelfLoop if zone == "." => {
                        // kubelet's resolvConf names a loopback resolver: CoreDNS (dnsPolicy
                        // Default) forwards `.` to itself; reload runs the loop plugin's check.
                        self.node_dns.upstreams = vec![*via];
                    }
                    LoopPath::SelfLoop => {
                        self.node_dns.zone_forwards.push((zone.clone(), *via));
                    }
                }
                vec![
                    Undo::Upstream(before_up),
                    Undo::NodeDns(before_dns),
                    Undo::Cluster(Box::new(before_cluster)),
                ]
            }
            other => {
                return Err(LabError::Unsupported(format!(
                    "the embedded backend cannot express {} yet",
                    other.kind()
                )))
            }
        };
        self.applied.push(fault.kind());
        self.sync().await?;
        Ok(undo)
    }

    /// Undoes changes, last first.
    pub async fn revert(&mut self, undo: Vec<Undo>) -> Result<(), LabError> {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Cluster(c) => write(&self.cluster, *c),
                Undo::CoreDns(f) => write(&self.coredns, f),
                Undo::Upstream(m) => write(&self.upstream_mode, m),
                Undo::NodeDns(d) => self.node_dns = d,
                Undo::ProxyDown(b) => self.proxy_down = b,
                Undo::Firewall(f) => self.firewall = f,
                Undo::ProxyView(v) => self.proxy_view = v,
            }
        }
        self.applied.pop();
        self.sync().await
    }

    /// Makes the running lab match the model: CoreDNS servers for running DNS pods, VIP
    /// frontends for Services with ready endpoints, node roots and the cluster capture.
    async fn sync(&mut self) -> Result<(), LabError> {
        self.sync_dns_pods().await?;
        let cluster = read(&self.cluster);
        // Workload pods: serve_hostname and MySQL first (the web app needs its database).
        self.sync_servers(&cluster).await;
        self.sync_proxy(&cluster).await;
        // The web app starts last: it logs into MySQL through mysql-service's VIP.
        if self.sync_webapps().await? {
            let cluster = read(&self.cluster);
            self.sync_proxy(&cluster).await;
        }
        let cluster = read(&self.cluster);
        self.write_files(&cluster)
    }

    /// serve_hostname and MySQL pods: a server per pod that runs and listens; restarted when
    /// the pod's spec changes.
    async fn sync_servers(&mut self, cluster: &Cluster) {
        let wanted: Vec<_> = cluster
            .pods
            .iter()
            .filter(|p| matches!(p.workload, Workload::ServeHostname | Workload::Mysql { .. }))
            .filter(|p| p.listening && p.waiting_reason.is_none() && p.phase == "Running")
            .collect();
        self.workloads.retain(|name, w| {
            wanted
                .iter()
                .any(|p| &p.name == name && w.fingerprint == fingerprint(p))
                || cluster
                    .pods
                    .iter()
                    .any(|p| &p.name == name && matches!(p.workload, Workload::WebApp { .. }))
        });
        for p in wanted {
            if self.workloads.contains_key(&p.name) {
                continue;
            }
            let mut servers = Vec::new();
            for port in p.ports.iter().filter(|pp| pp.protocol == "TCP") {
                let addr = SocketAddr::new(IpAddr::V4(p.ip), port.port);
                let started = match &p.workload {
                    Workload::Mysql { root_password } => {
                        serve_mysql(addr, &p.name, root_password).await
                    }
                    _ => serve_hostname(addr, &p.name).await,
                };
                match started {
                    Ok(h) => servers.push(h),
                    Err(e) => self
                        .warnings
                        .push(format!("pod {} :{}: {e}", p.name, port.port)),
                }
            }
            self.workloads.insert(
                p.name.clone(),
                WorkloadServers {
                    fingerprint: fingerprint(p),
                    _servers: servers,
                    restarter: None,
                },
            );
        }
    }

    /// Starts web app pods whose spec is new or changed. A start that fails marks the pod
    /// crash-looping (kubelet's view) and a restarter keeps retrying with back-off. Returns
    /// whether the model changed (endpoints must be reconciled again).
    async fn sync_webapps(&mut self) -> Result<bool, LabError> {
        let cluster = read(&self.cluster);
        let apps: Vec<_> = cluster
            .pods
            .iter()
            .filter(|p| matches!(p.workload, Workload::WebApp { .. }))
            .cloned()
            .collect();
        self.workloads.retain(|name, w| {
            !apps.iter().any(|p| &p.name == name) || {
                apps.iter()
                    .any(|p| &p.name == name && w.fingerprint == fingerprint(p))
            }
        });
        let mut changed = false;
        for p in apps {
            if self.workloads.contains_key(&p.name) {
                continue;
            }
            let Workload::WebApp { env } = &p.workload else {
                continue;
            };
            let db = resolve_service_host(&cluster, &p.namespace, env.get("DB_Host"));
            let port = p.ports.first().map(|pp| pp.port).unwrap_or(8080);
            let addr = SocketAddr::new(IpAddr::V4(p.ip), port);
            let started = start_webapp(addr, &p.name, env, db)
                .await
                .map_err(io_err(format!("start web app {} on {addr}", p.name)))?;
            let fp = fingerprint(&p);
            match started {
                Started::Serving(h) => {
                    self.workloads.insert(
                        p.name.clone(),
                        WorkloadServers {
                            fingerprint: fp,
                            _servers: vec![h],
                            restarter: None,
                        },
                    );
                }
                Started::Crashed(crash) => {
                    {
                        let mut c = self.cluster.write().unwrap_or_else(|e| e.into_inner());
                        if let Some(pod) = c.pods.iter_mut().find(|x| x.name == p.name) {
                            pod.ready = false;
                            pod.restarts += 1;
                            pod.waiting_reason = Some("CrashLoopBackOff".into());
                            pod.termination_message = Some(crash.message.clone());
                            pod.logs = crash.logs.clone();
                        }
                    }
                    changed = true;
                    let restarter = tokio::spawn(restart_loop(
                        self.cluster.clone(),
                        p.name.clone(),
                        fp.clone(),
                        addr,
                        env.clone(),
                    ));
                    self.workloads.insert(
                        p.name.clone(),
                        WorkloadServers {
                            fingerprint: fp,
                            _servers: vec![],
                            restarter: Some(restarter),
                        },
                    );
                }
            }
        }
        Ok(changed)
    }

    /// The proxy's frontends (from kube-proxy's view of the cluster): each ClusterIP port, and each NodePort on every node IP
    /// (externalTrafficPolicy Local: that node's endpoints only), minus what the firewall
    /// rejects; nothing while kube-proxy is down.
    async fn sync_proxy(&mut self, cluster: &Cluster) {
        let view = self.proxy_view.clone();
        let cluster = view.as_deref().unwrap_or(cluster);
        let mut desired = Vec::new();
        if !self.proxy_down {
            for svc in &cluster.services {
                let Some(vip) = svc.cluster_ip else { continue };
                let eps = cluster.ready_endpoints(svc);
                for sp in &svc.ports {
                    let proto = if sp.protocol == "UDP" {
                        Proto::Udp
                    } else {
                        Proto::Tcp
                    };
                    let backends: Vec<Backend> = eps
                        .iter()
                        .filter_map(|e| {
                            e.ports
                                .iter()
                                .find(|(n, _, pr)| n == &sp.name && pr == &sp.protocol)
                                .map(|(_, port, _)| Backend {
                                    addr: SocketAddr::new(IpAddr::V4(e.ip), *port),
                                    node: e.node.clone(),
                                })
                        })
                        .collect();
                    desired.push((
                        Frontend {
                            addr: SocketAddr::new(IpAddr::V4(vip), sp.port),
                            proto,
                        },
                        Route {
                            backends: backends.clone(),
                            client_ip_affinity: svc.policy.client_ip_affinity,
                            client_node_local: svc.policy.internal_local,
                        },
                    ));
                    let Some(np) = sp.node_port else { continue };
                    for node in &cluster.nodes {
                        if self.firewall.contains(&(node.name.clone(), np)) {
                            continue;
                        }
                        let local: Vec<Backend> = backends
                            .iter()
                            .filter(|b| !svc.policy.external_local || b.node == node.name)
                            .cloned()
                            .collect();
                        desired.push((
                            Frontend {
                                addr: SocketAddr::new(IpAddr::V4(node.ip), np),
                                proto,
                            },
                            Route {
                                backends: local,
                                client_ip_affinity: svc.policy.client_ip_affinity,
                                client_node_local: false,
                            },
                        ));
                    }
                }
            }
        }
        self.proxy.set_topology(Topology {
            nodes: cluster
                .nodes
                .iter()
                .map(|n| (n.name.clone(), IpAddr::V4(n.ip), n.pod_cidr.0, n.pod_cidr.1))
                .collect(),
        });
        for w in self.proxy.reconcile(&desired).await {
            tracing::debug!(lab = %self.id, warning = %w, "proxy");
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }

    /// The CoreDNS configuration of one pod: the node's resolvConf nameserver (loopback means
    /// the pod itself) and the extra zone blocks.
    fn pod_config(&self, pod: SocketAddr, owned: &[IpAddr]) -> CoreDnsConfig {
        let upstream = self
            .node_dns
            .upstreams
            .first()
            .map(|ip| from_pod(*ip, pod, owned, self.port))
            .unwrap_or(self.config.upstream);
        CoreDnsConfig {
            upstream,
            zone_forwards: self
                .node_dns
                .zone_forwards
                .iter()
                .map(|(z, ip)| (z.clone(), from_pod(*ip, pod, owned, self.port)))
                .collect(),
            max_concurrent: self.node_dns.max_concurrent,
            ..self.config.clone()
        }
    }

    /// Runs CoreDNS for every DNS pod that is not crash-looping; restarts a pod whose
    /// configuration changed (CoreDNS's `reload`); runs the loop plugin's start-up check, and
    /// when it fires marks the pod CrashLoopBackOff with the fatal line as its termination
    /// message and in its log under the node root.
    async fn sync_dns_pods(&mut self) -> Result<(), LabError> {
        let cluster = read(&self.cluster);
        let owned: Vec<IpAddr> = cluster
            .nodes
            .iter()
            .map(|n| IpAddr::V4(n.ip))
            .chain(cluster.pods.iter().map(|p| IpAddr::V4(p.ip)))
            .chain(
                cluster
                    .services
                    .iter()
                    .filter_map(|s| s.cluster_ip.map(IpAddr::V4)),
            )
            .collect();
        let dns_pods: Vec<_> = cluster
            .pods
            .iter()
            .filter(|p| p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
            .filter(|p| p.waiting_reason.is_none() && p.phase == "Running")
            .map(|p| {
                (
                    p.name.clone(),
                    p.node.clone(),
                    SocketAddr::new(IpAddr::V4(p.ip), self.port),
                )
            })
            .collect();
        let wanted: BTreeMap<String, CoreDnsConfig> = dns_pods
            .iter()
            .map(|(n, _, a)| (n.clone(), self.pod_config(*a, &owned)))
            .collect();
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(name, s)| wanted.get(*name).is_none_or(|c| *c != s.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(s) = self.pods.remove(&name) {
                s.stop().await;
            }
        }
        let mut crashed: Vec<(String, String, String)> = Vec::new();
        for (name, node, addr) in dns_pods {
            if self.pods.contains_key(&name) {
                continue;
            }
            let config = wanted[&name].clone();
            let handler = CoreDns::new(config.clone(), self.cluster.clone(), self.coredns.clone());
            let plugin = handler.loop_plugin();
            let dns = serve(addr, handler, true)
                .await
                .map_err(io_err(format!("serve CoreDNS pod {name} on {addr}")))?;
            if self.loop_plugin {
                if let Some(fatal) = loop_self_check(addr, &plugin).await {
                    dns.stop().await;
                    crashed.push((name, node, fatal));
                    continue;
                }
            }
            let mut health = Vec::new();
            let ip = addr.ip();
            for hp in [8080, 8181] {
                let faults = self.coredns.clone();
                let ready = Arc::new(move || !read(&faults).unsynced);
                match serve_health(SocketAddr::new(ip, hp), ready).await {
                    Ok(h) => health.push(h),
                    Err(e) => self.warnings.push(format!("pod {name} health :{hp}: {e}")),
                }
            }
            self.pods.insert(
                name,
                PodServers {
                    dns,
                    health,
                    config,
                },
            );
        }
        if !crashed.is_empty() {
            let mut c = read(&self.cluster);
            for (name, node, fatal) in &crashed {
                if let Some(p) = c.pods.iter_mut().find(|p| &p.name == name) {
                    p.ready = false;
                    p.restarts += 1;
                    p.waiting_reason = Some("CrashLoopBackOff".into());
                    p.termination_message = Some(fatal.clone());
                    let dir = self
                        .node_root(node)
                        .join(format!("var/log/pods/kube-system_{name}_0/coredns"));
                    std::fs::create_dir_all(&dir)
                        .map_err(io_err(format!("create {}", dir.display())))?;
                    let log = format!(
                        ".:{port}\nCoreDNS-1.11.3\nlinux/amd64, go1.22, embedded-kdiag\n{fatal}\n",
                        port = self.port
                    );
                    let path = dir.join(format!("{}.log", p.restarts - 1));
                    std::fs::write(&path, log)
                        .map_err(io_err(format!("write {}", path.display())))?;
                }
            }
            write(&self.cluster, c);
        }
        Ok(())
    }

    fn write_files(&self, cluster: &Cluster) -> Result<(), LabError> {
        for node in &cluster.nodes {
            let root = self.node_root(&node.name);
            let proxy = self.proxy_view.as_deref().unwrap_or(cluster);
            let mut files = render_node(cluster, proxy, node, &self.node_dns);
            files.extend(render_node_ipvs(proxy, node));
            for (rel, text) in files {
                let path = root.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(format!("create {}", parent.display())))?;
                }
                std::fs::write(&path, text).map_err(io_err(format!("write {}", path.display())))?;
            }
        }
        // kubelet's container logs: /var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log
        // on the pod's node, in CRI format.
        for p in cluster.pods.iter().filter(|p| !p.logs.is_empty()) {
            let dir = self
                .node_root(&p.node)
                .join("var/log/pods")
                .join(format!("{}_{}_{}", p.namespace, p.name, pod_uid(&p.name)))
                .join("main");
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
            let ts = rfc3339_now();
            let text: String = p
                .logs
                .iter()
                .map(|l| format!("{ts} stderr F {l}\n"))
                .collect();
            let path = dir.join(format!("{}.log", p.restarts.saturating_sub(1)));
            std::fs::write(&path, text).map_err(io_err(format!("write {}", path.display())))?;
        }
        let state = serde_json::to_string_pretty(&cluster.to_state().to_list())
            .map_err(|e| io_err("render cluster state")(io::Error::other(e)))?;
        let path = self.dir.join("cluster-state.json");
        std::fs::write(&path, state).map_err(io_err(format!("write {}", path.display())))?;
        // The revert plan, written before and after every change: an embedded lab's state
        // lives in its process, so the plan for a killed run is to remove this directory.
        let meta = serde_json::json!({
            "id": self.id,
            "backend": "embedded",
            "pid": std::process::id(),
            "slice": format!("127.{}.0.0/16", self.plan.slice),
            "port": self.port,
            "faults_applied": self.applied,
            "revert": "in-process state: stopping the owning process reverts every fault; then remove this directory",
        });
        let path = self.dir.join("state.json");
        std::fs::write(&path, meta.to_string()).map_err(io_err(format!("write {}", path.display())))
    }

    /// Stops everything and removes the lab directory.
    pub async fn down(mut self) {
        self.proxy.shutdown().await;
        // wait for the workloads' sockets to close: the next lab on this slice binds them
        for (_, mut w) in std::mem::take(&mut self.workloads) {
            if let Some(r) = w.restarter.take() {
                r.abort();
                let _ = r.await;
            }
            for h in std::mem::take(&mut w._servers) {
                h.stop().await;
            }
        }
        for (_, p) in std::mem::take(&mut self.pods) {
            p.stop().await;
        }
        // Drop removes the directory.
    }
}

fn find_service<'a>(
    c: &'a mut Cluster,
    s: &ServiceRef,
) -> Result<&'a mut crate::model::Service, LabError> {
    c.service_mut(&s.namespace, &s.name)
        .ok_or_else(|| LabError::Fault(format!("no service {s} in the lab")))
}

/// A rollout of every pod `svc` selects: each gets a new pod-template hash in its name
/// (a StatefulSet pod, without one, keeps its name) and a new IP on the same node. Returns how
/// many pods moved.
fn reschedule(c: &mut Cluster, svc: &crate::model::Service, plan: &AddressPlan) -> usize {
    let names: Vec<String> = c.selected_pods(svc).map(|p| p.name.clone()).collect();
    let mut used: Vec<std::net::Ipv4Addr> = c.pods.iter().map(|p| p.ip).collect();
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    let mut moved = 0;
    for p in c
        .pods
        .iter_mut()
        .filter(|p| p.namespace == svc.namespace && names.contains(&p.name))
    {
        let Some(node) = nodes.iter().position(|n| *n == p.node) else {
            continue;
        };
        let Some(ip) = (100..=250)
            .map(|h| plan.pod_ip(node, h))
            .find(|ip| !used.contains(ip))
        else {
            continue;
        };
        used.push(ip);
        p.ip = ip;
        // `name-HASH-suffix` -> `name-<new hash>-suffix`
        let parts: Vec<&str> = p.name.rsplitn(3, '-').collect();
        if let [suffix, _hash, base] = parts.as_slice() {
            p.name = format!("{base}-8b9f6c4d7-{suffix}");
        }
        p.restarts = 0;
        moved += 1;
    }
    moved
}

/// What a workload server depends on: restarted when it changes.
fn fingerprint(p: &crate::model::Pod) -> String {
    format!("{}|{:?}|{:?}|{}", p.ip, p.ports, p.workload, p.listening)
}

/// A stable fake pod UID (the directory name kubelet uses for the pod's logs).
fn pod_uid(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 4) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// Now as RFC 3339 UTC with nanoseconds, as CRI log lines carry it.
fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Where a host name in an app's config leads: a Service in the pod's namespace (or
/// `svc.ns`), its ClusterIP and first port — what cluster DNS answers for it.
fn resolve_service_host(c: &Cluster, ns: &str, host: Option<&String>) -> Option<SocketAddr> {
    let host = host?;
    let short = host
        .trim_end_matches('.')
        .trim_end_matches(&format!(".svc.{}", c.domain));
    let (name, ns) = match short.split_once('.') {
        Some((n, rest)) => (n, rest.split('.').next().unwrap_or(ns)),
        None => (short, ns),
    };
    let svc = c.service(ns, name)?;
    Some(SocketAddr::new(
        IpAddr::V4(svc.cluster_ip?),
        svc.ports.first()?.port,
    ))
}

/// kubelet restarting a crashed web app with back-off: each retry really starts it again
/// (config, database login); while it keeps failing the restart count grows. Writes only while
/// the pod's spec is the one it was started from (a revert restarts it from scratch instead).
async fn restart_loop(
    cluster: Arc<RwLock<Cluster>>,
    pod: String,
    fp: String,
    addr: SocketAddr,
    env: BTreeMap<String, String>,
) {
    let mut backoff = RESTART_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        let (db, same) = {
            let c = read(&cluster);
            let same = c.pods.iter().any(|p| p.name == pod && fingerprint(p) == fp);
            let ns = c
                .pods
                .iter()
                .find(|p| p.name == pod)
                .map(|p| p.namespace.clone());
            (
                resolve_service_host(&c, &ns.unwrap_or_default(), env.get("DB_Host")),
                same,
            )
        };
        if !same {
            return;
        }
        match start_webapp(addr, &pod, &env, db).await {
            Ok(Started::Crashed(crash)) => {
                let mut c = cluster.write().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = c
                    .pods
                    .iter_mut()
                    .find(|p| p.name == pod && fingerprint(p) == fp)
                {
                    p.restarts += 1;
                    p.termination_message = Some(crash.message);
                    p.logs = crash.logs;
                } else {
                    return;
                }
            }
            // It came up (its database changed): the next sync restarts it properly; stop
            // the trial server and the back-off.
            Ok(Started::Serving(h)) => {
                h.stop().await;
                return;
            }
            Err(_) => {}
        }
    }
}

impl Drop for EmbeddedLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes lab directories left behind by killed runs (their slice lock is free) and returns
/// what was cleaned, plus the labs still running (their owning process holds the lock).
pub fn cleanup_stale(base: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut cleaned = Vec::new();
    let mut running = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return Ok((cleaned, running));
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(slice) = name.strip_prefix("embedded-") else {
            continue;
        };
        let lock = base.join("locks").join(format!("slice-{slice}.lock"));
        let held = match File::options().write(true).open(&lock) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        };
        if held {
            running.push(e.path());
        } else {
            std::fs::remove_dir_all(e.path())?;
            cleaned.push(e.path());
        }
    }
    Ok((cleaned, running))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;

    fn faults() -> Vec<Fault> {
        let text = "\
name: all
summary: every Service fault
faults:
  - kind: service-selector-mismatch
    service: default/hostnames
    selector: {app: hostname}
  - kind: service-targetport-wrong
    service: default/web-service
    target_port: 8081
  - kind: endpoint-partial-down
    service: default/hostnames-sticky
  - kind: proxy-down
  - kind: proxy-rules-stale
    service: default/hostnames
  - kind: nodeport-blocked
    service: default/web-service
  - kind: app-bad-config
    selector: {app: webapp}
    key: DB_Password
    value: nope
expect: {}
";
        parse_scenario("t.yaml", text).unwrap().faults
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_service_fault_is_reverted_exactly() {
        let base = tempfile::tempdir().unwrap();
        let cfg = LabConfig {
            base_dir: base.path().to_path_buf(),
            port: None,
            forward_timeout: Duration::from_secs(1),
        };
        let mut lab = EmbeddedLab::up(&cfg).await.unwrap();
        let cluster = lab.cluster();
        let frontends = lab.proxy.frontends();
        let servers: Vec<String> = lab.workloads.keys().cloned().collect();
        let root = lab.node_root("node-1");
        let node_files = || {
            [
                crate::kube_proxy::IPTABLES_SAVE,
                crate::kube_proxy::NFT_RULESET,
                crate::kube_proxy::IPVSADM,
                crate::kube_proxy::IPSET,
                crate::kube_proxy::IPVS_IPTABLES_SAVE,
            ]
            .map(|rel| std::fs::read_to_string(root.join(rel)).unwrap())
        };
        let files = node_files();
        assert!(frontends.len() >= 10, "{frontends:?}");
        for f in faults() {
            let undo = lab.apply(&f).await.unwrap();
            assert_ne!(
                (lab.cluster(), lab.proxy.frontends()),
                (cluster.clone(), frontends.clone()),
                "{} changed nothing",
                f.kind()
            );
            lab.revert(undo).await.unwrap();
            assert_eq!(
                lab.cluster(),
                cluster,
                "{} left the model changed",
                f.kind()
            );
            assert_eq!(lab.proxy.frontends(), frontends, "{}", f.kind());
            assert_eq!(lab.workloads.keys().cloned().collect::<Vec<_>>(), servers);
            assert!(lab.proxy_down.eq(&false) && lab.firewall.is_empty());
            assert!(lab.proxy_view.is_none(), "{}", f.kind());
            assert!(
                node_files() == files,
                "{} left kube-proxy's rule files changed",
                f.kind()
            );
        }
        // bad parameters are errors, not silent no-ops
        let bad = parse_scenario(
            "b.yaml",
            "name: b\nsummary: s\nfaults:\n  - kind: nodeport-blocked\n    service: default/nope\nexpect: {}\n",
        )
        .unwrap();
        assert!(matches!(
            lab.apply(&bad.faults[0]).await,
            Err(LabError::Fault(_))
        ));
        // a Service without a selector has no pods to roll out
        let bad = parse_scenario(
            "b.yaml",
            "name: b\nsummary: s\nfaults:\n  - kind: proxy-rules-stale\n    service: default/kubernetes\nexpect: {}\n",
        )
        .unwrap();
        assert!(matches!(
            lab.apply(&bad.faults[0]).await,
            Err(LabError::Fault(_))
        ));
        assert!(lab.proxy_view.is_none());
        assert_eq!(lab.cluster(), cluster);
        lab.down().await;
    }

    /// The IPVS-mode files written into each node root trace every frontend the embedded
    /// proxy serves (ClusterIPs, and NodePorts on that node's IP) to exactly the backends it
    /// relays to; and every virtual service with real servers is a frontend the proxy serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ipvs_files_trace_to_what_the_proxy_serves() {
        use kdiag_probes::trace::{NodeContext, Packet, Verdict};
        let base = tempfile::tempdir().unwrap();
        let cfg = LabConfig {
            base_dir: base.path().to_path_buf(),
            port: None,
            forward_timeout: Duration::from_secs(1),
        };
        let lab = EmbeddedLab::up(&cfg).await.unwrap();
        let cluster = lab.cluster();
        let frontends = lab.proxy.frontends();
        let mut checked = 0;
        for node in &cluster.nodes {
            let root = lab.node_root(&node.name);
            let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
            let (vs, sets, rules) = (
                read(crate::kube_proxy::IPVSADM),
                read(crate::kube_proxy::IPSET),
                read(crate::kube_proxy::IPVS_IPTABLES_SAVE),
            );
            let table = kdiag_probes::ipvs::parse_ipvs(&vs).unwrap();
            let sets = kdiag_probes::ipvs::parse_ipset_save(&sets).unwrap();
            let rules = kdiag_probes::iptables::parse_iptables_save(&rules).unwrap();
            let ctx = NodeContext {
                node_ips: vec![IpAddr::V4(node.ip)],
            };
            let client = IpAddr::V4(self::pod_client(&cluster));
            let node_ips: Vec<IpAddr> = cluster.nodes.iter().map(|n| IpAddr::V4(n.ip)).collect();
            for f in &frontends {
                // NodePorts: this node's files only
                if node_ips.contains(&f.addr.ip()) && f.addr.ip() != IpAddr::V4(node.ip) {
                    continue;
                }
                let proto = match f.proto {
                    Proto::Tcp => kdiag_probes::trace::Proto::Tcp,
                    Proto::Udp => kdiag_probes::trace::Proto::Udp,
                };
                let r = kdiag_probes::ipvs::trace_node(
                    &table,
                    &sets,
                    &rules,
                    &Packet {
                        src: client,
                        dst: f.addr.ip(),
                        dport: f.addr.port(),
                        proto,
                    },
                    &ctx,
                );
                let mut got = r.endpoints.clone();
                got.sort();
                let mut want: Vec<String> = lab
                    .proxy
                    .route(f)
                    .unwrap()
                    .backends
                    .iter()
                    .map(|b| b.addr.to_string())
                    .collect();
                want.sort();
                assert_eq!(r.verdict, Verdict::Dnat, "{} {f:?}", node.name);
                assert_eq!(got, want, "{} {f:?}", node.name);
                assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                checked += 1;
            }
            for s in table.services.iter().filter(|s| !s.reals.is_empty()) {
                let kdiag_probes::ipvs::model::ServiceKey::Addr(_, ip, port) = s.key else {
                    panic!("kube-proxy renders no firewall-mark services");
                };
                assert!(
                    frontends
                        .iter()
                        .any(|f| f.addr == SocketAddr::new(ip, port)),
                    "{}: {} is not served by the proxy",
                    node.name,
                    s.text
                );
            }
        }
        assert!(checked >= 12, "{checked}");
        lab.down().await;
    }

    /// A pod's address to send from (the first pod that is not a DNS pod).
    fn pod_client(c: &Cluster) -> std::net::Ipv4Addr {
        c.pods
            .iter()
            .find(|p| p.namespace == "default")
            .map(|p| p.ip)
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_config_crashes_the_web_app_and_empties_its_service() {
        let base = tempfile::tempdir().unwrap();
        let cfg = LabConfig {
            base_dir: base.path().to_path_buf(),
            port: None,
            forward_timeout: Duration::from_secs(1),
        };
        let mut lab = EmbeddedLab::up(&cfg).await.unwrap();
        let web = lab
            .cluster()
            .service("default", "web-service")
            .unwrap()
            .clone();
        let vip = SocketAddr::new(IpAddr::V4(web.cluster_ip.unwrap()), 80);
        assert!(lab.proxy.frontends().iter().any(|f| f.addr == vip));
        let f = faults().pop().unwrap();
        let undo = lab.apply(&f).await.unwrap();
        let c = lab.cluster();
        let apps: Vec<_> = c
            .pods
            .iter()
            .filter(|p| p.name.starts_with("webapp"))
            .collect();
        assert!(apps.iter().all(|p| !p.ready && p.restarts >= 1));
        assert!(apps[0]
            .termination_message
            .as_deref()
            .unwrap()
            .starts_with("1045 (28000): Access denied for user 'root'@'127."));
        assert!(c.ready_endpoints(&web).is_empty());
        assert!(!lab.proxy.frontends().iter().any(|f| f.addr == vip));
        // kubelet's log file on the pod's node
        let logs = lab.node_root(&apps[0].node).join("var/log/pods");
        assert!(std::fs::read_dir(&logs).unwrap().next().is_some());
        lab.revert(undo).await.unwrap();
        assert!(lab.proxy.frontends().iter().any(|f| f.addr == vip));
        lab.down().await;
    }
}
