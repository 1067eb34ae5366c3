//! Service diagnosis rules and reach aggregation: observations in, findings out. Pure.
//!
//! The rules follow the order of the "Debug Services" write-up and stop at the first broken
//! layer, so each failure is reported once, under its root cause: no ready endpoints explains a
//! refusing VIP; endpoints that do not answer on the targetPort explain a failing VIP and
//! NodePort; a VIP that fails while every endpoint answers points at kube-proxy; a NodePort that
//! fails on some nodes while the VIP works points at those nodes. A crash-looping pod explains
//! the empty endpoints of the Services that select it.

use super::model::{one_line, Attempt};
use super::view::{PodView, ServiceView};
use crate::dns::analyze::DnsObservations;
use crate::finding::{Code, Finding, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What the attempts against one target add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReachSummary {
    /// The target as given.
    pub target: String,
    /// Attempts made.
    pub attempts: usize,
    /// Attempts that connected or answered.
    pub reached: usize,
    /// Attempts per outcome class (`answered`, `refused`, ...).
    pub outcomes: BTreeMap<String, usize>,
    /// Answers per backend (pod name from the reply).
    pub backends: BTreeMap<String, usize>,
    /// Session affinity as observed.
    pub affinity: Affinity,
    /// Median latency of all attempts, µs.
    pub p50_us: u64,
    /// Slowest attempt, µs.
    pub max_us: u64,
}

/// Session affinity as observed from the replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Affinity {
    /// Answers came from several backends: no affinity.
    Spread {
        /// Distinct backends seen.
        backends: usize,
    },
    /// Every answer came from one backend although several are ready: ClientIP affinity
    /// (or a proxy pinning flows).
    Sticky {
        /// The backend.
        backend: String,
        /// Ready backends the cluster state lists.
        ready: usize,
    },
    /// Every answer came from one backend, and no more are known.
    Single {
        /// The backend.
        backend: String,
    },
    /// Too few identifiable answers to tell.
    Unknown,
}

/// Identified answers needed before one backend is called sticky: with 2 backends picked at
/// random, 5 answers from the same one happen by chance 1 time in 16; the CLI's default of 10
/// makes it 1 in 512.
pub const STICKY_MIN: usize = 5;

/// Aggregates attempts. `ready_backends` is how many ready endpoints the cluster state lists
/// behind the target, when known.
pub fn summarize(
    target: &str,
    attempts: &[Attempt],
    ready_backends: Option<usize>,
) -> ReachSummary {
    let mut outcomes = BTreeMap::new();
    let mut backends: BTreeMap<String, usize> = BTreeMap::new();
    let mut identified = 0;
    for a in attempts {
        *outcomes.entry(a.outcome.class().to_string()).or_default() += 1;
        if let (true, Some(b)) = (a.outcome.reached(), &a.backend) {
            *backends.entry(b.clone()).or_default() += 1;
            identified += 1;
        }
    }
    let affinity = match backends.len() {
        0 => Affinity::Unknown,
        1 if identified < 2 => Affinity::Unknown,
        1 => {
            let backend = backends.keys().next().cloned().unwrap_or_default();
            match ready_backends {
                Some(n) if n >= 2 && identified >= STICKY_MIN => {
                    Affinity::Sticky { backend, ready: n }
                }
                Some(n) if n >= 2 => Affinity::Unknown,
                _ => Affinity::Single { backend },
            }
        }
        n => Affinity::Spread { backends: n },
    };
    let mut lat: Vec<u64> = attempts
        .iter()
        .map(|a| a.latency.as_micros() as u64)
        .collect();
    lat.sort_unstable();
    ReachSummary {
        target: target.to_string(),
        attempts: attempts.len(),
        reached: attempts.iter().filter(|a| a.outcome.reached()).count(),
        outcomes,
        backends,
        affinity,
        p50_us: lat.get(lat.len() / 2).copied().unwrap_or(0),
        max_us: lat.last().copied().unwrap_or(0),
    }
}

/// The cluster DNS lookup of the Service name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameCheck {
    /// The name asked, fully qualified.
    pub name: String,
    /// Addresses in the answer, or why there was none.
    pub answer: Result<Vec<std::net::IpAddr>, String>,
}

/// One endpoint probed directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointCheck {
    /// `namespace/pod`.
    pub pod: String,
    /// Its node.
    pub node: Option<String>,
    /// The attempt.
    pub attempt: Attempt,
}

/// A NodePort probed on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePortCheck {
    /// Node name.
    pub node: String,
    /// Ready endpoints on that node (what externalTrafficPolicy Local may use).
    pub local_endpoints: usize,
    /// The attempts.
    pub attempts: Vec<Attempt>,
}

/// Everything observed about one Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceObservations {
    /// The Service as the cluster state shows it.
    pub view: ServiceView,
    /// Its name through cluster DNS.
    pub dns: Option<NameCheck>,
    /// Each ready endpoint on its targetPort.
    pub direct: Vec<EndpointCheck>,
    /// When no endpoint answered: the pods' declared container ports, probed on one pod.
    pub declared: Vec<EndpointCheck>,
    /// Attempts through the ClusterIP.
    pub vip: Vec<Attempt>,
    /// Attempts on each node's NodePort.
    pub node_ports: Vec<NodePortCheck>,
    /// Why some checks were not run (a UDP port, a probe budget).
    pub notes: Vec<String>,
}

/// A crash-looping pod with what it left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashView {
    /// The pod.
    pub pod: PodView,
    /// The last lines of its previous container's log, when the node's log files are readable.
    pub last_logs: Vec<String>,
    /// Where the log lines came from.
    pub log_source: Option<String>,
}

fn selector_text(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn tally(attempts: &[Attempt]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for a in attempts {
        *by.entry(a.outcome.to_string()).or_default() += 1;
    }
    by.iter()
        .map(|(o, n)| {
            if *n == 1 {
                o.clone()
            } else {
                format!("{o} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

fn describe(a: &Attempt) -> String {
    format!("{} in {}", a.outcome, latency(a.latency))
}

/// The rules for one Service.
pub fn analyze_service(obs: &ServiceObservations) -> Vec<Finding> {
    let v = &obs.view;
    let Some(port) = &v.port else {
        return vec![];
    };
    let ready = v.ready().count();
    let vip_text = v
        .cluster_ip
        .map(|ip| format!("{}", std::net::SocketAddr::new(ip, port.port)))
        .unwrap_or_else(|| "(headless)".into());
    // 1. Endpoints.
    if ready == 0 {
        return vec![no_endpoints(obs, &vip_text)];
    }
    // 2. Endpoints answer on the targetPort directly?
    let answered: Vec<&EndpointCheck> = obs
        .direct
        .iter()
        .filter(|c| c.attempt.outcome.reached())
        .collect();
    let failed: Vec<&EndpointCheck> = obs
        .direct
        .iter()
        .filter(|c| !c.attempt.outcome.reached())
        .collect();
    if !obs.direct.is_empty() && answered.is_empty() {
        return vec![targetport_closed(obs, port.target.as_str())];
    }
    if !failed.is_empty() {
        let mut f = Finding::new(
            Code::SvcPartialEndpoints,
            format!(
                "{} of {} ready endpoints of {} do not answer on targetPort {}: {}",
                failed.len(),
                obs.direct.len(),
                v.name,
                port.target,
                failed
                    .iter()
                    .map(|c| c.pod.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        for c in &obs.direct {
            f = f.evidence(
                format!("endpoint {} {}", c.pod, c.attempt.addr),
                describe(&c.attempt),
            );
        }
        if !obs.vip.is_empty() {
            f = f.evidence(format!("service VIP {vip_text}"), tally(&obs.vip));
        }
        return vec![f.remediation(format!(
            "the endpoints controller still lists pods that do not serve: look at {} \
             (`kubectl logs`, `kubectl describe pod`); a readinessProbe on the serving port takes \
             such pods out of the Service until they answer",
            failed
                .iter()
                .map(|c| c.pod.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))];
    }
    // 3. The ClusterIP.
    let mut out = Vec::new();
    let vip_failed = obs.vip.iter().filter(|a| !a.outcome.reached()).count();
    if vip_failed > 0 {
        let all = vip_failed == obs.vip.len();
        let mut f = Finding::new(
            Code::SvcVipUnreachable,
            if all {
                format!(
                    "every endpoint of {} answers directly, but its ClusterIP {vip_text} does not \
                     ({}): the Service data path (kube-proxy) is broken on this node",
                    v.name,
                    tally(&obs.vip)
                )
            } else {
                format!(
                    "every endpoint of {} answers directly, but {vip_failed} of {} attempts through \
                     its ClusterIP {vip_text} fail: kube-proxy's rules for it are partly wrong",
                    v.name,
                    obs.vip.len()
                )
            },
        );
        for c in &obs.direct {
            f = f.evidence(
                format!("endpoint {} {}", c.pod, c.attempt.addr),
                describe(&c.attempt),
            );
        }
        f = f.evidence(format!("service VIP {vip_text}"), tally(&obs.vip));
        out.push(f.remediation(
            "check kube-proxy on this node: is it running (`kubectl -n kube-system get pods -l \
             k8s-app=kube-proxy -o wide`, healthz on :10256), are its rules there \
             (`iptables-save | grep <service>`, `ipvsadm -ln`, `nft list table ip kube-proxy`), \
             and what its log says; `kdiag trace` follows the VIP through the rules",
        ));
        // NodePort failures on the same node have the same cause.
        return out;
    }
    // 4. NodePorts.
    if port.node_port.is_some() {
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for c in &obs.node_ports {
            let expected = !v.external_local || c.local_endpoints > 0;
            let failed_connect = !c.attempts.is_empty()
                && c.attempts.iter().all(|a| !a.outcome.reached())
                && c.attempts.iter().any(|a| a.outcome.failed_at_connect());
            if expected && failed_connect {
                bad.push(c);
            } else if c.attempts.iter().any(|a| a.outcome.reached()) {
                good.push(c.node.as_str());
            }
        }
        if !bad.is_empty() {
            let np = port.node_port.unwrap_or_default();
            let mut f = Finding::new(
                Code::SvcNodeportUnreachable,
                format!(
                    "NodePort {np} of {} fails on {} ({}){}",
                    v.name,
                    bad.iter()
                        .map(|c| c.node.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    tally(
                        &bad.iter()
                            .flat_map(|c| c.attempts.iter().cloned())
                            .collect::<Vec<_>>()
                    ),
                    if good.is_empty() {
                        String::new()
                    } else {
                        format!(" while it answers on {}", good.join(", "))
                    }
                ),
            );
            for c in &obs.node_ports {
                let addr = c
                    .attempts
                    .first()
                    .map(|a| a.addr.to_string())
                    .unwrap_or_default();
                f = f.evidence(
                    format!("nodeport {} {addr}", c.node),
                    format!(
                        "{} ({} local endpoints)",
                        tally(&c.attempts),
                        c.local_endpoints
                    ),
                );
            }
            f = f.evidence(format!("service VIP {vip_text}"), tally(&obs.vip));
            out.push(f.remediation(format!(
                "the Service itself works (VIP and endpoints answer); on {}: look for a host \
                 firewall or security group rule dropping or rejecting {np}/tcp (`iptables -S INPUT`, \
                 `nft list ruleset`), kube-proxy's --nodeport-addresses, and whether kube-proxy \
                 runs there",
                bad.iter().map(|c| c.node.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    out
}

fn no_endpoints(obs: &ServiceObservations, vip_text: &str) -> Finding {
    let v = &obs.view;
    let sel = selector_text(&v.selector);
    let port = v.port.as_ref();
    let target = port.map(|p| p.target.clone()).unwrap_or_default();
    let (summary, fix) = if v.selector.is_empty() {
        (
            format!("{} has no selector and no endpoints", v.name),
            "a Service without a selector needs Endpoints/EndpointSlices managed by hand; \
             add a selector matching the pods, or create the endpoints"
                .to_string(),
        )
    } else if v.pods.is_empty() {
        let hint = v
            .near_misses
            .first()
            .map(|m| {
                let d: Vec<String> = m
                    .differs
                    .iter()
                    .map(|(k, want, have)| match have {
                        Some(h) => format!("{k}={h} (selector wants {k}={want})"),
                        None => format!("no {k} label (selector wants {k}={want})"),
                    })
                    .collect();
                format!("; nearest: {} has {}", m.pod, d.join(", "))
            })
            .unwrap_or_default();
        (
            format!(
                "the selector of {} ({sel}) matches no pod in namespace {}{hint}",
                v.name, v.namespace
            ),
            match v.near_misses.first() {
                Some(m) => format!(
                    "make the Service's selector match the pods' labels (`kubectl -n {} get pods \
                     --show-labels`); e.g. set {} in the Service's spec.selector, or fix the \
                     labels in the pod template",
                    v.namespace,
                    m.differs
                        .iter()
                        .filter_map(|(k, _, have)| have.as_ref().map(|h| format!("{k}={h}")))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => format!(
                    "no pod in {} carries the labels {sel}: fix the selector or the pod \
                     template's labels (`kubectl -n {} get pods --show-labels`)",
                    v.namespace, v.namespace
                ),
            },
        )
    } else if v.pods.iter().any(|p| p.ready) {
        // Ready pods selected, yet no ready address: a named targetPort no pod declares.
        (
            format!(
                "{} selects {} ready pod(s) but lists no ready endpoint: targetPort {target:?} \
                 names no container port of those pods",
                v.name,
                v.pods.iter().filter(|p| p.ready).count()
            ),
            format!(
                "set targetPort to a port the pods declare ({})",
                declared_ports(&v.pods)
            ),
        )
    } else {
        (
            format!(
                "{} has no ready endpoints: all {} selected pod(s) are not ready",
                v.name,
                v.pods.len()
            ),
            "find out why the pods are not ready: `kubectl describe pod` (readiness probe, \
             events), `kubectl logs --previous` for restarts"
                .to_string(),
        )
    };
    let mut f = Finding::new(Code::SvcNoEndpoints, summary).evidence(
        format!("endpoints {}", v.name),
        format!(
            "0 ready, {} not ready",
            v.endpoints.iter().filter(|e| !e.ready).count()
        ),
    );
    if !v.selector.is_empty() {
        f = f.evidence(format!("service {} selector", v.name), sel);
    }
    for m in &v.near_misses {
        let labels: Vec<String> = m
            .differs
            .iter()
            .map(|(k, _, have)| format!("{k}={}", have.as_deref().unwrap_or("<none>")))
            .collect();
        f = f.evidence(
            format!("pod {}", m.pod),
            format!("labels {}", labels.join(",")),
        );
    }
    for p in &v.pods {
        f = f.evidence(
            format!("pod {}", p.name),
            format!("{}, ready={}, restarts={}", p.status, p.ready, p.restarts),
        );
    }
    if !obs.vip.is_empty() {
        f = f.evidence(
            format!("service VIP {vip_text}"),
            format!(
                "{} (kube-proxy's REJECT \"has no endpoints\")",
                tally(&obs.vip)
            ),
        );
    }
    f.remediation(fix)
}

fn declared_ports(pods: &[PodView]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in pods {
        for (name, port, proto) in &p.ports {
            let s = match name {
                Some(n) => format!("{port}/{} ({n})", proto.to_lowercase()),
                None => format!("{port}/{}", proto.to_lowercase()),
            };
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
    }
    if seen.is_empty() {
        "the pods declare no container ports".into()
    } else {
        seen.join(", ")
    }
}

fn targetport_closed(obs: &ServiceObservations, target: &str) -> Finding {
    let v = &obs.view;
    let listening: Vec<&EndpointCheck> = obs
        .declared
        .iter()
        .filter(|c| c.attempt.outcome.reached())
        .collect();
    let hint = match listening.first() {
        Some(c) => format!(
            "; the pods do listen on {} ({} answers there)",
            c.attempt.addr.port(),
            c.pod
        ),
        None => format!("; the pods declare {}", declared_ports(&v.pods)),
    };
    let mut f = Finding::new(
        Code::SvcTargetportClosed,
        format!(
            "{} has {} ready endpoint(s) but none answers on targetPort {target}{hint}",
            v.name,
            obs.direct.len()
        ),
    );
    for c in &obs.direct {
        f = f.evidence(
            format!("endpoint {} {}", c.pod, c.attempt.addr),
            describe(&c.attempt),
        );
    }
    for c in &obs.declared {
        f = f.evidence(
            format!("declared port {} {}", c.pod, c.attempt.addr),
            describe(&c.attempt),
        );
    }
    if !obs.vip.is_empty() {
        let vip = obs.vip[0].addr;
        f = f.evidence(format!("service VIP {vip}"), tally(&obs.vip));
    }
    let fix = match listening.first() {
        Some(c) => format!(
            "set the Service's targetPort to {} (or to the container port's name) — `kubectl -n {} \
             edit svc {}`",
            c.attempt.addr.port(),
            v.namespace,
            v.name.rsplit('/').next().unwrap_or(&v.name)
        ),
        None => format!(
            "make targetPort {target} match the port the application listens on ({}), or make \
             the application listen on {target}",
            declared_ports(&v.pods)
        ),
    };
    f.remediation(fix)
}

/// The message with dotted-quad addresses replaced by `*` (replicas report their own IPs).
fn mask_addresses(msg: &str) -> String {
    msg.split_inclusive(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|tok| {
            let body = tok.trim_end_matches(|c: char| !(c.is_ascii_digit() || c == '.'));
            if body.parse::<std::net::Ipv4Addr>().is_ok() {
                format!("*{}", &tok[body.len()..])
            } else {
                tok.to_string()
            }
        })
        .collect()
}

/// Crash-looping pods, grouped by termination message (replicas of one Deployment crash
/// alike): one `app.crashloop` finding a group.
pub fn crashloop_findings(crashes: &[CrashView]) -> Vec<Finding> {
    let mut groups: BTreeMap<String, Vec<&CrashView>> = BTreeMap::new();
    for c in crashes {
        let key = mask_addresses(c.pod.termination_message.as_deref().unwrap_or_default());
        groups.entry(key).or_default().push(c);
    }
    let mut out = Vec::new();
    for (_, pods) in groups {
        let msg = pods[0].pod.termination_message.clone().unwrap_or_default();
        let names: Vec<&str> = pods.iter().map(|c| c.pod.name.as_str()).collect();
        let restarts: u32 = pods.iter().map(|c| c.pod.restarts).max().unwrap_or(0);
        let mut summary = format!(
            "{} crash-loop{} ({}, restarts: {restarts})",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" },
            pods[0].pod.waiting.as_deref().unwrap_or("restarting"),
        );
        if !msg.is_empty() {
            let _ = write!(summary, ": {}", one_line(&msg, 160));
        }
        let mut f = Finding::new(Code::AppCrashloop, summary);
        for c in &pods {
            f = f.evidence(
                format!("pod {}", c.pod.name),
                format!(
                    "{}, ready={}, restarts={}",
                    c.pod.status, c.pod.ready, c.pod.restarts
                ),
            );
            if let Some(m) = &c.pod.termination_message {
                f = f.evidence(
                    format!("pod {} lastState.terminated.message", c.pod.name),
                    one_line(m, 300),
                );
            }
            if !c.last_logs.is_empty() {
                f = f.evidence(
                    format!(
                        "log {}",
                        c.log_source.clone().unwrap_or_else(|| c.pod.name.clone())
                    ),
                    c.last_logs.join(" | "),
                );
            }
        }
        let auth = msg.contains("Access denied") || msg.to_lowercase().contains("password");
        out.push(f.remediation(if auth {
            "the application exits because its configuration is wrong (here: the database \
             credentials); fix the value in the Deployment's env / Secret / ConfigMap and roll it \
             out (`kubectl set env deploy/<name> ...` or edit the Secret, then `kubectl rollout \
             restart`); `kubectl logs --previous` shows the failed start"
        } else {
            "read why the container exits: `kubectl logs --previous <pod>` and `kubectl describe \
             pod <pod>` (Last State, exit code, events); fix the configuration or image and roll \
             the Deployment"
        }));
    }
    out
}

/// Runs every rule over the Services and crash-looping pods, then correlates:
/// a Service whose selected pods all crash-loop is explained by `app.crashloop` (its
/// `svc.no-endpoints` is folded in as evidence, and the crash becomes critical); several
/// Services whose VIPs all fail are one kube-proxy problem, reported once.
pub fn analyze(services: &[ServiceObservations], crashes: &[CrashView]) -> Vec<Finding> {
    let mut crash_findings = crashloop_findings(crashes);
    let crashing: Vec<&str> = crashes.iter().map(|c| c.pod.name.as_str()).collect();
    let mut out = Vec::new();
    let mut vip = Vec::new();
    // Services behind the same dead pods: one finding (the pods are the cause).
    let mut partial: Vec<(Vec<String>, Vec<String>, Finding)> = Vec::new();
    for obs in services {
        for f in analyze_service(obs) {
            let explained_by_crash = f.code == Code::SvcNoEndpoints
                && !obs.view.pods.is_empty()
                && obs
                    .view
                    .pods
                    .iter()
                    .all(|p| p.ready || crashing.contains(&p.name.as_str()))
                && obs.view.pods.iter().any(|p| !p.ready);
            if explained_by_crash {
                if let Some(cf) = crash_findings.iter_mut().find(|cf| {
                    obs.view.pods.iter().any(|p| {
                        cf.evidence
                            .iter()
                            .any(|e| e.source == format!("pod {}", p.name))
                    })
                }) {
                    cf.severity = Severity::Critical;
                    cf.summary
                        .push_str(&format!(" — so {} has no ready endpoints", obs.view.name));
                    for e in f.evidence {
                        if !cf.evidence.iter().any(|x| x.source == e.source) {
                            cf.evidence.push(e);
                        }
                    }
                    continue;
                }
            }
            if f.code == Code::SvcPartialEndpoints {
                let mut dead: Vec<String> = obs
                    .direct
                    .iter()
                    .filter(|c| !c.attempt.outcome.reached())
                    .map(|c| c.pod.clone())
                    .collect();
                dead.sort();
                match partial.iter_mut().find(|(d, _, _)| *d == dead) {
                    Some((_, names, first)) => {
                        names.push(obs.view.name.clone());
                        for e in f.evidence {
                            if !first.evidence.iter().any(|x| x.source == e.source) {
                                first.evidence.push(e);
                            }
                        }
                    }
                    None => partial.push((dead, vec![obs.view.name.clone()], f)),
                }
            } else if f.code == Code::SvcVipUnreachable {
                vip.push((obs.view.name.clone(), f));
            } else {
                out.push(f);
            }
        }
    }
    if vip.len() > 1 {
        let names: Vec<&str> = vip.iter().map(|(n, _)| n.as_str()).collect();
        let mut merged = Finding::new(
            Code::SvcVipUnreachable,
            format!(
                "{} Services answer through their endpoints but not through their ClusterIPs \
                 ({}): kube-proxy is not serving Service VIPs on this node",
                vip.len(),
                names.join(", ")
            ),
        );
        merged.remediation = vip[0].1.remediation.clone();
        for (_, f) in vip {
            merged.evidence.extend(f.evidence);
        }
        out.push(merged);
    } else {
        out.extend(vip.into_iter().map(|(_, f)| f));
    }
    for (dead, names, mut f) in partial {
        if names.len() > 1 {
            f.summary = format!(
                "{} selected by {} {} not answer while listed ready: {}",
                dead.join(", "),
                names.join(", "),
                if dead.len() == 1 { "does" } else { "do" },
                "connections through these Services fail whenever they pick it"
            );
        }
        out.push(f);
    }
    out.extend(crash_findings);
    out
}

/// Folds the DNS probe's "pods answer but the VIP does not" into `svc.vip-unreachable` when
/// the Service probe saw the same for other Services: one kube-proxy problem, one finding.
pub fn fold_dns(
    dns: &DnsObservations,
    dns_findings: &mut Vec<Finding>,
    svc_findings: &mut [Finding],
) {
    let Some(vip_finding) = svc_findings
        .iter_mut()
        .find(|f| f.code == Code::SvcVipUnreachable)
    else {
        return;
    };
    let vip_failed = dns.vip.as_ref().is_some_and(|q| q.result().is_err());
    let pod_ok = dns.pods.iter().any(|(_, q)| q.result().is_ok());
    if !(vip_failed && pod_ok) {
        return;
    }
    let before = dns_findings.len();
    dns_findings.retain(|f| f.code != Code::DnsServerUnreachable);
    if dns_findings.len() == before {
        return;
    }
    if let Some(q) = &dns.vip {
        vip_finding.evidence.push(crate::finding::Evidence::new(
            format!("cluster DNS VIP: {}", q.describe()),
            format!("{} while the DNS pods answer directly", q.summary()),
        ));
    }
    vip_finding
        .summary
        .push_str(" (the cluster DNS VIP fails the same way)");
}

/// The message lines of a CRI container log (`<time> <stream> <P|F> <message>`), last `n`.
/// Lines that are not in CRI format are kept whole (docker json-file logs are not parsed).
pub fn parse_cri_log(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(ts), Some("stdout" | "stderr"), Some("P" | "F"), Some(msg))
                    if ts.contains('T') =>
                {
                    msg.to_string()
                }
                _ => l.to_string(),
            }
        })
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::model::Outcome;
    use crate::service::view::{EndpointView, NearMiss, PortView};
    use std::net::{IpAddr, SocketAddr};

    fn att(addr: &str, outcome: Outcome, backend: Option<&str>) -> Attempt {
        Attempt {
            addr: addr.parse().unwrap(),
            outcome,
            latency: Duration::from_micros(100),
            backend: backend.map(str::to_string),
        }
    }
    fn ok(addr: &str, b: &str) -> Attempt {
        att(
            addr,
            Outcome::Answered {
                status: Some(200),
                reply: format!("{b}\n"),
            },
            Some(b),
        )
    }
    fn pod(name: &str, ready: bool) -> PodView {
        PodView {
            name: format!("default/{name}"),
            ip: Some("10.244.0.5".parse().unwrap()),
            node: Some("n1".into()),
            ready,
            status: if ready {
                "Running".into()
            } else {
                "Running/CrashLoopBackOff".into()
            },
            waiting: (!ready).then(|| "CrashLoopBackOff".into()),
            restarts: if ready { 0 } else { 4 },
            termination_message: (!ready).then(|| {
                "1045 (28000): Access denied for user 'root'@'10.244.0.5' (using password: YES)"
                    .into()
            }),
            ports: vec![(Some("http".into()), 9376, "TCP".into())],
        }
    }

    fn view(ready_eps: usize, node_port: Option<u16>) -> ServiceView {
        ServiceView {
            name: "default/hostnames".into(),
            namespace: "default".into(),
            cluster_ip: Some("10.0.1.175".parse().unwrap()),
            headless: false,
            selector: [("app".to_string(), "hostnames".to_string())].into(),
            port: Some(PortView {
                name: Some("http".into()),
                port: 80,
                protocol: "TCP".into(),
                target: "9376".into(),
                node_port,
            }),
            client_ip_affinity: false,
            external_local: false,
            internal_local: false,
            endpoints: (0..ready_eps)
                .map(|i| EndpointView {
                    pod: format!("default/h-{i}"),
                    ip: IpAddr::from([10, 244, 0, 5 + i as u8]),
                    node: Some(format!("n{}", i % 2 + 1)),
                    ready: true,
                    port: Some(9376),
                })
                .collect(),
            pods: (0..ready_eps)
                .map(|i| pod(&format!("h-{i}"), true))
                .collect(),
            near_misses: vec![],
            nodes: vec![
                ("n1".into(), "172.18.0.2".parse().unwrap()),
                ("n2".into(), "172.18.0.3".parse().unwrap()),
            ],
        }
    }

    fn healthy(n: usize, node_port: Option<u16>) -> ServiceObservations {
        let v = view(n, node_port);
        ServiceObservations {
            direct: v
                .endpoints
                .iter()
                .map(|e| EndpointCheck {
                    pod: e.pod.clone(),
                    node: e.node.clone(),
                    attempt: ok(&format!("{}:9376", e.ip), &e.pod),
                })
                .collect(),
            vip: (0..4)
                .filter(|_| n > 0)
                .map(|i| ok("10.0.1.175:80", &format!("default/h-{}", i % n.max(1))))
                .collect(),
            node_ports: node_port
                .map(|np| {
                    v.nodes
                        .iter()
                        .map(|(name, ip)| NodePortCheck {
                            node: name.clone(),
                            local_endpoints: 1,
                            attempts: vec![ok(
                                &SocketAddr::new(*ip, np).to_string(),
                                "default/h-0",
                            )],
                        })
                        .collect()
                })
                .unwrap_or_default(),
            view: v,
            dns: None,
            declared: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn a_healthy_service_has_no_findings() {
        assert!(analyze(&[healthy(3, Some(30080))], &[]).is_empty());
    }

    #[test]
    fn selector_mismatch_names_the_near_miss() {
        let mut o = healthy(0, None);
        o.view.pods.clear();
        o.view.near_misses = vec![NearMiss {
            pod: "default/h-0".into(),
            differs: vec![("app".into(), "hostname".into(), Some("hostnames".into()))],
        }];
        o.view.selector = [("app".to_string(), "hostname".to_string())].into();
        o.vip = vec![att("10.0.1.175:80", Outcome::Refused, None)];
        let f = analyze(&[o], &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::SvcNoEndpoints);
        assert!(
            f[0].summary
                .contains("app=hostnames (selector wants app=hostname)"),
            "{}",
            f[0].summary
        );
        assert!(f[0].remediation.contains("app=hostnames"));
    }

    #[test]
    fn closed_targetport_names_the_listening_port_and_hides_the_vip_symptom() {
        let mut o = healthy(2, Some(30080));
        for c in &mut o.direct {
            c.attempt = att("10.244.0.5:9377", Outcome::Refused, None);
        }
        o.declared = vec![EndpointCheck {
            pod: "default/h-0".into(),
            node: None,
            attempt: ok("10.244.0.5:9376", "default/h-0"),
        }];
        o.vip = vec![att("10.0.1.175:80", Outcome::Reset, None)];
        let f = analyze(&[o], &[]);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            [Code::SvcTargetportClosed]
        );
        assert!(f[0].summary.contains("listen on 9376"), "{}", f[0].summary);
    }

    #[test]
    fn partial_endpoints_and_vip_and_nodeport() {
        let mut o = healthy(3, Some(30080));
        o.direct[1].attempt = att("10.244.0.6:9376", Outcome::Refused, None);
        let f = analyze(&[o], &[]);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            [Code::SvcPartialEndpoints]
        );
        assert!(f[0].summary.contains("default/h-1"));

        let mut o = healthy(3, Some(30080));
        o.vip = vec![att("10.0.1.175:80", Outcome::Refused, None); 3];
        o.node_ports[0].attempts = vec![att("172.18.0.2:30080", Outcome::Refused, None)];
        let f = analyze(&[o], &[]);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            [Code::SvcVipUnreachable]
        );

        let mut o = healthy(3, Some(30080));
        o.node_ports[1].attempts = vec![att("172.18.0.3:30080", Outcome::Refused, None); 2];
        let f = analyze(&[o], &[]);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            [Code::SvcNodeportUnreachable]
        );
        assert!(f[0].summary.contains("fails on n2"), "{}", f[0].summary);
        assert!(f[0].summary.contains("answers on n1"), "{}", f[0].summary);
    }

    #[test]
    fn external_local_without_local_endpoints_is_expected_to_fail() {
        let mut o = healthy(3, Some(30080));
        o.view.external_local = true;
        o.node_ports[1].local_endpoints = 0;
        o.node_ports[1].attempts = vec![att("172.18.0.3:30080", Outcome::Timeout, None)];
        assert!(analyze(&[o], &[]).is_empty());
    }

    #[test]
    fn a_crash_explains_the_empty_service() {
        let mut o = healthy(0, Some(30080));
        o.view.pods = vec![pod("webapp-a", false), pod("webapp-b", false)];
        let crashes: Vec<CrashView> = o
            .view
            .pods
            .iter()
            .map(|p| CrashView {
                pod: p.clone(),
                last_logs: vec!["Connecting to mysql-service".into(), "Access denied".into()],
                log_source: None,
            })
            .collect();
        let f = analyze(&[o], &crashes);
        assert_eq!(
            f.iter().map(|f| f.code).collect::<Vec<_>>(),
            [Code::AppCrashloop]
        );
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].summary.contains("Access denied"), "{}", f[0].summary);
        assert!(
            f[0].summary.contains("no ready endpoints"),
            "{}",
            f[0].summary
        );
        assert!(f[0].remediation.contains("credentials"));
    }

    #[test]
    fn several_failing_vips_are_one_finding() {
        let mut a = healthy(2, None);
        a.vip = vec![att("10.0.1.175:80", Outcome::Refused, None)];
        let mut b = healthy(2, None);
        b.view.name = "default/web".into();
        b.vip = vec![att("10.0.1.176:80", Outcome::Refused, None)];
        let f = analyze(&[a, b], &[]);
        assert_eq!(f.len(), 1);
        assert!(f[0].summary.starts_with("2 Services"), "{}", f[0].summary);
    }

    #[test]
    fn summaries_detect_spread_and_stickiness() {
        let spread: Vec<Attempt> = (0..10)
            .map(|i| ok("1.2.3.4:80", ["a", "b", "c"][i % 3]))
            .collect();
        let s = summarize("x", &spread, Some(3));
        assert_eq!(s.affinity, Affinity::Spread { backends: 3 });
        assert_eq!(s.backends["a"], 4);
        assert_eq!(s.reached, 10);
        let sticky: Vec<Attempt> = (0..10).map(|_| ok("1.2.3.4:80", "b")).collect();
        assert_eq!(
            summarize("x", &sticky, Some(3)).affinity,
            Affinity::Sticky {
                backend: "b".into(),
                ready: 3
            }
        );
        assert_eq!(
            summarize("x", &sticky, None).affinity,
            Affinity::Single {
                backend: "b".into()
            }
        );
        assert_eq!(
            summarize("x", &sticky[..3], Some(3)).affinity,
            Affinity::Unknown
        );
        let mixed = vec![
            ok("1.2.3.4:80", "a"),
            att("1.2.3.4:80", Outcome::Refused, None),
        ];
        let s = summarize("x", &mixed, None);
        assert_eq!(s.outcomes["refused"], 1);
        assert_eq!(s.reached, 1);
    }

    #[test]
    fn cri_logs_parse() {
        let log = "2024-05-01T10:00:00.1Z stdout F Starting webapp\n\
                   2024-05-01T10:00:00.2Z stderr P partial \n\
                   not cri\n\
                   2024-05-01T10:00:00.3Z stderr F 1045 (28000): Access denied\n";
        assert_eq!(
            parse_cri_log(log, 2),
            vec![
                "not cri".to_string(),
                "1045 (28000): Access denied".to_string()
            ]
        );
        assert_eq!(parse_cri_log(log, 10).len(), 4);
        assert!(parse_cri_log("", 3).is_empty());
    }
}
