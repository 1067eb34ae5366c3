//! Golden tests for kube-proxy's nftables mode, ported from kube-proxy's own tests
//! (kubernetes/kubernetes pkg/proxy/nftables/proxier_test.go and helpers_test.go):
//!
//! - the renderer must reproduce TestOverallNFTablesRules' expected dump (baseRules plus six
//!   Services) line for line, compared the way the upstream test compares
//!   (`sortNFTablesTransaction`);
//! - the tracer must give, for every `runPacketFlowTests` case of TestClusterIPGeneral,
//!   TestLoadBalancer, TestNodePorts (IPv4 and IPv6), TestNoEndpointsReject,
//!   TestExternalTrafficPolicyLocal, TestExternalTrafficPolicyCluster,
//!   TestInternalTrafficPolicy, TestTerminatingEndpointsTrafficPolicyLocal,
//!   TestTerminatingEndpointsTrafficPolicyCluster and TestInternalExternalMasquerade (every
//!   test of that file that calls `runPacketFlowTests`), the `output`
//!   (endpoints, or DROP/REJECT, or nothing) and `masq` that kube-proxy's tests expect, on
//!   the ruleset kube-proxy generates for that test's Services (rendered by
//!   `nft::render`, which the first test pins to kube-proxy's own output);
//! - the verbatim upstream dump traces as the Services it describes say it must.

use kdiag_probes::iptables::render::{RenderEndpoint, RenderServicePort};
use kdiag_probes::iptables::IpNet;
use kdiag_probes::nft::render::{
    render_nft_list, render_nft_script, NftRenderConfig, NftServicePort,
};
use kdiag_probes::nft::{parse_json, parse_text, trace, Format, Ruleset};
use kdiag_probes::trace::{findings, NodeContext, Packet, Proto, TraceResult, Verdict};
use kdiag_probes::Code;
use std::net::IpAddr;

const OVERALL: &str = include_str!("../fixtures/nft/upstream/overall-rules.nft");
const LIST: &str = include_str!("../fixtures/nft/kube-proxy.nft-list");
const JSON: &str = include_str!("../fixtures/nft/kube-proxy.nft.json");

const TEST_NODE_IP: &str = "192.168.0.2";
const TEST_NODE_IP_ALT: &str = "192.168.1.2";
const TEST_EXTERNAL_IP: &str = "192.168.99.11";
const TEST_NODE_IPV6: &str = "2001:db8::1";
const TEST_NODE_IPV6_ALT: &str = "2001:db8:1::2";
const TEST_EXTERNAL_CLIENT: &str = "203.0.113.2";
const TEST_EXTERNAL_CLIENT_BLOCKED: &str = "203.0.113.130";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> IpNet {
    let (a, p) = s.split_once('/').unwrap();
    IpNet {
        addr: ip(a),
        prefix: p.parse().unwrap(),
    }
}

/// `testNodeIPs`.
fn test_node() -> NodeContext {
    NodeContext {
        node_ips: [
            TEST_NODE_IP,
            TEST_NODE_IP_ALT,
            TEST_EXTERNAL_IP,
            TEST_NODE_IPV6,
            TEST_NODE_IPV6_ALT,
        ]
        .into_iter()
        .map(ip)
        .collect(),
    }
}

/// `NewFakeProxier(v1.IPv4Protocol)`'s settings.
fn fake_proxier_v4() -> NftRenderConfig {
    NftRenderConfig {
        ipv6: false,
        pod_cidr: Some(cidr("10.0.0.0/8")),
        service_cidrs: vec![cidr("172.30.0.0/16")],
        nodeport_ips: Some(vec![ip(TEST_NODE_IP)]),
        node_ip: Some(ip(TEST_NODE_IP)),
        masquerade_all: false,
    }
}

/// `NewFakeProxier(v1.IPv6Protocol)`'s settings.
fn fake_proxier_v6() -> NftRenderConfig {
    NftRenderConfig {
        ipv6: true,
        pod_cidr: Some(cidr("fd00:10::/64")),
        service_cidrs: vec![cidr("fd00:10:96::/112")],
        nodeport_ips: Some(vec![ip(TEST_NODE_IPV6)]),
        node_ip: Some(ip(TEST_NODE_IPV6)),
        masquerade_all: false,
    }
}

/// A Service port (`makeTestService` + `makeTestEndpointSlice`); endpoints `(ip, port, local)`.
fn svc(
    ns_name: &str,
    port_name: &str,
    proto: Proto,
    cluster_ip: &str,
    port: u16,
    node_port: Option<u16>,
    endpoints: &[(&str, u16, bool)],
) -> NftServicePort {
    let (ns, name) = ns_name.split_once('/').unwrap();
    let mut sp = NftServicePort::from(RenderServicePort {
        namespace: ns.into(),
        name: name.into(),
        port_name: port_name.into(),
        protocol: proto,
        cluster_ip: ip(cluster_ip),
        port,
        node_port,
        endpoints: endpoints
            .iter()
            .map(|(a, p, _)| RenderEndpoint {
                ip: ip(a),
                port: *p,
                ready: true,
            })
            .collect(),
    });
    sp.local_endpoints = endpoints
        .iter()
        .filter(|(_, _, local)| *local)
        .map(|(a, _, _)| ip(a))
        .collect();
    sp
}

/// The six Services of TestOverallNFTablesRules.
fn overall_services() -> Vec<NftServicePort> {
    let tcp = Proto::Tcp;
    let svc1 = svc(
        "ns1/svc1",
        "p80",
        tcp,
        "172.30.0.41",
        80,
        None,
        &[("10.180.0.1", 80, false)],
    );
    let mut svc2 = svc(
        "ns2/svc2",
        "p80",
        tcp,
        "172.30.0.42",
        80,
        Some(3001),
        &[("10.180.0.2", 80, false)],
    );
    svc2.external_policy_local = true;
    svc2.load_balancer_ips = vec![ip("1.2.3.4")];
    svc2.external_ips = vec![ip("192.168.99.22")];
    let svc3 = svc(
        "ns3/svc3",
        "p80",
        tcp,
        "172.30.0.43",
        80,
        Some(3003),
        &[("10.180.0.3", 80, false)],
    );
    let mut svc4 = svc(
        "ns4/svc4",
        "p80",
        tcp,
        "172.30.0.44",
        80,
        None,
        &[("10.180.0.4", 80, false), ("10.180.0.5", 80, true)],
    );
    svc4.external_ips = vec![ip("192.168.99.33")];
    let mut svc5 = svc(
        "ns5/svc5",
        "p80",
        tcp,
        "172.30.0.45",
        80,
        Some(3002),
        &[("10.180.0.3", 80, false)],
    );
    svc5.load_balancer_ips = vec![ip("5.6.7.8")];
    svc5.source_ranges = vec![cidr("203.0.113.0/25")];
    svc5.affinity_timeout = Some(10800);
    let svc6 = svc("ns6/svc6", "p80", tcp, "172.30.0.46", 80, None, &[]);
    vec![svc1, svc2, svc3, svc4, svc5, svc6]
}

/// Port of helpers_test.go `sortNFTablesTransaction`.
fn sort_transaction(tx: &str) -> Vec<String> {
    let order = |t: &str| match t {
        "table" => 10,
        "chain" => 9,
        "rule" => 8,
        "set" => 7,
        "map" => 6,
        "element" => 5,
        _ => 0,
    };
    let mut lines: Vec<String> = tx
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    lines.sort_by(|a, b| {
        let wa: Vec<&str> = a.split(' ').collect();
        let wb: Vec<&str> = b.split(' ').collect();
        if wa.len() < 5 || wb.len() < 5 {
            return std::cmp::Ordering::Equal;
        }
        if wa[1] != wb[1] {
            return order(wb[1]).cmp(&order(wa[1]));
        }
        if wa[4] != wb[4] {
            return wa[4].cmp(wb[4]);
        }
        if wa[1] == "rule" {
            return std::cmp::Ordering::Equal;
        }
        a.cmp(b)
    });
    lines
}

#[test]
fn upstream_test_overall_nftables_rules_render_exactly() {
    let rendered = render_nft_script(&overall_services(), &fake_proxier_v4());
    let want = sort_transaction(OVERALL);
    let got = sort_transaction(&rendered);
    assert_eq!(want.len(), 122, "the upstream dump's object lines");
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing:\n{}\nextra:\n{}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        extra
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(got, want, "same lines, different order");
}

/// One `packetFlowTest`.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    src: &'static str,
    proto: Proto,
    dst: &'static str,
    dport: u16,
    /// kube-proxy's `output`: endpoints joined by ", ", or DROP/REJECT, or "".
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

const fn with_proto(mut c: Case, proto: Proto) -> Case {
    c.proto = proto;
    c
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

fn run(rules: &Ruleset, cases: &[Case]) {
    let ctx = test_node();
    let mut failures = Vec::new();
    for c in cases {
        let pkt = Packet {
            src: ip(c.src),
            dst: ip(c.dst),
            dport: c.dport,
            proto: c.proto,
        };
        let r = trace(rules, &pkt, &ctx);
        let out = upstream_output(&r);
        if out != c.output || r.masquerade != c.masq {
            failures.push(format!(
                "{}: expected {:?} masq {} got {:?} masq {}\nwalk: {:#?}\nnotes: {:?}",
                c.name, c.output, c.masq, out, r.masquerade, r.walk, r.notes
            ));
        }
        let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "{}: probabilities sum to {total}",
            c.name
        );
        assert!(r.unknown.is_empty(), "{}: {:?}", c.name, r.unknown);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Renders `ports` both as a script and as `nft list` text, and runs `cases` on each.
fn run_rendered(ports: &[NftServicePort], cfg: &NftRenderConfig, cases: &[Case]) {
    let script_text = render_nft_script(ports, cfg);
    let script = parse_text(&script_text).unwrap();
    assert_eq!(script.format, Format::Script);
    run(&script, cases);
    let list_text = render_nft_list(ports, cfg);
    let list = parse_text(&list_text).unwrap();
    assert_eq!(list.format, Format::List);
    run(&list, cases);
}

/// TestNoEndpointsReject.
#[test]
fn upstream_test_no_endpoints_reject() {
    let mut s = svc(
        "ns1/svc1",
        "p80",
        Proto::Tcp,
        "172.30.0.41",
        80,
        Some(3001),
        &[],
    );
    s.external_ips = vec![ip(TEST_EXTERNAL_IP)];
    s.load_balancer_ips = vec![ip("1.2.3.4")];
    run_rendered(
        &[s],
        &fake_proxier_v4(),
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
                "external to external IP with no endpoints",
                TEST_EXTERNAL_CLIENT,
                TEST_EXTERNAL_IP,
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
            case(
                "pod to LoadBalancer IP with no endpoints",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
            case(
                "external to LoadBalancer IP with no endpoints",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
        ],
    );
}

/// TestClusterIPGeneral.
#[test]
fn upstream_test_cluster_ip_general() {
    let svc1 = svc(
        "ns1/svc1",
        "http",
        Proto::Tcp,
        "172.30.0.41",
        80,
        None,
        &[("10.180.0.1", 80, true)],
    );
    let eps = |port| [("10.180.0.1", port, true), ("10.180.2.1", port, false)];
    let svc2 = [
        svc(
            "ns2/svc2",
            "http",
            Proto::Tcp,
            "172.30.0.42",
            80,
            None,
            &eps(80),
        ),
        svc(
            "ns2/svc2",
            "https",
            Proto::Tcp,
            "172.30.0.42",
            443,
            None,
            &eps(8443),
        ),
        svc(
            "ns2/svc2",
            "dns-udp",
            Proto::Udp,
            "172.30.0.42",
            53,
            None,
            &eps(53),
        ),
        svc(
            "ns2/svc2",
            "dns-tcp",
            Proto::Tcp,
            "172.30.0.42",
            53,
            None,
            &eps(5353),
        ),
        svc(
            "ns2/svc2",
            "dns-sctp",
            Proto::Sctp,
            "172.30.0.42",
            53,
            None,
            &eps(53),
        ),
    ];
    let mut ports = vec![svc1];
    ports.extend(svc2);
    run_rendered(
        &ports,
        &fake_proxier_v4(),
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
            with_proto(
                case(
                    "clusterIP with TCP, UDP, and SCTP on same port (TCP)",
                    "10.180.0.2",
                    "172.30.0.42",
                    53,
                    "10.180.0.1:5353, 10.180.2.1:5353",
                    false,
                ),
                Proto::Tcp,
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
                    "REJECT",
                    false,
                ),
                Proto::Udp,
            ),
            case(
                "svc1 does not accept svc2's ports",
                "10.180.0.2",
                "172.30.0.41",
                443,
                "REJECT",
                false,
            ),
            case(
                "packet to unallocated cluster ip",
                "10.180.0.2",
                "172.30.0.50",
                80,
                "DROP",
                false,
            ),
        ],
    );
}

/// TestLoadBalancer.
#[test]
fn upstream_test_load_balancer() {
    let mut s = svc(
        "ns1/svc1",
        "p80",
        Proto::Tcp,
        "172.30.0.41",
        80,
        Some(3001),
        &[("10.180.0.1", 80, false)],
    );
    s.load_balancer_ips = vec![ip("1.2.3.4"), ip("5.6.7.8")];
    s.source_ranges = vec![cidr("192.168.0.0/24"), cidr("203.0.113.0/25")];
    let ep = "10.180.0.1:80";
    run_rendered(
        &[s],
        &fake_proxier_v4(),
        &[
            case(
                "pod to cluster IP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                ep,
                false,
            ),
            case(
                "external to nodePort",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                ep,
                true,
            ),
            case(
                "nodePort bypasses LoadBalancerSourceRanges",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                TEST_NODE_IP,
                3001,
                ep,
                true,
            ),
            case(
                "accepted external to LB1",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            case(
                "accepted external to LB2",
                TEST_EXTERNAL_CLIENT,
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            case(
                "blocked external to LB1",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            case(
                "blocked external to LB2",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            case(
                "pod to LB1 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            case(
                "pod to LB2 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            case(
                "node to LB1 (allowed by LoadBalancerSourceRanges)",
                TEST_NODE_IP,
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            case(
                "node to LB2 (allowed by LoadBalancerSourceRanges)",
                TEST_NODE_IP,
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            case(
                "same node to LB1, SNATted to LB1 (implicitly allowed)",
                "1.2.3.4",
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            case(
                "same node to LB2, SNATted to LB2 (implicitly allowed)",
                "5.6.7.8",
                "5.6.7.8",
                80,
                ep,
                true,
            ),
        ],
    );
}

/// TestNodePorts, its four sub-tests.
#[test]
fn upstream_test_node_ports() {
    // ipv4 / ipv4 with --nodeport-addresses 192.168.0.0/24,192.168.1.0/24
    for alt in [false, true] {
        let mut cfg = fake_proxier_v4();
        if alt {
            cfg.nodeport_ips = Some(vec![ip(TEST_NODE_IP), ip(TEST_NODE_IP_ALT)]);
        }
        let s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)],
        );
        let out = "10.180.0.1:80, 10.180.2.1:80";
        run_rendered(
            &[s],
            &cfg,
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
                if alt {
                    case(
                        "external to nodePort on secondary IP",
                        TEST_EXTERNAL_CLIENT,
                        TEST_NODE_IP_ALT,
                        3001,
                        out,
                        true,
                    )
                } else {
                    case(
                        "secondary nodeIP ignores NodePorts",
                        TEST_EXTERNAL_CLIENT,
                        TEST_NODE_IP_ALT,
                        3001,
                        "",
                        false,
                    )
                },
            ],
        );
    }
    // ipv6 / ipv6 with --nodeport-addresses ...,2001:db8::/64,2001:db8:1::2/128
    for alt in [false, true] {
        let mut cfg = fake_proxier_v6();
        if alt {
            cfg.nodeport_ips = Some(vec![ip(TEST_NODE_IPV6), ip(TEST_NODE_IPV6_ALT)]);
        }
        let s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "fd00:172:30::41",
            80,
            Some(3001),
            &[
                ("fd00:10:180::1", 80, false),
                ("fd00:10:180::2:1", 80, true),
            ],
        );
        let out = "[fd00:10:180::1]:80, [fd00:10:180::2:1]:80";
        run_rendered(
            &[s],
            &cfg,
            &[
                case(
                    "pod to cluster IP",
                    "fd00:10::2",
                    "fd00:172:30::41",
                    80,
                    out,
                    false,
                ),
                case(
                    "external to nodePort",
                    "2600:5200::1",
                    TEST_NODE_IPV6,
                    3001,
                    out,
                    true,
                ),
                case(
                    "node to nodePort",
                    TEST_NODE_IPV6,
                    TEST_NODE_IPV6,
                    3001,
                    out,
                    true,
                ),
                if alt {
                    case(
                        "external to nodePort on secondary IP",
                        "2600:5200::1",
                        TEST_NODE_IPV6_ALT,
                        3001,
                        out,
                        true,
                    )
                } else {
                    case(
                        "secondary nodeIP ignores NodePorts",
                        "2600:5200::1",
                        TEST_NODE_IPV6_ALT,
                        3001,
                        "",
                        false,
                    )
                },
            ],
        );
    }
}

fn etp_service(local: bool) -> NftServicePort {
    let mut s = svc(
        "ns1/svc1",
        "p80",
        Proto::Tcp,
        "172.30.0.41",
        80,
        Some(3001),
        &[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)],
    );
    s.external_policy_local = local;
    s.external_ips = vec![ip(TEST_EXTERNAL_IP)];
    s.load_balancer_ips = vec![ip("1.2.3.4")];
    s
}

/// TestExternalTrafficPolicyLocal.
#[test]
fn upstream_test_external_traffic_policy_local() {
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let local = "10.180.2.1:80";
    run_rendered(
        &[etp_service(true)],
        &fake_proxier_v4(),
        &[
            case(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            case(
                "pod to external IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                TEST_EXTERNAL_IP,
                80,
                both,
                false,
            ),
            case(
                "external to external IP hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_EXTERNAL_IP,
                80,
                local,
                false,
            ),
            case(
                "pod to LB IP hits only both endpoints, unmasqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                false,
            ),
            case(
                "external to LB IP hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                local,
                false,
            ),
            case(
                "pod to NodePort hits both endpoints, unmasqueraded",
                "10.0.0.2",
                TEST_NODE_IP,
                3001,
                both,
                false,
            ),
            case(
                "external to NodePort hits only local endpoint, unmasqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                local,
                false,
            ),
        ],
    );
}

/// TestExternalTrafficPolicyCluster.
#[test]
fn upstream_test_external_traffic_policy_cluster() {
    let both = "10.180.0.1:80, 10.180.2.1:80";
    run_rendered(
        &[etp_service(false)],
        &fake_proxier_v4(),
        &[
            case(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            case(
                "pod to external IP hits both endpoints, masqueraded",
                "10.0.0.2",
                TEST_EXTERNAL_IP,
                80,
                both,
                true,
            ),
            case(
                "external to external IP hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_EXTERNAL_IP,
                80,
                both,
                true,
            ),
            case(
                "pod to LB IP hits both endpoints, masqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                true,
            ),
            case(
                "external to LB IP hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                both,
                true,
            ),
            case(
                "pod to NodePort hits both endpoints, masqueraded",
                "10.0.0.2",
                TEST_NODE_IP,
                3001,
                both,
                true,
            ),
            case(
                "external to NodePort hits both endpoints, masqueraded",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                both,
                true,
            ),
        ],
    );
}

/// One EndpointSlice endpoint: its address, its `conditions` (ready, serving,
/// terminating) and whether its `nodeName` is the test node.
#[derive(Clone, Copy)]
struct Ep {
    ip: &'static str,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// A ready endpoint (`Conditions{Ready: true}`), on the test node or not.
const fn ready(ip: &'static str, local: bool) -> Ep {
    Ep {
        ip,
        ready: true,
        serving: true,
        terminating: false,
        local,
    }
}

/// An endpoint with explicit conditions.
const fn cond(ip: &'static str, ready: bool, serving: bool, terminating: bool, local: bool) -> Ep {
    Ep {
        ip,
        ready,
        serving,
        terminating,
        local,
    }
}

/// The unnamed TCP port 80 of `ns1/svc1` on ClusterIP 172.30.1.1 (the Service of
/// TestInternalTrafficPolicy and TestTerminatingEndpoints*), with `eps` on port 80.
fn svc1_unnamed(eps: &[Ep]) -> NftServicePort {
    let mut s = NftServicePort::from(RenderServicePort {
        namespace: "ns1".into(),
        name: "svc1".into(),
        port_name: String::new(),
        protocol: Proto::Tcp,
        cluster_ip: ip("172.30.1.1"),
        port: 80,
        node_port: None,
        endpoints: eps
            .iter()
            .map(|e| RenderEndpoint {
                ip: ip(e.ip),
                port: 80,
                ready: e.ready,
            })
            .collect(),
    });
    s.local_endpoints = eps.iter().filter(|e| e.local).map(|e| ip(e.ip)).collect();
    s.serving_terminating = eps
        .iter()
        .filter(|e| e.serving && e.terminating)
        .map(|e| ip(e.ip))
        .collect();
    s
}

/// TestInternalTrafficPolicy: each case's flows, then (`OnEndpointSliceDelete`) "endpoints
/// deleted".
#[test]
fn upstream_test_internal_traffic_policy() {
    struct Tc {
        name: &'static str,
        local_policy: bool,
        endpoints: [Ep; 3],
        flow: Case,
    }
    let cases = [
        Tc {
            name: "internalTrafficPolicy is cluster",
            local_policy: false,
            endpoints: [
                ready("10.0.1.1", true),
                ready("10.0.1.2", false),
                ready("10.0.1.3", false),
            ],
            flow: case(
                "pod to ClusterIP hits all endpoints",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
                false,
            ),
        },
        Tc {
            name: "internalTrafficPolicy is local and there is one local endpoint",
            local_policy: true,
            endpoints: [
                ready("10.0.1.1", true),
                ready("10.0.1.2", false),
                ready("10.0.1.3", false),
            ],
            flow: case(
                "pod to ClusterIP hits only local endpoint",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "10.0.1.1:80",
                false,
            ),
        },
        Tc {
            name: "internalTrafficPolicy is local and there are multiple local endpoints",
            local_policy: true,
            endpoints: [
                ready("10.0.1.1", true),
                ready("10.0.1.2", true),
                ready("10.0.1.3", false),
            ],
            flow: case(
                "pod to ClusterIP hits all local endpoints",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "10.0.1.1:80, 10.0.1.2:80",
                false,
            ),
        },
        Tc {
            name: "internalTrafficPolicy is local and there are no local endpoints",
            local_policy: true,
            endpoints: [
                ready("10.0.1.1", false),
                ready("10.0.1.2", false),
                ready("10.0.1.3", false),
            ],
            flow: case("no endpoints", "10.0.0.2", "172.30.1.1", 80, "DROP", false),
        },
    ];
    for tc in cases {
        eprintln!("{}", tc.name);
        let mut s = svc1_unnamed(&tc.endpoints);
        s.internal_policy_local = tc.local_policy;
        run_rendered(&[s], &fake_proxier_v4(), &[tc.flow]);
        let mut s = svc1_unnamed(&[]);
        s.internal_policy_local = tc.local_policy;
        run_rendered(
            &[s],
            &fake_proxier_v4(),
            &[case(
                "endpoints deleted",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "REJECT",
                false,
            )],
        );
    }
}

/// TestTerminatingEndpointsTrafficPolicyLocal and ...Cluster: a LoadBalancer Service
/// (1.2.3.4, no NodePort) over one EndpointSlice per test case, each case's flows, then
/// (`OnEndpointSliceDelete`) "after endpoints deleted".
fn run_terminating(local_policy: bool, cases: Vec<(&'static str, Vec<Ep>, [Case; 2])>) {
    let service = |eps: &[Ep]| {
        let mut s = svc1_unnamed(eps);
        s.external_policy_local = local_policy;
        s.load_balancer_ips = vec![ip("1.2.3.4")];
        s
    };
    for (name, eps, flows) in cases {
        eprintln!("{name}");
        run_rendered(&[service(&eps)], &fake_proxier_v4(), &flows);
        run_rendered(
            &[service(&[])],
            &fake_proxier_v4(),
            &[
                case(
                    "pod to clusterIP after endpoints deleted",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                case(
                    "external to LB after endpoints deleted",
                    TEST_EXTERNAL_CLIENT,
                    "1.2.3.4",
                    80,
                    "REJECT",
                    false,
                ),
            ],
        );
    }
}

/// The two flows of every TestTerminatingEndpoints* case.
fn pod_and_external(names: [&'static str; 2], out: [&'static str; 2], ext_masq: bool) -> [Case; 2] {
    [
        case(names[0], "10.0.0.2", "172.30.1.1", 80, out[0], false),
        case(
            names[1],
            TEST_EXTERNAL_CLIENT,
            "1.2.3.4",
            80,
            out[1],
            ext_masq,
        ),
    ]
}

/// TestTerminatingEndpointsTrafficPolicyLocal.
#[test]
fn upstream_test_terminating_endpoints_traffic_policy_local() {
    let names = ["pod to clusterIP", "external to LB"];
    run_terminating(
        true,
        vec![
            (
                "ready endpoints exist",
                vec![
                    cond("10.0.1.1", true, true, false, true),
                    cond("10.0.1.2", true, true, false, true),
                    cond("10.0.1.3", false, true, true, true),
                    cond("10.0.1.4", false, false, true, true),
                    cond("10.0.1.5", true, true, false, false),
                ],
                pod_and_external(
                    names,
                    [
                        "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                        "10.0.1.1:80, 10.0.1.2:80",
                    ],
                    false,
                ),
            ),
            (
                "only terminating endpoints exist",
                vec![
                    cond("10.0.1.2", false, true, true, true),
                    cond("10.0.1.3", false, true, true, true),
                    cond("10.0.1.4", false, false, true, true),
                    cond("10.0.1.5", true, true, false, false),
                ],
                pod_and_external(names, ["10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80"], false),
            ),
            (
                "terminating endpoints on remote node",
                vec![cond("10.0.1.5", false, true, true, false)],
                pod_and_external(
                    [
                        "pod to clusterIP",
                        "external to LB, no locally-usable endpoints",
                    ],
                    ["10.0.1.5:80", "DROP"],
                    false,
                ),
            ),
            (
                "no usable endpoints on any node",
                vec![
                    cond("10.0.1.5", false, false, true, true),
                    cond("10.0.1.5", false, false, true, false),
                ],
                pod_and_external(
                    [
                        "pod to clusterIP, no usable endpoints",
                        "external to LB, no usable endpoints",
                    ],
                    ["REJECT", "REJECT"],
                    false,
                ),
            ),
        ],
    );
}

/// TestTerminatingEndpointsTrafficPolicyCluster.
#[test]
fn upstream_test_terminating_endpoints_traffic_policy_cluster() {
    let names = ["pod to clusterIP", "external to LB"];
    run_terminating(
        false,
        vec![
            (
                "ready endpoints exist",
                vec![
                    cond("10.0.1.1", true, true, false, true),
                    cond("10.0.1.2", true, true, false, true),
                    cond("10.0.1.3", false, true, true, false),
                    cond("10.0.1.4", false, false, true, false),
                    cond("10.0.1.5", true, true, false, false),
                ],
                pod_and_external(
                    names,
                    [
                        "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                        "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    ],
                    true,
                ),
            ),
            (
                "only terminating endpoints exist",
                vec![
                    cond("10.0.1.2", false, true, true, true),
                    cond("10.0.1.3", false, true, true, true),
                    cond("10.0.1.4", false, false, true, false),
                    cond("10.0.1.5", false, true, true, false),
                ],
                pod_and_external(
                    names,
                    [
                        "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                        "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                    ],
                    true,
                ),
            ),
            (
                "terminating endpoints on remote node",
                vec![cond("10.0.1.5", false, true, true, false)],
                pod_and_external(names, ["10.0.1.5:80", "10.0.1.5:80"], true),
            ),
            (
                "no usable endpoints on any node",
                vec![
                    cond("10.0.1.5", false, false, true, true),
                    cond("10.0.1.5", false, false, true, false),
                ],
                pod_and_external(names, ["REJECT", "REJECT"], false),
            ),
        ],
    );
}

/// TestInternalExternalMasquerade: three LoadBalancer Services (svc1 plain, svc2
/// `externalTrafficPolicy: Local`, svc3 `internalTrafficPolicy: Local`), each with one
/// endpoint on this node and one remote, and the same 27 flows under four proxier
/// settings (with/without `--masquerade-all`, with/without a local-traffic detector),
/// with upstream's per-setting overrides.
#[test]
fn upstream_test_internal_external_masquerade() {
    let mk = |ns_name: &str, cip: &str, np: u16, lb: &str, n: u8| {
        let (here, remote) = (format!("10.180.0.{n}"), format!("10.180.1.{n}"));
        let mut s = svc(
            ns_name,
            "p80",
            Proto::Tcp,
            cip,
            80,
            Some(np),
            &[(here.as_str(), 80, true), (remote.as_str(), 80, false)],
        );
        s.load_balancer_ips = vec![ip(lb)];
        s
    };
    let svc1 = mk("ns1/svc1", "172.30.0.41", 3001, "1.2.3.4", 1);
    let mut svc2 = mk("ns2/svc2", "172.30.0.42", 3002, "5.6.7.8", 2);
    svc2.external_policy_local = true;
    let mut svc3 = mk("ns3/svc3", "172.30.0.43", 3003, "9.10.11.12", 3);
    svc3.internal_policy_local = true;
    let services = [svc1, svc2, svc3];

    let all1 = "10.180.0.1:80, 10.180.1.1:80";
    let all2 = "10.180.0.2:80, 10.180.1.2:80";
    let all3 = "10.180.0.3:80, 10.180.1.3:80";
    let (pod, node, ext) = ("10.0.0.2", TEST_NODE_IP, TEST_EXTERNAL_CLIENT);
    let flow_tests = [
        case("pod to ClusterIP", pod, "172.30.0.41", 80, all1, false),
        case("pod to NodePort", pod, node, 3001, all1, true),
        case("pod to LB", pod, "1.2.3.4", 80, all1, true),
        case("node to ClusterIP", node, "172.30.0.41", 80, all1, true),
        case("node to NodePort", node, node, 3001, all1, true),
        case("node to LB", node, "1.2.3.4", 80, all1, true),
        case("external to ClusterIP", ext, "172.30.0.41", 80, all1, true),
        case("external to NodePort", ext, node, 3001, all1, true),
        case("external to LB", ext, "1.2.3.4", 80, all1, true),
        case(
            "pod to ClusterIP with eTP:Local",
            pod,
            "172.30.0.42",
            80,
            all2,
            false,
        ),
        case(
            "pod to NodePort with eTP:Local",
            pod,
            node,
            3002,
            all2,
            false,
        ),
        case("pod to LB with eTP:Local", pod, "5.6.7.8", 80, all2, false),
        case(
            "node to ClusterIP with eTP:Local",
            node,
            "172.30.0.42",
            80,
            all2,
            true,
        ),
        // upstream uses svc1's NodePort 3001 here
        case(
            "node to NodePort with eTP:Local",
            node,
            node,
            3001,
            all1,
            true,
        ),
        case("node to LB with eTP:Local", node, "5.6.7.8", 80, all2, true),
        case(
            "external to ClusterIP with eTP:Local",
            ext,
            "172.30.0.42",
            80,
            all2,
            true,
        ),
        case(
            "external to NodePort with eTP:Local",
            ext,
            node,
            3002,
            "10.180.0.2:80",
            false,
        ),
        case(
            "external to LB with eTP:Local",
            ext,
            "5.6.7.8",
            80,
            "10.180.0.2:80",
            false,
        ),
        case(
            "pod to ClusterIP with iTP:Local",
            pod,
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            false,
        ),
        case(
            "pod to NodePort with iTP:Local",
            pod,
            node,
            3003,
            all3,
            true,
        ),
        case(
            "pod to LB with iTP:Local",
            pod,
            "9.10.11.12",
            80,
            all3,
            true,
        ),
        case(
            "node to ClusterIP with iTP:Local",
            node,
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            true,
        ),
        case(
            "node to NodePort with iTP:Local",
            node,
            node,
            3003,
            all3,
            true,
        ),
        case(
            "node to LB with iTP:Local",
            node,
            "9.10.11.12",
            80,
            all3,
            true,
        ),
        case(
            "external to ClusterIP with iTP:Local",
            ext,
            "172.30.0.43",
            80,
            "10.180.0.3:80",
            true,
        ),
        case(
            "external to NodePort with iTP:Local",
            ext,
            node,
            3003,
            all3,
            true,
        ),
        case(
            "external to LB with iTP:Local",
            ext,
            "9.10.11.12",
            80,
            all3,
            true,
        ),
    ];
    assert_eq!(flow_tests.len(), 27);

    /// `packetFlowTestOverride`: a new output and/or masq for the named flow.
    type Override = (&'static str, Option<&'static str>, Option<bool>);
    let no_detector: &[Override] = &[
        ("node to ClusterIP", None, Some(false)),
        ("node to ClusterIP with eTP:Local", None, Some(false)),
        ("node to ClusterIP with iTP:Local", None, Some(false)),
        ("external to ClusterIP", None, Some(false)),
        ("external to ClusterIP with eTP:Local", None, Some(false)),
        ("external to ClusterIP with iTP:Local", None, Some(false)),
        (
            "pod to NodePort with eTP:Local",
            Some("10.180.0.2:80"),
            None,
        ),
        ("pod to LB with eTP:Local", Some("10.180.0.2:80"), None),
    ];
    let masq_all: &[Override] = &[
        ("pod to ClusterIP", None, Some(true)),
        ("pod to ClusterIP with eTP:Local", None, Some(true)),
        ("pod to ClusterIP with iTP:Local", None, Some(true)),
    ];
    let masq_all_no_detector: &[Override] = &[
        ("pod to ClusterIP", None, Some(true)),
        ("pod to ClusterIP with eTP:Local", None, Some(true)),
        ("pod to ClusterIP with iTP:Local", None, Some(true)),
        (
            "pod to NodePort with eTP:Local",
            Some("10.180.0.2:80"),
            None,
        ),
        ("pod to LB with eTP:Local", Some("10.180.0.2:80"), None),
    ];
    let test_cases: [(&str, bool, bool, &[Override]); 4] = [
        ("base", false, true, &[]),
        ("no LocalTrafficDetector", false, false, no_detector),
        ("masqueradeAll", true, true, masq_all),
        (
            "masqueradeAll, no LocalTrafficDetector",
            true,
            false,
            masq_all_no_detector,
        ),
    ];
    for (name, masquerade_all, local_detector, overrides) in test_cases {
        eprintln!("{name}");
        let mut cfg = fake_proxier_v4();
        cfg.masquerade_all = masquerade_all;
        if !local_detector {
            cfg.pod_cidr = None;
        }
        let mut applied = 0;
        let cases: Vec<Case> = flow_tests
            .iter()
            .map(|c| {
                let mut t = *c;
                if let Some((_, output, masq)) = overrides.iter().find(|o| o.0 == c.name) {
                    applied += 1;
                    if let Some(m) = masq {
                        assert_ne!(t.masq, *m, "{}: override equals the base value", c.name);
                        t.masq = *m;
                    }
                    if let Some(o) = output {
                        assert_ne!(t.output, *o, "{}: override equals the base value", c.name);
                        t.output = o;
                    }
                }
                t
            })
            .collect();
        assert_eq!(applied, overrides.len(), "an override names no flow");
        run_rendered(&services, &cfg, &cases);
    }
}

/// The verbatim TestOverallNFTablesRules dump: what its six Services say must happen (the
/// upstream test only compares the dump; these cases follow from the Services it builds).
#[test]
fn upstream_overall_dump_traces() {
    let rules = parse_text(OVERALL).unwrap();
    run(
        &rules,
        &[
            case(
                "clusterIP (svc1)",
                "10.0.0.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                false,
            ),
            case(
                "clusterIP from outside the pod CIDR is masqueraded (svc1)",
                TEST_EXTERNAL_CLIENT,
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
            case(
                "hairpin: endpoint to its own Service (svc1)",
                "10.180.0.1",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
            case(
                "pod to external IP, Local policy short-circuits (svc2)",
                "10.0.0.2",
                "192.168.99.22",
                80,
                "10.180.0.2:80",
                false,
            ),
            case(
                "node to external IP, Local policy, masqueraded (svc2)",
                TEST_NODE_IP,
                "192.168.99.22",
                80,
                "10.180.0.2:80",
                true,
            ),
            case(
                "external to external IP, no local endpoint (svc2)",
                TEST_EXTERNAL_CLIENT,
                "192.168.99.22",
                80,
                "DROP",
                false,
            ),
            case(
                "external to NodePort, no local endpoint (svc2)",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                "DROP",
                false,
            ),
            case(
                "external to NodePort (svc3)",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3003,
                "10.180.0.3:80",
                true,
            ),
            case(
                "clusterIP with two endpoints (svc4)",
                "10.0.0.2",
                "172.30.0.44",
                80,
                "10.180.0.4:80, 10.180.0.5:80",
                false,
            ),
            case(
                "external IP, Cluster policy (svc4)",
                TEST_EXTERNAL_CLIENT,
                "192.168.99.33",
                80,
                "10.180.0.4:80, 10.180.0.5:80",
                true,
            ),
            case(
                "allowed external to LB (svc5)",
                TEST_EXTERNAL_CLIENT,
                "5.6.7.8",
                80,
                "10.180.0.3:80",
                true,
            ),
            case(
                "blocked external to LB (svc5)",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            case(
                "clusterIP with no endpoints (svc6)",
                "10.0.0.2",
                "172.30.0.46",
                80,
                "REJECT",
                false,
            ),
            case(
                "wrong port of a ClusterIP",
                "10.0.0.2",
                "172.30.0.41",
                81,
                "REJECT",
                false,
            ),
            case(
                "unallocated ClusterIP",
                "10.0.0.2",
                "172.30.0.99",
                80,
                "DROP",
                false,
            ),
            case("not a Service", "10.0.0.2", "10.0.0.3", 80, "", false),
        ],
    );
}

#[test]
fn probabilities_walk_and_reject_comment() {
    let rules = parse_text(OVERALL).unwrap();
    let ctx = test_node();
    let pkt = |dst: &str| Packet {
        src: ip("10.0.0.2"),
        dst: ip(dst),
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
    let chains: Vec<_> = r.walk.iter().map(|s| s.chain.as_str()).collect();
    assert_eq!(
        &chains[..4],
        &[
            "filter-prerouting-pre-dnat",
            "nat-prerouting",
            "services",
            "service-LAUZTJTB-ns4/svc4/tcp/p80"
        ],
        "{chains:?}"
    );
    assert_eq!(r.walk[0].table, "ip kube-proxy");
    assert!(r
        .walk
        .iter()
        .any(|s| s.line > 0 && s.rule.starts_with("meta l4proto tcp dnat to 10.180.0.5:80")));

    let r = trace(&rules, &pkt("172.30.0.46"), &ctx);
    assert_eq!(r.verdict, Verdict::Reject);
    assert_eq!(r.rejecting_comment(), Some("ns6/svc6:p80 has no endpoints"));
    let f = findings(&r, &pkt("172.30.0.46"));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].code, Code::SvcNoEndpoints);
    assert!(
        f[0].evidence[0].source.contains("reject-chain"),
        "{:?}",
        f[0].evidence
    );

    let r = trace(
        &rules,
        &Packet {
            src: ip(TEST_EXTERNAL_CLIENT),
            dst: ip(TEST_NODE_IP),
            dport: 3001,
            proto: Proto::Tcp,
        },
        &ctx,
    );
    assert_eq!(
        r.rejecting_comment(),
        Some("ns2/svc2:p80 has no local endpoints")
    );
    assert_eq!(
        findings(&r, &pkt("1.1.1.1"))[0].code,
        Code::SvcNodeportUnreachable
    );
}

#[test]
fn affinity_is_noted() {
    let rules = parse_text(OVERALL).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: ip("10.0.0.2"),
            dst: ip("172.30.0.45"),
            dport: 80,
            proto: Proto::Tcp,
        },
        &test_node(),
    );
    assert_eq!(r.endpoints, vec!["10.180.0.3:80"]);
    assert!(
        r.notes.iter().any(|n| n.contains("session affinity")),
        "{:?}",
        r.notes
    );
    assert!(r
        .walk
        .iter()
        .any(|s| s.notes.iter().any(|n| n.contains("remembers the client"))));
}

/// `nft list ruleset` as nft 1.0 prints kube-proxy's table (normalized spellings: `meta mark
/// set meta mark | 0x00004000`, `dstnat - 10`, handles), and the same table as `nft -j`.
#[test]
fn list_and_json_captures_trace_alike() {
    let list = parse_text(LIST).unwrap();
    assert_eq!(list.format, Format::List);
    let json = parse_json(JSON).unwrap();
    assert_eq!(json.format, Format::Json);
    assert_eq!(list.rule_count(), json.rule_count());
    let cases = [
        case(
            "clusterIP",
            "10.0.0.2",
            "172.30.0.41",
            80,
            "10.180.0.1:80, 10.180.0.2:80",
            false,
        ),
        case(
            "clusterIP from outside the pod CIDR",
            TEST_EXTERNAL_CLIENT,
            "172.30.0.41",
            80,
            "10.180.0.1:80, 10.180.0.2:80",
            true,
        ),
        case(
            "NodePort",
            TEST_EXTERNAL_CLIENT,
            TEST_NODE_IP,
            30080,
            "10.180.0.1:80, 10.180.0.2:80",
            true,
        ),
        case(
            "no endpoints",
            "10.0.0.2",
            "172.30.0.46",
            80,
            "REJECT",
            false,
        ),
        case("unallocated", "10.0.0.2", "172.30.0.99", 80, "DROP", false),
    ];
    run(&list, &cases);
    run(&json, &cases);
}

#[test]
fn unknown_statements_are_reported() {
    let text = "table ip kube-proxy {\n\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tfrobnicate 7 jump services\n\t}\n\tchain services {\n\t\tip daddr 10.96.0.1 tcp dport 443 dnat to 192.168.0.10:6443\n\t}\n}\n";
    let rules = parse_text(text).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: ip("10.0.0.2"),
            dst: ip("10.96.0.1"),
            dport: 443,
            proto: Proto::Tcp,
        },
        &test_node(),
    );
    assert_eq!(r.endpoints, vec!["192.168.0.10:6443"]);
    assert_eq!(r.unknown, vec!["line 4: frobnicate 7: assumed to match"]);
}

/// A full `nft list ruleset` has other tables too (here a firewalld-like `inet` table whose
/// input chain drops everything): only kube-proxy's table is traced, and the note says so.
#[test]
fn other_tables_are_named_not_traced() {
    let text = format!(
        "table inet firewalld {{\n\tchain filter_INPUT {{\n\t\ttype filter hook input priority filter + 10; policy drop;\n\t\tiifname \"lo\" accept\n\t}}\n}}\n{LIST}"
    );
    let rules = parse_text(&text).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: ip(TEST_EXTERNAL_CLIENT),
            dst: ip(TEST_NODE_IP),
            dport: 30080,
            proto: Proto::Tcp,
        },
        &test_node(),
    );
    assert_eq!(r.verdict, Verdict::Dnat);
    assert!(
        r.notes.iter().any(|n| n.contains("inet firewalld")),
        "{:?}",
        r.notes
    );
    assert!(r.unknown.is_empty(), "{:?}", r.unknown);
}

/// Both traffic policies Local: kube-proxy's `external-` chain short-circuits pod traffic
/// to the Cluster-policy chain, which `UsesClusterEndpoints` (true for any externally
/// accessible Service) makes it create even then: a pod's connection to the NodePort
/// reaches every endpoint, an outside client only the local one, a ClusterIP only the local
/// one.
#[test]
fn both_policies_local_short_circuit_reaches_cluster_endpoints() {
    let mut s = svc(
        "ns1/svc1",
        "p80",
        Proto::Tcp,
        "172.30.0.41",
        80,
        Some(3001),
        &[("10.180.0.1", 80, true), ("10.180.1.1", 80, false)],
    );
    s.internal_policy_local = true;
    s.external_policy_local = true;
    let text = render_nft_script(&[s], &fake_proxier_v4());
    let rules = parse_text(&text).unwrap();
    let r = trace(
        &rules,
        &Packet {
            src: ip("10.0.0.2"),
            dst: ip(TEST_NODE_IP),
            dport: 3001,
            proto: Proto::Tcp,
        },
        &test_node(),
    );
    assert!(
        r.notes.iter().all(|n| !n.contains("does not have")),
        "{:?}",
        r.notes
    );
    assert_eq!(
        r.endpoints.iter().map(String::as_str).collect::<Vec<_>>(),
        ["10.180.0.1:80", "10.180.1.1:80"]
    );
    run(
        &rules,
        &[
            case(
                "external to NodePort",
                TEST_EXTERNAL_CLIENT,
                TEST_NODE_IP,
                3001,
                "10.180.0.1:80",
                false,
            ),
            case(
                "pod to ClusterIP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                false,
            ),
        ],
    );
}
