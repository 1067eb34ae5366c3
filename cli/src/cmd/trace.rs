//! `kdiag trace`: follow one packet through kube-proxy's programmed rules.

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::{Args, ValueEnum};
use kdiag_probes::finding::{any_actionable, sort_worst_first};
use kdiag_probes::iptables::{parse_iptables_save, Ruleset};
use kdiag_probes::report::{findings_table, SCHEMA_VERSION};
use kdiag_probes::trace::{findings, NodeContext, Packet, Proto, TraceResult, Verdict, WalkStep};
use kdiag_probes::Finding;
use serde::Serialize;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where kdiag's lab (and a node prepared for kdiag) keeps a saved `iptables-save`, under --root.
const ROOT_RULES: &str = "var/lib/kdiag/iptables-save.txt";

/// kube-proxy's proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// iptables-save text.
    Iptables,
    /// `nft -j list ruleset` JSON or `nft list ruleset` text (not supported by this build).
    Nftables,
    /// IPVS (not supported by this build).
    Ipvs,
}

/// Follow one packet through kube-proxy's rules: the endpoints it can reach (with the
/// probability of each), DNAT, masquerade, REJECT/DROP, and every rule it matched.
///
/// Reads a saved dump (--rules FILE, or $ROOT/var/lib/kdiag/iptables-save.txt with --root).
/// The tracer never touches the node: it evaluates the rules the way the kernel would.
///
/// Example (against a lab from `kdiag lab up`):
///   kdiag trace --root $LAB/nodes/node-1 --src 127.S.2.5 --dst 127.S.1.10 --dport 53 --proto udp
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TraceArgs {
    /// Source address of the packet (a pod, the node itself, or an outside client).
    #[arg(long, value_name = "IP")]
    pub src: IpAddr,
    /// Destination address (a ClusterIP, external IP, load-balancer IP or node IP).
    #[arg(long, value_name = "IP")]
    pub dst: IpAddr,
    /// Destination port.
    #[arg(long, value_name = "N")]
    pub dport: u16,
    /// Protocol.
    #[arg(long, default_value = "tcp", value_parser = parse_proto)]
    pub proto: Proto,
    /// An address of the node the rules are on (for `addrtype LOCAL`: NodePorts, packets
    /// from the node itself). Repeat for several.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// A saved rules dump (`iptables-save > FILE`).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// kube-proxy's mode; detected from the dump when not given.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    s.parse()
        .map_err(|e: kdiag_probes::trace::UnknownProto| e.to_string())
}

/// Detects the mode from the dump's content.
fn detect(text: &str) -> Option<Mode> {
    let t = text.trim_start();
    if t.starts_with('{') {
        return Some(Mode::Nftables);
    }
    for line in t.lines().take(200) {
        let l = line.trim();
        if l.starts_with('*') || l.starts_with(":KUBE-") || l.starts_with("-A ") {
            return Some(Mode::Iptables);
        }
        if l.starts_with("table ip") || l.starts_with("table inet") {
            return Some(Mode::Nftables);
        }
        if l.starts_with("-A -t") || l.starts_with("IP Virtual Server") {
            return Some(Mode::Ipvs);
        }
    }
    None
}

#[derive(Serialize)]
struct WalkOut<'a> {
    table: &'a str,
    chain: &'a str,
    rule: &'a str,
    line: u32,
    depth: u16,
    probability: f64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

#[derive(Serialize)]
struct TraceOut<'a> {
    schema: u32,
    findings: &'a [Finding],
    observations: serde_json::Value,
    verdict: Verdict,
    endpoints: &'a [String],
    masquerade: bool,
    walk: Vec<WalkOut<'a>>,
}

/// Runs `kdiag trace`.
pub fn exec(a: TraceArgs, g: &Global) -> Result<i32, CliError> {
    let path = match (&a.rules, &g.root) {
        (Some(p), _) => p.clone(),
        (None, Some(root)) => root.join(ROOT_RULES),
        (None, None) => {
            return Err(CliError(
                "no rules to trace: give --rules FILE (an `iptables-save` dump) or --root DIR \
                 (a node root with var/lib/kdiag/iptables-save.txt)"
                    .into(),
            ))
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError(format!("failed to read {}: {e}", path.display())))?;
    let mode = match a.mode.or_else(|| detect(&text)) {
        Some(m) => m,
        None => {
            return Err(CliError(format!(
                "{}: cannot tell which kube-proxy mode wrote this; give --mode",
                path.display()
            )))
        }
    };
    if mode != Mode::Iptables {
        return Err(CliError(format!(
            "{}: {} mode is not supported by this build yet (iptables only)",
            path.display(),
            match mode {
                Mode::Nftables => "nftables",
                _ => "ipvs",
            }
        )));
    }
    let rules =
        parse_iptables_save(&text).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let pkt = Packet {
        src: a.src,
        dst: a.dst,
        dport: a.dport,
        proto: a.proto,
    };
    let ctx = NodeContext {
        node_ips: a.node_ips,
    };
    let result = kdiag_probes::iptables::trace(&rules, &pkt, &ctx);
    let mut found = findings(&result, &pkt);
    sort_worst_first(&mut found);
    let code = if any_actionable(&found) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    match g.format() {
        Format::Table => {
            let mut s = render_table(&path, &rules, &pkt, &ctx, &result);
            s.push('\n');
            s.push_str(&findings_table(&found));
            emit(&s);
        }
        f => {
            let out = TraceOut {
                schema: SCHEMA_VERSION,
                findings: &found,
                observations: serde_json::json!({
                    "trace": {
                        "mode": "iptables",
                        "rules": path.display().to_string(),
                        "flavor": rules.flavor,
                        "tables": rules.tables.iter().map(|t| t.name).collect::<Vec<_>>(),
                        "rule_count": rules.rule_count(),
                        "packet": pkt,
                        "node_ips": ctx.node_ips,
                        "outcomes": result.outcomes,
                        "unknown": result.unknown,
                        "notes": result.notes,
                    }
                }),
                verdict: result.verdict,
                endpoints: &result.endpoints,
                masquerade: result.masquerade,
                walk: result.walk.iter().map(walk_out).collect(),
            };
            emit(&machine(f, &out));
        }
    }
    Ok(code)
}

fn walk_out(s: &WalkStep) -> WalkOut<'_> {
    WalkOut {
        table: &s.table,
        chain: &s.chain,
        rule: &s.rule,
        line: s.line,
        depth: s.depth,
        probability: s.probability,
        notes: &s.notes,
    }
}

fn pct(p: f64) -> String {
    let v = p * 100.0;
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}%")
    } else {
        format!("{v:.1}%")
    }
}

/// The walk drawn for a person: each matched rule under its chain, indented by jump depth.
fn render_table(
    path: &std::path::Path,
    rules: &Ruleset<'_>,
    pkt: &Packet,
    ctx: &NodeContext,
    r: &TraceResult,
) -> String {
    let mut s = String::new();
    let from = if ctx.is_local(pkt.src) {
        "from this node: nat OUTPUT"
    } else {
        "arriving at this node: nat PREROUTING"
    };
    let _ = writeln!(
        s,
        "packet   {} {} -> {} ({from})",
        pkt.proto,
        pkt.src,
        kdiag_probes::trace::join_host_port(pkt.dst, pkt.dport)
    );
    let _ = writeln!(
        s,
        "rules    {} ({}, {} rules in {})",
        path.display(),
        match rules.flavor {
            kdiag_probes::iptables::Flavor::Legacy => "iptables-legacy",
            kdiag_probes::iptables::Flavor::Nft => "iptables-nft",
            _ => "iptables-save without a header",
        },
        rules.rule_count(),
        rules
            .tables
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str("\nWALK\n");
    if r.walk.is_empty() {
        s.push_str("  (no rule matched)\n");
    }
    let mut last: Option<(&str, &str, u16)> = None;
    for step in &r.walk {
        let pad = "  ".repeat(usize::from(step.depth) + 1);
        let key = (step.table.as_str(), step.chain.as_str(), step.depth);
        if last != Some(key) {
            let p = if step.probability < 1.0 {
                format!("  [path {}]", pct(step.probability))
            } else {
                String::new()
            };
            let _ = writeln!(s, "{pad}{}/{}{p}", step.table, step.chain);
            last = Some(key);
        }
        let _ = writeln!(s, "{pad}  {:>5}: {}", step.line, step.rule);
        for n in &step.notes {
            let _ = writeln!(s, "{pad}         note: {n}");
        }
    }
    s.push('\n');
    let verdict = match r.verdict {
        Verdict::Dnat => {
            let eps: Vec<String> = r
                .endpoint_probabilities()
                .iter()
                .map(|(e, p)| format!("{e} ({})", pct(*p)))
                .collect();
            format!("DNAT to {}", eps.join(", "))
        }
        Verdict::Reject => "REJECT (the client sees connection refused)".into(),
        Verdict::Drop => "DROP (the client times out)".into(),
        Verdict::Accept => "ACCEPT (no DNAT)".into(),
        Verdict::NoMatch => "no kube-proxy rule matched: the packet goes on untouched".into(),
    };
    let _ = writeln!(s, "VERDICT  {verdict}");
    if let Some(c) = r.rejecting_comment() {
        let _ = writeln!(s, "         by the rule commented {c:?}");
    }
    if matches!(
        r.verdict,
        Verdict::Dnat | Verdict::Accept | Verdict::NoMatch
    ) {
        let _ = writeln!(
            s,
            "MASQ     {}",
            if r.masquerade {
                "yes (source NATed to the node)"
            } else {
                "no (the endpoint sees the client's address)"
            }
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "NOTE     {n}");
    }
    for u in &r.unknown {
        let _ = writeln!(s, "UNKNOWN  {u}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_modes() {
        assert_eq!(detect("*nat\n:A - [0:0]\nCOMMIT\n"), Some(Mode::Iptables));
        assert_eq!(
            detect("# Generated by iptables-save\n*filter\n"),
            Some(Mode::Iptables)
        );
        assert_eq!(detect("{\"nftables\": []}"), Some(Mode::Nftables));
        assert_eq!(detect("table ip kube-proxy {\n}"), Some(Mode::Nftables));
        assert_eq!(detect("hello"), None);
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(0.5), "50%");
        assert_eq!(pct(1.0 / 3.0), "33.3%");
    }
}
