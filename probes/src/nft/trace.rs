//! Follows one packet through an nftables ruleset the way the kernel does for kube-proxy's
//! traffic: the base chains of each hook in priority order (every table whose family sees
//! the packet), `prerouting` (or `output` for a packet from the node itself), then `input`
//! or `forward` depending on where the (possibly DNATed) destination lives, then
//! `postrouting` for masquerading.
//!
//! Semantics follow kube-proxy's own packet-flow tracer (pkg/proxy/nftables/helpers_test.go,
//! `tracePacket`), made kernel-exact where that one simplifies: `numgen random mod N vmap`
//! forks the walk with each value's share (so each endpoint gets its probability), verdict
//! maps and named sets are looked up (indexed), `jump`/`goto`/`return` behave as in the
//! kernel, marks are tracked bit by bit, and conntrack state is a first packet's (`new`).
//! A session-affinity set (`ip saddr @affinity-...`) is empty for a first connection and is
//! noted. When the ruleset has kube-proxy's table, only that table is walked (other tables'
//! base chains — firewalld, docker — are named in a note, not evaluated, since their
//! interface matches cannot be decided here); otherwise every table is.
//! As in kube-proxy's tracer, `postrouting` is evaluated for every accepted path, so
//! `masquerade` reports the mark even when the endpoint is the node itself. A statement the
//! tracer does not understand is assumed to match, and listed in [`TraceResult::unknown`].

use super::model::{
    Action, Atom, Chain, Concat, ElementValue, Field, Hook, MarkOp, Operand, Rule, Ruleset, Stmt,
    Table,
};
use crate::trace::{
    join_host_port, merge_outcome, NodeContext, Outcome, Packet, TraceResult, Verdict, WalkStep,
};
use std::net::IpAddr;

/// kube-proxy's table (`ip kube-proxy`, `ip6 kube-proxy`).
const KUBE_PROXY_TABLE: &str = "kube-proxy";
/// Jumps deeper than this are a loop.
const MAX_DEPTH: u16 = 64;
/// Matched rules recorded before the walk is cut short.
const MAX_STEPS: usize = 100_000;

/// The rule that decided a path, with the comment that explains it.
#[derive(Debug, Clone)]
struct Decider {
    rule: String,
    comment: Option<String>,
}

#[derive(Debug, Clone)]
struct Branch {
    prob: f64,
    mark: u32,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    proto: u8,
    dnat: Option<(IpAddr, u16, Decider)>,
    accepted: Option<Decider>,
    masq: bool,
    /// The comment of the last verdict-map element the packet hit, and the map's name.
    via: Option<(String, String)>,
}

#[derive(Debug, Clone)]
enum End {
    /// Fell off the end of the chain, or `return`.
    Return,
    Accept(Decider),
    Drop(Decider),
    Reject(Decider),
    Dnat(IpAddr, Option<u16>, Decider),
    Masq,
}

enum Flow {
    /// The rule did not match, or matched without a verdict: go on with the next rule.
    Next,
    End(End),
}

struct Tracer<'r> {
    rs: &'r Ruleset<'r>,
    /// Only the `kube-proxy` tables, when the ruleset has one.
    only_kube_proxy: bool,
    ctx: &'r NodeContext,
    walk: Vec<WalkStep>,
    unknown: Vec<String>,
    notes: Vec<String>,
    truncated: bool,
}

/// Traces `pkt` through `rules` on a node described by `ctx`.
pub fn trace(rules: &Ruleset<'_>, pkt: &Packet, ctx: &NodeContext) -> TraceResult {
    let only_kube_proxy = rules.tables.iter().any(|t| t.name == KUBE_PROXY_TABLE);
    let mut t = Tracer {
        rs: rules,
        only_kube_proxy,
        ctx,
        walk: Vec::new(),
        unknown: Vec::new(),
        notes: Vec::new(),
        truncated: false,
    };
    let start = Branch {
        prob: 1.0,
        mark: 0,
        src: pkt.src,
        dst: pkt.dst,
        dport: pkt.dport,
        proto: pkt.proto.number(),
        dnat: None,
        accepted: None,
        masq: false,
        via: None,
    };
    if only_kube_proxy {
        let others: Vec<String> = rules
            .tables
            .iter()
            .filter(|x| x.name != KUBE_PROXY_TABLE && !x.bases.is_empty())
            .map(|x| x.display_name())
            .collect();
        if !others.is_empty() {
            t.notes.push(format!(
                "only kube-proxy's table is traced; {} also hook(s) the packet path and may accept or drop it first",
                others.join(", ")
            ));
        }
    }
    if !rules.tables.iter().any(|t| t.family.sees(pkt.dst)) {
        t.notes.push(format!(
            "the ruleset has no table of a family that sees {} packets",
            if pkt.dst.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    let mut finished: Vec<(Branch, Option<End>)> = Vec::new();
    let first = if ctx.is_local(pkt.src) {
        Hook::Output
    } else {
        Hook::Prerouting
    };
    let mut live = t.run_hook(&first, vec![start], &mut finished);
    if first == Hook::Prerouting {
        let (input, forward): (Vec<Branch>, Vec<Branch>) =
            live.into_iter().partition(|b| ctx.is_local(b.dst));
        let mut next = t.run_hook(&Hook::Input, input, &mut finished);
        next.extend(t.run_hook(&Hook::Forward, forward, &mut finished));
        live = next;
    }
    let live = t.run_hook(&Hook::Postrouting, live, &mut finished);
    finished.extend(live.into_iter().map(|b| (b, None)));

    let mut outcomes: Vec<Outcome> = Vec::new();
    for (b, end) in finished {
        let (verdict, endpoint, d) = match end {
            Some(End::Drop(d)) => (Verdict::Drop, None, Some(d)),
            Some(End::Reject(d)) => (Verdict::Reject, None, Some(d)),
            _ => match (&b.dnat, &b.accepted) {
                (Some((addr, port, d)), _) => (
                    Verdict::Dnat,
                    Some(join_host_port(*addr, *port)),
                    Some(d.clone()),
                ),
                (None, Some(d)) => (Verdict::Accept, None, Some(d.clone())),
                (None, None) => (Verdict::NoMatch, None, None),
            },
        };
        let o = Outcome {
            verdict,
            endpoint,
            probability: b.prob,
            masquerade: b.masq
                && matches!(verdict, Verdict::Dnat | Verdict::Accept | Verdict::NoMatch),
            rule: d.as_ref().map(|d| d.rule.clone()),
            comment: d.and_then(|d| d.comment),
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

impl<'r> Tracer<'r> {
    fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }

    fn unknown(&mut self, rule: &Rule<'_>, what: &str) -> String {
        let s = format!("line {}: {what}: assumed to match", rule.line);
        if !self.unknown.contains(&s) {
            self.unknown.push(s);
        }
        format!("assumed to match: {what}")
    }

    /// Runs every base chain on `hook` (priority order) for each branch; returns the branches
    /// that go on, and pushes the ones that end (drop/reject) to `finished`.
    fn run_hook(
        &mut self,
        hook: &Hook,
        branches: Vec<Branch>,
        finished: &mut Vec<(Branch, Option<End>)>,
    ) -> Vec<Branch> {
        let mut chains: Vec<(&'r Table<'r>, &'r Chain<'r>, i32)> = Vec::new();
        for t in &self.rs.tables {
            if self.only_kube_proxy && t.name != KUBE_PROXY_TABLE {
                continue;
            }
            for c in t.base_chains() {
                if let Some(b) = &c.base {
                    if &b.hook == hook {
                        chains.push((t, c, b.priority));
                    }
                }
            }
        }
        chains.sort_by_key(|(_, _, p)| *p);
        let mut live = branches;
        for (t, c, _) in chains {
            let mut next = Vec::new();
            for b in live {
                if !t.family.sees(b.dst) {
                    next.push(b);
                    continue;
                }
                for (mut b, end) in self.walk_from(t, c, 0, b, 0) {
                    match end {
                        End::Return => {
                            if c.base.as_ref().is_some_and(|x| x.policy_drop) {
                                let d = Decider {
                                    rule: format!("chain {} policy drop", c.name),
                                    comment: None,
                                };
                                finished.push((b, Some(End::Drop(d))));
                            } else {
                                next.push(b);
                            }
                        }
                        End::Accept(d) => {
                            if b.accepted.is_none() {
                                b.accepted = Some(d);
                            }
                            next.push(b);
                        }
                        End::Dnat(addr, port, d) => {
                            let port = port.unwrap_or(b.dport);
                            if b.dnat.is_none() {
                                b.dst = addr;
                                b.dport = port;
                                b.dnat = Some((addr, port, d));
                            }
                            next.push(b);
                        }
                        End::Masq => {
                            b.masq = true;
                            next.push(b);
                        }
                        e @ (End::Drop(_) | End::Reject(_)) => finished.push((b, Some(e))),
                    }
                }
            }
            live = next;
        }
        live
    }

    fn walk_chain(
        &mut self,
        t: &'r Table<'r>,
        name: &str,
        br: Branch,
        depth: u16,
        rule: &Rule<'_>,
    ) -> Vec<(Branch, End)> {
        if depth > MAX_DEPTH {
            self.note(format!(
                "jump depth over {MAX_DEPTH} at {name}: a loop; treated as return"
            ));
            return vec![(br, End::Return)];
        }
        match t.chain(name) {
            Some(c) => self.walk_from(t, c, 0, br, depth),
            None => {
                self.note(format!(
                    "line {}: jump to chain {name}, which table {} does not have; treated as return",
                    rule.line,
                    t.display_name()
                ));
                vec![(br, End::Return)]
            }
        }
    }

    fn walk_from(
        &mut self,
        t: &'r Table<'r>,
        c: &'r Chain<'r>,
        start: usize,
        br: Branch,
        depth: u16,
    ) -> Vec<(Branch, End)> {
        let mut out = Vec::new();
        let mut idx = start;
        let mut br = br;
        loop {
            let Some(rule) = c.rules.get(idx) else {
                out.push((br, End::Return));
                return out;
            };
            if self.walk.len() >= MAX_STEPS {
                self.truncated = true;
                out.push((br, End::Return));
                return out;
            }
            let mut res = self.eval(t, c, rule, br, depth, Vec::new());
            if res.len() == 1 {
                match res.pop() {
                    Some((b, Flow::Next)) => {
                        br = b;
                        idx += 1;
                        continue;
                    }
                    Some((b, Flow::End(e))) => {
                        out.push((b, e));
                        return out;
                    }
                    None => return out,
                }
            }
            for (b, flow) in res {
                match flow {
                    Flow::Next => out.extend(self.walk_from(t, c, idx + 1, b, depth)),
                    Flow::End(e) => out.push((b, e)),
                }
            }
            return out;
        }
    }

    fn step(
        &mut self,
        t: &Table<'_>,
        c: &Chain<'_>,
        rule: &Rule<'_>,
        br: &Branch,
        depth: u16,
        notes: Vec<String>,
    ) {
        self.walk.push(WalkStep {
            table: t.display_name(),
            chain: c.name.to_string(),
            rule: rule.text.to_string(),
            line: rule.line,
            depth,
            probability: br.prob,
            notes,
        });
    }

    fn decider(&self, rule: &Rule<'_>, br: &Branch, verdict: Verdict) -> Decider {
        let comment = match (&br.via, verdict) {
            (Some((map, c)), Verdict::Reject) if map.starts_with("no-endpoint") => {
                Some(format!("{c} has no endpoints"))
            }
            (Some((map, c)), Verdict::Drop) if map.starts_with("no-endpoint") => {
                Some(format!("{c} has no local endpoints"))
            }
            _ => rule.comment().map(str::to_string),
        };
        Decider {
            rule: rule.text.to_string(),
            comment,
        }
    }

    /// Evaluates `rule` for `br`: its matches, then its statements up to a verdict.
    fn eval(
        &mut self,
        t: &'r Table<'r>,
        c: &'r Chain<'r>,
        rule: &'r Rule<'r>,
        mut br: Branch,
        depth: u16,
        mut notes: Vec<String>,
    ) -> Vec<(Branch, Flow)> {
        for s in rule.stmts() {
            match s {
                Stmt::Match { fields, neg, right } => {
                    match self.matches(t, rule, fields, *neg, right, &br, &mut notes) {
                        true => {}
                        false => return vec![(br, Flow::Next)],
                    }
                }
                Stmt::Vmap {
                    fields,
                    map,
                    entries,
                } => {
                    let Some(key) = self.key(fields, &br) else {
                        let n = self.unknown(
                            rule,
                            "a verdict map keyed on fields the tracer does not know; not followed",
                        );
                        notes.push(n);
                        self.step(t, c, rule, &br, depth, notes);
                        return vec![(br, Flow::Next)];
                    };
                    let found: Option<(Action, Option<String>, String)> = match map {
                        Operand::Named(name) => match t.set(name) {
                            Some(set) => set.lookup(&key).and_then(|e| match &e.value {
                                Some(ElementValue::Verdict(a)) => Some((
                                    a.clone(),
                                    e.comment.as_deref().map(str::to_string),
                                    name.to_string(),
                                )),
                                _ => None,
                            }),
                            None => {
                                self.note(format!(
                                    "line {}: verdict map {name} is not in table {}",
                                    rule.line,
                                    t.display_name()
                                ));
                                None
                            }
                        },
                        _ => entries
                            .iter()
                            .find(|(k, _)| {
                                k.len() == key.len()
                                    && k.iter().zip(key.iter()).all(|(a, b)| a.covers(b))
                            })
                            .map(|(_, a)| (a.clone(), None, String::new())),
                    };
                    let Some((action, comment, name)) = found else {
                        return vec![(br, Flow::Next)];
                    };
                    let shown = super::model::fmt_concat(&key);
                    notes.push(match &comment {
                        Some(cm) => format!("{shown} is in @{name} ({cm}): {action}"),
                        None if name.is_empty() => format!("{shown}: {action}"),
                        None => format!("{shown} is in @{name}: {action}"),
                    });
                    br.via = comment.map(|cm| (name, cm));
                    self.step(t, c, rule, &br, depth, notes);
                    return self.act(t, rule, action, br, depth);
                }
                Stmt::Numgen {
                    modulus,
                    offset,
                    entries,
                } => {
                    // group the values 0..modulus by their verdict
                    let mut shares: Vec<(Action, u64)> = Vec::new();
                    let mut missing = 0u64;
                    for v in 0..u64::from(*modulus) {
                        let val = v + u64::from(*offset);
                        match entries.iter().find(|(k, _)| *k == val) {
                            Some((_, a)) => match shares.iter_mut().find(|(x, _)| x == a) {
                                Some((_, n)) => *n += 1,
                                None => shares.push((a.clone(), 1)),
                            },
                            None => missing += 1,
                        }
                    }
                    let m = f64::from(*modulus);
                    let mut out = Vec::new();
                    for (a, n) in shares {
                        let mut b = br.clone();
                        b.prob *= n as f64 / m;
                        let mut ns = notes.clone();
                        ns.push(format!(
                            "random choice: {a} with probability {}",
                            n as f64 / m
                        ));
                        self.step(t, c, rule, &b, depth, ns);
                        out.extend(self.act(t, rule, a, b, depth));
                    }
                    if missing > 0 {
                        let mut b = br;
                        b.prob *= missing as f64 / m;
                        self.note(format!(
                            "line {}: numgen values without a verdict ({missing} of {modulus}) fall through",
                            rule.line
                        ));
                        out.push((b, Flow::Next));
                    }
                    return out;
                }
                Stmt::Verdict(a) => {
                    self.step(t, c, rule, &br, depth, notes);
                    return self.act(t, rule, a.clone(), br, depth);
                }
                Stmt::Reject => {
                    self.step(t, c, rule, &br, depth, notes);
                    let d = self.decider(rule, &br, Verdict::Reject);
                    return vec![(br, Flow::End(End::Reject(d)))];
                }
                Stmt::Masquerade => {
                    self.step(t, c, rule, &br, depth, notes);
                    return vec![(br, Flow::End(End::Masq))];
                }
                Stmt::Dnat { addr, port } => {
                    self.step(t, c, rule, &br, depth, notes);
                    let d = self.decider(rule, &br, Verdict::Dnat);
                    return vec![(br, Flow::End(End::Dnat(*addr, *port, d)))];
                }
                Stmt::MarkSet { op, value } => {
                    br.mark = match op {
                        MarkOp::Set => *value,
                        MarkOp::Or => br.mark | value,
                        MarkOp::Xor => br.mark ^ value,
                        MarkOp::And => br.mark & value,
                    };
                }
                Stmt::SetUpdate { set } => notes.push(format!(
                    "session affinity: remembers the client in set @{set}"
                )),
                Stmt::Passive(_) => {}
                Stmt::Unknown(text) => {
                    let n = self.unknown(rule, text);
                    notes.push(n);
                }
            }
        }
        self.step(t, c, rule, &br, depth, notes);
        vec![(br, Flow::Next)]
    }

    /// Applies a verdict reached by `rule`.
    fn act(
        &mut self,
        t: &'r Table<'r>,
        rule: &'r Rule<'r>,
        a: Action,
        br: Branch,
        depth: u16,
    ) -> Vec<(Branch, Flow)> {
        match a {
            Action::Accept => {
                let d = self.decider(rule, &br, Verdict::Accept);
                vec![(br, Flow::End(End::Accept(d)))]
            }
            Action::Drop => {
                let d = self.decider(rule, &br, Verdict::Drop);
                vec![(br, Flow::End(End::Drop(d)))]
            }
            Action::Continue => vec![(br, Flow::Next)],
            Action::Return => vec![(br, Flow::End(End::Return))],
            Action::Jump(name) => self
                .walk_chain(t, &name, br, depth + 1, rule)
                .into_iter()
                .map(|(b, e)| match e {
                    End::Return => (b, Flow::Next),
                    e => (b, Flow::End(e)),
                })
                .collect(),
            Action::Goto(name) => self
                .walk_chain(t, &name, br, depth + 1, rule)
                .into_iter()
                .map(|(b, e)| (b, Flow::End(e)))
                .collect(),
        }
    }

    fn fib_type(&self, ip: IpAddr) -> &'static str {
        if self.ctx.is_local(ip) {
            "local"
        } else if ip.is_multicast() {
            "multicast"
        } else if ip == IpAddr::from([255, 255, 255, 255]) {
            "broadcast"
        } else {
            "unicast"
        }
    }

    /// The packet's value for one field; `None` when it is not modeled.
    fn atom_of(&self, f: &Field, br: &Branch) -> Option<Atom> {
        Some(match f {
            Field::Saddr => Atom::Addr(br.src),
            Field::Daddr => Atom::Addr(br.dst),
            Field::L4proto => Atom::Proto(br.proto),
            Field::Dport(_) => Atom::Num(u64::from(br.dport)),
            Field::Mark(mask) => Atom::Num(u64::from(br.mark & mask.unwrap_or(u32::MAX))),
            Field::CtState => Atom::Word("new".into()),
            Field::FibSaddrType => Atom::Word(self.fib_type(br.src).into()),
            Field::FibDaddrType => Atom::Word(self.fib_type(br.dst).into()),
            Field::Sport(_) | Field::Other(_) => return None,
        })
    }

    /// The packet's values for `fields` (no allocation for one field); `None` when one is
    /// not modeled.
    fn key(&self, fields: &[Field], br: &Branch) -> Option<Concat<Atom>> {
        match fields {
            [f] => Some(Concat::One(self.atom_of(f, br)?)),
            _ => Some(Concat::Many(
                fields
                    .iter()
                    .map(|f| self.atom_of(f, br))
                    .collect::<Option<Vec<_>>>()?
                    .into_boxed_slice(),
            )),
        }
    }

    #[expect(clippy::too_many_arguments)]
    fn matches(
        &mut self,
        t: &Table<'_>,
        rule: &Rule<'_>,
        fields: &[Field],
        neg: bool,
        right: &Operand,
        br: &Branch,
        notes: &mut Vec<String>,
    ) -> bool {
        // `tcp dport 80` also requires TCP, whatever the operator
        if fields
            .iter()
            .any(|f| matches!(f, Field::Dport(Some(p)) | Field::Sport(Some(p)) if *p != br.proto))
        {
            return false;
        }
        // `ct state new`, `fib daddr type local`: compare words without building a key
        if let [f @ (Field::CtState | Field::FibSaddrType | Field::FibDaddrType)] = fields {
            let w = match f {
                Field::CtState => "new",
                Field::FibSaddrType => self.fib_type(br.src),
                _ => self.fib_type(br.dst),
            };
            let is = |v: &[Atom]| matches!(v, [Atom::Word(x)] if &**x == w);
            match right {
                Operand::Value(v) => return is(v) != neg,
                Operand::Set(es) => return es.iter().any(|e| is(e)) != neg,
                Operand::Named(_) => {}
            }
        }
        let Some(key) = self.key(fields, br) else {
            let what = match fields
                .iter()
                .find(|f| matches!(f, Field::Sport(_) | Field::Other(_)))
            {
                Some(Field::Sport(_)) => {
                    "a source-port match (the source port is not known)".to_string()
                }
                Some(Field::Other(s)) => format!("a match on {s}"),
                _ => "a match".to_string(),
            };
            let n = self.unknown(rule, &what);
            notes.push(n);
            return true;
        };
        let hit = match right {
            Operand::Value(v) => {
                v.len() == key.len() && v.iter().zip(key.iter()).all(|(a, b)| a.covers(b))
            }
            Operand::Set(entries) => entries.iter().any(|v| {
                v.len() == key.len() && v.iter().zip(key.iter()).all(|(a, b)| a.covers(b))
            }),
            Operand::Named(name) => match t.set(name) {
                Some(set) => {
                    let found = set.lookup(&key).is_some();
                    if !found && set.flags.iter().any(|f| f == "dynamic") {
                        self.note(format!(
                            "session affinity (set @{name}): a client that connected recently goes straight to its endpoint, skipping the random choice; a first connection does not match"
                        ));
                    }
                    found
                }
                None => {
                    self.note(format!(
                        "line {}: set {name} is not in table {}; the match fails",
                        rule.line,
                        t.display_name()
                    ));
                    false
                }
            },
        };
        hit != neg
    }
}
