//! Renders each node's filesystem root: the files a node-side probe reads through `--root`.
//! Pure: returns (relative path, contents) pairs; the lab writes them.

use crate::model::{Cluster, Node};
use kdiag_probes::dns::kubelet::pod_resolv_conf;
use std::net::IpAddr;

/// Relative path of the kubelet config under a node root.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Relative path of the resolv.conf kubelet hands `dnsPolicy: Default` pods (CoreDNS).
pub const KUBELET_RESOLV_CONF: &str = "run/systemd/resolve/resolv.conf";
/// Relative path of the CoreDNS Corefile (the `coredns` ConfigMap, as mounted).
pub const COREFILE: &str = "etc/coredns/Corefile";
/// Relative path of the resolv.conf kubelet hands `ClusterFirst` pods in `default`.
pub const POD_RESOLV_CONF: &str = "var/lib/kdiag/pod-resolv.conf";

/// What the node files depend on beyond the cluster model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDns {
    /// The nameservers in the node's upstream resolv.conf (what CoreDNS forwards to).
    pub upstreams: Vec<IpAddr>,
    /// The node's own search domains (kubelet appends them to every pod's search list).
    pub search: Vec<String>,
    /// The DNS port the lab serves on (53 when it could bind it).
    pub port: u16,
    /// Extra Corefile server blocks `ZONE:PORT { forward . IP }` (no `loop` plugin in them,
    /// as is common: the loop plugin then never checks these zones).
    pub zone_forwards: Vec<(String, IpAddr)>,
    /// forward's `max_concurrent` in the main block.
    pub max_concurrent: usize,
}

/// The files of one node's root. kube-proxy's rule files come from `proxy`, the cluster as
/// kube-proxy last synced it (`cluster` itself unless kube-proxy stopped syncing), as
/// kube-proxy on `node` programs them.
pub fn render_node(
    cluster: &Cluster,
    proxy: &Cluster,
    node: &Node,
    dns: &NodeDns,
) -> Vec<(&'static str, String)> {
    let cluster_dns: Vec<IpAddr> = cluster
        .service("kube-system", "kube-dns")
        .and_then(|s| s.cluster_ip)
        .map(IpAddr::V4)
        .into_iter()
        .collect();
    let mut host = String::from(
        "# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).\n\
         # It lists the real upstream DNS servers (the embedded lab's upstream resolver).\n",
    );
    for ns in &dns.upstreams {
        host.push_str(&format!("nameserver {ns}\n"));
    }
    if !dns.search.is_empty() {
        host.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    let kubelet = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         clusterDNS:\n{}\
         clusterDomain: {}\n\
         resolvConf: /{KUBELET_RESOLV_CONF}\n",
        cluster_dns
            .iter()
            .map(|ip| format!("- {ip}\n"))
            .collect::<String>(),
        cluster.domain
    );
    let mut corefile = format!(
        "# kubeadm's default Corefile. Inside the CoreDNS pod (dnsPolicy: Default) /etc/resolv.conf\n\
         # is kubelet's resolvConf: /{KUBELET_RESOLV_CONF} on the node.\n\
         .:{port} {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       \
         fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    \
         forward . /etc/resolv.conf {{\n       max_concurrent {max}\n    }}\n    cache 30\n    \
         loop\n    reload\n    loadbalance\n}}\n",
        port = dns.port,
        domain = cluster.domain,
        max = dns.max_concurrent,
    );
    for (zone, ip) in &dns.zone_forwards {
        corefile.push_str(&format!(
            "{}:{} {{\n    errors\n    forward . {ip}\n}}\n",
            zone.trim_end_matches('.'),
            dns.port
        ));
    }
    let pod = pod_resolv_conf("default", &cluster.domain, &cluster_dns, &dns.search);
    vec![
        (KUBELET_CONFIG, kubelet),
        (KUBELET_RESOLV_CONF, host.clone()),
        ("etc/resolv.conf", host),
        (COREFILE, corefile),
        (POD_RESOLV_CONF, pod),
        (
            crate::kube_proxy::IPTABLES_SAVE,
            crate::kube_proxy::render_iptables(proxy, node),
        ),
        (
            crate::kube_proxy::NFT_RULESET,
            crate::kube_proxy::render_nft(proxy, node),
        ),
    ]
}

/// kube-proxy's IPVS-mode files of one node (they differ per node: NodePorts listen on the
/// node's IP, `externalTrafficPolicy: Local` uses its own endpoints), from `proxy`, the
/// cluster as kube-proxy last synced it.
pub fn render_node_ipvs(proxy: &Cluster, node: &Node) -> Vec<(&'static str, String)> {
    let r = crate::kube_proxy::render_ipvs(proxy, node);
    vec![
        (crate::kube_proxy::IPVSADM, r.ipvsadm),
        (crate::kube_proxy::IPSET, r.ipset),
        (crate::kube_proxy::IPVS_IPTABLES_SAVE, r.iptables),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AddressPlan;

    #[test]
    fn node_files_agree_with_each_other() {
        let plan = AddressPlan { slice: 9 };
        let c = Cluster::demo(&plan, 53);
        let files = render_node(
            &c,
            &c,
            &c.nodes[0],
            &NodeDns {
                upstreams: vec![IpAddr::V4(plan.upstream_ip())],
                search: vec!["corp.example".into()],
                port: 53,
                zone_forwards: vec![("corp.example.".into(), "127.0.0.1".parse().unwrap())],
                max_concurrent: 100,
            },
        );
        let get = |p: &str| files.iter().find(|(k, _)| *k == p).unwrap().1.clone();
        let kubelet =
            kdiag_probes::dns::kubelet::KubeletDnsConfig::parse(&get(KUBELET_CONFIG)).unwrap();
        assert_eq!(kubelet.cluster_dns, vec!["127.9.1.10".to_string()]);
        assert_eq!(kubelet.resolv_conf, format!("/{KUBELET_RESOLV_CONF}"));
        assert!(get(KUBELET_RESOLV_CONF).contains("nameserver 127.9.0.10\n"));
        assert_eq!(
            get(POD_RESOLV_CONF),
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 127.9.1.10\noptions ndots:5\n"
        );
        let cf = kdiag_probes::dns::corefile::parse_corefile(&get(COREFILE)).unwrap();
        assert_eq!(cf.servers.len(), 2);
        assert!(cf.servers[0].plugin("loop").is_some());
        assert_eq!(cf.servers[1].first_zone(), "corp.example.");
        assert!(cf.servers[1].plugin("loop").is_none());

        let rules = get(crate::kube_proxy::IPTABLES_SAVE);
        let parsed = kdiag_probes::iptables::parse_iptables_save(&rules).unwrap();
        assert!(parsed
            .table("nat")
            .unwrap()
            .chain("KUBE-SERVICES")
            .is_some());
        let nft_text = get(crate::kube_proxy::NFT_RULESET);
        let nft = kdiag_probes::nft::parse_text(&nft_text).unwrap();
        assert!(nft
            .table(&kdiag_probes::nft::Family::Ip, "kube-proxy")
            .is_some_and(|t| t.chain("services").is_some()));
    }
}
