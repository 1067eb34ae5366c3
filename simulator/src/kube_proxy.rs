//! What kube-proxy (iptables, nftables and IPVS modes) would program for the cluster model:
//! the model's Service ports and endpoints, handed to kdiag-probes' renderers. Pure.
//!
//! The iptables rules and the IPVS-mode files are per node, as kube-proxy writes them on each
//! node: Services' traffic policies (`externalTrafficPolicy`/`internalTrafficPolicy: Local`
//! with that node's endpoints), ClientIP session affinity, NodePorts on that node's IP.

use crate::model::{Cluster, Node};
use kdiag_probes::iptables::render::{
    render_iptables as render_iptables_rules, ProxierConfig, RenderEndpoint, RenderServicePort,
};
use kdiag_probes::iptables::IpNet;
use kdiag_probes::ipvs::render::{render_ipvs as render_ipvs_mode, IpvsRender, IpvsRenderConfig};
use kdiag_probes::nft::render::{render_nft_list, NftRenderConfig, NftServicePort};
use kdiag_probes::trace::Proto;
use std::net::{IpAddr, Ipv4Addr};

/// Relative path of the rendered `iptables-save` under a node root.
pub const IPTABLES_SAVE: &str = "var/lib/kdiag/iptables-save.txt";

/// Relative path of the rendered `nft list ruleset` (nftables mode) under a node root.
pub const NFT_RULESET: &str = "var/lib/kdiag/nft-ruleset.txt";

/// Relative path of the rendered `ipvsadm -Sn` (IPVS mode) under a node root.
pub const IPVSADM: &str = "var/lib/kdiag/ipvsadm.txt";

/// Relative path of the rendered `ipset save` (IPVS mode) under a node root.
pub const IPSET: &str = "var/lib/kdiag/ipset.txt";

/// Relative path of the rendered `iptables-save` of kube-proxy's IPVS mode under a node root.
pub const IPVS_IPTABLES_SAVE: &str = "var/lib/kdiag/ipvs-iptables-save.txt";

/// The smallest IPv4 network covering every node's pod CIDR: kube-proxy's `--cluster-cidr`.
pub fn cluster_cidr(nodes: &[Node]) -> Option<IpNet> {
    let first = nodes.first()?;
    let mut addr = u32::from(first.pod_cidr.0);
    let mut prefix = u32::from(first.pod_cidr.1.min(32));
    for n in &nodes[1..] {
        let a = u32::from(n.pod_cidr.0);
        let common = (addr ^ a).leading_zeros();
        prefix = prefix.min(common).min(u32::from(n.pod_cidr.1));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    addr &= mask;
    Some(IpNet {
        addr: IpAddr::V4(Ipv4Addr::from(addr)),
        prefix: prefix as u8,
    })
}

/// Every Service port kube-proxy would program, with its endpoints (ready or not), in the
/// model's order; endpoints sorted by `IP:PORT` as kube-proxy's endpoints map is.
pub fn service_ports(cluster: &Cluster) -> Vec<RenderServicePort> {
    let mut out = Vec::new();
    for svc in &cluster.services {
        let (Some(cip), None) = (svc.cluster_ip, &svc.external_name) else {
            continue;
        };
        let eps = cluster.endpoints(svc);
        for sp in &svc.ports {
            let Ok(protocol) = sp.protocol.parse::<Proto>() else {
                continue;
            };
            let mut endpoints: Vec<RenderEndpoint> = eps
                .iter()
                .filter_map(|e| {
                    e.ports
                        .iter()
                        .find(|(name, _, proto)| *name == sp.name && *proto == sp.protocol)
                        .map(|(_, port, _)| RenderEndpoint {
                            ip: IpAddr::V4(e.ip),
                            port: *port,
                            ready: e.ready,
                        })
                })
                .collect();
            endpoints.sort_by_key(|e| format!("{}:{}", e.ip, e.port));
            endpoints.dedup();
            out.push(RenderServicePort {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port_name: sp.name.clone().unwrap_or_default(),
                protocol,
                cluster_ip: IpAddr::V4(cip),
                port: sp.port,
                node_port: sp.node_port,
                endpoints,
            });
        }
    }
    out
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (the model has no
/// timeout of its own).
const AFFINITY_TIMEOUT: u32 = 10800;

/// Every Service port kube-proxy on `node` programs: [`service_ports`] plus the Service's
/// traffic policies and session affinity, and which endpoints run on `node`.
pub fn node_service_ports(cluster: &Cluster, node: &str) -> Vec<NftServicePort> {
    service_ports(cluster)
        .into_iter()
        .map(|sp| {
            let svc = cluster.service(&sp.namespace, &sp.name);
            let policy = svc.map(|s| s.policy).unwrap_or_default();
            let local: Vec<IpAddr> = svc
                .map(|s| cluster.endpoints(s))
                .unwrap_or_default()
                .iter()
                .filter(|e| e.node == node)
                .map(|e| IpAddr::V4(e.ip))
                .collect();
            let mut n = NftServicePort::from(sp);
            n.external_policy_local = policy.external_local;
            n.internal_policy_local = policy.internal_local;
            n.affinity_timeout = policy.client_ip_affinity.then_some(AFFINITY_TIMEOUT);
            n.local_endpoints = local;
            n
        })
        .collect()
}

/// The `iptables-save` that `node` of this cluster shows: kube-proxy's rules for every
/// Service port as that node sees it ([`node_service_ports`]), NodePorts accepted on the
/// node's IP (`--nodeport-addresses`; the lab's node IPs are all loopback addresses, so
/// "every local address" would also claim the other nodes' IPs).
pub fn render_iptables(cluster: &Cluster, node: &Node) -> String {
    render_iptables_rules(
        &node_service_ports(cluster, &node.name),
        &ProxierConfig {
            ipv6: false,
            local_cidr: cluster_cidr(&cluster.nodes),
            masquerade_all: false,
            localhost_nodeports: true,
            nodeport_ips: Some(vec![IpAddr::V4(node.ip)]),
            node_ip: Some(IpAddr::V4(node.ip)),
            random_fully: true,
            nfacct: true,
        },
    )
}

/// The `nft list ruleset` that `node` of this cluster shows in nftables mode: kube-proxy's
/// ruleset for every Service port as that node sees it ([`node_service_ports`]: traffic
/// policies with the node's endpoints, affinity), NodePorts accepted on the node's IP
/// (`--nodeport-addresses`; the lab's node IPs are loopback addresses, which the default
/// `fib daddr type local` rule excludes).
pub fn render_nft(cluster: &Cluster, node: &Node) -> String {
    render_nft_list(
        &node_service_ports(cluster, &node.name),
        &NftRenderConfig {
            ipv6: false,
            pod_cidr: cluster_cidr(&cluster.nodes),
            service_cidrs: Vec::new(),
            nodeport_ips: Some(vec![IpAddr::V4(node.ip)]),
            node_ip: Some(IpAddr::V4(node.ip)),
            masquerade_all: false,
        },
    )
}

/// What kube-proxy's IPVS mode programs on `node`: virtual services for every ClusterIP and
/// for each NodePort on the node's IP, the ipsets and its iptables rules. Per node: the
/// node's own endpoints serve `externalTrafficPolicy: Local` and fill `KUBE-LOOP-BACK`.
pub fn render_ipvs(cluster: &Cluster, node: &Node) -> IpvsRender {
    let local: Vec<IpAddr> = cluster
        .pods
        .iter()
        .filter(|p| p.node == node.name)
        .map(|p| IpAddr::V4(p.ip))
        .collect();
    let ports: Vec<NftServicePort> = service_ports(cluster)
        .into_iter()
        .map(|sp| {
            let policy = cluster
                .service(&sp.namespace, &sp.name)
                .map(|s| s.policy)
                .unwrap_or_default();
            let mut n = NftServicePort::from(sp);
            n.affinity_timeout = policy.client_ip_affinity.then_some(10800);
            n.external_policy_local = policy.external_local;
            n.local_endpoints = n
                .base
                .endpoints
                .iter()
                .map(|e| e.ip)
                .filter(|ip| local.contains(ip))
                .collect();
            n
        })
        .collect();
    render_ipvs_mode(
        &ports,
        &IpvsRenderConfig {
            node_ips: vec![IpAddr::V4(node.ip)],
            cluster_cidr: cluster_cidr(&cluster.nodes),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pod, PodPort, Service, ServicePolicy, ServicePort, TargetPort};
    use kdiag_probes::iptables::{parse_iptables_save, trace};
    use kdiag_probes::trace::{findings, NodeContext, Packet, Verdict};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn node(i: u8) -> Node {
        Node {
            name: format!("node-{i}"),
            ip: Ipv4Addr::new(192, 168, 0, 10 + i),
            pod_cidr: (Ipv4Addr::new(10, 244, i, 0), 24),
            ready: true,
        }
    }

    #[test]
    fn cluster_cidr_covers_every_node() {
        let c = cluster_cidr(&[node(0), node(1), node(2)]).unwrap();
        assert_eq!(c.prefix, 22);
        assert_eq!(c.addr, "10.244.0.0".parse::<IpAddr>().unwrap());
        for n in 0..3 {
            assert!(c.contains(IpAddr::V4(Ipv4Addr::new(10, 244, n, 7))));
        }
        assert_eq!(cluster_cidr(&[]), None);
    }

    #[test]
    fn demo_lab_rules_trace_kube_dns_to_both_coredns_pods() {
        let plan = crate::model::AddressPlan { slice: 9 };
        let c = Cluster::demo(&plan, 53);
        let text = render_iptables(&c, &c.nodes[0]);
        let rules = parse_iptables_save(&text).unwrap();
        let dns = c.service("kube-system", "kube-dns").unwrap();
        let want: BTreeSet<String> = c
            .ready_endpoints(dns)
            .iter()
            .map(|e| format!("{}:53", e.ip))
            .collect();
        let r = trace(
            &rules,
            &Packet {
                src: IpAddr::V4(plan.pod_ip(0, 50)),
                dst: IpAddr::V4(dns.cluster_ip.unwrap()),
                dport: 53,
                proto: Proto::Udp,
            },
            &NodeContext {
                node_ips: vec![IpAddr::V4(plan.node_ip(0))],
            },
        );
        assert_eq!(r.verdict, Verdict::Dnat);
        assert_eq!(r.endpoints.iter().cloned().collect::<BTreeSet<_>>(), want);

        let nft_text = render_nft(&c, &c.nodes[0]);
        let nft = kdiag_probes::nft::parse_text(&nft_text).unwrap();
        let n = kdiag_probes::nft::trace(
            &nft,
            &Packet {
                src: IpAddr::V4(plan.pod_ip(0, 50)),
                dst: IpAddr::V4(dns.cluster_ip.unwrap()),
                dport: 53,
                proto: Proto::Udp,
            },
            &NodeContext {
                node_ips: vec![IpAddr::V4(plan.node_ip(0))],
            },
        );
        assert_eq!(n.endpoint_probabilities(), r.endpoint_probabilities());
    }

    /// Each lab node root's rules are that node's kube-proxy's: `hostnames` (NodePort,
    /// externalTrafficPolicy Local) reaches only the node's own pods from outside,
    /// unmasqueraded, exactly the backends the embedded proxy serves on that node's NodePort;
    /// `hostnames-sticky` (ClientIP) carries kube-proxy's `recent` affinity rules.
    #[test]
    fn demo_lab_rules_per_node_follow_traffic_policies() {
        let plan = crate::model::AddressPlan { slice: 9 };
        let c = Cluster::demo(&plan, 53);
        let svc = c.service("default", "hostnames").unwrap();
        let sp = &svc.ports[0];
        let np = sp.node_port.unwrap();
        let sticky = c.service("default", "hostnames-sticky").unwrap();
        let mut seen = BTreeSet::new();
        for node in &c.nodes {
            let text = render_iptables(&c, node);
            let rules = parse_iptables_save(&text).unwrap();
            let ctx = NodeContext {
                node_ips: vec![IpAddr::V4(node.ip)],
            };
            let want = served(&c, svc, sp, Some(node.name.as_str()));
            let r = trace(
                &rules,
                &Packet {
                    src: "203.0.113.9".parse().unwrap(),
                    dst: IpAddr::V4(node.ip),
                    dport: np,
                    proto: Proto::Tcp,
                },
                &ctx,
            );
            let got: BTreeSet<String> = r.endpoints.iter().cloned().collect();
            assert_eq!(got, want, "{}", node.name);
            if want.is_empty() {
                assert_eq!(r.verdict, Verdict::Drop, "{}", node.name);
            } else {
                assert_eq!(r.verdict, Verdict::Dnat, "{}", node.name);
                assert!(!r.masquerade, "{}", node.name);
            }
            seen.extend(got);
            let r = trace(
                &rules,
                &Packet {
                    src: IpAddr::V4(plan.pod_ip(0, 50)),
                    dst: IpAddr::V4(sticky.cluster_ip.unwrap()),
                    dport: 80,
                    proto: Proto::Tcp,
                },
                &ctx,
            );
            assert!(
                r.notes.iter().any(|n| n.contains("session affinity")),
                "{:?}",
                r.notes
            );
        }
        // between them the nodes serve every ready hostnames pod
        assert_eq!(seen, served(&c, svc, sp, None));
        assert!(!seen.is_empty());
    }

    /// A random cluster: up to 3 nodes, up to 5 Services with up to 3 ports each, up to 5
    /// pods per Service with random readiness; numeric or named target ports.
    fn cluster() -> impl Strategy<Value = Cluster> {
        let port = (
            prop::sample::select(vec!["TCP", "UDP", "SCTP"]),
            1u16..2000,
            prop::option::of(30000u16..30100),
            1u16..9000,
            any::<bool>(),
        );
        let svc = (
            prop::collection::vec(port, 1..4),
            prop::collection::vec((0u8..3, any::<bool>()), 0..6),
            // sessionAffinity ClientIP, externalTrafficPolicy Local, internalTrafficPolicy Local
            (any::<bool>(), any::<bool>(), any::<bool>()),
        );
        (1u8..4, prop::collection::vec(svc, 1..6)).prop_map(|(nnodes, svcs)| {
            let nodes: Vec<Node> = (0..nnodes).map(node).collect();
            let mut pods = Vec::new();
            let mut services = Vec::new();
            let mut used = BTreeSet::new();
            for (si, (ports, members, (affinity, etp_local, itp_local))) in
                svcs.into_iter().enumerate()
            {
                let app = format!("app{si}");
                let mut sports = Vec::new();
                let mut pports = Vec::new();
                for (pi, (proto, p, np, target, named)) in ports.into_iter().enumerate() {
                    // a Service port is unique by (port, protocol), NodePorts cluster-wide
                    if sports
                        .iter()
                        .any(|s: &ServicePort| s.port == p && s.protocol == proto)
                    {
                        continue;
                    }
                    let np = np.filter(|n| used.insert((*n, proto)));
                    let name = format!("p{pi}");
                    sports.push(ServicePort {
                        name: Some(name.clone()),
                        protocol: proto.into(),
                        port: p,
                        target: if named {
                            TargetPort::Name(name.clone())
                        } else {
                            TargetPort::Number(target)
                        },
                        node_port: np,
                    });
                    pports.push(PodPort {
                        name: Some(name),
                        port: target,
                        protocol: proto.into(),
                    });
                }
                for (k, (on, ready)) in members.into_iter().enumerate() {
                    let on = on % nnodes;
                    pods.push(Pod {
                        namespace: "default".into(),
                        name: format!("{app}-{k}"),
                        node: format!("node-{on}"),
                        ip: Ipv4Addr::new(10, 244, on, (si * 10 + k + 2) as u8),
                        labels: [("app".to_string(), app.clone())].into_iter().collect(),
                        ports: pports.clone(),
                        ready,
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
                services.push(Service {
                    namespace: "default".into(),
                    name: format!("svc{si}"),
                    cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10 + si as u8)),
                    selector: [("app".to_string(), app)]
                        .into_iter()
                        .collect::<BTreeMap<_, _>>(),
                    ports: sports,
                    external_name: None,
                    policy: ServicePolicy {
                        client_ip_affinity: affinity,
                        external_local: etp_local,
                        internal_local: itp_local,
                    },
                });
            }
            Cluster {
                domain: "cluster.local".into(),
                nodes,
                pods,
                services,
            }
        })
    }

    /// The `IP:PORT`s the lab's embedded proxy serves for a Service port (its `sync_proxy` and
    /// `pick`): the ready endpoints, only those on `node` when `only_node` is set.
    fn served(
        c: &Cluster,
        svc: &Service,
        sp: &ServicePort,
        only_node: Option<&str>,
    ) -> BTreeSet<String> {
        c.ready_endpoints(svc)
            .iter()
            .filter(|e| only_node.is_none_or(|n| e.node == n))
            .filter_map(|e| {
                e.ports
                    .iter()
                    .find(|(n, _, p)| *n == sp.name && *p == sp.protocol)
                    .map(|(_, port, _)| format!("{}:{port}", e.ip))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// model -> render (per node) -> parse -> trace agrees with what the lab's embedded
        /// proxy serves: a pod on node N reaching a ClusterIP gets the Service's ready
        /// endpoints (only N's with internalTrafficPolicy Local; DROP when N has none), each
        /// with probability 1/n; no ready endpoint is a REJECT naming the Service; an outside
        /// client on N's NodePort gets the ready endpoints, masqueraded (Cluster), or N's own,
        /// unmasqueraded (externalTrafficPolicy Local; DROP when N has none); ClientIP
        /// affinity is noted; a port no Service has matches nothing. The node's nftables-mode
        /// ruleset routes every one of these packets the same.
        #[test]
        fn rendered_rules_route_like_the_model(c in cluster(), from_pod in any::<bool>(), extra in 2000u16..3000) {
            for (ni, node) in c.nodes.iter().enumerate() {
                let nft_text = render_nft(&c, node);
                let nft = kdiag_probes::nft::parse_text(&nft_text).unwrap();
                let text = render_iptables(&c, node);
                let rules = parse_iptables_save(&text).unwrap();
                let ctx = NodeContext { node_ips: vec![IpAddr::V4(node.ip)] };
                // nftables mode agrees with iptables mode (both are this node's kube-proxy)
                let agree = |pkt: &Packet| -> Result<(), TestCaseError> {
                    let a = trace(&rules, pkt, &ctx);
                    let b = kdiag_probes::nft::trace(&nft, pkt, &ctx);
                    let (pa, pb) = (a.endpoint_probabilities(), b.endpoint_probabilities());
                    prop_assert_eq!(pa.len(), pb.len(), "{:?}", pkt);
                    for ((ea, xa), (eb, xb)) in pa.iter().zip(&pb) {
                        prop_assert_eq!(ea, eb);
                        prop_assert!((xa - xb).abs() < 1e-6, "{:?}", pkt);
                    }
                    prop_assert_eq!(a.masquerade, b.masquerade, "{:?}", pkt);
                    if a.verdict == Verdict::Reject {
                        prop_assert_eq!(b.verdict, Verdict::Reject);
                        prop_assert_eq!(a.rejecting_comment(), b.rejecting_comment());
                    }
                    Ok(())
                };
                // a pod on this node, or a client outside the cluster
                let src = if from_pod {
                    IpAddr::V4(Ipv4Addr::new(10, 244, ni as u8, 250))
                } else {
                    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))
                };
                for svc in &c.services {
                    let cip = IpAddr::V4(svc.cluster_ip.unwrap());
                    let policy = svc.policy;
                    for sp in &svc.ports {
                        let proto: Proto = sp.protocol.parse().unwrap();
                        let ready = served(&c, svc, sp, None);
                        // internalTrafficPolicy Local: this node's endpoints (the embedded
                        // proxy picks by the client's node, so the pod on this node; kube-proxy
                        // uses the node's endpoints for any client)
                        let want = served(&c, svc, sp, policy.internal_local.then_some(node.name.as_str()));
                        let pkt = Packet { src, dst: cip, dport: sp.port, proto };
                        agree(&pkt)?;
                        let r = trace(&rules, &pkt, &ctx);
                        prop_assert!(r.unknown.is_empty(), "{:?}", r.unknown);
                        let got: BTreeSet<String> = r.endpoints.iter().cloned().collect();
                        prop_assert_eq!(&got, &want, "{}:{} on {} {}", cip, sp.port, node.name, text);
                        if ready.is_empty() {
                            prop_assert_eq!(r.verdict, Verdict::Reject);
                            let f = findings(&r, &pkt);
                            let needle = format!("default/{}:", svc.name);
                            prop_assert!(f.iter().any(|f| f.summary.contains(&needle)), "{:?}", f);
                        } else if want.is_empty() {
                            prop_assert_eq!(r.verdict, Verdict::Drop);
                        } else {
                            prop_assert_eq!(r.verdict, Verdict::Dnat);
                            for (_, p) in r.endpoint_probabilities() {
                                prop_assert!((p - 1.0 / want.len() as f64).abs() < 1e-6);
                            }
                            prop_assert_eq!(r.masquerade, !from_pod);
                            prop_assert_eq!(
                                r.notes.iter().any(|n| n.contains("session affinity")),
                                policy.client_ip_affinity
                            );
                        }
                        if let Some(np) = sp.node_port {
                            // an outside client on this node's NodePort
                            let pkt = Packet { src: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), dst: IpAddr::V4(node.ip), dport: np, proto };
                            agree(&pkt)?;
                            let want = served(&c, svc, sp, policy.external_local.then_some(node.name.as_str()));
                            let r = trace(&rules, &pkt, &ctx);
                            let got: BTreeSet<String> = r.endpoints.iter().cloned().collect();
                            prop_assert_eq!(&got, &want, "NodePort {} on {}", np, node.name);
                            let verdict = if ready.is_empty() {
                                Verdict::Reject
                            } else if want.is_empty() {
                                Verdict::Drop
                            } else {
                                Verdict::Dnat
                            };
                            prop_assert_eq!(r.verdict, verdict);
                            prop_assert_eq!(r.masquerade, verdict == Verdict::Dnat && !policy.external_local);
                            // kube-proxy short-circuits a pod's connection to a NodePort to all
                            // ready endpoints (the embedded proxy does not: it serves the
                            // NodePort's Route for every client)
                            let from_pod = Packet { src: IpAddr::V4(Ipv4Addr::new(10, 244, ni as u8, 250)), ..pkt };
                            agree(&from_pod)?;
                            let r = trace(&rules, &from_pod, &ctx);
                            let got: BTreeSet<String> = r.endpoints.iter().cloned().collect();
                            prop_assert_eq!(&got, &ready);
                        }
                        // another node's NodePort is not this node's business
                        if let (Some(np), Some(other)) = (sp.node_port, c.nodes.iter().find(|n| n.name != node.name)) {
                            let r = trace(&rules, &Packet { src, dst: IpAddr::V4(other.ip), dport: np, proto }, &ctx);
                            prop_assert_eq!(r.verdict, Verdict::NoMatch);
                        }
                    }
                    let taken = svc.ports.iter().any(|p| p.port == extra);
                    if !taken {
                        let r = trace(&rules, &Packet { src, dst: cip, dport: extra, proto: Proto::Tcp }, &ctx);
                        prop_assert_eq!(r.verdict, Verdict::NoMatch);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// model -> IPVS-mode render (per node) -> parse -> trace agrees with the model: a
        /// ClusterIP port reaches exactly its ready endpoints (refused without any), a NodePort
        /// on the node's IP the same, masqueraded from outside the cluster CIDR.
        #[test]
        fn rendered_ipvs_mode_routes_like_the_model(c in cluster(), from_pod in any::<bool>()) {
            let src = if from_pod {
                IpAddr::V4(Ipv4Addr::new(10, 244, 0, 250))
            } else {
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))
            };
            for node in &c.nodes {
                let r = render_ipvs(&c, node);
                let table = kdiag_probes::ipvs::parse_ipvs(&r.ipvsadm).unwrap();
                let sets = kdiag_probes::ipvs::parse_ipset_save(&r.ipset).unwrap();
                let rules = parse_iptables_save(&r.iptables).unwrap();
                let ctx = NodeContext { node_ips: vec![IpAddr::V4(node.ip)] };
                for svc in &c.services {
                    let ready = c.ready_endpoints(svc);
                    for sp in &svc.ports {
                        let proto: Proto = sp.protocol.parse().unwrap();
                        let want: BTreeSet<String> = ready
                            .iter()
                            .filter_map(|e| e.ports.iter().find(|(n, _, p)| *n == sp.name && *p == sp.protocol).map(|(_, port, _)| format!("{}:{port}", e.ip)))
                            .collect();
                        // internalTrafficPolicy Local is not rendered for IPVS mode (the
                        // renderer's documented gap): its ClusterIP is not checked here
                        let mut dsts = Vec::new();
                        if !svc.policy.internal_local {
                            dsts.push((IpAddr::V4(svc.cluster_ip.unwrap()), sp.port, !from_pod, want.clone()));
                        }
                        if let Some(np) = sp.node_port {
                            // externalTrafficPolicy Local: the NodePort's real servers are this
                            // node's endpoints, and the source is kept
                            // (with none, kube-proxy's IPVS mode adds every ready endpoint,
                            // unmasqueraded, for local pods' sake: upstream PR 97081)
                            if svc.policy.external_local {
                                let local = served(&c, svc, sp, Some(node.name.as_str()));
                                let want = if local.is_empty() { want.clone() } else { local };
                                dsts.push((IpAddr::V4(node.ip), np, false, want));
                            } else {
                                dsts.push((IpAddr::V4(node.ip), np, true, want.clone()));
                            }
                        }
                        for (dst, dport, masq, want) in dsts {
                            let pkt = Packet { src, dst, dport, proto };
                            let t = kdiag_probes::ipvs::trace_node(&table, &sets, &rules, &pkt, &ctx);
                            let got: BTreeSet<String> = t.endpoints.iter().cloned().collect();
                            prop_assert_eq!(&got, &want, "{} {:?}", node.name, pkt);
                            prop_assert!(t.unknown.is_empty(), "{:?}", t.unknown);
                            if want.is_empty() {
                                prop_assert_eq!(t.verdict, Verdict::Reject);
                            } else {
                                prop_assert_eq!(t.verdict, Verdict::Dnat);
                                prop_assert_eq!(t.masquerade, masq, "{:?}", pkt);
                            }
                        }
                    }
                }
            }
        }
    }
}
