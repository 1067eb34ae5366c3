//! The shared vocabulary of packet tracing, used by every kube-proxy mode (iptables,
//! nftables, IPVS): the packet, the node it arrives at, and what happened to it.
//!
//! Pure data: no I/O, no clock.

use crate::finding::{Code, Finding, Severity};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// A transport protocol kube-proxy programs rules for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Proto {
    /// The lowercase name iptables and nft use.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a protocol name kube-proxy does not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (use tcp, udp or sctp)")]
pub struct UnknownProto(pub String);

impl std::str::FromStr for Proto {
    type Err = UnknownProto;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Proto::Tcp),
            "udp" | "17" => Ok(Proto::Udp),
            "sctp" | "132" => Ok(Proto::Sctp),
            _ => Err(UnknownProto(s.to_string())),
        }
    }
}

/// The first packet of a new connection, as it reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (a ClusterIP, external IP, load-balancer IP or node IP).
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: Proto,
}

/// What the tracer needs to know about the node the packet is on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeContext {
    /// The node's own addresses: `-m addrtype --src-type/--dst-type LOCAL` matches them (and
    /// loopback addresses). A packet from one of them is locally generated (nat OUTPUT).
    pub node_ips: Vec<IpAddr>,
}

impl NodeContext {
    /// True when `ip` is a local address of the node (its own IPs, or loopback).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.node_ips.contains(&ip)
    }
}

/// What finally happens to the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Destination-NATed to one of the endpoints.
    Dnat,
    /// Rejected (ICMP unreachable / TCP reset): a Service without endpoints.
    Reject,
    /// Silently dropped.
    Drop,
    /// Accepted without DNAT by a kube-proxy rule (e.g. a health-check NodePort).
    Accept,
    /// No kube-proxy rule matched: the packet goes on untouched.
    NoMatch,
}

impl Verdict {
    /// The kebab-case name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Dnat => "dnat",
            Verdict::Reject => "reject",
            Verdict::Drop => "drop",
            Verdict::Accept => "accept",
            Verdict::NoMatch => "no-match",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule the packet matched, in evaluation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalkStep {
    /// Table (`nat`, `filter`; for nftables the table name).
    pub table: String,
    /// Chain.
    pub chain: String,
    /// The rule as written in the dump.
    pub rule: String,
    /// 1-based line of the rule in the dump (0 when unknown).
    pub line: u32,
    /// Jump depth: 0 for the chain the walk started in.
    pub depth: u16,
    /// Probability that the packet is on this path (1.0 unless a random branch was taken).
    pub probability: f64,
    /// What the tracer made of it, when there is more to say (a branch taken, a match it
    /// does not understand and assumed, session affinity).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
}

/// One place the packet can end up, with the chance that it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// What happens on this path.
    pub verdict: Verdict,
    /// `IP:PORT` (`[v6]:PORT`) the packet is DNATed to, for [`Verdict::Dnat`].
    pub endpoint: Option<String>,
    /// Probability of this path (the paths of a trace add up to 1).
    pub probability: f64,
    /// The packet is masqueraded (SNAT to the node) on this path.
    pub masquerade: bool,
    /// The rule that decided (DNAT, REJECT, DROP, ACCEPT), as written.
    pub rule: Option<String>,
    /// That rule's `--comment`, e.g. `ns1/svc1:p80 has no endpoints`.
    pub comment: Option<String>,
}

/// The result of tracing one packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResult {
    /// The overall verdict: `dnat` if any path is DNATed and not filtered, else the filter
    /// verdict, else `no-match`.
    pub verdict: Verdict,
    /// Every endpoint the packet can reach (`IP:PORT`), in rule order, without duplicates.
    pub endpoints: Vec<String>,
    /// The packet is masqueraded on at least one path.
    pub masquerade: bool,
    /// Each path with its probability, masquerade and deciding rule.
    pub outcomes: Vec<Outcome>,
    /// Every rule matched, in evaluation order.
    pub walk: Vec<WalkStep>,
    /// Matches and targets the tracer does not understand, each assumed to match (like
    /// kube-proxy's own test tracer) and listed here so nothing is silently skipped.
    pub unknown: Vec<String>,
    /// Other things worth knowing (session affinity, a walk cut short, a missing chain).
    pub notes: Vec<String>,
}

impl TraceResult {
    /// Assembles a result from per-path outcomes (see [`merge_outcome`]): the verdict is the
    /// most consequential one any path reaches (DNAT, then REJECT, DROP, ACCEPT), endpoints in
    /// first-seen order, masquerade if any path masquerades.
    pub fn from_outcomes(
        outcomes: Vec<Outcome>,
        walk: Vec<WalkStep>,
        unknown: Vec<String>,
        notes: Vec<String>,
    ) -> TraceResult {
        let has = |v: Verdict| outcomes.iter().any(|o| o.verdict == v);
        let verdict = [
            Verdict::Dnat,
            Verdict::Reject,
            Verdict::Drop,
            Verdict::Accept,
        ]
        .into_iter()
        .find(|v| has(*v))
        .unwrap_or(Verdict::NoMatch);
        let mut endpoints: Vec<String> = Vec::new();
        for e in outcomes.iter().filter_map(|o| o.endpoint.as_ref()) {
            if !endpoints.contains(e) {
                endpoints.push(e.clone());
            }
        }
        TraceResult {
            verdict,
            endpoints,
            masquerade: outcomes.iter().any(|o| o.masquerade),
            outcomes,
            walk,
            unknown,
            notes,
        }
    }

    /// The endpoints with the probability of reaching each (summed over paths).
    pub fn endpoint_probabilities(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for o in &self.outcomes {
            if let (Verdict::Dnat, Some(ep)) = (o.verdict, &o.endpoint) {
                match out.iter_mut().find(|(e, _)| e == ep) {
                    Some((_, p)) => *p += o.probability,
                    None => out.push((ep.clone(), o.probability)),
                }
            }
        }
        out
    }

    /// The deciding rule's comment of the first REJECT/DROP outcome, if any.
    pub fn rejecting_comment(&self) -> Option<&str> {
        self.outcomes
            .iter()
            .find(|o| matches!(o.verdict, Verdict::Reject | Verdict::Drop))
            .and_then(|o| o.comment.as_deref())
    }
}

/// Adds one path's outcome, summing its probability into an identical outcome already seen.
pub fn merge_outcome(outcomes: &mut Vec<Outcome>, o: Outcome) {
    match outcomes.iter_mut().find(|x| {
        x.verdict == o.verdict
            && x.endpoint == o.endpoint
            && x.masquerade == o.masquerade
            && x.rule == o.rule
    }) {
        Some(x) => x.probability += o.probability,
        None => outcomes.push(o),
    }
}

/// Formats `ip:port` the way kube-proxy and `net.JoinHostPort` do (`[v6]:port`).
pub fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Findings a trace proves on its own: a REJECT kube-proxy programs for a Service without
/// endpoints (`ns/svc:port has no endpoints`) is `svc.no-endpoints`; a DROP for a Service
/// with `externalTrafficPolicy: Local` and no endpoint on this node is
/// `svc.nodeport-unreachable` (this node only).
pub fn findings(result: &TraceResult, pkt: &Packet) -> Vec<Finding> {
    let mut out = Vec::new();
    let target = format!("{}/{}", join_host_port(pkt.dst, pkt.dport), pkt.proto);
    for o in &result.outcomes {
        let (Some(comment), Some(rule)) = (&o.comment, &o.rule) else {
            continue;
        };
        let step = result.walk.iter().rev().find(|s| &s.rule == rule);
        let source = match step {
            Some(s) => format!("rule {}/{} (line {})", s.table, s.chain, s.line),
            None => "rule".to_string(),
        };
        if o.verdict == Verdict::Reject {
            if let Some(svc) = comment.strip_suffix(" has no endpoints") {
                let (ns_name, _port) = svc.split_once(':').unwrap_or((svc, ""));
                let (ns, name) = ns_name.split_once('/').unwrap_or(("default", ns_name));
                out.push(
                    Finding::new(
                        Code::SvcNoEndpoints,
                        format!(
                            "Service {svc} has no endpoints: kube-proxy rejects {target} (connection refused)"
                        ),
                    )
                    .evidence(source, rule.clone())
                    .remediation(format!(
                        "the Service's selector matches no ready pod: compare `kubectl get svc -n {ns} {name} -o jsonpath='{{.spec.selector}}'` with `kubectl get pods -n {ns} --show-labels`, and check `kubectl get endpointslices -n {ns} -l kubernetes.io/service-name={name}`"
                    )),
                );
            }
        } else if o.verdict == Verdict::Drop {
            if let Some(svc) = comment.strip_suffix(" has no local endpoints") {
                out.push(
                    Finding::new(
                        Code::SvcNodeportUnreachable,
                        format!(
                            "Service {svc} has externalTrafficPolicy: Local and no endpoint on this node: kube-proxy drops {target} here"
                        ),
                    )
                    .severity(Severity::Warning)
                    .evidence(source, rule.clone())
                    .remediation(
                        "send external traffic only to nodes that run an endpoint (the load balancer's health check on healthCheckNodePort does this), or use externalTrafficPolicy: Cluster",
                    ),
                );
            }
        }
    }
    out.dedup_by(|a, b| a.summary == b.summary);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trips_and_rejects_unknown() {
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            assert_eq!(p.as_str().parse::<Proto>().unwrap(), p);
            assert_eq!(p.number().to_string().parse::<Proto>().unwrap(), p);
        }
        assert!("icmp"
            .parse::<Proto>()
            .unwrap_err()
            .to_string()
            .contains("icmp"));
    }

    #[test]
    fn local_is_node_ips_and_loopback() {
        let ctx = NodeContext {
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        };
        assert!(ctx.is_local("192.168.0.2".parse().unwrap()));
        assert!(ctx.is_local("127.0.0.1".parse().unwrap()));
        assert!(ctx.is_local("::1".parse().unwrap()));
        assert!(!ctx.is_local("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn host_port_formats_v6_in_brackets() {
        assert_eq!(
            join_host_port("10.0.0.1".parse().unwrap(), 80),
            "10.0.0.1:80"
        );
        assert_eq!(
            join_host_port("fd00::1".parse().unwrap(), 80),
            "[fd00::1]:80"
        );
    }

    #[test]
    fn endpoint_probabilities_sum_paths() {
        let o = |ep: &str, p| Outcome {
            verdict: Verdict::Dnat,
            endpoint: Some(ep.into()),
            probability: p,
            masquerade: false,
            rule: None,
            comment: None,
        };
        let r = TraceResult {
            verdict: Verdict::Dnat,
            endpoints: vec!["a:1".into(), "b:1".into()],
            masquerade: false,
            outcomes: vec![o("a:1", 0.25), o("b:1", 0.5), o("a:1", 0.25)],
            walk: vec![],
            unknown: vec![],
            notes: vec![],
        };
        assert_eq!(
            r.endpoint_probabilities(),
            vec![("a:1".to_string(), 0.5), ("b:1".to_string(), 0.5)]
        );
        assert_eq!(r.rejecting_comment(), None);
        assert!(findings(
            &r,
            &Packet {
                src: "10.0.0.2".parse().unwrap(),
                dst: "10.96.0.1".parse().unwrap(),
                dport: 80,
                proto: Proto::Tcp,
            }
        )
        .is_empty());
    }

    #[test]
    fn reject_with_no_endpoints_comment_is_svc_no_endpoints() {
        let rule = "-A KUBE-SERVICES -m comment --comment \"ns6/svc6:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT";
        let r = TraceResult {
            verdict: Verdict::Reject,
            endpoints: vec![],
            masquerade: false,
            outcomes: vec![Outcome {
                verdict: Verdict::Reject,
                endpoint: None,
                probability: 1.0,
                masquerade: false,
                rule: Some(rule.into()),
                comment: Some("ns6/svc6:p80 has no endpoints".into()),
            }],
            walk: vec![WalkStep {
                table: "filter".into(),
                chain: "KUBE-SERVICES".into(),
                rule: rule.into(),
                line: 7,
                depth: 0,
                probability: 1.0,
                notes: vec![],
            }],
            unknown: vec![],
            notes: vec![],
        };
        let pkt = Packet {
            src: "10.0.0.2".parse().unwrap(),
            dst: "172.30.0.46".parse().unwrap(),
            dport: 80,
            proto: Proto::Tcp,
        };
        let f = findings(&r, &pkt);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::SvcNoEndpoints);
        assert!(f[0].summary.contains("ns6/svc6:p80"));
        assert_eq!(
            f[0].evidence[0].source,
            "rule filter/KUBE-SERVICES (line 7)"
        );
        assert!(f[0].remediation.contains("-n ns6"));
    }
}
