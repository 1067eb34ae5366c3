//! The kdiag command line: argument parsing, context resolution, output, exit codes.
//! All logic lives in kdiag-probes and kdiag-simulator; this crate is the thin shell.

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

mod cmd;
mod output;

pub use output::Format;

/// Exit code: nothing at warning or above.
pub const EXIT_OK: i32 = 0;
/// Exit code: findings at warning or above (or a failed scenario).
pub const EXIT_FINDINGS: i32 = 1;
/// Exit code: usage or runtime error.
pub const EXIT_ERROR: i32 = 2;

/// kdiag tells you why Kubernetes networking is broken on a node, and proves it by breaking a
/// simulated cluster on purpose.
///
/// Exit codes: 0 no finding at warning or above; 1 findings; 2 usage or runtime error.
#[derive(Debug, Parser)]
#[command(
    name = "kdiag",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every verb accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Output format: a table for people, json or yaml for machines. Default: table on a
    /// terminal, json otherwise.
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    pub output: Option<Format>,
    /// Per-query / per-probe timeout, e.g. 2s, 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The node's filesystem root (/host inside the DaemonSet).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A `kubectl get svc,ep,endpointslices,pods,nodes -A -o json` capture, for offline use.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["kubeconfig", "context"])]
    pub cluster_state: Option<PathBuf>,
    /// Read the cluster state live through kubectl with this kubeconfig.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the cluster state live through kubectl with this context.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Run the probe inside this network namespace (not supported by this build).
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Query a DNS server directly, like dig, bypassing the system resolver.
    Dns(cmd::dns::DnsArgs),
    /// Detect CoreDNS forwarding loops: Corefile + resolv.conf, CoreDNS logs, HINFO probes.
    Loop(cmd::loops::LoopArgs),
    /// Run every applicable probe and print all findings, worst first.
    Diagnose(cmd::diagnose::DiagnoseArgs),
    /// Follow one packet through kube-proxy's rules: endpoints, DNAT, masquerade, reject/drop.
    Trace(cmd::trace::TraceArgs),
    /// TCP/UDP/HTTP reachability of IP:PORT, http:// URLs or Services, with the distribution over backends.
    Reach(cmd::reach::ReachArgs),
    /// List or run scenario suites (default: the built-in catalog on the embedded backend).
    #[command(subcommand)]
    Scenario(cmd::scenario::ScenarioCmd),
    /// Bring a simulated cluster up for hands-on use, tear it down, or list labs.
    #[command(subcommand)]
    Lab(cmd::lab::LabCmd),
    /// List the finding catalog: every stable code with its meaning.
    Codes,
}

/// Parses `2s`, `500ms`, `1m`, `3` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 2s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("duration {s:?} must be between 1ms and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Global {
    /// The output format after applying the TTY default.
    pub fn format(&self) -> Format {
        self.output.unwrap_or(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        })
    }
}

/// The CLI's error: a one-line cause, exit 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Runs the CLI and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    init_tracing();
    let format = cli.global.format();
    let result = match cli.global.netns {
        Some(_) => Err(CliError(
            "--netns is not supported by this build yet; run kdiag inside the namespace with `ip netns exec NAME kdiag ...`".into(),
        )),
        None => dispatch(cli.command, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            output::print_error(format, &msg);
            EXIT_ERROR
        }
    }
}

fn dispatch(cmd: Command, g: &Global) -> Result<i32, CliError> {
    match cmd {
        Command::Dns(a) => cmd::dns::exec(a, g),
        Command::Loop(a) => cmd::loops::exec(a, g),
        Command::Diagnose(a) => cmd::diagnose::exec(a, g),
        Command::Trace(a) => cmd::trace::exec(a, g),
        Command::Reach(a) => cmd::reach::exec(a, g),
        Command::Scenario(a) => cmd::scenario::exec(a, g),
        Command::Lab(a) => cmd::lab::exec(a, g),
        Command::Codes => cmd::codes(g),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KDIAG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A tokio runtime for the async verbs.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("failed to start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
