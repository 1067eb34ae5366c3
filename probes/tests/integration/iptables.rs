//! Golden packet-flow tests for the iptables tracer, ported from kube-proxy's own tests
//! (kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go, `runPacketFlowTests`): the
//! same rule dumps, packets and expected results (`output` and `masq`), plus a real-world dump.

use kdiag_probes::iptables::{parse_iptables_save, trace};
use kdiag_probes::trace::{NodeContext, Packet, Proto, TraceResult, Verdict};

const TRACE_PACKET: &str = include_str!("../fixtures/iptables/upstream/trace-packet.iptables-save");
const OVERALL: &str = include_str!("../fixtures/iptables/upstream/overall-rules.iptables-save");
const BOSSJONES: &str =
    include_str!("../fixtures/iptables/bossjones-kubeadm-v1.11-weave.iptables-save");

// kube-proxy's test conventions (proxier_test.go).
const TEST_NODE_IP: &str = "192.168.0.2";
const TEST_EXTERNAL_CLIENT: &str = "203.0.113.2";
const TEST_EXTERNAL_CLIENT_BLOCKED: &str = "203.0.113.130";

/// `testNodeIPs`.
fn test_node() -> NodeContext {
    NodeContext {
        node_ips: [
            "192.168.0.2",
            "192.168.1.2",
            "192.168.99.11",
            "2001:db8::1",
            "2001:db8:1::2",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect(),
    }
}

/// One `packetFlowTest`.
struct Case {
    name: &'static str,
    src: &'static str,
    proto: Proto,
    dst: &'static str,
    dport: u16,
    /// kube-proxy's `output`: endpoints joined by ", ", or ACCEPT/DROP/REJECT, or "".
    output: &'static str,
    masq: bool,
}

const fn case(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    dport: u16,
    output: &'static str,
    masq: bool,
) -> Case {
    Case {
        name,
        src,
        proto: Proto::Tcp,
        dst,
        dport,
        output,
        masq,
    }
}

/// kube-proxy's tracer output string for a result.
fn upstream_output(r: &TraceResult) -> String {
    match r.verdict {
        Verdict::Dnat => r.endpoints.join(", "),
        Verdict::Reject => "REJECT".into(),
        Verdict::Drop => "DROP".into(),
        Verdict::Accept => "ACCEPT".into(),
        Verdict::NoMatch => String::new(),
    }
}

fn run(dump: &str, cases: &[Case]) {
    let rules = parse_iptables_save(dump).unwrap();
    let ctx = test_node();
    let mut failures = Vec::new();
    for c in cases {
        let pkt = Packet {
            src: c.src.parse().unwrap(),
            dst: c.dst.parse().unwrap(),
            dport: c.dport,
            proto: c.proto,
        };
        let r = trace(&rules, &pkt, &ctx);
        let out = upstream_output(&r);
        if out != c.output || r.masquerade != c.masq {
            failures.push(format!(
                "{}: expected {:?} masq {} got {:?} masq {}\nwalk: {:#?}",
                c.name, c.output, c.masq, out, r.masquerade, r.walk
            ));
        }
        let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "{}: probabilities sum to {total}",
            c.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// TestTracePacket: every case, verbatim.
const TRACE_PACKET_CASES: &[Case] = &[
    case("no match", "10.0.0.2", "10.0.0.3", 80, "", false),
    case(
        "single endpoint",
        "10.0.0.2",
        "172.30.0.41",
        80,
        "10.180.0.1:80",
        false,
    ),
    case(
        "multiple endpoints",
        "10.0.0.2",
        "172.30.0.44",
        80,
        "10.180.0.4:80, 10.180.0.5:80",
        false,
    ),
    case(
        "LOCAL, KUBE-MARK-MASQ",
        TEST_NODE_IP,
        "192.168.99.22",
        80,
        "10.180.0.2:80",
        true,
    ),
    case(
        "DROP",
        TEST_EXTERNAL_CLIENT,
        "192.168.99.22",
        80,
        "DROP",
        false,
    ),
    case(
        "ACCEPT (NodePortHealthCheck)",
        TEST_NODE_IP,
        TEST_NODE_IP,
        30000,
        "ACCEPT",
        false,
    ),
    case("REJECT", "10.0.0.2", "172.30.0.46", 80, "REJECT", false),
];

#[test]
fn upstream_test_trace_packet() {
    run(TRACE_PACKET, TRACE_PACKET_CASES);
}

/// TestOverallIPTablesRules' expected dump is the same six Services as TestTracePacket's
/// (without base chains, with nfacct, localhost NodePorts and svc5's affinity), so
/// TestTracePacket's cases hold for it too; the extra cases follow from the Services it
/// describes (svc3 NodePort 3003, svc5's LoadBalancerSourceRanges 203.0.113.0/25 and
/// affinity, svc2's Local policy).
#[test]
fn upstream_test_overall_iptables_rules() {
    run(OVERALL, TRACE_PACKET_CASES);
    run(
        OVERALL,
        &[
            case(
                "external to NodePort (svc3, Cluster policy)",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3003,
                "10.180.0.3:80",
                true,
            ),
            case(
                "localhost to NodePort (svc3)",
                "127.0.0.1",
                "127.0.0.1",
                3003,
                "10.180.0.3:80",
                true,
            ),
            case(
                "allowed external to LB (svc5 source ranges)",
                TEST_EXTERNAL_CLIENT,
                "5.6.7.8",
                80,
                "10.180.0.3:80",
                true,
            ),
            case(
                "blocked external to LB (svc5 source ranges)",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            case(
                "external to NodePort with only non-local endpoints (svc2, Local policy)",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                "DROP",
                false,
            ),
            case(
                "pod to external IP (svc2, Local policy): short-circuits to the cluster chain",
                "10.0.0.2",
                "192.168.99.22",
                80,
                "10.180.0.2:80",
                false,
            ),
            case(
                "hairpin: endpoint to its own Service",
                "10.180.0.1",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
        ],
    );
}

#[test]
fn udp_case_does_not_match_tcp_service() {
    let rules = parse_iptables_save(OVERALL).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: "10.0.0.2".parse().unwrap(),
            dst: "172.30.0.41".parse().unwrap(),
            dport: 80,
            proto: Proto::Udp,
        },
        &test_node(),
    );
    assert_eq!(r.verdict, Verdict::NoMatch);
}

#[test]
fn probabilities_walk_and_reject_comment() {
    let rules = parse_iptables_save(TRACE_PACKET).unwrap();
    let ctx = test_node();
    let pkt = |dst: &str| Packet {
        src: "10.0.0.2".parse().unwrap(),
        dst: dst.parse().unwrap(),
        dport: 80,
        proto: Proto::Tcp,
    };
    let r = trace(&rules, &pkt("172.30.0.44"), &ctx);
    assert_eq!(
        r.endpoint_probabilities(),
        vec![
            ("10.180.0.4:80".to_string(), 0.5),
            ("10.180.0.5:80".to_string(), 0.5)
        ]
    );
    let chains: Vec<_> = r
        .walk
        .iter()
        .map(|s| (s.table.as_str(), s.chain.as_str()))
        .collect();
    assert_eq!(chains[0], ("nat", "PREROUTING"));
    assert_eq!(chains[1], ("nat", "KUBE-SERVICES"));
    assert!(chains.contains(&("nat", "KUBE-SEP-UKSFD7AGPMPPLUHC")));
    assert!(chains.contains(&("nat", "KUBE-SEP-C6EBXVWJJZMIWKLZ")));
    assert!(r.unknown.is_empty(), "{:?}", r.unknown);

    let r = trace(&rules, &pkt("172.30.0.46"), &ctx);
    assert_eq!(r.verdict, Verdict::Reject);
    assert_eq!(r.rejecting_comment(), Some("ns6/svc6:p80 has no endpoints"));
    let last = r.walk.last().unwrap();
    assert_eq!(
        (last.table.as_str(), last.chain.as_str()),
        ("filter", "KUBE-SERVICES")
    );
}

#[test]
fn affinity_is_noted() {
    let rules = parse_iptables_save(OVERALL).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: "10.0.0.2".parse().unwrap(),
            dst: "172.30.0.45".parse().unwrap(),
            dport: 80,
            proto: Proto::Tcp,
        },
        &test_node(),
    );
    assert_eq!(r.endpoints, vec!["10.180.0.3:80"]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("session affinity") && n.contains("10800")),
        "{:?}",
        r.notes
    );
}

/// A real kubeadm v1.11 + weave node (old KUBE-MARK-MASQ style, docker and weave chains).
#[test]
fn real_world_kube_dns_from_pod_and_node() {
    let rules = parse_iptables_save(BOSSJONES).unwrap();
    let ctx = NodeContext {
        node_ips: vec!["192.168.1.241".parse().unwrap()],
    };
    let from = |src: &str| Packet {
        src: src.parse().unwrap(),
        dst: "10.96.0.10".parse().unwrap(),
        dport: 53,
        proto: Proto::Udp,
    };
    let r = trace(&rules, &from("10.32.0.5"), &ctx);
    assert_eq!(r.verdict, Verdict::Dnat);
    assert_eq!(
        r.endpoint_probabilities(),
        vec![
            ("10.32.0.2:53".to_string(), 0.5),
            ("10.32.0.3:53".to_string(), 0.5)
        ]
    );
    assert!(
        !r.masquerade,
        "pod source inside the cluster CIDR is not masqueraded"
    );

    let r = trace(&rules, &from("192.168.1.241"), &ctx);
    assert_eq!(r.endpoints, vec!["10.32.0.2:53", "10.32.0.3:53"]);
    assert!(r.masquerade, "{:#?}", r.walk);
    assert!(r
        .walk
        .iter()
        .any(|s| s.chain == "KUBE-POSTROUTING" && s.rule.contains("MASQUERADE")));

    // the kubernetes API service, TCP 443
    let r = trace(
        &rules,
        &Packet {
            src: "10.32.0.5".parse().unwrap(),
            dst: "10.96.0.1".parse().unwrap(),
            dport: 443,
            proto: Proto::Tcp,
        },
        &ctx,
    );
    assert_eq!(r.endpoints, vec!["192.168.1.241:6443"]);
}

mod rendered {
    //! kube-proxy tests whose rules kube-proxy generates from Services (`fp.syncProxyRules()`):
    //! here the same Services go through kdiag's renderer, and the packets and expectations
    //! are upstream's.
    use super::*;
    use kdiag_probes::iptables::parse::parse_iptables_save;
    use kdiag_probes::iptables::render::{
        render_iptables_save, RenderConfig, RenderEndpoint, RenderServicePort,
    };

    fn cfg() -> RenderConfig {
        RenderConfig {
            local_cidr: Some(kdiag_probes::iptables::IpNet {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
            }),
            localhost_nodeports: true,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one table row per upstream Service port"
    )]
    fn sp(
        ns: &str,
        name: &str,
        port_name: &str,
        proto: Proto,
        cip: &str,
        port: u16,
        node_port: Option<u16>,
        eps: &[(&str, u16)],
    ) -> RenderServicePort {
        RenderServicePort {
            namespace: ns.into(),
            name: name.into(),
            port_name: port_name.into(),
            protocol: proto,
            cluster_ip: cip.parse().unwrap(),
            port,
            node_port,
            endpoints: eps
                .iter()
                .map(|(ip, p)| RenderEndpoint {
                    ip: ip.parse().unwrap(),
                    port: *p,
                    ready: true,
                })
                .collect(),
        }
    }

    fn with_proto(mut c: Case, proto: Proto) -> Case {
        c.proto = proto;
        c
    }

    /// TestClusterIPGeneral.
    #[test]
    fn upstream_test_cluster_ip_general() {
        let two = [("10.180.0.1", 0), ("10.180.2.1", 0)];
        let eps = |port| -> Vec<(&str, u16)> { two.iter().map(|(ip, _)| (*ip, port)).collect() };
        let ports = vec![
            sp(
                "ns1",
                "svc1",
                "http",
                Proto::Tcp,
                "172.30.0.41",
                80,
                None,
                &[("10.180.0.1", 80)],
            ),
            sp(
                "ns2",
                "svc2",
                "http",
                Proto::Tcp,
                "172.30.0.42",
                80,
                None,
                &eps(80),
            ),
            sp(
                "ns2",
                "svc2",
                "https",
                Proto::Tcp,
                "172.30.0.42",
                443,
                None,
                &eps(8443),
            ),
            sp(
                "ns2",
                "svc2",
                "dns-udp",
                Proto::Udp,
                "172.30.0.42",
                53,
                None,
                &eps(53),
            ),
            sp(
                "ns2",
                "svc2",
                "dns-tcp",
                Proto::Tcp,
                "172.30.0.42",
                53,
                None,
                &eps(5353),
            ),
            sp(
                "ns2",
                "svc2",
                "dns-sctp",
                Proto::Sctp,
                "172.30.0.42",
                53,
                None,
                &eps(53),
            ),
        ];
        let dump = render_iptables_save(&ports, &cfg());
        parse_iptables_save(&dump).unwrap();
        run(
            &dump,
            &[
                case(
                    "simple clusterIP",
                    "10.180.0.2",
                    "172.30.0.41",
                    80,
                    "10.180.0.1:80",
                    false,
                ),
                case(
                    "hairpin to cluster IP",
                    "10.180.0.1",
                    "172.30.0.41",
                    80,
                    "10.180.0.1:80",
                    true,
                ),
                case(
                    "clusterIP with multiple endpoints",
                    "10.180.0.2",
                    "172.30.0.42",
                    80,
                    "10.180.0.1:80, 10.180.2.1:80",
                    false,
                ),
                case(
                    "clusterIP with TargetPort",
                    "10.180.0.2",
                    "172.30.0.42",
                    443,
                    "10.180.0.1:8443, 10.180.2.1:8443",
                    false,
                ),
                case(
                    "clusterIP with TCP, UDP, and SCTP on same port (TCP)",
                    "10.180.0.2",
                    "172.30.0.42",
                    53,
                    "10.180.0.1:5353, 10.180.2.1:5353",
                    false,
                ),
                with_proto(
                    case(
                        "clusterIP with TCP, UDP, and SCTP on same port (UDP)",
                        "10.180.0.2",
                        "172.30.0.42",
                        53,
                        "10.180.0.1:53, 10.180.2.1:53",
                        false,
                    ),
                    Proto::Udp,
                ),
                with_proto(
                    case(
                        "clusterIP with TCP, UDP, and SCTP on same port (SCTP)",
                        "10.180.0.2",
                        "172.30.0.42",
                        53,
                        "10.180.0.1:53, 10.180.2.1:53",
                        false,
                    ),
                    Proto::Sctp,
                ),
                with_proto(
                    case(
                        "TCP-only port does not match UDP traffic",
                        "10.180.0.2",
                        "172.30.0.42",
                        80,
                        "",
                        false,
                    ),
                    Proto::Udp,
                ),
                case(
                    "svc1 does not accept svc2's ports",
                    "10.180.0.2",
                    "172.30.0.41",
                    443,
                    "",
                    false,
                ),
            ],
        );
    }

    /// TestNoEndpointsReject, ClusterIP and NodePort cases (externalIPs and load-balancer
    /// IPs are not rendered).
    #[test]
    fn upstream_test_no_endpoints_reject() {
        let ports = vec![sp(
            "ns1",
            "svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &[],
        )];
        let dump = render_iptables_save(&ports, &cfg());
        run(
            &dump,
            &[
                case(
                    "pod to cluster IP with no endpoints",
                    "10.0.0.2",
                    "172.30.0.41",
                    80,
                    "REJECT",
                    false,
                ),
                case(
                    "pod to NodePort with no endpoints",
                    "10.0.0.2",
                    TEST_NODE_IP,
                    3001,
                    "REJECT",
                    false,
                ),
                case(
                    "external to NodePort with no endpoints",
                    TEST_EXTERNAL_CLIENT,
                    TEST_NODE_IP,
                    3001,
                    "REJECT",
                    false,
                ),
            ],
        );
    }

    /// TestNodePorts, "ipv4, localhost-nodeports enabled".
    #[test]
    fn upstream_test_node_ports_ipv4_localhost_enabled() {
        let ports = vec![sp(
            "ns1",
            "svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &[("10.180.0.1", 80), ("10.180.2.1", 80)],
        )];
        let dump = render_iptables_save(&ports, &cfg());
        let out = "10.180.0.1:80, 10.180.2.1:80";
        run(
            &dump,
            &[
                case(
                    "pod to cluster IP",
                    "10.0.0.2",
                    "172.30.0.41",
                    80,
                    out,
                    false,
                ),
                case(
                    "external to nodePort",
                    TEST_EXTERNAL_CLIENT,
                    TEST_NODE_IP,
                    3001,
                    out,
                    true,
                ),
                case(
                    "node to nodePort",
                    TEST_NODE_IP,
                    TEST_NODE_IP,
                    3001,
                    out,
                    true,
                ),
                case(
                    "localhost to nodePort gets masqueraded",
                    "127.0.0.1",
                    "127.0.0.1",
                    3001,
                    out,
                    true,
                ),
                case(
                    "external to nodePort on secondary IP",
                    TEST_EXTERNAL_CLIENT,
                    "192.168.1.2",
                    3001,
                    out,
                    true,
                ),
            ],
        );
    }

    /// TestNodePorts, "ipv4, localhost-nodeports disabled".
    #[test]
    fn upstream_test_node_ports_ipv4_localhost_disabled() {
        let ports = vec![sp(
            "ns1",
            "svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &[("10.180.0.1", 80), ("10.180.2.1", 80)],
        )];
        let mut c = cfg();
        c.localhost_nodeports = false;
        let dump = render_iptables_save(&ports, &c);
        run(
            &dump,
            &[case(
                "localhost to nodePort is ignored",
                "127.0.0.1",
                "127.0.0.1",
                3001,
                "",
                false,
            )],
        );
    }
}
