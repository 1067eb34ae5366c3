//! `kdiag loop`: CoreDNS forwarding-loop detection from outside CoreDNS.

use crate::output::print_report;
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::Args;
use kdiag_probes::dns::diagnose::{coredns_logs, COREFILE, KUBELET_CONFIG};
use kdiag_probes::dns::kubelet::KubeletDnsConfig;
use kdiag_probes::dns::loopcheck::{check_loops, LoopCheckInput, Source};
use kdiag_probes::finding::any_actionable;
use kdiag_probes::Report;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Detect CoreDNS forwarding loops, combining every source of evidence it can reach.
///
///   static   the Corefile's `forward` targets and the resolv.conf they name: a loopback
///            (127.0.0.53, systemd-resolved's stub) or the server's own address loops
///   logs     CoreDNS's `plugin/loop: Loop (A -> B) detected for zone "Z"` line
///   active   unique HINFO probes `<u62>.<u62>.<zone>` for `.` and each forwarded zone; as root
///            the probe's arrivals at the server are counted on the wire (more than twice is a
///            loop, CoreDNS's own threshold); without capture only the response signature is
///            used, and the finding says it is weaker
///
/// Examples:
///   kdiag loop --corefile Corefile --resolv-conf /etc/resolv.conf      (no server needed)
///   kdiag loop --server 10.96.0.10 --logs coredns.log
///   kdiag loop --root /host --cluster-state state.json                 (node files + VIP)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LoopArgs {
    /// The DNS server to probe (IP or IP:PORT); default: the kube-dns VIP from the cluster state.
    #[arg(long, short = 's', value_name = "IP[:PORT]")]
    pub server: Option<String>,
    /// The CoreDNS Corefile (default with --root: etc/coredns/Corefile).
    #[arg(long, value_name = "FILE")]
    pub corefile: Option<PathBuf>,
    /// The resolv.conf CoreDNS sees as /etc/resolv.conf (kubelet's resolvConf; default with
    /// --root: the file kubelet's config names).
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// CoreDNS logs (repeatable; default with --root: var/log/pods/kube-system_coredns-*).
    #[arg(long, value_name = "FILE")]
    pub logs: Vec<PathBuf>,
    /// Fresh probe names per zone.
    #[arg(long, default_value_t = 2)]
    pub probes: usize,
    /// Do not capture packets (capture needs root).
    #[arg(long)]
    pub no_capture: bool,
    /// Skip the active probe (files and logs only).
    #[arg(long)]
    pub no_probe: bool,
}

fn read(path: &Path) -> Result<Source, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError(format!("{}: not UTF-8 text", path.display())))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

fn parse_server(s: &str) -> Result<SocketAddr, CliError> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| CliError(format!("invalid --server {s:?}: expected IP or IP:PORT")))
}

/// Runs `kdiag loop`.
pub fn exec(a: LoopArgs, g: &Global) -> Result<i32, CliError> {
    let state = super::cluster_state(g)?;
    let mut corefile = a.corefile.as_deref().map(read).transpose()?;
    let mut resolv: Vec<(String, Source)> = match &a.resolv_conf {
        Some(p) => vec![("/etc/resolv.conf".into(), read(p)?)],
        None => vec![],
    };
    let mut logs: Vec<Source> = a.logs.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    let mut cluster_dns: Option<IpAddr> = None;
    if let Some(root) = &g.root {
        if corefile.is_none() {
            let p = root.join(COREFILE);
            if p.exists() {
                corefile = Some(read(&p)?);
            }
        }
        let kc = root.join(KUBELET_CONFIG);
        if kc.exists() {
            let k = KubeletDnsConfig::parse(&read(&kc)?.text)
                .map_err(|e| CliError(format!("{}: {e}", kc.display())))?;
            cluster_dns = k.cluster_dns_ips().first().copied();
            if resolv.is_empty() {
                let p = root.join(k.resolv_conf.trim_start_matches('/'));
                if p.exists() {
                    let mut s = read(&p)?;
                    s.name = k.resolv_conf.clone();
                    resolv.push(("/etc/resolv.conf".into(), s));
                }
            }
        }
        if logs.is_empty() {
            logs = coredns_logs(root);
        }
    }
    // The server and its own addresses.
    let mut own: Vec<IpAddr> = Vec::new();
    let mut owned: Vec<IpAddr> = Vec::new();
    let mut vip: Option<SocketAddr> = None;
    if let Some(st) = &state {
        owned = st.owned_addresses();
        if let Some(svc) = st.service("kube-system", "kube-dns") {
            let port = svc
                .spec
                .ports
                .iter()
                .find(|p| p.protocol == "UDP")
                .map(|p| p.port)
                .unwrap_or(53);
            vip = svc.cluster_ip().map(|ip| SocketAddr::new(ip, port));
            own.extend(svc.cluster_ip());
            if let Some(ep) = st.endpoints_of("kube-system", "kube-dns") {
                own.extend(
                    ep.ready()
                        .chain(ep.not_ready())
                        .filter_map(|a| a.ip.parse::<IpAddr>().ok()),
                );
            }
        }
    }
    let server = match &a.server {
        Some(s) => Some(parse_server(s)?),
        None => vip.or_else(|| cluster_dns.map(|ip| SocketAddr::new(ip, 53))),
    };
    if let Some(s) = server {
        own.push(s.ip());
    }
    let owned: Vec<IpAddr> = owned.into_iter().filter(|ip| !own.contains(ip)).collect();
    let check = check_loops(&LoopCheckInput {
        server: if a.no_probe { None } else { server },
        corefile,
        resolv,
        logs,
        own,
        cluster_owned: owned,
        timeout: g.timeout.min(Duration::from_secs(3)),
        probes_per_zone: a.probes.clamp(1, 5),
        capture: !a.no_capture,
        slow: Duration::from_millis(1500),
    })?;
    let mut table = String::new();
    for s in &check.sources {
        table.push_str(&format!(";; evidence source: {s}\n"));
    }
    if !check.probes.is_empty() {
        table.push_str(&format!(";; capture: {}\n", check.capture));
    }
    for p in &check.probes {
        let seen = p
            .sightings
            .map(|n| format!(", seen {n}x at the server"))
            .unwrap_or_default();
        table.push_str(&format!(
            ";; zone {:<16} {} -> {}{seen}\n",
            p.zone,
            p.outcome.spec.name,
            p.outcome.summary()
        ));
    }
    let report = Report::new(
        check.findings.clone(),
        serde_json::json!({
            "sources": check.sources,
            "capture": check.capture,
            "probes": check.probes,
        }),
    );
    print_report(g.format(), &report, &table);
    Ok(if any_actionable(&report.findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
