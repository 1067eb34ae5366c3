//! The cluster DNS diagnosis shell: reads the node's files and the cluster state, sends a
//! bounded handful of queries, and hands the observations to [`super::analyze`].
//!
//! Queries go one at a time (never a flood): the VIP, each DNS pod, one external name, the
//! largest headless Service, and the client's own lookup when one is given.

use super::analyze::{
    analyze, Budget, ClientLookup, DnsObservations, DnsPodView, DnsServiceView, UpstreamRef,
};
use super::client::{query, search};
use super::kubelet::{pod_resolv_conf, KubeletDnsConfig};
use super::loopcheck::{check_loops, LoopCheck, LoopCheckInput, Source};
use super::model::{QuerySpec, Transport};
use super::resolv::parse_resolv_conf;
use super::wire::parse_rtype;
use crate::cluster::{ClusterState, IntOrString, Service};
use crate::finding::Finding;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kubelet config lives under a node root.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Where kdiag looks for the CoreDNS Corefile under a node root (the mounted ConfigMap).
pub const COREFILE: &str = "etc/coredns/Corefile";

/// A client that looks a name up through the pod resolv.conf kubelet would give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    /// The name as typed.
    pub name: String,
    /// The client's namespace.
    pub namespace: String,
}

/// What to diagnose.
#[derive(Debug, Clone)]
pub struct DiagnoseInput<'a> {
    /// The cluster state, when known (`--cluster-state` or the API).
    pub cluster: Option<&'a ClusterState>,
    /// The node root (`/`, or `/host` in the DaemonSet), when the node's files are readable.
    pub root: Option<&'a Path>,
    /// The client lookup to reproduce.
    pub client: Option<ClientSpec>,
    /// An external name to test forwarding with.
    pub external_name: String,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Thresholds.
    pub budget: Budget,
    /// Use this server instead of the cluster DNS VIP.
    pub server: Option<SocketAddr>,
    /// Capture packets to count loop probes (needs CAP_NET_RAW; falls back when denied).
    pub capture: bool,
}

/// Why the diagnosis could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagnoseError {
    /// A node file is unreadable or malformed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Nothing says where cluster DNS is.
    #[error("cannot tell where cluster DNS is: give --server, --cluster-state or --root")]
    NoServer,
}

/// The diagnosis: findings and the observations behind them.
#[derive(Debug, Clone, Serialize)]
pub struct DnsDiagnosis {
    /// Findings (unsorted).
    pub findings: Vec<Finding>,
    /// What was observed.
    pub observations: DnsObservations,
    /// The forwarding-loop check.
    pub loops: Option<LoopCheck>,
}

/// The CoreDNS container logs kubelet keeps under the node root
/// (`var/log/pods/kube-system_coredns-*/coredns/*.log`), newest restart last.
pub fn coredns_logs(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("var/log/pods")) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = pods
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kube-system_coredns"))
        })
        .collect();
    dirs.sort();
    for d in dirs {
        let Ok(files) = std::fs::read_dir(d.join("coredns")) else {
            continue;
        };
        let mut files: Vec<PathBuf> = files.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.into_iter().rev().take(3) {
            if let Ok(bytes) = std::fs::read(&f) {
                let rel = f.strip_prefix(root).unwrap_or(&f).display().to_string();
                out.push(Source {
                    name: format!("/{rel}"),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        }
    }
    out
}

/// Adds the loop findings. A weak (signature-only) loop verdict next to an upstream failure
/// cannot be told apart from it: it becomes evidence on the upstream failure instead.
fn merge_loop_findings(findings: &mut Vec<Finding>, loops: Vec<Finding>) {
    use crate::finding::{Code, Severity};
    // A proven loop for the root zone explains failing external names: fold them in.
    let root_loop = loops.iter().any(|f| {
        f.code == Code::DnsLoop
            && f.severity == Severity::Critical
            && f.summary.contains("zone \".\"")
    });
    let mut folded = Vec::new();
    if root_loop {
        findings.retain(|f| {
            if f.code == Code::DnsUpstreamFailure {
                folded.push(crate::finding::Evidence::new(
                    "consequence",
                    format!("external names fail: {}", f.summary),
                ));
                false
            } else {
                true
            }
        });
    }
    for mut f in loops {
        if f.code == Code::DnsLoop && f.severity == Severity::Critical {
            f.evidence.append(&mut folded);
        }
        let weak = f.code == Code::DnsLoop && f.severity < Severity::Critical;
        if weak {
            if let Some(up) = findings
                .iter_mut()
                .find(|x| x.code == Code::DnsUpstreamFailure)
            {
                up.evidence.push(crate::finding::Evidence::new(
                    "loop check",
                    "fresh HINFO names also fail slowly: a forwarding loop looks the same without \
                     packet capture; run `kdiag loop` as root to tell them apart",
                ));
                continue;
            }
        }
        findings.push(f);
    }
}

fn read_file(root: &Path, abs: &str) -> Result<Option<(PathBuf, String)>, DiagnoseError> {
    let path = root.join(abs.trim_start_matches('/'));
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Ok(Some((path, s))),
            Err(_) => Err(DiagnoseError::File {
                path,
                message: "not UTF-8 text".into(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DiagnoseError::File {
            path,
            message: e.to_string(),
        }),
    }
}

/// The kube-dns Service: `kube-system/kube-dns`, else any Service selecting `k8s-app=kube-dns`.
fn dns_service(st: &ClusterState) -> Option<&Service> {
    st.service("kube-system", "kube-dns").or_else(|| {
        st.services.iter().find(|s| {
            s.spec
                .selector
                .as_ref()
                .and_then(|sel| sel.get("k8s-app"))
                .is_some_and(|v| v == "kube-dns")
        })
    })
}

fn service_view(st: &ClusterState) -> (DnsServiceView, u16, Vec<(String, SocketAddr)>) {
    let Some(svc) = dns_service(st) else {
        return (
            DnsServiceView {
                name: "kube-system/kube-dns".into(),
                exists: false,
                vip: None,
                ready: vec![],
                not_ready: vec![],
                pods: vec![],
                has_tcp_port: false,
            },
            53,
            vec![],
        );
    };
    let dns_port = svc
        .spec
        .ports
        .iter()
        .find(|p| p.protocol == "UDP")
        .or_else(|| svc.spec.ports.first())
        .map(|p| p.port)
        .unwrap_or(53);
    let udp_port = svc.spec.ports.iter().find(|p| p.protocol == "UDP");
    let target = match udp_port.and_then(|p| p.target_port.clone()) {
        Some(IntOrString::Int(n)) => u16::try_from(n).ok(),
        _ => None,
    };
    let has_tcp_port = svc
        .spec
        .ports
        .iter()
        .any(|p| p.protocol == "TCP" && p.port == dns_port);
    let ns = &svc.metadata.namespace;
    let eps = st.endpoints_of(ns, &svc.metadata.name);
    let ep_port = eps
        .and_then(|e| {
            e.subsets
                .iter()
                .flat_map(|s| s.ports.iter())
                .find(|p| p.protocol == "UDP")
                .map(|p| p.port)
        })
        .or(target)
        .unwrap_or(dns_port);
    let ips =
        |it: &mut dyn Iterator<Item = &crate::cluster::EndpointAddress>| -> Vec<(String, IpAddr)> {
            it.filter_map(|a| {
                let name = a
                    .target_ref
                    .as_ref()
                    .map(|r| format!("{ns}/{}", r.name))
                    .unwrap_or_else(|| a.ip.clone());
                a.ip.parse().ok().map(|ip| (name, ip))
            })
            .collect()
        };
    let ready = eps.map(|e| ips(&mut e.ready())).unwrap_or_default();
    let not_ready = eps.map(|e| ips(&mut e.not_ready())).unwrap_or_default();
    let selector = svc.spec.selector.clone().unwrap_or_default();
    let pods = st
        .pods
        .iter()
        .filter(|p| {
            p.metadata.namespace == *ns
                && !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })
        .map(|p| DnsPodView {
            name: format!("{}/{}", p.metadata.namespace, p.metadata.name),
            ip: p.status.pod_ip.as_deref().and_then(|s| s.parse().ok()),
            ready: p.is_ready(),
            restarts: p.restarts(),
            status: match p.waiting_reason() {
                Some(r) => format!("{}/{r}", p.status.phase.as_deref().unwrap_or("Unknown")),
                None => p.status.phase.clone().unwrap_or_else(|| "Unknown".into()),
            },
        })
        .collect();
    let targets = ready
        .iter()
        .chain(not_ready.iter())
        .map(|(n, ip)| (n.clone(), SocketAddr::new(*ip, ep_port)))
        .collect();
    (
        DnsServiceView {
            name: format!("{ns}/{}", svc.metadata.name),
            exists: true,
            vip: svc.cluster_ip(),
            ready: ready.iter().map(|(_, ip)| *ip).collect(),
            not_ready: not_ready.iter().map(|(_, ip)| *ip).collect(),
            pods,
            has_tcp_port,
        },
        dns_port,
        targets,
    )
}

fn spec(server: SocketAddr, name: &str, rtype: &str, edns: bool, timeout: Duration) -> QuerySpec {
    QuerySpec {
        server,
        name: name.to_string(),
        rtype: rtype.to_string(),
        transport: Transport::Udp,
        edns,
        tcp_fallback: true,
        timeout,
    }
}

/// Runs the cluster DNS diagnosis.
pub fn diagnose(input: &DiagnoseInput<'_>) -> Result<DnsDiagnosis, DiagnoseError> {
    let mut obs = DnsObservations {
        zone: "cluster.local".into(),
        ..DnsObservations::default()
    };
    let mut kubelet: Option<KubeletDnsConfig> = None;
    let mut host_search: Vec<String> = Vec::new();
    let mut corefile: Option<Source> = None;
    let mut resolv_for_coredns: Vec<(String, Source)> = Vec::new();
    let mut logs: Vec<Source> = Vec::new();
    let mut cluster_owned: Vec<IpAddr> = Vec::new();
    if let Some(root) = input.root {
        if let Some((path, text)) = read_file(root, KUBELET_CONFIG)? {
            let cfg = KubeletDnsConfig::parse(&text).map_err(|e| DiagnoseError::File {
                path,
                message: e.to_string(),
            })?;
            obs.zone = cfg.cluster_domain.trim_end_matches('.').to_string();
            if let Some((path, text)) = read_file(root, &cfg.resolv_conf)? {
                let conf = parse_resolv_conf(&text).map_err(|e| DiagnoseError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                for ns in &conf.nameservers {
                    obs.upstreams.push(UpstreamRef {
                        source: format!("{}:{}", cfg.resolv_conf, ns.line),
                        role: "kubelet resolvConf (what CoreDNS forwards to)".into(),
                        addr: ns.addr,
                    });
                }
                host_search = conf.search.clone();
                // Inside the CoreDNS pod (dnsPolicy: Default) this file is /etc/resolv.conf.
                resolv_for_coredns.push((
                    "/etc/resolv.conf".into(),
                    Source {
                        name: cfg.resolv_conf.clone(),
                        text,
                    },
                ));
            }
            kubelet = Some(cfg);
        }
        if let Some((path, text)) = read_file(root, COREFILE)? {
            corefile = Some(Source {
                name: format!("/{COREFILE}"),
                text,
            });
            let _ = path;
        }
        logs = coredns_logs(root);
    }
    let mut pod_targets = Vec::new();
    let mut vip_addr = None;
    if let Some(st) = input.cluster {
        let (view, port, targets) = service_view(st);
        vip_addr = view.vip.map(|ip| SocketAddr::new(ip, port));
        pod_targets = targets;
        obs.service = Some(view);
        obs.known_services = st
            .services
            .iter()
            .map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()))
            .collect();
        cluster_owned = st.owned_addresses();
    }
    let server = input
        .server
        .or(vip_addr)
        .or_else(|| {
            kubelet
                .as_ref()
                .and_then(|k| k.cluster_dns_ips().first().copied())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .ok_or(DiagnoseError::NoServer)?;
    let t = input.timeout;
    let kube = format!("kubernetes.default.svc.{}.", obs.zone);
    obs.vip = Some(query(&spec(server, &kube, "A", true, t)));
    for (pod, addr) in &pod_targets {
        obs.pods
            .push((pod.clone(), query(&spec(*addr, &kube, "A", true, t))));
    }
    let ext = if input.external_name.ends_with('.') {
        input.external_name.clone()
    } else {
        format!("{}.", input.external_name)
    };
    obs.external = Some(query(&spec(server, &ext, "A", true, t)));
    if let Some(st) = input.cluster {
        // The largest headless Service: its A RRset is the likeliest to exceed 512 bytes.
        let largest = st
            .services
            .iter()
            .filter(|s| s.is_headless())
            .map(|s| {
                let n = st
                    .endpoints_of(&s.metadata.namespace, &s.metadata.name)
                    .map(|e| e.ready().count())
                    .unwrap_or(0);
                (n, s)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n);
        if let Some((_, s)) = largest {
            let name = format!(
                "{}.{}.svc.{}.",
                s.metadata.name, s.metadata.namespace, obs.zone
            );
            obs.large = Some(query(&spec(server, &name, "A", false, t)));
        }
    }
    if let Some(c) = &input.client {
        let cluster_dns = vec![server.ip()];
        let text = pod_resolv_conf(&c.namespace, &obs.zone, &cluster_dns, &host_search);
        let conf = parse_resolv_conf(&text).map_err(|e| DiagnoseError::File {
            path: PathBuf::from("(pod resolv.conf rendered from the kubelet config)"),
            message: e.to_string(),
        })?;
        let rtypes = [
            parse_rtype("A").map_err(|e| DiagnoseError::File {
                path: PathBuf::new(),
                message: e.to_string(),
            })?,
            parse_rtype("AAAA").map_err(|e| DiagnoseError::File {
                path: PathBuf::new(),
                message: e.to_string(),
            })?,
        ];
        match search(&conf, &c.name, Some(server), &rtypes, t, true) {
            Ok(s) => {
                obs.client = Some(ClientLookup {
                    asked: c.name.clone(),
                    namespace: c.namespace.clone(),
                    candidates: s.candidates,
                    queries: s.queries,
                    answered_by: s.answered_by,
                    families: rtypes.len(),
                });
            }
            Err(e) => {
                return Err(DiagnoseError::File {
                    path: PathBuf::from("(client lookup)"),
                    message: e.to_string(),
                })
            }
        }
    }
    let mut findings = analyze(&obs, &input.budget);
    // Forwarding loops: static (Corefile + the resolv.conf CoreDNS forwards to), CoreDNS logs,
    // and a few HINFO probes through the server (counted by capture when permitted).
    let mut own: Vec<IpAddr> = vec![server.ip()];
    if let Some(svc) = &obs.service {
        own.extend(svc.ready.iter().chain(svc.not_ready.iter()).copied());
        own.extend(svc.vip);
    }
    let owned_others: Vec<IpAddr> = cluster_owned
        .iter()
        .filter(|ip| !own.contains(ip))
        .copied()
        .collect();
    let loops = check_loops(&LoopCheckInput {
        server: Some(server),
        corefile,
        resolv: resolv_for_coredns,
        logs,
        own,
        cluster_owned: owned_others,
        timeout: t.min(Duration::from_secs(3)),
        probes_per_zone: 2,
        capture: input.capture,
        slow: Duration::from_millis(1500),
    })
    .map_err(|e| DiagnoseError::File {
        path: PathBuf::from("(loop check)"),
        message: e.to_string(),
    })?;
    merge_loop_findings(&mut findings, loops.findings.clone());
    Ok(DnsDiagnosis {
        findings,
        observations: obs,
        loops: Some(loops),
    })
}
