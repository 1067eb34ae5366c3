//! Golden packet-flow tests for the iptables renderer and tracer, ported from kube-proxy's
//! own tests (kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go, `runPacketFlowTests`):
//!
//! - the tracer on upstream's static dumps (TestTracePacket, TestOverallIPTablesRules'
//!   expected dump) and on a real-world dump;
//! - the renderer against TestOverallIPTablesRules' expected dump, rule for rule;
//! - every test that calls `runPacketFlowTests` (TestNoEndpointsReject, TestClusterIPGeneral,
//!   TestLoadBalancer, TestNodePorts, TestHealthCheckNodePort, TestExternalTrafficPolicyLocal,
//!   TestExternalTrafficPolicyCluster, TestInternalTrafficPolicy,
//!   TestTerminatingEndpointsTrafficPolicyLocal/Cluster, TestInternalExternalMasquerade):
//!   the test's Services rendered by `render_iptables`, upstream's packets, `output` and
//!   `masq`, case names verbatim.

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
    //! here the same Services go through kdiag's renderer (`render_iptables`, pinned to
    //! kube-proxy's own output by `upstream_test_overall_iptables_rules_render`), and the
    //! packets and expectations are upstream's, case names verbatim. Every test of
    //! proxier_test.go that calls `runPacketFlowTests` is here.
    use super::*;
    use kdiag_probes::iptables::render::{render_iptables, ProxierConfig, RenderEndpoint};
    use kdiag_probes::iptables::IpNet;
    use kdiag_probes::nft::render::NftServicePort;
    use kdiag_probes::trace::join_host_port;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    const TEST_NODE_IP_ALT: &str = "192.168.1.2";
    const TEST_NODE_IPV6: &str = "2001:db8::1";
    const TEST_NODE_IPV6_ALT: &str = "2001:db8:1::2";

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(super) fn cidr(s: &str) -> IpNet {
        let (a, p) = s.split_once('/').unwrap();
        IpNet {
            addr: ip(a),
            prefix: p.parse().unwrap(),
        }
    }

    /// `NewFakeProxier(iptablestest.NewFake())`: pod CIDR 10.0.0.0/8, node IP 192.168.0.2,
    /// localhost NodePorts, nfacct counters, no `--random-fully`.
    pub(super) fn fake_proxier() -> ProxierConfig {
        ProxierConfig {
            ipv6: false,
            local_cidr: Some(cidr("10.0.0.0/8")),
            masquerade_all: false,
            localhost_nodeports: true,
            nodeport_ips: None,
            node_ip: Some(ip(TEST_NODE_IP)),
            random_fully: false,
            nfacct: true,
        }
    }

    /// `NewFakeProxier(iptablestest.NewIPv6Fake())`.
    pub(super) fn fake_proxier_v6() -> ProxierConfig {
        ProxierConfig {
            ipv6: true,
            local_cidr: Some(cidr("fd00:10::/64")),
            node_ip: Some(ip(TEST_NODE_IPV6)),
            ..fake_proxier()
        }
    }

    /// `proxyutil.NewNodePortAddresses(family, cidrs).GetNodeIPs(fakeNetwork)`: the fake
    /// node's addresses (lo: 127.0.0.1, ::1; eth0: testNodeIPs) inside `cidrs`.
    pub(super) fn nodeport_addresses(cidrs: &[&str]) -> Vec<IpAddr> {
        let nets: Vec<IpNet> = cidrs.iter().map(|c| cidr(c)).collect();
        ["127.0.0.1", "::1"]
            .iter()
            .map(|s| ip(s))
            .chain(test_node().node_ips)
            .filter(|a| nets.iter().any(|n| n.contains(*a)))
            .collect()
    }

    /// An endpoint's conditions in an EndpointSlice.
    #[derive(Clone, Copy)]
    pub(super) enum Ep {
        /// ready (and serving)
        Ready,
        /// not ready, serving, terminating
        ServingTerminating,
        /// not ready, not serving (terminating)
        NotServing,
    }

    /// A Service port (`makeTestService` + `makeTestEndpointSlice`); endpoints
    /// `(ip, port, on this node, conditions)`.
    pub(super) fn svc(
        ns_name: &str,
        port_name: &str,
        proto: Proto,
        cluster_ip: &str,
        port: u16,
        node_port: Option<u16>,
        endpoints: &[(&str, u16, bool, Ep)],
    ) -> NftServicePort {
        let (ns, name) = ns_name.split_once('/').unwrap();
        let mut sp = NftServicePort::from(kdiag_probes::iptables::render::RenderServicePort {
            namespace: ns.into(),
            name: name.into(),
            port_name: port_name.into(),
            protocol: proto,
            cluster_ip: ip(cluster_ip),
            port,
            node_port,
            endpoints: endpoints
                .iter()
                .map(|(a, p, _, st)| RenderEndpoint {
                    ip: ip(a),
                    port: *p,
                    ready: matches!(st, Ep::Ready),
                })
                .collect(),
        });
        sp.local_endpoints = endpoints.iter().filter(|e| e.2).map(|e| ip(e.0)).collect();
        sp.serving_terminating = endpoints
            .iter()
            .filter(|e| matches!(e.3, Ep::ServingTerminating))
            .map(|e| ip(e.0))
            .collect();
        sp
    }

    /// Ready endpoints `(ip, port, local)`.
    pub(super) fn ready<'a>(eps: &[(&'a str, u16, bool)]) -> Vec<(&'a str, u16, bool, Ep)> {
        eps.iter()
            .map(|(a, p, l)| (*a, *p, *l, Ep::Ready))
            .collect()
    }

    /// Renders `ports`, checks the dump parses and every rule is understood by the tracer,
    /// and runs `cases` on it.
    pub(super) fn run_rendered(
        ports: &[NftServicePort],
        cfg: &ProxierConfig,
        cases: &[Case],
    ) -> String {
        let dump = render_iptables(ports, cfg);
        let rules = parse_iptables_save(&dump).unwrap();
        for c in cases {
            let pkt = Packet {
                src: ip(c.src),
                dst: ip(c.dst),
                dport: c.dport,
                proto: c.proto,
            };
            let r = trace(&rules, &pkt, &test_node());
            assert!(r.unknown.is_empty(), "{}: {:?}", c.name, r.unknown);
        }
        run(&dump, cases);
        dump
    }

    // ---- TestOverallIPTablesRules: the renderer against kube-proxy's expected dump ----

    /// The six Services of TestOverallIPTablesRules.
    fn overall_services() -> Vec<NftServicePort> {
        let tcp = Proto::Tcp;
        let svc1 = svc(
            "ns1/svc1",
            "p80",
            tcp,
            "172.30.0.41",
            80,
            None,
            &ready(&[("10.180.0.1", 80, false)]),
        );
        let mut svc2 = svc(
            "ns2/svc2",
            "p80",
            tcp,
            "172.30.0.42",
            80,
            Some(3001),
            &ready(&[("10.180.0.2", 80, false)]),
        );
        svc2.external_policy_local = true;
        svc2.load_balancer_ips = vec![ip("1.2.3.4")];
        svc2.external_ips = vec![ip("192.168.99.22")];
        svc2.health_check_node_port = Some(30000);
        let svc3 = svc(
            "ns3/svc3",
            "p80",
            tcp,
            "172.30.0.43",
            80,
            Some(3003),
            &ready(&[("10.180.0.3", 80, false)]),
        );
        let mut svc4 = svc(
            "ns4/svc4",
            "p80",
            tcp,
            "172.30.0.44",
            80,
            None,
            &ready(&[("10.180.0.4", 80, false), ("10.180.0.5", 80, true)]),
        );
        svc4.external_ips = vec![ip("192.168.99.33")];
        // svc5's healthCheckNodePort is ignored: its policy is Cluster.
        let mut svc5 = svc(
            "ns5/svc5",
            "p80",
            tcp,
            "172.30.0.45",
            80,
            Some(3002),
            &ready(&[("10.180.0.3", 80, false)]),
        );
        svc5.load_balancer_ips = vec![ip("5.6.7.8")];
        svc5.source_ranges = vec![cidr("203.0.113.0/25")];
        svc5.affinity_timeout = Some(10800);
        let svc6 = svc("ns6/svc6", "p80", tcp, "172.30.0.46", 80, None, &[]);
        vec![svc1, svc2, svc3, svc4, svc5, svc6]
    }

    /// Splits a rule line into words, a double-quoted string being one word.
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let (mut quoted, mut any) = (false, false);
        for ch in line.chars() {
            match ch {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                ' ' if !quoted => {
                    if any {
                        out.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                c => {
                    cur.push(c);
                    any = true;
                }
            }
        }
        if any {
            out.push(cur);
        }
        out
    }

    /// One rule with iptables' spelling differences taken out: the address/protocol
    /// selectors as a set (with `/32` added to bare addresses), the `-m` matches in order
    /// with their options as a set (`recent`'s default `--mask 255.255.255.255 --rsource`
    /// dropped), the target with `--or-mark`/`--xor-mark` spelled as iptables-save prints
    /// them (`--set-xmark`) and REJECT's default `--reject-with icmp-port-unreachable`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Canon {
        base: BTreeSet<String>,
        matches: Vec<(String, BTreeSet<String>)>,
        target: Vec<String>,
        /// The Service (`ns/name`) the comment names, for upstream's per-Service ordering.
        service: Option<String>,
    }

    fn canon(words: &[String]) -> Canon {
        let mut base = BTreeSet::new();
        let mut matches: Vec<(String, Vec<String>)> = Vec::new();
        let mut target = Vec::new();
        let mut neg = false;
        let mut i = 0;
        while i < words.len() {
            let w = words[i].as_str();
            let bang = if neg { "! " } else { "" };
            match w {
                "!" => {
                    neg = true;
                    i += 1;
                    continue;
                }
                "-s" | "-d" | "-p" | "-i" | "-o" => {
                    let mut v = words[i + 1].clone();
                    if (w == "-s" || w == "-d") && !v.contains('/') {
                        v.push_str(if v.contains(':') { "/128" } else { "/32" });
                    }
                    base.insert(format!("{bang}{w} {v}"));
                    i += 2;
                }
                "-m" => {
                    matches.push((words[i + 1].clone(), Vec::new()));
                    i += 2;
                }
                "-j" => {
                    target = words[i + 1..].to_vec();
                    break;
                }
                _ => {
                    let mut opt = format!("{bang}{w}");
                    i += 1;
                    while i < words.len() && !words[i].starts_with('-') && words[i] != "!" {
                        opt.push(' ');
                        opt.push_str(&words[i]);
                        i += 1;
                    }
                    matches.last_mut().expect("option before -m").1.push(opt);
                }
            }
            neg = false;
        }
        let matches: Vec<(String, BTreeSet<String>)> = matches
            .into_iter()
            .map(|(m, opts)| {
                let opts = opts
                    .into_iter()
                    .filter(|o| {
                        m != "recent" || (o != "--rsource" && o != "--mask 255.255.255.255")
                    })
                    .collect();
                (m, opts)
            })
            .collect();
        match target.as_slice() {
            [m, o, v] if m == "MARK" && o == "--or-mark" => {
                target = vec![m.clone(), "--set-xmark".into(), format!("{v}/{v}")];
            }
            [m, o, v] if m == "MARK" && o == "--xor-mark" => {
                target = vec![m.clone(), "--set-xmark".into(), format!("{v}/0x0")];
            }
            [r] if r == "REJECT" => {
                target.extend(["--reject-with".into(), "icmp-port-unreachable".into()]);
            }
            _ => {}
        }
        let service = matches
            .iter()
            .find(|(m, _)| m == "comment")
            .and_then(|(_, o)| o.iter().next())
            .and_then(|c| c.strip_prefix("--comment "))
            .and_then(|c| {
                let svc = c.split([':', ' ']).next()?;
                svc.contains('/').then(|| svc.to_string())
            });
        Canon {
            base,
            matches,
            target,
            service,
        }
    }

    type Dump = std::collections::BTreeMap<(String, String), Vec<Canon>>;

    /// `(table, chain)` -> rules, for every chain the dump declares; the chains where
    /// kube-proxy's order is its Service map's (random) order are ordered by Service, as
    /// upstream's `sortIPTablesRules` does (rules naming no Service last).
    fn canon_dump(text: &str, skip_chains: &[&str]) -> Dump {
        let mut out = Dump::new();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split(' ').next().unwrap().to_string();
                if !skip_chains.contains(&chain.as_str()) {
                    out.entry((table.clone(), chain)).or_default();
                }
            } else if line.starts_with("-A ") {
                let w = words(line);
                if skip_chains.contains(&w[1].as_str()) {
                    continue;
                }
                out.entry((table.clone(), w[1].clone()))
                    .or_default()
                    .push(canon(&w[2..]));
            }
        }
        for ((_, chain), rules) in out.iter_mut() {
            if [
                "KUBE-SERVICES",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-PROXY-FIREWALL",
            ]
            .contains(&chain.as_str())
            {
                rules.sort_by_key(|r| r.service.clone().unwrap_or_else(|| "~".into()));
            }
        }
        out
    }

    /// Asserts `rendered` holds exactly the rules of `want` (an expected dump of kube-proxy's
    /// tests: its iptables-restore input), chain by chain, compared as upstream compares.
    pub(super) fn assert_same_rules(label: &str, want: &str, rendered: &str) {
        let builtins = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
        let want = canon_dump(want, &builtins);
        let got = canon_dump(rendered, &builtins);
        let mut diffs = Vec::new();
        for key in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
            if want.get(key) != got.get(key) {
                diffs.push(format!(
                    "{key:?}\n want {:#?}\n got {:#?}",
                    want.get(key),
                    got.get(key)
                ));
            }
        }
        assert!(diffs.is_empty(), "{label}:\n{}", diffs.join("\n"));
    }

    /// TestOverallIPTablesRules: the renderer reproduces kube-proxy's expected
    /// iptables-restore input for the six Services rule for rule, compared the way upstream
    /// compares (per chain, Service-ordered dispatch chains) modulo iptables-save's
    /// canonical spelling; the built-in chains' jumps, which kube-proxy installs with
    /// separate `iptables -I` calls rather than in that input, are left out.
    #[test]
    fn upstream_test_overall_iptables_rules_render() {
        let builtins = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
        let rendered = render_iptables(&overall_services(), &fake_proxier());
        let want = canon_dump(OVERALL, &builtins);
        let got = canon_dump(&rendered, &builtins);
        assert_eq!(want.len(), 26, "chains in the upstream dump");
        assert_eq!(
            want.values().map(Vec::len).sum::<usize>(),
            65,
            "rules in the upstream dump"
        );
        let mut diffs = Vec::new();
        for key in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
            if want.get(key) != got.get(key) {
                diffs.push(format!(
                    "{key:?}\n want {:#?}\n got {:#?}",
                    want.get(key),
                    got.get(key)
                ));
            }
        }
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        // the comparison is not blind: one changed probability or comment is a difference
        for (from, to) in [
            ("--probability 0.5000000000", "--probability 0.2500000000"),
            (
                "ns5/svc5:p80 loadbalancer IP",
                "ns5/svc5:p80 load balancer IP",
            ),
        ] {
            assert!(rendered.contains(from), "{from}");
            assert_ne!(canon_dump(&rendered.replace(from, to), &builtins), want);
        }
        // the tail call to KUBE-NODEPORTS stays last
        let last = rendered
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains("KUBE-"))
            .unwrap();
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
        // and the rendered dump traces like the upstream one
        run_rendered(&overall_services(), &fake_proxier(), TRACE_PACKET_CASES);
    }

    // ---- the packet-flow tests ----

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
        s.external_ips = vec![ip("192.168.99.11")];
        s.load_balancer_ips = vec![ip("1.2.3.4")];
        run_rendered(
            &[s],
            &fake_proxier(),
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
                    "192.168.99.11",
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
        let two = |p| ready(&[("10.180.0.1", p, true), ("10.180.2.1", p, false)]);
        let ports = vec![
            svc(
                "ns1/svc1",
                "http",
                Proto::Tcp,
                "172.30.0.41",
                80,
                None,
                &ready(&[("10.180.0.1", 80, true)]),
            ),
            svc(
                "ns2/svc2",
                "http",
                Proto::Tcp,
                "172.30.0.42",
                80,
                None,
                &two(80),
            ),
            svc(
                "ns2/svc2",
                "https",
                Proto::Tcp,
                "172.30.0.42",
                443,
                None,
                &two(8443),
            ),
            svc(
                "ns2/svc2",
                "dns-udp",
                Proto::Udp,
                "172.30.0.42",
                53,
                None,
                &two(53),
            ),
            svc(
                "ns2/svc2",
                "dns-tcp",
                Proto::Tcp,
                "172.30.0.42",
                53,
                None,
                &two(5353),
            ),
            svc(
                "ns2/svc2",
                "dns-sctp",
                Proto::Sctp,
                "172.30.0.42",
                53,
                None,
                &two(53),
            ),
        ];
        run_rendered(
            &ports,
            &fake_proxier(),
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
            &ready(&[("10.180.0.1", 80, false)]),
        );
        s.load_balancer_ips = vec![ip("1.2.3.4"), ip("5.6.7.8")];
        s.source_ranges = vec![cidr("192.168.0.0/24"), cidr("203.0.113.0/25")];
        let ep = "10.180.0.1:80";
        let blocked = TEST_EXTERNAL_CLIENT_BLOCKED;
        run_rendered(
            &[s],
            &fake_proxier(),
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
                    blocked,
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
                    blocked,
                    "1.2.3.4",
                    80,
                    "DROP",
                    false,
                ),
                case(
                    "blocked external to LB2",
                    blocked,
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

    const fn with_proto(mut c: Case, proto: Proto) -> Case {
        c.proto = proto;
        c
    }

    /// Leaks a formatted string (test-only) so generated cases fit `Case`'s `&'static str`.
    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// TestNodePorts: all seven sub-tests (IPv4 and IPv6, localhost NodePorts on or off,
    /// `--nodeport-addresses`), with the KUBE-FIREWALL check it makes by hand.
    #[test]
    fn upstream_test_node_ports() {
        struct Sub {
            name: &'static str,
            v6: bool,
            localhost_nodeports: bool,
            nodeport_addresses: Option<&'static [&'static str]>,
            allow_alt_node_ip: bool,
            expect_firewall: bool,
        }
        let subs = [
            Sub {
                name: "ipv4, localhost-nodeports enabled",
                v6: false,
                localhost_nodeports: true,
                nodeport_addresses: None,
                allow_alt_node_ip: true,
                expect_firewall: true,
            },
            Sub {
                name: "ipv4, localhost-nodeports disabled",
                v6: false,
                localhost_nodeports: false,
                nodeport_addresses: None,
                allow_alt_node_ip: true,
                expect_firewall: false,
            },
            Sub {
                name: "ipv4, localhost-nodeports disabled, localhost in nodeport-addresses",
                v6: false,
                localhost_nodeports: false,
                nodeport_addresses: Some(&["192.168.0.0/24", "127.0.0.1/32"]),
                allow_alt_node_ip: false,
                expect_firewall: false,
            },
            Sub {
                name: "ipv4, localhost-nodeports enabled, multiple nodeport-addresses",
                v6: false,
                localhost_nodeports: false,
                nodeport_addresses: Some(&["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"]),
                allow_alt_node_ip: true,
                expect_firewall: false,
            },
            Sub {
                name: "ipv6, localhost-nodeports enabled",
                v6: true,
                localhost_nodeports: true,
                nodeport_addresses: None,
                allow_alt_node_ip: true,
                expect_firewall: false,
            },
            Sub {
                name: "ipv6, localhost-nodeports disabled",
                v6: true,
                localhost_nodeports: false,
                nodeport_addresses: None,
                allow_alt_node_ip: true,
                expect_firewall: false,
            },
            Sub {
                name: "ipv6, localhost-nodeports disabled, multiple nodeport-addresses",
                v6: true,
                localhost_nodeports: false,
                nodeport_addresses: Some(&["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"]),
                allow_alt_node_ip: false,
                expect_firewall: false,
            },
        ];
        for t in subs {
            let (mut cfg, svc_ip, ep1, ep2) = if t.v6 {
                (
                    fake_proxier_v6(),
                    "fd00:172:30::41",
                    "fd00:10:180::1",
                    "fd00:10:180::2:1",
                )
            } else {
                (fake_proxier(), "172.30.0.41", "10.180.0.1", "10.180.2.1")
            };
            cfg.localhost_nodeports = t.localhost_nodeports;
            cfg.nodeport_ips = t.nodeport_addresses.map(nodeport_addresses);
            let s = svc(
                "ns1/svc1",
                "p80",
                Proto::Tcp,
                svc_ip,
                80,
                Some(3001),
                &ready(&[(ep1, 80, false), (ep2, 80, true)]),
            );
            let (pod, external, node, alt, localhost) = if t.v6 {
                (
                    "fd00:10::2",
                    "2600:5200::1",
                    TEST_NODE_IPV6,
                    TEST_NODE_IPV6_ALT,
                    "::1",
                )
            } else {
                (
                    "10.0.0.2",
                    TEST_EXTERNAL_CLIENT,
                    TEST_NODE_IP,
                    TEST_NODE_IP_ALT,
                    "127.0.0.1",
                )
            };
            let out = leak(format!(
                "{}, {}",
                join_host_port(ip(ep1), 80),
                join_host_port(ip(ep2), 80)
            ));
            let mut cases = vec![
                case("pod to cluster IP", pod, svc_ip, 80, out, false),
                case("external to nodePort", external, node, 3001, out, true),
                case("node to nodePort", node, node, 3001, out, true),
            ];
            if !t.v6 && t.localhost_nodeports {
                cases.push(case(
                    "localhost to nodePort gets masqueraded",
                    localhost,
                    localhost,
                    3001,
                    out,
                    true,
                ));
            } else {
                cases.push(case(
                    "localhost to nodePort is ignored",
                    localhost,
                    localhost,
                    3001,
                    "",
                    false,
                ));
            }
            if t.allow_alt_node_ip {
                cases.push(case(
                    "external to nodePort on secondary IP",
                    external,
                    alt,
                    3001,
                    out,
                    true,
                ));
            } else {
                cases.push(case(
                    "secondary nodeIP ignores NodePorts",
                    external,
                    alt,
                    3001,
                    "",
                    false,
                ));
            }
            for c in &mut cases {
                c.name = leak(format!("{}: {}", t.name, c.name));
            }
            let dump = run_rendered(&[s], &cfg, &cases);
            // "We have to check the firewall rule manually": KUBE-FIREWALL's one rule.
            let rules = parse_iptables_save(&dump).unwrap();
            let fw = rules
                .table("filter")
                .and_then(|f| f.chain("KUBE-FIREWALL"))
                .map_or(0, |c| c.rules.len());
            assert_eq!(fw, usize::from(t.expect_firewall), "{}", t.name);
        }
    }

    /// TestHealthCheckNodePort (`--nodeport-addresses 127.0.0.0/8`), before and after the
    /// Service is deleted.
    #[test]
    fn upstream_test_health_check_node_port() {
        let mut cfg = fake_proxier();
        cfg.nodeport_ips = Some(nodeport_addresses(&["127.0.0.0/8"]));
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.42",
            80,
            Some(3001),
            &[],
        );
        s.health_check_node_port = Some(30000);
        s.external_policy_local = true;
        run_rendered(
            &[s],
            &cfg,
            &[case(
                "firewall accepts HealthCheckNodePort",
                "1.2.3.4",
                TEST_NODE_IP,
                30000,
                "ACCEPT",
                false,
            )],
        );
        run_rendered(
            &[],
            &cfg,
            &[case(
                "HealthCheckNodePort no longer has any rule",
                "1.2.3.4",
                TEST_NODE_IP,
                30000,
                "",
                false,
            )],
        );
    }

    /// The Service of TestExternalTrafficPolicyLocal/Cluster.
    pub(super) fn etp_service(local: bool) -> NftServicePort {
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &ready(&[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)]),
        );
        s.external_ips = vec![ip("192.168.99.11")];
        s.load_balancer_ips = vec![ip("1.2.3.4")];
        s.external_policy_local = local;
        if local {
            s.health_check_node_port = Some(30000);
        }
        s
    }

    /// TestExternalTrafficPolicyLocal.
    #[test]
    fn upstream_test_external_traffic_policy_local() {
        let both = "10.180.0.1:80, 10.180.2.1:80";
        let local = "10.180.2.1:80";
        let ext = "192.168.99.11";
        run_rendered(
            &[etp_service(true)],
            &fake_proxier(),
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
                    ext,
                    80,
                    both,
                    false,
                ),
                case(
                    "external to external IP hits only local endpoint, unmasqueraded",
                    TEST_EXTERNAL_CLIENT,
                    ext,
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
        let ext = "192.168.99.11";
        run_rendered(
            &[etp_service(false)],
            &fake_proxier(),
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
                    ext,
                    80,
                    both,
                    true,
                ),
                case(
                    "external to external IP hits both endpoints, masqueraded",
                    TEST_EXTERNAL_CLIENT,
                    ext,
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

    /// TestInternalTrafficPolicy: its four sub-tests, each also after the endpoints are
    /// deleted.
    #[test]
    fn upstream_test_internal_traffic_policy() {
        /// (sub-test, internalTrafficPolicy Local, endpoints and whether on this node, flow)
        type Sub = (&'static str, bool, [(&'static str, bool); 3], Case);
        let subs: [Sub; 4] = [
            (
                "internalTrafficPolicy is cluster",
                false,
                [("10.0.1.1", true), ("10.0.1.2", false), ("10.0.1.3", false)],
                case(
                    "pod to ClusterIP hits all endpoints",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
                    false,
                ),
            ),
            (
                "internalTrafficPolicy is local and there is one local endpoint",
                true,
                [("10.0.1.1", true), ("10.0.1.2", false), ("10.0.1.3", false)],
                case(
                    "pod to ClusterIP hits only local endpoint",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80",
                    false,
                ),
            ),
            (
                "internalTrafficPolicy is local and there are multiple local endpoints",
                true,
                [("10.0.1.1", true), ("10.0.1.2", true), ("10.0.1.3", false)],
                case(
                    "pod to ClusterIP hits all local endpoints",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80",
                    false,
                ),
            ),
            (
                "internalTrafficPolicy is local and there are no local endpoints",
                true,
                [
                    ("10.0.1.1", false),
                    ("10.0.1.2", false),
                    ("10.0.1.3", false),
                ],
                case("no endpoints", "10.0.0.2", "172.30.1.1", 80, "DROP", false),
            ),
        ];
        for (name, local, eps, mut flow) in subs {
            let eps: Vec<(&str, u16, bool)> = eps.iter().map(|(a, l)| (*a, 80, *l)).collect();
            let mut s = svc(
                "ns1/svc1",
                "",
                Proto::Tcp,
                "172.30.1.1",
                80,
                None,
                &ready(&eps),
            );
            s.internal_policy_local = local;
            flow.name = leak(format!("{name}: {}", flow.name));
            run_rendered(std::slice::from_ref(&s), &fake_proxier(), &[flow]);
            s.base.endpoints.clear();
            run_rendered(
                &[s],
                &fake_proxier(),
                &[case(
                    leak(format!("{name}: endpoints deleted")),
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                )],
            );
        }
    }

    /// The Service of TestTerminatingEndpointsTrafficPolicyLocal/Cluster (LoadBalancer
    /// 1.2.3.4, no NodePort, unnamed port).
    pub(super) fn terminating_service(
        local: bool,
        eps: &[(&str, u16, bool, Ep)],
    ) -> NftServicePort {
        let mut s = svc("ns1/svc1", "", Proto::Tcp, "172.30.1.1", 80, None, eps);
        s.load_balancer_ips = vec![ip("1.2.3.4")];
        s.external_policy_local = local;
        // healthCheckNodePort 30000: kube-proxy keeps it only for Local policy
        s.health_check_node_port = local.then_some(30000);
        s
    }

    /// Runs one terminating-endpoints sub-test and then its "after endpoints deleted" check.
    fn run_terminating(local: bool, name: &str, eps: &[(&str, u16, bool, Ep)], flows: [Case; 2]) {
        let flows = flows.map(|mut c| {
            c.name = leak(format!("{name}: {}", c.name));
            c
        });
        run_rendered(&[terminating_service(local, eps)], &fake_proxier(), &flows);
        run_rendered(
            &[terminating_service(local, &[])],
            &fake_proxier(),
            &[
                case(
                    leak(format!("{name}: pod to clusterIP after endpoints deleted")),
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                case(
                    leak(format!("{name}: external to LB after endpoints deleted")),
                    TEST_EXTERNAL_CLIENT,
                    "1.2.3.4",
                    80,
                    "REJECT",
                    false,
                ),
            ],
        );
    }

    /// TestTerminatingEndpointsTrafficPolicyLocal: its four sub-tests.
    #[test]
    fn upstream_test_terminating_endpoints_traffic_policy_local() {
        use Ep::*;
        let ext = TEST_EXTERNAL_CLIENT;
        run_terminating(
            true,
            "ready endpoints exist",
            &[
                ("10.0.1.1", 80, true, Ready),
                ("10.0.1.2", 80, true, Ready),
                ("10.0.1.3", 80, true, ServingTerminating),
                ("10.0.1.4", 80, true, NotServing),
                ("10.0.1.5", 80, false, Ready),
            ],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    false,
                ),
                case(
                    "external to LB",
                    ext,
                    "1.2.3.4",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80",
                    false,
                ),
            ],
        );
        run_terminating(
            true,
            "only terminating endpoints exist",
            &[
                ("10.0.1.2", 80, true, ServingTerminating),
                ("10.0.1.3", 80, true, ServingTerminating),
                ("10.0.1.4", 80, true, NotServing),
                ("10.0.1.5", 80, false, Ready),
            ],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                case(
                    "external to LB",
                    ext,
                    "1.2.3.4",
                    80,
                    "10.0.1.2:80, 10.0.1.3:80",
                    false,
                ),
            ],
        );
        run_terminating(
            true,
            "terminating endpoints on remote node",
            &[("10.0.1.5", 80, false, ServingTerminating)],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                case(
                    "external to LB, no locally-usable endpoints",
                    ext,
                    "1.2.3.4",
                    80,
                    "DROP",
                    false,
                ),
            ],
        );
        run_terminating(
            true,
            "no usable endpoints on any node",
            &[
                ("10.0.1.5", 80, true, NotServing),
                ("10.0.1.5", 80, false, NotServing),
            ],
            [
                case(
                    "pod to clusterIP, no usable endpoints",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                case(
                    "external to LB, no usable endpoints",
                    ext,
                    "1.2.3.4",
                    80,
                    "REJECT",
                    false,
                ),
            ],
        );
    }

    /// TestTerminatingEndpointsTrafficPolicyCluster: its four sub-tests.
    #[test]
    fn upstream_test_terminating_endpoints_traffic_policy_cluster() {
        use Ep::*;
        let ext = TEST_EXTERNAL_CLIENT;
        run_terminating(
            false,
            "ready endpoints exist",
            &[
                ("10.0.1.1", 80, true, Ready),
                ("10.0.1.2", 80, true, Ready),
                ("10.0.1.3", 80, false, ServingTerminating),
                ("10.0.1.4", 80, false, NotServing),
                ("10.0.1.5", 80, false, Ready),
            ],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    false,
                ),
                case(
                    "external to LB",
                    ext,
                    "1.2.3.4",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
                    true,
                ),
            ],
        );
        run_terminating(
            false,
            "only terminating endpoints exist",
            &[
                ("10.0.1.2", 80, true, ServingTerminating),
                ("10.0.1.3", 80, true, ServingTerminating),
                ("10.0.1.4", 80, false, NotServing),
                ("10.0.1.5", 80, false, ServingTerminating),
            ],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                    false,
                ),
                case(
                    "external to LB",
                    ext,
                    "1.2.3.4",
                    80,
                    "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
                    true,
                ),
            ],
        );
        run_terminating(
            false,
            "terminating endpoints on remote node",
            &[("10.0.1.5", 80, false, ServingTerminating)],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.5:80",
                    false,
                ),
                case("external to LB", ext, "1.2.3.4", 80, "10.0.1.5:80", true),
            ],
        );
        run_terminating(
            false,
            "no usable endpoints on any node",
            &[
                ("10.0.1.5", 80, true, NotServing),
                ("10.0.1.5", 80, false, NotServing),
            ],
            [
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                case("external to LB", ext, "1.2.3.4", 80, "REJECT", false),
            ],
        );
    }

    /// TestInternalExternalMasquerade: the three Services (Cluster; eTP Local; iTP Local),
    /// the 30 shared flows and the four sub-tests' overrides (base, no
    /// LocalTrafficDetector, masqueradeAll, both).
    #[test]
    fn upstream_test_internal_external_masquerade() {
        let lb = |ns: &str, cip: &str, np: u16, hc: u16, lbip: &str, n: u8| {
            let a = leak(format!("10.180.0.{n}"));
            let b = leak(format!("10.180.1.{n}"));
            let mut s = svc(
                ns,
                "p80",
                Proto::Tcp,
                cip,
                80,
                Some(np),
                &ready(&[(a, 80, true), (b, 80, false)]),
            );
            s.health_check_node_port = Some(hc);
            s.load_balancer_ips = vec![ip(lbip)];
            s
        };
        let svc1 = lb("ns1/svc1", "172.30.0.41", 3001, 30001, "1.2.3.4", 1);
        let mut svc2 = lb("ns2/svc2", "172.30.0.42", 3002, 30002, "5.6.7.8", 2);
        svc2.external_policy_local = true;
        let mut svc3 = lb("ns3/svc3", "172.30.0.43", 3003, 30003, "9.10.11.12", 3);
        svc3.internal_policy_local = true;
        let ports = [svc1, svc2, svc3];

        let (pod, node, lo, ext) = ("10.0.0.2", TEST_NODE_IP, "127.0.0.1", TEST_EXTERNAL_CLIENT);
        let s1 = "10.180.0.1:80, 10.180.1.1:80";
        let s2 = "10.180.0.2:80, 10.180.1.2:80";
        let s3 = "10.180.0.3:80, 10.180.1.3:80";
        let flows = [
            case("pod to ClusterIP", pod, "172.30.0.41", 80, s1, false),
            case("pod to NodePort", pod, node, 3001, s1, true),
            case("pod to LB", pod, "1.2.3.4", 80, s1, true),
            case("node to ClusterIP", node, "172.30.0.41", 80, s1, true),
            case("node to NodePort", node, node, 3001, s1, true),
            case("localhost to NodePort", lo, lo, 3001, s1, true),
            case("node to LB", node, "1.2.3.4", 80, s1, true),
            case("external to ClusterIP", ext, "172.30.0.41", 80, s1, true),
            case("external to NodePort", ext, node, 3001, s1, true),
            case("external to LB", ext, "1.2.3.4", 80, s1, true),
            case(
                "pod to ClusterIP with eTP:Local",
                pod,
                "172.30.0.42",
                80,
                s2,
                false,
            ),
            case("pod to NodePort with eTP:Local", pod, node, 3002, s2, false),
            case("pod to LB with eTP:Local", pod, "5.6.7.8", 80, s2, false),
            case(
                "node to ClusterIP with eTP:Local",
                node,
                "172.30.0.42",
                80,
                s2,
                true,
            ),
            // upstream sends this one to svc1's NodePort (3001)
            case(
                "node to NodePort with eTP:Local",
                node,
                node,
                3001,
                s1,
                true,
            ),
            case(
                "localhost to NodePort with eTP:Local",
                lo,
                lo,
                3002,
                s2,
                true,
            ),
            case("node to LB with eTP:Local", node, "5.6.7.8", 80, s2, true),
            case(
                "external to ClusterIP with eTP:Local",
                ext,
                "172.30.0.42",
                80,
                s2,
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
            case("pod to NodePort with iTP:Local", pod, node, 3003, s3, true),
            case("pod to LB with iTP:Local", pod, "9.10.11.12", 80, s3, true),
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
                s3,
                true,
            ),
            case(
                "localhost to NodePort with iTP:Local",
                lo,
                lo,
                3003,
                s3,
                true,
            ),
            case(
                "node to LB with iTP:Local",
                node,
                "9.10.11.12",
                80,
                s3,
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
                s3,
                true,
            ),
            case(
                "external to LB with iTP:Local",
                ext,
                "9.10.11.12",
                80,
                s3,
                true,
            ),
        ];
        assert_eq!(flows.len(), 30);

        type Overrides = &'static [(&'static str, Option<&'static str>, Option<bool>)];
        let no_detector: Overrides = &[
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
        let masquerade_all: Overrides = &[
            ("pod to ClusterIP", None, Some(true)),
            ("pod to ClusterIP with eTP:Local", None, Some(true)),
            ("pod to ClusterIP with iTP:Local", None, Some(true)),
        ];
        let both: Overrides = &[
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
        let subs: [(&str, bool, bool, Overrides); 4] = [
            ("base", false, true, &[]),
            ("no LocalTrafficDetector", false, false, no_detector),
            ("masqueradeAll", true, true, masquerade_all),
            ("masqueradeAll, no LocalTrafficDetector", true, false, both),
        ];
        for (name, masq_all, detector, overrides) in subs {
            let mut cfg = fake_proxier();
            cfg.masquerade_all = masq_all;
            if !detector {
                cfg.local_cidr = None;
            }
            let mut applied = 0;
            let cases: Vec<Case> = flows
                .iter()
                .map(|f| {
                    let mut c = case(f.name, f.src, f.dst, f.dport, f.output, f.masq);
                    if let Some((_, out, masq)) = overrides.iter().find(|o| o.0 == f.name) {
                        applied += 1;
                        if let Some(o) = out {
                            assert_ne!(c.output, *o, "override equals base");
                            c.output = *o;
                        }
                        if let Some(m) = masq {
                            assert_ne!(c.masq, *m, "override equals base");
                            c.masq = *m;
                        }
                    }
                    c.name = leak(format!("{name}: {}", f.name));
                    c
                })
                .collect();
            assert_eq!(applied, overrides.len(), "{name}: unmatched override");
            run_rendered(&ports, &cfg, &cases);
        }
    }
}

mod older {
    //! The proxier_test.go revision before the current one (runPacketFlowTests took a single
    //! `testNodeIP`, kube-proxy had no nfacct counters; fixtures in
    //! `fixtures/iptables/upstream/older/`): its tests pinned each rendered dump with
    //! `assertIPTablesRulesEqual` as well as running packet flows. Here the renderer must
    //! reproduce each of those expected dumps, and the flows the current revision dropped
    //! (TestNodePort, TestNonLocalExternalIPs, TestOnlyLocalNodePorts*) run on it.
    use super::rendered::*;
    use super::*;
    use kdiag_probes::iptables::render::{render_iptables, ProxierConfig};
    use kdiag_probes::nft::render::NftServicePort;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                "../fixtures/iptables/upstream/older/",
                $name,
                ".iptables-save"
            ))
        };
    }

    /// That revision's `NewFakeProxier`: no nfacct counters.
    fn fake_proxier_older() -> ProxierConfig {
        ProxierConfig {
            nfacct: false,
            ..fake_proxier()
        }
    }

    /// The renderer reproduces `want` (kube-proxy's expected iptables-restore input) for
    /// `ports`, compared as upstream compares; then `cases` run on the rendered dump.
    fn pinned(want: &str, ports: &[NftServicePort], cfg: &ProxierConfig, cases: &[Case]) {
        let rendered = render_iptables(ports, cfg);
        assert_same_rules(cases.first().map_or("", |c| c.name), want, &rendered);
        run_rendered(ports, cfg, cases);
    }

    /// TestLoadBalancer (its expected dump; the flows are the current revision's).
    #[test]
    fn older_test_load_balancer() {
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &ready(&[("10.180.0.1", 80, false)]),
        );
        s.load_balancer_ips = vec![ip("1.2.3.4"), ip("5.6.7.8")];
        s.source_ranges = vec![cidr("192.168.0.0/24"), cidr("203.0.113.0/25")];
        pinned(
            fixture!("load-balancer"),
            &[s],
            &fake_proxier_older(),
            &[case(
                "same node to LB1, SNATted to LB1 (implicitly allowed)",
                "1.2.3.4",
                "1.2.3.4",
                80,
                "10.180.0.1:80",
                true,
            )],
        );
    }

    /// TestNodePort.
    #[test]
    fn older_test_node_port() {
        let s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            Some(3001),
            &ready(&[("10.180.0.1", 80, false)]),
        );
        let ep = "10.180.0.1:80";
        pinned(
            fixture!("node-port"),
            &[s],
            &fake_proxier_older(),
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
                    "node to nodePort",
                    TEST_NODE_IP,
                    TEST_NODE_IP,
                    3001,
                    ep,
                    true,
                ),
                case(
                    "localhost to nodePort gets masqueraded",
                    "127.0.0.1",
                    "127.0.0.1",
                    3001,
                    ep,
                    true,
                ),
            ],
        );
    }

    /// TestHealthCheckNodePort (`--nodeport-addresses 127.0.0.0/8`).
    #[test]
    fn older_test_health_check_node_port() {
        let mut cfg = fake_proxier_older();
        cfg.nodeport_ips = Some(nodeport_addresses(&["127.0.0.0/8"]));
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.42",
            80,
            Some(3001),
            &[],
        );
        s.health_check_node_port = Some(30000);
        s.external_policy_local = true;
        pinned(
            fixture!("health-check-node-port"),
            &[s],
            &cfg,
            &[case(
                "firewall accepts HealthCheckNodePort",
                "1.2.3.4",
                TEST_NODE_IP,
                30000,
                "ACCEPT",
                false,
            )],
        );
    }

    /// TestExternalTrafficPolicyLocal.
    #[test]
    fn older_test_external_traffic_policy_local() {
        let local = "10.180.2.1:80";
        pinned(
            fixture!("external-traffic-policy-local"),
            &[etp_service(true)],
            &fake_proxier_older(),
            &[
                case(
                    "pod to cluster IP hits both endpoints",
                    "10.0.0.2",
                    "172.30.0.41",
                    80,
                    "10.180.0.1:80, 10.180.2.1:80",
                    false,
                ),
                case(
                    "external to external IP hits only local endpoint, unmasqueraded",
                    TEST_EXTERNAL_CLIENT,
                    "192.168.99.11",
                    80,
                    local,
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

    /// TestNonLocalExternalIPs.
    #[test]
    fn older_test_non_local_external_ips() {
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            "172.30.0.41",
            80,
            None,
            &ready(&[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)]),
        );
        s.external_ips = vec![ip("192.168.99.11")];
        let both = "10.180.0.1:80, 10.180.2.1:80";
        pinned(
            fixture!("non-local-external-ips"),
            &[s],
            &fake_proxier_older(),
            &[
                case(
                    "pod to cluster IP",
                    "10.0.0.2",
                    "172.30.0.41",
                    80,
                    both,
                    false,
                ),
                case(
                    "external to external IP",
                    TEST_EXTERNAL_CLIENT,
                    "192.168.99.11",
                    80,
                    both,
                    true,
                ),
            ],
        );
    }

    /// The NodePort Service with `externalTrafficPolicy: Local` of the localhost-NodePort
    /// tests (no local-traffic detector), IPv4 or IPv6.
    fn localhost_service(v6: bool) -> NftServicePort {
        let (cip, a, b) = if v6 {
            ("fd00:ab34::20", "ff06::c1", "ff06::c2")
        } else {
            ("10.69.0.10", "10.244.0.1", "10.244.2.1")
        };
        let mut s = svc(
            "ns1/svc1",
            "p80",
            Proto::Tcp,
            cip,
            80,
            Some(30001),
            &ready(&[(a, 80, false), (b, 80, true)]),
        );
        s.external_policy_local = true;
        s
    }

    /// TestEnableLocalhostNodePortsIPv4/IPv6, TestDisableLocalhostNodePortsIPv4/IPv6,
    /// TestDisableLocalhostNodePortsIPv4WithNodeAddress (dumps only; they have no flows).
    #[test]
    fn older_test_enable_disable_localhost_node_ports() {
        /// (test, expected dump, IPv6, localhost NodePorts, --nodeport-addresses)
        type Sub = (
            &'static str,
            &'static str,
            bool,
            bool,
            Option<&'static [&'static str]>,
        );
        let subs: [Sub; 5] = [
            (
                "TestEnableLocalhostNodePortsIPv4",
                fixture!("enable-localhost-nodeports-ipv4"),
                false,
                true,
                None,
            ),
            (
                "TestDisableLocalhostNodePortsIPv4",
                fixture!("disable-localhost-nodeports-ipv4"),
                false,
                false,
                None,
            ),
            (
                "TestDisableLocalhostNodePortsIPv4WithNodeAddress",
                fixture!("disable-localhost-nodeports-ipv4-with-node-address"),
                false,
                false,
                Some(&["127.0.0.0/8"]),
            ),
            (
                "TestEnableLocalhostNodePortsIPv6",
                fixture!("enable-localhost-nodeports-ipv6"),
                true,
                true,
                None,
            ),
            (
                "TestDisableLocalhostNodePortsIPv6",
                fixture!("disable-localhost-nodeports-ipv6"),
                true,
                false,
                None,
            ),
        ];
        for (name, want, v6, localhost, addrs) in subs {
            let mut cfg = if v6 {
                fake_proxier_v6()
            } else {
                fake_proxier()
            };
            cfg.nfacct = false;
            cfg.local_cidr = None;
            cfg.localhost_nodeports = localhost;
            cfg.nodeport_ips = addrs.map(nodeport_addresses);
            let rendered = render_iptables(&[localhost_service(v6)], &cfg);
            assert_same_rules(name, want, &rendered);
        }
    }

    /// TestOnlyLocalNodePortsNoClusterCIDR and TestOnlyLocalNodePorts
    /// (`--nodeport-addresses 192.168.0.0/24,2001:db8::/64`, no localhost NodePorts), with
    /// their shared flows (`onlyLocalNodePorts`).
    #[test]
    fn older_test_only_local_node_ports() {
        for (want, detector) in [
            (fixture!("only-local-node-ports-no-cluster-cidr"), false),
            (fixture!("only-local-node-ports"), true),
        ] {
            let mut cfg = fake_proxier_older();
            cfg.localhost_nodeports = false;
            cfg.nodeport_ips = Some(nodeport_addresses(&["192.168.0.0/24", "2001:db8::/64"]));
            if !detector {
                cfg.local_cidr = None;
            }
            let mut s = svc(
                "ns1/svc1",
                "p80",
                Proto::Tcp,
                "172.30.0.41",
                80,
                Some(3001),
                &ready(&[("10.180.0.1", 80, false), ("10.180.2.1", 80, true)]),
            );
            s.external_policy_local = true;
            let both = "10.180.0.1:80, 10.180.2.1:80";
            let local = "10.180.2.1:80";
            let mut cases = vec![
                case(
                    "pod to cluster IP hit both endpoints",
                    "10.0.0.2",
                    "172.30.0.41",
                    80,
                    both,
                    false,
                ),
                case(
                    "external to NodePort hits only local endpoint",
                    TEST_EXTERNAL_CLIENT,
                    TEST_NODE_IP,
                    3001,
                    local,
                    false,
                ),
                case(
                    "pod to localhost doesn't work because localhost is not in nodePortAddresses",
                    "10.0.0.2",
                    "127.0.0.1",
                    3001,
                    "",
                    false,
                ),
            ];
            cases.push(if detector {
                case(
                    "pod to NodePort hits both endpoints",
                    "10.0.0.2",
                    TEST_NODE_IP,
                    3001,
                    both,
                    false,
                )
            } else {
                case(
                    "pod to NodePort hits only local endpoint",
                    "10.0.0.2",
                    TEST_NODE_IP,
                    3001,
                    local,
                    false,
                )
            });
            pinned(want, &[s], &cfg, &cases);
        }
    }

    /// TestInternalTrafficPolicyE2E: its three sub-tests' dumps and flows.
    #[test]
    fn older_test_internal_traffic_policy_e2e() {
        let subs = [
            (
                fixture!("internal-traffic-policy-e2e-cluster"),
                false,
                [true, false, false],
                case(
                    "pod to ClusterIP hits all endpoints",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80",
                    false,
                ),
            ),
            (
                fixture!("internal-traffic-policy-e2e-local"),
                true,
                [true, false, false],
                case(
                    "pod to ClusterIP hits only local endpoint",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "10.0.1.1:80",
                    false,
                ),
            ),
            (
                fixture!("internal-traffic-policy-e2e-no-local"),
                true,
                [false, false, false],
                case("no endpoints", "10.0.0.2", "172.30.1.1", 80, "DROP", false),
            ),
        ];
        for (want, local, on_node, flow) in subs {
            let eps: Vec<(&str, u16, bool)> = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
                .iter()
                .zip(on_node)
                .map(|(a, l)| (*a, 80, l))
                .collect();
            let mut s = svc(
                "ns1/svc1",
                "",
                Proto::Tcp,
                "172.30.1.1",
                80,
                None,
                &ready(&eps),
            );
            s.internal_policy_local = local;
            pinned(want, &[s], &fake_proxier_older(), &[flow]);
        }
    }

    /// TestTerminatingEndpointsTrafficPolicyCluster "ready endpoints exist" and
    /// TestTerminatingEndpointsTrafficPolicyLocal "no usable endpoints on any node": that
    /// revision's Service had ClientIP session affinity, so its dumps pin the `recent` rules.
    #[test]
    fn older_test_terminating_endpoints_with_affinity() {
        use Ep::*;
        let mut cluster = terminating_service(
            false,
            &[
                ("10.0.1.1", 80, true, Ready),
                ("10.0.1.2", 80, true, Ready),
                ("10.0.1.3", 80, false, ServingTerminating),
                ("10.0.1.4", 80, false, NotServing),
                ("10.0.1.5", 80, false, Ready),
            ],
        );
        cluster.affinity_timeout = Some(10800);
        let three = "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80";
        pinned(
            fixture!("terminating-endpoints-cluster-ready"),
            &[cluster],
            &fake_proxier_older(),
            &[
                case(
                    "pod to clusterIP",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    three,
                    false,
                ),
                case(
                    "external to LB",
                    TEST_EXTERNAL_CLIENT,
                    "1.2.3.4",
                    80,
                    three,
                    true,
                ),
            ],
        );
        let mut local = terminating_service(
            true,
            &[
                ("10.0.1.5", 80, true, NotServing),
                ("10.0.1.5", 80, false, NotServing),
            ],
        );
        local.affinity_timeout = Some(10800);
        pinned(
            fixture!("terminating-endpoints-local-no-usable"),
            &[local],
            &fake_proxier_older(),
            &[
                case(
                    "pod to clusterIP, no usable endpoints",
                    "10.0.0.2",
                    "172.30.1.1",
                    80,
                    "REJECT",
                    false,
                ),
                case(
                    "external to LB, no usable endpoints",
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
