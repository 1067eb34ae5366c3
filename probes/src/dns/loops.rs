//! CoreDNS forwarding-loop detection from the outside. Pure: the static Corefile +
//! resolv.conf analysis, the CoreDNS log-line parser, the probe names, and the verdict over
//! active probe observations.
//!
//! Evidence strength, strongest first: a capture that saw the probe arrive at the server more
//! than twice (CoreDNS's own threshold); CoreDNS's `plugin/loop` log line; a loopback (or
//! self) forward target in the configuration; and, weakest, the response signature (SERVFAIL
//! or timeout after the forward timeout for every fresh name), which a dead upstream shares.

use super::corefile::{Corefile, ForwardTarget};
use super::model::{fmt_duration, QueryOutcome};
use super::resolv::ResolvConf;
use crate::finding::{Code, Finding, Severity};
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// The remediation the seed write-up and CoreDNS's loop README give.
pub const LOOP_FIX: &str = "point kubelet's resolvConf at the real upstream list (e.g. \
/run/systemd/resolve/resolv.conf when systemd-resolved runs) so CoreDNS's /etc/resolv.conf \
names no loopback address, or forward to explicit upstream IPs (`forward . 192.0.2.53`) instead \
of /etc/resolv.conf; never forward to a loopback address or to the cluster DNS itself";

/// The probe name CoreDNS's loop plugin uses: two decimal random labels, then the zone.
pub fn probe_name(a: u64, b: u64, zone: &str) -> String {
    let (a, b) = (a & ((1 << 62) - 1), b & ((1 << 62) - 1));
    if zone == "." || zone.is_empty() {
        format!("{a}.{b}.")
    } else {
        format!("{a}.{b}.{}.", zone.trim_end_matches('.'))
    }
}

/// A resolv.conf a Corefile's `forward ... /path` refers to, as read.
#[derive(Debug, Clone)]
pub struct ResolvSource<'a> {
    /// The path named in the Corefile (`/etc/resolv.conf`).
    pub path: &'a str,
    /// Where it was actually read from (for evidence), e.g. `/run/systemd/resolve/resolv.conf`.
    pub read_from: String,
    /// Its contents.
    pub conf: &'a ResolvConf,
}

/// Static analysis input.
#[derive(Debug, Clone)]
pub struct StaticInput<'a> {
    /// The Corefile.
    pub corefile: &'a Corefile,
    /// Where the Corefile came from (for evidence).
    pub corefile_source: &'a str,
    /// resolv.conf files the Corefile refers to.
    pub resolv: Vec<ResolvSource<'a>>,
    /// The DNS server's own addresses (its pod IPs, its Service VIP): forwarding to them loops.
    pub own: &'a [IpAddr],
    /// Addresses the cluster owns that are not the server (never "loopback" in the lab).
    pub cluster_owned: &'a [IpAddr],
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// dns.upstream-loopback findings from a Corefile and the resolv.conf files it forwards to:
/// a forward target (direct, or a nameserver of the file) that is loopback, or the server itself.
pub fn static_findings(input: &StaticInput<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for block in input.corefile.servers.iter().filter(|b| !b.snippet) {
        let Ok(forwards) = block.forwards() else {
            continue;
        };
        let has_loop = block.plugin("loop").is_some();
        for fwd in forwards {
            let fwd_src = format!("{}:{}", input.corefile_source, fwd.line);
            for t in &fwd.to {
                let mut hits: Vec<(IpAddr, Vec<(String, String)>)> = Vec::new();
                match t {
                    ForwardTarget::Addr { ip, port, .. } => hits.push((
                        *ip,
                        vec![(fwd_src.clone(), format!("forward {} {ip}:{port}", fwd.from))],
                    )),
                    ForwardTarget::File { path } => {
                        for r in input.resolv.iter().filter(|r| r.path == path) {
                            for ns in &r.conf.nameservers {
                                hits.push((
                                    ns.addr,
                                    vec![
                                        (fwd_src.clone(), format!("forward {} {path}", fwd.from)),
                                        (
                                            format!("{}:{}", r.read_from, ns.line),
                                            format!("nameserver {}", ns.addr),
                                        ),
                                    ],
                                ));
                            }
                        }
                    }
                }
                for (ip, evidence) in hits {
                    let own = input.own.contains(&ip);
                    let loopback = is_loopback(ip) && !input.cluster_owned.contains(&ip);
                    if !own && !loopback {
                        continue;
                    }
                    let what = if own {
                        format!("{ip}, the DNS server's own address")
                    } else {
                        format!("loopback {ip} (inside the CoreDNS pod that is CoreDNS itself)")
                    };
                    let consequence = if has_loop {
                        "the loop plugin will detect it at start-up and CoreDNS will exit (CrashLoopBackOff)"
                    } else {
                        "every forwarded query will circle until CoreDNS gives up (no loop plugin here)"
                    };
                    let mut f = Finding::new(
                        Code::DnsUpstreamLoopback,
                        format!(
                            "CoreDNS block {} forwards zone {} to {what}: {consequence}",
                            block.first_zone(),
                            fwd.from
                        ),
                    );
                    for (s, d) in evidence {
                        f = f.evidence(s, d);
                    }
                    out.push(f.remediation(LOOP_FIX));
                }
            }
        }
    }
    out
}

/// A `plugin/loop` line from CoreDNS's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoopLogLine {
    /// 1-based line in the log.
    pub line: usize,
    /// The sender seen (`127.0.0.1:55953`), when the line names it.
    pub from: Option<String>,
    /// The server address (`:53`), when the line names it.
    pub to: Option<String>,
    /// The zone, when the line names it.
    pub zone: Option<String>,
    /// The whole line.
    pub text: String,
}

/// Finds CoreDNS loop-plugin lines in a log: the current format
/// `plugin/loop: Loop (A -> B) detected for zone "Z"` and the pre-1.3 format
/// `plugin/loop: Seen "HINFO IN name" more than twice, loop detected`.
pub fn parse_loop_logs(text: &str) -> Vec<LoopLogLine> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(pos) = line.find("plugin/loop: ") else {
            continue;
        };
        let rest = &line[pos + "plugin/loop: ".len()..];
        if let Some(inner) = rest.strip_prefix("Loop (") {
            let Some((path, tail)) = inner.split_once(')') else {
                continue;
            };
            let (from, to) = match path.split_once(" -> ") {
                Some((a, b)) => (Some(a.trim().to_string()), Some(b.trim().to_string())),
                None => (None, None),
            };
            let zone = tail
                .split_once("zone \"")
                .and_then(|(_, z)| z.split_once('"'))
                .map(|(z, _)| z.to_string());
            if tail.contains("detected") {
                out.push(LoopLogLine {
                    line: i + 1,
                    from,
                    to,
                    zone,
                    text: line.trim().to_string(),
                });
            }
        } else if rest.starts_with("Seen \"HINFO") && rest.contains("loop detected") {
            out.push(LoopLogLine {
                line: i + 1,
                from: None,
                to: None,
                zone: None,
                text: line.trim().to_string(),
            });
        }
    }
    out
}

/// dns.loop from log lines (direct evidence: CoreDNS saw its own probe come back).
pub fn log_findings(source: &str, lines: &[LoopLogLine]) -> Vec<Finding> {
    let Some(first) = lines.first() else {
        return vec![];
    };
    let zone = first.zone.clone().unwrap_or_else(|| ".".into());
    let path = match (&first.from, &first.to) {
        (Some(a), Some(b)) => format!(" ({a} -> {b})"),
        _ => String::new(),
    };
    let mut f = Finding::new(
        Code::DnsLoop,
        format!(
            "CoreDNS detected a forwarding loop for zone \"{zone}\"{path} and exited: its own HINFO probe came back"
        ),
    );
    for l in lines.iter().take(3) {
        f = f.evidence(format!("{source}:{}", l.line), l.text.clone());
    }
    vec![f.remediation(LOOP_FIX)]
}

/// One active probe: a fresh HINFO name sent to the server, and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeObservation {
    /// The zone probed.
    pub zone: String,
    /// The query and its outcome.
    pub outcome: QueryOutcome,
    /// How many times a capture saw this name arrive at the server (None: no capture).
    pub sightings: Option<u32>,
    /// Without capture, after a slow SERVFAIL: an A query for another fresh name in the same
    /// zone. A loop fails every type; a server that only mishandles HINFO answers this one.
    pub control: Option<QueryOutcome>,
}

/// The verdict over active probes: `dns.loop` when a capture saw a probe arrive more than
/// twice (strong), or, without capture, when every fresh name of a zone failed with SERVFAIL or
/// a timeout no sooner than `slow` (weak: a dead upstream looks the same). REFUSED, NOTIMP,
/// NXDOMAIN, answers, dropped HINFO with capture counts ≤ 2, or fast failures are not loops.
pub fn active_findings(obs: &[ProbeObservation], slow: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut zones: Vec<&str> = obs.iter().map(|o| o.zone.as_str()).collect();
    zones.dedup();
    zones.sort_unstable();
    zones.dedup();
    for zone in zones {
        let of_zone: Vec<&ProbeObservation> = obs.iter().filter(|o| o.zone == zone).collect();
        let captured: Vec<&&ProbeObservation> =
            of_zone.iter().filter(|o| o.sightings.is_some()).collect();
        let looping: Vec<&&ProbeObservation> = captured
            .iter()
            .copied()
            .filter(|o| o.sightings.unwrap_or(0) > 2)
            .collect();
        if !looping.is_empty() {
            let max = looping
                .iter()
                .filter_map(|o| o.sightings)
                .max()
                .unwrap_or(0);
            let mut f = Finding::new(
                Code::DnsLoop,
                format!(
                    "forwarding loop for zone \"{zone}\": a unique HINFO probe arrived at the server {max} times"
                ),
            );
            for o in looping.iter().take(3) {
                f = f.evidence(
                    o.outcome.describe(),
                    format!(
                        "captured {} arrivals of this name at the server; the client got: {}",
                        o.sightings.unwrap_or(0),
                        o.outcome.summary()
                    ),
                );
            }
            out.push(f.remediation(LOOP_FIX));
            continue;
        }
        if !captured.is_empty() || of_zone.len() < 2 {
            continue;
        }
        // SERVFAIL after the forward timeout: CoreDNS gave up on a query that kept circling.
        // A plain timeout is not counted: a server that drops HINFO looks like that.
        let slow_failure = |o: &&ProbeObservation| {
            o.outcome.result().is_ok_and(|a| a.rcode == "SERVFAIL")
                && o.outcome.total_latency() >= slow
                && o.control
                    .as_ref()
                    .is_none_or(|c| !matches!(c.rcode(), Some("NOERROR") | Some("NXDOMAIN")))
        };
        if of_zone.iter().all(slow_failure) {
            let mut f = Finding::new(
                Code::DnsLoop,
                format!(
                    "possible forwarding loop for zone \"{zone}\" (weak evidence, no packet capture): \
                     every fresh HINFO name failed after at least {}",
                    fmt_duration(slow)
                ),
            )
            .severity(Severity::Warning);
            for o in of_zone.iter().take(3) {
                f = f.evidence(o.outcome.describe(), o.outcome.summary());
            }
            f = f.evidence(
                "method",
                "response signature only: an upstream that never answers looks the same; run as root \
                 (CAP_NET_RAW) to capture and count the probe's re-arrivals",
            );
            out.push(f.remediation(LOOP_FIX));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::parse_corefile;
    use crate::dns::model::{Answer, Attempt, Flags, QueryFailure, QuerySpec, Transport};
    use crate::dns::resolv::parse_resolv_conf;

    const COREFILE: &str = ".:53 {\n    forward . /etc/resolv.conf\n    loop\n}\n";

    #[test]
    fn the_seed_case_from_files_alone() {
        let cf = parse_corefile(COREFILE).unwrap();
        let rc = parse_resolv_conf(
            "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\nnameserver 127.0.0.53\noptions edns0 trust-ad\n",
        )
        .unwrap();
        let f = static_findings(&StaticInput {
            corefile: &cf,
            corefile_source: "Corefile",
            resolv: vec![ResolvSource {
                path: "/etc/resolv.conf",
                read_from: "/etc/resolv.conf".into(),
                conf: &rc,
            }],
            own: &[],
            cluster_owned: &[],
        });
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::DnsUpstreamLoopback);
        assert!(f[0].summary.contains("127.0.0.53"), "{}", f[0].summary);
        assert!(
            f[0].summary.contains("CrashLoopBackOff"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[0].evidence[0].source, "Corefile:2");
        assert_eq!(f[0].evidence[1].source, "/etc/resolv.conf:2");
    }

    #[test]
    fn forwarding_to_itself_and_healthy_targets() {
        let cf = parse_corefile(
            ".:53 {\n forward . 10.96.0.10\n}\ncorp:53 {\n forward . 192.0.2.53 [::1]:53\n}\n",
        )
        .unwrap();
        let own = ["10.96.0.10".parse().unwrap()];
        let f = static_findings(&StaticInput {
            corefile: &cf,
            corefile_source: "Corefile",
            resolv: vec![],
            own: &own,
            cluster_owned: &[],
        });
        assert_eq!(f.len(), 2);
        assert!(f[0].summary.contains("own address"));
        assert!(f[1].summary.contains("::1"));
        assert!(f[1].summary.contains("corp."));
    }

    #[test]
    fn log_lines_both_formats() {
        let log = "\
.:53
[INFO] plugin/reload: Running configuration SHA512 = 1234
[FATAL] plugin/loop: Loop (127.0.0.1:55953 -> :1053) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO 4547991504243258144.3688648895315093531.\"
2018/08/29 [FATAL] plugin/loop: Seen \"HINFO IN 2050421060481615995.5620656063561519376.\" more than twice, loop detected
";
        let l = parse_loop_logs(log);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].line, 3);
        assert_eq!(l[0].from.as_deref(), Some("127.0.0.1:55953"));
        assert_eq!(l[0].to.as_deref(), Some(":1053"));
        assert_eq!(l[0].zone.as_deref(), Some("."));
        let f = log_findings("coredns.log", &l);
        assert_eq!(f[0].code, Code::DnsLoop);
        assert!(f[0].summary.contains("127.0.0.1:55953 -> :1053"));
        assert!(parse_loop_logs("plugin/loop: nothing\nrandom\n").is_empty());
    }

    fn outcome(rcode: Option<&str>, ms: u64) -> QueryOutcome {
        QueryOutcome {
            spec: QuerySpec {
                server: "10.96.0.10:53".parse().unwrap(),
                name: probe_name(1, 2, "."),
                rtype: "HINFO".into(),
                transport: Transport::Udp,
                edns: false,
                tcp_fallback: false,
                timeout: Duration::from_secs(3),
            },
            attempts: vec![Attempt {
                transport: Transport::Udp,
                latency: Duration::from_millis(ms),
                result: match rcode {
                    Some(r) => Ok(Answer {
                        rcode: r.into(),
                        flags: Flags::default(),
                        answers: vec![],
                        authority: vec![],
                        additional: vec![],
                        size: 40,
                        transport: Transport::Udp,
                    }),
                    None => Err(QueryFailure::Timeout),
                },
            }],
        }
    }

    fn probe(rcode: Option<&str>, ms: u64, seen: Option<u32>) -> ProbeObservation {
        ProbeObservation {
            zone: ".".into(),
            outcome: outcome(rcode, ms),
            sightings: seen,
            control: None,
        }
    }

    #[test]
    fn verdicts() {
        let slow = Duration::from_millis(1500);
        // capture: strong
        let f = active_findings(&[probe(Some("REFUSED"), 20, Some(100))], slow);
        assert_eq!(f[0].code, Code::DnsLoop);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].summary.contains("100 times"));
        // capture says 1: not a loop even when it failed slowly (dead upstream)
        assert!(active_findings(&vec![probe(Some("SERVFAIL"), 2000, Some(1)); 3], slow).is_empty());
        // a slow HINFO SERVFAIL whose control A query answers is HINFO-specific, not a loop
        let mut p = probe(Some("SERVFAIL"), 2000, None);
        p.control = Some(outcome(Some("NXDOMAIN"), 3));
        assert!(active_findings(&vec![p; 2], slow).is_empty());
        // timeouts alone (a server dropping HINFO) are not even weak evidence
        assert!(active_findings(&vec![probe(None, 3000, None); 3], slow).is_empty());
        // no capture, every fresh name SERVFAIL after the forward timeout: weak
        let f = active_findings(&vec![probe(Some("SERVFAIL"), 2000, None); 3], slow);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].summary.contains("weak"));
        // not loops: refused, notimp, nxdomain, dropped HINFO seen once, fast servfail, mixed
        for o in [
            vec![probe(Some("REFUSED"), 1, None); 3],
            vec![probe(Some("NOTIMP"), 1, None); 3],
            vec![probe(Some("NXDOMAIN"), 3, None); 3],
            vec![probe(None, 3000, Some(1)); 3],
            vec![probe(Some("SERVFAIL"), 5, None); 3],
            vec![
                probe(Some("SERVFAIL"), 2000, None),
                probe(Some("NXDOMAIN"), 5, None),
            ],
            vec![probe(Some("SERVFAIL"), 2000, None)],
        ] {
            assert!(active_findings(&o, slow).is_empty(), "{o:?}");
        }
    }

    #[test]
    fn probe_names_look_like_corednss() {
        assert_eq!(probe_name(5, 7, "."), "5.7.");
        assert_eq!(probe_name(5, 7, "corp.example."), "5.7.corp.example.");
        assert_eq!(
            probe_name(u64::MAX, 1, "."),
            format!("{}.1.", (1u64 << 62) - 1)
        );
    }
}
