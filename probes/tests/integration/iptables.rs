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
