//! `kdiag diagnose`: every applicable probe, all findings worst first.

use crate::output::print_report;
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::Args;
use kdiag_probes::dns::analyze::Budget;
use kdiag_probes::dns::diagnose::{diagnose, ClientSpec, DiagnoseInput};
use kdiag_probes::finding::any_actionable;
use kdiag_probes::Report;
use std::net::SocketAddr;

/// Run every applicable probe and print all findings, worst first.
///
/// Reads the node's files under --root (kubelet config, the resolv.conf kubelet hands CoreDNS,
/// the Corefile) and the cluster state (--cluster-state FILE, or live with --kubeconfig /
/// --context through kubectl), then queries cluster DNS through its VIP and each DNS pod.
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
    /// Latency budget: answers slower than this are dns.slow.
    #[arg(long, default_value = "250ms", value_parser = crate::parse_duration)]
    pub slow: std::time::Duration,
    /// Do not capture packets for the loop check (capture needs root; without it the check
    /// falls back to weaker evidence by itself).
    #[arg(long)]
    pub no_capture: bool,
}

/// Runs `kdiag diagnose`.
pub fn exec(a: DiagnoseArgs, g: &Global) -> Result<i32, CliError> {
    let state = super::cluster_state(g)?;
    if state.is_none() && g.root.is_none() && a.server.is_none() {
        return Err(CliError(
            "nothing to diagnose: give --root DIR (the node's files), --cluster-state FILE or \
             --kubeconfig/--context, or --server IP:PORT"
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
    let report = Report::new(d.findings, serde_json::json!({ "dns": d.observations }));
    print_report(g.format(), &report, "");
    Ok(if any_actionable(&report.findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
