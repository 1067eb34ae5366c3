//! Renders what kube-proxy's IPVS mode (pkg/proxy/ipvs/proxier.go) programs for a set of
//! Service ports: the virtual-server table as `ipvsadm -Sn`, the `KUBE-*` ipsets as
//! `ipset save`, and its iptables rules (`KUBE-SERVICES` matching `KUBE-CLUSTER-IP`,
//! `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`, `KUBE-NODE-PORT`, the filter chains) as
//! `iptables-save`. Pure.
//!
//! Follows the proxier: a virtual service (scheduler `rr`) per ClusterIP, externalIP and
//! load-balancer IP port, and one per node IP for a NodePort; ClientIP affinity is
//! persistence (`-p TIMEOUT`); real servers are the ready endpoints, masqueraded (`-m`), weight
//! 1; `externalTrafficPolicy: Local` gives the external virtual services the node's local
//! endpoints (all endpoints when it has none, as kube-proxy does since #97081) and puts them in
//! the `*-LOCAL` sets. Not rendered: health-check NodePorts, `--masquerade-all`, terminating
//! endpoints (weight 0), `internalTrafficPolicy: Local`, topology hints, IPv6.

use crate::iptables::IpNet;
use crate::nft::render::NftServicePort;
use crate::trace::{join_host_port, Proto};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// kube-proxy settings (and node facts) that change what the IPVS mode programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsRenderConfig {
    /// The node's IPs (`--nodeport-addresses`): NodePort virtual services listen on each.
    pub node_ips: Vec<IpAddr>,
    /// `--cluster-cidr`: traffic from outside it to a ClusterIP is masqueraded; `None`
    /// masquerades node-originated traffic from a VIP source instead (kube-proxy's fallback).
    pub cluster_cidr: Option<IpNet>,
}

/// The three files of one node in IPVS mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsRender {
    /// `ipvsadm -Sn`.
    pub ipvsadm: String,
    /// `ipset save`.
    pub ipset: String,
    /// `iptables-save` (filter and nat).
    pub iptables: String,
}

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit=14`).
const MASQ_MARK: &str = "0x4000/0x4000";

/// The sets of ipset.go with their type and comment, in kube-proxy's order.
const SETS: &[(&str, &str, &str)] = &[
    (
        "KUBE-LOOP-BACK",
        "hash:ip,port,ip",
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        "KUBE-CLUSTER-IP",
        "hash:ip,port",
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        "KUBE-EXTERNAL-IP",
        "hash:ip,port",
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        "KUBE-EXTERNAL-IP-LOCAL",
        "hash:ip,port",
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-LOAD-BALANCER",
        "hash:ip,port",
        "Kubernetes service lb portal",
    ),
    (
        "KUBE-LOAD-BALANCER-FW",
        "hash:ip,port",
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        "KUBE-LOAD-BALANCER-LOCAL",
        "hash:ip,port",
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        "hash:ip,port,ip",
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "hash:ip,port,net",
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (
        "KUBE-NODE-PORT-TCP",
        "bitmap:port",
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-TCP",
        "bitmap:port",
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-UDP",
        "bitmap:port",
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-UDP",
        "bitmap:port",
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-SCTP-HASH",
        "hash:ip,port",
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        "hash:ip,port",
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (
        "KUBE-HEALTH-CHECK-NODE-PORT",
        "bitmap:port",
        "Kubernetes health check node port",
    ),
    (
        "KUBE-IPVS-IPS",
        "hash:ip",
        "Addresses on the ipvs interface",
    ),
];

/// ipsetWithIptablesChain: (set, table, from chain, target, match flags, `-p`).
const SET_RULES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "KUBE-LOOP-BACK",
        "nat",
        "KUBE-POSTROUTING",
        "MASQUERADE",
        "dst,dst,src",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER",
        "nat",
        "KUBE-SERVICES",
        "KUBE-LOAD-BALANCER",
        "dst,dst",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER-LOCAL",
        "nat",
        "KUBE-LOAD-BALANCER",
        "RETURN",
        "dst,dst",
        "",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-TCP",
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst",
        "tcp",
    ),
    (
        "KUBE-NODE-PORT-TCP",
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst",
        "tcp",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-UDP",
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst",
        "udp",
    ),
    (
        "KUBE-NODE-PORT-UDP",
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst",
        "udp",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst,dst",
        "sctp",
    ),
    (
        "KUBE-NODE-PORT-SCTP-HASH",
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst,dst",
        "sctp",
    ),
    (
        "KUBE-LOAD-BALANCER-FW",
        "filter",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "dst,dst",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
];

fn comment_of(set: &str) -> &'static str {
    SETS.iter()
        .find(|(n, _, _)| *n == set)
        .map(|(_, _, c)| *c)
        .unwrap_or("")
}

/// `10.96.0.1,tcp:443`.
fn ip_port(ip: IpAddr, proto: Proto, port: u16) -> String {
    format!("{ip},{proto}:{port}")
}

fn opt(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "-t",
        Proto::Udp => "-u",
        Proto::Sctp => "--sctp-service",
    }
}

/// One virtual service with its real servers.
struct Vs {
    proto: Proto,
    addr: IpAddr,
    port: u16,
    persistent: Option<u32>,
    reals: Vec<(IpAddr, u16)>,
}

/// Renders the three files (see the module docs).
pub fn render_ipvs(ports: &[NftServicePort], cfg: &IpvsRenderConfig) -> IpvsRender {
    let mut sets: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut add = |set: &'static str, entry: String| {
        let v = sets.entry(set).or_default();
        if !v.contains(&entry) {
            v.push(entry);
        }
    };
    let mut vss: Vec<Vs> = Vec::new();
    for sp in ports {
        let b = &sp.base;
        let proto = b.protocol;
        let ready: Vec<(IpAddr, u16)> = b
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| (e.ip, e.port))
            .collect();
        let local: Vec<(IpAddr, u16)> = ready
            .iter()
            .copied()
            .filter(|(ip, _)| sp.local_endpoints.contains(ip))
            .collect();
        // external traffic with policy Local: the local endpoints, or all when there are none
        let external = if sp.external_policy_local && !local.is_empty() {
            local.clone()
        } else {
            ready.clone()
        };
        for (ip, port) in &local {
            add("KUBE-LOOP-BACK", format!("{ip},{proto}:{port},{ip}"));
        }
        add("KUBE-CLUSTER-IP", ip_port(b.cluster_ip, proto, b.port));
        add("KUBE-IPVS-IPS", b.cluster_ip.to_string());
        let vs = |addr: IpAddr, port: u16, reals: &[(IpAddr, u16)]| Vs {
            proto,
            addr,
            port,
            persistent: sp.affinity_timeout,
            reals: reals.to_vec(),
        };
        vss.push(vs(b.cluster_ip, b.port, &ready));
        for ip in &sp.external_ips {
            add(
                if sp.external_policy_local {
                    "KUBE-EXTERNAL-IP-LOCAL"
                } else {
                    "KUBE-EXTERNAL-IP"
                },
                ip_port(*ip, proto, b.port),
            );
            add("KUBE-IPVS-IPS", ip.to_string());
            vss.push(vs(*ip, b.port, &external));
        }
        for ip in &sp.load_balancer_ips {
            add("KUBE-LOAD-BALANCER", ip_port(*ip, proto, b.port));
            if sp.external_policy_local {
                add("KUBE-LOAD-BALANCER-LOCAL", ip_port(*ip, proto, b.port));
            }
            if !sp.source_ranges.is_empty() {
                add("KUBE-LOAD-BALANCER-FW", ip_port(*ip, proto, b.port));
                for r in &sp.source_ranges {
                    add(
                        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                        format!("{ip},{proto}:{},{}/{}", b.port, r.addr, r.prefix),
                    );
                }
            }
            add("KUBE-IPVS-IPS", ip.to_string());
            vss.push(vs(*ip, b.port, &external));
        }
        if let Some(np) = b.node_port {
            match proto {
                Proto::Tcp | Proto::Udp => {
                    let (all, loc) = if proto == Proto::Tcp {
                        ("KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-LOCAL-TCP")
                    } else {
                        ("KUBE-NODE-PORT-UDP", "KUBE-NODE-PORT-LOCAL-UDP")
                    };
                    add(all, np.to_string());
                    if sp.external_policy_local {
                        add(loc, np.to_string());
                    }
                }
                Proto::Sctp => {
                    for ip in &cfg.node_ips {
                        add("KUBE-NODE-PORT-SCTP-HASH", ip_port(*ip, proto, np));
                        if sp.external_policy_local {
                            add("KUBE-NODE-PORT-LOCAL-SCTP-HASH", ip_port(*ip, proto, np));
                        }
                    }
                }
            }
            for ip in &cfg.node_ips {
                vss.push(vs(*ip, np, &external));
            }
        }
    }
    IpvsRender {
        ipvsadm: render_ipvsadm(&vss),
        ipset: render_sets(&sets),
        iptables: render_rules(&sets, cfg),
    }
}

fn render_ipvsadm(vss: &[Vs]) -> String {
    let mut s = String::new();
    for v in vss {
        let key = format!("{} {}", opt(v.proto), join_host_port(v.addr, v.port));
        let _ = write!(s, "-A {key} -s rr");
        if let Some(t) = v.persistent {
            let _ = write!(s, " -p {t}");
        }
        s.push('\n');
        for (ip, port) in &v.reals {
            let _ = writeln!(s, "-a {key} -r {} -m -w 1", join_host_port(*ip, *port));
        }
    }
    s
}

fn render_sets(sets: &BTreeMap<&str, Vec<String>>) -> String {
    let mut s = String::new();
    for (name, kind, _) in SETS {
        let opts = if *kind == "bitmap:port" {
            "range 0-65535 comment".to_string()
        } else {
            "family inet hashsize 1024 maxelem 65536 comment".to_string()
        };
        let _ = writeln!(s, "create {name} {kind} {opts}");
        for e in sets.get(name).map(Vec::as_slice).unwrap_or_default() {
            let _ = writeln!(s, "add {name} {e}");
        }
    }
    s
}

/// A table being written: chains in order of declaration, rules per chain.
#[derive(Default)]
struct Tbl {
    builtin: Vec<&'static str>,
    chains: Vec<&'static str>,
    rules: BTreeMap<&'static str, Vec<String>>,
}

impl Tbl {
    fn rule(&mut self, chain: &'static str, r: String) {
        self.rules.entry(chain).or_default().push(r);
    }

    fn write(&self, out: &mut String, name: &str) {
        let _ = writeln!(
            out,
            "# Generated by iptables-save v1.8.9 on Thu Jan  1 00:00:00 1970\n*{name}"
        );
        for c in &self.builtin {
            let _ = writeln!(out, ":{c} ACCEPT [0:0]");
        }
        let mut user = self.chains.clone();
        user.sort_unstable();
        for c in &user {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in self.builtin.iter().chain(&user) {
            for r in self.rules.get(c).map(Vec::as_slice).unwrap_or_default() {
                let _ = writeln!(out, "-A {c} {r}");
            }
        }
        out.push_str("COMMIT\n# Completed on Thu Jan  1 00:00:00 1970\n");
    }
}

fn render_rules(sets: &BTreeMap<&str, Vec<String>>, cfg: &IpvsRenderConfig) -> String {
    let has = |n: &str| sets.get(n).is_some_and(|v| !v.is_empty());
    let mut nat = Tbl {
        builtin: vec!["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        chains: vec![
            "KUBE-SERVICES",
            "KUBE-POSTROUTING",
            "KUBE-NODE-PORT",
            "KUBE-LOAD-BALANCER",
            "KUBE-MARK-MASQ",
        ],
        ..Tbl::default()
    };
    let mut filter = Tbl {
        builtin: vec!["INPUT", "FORWARD", "OUTPUT"],
        chains: vec![
            "KUBE-FORWARD",
            "KUBE-NODE-PORT",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
        ],
        ..Tbl::default()
    };
    // iptablesJumpChain, each prepended: the last one listed ends up first
    let jump = |c: &str, to: &str| format!("-m comment --comment \"{c}\" -j {to}");
    nat.rule(
        "PREROUTING",
        jump("kubernetes service portals", "KUBE-SERVICES"),
    );
    nat.rule(
        "OUTPUT",
        jump("kubernetes service portals", "KUBE-SERVICES"),
    );
    nat.rule(
        "POSTROUTING",
        jump("kubernetes postrouting rules", "KUBE-POSTROUTING"),
    );
    filter.rule(
        "INPUT",
        jump("kubernetes ipvs access filter", "KUBE-IPVS-FILTER"),
    );
    filter.rule(
        "INPUT",
        jump("kube-proxy firewall rules", "KUBE-PROXY-FIREWALL"),
    );
    filter.rule(
        "INPUT",
        jump("kubernetes health check rules", "KUBE-NODE-PORT"),
    );
    filter.rule(
        "FORWARD",
        jump("kube-proxy firewall rules", "KUBE-PROXY-FIREWALL"),
    );
    filter.rule(
        "FORWARD",
        jump("kubernetes forwarding rules", "KUBE-FORWARD"),
    );
    filter.rule(
        "OUTPUT",
        jump("kubernetes ipvs access filter", "KUBE-IPVS-OUT-FILTER"),
    );
    // writeIptablesRules
    nat.rule("KUBE-SERVICES", "-s 127.0.0.0/8 -j RETURN".into());
    for (set, table, from, to, flags, p) in SET_RULES {
        if !has(set) {
            continue;
        }
        let proto = if p.is_empty() {
            String::new()
        } else {
            format!("-p {p} ")
        };
        let r = format!(
            "{proto}-m comment --comment \"{}\" -m set --match-set {set} {flags} -j {to}",
            comment_of(set)
        );
        if *table == "nat" {
            nat.rule(from, r);
        } else {
            filter.rule(from, r);
        }
    }
    let set_comment = |set: &str| {
        format!(
            "-m comment --comment \"{}\" -m set --match-set {set}",
            comment_of(set)
        )
    };
    if has("KUBE-CLUSTER-IP") {
        let r = match &cfg.cluster_cidr {
            Some(c) => format!(
                "! -s {}/{} {} dst,dst -j KUBE-MARK-MASQ",
                c.addr,
                c.prefix,
                set_comment("KUBE-CLUSTER-IP")
            ),
            None => format!(
                "{} src,dst -j KUBE-MARK-MASQ",
                set_comment("KUBE-CLUSTER-IP")
            ),
        };
        nat.rule("KUBE-SERVICES", r);
    }
    for set in ["KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL"] {
        if !has(set) {
            continue;
        }
        let m = format!("{} dst,dst", set_comment(set));
        if set == "KUBE-EXTERNAL-IP" {
            nat.rule("KUBE-SERVICES", format!("{m} -j KUBE-MARK-MASQ"));
        }
        nat.rule(
            "KUBE-SERVICES",
            format!("{m} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"),
        );
        nat.rule(
            "KUBE-SERVICES",
            format!("{m} -m addrtype --dst-type LOCAL -j ACCEPT"),
        );
    }
    nat.rule(
        "KUBE-SERVICES",
        "-m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into(),
    );
    nat.rule("KUBE-LOAD-BALANCER", "-j KUBE-MARK-MASQ".into());
    filter.rule("KUBE-SOURCE-RANGES-FIREWALL", "-j DROP".into());
    for set in ["KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"] {
        if has(set) {
            nat.rule(
                "KUBE-SERVICES",
                format!("-m set --match-set {set} dst,dst -j ACCEPT"),
            );
        }
    }
    filter.rule(
        "KUBE-FORWARD",
        format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"),
    );
    filter.rule(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    );
    filter.rule(
        "KUBE-NODE-PORT",
        format!(
            "{} dst -j ACCEPT",
            set_comment("KUBE-HEALTH-CHECK-NODE-PORT")
        ),
    );
    for (set, flags) in [
        ("KUBE-LOAD-BALANCER", "dst,dst"),
        ("KUBE-CLUSTER-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP-LOCAL", "dst,dst"),
        ("KUBE-HEALTH-CHECK-NODE-PORT", "dst"),
    ] {
        filter.rule(
            "KUBE-IPVS-FILTER",
            format!("-m set --match-set {set} {flags} -j RETURN"),
        );
    }
    filter.rule(
        "KUBE-IPVS-FILTER",
        "-m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable".into(),
    );
    nat.rule(
        "KUBE-POSTROUTING",
        format!("-m mark ! --mark {MASQ_MARK} -j RETURN"),
    );
    nat.rule("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0".into());
    nat.rule(
        "KUBE-POSTROUTING",
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
    );
    nat.rule("KUBE-MARK-MASQ", "-j MARK --set-xmark 0x4000/0x4000".into());
    let mut s = String::new();
    filter.write(&mut s, "filter");
    nat.write(&mut s, "nat");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse_iptables_save;
    use crate::iptables::render::{RenderEndpoint, RenderServicePort};
    use crate::ipvs::{parse_ipset_save, parse_ipvs, trace_node};
    use crate::trace::{NodeContext, Packet, Verdict};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn port(name: &str, cip: &str, np: Option<u16>, eps: &[(&str, bool)]) -> NftServicePort {
        NftServicePort::from(RenderServicePort {
            namespace: "ns".into(),
            name: name.into(),
            port_name: "p80".into(),
            protocol: Proto::Tcp,
            cluster_ip: cip.parse().unwrap(),
            port: 80,
            node_port: np,
            endpoints: eps
                .iter()
                .map(|(ip, ready)| RenderEndpoint {
                    ip: ip.parse().unwrap(),
                    port: 8080,
                    ready: *ready,
                })
                .collect(),
        })
    }

    fn cfg() -> IpvsRenderConfig {
        IpvsRenderConfig {
            node_ips: vec!["192.168.0.2".parse().unwrap()],
            cluster_cidr: Some(IpNet {
                addr: "10.244.0.0".parse().unwrap(),
                prefix: 16,
            }),
        }
    }

    fn pkt(src: &str, dst: &str, dport: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            dport,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn renders_kube_proxy_formats_and_traces_them() {
        let mut web = port(
            "web",
            "10.96.0.20",
            Some(30080),
            &[
                ("10.244.1.5", true),
                ("10.244.2.6", true),
                ("10.244.2.7", false),
            ],
        );
        web.affinity_timeout = Some(10800);
        web.local_endpoints = vec!["10.244.1.5".parse().unwrap()];
        let empty = port("empty", "10.96.0.21", None, &[]);
        let out = render_ipvs(&[web, empty], &cfg());
        assert!(out.ipvsadm.starts_with(
            "-A -t 10.96.0.20:80 -s rr -p 10800\n-a -t 10.96.0.20:80 -r 10.244.1.5:8080 -m -w 1\n"
        ));
        assert!(out
            .ipvsadm
            .contains("-A -t 192.168.0.2:30080 -s rr -p 10800\n"));
        assert!(!out.ipvsadm.contains("10.244.2.7"), "not ready");
        assert!(out
            .ipset
            .contains("add KUBE-CLUSTER-IP 10.96.0.20,tcp:80\n"));
        assert!(out
            .ipset
            .contains("add KUBE-LOOP-BACK 10.244.1.5,tcp:8080,10.244.1.5\n"));
        assert!(out.ipset.contains("add KUBE-NODE-PORT-TCP 30080\n"));
        assert!(out.iptables.contains(
            "-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"
        ));
        let table = parse_ipvs(&out.ipvsadm).unwrap();
        let sets = parse_ipset_save(&out.ipset).unwrap();
        let rules = parse_iptables_save(&out.iptables).unwrap();
        let ctx = NodeContext {
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        };
        let t = |p: Packet| trace_node(&table, &sets, &rules, &p, &ctx);
        // from a pod: both ready endpoints, no masquerade, nothing unknown but physdev-free
        let r = t(pkt("10.244.3.9", "10.96.0.20", 80));
        assert_eq!(r.verdict, Verdict::Dnat);
        assert_eq!(r.endpoints, vec!["10.244.1.5:8080", "10.244.2.6:8080"]);
        assert!(!r.masquerade);
        assert!(r.unknown.is_empty(), "{:?}", r.unknown);
        assert!(
            !r.notes.iter().any(|n| n.contains("not evaluated")),
            "{:?}",
            r.notes
        );
        // from outside the cluster CIDR: masqueraded
        let r = t(pkt("203.0.113.9", "10.96.0.20", 80));
        assert!(r.masquerade && r.outcomes.iter().all(|o| o.masquerade));
        assert!(r.walk.iter().any(|s| s.chain == "KUBE-MARK-MASQ"));
        // NodePort: masqueraded
        let r = t(pkt("203.0.113.9", "192.168.0.2", 30080));
        assert_eq!(r.endpoints.len(), 2);
        assert!(r.masquerade);
        // hairpin: the endpoint reaching itself through the VIP is masqueraded on that path only
        let r = t(pkt("10.244.1.5", "10.96.0.20", 80));
        let hair: Vec<bool> = r.outcomes.iter().map(|o| o.masquerade).collect();
        assert_eq!(hair, vec![true, false]);
        // a VIP on a port no virtual service serves: KUBE-IPVS-FILTER rejects
        let r = t(pkt("10.244.3.9", "10.96.0.20", 81));
        assert_eq!(r.verdict, Verdict::Reject);
        assert!(r.walk.last().unwrap().chain == "KUBE-IPVS-FILTER");
        // from the node itself: IPVS takes it at LOCAL_OUT; an unserved port is still
        // rejected once it is delivered over loopback (filter INPUT)
        let r = t(pkt("192.168.0.2", "10.96.0.20", 80));
        assert_eq!(r.verdict, Verdict::Dnat);
        assert!(r.masquerade, "a node source is outside the cluster CIDR");
        assert_eq!(
            t(pkt("192.168.0.2", "10.96.0.20", 81)).verdict,
            Verdict::Reject
        );
        // no endpoints: a virtual service without real servers refuses (ICMP port unreachable)
        let r = t(pkt("10.244.3.9", "10.96.0.21", 80));
        assert_eq!(r.verdict, Verdict::Reject);
        // not an address of this node: untouched
        let r = t(pkt("10.244.3.9", "10.244.2.6", 8080));
        assert_eq!(r.verdict, Verdict::NoMatch);
    }

    #[test]
    fn local_policy_uses_local_endpoints_externally() {
        let mut web = port(
            "web",
            "10.96.0.20",
            Some(30080),
            &[("10.244.1.5", true), ("10.244.2.6", true)],
        );
        web.external_policy_local = true;
        web.local_endpoints = vec!["10.244.2.6".parse().unwrap()];
        web.external_ips = vec!["198.51.100.7".parse().unwrap()];
        let out = render_ipvs(&[web], &cfg());
        assert!(out.ipset.contains("add KUBE-NODE-PORT-LOCAL-TCP 30080\n"));
        assert!(out
            .ipset
            .contains("add KUBE-EXTERNAL-IP-LOCAL 198.51.100.7,tcp:80\n"));
        let table = parse_ipvs(&out.ipvsadm).unwrap();
        let sets = parse_ipset_save(&out.ipset).unwrap();
        let rules = parse_iptables_save(&out.iptables).unwrap();
        let ctx = NodeContext {
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        };
        let r = trace_node(
            &table,
            &sets,
            &rules,
            &pkt("203.0.113.9", "192.168.0.2", 30080),
            &ctx,
        );
        assert_eq!(r.endpoints, vec!["10.244.2.6:8080"]);
        assert!(!r.masquerade, "Local keeps the client address");
        let r = trace_node(
            &table,
            &sets,
            &rules,
            &pkt("10.244.3.9", "10.96.0.20", 80),
            &ctx,
        );
        assert_eq!(r.endpoints.len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// model -> render -> parse -> trace: every Service port reaches exactly its ready
        /// endpoints with probability 1/n (a reject when it has none), masqueraded exactly when
        /// the client is outside the cluster CIDR; NodePorts the same, always masqueraded.
        #[test]
        fn rendered_ipvs_mode_routes_like_the_model(
            svcs in prop::collection::vec(
                (prop::collection::vec((1u8..250, any::<bool>()), 0..5), prop::option::of(30000u16..30100), 1u16..2000),
                1..6),
            from_pod in any::<bool>(),
        ) {
            let mut ports = Vec::new();
            let mut used_np = BTreeSet::new();
            for (i, (eps, np, p)) in svcs.iter().enumerate() {
                let np = np.filter(|n| used_np.insert(*n));
                let eps: Vec<(String, bool)> = eps.iter().map(|(h, r)| (format!("10.244.1.{h}"), *r)).collect();
                let refs: Vec<(&str, bool)> = eps.iter().map(|(s, r)| (s.as_str(), *r)).collect();
                let mut sp = port(&format!("s{i}"), &format!("10.96.0.{}", 10 + i), np, &refs);
                sp.base.port = *p;
                sp.base.endpoints.dedup_by(|a, b| a.ip == b.ip);
                ports.push(sp);
            }
            let out = render_ipvs(&ports, &cfg());
            let table = parse_ipvs(&out.ipvsadm).unwrap();
            let sets = parse_ipset_save(&out.ipset).unwrap();
            let rules = parse_iptables_save(&out.iptables).unwrap();
            let ctx = NodeContext { node_ips: vec!["192.168.0.2".parse().unwrap()] };
            let src = if from_pod { "10.244.3.250" } else { "203.0.113.9" };
            for sp in &ports {
                let want: BTreeSet<String> = sp.base.endpoints.iter().filter(|e| e.ready)
                    .map(|e| join_host_port(e.ip, e.port)).collect();
                let mut dsts = vec![(sp.base.cluster_ip, sp.base.port, !from_pod)];
                if let Some(np) = sp.base.node_port {
                    dsts.push(("192.168.0.2".parse().unwrap(), np, true));
                }
                for (dst, dport, masq) in dsts {
                    let r = trace_node(&table, &sets, &rules, &Packet { src: src.parse().unwrap(), dst, dport, proto: Proto::Tcp }, &ctx);
                    let got: BTreeSet<String> = r.endpoints.iter().cloned().collect();
                    prop_assert_eq!(&got, &want, "{}:{}", dst, dport);
                    prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                    if want.is_empty() {
                        prop_assert_eq!(r.verdict, Verdict::Reject);
                    } else {
                        prop_assert_eq!(r.verdict, Verdict::Dnat);
                        prop_assert_eq!(r.masquerade, masq, "{}:{}", dst, dport);
                        for (_, p) in r.endpoint_probabilities() {
                            prop_assert!((p - 1.0 / want.len() as f64).abs() < 1e-9);
                        }
                    }
                }
            }
        }
    }
}
