//! resolv.conf parsing and glibc's search-list walk, as pure functions (no I/O).
//!
//! The parser follows glibc's `res_init` semantics for what it keeps (at most 3 nameservers, the
//! last `search`/`domain` line wins, options capped like glibc), but unlike glibc it refuses
//! garbage: kdiag is a diagnostic tool, so a line glibc would silently skip is an error here,
//! and everything glibc would drop or ignore is listed in [`ResolvConf::ignored`] with a reason.
//!
//! [`expand`] gives the exact list of names glibc's `res_nsearch` tries for a name, and
//! [`next_step`] encodes how glibc walks that list depending on each lookup's result.

use serde::Serialize;
use std::net::IpAddr;

/// glibc's MAXNS: nameservers after the third are ignored.
pub const MAX_NAMESERVERS: usize = 3;
/// Search domains kdiag keeps (the Kubernetes limit; glibc ≥ 2.26 has no limit, ≤ 2.25 kept 6).
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// The longest domain name in presentation form, without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
/// The longest label.
pub const MAX_LABEL_LEN: usize = 63;

const NDOTS_CAP: u8 = 15;
const TIMEOUT_CAP: u8 = 30;
const ATTEMPTS_CAP: u8 = 5;

/// A parsed resolv.conf.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvConf {
    /// Nameservers glibc uses, in file order (at most [`MAX_NAMESERVERS`]).
    pub nameservers: Vec<Nameserver>,
    /// The search list (from the last `search` or `domain` line), as written in the file.
    pub search: Vec<String>,
    /// 1-based line of the `search`/`domain` directive the list comes from.
    pub search_line: Option<usize>,
    /// The `options` in effect.
    pub options: ResolvOptions,
    /// What glibc drops or ignores, with the reason.
    pub ignored: Vec<Ignored>,
}

/// One `nameserver` line glibc uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nameserver {
    /// The server address (an IPv6 `%scope` suffix is accepted and dropped).
    pub addr: IpAddr,
    /// 1-based line number.
    pub line: usize,
}

/// Something in the file that glibc ignores or drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// 1-based line number.
    pub line: usize,
    /// The ignored text (a whole line or one word of it).
    pub text: String,
    /// Why it has no effect.
    pub reason: String,
}

/// The `options` line(s), with glibc's defaults and caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvOptions {
    /// `ndots:N`: names with at least this many dots are tried as-is first (default 1, capped 15).
    pub ndots: u8,
    /// `timeout:N`: seconds per try (default 5, capped 30).
    pub timeout: u8,
    /// `attempts:N`: rounds over the nameservers (default 2, capped 5).
    pub attempts: u8,
    /// `rotate`: round-robin between nameservers.
    pub rotate: bool,
    /// `single-request`: send A and AAAA one after the other.
    pub single_request: bool,
    /// `single-request-reopen`: new socket for the second query.
    pub single_request_reopen: bool,
    /// `edns0`: send an EDNS0 OPT record.
    pub edns0: bool,
    /// `use-vc`: TCP only.
    pub use_vc: bool,
    /// `no-aaaa`: suppress AAAA queries (glibc ≥ 2.36).
    pub no_aaaa: bool,
    /// `trust-ad`: set the AD bit and trust it in replies (glibc ≥ 2.31).
    pub trust_ad: bool,
    /// `no-tld-query`: never try a dotless name as-is.
    pub no_tld_query: bool,
}

impl Default for ResolvOptions {
    fn default() -> Self {
        ResolvOptions {
            ndots: 1,
            timeout: 5,
            attempts: 2,
            rotate: false,
            single_request: false,
            single_request_reopen: false,
            edns0: false,
            use_vc: false,
            no_aaaa: false,
            trust_ad: false,
            no_tld_query: false,
        }
    }
}

/// Why a resolv.conf could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolvError {
    /// The bytes are not UTF-8.
    #[error("resolv.conf is not valid utf-8 (line {line}, byte {offset})")]
    InvalidUtf8 {
        /// 1-based line of the first invalid byte.
        line: usize,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A NUL byte: not a text file.
    #[error("line {line}: contains a nul byte (not a text file)")]
    NulByte {
        /// 1-based line.
        line: usize,
    },
    /// A carriage return: glibc would read it as part of the last word.
    #[error("line {line}: carriage return (crlf line endings); glibc would misread this line")]
    CarriageReturn {
        /// 1-based line.
        line: usize,
    },
    /// A first word that is not a directive.
    #[error(
        "line {line}: unknown directive {directive:?} (expected nameserver, search, domain, options or sortlist)"
    )]
    UnknownDirective {
        /// 1-based line.
        line: usize,
        /// The word.
        directive: String,
    },
    /// A directive without its argument.
    #[error("line {line}: {directive} needs {what}")]
    MissingArgument {
        /// 1-based line.
        line: usize,
        /// The directive.
        directive: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// A nameserver that is not an IP address.
    #[error("line {line}: invalid nameserver address {addr:?}")]
    InvalidNameserver {
        /// 1-based line.
        line: usize,
        /// The text.
        addr: String,
    },
    /// A search or domain entry that is not a domain name.
    #[error("line {line}: invalid search domain {domain:?}: {reason}")]
    InvalidSearchDomain {
        /// 1-based line.
        line: usize,
        /// The entry.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A known option with a bad value.
    #[error("line {line}: options {option}: {reason}")]
    InvalidOption {
        /// 1-based line.
        line: usize,
        /// The option word.
        option: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a name cannot be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The empty string.
    #[error("empty name")]
    Empty,
    /// `a..b`, `.a`.
    #[error("invalid name {name:?}: empty label")]
    EmptyLabel {
        /// The name.
        name: String,
    },
    /// A label over 63 characters.
    #[error("invalid name {name:?}: label longer than 63 characters")]
    LabelTooLong {
        /// The name.
        name: String,
    },
    /// Over 253 characters.
    #[error("invalid name {name:?}: longer than 253 characters")]
    TooLong {
        /// The name.
        name: String,
    },
    /// Whitespace or control characters.
    #[error("invalid name {name:?}: contains whitespace or control characters")]
    BadCharacter {
        /// The name.
        name: String,
    },
}

/// Parses resolv.conf bytes; invalid UTF-8 is an error.
pub fn parse_resolv_conf_bytes(bytes: &[u8]) -> Result<ResolvConf, ResolvError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_resolv_conf(text),
        Err(e) => {
            let offset = e.valid_up_to();
            let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
            Err(ResolvError::InvalidUtf8 { line, offset })
        }
    }
}

/// Parses resolv.conf text with glibc semantics; see the module docs.
pub fn parse_resolv_conf(text: &str) -> Result<ResolvConf, ResolvError> {
    let mut conf = ResolvConf {
        nameservers: Vec::new(),
        search: Vec::new(),
        search_line: None,
        options: ResolvOptions::default(),
        ignored: Vec::new(),
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if raw.contains('\0') {
            return Err(ResolvError::NulByte { line });
        }
        if raw.contains('\r') {
            return Err(ResolvError::CarriageReturn { line });
        }
        let trimmed = raw.trim_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let mut words = trimmed.split([' ', '\t']).filter(|w| !w.is_empty());
        let Some(directive) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        match directive {
            "nameserver" => {
                let Some(first) = args.first() else {
                    return Err(ResolvError::MissingArgument {
                        line,
                        directive: "nameserver",
                        what: "an address",
                    });
                };
                // glibc stops the address at ';' or '#'.
                let end = first.find([';', '#']).unwrap_or(first.len());
                let text_addr = &first[..end];
                if text_addr.is_empty() {
                    return Err(ResolvError::MissingArgument {
                        line,
                        directive: "nameserver",
                        what: "an address",
                    });
                }
                let addr =
                    parse_ns_addr(text_addr).ok_or_else(|| ResolvError::InvalidNameserver {
                        line,
                        addr: text_addr.to_string(),
                    })?;
                if end == first.len() && args.len() > 1 && !is_comment(args[1]) {
                    conf.ignored.push(Ignored {
                        line,
                        text: args[1..].join(" "),
                        reason: "extra words after the nameserver address are ignored".into(),
                    });
                }
                if conf.nameservers.len() < MAX_NAMESERVERS {
                    conf.nameservers.push(Nameserver { addr, line });
                } else {
                    conf.ignored.push(Ignored {
                        line,
                        text: trimmed.to_string(),
                        reason: "glibc uses at most 3 nameservers (MAXNS)".into(),
                    });
                }
            }
            "search" | "domain" => {
                let directive: &'static str = if directive == "search" {
                    "search"
                } else {
                    "domain"
                };
                if args.is_empty() {
                    return Err(ResolvError::MissingArgument {
                        line,
                        directive,
                        what: "a domain",
                    });
                }
                if let Some(prev) = conf.search_line {
                    conf.ignored.push(Ignored {
                        line: prev,
                        text: conf.search.join(" "),
                        reason: format!(
                            "superseded by line {line} (the last search or domain line wins)"
                        ),
                    });
                }
                let words: &[&str] = if directive == "domain" {
                    if args.len() > 1 {
                        conf.ignored.push(Ignored {
                            line,
                            text: args[1..].join(" "),
                            reason: "domain takes one name; the rest is ignored".into(),
                        });
                    }
                    &args[..1]
                } else {
                    &args
                };
                let mut list = Vec::new();
                for w in words {
                    if w.len() > MAX_NAME_LEN {
                        conf.ignored.push(Ignored {
                            line,
                            text: (*w).to_string(),
                            reason: "search domain longer than 253 characters is dropped".into(),
                        });
                        continue;
                    }
                    if let Err(reason) = check_search_domain(w) {
                        return Err(ResolvError::InvalidSearchDomain {
                            line,
                            domain: (*w).to_string(),
                            reason: reason.into(),
                        });
                    }
                    if list.len() >= MAX_SEARCH_DOMAINS {
                        conf.ignored.push(Ignored {
                            line,
                            text: (*w).to_string(),
                            reason: format!(
                                "more than {MAX_SEARCH_DOMAINS} search domains (the kubernetes limit); the rest are ignored"
                            ),
                        });
                        continue;
                    }
                    list.push((*w).to_string());
                }
                conf.search = list;
                conf.search_line = Some(line);
            }
            "options" => {
                if args.is_empty() {
                    return Err(ResolvError::MissingArgument {
                        line,
                        directive: "options",
                        what: "at least one option",
                    });
                }
                for opt in args {
                    if is_comment(opt) {
                        break;
                    }
                    apply_option(&mut conf, line, opt)?;
                }
            }
            "sortlist" => conf.ignored.push(Ignored {
                line,
                text: trimmed.to_string(),
                reason: "sortlist is accepted but has no effect on lookups kdiag models".into(),
            }),
            other => {
                return Err(ResolvError::UnknownDirective {
                    line,
                    directive: other.to_string(),
                })
            }
        }
    }
    Ok(conf)
}

fn is_comment(word: &str) -> bool {
    word.starts_with('#') || word.starts_with(';')
}

fn parse_ns_addr(s: &str) -> Option<IpAddr> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(a);
    }
    // IPv6 with a zone: fe80::1%eth0.
    let (addr, scope) = s.split_once('%')?;
    if scope.is_empty() {
        return None;
    }
    match addr.parse::<IpAddr>() {
        Ok(a @ IpAddr::V6(_)) => Some(a),
        _ => None,
    }
}

fn check_search_domain(d: &str) -> Result<(), &'static str> {
    if d == "." {
        return Ok(());
    }
    // glibc skips one leading dot of a search entry.
    let body = d.strip_prefix('.').unwrap_or(d);
    let body = body.strip_suffix('.').unwrap_or(body);
    check_labels(body)
}

fn check_labels(body: &str) -> Result<(), &'static str> {
    if body.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    if body.len() > MAX_NAME_LEN {
        return Err("longer than 253 characters");
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
    }
    Ok(())
}

fn parse_num(line: usize, opt: &str, field: &str) -> Result<Option<u64>, ResolvError> {
    let Some(rest) = opt.strip_prefix(field) else {
        return Ok(None);
    };
    let bad = |reason| {
        Err(ResolvError::InvalidOption {
            line,
            option: opt.to_string(),
            reason,
        })
    };
    let v = match rest.strip_prefix(':') {
        Some(v) => v,
        None if rest.is_empty() => return bad("missing value (expected name:N)"),
        None => return Ok(None),
    };
    if v.is_empty() {
        return bad("missing value");
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return bad("not a number");
    }
    Ok(Some(v.parse().unwrap_or(u64::MAX)))
}

fn apply_option(conf: &mut ResolvConf, line: usize, opt: &str) -> Result<(), ResolvError> {
    for (field, cap) in [
        ("ndots", NDOTS_CAP),
        ("timeout", TIMEOUT_CAP),
        ("attempts", ATTEMPTS_CAP),
    ] {
        let Some(n) = parse_num(line, opt, field)? else {
            continue;
        };
        let v = u8::try_from(n).unwrap_or(u8::MAX).min(cap);
        match field {
            "ndots" => conf.options.ndots = v,
            "timeout" => conf.options.timeout = v,
            _ => conf.options.attempts = v,
        }
        if n > u64::from(cap) {
            conf.ignored.push(Ignored {
                line,
                text: opt.to_string(),
                reason: format!("glibc caps {field} at {cap}"),
            });
        }
        return Ok(());
    }
    let o = &mut conf.options;
    let flag = match opt {
        "rotate" => &mut o.rotate,
        "single-request" => &mut o.single_request,
        "single-request-reopen" => &mut o.single_request_reopen,
        "edns0" => &mut o.edns0,
        "use-vc" => &mut o.use_vc,
        "no-aaaa" => &mut o.no_aaaa,
        "trust-ad" => &mut o.trust_ad,
        "no-tld-query" => &mut o.no_tld_query,
        "debug" | "no-reload" | "inet6" | "ip6-bytestring" | "ip6-dotint" | "no-ip6-dotint"
        | "no-check-names" | "insecure1" | "insecure2" => {
            conf.ignored.push(Ignored {
                line,
                text: opt.to_string(),
                reason: "glibc option that does not change what kdiag models".into(),
            });
            return Ok(());
        }
        _ => {
            conf.ignored.push(Ignored {
                line,
                text: opt.to_string(),
                reason: "unknown option (glibc ignores it)".into(),
            });
            return Ok(());
        }
    };
    *flag = true;
    Ok(())
}

/// Where a candidate name sits in glibc's search walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateKind {
    /// The name had a trailing dot: the only candidate.
    Absolute,
    /// dots >= ndots: the name as-is, tried before the search list.
    AsIsFirst,
    /// name + a search domain.
    Search,
    /// dots < ndots: the name as-is, tried after the search list.
    AsIsLast,
}

/// The candidates of one lookup, in the order glibc tries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expansion {
    /// Fully qualified names, each ending in '.'.
    pub candidates: Vec<String>,
    /// The kind of each candidate (same length as `candidates`).
    pub kinds: Vec<CandidateKind>,
}

/// The exact list of fully qualified names glibc's `res_nsearch` would try for `name`, in order.
///
/// A trailing dot gives only the name. With at least `ndots` dots the name is tried as-is first,
/// then with each search domain; with fewer, each search domain first and the name as-is last.
/// The as-is name is tried once only; a `.` search entry counts as the as-is try (glibc's
/// `root_on_list`), and `no-tld-query` drops the as-is try of a dotless name. If appending a
/// domain would exceed 253 characters, glibc stops the search list there (NO_RECOVERY).
pub fn expand(name: &str, conf: &ResolvConf) -> Result<Vec<String>, NameError> {
    expand_walk(name, conf).map(|e| e.candidates)
}

/// [`expand`] with the role of each candidate, for [`next_step`].
pub fn expand_walk(name: &str, conf: &ResolvConf) -> Result<Expansion, NameError> {
    validate_name(name)?;
    let mut ex = Expansion {
        candidates: Vec::new(),
        kinds: Vec::new(),
    };
    if name == "." {
        ex.candidates.push(".".into());
        ex.kinds.push(CandidateKind::Absolute);
        return Ok(ex);
    }
    if name.ends_with('.') {
        ex.candidates.push(name.to_string());
        ex.kinds.push(CandidateKind::Absolute);
        return Ok(ex);
    }
    let dots = name.bytes().filter(|&b| b == b'.').count();
    let as_is = format!("{name}.");
    let mut tried_as_is = false;
    if dots >= usize::from(conf.options.ndots) {
        ex.candidates.push(as_is.clone());
        ex.kinds.push(CandidateKind::AsIsFirst);
        tried_as_is = true;
    }
    let mut root_on_list = false;
    let mut searched = false;
    for domain in &conf.search {
        searched = true;
        let d = domain.strip_suffix('.').unwrap_or(domain);
        let d = d.strip_prefix('.').unwrap_or(d);
        if d.is_empty() {
            root_on_list = true;
            ex.candidates.push(as_is.clone());
            ex.kinds.push(CandidateKind::Search);
            continue;
        }
        if name.len() + 1 + d.len() > MAX_NAME_LEN {
            // glibc: the query cannot be built, h_errno NO_RECOVERY, search loop done.
            break;
        }
        ex.candidates.push(format!("{name}.{d}."));
        ex.kinds.push(CandidateKind::Search);
    }
    let tld_blocked = dots == 0 && searched && conf.options.no_tld_query;
    if !tld_blocked && !tried_as_is && !root_on_list {
        ex.candidates.push(as_is);
        ex.kinds.push(CandidateKind::AsIsLast);
    }
    Ok(ex)
}

fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." {
        return Ok(());
    }
    let body = name.strip_suffix('.').unwrap_or(name);
    match check_labels(body) {
        Ok(()) => Ok(()),
        Err("empty label") => Err(NameError::EmptyLabel { name: name.into() }),
        Err("label longer than 63 characters") => {
            Err(NameError::LabelTooLong { name: name.into() })
        }
        Err("longer than 253 characters") => Err(NameError::TooLong { name: name.into() }),
        Err(_) => Err(NameError::BadCharacter { name: name.into() }),
    }
}

/// How one candidate's lookup ended, in the terms glibc's `res_nsearch` switches on.
/// With several record types (A and AAAA) combine them with [`CandidateResult::combine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateResult {
    /// NOERROR with at least one answer.
    Answer,
    /// NXDOMAIN (h_errno HOST_NOT_FOUND).
    NxDomain,
    /// NOERROR without answers (NO_DATA).
    NoData,
    /// SERVFAIL (TRY_AGAIN with rcode SERVFAIL).
    ServFail,
    /// No reply before the timeout (TRY_AGAIN).
    Timeout,
    /// ECONNREFUSED (ICMP port unreachable or RST).
    ConnRefused,
    /// Any other rcode (FORMERR, NOTIMP, REFUSED...), unreachable, malformed (NO_RECOVERY).
    Failed,
}

impl CandidateResult {
    /// Classifies a reply by its rcode mnemonic and answer count.
    pub fn from_rcode(rcode: &str, answers: usize) -> CandidateResult {
        match rcode {
            "NOERROR" if answers > 0 => CandidateResult::Answer,
            "NOERROR" => CandidateResult::NoData,
            "NXDOMAIN" => CandidateResult::NxDomain,
            "SERVFAIL" => CandidateResult::ServFail,
            _ => CandidateResult::Failed,
        }
    }

    /// Combines the results of the queries sent for one candidate (A then AAAA), like glibc's
    /// `__res_context_query` with two replies: any answer wins; a socket failure fails the
    /// candidate; otherwise the first reply's class unless it is NODATA, then the next one's.
    pub fn combine(results: &[CandidateResult]) -> CandidateResult {
        use CandidateResult::*;
        if results.contains(&Answer) {
            return Answer;
        }
        if results.contains(&ConnRefused) {
            return ConnRefused;
        }
        if results.contains(&Timeout) {
            return Timeout;
        }
        results
            .iter()
            .copied()
            .find(|r| *r != NoData)
            .unwrap_or(if results.is_empty() { Failed } else { NoData })
    }
}

/// glibc's rule for a reply to a search-list candidate: NXDOMAIN, NODATA (NOERROR without
/// answers) and SERVFAIL go on to the next candidate; an answer or any other rcode stops.
/// (Timeouts and ECONNREFUSED are not rcodes: see [`next_step`].)
pub fn should_continue(rcode: &str, answers: usize) -> bool {
    matches!(
        CandidateResult::from_rcode(rcode, answers),
        CandidateResult::NxDomain | CandidateResult::NoData | CandidateResult::ServFail
    )
}

/// What to do after a candidate's lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Try the candidate at this index next.
    Try(usize),
    /// The walk is over (answered, or glibc gives up).
    Stop,
}

/// glibc's `res_nsearch` walk: after candidate `current` of `walk` ended with `result`, which
/// candidate comes next.
///
/// - An answer stops the walk; so does anything after an absolute name or the final as-is try.
/// - The as-is try made first (dots >= ndots) goes on to the search list whatever happened.
/// - On a search candidate, NXDOMAIN, NODATA and SERVFAIL go on to the next candidate;
///   ECONNREFUSED stops at once (glibc returns TRY_AGAIN); a timeout or any other failure ends
///   the search list, but glibc still tries the name as-is if it has not yet.
pub fn next_step(walk: &Expansion, current: usize, result: CandidateResult) -> Step {
    let Some(kind) = walk.kinds.get(current) else {
        return Step::Stop;
    };
    let next = current + 1;
    let has_next = next < walk.kinds.len();
    if result == CandidateResult::Answer {
        return Step::Stop;
    }
    match kind {
        CandidateKind::Absolute | CandidateKind::AsIsLast => Step::Stop,
        CandidateKind::AsIsFirst => {
            if has_next {
                Step::Try(next)
            } else {
                Step::Stop
            }
        }
        CandidateKind::Search => match result {
            CandidateResult::NxDomain | CandidateResult::NoData | CandidateResult::ServFail => {
                if has_next {
                    Step::Try(next)
                } else {
                    Step::Stop
                }
            }
            CandidateResult::ConnRefused | CandidateResult::Answer => Step::Stop,
            CandidateResult::Timeout | CandidateResult::Failed => {
                match walk
                    .kinds
                    .iter()
                    .rposition(|k| *k == CandidateKind::AsIsLast)
                {
                    Some(i) if i > current => Step::Try(i),
                    _ => Step::Stop,
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POD: &str = "\
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.96.0.10
options ndots:5
";

    fn conf(text: &str) -> ResolvConf {
        match parse_resolv_conf(text) {
            Ok(c) => c,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse_resolv_conf(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn typical_pod_file() {
        let c = conf(POD);
        assert_eq!(
            c.nameservers,
            vec![Nameserver {
                addr: "10.96.0.10".parse().unwrap(),
                line: 2
            }]
        );
        assert_eq!(
            c.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(c.search_line, Some(1));
        assert_eq!(c.options.ndots, 5);
        assert_eq!(c.options.timeout, 5);
        assert_eq!(c.options.attempts, 2);
        assert!(c.ignored.is_empty());
    }

    #[test]
    fn defaults_for_empty_file() {
        let c = conf("");
        assert!(c.nameservers.is_empty());
        assert!(c.search.is_empty());
        assert_eq!(c.search_line, None);
        assert_eq!(c.options, ResolvOptions::default());
        assert_eq!(c.options.ndots, 1);
    }

    #[test]
    fn comments_blank_lines_and_tabs() {
        let c = conf(
            "# generated\n; also a comment\n\n   \n\tnameserver\t10.0.0.1  \n  # indented comment\nnameserver 10.0.0.2 # trailing\nnameserver 10.0.0.3#x\n",
        );
        let addrs: Vec<String> = c.nameservers.iter().map(|n| n.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.nameservers[0].line, 5);
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    }

    #[test]
    fn fourth_nameserver_ignored() {
        let c =
            conf("nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver ::1\nnameserver 9.9.9.9\n");
        assert_eq!(c.nameservers.len(), 3);
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.ignored[0].line, 4);
        assert_eq!(c.ignored[0].text, "nameserver 9.9.9.9");
        assert_eq!(
            c.ignored[0].reason,
            "glibc uses at most 3 nameservers (MAXNS)"
        );
    }

    #[test]
    fn ipv6_nameservers_and_scope() {
        let c = conf("nameserver fd00::10\nnameserver fe80::1%eth0\n");
        assert_eq!(c.nameservers[0].addr, "fd00::10".parse::<IpAddr>().unwrap());
        assert_eq!(c.nameservers[1].addr, "fe80::1".parse::<IpAddr>().unwrap());
        assert!(err("nameserver 10.0.0.1%eth0\n").contains("invalid nameserver address"));
        assert!(err("nameserver fe80::1%\n").contains("invalid nameserver address"));
    }

    #[test]
    fn nameserver_errors() {
        assert_eq!(
            err("nameserver 10.0.0.1\nnameserver 10.0.0.300\n"),
            "line 2: invalid nameserver address \"10.0.0.300\""
        );
        assert_eq!(err("nameserver\n"), "line 1: nameserver needs an address");
        assert_eq!(
            err("nameserver   # c\n"),
            "line 1: nameserver needs an address"
        );
        assert!(err("nameserver dns.example.com\n").contains("invalid nameserver address"));
        assert!(err("nameserver 127.1\n").contains("invalid nameserver address"));
    }

    #[test]
    fn extra_words_after_nameserver_are_noted() {
        let c = conf("nameserver 10.0.0.1 10.0.0.2\n");
        assert_eq!(c.nameservers.len(), 1);
        assert_eq!(c.ignored[0].text, "10.0.0.2");
    }

    #[test]
    fn unknown_directive() {
        assert_eq!(
            err("nameserver 10.0.0.1\n\nfoo bar\n"),
            "line 3: unknown directive \"foo\" (expected nameserver, search, domain, options or sortlist)"
        );
        assert!(err("NAMESERVER 1.2.3.4\n").contains("unknown directive \"NAMESERVER\""));
        assert!(err("garbage\n").contains("line 1: unknown directive"));
    }

    #[test]
    fn nul_crlf_and_bad_utf8() {
        assert_eq!(
            err("nameserver 1.2.3.4\n\0\n"),
            "line 2: contains a nul byte (not a text file)"
        );
        assert!(err("nameserver 1.2.3.4\r\n").starts_with("line 1: carriage return"));
        let e = parse_resolv_conf_bytes(b"nameserver 1.2.3.4\nsearch \xff\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "resolv.conf is not valid utf-8 (line 2, byte 26)"
        );
        assert!(parse_resolv_conf_bytes(POD.as_bytes()).is_ok());
    }

    #[test]
    fn last_search_or_domain_wins() {
        let c = conf("search a.example b.example\ndomain corp.example\n");
        assert_eq!(c.search, ["corp.example"]);
        assert_eq!(c.search_line, Some(2));
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.ignored[0].line, 1);
        assert!(c.ignored[0].reason.contains("superseded by line 2"));
        let c = conf("domain corp.example\nsearch x.example y.example\n");
        assert_eq!(c.search, ["x.example", "y.example"]);
        assert_eq!(c.search_line, Some(2));
    }

    #[test]
    fn domain_takes_one_word() {
        let c = conf("domain corp.example other\n");
        assert_eq!(c.search, ["corp.example"]);
        assert_eq!(c.ignored[0].text, "other");
    }

    #[test]
    fn search_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let c = conf(&format!("search {}\n", many.join(" ")));
        assert_eq!(c.search.len(), 32);
        assert_eq!(c.search[31], "d31.example");
        assert_eq!(c.ignored.len(), 8);
        assert!(c.ignored[0].reason.contains("more than 32 search domains"));

        let long = format!("{}.example", vec!["a".repeat(60); 5].join("."));
        assert!(long.len() > 253);
        let c = conf(&format!("search ok.example {long}\n"));
        assert_eq!(c.search, ["ok.example"]);
        assert!(c.ignored[0].reason.contains("longer than 253"));
    }

    #[test]
    fn search_errors() {
        assert_eq!(err("search\n"), "line 1: search needs a domain");
        assert_eq!(err("domain\n"), "line 1: domain needs a domain");
        assert_eq!(
            err("search a..b\n"),
            "line 1: invalid search domain \"a..b\": empty label"
        );
        assert!(err(&format!("search {}.com\n", "x".repeat(64))).contains("label longer than 63"));
    }

    #[test]
    fn search_root_and_trailing_dot_accepted() {
        let c = conf("search . example.com.\n");
        assert_eq!(c.search, [".", "example.com."]);
    }

    #[test]
    fn options_parsed_and_capped() {
        let c = conf(
            "options ndots:2 timeout:1 attempts:3 rotate single-request single-request-reopen\noptions edns0 use-vc no-aaaa trust-ad no-tld-query\n",
        );
        let o = &c.options;
        assert_eq!((o.ndots, o.timeout, o.attempts), (2, 1, 3));
        assert!(o.rotate && o.single_request && o.single_request_reopen);
        assert!(o.edns0 && o.use_vc && o.no_aaaa && o.trust_ad && o.no_tld_query);
        assert!(c.ignored.is_empty());

        let c = conf("options ndots:99 timeout:300 attempts:99999999999999999999999\n");
        assert_eq!(
            (c.options.ndots, c.options.timeout, c.options.attempts),
            (15, 30, 5)
        );
        assert_eq!(c.ignored.len(), 3);
        assert_eq!(c.ignored[0].reason, "glibc caps ndots at 15");
    }

    #[test]
    fn options_unknown_and_errors() {
        let c = conf("options frobnicate ndots:3 no-reload # comment words\n");
        assert_eq!(c.options.ndots, 3);
        assert_eq!(c.ignored.len(), 2);
        assert_eq!(c.ignored[0].text, "frobnicate");
        assert_eq!(c.ignored[0].reason, "unknown option (glibc ignores it)");
        assert_eq!(c.ignored[1].text, "no-reload");

        assert_eq!(
            err("options ndots:x\n"),
            "line 1: options ndots:x: not a number"
        );
        assert_eq!(
            err("options ndots:-1\n"),
            "line 1: options ndots:-1: not a number"
        );
        assert_eq!(
            err("options timeout:\n"),
            "line 1: options timeout:: missing value"
        );
        assert!(err("options attempts\n").contains("missing value"));
        assert_eq!(
            err("options\n"),
            "line 1: options needs at least one option"
        );
        // ndotsx is not ndots: glibc ignores it as unknown.
        let c = conf("options ndotsx:3\n");
        assert_eq!(c.options.ndots, 1);
        assert_eq!(c.ignored.len(), 1);
    }

    #[test]
    fn sortlist_is_ignored() {
        let c = conf("sortlist 130.155.160.0/255.255.240.0 130.155.0.0\n");
        assert_eq!(c.ignored.len(), 1);
        assert!(c.ignored[0].reason.starts_with("sortlist"));
    }

    #[test]
    fn errors_are_one_line() {
        for bad in ["foo\n\n", "nameserver 1.2.3.4\"\n", "search a\u{7}b\n"] {
            assert!(!err(bad).contains('\n'));
        }
    }

    fn kubelet() -> ResolvConf {
        conf("search ns1.svc.cluster.local svc.cluster.local cluster.local c.proj.internal google.internal corp.example\nnameserver 10.96.0.10\noptions ndots:5\n")
    }

    #[test]
    fn expand_short_name_walks_search_first() {
        let c = kubelet();
        assert_eq!(
            expand("web-service", &c).unwrap(),
            [
                "web-service.ns1.svc.cluster.local.",
                "web-service.svc.cluster.local.",
                "web-service.cluster.local.",
                "web-service.c.proj.internal.",
                "web-service.google.internal.",
                "web-service.corp.example.",
                "web-service.",
            ]
        );
        assert_eq!(expand("www.example.com", &c).unwrap().len(), 7);
        assert_eq!(
            expand("www.example.com", &c).unwrap()[6],
            "www.example.com."
        );
    }

    #[test]
    fn expand_enough_dots_tries_as_is_first() {
        let mut c = kubelet();
        c.options.ndots = 2;
        let e = expand("www.example.com", &c).unwrap();
        assert_eq!(e[0], "www.example.com.");
        assert_eq!(e[1], "www.example.com.ns1.svc.cluster.local.");
        assert_eq!(e.len(), 7);
        c.options.ndots = 0;
        assert_eq!(expand("web", &c).unwrap()[0], "web.");
    }

    #[test]
    fn expand_trailing_dot_and_case() {
        let c = kubelet();
        assert_eq!(
            expand("Kubernetes.Default.", &c).unwrap(),
            ["Kubernetes.Default."]
        );
        assert_eq!(expand(".", &c).unwrap(), ["."]);
        assert_eq!(expand("Web", &c).unwrap()[0], "Web.ns1.svc.cluster.local.");
    }

    #[test]
    fn expand_root_on_list_and_trailing_dot_domains() {
        let c = conf("search . example.com.\n");
        assert_eq!(expand("web", &c).unwrap(), ["web.", "web.example.com."]);
        let c = conf("search .example.com\n");
        assert_eq!(expand("web", &c).unwrap(), ["web.example.com.", "web."]);
    }

    #[test]
    fn expand_no_search_and_no_tld_query() {
        let c = conf("nameserver 10.0.0.1\n");
        assert_eq!(expand("web", &c).unwrap(), ["web."]);
        let c = conf("search a.example\noptions no-tld-query\n");
        assert_eq!(expand("web", &c).unwrap(), ["web.a.example."]);
        assert_eq!(expand("web.x", &c).unwrap(), ["web.x.", "web.x.a.example."]);
    }

    #[test]
    fn expand_stops_search_at_too_long_candidate() {
        let long = vec!["b".repeat(60); 4].join(".");
        let c = conf(&format!("search a.example {long} c.example\n"));
        let name = "x".repeat(10);
        assert_eq!(
            expand(&name, &c).unwrap(),
            [format!("{name}.a.example."), format!("{name}.")]
        );
    }

    #[test]
    fn expand_rejects_bad_names() {
        let c = kubelet();
        assert_eq!(expand("", &c).unwrap_err().to_string(), "empty name");
        assert_eq!(
            expand("a..b", &c).unwrap_err().to_string(),
            "invalid name \"a..b\": empty label"
        );
        assert!(matches!(
            expand(".a", &c),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            expand("a..", &c),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            expand(&"x".repeat(64), &c),
            Err(NameError::LabelTooLong { .. })
        ));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(matches!(expand(&long, &c), Err(NameError::TooLong { .. })));
        assert!(matches!(
            expand("a b", &c),
            Err(NameError::BadCharacter { .. })
        ));
    }

    #[test]
    fn rcode_rules() {
        assert!(should_continue("NXDOMAIN", 0));
        assert!(should_continue("NOERROR", 0));
        assert!(should_continue("SERVFAIL", 0));
        assert!(!should_continue("NOERROR", 1));
        assert!(!should_continue("REFUSED", 0));
        assert!(!should_continue("FORMERR", 0));
        assert!(!should_continue("RCODE12", 0));
    }

    #[test]
    fn combine_results() {
        use CandidateResult::*;
        assert_eq!(CandidateResult::combine(&[NxDomain, Answer]), Answer);
        assert_eq!(CandidateResult::combine(&[NoData, NxDomain]), NxDomain);
        assert_eq!(CandidateResult::combine(&[NoData, NoData]), NoData);
        assert_eq!(CandidateResult::combine(&[ServFail, NxDomain]), ServFail);
        assert_eq!(CandidateResult::combine(&[NxDomain, Timeout]), Timeout);
        assert_eq!(
            CandidateResult::combine(&[Timeout, ConnRefused]),
            ConnRefused
        );
        assert_eq!(CandidateResult::combine(&[]), Failed);
    }

    #[test]
    fn walk_rules() {
        use CandidateResult::*;
        let c = kubelet();
        let w = expand_walk("web", &c).unwrap();
        assert_eq!(w.kinds[0], CandidateKind::Search);
        assert_eq!(w.kinds[6], CandidateKind::AsIsLast);
        assert_eq!(next_step(&w, 0, NxDomain), Step::Try(1));
        assert_eq!(next_step(&w, 0, NoData), Step::Try(1));
        assert_eq!(next_step(&w, 0, ServFail), Step::Try(1));
        assert_eq!(next_step(&w, 0, Answer), Step::Stop);
        assert_eq!(next_step(&w, 0, ConnRefused), Step::Stop);
        assert_eq!(next_step(&w, 0, Timeout), Step::Try(6));
        assert_eq!(next_step(&w, 2, Failed), Step::Try(6));
        assert_eq!(next_step(&w, 5, NxDomain), Step::Try(6));
        assert_eq!(next_step(&w, 6, NxDomain), Step::Stop);
        assert_eq!(next_step(&w, 99, NxDomain), Step::Stop);

        let mut c2 = c.clone();
        c2.options.ndots = 1;
        let w = expand_walk("www.example.com", &c2).unwrap();
        assert_eq!(w.kinds[0], CandidateKind::AsIsFirst);
        assert_eq!(next_step(&w, 0, Timeout), Step::Try(1));
        assert_eq!(next_step(&w, 0, ConnRefused), Step::Try(1));
        assert_eq!(next_step(&w, 1, Timeout), Step::Stop);
        assert_eq!(next_step(&w, 6, NxDomain), Step::Stop);

        let w = expand_walk("abs.", &c).unwrap();
        assert_eq!(next_step(&w, 0, NxDomain), Step::Stop);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,400}") {
            let _ = parse_resolv_conf(&s);
        }

        #[test]
        fn parse_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_resolv_conf_bytes(&b);
        }

        #[test]
        fn parse_structured_never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    "nameserver [0-9a-f:.%]{0,20}",
                    "search( [a-z.]{0,12}){0,5}",
                    "domain [a-z.]{0,12}",
                    "options( (ndots|timeout|attempts):[0-9x]{0,4}| rotate| edns0| [a-z-]{0,8}){0,4}",
                    "[#;].{0,10}",
                    "[ \t]{0,3}",
                ],
                0..12,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(c) = parse_resolv_conf(&text) {
                prop_assert!(c.nameservers.len() <= MAX_NAMESERVERS);
                prop_assert!(c.search.len() <= MAX_SEARCH_DOMAINS);
                prop_assert!(c.options.ndots <= 15);
                prop_assert!(c.options.timeout <= 30);
                prop_assert!(c.options.attempts <= 5);
            }
        }

        #[test]
        fn expand_never_panics(name in ".{0,80}", ndots in 0u8..16, search in proptest::collection::vec(".{0,30}", 0..8)) {
            let c = ResolvConf { nameservers: vec![], search, search_line: None, options: ResolvOptions { ndots, ..ResolvOptions::default() }, ignored: vec![] };
            if let Ok(v) = expand(&name, &c) {
                prop_assert!(v.iter().all(|n| n.ends_with('.')));
            }
        }

        #[test]
        fn expand_counts(
            labels in proptest::collection::vec("[a-z0-9-]{1,12}", 1..5),
            trailing in any::<bool>(),
            ndots in 0u8..16,
            search in proptest::collection::vec("[a-z]{1,10}(\\.[a-z]{1,10}){0,3}", 0..8),
        ) {
            let mut name = labels.join(".");
            if trailing { name.push('.'); }
            let c = ResolvConf { nameservers: vec![], search: search.clone(), search_line: None, options: ResolvOptions { ndots, ..ResolvOptions::default() }, ignored: vec![] };
            let v = expand(&name, &c).unwrap();
            prop_assert!(v.iter().all(|n| n.ends_with('.') && !n.ends_with("..")));
            if trailing {
                prop_assert_eq!(v, vec![name]);
            } else {
                prop_assert_eq!(v.len(), search.len() + 1);
                let as_is = format!("{name}.");
                prop_assert_eq!(v.iter().filter(|n| **n == as_is).count(), 1);
                let walk = expand_walk(&name, &c).unwrap();
                prop_assert_eq!(walk.kinds.len(), v.len());
                for i in 0..v.len() {
                    prop_assert_eq!(next_step(&walk, i, CandidateResult::Answer), Step::Stop);
                    if let Step::Try(j) = next_step(&walk, i, CandidateResult::NxDomain) {
                        prop_assert_eq!(j, i + 1);
                    }
                }
            }
        }
    }
}
