//! The forwarding-loop check shell: gathers every source of evidence it can reach (the
//! Corefile and the resolv.conf it forwards to, CoreDNS logs, active HINFO probes counted by
//! packet capture when permitted) and hands them to the pure rules in [`super::loops`].
//!
//! Bounded: a few fresh names per forwarded zone, one at a time, never a flood — a loop
//! multiplies every query it gets.

use super::capture::Capture;
use super::client::query;
use super::corefile::{parse_corefile, Corefile, CorefileError};
use super::loops::{
    active_findings, log_findings, parse_loop_logs, probe_name, static_findings, ProbeObservation,
    ResolvSource, StaticInput,
};
use super::model::{QueryFailure, QuerySpec, Transport};
use super::resolv::{parse_resolv_conf, ResolvConf};
use crate::finding::Finding;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A text source: where it came from and what it says.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path or label, used in evidence.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// What the check can use.
#[derive(Debug, Clone)]
pub struct LoopCheckInput {
    /// The DNS server to probe actively (None: no active probe).
    pub server: Option<SocketAddr>,
    /// The Corefile.
    pub corefile: Option<Source>,
    /// resolv.conf files, keyed by the path the Corefile names (`/etc/resolv.conf`).
    pub resolv: Vec<(String, Source)>,
    /// CoreDNS logs.
    pub logs: Vec<Source>,
    /// The DNS server's own addresses (VIP, pod IPs).
    pub own: Vec<IpAddr>,
    /// Other addresses the cluster owns.
    pub cluster_owned: Vec<IpAddr>,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Fresh names per zone.
    pub probes_per_zone: usize,
    /// Try to capture packets (needs CAP_NET_RAW).
    pub capture: bool,
    /// Failures slower than this count toward the weak signature.
    pub slow: Duration,
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopCheckError {
    /// The Corefile does not parse.
    #[error("{name}: {source}")]
    Corefile {
        /// Where it came from.
        name: String,
        /// The parse error.
        source: CorefileError,
    },
    /// A resolv.conf does not parse.
    #[error("{name}: {message}")]
    Resolv {
        /// Where it came from.
        name: String,
        /// The parse error.
        message: String,
    },
    /// Nothing to look at.
    #[error("nothing to check: give --server, --corefile, --resolv-conf, --logs or --root")]
    Nothing,
}

/// The result: findings, the evidence sources used, and what the probes saw.
#[derive(Debug, Clone, Serialize)]
pub struct LoopCheck {
    /// Findings (unsorted).
    pub findings: Vec<Finding>,
    /// Which sources of evidence were used, e.g. `static: Corefile + /etc/resolv.conf`.
    pub sources: Vec<String>,
    /// Active probes.
    pub probes: Vec<ProbeObservation>,
    /// Capture status: the interfaces, or why there was none.
    pub capture: String,
}

/// The zones to probe: `.` plus every forwarded zone of the Corefile that the `kubernetes`
/// plugin does not serve.
pub fn zones_to_probe(cf: Option<&Corefile>) -> Vec<String> {
    let mut zones = vec![".".to_string()];
    let Some(cf) = cf else { return zones };
    for b in cf.servers.iter().filter(|b| !b.snippet) {
        let Ok(fwds) = b.forwards() else { continue };
        for f in fwds {
            let zone = if f.from == "." {
                b.first_zone().to_string()
            } else {
                f.from.clone()
            };
            if !zones.contains(&zone) {
                zones.push(zone);
            }
        }
    }
    zones.truncate(8);
    zones
}

/// Runs the check.
pub fn check_loops(input: &LoopCheckInput) -> Result<LoopCheck, LoopCheckError> {
    if input.server.is_none()
        && input.corefile.is_none()
        && input.resolv.is_empty()
        && input.logs.is_empty()
    {
        return Err(LoopCheckError::Nothing);
    }
    let mut findings = Vec::new();
    let mut sources = Vec::new();
    let corefile = match &input.corefile {
        Some(src) => {
            let err = |e| LoopCheckError::Corefile {
                name: src.name.clone(),
                source: e,
            };
            let cf = parse_corefile(&src.text).map_err(err)?;
            for b in cf.servers.iter().filter(|b| !b.snippet) {
                b.forwards().map_err(err)?;
            }
            Some(cf)
        }
        None => None,
    };
    let resolv: Vec<(String, String, ResolvConf)> = input
        .resolv
        .iter()
        .map(|(path, src)| {
            parse_resolv_conf(&src.text)
                .map(|c| (path.clone(), src.name.clone(), c))
                .map_err(|e| LoopCheckError::Resolv {
                    name: src.name.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    // Static.
    let cf_for_static = match &corefile {
        Some(c) => Some(c.clone()),
        // Without a Corefile, assume kubeadm's `forward . /etc/resolv.conf`.
        None if !resolv.is_empty() => {
            parse_corefile(".:53 {\n forward . /etc/resolv.conf\n loop\n}\n").ok()
        }
        None => None,
    };
    if let Some(cf) = &cf_for_static {
        let cf_name = input
            .corefile
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "(kubeadm default Corefile)".into());
        findings.extend(static_findings(&StaticInput {
            corefile: cf,
            corefile_source: &cf_name,
            resolv: resolv
                .iter()
                .map(|(path, from, conf)| ResolvSource {
                    path,
                    read_from: from.clone(),
                    conf,
                })
                .collect(),
            own: &input.own,
            cluster_owned: &input.cluster_owned,
        }));
        let mut s = format!("static: {cf_name}");
        for (_, from, _) in &resolv {
            s.push_str(&format!(" + {from}"));
        }
        sources.push(s);
    }
    // Logs.
    for log in &input.logs {
        let lines = parse_loop_logs(&log.text);
        findings.extend(log_findings(&log.name, &lines));
        sources.push(format!("logs: {}", log.name));
    }
    // Active.
    let mut probes = Vec::new();
    let mut capture_status = "not attempted".to_string();
    if let Some(server) = input.server {
        let zones = zones_to_probe(corefile.as_ref());
        let names: Vec<(String, String)> = zones
            .iter()
            .flat_map(|z| {
                (0..input.probes_per_zone.max(1))
                    .map(move |_| (z.clone(), probe_name(rand::random(), rand::random(), z)))
            })
            .collect();
        let capture = if input.capture {
            let all: Vec<String> = names.iter().map(|(_, n)| n.clone()).collect();
            match Capture::start(server.port(), &all) {
                Ok(c) => {
                    capture_status = format!("capturing on {}", c.interfaces().join(", "));
                    Some(c)
                }
                Err(e) => {
                    capture_status = format!("unavailable: {e}");
                    None
                }
            }
        } else {
            capture_status = "disabled".into();
            None
        };
        // Give the capture threads a moment to be reading before the first probe.
        if capture.is_some() {
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut refused = false;
        let mut settled: Vec<String> = Vec::new();
        for (zone, name) in &names {
            if settled.contains(zone) {
                continue;
            }
            let outcome = query(&QuerySpec {
                server,
                name: name.clone(),
                rtype: "HINFO".into(),
                transport: Transport::Udp,
                edns: false,
                tcp_fallback: false,
                timeout: input.timeout,
            });
            refused |= matches!(outcome.result(), Err(QueryFailure::Refused));
            // One probe settles a zone when the capture will count it, or when the answer came
            // back fast or not SERVFAIL (only slow SERVFAILs need a second fresh name).
            let slow_servfail =
                outcome.rcode() == Some("SERVFAIL") && outcome.total_latency() >= input.slow;
            if capture.is_some() || !slow_servfail {
                settled.push(zone.clone());
            }
            // Without capture, a slow SERVFAIL gets a control query of another type.
            let control = (capture.is_none() && slow_servfail).then(|| {
                query(&QuerySpec {
                    server,
                    name: probe_name(rand::random(), rand::random(), zone),
                    rtype: "A".into(),
                    transport: Transport::Udp,
                    edns: false,
                    tcp_fallback: false,
                    timeout: input.timeout,
                })
            });
            if control
                .as_ref()
                .is_some_and(|c| matches!(c.rcode(), Some("NOERROR") | Some("NXDOMAIN")))
            {
                settled.push(zone.clone());
            }
            probes.push(ProbeObservation {
                zone: zone.clone(),
                outcome,
                sightings: None,
                control,
            });
            if refused {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = capture {
            // stragglers still circling
            std::thread::sleep(Duration::from_millis(100));
            let counts = c.finish();
            for p in &mut probes {
                p.sightings = Some(
                    counts
                        .get(&p.outcome.spec.name.to_ascii_lowercase())
                        .copied()
                        .unwrap_or(0),
                );
            }
        }
        if refused {
            sources.push(format!(
                "active: {server} refused (nothing listens there): no active evidence"
            ));
        } else {
            sources.push(format!(
                "active: {} HINFO probes to {server} ({})",
                probes.len(),
                if probes.iter().any(|p| p.sightings.is_some()) {
                    "counted by capture"
                } else {
                    "response signature only"
                }
            ));
            findings.extend(active_findings(&probes, input.slow));
        }
    }
    // One dns.loop is enough when several sources agree: keep the strongest (first critical).
    dedup_loop(&mut findings);
    Ok(LoopCheck {
        findings,
        sources,
        probes,
        capture: capture_status,
    })
}

/// Merges several dns.loop findings into the strongest one, keeping every piece of evidence.
fn dedup_loop(findings: &mut Vec<Finding>) {
    use crate::finding::Code;
    let loops: Vec<Finding> = findings
        .iter()
        .filter(|f| f.code == Code::DnsLoop)
        .cloned()
        .collect();
    if loops.len() < 2 {
        return;
    }
    let mut best = loops
        .iter()
        .max_by_key(|f| f.severity)
        .cloned()
        .unwrap_or_else(|| loops[0].clone());
    for f in &loops {
        if f.summary != best.summary {
            best.evidence.extend(f.evidence.iter().cloned());
        }
    }
    findings.retain(|f| f.code != Code::DnsLoop);
    findings.push(best);
}
