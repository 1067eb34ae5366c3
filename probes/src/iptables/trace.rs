//! Follows one packet through kube-proxy's iptables rules, rule by rule, as the kernel does.
//!
//! The walk: nat `PREROUTING` (or `OUTPUT` for a packet from the node itself) into
//! `KUBE-SERVICES` and on through `KUBE-SVC-*` / `KUBE-SVL-*` / `KUBE-EXT-*` / `KUBE-FW-*` /
//! `KUBE-NODEPORTS` to a `KUBE-SEP-*` DNAT; then kube-proxy's filter chains
//! (`KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-NODEPORTS`, `KUBE-PROXY-FIREWALL`, and
//! `KUBE-FORWARD` for a forwarded packet) with the DNATed destination; then nat
//! `POSTROUTING` for masquerading (or, when the dump has no `POSTROUTING` rules, the
//! `KUBE-MARK-MASQ` mark).
//!
//! Semantics follow kube-proxy's own packet-flow tracer (pkg/proxy/iptables/proxier_test.go,
//! `tracePacket`), made kernel-exact where that one simplifies: a `-m statistic --mode random`
//! rule forks the walk with its probability (so each endpoint gets its probability), marks
//! are tracked bit by bit, `RETURN` and `-g` behave as in the kernel, and conntrack state is
//! that of a connection's first packet (`NEW`, plus `DNAT` once DNATed). A session-affinity
//! check (`-m recent --rcheck`) does not match a first packet and is noted. A match the
//! tracer does not understand is assumed to match and listed in [`TraceResult::unknown`].

use super::model::{Action, Chain, Match, RecentMode, Rule, Ruleset, Table};
use crate::trace::{
    join_host_port, merge_outcome, NodeContext, Outcome, Packet, TraceResult, Verdict, WalkStep,
};
use std::net::IpAddr;

/// Jumps deeper than this are a loop (the kernel refuses loops; a dump can still have one).
const MAX_DEPTH: u16 = 64;
/// Matched rules recorded before the walk is cut short.
const MAX_STEPS: usize = 100_000;
/// kube-proxy's default masquerade bit (`--iptables-masquerade-bit=14`).
const MASQ_MARK: u32 = 0x4000;

#[derive(Debug, Clone)]
struct Branch {
    prob: f64,
    mark: u32,
    kube_masq: bool,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    proto_number: u8,
    dnat: bool,
}

#[derive(Debug, Clone, Copy)]
enum Term<'r, 'a> {
    Accept(&'r Rule<'a>),
    Drop(&'r Rule<'a>),
    Reject(&'r Rule<'a>),
    Dnat(&'r Rule<'a>, IpAddr, Option<u16>),
    Masquerade,
}

#[derive(Debug, Clone, Copy)]
enum End<'r, 'a> {
    /// Fell off the end of the chain (or `RETURN`).
    Return,
    Term(Term<'r, 'a>),
}

struct Tracer<'r, 'a> {
    ctx: &'r NodeContext,
    walk: Vec<WalkStep>,
    unknown: Vec<String>,
    notes: Vec<String>,
    truncated: bool,
    _rs: std::marker::PhantomData<&'r Ruleset<'a>>,
}

/// Traces `pkt` through `rules` on a node described by `ctx`.
pub fn trace(rules: &Ruleset<'_>, pkt: &Packet, ctx: &NodeContext) -> TraceResult {
    let mut t = Tracer {
        ctx,
        walk: Vec::new(),
        unknown: Vec::new(),
        notes: Vec::new(),
        truncated: false,
        _rs: std::marker::PhantomData,
    };
    let local_src = ctx.is_local(pkt.src);
    let start = Branch {
        prob: 1.0,
        mark: 0,
        kube_masq: false,
        src: pkt.src,
        dst: pkt.dst,
        dport: pkt.dport,
        proto_number: pkt.proto.number(),
        dnat: false,
    };

    // 1. nat PREROUTING / OUTPUT.
    let mut after_nat: Vec<(Branch, Option<Term>)> = Vec::new();
    match rules.table("nat") {
        None => {
            t.notes
                .push("the dump has no nat table: nothing DNATs the packet".into());
            after_nat.push((start, None));
        }
        Some(nat) => {
            let hook = if local_src { "OUTPUT" } else { "PREROUTING" };
            let entry = if nat.chain(hook).is_some_and(|c| !c.rules.is_empty()) {
                Some(hook)
            } else if nat.chain("KUBE-SERVICES").is_some() {
                t.notes.push(format!(
                    "nat {hook} has no rules in this dump; the walk starts at KUBE-SERVICES, where kube-proxy hooks it"
                ));
                Some("KUBE-SERVICES")
            } else {
                t.notes
                    .push(format!("nat has neither {hook} rules nor KUBE-SERVICES"));
                None
            };
            match entry {
                None => after_nat.push((start, None)),
                Some(entry) => {
                    for (mut b, end) in t.walk_chain(nat, entry, start, 0) {
                        match end {
                            End::Term(Term::Dnat(r, addr, port)) => {
                                b.dst = addr;
                                if let Some(p) = port {
                                    b.dport = p;
                                }
                                b.dnat = true;
                                after_nat.push((b, Some(Term::Dnat(r, addr, port))));
                            }
                            End::Term(Term::Accept(_)) | End::Return => after_nat.push((b, None)),
                            End::Term(term) => after_nat.push((b, Some(term))),
                        }
                    }
                }
            }
        }
    }

    // 2. kube-proxy's filter chains.
    let mut finals: Vec<(Branch, Option<Term>, Option<Term>)> = Vec::new();
    for (b, nat_term) in after_nat {
        if matches!(nat_term, Some(Term::Drop(_) | Term::Reject(_))) {
            finals.push((b, nat_term, None));
            continue;
        }
        let Some(filter) = rules.table("filter") else {
            finals.push((b, nat_term, None));
            continue;
        };
        let forwarded = !local_src && !ctx.is_local(b.dst);
        let mut chains = vec![
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
        ];
        if forwarded {
            chains.push("KUBE-FORWARD");
        }
        let mut work: Vec<(Branch, usize)> = vec![(b, 0)];
        while let Some((b, i)) = work.pop() {
            let Some(name) = chains.get(i) else {
                finals.push((b, nat_term, None));
                continue;
            };
            if filter.chain(name).is_none() {
                work.push((b, i + 1));
                continue;
            }
            let res = t.walk_chain(filter, name, b, 0);
            // keep rule order: push in reverse so the first result is handled first
            for (b, end) in res.into_iter().rev() {
                match end {
                    End::Return => work.push((b, i + 1)),
                    End::Term(term) => finals.push((b, nat_term, Some(term))),
                }
            }
        }
    }

    // 3. masquerade: nat POSTROUTING, or the mark.
    let post = rules.table("nat").filter(|nat| {
        nat.chain("POSTROUTING")
            .is_some_and(|c| !c.rules.is_empty())
    });
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (b, nat_term, filter_term) in finals {
        let (verdict, endpoint, rule) = match (nat_term, filter_term) {
            (_, Some(Term::Drop(r))) | (Some(Term::Drop(r)), _) => (Verdict::Drop, None, Some(r)),
            (_, Some(Term::Reject(r))) | (Some(Term::Reject(r)), _) => {
                (Verdict::Reject, None, Some(r))
            }
            (Some(Term::Dnat(r, addr, port)), _) => (
                Verdict::Dnat,
                Some(join_host_port(addr, port.unwrap_or(b.dport))),
                Some(r),
            ),
            (_, Some(Term::Accept(r))) => (Verdict::Accept, None, Some(r)),
            _ => (Verdict::NoMatch, None, None),
        };
        let masquerade = match (verdict, post) {
            (Verdict::Drop | Verdict::Reject, _) => false,
            (_, Some(nat)) => {
                let res = t.walk_chain(nat, "POSTROUTING", b.clone(), 0);
                res.iter()
                    .any(|(_, e)| matches!(e, End::Term(Term::Masquerade)))
            }
            (_, None) => b.kube_masq || b.mark & MASQ_MARK != 0,
        };
        let o = Outcome {
            verdict,
            endpoint,
            probability: b.prob,
            masquerade,
            rule: rule.map(|r| r.raw.to_string()),
            comment: rule.and_then(|r| r.comment().map(str::to_string)),
        };
        merge_outcome(&mut outcomes, o);
    }

    if t.truncated {
        t.notes.push(format!(
            "the walk was cut short after {MAX_STEPS} matched rules"
        ));
    }
    TraceResult::from_outcomes(outcomes, t.walk, t.unknown, t.notes)
}

/// Result of matching one rule against a branch.
struct Matched {
    probability: Option<f64>,
    notes: Vec<String>,
}

impl<'r, 'a> Tracer<'r, 'a> {
    fn walk_chain(
        &mut self,
        table: &'r Table<'a>,
        chain: &str,
        br: Branch,
        depth: u16,
    ) -> Vec<(Branch, End<'r, 'a>)> {
        if depth > MAX_DEPTH {
            self.note(format!(
                "jump depth over {MAX_DEPTH} at {}/{chain}: a loop; treated as RETURN",
                table.name
            ));
            return vec![(br, End::Return)];
        }
        match table.chain(chain) {
            Some(c) => self.walk_from(table, c, 0, br, depth),
            None => {
                self.note(format!(
                    "jump to chain {chain}, which table {} does not have; treated as RETURN",
                    table.name
                ));
                vec![(br, End::Return)]
            }
        }
    }

    fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }

    fn walk_from(
        &mut self,
        table: &'r Table<'a>,
        c: &'r Chain<'a>,
        start: usize,
        mut br: Branch,
        depth: u16,
    ) -> Vec<(Branch, End<'r, 'a>)> {
        let mut out = Vec::new();
        let candidates = c.candidates(br.dst, br.dport, start);
        for idx in candidates {
            let rule = &c.rules[idx];
            let Some(m) = self.matches(rule, &br) else {
                continue;
            };
            if self.walk.len() >= MAX_STEPS {
                self.truncated = true;
                out.push((br, End::Return));
                return out;
            }
            match m.probability {
                Some(q) if q < 1.0 => {
                    let mut taken = br.clone();
                    taken.prob *= q;
                    br.prob *= 1.0 - q;
                    let mut notes = m.notes;
                    notes.push(format!("random branch taken with probability {q}"));
                    self.step(table, c, rule, &taken, depth, notes);
                    if q > 0.0 {
                        let res = self.apply_target(table, c, idx, rule, taken, depth);
                        out.extend(res);
                    }
                    if br.prob <= 0.0 {
                        return out;
                    }
                }
                _ => {
                    self.step(table, c, rule, &br, depth, m.notes);
                    out.extend(self.apply_target(table, c, idx, rule, br, depth));
                    return out;
                }
            }
        }
        out.push((br, End::Return));
        out
    }

    fn step(
        &mut self,
        table: &Table<'a>,
        c: &Chain<'a>,
        rule: &Rule<'a>,
        br: &Branch,
        depth: u16,
        notes: Vec<String>,
    ) {
        self.walk.push(WalkStep {
            table: table.name.to_string(),
            chain: c.name.to_string(),
            rule: rule.raw.to_string(),
            line: rule.line,
            depth,
            probability: br.prob,
            notes,
        });
    }

    /// Runs the rule's target for `br`, then (if the target returns) the rest of `c`.
    fn apply_target(
        &mut self,
        table: &'r Table<'a>,
        c: &'r Chain<'a>,
        idx: usize,
        rule: &'r Rule<'a>,
        mut br: Branch,
        depth: u16,
    ) -> Vec<(Branch, End<'r, 'a>)> {
        let Some(tgt) = rule.target() else {
            return self.walk_from(table, c, idx + 1, br, depth);
        };
        match tgt.name {
            "ACCEPT" => return vec![(br, End::Term(Term::Accept(rule)))],
            "DROP" => return vec![(br, End::Term(Term::Drop(rule)))],
            "REJECT" => return vec![(br, End::Term(Term::Reject(rule)))],
            "RETURN" => return vec![(br, End::Return)],
            "MASQUERADE" | "SNAT" => return vec![(br, End::Term(Term::Masquerade))],
            "DNAT" => {
                if let Action::Dnat { addr, port } = tgt.action {
                    return vec![(br, End::Term(Term::Dnat(rule, addr, port)))];
                }
                self.unknown.push(format!(
                    "line {}: DNAT without a --to-destination the tracer understands; ignored",
                    rule.line
                ));
            }
            "MARK" => match tgt.action {
                Action::Mark { mask, xor } => br.mark = (br.mark & !mask) ^ xor,
                _ => self.unknown.push(format!(
                    "line {}: MARK options the tracer does not understand; mark unchanged",
                    rule.line
                )),
            },
            "LOG" | "NFLOG" | "TRACE" | "AUDIT" | "CT" | "NOTRACK" | "CONNMARK" | "CLASSIFY"
            | "TCPMSS" | "CHECKSUM" | "DSCP" | "TOS" | "TTL" | "HL" => {}
            name if table.chain(name).is_some() => {
                if name == "KUBE-MARK-MASQ" {
                    br.kube_masq = true;
                }
                let goto = tgt.goto;
                let mut out = Vec::new();
                for (b, end) in self.walk_chain(table, name, br, depth + 1) {
                    match end {
                        End::Term(_) => out.push((b, end)),
                        End::Return if goto => out.push((b, End::Return)),
                        End::Return => out.extend(self.walk_from(table, c, idx + 1, b, depth)),
                    }
                }
                return out;
            }
            "KUBE-MARK-MASQ" => {
                br.kube_masq = true;
                br.mark |= MASQ_MARK;
                self.note(
                    "KUBE-MARK-MASQ is not in this dump; taken as kube-proxy's (mark 0x4000)"
                        .into(),
                );
            }
            other => {
                self.unknown.push(format!(
                    "line {}: target {other} is neither a chain in table {} nor one the tracer knows; treated as non-terminating",
                    rule.line, table.name
                ));
            }
        }
        self.walk_from(table, c, idx + 1, br, depth)
    }

    /// `None` when the rule does not match; else the branch probability and notes.
    fn matches(&mut self, rule: &Rule<'a>, br: &Branch) -> Option<Matched> {
        let mut probability: Option<f64> = None;
        let mut unknown: Vec<String> = Vec::new();
        let mut notes = Vec::new();
        if let Some(e) = rule.decode_error() {
            let s = format!(
                "line {}: the rule does not decode ({e}); treated as not matching",
                rule.line
            );
            if !self.unknown.contains(&s) {
                self.unknown.push(s);
            }
            return None;
        }
        for m in rule.matches() {
            let ok = match m {
                Match::Source { net, neg } => net.contains(br.src) != *neg,
                Match::Destination { net, neg } => net.contains(br.dst) != *neg,
                Match::Protocol { number, neg } => {
                    (*number == 0 || *number == br.proto_number) != *neg
                }
                Match::Port { dst, lo, hi, neg } => {
                    if *dst {
                        (*lo..=*hi).contains(&br.dport) != *neg
                    } else {
                        unknown.push(format!(
                            "{}--sport {lo}:{hi} (the source port is not known)",
                            if *neg { "! " } else { "" }
                        ));
                        true
                    }
                }
                Match::MultiPort { which, ranges, neg } => {
                    let hit = ranges
                        .iter()
                        .any(|(lo, hi)| (*lo..=*hi).contains(&br.dport));
                    match *which {
                        "--dports" | "--destination-ports" => hit != *neg,
                        _ => {
                            unknown.push(format!("{which} (the source port is not known)"));
                            true
                        }
                    }
                }
                Match::AddrType { src, kind, neg } => {
                    let ip = if *src { br.src } else { br.dst };
                    let hit = match *kind {
                        "LOCAL" => Some(self.ctx.is_local(ip)),
                        "MULTICAST" => Some(ip.is_multicast()),
                        "BROADCAST" => Some(ip == IpAddr::from([255, 255, 255, 255])),
                        "UNICAST" => {
                            Some(!ip.is_multicast() && ip != IpAddr::from([255, 255, 255, 255]))
                        }
                        _ => None,
                    };
                    match hit {
                        Some(h) => h != *neg,
                        None => {
                            unknown.push(format!("addrtype {kind}"));
                            true
                        }
                    }
                }
                Match::Random { probability: p } => {
                    probability = Some(probability.unwrap_or(1.0) * p);
                    true
                }
                Match::Recent {
                    name,
                    mode,
                    seconds,
                } => match mode {
                    RecentMode::Set => {
                        notes.push(format!(
                            "session affinity: remembers the client in recent list {name}"
                        ));
                        true
                    }
                    RecentMode::Remove => true,
                    RecentMode::Rcheck | RecentMode::Update => {
                        let s = format!(
                            "session affinity (recent list {name}{}): a client that connected recently goes straight to {}, skipping the random choice; a first connection does not match",
                            seconds.map(|s| format!(", {s} s")).unwrap_or_default(),
                            rule.target().map(|t| t.name).unwrap_or("its endpoint")
                        );
                        self.note(s);
                        false
                    }
                },
                Match::Mark { value, mask, neg } => ((br.mark & mask) == *value) != *neg,
                Match::CtState { states, neg } => {
                    let hit = states
                        .split(',')
                        .any(|s| s == "NEW" || (s == "DNAT" && br.dnat));
                    hit != *neg
                }
                Match::Interface { input, name, neg } => {
                    unknown.push(format!(
                        "{}{} {name} (interfaces are not modeled)",
                        if *neg { "! " } else { "" },
                        if *input { "-i" } else { "-o" }
                    ));
                    true
                }
                Match::Accounting(_) => true,
                Match::Other { text, .. } => {
                    unknown.push((*text).to_string());
                    true
                }
            };
            if !ok {
                return None;
            }
        }
        for u in unknown {
            let s = format!("line {}: {u}: assumed to match", rule.line);
            notes.push(format!("assumed to match: {u}"));
            if !self.unknown.contains(&s) {
                self.unknown.push(s);
            }
        }
        Some(Matched { probability, notes })
    }
}

impl Chain<'_> {
    /// Rule indices from `start` on that can match a packet to `dst:dport`, in order.
    fn candidates(&self, dst: IpAddr, dport: u16, start: usize) -> Vec<usize> {
        let Some(ix) = &self.dst_index else {
            return (start..self.rules.len()).collect();
        };
        let lists = [
            ix.by_dst.get(&dst).map(Vec::as_slice).unwrap_or(&[]),
            ix.by_dport.get(&dport).map(Vec::as_slice).unwrap_or(&[]),
            ix.other.as_slice(),
        ];
        let mut pos = lists.map(|l| l.partition_point(|&x| (x as usize) < start));
        let mut out = Vec::with_capacity(lists.iter().zip(pos).map(|(l, p)| l.len() - p).sum());
        // merge three sorted, disjoint lists
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (k, l) in lists.iter().enumerate() {
                if let Some(&x) = l.get(pos[k]) {
                    if best.is_none_or(|(_, b)| x < b) {
                        best = Some((k, x));
                    }
                }
            }
            let Some((k, x)) = best else { break };
            out.push(x as usize);
            pos[k] += 1;
        }
        out
    }
}
