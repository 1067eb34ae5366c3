//! The embedded backend's DNS: a CoreDNS look-alike answering the cluster zone from the
//! cluster model, the "internet" resolver it forwards to, and a small server runner.
//!
//! [`CoreDns`] behaves like CoreDNS with the kubeadm Corefile (`kubernetes cluster.local
//! in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa; ttl 30 }` and
//! `forward . <upstream>`), reading the cluster and its faults from shared locks on every
//! query. [`Upstream`] is a tiny static recursive-resolver stand-in. [`serve`] runs either on
//! a UDP (and optionally TCP) socket.
//!
//! It never sends a packet anywhere but the configured upstream address, and it never panics
//! on a packet: every request-derived value is checked.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::model::{Cluster, Endpoint, Service};

/// The schema version CoreDNS reports at `dns-version.<zone>`.
const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// TTL CoreDNS gives the `dns-version` TXT record.
const DNS_VERSION_TTL: u32 = 28_800;
/// How long an idle TCP client connection is kept open by [`serve`].
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the embedded CoreDNS is configured (the parts of the Corefile it models).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreDnsConfig {
    /// The cluster domain served by the `kubernetes` plugin, e.g. `cluster.local`.
    pub zone: String,
    /// TTL of cluster answers and SOA minimum (`ttl 30` in the kubeadm Corefile).
    pub ttl: u32,
    /// Where `forward .` sends everything outside the cluster zones.
    pub upstream: SocketAddr,
    /// Per-attempt upstream read timeout (CoreDNS forward: 2 s).
    pub forward_timeout: Duration,
    /// Whether cluster answers carry RA=1 (modern CoreDNS: no).
    pub recursion_available: bool,
    /// Extra server blocks `ZONE { forward . TARGET }`: names under ZONE (fully qualified,
    /// lowercase) go to TARGET instead of `upstream`. Longest zone wins.
    pub zone_forwards: Vec<(String, SocketAddr)>,
    /// forward's `max_concurrent`: queries beyond this many in flight get REFUSED.
    pub max_concurrent: usize,
}

/// CoreDNS's `loop` plugin state: armed with the start-up probe name, it counts the name's
/// arrivals; the third arrival is fatal (CoreDNS logs and exits).
#[derive(Debug, Default)]
pub struct LoopPlugin {
    qname: Option<String>,
    seen: u32,
    fatal: Option<String>,
}

impl LoopPlugin {
    /// Arms the check with the probe name (`<u62>.<u62>.<zone>`).
    pub fn arm(&mut self, qname: &str) {
        self.qname = Some(qname.to_ascii_lowercase());
        self.seen = 0;
        self.fatal = None;
    }

    /// Disables the check (after the first successful exchange, like CoreDNS).
    pub fn disarm(&mut self) {
        self.qname = None;
    }

    /// The `[FATAL] plugin/loop: ...` line, once a loop was detected.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }
}

/// Faults the lab can switch on in the embedded CoreDNS at any time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreDnsFaults {
    /// SERVFAIL for every name in the kubernetes plugin's zones, like CoreDNS before its
    /// informers sync or without RBAC. Forwarded names still work.
    pub unsynced: bool,
    /// Added before every answer.
    pub delay: Duration,
    /// Every UDP answer is empty with TC=1; TCP answers are unaffected.
    pub truncate_udp: bool,
}

/// What the embedded upstream resolver does with queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamMode {
    /// Answer from the static zone.
    #[default]
    Healthy,
    /// Answer SERVFAIL to everything.
    ServFail,
    /// Never answer.
    Timeout,
    /// Forward every query to this address (e.g. back to the cluster DNS: a two-server loop).
    Forward(SocketAddr),
    /// Answer REFUSED to HINFO queries (many resolvers do); everything else as Healthy.
    RefuseHinfo,
    /// Drop HINFO queries silently (some firewalls and resolvers do); everything else as Healthy.
    DropHinfo,
}

/// Why a forwarded query got no usable answer (CoreDNS then answers SERVFAIL).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The upstream did not answer within the read timeout.
    #[error("failed to get an answer from {upstream}: i/o timeout after {timeout:?}")]
    Timeout {
        /// The upstream address.
        upstream: SocketAddr,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// A socket error (e.g. connection refused).
    #[error("failed to exchange with {upstream}: {source}")]
    Io {
        /// The upstream address.
        upstream: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The query could not be encoded or the answer decoded.
    #[error("failed to encode or decode a message for {upstream}: {detail}")]
    Codec {
        /// The upstream address.
        upstream: SocketAddr,
        /// What went wrong.
        detail: String,
    },
}

/// A CoreDNS look-alike: the `kubernetes` plugin over the cluster model plus `forward .`.
#[derive(Debug, Clone)]
pub struct CoreDns {
    config: CoreDnsConfig,
    zone: Vec<String>,
    cluster: Arc<RwLock<Cluster>>,
    faults: Arc<RwLock<CoreDnsFaults>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    loop_plugin: Arc<std::sync::Mutex<LoopPlugin>>,
}

/// The outcome of looking a name up in the kubernetes plugin's zones.
#[derive(Debug, PartialEq)]
enum Lookup {
    /// Not ours (outside the zones, or a reverse name without a match): forward it.
    Forward,
    /// An authoritative answer.
    Answer {
        rcode: ResponseCode,
        answers: Vec<Record>,
        additionals: Vec<Record>,
        /// NODATA / NXDOMAIN carry the zone's SOA in the authority section.
        soa: bool,
    },
}

impl Lookup {
    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        if answers.is_empty() {
            return Self::nodata();
        }
        Lookup::Answer {
            rcode: ResponseCode::NoError,
            answers,
            additionals,
            soa: false,
        }
    }
    fn nodata() -> Self {
        Lookup::Answer {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: true,
        }
    }
    fn nxdomain() -> Self {
        Lookup::Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: true,
        }
    }
}

/// Lowercased labels of `name`, most specific first.
fn labels_of(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

/// `labels` minus the trailing `suffix` labels, if `labels` ends with them.
fn strip_suffix<'a>(labels: &'a [String], suffix: &[String]) -> Option<&'a [String]> {
    let n = labels.len().checked_sub(suffix.len())?;
    (labels[n..] == *suffix).then_some(&labels[..n])
}

fn dotted(labels: &[&str]) -> Option<Name> {
    let mut s = labels.join(".");
    s.push('.');
    Name::from_ascii(&s).ok()
}

fn a_record(name: &Name, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::A(A(ip)))
}

/// The CoreDNS endpoint name: the hostname, else the dashed IP.
fn endpoint_name(ep: &Endpoint) -> String {
    match &ep.hostname {
        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => ep.ip.to_string().replace('.', "-"),
    }
}

/// Parses `a-b-c-d` into an IPv4 address.
fn dashed_ipv4(label: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = label.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (slot, p) in o.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(o))
}

impl CoreDns {
    /// A CoreDNS serving `config.zone` from `cluster`, with faults read from `faults`.
    pub fn new(
        config: CoreDnsConfig,
        cluster: Arc<RwLock<Cluster>>,
        faults: Arc<RwLock<CoreDnsFaults>>,
    ) -> Self {
        let zone = config
            .zone
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        CoreDns {
            config,
            zone,
            cluster,
            faults,
            in_flight: Arc::default(),
            loop_plugin: Arc::default(),
        }
    }

    /// The loop plugin's state, shared with the server this handler is moved into.
    pub fn loop_plugin(&self) -> Arc<std::sync::Mutex<LoopPlugin>> {
        self.loop_plugin.clone()
    }

    /// Where `forward` sends `labels`: the longest matching extra zone, else `upstream`.
    fn forward_target(&self, labels: &[String]) -> SocketAddr {
        let name = format!("{}.", labels.join(".")).to_ascii_lowercase();
        self.config
            .zone_forwards
            .iter()
            .filter(|(zone, _)| {
                let z = zone.trim_end_matches('.');
                name == format!("{z}.") || name.ends_with(&format!(".{z}."))
            })
            .max_by_key(|(zone, _)| zone.len())
            .map(|(_, t)| *t)
            .unwrap_or(self.config.upstream)
    }

    /// Counts an arrival of the loop plugin's probe; returns the fatal log line on the third.
    fn loop_check(&self, request: &Request, name: &str, qtype: RecordType) -> Option<String> {
        if qtype != RecordType::HINFO {
            return None;
        }
        let mut lp = self.loop_plugin.lock().unwrap_or_else(|e| e.into_inner());
        if lp.fatal.is_some() {
            return lp.fatal.clone();
        }
        if lp.qname.as_deref() != Some(name.to_ascii_lowercase().as_str()) {
            return None;
        }
        lp.seen += 1;
        if lp.seen > 2 {
            let line = format!(
                "[FATAL] plugin/loop: Loop ({} -> :{}) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {}\"",
                request.src(),
                self.config.upstream.port(),
                name
            );
            tracing::info!("{line}");
            lp.fatal = Some(line.clone());
            return Some(line);
        }
        None
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &CoreDnsConfig {
        &self.config
    }

    fn faults(&self) -> CoreDnsFaults {
        match self.faults.read() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn zone_name(&self, prefix: &[&str]) -> Option<Name> {
        let mut all: Vec<&str> = prefix.to_vec();
        all.extend(self.zone.iter().map(String::as_str));
        dotted(&all)
    }

    fn soa(&self) -> Option<Record> {
        let zone = self.zone_name(&[])?;
        let mname = self.zone_name(&["ns", "dns"])?;
        let rname = self.zone_name(&["hostmaster"])?;
        let ttl = self.config.ttl;
        Some(Record::from_rdata(
            zone,
            ttl,
            RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, ttl)),
        ))
    }

    /// True when `labels` fall in one of the kubernetes plugin's zones.
    fn in_plugin_zones(&self, labels: &[String]) -> bool {
        strip_suffix(labels, &self.zone).is_some() || reverse_zone(labels).is_some()
    }

    /// The kubernetes plugin's answer for `labels`/`qtype`, from `cluster`.
    fn lookup(&self, cluster: &Cluster, labels: &[String], qtype: RecordType) -> Lookup {
        if let Some(rev) = reverse_zone(labels) {
            return self.lookup_reverse(cluster, rev, qtype);
        }
        let Some(rel) = strip_suffix(labels, &self.zone) else {
            return Lookup::Forward;
        };
        let ttl = self.config.ttl;
        let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
        let Some(qname) = self.zone_name(&rel) else {
            return Lookup::nxdomain();
        };
        match rel.as_slice() {
            [] => match qtype {
                RecordType::SOA => match self.soa() {
                    Some(soa) => Lookup::records(vec![soa], Vec::new()),
                    None => Lookup::nodata(),
                },
                RecordType::NS => {
                    let Some(ns) = self.zone_name(&["ns", "dns"]) else {
                        return Lookup::nodata();
                    };
                    let glue = self
                        .nameserver_ips(cluster)
                        .into_iter()
                        .map(|ip| a_record(&ns, ttl, ip))
                        .collect();
                    let rec = Record::from_rdata(qname, ttl, RData::NS(NS(ns)));
                    Lookup::records(vec![rec], glue)
                }
                _ => Lookup::nodata(),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT => Lookup::records(
                    vec![Record::from_rdata(
                        qname,
                        DNS_VERSION_TTL,
                        RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_string()])),
                    )],
                    Vec::new(),
                ),
                _ => Lookup::nodata(),
            },
            ["ns", "dns"] => match qtype {
                RecordType::A => Lookup::records(
                    self.nameserver_ips(cluster)
                        .into_iter()
                        .map(|ip| a_record(&qname, ttl, ip))
                        .collect(),
                    Vec::new(),
                ),
                _ => Lookup::nodata(),
            },
            ["svc"] | ["pod"] => Lookup::nodata(),
            [ns, "svc"] | [ns, "pod"] => {
                if namespace_exists(cluster, ns) {
                    Lookup::nodata()
                } else {
                    Lookup::nxdomain()
                }
            }
            [pod, _ns, "pod"] => match dashed_ipv4(pod) {
                // pods insecure: any dashed IPv4 answers, without looking at the cluster.
                Some(ip) if qtype == RecordType::A => {
                    Lookup::records(vec![a_record(&qname, ttl, ip)], Vec::new())
                }
                Some(_) => Lookup::nodata(),
                None => Lookup::nxdomain(),
            },
            [svc, ns, "svc"] => match find_service(cluster, ns, svc) {
                Some(s) => self.service_records(cluster, s, &qname, qtype, None),
                None => Lookup::nxdomain(),
            },
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                match find_service(cluster, ns, svc) {
                    Some(s) => self.service_records(
                        cluster,
                        s,
                        &qname,
                        qtype,
                        Some((&port[1..], &proto[1..])),
                    ),
                    None => Lookup::nxdomain(),
                }
            }
            [ep, svc, ns, "svc"] => match find_service(cluster, ns, svc) {
                Some(s) if s.is_headless() => {
                    let ips: BTreeSet<Ipv4Addr> = serving_endpoints(cluster, s)
                        .iter()
                        .filter(|e| endpoint_name(e) == *ep)
                        .map(|e| e.ip)
                        .collect();
                    if ips.is_empty() {
                        Lookup::nxdomain()
                    } else if qtype == RecordType::A {
                        let answers = ips.into_iter().map(|ip| a_record(&qname, ttl, ip));
                        Lookup::records(answers.collect(), Vec::new())
                    } else {
                        Lookup::nodata()
                    }
                }
                _ => Lookup::nxdomain(),
            },
            _ => Lookup::nxdomain(),
        }
    }

    /// IPs of the nameserver (`ns.dns.<zone>`): the kube-dns Service's ClusterIP.
    fn nameserver_ips(&self, cluster: &Cluster) -> Vec<Ipv4Addr> {
        find_service(cluster, "kube-system", "kube-dns")
            .and_then(|s| s.cluster_ip)
            .into_iter()
            .collect()
    }

    /// Records of a Service name, or of one of its `_port._proto` SRV names.
    fn service_records(
        &self,
        cluster: &Cluster,
        svc: &Service,
        qname: &Name,
        qtype: RecordType,
        port: Option<(&str, &str)>,
    ) -> Lookup {
        let ttl = self.config.ttl;
        if let Some(ext) = &svc.external_name {
            let Ok(target) = Name::from_ascii(format!("{}.", ext.trim_end_matches('.'))) else {
                return Lookup::nodata();
            };
            if port.is_some() || qtype == RecordType::SRV {
                return Lookup::nodata();
            }
            let cname = Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target)));
            return Lookup::records(vec![cname], Vec::new());
        }
        // Does the `_port._proto` name match a named Service port?
        let matches = |name: &Option<String>, proto: &str| match port {
            None => true,
            Some((p, pr)) => {
                name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(p))
                    && proto.eq_ignore_ascii_case(pr)
            }
        };
        let Some(svc_name) = self.zone_name(&[&svc.name, &svc.namespace, "svc"]) else {
            return Lookup::nxdomain();
        };
        if let Some(ip) = svc.cluster_ip {
            let ports: Vec<u16> = svc
                .ports
                .iter()
                .filter(|p| matches(&p.name, &p.protocol))
                .map(|p| p.port)
                .collect();
            if port.is_some() && ports.is_empty() {
                return Lookup::nxdomain();
            }
            return match (qtype, port) {
                (RecordType::A, None) => {
                    Lookup::records(vec![a_record(qname, ttl, ip)], Vec::new())
                }
                (RecordType::SRV, _) => {
                    let weight = srv_weight(ports.len());
                    let answers = ports
                        .iter()
                        .map(|p| {
                            let srv = SRV::new(0, weight, *p, svc_name.clone());
                            Record::from_rdata(qname.clone(), ttl, RData::SRV(srv))
                        })
                        .collect();
                    Lookup::records(answers, vec![a_record(&svc_name, ttl, ip)])
                }
                _ => Lookup::nodata(),
            };
        }
        // Headless: ready endpoints only; none → NXDOMAIN.
        let eps = serving_endpoints(cluster, svc);
        if eps.is_empty() {
            return Lookup::nxdomain();
        }
        let mut srv_targets: Vec<(Name, u16, Ipv4Addr)> = Vec::new();
        for ep in &eps {
            for (name, p, proto) in &ep.ports {
                if !matches(name, proto) {
                    continue;
                }
                if let Some(target) = self.zone_name(&[
                    &endpoint_name(ep),
                    &svc.name.to_ascii_lowercase(),
                    &svc.namespace.to_ascii_lowercase(),
                    "svc",
                ]) {
                    srv_targets.push((target, *p, ep.ip));
                }
            }
        }
        if port.is_some() && srv_targets.is_empty() {
            return Lookup::nxdomain();
        }
        match (qtype, port) {
            (RecordType::A, None) => {
                let ips: BTreeSet<Ipv4Addr> = eps.iter().map(|e| e.ip).collect();
                let answers = ips.into_iter().map(|ip| a_record(qname, ttl, ip)).collect();
                Lookup::records(answers, Vec::new())
            }
            (RecordType::SRV, _) => {
                let weight = srv_weight(srv_targets.len());
                let answers = srv_targets
                    .iter()
                    .map(|(t, p, _)| {
                        let srv = SRV::new(0, weight, *p, t.clone());
                        Record::from_rdata(qname.clone(), ttl, RData::SRV(srv))
                    })
                    .collect();
                let mut seen = BTreeSet::new();
                let extra = srv_targets
                    .iter()
                    .filter(|(t, _, ip)| seen.insert((t.clone(), *ip)))
                    .map(|(t, _, ip)| a_record(t, ttl, *ip))
                    .collect();
                Lookup::records(answers, extra)
            }
            _ => Lookup::nodata(),
        }
    }

    /// PTR lookups in `in-addr.arpa` / `ip6.arpa`; no match falls through to `forward`.
    fn lookup_reverse(&self, cluster: &Cluster, rev: Reverse<'_>, qtype: RecordType) -> Lookup {
        let Reverse::V4(octets) = rev else {
            return Lookup::Forward; // the model is IPv4-only
        };
        let Some(ip) = reverse_v4(octets) else {
            return Lookup::Forward;
        };
        let ttl = self.config.ttl;
        let mut targets: Vec<Name> = Vec::new();
        for svc in &cluster.services {
            if svc.cluster_ip == Some(ip) {
                if let Some(n) = self.zone_name(&[&svc.name, &svc.namespace, "svc"]) {
                    targets.push(n);
                }
            } else if svc.is_headless() {
                for ep in serving_endpoints(cluster, svc)
                    .iter()
                    .filter(|e| e.ip == ip)
                {
                    let name = endpoint_name(ep);
                    if let Some(n) = self.zone_name(&[&name, &svc.name, &svc.namespace, "svc"]) {
                        targets.push(n);
                    }
                }
            }
        }
        if targets.is_empty() {
            return Lookup::Forward;
        }
        if qtype != RecordType::PTR {
            return Lookup::nodata();
        }
        let owner = dotted(&[
            &ip.octets()[3].to_string(),
            &ip.octets()[2].to_string(),
            &ip.octets()[1].to_string(),
            &ip.octets()[0].to_string(),
            "in-addr",
            "arpa",
        ]);
        let Some(owner) = owner else {
            return Lookup::Forward;
        };
        let answers = targets
            .into_iter()
            .map(|t| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(t.to_lowercase()))))
            .collect();
        Lookup::records(answers, Vec::new())
    }

    /// `forward .`: one exchange with the upstream over UDP, retried over TCP when the
    /// upstream truncates and the client asked over TCP.
    async fn forward(&self, request: &Request, query: &Query) -> Result<Message, ForwardError> {
        let upstream = self.forward_target(&labels_of(query.name()));
        let mut msg = Message::query();
        msg.metadata.recursion_desired = request.metadata.recursion_desired;
        msg.metadata.checking_disabled = request.metadata.checking_disabled;
        msg.queries.push(query.clone());
        if let Some(e) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(e.max_payload().max(512));
            edns.set_dnssec_ok(e.flags().dnssec_ok);
            msg.set_edns(edns);
        }
        let bytes = msg.to_vec().map_err(|e| ForwardError::Codec {
            upstream,
            detail: e.to_string(),
        })?;
        let id = msg.metadata.id;
        let timeout = self.config.forward_timeout;
        let answer = exchange_udp(upstream, &bytes, id, timeout).await?;
        if answer.metadata.truncation && request.protocol() == Protocol::Tcp {
            tracing::debug!(%upstream, "upstream truncated; retrying over tcp");
            return exchange_tcp(upstream, &bytes, id, timeout).await;
        }
        Ok(answer)
    }
}

fn srv_weight(n: usize) -> u16 {
    u16::try_from(100 / n.max(1)).unwrap_or(100)
}

fn find_service<'a>(cluster: &'a Cluster, ns: &str, name: &str) -> Option<&'a Service> {
    cluster
        .services
        .iter()
        .find(|s| s.namespace.eq_ignore_ascii_case(ns) && s.name.eq_ignore_ascii_case(name))
}

fn namespace_exists(cluster: &Cluster, ns: &str) -> bool {
    cluster
        .services
        .iter()
        .map(|s| &s.namespace)
        .chain(cluster.pods.iter().map(|p| &p.namespace))
        .any(|n| n.eq_ignore_ascii_case(ns))
}

/// Ready endpoints that serve at least one port (CoreDNS builds records per address × port,
/// so an address without ports yields nothing).
fn serving_endpoints(cluster: &Cluster, svc: &Service) -> Vec<Endpoint> {
    cluster
        .ready_endpoints(svc)
        .into_iter()
        .filter(|e| !e.ports.is_empty())
        .collect()
}

/// A name inside a reverse zone: the labels before `in-addr.arpa` / `ip6.arpa`.
enum Reverse<'a> {
    V4(&'a [String]),
    V6,
}

fn reverse_zone(labels: &[String]) -> Option<Reverse<'_>> {
    match labels {
        [rest @ .., a, b] if a == "in-addr" && b == "arpa" => Some(Reverse::V4(rest)),
        [.., a, b] if a == "ip6" && b == "arpa" => Some(Reverse::V6),
        _ => None,
    }
}

fn reverse_v4(labels: &[String]) -> Option<Ipv4Addr> {
    if labels.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, l) in labels.iter().enumerate() {
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[3 - i] = l.parse().ok()?;
    }
    Some(Ipv4Addr::from(o))
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

fn decode_answer(
    buf: &[u8],
    id: u16,
    upstream: SocketAddr,
) -> Result<Option<Message>, ForwardError> {
    let msg = Message::from_vec(buf).map_err(|e| ForwardError::Codec {
        upstream,
        detail: e.to_string(),
    })?;
    Ok((msg.metadata.id == id).then_some(msg))
}

/// One UDP exchange on a connected socket; stray or mismatched datagrams are skipped.
async fn exchange_udp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Message, ForwardError> {
    let io_err = |source| ForwardError::Io { upstream, source };
    let exchange = async {
        let sock = UdpSocket::bind(unspecified_for(upstream))
            .await
            .map_err(io_err)?;
        sock.connect(upstream).await.map_err(io_err)?;
        sock.send(query).await.map_err(io_err)?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = sock.recv(&mut buf).await.map_err(io_err)?;
            match decode_answer(&buf[..n], id, upstream) {
                Ok(Some(msg)) => return Ok(msg),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "skipping undecodable upstream datagram");
                    continue;
                }
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ForwardError::Timeout { upstream, timeout })?
}

/// One TCP exchange (2-byte length framing).
async fn exchange_tcp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Message, ForwardError> {
    let io_err = |source| ForwardError::Io { upstream, source };
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await.map_err(io_err)?;
        let len = u16::try_from(query.len()).map_err(|_| ForwardError::Codec {
            upstream,
            detail: "query longer than 65535 bytes".into(),
        })?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io_err)?;
        loop {
            let len = stream.read_u16().await.map_err(io_err)?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(io_err)?;
            if let Some(msg) = decode_answer(&buf, id, upstream)? {
                return Ok(msg);
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ForwardError::Timeout { upstream, timeout })?
}

/// The response EDNS: echo the client's, with at least 512 bytes of payload.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|e| {
        let mut r = Edns::new();
        r.set_max_payload(e.max_payload().max(512));
        r
    })
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let fallback = ResponseInfo::from(Header {
        metadata: *response.metadata(),
        counts: HeaderCounts::default(),
    });
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "failed to send dns response");
            fallback
        }
    }
}

/// FORMERR for anything but exactly one question, NOTIMP for opcodes other than QUERY
/// (what miekg/dns, under CoreDNS, does).
fn precheck(request: &Request) -> Option<ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Some(ResponseCode::NotImp);
    }
    if request.queries.queries().len() != 1 {
        return Some(ResponseCode::FormErr);
    }
    None
}

#[async_trait::async_trait]
impl RequestHandler for CoreDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let faults = self.faults();
        if !faults.delay.is_zero() {
            tokio::time::sleep(faults.delay).await;
        }
        let resp_edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = resp_edns.as_ref() {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        if let Some(rcode) = precheck(request) {
            meta.response_code = rcode;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        let Some(q) = request.queries.queries().first() else {
            meta.response_code = ResponseCode::FormErr;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        };
        let labels = labels_of(q.original().name());
        let qtype = q.query_type();
        if self
            .loop_check(request, &q.original().name().to_ascii(), qtype)
            .is_some()
        {
            // CoreDNS exits here (log.Fatalf); the lab stops this pod's server.
            meta.response_code = ResponseCode::ServFail;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        let ours = q.query_class() == DNSClass::IN && self.in_plugin_zones(&labels);
        if faults.truncate_udp && request.protocol() == Protocol::Udp {
            meta.truncation = true;
            meta.authoritative = ours;
            meta.recursion_available = self.config.recursion_available;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        if ours && faults.unsynced {
            tracing::debug!(name = %q.name(), "kubernetes plugin not synced: SERVFAIL");
            meta.response_code = ResponseCode::ServFail;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        let lookup = if ours {
            let cluster = match self.cluster.read() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            self.lookup(&cluster, &labels, qtype)
        } else {
            Lookup::Forward
        };
        match lookup {
            Lookup::Answer {
                rcode,
                answers,
                additionals,
                soa,
            } => {
                meta.authoritative = true;
                meta.recursion_available = self.config.recursion_available;
                meta.response_code = rcode;
                let soa: Vec<Record> = if soa {
                    self.soa().into_iter().collect()
                } else {
                    Vec::new()
                };
                // The encoder caps UDP at the EDNS payload (or 512) and sets TC itself.
                send(
                    &mut response_handle,
                    builder.build(meta, answers.iter(), [], soa.iter(), additionals.iter()),
                )
                .await
            }
            Lookup::Forward => {
                use std::sync::atomic::Ordering;
                let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
                if before >= self.config.max_concurrent {
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    meta.response_code = ResponseCode::Refused;
                    return send(&mut response_handle, builder.build_no_records(meta)).await;
                }
                let forwarded = self.forward(request, q.original()).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                match forwarded {
                    Ok(up) => {
                        meta.response_code = up.metadata.response_code;
                        meta.truncation = up.metadata.truncation;
                        meta.authoritative = up.metadata.authoritative;
                        meta.recursion_available = up.metadata.recursion_available;
                        meta.authentic_data = up.metadata.authentic_data;
                        send(
                            &mut response_handle,
                            builder.build(
                                meta,
                                up.answers.iter(),
                                up.authorities.iter(),
                                [],
                                up.additionals.iter(),
                            ),
                        )
                        .await
                    }
                    Err(error) => {
                        tracing::info!(
                            "[ERROR] plugin/errors: 2 {} {}: {}",
                            q.name(),
                            qtype,
                            error
                        );
                        meta.response_code = ResponseCode::ServFail;
                        send(&mut response_handle, builder.build_no_records(meta)).await
                    }
                }
            }
        }
    }
}

/// The "internet" resolver CoreDNS forwards to: a small static zone, NXDOMAIN+SOA for the
/// rest, RA=1. Its behaviour is switched through a shared [`UpstreamMode`].
#[derive(Debug, Clone)]
pub struct Upstream {
    mode: Arc<RwLock<UpstreamMode>>,
}

/// How long the upstream waits when it forwards (Forward mode).
const UPSTREAM_FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// TTL of the upstream's static records.
const UPSTREAM_TTL: u32 = 300;
/// Records in `big.kdiag.test` (A and TXT each).
const BIG_RECORDS: u8 = 40;

impl Upstream {
    /// An upstream whose behaviour follows `mode`.
    pub fn new(mode: Arc<RwLock<UpstreamMode>>) -> Self {
        Upstream { mode }
    }

    fn mode(&self) -> UpstreamMode {
        match self.mode.read() {
            Ok(m) => *m,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The deterministic `192.0.2.x` address of a name under `kdiag.test.`.
    pub fn kdiag_test_ip(name: &str) -> Ipv4Addr {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        // FNV-1a: stable across runs and platforms.
        let mut h: u32 = 0x811c_9dc5;
        for b in lower.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Ipv4Addr::new(192, 0, 2, (h % 254) as u8 + 1)
    }

    /// (rcode, answers, soa) for one question.
    fn answer(
        labels: &[String],
        qname: &Name,
        qtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Option<Record>) {
        let example = || Ipv4Addr::new(93, 184, 215, 14);
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        let a = |ip: Ipv4Addr| a_record(qname, UPSTREAM_TTL, ip);
        let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let (zone, exists, answers): (&[&str], bool, Vec<Record>) = match l.as_slice() {
            ["example", "com"] => (
                &["example", "com"],
                true,
                if want(RecordType::A) {
                    vec![a(example())]
                } else {
                    vec![]
                },
            ),
            ["www", "example", "com"] => {
                let mut v = Vec::new();
                if let Some(target) = dotted(&["example", "com"]) {
                    v.push(Record::from_rdata(
                        qname.clone(),
                        UPSTREAM_TTL,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if want(RecordType::A) {
                        v.push(a_record(&target, UPSTREAM_TTL, example()));
                    }
                }
                (&["example", "com"], true, v)
            }
            ["kubernetes", "io"] => (
                &["kubernetes", "io"],
                true,
                if want(RecordType::A) {
                    vec![a(Ipv4Addr::new(147, 75, 40, 148))]
                } else {
                    vec![]
                },
            ),
            ["kdiag", "test"] => (&["kdiag", "test"], true, vec![]),
            ["big", "kdiag", "test"] => {
                let mut v = Vec::new();
                for i in 1..=BIG_RECORDS {
                    if want(RecordType::A) {
                        v.push(a(Ipv4Addr::new(198, 51, 100, i)));
                    }
                    if want(RecordType::TXT) {
                        let txt = format!(
                            "record {i:02} of big.kdiag.test, padded to exercise truncation"
                        );
                        v.push(Record::from_rdata(
                            qname.clone(),
                            UPSTREAM_TTL,
                            RData::TXT(TXT::new(vec![txt])),
                        ));
                    }
                }
                (&["kdiag", "test"], true, v)
            }
            [.., "kdiag", "test"] => {
                let ip = Self::kdiag_test_ip(&labels.join("."));
                (
                    &["kdiag", "test"],
                    true,
                    if want(RecordType::A) {
                        vec![a(ip)]
                    } else {
                        vec![]
                    },
                )
            }
            [.., "example", "com"] => (&["example", "com"], false, vec![]),
            [.., "kubernetes", "io"] => (&["kubernetes", "io"], false, vec![]),
            _ => (&[], false, vec![]),
        };
        let rcode = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let soa = if answers.is_empty() {
            upstream_soa(zone)
        } else {
            None
        };
        (rcode, answers, soa)
    }
}

fn upstream_soa(zone: &[&str]) -> Option<Record> {
    let (owner, mname, rname) = if zone.is_empty() {
        (
            Name::root(),
            dotted(&["a", "root-servers", "net"])?,
            dotted(&["nstld", "verisign-grs", "com"])?,
        )
    } else {
        let mut ns = vec!["ns1"];
        ns.extend_from_slice(zone);
        let mut host = vec!["hostmaster"];
        host.extend_from_slice(zone);
        (dotted(zone)?, dotted(&ns)?, dotted(&host)?)
    };
    Some(Record::from_rdata(
        owner,
        UPSTREAM_TTL,
        RData::SOA(SOA::new(
            mname,
            rname,
            2_024_010_101,
            7200,
            900,
            1_209_600,
            UPSTREAM_TTL,
        )),
    ))
}

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let resp_edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = resp_edns.as_ref() {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        match self.mode() {
            UpstreamMode::Timeout => {
                // Never answer; the client times out.
                return ResponseInfo::from(Header {
                    metadata: meta,
                    counts: HeaderCounts::default(),
                });
            }
            UpstreamMode::ServFail => {
                meta.response_code = ResponseCode::ServFail;
                return send(&mut response_handle, builder.build_no_records(meta)).await;
            }
            UpstreamMode::Forward(to) => {
                if let Some(q) = request.queries.queries().first() {
                    let mut msg = Message::query();
                    msg.metadata.recursion_desired = true;
                    msg.queries.push(q.original().clone());
                    if let Ok(bytes) = msg.to_vec() {
                        let id = msg.metadata.id;
                        if let Ok(up) = exchange_udp(to, &bytes, id, UPSTREAM_FORWARD_TIMEOUT).await
                        {
                            meta.response_code = up.metadata.response_code;
                            meta.truncation = up.metadata.truncation;
                            return send(
                                &mut response_handle,
                                builder.build(
                                    meta,
                                    up.answers.iter(),
                                    up.authorities.iter(),
                                    [],
                                    up.additionals.iter(),
                                ),
                            )
                            .await;
                        }
                    }
                }
                meta.response_code = ResponseCode::ServFail;
                return send(&mut response_handle, builder.build_no_records(meta)).await;
            }
            mode @ (UpstreamMode::RefuseHinfo | UpstreamMode::DropHinfo) => {
                let hinfo = request
                    .queries
                    .queries()
                    .first()
                    .is_some_and(|q| q.query_type() == RecordType::HINFO);
                if hinfo && mode == UpstreamMode::DropHinfo {
                    return ResponseInfo::from(Header {
                        metadata: meta,
                        counts: HeaderCounts::default(),
                    });
                }
                if hinfo {
                    meta.response_code = ResponseCode::Refused;
                    return send(&mut response_handle, builder.build_no_records(meta)).await;
                }
            }
            UpstreamMode::Healthy => {}
        }
        if let Some(rcode) = precheck(request) {
            meta.response_code = rcode;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        let Some(q) = request.queries.queries().first() else {
            meta.response_code = ResponseCode::FormErr;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        };
        if q.query_class() != DNSClass::IN {
            meta.response_code = ResponseCode::Refused;
            return send(&mut response_handle, builder.build_no_records(meta)).await;
        }
        let labels = labels_of(q.original().name());
        let (rcode, answers, soa) = Self::answer(&labels, q.original().name(), q.query_type());
        meta.response_code = rcode;
        send(
            &mut response_handle,
            builder.build(meta, answers.iter(), [], soa.iter(), []),
        )
        .await
    }
}

/// The handle [`serve`] returns.
pub use super::task::TaskHandle as ServerHandle;

/// Binds UDP (and TCP on the same port when `tcp`) on `addr`, runs `handler` there, and
/// returns a handle. Port 0 picks a free port, the same one for both transports.
pub async fn serve(
    addr: SocketAddr,
    handler: impl RequestHandler,
    tcp: bool,
) -> io::Result<ServerHandle> {
    let (udp, listener) = bind_pair(addr, tcp).await?;
    let local_addr = udp.local_addr()?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    if let Some(l) = listener {
        server.register_listener(l, TCP_IDLE_TIMEOUT, 65_535);
    }
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            r = server.block_until_done() => {
                if let Err(error) = r {
                    tracing::warn!(%error, %local_addr, "dns server stopped");
                }
                return;
            }
            _ = rx => {}
        }
        if let Err(error) = server.shutdown_gracefully().await {
            tracing::debug!(%error, %local_addr, "dns server shutdown");
        }
    });
    tracing::debug!(%local_addr, tcp, "dns server listening");
    Ok(ServerHandle::new(local_addr, tx, task))
}

async fn bind_pair(addr: SocketAddr, tcp: bool) -> io::Result<(UdpSocket, Option<TcpListener>)> {
    const ATTEMPTS: usize = 16;
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let udp = UdpSocket::bind(addr).await?;
        if !tcp {
            return Ok((udp, None));
        }
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(l) => return Ok((udp, Some(l))),
            // Port 0: the UDP port may be taken for TCP; try another.
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("failed to bind udp and tcp on one port")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddressPlan, Pod, PodPort, TargetPort};
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// How a test query is sent.
    #[derive(Clone, Copy)]
    enum Via {
        Udp,
        UdpEdns(u16),
        Tcp,
    }

    /// Sends raw bytes and returns the raw reply.
    async fn raw(addr: SocketAddr, bytes: &[u8], tcp: bool) -> io::Result<Vec<u8>> {
        let ex = async {
            if tcp {
                let mut s = TcpStream::connect(addr).await?;
                let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
                s.write_all(&len.to_be_bytes()).await?;
                s.write_all(bytes).await?;
                let n = s.read_u16().await?;
                let mut buf = vec![0u8; usize::from(n)];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            } else {
                let s = UdpSocket::bind("127.0.0.1:0").await?;
                s.connect(addr).await?;
                s.send(bytes).await?;
                let mut buf = vec![0u8; 65_535];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ex)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test query timed out"))?
    }

    /// One query; returns the reply and its size on the wire.
    async fn ask(addr: SocketAddr, name: &str, qtype: RecordType, via: Via) -> (Message, usize) {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.queries
            .push(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Via::UdpEdns(size) = via {
            let mut e = Edns::new();
            e.set_max_payload(size);
            msg.set_edns(e);
        }
        let bytes = raw(addr, &msg.to_vec().unwrap(), matches!(via, Via::Tcp))
            .await
            .unwrap();
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.metadata.id, msg.metadata.id);
        (reply, bytes.len())
    }

    async fn udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
        ask(addr, name, qtype, Via::Udp).await.0
    }

    struct Lab {
        plan: AddressPlan,
        cluster: Arc<RwLock<Cluster>>,
        faults: Arc<RwLock<CoreDnsFaults>>,
        mode: Arc<RwLock<UpstreamMode>>,
        dns: ServerHandle,
        upstream: ServerHandle,
    }

    impl Lab {
        fn addr(&self) -> SocketAddr {
            self.dns.local_addr()
        }
    }

    fn config(upstream: SocketAddr) -> CoreDnsConfig {
        CoreDnsConfig {
            zone: "cluster.local".into(),
            ttl: 30,
            upstream,
            forward_timeout: Duration::from_millis(300),
            recursion_available: false,
            zone_forwards: vec![],
            max_concurrent: 100,
        }
    }

    async fn lab(slice: u8) -> Lab {
        let plan = AddressPlan { slice };
        let mode = Arc::new(RwLock::new(UpstreamMode::Healthy));
        let upstream = serve(
            SocketAddr::new(plan.upstream_ip().into(), 0),
            Upstream::new(Arc::clone(&mode)),
            true,
        )
        .await
        .unwrap();
        let cluster = Arc::new(RwLock::new(Cluster::demo(&plan, 53)));
        let faults = Arc::new(RwLock::new(CoreDnsFaults::default()));
        let core = CoreDns::new(
            config(upstream.local_addr()),
            Arc::clone(&cluster),
            Arc::clone(&faults),
        );
        let dns = serve(SocketAddr::new(plan.pod_ip(0, 2).into(), 0), core, true)
            .await
            .unwrap();
        Lab {
            plan,
            cluster,
            faults,
            mode,
            dns,
            upstream,
        }
    }

    fn ips(records: &[Record]) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn assert_soa(msg: &Message) {
        let soa = msg
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(s) => Some((r.name.to_ascii(), s.clone())),
                _ => None,
            })
            .expect("soa in authority");
        assert_eq!(soa.0, "cluster.local.");
        assert_eq!(soa.1.mname.to_ascii(), "ns.dns.cluster.local.");
        assert_eq!(soa.1.rname.to_ascii(), "hostmaster.cluster.local.");
        assert_eq!(soa.1.minimum, 30);
    }

    fn set_faults(lab: &Lab, f: CoreDnsFaults) {
        *lab.faults.write().unwrap() = f;
    }

    #[tokio::test]
    async fn clusterip_service_a_is_authoritative_with_ttl() {
        let lab = lab(100).await;
        let m = udp(
            lab.addr(),
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(!m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert_eq!(ips(&m.answers), vec![lab.plan.service_ip(1)]);
        assert_eq!(m.answers[0].ttl, 30);
        let m = udp(
            lab.addr(),
            "kube-dns.kube-system.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![lab.plan.service_ip(10)]);
    }

    #[tokio::test]
    async fn recursion_available_is_configurable() {
        let plan = AddressPlan { slice: 101 };
        let mut cfg = config(SocketAddr::from(([127, 101, 0, 2], 9)));
        cfg.recursion_available = true;
        let core = CoreDns::new(
            cfg,
            Arc::new(RwLock::new(Cluster::demo(&plan, 53))),
            Arc::new(RwLock::new(CoreDnsFaults::default())),
        );
        let dns = serve(SocketAddr::new(plan.pod_ip(0, 2).into(), 0), core, false)
            .await
            .unwrap();
        let m = udp(
            dns.local_addr(),
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert!(m.metadata.recursion_available && m.metadata.authoritative);
        dns.stop().await;
    }

    #[tokio::test]
    async fn names_are_case_insensitive() {
        let lab = lab(102).await;
        let m = udp(
            lab.addr(),
            "KUBERNETES.Default.SVC.Cluster.LOCAL.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(ips(&m.answers), vec![lab.plan.service_ip(1)]);
        let m = udp(
            lab.addr(),
            "MySQL-0.MYSQL.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![lab.plan.pod_ip(1, 11)]);
    }

    #[tokio::test]
    async fn nodata_carries_soa() {
        let lab = lab(103).await;
        for (name, qtype) in [
            ("kubernetes.default.svc.cluster.local.", RecordType::AAAA),
            ("kubernetes.default.svc.cluster.local.", RecordType::TXT),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::A),
            ("dns-version.cluster.local.", RecordType::A),
            ("10-1-2-3.default.pod.cluster.local.", RecordType::AAAA),
        ] {
            let m = udp(lab.addr(), name, qtype).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {qtype}"
            );
            assert!(m.answers.is_empty(), "{name} {qtype}");
            assert!(m.metadata.authoritative);
            assert_soa(&m);
        }
        let m = udp(lab.addr(), "cluster.local.", RecordType::SOA).await;
        assert_eq!(m.answers.len(), 1);
        assert!(matches!(&m.answers[0].data, RData::SOA(_)));
        let m = udp(lab.addr(), "cluster.local.", RecordType::NS).await;
        assert!(
            matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "ns.dns.cluster.local.")
        );
        assert_eq!(ips(&m.additionals), vec![lab.plan.service_ip(10)]);
    }

    #[tokio::test]
    async fn unknown_names_are_nxdomain_with_soa() {
        let lab = lab(104).await;
        for name in [
            "web-servcie.default.svc.cluster.local.",
            "kubernetes.nosuchns.svc.cluster.local.",
            "nosuchns.svc.cluster.local.",
            "x.kubernetes.default.svc.cluster.local.",
            "_nope._tcp.kubernetes.default.svc.cluster.local.",
            "not-an-ip.default.pod.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
        ] {
            let m = udp(lab.addr(), name, RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty());
            assert_soa(&m);
        }
    }

    #[tokio::test]
    async fn headless_service_answers_ready_endpoints_and_names() {
        let lab = lab(105).await;
        let p = lab.plan;
        let m = udp(
            lab.addr(),
            "hostnames-headless.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(
            ips(&m.answers),
            vec![p.pod_ip(0, 20), p.pod_ip(0, 22), p.pod_ip(1, 21)]
        );
        assert!(m.metadata.authoritative);
        let dashed = format!(
            "127-{}-16-20.hostnames-headless.default.svc.cluster.local.",
            p.slice
        );
        let m = udp(lab.addr(), &dashed, RecordType::A).await;
        assert_eq!(ips(&m.answers), vec![p.pod_ip(0, 20)]);
        let m = udp(
            lab.addr(),
            "mysql-0.mysql.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![p.pod_ip(1, 11)]);
        let m = udp(
            lab.addr(),
            "mysql-0.mysql.default.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        // Not-ready endpoints drop out; none ready → NXDOMAIN. The cluster is read live.
        {
            let mut c = lab.cluster.write().unwrap();
            for pod in c
                .pods
                .iter_mut()
                .filter(|p| p.name.starts_with("hostnames-"))
            {
                pod.ready = pod.name.ends_with("q2w3e");
            }
        }
        let m = udp(
            lab.addr(),
            "hostnames-headless.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![p.pod_ip(0, 20)]);
        let m = udp(lab.addr(), &dashed.replace("-20.", "-22."), RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        lab.cluster
            .write()
            .unwrap()
            .pods
            .iter_mut()
            .for_each(|p| p.ready = false);
        let m = udp(
            lab.addr(),
            "hostnames-headless.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_soa(&m);
        // A ClusterIP service keeps its A record without endpoints.
        let m = udp(
            lab.addr(),
            "hostnames.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![p.service_ip(22)]);
    }

    fn srvs(m: &Message) -> Vec<(u16, u16, u16, String)> {
        let mut v: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn srv_for_named_ports() {
        let lab = lab(106).await;
        let p = lab.plan;
        let m = udp(
            lab.addr(),
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            srvs(&m),
            vec![(
                0,
                100,
                443,
                "kubernetes.default.svc.cluster.local.".to_string()
            )]
        );
        assert_eq!(ips(&m.additionals), vec![p.service_ip(1)]);
        let m = udp(
            lab.addr(),
            "_DNS._UDP.kube-dns.kube-system.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            srvs(&m),
            vec![(0, 100, 53, "kube-dns.kube-system.svc.cluster.local.".into())]
        );
        // Headless: endpoint × port, targeting the endpoint names.
        let m = udp(
            lab.addr(),
            "_http._tcp.hostnames-headless.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        let s = p.slice;
        assert_eq!(
            srvs(&m),
            [(16, 20), (16, 22), (17, 21)]
                .iter()
                .map(|(c, d)| (
                    0,
                    33,
                    9376,
                    format!("127-{s}-{c}-{d}.hostnames-headless.default.svc.cluster.local.")
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            ips(&m.additionals),
            vec![p.pod_ip(0, 20), p.pod_ip(0, 22), p.pod_ip(1, 21)]
        );
        // Wrong protocol → NXDOMAIN; an A query on an existing SRV name → NODATA.
        let m = udp(
            lab.addr(),
            "_https._udp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = udp(
            lab.addr(),
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_soa(&m);
    }

    fn ptr_name(ip: Ipv4Addr) -> String {
        let o = ip.octets();
        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
    }

    fn ptrs(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn ptr_for_cluster_ips_and_headless_endpoints() {
        let lab = lab(107).await;
        let p = lab.plan;
        let m = udp(lab.addr(), &ptr_name(p.service_ip(1)), RecordType::PTR).await;
        assert_eq!(ptrs(&m), vec!["kubernetes.default.svc.cluster.local."]);
        assert!(m.metadata.authoritative);
        let m = udp(lab.addr(), &ptr_name(p.pod_ip(1, 11)), RecordType::PTR).await;
        assert_eq!(ptrs(&m), vec!["mysql-0.mysql.default.svc.cluster.local."]);
        let m = udp(lab.addr(), &ptr_name(p.pod_ip(0, 20)), RecordType::PTR).await;
        assert_eq!(
            ptrs(&m),
            vec![format!(
                "127-{}-16-20.hostnames-headless.default.svc.cluster.local.",
                p.slice
            )]
        );
        // No match: fallthrough to the upstream, which says NXDOMAIN (not authoritative).
        let m = udp(lab.addr(), &ptr_name(p.pod_ip(1, 99)), RecordType::PTR).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.authoritative && m.metadata.recursion_available);
        let m = udp(lab.addr(), "1.0.0.0.ip6.arpa.", RecordType::PTR).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.authoritative);
    }

    #[tokio::test]
    async fn external_name_is_cname_and_version_and_pods() {
        let lab = lab(108).await;
        lab.cluster.write().unwrap().services.push(Service {
            namespace: "default".into(),
            name: "db".into(),
            cluster_ip: None,
            selector: BTreeMap::new(),
            ports: Vec::new(),
            external_name: Some("db.kdiag.test".into()),
            policy: Default::default(),
        });
        let m = udp(lab.addr(), "db.default.svc.cluster.local.", RecordType::A).await;
        assert!(
            matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "db.kdiag.test.")
        );
        assert!(m.metadata.authoritative);
        let m = udp(lab.addr(), "dns-version.cluster.local.", RecordType::TXT).await;
        let RData::TXT(txt) = &m.answers[0].data else {
            panic!("not txt")
        };
        assert_eq!(&*txt.txt_data[0], b"1.1.0");
        let m = udp(
            lab.addr(),
            "10-244-1-7.anyns.pod.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m.answers), vec![Ipv4Addr::new(10, 244, 1, 7)]);
        let m = udp(lab.addr(), "ns.dns.cluster.local.", RecordType::A).await;
        assert_eq!(ips(&m.answers), vec![lab.plan.service_ip(10)]);
    }

    #[tokio::test]
    async fn forwards_outside_names_to_upstream() {
        let lab = lab(109).await;
        let m = udp(lab.addr(), "example.com.", RecordType::A).await;
        assert_eq!(ips(&m.answers), vec![Ipv4Addr::new(93, 184, 215, 14)]);
        assert!(m.metadata.recursion_available && !m.metadata.authoritative);
        let m = udp(lab.addr(), "www.example.com.", RecordType::A).await;
        assert!(matches!(&m.answers[0].data, RData::CNAME(_)));
        assert_eq!(ips(&m.answers), vec![Ipv4Addr::new(93, 184, 215, 14)]);
        let m = udp(lab.addr(), "api.kdiag.test.", RecordType::A).await;
        assert_eq!(
            ips(&m.answers),
            vec![Upstream::kdiag_test_ip("api.kdiag.test")]
        );
        let m = udp(lab.addr(), "nothing.invalid.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA));
        let m = ask(lab.addr(), "kubernetes.io.", RecordType::A, Via::Tcp)
            .await
            .0;
        assert_eq!(m.answers.len(), 1);
    }

    #[tokio::test]
    async fn upstream_servfail_is_relayed() {
        let lab = lab(110).await;
        *lab.mode.write().unwrap() = UpstreamMode::ServFail;
        let m = udp(lab.addr(), "example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let m = udp(
            lab.addr(),
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }

    #[tokio::test]
    async fn upstream_timeout_is_servfail_after_forward_timeout() {
        let lab = lab(111).await;
        *lab.mode.write().unwrap() = UpstreamMode::Timeout;
        let start = Instant::now();
        let m = udp(lab.addr(), "example.com.", RecordType::A).await;
        let took = start.elapsed();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn upstream_gone_is_servfail() {
        let lab = lab(112).await;
        let Lab { upstream, dns, .. } = lab;
        upstream.stop().await;
        let start = Instant::now();
        let m = udp(dns.local_addr(), "example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn unsynced_is_servfail_for_cluster_names_only() {
        let lab = lab(113).await;
        set_faults(
            &lab,
            CoreDnsFaults {
                unsynced: true,
                ..Default::default()
            },
        );
        for name in [
            "kubernetes.default.svc.cluster.local.".to_string(),
            "nosuch.default.svc.cluster.local.".to_string(),
            ptr_name(lab.plan.service_ip(1)),
        ] {
            let m = udp(lab.addr(), &name, RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
        }
        let m = udp(lab.addr(), "example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        set_faults(&lab, CoreDnsFaults::default());
        let m = udp(
            lab.addr(),
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }

    #[tokio::test]
    async fn delay_is_added_before_answers() {
        let lab = lab(114).await;
        set_faults(
            &lab,
            CoreDnsFaults {
                delay: Duration::from_millis(200),
                ..Default::default()
            },
        );
        for name in ["kubernetes.default.svc.cluster.local.", "example.com."] {
            let start = Instant::now();
            let m = udp(lab.addr(), name, RecordType::A).await;
            assert!(start.elapsed() >= Duration::from_millis(200));
            assert_eq!(m.answers.len(), 1);
        }
    }

    #[tokio::test]
    async fn truncate_udp_empties_udp_answers_only() {
        let lab = lab(115).await;
        set_faults(
            &lab,
            CoreDnsFaults {
                truncate_udp: true,
                ..Default::default()
            },
        );
        for name in ["kubernetes.default.svc.cluster.local.", "example.com."] {
            let m = udp(lab.addr(), name, RecordType::A).await;
            assert!(m.metadata.truncation, "{name}");
            assert!(m.answers.is_empty() && m.authorities.is_empty());
            let m = ask(lab.addr(), name, RecordType::A, Via::Tcp).await.0;
            assert!(!m.metadata.truncation);
            assert_eq!(m.answers.len(), 1, "{name}");
        }
    }

    #[tokio::test]
    async fn big_headless_answer_truncates_on_plain_udp() {
        let lab = lab(116).await;
        {
            let mut c = lab.cluster.write().unwrap();
            for i in 0..60u8 {
                c.pods.push(Pod {
                    namespace: "default".into(),
                    name: format!("many-{i}"),
                    node: "node-1".into(),
                    ip: lab.plan.pod_ip(0, 100 + i),
                    labels: [("app".to_string(), "many".to_string())].into(),
                    ports: vec![PodPort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: "TCP".into(),
                    }],
                    ready: true,
                    phase: "Running".into(),
                    restarts: 0,
                    waiting_reason: None,
                    termination_message: None,
                    hostname: None,
                    workload: crate::model::Workload::None,
                    listening: true,
                    logs: vec![],
                });
            }
            c.services.push(Service {
                namespace: "default".into(),
                name: "many".into(),
                cluster_ip: None,
                selector: [("app".to_string(), "many".to_string())].into(),
                ports: vec![crate::model::ServicePort {
                    name: Some("http".into()),
                    protocol: "TCP".into(),
                    port: 80,
                    target: TargetPort::Number(80),
                    node_port: None,
                }],
                external_name: None,
                policy: Default::default(),
            });
        }
        let name = "many.default.svc.cluster.local.";
        let (m, size) = ask(lab.addr(), name, RecordType::A, Via::Udp).await;
        assert!(m.metadata.truncation);
        assert!(size <= 512, "{size}");
        assert!(m.answers.len() < 60);
        let (m, size) = ask(lab.addr(), name, RecordType::A, Via::UdpEdns(4096)).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert!(size > 512);
        let (m, _) = ask(lab.addr(), name, RecordType::A, Via::Tcp).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }

    #[tokio::test]
    async fn forwarded_truncation_is_relayed_and_tcp_retried() {
        let lab = lab(117).await;
        let (m, size) = ask(lab.addr(), "big.kdiag.test.", RecordType::TXT, Via::Udp).await;
        assert!(m.metadata.truncation);
        assert!(size <= 512);
        let (m, _) = ask(lab.addr(), "big.kdiag.test.", RecordType::TXT, Via::Tcp).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), usize::from(BIG_RECORDS));
        let (m, _) = ask(
            lab.addr(),
            "big.kdiag.test.",
            RecordType::A,
            Via::UdpEdns(4096),
        )
        .await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), usize::from(BIG_RECORDS));
    }

    fn raw_query(questions: &[(&str, RecordType, DNSClass)]) -> Vec<u8> {
        let mut msg = Message::query();
        for (n, t, c) in questions {
            let mut q = Query::query(Name::from_ascii(n).unwrap(), *t);
            q.set_query_class(*c);
            msg.queries.push(q);
        }
        msg.to_vec().unwrap()
    }

    async fn rcode_of(addr: SocketAddr, bytes: &[u8]) -> ResponseCode {
        Message::from_vec(&raw(addr, bytes, false).await.unwrap())
            .unwrap()
            .metadata
            .response_code
    }

    #[tokio::test]
    async fn odd_queries_never_panic() {
        let lab = lab(118).await;
        let a = lab.addr();
        assert_eq!(rcode_of(a, &raw_query(&[])).await, ResponseCode::FormErr);
        let two = [
            (
                "kubernetes.default.svc.cluster.local.",
                RecordType::A,
                DNSClass::IN,
            ),
            ("example.com.", RecordType::A, DNSClass::IN),
        ];
        assert_eq!(rcode_of(a, &raw_query(&two)).await, ResponseCode::FormErr);
        let ch = [("version.bind.", RecordType::TXT, DNSClass::CH)];
        assert_eq!(rcode_of(a, &raw_query(&ch)).await, ResponseCode::Refused);
        let ch = [(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            DNSClass::CH,
        )];
        assert_eq!(rcode_of(a, &raw_query(&ch)).await, ResponseCode::Refused);
        for t in [
            RecordType::HINFO,
            RecordType::ANY,
            RecordType::MX,
            RecordType::CNAME,
        ] {
            let m = udp(a, "kubernetes.default.svc.cluster.local.", t).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty());
            assert_soa(&m);
        }
        let m = udp(a, "nosuch.default.svc.cluster.local.", RecordType::ANY).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // NOTIFY opcode → NOTIMP.
        let mut notify = raw_query(&[("cluster.local.", RecordType::SOA, DNSClass::IN)]);
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        assert_eq!(rcode_of(a, &notify).await, ResponseCode::NotImp);
        // Garbage of every length, then the server still answers.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut seed: u32 = 0x1234_5678;
        for len in 0..300usize {
            let pkt: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            sock.send_to(&pkt, a).await.unwrap();
        }
        let m = udp(a, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.answers.len(), 1);
        let m = ask(
            a,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            Via::Tcp,
        )
        .await
        .0;
        assert_eq!(m.answers.len(), 1);
    }

    #[tokio::test]
    async fn stop_and_drop_close_the_sockets() {
        let addr = SocketAddr::from(([127, 119, 0, 2], 0));
        let mode = Arc::new(RwLock::new(UpstreamMode::Healthy));
        let h = serve(addr, Upstream::new(Arc::clone(&mode)), true)
            .await
            .unwrap();
        let bound = h.local_addr();
        assert_ne!(bound.port(), 0);
        assert_eq!(bound.ip(), addr.ip());
        assert_eq!(
            udp(bound, "example.com.", RecordType::A)
                .await
                .answers
                .len(),
            1
        );
        assert_eq!(
            ask(bound, "example.com.", RecordType::A, Via::Tcp)
                .await
                .0
                .answers
                .len(),
            1
        );
        h.stop().await;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.connect(bound).unwrap();
        s.send(&raw_query(&[("example.com.", RecordType::A, DNSClass::IN)]))
            .unwrap();
        let mut buf = [0u8; 512];
        let err = s.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = TcpStream::connect(bound).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        let h = serve(addr, Upstream::new(mode), false).await.unwrap();
        let bound = h.local_addr();
        drop(h);
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(bound).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            s.send(&raw_query(&[("example.com.", RecordType::A, DNSClass::IN)]))
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(100), s.recv(&mut buf)).await {
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                _ if Instant::now() > deadline => panic!("dropped server still answering"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    #[tokio::test]
    async fn upstream_answers_its_static_zone() {
        let mode = Arc::new(RwLock::new(UpstreamMode::Healthy));
        let h = serve(
            SocketAddr::from(([127, 120, 0, 2], 0)),
            Upstream::new(mode),
            true,
        )
        .await
        .unwrap();
        let a = h.local_addr();
        let m = udp(a, "foo.bar.KDIAG.test.", RecordType::A).await;
        assert_eq!(
            ips(&m.answers),
            vec![Upstream::kdiag_test_ip("foo.bar.kdiag.test")]
        );
        assert!(m.metadata.recursion_available);
        assert_eq!(
            Upstream::kdiag_test_ip("x.kdiag.test"),
            Upstream::kdiag_test_ip("X.kdiag.test.")
        );
        let m = udp(a, "example.com.", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && !m.authorities.is_empty());
        let m = udp(a, "nope.example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = udp(a, "elsewhere.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.authorities[0].name.is_root());
        h.stop().await;
    }
}
