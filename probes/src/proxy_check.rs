//! Cross-checks kube-proxy's programmed rules against the cluster state, for every proxy mode.
//! Pure.
//!
//! For every ClusterIP Service port the check traces one packet with the mode's own tracer
//! (the same one `kdiag trace` uses, handed in as a closure) and compares the endpoints the
//! rules reach with the ready endpoints the API lists: no rule at all is
//! `proxy.rules-missing`; a different set, or a REJECT/DROP while the API lists endpoints, is
//! `proxy.rules-stale`. A Service the API lists without endpoints whose rules still send
//! traffic somewhere is `proxy.rules-stale` too. Mode-specific checks (iptables' backend
//! split) live beside each mode's parser and call this one.

use crate::cluster::{ClusterState, Service, ServicePort};
use crate::finding::{Code, Evidence, Finding};
use crate::trace::{join_host_port, NodeContext, Packet, Proto, TraceResult, Verdict};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The ready endpoints (`IP:PORT`) the API lists for one Service port (only those on
/// `only_node` when given).
fn api_endpoints(
    state: &ClusterState,
    svc: &Service,
    sp: &ServicePort,
    only_node: Option<&str>,
) -> BTreeSet<String> {
    let Some(eps) = state.endpoints_of(&svc.metadata.namespace, &svc.metadata.name) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for subset in &eps.subsets {
        let port = subset
            .ports
            .iter()
            .find(|p| p.name == sp.name && p.protocol.eq_ignore_ascii_case(&sp.protocol))
            .or_else(|| (subset.ports.len() == 1).then(|| &subset.ports[0]));
        let Some(port) = port else { continue };
        for a in &subset.addresses {
            if only_node.is_some_and(|n| a.node_name.as_deref() != Some(n)) {
                continue;
            }
            if let Ok(ip) = a.ip.parse::<IpAddr>() {
                out.insert(join_host_port(ip, port.port));
            }
        }
    }
    out
}

/// A plausible client for ClusterIP traffic: a pod of the cluster (so the packet takes the
/// pod path through nat PREROUTING), else the node itself.
fn client(state: &ClusterState, ctx: &NodeContext, dst: IpAddr) -> Option<IpAddr> {
    state
        .pods
        .iter()
        .filter_map(|p| p.status.pod_ip.as_deref())
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| *ip != dst && ip.is_ipv4() == dst.is_ipv4())
        .or_else(|| {
            ctx.node_ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == dst.is_ipv4())
        })
}

/// Cross-checks one mode's rules against `state`: `mode` names the rules in the findings
/// (`iptables`, `nftables`, `ipvs`), `trace` traces one packet through them.
pub fn cross_check(
    state: &ClusterState,
    ctx: &NodeContext,
    mode: &str,
    trace: impl Fn(&Packet) -> TraceResult,
) -> Vec<Finding> {
    let mut out = Vec::new();
    // The node these rules are on (internalTrafficPolicy: Local routes to its endpoints only).
    let this_node = state
        .nodes
        .iter()
        .find(|n| n.internal_ip().is_some_and(|ip| ctx.node_ips.contains(&ip)))
        .map(|n| n.metadata.name.as_str());
    for svc in &state.services {
        let Some(vip) = svc.cluster_ip() else {
            continue;
        };
        let only_node = match (svc.internal_local(), this_node) {
            (false, _) => None,
            (true, Some(n)) => Some(n),
            // which endpoints are local is unknown: judging would be a guess
            (true, None) => continue,
        };
        for sp in &svc.spec.ports {
            let Ok(proto) = sp.protocol.parse::<Proto>() else {
                continue;
            };
            let Some(src) = client(state, ctx, vip) else {
                continue;
            };
            let pkt = Packet {
                src,
                dst: vip,
                dport: sp.port,
                proto,
            };
            let res = trace(&pkt);
            let api = api_endpoints(state, svc, sp, only_node);
            if let Some(f) = judge(mode, svc, sp, &pkt, &res, &api) {
                out.push(f);
            }
        }
    }
    out
}

/// Folds findings that say the same thing (code and summary) about different rule sources
/// (modes, nodes) into one, keeping every distinct piece of evidence: a lab or a node with
/// iptables, nftables and IPVS rules for the same stale Service is one finding, with a
/// trace from each source. Order is kept (first occurrence).
pub fn merge_alike(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings {
        match out
            .iter_mut()
            .find(|o| o.code == f.code && o.summary == f.summary)
        {
            Some(o) => {
                for e in f.evidence {
                    if !o.evidence.contains(&e) {
                        o.evidence.push(e);
                    }
                }
            }
            None => out.push(f),
        }
    }
    out
}

/// Rules that disagree with the API explain Service VIPs that fail while their endpoints
/// answer: an `svc.vip-unreachable` finding whose every failing VIP (`service VIP IP:PORT`
/// evidence) belongs to a Service port with a `proxy.rules-stale` or `proxy.rules-missing`
/// finding is folded into those findings (its VIP evidence goes with them), so the report
/// names the cause once instead of blaming kube-proxy's data path in general.
pub fn explain_vip_failures(findings: &mut Vec<Finding>) {
    let is_rules = |f: &Finding| matches!(f.code, Code::ProxyRulesStale | Code::ProxyRulesMissing);
    let mut i = 0;
    while i < findings.len() {
        if findings[i].code != Code::SvcVipUnreachable {
            i += 1;
            continue;
        }
        let vips: Vec<(String, Evidence)> = findings[i]
            .evidence
            .iter()
            .filter_map(|e| {
                e.source
                    .strip_prefix("service VIP ")
                    .map(|v| (format!("({v}/"), e.clone()))
            })
            .collect();
        let owners: Vec<Option<usize>> = vips
            .iter()
            .map(|(needle, _)| {
                findings
                    .iter()
                    .position(|f| is_rules(f) && f.summary.contains(needle.as_str()))
            })
            .collect();
        if vips.is_empty() || owners.iter().any(Option::is_none) {
            i += 1;
            continue;
        }
        for ((_, e), j) in vips.into_iter().zip(owners.into_iter().flatten()) {
            if !findings[j].evidence.contains(&e) {
                findings[j].evidence.push(e);
            }
        }
        findings.remove(i);
    }
}

/// The finding for one Service port, if its rules disagree with the API.
fn judge(
    mode: &str,
    svc: &Service,
    sp: &ServicePort,
    pkt: &Packet,
    res: &TraceResult,
    api: &BTreeSet<String>,
) -> Option<Finding> {
    let name = format!(
        "{}/{}:{}",
        svc.metadata.namespace,
        svc.metadata.name,
        sp.name.as_deref().unwrap_or("")
    );
    let target = format!("{}/{}", join_host_port(pkt.dst, pkt.dport), pkt.proto);
    let walked: String = res
        .walk
        .iter()
        .rev()
        .find(|w| !w.rule.is_empty())
        .map(|w| format!("{}/{} line {}: {}", w.table, w.chain, w.line, w.rule))
        .unwrap_or_else(|| format!("no kube-proxy {mode} rule matched"));
    let traced = format!("trace ({mode}) {}", pkt_text(pkt));
    match res.verdict {
        Verdict::NoMatch | Verdict::Accept if !api.is_empty() => Some(
            Finding::new(
                Code::ProxyRulesMissing,
                format!(
                    "Service {name} ({target}) has {} ready endpoint(s) but kube-proxy \
                     programmed no rule for it",
                    api.len()
                ),
            )
            .evidence(format!("endpoints {name}"), join(api))
            .evidence(traced, walked)
            .remediation(
                "kube-proxy is not syncing on this node: check it runs \
                 (`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide`), its logs and \
                 healthz (:10256); restart it",
            ),
        ),
        Verdict::Reject | Verdict::Drop if !api.is_empty() => Some(
            Finding::new(
                Code::ProxyRulesStale,
                format!(
                    "kube-proxy's rules {} {name} ({target}) as having no endpoints, \
                     but the API lists {} ready",
                    if res.verdict == Verdict::Reject {
                        "reject"
                    } else {
                        "drop"
                    },
                    api.len()
                ),
            )
            .evidence(format!("endpoints {name}"), join(api))
            .evidence(traced, walked)
            .remediation(
                "kube-proxy's view is out of date: check its logs for sync errors \
                 and its connection to the API server; restart it",
            ),
        ),
        Verdict::Dnat => {
            let programmed: BTreeSet<String> = res.endpoints.iter().cloned().collect();
            if &programmed == api {
                return None;
            }
            let gone: Vec<&String> = programmed.difference(api).collect();
            let new: Vec<&String> = api.difference(&programmed).collect();
            let mut f = Finding::new(
                Code::ProxyRulesStale,
                format!(
                    "kube-proxy's rules for {name} ({target}) disagree with the API: {} \
                     endpoint(s) the API no longer lists, {} it lists that the rules miss",
                    gone.len(),
                    new.len()
                ),
            )
            .evidence(format!("rules {name}"), join(&programmed))
            .evidence(format!("endpoints {name}"), join(api));
            if !gone.is_empty() {
                f = f.evidence(
                    "stale",
                    format!("rules still send new connections to {}", join_refs(&gone)),
                );
            }
            Some(f.evidence(traced, walked).remediation(
                "kube-proxy stopped syncing (traffic still goes to endpoints that are gone): check \
                 its logs and its connection to the API server; restart it",
            ))
        }
        _ => None,
    }
}

fn pkt_text(p: &Packet) -> String {
    format!(
        "{} {} -> {}",
        p.proto.as_str(),
        p.src,
        join_host_port(p.dst, p.dport)
    )
}

fn join(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn join_refs(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Outcome;

    const STATE: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Service","metadata":{"name":"web","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.20","selector":{"app":"web"},
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"kind":"Endpoints","metadata":{"name":"web","namespace":"default"},
  "subsets":[{"addresses":[{"ip":"10.244.1.5"},{"ip":"10.244.2.6"}],
              "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]},
 {"kind":"Service","metadata":{"name":"empty","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.21","selector":{"app":"none"},
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"kind":"Pod","metadata":{"name":"client","namespace":"default"},"status":{"podIP":"10.244.1.9"}}
]}"#;

    /// A fake tracer: `dst -> (verdict, endpoints)`.
    fn fake(
        table: Vec<(&'static str, Verdict, Vec<&'static str>)>,
    ) -> impl Fn(&Packet) -> TraceResult {
        move |p: &Packet| {
            let (v, eps) = table
                .iter()
                .find(|(d, _, _)| d.parse::<IpAddr>().ok() == Some(p.dst))
                .map(|(_, v, e)| (*v, e.clone()))
                .unwrap_or((Verdict::NoMatch, vec![]));
            let outcomes = if eps.is_empty() {
                vec![Outcome {
                    verdict: v,
                    endpoint: None,
                    probability: 1.0,
                    masquerade: false,
                    rule: None,
                    comment: None,
                }]
            } else {
                eps.iter()
                    .map(|e| Outcome {
                        verdict: v,
                        endpoint: Some(e.to_string()),
                        probability: 1.0 / eps.len() as f64,
                        masquerade: false,
                        rule: None,
                        comment: None,
                    })
                    .collect()
            };
            TraceResult::from_outcomes(outcomes, vec![], vec![], vec![])
        }
    }

    fn check(table: Vec<(&'static str, Verdict, Vec<&'static str>)>) -> Vec<Finding> {
        let state = ClusterState::from_json(STATE).unwrap();
        cross_check(&state, &NodeContext::default(), "test", fake(table))
    }

    #[test]
    fn agreeing_rules_are_quiet() {
        let f = check(vec![
            (
                "10.96.0.20",
                Verdict::Dnat,
                vec!["10.244.2.6:8080", "10.244.1.5:8080"],
            ),
            ("10.96.0.21", Verdict::Reject, vec![]),
        ]);
        assert!(f.is_empty(), "{f:?}");
        // no rule for a Service without endpoints is not "missing" either
        let f = check(vec![(
            "10.96.0.20",
            Verdict::Dnat,
            vec!["10.244.2.6:8080", "10.244.1.5:8080"],
        )]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn each_disagreement_has_its_code() {
        let f = check(vec![]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::ProxyRulesMissing);
        assert!(
            f[0].summary.contains("programmed no rule"),
            "{}",
            f[0].summary
        );

        let f = check(vec![("10.96.0.20", Verdict::Drop, vec![])]);
        assert_eq!(f[0].code, Code::ProxyRulesStale);
        assert!(
            f[0].summary.contains("rules drop default/web:http"),
            "{}",
            f[0].summary
        );

        let f = check(vec![
            (
                "10.96.0.20",
                Verdict::Dnat,
                vec!["10.244.1.5:8080", "10.244.3.7:8080"],
            ),
            ("10.96.0.21", Verdict::Dnat, vec!["10.244.3.8:8080"]),
        ]);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.code == Code::ProxyRulesStale));
        assert!(f[0]
            .summary
            .contains("1 endpoint(s) the API no longer lists, 1 it lists"));
        let stale = f[0].evidence.iter().find(|e| e.source == "stale").unwrap();
        assert_eq!(
            stale.detail,
            "rules still send new connections to 10.244.3.7:8080"
        );
        // the API lists none for `empty`, the rules still send there
        assert!(
            f[1].summary.contains("default/empty:http"),
            "{}",
            f[1].summary
        );
    }

    #[test]
    fn internal_policy_local_is_judged_against_this_nodes_endpoints() {
        let state = ClusterState::from_json(
            r#"{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"192.168.0.2"}]}},
 {"kind":"Service","metadata":{"name":"web","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.20","internalTrafficPolicy":"Local","selector":{"app":"web"},
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"kind":"Endpoints","metadata":{"name":"web","namespace":"default"},
  "subsets":[{"addresses":[{"ip":"10.244.1.5","nodeName":"n1"},{"ip":"10.244.2.6","nodeName":"n2"}],
              "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]},
 {"kind":"Pod","metadata":{"name":"client","namespace":"default"},"status":{"podIP":"10.244.1.9"}}
]}"#,
        )
        .unwrap();
        let on_n1 = NodeContext {
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        };
        // kube-proxy on n1 sends the ClusterIP to n1's endpoint only: agreement
        let f = cross_check(
            &state,
            &on_n1,
            "test",
            fake(vec![("10.96.0.20", Verdict::Dnat, vec!["10.244.1.5:8080"])]),
        );
        assert!(f.is_empty(), "{f:?}");
        // rules that ignore the policy reach another node's endpoint: stale
        let f = cross_check(
            &state,
            &on_n1,
            "test",
            fake(vec![(
                "10.96.0.20",
                Verdict::Dnat,
                vec!["10.244.1.5:8080", "10.244.2.6:8080"],
            )]),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, Code::ProxyRulesStale);
        // which node the rules are on is unknown: no verdict rather than a guess
        let f = cross_check(
            &state,
            &NodeContext::default(),
            "test",
            fake(vec![("10.96.0.20", Verdict::Dnat, vec!["10.244.1.5:8080"])]),
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn alike_findings_from_several_sources_become_one() {
        let state = ClusterState::from_json(STATE).unwrap();
        let stale = || {
            fake(vec![(
                "10.96.0.20",
                Verdict::Dnat,
                vec!["10.244.1.5:8080", "10.244.3.7:8080"],
            )])
        };
        let ctx = NodeContext::default();
        let mut all = cross_check(&state, &ctx, "iptables", stale());
        all.extend(cross_check(&state, &ctx, "nftables", stale()));
        all.extend(cross_check(&state, &ctx, "iptables", stale()));
        assert_eq!(all.len(), 3);
        let merged = merge_alike(all);
        assert_eq!(merged.len(), 1, "{merged:?}");
        let traces: Vec<&str> = merged[0]
            .evidence
            .iter()
            .filter(|e| e.source.starts_with("trace ("))
            .map(|e| e.source.as_str())
            .collect();
        assert_eq!(traces.len(), 2, "one trace per mode: {traces:?}");
        assert!(traces[0].contains("iptables") && traces[1].contains("nftables"));
        // different disagreements stay apart
        let mut two = cross_check(&state, &ctx, "iptables", stale());
        two.extend(check(vec![]));
        assert_eq!(merge_alike(two).len(), 2);
    }

    #[test]
    fn vip_failures_explained_by_stale_rules_fold_into_them() {
        let stale = Finding::new(
            Code::ProxyRulesStale,
            "kube-proxy's rules for default/web:http (10.96.0.20:80/tcp) disagree with the API",
        );
        let vip = Finding::new(Code::SvcVipUnreachable, "VIPs fail")
            .evidence("service VIP 10.96.0.20:80", "reset after connect ×3");
        let mut f = vec![vip.clone(), stale.clone()];
        explain_vip_failures(&mut f);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, Code::ProxyRulesStale);
        assert_eq!(f[0].evidence[0].source, "service VIP 10.96.0.20:80");
        // a VIP no rules finding explains keeps the finding
        let other = vip.evidence("service VIP 10.96.0.30:80", "timeout");
        let mut f = vec![other, stale];
        explain_vip_failures(&mut f);
        assert_eq!(f.len(), 2, "{f:?}");
    }
}
