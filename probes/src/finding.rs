//! The shared result model: findings with stable codes, severities, evidence and remediation.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a finding is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a run.
    Info,
    /// Something is wrong or about to be.
    Warning,
    /// Something is broken.
    Critical,
}

impl Severity {
    /// The lowercase name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $sev:ident; )*) => {
        /// A stable finding code (SPEC §3). The string form (`dns.loop`) is API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Code {
            /// Every code in the catalog, in catalog order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable dotted name, e.g. `dns.loop`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// One line saying what the code means.
            pub fn doc(self) -> &'static str {
                match self { $(Code::$variant => concat!($($doc),*).trim_ascii(),)* }
            }

            /// The severity a finding of this code has unless a rule says otherwise.
            pub fn default_severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }
        }
    };
}

codes! {
    /// A forwarding loop: a unique HINFO probe came back to the server.
    DnsLoop = "dns.loop", Critical;
    /// The resolv.conf CoreDNS forwards to (or kubelet hands pods) names a loopback server.
    DnsUpstreamLoopback = "dns.upstream-loopback", Critical;
    /// The cluster DNS VIP or every DNS pod times out or refuses.
    DnsServerUnreachable = "dns.server-unreachable", Critical;
    /// The kube-dns Service has no ready endpoints.
    DnsNoEndpoints = "dns.no-endpoints", Critical;
    /// The cluster DNS server answers SERVFAIL for cluster names.
    DnsServfail = "dns.servfail", Critical;
    /// Cluster names resolve but external names fail (upstream down or failing).
    DnsUpstreamFailure = "dns.upstream-failure", Warning;
    /// The name does not exist; the nearest existing Service name is suggested.
    DnsNxdomain = "dns.nxdomain", Warning;
    /// The search path turns one lookup into many queries.
    DnsNdotsAmplification = "dns.ndots-amplification", Info;
    /// A UDP answer is truncated and the TCP fallback fails.
    DnsTruncated = "dns.truncated", Critical;
    /// Answers arrive beyond the latency budget.
    DnsSlow = "dns.slow", Warning;
    /// The Service's selector matches no ready pod.
    SvcNoEndpoints = "svc.no-endpoints", Critical;
    /// Endpoints exist but nothing listens on the targetPort.
    SvcTargetportClosed = "svc.targetport-closed", Critical;
    /// Some endpoints answer, some do not.
    SvcPartialEndpoints = "svc.partial-endpoints", Warning;
    /// Endpoints answer directly but the ClusterIP does not.
    SvcVipUnreachable = "svc.vip-unreachable", Critical;
    /// The NodePort fails on some or all nodes.
    SvcNodeportUnreachable = "svc.nodeport-unreachable", Critical;
    /// A pod cannot reach itself through its own Service.
    SvcHairpinBroken = "svc.hairpin-broken", Warning;
    /// A Service exists but kube-proxy programmed no rules for it.
    ProxyRulesMissing = "proxy.rules-missing", Critical;
    /// Rules point at endpoints the API no longer lists.
    ProxyRulesStale = "proxy.rules-stale", Warning;
    /// kube-proxy healthz fails or its DaemonSet is not running everywhere.
    ProxyUnhealthy = "proxy.unhealthy", Critical;
    /// Rules live in both iptables-legacy and iptables-nft, or in a mode kube-proxy does not use.
    ProxyBackendSplit = "proxy.backend-split", Critical;
    /// No CNI conflist in the conf dir.
    CniConfigMissing = "cni.config-missing", Critical;
    /// The CNI conflist cannot be parsed.
    CniConfigInvalid = "cni.config-invalid", Critical;
    /// A CNI plugin `type` has no binary in the bin dir.
    CniPluginMissing = "cni.plugin-missing", Critical;
    /// Bridge down, veth missing, or no route to another node's pod CIDR.
    CniDatapathBroken = "cni.datapath-broken", Critical;
    /// The CNI IPAM range disagrees with the node's PodCIDR.
    CniPodcidrMismatch = "cni.podcidr-mismatch", Warning;
    /// Pod MTU larger than the path allows.
    CniMtuMismatch = "cni.mtu-mismatch", Warning;
    /// kubelet healthz fails or the node is NotReady/Unknown.
    NodeKubeletDown = "node.kubelet-down", Critical;
    /// kubelet config or kubeconfig points at a wrong apiserver address or port.
    NodeKubeletMisconfig = "node.kubelet-misconfig", Critical;
    /// The kubelet client certificate is expired or not yet valid.
    NodeCertExpired = "node.cert-expired", Critical;
    /// Memory, disk or PID pressure.
    NodePressure = "node.pressure", Warning;
    /// nf_conntrack is near or at its limit.
    NodeConntrackFull = "node.conntrack-full", Warning;
    /// The API server is unreachable or not ready.
    CpApiserverDown = "cp.apiserver-down", Critical;
    /// A control-plane static pod manifest is missing or broken.
    CpComponentMissing = "cp.component-missing", Critical;
    /// A pod restarts; its termination message and last log lines say why.
    AppCrashloop = "app.crashloop", Warning;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no catalog code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown finding code {0:?} (see `kdiag scenario codes` for the catalog)")]
pub struct UnknownCode(pub String);

impl std::str::FromStr for Code {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_string()))
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One piece of evidence: what was looked at and what it showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was looked at: `query kubernetes.default.svc.cluster.local. A @10.96.0.10:53/udp`,
    /// `file /etc/resolv.conf:3`, `endpoints kube-system/kube-dns`.
    pub source: String,
    /// What it showed: `SERVFAIL in 2.0 s`, `nameserver 127.0.0.53`.
    pub detail: String,
}

impl Evidence {
    /// Builds evidence from anything printable.
    pub fn new(source: impl Into<String>, detail: impl Into<String>) -> Self {
        Evidence {
            source: source.into(),
            detail: detail.into(),
        }
    }
}

/// A diagnosis: a stable code, how bad, what it means here, why we think so, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable catalog code.
    pub code: Code,
    /// How bad it is.
    pub severity: Severity,
    /// One line a person reads first.
    pub summary: String,
    /// What was observed, in order.
    pub evidence: Vec<Evidence>,
    /// What a person can do about it.
    pub remediation: String,
}

impl Finding {
    /// A finding with the code's default severity and no evidence yet.
    pub fn new(code: Code, summary: impl Into<String>) -> Self {
        Finding {
            code,
            severity: code.default_severity(),
            summary: summary.into(),
            evidence: Vec::new(),
            remediation: String::new(),
        }
    }

    /// Overrides the severity.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Appends one piece of evidence.
    pub fn evidence(mut self, source: impl Into<String>, detail: impl Into<String>) -> Self {
        self.evidence.push(Evidence::new(source, detail));
        self
    }

    /// Sets the remediation.
    pub fn remediation(mut self, text: impl Into<String>) -> Self {
        self.remediation = text.into();
        self
    }
}

/// Sorts findings worst first, then by code, keeping the order of equal ones.
pub fn sort_worst_first(findings: &mut [Finding]) {
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
}

/// True when any finding is at warning or above (exit code 1 per SPEC §2).
pub fn any_actionable(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity >= Severity::Warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert_eq!(c.as_str().parse::<Code>().unwrap(), *c);
            assert!(!c.doc().is_empty(), "{c} has no doc line");
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), *c);
        }
        assert_eq!(Code::ALL.len(), 34);
    }

    #[test]
    fn unknown_code_is_an_error_naming_it() {
        let err = "dns.lop".parse::<Code>().unwrap_err();
        assert!(err.to_string().contains("dns.lop"));
    }

    #[test]
    fn worst_first() {
        let mut v = vec![
            Finding::new(Code::DnsNdotsAmplification, "a"),
            Finding::new(Code::DnsNoEndpoints, "b"),
            Finding::new(Code::DnsSlow, "c"),
        ];
        sort_worst_first(&mut v);
        let order: Vec<_> = v.iter().map(|f| f.code).collect();
        assert_eq!(
            order,
            [
                Code::DnsNoEndpoints,
                Code::DnsSlow,
                Code::DnsNdotsAmplification
            ]
        );
        assert!(any_actionable(&v));
        assert!(!any_actionable(&v[2..]));
    }
}
