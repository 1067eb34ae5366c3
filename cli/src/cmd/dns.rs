//! `kdiag dns`: raw queries like dig, or a glibc search-path walk with `--resolv-conf`.

use crate::output::print_report;
use crate::{CliError, Global, EXIT_FINDINGS, EXIT_OK};
use clap::Args;
use kdiag_probes::dns::analyze::{analyze_lookup, Budget, ClientLookup};
use kdiag_probes::dns::client::{query, search};
use kdiag_probes::dns::model::{fmt_duration, QueryOutcome, QuerySpec, Transport};
use kdiag_probes::dns::resolv::parse_resolv_conf_bytes;
use kdiag_probes::dns::wire::{parse_name, parse_rtype, reverse_name};
use kdiag_probes::finding::any_actionable;
use kdiag_probes::Report;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Query a DNS server directly, bypassing the system resolver.
///
/// Examples:
///   kdiag dns kubernetes.default.svc.cluster.local --server 10.96.0.10
///   kdiag dns _dns._udp.kube-dns.kube-system.svc.cluster.local --type SRV --server 10.96.0.10:53
///   kdiag dns web-service --resolv-conf /etc/resolv.conf     (every query glibc would send)
///   kdiag dns 10.96.0.1 -x --server 10.96.0.10               (PTR)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DnsArgs {
    /// The name to look up (an IP with -x).
    pub name: String,
    /// Server as IP or IP:PORT (IPv6: [::1]:53). Required unless --resolv-conf names one.
    #[arg(long, short = 's', value_name = "IP[:PORT]")]
    pub server: Option<String>,
    /// Record type: A, AAAA, SRV, PTR, TXT, HINFO, NS, SOA, CNAME, MX, ANY, TYPEn.
    /// Default A; with --resolv-conf, A and AAAA like getaddrinfo.
    #[arg(long = "type", short = 't', value_name = "T")]
    pub rtype: Option<String>,
    /// Query over TCP only.
    #[arg(long)]
    pub tcp: bool,
    /// Send no EDNS0 OPT record (classic 512-byte UDP, like dig +noedns).
    #[arg(long)]
    pub no_edns: bool,
    /// Do not retry over TCP when the UDP answer is truncated.
    #[arg(long)]
    pub no_tcp_fallback: bool,
    /// Reverse lookup: NAME is an IP address; query its PTR record.
    #[arg(short = 'x')]
    pub reverse: bool,
    /// Expand NAME through this resolv.conf's search path exactly as glibc does, and send every
    /// query in order (ndots amplification made visible). --server overrides its nameserver.
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
}

fn parse_server(s: &str) -> Result<SocketAddr, CliError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(CliError(format!(
        "invalid --server {s:?}: expected IP or IP:PORT (IPv6 with a port: [::1]:53)"
    )))
}

fn query_table(queries: &[QueryOutcome]) -> String {
    let mut s = String::new();
    for q in queries {
        for a in &q.attempts {
            match &a.result {
                Ok(ans) => {
                    s.push_str(&format!(
                        ";; {} {} @{}/{}: {} [{}] {} answer(s), {} bytes, {}\n",
                        q.spec.name,
                        q.spec.rtype,
                        q.spec.server,
                        a.transport,
                        ans.rcode,
                        ans.flags.dig_style(),
                        ans.answers.len(),
                        ans.size,
                        fmt_duration(a.latency)
                    ));
                    for rr in &ans.answers {
                        s.push_str(&format!(
                            "{:<40} {:>6} IN {:<6} {}\n",
                            rr.name, rr.ttl, rr.rtype, rr.data
                        ));
                    }
                    if ans.answers.is_empty() {
                        for rr in &ans.authority {
                            s.push_str(&format!(
                                "; authority: {} {} IN {} {}\n",
                                rr.name, rr.ttl, rr.rtype, rr.data
                            ));
                        }
                    }
                }
                Err(e) => s.push_str(&format!(
                    ";; {} {} @{}/{}: {e} after {}\n",
                    q.spec.name,
                    q.spec.rtype,
                    q.spec.server,
                    a.transport,
                    fmt_duration(a.latency)
                )),
            }
        }
    }
    s
}

/// Runs `kdiag dns`.
pub fn exec(a: DnsArgs, g: &Global) -> Result<i32, CliError> {
    let server = a.server.as_deref().map(parse_server).transpose()?;
    let name = if a.reverse {
        let ip: IpAddr = a
            .name
            .parse()
            .map_err(|_| CliError(format!("-x needs an IP address, got {:?}", a.name)))?;
        reverse_name(ip)
    } else {
        a.name.clone()
    };
    let default_type = if a.reverse { "PTR" } else { "A" };
    let transport = if a.tcp {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let budget = Budget::DEFAULT;
    let (queries, lookup) = if let Some(path) = &a.resolv_conf {
        let bytes =
            std::fs::read(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let conf = parse_resolv_conf_bytes(&bytes)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let types: Vec<&str> = match &a.rtype {
            Some(t) => vec![t.as_str()],
            None => vec!["A", "AAAA"],
        };
        let rtypes = types
            .iter()
            .map(|t| parse_rtype(t))
            .collect::<Result<Vec<_>, _>>()?;
        if server.is_none() && conf.nameservers.is_empty() {
            return Err(CliError(format!(
                "{} names no nameserver; give --server IP[:PORT]",
                path.display()
            )));
        }
        let s = search(&conf, &name, server, &rtypes, g.timeout, !a.no_edns)?;
        let lookup = ClientLookup {
            asked: name.clone(),
            namespace: "default".into(),
            candidates: s.candidates.clone(),
            queries: s.queries.clone(),
            answered_by: s.answered_by.clone(),
            families: rtypes.len(),
        };
        (s.queries, Some(lookup))
    } else {
        let server = server.ok_or_else(|| {
            CliError(
                "no server: give --server IP[:PORT] or --resolv-conf FILE (kdiag never falls back \
                 to the system resolver)"
                    .into(),
            )
        })?;
        let rtype = a.rtype.as_deref().unwrap_or(default_type);
        parse_rtype(rtype)?;
        let fqdn = parse_name(&name)?.to_string();
        let spec = QuerySpec {
            server,
            name: fqdn,
            rtype: rtype.to_ascii_uppercase(),
            transport,
            edns: !a.no_edns,
            tcp_fallback: !a.no_tcp_fallback,
            timeout: g.timeout,
        };
        (vec![query(&spec)], None)
    };
    // With cluster state, a name that does not exist gets the nearest Service suggested.
    let known: Vec<(String, String)> = super::cluster_state(g)?
        .map(|st| {
            st.services
                .iter()
                .map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let findings = analyze_lookup(&queries, lookup.as_ref(), "cluster.local", &known, &budget);
    let observations = serde_json::json!({
        "queries": queries,
        "search": lookup.as_ref().map(|l| serde_json::json!({
            "candidates": l.candidates,
            "answered_by": l.answered_by,
        })),
    });
    let report = Report::new(findings, observations);
    let mut table = query_table(&queries);
    if let Some(l) = &lookup {
        table = format!(
            ";; search path ({} candidates): {}\n;; answered by: {}\n{table}",
            l.candidates.len(),
            l.candidates.join(" -> "),
            l.answered_by.as_deref().unwrap_or("nothing")
        );
    }
    print_report(g.format(), &report, &table);
    Ok(if any_actionable(&report.findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
