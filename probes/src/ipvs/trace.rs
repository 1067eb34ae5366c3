//! Which real servers a new connection reaches through kube-proxy's IPVS table.
//!
//! The packet's (protocol, destination, port) selects the virtual service (kube-proxy binds
//! every VIP to the `kube-ipvs0` dummy interface, so IPVS sees it on the input path). Every
//! real server with a weight above 0 can take a new connection; its probability is its share
//! of the total weight (exact for `rr`/`wrr` over many connections, the long-run share for
//! the connection-count schedulers; `sh`/`dh`/`mh` hash the addresses and are noted). No
//! real server with weight is IPVS's "no destination available": `ip_vs_leave` answers ICMP
//! port unreachable (for TCP too) and drops the packet, so the client sees a refusal: REJECT.
//!
//! Masquerading in IPVS mode is done by iptables (`KUBE-POSTROUTING` with the
//! `KUBE-LOOP-BACK` and `KUBE-CLUSTER-IP` ipsets), which an IPVS dump does not contain: the
//! result says `masquerade: false` and notes it.

use super::model::{Forward, IpvsTable, ServiceKey};
use crate::trace::{join_host_port, NodeContext, Outcome, Packet, TraceResult, Verdict, WalkStep};

/// Traces `pkt` through the IPVS `table` (the node context is not needed: IPVS matches on
/// the virtual service alone).
pub fn trace(table: &IpvsTable, pkt: &Packet, _ctx: &NodeContext) -> TraceResult {
    let mut notes = vec![
        "IPVS mode masquerades with iptables (KUBE-POSTROUTING, ipsets), which is not in an IPVS dump: masquerade is not evaluated".to_string(),
    ];
    let key = ServiceKey::Addr(pkt.proto, pkt.dst, pkt.dport);
    let Some(vs) = table.service(&key) else {
        if table
            .services
            .iter()
            .any(|s| matches!(s.key, ServiceKey::Fwmark(_)))
        {
            notes.push(
                "firewall-mark virtual services (FWM) depend on iptables marks, which are not evaluated"
                    .into(),
            );
        }
        return TraceResult {
            verdict: Verdict::NoMatch,
            endpoints: Vec::new(),
            masquerade: false,
            outcomes: vec![Outcome {
                verdict: Verdict::NoMatch,
                endpoint: None,
                probability: 1.0,
                masquerade: false,
                rule: None,
                comment: None,
            }],
            walk: Vec::new(),
            unknown: Vec::new(),
            notes,
        };
    };
    let chain = vs.text.clone();
    let mut walk = vec![WalkStep {
        table: "ipvs".into(),
        chain: chain.clone(),
        rule: vs.text.clone(),
        line: vs.line,
        depth: 0,
        probability: 1.0,
        notes: Vec::new(),
    }];
    if let Some(p) = vs.persistent {
        notes.push(format!(
            "session affinity (persistent {p} s): a client that connected recently goes back to the same real server"
        ));
    }
    if matches!(vs.scheduler.as_str(), "sh" | "dh" | "mh") {
        notes.push(format!(
            "scheduler {} hashes the addresses: one real server is chosen per client; the shares below are over clients",
            vs.scheduler
        ));
    }
    let total: u64 = vs.reals.iter().map(|r| u64::from(r.weight)).sum();
    let mut outcomes = Vec::new();
    let mut endpoints = Vec::new();
    if total == 0 {
        notes.push(if vs.reals.is_empty() {
            "the virtual service has no real servers: IPVS has no destination, answers ICMP port unreachable and drops the packet".to_string()
        } else {
            "every real server has weight 0 (terminating): IPVS has no destination for a new connection, answers ICMP port unreachable and drops the packet".to_string()
        });
        outcomes.push(Outcome {
            verdict: Verdict::Reject,
            endpoint: None,
            probability: 1.0,
            masquerade: false,
            rule: Some(vs.text.clone()),
            comment: None,
        });
    }
    for r in vs.reals.iter().filter(|r| r.weight > 0) {
        let p = f64::from(r.weight) / total as f64;
        let ep = join_host_port(r.addr, r.port);
        let mut n = vec![format!("weight {} of {total}", r.weight)];
        if r.forward != Forward::Masq {
            n.push(format!(
                "forwarding {:?}: the destination address is not rewritten",
                r.forward
            ));
        }
        walk.push(WalkStep {
            table: "ipvs".into(),
            chain: chain.clone(),
            rule: r.text.clone(),
            line: r.line,
            depth: 1,
            probability: p,
            notes: n,
        });
        if !endpoints.contains(&ep) {
            endpoints.push(ep.clone());
        }
        outcomes.push(Outcome {
            verdict: Verdict::Dnat,
            endpoint: Some(ep),
            probability: p,
            masquerade: false,
            rule: Some(r.text.clone()),
            comment: None,
        });
    }
    TraceResult {
        verdict: if total == 0 {
            Verdict::Reject
        } else {
            Verdict::Dnat
        },
        endpoints,
        masquerade: false,
        outcomes,
        walk,
        unknown: Vec::new(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::parse_ipvs;
    use crate::trace::Proto;

    const LIST: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          5
  -> 10.244.0.3:53                Masq    3      0          5
TCP  10.96.0.20:80 rr persistent 10800
  -> 10.244.1.5:8080              Masq    0      0          2
TCP  10.96.0.30:80 rr
";

    fn pkt(dst: &str, dport: u16, proto: Proto) -> Packet {
        Packet {
            src: "10.244.0.9".parse().unwrap(),
            dst: dst.parse().unwrap(),
            dport,
            proto,
        }
    }

    #[test]
    fn weights_give_probabilities() {
        let t = parse_ipvs(LIST).unwrap();
        let r = trace(
            &t,
            &pkt("10.96.0.10", 53, Proto::Udp),
            &NodeContext::default(),
        );
        assert_eq!(r.verdict, Verdict::Dnat);
        assert_eq!(
            r.endpoint_probabilities(),
            vec![
                ("10.244.0.2:53".to_string(), 0.25),
                ("10.244.0.3:53".to_string(), 0.75)
            ]
        );
        assert_eq!(r.walk[0].line, 4);
        assert_eq!(r.walk[2].rule, "-> 10.244.0.3:53 Masq 3 0 5");
        // TCP on the UDP port is another virtual service: none
        let r = trace(
            &t,
            &pkt("10.96.0.10", 53, Proto::Tcp),
            &NodeContext::default(),
        );
        assert_eq!(r.verdict, Verdict::NoMatch);
    }

    #[test]
    fn no_usable_real_server_rejects() {
        let t = parse_ipvs(LIST).unwrap();
        for dst in ["10.96.0.20", "10.96.0.30"] {
            let r = trace(&t, &pkt(dst, 80, Proto::Tcp), &NodeContext::default());
            assert_eq!(r.verdict, Verdict::Reject, "{dst}");
            assert!(r.endpoints.is_empty());
            let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
        let r = trace(
            &t,
            &pkt("10.96.0.20", 80, Proto::Tcp),
            &NodeContext::default(),
        );
        assert!(r.notes.iter().any(|n| n.contains("persistent 10800")));
    }
}
