//! Renders what kube-proxy's nftables mode programs for a set of Service ports: the
//! `kube-proxy` table with its base chains, the `service-ips` / `service-nodeports` /
//! `no-endpoint-*` / `firewall-ips` maps, and the per-Service `service-`, `external-`,
//! `local-`, `firewall-` and `endpoint-` chains (kube-proxy's chain names and hashes), as an
//! `nft -f` script (what kube-proxy sends) or as `nft list ruleset` text. Pure.
//!
//! Follows pkg/proxy/nftables/proxier.go and pkg/proxy/topology.go (`CategorizeEndpoints`):
//! ClusterIP, NodePort, externalIPs, LoadBalancer IPs with loadBalancerSourceRanges,
//! `externalTrafficPolicy: Local`, `internalTrafficPolicy: Local`, ClientIP session
//! affinity, serving-and-terminating endpoints as the fallback when no endpoint is ready
//! (for the Cluster and the Local policy independently), Services without usable endpoints
//! (REJECT) or without endpoints a Local policy may use here (DROP), `--masquerade-all`,
//! and no local-traffic detector (`pod_cidr: None`).
//!
//! Not rendered: topology hints and `trafficDistribution` (every usable endpoint is used,
//! as when no hints are set), LoadBalancer `ipMode: Proxy` (LB IPs are always programmed),
//! and the ClusterIP masquerade rule of releases after the one whose tests are ported in
//! tests/integration/nft.rs (newer ones also match `tcp dport PORT`; same packets for the
//! Service's own port).

use crate::iptables::render::{RenderEndpoint, RenderServicePort};
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
    /// Endpoint IPs on this node (for `externalTrafficPolicy: Local` and
    /// `internalTrafficPolicy: Local`).
    pub local_endpoints: Vec<IpAddr>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to endpoints on this node
    /// (and is dropped when there are none).
    pub internal_policy_local: bool,
    /// IPs of endpoints whose conditions are `serving: true, terminating: true` (with
    /// `ready: false` in `base.endpoints`): kube-proxy falls back to these when a policy
    /// has no ready endpoint to use.
    pub serving_terminating: Vec<IpAddr>,
    /// `spec.healthCheckNodePort` (the iptables renderer accepts it in KUBE-NODEPORTS; the
    /// nftables mode needs no rule for it).
    pub health_check_node_port: Option<u16>,
}

impl NftServicePort {
    /// kube-proxy's `ExternallyAccessible`: a NodePort, an external IP or a LoadBalancer IP.
    pub fn externally_accessible(&self) -> bool {
        self.base.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// kube-proxy's `UsesClusterEndpoints` (pkg/proxy/serviceport.go): internal traffic
    /// under the Cluster policy, or any external traffic at all; even with
    /// `externalTrafficPolicy: Local` the Cluster endpoints serve the short circuit for pods
    /// and the node itself.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// kube-proxy's `UsesLocalEndpoints`: some traffic is subject to the Local policy.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// A Service port's endpoints as kube-proxy's `CategorizeEndpoints` sorts them (without
/// topology hints).
struct Categorized<'a> {
    /// The endpoints Cluster-policy traffic uses: the ready ones, or if none is ready
    /// anywhere, the serving-and-terminating ones; empty when nothing uses Cluster policy.
    cluster: Vec<&'a RenderEndpoint>,
    /// The endpoints Local-policy traffic uses: the ready ones on this node, or if none,
    /// the serving-and-terminating ones on this node; empty when nothing uses Local policy.
    local: Vec<&'a RenderEndpoint>,
    /// The union of both: the endpoints that get an `endpoint-` chain.
    reachable: Vec<&'a RenderEndpoint>,
    /// Some endpoint anywhere in the cluster is usable (so no REJECT).
    has_any: bool,
}

fn categorize(nsp: &NftServicePort) -> Categorized<'_> {
    let eps = &nsp.base.endpoints;
    let serving_terminating =
        |e: &&RenderEndpoint| !e.ready && nsp.serving_terminating.contains(&e.ip);
    let is_local = |e: &&RenderEndpoint| nsp.local_endpoints.contains(&e.ip);
    let mut cluster = Vec::new();
    let mut has_any = false;
    if nsp.uses_cluster_endpoints() {
        cluster = eps.iter().filter(|e| e.ready).collect();
        if cluster.is_empty() {
            cluster = eps.iter().filter(serving_terminating).collect();
        }
        has_any = !cluster.is_empty();
    }
    if !nsp.uses_local_endpoints() {
        let reachable = cluster.clone();
        return Categorized {
            cluster,
            local: Vec::new(),
            reachable,
            has_any,
        };
    }
    has_any |= eps.iter().any(|e| e.ready || serving_terminating(&e));
    let mut local: Vec<&RenderEndpoint> = eps.iter().filter(|e| e.ready && is_local(e)).collect();
    if local.is_empty() {
        local = eps
            .iter()
            .filter(|e| serving_terminating(e) && is_local(e))
            .collect();
    }
    let mut reachable = cluster.clone();
    for e in &local {
        if !reachable.contains(e) {
            reachable.push(e);
        }
    }
    Categorized {
        cluster,
        local,
        reachable,
        has_any,
    }
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
    /// `--masquerade-all`: every packet to a ClusterIP is masqueraded.
    pub masquerade_all: bool,
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
        let eps = categorize(nsp);
        let has_endpoints = eps.has_any;
        let externally = nsp.externally_accessible();
        // proxier.go's syncProxyRules, one Service port at a time.
        let uses_cluster_chain = !eps.cluster.is_empty() && nsp.uses_cluster_endpoints();
        let uses_local_chain = !eps.local.is_empty() && nsp.uses_local_endpoints();
        let internal_chain = if nsp.internal_policy_local {
            &local_chain
        } else {
            &svc_chain
        };
        let has_internal = has_endpoints && (!nsp.internal_policy_local || !eps.local.is_empty());
        let external_policy_chain = if nsp.external_policy_local {
            &local_chain
        } else {
            &svc_chain
        };
        let has_external = has_endpoints && (!nsp.external_policy_local || !eps.local.is_empty());
        let uses_ext = has_endpoints && externally;
        // No endpoints anywhere: REJECT; endpoints, but none this traffic policy may use
        // on this node: DROP.
        let filter_verdict = if !has_endpoints {
            "goto reject-chain"
        } else {
            "drop"
        };
        let key = |ip: IpAddr, port: u16| format!("{ip} . {proto} . {port}");

        d.elem("cluster-ips", sp.cluster_ip.to_string());
        if has_internal {
            d.elem(
                "service-ips",
                format!("{} : goto {internal_chain}", key(sp.cluster_ip, sp.port)),
            );
        } else {
            d.elem(
                "no-endpoint-services",
                format!(
                    "{} comment \"{spn}\" : {filter_verdict}",
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
                    format!(
                        "{} comment \"{spn}\" : {filter_verdict}",
                        key(*eip, sp.port)
                    ),
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
                    format!("{} comment \"{spn}\" : {filter_verdict}", key(*lb, sp.port)),
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
                    format!("{proto} . {np} comment \"{spn}\" : {filter_verdict}"),
                );
            }
        }
        if !has_endpoints {
            continue;
        }
        if has_internal {
            if cfg.masquerade_all {
                d.rule(
                    internal_chain,
                    format!("{ipx} daddr {} jump mark-for-masquerade", sp.cluster_ip),
                );
            } else if let Some(pod) = &cfg.pod_cidr {
                d.rule(
                    internal_chain,
                    format!(
                        "{ipx} daddr {} {ipx} saddr != {} jump mark-for-masquerade",
                        sp.cluster_ip,
                        net(pod)
                    ),
                );
            }
        }
        if uses_ext {
            if !nsp.external_policy_local {
                d.rule(&ext_chain, "jump mark-for-masquerade");
            } else {
                // The short-circuits go to the Cluster-policy chain, as kube-proxy's do.
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
                d.rule(&ext_chain, format!("goto {external_policy_chain}"));
            }
        }
        let ep_rules = |d: &mut Doc, chain: &str, eps: &[&RenderEndpoint]| {
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
        if uses_cluster_chain {
            ep_rules(&mut d, &svc_chain, &eps.cluster);
        }
        if uses_local_chain {
            ep_rules(&mut d, &local_chain, &eps.local);
        }
        for e in &eps.reachable {
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

    fn cfg() -> NftRenderConfig {
        NftRenderConfig {
            ipv6: false,
            pod_cidr: Some(IpNet {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
            }),
            service_cidrs: vec![],
            nodeport_ips: None,
            node_ip: None,
            masquerade_all: false,
        }
    }

    fn ep(ip: &str, ready: bool) -> RenderEndpoint {
        RenderEndpoint {
            ip: ip.parse().unwrap(),
            port: 80,
            ready,
        }
    }

    fn lines(ports: &[NftServicePort], cfg: &NftRenderConfig) -> Vec<String> {
        render_nft_script(ports, cfg)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `internalTrafficPolicy: Local`: the ClusterIP goes to the `local-` chain, which
    /// carries the masquerade rule; with no local endpoint it is dropped (not rejected),
    /// under the unnamed port's name `ns/name` (kube-proxy's `ServicePortName.String()`).
    #[test]
    fn internal_policy_local_uses_local_chain_or_drops() {
        let mut base = sp("ns1", "svc1", "");
        base.endpoints = vec![ep("10.0.1.1", true), ep("10.0.1.2", true)];
        let mut s = NftServicePort::from(base);
        s.internal_policy_local = true;
        s.local_endpoints = vec!["10.0.1.1".parse().unwrap()];
        let b = service_chain_base(&s.base);
        assert_eq!(b, format!("{}-ns1/svc1/tcp/", &b[..8]));
        let got = lines(&[s.clone()], &cfg());
        let want = [
            format!("add element ip kube-proxy service-ips {{ 172.30.0.41 . tcp . 80 : goto local-{b} }}"),
            format!("add rule ip kube-proxy local-{b} ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"),
        ];
        for w in &want {
            assert!(got.contains(w), "missing {w}\n{}", got.join("\n"));
        }
        assert!(
            !got.iter().any(|l| l.contains(&format!("service-{b}"))),
            "no Cluster-policy chain when nothing uses it:\n{}",
            got.join("\n")
        );
        assert_eq!(
            got.iter()
                .filter(|l| l.starts_with("add chain ip kube-proxy endpoint-"))
                .count(),
            1,
            "only the local endpoint is reachable"
        );

        s.local_endpoints.clear();
        let got = lines(&[s], &cfg());
        assert!(got.contains(&"add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment \"ns1/svc1\" : drop }".to_string()), "{}", got.join("\n"));
        assert!(!got
            .iter()
            .any(|l| l.starts_with("add element ip kube-proxy service-ips")));
    }

    /// No ready endpoint: the serving-and-terminating ones are used, the not-serving
    /// ones never; none of either: REJECT.
    #[test]
    fn serving_terminating_endpoints_are_the_fallback() {
        let mut base = sp("ns1", "svc1", "p80");
        base.endpoints = vec![ep("10.0.1.1", false), ep("10.0.1.2", false)];
        let mut s = NftServicePort::from(base);
        s.serving_terminating = vec!["10.0.1.2".parse().unwrap()];
        let c = categorize(&s);
        let ips = |v: &[&RenderEndpoint]| v.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>();
        assert_eq!(ips(&c.cluster), ["10.0.1.2"]);
        assert!(c.local.is_empty() && c.has_any);
        // a ready endpoint wins over the terminating one
        s.base.endpoints[0].ready = true;
        assert_eq!(ips(&categorize(&s).cluster), ["10.0.1.1"]);
        s.base.endpoints[0].ready = false;
        s.serving_terminating.clear();
        let c = categorize(&s);
        assert!(c.cluster.is_empty() && !c.has_any);
        let got = lines(&[s], &cfg());
        assert!(got.contains(&"add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment \"ns1/svc1:p80\" : goto reject-chain }".to_string()));
    }

    /// `--masquerade-all`: the ClusterIP masquerade rule matches every source.
    #[test]
    fn masquerade_all_marks_every_clusterip_packet() {
        let mut base = sp("ns1", "svc1", "p80");
        base.endpoints = vec![ep("10.180.0.1", true)];
        let s = NftServicePort::from(base);
        let cfg = NftRenderConfig {
            masquerade_all: true,
            ..cfg()
        };
        let got = lines(&[s], &cfg);
        assert!(got.contains(&"add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 jump mark-for-masquerade".to_string()), "{}", got.join("\n"));
        assert!(!got.iter().any(|l| l.contains("saddr != 10.0.0.0/8")));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::nft::{parse_text, trace};
    use crate::trace::{NodeContext, Packet, Proto, Verdict};
    use proptest::prelude::*;

    const NODE: [u8; 4] = [192, 168, 0, 2];

    fn ports_strategy() -> impl Strategy<Value = Vec<NftServicePort>> {
        prop::collection::vec(
            (
                0usize..4,                               // endpoints
                prop::collection::vec(any::<bool>(), 4), // ready
                prop::collection::vec(any::<bool>(), 4), // serving and terminating
                prop::collection::vec(any::<bool>(), 4), // local
                any::<bool>(),                           // node port
                any::<bool>(),                           // external policy local
                any::<bool>(),                           // internal policy local
                prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)],
                1u16..4, // port selector
            ),
            1..5,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(
                    |(i, (n, ready, st, local, np, etp_local, itp_local, proto, port))| {
                        let eps: Vec<RenderEndpoint> = (0..n)
                            .map(|j| RenderEndpoint {
                                ip: IpAddr::from([10, 180, i as u8, j as u8 + 1]),
                                port: 8000 + j as u16,
                                ready: ready[j],
                            })
                            .collect();
                        let pick = |flags: &[bool]| -> Vec<IpAddr> {
                            eps.iter()
                                .enumerate()
                                .filter(|(j, _)| flags[*j])
                                .map(|(_, e)| e.ip)
                                .collect()
                        };
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
                        sp.internal_policy_local = itp_local;
                        sp.local_endpoints = pick(&local);
                        sp.serving_terminating = pick(&st);
                        sp
                    },
                )
                .collect()
        })
    }

    fn cfg(masquerade_all: bool, detector: bool) -> NftRenderConfig {
        NftRenderConfig {
            ipv6: false,
            pod_cidr: detector.then_some(IpNet {
                addr: IpAddr::from([10, 0, 0, 0]),
                prefix: 8,
            }),
            service_cidrs: vec![IpNet {
                addr: IpAddr::from([172, 30, 0, 0]),
                prefix: 16,
            }],
            nodeport_ips: Some(vec![IpAddr::from(NODE)]),
            node_ip: Some(IpAddr::from(NODE)),
            masquerade_all,
        }
    }

    /// The model: the endpoints a policy may use among `eps` are the ready ones, or if
    /// none is ready, the serving-and-terminating ones.
    fn usable(sp: &NftServicePort, only_local: bool) -> Vec<String> {
        let eps: Vec<&RenderEndpoint> = sp
            .base
            .endpoints
            .iter()
            .filter(|e| !only_local || sp.local_endpoints.contains(&e.ip))
            .collect();
        let ready: Vec<String> = eps
            .iter()
            .filter(|e| e.ready)
            .map(|e| join_host_port(e.ip, e.port))
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        eps.iter()
            .filter(|e| sp.serving_terminating.contains(&e.ip))
            .map(|e| join_host_port(e.ip, e.port))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// render → parse → trace agrees with the model: a pod reaching a ClusterIP gets
        /// every usable endpoint (the local ones for `internalTrafficPolicy: Local`) with
        /// probability 1/n, masqueraded only with `--masquerade-all`; REJECT when no
        /// endpoint is usable anywhere, DROP when only the Local policy leaves none. An
        /// outside client on the NodePort gets the external policy's endpoints,
        /// masqueraded for Cluster, DROP for Local without a usable local endpoint.
        #[test]
        fn round_trip_agrees_with_model(
            ports in ports_strategy(),
            list in any::<bool>(),
            masquerade_all in any::<bool>(),
            detector in any::<bool>(),
        ) {
            let cfg = cfg(masquerade_all, detector);
            let text = if list { render_nft_list(&ports, &cfg) } else { render_nft_script(&ports, &cfg) };
            let rules = parse_text(&text).unwrap();
            let ctx = NodeContext { node_ips: vec![IpAddr::from(NODE)] };
            for sp in &ports {
                let b = &sp.base;
                let anywhere = usable(sp, false);
                let internal = usable(sp, sp.internal_policy_local);
                let pkt = Packet { src: IpAddr::from([10, 0, 0, 2]), dst: b.cluster_ip, dport: b.port, proto: b.protocol };
                let r = trace(&rules, &pkt, &ctx);
                prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                if anywhere.is_empty() {
                    prop_assert_eq!(r.verdict, Verdict::Reject);
                } else if internal.is_empty() {
                    prop_assert_eq!(r.verdict, Verdict::Drop);
                } else {
                    prop_assert_eq!(r.verdict, Verdict::Dnat);
                    prop_assert_eq!(&r.endpoints, &internal);
                    for (_, p) in r.endpoint_probabilities() {
                        prop_assert!((p - 1.0 / internal.len() as f64).abs() < 1e-9);
                    }
                    prop_assert_eq!(r.masquerade, masquerade_all);
                }
                // the same ClusterIP on a port no Service uses is rejected
                let other = Packet { dport: 9, ..pkt };
                prop_assert_eq!(trace(&rules, &other, &ctx).verdict, Verdict::Reject);
                if let Some(np) = b.node_port {
                    let pkt = Packet { src: IpAddr::from([203, 0, 113, 2]), dst: IpAddr::from(NODE), dport: np, proto: b.protocol };
                    let r = trace(&rules, &pkt, &ctx);
                    prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                    let expected = usable(sp, sp.external_policy_local);
                    if anywhere.is_empty() {
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
