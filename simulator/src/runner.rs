//! The scenario runner: bring a lab up, inject the faults, run the probes, compare what they
//! found with what the scenario expects, and revert everything on every path.

use crate::embedded::lab::{EmbeddedLab, LabConfig, LabError};
use crate::scenario::{BackendKind, Requirement, Scenario};
use kdiag_probes::cluster::ClusterState;
use kdiag_probes::dns::analyze::Budget;
use kdiag_probes::dns::diagnose::{diagnose, ClientSpec, DiagnoseInput};
use kdiag_probes::service::analyze::fold_dns;
use kdiag_probes::service::collect::{diagnose_services, ServiceDiagnoseInput};
use kdiag_probes::{Code, Finding, Severity};
use serde::Serialize;
use std::time::{Duration, Instant};

/// pass, fail or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every expected finding came out and nothing else at warning or above.
    Pass,
    /// Something expected was missing, something unexpected came out, or the run broke.
    Fail,
    /// The backend cannot express the scenario; never counted as a pass.
    Skip,
}

/// The outcome of one scenario on one backend (the `scenarios[]` element of SPEC §2).
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Backend it ran on.
    pub backend: &'static str,
    /// pass, fail or skip.
    pub status: Status,
    /// Expected finding codes.
    pub expected: Vec<Code>,
    /// Finding codes that came out.
    pub found: Vec<Code>,
    /// Wall time.
    pub duration_ms: u64,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The findings themselves, for reports.
    pub findings: Vec<Finding>,
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Backend to run on.
    pub backend: BackendKind,
    /// Lab settings.
    pub lab: LabConfig,
    /// Per-query timeout of the probes.
    pub probe_timeout: Duration,
}

/// Compares findings with expectations (SPEC §4): all expected present; nothing else at
/// warning or above unless allowed. Returns the reason on failure.
pub fn judge(s: &Scenario, findings: &[Finding]) -> Result<(), String> {
    let found: Vec<Code> = findings.iter().map(|f| f.code).collect();
    let missing: Vec<&str> = s
        .expect
        .iter()
        .filter(|c| !found.contains(c))
        .map(|c| c.as_str())
        .collect();
    let unexpected: Vec<String> = findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .filter(|f| !s.expect.contains(&f.code) && !s.allow.contains(&f.code))
        .map(|f| format!("{} ({})", f.code, f.summary))
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("missing {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        why.push(format!("unexpected {}", unexpected.join("; ")));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

fn result(
    s: &Scenario,
    backend: BackendKind,
    status: Status,
    findings: Vec<Finding>,
    started: Instant,
    reason: Option<String>,
) -> ScenarioResult {
    ScenarioResult {
        name: s.name.clone(),
        backend: backend.as_str(),
        status,
        expected: s.expect.clone(),
        found: findings.iter().map(|f| f.code).collect(),
        duration_ms: started.elapsed().as_millis() as u64,
        reason,
        findings,
    }
}

/// Runs one scenario. Faults are reverted and the lab is torn down on every return path;
/// if the future is dropped (Ctrl-C), the lab's `Drop` stops it and removes its directory.
pub async fn run_scenario(s: &Scenario, cfg: &RunConfig) -> ScenarioResult {
    let started = Instant::now();
    let skip = |why: String| result(s, cfg.backend, Status::Skip, vec![], started, Some(why));
    if !s.backends.contains(&cfg.backend) {
        return skip(format!(
            "the scenario does not list the {} backend",
            cfg.backend
        ));
    }
    match cfg.backend {
        BackendKind::Embedded => {}
        BackendKind::Netns => {
            return skip(
                "the netns backend is not built yet (this kdiag runs embedded only)".into(),
            )
        }
        BackendKind::Kind => {
            return skip("the kind backend is not built yet (this kdiag runs embedded only)".into())
        }
    }
    for r in &s.requires {
        match r {
            Requirement::Capture => {
                if let Err(e) = kdiag_probes::dns::capture::available() {
                    return skip(format!("needs packet capture: {e}"));
                }
            }
        }
    }
    let mut lab = match EmbeddedLab::up(&cfg.lab).await {
        Ok(l) => l,
        Err(e) => {
            return result(
                s,
                cfg.backend,
                Status::Fail,
                vec![],
                started,
                Some(e.to_string()),
            )
        }
    };
    let mut undo = Vec::new();
    let mut outcome: Result<Vec<Finding>, (Status, String)> = Ok(vec![]);
    for f in &s.faults {
        match lab.apply(f).await {
            Ok(u) => undo.push(u),
            Err(LabError::Unsupported(why)) => {
                outcome = Err((Status::Skip, why));
                break;
            }
            Err(e) => {
                outcome = Err((Status::Fail, format!("applying {}: {e}", f.kind())));
                break;
            }
        }
    }
    if outcome.is_ok() {
        outcome = probe(&lab, s, cfg).await.map_err(|e| (Status::Fail, e));
    }
    let mut revert_errors = Vec::new();
    for u in undo.into_iter().rev() {
        if let Err(e) = lab.revert(u).await {
            revert_errors.push(e.to_string());
        }
    }
    lab.down().await;
    match outcome {
        Err((status, why)) => result(s, cfg.backend, status, vec![], started, Some(why)),
        Ok(findings) => {
            let verdict = judge(s, &findings);
            let mut reason = verdict.err();
            if !revert_errors.is_empty() {
                reason = Some(format!("revert failed: {}", revert_errors.join("; ")));
            }
            let status = if reason.is_none() {
                Status::Pass
            } else {
                Status::Fail
            };
            result(s, cfg.backend, status, findings, started, reason)
        }
    }
}

/// Runs the DNS and Service diagnoses against a lab exactly as a user would against a node
/// (`kdiag diagnose --root --cluster-state`): through the node's root directory and the
/// cluster-state capture the lab wrote.
async fn probe(lab: &EmbeddedLab, s: &Scenario, cfg: &RunConfig) -> Result<Vec<Finding>, String> {
    let info = lab.info();
    let root = info
        .nodes
        .values()
        .next()
        .cloned()
        .ok_or_else(|| "lab has no nodes".to_string())?;
    let nodes = info.nodes.clone();
    let text = std::fs::read_to_string(&info.cluster_state)
        .map_err(|e| format!("reading {}: {e}", info.cluster_state.display()))?;
    let state = ClusterState::from_json(&text).map_err(|e| e.to_string())?;
    let client = s.client.as_ref().map(|c| ClientSpec {
        name: c.name.clone(),
        namespace: c.namespace.clone(),
    });
    let timeout = cfg.probe_timeout;
    let out = tokio::task::spawn_blocking(move || {
        let dns = diagnose(&DiagnoseInput {
            cluster: Some(&state),
            root: Some(&root),
            client,
            external_name: "example.com.".into(),
            timeout,
            budget: Budget::DEFAULT,
            server: None,
            capture: true,
        })
        .map_err(|e| e.to_string())?;
        let svc = diagnose_services(&ServiceDiagnoseInput {
            cluster: &state,
            services: vec![],
            root: Some(&root),
            dns_server: dns.observations.vip.as_ref().map(|q| q.spec.server),
            zone: dns.observations.zone.clone(),
            timeout,
            vip_attempts: 3,
            nodeport_attempts: 2,
            max_services: 50,
            max_endpoints: 16,
        });
        let mut dns_findings = dns.findings;
        let mut svc_findings = svc.findings;
        fold_dns(&dns.observations, &mut dns_findings, &mut svc_findings);
        dns_findings.extend(svc_findings);
        // The rules kube-proxy would have programmed on every node, in every mode, against
        // the API (one finding however many nodes and modes show the same disagreement).
        let mut rules_findings = Vec::new();
        for (node, node_root) in &nodes {
            rules_findings.extend(rules_cross_check(node_root, node, &state)?);
        }
        dns_findings.extend(kdiag_probes::proxy_check::merge_alike(rules_findings));
        kdiag_probes::proxy_check::explain_vip_failures(&mut dns_findings);
        Ok::<_, String>(dns_findings)
    })
    .await
    .map_err(|e| format!("probe task: {e}"))?;
    out
}

/// Cross-checks each kube-proxy rules file the node root holds (iptables, nftables and IPVS
/// modes; IPVS needs its three files) against the cluster state; a file that does not parse is an error.
fn rules_cross_check(
    root: &std::path::Path,
    node: &str,
    state: &ClusterState,
) -> Result<Vec<Finding>, String> {
    use crate::kube_proxy::{IPSET, IPTABLES_SAVE, IPVSADM, IPVS_IPTABLES_SAVE, NFT_RULESET};
    use kdiag_probes::proxy_check::cross_check;
    // the node's own address: its rules' `addrtype LOCAL`, and which endpoints are its own
    let ctx = kdiag_probes::trace::NodeContext {
        node_ips: state
            .nodes
            .iter()
            .filter(|n| n.metadata.name == node)
            .filter_map(|n| n.internal_ip())
            .collect(),
    };
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read_to_string(&path)
            .ok()
            .map(|text| (text, path.display().to_string()))
    };
    let mut out = Vec::new();
    if let Some((text, path)) = read(IPTABLES_SAVE) {
        let rules = kdiag_probes::iptables::parse_iptables_save(&text)
            .map_err(|e| format!("{path}: {e}"))?;
        out.extend(kdiag_probes::iptables::check::cross_check(
            &rules, state, &ctx,
        ));
    }
    if let Some((text, path)) = read(NFT_RULESET) {
        let rules = kdiag_probes::nft::parse_ruleset(&text).map_err(|e| format!("{path}: {e}"))?;
        out.extend(cross_check(state, &ctx, "nftables", |p| {
            kdiag_probes::nft::trace(&rules, p, &ctx)
        }));
    }
    // IPVS mode: the virtual servers inside the node's ipsets and iptables rules
    if let (Some((vs, vs_path)), Some((sets, sets_path)), Some((rules, rules_path))) =
        (read(IPVSADM), read(IPSET), read(IPVS_IPTABLES_SAVE))
    {
        let table = kdiag_probes::ipvs::parse_ipvs(&vs).map_err(|e| format!("{vs_path}: {e}"))?;
        let sets =
            kdiag_probes::ipvs::parse_ipset_save(&sets).map_err(|e| format!("{sets_path}: {e}"))?;
        let rules = kdiag_probes::iptables::parse_iptables_save(&rules)
            .map_err(|e| format!("{rules_path}: {e}"))?;
        out.extend(cross_check(state, &ctx, "ipvs", |p| {
            kdiag_probes::ipvs::trace_node(&table, &sets, &rules, p, &ctx)
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;

    #[test]
    fn judge_needs_all_expected_and_nothing_else() {
        let s = parse_scenario(
            "x",
            "name: x\nsummary: y\nexpect:\n  findings: [dns.nxdomain]\n  allow: [dns.slow]\n",
        )
        .unwrap();
        let f = |c| Finding::new(c, "s");
        assert!(judge(&s, &[f(Code::DnsNxdomain)]).is_ok());
        assert!(judge(&s, &[f(Code::DnsNxdomain), f(Code::DnsSlow)]).is_ok());
        assert!(judge(&s, &[f(Code::DnsNxdomain), f(Code::DnsNdotsAmplification)]).is_ok());
        let e = judge(&s, &[]).unwrap_err();
        assert!(e.contains("missing dns.nxdomain"), "{e}");
        let e = judge(&s, &[f(Code::DnsNxdomain), f(Code::DnsServfail)]).unwrap_err();
        assert!(e.contains("unexpected dns.servfail"), "{e}");
    }
}
