//! Renders what kube-proxy's nftables mode programs for a set of Service ports: the
//! `kube-proxy` table with its base chains, the `service-ips` / `service-nodeports` /
//! `no-endpoint-*` / `firewall-ips` maps, and the per-Service `service-`, `external-`,
//! `local-`, `firewall-` and `endpoint-` chains (kube-proxy's chain names and hashes), as an
//! `nft -f` script (what kube-proxy sends) or as `nft list ruleset` text. Pure.
//!
//! Follows pkg/proxy/nftables/proxier.go: ClusterIP, NodePort, externalIPs, LoadBalancer IPs
//! with loadBalancerSourceRanges, `externalTrafficPolicy: Local`, ClientIP session affinity,
//! Services without endpoints. Not rendered: `internalTrafficPolicy: Local`, topology hints,
//! terminating endpoints, `--masquerade-all`.

use crate::iptables::render::RenderServicePort;
use crate::iptables::IpNet;
use crate::trace::join_host_port;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::IpAddr;

/// One Service port with what the nftables mode needs beyond the iptables renderer's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftServicePort {
    /// Name, ClusterIP, port, NodePort and endpoints.
    pub base: RenderServicePort,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`.
    pub source_ranges: Vec<IpNet>,
    /// `externalTrafficPolicy: Local`.
    pub external_policy_local: bool,
    /// ClientIP session affinity with this timeout (seconds).
    pub affinity_timeout: Option<u32>,
    /// Endpoint IPs on this node (for `externalTrafficPolicy: Local`).
    pub local_endpoints: Vec<IpAddr>,
    /// `internalTrafficPolicy: Local` (rendered by the iptables renderer only).
    pub internal_policy_local: bool,
    /// Endpoint IPs that are not ready but serving and terminating: kube-proxy falls back to
    /// them when no ready endpoint is left (rendered by the iptables renderer only).
    pub serving_terminating: Vec<IpAddr>,
    /// `spec.healthCheckNodePort` (rendered by the iptables renderer only).
    pub health_check_node_port: Option<u16>,
}

impl From<RenderServicePort> for NftServicePort {
    fn from(base: RenderServicePort) -> Self {
        NftServicePort {
            base,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            external_policy_local: false,
            affinity_timeout: None,
            local_endpoints: Vec::new(),
            internal_policy_local: false,
            serving_terminating: Vec::new(),
            health_check_node_port: None,
        }
    }
}

/// kube-proxy settings that change the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRenderConfig {
    /// Render the `ip6` table (IPv6 Services) rather than `ip`.
    pub ipv6: bool,
    /// The pod CIDR (`--cluster-cidr`): traffic from outside it to a ClusterIP is
    /// masqueraded; `None` disables local-traffic detection.
    pub pod_cidr: Option<IpNet>,
    /// Service CIDRs: traffic to an unallocated ClusterIP is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses` resolved to the node's IPs; `None` accepts NodePorts on every
    /// local address (`fib daddr type local`).
    pub nodeport_ips: Option<Vec<IpAddr>>,
    /// The node's primary IP (a source range containing it also admits the LB IPs).
    pub node_ip: Option<IpAddr>,
}

/// kube-proxy's `hashAndTruncate`: the first 8 base32 characters of the name's SHA-256,
/// a dash, the name.
fn hash_and_truncate(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let enc = data_encoding::BASE32.encode(&digest);
    let mut s = format!("{}-{name}", &enc[..8]);
    if s.len() > 240 {
        let mut cut = 237;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// `HASH-ns/name/proto/port`, the base of the `service-`, `external-`, `local-` and
/// `firewall-` chain names.
pub fn service_chain_base(sp: &RenderServicePort) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        sp.namespace, sp.name, sp.protocol, sp.port_name
    ))
}

/// `HASH-ns/name/proto/port__IP/PORT`, the base of `endpoint-` chains and `affinity-` sets.
pub fn endpoint_chain_base(sp: &RenderServicePort, ip: IpAddr, port: u16) -> String {
    let ip = ip.to_string().replace(':', ".");
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{ip}/{port}",
        sp.namespace, sp.name, sp.protocol, sp.port_name
    ))
}

struct SetDecl {
    name: String,
    map: bool,
    ty: String,
    flags: Option<&'static str>,
    timeout: Option<String>,
    comment: Option<&'static str>,
    elements: Vec<String>,
}

struct ChainDecl {
    name: String,
    base: Option<(&'static str, &'static str, i32)>,
    comment: Option<&'static str>,
    rules: Vec<String>,
}

struct Doc {
    family: &'static str,
    sets: Vec<SetDecl>,
    chains: Vec<ChainDecl>,
    chain_ix: std::collections::HashMap<String, usize>,
}

impl Doc {
    fn chain(&mut self, name: &str) -> &mut ChainDecl {
        let i = match self.chain_ix.get(name) {
            Some(&i) => i,
            None => {
                self.chains.push(ChainDecl {
                    name: name.to_string(),
                    base: None,
                    comment: None,
                    rules: Vec::new(),
                });
                self.chain_ix
                    .insert(name.to_string(), self.chains.len() - 1);
                self.chains.len() - 1
            }
        };
        &mut self.chains[i]
    }

    fn rule(&mut self, chain: &str, rule: impl Into<String>) {
        self.chain(chain).rules.push(rule.into());
    }

    fn elem(&mut self, set: &str, e: String) {
        if let Some(s) = self.sets.iter_mut().find(|s| s.name == set) {
            s.elements.push(e);
        }
    }
}

fn net(n: &IpNet) -> String {
    format!("{}/{}", n.addr, n.prefix)
}

fn build(ports: &[NftServicePort], cfg: &NftRenderConfig) -> Doc {
    let (ipx, addr_t, no_localhost) = if cfg.ipv6 {
        ("ip6", "ipv6_addr", "ip6 daddr != ::1")
    } else {
        ("ip", "ipv4_addr", "ip daddr != 127.0.0.0/8")
    };
    let mut d = Doc {
        family: ipx,
        sets: Vec::new(),
        chains: Vec::new(),
        chain_ix: std::collections::HashMap::new(),
    };
    let set = |name: &str, map: bool, ty: String, comment: &'static str| SetDecl {
        name: name.to_string(),
        map,
        ty,
        flags: None,
        timeout: None,
        comment: Some(comment),
        elements: Vec::new(),
    };
    let svc_key = format!("{addr_t} . inet_proto . inet_service");
    d.sets.push(set(
        "cluster-ips",
        false,
        addr_t.into(),
        "Active ClusterIPs",
    ));
    if cfg.nodeport_ips.is_some() {
        d.sets.push(set(
            "nodeport-ips",
            false,
            addr_t.into(),
            "IPs that accept NodePort traffic",
        ));
    }
    d.sets.push(set(
        "firewall-ips",
        true,
        format!("{svc_key} : verdict"),
        "destinations that are subject to LoadBalancerSourceRanges",
    ));
    d.sets.push(set(
        "no-endpoint-nodeports",
        true,
        "inet_proto . inet_service : verdict".into(),
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ));
    d.sets.push(set(
        "no-endpoint-services",
        true,
        format!("{svc_key} : verdict"),
        "vmap to drop or reject packets to services with no endpoints",
    ));
    d.sets.push(set(
        "service-ips",
        true,
        format!("{svc_key} : verdict"),
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ));
    d.sets.push(set(
        "service-nodeports",
        true,
        "inet_proto . inet_service : verdict".into(),
        "NodePort traffic",
    ));
    for name in [
        "cluster-ips-check",
        "filter-prerouting-pre-dnat",
        "filter-output-pre-dnat",
        "filter-forward",
        "filter-input",
        "filter-output",
        "firewall-check",
        "mark-for-masquerade",
        "masquerading",
        "nat-output",
        "nat-postrouting",
        "nat-prerouting",
        "nodeport-endpoints-check",
        "reject-chain",
        "services",
        "service-endpoints-check",
    ] {
        let base = match name {
            "filter-prerouting-pre-dnat" => Some(("filter", "prerouting", -110)),
            "filter-output-pre-dnat" => Some(("filter", "output", -110)),
            "filter-forward" => Some(("filter", "forward", 0)),
            "filter-input" => Some(("filter", "input", 0)),
            "filter-output" => Some(("filter", "output", 0)),
            "nat-output" => Some(("nat", "output", -100)),
            "nat-postrouting" => Some(("nat", "postrouting", 100)),
            "nat-prerouting" => Some(("nat", "prerouting", -100)),
            _ => None,
        };
        d.chain_ix.insert(name.to_string(), d.chains.len());
        d.chains.push(ChainDecl {
            name: name.into(),
            base,
            comment: (name == "reject-chain")
                .then_some("helper for @no-endpoint-services / @no-endpoint-nodeports"),
            rules: Vec::new(),
        });
    }
    d.rule(
        "cluster-ips-check",
        format!("{ipx} daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""),
    );
    if !cfg.service_cidrs.is_empty() {
        let cidrs: Vec<String> = cfg.service_cidrs.iter().map(net).collect();
        d.rule(
            "cluster-ips-check",
            format!(
                "{ipx} daddr {{ {} }} drop comment \"Drop traffic to unallocated ClusterIPs\"",
                cidrs.join(", ")
            ),
        );
    }
    d.rule(
        "filter-prerouting-pre-dnat",
        "ct state new jump firewall-check",
    );
    d.rule(
        "filter-forward",
        "ct state new jump service-endpoints-check",
    );
    d.rule("filter-forward", "ct state new jump cluster-ips-check");
    d.rule("filter-input", "ct state new jump nodeport-endpoints-check");
    d.rule("filter-input", "ct state new jump service-endpoints-check");
    d.rule("filter-output", "ct state new jump service-endpoints-check");
    d.rule("filter-output-pre-dnat", "ct state new jump firewall-check");
    d.rule("filter-output", "ct state new jump cluster-ips-check");
    d.rule(
        "firewall-check",
        format!("{ipx} daddr . meta l4proto . th dport vmap @firewall-ips"),
    );
    d.rule("mark-for-masquerade", "mark set mark or 0x4000");
    d.rule("masquerading", "mark and 0x4000 == 0 return");
    d.rule("masquerading", "mark set mark xor 0x4000");
    d.rule("masquerading", "masquerade fully-random");
    d.rule("nat-output", "jump services");
    d.rule("nat-postrouting", "jump masquerading");
    d.rule("nat-prerouting", "jump services");
    let nodeport_match = match &cfg.nodeport_ips {
        Some(_) => format!("{ipx} daddr @nodeport-ips"),
        None => format!("fib daddr type local {no_localhost}"),
    };
    d.rule(
        "nodeport-endpoints-check",
        format!("{nodeport_match} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    );
    d.rule("reject-chain", "reject");
    d.rule(
        "services",
        format!("{ipx} daddr . meta l4proto . th dport vmap @service-ips"),
    );
    d.rule(
        "services",
        format!("{nodeport_match} meta l4proto . th dport vmap @service-nodeports"),
    );
    if let Some(ips) = &cfg.nodeport_ips {
        for ip in ips {
            d.elem("nodeport-ips", ip.to_string());
        }
    }
    d.rule(
        "service-endpoints-check",
        format!("{ipx} daddr . meta l4proto . th dport vmap @no-endpoint-services"),
    );

    for nsp in ports {
        let sp = &nsp.base;
        let proto = sp.protocol.as_str();
        let spn = sp.port_name_string();
        let base = service_chain_base(sp);
        let svc_chain = format!("service-{base}");
        let local_chain = format!("local-{base}");
        let ext_chain = format!("external-{base}");
        let fw_chain = format!("firewall-{base}");
        let ready: Vec<_> = sp.endpoints.iter().filter(|e| e.ready).collect();
        let local: Vec<_> = ready
            .iter()
            .copied()
            .filter(|e| nsp.local_endpoints.contains(&e.ip))
            .collect();
        let has_endpoints = !ready.is_empty();
        let externally = sp.node_port.is_some()
            || !nsp.external_ips.is_empty()
            || !nsp.load_balancer_ips.is_empty();
        let uses_local = nsp.external_policy_local && externally && !local.is_empty();
        let has_external = has_endpoints && (!nsp.external_policy_local || !local.is_empty());
        let uses_ext = has_endpoints && externally;
        let ext_verdict = if !has_endpoints {
            "goto reject-chain"
        } else {
            "drop"
        };
        let key = |ip: IpAddr, port: u16| format!("{ip} . {proto} . {port}");

        d.elem("cluster-ips", sp.cluster_ip.to_string());
        if has_endpoints {
            d.elem(
                "service-ips",
                format!("{} : goto {svc_chain}", key(sp.cluster_ip, sp.port)),
            );
        } else {
            d.elem(
                "no-endpoint-services",
                format!(
                    "{} comment \"{spn}\" : goto reject-chain",
                    key(sp.cluster_ip, sp.port)
                ),
            );
        }
        for eip in &nsp.external_ips {
            if has_endpoints {
                d.elem(
                    "service-ips",
                    format!("{} : goto {ext_chain}", key(*eip, sp.port)),
                );
            }
            if !has_external {
                d.elem(
                    "no-endpoint-services",
                    format!("{} comment \"{spn}\" : {ext_verdict}", key(*eip, sp.port)),
                );
            }
        }
        if !nsp.load_balancer_ips.is_empty() && !nsp.source_ranges.is_empty() {
            let mut sources: Vec<String> = nsp.source_ranges.iter().map(net).collect();
            if cfg
                .node_ip
                .is_some_and(|n| nsp.source_ranges.iter().any(|r| r.contains(n)))
            {
                sources.extend(nsp.load_balancer_ips.iter().map(|i| i.to_string()));
            }
            d.rule(
                &fw_chain,
                format!("{ipx} saddr != {{ {} }} drop", sources.join(", ")),
            );
            for lb in &nsp.load_balancer_ips {
                d.elem(
                    "firewall-ips",
                    format!("{} : goto {fw_chain}", key(*lb, sp.port)),
                );
            }
        }
        for lb in &nsp.load_balancer_ips {
            if has_endpoints {
                d.elem(
                    "service-ips",
                    format!("{} : goto {ext_chain}", key(*lb, sp.port)),
                );
            }
            if !has_external {
                d.elem(
                    "no-endpoint-services",
                    format!("{} comment \"{spn}\" : {ext_verdict}", key(*lb, sp.port)),
                );
            }
        }
        if let Some(np) = sp.node_port {
            if has_endpoints {
                d.elem(
                    "service-nodeports",
                    format!("{proto} . {np} : goto {ext_chain}"),
                );
            }
            if !has_external {
                d.elem(
                    "no-endpoint-nodeports",
                    format!("{proto} . {np} comment \"{spn}\" : {ext_verdict}"),
                );
            }
        }
        if !has_endpoints {
            continue;
        }
        if let Some(pod) = &cfg.pod_cidr {
            d.rule(
                &svc_chain,
                format!(
                    "{ipx} daddr {} {ipx} saddr != {} jump mark-for-masquerade",
                    sp.cluster_ip,
                    net(pod)
                ),
            );
        } else {
            d.chain(&svc_chain);
        }
        if uses_ext {
            if !nsp.external_policy_local {
                d.rule(&ext_chain, "jump mark-for-masquerade");
            } else {
                if let Some(pod) = &cfg.pod_cidr {
                    d.rule(
                        &ext_chain,
                        format!(
                            "{ipx} saddr {} goto {svc_chain} comment \"short-circuit pod traffic\"",
                            net(pod)
                        ),
                    );
                }
                d.rule(
                    &ext_chain,
                    "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\"",
                );
                d.rule(
                    &ext_chain,
                    format!(
                        "fib saddr type local goto {svc_chain} comment \"short-circuit local traffic\""
                    ),
                );
            }
            if has_external {
                let target = if nsp.external_policy_local {
                    &local_chain
                } else {
                    &svc_chain
                };
                d.rule(&ext_chain, format!("goto {target}"));
            }
        }
        let ep_rules =
            |d: &mut Doc, chain: &str, eps: &[&crate::iptables::render::RenderEndpoint]| {
                if nsp.affinity_timeout.is_some() {
                    for e in eps {
                        let b = endpoint_chain_base(sp, e.ip, e.port);
                        d.rule(
                            chain,
                            format!("{ipx} saddr @affinity-{b} goto endpoint-{b}"),
                        );
                    }
                }
                let entries: Vec<String> = eps
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        format!(
                            "{i} : goto endpoint-{}",
                            endpoint_chain_base(sp, e.ip, e.port)
                        )
                    })
                    .collect();
                d.rule(
                    chain,
                    format!(
                        "numgen random mod {} vmap {{ {} }}",
                        eps.len(),
                        entries.join(" , ")
                    ),
                );
            };
        ep_rules(&mut d, &svc_chain, &ready);
        if uses_local {
            ep_rules(&mut d, &local_chain, &local);
        }
        for e in &ready {
            let b = endpoint_chain_base(sp, e.ip, e.port);
            let chain = format!("endpoint-{b}");
            if let Some(timeout) = nsp.affinity_timeout {
                d.sets.push(SetDecl {
                    name: format!("affinity-{b}"),
                    map: false,
                    ty: addr_t.into(),
                    flags: Some("dynamic,timeout"),
                    timeout: Some(format!("{timeout}s")),
                    comment: None,
                    elements: Vec::new(),
                });
            }
            d.rule(
                &chain,
                format!("{ipx} saddr {} jump mark-for-masquerade", e.ip),
            );
            if nsp.affinity_timeout.is_some() {
                d.rule(&chain, format!("update @affinity-{b} {{ {ipx} saddr }}"));
            }
            d.rule(
                &chain,
                format!(
                    "meta l4proto {proto} dnat to {}",
                    join_host_port(e.ip, e.port)
                ),
            );
        }
    }
    d
}

/// The `nft -f` script kube-proxy would send for `ports` (`add table|set|map|chain|rule|element`
/// lines, as its tests' fake dumps print them).
pub fn render_nft_script(ports: &[NftServicePort], cfg: &NftRenderConfig) -> String {
    let d = build(ports, cfg);
    let f = d.family;
    let mut s = String::with_capacity(256 * ports.len().max(1));
    let _ = writeln!(
        s,
        "add table {f} kube-proxy {{ comment \"rules for kube-proxy\" ; }}"
    );
    for set in &d.sets {
        let _ = write!(
            s,
            "add {} {f} kube-proxy {} {{ type {} ;",
            if set.map { "map" } else { "set" },
            set.name,
            set.ty
        );
        if let Some(fl) = set.flags {
            let _ = write!(s, " flags {fl} ;");
        }
        if let Some(t) = &set.timeout {
            let _ = write!(s, " timeout {t} ;");
        }
        if let Some(c) = set.comment {
            let _ = write!(s, " comment \"{c}\" ;");
        }
        s.push_str(" }\n");
    }
    for c in &d.chains {
        let _ = write!(s, "add chain {f} kube-proxy {}", c.name);
        match (c.base, c.comment) {
            (Some((ty, hook, prio)), _) => {
                let _ = write!(s, " {{ type {ty} hook {hook} priority {prio} ; }}");
            }
            (None, Some(cm)) => {
                let _ = write!(s, " {{ comment \"{cm}\" ; }}");
            }
            _ => {}
        }
        s.push('\n');
    }
    for c in &d.chains {
        for r in &c.rules {
            let _ = writeln!(s, "add rule {f} kube-proxy {} {r}", c.name);
        }
    }
    for set in &d.sets {
        for e in &set.elements {
            let _ = writeln!(s, "add element {f} kube-proxy {} {{ {e} }}", set.name);
        }
    }
    s
}

/// The `nft list ruleset` text for the same table (nested blocks; rules as kube-proxy
/// writes them, which `nft` accepts and this crate's parser reads).
pub fn render_nft_list(ports: &[NftServicePort], cfg: &NftRenderConfig) -> String {
    let d = build(ports, cfg);
    let mut s = String::with_capacity(256 * ports.len().max(1));
    let _ = writeln!(
        s,
        "table {} kube-proxy {{\n\tcomment \"rules for kube-proxy\"",
        d.family
    );
    for set in &d.sets {
        let _ = writeln!(
            s,
            "\n\t{} {} {{\n\t\ttype {}",
            if set.map { "map" } else { "set" },
            set.name,
            set.ty
        );
        if let Some(fl) = set.flags {
            let _ = writeln!(s, "\t\tflags {}", fl.replace(',', ", "));
        }
        if let Some(t) = &set.timeout {
            let _ = writeln!(s, "\t\ttimeout {t}");
        }
        if let Some(c) = set.comment {
            let _ = writeln!(s, "\t\tcomment \"{c}\"");
        }
        if !set.elements.is_empty() {
            let _ = writeln!(
                s,
                "\t\telements = {{ {} }}",
                set.elements.join(",\n\t\t\t     ")
            );
        }
        s.push_str("\t}\n");
    }
    for c in &d.chains {
        let _ = writeln!(s, "\n\tchain {} {{", c.name);
        if let Some((ty, hook, prio)) = c.base {
            let _ = writeln!(
                s,
                "\t\ttype {ty} hook {hook} priority {prio}; policy accept;"
            );
        }
        if let Some(cm) = c.comment {
            let _ = writeln!(s, "\t\tcomment \"{cm}\"");
        }
        for r in &c.rules {
            let _ = writeln!(s, "\t\t{}", r.replace(" , ", ", "));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Proto;

    fn sp(ns: &str, name: &str, port: &str) -> RenderServicePort {
        RenderServicePort {
            namespace: ns.into(),
            name: name.into(),
            port_name: port.into(),
            protocol: Proto::Tcp,
            cluster_ip: "172.30.0.41".parse().unwrap(),
            port: 80,
            node_port: None,
            endpoints: vec![],
        }
    }

    /// The chain names in kube-proxy's TestOverallNFTablesRules.
    #[test]
    fn chain_names_match_kube_proxy() {
        assert_eq!(
            service_chain_base(&sp("ns1", "svc1", "p80")),
            "ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            service_chain_base(&sp("ns5", "svc5", "p80")),
            "HVFWP5L3-ns5/svc5/tcp/p80"
        );
        assert_eq!(
            endpoint_chain_base(&sp("ns1", "svc1", "p80"), "10.180.0.1".parse().unwrap(), 80),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert_eq!(
            endpoint_chain_base(&sp("ns4", "svc4", "p80"), "10.180.0.5".parse().unwrap(), 80),
            "5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::iptables::render::RenderEndpoint;
    use crate::nft::{parse_text, trace};
    use crate::trace::{NodeContext, Packet, Proto, Verdict};
    use proptest::prelude::*;

    const NODE: [u8; 4] = [192, 168, 0, 2];

    fn ports_strategy() -> impl Strategy<Value = Vec<NftServicePort>> {
        prop::collection::vec(
            (
                0usize..4,                               // endpoints
                prop::collection::vec(any::<bool>(), 4), // ready
                prop::collection::vec(any::<bool>(), 4), // local
                any::<bool>(),                           // node port
                any::<bool>(),                           // external policy local
                prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)],
                1u16..4, // port selector
            ),
            1..5,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (n, ready, local, np, etp_local, proto, port))| {
                    let eps: Vec<RenderEndpoint> = (0..n)
                        .map(|j| RenderEndpoint {
                            ip: IpAddr::from([10, 180, i as u8, j as u8 + 1]),
                            port: 8000 + j as u16,
                            ready: ready[j],
                        })
                        .collect();
                    let mut sp = NftServicePort::from(RenderServicePort {
                        namespace: format!("ns{i}"),
                        name: format!("svc{i}"),
                        port_name: format!("p{port}"),
                        protocol: proto,
                        cluster_ip: IpAddr::from([172, 30, 0, 10 + i as u8]),
                        port: port * 100,
                        node_port: np.then_some(30000 + i as u16),
                        endpoints: eps.clone(),
                    });
                    sp.external_policy_local = etp_local && np;
                    sp.local_endpoints = eps
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| local[*j])
                        .map(|(_, e)| e.ip)
                        .collect();
                    sp
                })
                .collect()
        })
    }

    fn cfg() -> NftRenderConfig {
        NftRenderConfig {
            ipv6: false,
            pod_cidr: Some(IpNet {
                addr: IpAddr::from([10, 0, 0, 0]),
                prefix: 8,
            }),
            service_cidrs: vec![IpNet {
                addr: IpAddr::from([172, 30, 0, 0]),
                prefix: 16,
            }],
            nodeport_ips: Some(vec![IpAddr::from(NODE)]),
            node_ip: Some(IpAddr::from(NODE)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// render → parse → trace agrees with the model: a pod reaching a ClusterIP gets
        /// every ready endpoint with probability 1/n (or REJECT when there are none); an
        /// outside client on the NodePort gets the policy's endpoints, masqueraded for
        /// Cluster, DROP for Local without a local endpoint.
        #[test]
        fn round_trip_agrees_with_model(ports in ports_strategy(), list in any::<bool>()) {
            let text = if list { render_nft_list(&ports, &cfg()) } else { render_nft_script(&ports, &cfg()) };
            let rules = parse_text(&text).unwrap();
            let ctx = NodeContext { node_ips: vec![IpAddr::from(NODE)] };
            for sp in &ports {
                let b = &sp.base;
                let ready: Vec<String> = b.endpoints.iter().filter(|e| e.ready)
                    .map(|e| join_host_port(e.ip, e.port)).collect();
                let pkt = Packet { src: IpAddr::from([10, 0, 0, 2]), dst: b.cluster_ip, dport: b.port, proto: b.protocol };
                let r = trace(&rules, &pkt, &ctx);
                prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                if ready.is_empty() {
                    prop_assert_eq!(r.verdict, Verdict::Reject);
                } else {
                    prop_assert_eq!(r.verdict, Verdict::Dnat);
                    prop_assert_eq!(&r.endpoints, &ready);
                    for (_, p) in r.endpoint_probabilities() {
                        prop_assert!((p - 1.0 / ready.len() as f64).abs() < 1e-9);
                    }
                    prop_assert!(!r.masquerade);
                }
                // the same ClusterIP on a port no Service uses is rejected
                let other = Packet { dport: 9, ..pkt };
                prop_assert_eq!(trace(&rules, &other, &ctx).verdict, Verdict::Reject);
                if let Some(np) = b.node_port {
                    let pkt = Packet { src: IpAddr::from([203, 0, 113, 2]), dst: IpAddr::from(NODE), dport: np, proto: b.protocol };
                    let r = trace(&rules, &pkt, &ctx);
                    let expected: Vec<String> = if sp.external_policy_local {
                        b.endpoints.iter().filter(|e| e.ready && sp.local_endpoints.contains(&e.ip))
                            .map(|e| join_host_port(e.ip, e.port)).collect()
                    } else {
                        ready.clone()
                    };
                    if ready.is_empty() {
                        prop_assert_eq!(r.verdict, Verdict::Reject);
                    } else if expected.is_empty() {
                        prop_assert_eq!(r.verdict, Verdict::Drop);
                    } else {
                        prop_assert_eq!(r.verdict, Verdict::Dnat);
                        prop_assert_eq!(&r.endpoints, &expected);
                        prop_assert_eq!(r.masquerade, !sp.external_policy_local);
                    }
                }
                let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
                prop_assert!((total - 1.0).abs() < 1e-9);
            }
        }
    }
}
