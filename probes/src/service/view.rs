//! A Service as the cluster state shows it, flattened for the rules: ports, endpoints, the pods
//! its selector matches (and the ones that almost match), nodes. Pure.

use crate::cluster::{ClusterState, IntOrString, Pod};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortView {
    /// Port name.
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// TCP, UDP, SCTP.
    pub protocol: String,
    /// targetPort as written (`8080`, `http`); the port itself when absent.
    pub target: String,
    /// NodePort.
    pub node_port: Option<u16>,
}

/// One endpoint address with the pod port serving the chosen Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    /// Pod name (targetRef), else the IP.
    pub pod: String,
    /// Address.
    pub ip: IpAddr,
    /// Node.
    pub node: Option<String>,
    /// In `addresses` (true) or `notReadyAddresses`.
    pub ready: bool,
    /// The endpoints port for the chosen Service port.
    pub port: Option<u16>,
}

/// A pod, reduced to what the rules read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodView {
    /// `namespace/name`.
    pub name: String,
    /// Pod IP.
    pub ip: Option<IpAddr>,
    /// Node.
    pub node: Option<String>,
    /// Ready condition.
    pub ready: bool,
    /// Phase, plus the waiting reason: `Running/CrashLoopBackOff`.
    pub status: String,
    /// Waiting reason alone.
    pub waiting: Option<String>,
    /// Restarts.
    pub restarts: u32,
    /// The last termination message.
    pub termination_message: Option<String>,
    /// Declared container ports: (name, port, protocol).
    pub ports: Vec<(Option<String>, u16, String)>,
}

impl PodView {
    /// From a pod of the cluster state.
    pub fn of(p: &Pod) -> PodView {
        let waiting = p.waiting_reason();
        let phase = p.status.phase.clone().unwrap_or_else(|| "Unknown".into());
        PodView {
            name: format!("{}/{}", p.metadata.namespace, p.metadata.name),
            ip: p.ip(),
            node: p.spec.node_name.clone(),
            ready: p.is_ready(),
            status: match &waiting {
                Some(w) => format!("{phase}/{w}"),
                None => phase,
            },
            waiting,
            restarts: p.restarts(),
            termination_message: p.termination_message(),
            ports: p
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .map(|cp| (cp.name.clone(), cp.container_port, cp.protocol.clone()))
                .collect(),
        }
    }

    /// True when the pod is crash-looping (or restarting with a termination message).
    pub fn crash_looping(&self) -> bool {
        self.waiting.as_deref() == Some("CrashLoopBackOff")
            || (self.restarts > 0 && !self.ready && self.termination_message.is_some())
    }
}

/// A pod whose labels almost match a selector: what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    /// `namespace/name`.
    pub pod: String,
    /// (key, the selector wants, the pod has).
    pub differs: Vec<(String, String, Option<String>)>,
}

/// A Service and its surroundings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// `namespace/name`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// ClusterIP, when it has one.
    pub cluster_ip: Option<IpAddr>,
    /// `clusterIP: None`.
    pub headless: bool,
    /// Selector (empty: manually managed endpoints).
    pub selector: BTreeMap<String, String>,
    /// The Service port under test.
    pub port: Option<PortView>,
    /// sessionAffinity ClientIP.
    pub client_ip_affinity: bool,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// Endpoint addresses (ready and not).
    pub endpoints: Vec<EndpointView>,
    /// Pods the selector matches.
    pub pods: Vec<PodView>,
    /// Pods in the namespace that miss the selector by the fewest labels (only when it
    /// matches nothing).
    pub near_misses: Vec<NearMiss>,
    /// Nodes: (name, InternalIP).
    pub nodes: Vec<(String, IpAddr)>,
}

impl ServiceView {
    /// Ready endpoints.
    pub fn ready(&self) -> impl Iterator<Item = &EndpointView> {
        self.endpoints.iter().filter(|e| e.ready)
    }
}

/// Builds the view of Service `ns/name` for one of its ports (`port` = Service port number or
/// name; the first port when `None`). `None` when the Service does not exist.
pub fn service_view(
    st: &ClusterState,
    namespace: &str,
    name: &str,
    port: Option<&super::model::PortRef>,
) -> Option<ServiceView> {
    use super::model::PortRef;
    let svc = st.service(namespace, name)?;
    let sp = svc.spec.ports.iter().find(|p| match port {
        None => true,
        Some(PortRef::Number(n)) => p.port == *n,
        Some(PortRef::Name(n)) => p.name.as_deref() == Some(n.as_str()),
    });
    let port_view = sp.map(|p| PortView {
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol.clone(),
        target: match &p.target_port {
            Some(IntOrString::Int(n)) => n.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
            None => p.port.to_string(),
        },
        node_port: p.node_port,
    });
    let mut endpoints = Vec::new();
    if let Some(eps) = st.endpoints_of(namespace, name) {
        for subset in &eps.subsets {
            let ep_port = sp.and_then(|sp| {
                subset
                    .ports
                    .iter()
                    .find(|p| {
                        p.name == sp.name && p.protocol == sp.protocol
                            || (subset.ports.len() == 1 && sp.name.is_none())
                    })
                    .map(|p| p.port)
            });
            for (ready, list) in [
                (true, &subset.addresses),
                (false, &subset.not_ready_addresses),
            ] {
                for a in list {
                    let Ok(ip) = a.ip.parse() else { continue };
                    endpoints.push(EndpointView {
                        pod: a
                            .target_ref
                            .as_ref()
                            .map(|r| format!("{namespace}/{}", r.name))
                            .unwrap_or_else(|| a.ip.clone()),
                        ip,
                        node: a.node_name.clone(),
                        ready,
                        port: ep_port,
                    });
                }
            }
        }
    }
    let selector = svc.spec.selector.clone().unwrap_or_default();
    let in_ns: Vec<&Pod> = st
        .pods
        .iter()
        .filter(|p| p.metadata.namespace == namespace)
        .collect();
    let pods: Vec<PodView> = in_ns
        .iter()
        .filter(|p| {
            !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })
        .map(|p| PodView::of(p))
        .collect();
    let near_misses = if pods.is_empty() && !selector.is_empty() {
        near_misses(&selector, &in_ns)
    } else {
        vec![]
    };
    let nodes = st
        .nodes
        .iter()
        .filter_map(|n| n.internal_ip().map(|ip| (n.metadata.name.clone(), ip)))
        .collect();
    Some(ServiceView {
        name: format!("{namespace}/{name}"),
        namespace: namespace.to_string(),
        cluster_ip: svc.cluster_ip(),
        headless: svc.is_headless(),
        selector,
        port: port_view,
        client_ip_affinity: svc.client_ip_affinity(),
        external_local: svc.external_local(),
        internal_local: svc.internal_local(),
        endpoints,
        pods,
        near_misses,
        nodes,
    })
}

/// Pods missing the selector by the fewest pairs (at most 5 pods), preferring pods that have
/// every selector key (a wrong value reads like a typo).
fn near_misses(selector: &BTreeMap<String, String>, pods: &[&Pod]) -> Vec<NearMiss> {
    let mut scored: Vec<(usize, usize, usize, NearMiss)> = pods
        .iter()
        .filter_map(|p| {
            let differs: Vec<(String, String, Option<String>)> = selector
                .iter()
                .filter(|(k, v)| p.metadata.labels.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone(), p.metadata.labels.get(k).cloned()))
                .collect();
            let missing_keys = differs.iter().filter(|d| d.2.is_none()).count();
            let distance: usize = differs
                .iter()
                .map(|(_, want, have)| {
                    have.as_deref()
                        .map_or(want.len(), |h| edit_distance(want, h))
                })
                .sum();
            // A pod sharing no key with the selector is not a near miss.
            let shares_key = selector.keys().any(|k| p.metadata.labels.contains_key(k));
            (shares_key && differs.len() < selector.len() + 1).then(|| {
                (
                    differs.len(),
                    missing_keys,
                    distance,
                    NearMiss {
                        pod: format!("{}/{}", p.metadata.namespace, p.metadata.name),
                        differs,
                    },
                )
            })
        })
        .collect();
    scored.sort_by(|a, b| (a.0, a.1, a.2, &a.3.pod).cmp(&(b.0, b.1, b.2, &b.3.pod)));
    let best = scored.first().map(|s| (s.0, s.1, s.2));
    scored
        .into_iter()
        .filter(|s| Some((s.0, s.1, s.2)) == best)
        .take(5)
        .map(|s| s.3)
        .collect()
}

/// Levenshtein distance (labels are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Service","metadata":{"name":"hostnames","namespace":"default"},
  "spec":{"clusterIP":"10.0.1.175","selector":{"app":"hostname"},"sessionAffinity":"ClientIP",
   "ports":[{"name":"http","port":80,"targetPort":9376,"nodePort":30376}]}},
 {"kind":"Endpoints","metadata":{"name":"hostnames","namespace":"default"},"subsets":[]},
 {"kind":"Pod","metadata":{"name":"hostnames-a","namespace":"default","labels":{"app":"hostnames"}},
  "spec":{"nodeName":"n1","containers":[{"name":"c","ports":[{"name":"http","containerPort":9376}]}]},
  "status":{"phase":"Running","podIP":"10.244.0.5","conditions":[{"type":"Ready","status":"True"}]}},
 {"kind":"Pod","metadata":{"name":"other","namespace":"default","labels":{"tier":"db"}}},
 {"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"172.18.0.5"}]}}
]}"#;

    #[test]
    fn a_selector_typo_names_the_pods_that_almost_match() {
        let st = ClusterState::from_json(STATE).unwrap();
        let v = service_view(&st, "default", "hostnames", None).unwrap();
        assert!(v.pods.is_empty());
        assert!(v.client_ip_affinity);
        assert_eq!(v.port.as_ref().unwrap().target, "9376");
        assert_eq!(v.port.as_ref().unwrap().node_port, Some(30376));
        assert_eq!(
            v.near_misses,
            vec![NearMiss {
                pod: "default/hostnames-a".into(),
                differs: vec![("app".into(), "hostname".into(), Some("hostnames".into()))]
            }]
        );
        assert_eq!(v.nodes, vec![("n1".into(), "172.18.0.5".parse().unwrap())]);
        assert!(service_view(&st, "default", "nope", None).is_none());
    }
}
