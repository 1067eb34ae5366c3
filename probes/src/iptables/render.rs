//! Renders the `iptables-save` text a node shows once kube-proxy (iptables mode) has synced a
//! set of Service ports: the same chains, chain names (kube-proxy's hash), rule order,
//! comments and probabilities, in iptables-save's canonical option order. Pure.
//!
//! Covers ClusterIP and NodePort Services with `externalTrafficPolicy: Cluster` and no session
//! affinity (what the simulator's cluster model has); LoadBalancer, externalIPs, Local
//! policies and affinity are not rendered.

use super::model::IpNet;
use crate::trace::{join_host_port, Proto};
use sha2::{Digest, Sha256};
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
    /// kube-proxy's `ServicePortName.String()`: `ns/name:port`.
    pub fn port_name_string(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
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

/// Renders the full `iptables-save` output (filter and nat tables) for `ports`.
pub fn render_iptables_save(ports: &[RenderServicePort], cfg: &RenderConfig) -> String {
    let mut filter_chains: Vec<String> = Vec::new();
    let mut filter_rules = String::new();
    let mut nat_chains: Vec<String> = Vec::new();
    let mut nat_services = String::new();
    let mut nat_nodeports = String::new();
    let mut nat_rest = String::new();

    for sp in ports {
        let spn = sp.port_name_string();
        let proto = sp.protocol;
        let ready: Vec<&RenderEndpoint> = sp.endpoints.iter().filter(|e| e.ready).collect();
        let cip = host_net(sp.cluster_ip);
        if ready.is_empty() {
            let _ = writeln!(
                filter_rules,
                "-A KUBE-SERVICES -d {cip} -p {proto} -m comment --comment \"{spn} has no endpoints\" -m {proto} --dport {} -j REJECT --reject-with icmp-port-unreachable",
                sp.port
            );
            if let Some(np) = sp.node_port {
                let _ = writeln!(
                    filter_rules,
                    "-A KUBE-EXTERNAL-SERVICES -p {proto} -m comment --comment \"{spn} has no endpoints\" -m addrtype --dst-type LOCAL -m {proto} --dport {np} -j REJECT --reject-with icmp-port-unreachable"
                );
            }
            continue;
        }
        let svc_chain = service_chain(&spn, proto);
        nat_chains.push(svc_chain.clone());
        let _ = writeln!(
            nat_services,
            "-A KUBE-SERVICES -d {cip} -p {proto} -m comment --comment \"{spn} cluster IP\" -m {proto} --dport {} -j {svc_chain}",
            sp.port
        );
        if let Some(np) = sp.node_port {
            let ext = external_chain(&spn, proto);
            nat_chains.push(ext.clone());
            if cfg.localhost_nodeports && sp.cluster_ip.is_ipv4() {
                let _ = writeln!(
                    nat_nodeports,
                    "-A KUBE-NODEPORTS -d 127.0.0.0/8 -p {proto} -m comment --comment \"{spn}\" -m {proto} --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}"
                );
            }
            let _ = writeln!(
                nat_nodeports,
                "-A KUBE-NODEPORTS -p {proto} -m comment --comment \"{spn}\" -m {proto} --dport {np} -j {ext}"
            );
            let _ = writeln!(
                nat_rest,
                "-A {ext} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ\n-A {ext} -j {svc_chain}"
            );
        }
        if let Some(local) = &cfg.local_cidr {
            let _ = writeln!(
                nat_rest,
                "-A {svc_chain} ! -s {} -d {cip} -p {proto} -m comment --comment \"{spn} cluster IP\" -m {proto} --dport {} -j KUBE-MARK-MASQ",
                net(local),
                sp.port
            );
        }
        let n = ready.len();
        let mut sep_rules = String::new();
        for (i, ep) in ready.iter().enumerate() {
            let ep_str = join_host_port(ep.ip, ep.port);
            let sep = endpoint_chain(&spn, proto, &ep_str);
            nat_chains.push(sep.clone());
            if i + 1 < n {
                let _ = writeln!(
                    nat_rest,
                    "-A {svc_chain} -m comment --comment \"{spn} -> {ep_str}\" -m statistic --mode random --probability {} -j {sep}",
                    probability(n - i)
                );
            } else {
                let _ = writeln!(
                    nat_rest,
                    "-A {svc_chain} -m comment --comment \"{spn} -> {ep_str}\" -j {sep}"
                );
            }
            let _ = writeln!(
                sep_rules,
                "-A {sep} -s {} -m comment --comment \"{spn}\" -j KUBE-MARK-MASQ\n-A {sep} -p {proto} -m comment --comment \"{spn}\" -m {proto} -j DNAT --to-destination {ep_str}",
                host_net(ep.ip)
            );
        }
        nat_rest.push_str(&sep_rules);
    }
    filter_chains.extend(
        [
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FIREWALL",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SERVICES",
        ]
        .map(String::from),
    );
    nat_chains.extend(
        [
            "KUBE-MARK-MASQ",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-SERVICES",
        ]
        .map(String::from),
    );
    nat_chains.sort();
    nat_chains.dedup();

    let mut s = String::with_capacity(256 + nat_rest.len() + nat_services.len());
    s.push_str("# Generated by iptables-save v1.8.9 on Thu Jan  1 00:00:00 1970\n*filter\n");
    s.push_str(":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in &filter_chains {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    s.push_str(
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A INPUT -j KUBE-FIREWALL\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -j KUBE-FIREWALL\n",
    );
    s.push_str(&filter_rules);
    s.push_str(
        "-A KUBE-FIREWALL -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
COMMIT\n# Completed on Thu Jan  1 00:00:00 1970\n",
    );
    s.push_str("# Generated by iptables-save v1.8.9 on Thu Jan  1 00:00:00 1970\n*nat\n");
    s.push_str(":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    for c in &nat_chains {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    s.push_str(&nat_nodeports);
    s.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    s.push_str(&nat_services);
    // Localhost NodePorts never work over IPv6 and are off in IPv4 without
    // --iptables-localhost-nodeports; kube-proxy then excludes loopback here.
    let v6 = ports.first().is_some_and(|p| p.cluster_ip.is_ipv6());
    let not_lo = if v6 {
        "! -d ::1/128 "
    } else if !cfg.localhost_nodeports {
        "! -d 127.0.0.0/8 "
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "-A KUBE-SERVICES {not_lo}-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    s.push_str(&nat_rest);
    s.push_str("COMMIT\n# Completed on Thu Jan  1 00:00:00 1970\n");
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
    }

    #[test]
    fn probabilities_like_kube_proxy() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
    }
}
