//! Scenario files (SPEC §4): the YAML wire format, strict loading, and the domain types the
//! runner executes.
//!
//! Wire types reject unknown fields; every load error names the file, the line and the field.

use kdiag_probes::Code;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A simulator backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process cluster on 127.0.0.0/8.
    Embedded,
    /// Linux network namespaces with the real kernel data path.
    Netns,
    /// A real cluster on kind.
    Kind,
}

impl BackendKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Netns => "netns",
            BackendKind::Kind => "kind",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(BackendKind::Embedded),
            "netns" => Ok(BackendKind::Netns),
            "kind" => Ok(BackendKind::Kind),
            other => Err(format!(
                "unknown backend {other:?} (expected embedded, netns or kind)"
            )),
        }
    }
}

mod wire {
    use super::BackendKind;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub version: Option<u32>,
        pub name: String,
        pub summary: String,
        #[serde(default)]
        pub backends: Option<Vec<BackendKind>>,
        #[serde(default)]
        pub client: Option<Client>,
        #[serde(default)]
        pub requires: Vec<super::Requirement>,
        #[serde(default)]
        pub faults: Vec<Fault>,
        pub expect: Expect,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Client {
        pub name: String,
        #[serde(default)]
        pub namespace: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Expect {
        #[serde(default)]
        pub findings: Vec<String>,
        #[serde(default)]
        pub allow: Vec<String>,
    }

    /// The fault vocabulary. Kinds whose parameters are not designed yet take none, so a
    /// parameter given to them is rejected rather than silently ignored.
    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    pub enum Fault {
        DnsForwardLoop {
            #[serde(default)]
            via: Option<String>,
            #[serde(default)]
            zone: Option<String>,
            #[serde(default)]
            path: Option<super::LoopPath>,
        },
        DnsUpstreamServfail {},
        DnsUpstreamRefusesHinfo {},
        DnsUpstreamDropsHinfo {},
        DnsExtraForward {
            zone: String,
        },
        DnsUpstreamTimeout {},
        DnsPodsDown {},
        DnsApiUnsynced {},
        DnsTruncated {},
        DnsSlow {
            delay_ms: u64,
        },
        DnsSearchDomains {
            domains: Vec<String>,
        },
        ClientWrongServiceName {
            name: String,
            #[serde(default)]
            namespace: Option<String>,
        },
        ServiceSelectorMismatch {
            service: String,
            selector: BTreeMap<String, String>,
        },
        ServiceTargetportWrong {
            service: String,
            target_port: u16,
        },
        EndpointPartialDown {
            service: String,
            #[serde(default)]
            count: Option<usize>,
        },
        ProxyDown {},
        ProxyRulesStale {
            service: String,
        },
        NodeportBlocked {
            service: String,
            #[serde(default)]
            nodes: Vec<String>,
        },
        CniConfigMissing {},
        CniConfigInvalid {},
        CniPluginMissing {},
        CniBridgeDown {},
        CniRouteMissing {},
        KubeletDown {},
        KubeletApiserverPortWrong {},
        KubeletCertExpired {},
        ApiserverDown {},
        ControlPlaneManifestBroken {},
        ConntrackFull {},
        NodePartition {},
        AppBadConfig {
            #[serde(default)]
            namespace: Option<String>,
            selector: BTreeMap<String, String>,
            key: String,
            value: String,
        },
        IptablesBackendSplit {},
        HairpinOff {},
        MtuMismatch {},
    }
}

/// An injected failure, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// CoreDNS forwards to itself (`path: self`, through a loopback `via`), or the upstream
    /// resolver forwards back to the cluster DNS (`path: upstream`, a two-server cycle).
    DnsForwardLoop {
        /// The loopback address CoreDNS forwards to, 127.0.0.53 by default (systemd-resolved's stub).
        via: IpAddr,
        /// The zone that loops: `.` (everything; through kubelet's resolvConf) or one
        /// forwarded zone (an extra Corefile block without the loop plugin).
        zone: String,
        /// How the loop closes.
        path: LoopPath,
    },
    /// The upstream resolver answers SERVFAIL to everything.
    DnsUpstreamServfail,
    /// The upstream resolver answers REFUSED to HINFO (healthy otherwise).
    DnsUpstreamRefusesHinfo,
    /// The upstream resolver silently drops HINFO (healthy otherwise).
    DnsUpstreamDropsHinfo,
    /// An extra Corefile block forwards `zone` to the upstream resolver (a healthy stub domain).
    DnsExtraForward {
        /// The zone, fully qualified.
        zone: String,
    },
    /// The upstream resolver never answers.
    DnsUpstreamTimeout,
    /// Every CoreDNS pod crash-loops: not ready, not listening.
    DnsPodsDown,
    /// CoreDNS has no data from the API server (RBAC or connectivity): SERVFAIL for cluster names.
    DnsApiUnsynced,
    /// UDP answers are truncated and the kube-dns Service has no TCP port.
    DnsTruncated,
    /// Every CoreDNS answer is delayed.
    DnsSlow {
        /// Added latency.
        delay: Duration,
    },
    /// The node's resolv.conf carries extra search domains that kubelet appends for pods.
    DnsSearchDomains {
        /// The extra domains.
        domains: Vec<String>,
    },
    /// The client asks for a Service name that does not exist.
    ClientWrongServiceName {
        /// The name it asks for.
        name: String,
        /// Its namespace (default `default`).
        namespace: String,
    },
    /// The Service's selector is replaced by a wrong one (a typo): it selects no pod.
    ServiceSelectorMismatch {
        /// The Service, `namespace/name`.
        service: ServiceRef,
        /// The wrong selector.
        selector: BTreeMap<String, String>,
    },
    /// The Service's (first) port gets a targetPort nothing listens on.
    ServiceTargetportWrong {
        /// The Service.
        service: ServiceRef,
        /// The wrong targetPort.
        target_port: u16,
    },
    /// Some pods behind the Service stop answering while still listed ready (a hung process
    /// before its readiness probe fails).
    EndpointPartialDown {
        /// The Service.
        service: ServiceRef,
        /// How many of its ready pods stop (default 1; fewer than all).
        count: usize,
    },
    /// kube-proxy is down and its rules are gone: no Service VIP or NodePort is served.
    ProxyDown,
    /// kube-proxy stopped syncing, then the Service's pods were rescheduled (a rollout: new
    /// names and IPs): the API lists the new endpoints, the node's rules and proxy keep the old.
    ProxyRulesStale {
        /// The Service whose pods move.
        service: ServiceRef,
    },
    /// A host firewall rejects the Service's NodePort on some nodes.
    NodeportBlocked {
        /// The Service.
        service: ServiceRef,
        /// The nodes (empty: every node).
        nodes: Vec<String>,
    },
    /// The application's configuration is wrong (the seed's database password): its pods exit
    /// at start and crash-loop.
    AppBadConfig {
        /// Namespace of the pods.
        namespace: String,
        /// Which pods (labels).
        selector: BTreeMap<String, String>,
        /// The config key (env var) to change.
        key: String,
        /// The wrong value.
        value: String,
    },
    /// A catalog fault whose backend implementation has not landed yet; runs report `skip`.
    NotYetModelled {
        /// The fault kind, e.g. `proxy-down`.
        kind: &'static str,
    },
}

impl Fault {
    /// The vocabulary name.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::DnsForwardLoop { .. } => "dns-forward-loop",
            Fault::DnsUpstreamServfail => "dns-upstream-servfail",
            Fault::DnsUpstreamRefusesHinfo => "dns-upstream-refuses-hinfo",
            Fault::DnsUpstreamDropsHinfo => "dns-upstream-drops-hinfo",
            Fault::DnsExtraForward { .. } => "dns-extra-forward",
            Fault::DnsUpstreamTimeout => "dns-upstream-timeout",
            Fault::DnsPodsDown => "dns-pods-down",
            Fault::DnsApiUnsynced => "dns-api-unsynced",
            Fault::DnsTruncated => "dns-truncated",
            Fault::DnsSlow { .. } => "dns-slow",
            Fault::DnsSearchDomains { .. } => "dns-search-domains",
            Fault::ClientWrongServiceName { .. } => "client-wrong-service-name",
            Fault::ServiceSelectorMismatch { .. } => "service-selector-mismatch",
            Fault::ServiceTargetportWrong { .. } => "service-targetport-wrong",
            Fault::EndpointPartialDown { .. } => "endpoint-partial-down",
            Fault::ProxyDown => "proxy-down",
            Fault::ProxyRulesStale { .. } => "proxy-rules-stale",
            Fault::NodeportBlocked { .. } => "nodeport-blocked",
            Fault::AppBadConfig { .. } => "app-bad-config",
            Fault::NotYetModelled { kind } => kind,
        }
    }
}

/// Something a scenario needs from the machine; without it the scenario is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Requirement {
    /// Packet capture (CAP_NET_RAW): loop probes counted on the wire.
    Capture,
}

/// How a forwarding loop closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopPath {
    /// CoreDNS forwards to a loopback address, which inside its pod is CoreDNS itself.
    #[serde(rename = "self")]
    SelfLoop,
    /// CoreDNS forwards to the upstream resolver, which forwards back to the cluster DNS.
    Upstream,
}

/// A Service named `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ServiceRef {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("service {s:?} must be NAMESPACE/NAME")),
        }
    }
}

/// Who looks a name up during the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The name as typed (`mysql-service`, `www.example.com`).
    pub name: String,
    /// The client pod's namespace.
    pub namespace: String,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Unique name.
    pub name: String,
    /// One line.
    pub summary: String,
    /// Backends it is meant for.
    pub backends: Vec<BackendKind>,
    /// The client lookup, if any.
    pub client: Option<Client>,
    /// Faults, applied in order and reverted in reverse.
    pub faults: Vec<Fault>,
    /// Findings that must all be reported.
    pub expect: Vec<Code>,
    /// Findings that may be reported without failing the scenario.
    pub allow: Vec<Code>,
    /// What it needs from the machine.
    pub requires: Vec<Requirement>,
    /// Where it came from (file path or `builtin:<file>`).
    pub source: String,
}

/// A scenario that failed to load: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ScenarioError {
    /// File path.
    pub source_name: String,
    /// Line and column, 1-based, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

fn line_of(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
}

/// Parses and validates one scenario file.
pub fn parse_scenario(source_name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let err = |location, message: String| ScenarioError {
        source_name: source_name.to_string(),
        location,
        message,
    };
    let file: wire::File = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location().map(|l| (l.line(), l.column()));
        // serde_yaml appends " at line X column Y"; the location is already in front.
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        err(loc, msg.replace('\n', " "))
    })?;
    if let Some(v) = file.version {
        if v != 1 {
            return Err(err(
                line_of(text, "version"),
                format!("unsupported version {v} (this kdiag reads version 1)"),
            ));
        }
    }
    if file.name.trim().is_empty() || file.name.contains(char::is_whitespace) {
        return Err(err(
            line_of(text, "name"),
            format!("name {:?} must be one non-empty word", file.name),
        ));
    }
    let codes = |list: &[String], field: &str| -> Result<Vec<Code>, ScenarioError> {
        list.iter()
            .map(|c| {
                c.parse::<Code>().map_err(|e| {
                    err(
                        line_of(text, c).or_else(|| line_of(text, field)),
                        format!("expect.{field}: {e}"),
                    )
                })
            })
            .collect()
    };
    let expect = codes(&file.expect.findings, "findings")?;
    let allow = codes(&file.expect.allow, "allow")?;
    let mut client = file.client.map(|c| Client {
        name: c.name,
        namespace: c.namespace.unwrap_or_else(|| "default".into()),
    });
    let svc_ref = |s: &str| -> Result<ServiceRef, ScenarioError> {
        s.parse()
            .map_err(|m: String| err(line_of(text, s).or_else(|| line_of(text, "service")), m))
    };
    let mut faults = Vec::new();
    for f in file.faults {
        use wire::Fault as W;
        let fault = match f {
            W::DnsForwardLoop { via, zone, path } => {
                let zone = match zone.as_deref().map(str::trim) {
                    None | Some(".") | Some("") => ".".to_string(),
                    Some(z) => format!("{}.", z.trim_end_matches('.').to_ascii_lowercase()),
                };
                let path = path.unwrap_or(LoopPath::SelfLoop);
                if path == LoopPath::Upstream && zone != "." {
                    return Err(err(
                        line_of(text, "zone"),
                        "dns-forward-loop: path upstream loops every zone; drop `zone`".into(),
                    ));
                }
                let via = match via {
                    None => IpAddr::from([127, 0, 0, 53]),
                    Some(v) => v.parse().map_err(|_| {
                        err(
                            line_of(text, "via"),
                            format!("dns-forward-loop: via {v:?} is not an IP address"),
                        )
                    })?,
                };
                Fault::DnsForwardLoop { via, zone, path }
            }
            W::DnsUpstreamServfail {} => Fault::DnsUpstreamServfail,
            W::DnsUpstreamRefusesHinfo {} => Fault::DnsUpstreamRefusesHinfo,
            W::DnsUpstreamDropsHinfo {} => Fault::DnsUpstreamDropsHinfo,
            W::DnsExtraForward { zone } => Fault::DnsExtraForward {
                zone: format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase()),
            },
            W::DnsUpstreamTimeout {} => Fault::DnsUpstreamTimeout,
            W::DnsPodsDown {} => Fault::DnsPodsDown,
            W::DnsApiUnsynced {} => Fault::DnsApiUnsynced,
            W::DnsTruncated {} => Fault::DnsTruncated,
            W::DnsSlow { delay_ms } => {
                if delay_ms > 30_000 {
                    return Err(err(
                        line_of(text, "delay_ms"),
                        format!("dns-slow: delay_ms {delay_ms} is over the 30000 ms limit"),
                    ));
                }
                Fault::DnsSlow {
                    delay: Duration::from_millis(delay_ms),
                }
            }
            W::DnsSearchDomains { domains } => Fault::DnsSearchDomains { domains },
            W::ClientWrongServiceName { name, namespace } => {
                let namespace = namespace.unwrap_or_else(|| "default".into());
                client = Some(Client {
                    name: name.clone(),
                    namespace: namespace.clone(),
                });
                Fault::ClientWrongServiceName { name, namespace }
            }
            W::ServiceSelectorMismatch { service, selector } => {
                if selector.is_empty() {
                    return Err(err(
                        line_of(text, "selector"),
                        "service-selector-mismatch: selector must not be empty".into(),
                    ));
                }
                Fault::ServiceSelectorMismatch {
                    service: svc_ref(&service)?,
                    selector,
                }
            }
            W::ServiceTargetportWrong {
                service,
                target_port,
            } => {
                if target_port == 0 {
                    return Err(err(
                        line_of(text, "target_port"),
                        "service-targetport-wrong: target_port must be 1..65535".into(),
                    ));
                }
                Fault::ServiceTargetportWrong {
                    service: svc_ref(&service)?,
                    target_port,
                }
            }
            W::EndpointPartialDown { service, count } => {
                let count = count.unwrap_or(1);
                if count == 0 {
                    return Err(err(
                        line_of(text, "count"),
                        "endpoint-partial-down: count must be at least 1".into(),
                    ));
                }
                Fault::EndpointPartialDown {
                    service: svc_ref(&service)?,
                    count,
                }
            }
            W::ProxyDown {} => Fault::ProxyDown,
            W::ProxyRulesStale { service } => Fault::ProxyRulesStale {
                service: svc_ref(&service)?,
            },
            W::NodeportBlocked { service, nodes } => Fault::NodeportBlocked {
                service: svc_ref(&service)?,
                nodes,
            },
            W::CniConfigMissing {} => nym("cni-config-missing"),
            W::CniConfigInvalid {} => nym("cni-config-invalid"),
            W::CniPluginMissing {} => nym("cni-plugin-missing"),
            W::CniBridgeDown {} => nym("cni-bridge-down"),
            W::CniRouteMissing {} => nym("cni-route-missing"),
            W::KubeletDown {} => nym("kubelet-down"),
            W::KubeletApiserverPortWrong {} => nym("kubelet-apiserver-port-wrong"),
            W::KubeletCertExpired {} => nym("kubelet-cert-expired"),
            W::ApiserverDown {} => nym("apiserver-down"),
            W::ControlPlaneManifestBroken {} => nym("control-plane-manifest-broken"),
            W::ConntrackFull {} => nym("conntrack-full"),
            W::NodePartition {} => nym("node-partition"),
            W::AppBadConfig {
                namespace,
                selector,
                key,
                value,
            } => {
                if selector.is_empty() || key.is_empty() {
                    return Err(err(
                        line_of(text, "app-bad-config"),
                        "app-bad-config: selector and key must not be empty".into(),
                    ));
                }
                Fault::AppBadConfig {
                    namespace: namespace.unwrap_or_else(|| "default".into()),
                    selector,
                    key,
                    value,
                }
            }
            W::IptablesBackendSplit {} => nym("iptables-backend-split"),
            W::HairpinOff {} => nym("hairpin-off"),
            W::MtuMismatch {} => nym("mtu-mismatch"),
        };
        faults.push(fault);
    }
    Ok(Scenario {
        name: file.name,
        summary: file.summary,
        backends: file.backends.unwrap_or_else(|| vec![BackendKind::Embedded]),
        client,
        faults,
        expect,
        allow,
        requires: file.requires,
        source: source_name.to_string(),
    })
}

fn nym(kind: &'static str) -> Fault {
    Fault::NotYetModelled { kind }
}

/// The built-in catalog: every file of `scenarios/`, compiled in (see `build.rs`).
pub const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Loads the built-in catalog.
pub fn builtin() -> Result<Vec<Scenario>, ScenarioError> {
    BUILTIN
        .iter()
        .map(|(file, text)| parse_scenario(&format!("builtin:scenarios/{file}"), text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
version: 1
name: coredns-forward-loop
summary: CoreDNS forwards to a resolv.conf that points back at itself
backends: [embedded, netns, kind]
faults:
  - kind: dns-forward-loop
    via: 127.0.0.53
expect:
  findings: [dns.loop, dns.upstream-loopback]
";

    #[test]
    fn loads_the_spec_example() {
        let s = parse_scenario("x.yaml", GOOD).unwrap();
        assert_eq!(s.name, "coredns-forward-loop");
        assert_eq!(s.backends.len(), 3);
        assert_eq!(
            s.faults,
            vec![Fault::DnsForwardLoop {
                via: "127.0.0.53".parse().unwrap(),
                zone: ".".into(),
                path: LoopPath::SelfLoop,
            }]
        );
        assert_eq!(s.expect, vec![Code::DnsLoop, Code::DnsUpstreamLoopback]);
    }

    #[test]
    fn typo_in_a_top_level_field_names_file_line_and_field() {
        let bad = GOOD.replace("faults:", "faluts:");
        let e = parse_scenario("scenarios/x.yaml", &bad).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("scenarios/x.yaml:5:1: unknown field `faluts`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn typo_in_a_fault_param_is_rejected() {
        let bad = GOOD.replace("via:", "vai:");
        let msg = parse_scenario("x.yaml", &bad).unwrap_err().to_string();
        assert!(msg.contains("unknown field `vai`"), "{msg}");
        assert!(msg.starts_with("x.yaml:6:"), "{msg}");
    }

    #[test]
    fn unknown_fault_kind_and_unknown_code() {
        let bad = GOOD.replace("dns-forward-loop", "dns-forward-lop");
        let msg = parse_scenario("x.yaml", &bad).unwrap_err().to_string();
        assert!(msg.contains("unknown variant `dns-forward-lop`"), "{msg}");
        let bad = GOOD.replace("dns.loop,", "dns.lop,");
        let msg = parse_scenario("x.yaml", &bad).unwrap_err().to_string();
        assert!(msg.starts_with("x.yaml:9:"), "{msg}");
        assert!(msg.contains("dns.lop"), "{msg}");
    }

    #[test]
    fn params_on_not_yet_designed_faults_are_rejected() {
        let bad =
            "name: x\nsummary: y\nfaults:\n  - kind: cni-bridge-down\n    node: n1\nexpect: {}\n";
        let msg = parse_scenario("x.yaml", bad).unwrap_err().to_string();
        assert!(msg.contains("unknown field `node`"), "{msg}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "[",
            "name: [1,2",
            "\u{0}",
            "- a\n- b",
            "name: a b\nsummary: s\nexpect: {}",
        ] {
            assert!(parse_scenario("g.yaml", text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn builtin_catalog_loads() {
        let all = builtin().unwrap();
        assert!(all.len() >= 9);
        let mut names: Vec<_> = all.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate scenario names");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,300}") {
            let _ = parse_scenario("p.yaml", &text);
        }
    }
}
