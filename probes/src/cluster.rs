//! Cluster state as `kubectl get svc,ep,endpointslices,pods,nodes -A -o json` prints it.
//!
//! Only the fields the probes read are modelled; everything else in a capture is ignored, so a
//! capture from any Kubernetes version loads. The simulator writes the same format, so offline
//! probes read a lab exactly as they read a real cluster.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Object metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A port number or a port name (`targetPort`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name.
    String(String),
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name (needed for SRV records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// TCP, UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// The Service port.
    pub port: u16,
    /// The pod port, by number or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// NodePort, for NodePort and LoadBalancer Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

fn tcp() -> String {
    "TCP".to_string()
}

/// Service spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP, `None` for headless, empty for ExternalName.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// For ExternalName Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// `None` or `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// `Cluster` or `Local`: which endpoints NodePort traffic may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    /// `Cluster` or `Local`: which endpoints ClusterIP traffic from a node may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ServiceSpec,
}

impl Service {
    /// The ClusterIP, if the Service has one (not headless, not ExternalName).
    pub fn cluster_ip(&self) -> Option<IpAddr> {
        self.spec.cluster_ip.as_deref().and_then(|s| s.parse().ok())
    }

    /// True for `clusterIP: None`.
    pub fn is_headless(&self) -> bool {
        self.spec.cluster_ip.as_deref() == Some("None")
    }

    /// True for `sessionAffinity: ClientIP`.
    pub fn client_ip_affinity(&self) -> bool {
        self.spec.session_affinity.as_deref() == Some("ClientIP")
    }

    /// True for `externalTrafficPolicy: Local`.
    pub fn external_local(&self) -> bool {
        self.spec.external_traffic_policy.as_deref() == Some("Local")
    }

    /// True for `internalTrafficPolicy: Local`.
    pub fn internal_local(&self) -> bool {
        self.spec.internal_traffic_policy.as_deref() == Some("Local")
    }
}

/// A reference to the object behind an endpoint address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectReference {
    /// Kind, usually Pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// One endpoint address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    /// Pod IP.
    pub ip: String,
    /// Hostname (headless DNS name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// One port of an endpoints subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointPort {
    /// Port name, matching the Service port's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pod port.
    pub port: u16,
    /// TCP, UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
}

/// An endpoints subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    /// Ready addresses.
    #[serde(default)]
    pub addresses: Vec<EndpointAddress>,
    /// Addresses of pods that are not ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// An Endpoints object (named like its Service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Subsets; empty when no pod is selected.
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
}

impl Endpoints {
    /// All ready addresses.
    pub fn ready(&self) -> impl Iterator<Item = &EndpointAddress> {
        self.subsets.iter().flat_map(|s| s.addresses.iter())
    }
    /// All not-ready addresses.
    pub fn not_ready(&self) -> impl Iterator<Item = &EndpointAddress> {
        self.subsets
            .iter()
            .flat_map(|s| s.not_ready_addresses.iter())
    }
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    pub container_port: u16,
    /// TCP, UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
}

/// A container (spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Declared ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

/// Pod spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Node the pod is scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Hostname (for headless Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A pod condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A container's state as kubectl shows it (`waiting`, `running`, `terminated`), kept loosely.
pub type ContainerState = BTreeMap<String, serde_json::Value>;

/// A container's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Ready.
    #[serde(default)]
    pub ready: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: u32,
    /// Current state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: ContainerState,
    /// Previous state (the termination that caused the last restart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_state: ContainerState,
}

/// Pod status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Pending, Running, Succeeded, Failed, Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Pod IP.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Container statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: PodSpec,
    /// Status.
    #[serde(default)]
    pub status: PodStatus,
}

impl Pod {
    /// True when the pod's Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// Restarts summed over containers.
    pub fn restarts(&self) -> u32 {
        self.status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum()
    }

    /// The waiting reason of the first waiting container (`CrashLoopBackOff`, ...).
    pub fn waiting_reason(&self) -> Option<String> {
        self.status.container_statuses.iter().find_map(|c| {
            c.state
                .get("waiting")
                .and_then(|w| w.get("reason"))
                .and_then(|r| r.as_str())
                .map(str::to_string)
        })
    }

    /// The message of the first container's last termination (`lastState.terminated.message`,
    /// what the process wrote to /dev/termination-log).
    pub fn termination_message(&self) -> Option<String> {
        self.status.container_statuses.iter().find_map(|c| {
            c.last_state
                .get("terminated")
                .and_then(|t| t.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
    }

    /// The pod IP.
    pub fn ip(&self) -> Option<IpAddr> {
        self.status.pod_ip.as_deref().and_then(|s| s.parse().ok())
    }
}

/// A node address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// InternalIP, ExternalIP, Hostname.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub address: String,
}

/// Node spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// The node's pod CIDR.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
}

/// Node status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Addresses.
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
    /// Conditions (Ready, MemoryPressure, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: NodeSpec,
    /// Status.
    #[serde(default)]
    pub status: NodeStatus,
}

impl Node {
    /// The first InternalIP.
    pub fn internal_ip(&self) -> Option<IpAddr> {
        self.status
            .addresses
            .iter()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse().ok())
    }
}

/// One item of a `kind: List`, by kind. Kinds the probes do not read are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Item {
    /// A Service.
    Service(Service),
    /// An Endpoints object.
    Endpoints(Endpoints),
    /// A pod.
    Pod(Pod),
    /// A node.
    Node(Node),
    /// EndpointSlices and anything else: ignored.
    #[serde(other)]
    Other,
}

/// The `kind: List` document kubectl prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List {
    /// Always `v1`.
    pub api_version: String,
    /// Always `List`.
    pub kind: String,
    /// The objects.
    pub items: Vec<Item>,
}

/// A failure to load a cluster-state capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterStateError {
    /// Not JSON of the expected shape.
    #[error("failed to parse cluster state at line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde said.
        message: String,
    },
}

/// The cluster as the probes see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// Services.
    pub services: Vec<Service>,
    /// Endpoints.
    pub endpoints: Vec<Endpoints>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl ClusterState {
    /// Parses a `kubectl get ... -o json` capture.
    pub fn from_json(text: &str) -> Result<Self, ClusterStateError> {
        let list: List = serde_json::from_str(text).map_err(|e| ClusterStateError::Parse {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let mut st = ClusterState::default();
        for item in list.items {
            match item {
                Item::Service(s) => st.services.push(s),
                Item::Endpoints(e) => st.endpoints.push(e),
                Item::Pod(p) => st.pods.push(p),
                Item::Node(n) => st.nodes.push(n),
                Item::Other => {}
            }
        }
        Ok(st)
    }

    /// Renders the state as kubectl would print it.
    pub fn to_list(&self) -> List {
        let items = self
            .services
            .iter()
            .cloned()
            .map(Item::Service)
            .chain(self.endpoints.iter().cloned().map(Item::Endpoints))
            .chain(self.pods.iter().cloned().map(Item::Pod))
            .chain(self.nodes.iter().cloned().map(Item::Node))
            .collect();
        List {
            api_version: "v1".into(),
            kind: "List".into(),
            items,
        }
    }

    /// The Service `ns/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.namespace == namespace && s.metadata.name == name)
    }

    /// The Endpoints `ns/name`.
    pub fn endpoints_of(&self, namespace: &str, name: &str) -> Option<&Endpoints> {
        self.endpoints
            .iter()
            .find(|s| s.metadata.namespace == namespace && s.metadata.name == name)
    }

    /// The pod `ns/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.namespace == namespace && p.metadata.name == name)
    }

    /// Every address that belongs to the cluster: node addresses, pod IPs and Service IPs.
    /// In a real cluster none of them is loopback; in the embedded lab all are.
    pub fn owned_addresses(&self) -> Vec<IpAddr> {
        let nodes = self
            .nodes
            .iter()
            .flat_map(|n| n.status.addresses.iter().map(|a| a.address.as_str()));
        let pods = self.pods.iter().filter_map(|p| p.status.pod_ip.as_deref());
        let svcs = self
            .services
            .iter()
            .filter_map(|s| s.spec.cluster_ip.as_deref());
        nodes
            .chain(pods)
            .chain(svcs)
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = r#"{
  "apiVersion": "v1", "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "Service",
     "metadata": {"name": "kube-dns", "namespace": "kube-system", "uid": "x"},
     "spec": {"clusterIP": "10.96.0.10", "type": "ClusterIP", "selector": {"k8s-app": "kube-dns"},
              "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": "metrics"}]}},
    {"apiVersion": "v1", "kind": "Endpoints",
     "metadata": {"name": "kube-dns", "namespace": "kube-system"},
     "subsets": [{"notReadyAddresses": [{"ip": "10.244.0.2", "nodeName": "n1",
                   "targetRef": {"kind": "Pod", "name": "coredns-1", "namespace": "kube-system"}}],
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "kube-dns-abc"}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "coredns-1", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
     "spec": {"nodeName": "n1", "containers": [{"name": "coredns", "image": "x"}]},
     "status": {"phase": "Running", "podIP": "10.244.0.2",
       "conditions": [{"type": "Ready", "status": "False"}],
       "containerStatuses": [{"name": "coredns", "ready": false, "restartCount": 7,
          "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
     "spec": {"podCIDR": "10.244.0.0/24"},
     "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}}
  ]
}"#;

    #[test]
    fn loads_a_kubectl_capture() {
        let st = ClusterState::from_json(CAPTURE).unwrap();
        let svc = st.service("kube-system", "kube-dns").unwrap();
        assert_eq!(svc.cluster_ip(), Some("10.96.0.10".parse().unwrap()));
        assert_eq!(
            svc.spec.ports[1].target_port,
            Some(IntOrString::String("metrics".into()))
        );
        let ep = st.endpoints_of("kube-system", "kube-dns").unwrap();
        assert_eq!(ep.ready().count(), 0);
        assert_eq!(ep.not_ready().count(), 1);
        let pod = st.pod("kube-system", "coredns-1").unwrap();
        assert!(!pod.is_ready());
        assert_eq!(pod.restarts(), 7);
        assert_eq!(pod.waiting_reason().as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(st.owned_addresses().len(), 3);
        // round trip through our own rendering
        let again =
            ClusterState::from_json(&serde_json::to_string(&st.to_list()).unwrap()).unwrap();
        assert_eq!(again, st);
    }

    #[test]
    fn garbage_is_a_one_line_error_with_position() {
        let err = ClusterState::from_json("{\n \"items\": 3").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("failed to parse cluster state at line"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}
