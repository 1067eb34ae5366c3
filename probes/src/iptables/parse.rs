//! `iptables-save` text (iptables-legacy and iptables-nft) to the typed [`Ruleset`].
//!
//! Strict where iptables-restore is strict (a rule outside a table, an undeclared chain, a
//! missing `COMMIT`, a bad address), lenient where the tracer can cope: a match or target
//! option it does not know is kept as written ([`Match::Other`], [`Action::Other`]).

use super::model::{
    Action, Chain, Counters, Flavor, IndexKey, IpNet, Match, RecentMode, Rule, Ruleset, Table,
    Target,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

/// Why a dump could not be parsed; always names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// What is wrong there.
    pub kind: ParseErrorKind,
}

/// What is wrong with a line of an iptables-save dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A chain or rule line before any `*table`.
    #[error("{0} outside of a table (expected *nat, *filter, ...)")]
    OutsideTable(&'static str),
    /// `*table` while the previous one has no `COMMIT`.
    #[error("table {0} starts before the previous table's COMMIT")]
    NestedTable(String),
    /// End of input inside a table.
    #[error("table {0} has no COMMIT")]
    MissingCommit(String),
    /// A rule for a chain that was not declared.
    #[error("chain {chain} is not declared in table {table}")]
    UndeclaredChain {
        /// Chain.
        chain: String,
        /// Table.
        table: String,
    },
    /// A chain declared twice.
    #[error("chain {0} is declared twice")]
    DuplicateChain(String),
    /// A line that is none of the known kinds.
    #[error("unexpected line {0:?}")]
    Unexpected(String),
    /// A malformed chain declaration.
    #[error("bad chain declaration {0:?}")]
    BadChain(String),
    /// Malformed `[pkts:bytes]`.
    #[error("bad counters {0:?}")]
    BadCounters(String),
    /// A `"` without its closing `"`.
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// An option without its value.
    #[error("option {0} needs a value")]
    MissingValue(String),
    /// A bad address or network.
    #[error("bad address {0:?}")]
    BadAddress(String),
    /// A bad port or port range.
    #[error("bad port {0:?}")]
    BadPort(String),
    /// A bad number (probability, mark, seconds, position).
    #[error("bad number {0:?}")]
    BadNumber(String),
    /// `!` not followed by an option.
    #[error("dangling '!'")]
    DanglingNegation,
    /// A rule with two targets.
    #[error("rule has more than one target")]
    TwoTargets,
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    /// The token's text in the line, with quotes.
    span: &'a str,
    start: usize,
    end: usize,
    /// Quoted with backslash escapes inside.
    escaped: bool,
}

impl<'a> Tok<'a> {
    /// The token's value: unquoted and unescaped.
    fn value(&self) -> Cow<'a, str> {
        let s = self.span;
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            let inner = &s[1..s.len() - 1];
            if self.escaped {
                let mut out = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            } else {
                Cow::Borrowed(inner)
            }
        } else {
            Cow::Borrowed(s)
        }
    }

    fn str(&self) -> &'a str {
        let s = self.span;
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') && !self.escaped {
            &s[1..s.len() - 1]
        } else {
            s
        }
    }
}

/// Splits a rule line like iptables-restore: whitespace-separated, `"..."` with `\"` and `\\`.
fn tokenize<'a>(line: &'a str, out: &mut Vec<Tok<'a>>) -> Result<(), ParseErrorKind> {
    out.clear();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut escaped = false;
        if b[i] == b'"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(ParseErrorKind::UnterminatedQuote),
                    Some(b'\\') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            if i > b.len() {
                return Err(ParseErrorKind::UnterminatedQuote);
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        out.push(Tok {
            span: &line[start..i],
            start,
            end: i,
            escaped,
        });
    }
    Ok(())
}

fn parse_counters(s: &str) -> Result<Counters, ParseErrorKind> {
    let bad = || ParseErrorKind::BadCounters(s.to_string());
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(bad)?;
    let (p, b) = inner.split_once(':').ok_or_else(bad)?;
    Ok(Counters {
        packets: p.parse().map_err(|_| bad())?,
        bytes: b.parse().map_err(|_| bad())?,
    })
}

/// Parses `10.0.0.0/8`, `10.0.0.1`, `10.0.0.0/255.0.0.0`, `fd00::/64`.
pub(crate) fn parse_net(s: &str) -> Result<IpNet, ParseErrorKind> {
    let bad = || ParseErrorKind::BadAddress(s.to_string());
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            Ok(_) => return Err(bad()),
            Err(_) => {
                let m: std::net::Ipv4Addr = p.parse().map_err(|_| bad())?;
                let m = u32::from(m);
                if m.leading_ones() + m.trailing_zeros() != 32 || !addr.is_ipv4() {
                    return Err(bad());
                }
                m.leading_ones() as u8
            }
        },
    };
    Ok(IpNet { addr, prefix })
}

fn parse_port_range(s: &str) -> Result<(u16, u16), ParseErrorKind> {
    let bad = || ParseErrorKind::BadPort(s.to_string());
    let (lo, hi) = match s.split_once(':') {
        Some((lo, hi)) => (
            if lo.is_empty() {
                0
            } else {
                lo.parse().map_err(|_| bad())?
            },
            if hi.is_empty() {
                u16::MAX
            } else {
                hi.parse().map_err(|_| bad())?
            },
        ),
        None => {
            let p = s.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn parse_u32(s: &str) -> Result<u32, ParseErrorKind> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| ParseErrorKind::BadNumber(s.to_string()))
}

/// `V[/M]` as used by `--mark` and the MARK target.
fn parse_mark(s: &str) -> Result<(u32, Option<u32>), ParseErrorKind> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v)?, Some(parse_u32(m)?))),
        None => Ok((parse_u32(s)?, None)),
    }
}

fn protocol_number(s: &str) -> Option<u8> {
    Some(match s.to_ascii_lowercase().as_str() {
        "all" | "0" => 0,
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        n => return n.parse().ok(),
    })
}

/// Parses `ADDR[:PORT]`, `[V6]:PORT`, `ADDR-ADDR:PORT-PORT` (first of each range).
fn parse_dnat_to(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']')?;
        (a, p.strip_prefix(':'))
    } else if s.matches(':').count() == 1 {
        let (a, p) = s.split_once(':')?;
        (a, Some(p))
    } else {
        (s, None)
    };
    let addr = addr.split('-').next()?.parse().ok()?;
    let port = match port {
        Some(p) => Some(p.split('-').next()?.parse().ok()?),
        None => None,
    };
    Some((addr, port))
}

/// How many values a known option takes; `None` for an option the parser does not know.
fn arity(opt: &str) -> Option<usize> {
    Some(match opt {
        "--syn"
        | "--set"
        | "--rcheck"
        | "--update"
        | "--remove"
        | "--reap"
        | "--rsource"
        | "--rdest"
        | "--rttl"
        | "--random"
        | "--random-fully"
        | "--persistent"
        | "--limit-iface-in"
        | "--limit-iface-out"
        | "--physdev-is-bridged"
        | "--physdev-is-in"
        | "--physdev-is-out"
        | "--log-uid"
        | "-f"
        | "--fragment" => 0,
        "--tcp-flags" | "--match-set" => 2,
        "--comment"
        | "--dport"
        | "--destination-port"
        | "--sport"
        | "--source-port"
        | "--dports"
        | "--sports"
        | "--ports"
        | "--destination-ports"
        | "--source-ports"
        | "--src-type"
        | "--dst-type"
        | "--mode"
        | "--probability"
        | "--every"
        | "--packet"
        | "--name"
        | "--seconds"
        | "--hitcount"
        | "--mask"
        | "--mark"
        | "--ctstate"
        | "--state"
        | "--ctproto"
        | "--ctorigsrc"
        | "--ctorigdst"
        | "--ctreplsrc"
        | "--ctrepldst"
        | "--ctorigsrcport"
        | "--ctorigdstport"
        | "--ctreplsrcport"
        | "--ctrepldstport"
        | "--ctstatus"
        | "--ctexpire"
        | "--ctdir"
        | "--nfacct-name"
        | "--to-destination"
        | "--to-source"
        | "--to-ports"
        | "--to"
        | "--set-xmark"
        | "--set-mark"
        | "--or-mark"
        | "--xor-mark"
        | "--and-mark"
        | "--reject-with"
        | "--log-prefix"
        | "--log-level"
        | "--physdev-in"
        | "--physdev-out"
        | "--tcp-option"
        | "--icmp-type"
        | "--icmpv6-type"
        | "--limit"
        | "--limit-burst"
        | "--uid-owner"
        | "--gid-owner"
        | "--zone"
        | "--notrack" => 1,
        _ => return None,
    })
}

fn is_option(s: &str) -> bool {
    s.len() > 1 && s.starts_with('-') && !s[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// A rule's comment, matches and target.
pub(crate) type RuleBody<'a> = (Option<Cow<'a, str>>, Vec<Match<'a>>, Option<Target<'a>>);

/// A rule's comment and target (its matches go to a buffer the caller reuses).
type RuleHead<'a> = (Option<Cow<'a, str>>, Option<Target<'a>>);

/// Parses the options of one rule (everything after `-A CHAIN`).
fn parse_rule_body<'a>(
    line: &'a str,
    toks: &[Tok<'a>],
    matches: &mut Vec<Match<'a>>,
) -> Result<RuleHead<'a>, ParseErrorKind> {
    matches.clear();
    let mut comment = None;
    let mut target: Option<Target<'a>> = None;
    let mut module: &'a str = "";
    let mut in_target = false;
    let mut target_opts: Option<(usize, usize)> = None;
    let mut neg = false;
    // statistic's options arrive in two pieces
    let mut stat_mode: Option<&'a str> = None;
    // recent's options arrive in pieces
    let mut recent: Option<(usize, &'a str, Option<RecentMode>, Option<u32>)> = None;
    let mut i = 0;
    let val = |i: usize, opt: &str| -> Result<Tok<'a>, ParseErrorKind> {
        toks.get(i)
            .copied()
            .ok_or_else(|| ParseErrorKind::MissingValue(opt.to_string()))
    };
    while i < toks.len() {
        let t = toks[i];
        let opt = t.str();
        if opt == "!" {
            neg = true;
            i += 1;
            if i >= toks.len() {
                return Err(ParseErrorKind::DanglingNegation);
            }
            continue;
        }
        // Old style `-s ! 10.0.0.0/8`: `!` after the option.
        let take_neg = |j: usize| -> usize {
            if toks.get(j).map(|t| t.str()) == Some("!") {
                j + 1
            } else {
                j
            }
        };
        let start = t.start;
        match opt {
            "-s" | "--source" | "-d" | "--destination" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                let net = parse_net(v.str())?;
                matches.push(if opt.starts_with("-s") || opt == "--source" {
                    Match::Source { net, neg }
                } else {
                    Match::Destination { net, neg }
                });
                i = j + 1;
            }
            "-p" | "--protocol" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                match protocol_number(v.str()) {
                    Some(number) => matches.push(Match::Protocol { number, neg }),
                    None => matches.push(Match::Other {
                        module: "",
                        text: &line[start..v.end],
                    }),
                }
                i = j + 1;
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                matches.push(Match::Interface {
                    input: opt == "-i" || opt == "--in-interface",
                    name: v.str(),
                    neg,
                });
                i = j + 1;
            }
            "-m" | "--match" => {
                let v = val(i + 1, opt)?;
                module = v.str();
                in_target = false;
                i += 2;
                if !matches!(
                    module,
                    "comment"
                        | "tcp"
                        | "udp"
                        | "sctp"
                        | "addrtype"
                        | "statistic"
                        | "recent"
                        | "mark"
                        | "conntrack"
                        | "state"
                        | "multiport"
                        | "nfacct"
                ) {
                    // Unknown module: keep it and all its options as written.
                    let mut end = v.end;
                    while i < toks.len() {
                        let s = toks[i].str();
                        if matches!(
                            s,
                            "-m" | "--match"
                                | "-j"
                                | "--jump"
                                | "-g"
                                | "--goto"
                                | "-s"
                                | "-d"
                                | "-p"
                                | "-i"
                                | "-o"
                        ) || (s == "!"
                            && toks
                                .get(i + 1)
                                .map(|n| matches!(n.str(), "-s" | "-d" | "-p" | "-i" | "-o"))
                                .unwrap_or(false))
                        {
                            break;
                        }
                        end = toks[i].end;
                        i += 1;
                    }
                    matches.push(Match::Other {
                        module,
                        text: &line[start..end],
                    });
                    neg = false;
                }
                continue;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if target.is_some() {
                    return Err(ParseErrorKind::TwoTargets);
                }
                let v = val(i + 1, opt)?;
                target = Some(Target {
                    name: v.str(),
                    goto: opt == "-g" || opt == "--goto",
                    action: Action::Plain,
                });
                in_target = true;
                i += 2;
                continue;
            }
            _ if in_target => {
                // Target options.
                let n = arity(opt).unwrap_or(1);
                let v = if n > 0 { Some(val(i + 1, opt)?) } else { None };
                let end = v.map(|v| v.end).unwrap_or(t.end);
                let tgt = target.as_mut().ok_or(ParseErrorKind::TwoTargets)?;
                let value = v.map(|v| v.str()).unwrap_or("");
                match opt {
                    "--to-destination" if tgt.name == "DNAT" => {
                        if let Some((addr, port)) = parse_dnat_to(value) {
                            tgt.action = Action::Dnat { addr, port };
                        }
                    }
                    "--set-xmark" | "--set-mark" | "--or-mark" | "--xor-mark" | "--and-mark"
                        if tgt.name == "MARK" =>
                    {
                        let (v, m) = parse_mark(value)?;
                        let (mask, xor) = match opt {
                            "--set-xmark" => (m.unwrap_or(u32::MAX), v),
                            "--set-mark" => (m.unwrap_or(u32::MAX), v),
                            "--or-mark" => (v, v),
                            "--xor-mark" => (0, v),
                            _ => (!v, 0),
                        };
                        tgt.action = Action::Mark { mask, xor };
                    }
                    _ => {}
                }
                target_opts = Some((target_opts.map(|(s, _)| s).unwrap_or(start), end));
                i += 1 + n;
                continue;
            }
            "--comment" => {
                let v = val(i + 1, opt)?;
                let mut c = v.value();
                i += 2;
                // Unquoted words after the comment (hand-written dumps, such as kube-proxy's
                // own test data) belong to it; iptables-save always quotes.
                while let Some(w) = toks
                    .get(i)
                    .filter(|w| !is_option(w.str()) && w.str() != "!")
                {
                    let s = c.to_mut();
                    s.push(' ');
                    s.push_str(&w.value());
                    i += 1;
                }
                comment = Some(c);
            }
            "--dport" | "--destination-port" | "--sport" | "--source-port" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                let (lo, hi) = parse_port_range(v.str())?;
                matches.push(Match::Port {
                    dst: opt.starts_with("--d"),
                    lo,
                    hi,
                    neg,
                });
                i = j + 1;
            }
            "--dports" | "--sports" | "--ports" | "--destination-ports" | "--source-ports" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                let ranges = v
                    .str()
                    .split(',')
                    .map(parse_port_range)
                    .collect::<Result<Vec<_>, _>>()?;
                matches.push(Match::MultiPort {
                    which: opt,
                    ranges: ranges.into_boxed_slice(),
                    neg,
                });
                i = j + 1;
            }
            "--src-type" | "--dst-type" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                matches.push(Match::AddrType {
                    src: opt == "--src-type",
                    kind: v.str(),
                    neg,
                });
                i = j + 1;
            }
            "--mode" if module == "statistic" => {
                stat_mode = Some(val(i + 1, opt)?.str());
                i += 2;
            }
            "--probability" if module == "statistic" => {
                let v = val(i + 1, opt)?;
                let p: f64 = v
                    .str()
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or_else(|| ParseErrorKind::BadNumber(v.str().to_string()))?;
                if stat_mode.unwrap_or("random") == "random" {
                    matches.push(Match::Random { probability: p });
                }
                i += 2;
            }
            "--mark" if module == "mark" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                let (value, mask) = parse_mark(v.str())?;
                matches.push(Match::Mark {
                    value,
                    mask: mask.unwrap_or(u32::MAX),
                    neg,
                });
                i = j + 1;
            }
            "--ctstate" | "--state" => {
                let j = take_neg(i + 1);
                neg |= j != i + 1;
                let v = val(j, opt)?;
                matches.push(Match::CtState {
                    states: v.str(),
                    neg,
                });
                i = j + 1;
            }
            "--nfacct-name" => {
                matches.push(Match::Accounting(val(i + 1, opt)?.str()));
                i += 2;
            }
            "--set" | "--rcheck" | "--update" | "--remove" | "--name" | "--seconds" | "--reap"
            | "--rsource" | "--rdest" | "--mask" | "--hitcount" | "--rttl"
                if module == "recent" =>
            {
                let r = recent.get_or_insert((matches.len(), "DEFAULT", None, None));
                let n = arity(opt).unwrap_or(1);
                match opt {
                    "--set" => r.2 = Some(RecentMode::Set),
                    "--rcheck" => r.2 = Some(RecentMode::Rcheck),
                    "--update" => r.2 = Some(RecentMode::Update),
                    "--remove" => r.2 = Some(RecentMode::Remove),
                    "--name" => r.1 = val(i + 1, opt)?.str(),
                    "--seconds" => r.3 = Some(parse_u32(val(i + 1, opt)?.str())?),
                    _ => {
                        val(i + n, opt)?;
                    }
                }
                i += 1 + n;
            }
            _ => {
                // Unknown option (or a known one of a module we only partly model): keep it.
                let n = match arity(opt) {
                    Some(n) => n,
                    None => toks[i + 1..]
                        .iter()
                        .take_while(|t| !is_option(t.str()) && t.str() != "!")
                        .count(),
                };
                let end = if n > 0 { val(i + n, opt)?.end } else { t.end };
                matches.push(Match::Other {
                    module,
                    text: &line[start..end],
                });
                i += 1 + n;
            }
        }
        neg = false;
    }
    if let Some((at, name, mode, seconds)) = recent {
        let m = Match::Recent {
            name,
            mode: mode.unwrap_or(RecentMode::Set),
            seconds,
        };
        matches.insert(at.min(matches.len()), m);
    }
    if let (Some((s, e)), Some(tgt)) = (target_opts, target.as_mut()) {
        if tgt.action == Action::Plain {
            tgt.action = Action::Other(&line[s..e]);
        }
    }
    Ok((comment, target))
}

/// Splits a rule line (`-A CHAIN ...`, `-I CHAIN [N] ...`, long forms) into whether it
/// inserts and the text after the command.
fn rule_command(rule_text: &str) -> Option<(bool, &str)> {
    if let Some(r) = rule_text.strip_prefix("-A ") {
        Some((false, r))
    } else if let Some(r) = rule_text.strip_prefix("--append ") {
        Some((false, r))
    } else if let Some(r) = rule_text.strip_prefix("-I ") {
        Some((true, r))
    } else {
        rule_text.strip_prefix("--insert ").map(|r| (true, r))
    }
}

/// Decodes a rule's options from its text (`-A CHAIN ...`, as kept in [`Rule::raw`]).
pub(crate) fn decode_rule(raw: &str) -> Result<RuleBody<'_>, ParseErrorKind> {
    let mut toks = Vec::with_capacity(24);
    let mut matches = Vec::with_capacity(4);
    let (comment, target) = decode_rule_into(raw, &mut toks, &mut matches)?;
    Ok((comment, matches, target))
}

/// [`decode_rule`] with the caller's buffers (no allocation per rule when validating).
fn decode_rule_into<'a>(
    raw: &'a str,
    toks: &mut Vec<Tok<'a>>,
    matches: &mut Vec<Match<'a>>,
) -> Result<RuleHead<'a>, ParseErrorKind> {
    let Some((insert, rest)) = rule_command(raw) else {
        return Err(ParseErrorKind::Unexpected(raw.chars().take(60).collect()));
    };
    tokenize(rest, toks)?;
    let mut body_start = 1;
    if insert
        && toks
            .get(1)
            .is_some_and(|t| t.str().parse::<usize>().is_ok())
    {
        body_start = 2;
    }
    parse_rule_body(rest, toks.get(body_start..).unwrap_or(&[]), matches)
}

/// Where a long chain's index files a rule, read from the rule text without decoding it:
/// a non-negated exact `-d`, else a non-negated single `--dport`, else nowhere in particular.
/// Only options before the target count; quoted strings are skipped. When in doubt the
/// answer is [`IndexKey::Other`] (the rule is then always evaluated).
pub(crate) fn index_key(raw: &str) -> IndexKey {
    let mut toks = Vec::with_capacity(24);
    let Some((_, rest)) = rule_command(raw) else {
        return IndexKey::Other;
    };
    if tokenize(rest, &mut toks).is_err() {
        return IndexKey::Other;
    }
    let mut dport = None;
    for (i, t) in toks.iter().enumerate() {
        let negated =
            || (i > 0 && toks[i - 1].span == "!") || toks.get(i + 1).is_some_and(|n| n.span == "!");
        match t.span {
            "-j" | "--jump" | "-g" | "--goto" => break,
            "-d" | "--destination" if !negated() => {
                if let Some(Ok(net)) = toks.get(i + 1).map(|v| parse_net(v.span)) {
                    if net.prefix == if net.addr.is_ipv4() { 32 } else { 128 } {
                        return IndexKey::Dst(net.addr);
                    }
                }
            }
            "--dport" | "--destination-port" if !negated() && dport.is_none() => {
                dport = toks
                    .get(i + 1)
                    .and_then(|v| v.span.parse::<u16>().ok())
                    .map(IndexKey::Dport);
            }
            _ => {}
        }
    }
    dport.unwrap_or(IndexKey::Other)
}

struct OpenTable<'a> {
    table: Table<'a>,
}

/// Parses `iptables-save` output (with or without `-c` counters) into a [`Ruleset`].
///
/// Never panics; any malformed line is an error naming its line number (the first one in
/// the dump). Two passes run side by side on a big dump: the structure (tables, chains,
/// which rule goes where, the long chains' indexes) on this thread, and every rule's options
/// decoded on the others (and dropped: a trace decodes the few rules it visits again).
pub fn parse_iptables_save(text: &str) -> Result<Ruleset<'_>, ParseError> {
    let threads = if text.len() < PARALLEL_MIN_BYTES {
        0
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let (structure, checked) = if threads == 0 {
        let checked = validate_lines(text);
        (parse_structure(text), vec![checked])
    } else {
        let chunks = split_at_lines(text, threads);
        std::thread::scope(|sc| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| sc.spawn(move || validate_lines(c)))
                .collect();
            let structure = parse_structure(text);
            let checked = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Vec<_>>();
            (structure, checked)
        })
    };
    // the first bad rule, in whole-dump line numbers
    let mut base: u32 = 0;
    let mut bad_rule = None;
    for (lines, err) in checked {
        if let (None, Some((line, kind))) = (&bad_rule, err) {
            bad_rule = Some(ParseError {
                line: base.saturating_add(line),
                kind,
            });
        }
        base = base.saturating_add(lines);
    }
    match (structure, bad_rule) {
        (Err(e), Some(r)) => Err(if r.line < e.line { r } else { e }),
        (Err(e), None) => Err(e),
        (Ok(_), Some(r)) => Err(r),
        (Ok(rules), None) => Ok(rules),
    }
}

/// Dumps smaller than this are checked on the calling thread.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// `text` cut into about `n` pieces, each ending at a line end.
fn split_at_lines(text: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(n);
    let mut rest = text;
    let size = text.len().div_ceil(n.max(1));
    while !rest.is_empty() {
        let cut = match rest.get(size..).and_then(|t| t.find('\n')) {
            Some(i) => size + i + 1,
            None => rest.len(),
        };
        let (a, b) = rest.split_at(cut);
        out.push(a);
        rest = b;
    }
    out
}

/// The rule of a trimmed line (after a `[pkts:bytes]` prefix), `None` for any other line
/// (the structure pass judges those).
fn rule_of_line(l: &str) -> Option<&str> {
    if l.is_empty() || l.starts_with(['#', '*', ':']) || l == "COMMIT" {
        return None;
    }
    let t = if l.starts_with('[') {
        l.split_once(char::is_whitespace)?.1.trim_start()
    } else {
        l
    };
    rule_command(t).is_some().then_some(t)
}

/// Decodes every rule of `chunk`: how many lines it has, and the first rule that does not
/// decode (its line within the chunk, from 1).
fn validate_lines(chunk: &str) -> (u32, Option<(u32, ParseErrorKind)>) {
    let (mut toks, mut matches) = (Vec::with_capacity(32), Vec::with_capacity(8));
    let mut lineno: u32 = 0;
    let mut first = None;
    for line in chunk.lines() {
        lineno = lineno.saturating_add(1);
        if first.is_some() {
            continue;
        }
        if let Some(rule) = rule_of_line(line.trim_ascii()) {
            if let Err(kind) = decode_rule_into(rule, &mut toks, &mut matches) {
                first = Some((lineno, kind));
            }
        }
    }
    (lineno, first)
}

/// The structure pass: tables, chains, which rule goes where (rules are not decoded).
fn parse_structure(text: &str) -> Result<Ruleset<'_>, ParseError> {
    let mut tables: Vec<Table<'_>> = Vec::new();
    let mut open: Option<OpenTable<'_>> = None;
    let mut flavor = Flavor::Unknown;
    let mut other_backend_warning = false;
    let mut toks = Vec::with_capacity(32);
    let mut lineno: u32 = 0;
    for line in text.lines() {
        lineno = lineno.saturating_add(1);
        let err = |kind| ParseError { line: lineno, kind };
        let l = line.trim_ascii();
        if l.is_empty() {
            continue;
        }
        if let Some(c) = l.strip_prefix('#') {
            let c = c.trim();
            if let Some(rest) = c.strip_prefix("Generated by ") {
                if rest.starts_with("iptables-nft-save")
                    || rest.starts_with("ip6tables-nft-save")
                    || rest.contains("(nf_tables)")
                {
                    flavor = Flavor::Nft;
                } else if rest.starts_with("iptables-save")
                    || rest.starts_with("ip6tables-save")
                    || rest.starts_with("iptables-legacy-save")
                    || rest.starts_with("ip6tables-legacy-save")
                {
                    flavor = if rest.contains("(legacy)") || flavor != Flavor::Nft {
                        Flavor::Legacy
                    } else {
                        flavor
                    };
                }
            } else if c.starts_with("Warning:") && c.contains("tables present") {
                other_backend_warning = true;
            }
            continue;
        }
        if let Some(name) = l.strip_prefix('*') {
            if let Some(o) = &open {
                return Err(err(ParseErrorKind::NestedTable(o.table.name.to_string())));
            }
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(err(ParseErrorKind::Unexpected(l.to_string())));
            }
            open = Some(OpenTable {
                table: Table {
                    name,
                    line: lineno,
                    chains: Vec::new(),
                    index: HashMap::new(),
                },
            });
            continue;
        }
        if l == "COMMIT" {
            match open.take() {
                Some(mut o) => {
                    for c in &mut o.table.chains {
                        c.build_index();
                    }
                    o.table.chains.shrink_to_fit();
                    tables.push(o.table)
                }
                None => return Err(err(ParseErrorKind::OutsideTable("COMMIT"))),
            }
            continue;
        }
        if let Some(decl) = l.strip_prefix(':') {
            let o = open
                .as_mut()
                .ok_or_else(|| err(ParseErrorKind::OutsideTable("chain declaration")))?;
            let mut parts = decl.split_ascii_whitespace();
            let name = parts
                .next()
                .ok_or_else(|| err(ParseErrorKind::BadChain(l.to_string())))?;
            let policy = parts
                .next()
                .ok_or_else(|| err(ParseErrorKind::BadChain(l.to_string())))?;
            let counters = match parts.next() {
                Some(c) => Some(parse_counters(c).map_err(err)?),
                None => None,
            };
            if parts.next().is_some() {
                return Err(err(ParseErrorKind::BadChain(l.to_string())));
            }
            if o.table.index.contains_key(name) {
                return Err(err(ParseErrorKind::DuplicateChain(name.to_string())));
            }
            o.table.index.insert(name, o.table.chains.len());
            o.table.chains.push(Chain {
                name,
                policy: (policy != "-").then_some(policy),
                counters,
                line: lineno,
                rules: Vec::new(),
                dst_index: None,
            });
            continue;
        }
        // A rule, maybe with `[pkts:bytes]` first.
        let (counters, rule_text) = if l.starts_with('[') {
            let (c, rest) = l
                .split_once(char::is_whitespace)
                .ok_or_else(|| err(ParseErrorKind::Unexpected(l.to_string())))?;
            (Some(parse_counters(c).map_err(err)?), rest.trim_start())
        } else {
            (None, l)
        };
        let Some((insert, rest)) = rule_command(rule_text) else {
            let shown: String = l.chars().take(60).collect();
            return Err(err(ParseErrorKind::Unexpected(shown)));
        };
        let o = open
            .as_mut()
            .ok_or_else(|| err(ParseErrorKind::OutsideTable("rule")))?;
        // Only the chain (and an -I position) now; the options are decoded by `validate`.
        let rest = rest.trim_ascii_start();
        let (chain_name, after) = if rest.starts_with('"') {
            tokenize(rest, &mut toks).map_err(err)?;
            let t = toks[0];
            (t.str(), &rest[t.end..])
        } else {
            let end = rest
                .bytes()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if chain_name.is_empty() {
            return Err(err(ParseErrorKind::MissingValue("-A".into())));
        }
        let mut position = None;
        if insert {
            let next = after.split_ascii_whitespace().next().unwrap_or("");
            if let Ok(n) = next.parse::<usize>() {
                position = Some(n);
            }
        }
        let idx = *o.table.index.get(chain_name).ok_or_else(|| {
            err(ParseErrorKind::UndeclaredChain {
                chain: chain_name.to_string(),
                table: o.table.name.to_string(),
            })
        })?;
        let rule = Rule::new(rule_text, lineno, counters);
        let rules = &mut o.table.chains[idx].rules;
        if insert {
            let at = position.unwrap_or(1);
            if at == 0 || at > rules.len() + 1 {
                return Err(err(ParseErrorKind::BadNumber(at.to_string())));
            }
            rules.insert(at - 1, rule);
        } else {
            rules.push(rule);
        }
    }
    if let Some(o) = open {
        return Err(ParseError {
            line: o.table.line,
            kind: ParseErrorKind::MissingCommit(o.table.name.to_string()),
        });
    }
    Ok(Ruleset {
        tables,
        flavor,
        other_backend_warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"# Generated by iptables-nft-save v1.8.7 on Mon Jan  1 00:00:00 2024
*nat
:PREROUTING ACCEPT [13:2569]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
[5:300] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES ! -s 10.0.0.0/8 -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SVC-X -m comment --comment "say \"hi\"" -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.1.0.2:53
-I KUBE-SVC-X 1 -m recent --name KUBE-SEP-A --mask 255.255.255.255 --rsource --rcheck --seconds 10800 --reap -j KUBE-SEP-A
-A KUBE-SVC-X -m foo --bar 1 2 -j ACCEPT
COMMIT
"#;

    #[test]
    fn parses_tables_chains_rules_counters_and_quotes() {
        let rs = parse_iptables_save(SMALL).unwrap();
        assert_eq!(rs.flavor, Flavor::Nft);
        let nat = rs.table("nat").unwrap();
        let pre = nat.chain("PREROUTING").unwrap();
        assert_eq!(pre.policy, Some("ACCEPT"));
        assert_eq!(
            pre.counters,
            Some(Counters {
                packets: 13,
                bytes: 2569
            })
        );
        assert_eq!(
            pre.rules[0].counters,
            Some(Counters {
                packets: 5,
                bytes: 300
            })
        );
        assert_eq!(pre.rules[0].comment(), Some("kubernetes service portals"));
        let svcs = &nat.chain("KUBE-SERVICES").unwrap().rules[0];
        assert_eq!(
            svcs.matches()[0],
            Match::Source {
                net: parse_net("10.0.0.0/8").unwrap(),
                neg: true
            }
        );
        assert_eq!(
            svcs.matches()[2],
            Match::Protocol {
                number: 17,
                neg: false
            }
        );
        assert!(svcs.matches().contains(&Match::Port {
            dst: true,
            lo: 53,
            hi: 53,
            neg: false
        }));
        let x = &nat.chain("KUBE-SVC-X").unwrap().rules;
        // -I 1 went first
        assert!(matches!(
            x[0].matches()[0],
            Match::Recent {
                name: "KUBE-SEP-A",
                mode: RecentMode::Rcheck,
                seconds: Some(10800)
            }
        ));
        assert_eq!(x[1].comment(), Some("say \"hi\""));
        assert!(
            matches!(x[1].matches()[0], Match::Random { probability } if (probability - 0.33333333349).abs() < 1e-12)
        );
        assert_eq!(
            x[1].target().unwrap().action,
            Action::Dnat {
                addr: "10.1.0.2".parse().unwrap(),
                port: Some(53)
            }
        );
        assert_eq!(
            x[2].matches()[0],
            Match::Other {
                module: "foo",
                text: "-m foo --bar 1 2"
            }
        );
        assert_eq!(rs.rule_count(), 5);
    }

    /// A dump big enough to be checked on several threads still names the first bad line,
    /// whichever pass finds it.
    #[test]
    fn big_dump_errors_name_the_first_bad_line() {
        let mut text = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
        let rule = "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"ns/svc:p cluster IP\" -m tcp --dport 80 -j RETURN\n";
        let n = PARALLEL_MIN_BYTES / rule.len() + 1000;
        for _ in 0..n {
            text.push_str(rule);
        }
        text.push_str("COMMIT\n");
        assert!(text.len() > PARALLEL_MIN_BYTES);
        assert_eq!(parse_iptables_save(&text).unwrap().rule_count(), n);
        let lines: Vec<&str> = text.lines().collect();
        let with = |at: usize, line: &str| {
            let mut l = lines.clone();
            l[at - 1] = line;
            l.join("\n")
        };
        // a bad rule late in the dump (found by a checking thread)
        let bad = "-A KUBE-SERVICES -d 10.96.0.300/32 -j RETURN";
        let late = n - 5;
        let e = parse_iptables_save(&with(late, bad)).unwrap_err();
        assert_eq!(e.line as usize, late, "{e}");
        assert!(matches!(e.kind, ParseErrorKind::BadAddress(_)), "{e}");
        // a structural error before it wins; after it, the bad rule wins
        let mut l = lines.clone();
        l[late - 1] = bad;
        l[99] = "-A NOPE -j RETURN";
        let e = parse_iptables_save(&l.join("\n")).unwrap_err();
        assert_eq!(e.line, 100, "{e}");
        let mut l = lines.clone();
        l[99] = bad;
        l[late - 1] = "-A NOPE -j RETURN";
        let e = parse_iptables_save(&l.join("\n")).unwrap_err();
        assert_eq!(e.line, 100, "{e}");
        assert!(matches!(e.kind, ParseErrorKind::BadAddress(_)), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("-A FOO -j ACCEPT\n", 1, "outside of a table"),
            ("*nat\n-A FOO -j ACCEPT\nCOMMIT\n", 2, "not declared"),
            ("*nat\n:FOO - [0:0]\n", 1, "no COMMIT"),
            (
                "*nat\n:FOO - [0:0]\n-A FOO -m comment --comment \"x\nCOMMIT\n",
                3,
                "unterminated",
            ),
            (
                "*nat\n:FOO - [0:0]\n-A FOO -s 10.0.0.300 -j ACCEPT\nCOMMIT\n",
                3,
                "bad address",
            ),
            ("*nat\n:FOO - [x:0]\nCOMMIT\n", 2, "bad counters"),
            (
                "*nat\n:FOO - [0:0]\n-A FOO -m tcp --dport 9:1 -j ACCEPT\nCOMMIT\n",
                3,
                "bad port",
            ),
            (
                "*nat\n:FOO - [0:0]\n-A FOO -j\nCOMMIT\n",
                3,
                "needs a value",
            ),
            ("*nat\n:FOO - [0:0]\n-A FOO !\nCOMMIT\n", 3, "dangling"),
            ("*nat\nbogus\nCOMMIT\n", 2, "unexpected"),
            ("*nat\n*filter\n", 2, "before the previous"),
        ];
        for (text, line, msg) in cases {
            let e = parse_iptables_save(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            let s = e.to_string();
            assert!(s.contains(msg), "{text:?}: {s}");
            assert!(!s.contains('\n'));
        }
    }

    #[test]
    fn old_style_negation_and_dotted_masks() {
        let t = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s ! 10.0.0.0/255.0.0.0 -p ! tcp -j DROP\nCOMMIT\n";
        let rs = parse_iptables_save(t).unwrap();
        let r = &rs.table("filter").unwrap().chain("INPUT").unwrap().rules[0];
        assert_eq!(
            r.matches()[0],
            Match::Source {
                net: parse_net("10.0.0.0/8").unwrap(),
                neg: true
            }
        );
        assert_eq!(
            r.matches()[1],
            Match::Protocol {
                number: 6,
                neg: true
            }
        );
    }

    #[test]
    fn mark_targets() {
        let t = "*nat\n:M - [0:0]\n-A M -j MARK --set-xmark 0x4000/0x4000\n-A M -j MARK --or-mark 0x4000\n-A M -j MARK --xor-mark 0x4000\nCOMMIT\n";
        let rs = parse_iptables_save(t).unwrap();
        let r = &rs.table("nat").unwrap().chain("M").unwrap().rules;
        let a: Vec<_> = r
            .iter()
            .map(|r| r.target().unwrap().action.clone())
            .collect();
        assert_eq!(
            a,
            vec![
                Action::Mark {
                    mask: 0x4000,
                    xor: 0x4000
                },
                Action::Mark {
                    mask: 0x4000,
                    xor: 0x4000
                },
                Action::Mark {
                    mask: 0,
                    xor: 0x4000
                },
            ]
        );
    }

    #[test]
    fn real_world_dump_parses() {
        let text = include_str!(
            "../../tests/fixtures/iptables/bossjones-kubeadm-v1.11-weave.iptables-save"
        );
        let rs = parse_iptables_save(text).unwrap();
        assert_eq!(rs.flavor, Flavor::Legacy);
        assert!(rs.table("nat").unwrap().chain("KUBE-SERVICES").is_some());
        assert!(rs.table("filter").is_some());
        assert!(rs.rule_count() > 50);
    }

    mod props {
        use super::super::parse_iptables_save;
        use crate::iptables::trace;
        use crate::trace::{NodeContext, Packet, Proto};
        use proptest::prelude::*;

        const WORDS: &[&str] = &[
            "*nat",
            "*filter",
            "COMMIT",
            ":KUBE-SERVICES - [0:0]",
            ":PREROUTING ACCEPT [1:2]",
            ":A - [0:0]",
            "-A",
            "-I",
            "KUBE-SERVICES",
            "PREROUTING",
            "A",
            "1",
            "-j",
            "-g",
            "-m",
            "comment",
            "--comment",
            "\"a b\"",
            "\"",
            "\\",
            "!",
            "-s",
            "-d",
            "10.0.0.0/8",
            "10.0.0.1",
            "fd00::/64",
            "-p",
            "tcp",
            "udp",
            "--dport",
            "80",
            "1:2",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.5",
            "recent",
            "--rcheck",
            "--name",
            "DNAT",
            "--to-destination",
            "10.1.0.1:80",
            "[0:0]",
            "MARK",
            "--or-mark",
            "0x4000",
            "mark",
            "--mark",
            "0x4000/0x4000",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "RETURN",
            "ACCEPT",
            "KUBE-MARK-MASQ",
            "foo",
            "--bar",
            "#",
            "\n",
            " ",
            "é",
        ];

        fn dump() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::collection::vec(prop::sample::select(WORDS), 0..12).prop_map(|w| w.join(" ")),
                0..16,
            )
            .prop_map(|lines| lines.join("\n"))
        }

        proptest! {
            #[test]
            fn never_panics_and_errors_are_one_line(text in dump()) {
                match parse_iptables_save(&text) {
                    Ok(rs) => {
                        let ctx = NodeContext { node_ips: vec!["192.168.0.2".parse().unwrap()] };
                        for dst in ["10.0.0.1", "192.168.0.2", "10.1.0.1"] {
                            let r = trace(&rs, &Packet {
                                src: "10.0.0.2".parse().unwrap(),
                                dst: dst.parse().unwrap(),
                                dport: 80,
                                proto: Proto::Tcp,
                            }, &ctx);
                            let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
                            prop_assert!((total - 1.0).abs() < 1e-9);
                        }
                    }
                    Err(e) => {
                        prop_assert!(e.line >= 1);
                        prop_assert!(!e.to_string().contains('\n'));
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,400}") {
                let _ = parse_iptables_save(&text);
            }
        }
    }
}
