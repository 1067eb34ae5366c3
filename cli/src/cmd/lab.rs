//! `kdiag lab up|down|status`.

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_OK};
use clap::{Args, Subcommand};
use kdiag_simulator::embedded::lab::{cleanup_stale, EmbeddedLab, LabConfig};
use kdiag_simulator::scenario::BackendKind;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Bring a lab up in the foreground until Ctrl-C or SIGTERM, and print how to reach it.
    ///
    /// With -o json the first line, printed once the lab answers, is a JSON object with "dns"
    /// (IP:PORT of the cluster DNS VIP), "nodes" (name -> root dir for --root),
    /// "resolv_conf" (as kubelet hands a pod) and "cluster_state" (for --cluster-state).
    Up(UpArgs),
    /// Stop running labs (SIGTERM to their process) and remove what killed runs left behind.
    Down,
    /// List labs on this machine.
    Status,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Backend.
    #[arg(long, default_value = "embedded", value_parser = |s: &str| s.parse::<BackendKind>())]
    pub backend: BackendKind,
    /// DNS port (default: 53 when it can be bound, else a free high port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Inject a scenario's faults into the lab (a file, or a built-in scenario's name) and keep
    /// it broken until Ctrl-C, which reverts them: for game days and for trying a probe by hand.
    #[arg(long, value_name = "FILE|NAME")]
    pub scenario: Option<String>,
}

/// Runs `kdiag lab ...`.
pub fn exec(cmd: LabCmd, g: &Global) -> Result<i32, CliError> {
    match cmd {
        LabCmd::Up(a) => up(a, g.format()),
        LabCmd::Down => down(g.format()),
        LabCmd::Status => status(g.format()),
    }
}

fn up(a: UpArgs, format: Format) -> Result<i32, CliError> {
    if a.backend != BackendKind::Embedded {
        return Err(CliError(format!(
            "the {} backend is not built yet; use --backend embedded",
            a.backend
        )));
    }
    let cfg = LabConfig {
        base_dir: LabConfig::default_base_dir(),
        port: a.port,
        forward_timeout: Duration::from_secs(2),
    };
    let scenario = match &a.scenario {
        None => None,
        Some(s) if std::path::Path::new(s).exists() => {
            super::scenario::load(&[std::path::PathBuf::from(s)])?.into_iter().next()
        }
        Some(s) => Some(
            kdiag_simulator::scenario::builtin()?
                .into_iter()
                .find(|b| &b.name == s)
                .ok_or_else(|| {
                    CliError(format!(
                        "no scenario file or built-in scenario named {s:?} (see `kdiag scenario list`)"
                    ))
                })?,
        ),
    };
    let rt = crate::runtime()?;
    rt.block_on(async {
        let mut lab = EmbeddedLab::up(&cfg).await?;
        let mut undo = Vec::new();
        let mut faults = Vec::new();
        if let Some(sc) = &scenario {
            for f in &sc.faults {
                match lab.apply(f).await {
                    Ok(u) => {
                        undo.push(u);
                        faults.push(f.kind());
                    }
                    Err(e) => {
                        for u in undo.into_iter().rev() {
                            let _ = lab.revert(u).await;
                        }
                        lab.down().await;
                        return Err(CliError(format!("scenario {}: {e}", sc.name)));
                    }
                }
            }
        }
        let info = lab.info();
        match format {
            Format::Table => {
                let first = info.nodes.values().next().cloned().unwrap_or_default();
                let mut s = format!(
                    "lab {} is up (embedded backend). Ctrl-C tears it down.\n\n\
                     cluster DNS   {}\n\
                     upstream DNS  {}\n\
                     resolv.conf   {}\n\
                     cluster state {}\n",
                    info.id,
                    info.dns,
                    info.upstream,
                    info.resolv_conf.display(),
                    info.cluster_state.display()
                );
                for (n, root) in &info.nodes {
                    s.push_str(&format!("node {n:<8} --root {}\n", root.display()));
                }
                s.push_str(&format!(
                    "\ntry:\n  dig @{} -p {} kubernetes.default.svc.cluster.local\n  \
                     kdiag dns kubernetes.default.svc.cluster.local --server {}\n  \
                     kdiag diagnose --root {} --cluster-state {} --name web-service\n",
                    info.dns.ip(),
                    info.dns.port(),
                    info.dns,
                    first.display(),
                    info.cluster_state.display()
                ));
                if !faults.is_empty() {
                    s.push_str(&format!(
                        "\nfaults injected (reverted on Ctrl-C): {}\n",
                        faults.join(", ")
                    ));
                }
                for w in lab.warnings() {
                    s.push_str(&format!("note: {w}\n"));
                }
                emit(&s);
            }
            f => {
                let mut v = serde_json::to_value(&info).unwrap_or_default();
                v["event"] = "up".into();
                v["warnings"] = serde_json::json!(lab.warnings());
                v["faults"] = serde_json::json!(faults);
                let line = match f {
                    Format::Yaml => machine(f, &v),
                    _ => format!("{v}\n"),
                };
                emit(&line);
            }
        }
        super::scenario::shutdown_signal().await;
        for u in undo.into_iter().rev() {
            if let Err(e) = lab.revert(u).await {
                eprintln!("kdiag: revert failed: {e}");
            }
        }
        lab.down().await;
        if format == Format::Json {
            emit(&format!(
                "{}\n",
                serde_json::json!({"event": "down", "id": info.id})
            ));
        } else {
            eprintln!("lab {} torn down", info.id);
        }
        Ok::<_, CliError>(())
    })?;
    Ok(EXIT_OK)
}

fn lab_pid(dir: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

fn down(format: Format) -> Result<i32, CliError> {
    let base = LabConfig::default_base_dir();
    let (cleaned, running) = cleanup_stale(&base)?;
    let mut stopped = Vec::new();
    for dir in &running {
        if let Some(pid) = lab_pid(dir) {
            if pid != std::process::id() {
                let ok = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    stopped.push(format!("{} (pid {pid})", dir.display()));
                }
            }
        }
    }
    match format {
        Format::Table => {
            let mut s = String::new();
            for d in &stopped {
                s.push_str(&format!("stopped {d}\n"));
            }
            for d in &cleaned {
                s.push_str(&format!("removed leftover {}\n", d.display()));
            }
            if s.is_empty() {
                s.push_str("no labs\n");
            }
            emit(&s);
        }
        f => emit(&machine(
            f,
            &serde_json::json!({"stopped": stopped, "removed": cleaned}),
        )),
    }
    Ok(EXIT_OK)
}

fn status(format: Format) -> Result<i32, CliError> {
    let base = LabConfig::default_base_dir();
    let mut labs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(text) = std::fs::read_to_string(p.join("state.json")) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    labs.push(v);
                }
            }
        }
    }
    match format {
        Format::Table => {
            let mut s = String::new();
            for v in &labs {
                s.push_str(&format!(
                    "{}  pid {}  {}  port {}  faults {}\n",
                    v["id"].as_str().unwrap_or("?"),
                    v["pid"],
                    v["slice"].as_str().unwrap_or("?"),
                    v["port"],
                    v["faults_applied"]
                ));
            }
            if s.is_empty() {
                s.push_str("no labs\n");
            }
            emit(&s);
        }
        f => emit(&machine(f, &labs)),
    }
    Ok(EXIT_OK)
}
