//! What kubelet knows about DNS: its config file, and the resolv.conf it hands to pods.

use serde::Deserialize;
use std::net::IpAddr;

/// The DNS part of a KubeletConfiguration (`/var/lib/kubelet/config.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletDnsConfig {
    /// `clusterDNS`: the nameservers pods get.
    #[serde(default, rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    /// `clusterDomain`, `cluster.local`.
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    /// `resolvConf`: the host file used for `dnsPolicy: Default` pods (CoreDNS) and for the
    /// search domains appended to every pod's search list.
    #[serde(default = "default_resolv")]
    pub resolv_conf: String,
}

fn default_domain() -> String {
    "cluster.local".into()
}

fn default_resolv() -> String {
    "/etc/resolv.conf".into()
}

/// A kubelet config that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse kubelet config{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
pub struct KubeletConfigError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl KubeletDnsConfig {
    /// Parses the YAML; fields other than the DNS ones are ignored.
    pub fn parse(text: &str) -> Result<Self, KubeletConfigError> {
        let cfg: KubeletDnsConfig = serde_yaml::from_str(text).map_err(|e| KubeletConfigError {
            line: e.location().map(|l| l.line()),
            message: e.to_string().replace('\n', " "),
        })?;
        for ip in &cfg.cluster_dns {
            if ip.parse::<IpAddr>().is_err() {
                return Err(KubeletConfigError {
                    line: None,
                    message: format!("clusterDNS entry {ip:?} is not an IP address"),
                });
            }
        }
        Ok(cfg)
    }

    /// The clusterDNS addresses.
    pub fn cluster_dns_ips(&self) -> Vec<IpAddr> {
        self.cluster_dns
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

/// Renders the resolv.conf kubelet writes for a `dnsPolicy: ClusterFirst` pod in `namespace`
/// (kubelet `GetPodDNS`): the three cluster search domains then the host's, duplicates removed,
/// at most 32; at most 3 nameservers from clusterDNS; `options ndots:5`.
pub fn pod_resolv_conf(
    namespace: &str,
    cluster_domain: &str,
    cluster_dns: &[IpAddr],
    host_search: &[String],
) -> String {
    let mut search: Vec<String> = vec![
        format!("{namespace}.svc.{cluster_domain}"),
        format!("svc.{cluster_domain}"),
        cluster_domain.to_string(),
    ];
    for d in host_search {
        let d = d.trim_end_matches('.').to_string();
        if !d.is_empty() && !search.contains(&d) {
            search.push(d);
        }
    }
    search.truncate(32);
    let mut out = format!("search {}\n", search.join(" "));
    for ns in cluster_dns.iter().take(3) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    out.push_str("options ndots:5\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dns_fields_of_a_kubeadm_config() {
        let text = "\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
resolvConf: /run/systemd/resolve/resolv.conf
";
        let c = KubeletDnsConfig::parse(text).unwrap();
        assert_eq!(
            c.cluster_dns_ips(),
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.resolv_conf, "/run/systemd/resolve/resolv.conf");
        let d = KubeletDnsConfig::parse("kind: KubeletConfiguration\n").unwrap();
        assert_eq!(d.cluster_domain, "cluster.local");
        assert_eq!(d.resolv_conf, "/etc/resolv.conf");
    }

    #[test]
    fn bad_configs_are_one_line_errors() {
        for bad in ["clusterDNS: [10.96.0.300]", "clusterDNS: {a: 1}", "]["] {
            let e = KubeletDnsConfig::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("failed to parse kubelet config"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn pod_resolv_conf_like_kubelet() {
        let r = pod_resolv_conf(
            "default",
            "cluster.local",
            &["10.96.0.10".parse().unwrap()],
            &["corp.example.".into(), "cluster.local".into()],
        );
        assert_eq!(
            r,
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
