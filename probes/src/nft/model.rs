//! The typed model of an nftables ruleset, as far as kube-proxy's nftables mode uses it:
//! tables, base and regular chains, sets, maps and verdict maps with indexed elements, and
//! rules as a list of statements. Anything the parser does not understand is kept as
//! [`Stmt::Unknown`] so the tracer can report it. Pure data.

use crate::iptables::IpNet;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

fn key_hash(key: &[Atom]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// 32 bits of the name's hash: collisions (about one in a 100k-chain ruleset) go to the
/// overflow map, so the index stays 8 bytes a chain.
fn name_hash(name: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish() as u32
}

/// Which syntax a ruleset was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Format {
    /// `nft -j list ruleset`.
    Json,
    /// `nft list ruleset` (nested `table { chain { ... } }` blocks).
    List,
    /// An `nft -f` script of `add table|chain|rule|set|map|element` commands (what kube-proxy
    /// sends, and what its tests' fake dumps).
    Script,
}

/// An nftables address family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// `ip` (IPv4).
    Ip,
    /// `ip6` (IPv6).
    Ip6,
    /// `inet` (both).
    Inet,
    /// `arp`, `bridge`, `netdev`: never sees kube-proxy's traffic.
    Other(String),
}

impl Family {
    /// Parses a family keyword.
    pub fn parse(s: &str) -> Family {
        match s {
            "ip" => Family::Ip,
            "ip6" => Family::Ip6,
            "inet" => Family::Inet,
            other => Family::Other(other.to_string()),
        }
    }

    /// The keyword.
    pub fn as_str(&self) -> &str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Other(s) => s,
        }
    }

    /// True when a packet of this IP version passes through this family's hooks.
    pub fn sees(&self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::Inet, _) | (Family::Ip, IpAddr::V4(_)) | (Family::Ip6, IpAddr::V6(_))
        )
    }
}

/// A parsed ruleset: every table in the dump. Names and rule text borrow from the dump
/// (text formats); a rule's statements are parsed when the tracer first reads them (the
/// parser has already checked them), so a 100k-rule ruleset stays small.
#[derive(Debug, Clone)]
pub struct Ruleset<'a> {
    /// The syntax it was read from.
    pub format: Format,
    /// Tables in dump order.
    pub tables: Vec<Table<'a>>,
}

impl<'a> Ruleset<'a> {
    /// Builds a ruleset from parsed tables, indexing each table's base chains.
    pub(crate) fn new(format: Format, mut tables: Vec<Table<'a>>) -> Ruleset<'a> {
        for t in &mut tables {
            t.display = format!("{} {}", t.family.as_str(), t.name);
            t.bases = t
                .chains
                .iter()
                .enumerate()
                .filter(|(_, c)| c.base.is_some())
                .map(|(i, _)| i)
                .collect();
        }
        Ruleset { format, tables }
    }

    /// The table `family name`, if present.
    pub fn table(&self, family: &Family, name: &str) -> Option<&Table<'a>> {
        self.tables
            .iter()
            .find(|t| &t.family == family && t.name == name)
    }

    /// Number of rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }
}

/// One table.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    /// Address family.
    pub family: Family,
    /// Name (`kube-proxy` for kube-proxy's).
    pub name: String,
    /// The table's comment.
    pub comment: Option<String>,
    /// Chains in dump order.
    pub chains: Vec<Chain<'a>>,
    /// Sets and maps in dump order.
    pub sets: Vec<Set>,
    /// Chain index by the name's hash (the name itself lives only in the chain); names
    /// whose hash collides with an earlier chain's go to `chain_ix_more`.
    pub(crate) chain_ix: HashMap<u32, u32>,
    pub(crate) chain_ix_more: HashMap<Box<str>, u32>,
    pub(crate) set_ix: HashMap<String, usize>,
    /// Indices of the base chains (filled by [`Ruleset::new`]).
    pub(crate) bases: Vec<usize>,
    /// `family name` (filled by [`Ruleset::new`]).
    pub(crate) display: String,
}

impl<'a> Table<'a> {
    pub(crate) fn new(family: Family, name: String) -> Table<'a> {
        Table {
            family,
            name,
            comment: None,
            chains: Vec::new(),
            sets: Vec::new(),
            chain_ix: HashMap::new(),
            chain_ix_more: HashMap::new(),
            set_ix: HashMap::new(),
            bases: Vec::new(),
            display: String::new(),
        }
    }

    /// The base chains (hooked to netfilter), in dump order.
    pub fn base_chains(&self) -> impl Iterator<Item = &Chain<'a>> {
        self.bases.iter().map(|&i| &self.chains[i])
    }

    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain<'a>> {
        self.chain_index(name).map(|i| &self.chains[i])
    }

    fn chain_index(&self, name: &str) -> Option<usize> {
        let i = *self.chain_ix.get(&name_hash(name))? as usize;
        if &*self.chains[i].name == name {
            return Some(i);
        }
        self.chain_ix_more.get(name).map(|&i| i as usize)
    }

    /// The set or map called `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.set_ix.get(name).map(|&i| &self.sets[i])
    }

    /// `family name`, e.g. `ip kube-proxy`.
    pub fn display_name(&self) -> String {
        if self.display.is_empty() {
            format!("{} {}", self.family.as_str(), self.name)
        } else {
            self.display.clone()
        }
    }

    pub(crate) fn chain_mut_or_add(&mut self, name: Cow<'a, str>, line: u32) -> &mut Chain<'a> {
        let i = match self.chain_index(&name) {
            Some(i) => i,
            None => {
                let i = self.chains.len();
                let hash = name_hash(&name);
                let more: Option<Box<str>> = self
                    .chain_ix
                    .contains_key(&hash)
                    .then(|| name.as_ref().into());
                self.chains.push(Chain {
                    name,
                    base: None,
                    comment: None,
                    rules: Vec::new(),
                    line,
                });
                let idx = u32::try_from(i).unwrap_or(u32::MAX);
                match more {
                    None => {
                        self.chain_ix.insert(hash, idx);
                    }
                    Some(n) => {
                        self.chain_ix_more.insert(n, idx);
                    }
                }
                i
            }
        };
        &mut self.chains[i]
    }

    pub(crate) fn chain_mut(&mut self, name: &str) -> Option<&mut Chain<'a>> {
        let i = self.chain_index(name)?;
        Some(&mut self.chains[i])
    }

    pub(crate) fn set_mut_or_add(&mut self, name: &str, is_map: bool, line: u32) -> &mut Set {
        let i = match self.set_ix.get(name) {
            Some(&i) => i,
            None => {
                self.sets.push(Set {
                    name: name.to_string(),
                    is_map,
                    key_type: String::new(),
                    data_type: None,
                    flags: Vec::new(),
                    comment: None,
                    elements: Vec::new(),
                    line,
                    exact: HashMap::new(),
                    inexact: Vec::new(),
                });
                self.set_ix.insert(name.to_string(), self.sets.len() - 1);
                self.sets.len() - 1
            }
        };
        &mut self.sets[i]
    }

    pub(crate) fn set_mut(&mut self, name: &str) -> Option<&mut Set> {
        let i = *self.set_ix.get(name)?;
        Some(&mut self.sets[i])
    }
}

/// A netfilter hook a base chain is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hook {
    /// `prerouting`: every packet arriving at the node, before routing.
    Prerouting,
    /// `input`: packets for the node itself.
    Input,
    /// `forward`: packets routed through the node.
    Forward,
    /// `output`: packets the node sends.
    Output,
    /// `postrouting`: every packet leaving.
    Postrouting,
    /// Any other hook (`ingress`, ...): kube-proxy does not use it.
    Other(String),
}

impl Hook {
    /// Parses a hook name.
    pub fn parse(s: &str) -> Hook {
        match s {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            other => Hook::Other(other.to_string()),
        }
    }

    /// The hook's name.
    pub fn as_str(&self) -> &str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Other(s) => s,
        }
    }
}

/// What a base chain is hooked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// The hook.
    pub hook: Hook,
    /// Priority, numeric (`dstnat` is -100, `srcnat` 100, `filter` 0, ...).
    pub priority: i32,
    /// The policy: true for `drop`, false for `accept` (the default).
    pub policy_drop: bool,
}

/// A chain.
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    /// Name.
    pub name: Cow<'a, str>,
    /// Hook, type and priority for a base chain; `None` for a regular chain.
    pub base: Option<Box<BaseChain>>,
    /// The chain's comment.
    pub comment: Option<Box<str>>,
    /// Rules in order.
    pub rules: Vec<Rule<'a>>,
    /// 1-based line where the chain was declared (0 for JSON).
    pub line: u32,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule<'a> {
    /// The rule as written in the dump (generated from the expressions for JSON).
    pub text: Cow<'a, str>,
    /// 1-based line (0 for JSON).
    pub line: u32,
    pub(crate) body: OnceLock<Box<RuleBody>>,
}

/// A rule's statements and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleBody {
    pub(crate) stmts: Box<[Stmt]>,
    pub(crate) comment: Option<Box<str>>,
}

impl<'a> Rule<'a> {
    /// A rule from text the parser has checked; its statements are parsed on first use.
    pub(crate) fn lazy(text: Cow<'a, str>, line: u32) -> Rule<'a> {
        Rule {
            text,
            line,
            body: OnceLock::new(),
        }
    }

    /// A rule whose statements are already known (JSON).
    pub(crate) fn parsed(text: Cow<'a, str>, line: u32, body: RuleBody) -> Rule<'a> {
        Rule {
            text,
            line,
            body: OnceLock::from(Box::new(body)),
        }
    }

    fn body(&self) -> &RuleBody {
        self.body
            .get_or_init(|| Box::new(crate::nft::parse::parse_rule_body(&self.text, self.line)))
    }

    /// The statements, in order.
    pub fn stmts(&self) -> &[Stmt] {
        &self.body().stmts
    }

    /// The rule's `comment "..."`.
    pub fn comment(&self) -> Option<&str> {
        self.body().comment.as_deref()
    }
}

/// One item, or a concatenation `a . b . c`; one item needs no heap allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Concat<T> {
    /// A single item.
    One(T),
    /// Several, concatenated.
    Many(Box<[T]>),
}

impl<T> std::ops::Deref for Concat<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Concat::One(x) => std::slice::from_ref(x),
            Concat::Many(v) => v,
        }
    }
}

impl<T> From<Vec<T>> for Concat<T> {
    fn from(mut v: Vec<T>) -> Self {
        if v.len() == 1 {
            if let Some(x) = v.pop() {
                return Concat::One(x);
            }
        }
        Concat::Many(v.into_boxed_slice())
    }
}

/// A literal value: a key part of a set element, or the right-hand side of a match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Atom {
    /// An address.
    Addr(IpAddr),
    /// A prefix (`10.0.0.0/8`).
    Net(IpNet),
    /// An inclusive address range (`10.0.0.1-10.0.0.9`).
    AddrRange(Box<(IpAddr, IpAddr)>),
    /// An L4 protocol (`tcp`).
    Proto(u8),
    /// A number (port, mark, numgen value).
    Num(u64),
    /// An inclusive number range (`3000-3010`).
    NumRange(u64, u64),
    /// Anything else (`new`, `local`, an interface name).
    Word(Box<str>),
}

impl Atom {
    /// True when the atom stands for exactly one value (hashable lookup).
    pub fn is_exact(&self) -> bool {
        !matches!(
            self,
            Atom::Net(_) | Atom::AddrRange(..) | Atom::NumRange(..)
        )
    }

    /// True when `self` (from the ruleset) covers the exact value `v` (from the packet).
    pub fn covers(&self, v: &Atom) -> bool {
        match (self, v) {
            (Atom::Net(n), Atom::Addr(a)) => n.contains(*a),
            (Atom::AddrRange(r), Atom::Addr(a)) => match (&r.0, &r.1, a) {
                (IpAddr::V4(lo), IpAddr::V4(hi), IpAddr::V4(a)) => (*lo..=*hi).contains(a),
                (IpAddr::V6(lo), IpAddr::V6(hi), IpAddr::V6(a)) => (*lo..=*hi).contains(a),
                _ => false,
            },
            (Atom::NumRange(lo, hi), Atom::Num(n)) => (*lo..=*hi).contains(n),
            (Atom::Num(n), Atom::Proto(p)) | (Atom::Proto(p), Atom::Num(n)) => *n == u64::from(*p),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Addr(a) => write!(f, "{a}"),
            Atom::Net(n) => write!(f, "{}/{}", n.addr, n.prefix),
            Atom::AddrRange(r) => write!(f, "{}-{}", r.0, r.1),
            Atom::Proto(6) => f.write_str("tcp"),
            Atom::Proto(17) => f.write_str("udp"),
            Atom::Proto(132) => f.write_str("sctp"),
            Atom::Proto(p) => write!(f, "{p}"),
            Atom::Num(n) => write!(f, "{n}"),
            Atom::NumRange(a, b) => write!(f, "{a}-{b}"),
            Atom::Word(w) => f.write_str(w),
        }
    }
}

/// Writes `a . b . c`.
pub(crate) fn fmt_concat(atoms: &[Atom]) -> String {
    atoms
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" . ")
}

/// A verdict: what a rule or a verdict-map element does with the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `accept`: leave this base chain, go on to the next hook.
    Accept,
    /// `drop`.
    Drop,
    /// `continue`.
    Continue,
    /// `return`.
    Return,
    /// `jump CHAIN`: run it, then come back.
    Jump(Box<str>),
    /// `goto CHAIN`: run it instead of the rest of this chain.
    Goto(Box<str>),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Accept => f.write_str("accept"),
            Action::Drop => f.write_str("drop"),
            Action::Continue => f.write_str("continue"),
            Action::Return => f.write_str("return"),
            Action::Jump(c) => write!(f, "jump {c}"),
            Action::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// A packet field a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `ip saddr` / `ip6 saddr`.
    Saddr,
    /// `ip daddr` / `ip6 daddr`.
    Daddr,
    /// `meta l4proto` (or `ip protocol` / `ip6 nexthdr`).
    L4proto,
    /// `th dport` (or `tcp|udp|sctp dport`, which also requires that protocol).
    Dport(Option<u8>),
    /// `th sport` (or `tcp|udp|sctp sport`): not known for a first packet.
    Sport(Option<u8>),
    /// `meta mark` / `mark`, with an optional `and MASK`.
    Mark(Option<u32>),
    /// `ct state`.
    CtState,
    /// `fib saddr type`.
    FibSaddrType,
    /// `fib daddr type`.
    FibDaddrType,
    /// Anything else (`iifname`, `ct status`, ...), as written.
    Other(Box<str>),
}

impl Field {
    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, ipx: &str) -> fmt::Result {
        match self {
            Field::Saddr => write!(f, "{ipx} saddr"),
            Field::Daddr => write!(f, "{ipx} daddr"),
            Field::L4proto => f.write_str("meta l4proto"),
            Field::Dport(None) => f.write_str("th dport"),
            Field::Dport(Some(p)) => write!(f, "{} dport", Atom::Proto(*p)),
            Field::Sport(None) => f.write_str("th sport"),
            Field::Sport(Some(p)) => write!(f, "{} sport", Atom::Proto(*p)),
            Field::Mark(None) => f.write_str("meta mark"),
            Field::Mark(Some(m)) => write!(f, "meta mark & {m:#010x}"),
            Field::CtState => f.write_str("ct state"),
            Field::FibSaddrType => f.write_str("fib saddr type"),
            Field::FibDaddrType => f.write_str("fib daddr type"),
            Field::Other(s) => f.write_str(s),
        }
    }
}

/// The right-hand side of a match or the map of a vmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// One value, or a concatenation `a . b`.
    Value(Concat<Atom>),
    /// An anonymous set `{ a, b }` (each entry possibly a concatenation).
    Set(Vec<Concat<Atom>>),
    /// A named set `@name`.
    Named(Box<str>),
}

/// How `mark set` changes the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOp {
    /// `mark set V`.
    Set,
    /// `mark set mark or V`.
    Or,
    /// `mark set mark xor V`.
    Xor,
    /// `mark set mark and V`.
    And,
}

/// One statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stmt {
    /// A match: `fields [!=|==] right`; the rule stops here when it does not match.
    Match {
        /// The fields, concatenated with ` . ` when more than one.
        fields: Concat<Field>,
        /// `!=`.
        neg: bool,
        /// What they are compared with.
        right: Operand,
    },
    /// `fields vmap @map` or `fields vmap { k : verdict, ... }`.
    Vmap {
        /// The lookup key.
        fields: Concat<Field>,
        /// `Named` or `Set` (an anonymous map: `entries`).
        map: Operand,
        /// For an anonymous map: each key's verdict.
        entries: Vec<(Concat<Atom>, Action)>,
    },
    /// `numgen random mod N [offset O] vmap { 0 : goto a, 1 : goto b }`.
    Numgen {
        /// N.
        modulus: u32,
        /// O.
        offset: u32,
        /// Value → verdict.
        entries: Vec<(u64, Action)>,
    },
    /// A verdict.
    Verdict(Action),
    /// `reject [with ...]`.
    Reject,
    /// `masquerade [fully-random ...]`.
    Masquerade,
    /// `dnat [ip|ip6] to ADDR[:PORT]`.
    Dnat {
        /// The new destination.
        addr: IpAddr,
        /// The new port, if given.
        port: Option<u16>,
    },
    /// `meta mark set ...`.
    MarkSet {
        /// The operation.
        op: MarkOp,
        /// The operand.
        value: u32,
    },
    /// `update @set { ip saddr }` / `add @set { ... }` (session affinity).
    SetUpdate {
        /// The set.
        set: Box<str>,
    },
    /// `counter`, `log`, `notrack` and other statements with no effect on the path.
    Passive(Box<str>),
    /// Anything the parser does not understand, as written.
    Unknown(Box<str>),
}

/// Writes a rule's statements in `nft` syntax (used for JSON rules, which have no text).
pub(crate) fn fmt_stmts(stmts: &[Stmt], family: &Family, comment: Option<&str>) -> String {
    struct S<'a>(&'a Stmt, &'a str);
    impl fmt::Display for S<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let ipx = self.1;
            let fields = |f: &mut fmt::Formatter<'_>, fs: &[Field]| -> fmt::Result {
                for (i, x) in fs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" . ")?;
                    }
                    x.fmt_with(f, ipx)?;
                }
                Ok(())
            };
            let operand = |f: &mut fmt::Formatter<'_>, o: &Operand| -> fmt::Result {
                match o {
                    Operand::Value(v) => f.write_str(&fmt_concat(v)),
                    Operand::Named(n) => write!(f, "@{n}"),
                    Operand::Set(s) => write!(
                        f,
                        "{{ {} }}",
                        s.iter()
                            .map(|e| fmt_concat(e))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            };
            match self.0 {
                Stmt::Match {
                    fields: fs,
                    neg,
                    right,
                } => {
                    fields(f, fs)?;
                    f.write_str(if *neg { " != " } else { " " })?;
                    operand(f, right)
                }
                Stmt::Vmap {
                    fields: fs,
                    map,
                    entries,
                } => {
                    fields(f, fs)?;
                    f.write_str(" vmap ")?;
                    match map {
                        Operand::Named(n) => write!(f, "@{n}"),
                        _ => write!(
                            f,
                            "{{ {} }}",
                            entries
                                .iter()
                                .map(|(k, a)| format!("{} : {a}", fmt_concat(k)))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
                Stmt::Numgen {
                    modulus,
                    offset,
                    entries,
                } => {
                    write!(f, "numgen random mod {modulus}")?;
                    if *offset != 0 {
                        write!(f, " offset {offset}")?;
                    }
                    write!(
                        f,
                        " vmap {{ {} }}",
                        entries
                            .iter()
                            .map(|(k, a)| format!("{k} : {a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                Stmt::Verdict(a) => write!(f, "{a}"),
                Stmt::Reject => f.write_str("reject"),
                Stmt::Masquerade => f.write_str("masquerade"),
                Stmt::Dnat { addr, port } => match (addr, port) {
                    (IpAddr::V6(a), Some(p)) => write!(f, "dnat to [{a}]:{p}"),
                    (a, Some(p)) => write!(f, "dnat to {a}:{p}"),
                    (a, None) => write!(f, "dnat to {a}"),
                },
                Stmt::MarkSet { op, value } => match op {
                    MarkOp::Set => write!(f, "meta mark set {value:#010x}"),
                    MarkOp::Or => write!(f, "meta mark set meta mark | {value:#010x}"),
                    MarkOp::Xor => write!(f, "meta mark set meta mark ^ {value:#010x}"),
                    MarkOp::And => write!(f, "meta mark set meta mark & {value:#010x}"),
                },
                Stmt::SetUpdate { set } => write!(f, "update @{set} {{ {ipx} saddr }}"),
                Stmt::Passive(s) | Stmt::Unknown(s) => f.write_str(s),
            }
        }
    }
    let ipx = match family {
        Family::Ip6 => "ip6",
        _ => "ip",
    };
    let mut out: Vec<String> = stmts.iter().map(|s| S(s, ipx).to_string()).collect();
    if let Some(c) = comment {
        out.push(format!("comment \"{c}\""));
    }
    out.join(" ")
}

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementValue {
    /// A verdict (verdict maps).
    Verdict(Action),
    /// Data (other maps).
    Data(Vec<Atom>),
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The key (one atom, or a concatenation).
    pub key: Concat<Atom>,
    /// The value, for a map.
    pub value: Option<ElementValue>,
    /// The element's comment (kube-proxy puts the Service port name here).
    pub comment: Option<Box<str>>,
}

/// A named set or map.
#[derive(Debug, Clone)]
pub struct Set {
    /// Name.
    pub name: String,
    /// A map (`map` / verdict map) rather than a set.
    pub is_map: bool,
    /// The key type as written (`ipv4_addr . inet_proto . inet_service`).
    pub key_type: String,
    /// The data type of a map (`verdict`).
    pub data_type: Option<String>,
    /// Flags (`interval`, `dynamic`, `timeout`).
    pub flags: Vec<String>,
    /// The set's comment.
    pub comment: Option<String>,
    /// Elements in dump order.
    pub elements: Vec<Element>,
    /// 1-based line of the declaration (0 for JSON).
    pub line: u32,
    /// Exact keys by hash; elements whose hash collides with an earlier one's are scanned
    /// with the prefixes and ranges in `inexact`.
    pub(crate) exact: HashMap<u64, u32>,
    pub(crate) inexact: Vec<u32>,
}

impl Set {
    pub(crate) fn push(&mut self, e: Element) {
        let i = self.elements.len() as u32;
        if e.key.iter().all(Atom::is_exact) {
            match self.exact.entry(key_hash(&e.key)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    if self.elements[*o.get() as usize].key[..] != e.key[..] {
                        self.inexact.push(i);
                    }
                }
            }
        } else {
            self.inexact.push(i);
        }
        self.elements.push(e);
    }

    pub(crate) fn clear(&mut self) {
        self.elements.clear();
        self.exact.clear();
        self.inexact.clear();
    }

    /// The element whose key covers `key` (exact values from a packet), if any.
    pub fn lookup(&self, key: &[Atom]) -> Option<&Element> {
        if let Some(&i) = self.exact.get(&key_hash(key)) {
            let e = &self.elements[i as usize];
            if e.key[..] == *key {
                return Some(e);
            }
        }
        // prefixes and ranges: the first covering element, in dump order
        self.inexact
            .iter()
            .map(|&i| &self.elements[i as usize])
            .find(|e| e.key.len() == key.len() && e.key.iter().zip(key).all(|(a, b)| a.covers(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_cover_values() {
        let net = Atom::Net(IpNet {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        });
        assert!(net.covers(&Atom::Addr("10.1.2.3".parse().unwrap())));
        assert!(!net.covers(&Atom::Addr("11.1.2.3".parse().unwrap())));
        assert!(Atom::NumRange(1, 5).covers(&Atom::Num(5)));
        assert!(Atom::Num(6).covers(&Atom::Proto(6)));
        assert_eq!(Atom::Proto(17).to_string(), "udp");
    }

    #[test]
    fn set_lookup_exact_and_prefix() {
        let mut t = Table::new(Family::Ip, "t".into());
        let s = t.set_mut_or_add("s", false, 1);
        s.push(Element {
            key: vec![Atom::Addr("1.2.3.4".parse().unwrap()), Atom::Proto(6)].into(),
            value: None,
            comment: None,
        });
        s.push(Element {
            key: vec![
                Atom::Net(IpNet {
                    addr: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                }),
                Atom::Proto(17),
            ]
            .into(),
            value: None,
            comment: None,
        });
        let s = t.set("s").unwrap();
        assert!(s
            .lookup(&[Atom::Addr("1.2.3.4".parse().unwrap()), Atom::Proto(6)])
            .is_some());
        assert!(s
            .lookup(&[Atom::Addr("10.9.9.9".parse().unwrap()), Atom::Proto(17)])
            .is_some());
        assert!(s
            .lookup(&[Atom::Addr("10.9.9.9".parse().unwrap()), Atom::Proto(6)])
            .is_none());
    }
}
