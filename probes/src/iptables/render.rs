//! Renders the `iptables-save` text a node shows once kube-proxy (iptables mode) has synced a
//! set of Service ports: the same chains, chain names (kube-proxy's hashes), rules, comments
//! and probabilities, in iptables-save's canonical option order, chains in iptables-legacy's
//! order (built-in chains, then user chains by name). Pure.
//!
//! Follows pkg/proxy/iptables/proxier.go (`syncProxyRules`): ClusterIP, NodePort,
//! externalIPs, LoadBalancer IPs with `KUBE-FW-*` and loadBalancerSourceRanges,
//! `externalTrafficPolicy: Local` (`KUBE-SVL-*`, `KUBE-EXT-*` short-circuits, DROP for no
//! local endpoints), `internalTrafficPolicy: Local`, ClientIP session affinity (`-m recent`),
//! the serving-terminating endpoint fallback, the filter table's REJECT/DROP rules,
//! `KUBE-PROXY-FIREWALL`, health-check NodePorts, `--masquerade-all`,
//! `--nodeport-addresses`, `--iptables-localhost-nodeports`, IPv4 and IPv6. Not rendered:
//! topology hints, large-cluster mode (comments dropped past 1000 endpoints),
//! `--detect-local-mode` other than a CIDR.

use super::model::IpNet;
use crate::nft::render::NftServicePort;
use crate::trace::{join_host_port, Proto};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderEndpoint {
    /// Pod IP.
    pub ip: IpAddr,
    /// Target port on the pod.
    pub port: u16,
    /// Ready (kube-proxy programs only ready endpoints).
    pub ready: bool,
}

/// One Service port, as kube-proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderServicePort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Port name (empty for an unnamed port).
    pub port_name: String,
    /// Protocol.
    pub protocol: Proto,
    /// ClusterIP.
    pub cluster_ip: IpAddr,
    /// Service port.
    pub port: u16,
    /// NodePort, if any.
    pub node_port: Option<u16>,
    /// Endpoints, in EndpointSlice order.
    pub endpoints: Vec<RenderEndpoint>,
}

impl RenderServicePort {
    /// kube-proxy's `ServicePortName.String()`: `ns/name:port`, or `ns/name` for an unnamed
    /// port.
    pub fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// kube-proxy settings that change the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderConfig {
    /// Traffic from outside this CIDR to a ClusterIP is masqueraded (`--cluster-cidr`, or
    /// the node's pod CIDR with `--detect-local-mode=NodeCIDR`); `None` disables the rule.
    pub local_cidr: Option<IpNet>,
    /// `--iptables-localhost-nodeports` (default true): NodePorts answer on 127.0.0.0/8.
    pub localhost_nodeports: bool,
}

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let enc = data_encoding::BASE32.encode(&digest);
    enc[..16].to_string()
}

/// `KUBE-SVC-` + kube-proxy's `portProtoHash(servicePortName, protocol)`.
pub fn service_chain(svc_port_name: &str, proto: Proto) -> String {
    format!("KUBE-SVC-{}", hash16(&format!("{svc_port_name}{proto}")))
}

/// `KUBE-EXT-` + the same hash (the external-traffic chain).
pub fn external_chain(svc_port_name: &str, proto: Proto) -> String {
    format!("KUBE-EXT-{}", hash16(&format!("{svc_port_name}{proto}")))
}

/// `KUBE-SVL-` + the same hash (the Local-policy endpoints chain).
pub fn local_chain(svc_port_name: &str, proto: Proto) -> String {
    format!("KUBE-SVL-{}", hash16(&format!("{svc_port_name}{proto}")))
}

/// `KUBE-FW-` + the same hash (the loadBalancerSourceRanges chain).
pub fn firewall_chain(svc_port_name: &str, proto: Proto) -> String {
    format!("KUBE-FW-{}", hash16(&format!("{svc_port_name}{proto}")))
}

/// `KUBE-SEP-` + hash of service port name, protocol and endpoint (`IP:PORT`).
pub fn endpoint_chain(svc_port_name: &str, proto: Proto, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{svc_port_name}{proto}{endpoint}"))
    )
}

fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn net(n: &IpNet) -> String {
    format!("{}/{}", n.addr, n.prefix)
}

/// kube-proxy's `computeProbability`: `%0.10f` of `1/n`.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// Everything of kube-proxy's configuration that changes its iptables rules (the settings of
/// [`render_iptables`]; [`RenderConfig`] is the short form the lab and the benches use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxierConfig {
    /// Render what ip6tables-save shows (IPv6 Services) rather than iptables-save.
    pub ipv6: bool,
    /// The local-traffic detector's CIDR (`--cluster-cidr`, or the node's pod CIDR with
    /// `--detect-local-mode=NodeCIDR`): ClusterIP traffic from outside it is masqueraded and
    /// pod traffic to external IPs short-circuits `externalTrafficPolicy: Local`; `None` is
    /// kube-proxy without a local-traffic detector.
    pub local_cidr: Option<IpNet>,
    /// `--masquerade-all`: every ClusterIP connection is masqueraded.
    pub masquerade_all: bool,
    /// `--iptables-localhost-nodeports` (default true): IPv4 NodePorts answer on 127.0.0.0/8.
    pub localhost_nodeports: bool,
    /// `--nodeport-addresses` resolved to the node's addresses (of this family); `None` accepts
    /// NodePorts on every local address (`-m addrtype --dst-type LOCAL`).
    pub nodeport_ips: Option<Vec<IpAddr>>,
    /// The node's primary IP: a loadBalancerSourceRange containing it also admits the
    /// load-balancer IPs as sources.
    pub node_ip: Option<IpAddr>,
    /// The iptables binary supports `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// The nfacct counters exist (kube-proxy then counts INVALID drops and localhost NodePorts).
    pub nfacct: bool,
}

/// One table being built: user chains in declaration order, rules per chain.
#[derive(Default)]
struct TableBuf {
    chains: Vec<String>,
    rules: HashMap<String, Vec<String>>,
}

impl TableBuf {
    fn chain(&mut self, name: &str) {
        if !self.rules.contains_key(name) {
            self.chains.push(name.to_string());
            self.rules.insert(name.to_string(), Vec::new());
        }
    }

    fn rule(&mut self, chain: &str, body: String) {
        self.chain(chain);
        if let Some(r) = self.rules.get_mut(chain) {
            r.push(body);
        }
    }

    /// `*name`, chain declarations and rules: built-in chains first (in `builtins` order),
    /// then user chains by name, as iptables-legacy-save lists them.
    fn emit(&self, s: &mut String, name: &str, builtins: &[&str]) {
        let _ = writeln!(
            s,
            "# Generated by iptables-save v1.8.9 on Thu Jan  1 00:00:00 1970\n*{name}"
        );
        let mut user: Vec<&String> = self
            .chains
            .iter()
            .filter(|c| !builtins.contains(&c.as_str()))
            .collect();
        user.sort();
        for b in builtins {
            let _ = writeln!(s, ":{b} ACCEPT [0:0]");
        }
        for c in &user {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        let order = builtins
            .iter()
            .copied()
            .chain(user.iter().map(|c| c.as_str()));
        for c in order {
            for r in self.rules.get(c).into_iter().flatten() {
                let _ = writeln!(s, "-A {c} {r}");
            }
        }
        s.push_str("COMMIT\n# Completed on Thu Jan  1 00:00:00 1970\n");
    }
}

/// The endpoints kube-proxy uses for a Service port (`proxy.CategorizeEndpoints`).
struct Categorized<'a> {
    /// For `Cluster` policy: the ready endpoints, else the serving-terminating ones.
    cluster: Vec<&'a RenderEndpoint>,
    /// For `Local` policy: this node's ready endpoints, else its serving-terminating ones.
    local: Vec<&'a RenderEndpoint>,
    /// Every endpoint some rule may DNAT to (one `KUBE-SEP-*` chain each).
    reachable: Vec<&'a RenderEndpoint>,
    /// The Service has a usable endpoint on some node.
    has_any: bool,
}

fn categorize(nsp: &NftServicePort, uses_cluster: bool, uses_local: bool) -> Categorized<'_> {
    let eps = &nsp.base.endpoints;
    let serving_terminating =
        |e: &RenderEndpoint| !e.ready && nsp.serving_terminating.contains(&e.ip);
    let is_local = |e: &RenderEndpoint| nsp.local_endpoints.contains(&e.ip);
    let mut has_any = false;
    let mut cluster: Vec<&RenderEndpoint> = Vec::new();
    if uses_cluster {
        cluster = eps.iter().filter(|e| e.ready).collect();
        if cluster.is_empty() {
            cluster = eps.iter().filter(|e| serving_terminating(e)).collect();
        }
        has_any = !cluster.is_empty();
    }
    if !uses_local {
        return Categorized {
            reachable: cluster.clone(),
            cluster,
            local: Vec::new(),
            has_any,
        };
    }
    let (mut local_ready, mut local_st) = (false, false);
    for e in eps {
        if e.ready {
            has_any = true;
            local_ready |= is_local(e);
        } else if serving_terminating(e) {
            has_any = true;
            local_st |= is_local(e);
        }
    }
    let local: Vec<&RenderEndpoint> = if local_ready {
        eps.iter().filter(|e| is_local(e) && e.ready).collect()
    } else if local_st {
        eps.iter()
            .filter(|e| is_local(e) && serving_terminating(e))
            .collect()
    } else {
        Vec::new()
    };
    let reachable = if uses_cluster {
        let mut all = cluster.clone();
        for e in &local {
            if !all.iter().any(|a| a.ip == e.ip && a.port == e.port) {
                all.push(e);
            }
        }
        all
    } else {
        local.clone()
    };
    Categorized {
        cluster,
        local,
        reachable,
        has_any,
    }
}

/// Renders the full `iptables-save` output (filter and nat tables) for `ports` with the
/// short configuration: no `--masquerade-all`, NodePorts on every local address, nfacct and
/// `--random-fully` available. Services carry no externalIPs, load balancers or Local
/// policies here; [`render_iptables`] takes them.
pub fn render_iptables_save(ports: &[RenderServicePort], cfg: &RenderConfig) -> String {
    let full: Vec<NftServicePort> = ports.iter().cloned().map(NftServicePort::from).collect();
    render_iptables(
        &full,
        &ProxierConfig {
            ipv6: ports.first().is_some_and(|p| p.cluster_ip.is_ipv6()),
            local_cidr: cfg.local_cidr,
            masquerade_all: false,
            localhost_nodeports: cfg.localhost_nodeports,
            nodeport_ips: None,
            node_ip: None,
            random_fully: true,
            nfacct: true,
        },
    )
}

/// Renders the full `iptables-save` output (filter and nat tables) kube-proxy's iptables
/// mode programs on one node for `ports` (whose `local_endpoints` say which endpoints are on
/// that node), as pkg/proxy/iptables/proxier.go's `syncProxyRules` writes it.
pub fn render_iptables(ports: &[NftServicePort], cfg: &ProxierConfig) -> String {
    let mut filter = TableBuf::default();
    let mut nat = TableBuf::default();
    let (lo_net, host_mask, reject) = if cfg.ipv6 {
        (
            "::1/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "REJECT --reject-with icmp6-port-unreachable",
        )
    } else {
        (
            "127.0.0.0/8",
            "255.255.255.255",
            "REJECT --reject-with icmp-port-unreachable",
        )
    };
    let localhost_nps = !cfg.ipv6 && cfg.localhost_nodeports;

    // KUBE-FIREWALL exists only with localhost NodePorts (IPv4), for its one rule.
    if localhost_nps {
        filter.chain("KUBE-FIREWALL");
    }
    for c in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        filter.chain(c);
    }
    for c in [
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-SERVICES",
    ] {
        nat.chain(c);
    }
    // The jumps kube-proxy (and kubelet, for KUBE-FIREWALL) install in the built-in chains.
    for (chain, body) in [
        ("INPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("INPUT", "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS"),
        ("INPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        ("INPUT", "-j KUBE-FIREWALL"),
        ("FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("FORWARD", "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
        ("FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        ("OUTPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("OUTPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("OUTPUT", "-j KUBE-FIREWALL"),
    ] {
        if localhost_nps || !body.ends_with("KUBE-FIREWALL") {
            filter.rule(chain, body.to_string());
        }
    }
    for (chain, body) in [
        (
            "PREROUTING",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "OUTPUT",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ),
        (
            "POSTROUTING",
            "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        ),
    ] {
        nat.rule(chain, body.to_string());
    }
    nat.rule(
        "KUBE-POSTROUTING",
        "-m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
    );
    nat.rule("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0".into());
    nat.rule(
        "KUBE-POSTROUTING",
        format!(
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
            if cfg.random_fully {
                " --random-fully"
            } else {
                ""
            }
        ),
    );
    nat.rule("KUBE-MARK-MASQ", "-j MARK --set-xmark 0x4000/0x4000".into());
    if localhost_nps {
        filter.rule(
            "KUBE-FIREWALL",
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".into(),
        );
    }

    for nsp in ports {
        let sp = &nsp.base;
        let spn = sp.port_name_string();
        let proto = sp.protocol;
        let svc_chain = service_chain(&spn, proto);
        let svl_chain = local_chain(&spn, proto);
        let ext_chain = external_chain(&spn, proto);
        let fw_chain = firewall_chain(&spn, proto);
        let cip = host_net(sp.cluster_ip);
        let port = sp.port;

        let externally = sp.node_port.is_some()
            || !nsp.external_ips.is_empty()
            || !nsp.load_balancer_ips.is_empty();
        let external_local = nsp.external_policy_local && externally;
        let internal_local = nsp.internal_policy_local;
        let uses_cluster_eps = !internal_local || externally;
        let uses_local_eps = internal_local || external_local;
        let cat = categorize(nsp, uses_cluster_eps, uses_local_eps);
        let has_endpoints = cat.has_any;
        let uses_cluster_chain = !cat.cluster.is_empty() && uses_cluster_eps;
        let uses_local_chain = !cat.local.is_empty() && uses_local_eps;
        let (internal_chain, has_internal) = if internal_local {
            (&svl_chain, has_endpoints && !cat.local.is_empty())
        } else {
            (&svc_chain, has_endpoints)
        };
        let (external_policy_chain, has_external) = if external_local {
            (&svl_chain, has_endpoints && !cat.local.is_empty())
        } else {
            (&svc_chain, has_endpoints)
        };
        let uses_ext = has_endpoints && externally;
        let uses_fw =
            has_endpoints && !nsp.load_balancer_ips.is_empty() && !nsp.source_ranges.is_empty();
        let lb_chain = if uses_fw { &fw_chain } else { &ext_chain };
        let (internal_filter, external_filter) = if !has_endpoints {
            let c = format!("\"{spn} has no endpoints\"");
            ((c.clone(), reject), (c, reject))
        } else {
            let c = format!("\"{spn} has no local endpoints\"");
            ((c.clone(), "DROP"), (c, "DROP"))
        };
        let dst_port = |dst: &str, comment: &str, target: &str| {
            format!("-d {dst} -p {proto} -m comment --comment {comment} -m {proto} --dport {port} -j {target}")
        };

        // ClusterIP.
        if has_internal {
            nat.rule(
                "KUBE-SERVICES",
                dst_port(&cip, &format!("\"{spn} cluster IP\""), internal_chain),
            );
        } else {
            filter.rule(
                "KUBE-SERVICES",
                dst_port(&cip, &internal_filter.0, internal_filter.1),
            );
        }
        // externalIPs.
        for eip in &nsp.external_ips {
            let d = host_net(*eip);
            if has_endpoints {
                nat.rule(
                    "KUBE-SERVICES",
                    dst_port(&d, &format!("\"{spn} external IP\""), &ext_chain),
                );
            }
            if !has_external {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    dst_port(&d, &external_filter.0, external_filter.1),
                );
            }
        }
        // Load-balancer ingress IPs.
        for lb in &nsp.load_balancer_ips {
            let d = host_net(*lb);
            if has_endpoints {
                nat.rule(
                    "KUBE-SERVICES",
                    dst_port(&d, &format!("\"{spn} loadbalancer IP\""), lb_chain),
                );
            }
            if uses_fw {
                filter.rule(
                    "KUBE-PROXY-FIREWALL",
                    dst_port(
                        &d,
                        &format!("\"{spn} traffic not accepted by {fw_chain}\""),
                        "DROP",
                    ),
                );
            }
        }
        if !has_external {
            for lb in &nsp.load_balancer_ips {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    dst_port(&host_net(*lb), &external_filter.0, external_filter.1),
                );
            }
        }
        // NodePort.
        if let Some(np) = sp.node_port {
            if has_endpoints {
                if localhost_nps && cfg.nfacct {
                    nat.rule(
                        "KUBE-NODEPORTS",
                        format!("-d 127.0.0.0/8 -p {proto} -m comment --comment \"{spn}\" -m {proto} --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext_chain}"),
                    );
                }
                nat.rule(
                    "KUBE-NODEPORTS",
                    format!("-p {proto} -m comment --comment \"{spn}\" -m {proto} --dport {np} -j {ext_chain}"),
                );
            }
            if !has_external {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    format!(
                        "-p {proto} -m comment --comment {} -m addrtype --dst-type LOCAL -m {proto} --dport {np} -j {}",
                        external_filter.0, external_filter.1
                    ),
                );
            }
        }
        // Health-check NodePort: always accepted.
        if let Some(hc) = nsp.health_check_node_port {
            filter.rule(
                "KUBE-NODEPORTS",
                format!("-p tcp -m comment --comment \"{spn} health check node port\" -m tcp --dport {hc} -j ACCEPT"),
            );
        }
        // Internal traffic: masquerade off-cluster (or all) ClusterIP traffic.
        if has_internal {
            let not_local = if cfg.masquerade_all {
                Some(String::new())
            } else {
                cfg.local_cidr.as_ref().map(|l| format!("! -s {} ", net(l)))
            };
            if let Some(src) = not_local {
                nat.rule(
                    internal_chain,
                    format!("{src}-d {cip} -p {proto} -m comment --comment \"{spn} cluster IP\" -m {proto} --dport {port} -j KUBE-MARK-MASQ"),
                );
            }
        }
        // External traffic.
        if uses_ext {
            nat.chain(&ext_chain);
            if !external_local {
                nat.rule(
                    &ext_chain,
                    format!("-m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ"),
                );
            } else {
                if let Some(l) = &cfg.local_cidr {
                    nat.rule(
                        &ext_chain,
                        format!("-s {} -m comment --comment \"pod traffic for {spn} external destinations\" -j {svc_chain}", net(l)),
                    );
                }
                nat.rule(
                    &ext_chain,
                    format!("-m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"),
                );
                nat.rule(
                    &ext_chain,
                    format!("-m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"),
                );
            }
            if has_external {
                nat.rule(&ext_chain, format!("-j {external_policy_chain}"));
            }
        }
        // loadBalancerSourceRanges.
        if uses_fw {
            let comment = format!("-m comment --comment \"{spn} loadbalancer IP\"");
            let mut allow_from_node = false;
            for r in &nsp.source_ranges {
                nat.rule(&fw_chain, format!("-s {} {comment} -j {ext_chain}", net(r)));
                allow_from_node |= cfg.node_ip.is_some_and(|n| r.contains(n));
            }
            if allow_from_node {
                for lb in &nsp.load_balancer_ips {
                    nat.rule(
                        &fw_chain,
                        format!("-s {} {comment} -j {ext_chain}", host_net(*lb)),
                    );
                }
            }
            nat.rule(
                &fw_chain,
                format!("-m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""),
            );
        }
        // Service -> endpoint dispatch.
        let dispatch = |nat: &mut TableBuf, chain: &str, eps: &[&RenderEndpoint]| {
            nat.chain(chain);
            let name = |e: &RenderEndpoint| {
                let ep = join_host_port(e.ip, e.port);
                (endpoint_chain(&spn, proto, &ep), ep)
            };
            if let Some(timeout) = nsp.affinity_timeout {
                for e in eps {
                    let (sep, ep) = name(e);
                    nat.rule(
                        chain,
                        format!("-m comment --comment \"{spn} -> {ep}\" -m recent --rcheck --seconds {timeout} --reap --name {sep} --mask {host_mask} --rsource -j {sep}"),
                    );
                }
            }
            let n = eps.len();
            for (i, e) in eps.iter().enumerate() {
                let (sep, ep) = name(e);
                let stat = if i + 1 < n {
                    format!(
                        "-m statistic --mode random --probability {} ",
                        probability(n - i)
                    )
                } else {
                    String::new()
                };
                nat.rule(
                    chain,
                    format!("-m comment --comment \"{spn} -> {ep}\" {stat}-j {sep}"),
                );
            }
        };
        if uses_cluster_chain {
            dispatch(&mut nat, &svc_chain, &cat.cluster);
        }
        if uses_local_chain {
            dispatch(&mut nat, &svl_chain, &cat.local);
        }
        // One chain per endpoint: hairpin masquerade, affinity, DNAT.
        for e in &cat.reachable {
            let ep = join_host_port(e.ip, e.port);
            let sep = endpoint_chain(&spn, proto, &ep);
            nat.rule(
                &sep,
                format!(
                    "-s {} -m comment --comment \"{spn}\" -j KUBE-MARK-MASQ",
                    host_net(e.ip)
                ),
            );
            let recent = if nsp.affinity_timeout.is_some() {
                format!("-m recent --set --name {sep} --mask {host_mask} --rsource ")
            } else {
                String::new()
            };
            nat.rule(
                &sep,
                format!("-p {proto} -m comment --comment \"{spn}\" {recent}-m {proto} -j DNAT --to-destination {ep}"),
            );
        }
    }

    // The tail call to KUBE-NODEPORTS: last in KUBE-SERVICES.
    let np_comment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &cfg.nodeport_ips {
        None => {
            let not_lo = if cfg.ipv6 || !cfg.localhost_nodeports {
                format!("! -d {lo_net} ")
            } else {
                String::new()
            };
            nat.rule(
                "KUBE-SERVICES",
                format!("{not_lo}{np_comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"),
            );
        }
        Some(ips) => {
            for ip in ips.iter().filter(|ip| ip.is_ipv6() == cfg.ipv6) {
                if ip.is_loopback() && !localhost_nps {
                    continue;
                }
                nat.rule(
                    "KUBE-SERVICES",
                    format!("-d {} {np_comment} -j KUBE-NODEPORTS", host_net(*ip)),
                );
            }
        }
    }
    filter.rule(
        "KUBE-FORWARD",
        format!(
            "-m conntrack --ctstate INVALID {}-j DROP",
            if cfg.nfacct {
                "-m nfacct --nfacct-name ct_state_invalid_dropped_pkts "
            } else {
                ""
            }
        ),
    );
    filter.rule(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT".into(),
    );
    filter.rule(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    );

    let mut s = String::with_capacity(1024 + 512 * ports.len());
    filter.emit(&mut s, "filter", &["INPUT", "FORWARD", "OUTPUT"]);
    nat.emit(
        &mut s,
        "nat",
        &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    );
    s
}

/// A generated cluster for benchmarks: `services` ClusterIP Services (10.96.0.0/12, port 80)
/// with `endpoints` ready endpoints each (10.244.0.0/16, port 8080).
pub fn synthetic(services: usize, endpoints: usize) -> Vec<RenderServicePort> {
    (0..services)
        .map(|i| {
            let cip = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32;
            RenderServicePort {
                namespace: format!("ns{}", i % 100),
                name: format!("svc{i}"),
                port_name: "http".into(),
                protocol: Proto::Tcp,
                cluster_ip: IpAddr::V4(cip.into()),
                port: 80,
                node_port: None,
                endpoints: (0..endpoints)
                    .map(|j| {
                        let ip = u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0))
                            + (i * endpoints + j) as u32;
                        RenderEndpoint {
                            ip: IpAddr::V4(ip.into()),
                            port: 8080,
                            ready: true,
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain names in kube-proxy's TestOverallIPTablesRules.
    #[test]
    fn chain_names_match_kube_proxy() {
        assert_eq!(
            service_chain("ns1/svc1:p80", Proto::Tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            external_chain("ns2/svc2:p80", Proto::Tcp),
            "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", Proto::Tcp, "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            endpoint_chain("ns4/svc4:p80", Proto::Tcp, "10.180.0.5:80"),
            "KUBE-SEP-C6EBXVWJJZMIWKLZ"
        );
        assert_eq!(
            local_chain("ns1/svc1:p80", Proto::Tcp),
            "KUBE-SVL-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            firewall_chain("ns5/svc5:p80", Proto::Tcp),
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
    }

    /// kube-proxy's `ServicePortName.String()` has no colon for an unnamed port.
    #[test]
    fn unnamed_port_name() {
        let mut sp = synthetic(1, 0).remove(0);
        assert_eq!(sp.port_name_string(), "ns0/svc0:http");
        sp.port_name.clear();
        assert_eq!(sp.port_name_string(), "ns0/svc0");
        // TestInternalTrafficPolicyE2E's unnamed port of ns1/svc1
        sp.namespace = "ns1".into();
        sp.name = "svc1".into();
        assert_eq!(
            service_chain(&sp.port_name_string(), Proto::Tcp),
            "KUBE-SVC-AQI2S6QIMU7PVVRP"
        );
    }

    #[test]
    fn probabilities_like_kube_proxy() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::iptables::{parse_iptables_save, trace};
    use crate::trace::{NodeContext, Packet, Verdict};
    use proptest::prelude::*;

    const NODE: [u8; 4] = [192, 168, 0, 2];

    fn ports_strategy() -> impl Strategy<Value = Vec<NftServicePort>> {
        prop::collection::vec(
            (
                0usize..4,                                     // endpoints
                prop::collection::vec(any::<bool>(), 4),       // ready
                prop::collection::vec(any::<bool>(), 4),       // on this node
                any::<bool>(),                                 // node port
                (any::<bool>(), any::<bool>(), any::<bool>()), // eTP Local, iTP Local, affinity
                prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)],
                any::<bool>(), // a load-balancer IP
            ),
            1..5,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (n, ready, local, np, (etp, itp, aff), proto, lb))| {
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
                        port_name: if i % 2 == 0 {
                            String::new()
                        } else {
                            "p".into()
                        },
                        protocol: proto,
                        cluster_ip: IpAddr::from([172, 30, 0, 10 + i as u8]),
                        port: 80,
                        node_port: np.then_some(30000 + i as u16),
                        endpoints: eps.clone(),
                    });
                    sp.external_policy_local = etp;
                    sp.internal_policy_local = itp;
                    sp.affinity_timeout = aff.then_some(10800);
                    if lb {
                        sp.load_balancer_ips = vec![IpAddr::from([1, 2, 3, 10 + i as u8])];
                    }
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

    fn cfg() -> ProxierConfig {
        ProxierConfig {
            ipv6: false,
            local_cidr: Some(IpNet {
                addr: IpAddr::from([10, 0, 0, 0]),
                prefix: 8,
            }),
            masquerade_all: false,
            localhost_nodeports: true,
            nodeport_ips: None,
            node_ip: Some(IpAddr::from(NODE)),
            random_fully: true,
            nfacct: true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// render → parse → trace agrees with kube-proxy's endpoint selection: a pod on a
        /// ClusterIP gets the ready endpoints (this node's with internalTrafficPolicy Local,
        /// DROP if none) with probability 1/n, REJECT without any; an outside client on a
        /// NodePort or load-balancer IP gets them masqueraded (Cluster) or this node's,
        /// unmasqueraded (externalTrafficPolicy Local, DROP if none); every rule is understood.
        #[test]
        fn round_trip_agrees_with_kube_proxy(ports in ports_strategy()) {
            let text = render_iptables(&ports, &cfg());
            let rules = parse_iptables_save(&text).unwrap();
            let ctx = NodeContext { node_ips: vec![IpAddr::from(NODE)] };
            for sp in &ports {
                let b = &sp.base;
                let sel = |local_only: bool| -> Vec<String> {
                    b.endpoints.iter()
                        .filter(|e| e.ready && (!local_only || sp.local_endpoints.contains(&e.ip)))
                        .map(|e| join_host_port(e.ip, e.port)).collect()
                };
                let ready = sel(false);
                let check = |pkt: Packet, want: Vec<String>, masq: bool| -> Result<(), TestCaseError> {
                    let r = trace(&rules, &pkt, &ctx);
                    prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                    let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
                    prop_assert!((total - 1.0).abs() < 1e-9);
                    if ready.is_empty() {
                        prop_assert_eq!(r.verdict, Verdict::Reject, "{:?}\n{}", pkt, text);
                    } else if want.is_empty() {
                        prop_assert_eq!(r.verdict, Verdict::Drop, "{:?}\n{}", pkt, text);
                    } else {
                        prop_assert_eq!(r.verdict, Verdict::Dnat, "{:?}\n{}", pkt, text);
                        prop_assert_eq!(&r.endpoints, &want);
                        for (_, p) in r.endpoint_probabilities() {
                            prop_assert!((p - 1.0 / want.len() as f64).abs() < 1e-9);
                        }
                        prop_assert_eq!(r.masquerade, masq, "{:?}", pkt);
                    }
                    Ok(())
                };
                let pod = IpAddr::from([10, 0, 0, 2]);
                let outside = IpAddr::from([203, 0, 113, 2]);
                check(
                    Packet { src: pod, dst: b.cluster_ip, dport: b.port, proto: b.protocol },
                    sel(sp.internal_policy_local),
                    false,
                )?;
                let mut external: Vec<Packet> = sp.load_balancer_ips.iter()
                    .map(|lb| Packet { src: outside, dst: *lb, dport: b.port, proto: b.protocol })
                    .collect();
                if let Some(np) = b.node_port {
                    external.push(Packet { src: outside, dst: IpAddr::from(NODE), dport: np, proto: b.protocol });
                }
                for pkt in external {
                    check(pkt, sel(sp.external_policy_local), !sp.external_policy_local)?;
                }
            }
        }
    }
}
