//! Cross-checks of the rules kube-proxy programmed against the cluster state. Pure.
//!
//! For every ClusterIP Service port the check traces one packet with the same tracer `kdiag
//! trace` uses, and compares the endpoints the rules reach with the ready endpoints the API
//! lists: no rule at all is `proxy.rules-missing`; a different set (or a REJECT "has no
//! endpoints" while the API lists some) is `proxy.rules-stale`. A dump written by
//! iptables-nft that warns about iptables-legacy tables is `proxy.backend-split`.

use super::model::{Flavor, Ruleset};
use super::trace::trace;
use crate::cluster::{ClusterState, Service, ServicePort};
use crate::finding::{Code, Finding};
use crate::trace::{join_host_port, NodeContext, Packet, Proto, Verdict};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The ready endpoints (`IP:PORT`) the API lists for one Service port.
fn api_endpoints(state: &ClusterState, svc: &Service, sp: &ServicePort) -> BTreeSet<String> {
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

/// Cross-checks `rules` against `state` (see the module docs).
pub fn cross_check(rules: &Ruleset<'_>, state: &ClusterState, ctx: &NodeContext) -> Vec<Finding> {
    let mut out = Vec::new();
    if rules.flavor == Flavor::Nft && rules.other_backend_warning {
        out.push(
            Finding::new(
                Code::ProxyBackendSplit,
                "the dump was written by iptables-nft and warns that iptables-legacy tables exist too: \
                 kube-proxy's rules may be split between the two backends",
            )
            .evidence(
                "iptables-save",
                "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them",
            )
            .remediation(
                "compare `iptables-legacy-save` with `iptables-nft-save`; make every component (kube-proxy, \
                 the CNI, the host firewall) use the same backend (the one the host's `iptables` points at) \
                 and flush the other",
            ),
        );
    }
    for svc in &state.services {
        let Some(vip) = svc.cluster_ip() else {
            continue;
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
            let res = trace(rules, &pkt, ctx);
            let api = api_endpoints(state, svc, sp);
            let name = format!(
                "{}/{}:{}",
                svc.metadata.namespace,
                svc.metadata.name,
                sp.name.as_deref().unwrap_or("")
            );
            let target = format!("{}/{}", join_host_port(vip, sp.port), proto.as_str());
            let walked: String = res
                .walk
                .iter()
                .rev()
                .find(|w| !w.rule.is_empty())
                .map(|w| format!("{}/{} line {}: {}", w.table, w.chain, w.line, w.rule))
                .unwrap_or_else(|| "no kube-proxy rule matched".into());
            match res.verdict {
                Verdict::NoMatch | Verdict::Accept if !api.is_empty() => {
                    out.push(
                        Finding::new(
                            Code::ProxyRulesMissing,
                            format!(
                                "Service {name} ({target}) has {} ready endpoint(s) but kube-proxy \
                                 programmed no rule for it",
                                api.len()
                            ),
                        )
                        .evidence(format!("endpoints {name}"), join(&api))
                        .evidence(format!("trace {}", pkt_text(&pkt)), walked)
                        .remediation(
                            "kube-proxy is not syncing on this node: check it runs \
                             (`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide`), its logs and \
                             healthz (:10256); restart it",
                        ),
                    );
                }
                Verdict::Reject | Verdict::Drop if !api.is_empty() => {
                    out.push(
                        Finding::new(
                            Code::ProxyRulesStale,
                            format!(
                                "kube-proxy's rules reject {name} ({target}) as having no endpoints, \
                                 but the API lists {} ready",
                                api.len()
                            ),
                        )
                        .evidence(format!("endpoints {name}"), join(&api))
                        .evidence(format!("trace {}", pkt_text(&pkt)), walked)
                        .remediation(
                            "kube-proxy's view is out of date: check its logs for sync errors \
                             and its connection to the API server; restart it",
                        ),
                    );
                }
                Verdict::Dnat => {
                    let programmed: BTreeSet<String> = res.endpoints.iter().cloned().collect();
                    if programmed == api {
                        continue;
                    }
                    let gone: Vec<&String> = programmed.difference(&api).collect();
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
                    .evidence(format!("endpoints {name}"), join(&api));
                    if !gone.is_empty() {
                        f = f
                            .evidence("stale", format!("rules still DNAT to {}", join_refs(&gone)));
                    }
                    out.push(f.remediation(
                        "kube-proxy stopped syncing (traffic still goes to endpoints that are gone): check \
                         its logs and its connection to the API server; restart it",
                    ));
                }
                _ => {}
            }
        }
    }
    out
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
    use crate::iptables::parse_iptables_save;
    use crate::iptables::render::{
        render_iptables_save, RenderConfig, RenderEndpoint, RenderServicePort,
    };

    const STATE: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Service","metadata":{"name":"web","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.20","selector":{"app":"web"},
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"kind":"Endpoints","metadata":{"name":"web","namespace":"default"},
  "subsets":[{"addresses":[{"ip":"10.244.1.5"},{"ip":"10.244.2.6"}],
              "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]},
 {"kind":"Pod","metadata":{"name":"client","namespace":"default"},"status":{"podIP":"10.244.1.9"}}
]}"#;

    fn dump(endpoints: &[&str]) -> String {
        let eps = endpoints
            .iter()
            .map(|ip| RenderEndpoint {
                ip: ip.parse().unwrap(),
                port: 8080,
                ready: true,
            })
            .collect();
        render_iptables_save(
            &[RenderServicePort {
                namespace: "default".into(),
                name: "web".into(),
                port_name: "http".into(),
                protocol: Proto::Tcp,
                cluster_ip: "10.96.0.20".parse().unwrap(),
                port: 80,
                node_port: None,
                endpoints: eps,
            }],
            &RenderConfig {
                local_cidr: None,
                localhost_nodeports: true,
            },
        )
    }

    fn check(text: &str) -> Vec<Finding> {
        let state = ClusterState::from_json(STATE).unwrap();
        let rules = parse_iptables_save(text).unwrap();
        cross_check(&rules, &state, &NodeContext::default())
    }

    #[test]
    fn rules_that_match_the_api_are_quiet() {
        assert!(check(&dump(&["10.244.1.5", "10.244.2.6"])).is_empty());
    }

    #[test]
    fn stale_rules_name_the_gone_endpoint() {
        let f = check(&dump(&["10.244.1.5", "10.244.3.7"]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::ProxyRulesStale);
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.detail.contains("10.244.3.7:8080")),
            "{f:?}"
        );
    }

    #[test]
    fn reject_while_the_api_lists_endpoints_is_stale() {
        let f = check(&dump(&[]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::ProxyRulesStale);
        assert!(f[0].summary.contains("no endpoints"), "{}", f[0].summary);
    }

    #[test]
    fn no_rules_at_all_is_missing() {
        let f = check("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::ProxyRulesMissing);
        assert!(
            f[0].summary.contains("default/web:http"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn nft_dump_warning_about_legacy_tables_is_a_backend_split() {
        let text = format!(
            "# Generated by iptables-nft-save v1.8.7 on Thu Nov 26 00:00:00 2026\n\
             # Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n{}",
            dump(&["10.244.1.5", "10.244.2.6"])
        );
        let f = check(&text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, Code::ProxyBackendSplit);
    }
}
