//! Parses an nftables ruleset into the [`Ruleset`] model: `nft list ruleset` text (nested
//! blocks), `nft -f` scripts of `add ...` commands (kube-proxy's transactions and its tests'
//! fake dumps), and `nft -j list ruleset` JSON. Pure; never panics; every error names a line.
//!
//! Statements the parser does not understand are kept as [`Stmt::Unknown`] (as written)
//! rather than rejected, so a ruleset with something unexpected still traces and the trace
//! says what it could not evaluate.

use super::model::{
    fmt_stmts, Action, Atom, BaseChain, Concat, Element, ElementValue, Family, Field, Format, Hook,
    MarkOp, Operand, Rule, RuleBody, Ruleset, Stmt, Table,
};
use crate::iptables::IpNet;
use serde_json::Value;
use std::borrow::Cow;
use std::net::IpAddr;

/// Why a ruleset could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line of the problem.
    pub line: u32,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A token where another was expected.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A `"` without its closing `"`.
    #[error("unterminated string")]
    UnterminatedString,
    /// A rule or element for a table that was never declared.
    #[error("no table {0}")]
    UnknownTable(String),
    /// A rule for a chain that was never declared.
    #[error("no chain {0} in this table")]
    UnknownChain(String),
    /// An element for a set or map that was never declared.
    #[error("no set or map {0} in this table")]
    UnknownSet(String),
    /// A value that does not parse (priority, address, number).
    #[error("bad value {0:?}")]
    BadValue(String),
    /// A command the parser does not support (`delete`, `replace`, ...).
    #[error("unsupported command {0:?}")]
    UnsupportedCommand(String),
    /// The JSON is malformed or not `nft -j` output.
    #[error("invalid nft json: {0}")]
    Json(String),
}

type Res<T> = Result<T, ParseError>;

/// Parses a ruleset, detecting JSON (starts with `{`), else text (list or script syntax).
pub fn parse_ruleset(input: &str) -> Result<Ruleset<'_>, ParseError> {
    if input.trim_start().starts_with('{') {
        parse_json(input)
    } else {
        parse_text(input)
    }
}

/// Parses `nft list ruleset` output or an `nft -f` script of `add ...` commands.
pub fn parse_text(input: &str) -> Result<Ruleset<'_>, ParseError> {
    let mut p = P {
        lx: Lexer::new(input),
        tables: Vec::new(),
        scratch: Vec::new(),
        saw_block: false,
        saw_cmd: false,
    };
    p.document()?;
    let format = if p.saw_cmd && !p.saw_block {
        Format::Script
    } else {
        Format::List
    };
    Ok(Ruleset::new(format, p.tables))
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Semi,
    Nl,
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{w:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LBrace => "\"{\"".into(),
            Tok::RBrace => "\"}\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Semi => "\";\"".into(),
            Tok::Nl => "end of line".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

#[derive(Clone, Copy)]
struct Lexed<'a> {
    tok: Tok<'a>,
    line: u32,
    start: usize,
    end: usize,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
    peeked: Option<Lexed<'a>>,
    last_end: usize,
    last_line: u32,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            line: 1,
            peeked: None,
            last_end: 0,
            last_line: 1,
        }
    }

    fn lex(&mut self) -> Res<Lexed<'a>> {
        let b = self.src.as_bytes();
        loop {
            match b.get(self.pos) {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\\') if b.get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 2;
                    self.line += 1;
                }
                Some(b'#') => {
                    while self.pos < b.len() && b[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        let start = self.pos;
        let line = self.line;
        let mk = |tok, end| Lexed {
            tok,
            line,
            start,
            end,
        };
        let Some(&c) = b.get(self.pos) else {
            return Ok(mk(Tok::Eof, start));
        };
        let single = |t: Tok<'a>, s: &mut Self| {
            s.pos += 1;
            Ok(mk(t, start + 1))
        };
        match c {
            b'\n' => {
                self.line += 1;
                single(Tok::Nl, self)
            }
            b'{' => single(Tok::LBrace, self),
            b'}' => single(Tok::RBrace, self),
            b',' => single(Tok::Comma, self),
            b';' => single(Tok::Semi, self),
            b'"' => {
                let rest = &self.src[start + 1..];
                match rest.find(['"', '\n']) {
                    Some(i) if rest.as_bytes()[i] == b'"' => {
                        self.pos = start + 1 + i + 1;
                        Ok(mk(Tok::Str(&rest[..i]), self.pos))
                    }
                    _ => Err(ParseError {
                        line,
                        kind: ParseErrorKind::UnterminatedString,
                    }),
                }
            }
            _ => {
                let mut end = start;
                while let Some(&c) = b.get(end) {
                    if matches!(
                        c,
                        b' ' | b'\t' | b'\r' | b'\n' | b'{' | b'}' | b',' | b';' | b'"'
                    ) {
                        break;
                    }
                    end += 1;
                }
                self.pos = end;
                // `end` is at an ASCII byte or the end, so this is a char boundary.
                Ok(mk(Tok::Word(&self.src[start..end]), end))
            }
        }
    }

    fn peek(&mut self) -> Res<Lexed<'a>> {
        if let Some(p) = self.peeked {
            return Ok(p);
        }
        let l = self.lex()?;
        self.peeked = Some(l);
        Ok(l)
    }

    fn next(&mut self) -> Res<Lexed<'a>> {
        let l = match self.peeked.take() {
            Some(p) => p,
            None => self.lex()?,
        };
        if !matches!(l.tok, Tok::Nl | Tok::Eof) {
            self.last_end = l.end;
        }
        self.last_line = l.line;
        Ok(l)
    }

    fn peek_tok(&mut self) -> Res<Tok<'a>> {
        Ok(self.peek()?.tok)
    }

    fn peek_word(&mut self) -> Res<Option<&'a str>> {
        Ok(match self.peek()?.tok {
            Tok::Word(w) => Some(w),
            _ => None,
        })
    }

    fn err(&self, line: u32, kind: ParseErrorKind) -> ParseError {
        ParseError { line, kind }
    }

    fn word(&mut self, expected: &'static str) -> Res<&'a str> {
        let l = self.next()?;
        match l.tok {
            Tok::Word(w) => Ok(w),
            t => Err(self.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected,
                    found: t.describe(),
                },
            )),
        }
    }

    fn string(&mut self, expected: &'static str) -> Res<&'a str> {
        let l = self.next()?;
        match l.tok {
            Tok::Str(s) | Tok::Word(s) => Ok(s),
            t => Err(self.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected,
                    found: t.describe(),
                },
            )),
        }
    }

    fn expect(&mut self, want: Tok<'static>, expected: &'static str) -> Res<()> {
        let l = self.next()?;
        if l.tok == want {
            Ok(())
        } else {
            Err(self.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected,
                    found: l.tok.describe(),
                },
            ))
        }
    }

    fn eat_word(&mut self, w: &str) -> Res<bool> {
        if self.peek_word()? == Some(w) {
            self.next()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Skips to the end of the line (or `;`), leaving it unconsumed.
    fn skip_to_eol(&mut self) -> Res<()> {
        let mut depth = 0u32;
        loop {
            match self.peek_tok()? {
                Tok::Eof => return Ok(()),
                Tok::Nl | Tok::Semi if depth == 0 => return Ok(()),
                Tok::RBrace if depth == 0 => return Ok(()),
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth -= 1,
                _ => {}
            }
            self.next()?;
        }
    }
}

fn bad(line: u32, s: &str) -> ParseError {
    ParseError {
        line,
        kind: ParseErrorKind::BadValue(s.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Values

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn proto_number(s: &str) -> Option<u8> {
    Some(match s {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        _ => return None,
    })
}

/// Parses one literal as written in a ruleset.
pub(crate) fn parse_atom(s: &str) -> Atom {
    if let Some(p) = proto_number(s) {
        return Atom::Proto(p);
    }
    if let Some(n) = parse_num(s) {
        return Atom::Num(n);
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Atom::Addr(a);
    }
    if let Some((a, p)) = s.split_once('/') {
        if let (Ok(addr), Ok(prefix)) = (a.parse::<IpAddr>(), p.parse::<u8>()) {
            if prefix <= if addr.is_ipv4() { 32 } else { 128 } {
                return Atom::Net(IpNet { addr, prefix });
            }
        }
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            return Atom::AddrRange(Box::new((a, b)));
        }
        if let (Some(a), Some(b)) = (parse_num(a), parse_num(b)) {
            return Atom::NumRange(a, b);
        }
    }
    Atom::Word(s.into())
}

/// `10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1`, `fd00::1`.
fn parse_addr_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some((a, None));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:")?;
        return Some((a.parse().ok()?, Some(p.parse().ok()?)));
    }
    let (a, p) = s.rsplit_once(':')?;
    Some((a.parse().ok()?, Some(p.parse().ok()?)))
}

fn priority(line: u32, words: &[&str]) -> Res<i32> {
    let joined: String = words.concat();
    let named = |n: &str| -> Option<i32> {
        Some(match n {
            "raw" => -300,
            "mangle" => -150,
            "dstnat" => -100,
            "filter" => 0,
            "security" => 50,
            "srcnat" => 100,
            "out" => 100,
            _ => return None,
        })
    };
    if let Ok(n) = joined.parse::<i32>() {
        return Ok(n);
    }
    let split = joined
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i);
    let (base, off) = match split {
        Some(i) => (&joined[..i], &joined[i..]),
        None => (joined.as_str(), ""),
    };
    let b = named(base).ok_or_else(|| bad(line, &joined))?;
    let o: i32 = if off.is_empty() {
        0
    } else {
        off.trim_start_matches('+')
            .parse()
            .map_err(|_| bad(line, &joined))?
    };
    Ok(b + o)
}

const FAMILIES: &[&str] = &["ip", "ip6", "inet", "arp", "bridge", "netdev"];

fn action_from(w: &str) -> Option<Action> {
    Some(match w {
        "accept" => Action::Accept,
        "drop" => Action::Drop,
        "continue" => Action::Continue,
        "return" => Action::Return,
        _ => return None,
    })
}

/// Words that start a statement (where an unknown statement's text ends).
fn starts_stmt(w: &str) -> bool {
    matches!(
        w,
        "comment"
            | "jump"
            | "goto"
            | "accept"
            | "drop"
            | "return"
            | "continue"
            | "reject"
            | "masquerade"
            | "dnat"
            | "snat"
            | "counter"
            | "log"
            | "ip"
            | "ip6"
            | "meta"
            | "mark"
            | "th"
            | "tcp"
            | "udp"
            | "sctp"
            | "ct"
            | "fib"
            | "numgen"
            | "notrack"
            | "update"
    )
}

// ---------------------------------------------------------------------------------------
// Text parser

struct P<'a> {
    lx: Lexer<'a>,
    tables: Vec<Table<'a>>,
    scratch: Vec<Rule<'a>>,
    saw_block: bool,
    saw_cmd: bool,
}

impl<'a> P<'a> {
    fn table_ix(&mut self, family: Family, name: &str, create: bool, line: u32) -> Res<usize> {
        if let Some(i) = self
            .tables
            .iter()
            .position(|t| t.family == family && t.name == name)
        {
            return Ok(i);
        }
        if !create {
            return Err(self.lx.err(
                line,
                ParseErrorKind::UnknownTable(format!("{} {name}", family.as_str())),
            ));
        }
        self.tables.push(Table::new(family, name.to_string()));
        Ok(self.tables.len() - 1)
    }

    /// `[family] name`.
    fn family_and_name(&mut self) -> Res<(Family, &'a str)> {
        let w = self.lx.word("a family or table name")?;
        if FAMILIES.contains(&w) {
            // `table ip` alone is a table called "ip" only if a `{` or line end follows
            match self.lx.peek_tok()? {
                Tok::Word(n) => {
                    self.lx.next()?;
                    Ok((Family::parse(w), n))
                }
                _ => Ok((Family::Ip, w)),
            }
        } else {
            Ok((Family::Ip, w))
        }
    }

    fn document(&mut self) -> Res<()> {
        loop {
            let l = self.lx.next()?;
            match l.tok {
                Tok::Eof => return Ok(()),
                Tok::Nl | Tok::Semi => {}
                Tok::Word("table") => {
                    self.saw_block = true;
                    self.list_table(l.line)?;
                }
                Tok::Word("add" | "create" | "insert") => {
                    self.saw_cmd = true;
                    self.command(l.line)?;
                }
                Tok::Word("flush") => {
                    self.saw_cmd = true;
                    self.flush(l.line)?;
                }
                Tok::Word(w) => {
                    return Err(self
                        .lx
                        .err(l.line, ParseErrorKind::UnsupportedCommand(w.to_string())))
                }
                t => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "a command or \"table\"",
                            found: t.describe(),
                        },
                    ))
                }
            }
        }
    }

    fn end_of_command(&mut self) -> Res<()> {
        let l = self.lx.next()?;
        match l.tok {
            Tok::Nl | Tok::Semi | Tok::Eof => Ok(()),
            t => Err(self.lx.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected: "end of line",
                    found: t.describe(),
                },
            )),
        }
    }

    fn flush(&mut self, line: u32) -> Res<()> {
        let what = self.lx.word("ruleset, table, chain, set or map")?;
        match what {
            "ruleset" => self.tables.clear(),
            "table" => {
                let (f, n) = self.family_and_name()?;
                let i = self.table_ix(f, n, false, line)?;
                for c in &mut self.tables[i].chains {
                    c.rules.clear();
                }
            }
            "chain" => {
                let (f, t) = self.family_and_name()?;
                let c = self.lx.word("a chain name")?;
                let i = self.table_ix(f, t, false, line)?;
                let ch = self.tables[i].chain_mut(c).ok_or_else(|| {
                    self.lx
                        .err(line, ParseErrorKind::UnknownChain(c.to_string()))
                })?;
                ch.rules.clear();
            }
            "set" | "map" => {
                let (f, t) = self.family_and_name()?;
                let s = self.lx.word("a set name")?;
                let i = self.table_ix(f, t, false, line)?;
                let set = self.tables[i]
                    .set_mut(s)
                    .ok_or_else(|| self.lx.err(line, ParseErrorKind::UnknownSet(s.to_string())))?;
                set.clear();
            }
            w => {
                return Err(self.lx.err(
                    line,
                    ParseErrorKind::UnsupportedCommand(format!("flush {w}")),
                ))
            }
        }
        self.end_of_command()
    }

    fn command(&mut self, line: u32) -> Res<()> {
        let obj = self.lx.word("table, chain, rule, set, map or element")?;
        match obj {
            "table" => {
                let (f, n) = self.family_and_name()?;
                let i = self.table_ix(f, n, true, line)?;
                if self.lx.peek_tok()? == Tok::LBrace {
                    self.lx.next()?;
                    self.table_body(i)?;
                }
            }
            "chain" => {
                let (f, t) = self.family_and_name()?;
                let name = self.lx.word("a chain name")?;
                let i = self.table_ix(f, t, false, line)?;
                self.tables[i].chain_mut_or_add(Cow::Borrowed(name), line);
                if self.lx.peek_tok()? == Tok::LBrace {
                    self.lx.next()?;
                    self.chain_body(i, name, false)?;
                }
            }
            "rule" => {
                let (f, t) = self.family_and_name()?;
                let chain = self.lx.word("a chain name")?;
                let i = self.table_ix(f, t, false, line)?;
                if self.tables[i].chain(chain).is_none() {
                    return Err(self
                        .lx
                        .err(line, ParseErrorKind::UnknownChain(chain.to_string())));
                }
                // `position N` / `index N` / `handle N`: placement, ignored (appended)
                while let Some(w @ ("position" | "index" | "handle")) = self.lx.peek_word()? {
                    let _ = w;
                    self.lx.next()?;
                    self.lx.word("a number")?;
                }
                let rule = self.rule()?;
                if let Some(r) = rule {
                    if let Some(c) = self.tables[i].chain_mut(chain) {
                        c.rules.push(r);
                    }
                }
            }
            "set" | "map" => {
                let (f, t) = self.family_and_name()?;
                let name = self.lx.word("a set name")?;
                let i = self.table_ix(f, t, false, line)?;
                self.tables[i].set_mut_or_add(name, obj == "map", line);
                self.lx.expect(Tok::LBrace, "\"{\"")?;
                self.set_body(i, name)?;
            }
            "element" => {
                let (f, t) = self.family_and_name()?;
                let name = self.lx.word("a set name")?;
                let i = self.table_ix(f, t, false, line)?;
                if self.tables[i].set(name).is_none() {
                    return Err(self
                        .lx
                        .err(line, ParseErrorKind::UnknownSet(name.to_string())));
                }
                self.lx.expect(Tok::LBrace, "\"{\"")?;
                let elems = self.elements()?;
                if let Some(s) = self.tables[i].set_mut(name) {
                    for e in elems {
                        s.push(e);
                    }
                }
            }
            w => {
                return Err(self
                    .lx
                    .err(line, ParseErrorKind::UnsupportedCommand(format!("add {w}"))))
            }
        }
        self.end_of_command()
    }

    fn list_table(&mut self, line: u32) -> Res<()> {
        let (f, n) = self.family_and_name()?;
        let i = self.table_ix(f, n, true, line)?;
        self.lx.expect(Tok::LBrace, "\"{\"")?;
        self.table_body(i)
    }

    /// After `{` of a table: comment, flags, chains, sets, maps; up to and including `}`.
    fn table_body(&mut self, i: usize) -> Res<()> {
        loop {
            let l = self.lx.next()?;
            match l.tok {
                Tok::Nl | Tok::Semi => {}
                Tok::RBrace => return Ok(()),
                Tok::Word("comment") => {
                    let c = self.lx.string("a comment")?;
                    self.tables[i].comment = Some(c.to_string());
                }
                Tok::Word("flags") => self.lx.skip_to_eol()?,
                Tok::Word("chain") => {
                    let name = self.lx.word("a chain name")?;
                    self.tables[i].chain_mut_or_add(Cow::Borrowed(name), l.line);
                    self.lx.expect(Tok::LBrace, "\"{\"")?;
                    self.chain_body(i, name, true)?;
                }
                Tok::Word(kind @ ("set" | "map")) => {
                    let name = self.lx.word("a set name")?;
                    self.tables[i].set_mut_or_add(name, kind == "map", l.line);
                    self.lx.expect(Tok::LBrace, "\"{\"")?;
                    self.set_body(i, name)?;
                }
                Tok::Word(
                    "flowtable" | "counter" | "quota" | "ct" | "limit" | "secmark" | "synproxy",
                ) => {
                    // objects kube-proxy does not use: skip the block
                    self.lx.skip_to_eol()?;
                    if self.lx.peek_tok()? == Tok::RBrace {
                        self.lx.next()?;
                    }
                }
                t => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "chain, set, map or \"}\"",
                            found: t.describe(),
                        },
                    ))
                }
            }
        }
    }

    /// After `{` of a chain: its spec and (in list syntax) its rules; up to and including `}`.
    fn chain_body(&mut self, i: usize, name: &str, rules: bool) -> Res<()> {
        // a chain's rules are gathered in a reused buffer and stored with exact capacity:
        // no growth slack, and no freed buffers left behind to fragment the heap
        let mut got = std::mem::take(&mut self.scratch);
        got.clear();
        loop {
            let l = self.lx.peek()?;
            match l.tok {
                Tok::Nl | Tok::Semi => {
                    self.lx.next()?;
                }
                Tok::RBrace => {
                    self.lx.next()?;
                    if let Some(c) = self.tables[i].chain_mut(name) {
                        c.rules.reserve_exact(got.len());
                        c.rules.append(&mut got);
                    }
                    self.scratch = got;
                    return Ok(());
                }
                Tok::Eof => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "\"}\"",
                            found: "end of input".into(),
                        },
                    ))
                }
                Tok::Word("type") => {
                    self.lx.next()?;
                    let kind = self.lx.word("a chain type")?;
                    let mut hook = None;
                    let mut prio_words: Vec<&str> = Vec::new();
                    loop {
                        match self.lx.peek_tok()? {
                            Tok::Word("hook") => {
                                self.lx.next()?;
                                hook = Some(Hook::parse(self.lx.word("a hook")?));
                            }
                            Tok::Word("device") => {
                                self.lx.next()?;
                                self.lx.string("a device")?;
                            }
                            Tok::Word("priority") => {
                                self.lx.next()?;
                                while let Tok::Word(w) = self.lx.peek_tok()? {
                                    self.lx.next()?;
                                    prio_words.push(w);
                                }
                            }
                            _ => break,
                        }
                    }
                    let priority = if prio_words.is_empty() {
                        0
                    } else {
                        priority(l.line, &prio_words)?
                    };
                    let hook = hook.ok_or_else(|| {
                        self.lx.err(
                            l.line,
                            ParseErrorKind::Unexpected {
                                expected: "\"hook\"",
                                found: "a base chain without one".into(),
                            },
                        )
                    })?;
                    if let Some(c) = self.tables[i].chain_mut(name) {
                        let policy_drop = c.base.as_ref().is_some_and(|b| b.policy_drop);
                        c.base = Some(Box::new(BaseChain {
                            kind: kind.to_string(),
                            hook,
                            priority,
                            policy_drop,
                        }));
                    }
                }
                Tok::Word("policy") => {
                    self.lx.next()?;
                    let p = self.lx.word("accept or drop")?;
                    if let Some(b) = self.tables[i].chain_mut(name).and_then(|c| c.base.as_mut()) {
                        b.policy_drop = p == "drop";
                    }
                }
                Tok::Word("comment") => {
                    self.lx.next()?;
                    let c = self.lx.string("a comment")?;
                    if let Some(ch) = self.tables[i].chain_mut(name) {
                        ch.comment = Some(c.into());
                    }
                }
                Tok::Word("devices" | "flags") => {
                    self.lx.next()?;
                    self.lx.skip_to_eol()?;
                }
                _ if rules => {
                    if let Some(r) = self.rule()? {
                        got.push(r);
                    }
                }
                t => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "type, policy, comment or \"}\"",
                            found: t.describe(),
                        },
                    ))
                }
            }
        }
    }

    /// After `{` of a set or map: type, flags, comment, elements; up to and including `}`.
    fn set_body(&mut self, i: usize, name: &str) -> Res<()> {
        loop {
            let l = self.lx.next()?;
            match l.tok {
                Tok::Nl | Tok::Semi => {}
                Tok::RBrace => return Ok(()),
                Tok::Word("type" | "typeof") => {
                    let mut words: Vec<&str> = Vec::new();
                    while let Tok::Word(w) = self.lx.peek_tok()? {
                        self.lx.next()?;
                        words.push(w);
                    }
                    let all = words.join(" ");
                    let (k, d) = match all.split_once(" : ") {
                        Some((k, d)) => (k.to_string(), Some(d.to_string())),
                        None => (all, None),
                    };
                    if let Some(s) = self.tables[i].set_mut(name) {
                        s.key_type = k;
                        if d.is_some() {
                            s.is_map = true;
                        }
                        s.data_type = d;
                    }
                }
                Tok::Word("flags") => {
                    let mut flags = Vec::new();
                    loop {
                        match self.lx.peek_tok()? {
                            Tok::Word(w) => {
                                self.lx.next()?;
                                flags.push(w.to_string());
                            }
                            Tok::Comma => {
                                self.lx.next()?;
                            }
                            _ => break,
                        }
                    }
                    if let Some(s) = self.tables[i].set_mut(name) {
                        s.flags = flags;
                    }
                }
                Tok::Word("comment") => {
                    let c = self.lx.string("a comment")?;
                    if let Some(s) = self.tables[i].set_mut(name) {
                        s.comment = Some(c.to_string());
                    }
                }
                Tok::Word("elements") => {
                    if !self.lx.eat_word("=")? {
                        let l = self.lx.peek()?;
                        return Err(self.lx.err(
                            l.line,
                            ParseErrorKind::Unexpected {
                                expected: "\"=\"",
                                found: l.tok.describe(),
                            },
                        ));
                    }
                    self.lx.expect(Tok::LBrace, "\"{\"")?;
                    let elems = self.elements()?;
                    if let Some(s) = self.tables[i].set_mut(name) {
                        for e in elems {
                            s.push(e);
                        }
                    }
                }
                Tok::Word(_) => self.lx.skip_to_eol()?,
                t => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "type, flags, comment, elements or \"}\"",
                            found: t.describe(),
                        },
                    ))
                }
            }
        }
    }

    /// `a . b . c` (at least one atom).
    fn concat(&mut self) -> Res<Vec<Atom>> {
        let mut out = vec![self.atom()?];
        while self.lx.peek_word()? == Some(".") {
            self.lx.next()?;
            out.push(self.atom()?);
        }
        Ok(out)
    }

    fn atom(&mut self) -> Res<Atom> {
        let l = self.lx.next()?;
        match l.tok {
            Tok::Word(w) => Ok(parse_atom(w)),
            Tok::Str(s) => Ok(Atom::Word(s.into())),
            t => Err(self.lx.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected: "a value",
                    found: t.describe(),
                },
            )),
        }
    }

    fn action(&mut self) -> Res<Action> {
        let l = self.lx.next()?;
        match l.tok {
            Tok::Word("jump") => Ok(Action::Jump(self.lx.word("a chain name")?.into())),
            Tok::Word("goto") => Ok(Action::Goto(self.lx.word("a chain name")?.into())),
            Tok::Word(w) if action_from(w).is_some() => Ok(action_from(w).unwrap_or(Action::Drop)),
            t => Err(self.lx.err(
                l.line,
                ParseErrorKind::Unexpected {
                    expected: "a verdict",
                    found: t.describe(),
                },
            )),
        }
    }

    /// After `{`: elements up to and including `}`.
    fn elements(&mut self) -> Res<Vec<Element>> {
        let mut out = Vec::new();
        loop {
            match self.lx.peek_tok()? {
                Tok::Nl | Tok::Comma => {
                    self.lx.next()?;
                }
                Tok::RBrace => {
                    self.lx.next()?;
                    return Ok(out);
                }
                _ => {
                    let key = self.concat()?;
                    let mut comment = None;
                    let mut value = None;
                    loop {
                        match self.lx.peek_tok()? {
                            Tok::Word("comment") => {
                                self.lx.next()?;
                                comment = Some(self.lx.string("a comment")?.into());
                            }
                            Tok::Word("timeout" | "expires") => {
                                self.lx.next()?;
                                self.lx.word("a duration")?;
                            }
                            Tok::Word("counter") => {
                                self.lx.next()?;
                                if self.lx.eat_word("packets")? {
                                    self.lx.word("a number")?;
                                }
                                if self.lx.eat_word("bytes")? {
                                    self.lx.word("a number")?;
                                }
                            }
                            Tok::Word(":") => {
                                self.lx.next()?;
                                value = Some(match self.lx.peek_word()? {
                                    Some(
                                        "jump" | "goto" | "accept" | "drop" | "continue" | "return",
                                    ) => ElementValue::Verdict(self.action()?),
                                    _ => ElementValue::Data(self.concat()?),
                                });
                            }
                            Tok::Comma | Tok::RBrace | Tok::Nl => break,
                            t => {
                                let line = self.lx.peek()?.line;
                                return Err(self.lx.err(
                                    line,
                                    ParseErrorKind::Unexpected {
                                        expected: "\",\", \":\" or \"}\" in elements",
                                        found: t.describe(),
                                    },
                                ));
                            }
                        }
                    }
                    out.push(Element {
                        key: key.into(),
                        value,
                        comment,
                    });
                }
            }
        }
    }

    /// One rule: statements up to the end of the line (not consumed), checked and then kept
    /// as text (parsed again when a trace reads it). `None` for an empty one.
    fn rule(&mut self) -> Res<Option<Rule<'a>>> {
        let (body, start, line) = self.rule_body()?;
        if body.stmts.is_empty() && body.comment.is_none() {
            return Ok(None);
        }
        let end = self.lx.last_end.max(start);
        let src: &'a str = self.lx.src;
        let text = src.get(start..end).unwrap_or_default();
        Ok(Some(Rule::lazy(Cow::Borrowed(text), line)))
    }

    /// Statements up to the end of the line (not consumed), with the rule's start and line.
    fn rule_body(&mut self) -> Res<(RuleBody, usize, u32)> {
        let first = self.lx.peek()?;
        let start = first.start;
        let line = first.line;
        let mut stmts = Vec::new();
        let mut comment: Option<Box<str>> = None;
        loop {
            let l = self.lx.peek()?;
            let w = match l.tok {
                Tok::Nl | Tok::Semi | Tok::RBrace | Tok::Eof => break,
                Tok::Word(w) => w,
                t => {
                    return Err(self.lx.err(
                        l.line,
                        ParseErrorKind::Unexpected {
                            expected: "a statement",
                            found: t.describe(),
                        },
                    ))
                }
            };
            self.lx.next()?;
            let s = match w {
                "comment" => {
                    comment = Some(self.lx.string("a comment")?.into());
                    continue;
                }
                "jump" => Stmt::Verdict(Action::Jump(self.lx.word("a chain name")?.into())),
                "goto" => Stmt::Verdict(Action::Goto(self.lx.word("a chain name")?.into())),
                "accept" | "drop" | "return" | "continue" => {
                    Stmt::Verdict(action_from(w).unwrap_or(Action::Drop))
                }
                "reject" => {
                    if self.lx.eat_word("with")? {
                        self.lx.word("a reject type")?;
                        if let Some(x) = self.lx.peek_word()? {
                            if !starts_stmt(x) {
                                self.lx.next()?;
                            }
                        }
                    }
                    Stmt::Reject
                }
                "masquerade" => {
                    while let Some("fully-random" | "random" | "persistent") =
                        self.lx.peek_word()?
                    {
                        self.lx.next()?;
                        while self.lx.peek_tok()? == Tok::Comma {
                            self.lx.next()?;
                            self.lx.word("a flag")?;
                        }
                    }
                    Stmt::Masquerade
                }
                "dnat" => self.dnat(l.line, l.start)?,
                "counter" => {
                    if self.lx.eat_word("packets")? {
                        self.lx.word("a number")?;
                    }
                    if self.lx.eat_word("bytes")? {
                        self.lx.word("a number")?;
                    }
                    Stmt::Passive("counter".into())
                }
                "notrack" => Stmt::Passive("notrack".into()),
                "log" => {
                    while let Some("prefix" | "level" | "group" | "snaplen" | "flags") =
                        self.lx.peek_word()?
                    {
                        self.lx.next()?;
                        self.lx.string("a log option")?;
                    }
                    Stmt::Passive("log".into())
                }
                "numgen" => self.numgen(l.start)?,
                "update" | "add" if self.lx.peek_word()?.is_some_and(|n| n.starts_with('@')) => {
                    let set = self.lx.word("a set")?.trim_start_matches('@');
                    if self.lx.peek_tok()? == Tok::LBrace {
                        self.lx.next()?;
                        loop {
                            match self.lx.next()?.tok {
                                Tok::RBrace | Tok::Eof | Tok::Nl => break,
                                _ => {}
                            }
                        }
                    }
                    Stmt::SetUpdate { set: set.into() }
                }
                "ip" | "ip6" | "meta" | "mark" | "th" | "tcp" | "udp" | "sctp" | "ct" | "fib"
                | "iifname" | "oifname" | "iif" | "oif" => self.expr_stmt(w, l.start)?,
                _ => self.unknown(l.start)?,
            };
            stmts.push(s);
        }
        Ok((
            RuleBody {
                stmts: stmts.into_boxed_slice(),
                comment,
            },
            start,
            line,
        ))
    }

    /// Consumes words up to the next statement keyword; the text is the unknown statement.
    fn unknown(&mut self, start: usize) -> Res<Stmt> {
        loop {
            match self.lx.peek_tok()? {
                Tok::Word(w) if !starts_stmt(w) => {
                    self.lx.next()?;
                }
                Tok::Str(_) | Tok::Comma => {
                    self.lx.next()?;
                }
                Tok::LBrace => {
                    let mut depth = 0u32;
                    loop {
                        match self.lx.next()?.tok {
                            Tok::LBrace => depth += 1,
                            Tok::RBrace => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    break;
                                }
                            }
                            Tok::Eof | Tok::Nl => break,
                            _ => {}
                        }
                    }
                }
                _ => break,
            }
        }
        let end = self.lx.last_end.max(start);
        Ok(Stmt::Unknown(
            self.lx.src.get(start..end).unwrap_or_default().into(),
        ))
    }

    fn dnat(&mut self, line: u32, start: usize) -> Res<Stmt> {
        if let Some("ip" | "ip6") = self.lx.peek_word()? {
            self.lx.next()?;
        }
        if !self.lx.eat_word("to")? {
            return self.unknown(start);
        }
        let a = self.lx.word("an address")?;
        let (addr, port) = parse_addr_port(a).ok_or_else(|| bad(line, a))?;
        Ok(Stmt::Dnat { addr, port })
    }

    fn numgen(&mut self, start: usize) -> Res<Stmt> {
        if !self.lx.eat_word("random")? || !self.lx.eat_word("mod")? {
            return self.unknown(start);
        }
        let line = self.lx.peek()?.line;
        let m = self.lx.word("a modulus")?;
        let modulus = parse_num(m)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(line, m))?;
        let mut offset = 0;
        if self.lx.eat_word("offset")? {
            let o = self.lx.word("an offset")?;
            offset = parse_num(o)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(line, o))?;
        }
        if !self.lx.eat_word("vmap")? || self.lx.peek_tok()? != Tok::LBrace {
            return self.unknown(start);
        }
        self.lx.next()?;
        let mut entries = Vec::new();
        for e in self.elements()? {
            let k = match &e.key[..] {
                [Atom::Num(n)] => *n,
                _ => return Err(bad(line, "numgen map key")),
            };
            match e.value {
                Some(ElementValue::Verdict(a)) => entries.push((k, a)),
                _ => return Err(bad(line, "numgen map value")),
            }
        }
        Ok(Stmt::Numgen {
            modulus,
            offset,
            entries,
        })
    }

    /// A field after its first word has been consumed.
    fn field(&mut self, first: &'a str) -> Res<Field> {
        let second = |s: &mut Self| -> Res<&'a str> { s.lx.word("a field") };
        Ok(match first {
            "ip" | "ip6" => match second(self)? {
                "saddr" => Field::Saddr,
                "daddr" => Field::Daddr,
                "protocol" | "nexthdr" => Field::L4proto,
                w => Field::Other(format!("{first} {w}").into()),
            },
            "meta" => match second(self)? {
                "l4proto" => Field::L4proto,
                "mark" => Field::Mark(None),
                w => Field::Other(format!("meta {w}").into()),
            },
            "mark" => Field::Mark(None),
            "th" | "tcp" | "udp" | "sctp" => {
                let p = proto_number(first);
                match second(self)? {
                    "dport" => Field::Dport(p),
                    "sport" => Field::Sport(p),
                    w => Field::Other(format!("{first} {w}").into()),
                }
            }
            "ct" => match second(self)? {
                "state" => Field::CtState,
                w => Field::Other(format!("ct {w}").into()),
            },
            "fib" => {
                let mut words = vec![second(self)?];
                while let Some(w) = self.lx.peek_word()? {
                    if w == "type" || words.len() > 4 {
                        break;
                    }
                    self.lx.next()?;
                    words.push(w);
                }
                let ty = self.lx.eat_word("type")?;
                match (words.as_slice(), ty) {
                    (["saddr"], true) => Field::FibSaddrType,
                    (["daddr"], true) => Field::FibDaddrType,
                    _ => Field::Other(
                        format!("fib {}{}", words.join(" "), if ty { " type" } else { "" }).into(),
                    ),
                }
            }
            other => Field::Other(other.into()),
        })
    }

    fn mark_value(&mut self) -> Res<u32> {
        let line = self.lx.peek()?.line;
        let w = self.lx.word("a mark value")?;
        parse_num(w)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(line, w))
    }

    fn expr_stmt(&mut self, first: &'a str, start: usize) -> Res<Stmt> {
        let mut fields = vec![self.field(first)?];
        if let Some(Field::Mark(mask)) = fields.last_mut() {
            if let Some("and" | "&") = self.lx.peek_word()? {
                self.lx.next()?;
                *mask = Some(self.mark_value()?);
            }
        }
        while self.lx.peek_word()? == Some(".") {
            self.lx.next()?;
            let w = self.lx.word("a field")?;
            fields.push(self.field(w)?);
        }
        if self.lx.peek_word()? == Some("set") {
            self.lx.next()?;
            if fields.len() == 1 && matches!(fields[0], Field::Mark(None)) {
                // `mark set mark or V` / `meta mark set meta mark | V` / `mark set V`
                let mut op = MarkOp::Set;
                if let Some(w @ ("mark" | "meta")) = self.lx.peek_word()? {
                    self.lx.next()?;
                    if w == "meta" {
                        self.lx.word("mark")?;
                    }
                    op = match self.lx.word("or, xor or and")? {
                        "or" | "|" => MarkOp::Or,
                        "xor" | "^" => MarkOp::Xor,
                        "and" | "&" => MarkOp::And,
                        _ => return self.unknown(start),
                    };
                }
                let value = self.mark_value()?;
                return Ok(Stmt::MarkSet { op, value });
            }
            return self.unknown(start);
        }
        if self.lx.peek_word()? == Some("vmap") {
            self.lx.next()?;
            let l = self.lx.next()?;
            return match l.tok {
                Tok::Word(n) if n.starts_with('@') => Ok(Stmt::Vmap {
                    fields: fields.into(),
                    map: Operand::Named(n[1..].into()),
                    entries: Vec::new(),
                }),
                Tok::LBrace => {
                    let mut entries = Vec::new();
                    let mut keys = Vec::new();
                    for e in self.elements()? {
                        if let Some(ElementValue::Verdict(a)) = e.value {
                            keys.push(e.key.clone());
                            entries.push((e.key, a));
                        } else {
                            return Err(bad(l.line, "vmap element without a verdict"));
                        }
                    }
                    Ok(Stmt::Vmap {
                        fields: fields.into(),
                        map: Operand::Set(keys),
                        entries,
                    })
                }
                t => Err(self.lx.err(
                    l.line,
                    ParseErrorKind::Unexpected {
                        expected: "@map or \"{\"",
                        found: t.describe(),
                    },
                )),
            };
        }
        let mut neg = false;
        match self.lx.peek_word()? {
            Some("==" | "eq") => {
                self.lx.next()?;
            }
            Some("!=" | "ne") => {
                self.lx.next()?;
                neg = true;
            }
            _ => {}
        }
        let right = match self.lx.peek_tok()? {
            Tok::Word(n) if n.starts_with('@') => {
                self.lx.next()?;
                Operand::Named(n[1..].into())
            }
            Tok::LBrace => {
                self.lx.next()?;
                Operand::Set(self.elements()?.into_iter().map(|e| e.key).collect())
            }
            Tok::Word(_) | Tok::Str(_) => {
                let v = self.concat()?;
                if self.lx.peek_tok()? == Tok::Comma {
                    // `ct state established,related`: an implicit set
                    let mut all = vec![v];
                    while self.lx.peek_tok()? == Tok::Comma {
                        self.lx.next()?;
                        all.push(self.concat()?);
                    }
                    Operand::Set(all.into_iter().map(Into::into).collect())
                } else {
                    Operand::Value(v.into())
                }
            }
            _ => return self.unknown(start),
        };
        Ok(Stmt::Match {
            fields: fields.into(),
            neg,
            right,
        })
    }
}

/// Parses a rule's text (which the parser checked when it read the ruleset) into its
/// statements. Should that fail anyway, the whole text is one unknown statement.
pub(crate) fn parse_rule_body(text: &str, line: u32) -> RuleBody {
    let mut p = P {
        lx: Lexer::new(text),
        tables: Vec::new(),
        scratch: Vec::new(),
        saw_block: false,
        saw_cmd: false,
    };
    p.lx.line = line;
    match p.rule_body() {
        Ok((body, _, _)) if p.lx.peek_tok().ok() == Some(Tok::Eof) => body,
        _ => RuleBody {
            stmts: Box::new([Stmt::Unknown(text.into())]),
            comment: None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// JSON

fn jerr(line: u32, s: impl Into<String>) -> ParseError {
    ParseError {
        line,
        kind: ParseErrorKind::Json(s.into()),
    }
}

/// Parses `nft -j list ruleset` output.
pub fn parse_json(input: &str) -> Result<Ruleset<'static>, ParseError> {
    let v: Value = serde_json::from_str(input).map_err(|e| {
        jerr(
            u32::try_from(e.line()).unwrap_or(u32::MAX).max(1),
            e.to_string().to_lowercase(),
        )
    })?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| jerr(1, "no top-level \"nftables\" array"))?;
    let mut tables: Vec<Table<'static>> = Vec::new();
    fn tix(tables: &mut Vec<Table<'static>>, o: &Value, create: bool) -> Res<usize> {
        let fam = Family::parse(o.get("family").and_then(Value::as_str).unwrap_or("ip"));
        let name = o
            .get("table")
            .or_else(|| o.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| jerr(1, "object without a table name"))?;
        if let Some(i) = tables
            .iter()
            .position(|t| t.family == fam && t.name == name)
        {
            return Ok(i);
        }
        if !create {
            return Err(ParseError {
                line: 1,
                kind: ParseErrorKind::UnknownTable(format!("{} {name}", fam.as_str())),
            });
        }
        tables.push(Table::new(fam, name.to_string()));
        Ok(tables.len() - 1)
    }
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(jerr(1, "an item of \"nftables\" is not an object"));
        };
        for (kind, o) in obj {
            match kind.as_str() {
                "metainfo" => {}
                "table" => {
                    let i = tix(&mut tables, o, true)?;
                    if let Some(c) = o.get("comment").and_then(Value::as_str) {
                        tables[i].comment = Some(c.to_string());
                    }
                }
                "chain" => {
                    let i = tix(&mut tables, o, true)?;
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| jerr(1, "chain without a name"))?;
                    let base = match (o.get("type"), o.get("hook")) {
                        (Some(t), Some(h)) => Some(Box::new(BaseChain {
                            kind: t.as_str().unwrap_or("filter").to_string(),
                            hook: Hook::parse(h.as_str().unwrap_or("")),
                            priority: o
                                .get("prio")
                                .and_then(Value::as_i64)
                                .and_then(|p| i32::try_from(p).ok())
                                .unwrap_or(0),
                            policy_drop: o.get("policy").and_then(Value::as_str) == Some("drop"),
                        })),
                        _ => None,
                    };
                    let c = tables[i].chain_mut_or_add(Cow::Owned(name.to_string()), 0);
                    c.base = base;
                    c.comment = o.get("comment").and_then(Value::as_str).map(Into::into);
                }
                "set" | "map" => {
                    let i = tix(&mut tables, o, true)?;
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| jerr(1, "set without a name"))?;
                    let key_type = match o.get("type") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(a)) => a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" . "),
                        _ => String::new(),
                    };
                    let s = tables[i].set_mut_or_add(name, kind == "map", 0);
                    s.key_type = key_type;
                    s.data_type = o.get("map").and_then(Value::as_str).map(str::to_string);
                    s.flags = match o.get("flags") {
                        Some(Value::Array(a)) => a
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect(),
                        Some(Value::String(f)) => vec![f.clone()],
                        _ => Vec::new(),
                    };
                    s.comment = o.get("comment").and_then(Value::as_str).map(str::to_string);
                    if let Some(Value::Array(elems)) = o.get("elem") {
                        for e in elems {
                            let el = json_element(e, kind == "map")?;
                            s.push(el);
                        }
                    }
                }
                "element" => {
                    let i = tix(&mut tables, o, false)?;
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| jerr(1, "element without a set name"))?;
                    let s = tables[i]
                        .set_mut(name)
                        .ok_or_else(|| jerr(1, format!("element for unknown set {name}")))?;
                    let is_map = s.is_map;
                    if let Some(Value::Array(elems)) = o.get("elem") {
                        for e in elems {
                            s.push(json_element(e, is_map)?);
                        }
                    }
                }
                "rule" => {
                    let i = tix(&mut tables, o, false)?;
                    let chain = o
                        .get("chain")
                        .and_then(Value::as_str)
                        .ok_or_else(|| jerr(1, "rule without a chain"))?;
                    let comment = o.get("comment").and_then(Value::as_str);
                    let mut stmts = Vec::new();
                    if let Some(Value::Array(exprs)) = o.get("expr") {
                        for e in exprs {
                            stmts.push(json_stmt(e));
                        }
                    }
                    let family = tables[i].family.clone();
                    let text = fmt_stmts(&stmts, &family, comment);
                    let c = tables[i].chain_mut(chain).ok_or_else(|| ParseError {
                        line: 1,
                        kind: ParseErrorKind::UnknownChain(chain.to_string()),
                    })?;
                    c.rules.push(Rule::parsed(
                        Cow::Owned(text),
                        0,
                        RuleBody {
                            stmts: stmts.into_boxed_slice(),
                            comment: comment.map(Into::into),
                        },
                    ));
                }
                // flowtables, counters, quotas...: not kube-proxy's
                _ => {}
            }
        }
    }
    Ok(Ruleset::new(Format::Json, tables))
}

fn json_atom(v: &Value) -> Option<Vec<Atom>> {
    Some(match v {
        Value::String(s) => vec![parse_atom(s)],
        Value::Number(n) => vec![Atom::Num(n.as_u64()?)],
        Value::Object(o) => {
            if let Some(Value::Array(c)) = o.get("concat") {
                let mut out = Vec::new();
                for x in c {
                    out.extend(json_atom(x)?);
                }
                out
            } else if let Some(p) = o.get("prefix") {
                let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
                let prefix = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                vec![Atom::Net(IpNet { addr, prefix })]
            } else if let Some(Value::Array(r)) = o.get("range") {
                let (a, b) = (json_atom(r.first()?)?, json_atom(r.get(1)?)?);
                match (a.as_slice(), b.as_slice()) {
                    ([Atom::Addr(a)], [Atom::Addr(b)]) => vec![Atom::AddrRange(Box::new((*a, *b)))],
                    ([Atom::Num(a)], [Atom::Num(b)]) => vec![Atom::NumRange(*a, *b)],
                    _ => return None,
                }
            } else if let Some(e) = o.get("elem") {
                return json_atom(e.get("val")?);
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

fn json_action(v: &Value) -> Option<Action> {
    let o = v.as_object()?;
    let (k, val) = o.iter().next()?;
    let target = || -> Option<Box<str>> { Some(val.get("target")?.as_str()?.into()) };
    Some(match k.as_str() {
        "accept" => Action::Accept,
        "drop" => Action::Drop,
        "continue" => Action::Continue,
        "return" => Action::Return,
        "jump" => Action::Jump(target()?),
        "goto" => Action::Goto(target()?),
        _ => return None,
    })
}

fn json_element(e: &Value, is_map: bool) -> Res<Element> {
    let bad_elem = || jerr(1, format!("element {e} is not understood"));
    let (k, val) = match (is_map, e) {
        (true, Value::Array(pair)) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
        _ => (e, None),
    };
    let comment = k
        .get("elem")
        .and_then(|x| x.get("comment"))
        .and_then(Value::as_str)
        .map(Into::into);
    let key = json_atom(k).ok_or_else(bad_elem)?;
    let value = match val {
        None => None,
        Some(v) => Some(match json_action(v) {
            Some(a) => ElementValue::Verdict(a),
            None => ElementValue::Data(json_atom(v).ok_or_else(bad_elem)?),
        }),
    };
    Ok(Element {
        key: key.into(),
        value,
        comment,
    })
}

fn json_field(v: &Value) -> Option<Vec<Field>> {
    let o = v.as_object()?;
    if let Some(Value::Array(c)) = o.get("concat") {
        let mut out = Vec::new();
        for x in c {
            out.extend(json_field(x)?);
        }
        return Some(out);
    }
    if let Some(Value::Array(a)) = o.get("&") {
        let f = json_field(a.first()?)?;
        let m = u32::try_from(a.get(1)?.as_u64()?).ok()?;
        return match f.as_slice() {
            [Field::Mark(None)] => Some(vec![Field::Mark(Some(m))]),
            _ => None,
        };
    }
    let f = if let Some(p) = o.get("payload") {
        let proto = p.get("protocol")?.as_str()?;
        match (proto, p.get("field")?.as_str()?) {
            ("ip" | "ip6", "saddr") => Field::Saddr,
            ("ip" | "ip6", "daddr") => Field::Daddr,
            ("ip", "protocol") | ("ip6", "nexthdr") => Field::L4proto,
            (pr, "dport") => Field::Dport(proto_number(pr)),
            (pr, "sport") => Field::Sport(proto_number(pr)),
            (pr, f) => Field::Other(format!("{pr} {f}").into()),
        }
    } else if let Some(m) = o.get("meta") {
        match m.get("key")?.as_str()? {
            "l4proto" => Field::L4proto,
            "mark" => Field::Mark(None),
            k => Field::Other(format!("meta {k}").into()),
        }
    } else if let Some(c) = o.get("ct") {
        match c.get("key")?.as_str()? {
            "state" => Field::CtState,
            k => Field::Other(format!("ct {k}").into()),
        }
    } else if let Some(f) = o.get("fib") {
        let flags: Vec<&str> = match f.get("flags") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        match (f.get("result").and_then(Value::as_str), flags.as_slice()) {
            (Some("type"), ["saddr"]) => Field::FibSaddrType,
            (Some("type"), ["daddr"]) => Field::FibDaddrType,
            _ => Field::Other(format!("fib {}", flags.join(" . ")).into()),
        }
    } else {
        return None;
    };
    Some(vec![f])
}

fn json_operand(v: &Value) -> Option<Operand> {
    match v {
        Value::String(s) if s.starts_with('@') => Some(Operand::Named(s[1..].into())),
        Value::Array(a) => Some(Operand::Set(
            a.iter()
                .map(|x| json_atom(x).map(Into::into))
                .collect::<Option<Vec<_>>>()?,
        )),
        Value::Object(o) if o.contains_key("set") => match o.get("set")? {
            Value::Array(a) => Some(Operand::Set(
                a.iter()
                    .map(|x| json_atom(x).map(Into::into))
                    .collect::<Option<Vec<_>>>()?,
            )),
            x => Some(Operand::Set(vec![json_atom(x)?.into()])),
        },
        x => Some(Operand::Value(json_atom(x)?.into())),
    }
}

fn json_stmt(e: &Value) -> Stmt {
    json_stmt_opt(e).unwrap_or_else(|| Stmt::Unknown(e.to_string().into()))
}

fn json_stmt_opt(e: &Value) -> Option<Stmt> {
    let o = e.as_object()?;
    let (k, v) = o.iter().next()?;
    if let Some(a) = json_action(e) {
        return Some(Stmt::Verdict(a));
    }
    Some(match k.as_str() {
        "match" => {
            let op = v.get("op").and_then(Value::as_str).unwrap_or("==");
            let neg = match op {
                "==" | "in" => false,
                "!=" => true,
                _ => return None,
            };
            Stmt::Match {
                fields: json_field(v.get("left")?)?.into(),
                neg,
                right: json_operand(v.get("right")?)?,
            }
        }
        "vmap" => {
            let key = v.get("key")?;
            let data = v.get("data")?;
            if let Some(ng) = key.get("numgen") {
                if ng.get("mode").and_then(Value::as_str) != Some("random") {
                    return None;
                }
                let modulus = u32::try_from(ng.get("mod")?.as_u64()?).ok()?;
                let offset =
                    u32::try_from(ng.get("offset").and_then(Value::as_u64).unwrap_or(0)).ok()?;
                let mut entries = Vec::new();
                for pair in data.get("set")?.as_array()? {
                    let p = pair.as_array()?;
                    entries.push((p.first()?.as_u64()?, json_action(p.get(1)?)?));
                }
                if modulus == 0 {
                    return None;
                }
                return Some(Stmt::Numgen {
                    modulus,
                    offset,
                    entries,
                });
            }
            let fields = json_field(key)?;
            match data {
                Value::String(s) if s.starts_with('@') => Stmt::Vmap {
                    fields: fields.into(),
                    map: Operand::Named(s[1..].into()),
                    entries: Vec::new(),
                },
                d => {
                    let mut entries: Vec<(Concat<Atom>, Action)> = Vec::new();
                    for pair in d.get("set")?.as_array()? {
                        let p = pair.as_array()?;
                        entries.push((json_atom(p.first()?)?.into(), json_action(p.get(1)?)?));
                    }
                    Stmt::Vmap {
                        fields: fields.into(),
                        map: Operand::Set(entries.iter().map(|(k, _)| k.clone()).collect()),
                        entries,
                    }
                }
            }
        }
        "dnat" => {
            let addr: IpAddr = v.get("addr")?.as_str()?.parse().ok()?;
            let port = match v.get("port") {
                Some(p) => Some(u16::try_from(p.as_u64()?).ok()?),
                None => None,
            };
            Stmt::Dnat { addr, port }
        }
        "masquerade" => Stmt::Masquerade,
        "reject" => Stmt::Reject,
        "counter" | "log" | "notrack" | "limit" => Stmt::Passive(k.as_str().into()),
        "mangle" => {
            let key = json_field(v.get("key")?)?;
            if key != [Field::Mark(None)] {
                return None;
            }
            let val = v.get("value")?;
            if let Some(n) = val.as_u64() {
                return Some(Stmt::MarkSet {
                    op: MarkOp::Set,
                    value: u32::try_from(n).ok()?,
                });
            }
            let vo = val.as_object()?;
            let (op, args) = vo.iter().next()?;
            let op = match op.as_str() {
                "|" => MarkOp::Or,
                "^" => MarkOp::Xor,
                "&" => MarkOp::And,
                _ => return None,
            };
            let args = args.as_array()?;
            if json_field(args.first()?)? != [Field::Mark(None)] {
                return None;
            }
            Stmt::MarkSet {
                op,
                value: u32::try_from(args.get(1)?.as_u64()?).ok()?,
            }
        }
        "set" => Stmt::SetUpdate {
            set: v.get("set")?.as_str()?.trim_start_matches('@').into(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 172.30.0.41, 172.30.0.42 }
	}
	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}
	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ct state new jump service-endpoints-check
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips # handle 9
		meta mark set meta mark | 0x00004000
		meta mark & 0x00004000 == 0x00000000 return
		numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }
		meta l4proto tcp dnat to 10.180.0.1:80
		frobnicate 7 counter packets 0 bytes 0
	}
}
"#;

    #[test]
    fn parses_list_syntax() {
        let rs = parse_text(LIST).unwrap();
        assert_eq!(rs.format, Format::List);
        let t = rs.table(&Family::Ip, "kube-proxy").unwrap();
        assert_eq!(t.comment.as_deref(), Some("rules for kube-proxy"));
        assert_eq!(t.set("cluster-ips").unwrap().elements.len(), 2);
        let nes = t.set("no-endpoint-services").unwrap();
        assert!(nes.is_map);
        assert_eq!(nes.elements[0].comment.as_deref(), Some("ns6/svc6:p80"));
        let pre = t.chain("nat-prerouting").unwrap();
        assert_eq!(pre.base.as_ref().unwrap().priority, -100);
        assert_eq!(pre.base.as_ref().unwrap().hook, Hook::Prerouting);
        let svc = t.chain("services").unwrap();
        assert_eq!(svc.rules.len(), 6);
        assert_eq!(
            &*svc.rules[0].text,
            "ip daddr . meta l4proto . th dport vmap @service-ips"
        );
        assert_eq!(svc.rules[0].line, 21);
        assert_eq!(
            svc.rules[1].stmts()[..],
            [Stmt::MarkSet {
                op: MarkOp::Or,
                value: 0x4000
            }]
        );
        assert!(matches!(
            &svc.rules[2].stmts()[0],
            Stmt::Match { fields, .. } if fields[..] == [Field::Mark(Some(0x4000))]
        ));
        assert!(
            matches!(&svc.rules[3].stmts()[0], Stmt::Numgen { modulus: 2, entries, .. } if entries.len() == 2)
        );
        assert_eq!(
            svc.rules[4].stmts()[1],
            Stmt::Dnat {
                addr: "10.180.0.1".parse().unwrap(),
                port: Some(80)
            }
        );
        assert_eq!(
            svc.rules[5].stmts()[0],
            Stmt::Unknown("frobnicate 7".into())
        );
    }

    #[test]
    fn parses_script_syntax() {
        let s = "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n\
add chain ip kube-proxy filter-input { type filter hook input priority -110 ; }\n\
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"x\" ; }\n\
add chain ip kube-proxy svc\n\
add rule ip kube-proxy svc ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade\n\
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto svc }\n";
        let rs = parse_text(s).unwrap();
        assert_eq!(rs.format, Format::Script);
        let t = &rs.tables[0];
        let m = t.set("service-ips").unwrap();
        let k = [
            Atom::Addr("172.30.0.41".parse().unwrap()),
            Atom::Proto(6),
            Atom::Num(80),
        ];
        assert_eq!(
            m.lookup(&k).unwrap().value,
            Some(ElementValue::Verdict(Action::Goto("svc".into())))
        );
        assert_eq!(t.chain("svc").unwrap().rules[0].line, 5);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_text("add table ip t\nadd rule ip t nochain drop\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.to_string(), "line 2: no chain nochain in this table");
        let e = parse_text("table ip t {\n chain c {\n  comment \"x\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_text("table ip t {\n chain c {\n drop\n").unwrap_err();
        assert!(e.to_string().starts_with("line 4: expected"), "{e}");
        let e = parse_json("{\"nftables\": [}").unwrap_err();
        assert!(e.to_string().starts_with("line 1: invalid nft json"), "{e}");
    }

    #[test]
    fn parses_json() {
        let j = r#"{"nftables": [
{"metainfo": {"version": "1.0.9", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-output", "handle": 2, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
{"map": {"family": "ip", "name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "map": "verdict",
  "elem": [[{"concat": ["172.30.0.41", "tcp", 80]}, {"goto": {"target": "svc"}}]]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-output", "handle": 4, "comment": "c", "expr": [
  {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}},
  {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}},
  {"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-ips"}},
  {"xt": {"type": "match", "name": "comment"}}
]}}
]}"#;
        let rs = parse_json(j).unwrap();
        let t = rs.table(&Family::Ip, "kube-proxy").unwrap();
        let r = &t.chain("nat-output").unwrap().rules[0];
        assert_eq!(
            &*r.text,
            "ip saddr != 10.0.0.0/8 meta mark set meta mark | 0x00004000 ip daddr . meta l4proto . th dport vmap @service-ips {\"xt\":{\"name\":\"comment\",\"type\":\"match\"}} comment \"c\""
        );
        assert!(matches!(r.stmts()[3], Stmt::Unknown(_)));
        assert_eq!(t.set("service-ips").unwrap().elements.len(), 1);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "table",
        "ip",
        "ip6",
        "inet",
        "kube-proxy",
        "chain",
        "set",
        "map",
        "add",
        "rule",
        "element",
        "flush",
        "{",
        "}",
        ";",
        ",",
        ":",
        ".",
        "\n",
        "type",
        "hook",
        "priority",
        "policy",
        "filter",
        "nat",
        "prerouting",
        "dstnat",
        "-",
        "10",
        "accept",
        "drop",
        "jump",
        "goto",
        "services",
        "daddr",
        "saddr",
        "meta",
        "l4proto",
        "th",
        "dport",
        "tcp",
        "vmap",
        "@service-ips",
        "numgen",
        "random",
        "mod",
        "0",
        "2",
        "dnat",
        "to",
        "10.0.0.1:80",
        "10.0.0.0/8",
        "!=",
        "==",
        "mark",
        "set",
        "or",
        "0x4000",
        "ct",
        "state",
        "new",
        "fib",
        "local",
        "comment",
        "\"c\"",
        "elements",
        "=",
        "reject",
        "masquerade",
        "update",
        "return",
        "\"",
        "#",
        "1.2.3.4",
        "and",
        "xor",
        "offset",
        "with",
        "icmp",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any text: a ruleset or a one-line error naming a line; never a panic.
        #[test]
        fn text_never_panics(s in ".{0,300}") {
            match parse_ruleset(&s) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(e.line >= 1);
                    prop_assert!(!e.to_string().contains('\n'));
                }
            }
        }

        /// Token soup from nft's vocabulary reaches deep into the grammar.
        #[test]
        fn token_soup_never_panics(toks in prop::collection::vec(prop::sample::select(WORDS), 0..80)) {
            let soup = toks.join(" ");
            // bare, and as the rules of a base chain (so that more of it parses and traces)
            for s in [
                soup.clone(),
                format!("table ip kube-proxy {{\n\tchain c {{\n\t\ttype nat hook prerouting priority dstnat;\n\t\t{}\n\t}}\n}}\n", soup.replace(['{', '}'], "")),
            ] {
            match parse_text(&s) {
                Err(e) => {
                    prop_assert!(e.line >= 1);
                    prop_assert!(!e.to_string().contains('\n'));
                }
                // whatever parses also traces (statements are parsed again, lazily)
                Ok(rs) => {
                    let pkt = crate::trace::Packet {
                        src: "10.0.0.2".parse().unwrap(),
                        dst: "10.0.0.1".parse().unwrap(),
                        dport: 80,
                        proto: crate::trace::Proto::Tcp,
                    };
                    let r = crate::nft::trace(&rs, &pkt, &crate::trace::NodeContext::default());
                    let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
                    prop_assert!((total - 1.0).abs() < 1e-9);
                }
            }
            }
        }

        /// JSON-shaped garbage.
        #[test]
        fn json_never_panics(s in "\\{\"nftables\": \\[.{0,200}") {
            if let Err(e) = parse_json(&s) {
                prop_assert!(e.line >= 1);
            }
        }
    }
}
