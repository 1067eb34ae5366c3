//! The cluster model: nodes, pods, Services, and endpoints derived the way the endpoints
//! controller derives them. Pure data; the backends turn it into running things.

use kdiag_probes::cluster as wire;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name, e.g. `node-1`.
    pub name: String,
    /// InternalIP.
    pub ip: Ipv4Addr,
    /// The node's pod CIDR (network address, prefix length).
    pub pod_cidr: (Ipv4Addr, u8),
    /// kubelet reports Ready.
    pub ready: bool,
}

/// A container port a pod listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    /// Port name (`dns`, `http`), if named.
    pub name: Option<String>,
    /// Number.
    pub port: u16,
    /// `TCP` / `UDP`.
    pub protocol: String,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it runs on.
    pub node: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Declared container ports.
    pub ports: Vec<PodPort>,
    /// Ready condition.
    pub ready: bool,
    /// Phase: Running, Pending, ...
    pub phase: String,
    /// Container restarts so far.
    pub restarts: u32,
    /// Waiting reason when not running (`CrashLoopBackOff`).
    pub waiting_reason: Option<String>,
    /// Termination message of the last crash.
    pub termination_message: Option<String>,
    /// `spec.hostname` (headless DNS name).
    pub hostname: Option<String>,
    /// What the container runs in the embedded lab.
    pub workload: Workload,
    /// Whether the container process accepts connections. False while the pod is still
    /// listed ready (a hung process before its readiness probe fails).
    pub listening: bool,
    /// Log lines of the previous container (what `kubectl logs --previous` shows).
    pub logs: Vec<String>,
}

/// What a pod's container runs in the embedded lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// Nothing the lab serves itself (CoreDNS pods are served by the DNS server).
    None,
    /// agnhost serve-hostname: answers with the pod name (HTTP, or raw TCP on a half-close).
    ServeHostname,
    /// The seed's web application: on start it reads its config and logs into the database
    /// behind `db_host` (a Service name); with the wrong password it exits.
    WebApp {
        /// The config (env): `DB_Host`, `DB_User`, `DB_Password`.
        env: BTreeMap<String, String>,
    },
    /// A MySQL look-alike: a line protocol that checks the root password.
    Mysql {
        /// `MYSQL_ROOT_PASSWORD`.
        root_password: String,
    },
}

/// A Service's targetPort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// By number.
    Number(u16),
    /// By container port name.
    Name(String),
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (required when several; SRV records need it).
    pub name: Option<String>,
    /// `TCP` / `UDP`.
    pub protocol: String,
    /// Service port.
    pub port: u16,
    /// Pod port.
    pub target: TargetPort,
    /// NodePort, if exposed on nodes.
    pub node_port: Option<u16>,
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP; `None` for headless (or ExternalName).
    pub cluster_ip: Option<Ipv4Addr>,
    /// Pod selector; empty selector selects nothing (manual endpoints).
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// ExternalName target.
    pub external_name: Option<String>,
    /// Affinity and traffic policies.
    pub policy: ServicePolicy,
}

/// sessionAffinity and traffic policies; the default is Kubernetes' default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicePolicy {
    /// `sessionAffinity: ClientIP` (else None).
    pub client_ip_affinity: bool,
    /// `externalTrafficPolicy: Local` (else Cluster): NodePort traffic only to node-local endpoints.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local` (else Cluster): ClusterIP traffic only to endpoints on the
    /// client's node.
    pub internal_local: bool,
}

impl Service {
    /// True for `clusterIP: None`.
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.is_none() && self.external_name.is_none()
    }
}

/// One endpoint address of a Service, with the ports resolved for that pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod name.
    pub pod: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Node.
    pub node: String,
    /// Ready: in `addresses`, else in `notReadyAddresses`.
    pub ready: bool,
    /// Hostname for headless DNS (`spec.hostname`).
    pub hostname: Option<String>,
    /// (service port name, resolved pod port, protocol) for each Service port this pod serves.
    pub ports: Vec<(Option<String>, u16, String)>,
}

/// The cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// DNS domain, `cluster.local`.
    pub domain: String,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// Services.
    pub services: Vec<Service>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Cluster {
    /// The Service `ns/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// Mutable access to the Service `ns/name`.
    pub fn service_mut(&mut self, namespace: &str, name: &str) -> Option<&mut Service> {
        self.services
            .iter_mut()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// Pods whose labels include every selector pair, like the endpoints controller.
    pub fn selected_pods<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| {
            p.namespace == svc.namespace
                && !svc.selector.is_empty()
                && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        })
    }

    /// Endpoints of a Service as the endpoints controller computes them: every selected pod
    /// with an IP; ready pods in `addresses`, the rest in `notReadyAddresses`; a named
    /// targetPort resolves per pod, and a pod without that port name serves no such port.
    pub fn endpoints(&self, svc: &Service) -> Vec<Endpoint> {
        self.selected_pods(svc)
            .filter(|p| p.phase != "Pending" && p.phase != "Succeeded" && p.phase != "Failed")
            .map(|p| {
                let ports = svc
                    .ports
                    .iter()
                    .filter_map(|sp| {
                        let port = match &sp.target {
                            TargetPort::Number(n) => Some(*n),
                            TargetPort::Name(name) => p
                                .ports
                                .iter()
                                .find(|pp| pp.name.as_deref() == Some(name.as_str()))
                                .map(|pp| pp.port),
                        }?;
                        Some((sp.name.clone(), port, sp.protocol.clone()))
                    })
                    .collect();
                Endpoint {
                    pod: p.name.clone(),
                    ip: p.ip,
                    node: p.node.clone(),
                    ready: p.ready,
                    hostname: p.hostname.clone(),
                    ports,
                }
            })
            .collect()
    }

    /// Ready endpoints only.
    pub fn ready_endpoints(&self, svc: &Service) -> Vec<Endpoint> {
        self.endpoints(svc)
            .into_iter()
            .filter(|e| e.ready)
            .collect()
    }

    /// The kubectl-capture form of the cluster (what `--cluster-state` reads).
    pub fn to_state(&self) -> wire::ClusterState {
        let services = self.services.iter().map(service_wire).collect();
        let endpoints = self
            .services
            .iter()
            .filter(|s| s.external_name.is_none())
            .map(|s| self.endpoints_wire(s))
            .collect();
        let pods = self.pods.iter().map(pod_wire).collect();
        let nodes = self.nodes.iter().map(node_wire).collect();
        wire::ClusterState {
            services,
            endpoints,
            pods,
            nodes,
        }
    }

    fn endpoints_wire(&self, svc: &Service) -> wire::Endpoints {
        let eps = self.endpoints(svc);
        // One subset per distinct port set, like the controller's repacking.
        let mut subsets: Vec<wire::EndpointSubset> = Vec::new();
        for ep in eps {
            let ports: Vec<wire::EndpointPort> = ep
                .ports
                .iter()
                .map(|(name, port, proto)| wire::EndpointPort {
                    name: name.clone(),
                    port: *port,
                    protocol: proto.clone(),
                })
                .collect();
            if ports.is_empty() {
                continue;
            }
            let addr = wire::EndpointAddress {
                ip: ep.ip.to_string(),
                hostname: ep.hostname.clone(),
                node_name: Some(ep.node.clone()),
                target_ref: Some(wire::ObjectReference {
                    kind: "Pod".into(),
                    name: ep.pod.clone(),
                    namespace: svc.namespace.clone(),
                }),
            };
            let subset = match subsets.iter_mut().find(|s| s.ports == ports) {
                Some(s) => s,
                None => {
                    subsets.push(wire::EndpointSubset {
                        ports,
                        ..Default::default()
                    });
                    subsets.last_mut().expect("just pushed")
                }
            };
            if ep.ready {
                subset.addresses.push(addr);
            } else {
                subset.not_ready_addresses.push(addr);
            }
        }
        wire::Endpoints {
            metadata: meta(&svc.namespace, &svc.name, &BTreeMap::new()),
            subsets,
        }
    }

    /// The demo cluster every scenario starts from: two nodes, two CoreDNS pods behind
    /// `kube-system/kube-dns`, the seed's web → mysql application, a `hostnames` Deployment
    /// (serve_hostname on :9376), and a headless Service. Addresses come from `net`.
    pub fn demo(net: &AddressPlan, dns_port: u16) -> Cluster {
        let nodes: Vec<Node> = (0..2)
            .map(|i| Node {
                name: format!("node-{}", i + 1),
                ip: net.node_ip(i),
                pod_cidr: (net.pod_ip(i, 0), 24),
                ready: true,
            })
            .collect();
        let mut pods = Vec::new();
        let mut add_pod = |ns: &str,
                           name: &str,
                           node: usize,
                           host: u8,
                           l: &[(&str, &str)],
                           ports: Vec<PodPort>,
                           hostname: Option<&str>| {
            pods.push(Pod {
                namespace: ns.into(),
                name: name.into(),
                node: nodes[node].name.clone(),
                ip: net.pod_ip(node, host),
                labels: labels(l),
                ports,
                ready: true,
                phase: "Running".into(),
                restarts: 0,
                waiting_reason: None,
                termination_message: None,
                hostname: hostname.map(str::to_string),
                workload: Workload::None,
                listening: true,
                logs: vec![],
            });
        };
        let dns_ports = || {
            vec![
                PodPort {
                    name: Some("dns".into()),
                    port: dns_port,
                    protocol: "UDP".into(),
                },
                PodPort {
                    name: Some("dns-tcp".into()),
                    port: dns_port,
                    protocol: "TCP".into(),
                },
                PodPort {
                    name: Some("metrics".into()),
                    port: 9153,
                    protocol: "TCP".into(),
                },
            ]
        };
        let http = |port: u16| {
            vec![PodPort {
                name: Some("http".into()),
                port,
                protocol: "TCP".into(),
            }]
        };
        let ks = "kube-system";
        add_pod(
            ks,
            "coredns-5d78c9869d-2xkqp",
            0,
            2,
            &[("k8s-app", "kube-dns")],
            dns_ports(),
            None,
        );
        add_pod(
            ks,
            "coredns-5d78c9869d-8fjvw",
            1,
            2,
            &[("k8s-app", "kube-dns")],
            dns_ports(),
            None,
        );
        add_pod(
            "default",
            "webapp-7c9f8d6b5-abcde",
            0,
            10,
            &[("app", "webapp")],
            http(8080),
            None,
        );
        add_pod(
            "default",
            "webapp-7c9f8d6b5-fghij",
            1,
            10,
            &[("app", "webapp")],
            http(8080),
            None,
        );
        add_pod(
            "default",
            "mysql-0",
            1,
            11,
            &[("app", "mysql")],
            vec![PodPort {
                name: Some("mysql".into()),
                port: 3306,
                protocol: "TCP".into(),
            }],
            Some("mysql-0"),
        );
        for (i, node) in [0usize, 1, 0].iter().enumerate() {
            add_pod(
                "default",
                &format!("hostnames-6d8c4b5f7-{}", ["q2w3e", "r4t5y", "u6i7o"][i]),
                *node,
                20 + i as u8,
                &[("app", "hostnames")],
                http(9376),
                None,
            );
        }
        // What each pod runs: the seed's app reads its DB password from its env.
        for p in &mut pods {
            p.workload = match p.labels.get("app").map(String::as_str) {
                Some("hostnames") => Workload::ServeHostname,
                Some("webapp") => Workload::WebApp {
                    env: labels(&[
                        ("DB_Host", "mysql-service"),
                        ("DB_User", "root"),
                        ("DB_Password", DEMO_DB_PASSWORD),
                    ]),
                },
                Some("mysql") => Workload::Mysql {
                    root_password: DEMO_DB_PASSWORD.into(),
                },
                _ => Workload::None,
            };
        }
        let port = |name: &str, proto: &str, port: u16, target: TargetPort| ServicePort {
            name: Some(name.into()),
            protocol: proto.into(),
            port,
            target,
            node_port: None,
        };
        let services = vec![
            Service {
                namespace: "default".into(),
                name: "kubernetes".into(),
                cluster_ip: Some(net.service_ip(1)),
                selector: BTreeMap::new(),
                ports: vec![port("https", "TCP", 443, TargetPort::Number(6443))],
                external_name: None,
                policy: ServicePolicy::default(),
            },
            Service {
                namespace: ks.into(),
                name: "kube-dns".into(),
                cluster_ip: Some(net.service_ip(10)),
                selector: labels(&[("k8s-app", "kube-dns")]),
                ports: vec![
                    port("dns", "UDP", dns_port, TargetPort::Number(dns_port)),
                    port("dns-tcp", "TCP", dns_port, TargetPort::Number(dns_port)),
                    port("metrics", "TCP", 9153, TargetPort::Number(9153)),
                ],
                external_name: None,
                policy: ServicePolicy::default(),
            },
            Service {
                namespace: "default".into(),
                name: "web-service".into(),
                cluster_ip: Some(net.service_ip(20)),
                selector: labels(&[("app", "webapp")]),
                ports: vec![ServicePort {
                    node_port: Some(30080),
                    ..port("http", "TCP", 80, TargetPort::Number(8080))
                }],
                external_name: None,
                policy: ServicePolicy::default(),
            },
            Service {
                namespace: "default".into(),
                name: "mysql-service".into(),
                cluster_ip: Some(net.service_ip(21)),
                selector: labels(&[("app", "mysql")]),
                ports: vec![port("mysql", "TCP", 3306, TargetPort::Name("mysql".into()))],
                external_name: None,
                policy: ServicePolicy::default(),
            },
            Service {
                namespace: "default".into(),
                name: "hostnames".into(),
                cluster_ip: Some(net.service_ip(22)),
                selector: labels(&[("app", "hostnames")]),
                ports: vec![ServicePort {
                    node_port: Some(30376),
                    ..port("http", "TCP", 80, TargetPort::Number(9376))
                }],
                external_name: None,
                policy: ServicePolicy {
                    external_local: true,
                    ..ServicePolicy::default()
                },
            },
            Service {
                namespace: "default".into(),
                name: "hostnames-sticky".into(),
                cluster_ip: Some(net.service_ip(23)),
                selector: labels(&[("app", "hostnames")]),
                ports: vec![port("http", "TCP", 80, TargetPort::Number(9376))],
                external_name: None,
                policy: ServicePolicy {
                    client_ip_affinity: true,
                    ..ServicePolicy::default()
                },
            },
            Service {
                namespace: "default".into(),
                name: "hostnames-headless".into(),
                cluster_ip: None,
                selector: labels(&[("app", "hostnames")]),
                ports: vec![port("http", "TCP", 9376, TargetPort::Name("http".into()))],
                external_name: None,
                policy: ServicePolicy::default(),
            },
            Service {
                namespace: "default".into(),
                name: "mysql".into(),
                cluster_ip: None,
                selector: labels(&[("app", "mysql")]),
                ports: vec![port("mysql", "TCP", 3306, TargetPort::Number(3306))],
                external_name: None,
                policy: ServicePolicy::default(),
            },
        ];
        Cluster {
            domain: "cluster.local".into(),
            nodes,
            pods,
            services,
        }
    }
}

/// The database password the demo's web application is configured with, and MySQL expects.
pub const DEMO_DB_PASSWORD: &str = "paswrd";

/// How a lab lays its cluster out on its own slice `127.S.0.0/16` of loopback.
///
/// | range | use |
/// |---|---|
/// | `127.S.0.(10+i)` | node i's InternalIP; node-1's also hosts the site's upstream resolver |
/// | `127.S.1.x` | Service ClusterIPs (`.1` kubernetes, `.10` kube-dns) |
/// | `127.S.(16+i).x` | node i's pod CIDR |
///
/// `127.0.0.0/16` is never handed to a lab: it holds the host's own loopback services
/// (127.0.0.1, systemd-resolved's 127.0.0.53) that faults point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    /// The second octet S, 1..=254.
    pub slice: u8,
}

impl AddressPlan {
    /// The upstream resolver's address: node-1's InternalIP, like a site resolver running on
    /// a node's primary address. Being a cluster address, it is not mistaken for a loopback
    /// upstream (the rule excludes addresses the cluster owns); 127.0.0.0/16 is what a
    /// loopback upstream looks like here.
    pub fn upstream_ip(&self) -> Ipv4Addr {
        self.node_ip(0)
    }
    /// Node i's InternalIP.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, self.slice, 0, 10 + i as u8)
    }
    /// The ClusterIP with host part `host`.
    pub fn service_ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.slice, 1, host)
    }
    /// Pod `host` on node i.
    pub fn pod_ip(&self, node: usize, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.slice, 16 + node as u8, host)
    }
}

fn meta(ns: &str, name: &str, labels: &BTreeMap<String, String>) -> wire::ObjectMeta {
    wire::ObjectMeta {
        name: name.into(),
        namespace: ns.into(),
        labels: labels.clone(),
    }
}

fn service_wire(s: &Service) -> wire::Service {
    let ports = s
        .ports
        .iter()
        .map(|p| wire::ServicePort {
            name: p.name.clone(),
            protocol: p.protocol.clone(),
            port: p.port,
            target_port: Some(match &p.target {
                TargetPort::Number(n) => wire::IntOrString::Int(i64::from(*n)),
                TargetPort::Name(n) => wire::IntOrString::String(n.clone()),
            }),
            node_port: p.node_port,
        })
        .collect();
    let (cluster_ip, type_) = match (&s.external_name, s.cluster_ip) {
        (Some(_), _) => (None, "ExternalName"),
        (None, Some(ip)) => (
            Some(ip.to_string()),
            if s.ports.iter().any(|p| p.node_port.is_some()) {
                "NodePort"
            } else {
                "ClusterIP"
            },
        ),
        (None, None) => (Some("None".to_string()), "ClusterIP"),
    };
    let ip_service = s.external_name.is_none() && s.cluster_ip.is_some();
    let has_node_port = s.ports.iter().any(|p| p.node_port.is_some());
    let policy = |local: bool| Some(if local { "Local" } else { "Cluster" }.to_string());
    wire::Service {
        metadata: meta(&s.namespace, &s.name, &BTreeMap::new()),
        spec: wire::ServiceSpec {
            cluster_ip,
            type_: Some(type_.into()),
            selector: (!s.selector.is_empty()).then(|| s.selector.clone()),
            ports,
            external_name: s.external_name.clone(),
            session_affinity: ip_service.then(|| {
                if s.policy.client_ip_affinity {
                    "ClientIP"
                } else {
                    "None"
                }
                .to_string()
            }),
            external_traffic_policy: if has_node_port {
                policy(s.policy.external_local)
            } else {
                None
            },
            internal_traffic_policy: if ip_service {
                policy(s.policy.internal_local)
            } else {
                None
            },
        },
    }
}

fn pod_wire(p: &Pod) -> wire::Pod {
    let mut state = BTreeMap::new();
    let mut last_state = BTreeMap::new();
    match &p.waiting_reason {
        Some(reason) => {
            state.insert(
                "waiting".to_string(),
                serde_json::json!({ "reason": reason }),
            );
        }
        None => {
            state.insert("running".to_string(), serde_json::json!({}));
        }
    }
    if let Some(msg) = &p.termination_message {
        last_state.insert(
            "terminated".to_string(),
            serde_json::json!({ "exitCode": 1, "reason": "Error", "message": msg }),
        );
    }
    wire::Pod {
        metadata: meta(&p.namespace, &p.name, &p.labels),
        spec: wire::PodSpec {
            node_name: Some(p.node.clone()),
            containers: vec![wire::Container {
                name: "main".into(),
                ports: p
                    .ports
                    .iter()
                    .map(|pp| wire::ContainerPort {
                        name: pp.name.clone(),
                        container_port: pp.port,
                        protocol: pp.protocol.clone(),
                    })
                    .collect(),
            }],
            hostname: p.hostname.clone(),
        },
        status: wire::PodStatus {
            phase: Some(p.phase.clone()),
            pod_ip: Some(p.ip.to_string()),
            conditions: vec![wire::Condition {
                type_: "Ready".into(),
                status: if p.ready { "True" } else { "False" }.into(),
                reason: None,
                message: None,
            }],
            container_statuses: vec![wire::ContainerStatus {
                name: "main".into(),
                ready: p.ready,
                restart_count: p.restarts,
                state,
                last_state,
            }],
        },
    }
}

fn node_wire(n: &Node) -> wire::Node {
    wire::Node {
        metadata: meta("", &n.name, &BTreeMap::new()),
        spec: wire::NodeSpec {
            pod_cidr: Some(format!("{}/{}", n.pod_cidr.0, n.pod_cidr.1)),
        },
        status: wire::NodeStatus {
            addresses: vec![
                wire::NodeAddress {
                    type_: "InternalIP".into(),
                    address: n.ip.to_string(),
                },
                wire::NodeAddress {
                    type_: "Hostname".into(),
                    address: n.name.clone(),
                },
            ],
            conditions: vec![wire::Condition {
                type_: "Ready".into(),
                status: if n.ready { "True" } else { "Unknown" }.into(),
                reason: None,
                message: None,
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Cluster {
        Cluster::demo(&AddressPlan { slice: 7 }, 53)
    }

    #[test]
    fn endpoints_follow_selector_and_readiness() {
        let mut c = demo();
        let dns = c.service("kube-system", "kube-dns").unwrap().clone();
        assert_eq!(c.ready_endpoints(&dns).len(), 2);
        for p in c.pods.iter_mut().filter(|p| p.name.starts_with("coredns")) {
            p.ready = false;
        }
        assert_eq!(c.ready_endpoints(&dns).len(), 0);
        assert_eq!(c.endpoints(&dns).len(), 2);
        let st = c.to_state();
        let ep = st.endpoints_of("kube-system", "kube-dns").unwrap();
        assert_eq!(ep.ready().count(), 0);
        assert_eq!(ep.not_ready().count(), 2);
    }

    #[test]
    fn named_target_port_resolves_per_pod() {
        let c = demo();
        let svc = c.service("default", "mysql-service").unwrap();
        let eps = c.endpoints(svc);
        assert_eq!(eps.len(), 1);
        assert_eq!(
            eps[0].ports,
            vec![(Some("mysql".into()), 3306, "TCP".into())]
        );
    }

    #[test]
    fn state_round_trips_through_kubectl_json() {
        let st = demo().to_state();
        let json = serde_json::to_string(&st.to_list()).unwrap();
        let back = kdiag_probes::cluster::ClusterState::from_json(&json).unwrap();
        assert_eq!(back, st);
        assert_eq!(
            back.service("default", "hostnames-headless")
                .unwrap()
                .spec
                .cluster_ip
                .as_deref(),
            Some("None")
        );
    }

    #[test]
    fn addresses_stay_in_the_lab_slice() {
        let plan = AddressPlan { slice: 42 };
        let c = Cluster::demo(&plan, 53);
        for ip in c
            .nodes
            .iter()
            .map(|n| n.ip)
            .chain(c.pods.iter().map(|p| p.ip))
            .chain(c.services.iter().filter_map(|s| s.cluster_ip))
        {
            assert_eq!(ip.octets()[..2], [127, 42], "{ip}");
        }
    }
}
