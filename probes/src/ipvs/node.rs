//! The whole IPVS-mode data path of a node: kube-proxy's iptables rules (with their
//! `-m set` matches evaluated against the node's ipsets) around the IPVS virtual-server
//! table. Pure.
//!
//! The packet walks nat PREROUTING (or OUTPUT, from the node) into `KUBE-SERVICES`, where
//! `KUBE-MARK-MASQ` may mark it; then filter INPUT (`KUBE-IPVS-FILTER` rejects a new
//! connection to an address on `kube-ipvs0` that no virtual service serves on that port,
//! `KUBE-PROXY-FIREWALL` drops sources outside `loadBalancerSourceRanges`); then IPVS picks a
//! real server ([`super::trace`]); then, towards each real server, nat POSTROUTING's
//! `KUBE-POSTROUTING` masquerades marked packets and hairpin traffic (`KUBE-LOOP-BACK`).
//! Matches the walk does not understand are assumed to match and listed, never skipped.

use super::ipset::{parse_match_set, IpSets, Lookup};
use super::model::{IpvsTable, ServiceKey};
use crate::iptables::{Action, Match, Ruleset};
use crate::trace::{NodeContext, Packet, TraceResult, Verdict, WalkStep};
use std::net::IpAddr;

/// How deep chain jumps may nest before the walk stops (kube-proxy's are 3 deep).
const MAX_DEPTH: u16 = 16;

/// What one table's walk ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Fell off the base chain or ACCEPTed: the packet goes on.
    Continue,
    /// Dropped.
    Drop,
    /// Rejected.
    Reject,
}

struct Walker<'r, 'a> {
    rules: &'r Ruleset<'a>,
    table: &'r IpvsTable,
    sets: &'r IpSets,
    ctx: &'r NodeContext,
    walk: Vec<WalkStep>,
    unknown: Vec<String>,
    mark: u32,
    masquerade: bool,
    decided: Option<(String, Option<String>)>,
}

impl Walker<'_, '_> {
    /// Local for `addrtype LOCAL`: the node's addresses, loopback, and every address bound
    /// to `kube-ipvs0` (the `KUBE-IPVS-IPS` set) or serving a virtual service (kube-proxy
    /// creates them only for the node's own addresses).
    fn local(&self, ip: IpAddr) -> bool {
        self.ctx.is_local(ip)
            || self
                .table
                .services
                .iter()
                .any(|s| matches!(s.key, ServiceKey::Addr(_, a, _) if a == ip))
            || self
                .sets
                .get("KUBE-IPVS-IPS")
                .is_some_and(|s| s.members.iter().any(|m| m.ip == Some(ip)))
    }

    fn matches(&mut self, m: &Match<'_>, p: &Lookup, line: u32) -> bool {
        match m {
            Match::Source { net, neg } => net.contains(p.src) != *neg,
            Match::Destination { net, neg } => net.contains(p.dst) != *neg,
            Match::Protocol { number, neg } => (*number == p.proto.number()) != *neg,
            Match::Port {
                dst: true,
                lo,
                hi,
                neg,
            } => (*lo..=*hi).contains(&p.dport) != *neg,
            Match::AddrType { src, kind, neg } => {
                let ip = if *src { p.src } else { p.dst };
                let is = match *kind {
                    "LOCAL" => self.local(ip),
                    _ => {
                        self.unknown.push(format!(
                            "line {line}: addrtype {kind} is not evaluated (assumed to match)"
                        ));
                        return true;
                    }
                };
                is != *neg
            }
            Match::Mark { value, mask, neg } => ((self.mark & mask) == *value) != *neg,
            // the first packet of a connection is NEW
            Match::CtState { states, neg } => {
                states.split(',').any(|s| s.eq_ignore_ascii_case("NEW")) != *neg
            }
            Match::Accounting(_) => true,
            Match::Other {
                module: "set",
                text,
            } => match parse_match_set(text) {
                Some((name, flags, neg)) => match self.sets.matches(name, &flags, p) {
                    Some(hit) => hit != neg,
                    None => {
                        self.unknown.push(format!(
                            "line {line}: {text}: set not in the ipset dump or needs a source port (assumed to match)"
                        ));
                        true
                    }
                },
                None => {
                    self.unknown.push(format!(
                        "line {line}: {text} (not understood; assumed to match)"
                    ));
                    true
                }
            },
            Match::Other {
                module: "comment", ..
            } => true,
            other => {
                self.unknown.push(format!(
                    "line {line}: {other:?} is not evaluated (assumed to match)"
                ));
                true
            }
        }
    }

    /// Walks `chain` of `table`; `None` when the chain returns (or falls off) to its caller.
    fn chain(&mut self, table: &str, chain: &str, p: &Lookup, depth: u16) -> Option<End> {
        let Some(t) = self.rules.table(table) else {
            return Some(End::Continue);
        };
        let Some(c) = t.chain(chain) else {
            return Some(End::Continue);
        };
        if depth > MAX_DEPTH {
            self.unknown.push(format!(
                "{table}/{chain}: jumps nest deeper than {MAX_DEPTH}; walk cut short"
            ));
            return Some(End::Continue);
        }
        for r in &c.rules {
            let mut all = true;
            for m in r.matches().iter() {
                if !self.matches(m, p, r.line) {
                    all = false;
                    break;
                }
            }
            if !all {
                continue;
            }
            let Some(tgt) = r.target() else {
                self.step(table, chain, r.raw, r.line, depth);
                continue;
            };
            self.step(table, chain, r.raw, r.line, depth);
            match tgt.name {
                "RETURN" => return None,
                "ACCEPT" => return Some(End::Continue),
                "DROP" => {
                    self.decided = Some((r.raw.to_string(), r.comment().map(str::to_string)));
                    return Some(End::Drop);
                }
                "REJECT" => {
                    self.decided = Some((r.raw.to_string(), r.comment().map(str::to_string)));
                    return Some(End::Reject);
                }
                "MARK" => match tgt.action {
                    Action::Mark { mask, xor } => self.mark = (self.mark & !mask) ^ xor,
                    _ => self.unknown.push(format!(
                        "line {}: MARK options not understood; mark unchanged",
                        r.line
                    )),
                },
                "MASQUERADE" | "SNAT" => {
                    self.masquerade = true;
                    return Some(End::Continue);
                }
                name if t.chain(name).is_some() => {
                    if let Some(end) = self.chain(table, name, p, depth + 1) {
                        return Some(end);
                    }
                    if tgt.goto {
                        return None;
                    }
                }
                "LOG" | "NFLOG" | "TRACE" | "CT" | "NOTRACK" | "CONNMARK" => {}
                other => self.unknown.push(format!(
                    "line {}: target {other} is not evaluated; the walk goes on",
                    r.line
                )),
            }
        }
        None
    }

    fn base(&mut self, table: &str, chain: &str, p: &Lookup) -> End {
        self.chain(table, chain, p, 0).unwrap_or(End::Continue)
    }

    fn step(&mut self, table: &str, chain: &str, rule: &str, line: u32, depth: u16) {
        self.walk.push(WalkStep {
            table: table.to_string(),
            chain: chain.to_string(),
            rule: rule.to_string(),
            line,
            depth,
            probability: 1.0,
            notes: Vec::new(),
        });
    }
}

/// Traces `pkt` through the node's IPVS-mode data path: `rules` is kube-proxy's
/// `iptables-save` in IPVS mode, `sets` the `ipset save` (see the module docs).
pub fn trace_node(
    table: &IpvsTable,
    sets: &IpSets,
    rules: &Ruleset<'_>,
    pkt: &Packet,
    ctx: &NodeContext,
) -> TraceResult {
    let from_node = ctx.is_local(pkt.src);
    let mut w = Walker {
        rules,
        table,
        sets,
        ctx,
        walk: Vec::new(),
        unknown: Vec::new(),
        mark: 0,
        masquerade: false,
        decided: None,
    };
    let look = Lookup {
        src: pkt.src,
        dst: pkt.dst,
        dport: pkt.dport,
        proto: pkt.proto,
    };
    let mut notes = Vec::new();
    let to_local = w.local(pkt.dst);
    let has_vs = table
        .service(&ServiceKey::Addr(pkt.proto, pkt.dst, pkt.dport))
        .is_some();
    // From the node: nat and filter OUTPUT; IPVS takes the packet at LOCAL_OUT, and only a
    // packet no virtual service takes reaches filter INPUT (loopback delivery). From
    // elsewhere: nat PREROUTING, filter INPUT, then IPVS at LOCAL_IN.
    let mut end = if from_node {
        w.base("nat", "OUTPUT", &look)
    } else {
        w.base("nat", "PREROUTING", &look)
    };
    if end == End::Continue && from_node {
        end = w.base("filter", "OUTPUT", &look);
    }
    if end == End::Continue && to_local && !(from_node && has_vs) {
        end = w.base("filter", "INPUT", &look);
    }
    if end != End::Continue {
        let (rule, comment) = w.decided.take().unzip();
        let verdict = if end == End::Drop {
            Verdict::Drop
        } else {
            Verdict::Reject
        };
        return TraceResult::from_outcomes(
            vec![crate::trace::Outcome {
                verdict,
                endpoint: None,
                probability: 1.0,
                masquerade: false,
                rule,
                comment: comment.flatten(),
            }],
            w.walk,
            w.unknown,
            notes,
        );
    }
    let ipvs = super::trace::trace(table, pkt, ctx);
    notes.extend(
        ipvs.notes
            .iter()
            .filter(|n| !n.contains("masquerade is not evaluated"))
            .cloned(),
    );
    if ipvs.verdict == Verdict::NoMatch && !to_local {
        notes.push(format!(
            "{} is not an address of this node or of kube-ipvs0: the packet is routed on untouched",
            pkt.dst
        ));
    }
    let mark = w.mark;
    let mut walk = std::mem::take(&mut w.walk);
    walk.extend(ipvs.walk.iter().cloned());
    let mut outcomes = Vec::new();
    for o in &ipvs.outcomes {
        let mut o = o.clone();
        if let (Verdict::Dnat, Some(ep)) = (o.verdict, &o.endpoint) {
            // towards the real server: nat POSTROUTING with the rewritten destination
            if let Some((ip, port)) = split_endpoint(ep) {
                w.mark = mark;
                w.masquerade = false;
                let before = w.walk.len();
                let post = Lookup {
                    src: pkt.src,
                    dst: ip,
                    dport: port,
                    proto: pkt.proto,
                };
                w.base("nat", "POSTROUTING", &post);
                o.masquerade = w.masquerade;
                for mut s in w.walk.drain(before..) {
                    s.probability = o.probability;
                    s.notes.push(format!("towards {ep}"));
                    walk.push(s);
                }
            }
        }
        outcomes.push(o);
    }
    TraceResult::from_outcomes(outcomes, walk, w.unknown, notes)
}

/// `10.0.0.1:80` / `[fd00::1]:80`.
fn split_endpoint(ep: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = ep.rsplit_once(':')?;
    let a = a.trim_start_matches('[').trim_end_matches(']');
    Some((a.parse().ok()?, p.parse().ok()?))
}
