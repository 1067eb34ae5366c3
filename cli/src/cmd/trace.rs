//! `kdiag trace`: follow one packet through kube-proxy's programmed rules.

use crate::output::{emit, machine, Format};
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::{Args, ValueEnum};
use kdiag_probes::finding::{any_actionable, sort_worst_first};
use kdiag_probes::iptables::parse_iptables_save;
use kdiag_probes::iptables::split::ProxyMode;
use kdiag_probes::report::{findings_table, SCHEMA_VERSION};
use kdiag_probes::trace::{findings, NodeContext, Packet, Proto, TraceResult, Verdict, WalkStep};
use kdiag_probes::Finding;
use serde::Serialize;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where kdiag's lab (and a node prepared for kdiag) keeps a saved `iptables-save`, under --root.
const ROOT_RULES: &str = "var/lib/kdiag/iptables-save.txt";
/// Where it keeps a saved `nft list ruleset` (nftables mode), under --root.
const ROOT_NFT_RULES: &str = "var/lib/kdiag/nft-ruleset.txt";
/// Where a node prepared for kdiag keeps `ipvsadm -Sn` (IPVS mode), under --root.
const ROOT_IPVS: &str = "var/lib/kdiag/ipvsadm.txt";
/// kube-proxy's `ipset save` (IPVS mode), beside the IPVS dump.
const IPVS_IPSET: &str = "ipset.txt";
/// kube-proxy's ipvs-mode `iptables-save`, beside the IPVS dump.
const IPVS_IPTABLES: &str = "ipvs-iptables-save.txt";

/// Shown under `kdiag trace --help`.
const TRACE_EXAMPLES: &str = "\
Examples:
  kdiag trace --rules iptables-save.txt --src 10.244.1.5 --dst 10.96.0.10 --dport 53 --proto udp
  kdiag trace --root $LAB/nodes/node-1 --mode nftables --src 127.S.2.5 --dst 127.S.1.10 --dport 53 --proto udp
  # the rules programmed in this network namespace (root); the mode is the one programmed:
  kdiag trace --live --src 10.244.1.5 --dst 10.96.0.10 --dport 53 --proto udp
  # another namespace; --mode when several kube-proxy modes' rules are there:
  ip netns exec NS kdiag trace --live --mode ipvs --src 10.244.1.5 --dst 10.96.0.1 --dport 443";

/// kube-proxy's proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// iptables-save text.
    Iptables,
    /// `nft list ruleset` text, `nft -j list ruleset` JSON, or an `nft -f` script.
    Nftables,
    /// IPVS: `ipvsadm -Sn`, `ipvsadm -Ln` or `/proc/net/ip_vs`.
    Ipvs,
}

/// Follow one packet through kube-proxy's rules: the endpoints it can reach (with the
/// probability of each), DNAT, masquerade, REJECT/DROP, and every rule it matched.
///
/// Reads a saved dump: --rules FILE (`iptables-save`, `nft list ruleset`, `nft -j list
/// ruleset`, `ipvsadm -Sn`/`-Ln`, /proc/net/ip_vs; the mode is detected from the content),
/// or with --root the node's var/lib/kdiag/iptables-save.txt (nft-ruleset.txt with --mode
/// nftables, ipvsadm.txt with --mode ipvs).
/// With --live it reads the current network namespace instead (root): `iptables-save` (and
/// `iptables-legacy-save` / `iptables-nft-save`, to report proxy.backend-split), `nft -j list
/// ruleset`, and IPVS over generic netlink (else /proc/net/ip_vs); the mode is the one whose
/// kube-proxy rules are programmed (KUBE-SERVICES chains, `table ip kube-proxy`, virtual
/// services), or --mode when several are.
/// The tracer never touches the node: it evaluates the rules the way the kernel would.
///
/// Example (against a lab from `kdiag lab up`):
///   kdiag trace --root $LAB/nodes/node-1 --src 127.S.2.5 --dst 127.S.1.10 --dport 53 --proto udp
///   kdiag trace --root $LAB/nodes/node-1 --mode nftables --src 127.S.2.5 --dst 127.S.1.10 --dport 53 --proto udp
/// Example (on a node, as root; `ip netns exec NS kdiag ...` for another namespace):
///   kdiag trace --live --src 10.244.1.5 --dst 10.96.0.10 --dport 53 --proto udp
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, after_help = TRACE_EXAMPLES)]
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
    /// from the node itself). Repeat for several. With --live the default is every address
    /// of the current network namespace (`ip -j addr show`).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// A saved rules dump (`iptables-save > FILE`, `nft list ruleset > FILE`, `nft -j list ruleset > FILE`).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Read the rules programmed in the current network namespace (needs root) instead of
    /// a saved dump.
    #[arg(long, conflicts_with = "rules")]
    pub live: bool,
    /// kube-proxy's mode; detected from the dump (or, with --live, from the rule sets
    /// programmed) when not given.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
}

impl Mode {
    fn proxy(self) -> ProxyMode {
        match self {
            Mode::Iptables => ProxyMode::Iptables,
            Mode::Nftables => ProxyMode::Nftables,
            Mode::Ipvs => ProxyMode::Ipvs,
        }
    }
}

/// The rules to trace and where they came from.
struct Source {
    /// A file, or the command the live rules came from.
    path: PathBuf,
    text: String,
    mode: Mode,
    /// Findings about the rules themselves (proxy.backend-split from --live).
    findings: Vec<Finding>,
    /// With --live: the rule sets found and the sources that could not be read.
    live: Option<kdiag_probes::proxy_live::Selection>,
    /// IPVS mode: kube-proxy's ipsets and iptables rules around the virtual servers.
    ipvs_node: Option<IpvsNode>,
}

/// The rest of an IPVS node's data path: `ipset save` and the IPVS-mode `iptables-save`, each
/// with where it came from.
struct IpvsNode {
    sets: (String, String),
    rules: (String, String),
}

/// --live: the current network namespace's rules.
fn live_source(a: &TraceArgs, g: &Global) -> Result<Source, CliError> {
    if g.root.is_some() {
        return Err(CliError(
            "--live reads the current network namespace; it does not combine with --root (use \
             --rules FILE for a saved dump)"
                .into(),
        ));
    }
    let sel = kdiag_probes::proxy_live::select(a.mode.map(Mode::proxy), a.dst.is_ipv6(), g.timeout)
        .map_err(|e| CliError(e.to_string()))?;
    let mut sel = sel;
    let mode = match sel.mode {
        ProxyMode::Iptables => Mode::Iptables,
        ProxyMode::Nftables => Mode::Nftables,
        ProxyMode::Ipvs => Mode::Ipvs,
    };
    // IPVS mode: the namespace's ipsets and iptables rules, for masquerade and filter drops
    let ipvs_node = if mode == Mode::Ipvs {
        use kdiag_probes::proxy_live::{ipset_save, iptables_save, Backend};
        match (
            ipset_save(g.timeout),
            iptables_save(Backend::Default, a.dst.is_ipv6(), g.timeout),
        ) {
            (Ok(sets), Ok(rules)) => Some(IpvsNode {
                sets: (sets.source, sets.text),
                rules: (rules.source, rules.text),
            }),
            (sets, rules) => {
                for e in [sets.err(), rules.err()].into_iter().flatten() {
                    sel.notes.push(format!(
                        "{e} (the IPVS trace leaves masquerade and filter drops unevaluated)"
                    ));
                }
                None
            }
        }
    } else {
        None
    };
    Ok(Source {
        path: PathBuf::from(format!("live: {}", sel.captured.source)),
        text: sel.captured.text.clone(),
        mode,
        findings: sel.findings.clone(),
        live: Some(sel),
        ipvs_node,
    })
}

fn parse_proto(s: &str) -> Result<Proto, String> {
    s.parse()
        .map_err(|e: kdiag_probes::trace::UnknownProto| e.to_string())
}

/// Detects the mode from the dump's content.
pub(crate) fn detect(text: &str) -> Option<Mode> {
    let t = text.trim_start();
    if t.starts_with('{') {
        return Some(Mode::Nftables);
    }
    for line in t.lines().take(200) {
        let l = line.trim();
        // ipvsadm -Sn (`-A -t VIP:PORT -s rr`) before iptables-save's `-A CHAIN`
        if ["-A -t", "-A -u", "-A --sctp", "-a -t", "-a -u"]
            .iter()
            .any(|p| l.starts_with(p))
            || l.starts_with("IP Virtual Server")
            || ["TCP ", "UDP ", "SCTP ", "FWM "].iter().any(|p| {
                l.strip_prefix(p)
                    .is_some_and(|r| r.split_whitespace().count() >= 2)
            })
        {
            return Some(Mode::Ipvs);
        }
        if l.starts_with('*') || l.starts_with(":KUBE-") || l.starts_with("-A ") {
            return Some(Mode::Iptables);
        }
        if l.starts_with("table ip")
            || l.starts_with("table inet")
            || ["add ", "create ", "insert ", "flush "].iter().any(|c| {
                l.strip_prefix(c).is_some_and(|r| {
                    [
                        "table ", "chain ", "rule ", "set ", "map ", "element ", "ruleset",
                    ]
                    .iter()
                    .any(|o| r.starts_with(o))
                })
            })
        {
            return Some(Mode::Nftables);
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

/// The rules, parsed, with what the output says about them.
struct Loaded {
    mode: &'static str,
    /// `(iptables-legacy, 85 rules in nat, filter)`.
    describe: String,
    observations: serde_json::Value,
    result: TraceResult,
}

fn load(
    mode: Mode,
    path: &std::path::Path,
    text: &str,
    ipvs_node: Option<&IpvsNode>,
    pkt: &Packet,
    ctx: &NodeContext,
) -> Result<Loaded, CliError> {
    let at = |e: &dyn std::fmt::Display| CliError(format!("{}: {e}", path.display()));
    match mode {
        Mode::Iptables => {
            let rules = parse_iptables_save(text).map_err(|e| at(&e))?;
            let tables: Vec<&str> = rules.tables.iter().map(|t| t.name).collect();
            Ok(Loaded {
                mode: "iptables",
                describe: format!(
                    "{}, {} rules in {}",
                    match rules.flavor {
                        kdiag_probes::iptables::Flavor::Legacy => "iptables-legacy",
                        kdiag_probes::iptables::Flavor::Nft => "iptables-nft",
                        _ => "iptables-save without a header",
                    },
                    rules.rule_count(),
                    tables.join(", ")
                ),
                observations: serde_json::json!({
                    "flavor": rules.flavor,
                    "tables": tables,
                    "rule_count": rules.rule_count(),
                }),
                result: {
                    let result = kdiag_probes::iptables::trace(&rules, pkt, ctx);
                    // A 10,000-Service dump is ~400k rules in ~100k chains; freeing them one
                    // by one costs more than the trace, and the process exits right after.
                    std::mem::forget(rules);
                    result
                },
            })
        }
        Mode::Nftables => {
            let rules = kdiag_probes::nft::parse_ruleset(text).map_err(|e| at(&e))?;
            let tables: Vec<String> = rules.tables.iter().map(|t| t.display_name()).collect();
            let format = match rules.format {
                kdiag_probes::nft::Format::Json => "nft -j list ruleset",
                kdiag_probes::nft::Format::List => "nft list ruleset",
                _ => "nft -f script",
            };
            Ok(Loaded {
                mode: "nftables",
                describe: format!(
                    "{format}, {} rules in {}",
                    rules.rule_count(),
                    if tables.is_empty() {
                        "no table".to_string()
                    } else {
                        tables.join(", ")
                    }
                ),
                observations: serde_json::json!({
                    "format": rules.format,
                    "tables": tables,
                    "rule_count": rules.rule_count(),
                }),
                result: kdiag_probes::nft::trace(&rules, pkt, ctx),
            })
        }
        Mode::Ipvs => {
            let table = kdiag_probes::ipvs::parse_ipvs(text).map_err(|e| at(&e))?;
            let format = match table.format {
                kdiag_probes::ipvs::IpvsFormat::Save => "ipvsadm -Sn",
                kdiag_probes::ipvs::IpvsFormat::Proc => "/proc/net/ip_vs",
                _ => "ipvsadm -Ln",
            };
            let mut describe = format!(
                "{format}, {} virtual services, {} real servers",
                table.services.len(),
                table.real_count()
            );
            let mut with = serde_json::Value::Null;
            let result = match ipvs_node {
                Some(IpvsNode {
                    sets: (sets_from, st),
                    rules: (rules_from, rt),
                }) => {
                    let sets = kdiag_probes::ipvs::parse_ipset_save(st)
                        .map_err(|e| CliError(format!("{sets_from}: {e}")))?;
                    let rules = parse_iptables_save(rt)
                        .map_err(|e| CliError(format!("{rules_from}: {e}")))?;
                    describe.push_str(&format!(
                        "; with {} ipsets ({sets_from}) and {} iptables rules ({rules_from})",
                        sets.sets.len(),
                        rules.rule_count(),
                    ));
                    with = serde_json::json!({
                        "ipset": sets_from,
                        "iptables": rules_from,
                    });
                    kdiag_probes::ipvs::trace_node(&table, &sets, &rules, pkt, ctx)
                }
                None => kdiag_probes::ipvs::trace(&table, pkt, ctx),
            };
            Ok(Loaded {
                mode: "ipvs",
                describe,
                observations: serde_json::json!({
                    "format": table.format,
                    "virtual_services": table.services.len(),
                    "real_servers": table.real_count(),
                    "evaluated_with": with,
                }),
                result,
            })
        }
    }
}

/// Runs `kdiag trace`.
pub fn exec(a: TraceArgs, g: &Global) -> Result<i32, CliError> {
    let src = if a.live {
        live_source(&a, g)?
    } else {
        file_source(&a, g)?
    };
    trace_source(a, g, src)
}

/// --rules FILE or --root DIR: a saved dump.
fn file_source(a: &TraceArgs, g: &Global) -> Result<Source, CliError> {
    let path =
        match (&a.rules, &g.root) {
            (Some(p), _) => p.clone(),
            (None, Some(root)) => match a.mode {
                Some(Mode::Nftables) => root.join(ROOT_NFT_RULES),
                Some(Mode::Ipvs) => root.join(ROOT_IPVS),
                Some(_) => root.join(ROOT_RULES),
                None if !root.join(ROOT_RULES).exists() && root.join(ROOT_NFT_RULES).exists() => {
                    root.join(ROOT_NFT_RULES)
                }
                None => root.join(ROOT_RULES),
            },
            (None, None) => return Err(CliError(
                "no rules to trace: give --rules FILE (an `iptables-save` or `nft list ruleset` \
                 dump) or --root DIR (a node root with var/lib/kdiag/iptables-save.txt or \
                 nft-ruleset.txt), or --live (the rules programmed in this network namespace)"
                    .into(),
            )),
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
    // IPVS mode: kube-proxy's ipsets and ipvs-mode iptables rules beside the dump (a node
    // root's var/lib/kdiag/); with both, masquerade and filter drops are evaluated too
    let ipvs_node = if mode == Mode::Ipvs {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let read = |name: &str| -> Result<Option<(String, String)>, CliError> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(Some((p.display().to_string(), t))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CliError(format!("failed to read {}: {e}", p.display()))),
            }
        };
        match (read(IPVS_IPSET)?, read(IPVS_IPTABLES)?) {
            (Some(sets), Some(rules)) => Some(IpvsNode { sets, rules }),
            _ => None,
        }
    } else {
        None
    };
    Ok(Source {
        path,
        text,
        mode,
        findings: Vec::new(),
        live: None,
        ipvs_node,
    })
}

fn trace_source(mut a: TraceArgs, g: &Global, src: Source) -> Result<i32, CliError> {
    if a.live && a.node_ips.is_empty() {
        a.node_ips = kdiag_probes::proxy_live::local_addresses(g.timeout)
            .map_err(|e| CliError(format!("the namespace's addresses (give --node-ip): {e}")))?;
    }
    let Source {
        path,
        text,
        mode,
        findings: extra,
        live,
        ipvs_node,
    } = src;
    let pkt = Packet {
        src: a.src,
        dst: a.dst,
        dport: a.dport,
        proto: a.proto,
    };
    let ctx = NodeContext {
        node_ips: a.node_ips,
    };
    let loaded = load(mode, &path, &text, ipvs_node.as_ref(), &pkt, &ctx)?;
    let result = &loaded.result;
    let mut found = findings(result, &pkt);
    found.extend(extra);
    sort_worst_first(&mut found);
    let code = if any_actionable(&found) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    match g.format() {
        Format::Table => {
            let mut s = render_table(&path, &loaded, &pkt, &ctx);
            if let Some(sel) = &live {
                for p in &sel.programmed {
                    let _ = writeln!(s, "LIVE     {} rules: {}", p.mode, p.evidence);
                }
                for n in &sel.notes {
                    let _ = writeln!(s, "LIVE     not read: {n}");
                }
            }
            s.push('\n');
            s.push_str(&findings_table(&found));
            emit(&s);
        }
        f => {
            let mut trace = serde_json::json!({
                "mode": loaded.mode,
                "rules": path.display().to_string(),
                "packet": pkt,
                "node_ips": ctx.node_ips,
                "outcomes": result.outcomes,
                "unknown": result.unknown,
                "notes": result.notes,
            });
            if let (Some(t), Some(sel)) = (trace.as_object_mut(), &live) {
                t.insert(
                    "live".into(),
                    serde_json::json!({
                        "source": sel.captured.source,
                        "programmed": sel.programmed,
                        "not_read": sel.notes,
                    }),
                );
            }
            if let (Some(t), Some(extra)) = (trace.as_object_mut(), loaded.observations.as_object())
            {
                for (k, v) in extra {
                    t.insert(k.clone(), v.clone());
                }
            }
            let out = TraceOut {
                schema: SCHEMA_VERSION,
                findings: &found,
                observations: serde_json::json!({ "trace": trace }),
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
    loaded: &Loaded,
    pkt: &Packet,
    ctx: &NodeContext,
) -> String {
    let r = &loaded.result;
    let mut s = String::new();
    let from = match (ctx.is_local(pkt.src), loaded.mode) {
        (true, "iptables") => "from this node: nat OUTPUT",
        (false, "iptables") => "arriving at this node: nat PREROUTING",
        (_, "ipvs") => "to a virtual service on kube-ipvs0",
        (true, _) => "from this node: output hook",
        (false, _) => "arriving at this node: prerouting hook",
    };
    let _ = writeln!(
        s,
        "packet   {} {} -> {} ({from})",
        pkt.proto,
        pkt.src,
        kdiag_probes::trace::join_host_port(pkt.dst, pkt.dport)
    );
    let _ = writeln!(s, "rules    {} ({})", path.display(), loaded.describe);
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
        assert_eq!(
            detect("# a dump\nadd table ip kube-proxy { comment \"x\" ; }\n"),
            Some(Mode::Nftables)
        );
        assert_eq!(detect("flush ruleset\n"), Some(Mode::Nftables));
        assert_eq!(detect("-A -t 10.96.0.1:443 -s rr\n"), Some(Mode::Ipvs));
        assert_eq!(detect("TCP  10.96.0.1:443 rr\n"), Some(Mode::Ipvs));
        assert_eq!(detect("hello"), None);
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(0.5), "50%");
        assert_eq!(pct(1.0 / 3.0), "33.3%");
    }
}
