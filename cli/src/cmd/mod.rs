//! One module per verb, each with `exec(args, &Global) -> Result<exit code, CliError>`.

pub mod diagnose;
pub mod dns;
pub mod lab;
pub mod loops;
pub mod reach;
pub mod scenario;
pub mod trace;

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_OK};
use kdiag_probes::Code;

/// `kdiag codes`.
pub fn codes(g: &Global) -> Result<i32, CliError> {
    match g.format() {
        Format::Table => {
            let mut s = String::new();
            for c in Code::ALL {
                s.push_str(&format!(
                    "{:<26} {:<8} {}\n",
                    c.as_str(),
                    c.default_severity().as_str(),
                    c.doc()
                ));
            }
            emit(&s);
        }
        f => {
            let v: Vec<_> = Code::ALL
                .iter()
                .map(|c| {
                    serde_json::json!({"code": c.as_str(), "severity": c.default_severity(), "doc": c.doc()})
                })
                .collect();
            emit(&machine(f, &v));
        }
    }
    Ok(EXIT_OK)
}

/// Loads the cluster state from `--cluster-state`, or live via kubectl when `--kubeconfig` or
/// `--context` is given. `None` when neither is.
pub fn cluster_state(g: &Global) -> Result<Option<kdiag_probes::cluster::ClusterState>, CliError> {
    use kdiag_probes::cluster::ClusterState;
    if let Some(path) = &g.cluster_state {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        return ClusterState::from_json(&text)
            .map(Some)
            .map_err(|e| CliError(format!("{}: {e}", path.display())));
    }
    if g.kubeconfig.is_none() && g.context.is_none() {
        return Ok(None);
    }
    let mut cmd = std::process::Command::new("kubectl");
    if let Some(k) = &g.kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    if let Some(c) = &g.context {
        cmd.arg("--context").arg(c);
    }
    cmd.args(["get", "svc,ep,pods,nodes", "-A", "-o", "json"]);
    cmd.arg(format!("--request-timeout={}s", g.timeout.as_secs().max(1)));
    let out = cmd
        .output()
        .map_err(|e| CliError(format!("failed to run kubectl: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(CliError(format!(
            "kubectl get failed: {}",
            err.lines().next().unwrap_or("no output")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    ClusterState::from_json(&text)
        .map(Some)
        .map_err(|e| CliError(format!("kubectl output: {e}")))
}
