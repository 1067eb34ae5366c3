//! `kdiag scenario list|run`.

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::{Args, Subcommand};
use kdiag_simulator::embedded::lab::LabConfig;
use kdiag_simulator::runner::{run_scenario, RunConfig, ScenarioResult, Status};
use kdiag_simulator::scenario::{builtin, parse_scenario, BackendKind, Scenario};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// List scenarios (the built-in catalog, or the given files/directories).
    List(ListArgs),
    /// Run scenarios and compare the findings with what each expects.
    ///
    /// Examples:
    ///   kdiag scenario run                          (built-in catalog, embedded backend)
    ///   kdiag scenario run scenarios/ -j 4 --junit report.xml
    ///   kdiag scenario run my-case.yaml -o json
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Scenario files or directories of *.yaml; default: the built-in catalog.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files or directories of *.yaml; default: the built-in catalog.
    pub paths: Vec<PathBuf>,
    /// Backend to run on.
    #[arg(long, default_value = "embedded", value_parser = parse_backend)]
    pub backend: BackendKind,
    /// Scenarios run in parallel (each gets its own lab). Default: the number of CPUs.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write an HTML report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Only scenarios whose name contains this.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse()
}

/// Loads scenarios from files and directories, or the built-in catalog.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Scenario>, CliError> {
    if paths.is_empty() {
        return Ok(builtin()?);
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| CliError(format!("{}: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut out: Vec<Scenario> = Vec::new();
    for f in files {
        let text = read_text(&f)?;
        let s = parse_scenario(&f.display().to_string(), &text)?;
        if let Some(dup) = out.iter().find(|o| o.name == s.name) {
            return Err(CliError(format!(
                "{}: scenario name {:?} is already used by {}",
                f.display(),
                s.name,
                dup.source
            )));
        }
        out.push(s);
    }
    Ok(out)
}

fn read_text(f: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(f).map_err(|e| CliError(format!("{}: {e}", f.display())))?;
    String::from_utf8(bytes).map_err(|_| CliError(format!("{}: not UTF-8 text", f.display())))
}

/// Runs `kdiag scenario ...`.
pub fn exec(cmd: ScenarioCmd, g: &Global) -> Result<i32, CliError> {
    match cmd {
        ScenarioCmd::List(a) => list(&load(&a.paths)?, g.format()),
        ScenarioCmd::Run(a) => run(a, g),
    }
}

fn list(all: &[Scenario], format: Format) -> Result<i32, CliError> {
    match format {
        Format::Table => {
            let w = all.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
            let mut s = format!(
                "{:<w$}  {:<22}  {:<30}  SUMMARY\n",
                "NAME", "BACKENDS", "EXPECT"
            );
            for sc in all {
                let backends: Vec<&str> = sc.backends.iter().map(|b| b.as_str()).collect();
                let expect: Vec<&str> = sc.expect.iter().map(|c| c.as_str()).collect();
                s.push_str(&format!(
                    "{:<w$}  {:<22}  {:<30}  {}\n",
                    sc.name,
                    backends.join(","),
                    if expect.is_empty() {
                        "(none)".to_string()
                    } else {
                        expect.join(",")
                    },
                    sc.summary
                ));
            }
            emit(&s);
        }
        f => {
            let v: Vec<_> = all
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name, "summary": s.summary, "source": s.source,
                        "backends": s.backends.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
                        "faults": s.faults.iter().map(|f| f.kind()).collect::<Vec<_>>(),
                        "expect": s.expect, "allow": s.allow,
                    })
                })
                .collect();
            emit(&machine(f, &v));
        }
    }
    Ok(EXIT_OK)
}

fn run(a: RunArgs, g: &Global) -> Result<i32, CliError> {
    let mut all = load(&a.paths)?;
    if let Some(f) = &a.filter {
        all.retain(|s| s.name.contains(f.as_str()));
    }
    if all.is_empty() {
        return Err(CliError("no scenario to run".into()));
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let cfg = RunConfig {
        backend: a.backend,
        lab: LabConfig {
            base_dir: LabConfig::default_base_dir(),
            port: None,
            forward_timeout: Duration::from_secs(2),
        },
        probe_timeout: g.timeout,
    };
    let progress = std::io::stderr().is_terminal() || g.format() == Format::Table;
    let started = Instant::now();
    let rt = crate::runtime()?;
    let results = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
        let total = all.len();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in all.iter().cloned().enumerate() {
            let sem = sem.clone();
            let cfg = cfg.clone();
            let done = done.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = run_scenario(&s, &cfg).await;
                if progress {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let status = match r.status {
                        Status::Pass => "pass",
                        Status::Fail => "FAIL",
                        Status::Skip => "skip",
                    };
                    let why = r
                        .reason
                        .as_deref()
                        .map(|w| format!(" — {w}"))
                        .unwrap_or_default();
                    eprintln!(
                        "[{n}/{total}] {status} {} ({} ms){why}",
                        r.name, r.duration_ms
                    );
                }
                (i, r)
            });
        }
        let mut results: Vec<Option<ScenarioResult>> = vec![None; all.len()];
        let interrupted = tokio::select! {
            _ = async {
                while let Some(Ok((i, r))) = set.join_next().await {
                    results[i] = Some(r);
                }
            } => false,
            _ = shutdown_signal() => true,
        };
        // Dropping the set aborts the running scenarios; each lab's Drop stops its servers and
        // removes its directory, and faults die with the lab.
        set.shutdown().await;
        (results, interrupted)
    });
    let (results, interrupted) = results;
    if interrupted {
        return Err(CliError(
            "interrupted: running scenarios were stopped and their labs torn down".into(),
        ));
    }
    let results: Vec<ScenarioResult> = results.into_iter().flatten().collect();
    let count = |st: Status| results.iter().filter(|r| r.status == st).count();
    let (passed, failed, skipped) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
    );
    let wall = started.elapsed();
    if let Some(path) = &a.junit {
        std::fs::write(path, junit(&results, wall))
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &a.report {
        std::fs::write(path, html(&results, wall))
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    }
    match g.format() {
        Format::Table => {
            let mut s = String::new();
            let w = results
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            s.push_str(&format!(
                "{:<w$}  {:<8}  {:<6}  {:>8}  EXPECTED / FOUND\n",
                "SCENARIO", "BACKEND", "STATUS", "TIME"
            ));
            for r in &results {
                let codes = |v: &[kdiag_probes::Code]| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
                    }
                };
                s.push_str(&format!(
                    "{:<w$}  {:<8}  {:<6}  {:>6}ms  {} / {}\n",
                    r.name,
                    r.backend,
                    format!("{:?}", r.status).to_lowercase(),
                    r.duration_ms,
                    codes(&r.expected),
                    codes(&r.found)
                ));
                if let Some(why) = &r.reason {
                    s.push_str(&format!("{:<w$}  ↳ {why}\n", ""));
                }
            }
            s.push_str(&format!(
                "\n{passed} passed, {failed} failed, {skipped} skipped in {:.1} s\n",
                wall.as_secs_f64()
            ));
            emit(&s);
        }
        f => emit(&machine(
            f,
            &serde_json::json!({
                "schema": kdiag_probes::report::SCHEMA_VERSION,
                "scenarios": results,
                "passed": passed,
                "failed": failed,
                "skipped": skipped,
                "duration_ms": wall.as_millis() as u64,
            }),
        )),
    }
    Ok(if failed > 0 { EXIT_FINDINGS } else { EXIT_OK })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(results: &[ScenarioResult], wall: Duration) -> String {
    let count = |st: Status| results.iter().filter(|r| r.status == st).count();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n<testsuite name=\"kdiag\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        results.len(),
        count(Status::Fail),
        count(Status::Skip),
        wall.as_secs_f64()
    );
    for r in results {
        s.push_str(&format!(
            "  <testcase classname=\"kdiag.{}\" name=\"{}\" time=\"{:.3}\">",
            r.backend,
            xml_escape(&r.name),
            r.duration_ms as f64 / 1000.0
        ));
        let why = xml_escape(r.reason.as_deref().unwrap_or(""));
        match r.status {
            Status::Pass => {}
            Status::Fail => s.push_str(&format!("<failure message=\"{why}\"/>")),
            Status::Skip => s.push_str(&format!("<skipped message=\"{why}\"/>")),
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n</testsuites>\n");
    s
}

fn html(results: &[ScenarioResult], wall: Duration) -> String {
    let mut s = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>kdiag scenarios</title>\
         <style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:top}\
         .pass{color:#070}.fail{color:#b00}.skip{color:#888}</style><h1>kdiag scenarios</h1>",
    );
    s.push_str(&format!("<p>{} scenarios in {:.1} s</p><table><tr><th>scenario</th><th>backend</th><th>status</th><th>ms</th><th>expected</th><th>found</th><th>findings</th></tr>", results.len(), wall.as_secs_f64()));
    for r in results {
        let st = format!("{:?}", r.status).to_lowercase();
        let codes =
            |v: &[kdiag_probes::Code]| v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
        let findings: String = r
            .findings
            .iter()
            .map(|f| format!("<b>{}</b> {}<br>", f.code, xml_escape(&f.summary)))
            .collect();
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{st}\">{st}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{findings}</td></tr>",
            xml_escape(&r.name),
            r.backend,
            r.reason.as_deref().map(|w| format!("<br><small>{}</small>", xml_escape(w))).unwrap_or_default(),
            r.duration_ms,
            codes(&r.expected),
            codes(&r.found),
        ));
    }
    s.push_str("</table>\n");
    s
}
