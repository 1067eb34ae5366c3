//! `kdiag diagnose`: every applicable probe, all findings worst first.

use crate::output::print_report;
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::Args;
use kdiag_probes::dns::analyze::Budget;
use kdiag_probes::dns::diagnose::{diagnose, ClientSpec, DiagnoseInput};
use kdiag_probes::finding::any_actionable;
use kdiag_probes::iptables::split::{mode_mismatch, parse_kube_proxy_mode, Configured, ProxyMode};
use kdiag_probes::service::analyze::fold_dns;
use kdiag_probes::service::collect::{diagnose_services, ServiceDiagnoseInput};
use kdiag_probes::Report;
use std::net::SocketAddr;
use std::path::Path;

use super::trace::{detect, Mode};
use kdiag_probes::cluster::ClusterState;
use kdiag_probes::trace::NodeContext;
use kdiag_probes::Finding;

/// Parses the rules dump in its mode (given or detected like `kdiag trace` does) and
/// cross-checks it against the cluster state.
fn rules_cross_check(
    mode: Option<Mode>,
    path: &Path,
    text: &str,
    state: &ClusterState,
    ctx: &NodeContext,
) -> Result<Vec<Finding>, CliError> {
    let at = |e: &dyn std::fmt::Display| CliError(format!("{}: {e}", path.display()));
    let Some(mode) = mode.or_else(|| detect(text)) else {
        return Err(CliError(format!(
            "{}: cannot tell which kube-proxy mode wrote this; give --mode",
            path.display()
        )));
    };
    Ok(match mode {
        Mode::Iptables => {
            let rules = kdiag_probes::iptables::parse_iptables_save(text).map_err(|e| at(&e))?;
            kdiag_probes::iptables::check::cross_check(&rules, state, ctx)
        }
        Mode::Nftables => {
            let rules = kdiag_probes::nft::parse_ruleset(text).map_err(|e| at(&e))?;
            kdiag_probes::proxy_check::cross_check(state, ctx, "nftables", |p| {
                kdiag_probes::nft::trace(&rules, p, ctx)
            })
        }
        Mode::Ipvs => {
            let table = kdiag_probes::ipvs::parse_ipvs(text).map_err(|e| at(&e))?;
            kdiag_probes::proxy_check::cross_check(state, ctx, "ipvs", |p| {
                kdiag_probes::ipvs::trace(&table, p, ctx)
            })
        }
    })
}

/// Where kubeadm's kube-proxy ConfigMap is mounted, under --root.
const ROOT_KUBE_PROXY_CONFIG: &str = "var/lib/kube-proxy/config.conf";

fn parse_proxy_mode(s: &str) -> Result<ProxyMode, String> {
    s.parse()
        .map_err(|e: kdiag_probes::iptables::split::UnknownMode| e.to_string())
}

/// --live-rules: the backend-split findings, and the live iptables dump (to cross-check).
fn live_rules(
    a: &DiagnoseArgs,
    g: &Global,
) -> Result<(Vec<kdiag_probes::Finding>, Option<String>), CliError> {
    let configured = match (a.proxy_mode, &g.root) {
        (Some(mode), _) => Some(Configured {
            mode,
            source: format!("--proxy-mode {mode}"),
        }),
        (None, Some(root)) if root.join(ROOT_KUBE_PROXY_CONFIG).exists() => {
            let path = root.join(ROOT_KUBE_PROXY_CONFIG);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError(format!("failed to read {}: {e}", path.display())))?;
            let (mode, line) = parse_kube_proxy_mode(&text)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            Some(Configured {
                mode,
                source: format!("{} line {line}: mode {mode}", path.display()),
            })
        }
        _ => None,
    };
    let live = kdiag_probes::proxy_live::inspect(None, false, g.timeout)
        .map_err(|e| CliError(e.to_string()))?;
    let mut findings = live.findings;
    if let Some(c) = &configured {
        findings.extend(mode_mismatch(c, &live.programmed));
    }
    let iptables = live
        .programmed
        .iter()
        .any(|p| p.mode == ProxyMode::Iptables)
        .then_some(live.iptables)
        .flatten();
    Ok((findings, iptables.map(|c| c.text)))
}

/// Run every applicable probe and print all findings, worst first.
///
/// Reads the node's files under --root (kubelet config, the resolv.conf kubelet hands CoreDNS,
/// the Corefile) and the cluster state (--cluster-state FILE, or live with --kubeconfig /
/// --context through kubectl), then queries cluster DNS through its VIP and each DNS pod.
///
/// With a cluster state it also diagnoses Services, in the "Debug Services" order: defined
/// right, name resolves, endpoints, endpoints answer on targetPort, ClusterIP answers, each
/// node's NodePort answers; and crash-looping pods (termination message, last log lines from
/// the node's /var/log/pods). By default every Service with a selector and a TCP port except
/// kube-dns (up to --max-services); --service NS/NAME picks some.
///
/// Example (against a lab from `kdiag lab up`):
///   kdiag diagnose --root $LAB/nodes/node-1 --cluster-state $LAB/cluster-state.json --name web-service
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DiagnoseArgs {
    /// Also reproduce a client's lookup of this name (e.g. the Service name an app is configured with).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The client's namespace, for --name.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// An external name to test CoreDNS forwarding with.
    #[arg(long, default_value = "example.com.")]
    pub external_name: String,
    /// Query this DNS server instead of the cluster DNS VIP.
    #[arg(long, value_name = "IP:PORT")]
    pub server: Option<SocketAddr>,
    /// Diagnose only this Service (repeatable); default: every Service with a selector.
    #[arg(long = "service", value_name = "NS/NAME")]
    pub services: Vec<String>,
    /// Most Services to probe.
    #[arg(long, default_value_t = 50)]
    pub max_services: usize,
    /// Attempts through each Service VIP.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub vip_attempts: u16,
    /// Latency budget: answers slower than this are dns.slow.
    #[arg(long, default_value = "250ms", value_parser = crate::parse_duration)]
    pub slow: std::time::Duration,
    /// Do not capture packets for the loop check (capture needs root; without it the check
    /// falls back to weaker evidence by itself).
    #[arg(long)]
    pub no_capture: bool,
    /// A saved dump of kube-proxy's rules on this node (`iptables-save`, `nft list ruleset`,
    /// `nft -j list ruleset`, `ipvsadm -Sn`/`-Ln`, /proc/net/ip_vs): cross-check them against the
    /// cluster state (proxy.rules-missing, proxy.rules-stale; proxy.backend-split for iptables).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<std::path::PathBuf>,
    /// Read kube-proxy's rules from the current network namespace (root): proxy.backend-split
    /// when they are in both iptables-legacy and iptables-nft, or in another mode than
    /// kube-proxy's (--proxy-mode, else `mode:` in --root's var/lib/kube-proxy/config.conf);
    /// with a cluster state and no --rules, the live iptables rules are cross-checked too.
    #[arg(long)]
    pub live_rules: bool,
    /// kube-proxy's configured mode, for --live-rules.
    #[arg(long, value_name = "MODE", requires = "live_rules", value_parser = parse_proxy_mode)]
    pub proxy_mode: Option<ProxyMode>,
    /// kube-proxy's mode for --rules; detected from the dump when not given.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// This node's IPs (for the rules cross-check; default: every InternalIP in the state).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<std::net::IpAddr>,
}

/// Runs `kdiag diagnose`.
pub fn exec(a: DiagnoseArgs, g: &Global) -> Result<i32, CliError> {
    let state = super::cluster_state(g)?;
    // Bad input fails before any probe runs.
    let (live_findings, live_text) = if a.live_rules {
        live_rules(&a, g)?
    } else {
        (Vec::new(), None)
    };
    let rules_label = match &a.rules {
        Some(p) => p.display().to_string(),
        None => "live iptables-save".to_string(),
    };
    let rules_text = match &a.rules {
        Some(path) => {
            if state.is_none() {
                return Err(CliError(
                    "--rules needs the cluster state to compare with: give --cluster-state or \
                     --kubeconfig/--context"
                        .into(),
                ));
            }
            let bytes =
                std::fs::read(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| CliError(format!("{}: not UTF-8 text", path.display())))?,
            )
        }
        None => live_text.filter(|_| state.is_some()),
    };
    if state.is_none() && g.root.is_none() && a.server.is_none() && a.live_rules {
        // only the rules: no DNS or Service to probe
        let report = Report::new(live_findings, serde_json::json!({}));
        print_report(g.format(), &report, "");
        return Ok(if any_actionable(&report.findings) {
            EXIT_FINDINGS
        } else {
            EXIT_OK
        });
    }
    // The rules cross-check is pure: run it now, so a bad dump fails before any probe runs.
    let rules_findings = match (&rules_text, &state) {
        (Some(text), Some(st)) => {
            let node_ips = if a.node_ips.is_empty() {
                st.nodes
                    .iter()
                    .flat_map(|n| n.status.addresses.iter())
                    .filter(|x| x.type_ == "InternalIP")
                    .filter_map(|x| x.address.parse().ok())
                    .collect()
            } else {
                a.node_ips.clone()
            };
            let ctx = kdiag_probes::trace::NodeContext { node_ips };
            // the live dump is iptables-save output
            let mode = if a.rules.is_some() {
                a.mode
            } else {
                Some(Mode::Iptables)
            };
            rules_cross_check(mode, Path::new(&rules_label), text, st, &ctx)?
        }
        _ => Vec::new(),
    };
    if state.is_none() && g.root.is_none() && a.server.is_none() {
        return Err(CliError(
            "nothing to diagnose: give --root DIR (the node's files), --cluster-state FILE or \
             --kubeconfig/--context, --server IP:PORT, or --live-rules"
                .into(),
        ));
    }
    let d = diagnose(&DiagnoseInput {
        cluster: state.as_ref(),
        root: g.root.as_deref(),
        client: a.name.map(|name| ClientSpec {
            name,
            namespace: a.namespace,
        }),
        external_name: a.external_name,
        timeout: g.timeout,
        budget: Budget {
            latency: a.slow,
            ..Budget::DEFAULT
        },
        server: a.server,
        capture: !a.no_capture,
    })?;
    let mut services = Vec::new();
    for s in &a.services {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                services.push((ns.to_string(), name.to_string()))
            }
            _ => return Err(CliError(format!("--service {s:?} must be NAMESPACE/NAME"))),
        }
    }
    let mut findings = d.findings;
    let svc = state.as_ref().map(|st| {
        diagnose_services(&ServiceDiagnoseInput {
            cluster: st,
            services,
            root: g.root.as_deref(),
            dns_server: d.observations.vip.as_ref().map(|q| q.spec.server),
            zone: d.observations.zone.clone(),
            timeout: g.timeout,
            vip_attempts: usize::from(a.vip_attempts),
            nodeport_attempts: 2,
            max_services: a.max_services,
            max_endpoints: 16,
        })
    });
    if let Some(svc) = &svc {
        let mut svc_findings = svc.findings.clone();
        fold_dns(&d.observations, &mut findings, &mut svc_findings);
        findings.extend(svc_findings);
    }
    findings.extend(rules_findings);
    findings.extend(live_findings);
    kdiag_probes::proxy_check::explain_vip_failures(&mut findings);
    let report = Report::new(
        findings,
        serde_json::json!({ "dns": d.observations, "services": svc }),
    );
    print_report(g.format(), &report, "");
    Ok(if any_actionable(&report.findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
