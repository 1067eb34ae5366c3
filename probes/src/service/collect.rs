//! The I/O shell of the Service probes: blocking std sockets, one attempt at a time per worker,
//! a bounded number of workers and attempts. Every decision lives in [`super::analyze`].

use super::analyze::{
    analyze, CrashView, EndpointCheck, NameCheck, NodePortCheck, ServiceObservations,
};
use super::model::{backend_of, parse_http_response, truncate, Attempt, Outcome, Proto};
use super::view::{service_view, PodView, ServiceView};
use crate::cluster::ClusterState;
use crate::dns::client::query;
use crate::dns::model::{QuerySpec, Transport};
use crate::finding::Finding;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most attempts one `run` makes.
pub const MAX_ATTEMPTS: usize = 1000;
/// Most concurrent attempts.
pub const MAX_CONCURRENCY: usize = 16;
/// How long a TCP attempt waits for a banner after its half-close.
const BANNER_WAIT: Duration = Duration::from_secs(1);

/// What one attempt does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeKind {
    /// Connect, half-close, read what comes back until the peer closes.
    Tcp,
    /// Send one datagram, wait for one.
    Udp,
    /// `GET path HTTP/1.0`, read the response.
    Http {
        /// Request path.
        path: String,
    },
}

/// One thing to probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Where.
    pub addr: SocketAddr,
    /// How.
    pub kind: ProbeKind,
}

impl Probe {
    /// The protocol on the wire.
    pub fn proto(&self) -> Proto {
        match self.kind {
            ProbeKind::Udp => Proto::Udp,
            _ => Proto::Tcp,
        }
    }
}

fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Outcome::Unreachable,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Outcome::Reset,
        _ => Outcome::Error {
            message: e.to_string(),
        },
    }
}

fn read_all(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, Outcome> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(buf);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| classify(&e))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * 1024 {
                    return Ok(buf);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(&e)),
        }
    }
}

/// Makes one attempt. `known` names backends (pod names) to look for in replies.
pub fn attempt(probe: &Probe, timeout: Duration, known: &[String]) -> Attempt {
    let timeout = timeout.max(Duration::from_millis(1));
    let start = Instant::now();
    let outcome = match &probe.kind {
        ProbeKind::Tcp => tcp(probe.addr, timeout, None),
        ProbeKind::Http { path } => tcp(probe.addr, timeout, Some(path)),
        ProbeKind::Udp => udp(probe.addr, timeout),
    };
    let backend = match &outcome {
        Outcome::Answered { reply, .. } => backend_of(reply, known),
        _ => None,
    };
    Attempt {
        addr: probe.addr,
        outcome,
        latency: start.elapsed(),
        backend,
    }
}

fn tcp(addr: SocketAddr, timeout: Duration, http_path: Option<&str>) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return classify(&e),
    };
    let _ = stream.set_nodelay(true);
    let read_deadline = match http_path {
        Some(path) => {
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kdiag-reach\r\nConnection: close\r\n\r\n"
            );
            if let Err(e) = stream
                .set_write_timeout(Some(timeout))
                .and_then(|_| stream.write_all(req.as_bytes()))
            {
                return classify(&e);
            }
            deadline
        }
        None => {
            // A half-close asks the peer to say what it has to say and close: servers with a
            // banner send it, serve_hostname sends its name, HTTP servers just close.
            if let Err(e) = stream.shutdown(Shutdown::Write) {
                return classify(&e);
            }
            deadline.min(Instant::now() + BANNER_WAIT)
        }
    };
    match read_all(&mut stream, read_deadline) {
        Err(o) => o,
        Ok(bytes) if bytes.is_empty() => {
            if http_path.is_some() {
                Outcome::Error {
                    message: "connected, but the connection closed without an HTTP response".into(),
                }
            } else {
                Outcome::Connected
            }
        }
        Ok(bytes) => match http_path.and_then(|_| parse_http_response(&bytes)) {
            Some((status, body)) => Outcome::Answered {
                status: Some(status),
                reply: body,
            },
            None => Outcome::Answered {
                status: None,
                reply: truncate(&String::from_utf8_lossy(&bytes)),
            },
        },
    }
}

fn udp(addr: SocketAddr, timeout: Duration) -> Outcome {
    let bind: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let run = || -> io::Result<Vec<u8>> {
        let sock = UdpSocket::bind(bind)?;
        // Connected: an ICMP port unreachable comes back as ECONNREFUSED.
        sock.connect(addr)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(b"kdiag reach\n")?;
        let mut buf = vec![0u8; 65_535];
        let n = sock.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    };
    match run() {
        Ok(b) => Outcome::Answered {
            status: None,
            reply: truncate(&String::from_utf8_lossy(&b)),
        },
        Err(e) => classify(&e),
    }
}

/// Makes `n` attempts (capped at [`MAX_ATTEMPTS`]) with at most `concurrency` in flight
/// (capped at [`MAX_CONCURRENCY`]), each on a fresh connection. Results are in start order.
pub fn run(
    probe: &Probe,
    n: usize,
    concurrency: usize,
    timeout: Duration,
    known: &[String],
) -> Vec<Attempt> {
    let n = n.min(MAX_ATTEMPTS);
    let workers = concurrency.clamp(1, MAX_CONCURRENCY).min(n.max(1));
    if workers == 1 {
        return (0..n).map(|_| attempt(probe, timeout, known)).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Attempt>>> = Mutex::new(vec![None; n]);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let a = attempt(probe, timeout, known);
                slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(a);
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// What the Service diagnosis probes.
#[derive(Debug, Clone)]
pub struct ServiceDiagnoseInput<'a> {
    /// The cluster state.
    pub cluster: &'a ClusterState,
    /// Services to diagnose as (namespace, name); empty = every Service with a selector and
    /// a TCP port, except kube-dns (the DNS probe diagnoses it).
    pub services: Vec<(String, String)>,
    /// The node root, for the pods' log files (`var/log/pods`).
    pub root: Option<&'a Path>,
    /// Cluster DNS, to check that each Service name resolves.
    pub dns_server: Option<SocketAddr>,
    /// Cluster domain.
    pub zone: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts through each ClusterIP.
    pub vip_attempts: usize,
    /// Attempts on each node's NodePort.
    pub nodeport_attempts: usize,
    /// Most Services probed; the rest are listed in the notes.
    pub max_services: usize,
    /// Most endpoints probed directly per Service.
    pub max_endpoints: usize,
}

/// The Service diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDiagnosis {
    /// Findings (unsorted).
    pub findings: Vec<Finding>,
    /// Per-Service observations.
    pub services: Vec<ServiceObservations>,
    /// Crash-looping pods.
    pub crashes: Vec<CrashView>,
    /// Services that do not exist, or were not probed (and why).
    pub notes: Vec<String>,
}

fn kind_for(view: &ServiceView) -> ProbeKind {
    let http = view.port.as_ref().is_some_and(|p| {
        p.name
            .as_deref()
            .is_some_and(|n| n == "http" || n.starts_with("http-"))
            || p.target == "http"
    });
    if http {
        ProbeKind::Http { path: "/".into() }
    } else {
        ProbeKind::Tcp
    }
}

fn is_dns_service(st: &ClusterState, ns: &str, name: &str) -> bool {
    st.service(ns, name).is_some_and(|s| {
        (ns == "kube-system" && name == "kube-dns")
            || s.spec
                .selector
                .as_ref()
                .and_then(|sel| sel.get("k8s-app"))
                .is_some_and(|v| v == "kube-dns")
    })
}

/// The Services the diagnosis looks at by default.
pub fn default_services(st: &ClusterState) -> Vec<(String, String)> {
    st.services
        .iter()
        .filter(|s| {
            s.spec.selector.as_ref().is_some_and(|sel| !sel.is_empty())
                && s.spec.external_name.is_none()
                && s.spec.ports.iter().any(|p| p.protocol == "TCP")
                && !is_dns_service(st, &s.metadata.namespace, &s.metadata.name)
        })
        .map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()))
        .collect()
}

fn observe(input: &ServiceDiagnoseInput<'_>, view: ServiceView) -> ServiceObservations {
    let t = input.timeout;
    let known: Vec<String> = view
        .pods
        .iter()
        .map(|p| p.name.rsplit('/').next().unwrap_or(&p.name).to_string())
        .collect();
    let kind = kind_for(&view);
    let mut obs = ServiceObservations {
        dns: None,
        direct: vec![],
        declared: vec![],
        vip: vec![],
        node_ports: vec![],
        notes: vec![],
        view,
    };
    let v = &obs.view;
    let Some(port) = v.port.clone() else {
        obs.notes.push("the Service has no port".into());
        return obs;
    };
    if port.protocol != "TCP" {
        obs.notes.push(format!(
            "port {}/{} is not probed (only TCP answers tell open from closed)",
            port.port, port.protocol
        ));
        return obs;
    }
    if let Some(server) = input.dns_server {
        let name = format!(
            "{}.{}.svc.{}.",
            v.name.rsplit('/').next().unwrap_or(&v.name),
            v.namespace,
            input.zone
        );
        let q = query(&QuerySpec {
            server,
            name: name.clone(),
            rtype: "A".into(),
            transport: Transport::Udp,
            edns: true,
            tcp_fallback: true,
            timeout: t,
        });
        let answer = match q.result() {
            Ok(a) if a.rcode == "NOERROR" => Ok(a
                .answers
                .iter()
                .filter_map(|r| r.data.parse().ok())
                .collect()),
            Ok(a) => Err(a.rcode.clone()),
            Err(e) => Err(e.to_string()),
        };
        obs.dns = Some(NameCheck { name, answer });
    }
    let ready: Vec<_> = v.ready().cloned().collect();
    if ready.len() > input.max_endpoints {
        obs.notes.push(format!(
            "{} of {} ready endpoints probed directly",
            input.max_endpoints,
            ready.len()
        ));
    }
    for e in ready.iter().take(input.max_endpoints) {
        let Some(p) = e.port else { continue };
        let probe = Probe {
            addr: SocketAddr::new(e.ip, p),
            kind: kind.clone(),
        };
        obs.direct.push(EndpointCheck {
            pod: e.pod.clone(),
            node: e.node.clone(),
            attempt: attempt(&probe, t, &known),
        });
    }
    if !obs.direct.is_empty() && obs.direct.iter().all(|c| !c.attempt.outcome.reached()) {
        // Where do the pods listen, then? Their declared TCP ports, on one pod.
        if let Some(pod) = v
            .pods
            .iter()
            .find(|p| p.ip.is_some() && ready.iter().any(|e| e.pod == p.name))
        {
            let target = obs.direct[0].attempt.addr.port();
            for (_, cp, proto) in pod
                .ports
                .iter()
                .filter(|(_, cp, pr)| *cp != target && pr == "TCP")
                .take(4)
            {
                let _ = proto;
                let probe = Probe {
                    addr: SocketAddr::new(pod.ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), *cp),
                    kind: kind.clone(),
                };
                obs.declared.push(EndpointCheck {
                    pod: pod.name.clone(),
                    node: pod.node.clone(),
                    attempt: attempt(&probe, t, &known),
                });
            }
        }
    }
    if let Some(ip) = v.cluster_ip {
        let probe = Probe {
            addr: SocketAddr::new(ip, port.port),
            kind: kind.clone(),
        };
        obs.vip = run(&probe, input.vip_attempts, 1, t, &known);
    }
    if let Some(np) = port.node_port {
        for (node, ip) in &v.nodes {
            let probe = Probe {
                addr: SocketAddr::new(*ip, np),
                kind: kind.clone(),
            };
            let local = ready
                .iter()
                .filter(|e| e.node.as_deref() == Some(node))
                .count();
            obs.node_ports.push(NodePortCheck {
                node: node.clone(),
                local_endpoints: local,
                attempts: run(&probe, input.nodeport_attempts, 1, t, &known),
            });
        }
    }
    obs
}

/// The last lines of a pod's previous container log under `root/var/log/pods`, and the file.
fn pod_logs(root: &Path, pod: &PodView) -> Option<(Vec<String>, String)> {
    let (ns, name) = pod.name.split_once('/')?;
    let base = root.join("var/log/pods");
    let prefix = format!("{ns}_{name}_");
    let dir = std::fs::read_dir(&base)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?
        .path();
    // One directory per container; files are <restartCount>.log: the highest is the latest.
    let mut best: Option<(u32, std::path::PathBuf)> = None;
    for c in std::fs::read_dir(&dir).ok()?.flatten() {
        for f in std::fs::read_dir(c.path()).ok()?.flatten() {
            let fname = f.file_name().to_string_lossy().to_string();
            if let Some(n) = fname
                .strip_suffix(".log")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if best.as_ref().is_none_or(|(b, _)| n > *b) {
                    best = Some((n, f.path()));
                }
            }
        }
    }
    let (_, path) = best?;
    let bytes = std::fs::read(&path).ok()?;
    let start = bytes.len().saturating_sub(16 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let rel = path.strip_prefix(root).unwrap_or(&path);
    Some((
        super::analyze::parse_cri_log(&text, 5),
        format!("/{}", rel.display()),
    ))
}

/// Crash-looping pods, except those behind the cluster DNS Service (the DNS probe reports them).
fn crashes(input: &ServiceDiagnoseInput<'_>) -> Vec<CrashView> {
    let st = input.cluster;
    let dns_selectors: Vec<(String, std::collections::BTreeMap<String, String>)> = st
        .services
        .iter()
        .filter(|s| is_dns_service(st, &s.metadata.namespace, &s.metadata.name))
        .filter_map(|s| {
            s.spec
                .selector
                .clone()
                .map(|sel| (s.metadata.namespace.clone(), sel))
        })
        .collect();
    st.pods
        .iter()
        .filter(|p| {
            !dns_selectors.iter().any(|(ns, sel)| {
                &p.metadata.namespace == ns
                    && !sel.is_empty()
                    && sel.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
        })
        .map(PodView::of)
        .filter(PodView::crash_looping)
        .take(20)
        .map(|pod| {
            let logs = input.root.and_then(|r| pod_logs(r, &pod));
            CrashView {
                last_logs: logs.as_ref().map(|l| l.0.clone()).unwrap_or_default(),
                log_source: logs.map(|l| l.1),
                pod,
            }
        })
        .collect()
}

/// Runs the Service diagnosis: for each Service, in the order of the "Debug Services"
/// write-up — defined right, name resolves, endpoints, endpoints answer on targetPort, VIP
/// answers, each node's NodePort answers — then the crash-looping pods, then the rules.
pub fn diagnose_services(input: &ServiceDiagnoseInput<'_>) -> ServiceDiagnosis {
    let st = input.cluster;
    let wanted = if input.services.is_empty() {
        default_services(st)
    } else {
        input.services.clone()
    };
    let mut notes = Vec::new();
    if wanted.len() > input.max_services {
        notes.push(format!(
            "{} of {} Services probed (raise --max-services for more)",
            input.max_services,
            wanted.len()
        ));
    }
    let mut services = Vec::new();
    for (ns, name) in wanted.iter().take(input.max_services) {
        let Some(svc) = st.service(ns, name) else {
            notes.push(format!("service {ns}/{name} is not in the cluster state"));
            continue;
        };
        let port = svc
            .spec
            .ports
            .iter()
            .find(|p| p.protocol == "TCP")
            .map(|p| super::model::PortRef::Number(p.port));
        if let Some(view) = service_view(st, ns, name, port.as_ref()) {
            services.push(observe(input, view));
        }
    }
    let crashes = crashes(input);
    let findings = analyze(&services, &crashes);
    ServiceDiagnosis {
        findings,
        services,
        crashes,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tcp_attempts_classify_refused_banner_and_http() {
        // a closed port: refused at once
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let a = attempt(
            &Probe {
                addr: closed_addr,
                kind: ProbeKind::Tcp,
            },
            Duration::from_secs(2),
            &[],
        );
        assert_eq!(a.outcome, Outcome::Refused);
        // a serve_hostname-like server
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    s.write_all(b"pod-a\n").unwrap();
                } else {
                    s.write_all(b"HTTP/1.0 200 OK\r\n\r\npod-a\n").unwrap();
                }
            }
        });
        let a = attempt(
            &Probe {
                addr,
                kind: ProbeKind::Tcp,
            },
            Duration::from_secs(2),
            &[],
        );
        assert_eq!(a.backend.as_deref(), Some("pod-a"));
        assert!(matches!(a.outcome, Outcome::Answered { status: None, .. }));
        let a = attempt(
            &Probe {
                addr,
                kind: ProbeKind::Http { path: "/".into() },
            },
            Duration::from_secs(2),
            &[],
        );
        assert_eq!(
            a.outcome,
            Outcome::Answered {
                status: Some(200),
                reply: "pod-a\n".into()
            }
        );
        h.join().unwrap();
    }

    #[test]
    fn run_is_bounded_and_ordered() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let p = Probe {
            addr,
            kind: ProbeKind::Tcp,
        };
        let v = run(&p, 7, 3, Duration::from_secs(1), &[]);
        assert_eq!(v.len(), 7);
        assert!(v.iter().all(|a| a.outcome == Outcome::Refused));
        assert_eq!(
            run(&p, 5000, 64, Duration::from_secs(1), &[]).len(),
            MAX_ATTEMPTS
        );
    }

    #[test]
    fn udp_refused_is_seen() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        drop(s);
        let a = attempt(
            &Probe {
                addr,
                kind: ProbeKind::Udp,
            },
            Duration::from_secs(1),
            &[],
        );
        assert_eq!(a.outcome, Outcome::Refused);
    }
}
