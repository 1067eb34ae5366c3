//! `kdiag reach TARGET...`: TCP/UDP/HTTP reachability with the distribution over backends.

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::Args;
use kdiag_probes::finding::any_actionable;
use kdiag_probes::service::analyze::{summarize, Affinity, ReachSummary};
use kdiag_probes::service::collect::{
    diagnose_services, run, Probe, ProbeKind, ServiceDiagnoseInput, MAX_ATTEMPTS, MAX_CONCURRENCY,
};
use kdiag_probes::service::view::service_view;
use kdiag_probes::service::{parse_target, Attempt, Proto, Target};
use kdiag_probes::{Finding, Report};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Connect to targets N times each and show how every attempt ended and which backend
/// answered.
///
/// TARGET is IP:PORT[/tcp|udp], http://IP:PORT/path, or NAMESPACE/SERVICE[:PORT] (resolved
/// through --cluster-state or --kubeconfig/--context; the port is the Service port's number
/// or name, the first port by default). Each attempt is a new connection, classified as
/// answered (with what), connected, refused, timeout, unreachable or reset (accepted, then
/// reset: a relay whose backend is dead). A serve_hostname-style reply (or, for a Service,
/// a reply naming one of its pods) names the backend, which gives the distribution over
/// endpoints and shows session affinity.
///
/// TCP attempts half-close after connecting and read what the peer says before it closes
/// (a banner, a pod name); HTTP attempts send GET. UDP attempts send one datagram; no
/// answer is a timeout, which for UDP does not prove anything is down.
///
/// For a Service whose attempts fail, the Service diagnosis runs and its findings are
/// printed. Exit 1 when any attempt failed or a finding is at warning or above.
///
/// Example (against a lab from `kdiag lab up`):
///   kdiag reach default/hostnames --cluster-state $LAB/cluster-state.json
///   kdiag reach http://127.28.1.22:80/ 127.28.1.21:3306 -n 5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReachArgs {
    /// What to reach.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Attempts per target (at most 1000).
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub count: usize,
    /// Attempts in flight at once (at most 16).
    #[arg(short = 'j', long = "concurrency", default_value_t = 1)]
    pub concurrency: usize,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    target: String,
    probe: Probe,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready_endpoints: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_affinity: Option<&'static str>,
    summary: ReachSummary,
    attempts: Vec<Attempt>,
}

struct Resolved {
    probe: Probe,
    service: Option<(String, String)>,
    known: Vec<String>,
    ready: Option<usize>,
    affinity: Option<&'static str>,
}

fn resolve(
    text: &str,
    state: Option<&kdiag_probes::cluster::ClusterState>,
) -> Result<Resolved, CliError> {
    let target = parse_target(text)?;
    let plain = |probe| Resolved {
        probe,
        service: None,
        known: vec![],
        ready: None,
        affinity: None,
    };
    match target {
        Target::Socket { addr, proto } => Ok(plain(Probe {
            addr,
            kind: match proto {
                Proto::Tcp => ProbeKind::Tcp,
                Proto::Udp => ProbeKind::Udp,
            },
        })),
        Target::Http { addr, path } => Ok(plain(Probe {
            addr,
            kind: ProbeKind::Http { path },
        })),
        Target::Service {
            namespace,
            name,
            port,
        } => {
            let st = state.ok_or_else(|| {
                CliError(format!(
                    "{text}: a Service target needs --cluster-state FILE or --kubeconfig/--context"
                ))
            })?;
            let view = service_view(st, &namespace, &name, port.as_ref()).ok_or_else(|| {
                CliError(format!(
                    "service {namespace}/{name} is not in the cluster state"
                ))
            })?;
            let p = view
                .port
                .clone()
                .ok_or_else(|| CliError(format!("service {namespace}/{name} has no such port")))?;
            let ip = view.cluster_ip.ok_or_else(|| {
                CliError(format!(
                    "service {namespace}/{name} has no ClusterIP (headless or ExternalName): reach its pods as IP:PORT"
                ))
            })?;
            let kind = if p.protocol == "UDP" {
                ProbeKind::Udp
            } else if p
                .name
                .as_deref()
                .is_some_and(|n| n == "http" || n.starts_with("http-"))
                || p.target == "http"
            {
                ProbeKind::Http { path: "/".into() }
            } else {
                ProbeKind::Tcp
            };
            Ok(Resolved {
                probe: Probe {
                    addr: SocketAddr::new(ip, p.port),
                    kind,
                },
                known: view
                    .pods
                    .iter()
                    .map(|p| p.name.rsplit('/').next().unwrap_or(&p.name).to_string())
                    .collect(),
                ready: Some(view.ready().count()),
                affinity: Some(if view.client_ip_affinity {
                    "ClientIP"
                } else {
                    "None"
                }),
                service: Some((namespace, name)),
            })
        }
    }
}

fn describe_probe(p: &Probe) -> String {
    match &p.kind {
        ProbeKind::Tcp => format!("{}/tcp", p.addr),
        ProbeKind::Udp => format!("{}/udp", p.addr),
        ProbeKind::Http { path } => format!("http://{}{path}", p.addr),
    }
}

fn table(reports: &[TargetReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let m = &r.summary;
        let _ = writeln!(
            s,
            "{}{}: {} of {} attempts reached it",
            r.target,
            if describe_probe(&r.probe).starts_with(&r.target) {
                String::new()
            } else {
                format!(" ({})", describe_probe(&r.probe))
            },
            m.reached,
            m.attempts
        );
        let outcomes: Vec<String> = m.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  outcomes  {}", outcomes.join(", "));
        if !m.backends.is_empty() {
            let w = m.backends.keys().map(|k| k.len()).max().unwrap_or(7).max(7);
            let _ = writeln!(s, "  {:<w$}  ANSWERS", "BACKEND");
            for (b, n) in &m.backends {
                let _ = writeln!(s, "  {b:<w$}  {n:>3}  {}", "#".repeat(*n.min(&60)));
            }
        }
        let ready = r
            .ready_endpoints
            .map(|n| format!("; {n} ready endpoints"))
            .unwrap_or_default();
        let configured = r
            .session_affinity
            .map(|a| format!("; sessionAffinity {a}"))
            .unwrap_or_default();
        let aff = match &m.affinity {
            Affinity::Spread { backends } => {
                format!("none (answers spread over {backends} backends{ready}{configured})")
            }
            Affinity::Sticky { backend, .. } => {
                format!("sticky: every answer from {backend}{ready}{configured}")
            }
            Affinity::Single { backend } => {
                format!("one backend answered: {backend}{ready}{configured}")
            }
            Affinity::Unknown => {
                format!("unknown (too few answers naming a backend{ready}{configured})")
            }
        };
        let _ = writeln!(s, "  affinity  {aff}");
        let _ = writeln!(s, "  latency   p50 {}, max {}", us(m.p50_us), us(m.max_us));
        let firsts: Vec<String> = r
            .attempts
            .iter()
            .filter(|a| !a.outcome.reached())
            .take(3)
            .map(|a| format!("{} ({})", a.outcome, us(a.latency.as_micros() as u64)))
            .collect();
        if !firsts.is_empty() {
            let _ = writeln!(s, "  failures  {}", firsts.join("; "));
        }
        s.push('\n');
    }
    s
}

fn us(v: u64) -> String {
    if v < 1000 {
        format!("{v} µs")
    } else {
        format!("{:.1} ms", v as f64 / 1000.0)
    }
}

/// Runs `kdiag reach`.
pub fn exec(a: ReachArgs, g: &Global) -> Result<i32, CliError> {
    if a.count == 0 || a.count > MAX_ATTEMPTS {
        return Err(CliError(format!(
            "-n {} is out of range (1..={MAX_ATTEMPTS})",
            a.count
        )));
    }
    if a.concurrency == 0 || a.concurrency > MAX_CONCURRENCY {
        return Err(CliError(format!(
            "-j {} is out of range (1..={MAX_CONCURRENCY})",
            a.concurrency
        )));
    }
    let needs_state = a
        .targets
        .iter()
        .any(|t| matches!(parse_target(t), Ok(Target::Service { .. })));
    let state = if needs_state || g.cluster_state.is_some() {
        super::cluster_state(g)?
    } else {
        None
    };
    // With a cluster state, any pod name in a reply names the backend.
    let all_pods: Vec<String> = state
        .iter()
        .flat_map(|st| st.pods.iter().map(|p| p.metadata.name.clone()))
        .collect();
    let resolved: Vec<(String, Resolved)> = a
        .targets
        .iter()
        .map(|t| resolve(t, state.as_ref()).map(|r| (t.clone(), r)))
        .collect::<Result<_, _>>()?;
    let mut reports = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut failed_any = false;
    for (text, r) in resolved {
        let known = if r.service.is_some() {
            &r.known
        } else {
            &all_pods
        };
        let attempts = run(&r.probe, a.count, a.concurrency, g.timeout, known);
        let summary = summarize(&text, &attempts, r.ready);
        if summary.reached < summary.attempts {
            failed_any = true;
            if let (Some((ns, name)), Some(st)) = (&r.service, state.as_ref()) {
                let d = diagnose_services(&ServiceDiagnoseInput {
                    cluster: st,
                    services: vec![(ns.clone(), name.clone())],
                    root: g.root.as_deref(),
                    dns_server: None,
                    zone: "cluster.local".into(),
                    timeout: g.timeout,
                    vip_attempts: 3,
                    nodeport_attempts: 2,
                    max_services: 1,
                    max_endpoints: 16,
                });
                findings.extend(d.findings);
            }
        }
        reports.push(TargetReport {
            target: text,
            service: r.service.map(|(ns, n)| format!("{ns}/{n}")),
            ready_endpoints: r.ready,
            session_affinity: r.affinity,
            probe: r.probe,
            summary,
            attempts,
        });
    }
    let report = Report::new(findings, serde_json::json!({ "reach": reports }));
    match g.format() {
        Format::Table => {
            let mut s = table(&reports);
            if !report.findings.is_empty() {
                s.push_str(&kdiag_probes::report::findings_table(&report.findings));
            }
            emit(&s);
        }
        f => emit(&machine(f, &report)),
    }
    Ok(if failed_any || any_actionable(&report.findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
