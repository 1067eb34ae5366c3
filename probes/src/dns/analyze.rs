//! Cluster DNS diagnosis rules: observations in, findings out. Pure.
//!
//! The rules correlate instead of listing symptoms: a kube-dns Service without ready endpoints
//! explains a refusing VIP, a truncated answer whose TCP retry fails explains a failed query,
//! and an upstream timeout explains a slow external answer. Each symptom is reported once,
//! under its root cause.

use super::model::{fmt_duration, QueryFailure, QueryOutcome};
use crate::finding::{Code, Finding, Severity};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// A pod behind the DNS Service, as the cluster state shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsPodView {
    /// `namespace/name`.
    pub name: String,
    /// Pod IP.
    pub ip: Option<IpAddr>,
    /// Ready condition.
    pub ready: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Phase plus waiting reason, e.g. `Running/CrashLoopBackOff`.
    pub status: String,
}

/// The cluster DNS Service as the cluster state shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsServiceView {
    /// `kube-system/kube-dns`.
    pub name: String,
    /// Whether the Service object exists at all.
    pub exists: bool,
    /// ClusterIP.
    pub vip: Option<IpAddr>,
    /// Ready endpoint addresses.
    pub ready: Vec<IpAddr>,
    /// Not-ready endpoint addresses.
    pub not_ready: Vec<IpAddr>,
    /// The pods the selector matches.
    pub pods: Vec<DnsPodView>,
    /// Whether the Service exposes a TCP port for DNS (`dns-tcp`).
    pub has_tcp_port: bool,
}

/// A nameserver line in a file that CoreDNS forwards to, or that kubelet hands to pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamRef {
    /// File and line, `/run/systemd/resolve/resolv.conf:3` or `Corefile:12`.
    pub source: String,
    /// What uses it: `kubelet resolvConf (CoreDNS forward . /etc/resolv.conf)`.
    pub role: String,
    /// The nameserver address.
    pub addr: IpAddr,
}

/// A client's lookup through its resolv.conf search path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientLookup {
    /// The name as the client typed it.
    pub asked: String,
    /// The namespace the client runs in (for suggestions).
    pub namespace: String,
    /// Every candidate name the search path produced, in order.
    pub candidates: Vec<String>,
    /// The queries actually sent, in order.
    pub queries: Vec<QueryOutcome>,
    /// The candidate that answered, if any.
    pub answered_by: Option<String>,
    /// Address families asked per candidate (2 for getaddrinfo with AF_UNSPEC).
    pub families: usize,
}

/// Everything the DNS probes observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsObservations {
    /// Cluster domain, `cluster.local`.
    pub zone: String,
    /// The kube-dns Service, when the cluster state is known.
    pub service: Option<DnsServiceView>,
    /// `kubernetes.default.svc.<zone>` through the DNS VIP.
    pub vip: Option<QueryOutcome>,
    /// The same through each DNS pod directly: (pod, outcome).
    pub pods: Vec<(String, QueryOutcome)>,
    /// An external name through the VIP (exercises `forward`).
    pub external: Option<QueryOutcome>,
    /// A large answer (the biggest headless Service) over UDP without EDNS.
    pub large: Option<QueryOutcome>,
    /// The client's own lookup, when a name was given.
    pub client: Option<ClientLookup>,
    /// Services that exist, as (namespace, name), for suggestions.
    pub known_services: Vec<(String, String)>,
    /// Nameservers CoreDNS forwards to or kubelet hands to `dnsPolicy: Default` pods
    /// (evidence for upstream failures; loopback ones are judged by [`super::loops`]).
    pub upstreams: Vec<UpstreamRef>,
}

/// Thresholds the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Answers slower than this are `dns.slow`.
    pub latency: Duration,
    /// A lookup sending more queries than this is a warning-level amplification.
    pub amplification_warn: usize,
}

impl Budget {
    /// The defaults: 250 ms, 10 queries.
    pub const DEFAULT: Budget = Budget {
        latency: Duration::from_millis(250),
        amplification_warn: 10,
    };
}

/// Runs every rule over the observations.
pub fn analyze(obs: &DnsObservations, budget: &Budget) -> Vec<Finding> {
    let mut out = Vec::new();
    let no_endpoints = no_endpoints(obs, &mut out);
    let truncated = truncated(obs, &mut out);
    let reachable = if no_endpoints {
        false
    } else {
        server_unreachable(obs, truncated, &mut out)
    };
    let cluster_ok = reachable && servfail(obs, &mut out);
    if cluster_ok {
        upstream_failure(obs, &mut out);
    }
    slow(obs, budget, &mut out);
    if reachable {
        client_lookup(obs, budget, &mut out);
    }
    out
}

fn no_endpoints(obs: &DnsObservations, out: &mut Vec<Finding>) -> bool {
    let Some(svc) = &obs.service else {
        return false;
    };
    if !svc.exists {
        let mut f = Finding::new(
            Code::DnsNoEndpoints,
            format!("the cluster DNS Service {} does not exist", svc.name),
        )
        .evidence(
            format!("service {}", svc.name),
            "not found in the cluster state",
        );
        if let Some(vip) = &obs.vip {
            f = f.evidence(vip.describe(), vip.summary());
        }
        out.push(f.remediation(
            "re-create the kube-dns Service (kubeadm: `kubeadm init phase addon coredns`) \
             and check that kubelet's clusterDNS matches its ClusterIP",
        ));
        return true;
    }
    if !svc.ready.is_empty() {
        return false;
    }
    let mut f = Finding::new(
        Code::DnsNoEndpoints,
        format!(
            "{} has no ready endpoints ({} not ready): every DNS query through the VIP fails",
            svc.name,
            svc.not_ready.len()
        ),
    )
    .evidence(
        format!("endpoints {}", svc.name),
        format!(
            "0 ready, {} not ready{}",
            svc.not_ready.len(),
            list_ips(&svc.not_ready)
        ),
    );
    for p in &svc.pods {
        f = f.evidence(
            format!("pod {}", p.name),
            format!("{}, ready={}, restarts={}", p.status, p.ready, p.restarts),
        );
    }
    if svc.pods.is_empty() {
        f = f.evidence(
            format!("pods of {}", svc.name),
            "no pod matches the Service's selector",
        );
    }
    if let Some(vip) = &obs.vip {
        f = f.evidence(vip.describe(), vip.summary());
    }
    let crashloop = svc
        .pods
        .iter()
        .any(|p| p.status.contains("CrashLoopBackOff"));
    let pending = svc.pods.iter().any(|p| p.status.starts_with("Pending"));
    let fix = if crashloop {
        "CoreDNS is crash-looping: read `kubectl -n kube-system logs -l k8s-app=kube-dns --previous` \
         (a `plugin/loop: Loop ... detected` line means a forwarding loop; see dns.upstream-loopback)"
    } else if pending {
        "CoreDNS pods are Pending: usually no CNI plugin is installed yet (`kubectl describe node` shows \
         NetworkReady=false); install the CNI, then the pods start"
    } else {
        "check the CoreDNS pods: `kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide`, \
         their readiness probe (:8181/ready) and logs"
    };
    out.push(f.remediation(fix));
    true
}

fn list_ips(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = ips.iter().map(ToString::to_string).collect();
        format!(" ({})", v.join(", "))
    }
}

/// A query whose UDP answer was truncated and whose TCP retry failed.
fn truncated_and_tcp_failed(q: &QueryOutcome) -> Option<&QueryFailure> {
    if q.was_truncated() {
        q.result().err()
    } else {
        None
    }
}

fn truncated(obs: &DnsObservations, out: &mut Vec<Finding>) -> bool {
    let all = obs
        .vip
        .iter()
        .chain(obs.large.iter())
        .chain(obs.external.iter())
        .chain(obs.pods.iter().map(|(_, q)| q));
    let bad: Vec<&QueryOutcome> = all
        .filter(|q| truncated_and_tcp_failed(q).is_some())
        .collect();
    if bad.is_empty() {
        return false;
    }
    let mut f = Finding::new(
        Code::DnsTruncated,
        "UDP answers come back truncated (TC=1) and the TCP retry fails: clients that need TCP get no answer",
    );
    for q in &bad {
        f = f.evidence(q.describe(), q.summary());
    }
    if let Some(svc) = &obs.service {
        if !svc.has_tcp_port {
            f = f.evidence(
                format!("service {}", svc.name),
                "has no TCP port for DNS (the kubeadm Service has `dns-tcp` 53/TCP)",
            );
        }
    }
    out.push(f.remediation(
        "make DNS reachable over TCP: add the `dns-tcp` 53/TCP port to the kube-dns Service and allow \
         TCP 53 in NetworkPolicies/firewalls; large answers (big headless Services) need it",
    ));
    true
}

fn failed_hard(q: &QueryOutcome) -> Option<&QueryFailure> {
    if truncated_and_tcp_failed(q).is_some() {
        return None;
    }
    q.result().err()
}

/// Returns whether cluster DNS is reachable at all (through the VIP or a pod).
fn server_unreachable(obs: &DnsObservations, truncated: bool, out: &mut Vec<Finding>) -> bool {
    let vip_failed = obs.vip.as_ref().and_then(failed_hard);
    let pods_failed: Vec<_> = obs
        .pods
        .iter()
        .filter(|(_, q)| failed_hard(q).is_some())
        .collect();
    let all_pods_failed = !obs.pods.is_empty() && pods_failed.len() == obs.pods.len();
    let vip_answered = obs.vip.as_ref().is_some_and(|q| q.result().is_ok());
    if vip_failed.is_none() && !all_pods_failed {
        return vip_answered || obs.pods.iter().any(|(_, q)| q.result().is_ok()) || truncated;
    }
    let summary = match (vip_failed, all_pods_failed, obs.pods.is_empty()) {
        (Some(_), true, _) => "the cluster DNS VIP and every DNS pod fail to answer".to_string(),
        (Some(e), false, false) => format!(
            "the DNS pods answer but the DNS VIP does not ({e}): the Service's data path (kube-proxy) is broken"
        ),
        (Some(e), false, true) => format!("the cluster DNS server does not answer ({e})"),
        (None, _, _) => "every DNS pod fails to answer directly".to_string(),
    };
    let mut f = Finding::new(Code::DnsServerUnreachable, summary);
    if let Some(q) = &obs.vip {
        f = f.evidence(q.describe(), q.summary());
    }
    for (pod, q) in &obs.pods {
        f = f.evidence(format!("pod {pod}: {}", q.describe()), q.summary());
    }
    let fix = if vip_failed.is_some() && !all_pods_failed && !obs.pods.is_empty() {
        "check kube-proxy on this node (`kdiag trace` the DNS VIP, kube-proxy logs and healthz :10256)"
    } else {
        "check that CoreDNS runs and listens (`kubectl -n kube-system get pods -l k8s-app=kube-dns`), \
         and that nothing (NetworkPolicy, firewall) drops port 53 between this node and the DNS pods"
    };
    out.push(f.remediation(fix));
    // Reachable through some path still counts for the later rules.
    obs.pods.iter().any(|(_, q)| q.result().is_ok())
}

/// Returns whether cluster names resolve (no SERVFAIL).
fn servfail(obs: &DnsObservations, out: &mut Vec<Finding>) -> bool {
    let cluster = obs.vip.iter().chain(obs.pods.iter().map(|(_, q)| q));
    let bad: Vec<&QueryOutcome> = cluster.filter(|q| q.rcode() == Some("SERVFAIL")).collect();
    if bad.is_empty() {
        return true;
    }
    let mut f = Finding::new(
        Code::DnsServfail,
        format!(
            "cluster DNS answers SERVFAIL for names in {}: CoreDNS cannot serve the cluster zone",
            obs.zone
        ),
    );
    for q in &bad {
        f = f.evidence(q.describe(), q.summary());
    }
    out.push(f.remediation(
        "read the CoreDNS logs; SERVFAIL for cluster names means the kubernetes plugin has no data: \
         CoreDNS cannot reach the API server, or its ServiceAccount lacks RBAC to list/watch \
         endpointslices, services, namespaces (ClusterRole system:coredns)",
    ));
    false
}

fn upstream_failure(obs: &DnsObservations, out: &mut Vec<Finding>) {
    let Some(ext) = &obs.external else { return };
    // Only meaningful when the same server answered a cluster name: otherwise the server itself
    // is the problem and another rule says so.
    let same_server_ok = obs
        .vip
        .iter()
        .chain(obs.pods.iter().map(|(_, q)| q))
        .any(|q| q.spec.server == ext.spec.server && q.rcode() == Some("NOERROR"));
    if !same_server_ok {
        return;
    }
    let failed = match ext.result() {
        Ok(a) => matches!(a.rcode.as_str(), "SERVFAIL" | "REFUSED"),
        Err(QueryFailure::Timeout) => true,
        Err(_) => false,
    };
    if !failed {
        return;
    }
    let mut f = Finding::new(
        Code::DnsUpstreamFailure,
        format!(
            "cluster names resolve but external names fail ({}): CoreDNS's upstream is failing",
            ext.summary()
        ),
    );
    if let Some(v) = &obs.vip {
        f = f.evidence(v.describe(), v.summary());
    }
    f = f.evidence(ext.describe(), ext.summary());
    if ext.total_latency() >= Duration::from_millis(1500) {
        f = f.evidence(
            "timing",
            "the failure took as long as CoreDNS forward's upstream read timeout (2 s): the upstream does not answer",
        );
    }
    for u in &obs.upstreams {
        f = f.evidence(
            u.source.clone(),
            format!("{}: nameserver {}", u.role, u.addr),
        );
    }
    out.push(f.remediation(
        "check the upstream resolvers CoreDNS forwards to (`forward` in the Corefile, or the node's \
         resolv.conf kubelet hands to CoreDNS): are they up and reachable from the DNS pods' nodes?",
    ));
}

fn slow(obs: &DnsObservations, budget: &Budget, out: &mut Vec<Finding>) {
    let cluster = obs
        .vip
        .iter()
        .chain(obs.pods.iter().map(|(_, q)| q))
        .filter(|q| q.result().is_ok_and(|a| a.rcode == "NOERROR"))
        .filter(|q| q.total_latency() > budget.latency);
    let bad: Vec<&QueryOutcome> = cluster.collect();
    if bad.is_empty() {
        return;
    }
    let worst = bad
        .iter()
        .map(|q| q.total_latency())
        .max()
        .unwrap_or_default();
    let mut summary = format!(
        "cluster DNS answers in {} (budget {})",
        fmt_duration(worst),
        fmt_duration(budget.latency)
    );
    let five = Duration::from_millis(4500)..Duration::from_millis(6000);
    if five.contains(&worst) {
        summary.push_str(
            ": the 5 s signature of a lost UDP packet (conntrack insert race, glibc timeout:5)",
        );
    }
    let mut f = Finding::new(Code::DnsSlow, summary);
    for q in &bad {
        f = f.evidence(q.describe(), q.summary());
    }
    out.push(f.remediation(
        "find where the time goes: compare the VIP with each DNS pod directly; a slow pod points at \
         CoreDNS load (scale it, NodeLocal DNSCache), a slow VIP only at conntrack/kube-proxy",
    ));
}

/// Levenshtein distance, for suggesting the Service a mistyped name meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The Service a client most likely meant by `asked` (`mysql-servce`, `web.default`), if any
/// is close enough: same namespace preferred, at most a third of the name's length away.
pub fn nearest_service<'a>(
    asked: &str,
    client_namespace: &str,
    zone: &str,
    known: &'a [(String, String)],
) -> Option<&'a (String, String)> {
    let name = asked.trim_end_matches('.');
    let name = name
        .strip_suffix(&format!(".{zone}"))
        .unwrap_or(name)
        .trim_end_matches(".svc");
    let mut labels = name.split('.');
    let svc = labels.next()?;
    let ns = labels.next().unwrap_or(client_namespace);
    let limit = (svc.len() / 3).max(2);
    known
        .iter()
        .map(|k| {
            let d = edit_distance(svc, &k.1) * 2 + usize::from(k.0 != ns) * 3;
            (d, k)
        })
        .filter(|(_, k)| edit_distance(svc, &k.1) <= limit && !(k.1 == svc && k.0 == ns))
        .min_by_key(|(d, k)| (*d, k.1.len()))
        .map(|(_, k)| k)
}

fn client_lookup(obs: &DnsObservations, budget: &Budget, out: &mut Vec<Finding>) {
    let Some(c) = &obs.client else { return };
    let sent = c.queries.len();
    let nx = c
        .queries
        .iter()
        .filter(|q| q.rcode() == Some("NXDOMAIN"))
        .count();
    if c.answered_by.is_none()
        && nx > 0
        && nx
            + c.queries
                .iter()
                .filter(|q| q.rcode() == Some("NOERROR"))
                .count()
            == sent
    {
        let mut f = Finding::new(
            Code::DnsNxdomain,
            format!(
                "{:?} does not resolve: every name on the search path is NXDOMAIN",
                c.asked
            ),
        );
        let suggestion = nearest_service(&c.asked, &c.namespace, &obs.zone, &obs.known_services);
        if let Some((ns, name)) = suggestion {
            f.summary.push_str(&format!(
                "; did you mean Service {ns}/{name} ({name}.{ns}.svc.{})?",
                obs.zone
            ));
        }
        for q in c.queries.iter().take(8) {
            f = f.evidence(q.describe(), q.summary());
        }
        let fix = match suggestion {
            Some((ns, name)) => format!(
                "the client asks for a name that does not exist: fix the name in its configuration \
                 to `{name}` (or `{name}.{ns}` from another namespace)"
            ),
            None => "check the name and namespace: `kubectl get svc -A | grep <name>`; short names only \
                     resolve in the client's own namespace"
                .to_string(),
        };
        out.push(f.remediation(fix));
    }
    let wasted = match &c.answered_by {
        Some(name) => c
            .queries
            .iter()
            .position(|q| &q.spec.name == name)
            .unwrap_or(sent),
        None => sent,
    };
    if wasted >= 3 * c.families.max(1) && c.candidates.len() > 1 {
        let sev = if sent > budget.amplification_warn {
            Severity::Warning
        } else {
            Severity::Info
        };
        let f = Finding::new(
            Code::DnsNdotsAmplification,
            match &c.answered_by {
                Some(by) => format!(
                    "looking up {:?} sent {sent} queries through {} search-path candidates; {wasted} were wasted before {by} answered",
                    c.asked,
                    c.candidates.len()
                ),
                None => format!(
                    "looking up {:?} sent {sent} queries through {} search-path candidates, and none answered",
                    c.asked,
                    c.candidates.len()
                ),
            },
        )
        .severity(sev)
        .evidence("search path", c.candidates.join(" -> "))
        .remediation(format!(
            "use the fully qualified name with a trailing dot (`{}.`), or lower ndots for this pod \
             (`dnsConfig.options: [{{name: ndots, value: \"2\"}}]`), or trim the node's search domains",
            c.asked.trim_end_matches('.')
        ));
        out.push(f);
    }
}

/// Findings for a plain lookup (`kdiag dns`): one query, or a search-path walk when `lookup`
/// is given. The same rules as the cluster diagnosis, without cluster context.
pub fn analyze_lookup(
    queries: &[QueryOutcome],
    lookup: Option<&ClientLookup>,
    zone: &str,
    known_services: &[(String, String)],
    budget: &Budget,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut trunc = Vec::new();
    let mut failed = Vec::new();
    let mut servfail = Vec::new();
    for q in queries {
        if truncated_and_tcp_failed(q).is_some() {
            trunc.push(q);
        } else if q.result().is_err() {
            failed.push(q);
        } else if q.rcode() == Some("SERVFAIL") {
            servfail.push(q);
        }
    }
    if !trunc.is_empty() {
        let mut f = Finding::new(
            Code::DnsTruncated,
            "the UDP answer is truncated (TC=1) and the TCP retry fails",
        );
        for q in &trunc {
            f = f.evidence(q.describe(), q.summary());
        }
        out.push(
            f.remediation("make the server reachable over TCP port 53 (Service port, firewall)"),
        );
    }
    if !failed.is_empty() {
        let mut f = Finding::new(Code::DnsServerUnreachable, "the DNS server does not answer");
        for q in &failed {
            f = f.evidence(q.describe(), q.summary());
        }
        out.push(f.remediation(
            "check the server address and port; `refused` means nothing listens (or a REJECT rule: \
             a Service without endpoints), `timed out` means packets are dropped on the way",
        ));
    }
    if !servfail.is_empty() {
        let mut f = Finding::new(Code::DnsServfail, "the DNS server answers SERVFAIL");
        for q in &servfail {
            f = f.evidence(q.describe(), q.summary());
        }
        out.push(f.remediation(
            "SERVFAIL means the server could not get an answer: for cluster names CoreDNS has no API \
             data (RBAC, API server); for external names its upstream fails (run `kdiag diagnose`)",
        ));
    }
    let obs = DnsObservations {
        zone: zone.to_string(),
        client: lookup.cloned(),
        known_services: known_services.to_vec(),
        ..DnsObservations::default()
    };
    if lookup.is_some() {
        client_lookup(&obs, budget, &mut out);
    } else if let Some(q) = queries.iter().find(|q| q.rcode() == Some("NXDOMAIN")) {
        let single = ClientLookup {
            asked: q.spec.name.clone(),
            namespace: "default".into(),
            candidates: vec![q.spec.name.clone()],
            queries: vec![q.clone()],
            answered_by: None,
            families: 1,
        };
        let obs = DnsObservations {
            client: Some(single),
            ..obs
        };
        client_lookup(&obs, budget, &mut out);
    }
    if failed.is_empty() && trunc.is_empty() {
        let obs = DnsObservations {
            pods: queries
                .iter()
                .map(|q| (q.spec.server.to_string(), q.clone()))
                .collect(),
            ..DnsObservations::default()
        };
        slow(&obs, budget, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::model::{Answer, Attempt, Flags, QuerySpec, Rr, Transport};

    fn spec(name: &str, server: &str) -> QuerySpec {
        QuerySpec {
            server: server.parse().unwrap(),
            name: name.into(),
            rtype: "A".into(),
            transport: Transport::Udp,
            edns: true,
            tcp_fallback: true,
            timeout: Duration::from_secs(2),
        }
    }

    fn answer(rcode: &str, data: &[&str], tc: bool) -> Answer {
        Answer {
            rcode: rcode.into(),
            flags: Flags {
                aa: true,
                tc,
                rd: true,
                ..Flags::default()
            },
            answers: data
                .iter()
                .map(|d| Rr {
                    name: "x.".into(),
                    ttl: 30,
                    rtype: "A".into(),
                    data: d.to_string(),
                })
                .collect(),
            authority: vec![],
            additional: vec![],
            size: 100,
            transport: Transport::Udp,
        }
    }

    fn ok(name: &str, server: &str, ms: u64) -> QueryOutcome {
        QueryOutcome {
            spec: spec(name, server),
            attempts: vec![Attempt {
                transport: Transport::Udp,
                latency: Duration::from_millis(ms),
                result: Ok(answer("NOERROR", &["10.96.0.1"], false)),
            }],
        }
    }

    fn rcode(name: &str, server: &str, rc: &str, ms: u64) -> QueryOutcome {
        QueryOutcome {
            spec: spec(name, server),
            attempts: vec![Attempt {
                transport: Transport::Udp,
                latency: Duration::from_millis(ms),
                result: Ok(answer(rc, &[], false)),
            }],
        }
    }

    fn failed(name: &str, server: &str, e: QueryFailure, ms: u64) -> QueryOutcome {
        QueryOutcome {
            spec: spec(name, server),
            attempts: vec![Attempt {
                transport: Transport::Udp,
                latency: Duration::from_millis(ms),
                result: Err(e),
            }],
        }
    }

    const K: &str = "kubernetes.default.svc.cluster.local.";
    const VIP: &str = "10.96.0.10:53";

    fn svc(ready: usize) -> DnsServiceView {
        DnsServiceView {
            name: "kube-system/kube-dns".into(),
            exists: true,
            vip: Some("10.96.0.10".parse().unwrap()),
            ready: (0..ready)
                .map(|i| format!("10.244.0.{}", i + 2).parse().unwrap())
                .collect(),
            not_ready: vec![],
            pods: vec![],
            has_tcp_port: true,
        }
    }

    fn healthy() -> DnsObservations {
        DnsObservations {
            zone: "cluster.local".into(),
            service: Some(svc(2)),
            vip: Some(ok(K, VIP, 1)),
            pods: vec![
                ("kube-system/coredns-a".into(), ok(K, "10.244.0.2:53", 1)),
                ("kube-system/coredns-b".into(), ok(K, "10.244.0.3:53", 1)),
            ],
            external: Some(ok("example.com.", VIP, 3)),
            large: None,
            client: None,
            known_services: vec![
                ("default".into(), "mysql-service".into()),
                ("default".into(), "web-service".into()),
                ("kube-system".into(), "kube-dns".into()),
            ],
            upstreams: vec![UpstreamRef {
                source: "/run/systemd/resolve/resolv.conf:2".into(),
                role: "kubelet resolvConf".into(),
                addr: "192.0.2.53".parse().unwrap(),
            }],
        }
    }

    fn codes(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn healthy_cluster_has_no_findings() {
        assert!(analyze(&healthy(), &Budget::DEFAULT).is_empty());
    }

    #[test]
    fn no_endpoints_explains_the_refusing_vip() {
        let mut o = healthy();
        o.service = Some(DnsServiceView {
            not_ready: vec!["10.244.0.2".parse().unwrap()],
            pods: vec![DnsPodView {
                name: "kube-system/coredns-a".into(),
                ip: None,
                ready: false,
                restarts: 5,
                status: "Running/CrashLoopBackOff".into(),
            }],
            ..svc(0)
        });
        o.vip = Some(failed(K, VIP, QueryFailure::Refused, 0));
        o.pods = vec![(
            "kube-system/coredns-a".into(),
            failed(K, "10.244.0.2:53", QueryFailure::Refused, 0),
        )];
        o.external = Some(failed("example.com.", VIP, QueryFailure::Refused, 0));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.no-endpoints"]);
        assert!(f[0].remediation.contains("crash-looping"));
        assert!(f[0]
            .evidence
            .iter()
            .any(|e| e.detail.contains("restarts=5")));
    }

    #[test]
    fn vip_down_but_pods_up_points_at_the_proxy() {
        let mut o = healthy();
        o.vip = Some(failed(K, VIP, QueryFailure::Timeout, 2000));
        o.external = Some(failed("example.com.", VIP, QueryFailure::Timeout, 2000));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.server-unreachable"]);
        assert!(f[0].summary.contains("kube-proxy"), "{}", f[0].summary);
    }

    #[test]
    fn everything_down_is_unreachable() {
        let mut o = healthy();
        o.vip = Some(failed(K, VIP, QueryFailure::Timeout, 2000));
        for (_, q) in &mut o.pods {
            *q = failed(K, "10.244.0.2:53", QueryFailure::Timeout, 2000);
        }
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.server-unreachable"]);
        assert!(f[0].summary.contains("every DNS pod"));
    }

    #[test]
    fn servfail_for_cluster_names() {
        let mut o = healthy();
        o.vip = Some(rcode(K, VIP, "SERVFAIL", 1));
        for (_, q) in &mut o.pods {
            *q = rcode(K, "10.244.0.2:53", "SERVFAIL", 1);
        }
        assert_eq!(codes(&analyze(&o, &Budget::DEFAULT)), ["dns.servfail"]);
    }

    #[test]
    fn external_failure_with_cluster_ok_is_upstream() {
        let mut o = healthy();
        o.external = Some(rcode("example.com.", VIP, "SERVFAIL", 2001));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.upstream-failure"]);
        assert!(f[0].evidence.iter().any(|e| e.source == "timing"));
        // an NXDOMAIN for the external probe name is an answer, not a failure
        o.external = Some(rcode("example.com.", VIP, "NXDOMAIN", 3));
        assert!(analyze(&o, &Budget::DEFAULT).is_empty());
    }

    #[test]
    fn truncation_with_failed_tcp_is_one_finding() {
        let mut o = healthy();
        let mut q = ok(K, VIP, 1);
        q.attempts[0].result = Ok(answer("NOERROR", &[], true));
        q.attempts.push(Attempt {
            transport: Transport::Tcp,
            latency: Duration::from_micros(80),
            result: Err(QueryFailure::Refused),
        });
        o.vip = Some(q);
        o.service.as_mut().unwrap().has_tcp_port = false;
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.truncated"]);
        assert!(f[0].evidence.iter().any(|e| e.detail.contains("dns-tcp")));
    }

    #[test]
    fn slow_cluster_answers() {
        let mut o = healthy();
        o.vip = Some(ok(K, VIP, 400));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.slow"]);
        o.vip = Some(ok(K, VIP, 5003));
        let f = analyze(&o, &Budget::DEFAULT);
        assert!(f[0].summary.contains("conntrack"), "{}", f[0].summary);
    }

    fn lookup(asked: &str, cands: &[&str], answered: Option<&str>) -> ClientLookup {
        let mut queries = vec![];
        for c in cands {
            let hit = answered == Some(*c);
            queries.push(if hit {
                ok(c, VIP, 1)
            } else {
                rcode(c, VIP, "NXDOMAIN", 1)
            });
            if hit {
                break;
            }
        }
        ClientLookup {
            asked: asked.into(),
            namespace: "default".into(),
            candidates: cands.iter().map(|s| s.to_string()).collect(),
            queries,
            answered_by: answered.map(str::to_string),
            families: 1,
        }
    }

    #[test]
    fn wrong_service_name_suggests_the_nearest() {
        let mut o = healthy();
        let cands = [
            "mysql-servce.default.svc.cluster.local.",
            "mysql-servce.svc.cluster.local.",
            "mysql-servce.cluster.local.",
            "mysql-servce.",
        ];
        o.client = Some(lookup("mysql-servce", &cands, None));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.nxdomain", "dns.ndots-amplification"]);
        assert!(
            f[0].summary.contains("default/mysql-service"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[1].severity, Severity::Info);
    }

    #[test]
    fn nearest_service_rules() {
        let known = healthy().known_services;
        let n = |a| nearest_service(a, "default", "cluster.local", &known).map(|k| k.1.as_str());
        assert_eq!(n("web-servce"), Some("web-service"));
        assert_eq!(n("web-service.default.svc.cluster.local."), None); // exact: nothing to suggest
        assert_eq!(n("kube-dn.kube-system"), Some("kube-dns"));
        assert_eq!(n("totally-different"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn amplification_grows_to_a_warning() {
        let mut o = healthy();
        let cands: Vec<String> = (0..7)
            .map(|i| format!("www.example.com.s{i}.example."))
            .chain(["www.example.com.".to_string()])
            .collect();
        let refs: Vec<&str> = cands.iter().map(String::as_str).collect();
        let mut l = lookup("www.example.com", &refs, Some("www.example.com."));
        // both families: duplicate every query
        l.queries = l
            .queries
            .iter()
            .flat_map(|q| [q.clone(), q.clone()])
            .collect();
        l.families = 2;
        o.client = Some(l);
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(codes(&f), ["dns.ndots-amplification"]);
        assert_eq!(f[0].severity, Severity::Warning);
        // the kubelet default (3 search domains) on an external name stays informational
        let cands = [
            "example.com.default.svc.cluster.local.",
            "example.com.svc.cluster.local.",
            "example.com.cluster.local.",
            "example.com.",
        ];
        o.client = Some(lookup("example.com", &cands, Some("example.com.")));
        let f = analyze(&o, &Budget::DEFAULT);
        assert_eq!(f[0].severity, Severity::Info);
        // a short name answered by the first candidate: nothing to say
        o.client = Some(lookup(
            "web-service",
            &["web-service.default.svc.cluster.local.", "web-service."],
            Some("web-service.default.svc.cluster.local."),
        ));
        assert!(analyze(&o, &Budget::DEFAULT).is_empty());
    }
}
