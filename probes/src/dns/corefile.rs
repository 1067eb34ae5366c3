//! A parser for CoreDNS Corefiles (Caddyfile syntax): server blocks, their zones and ports,
//! and plugin directives with their arguments and sub-blocks. Pure.
//!
//! Snippets (`(name) { ... }`) are parsed and kept; `import` is recorded, not expanded.

use serde::Serialize;
use std::net::IpAddr;

/// A parse failure, with the line it happened on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CorefileError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One `zone:port` key of a server block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerKey {
    /// Zone, fully qualified: `.`, `cluster.local.`.
    pub zone: String,
    /// Port, when given.
    pub port: Option<u16>,
    /// Transport scheme (`dns`, `tls`, `https`, `grpc`), when given.
    pub scheme: Option<String>,
}

/// A plugin directive: `forward . /etc/resolv.conf { max_concurrent 1000 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Plugin name.
    pub name: String,
    /// Arguments on the directive's line.
    pub args: Vec<String>,
    /// 1-based line.
    pub line: usize,
    /// Sub-directives inside `{ }`.
    pub block: Vec<Directive>,
}

/// A server block: the keys before `{` and the directives inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerBlock {
    /// Zones and ports served.
    pub keys: Vec<ServerKey>,
    /// Line of the first key.
    pub line: usize,
    /// Directives in order.
    pub directives: Vec<Directive>,
    /// True for a snippet definition `(name) { }`.
    pub snippet: bool,
}

/// Where `forward` sends queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ForwardTarget {
    /// An address.
    Addr {
        /// IP.
        ip: IpAddr,
        /// Port (53 unless given).
        port: u16,
        /// `dns`, `tls`...
        scheme: String,
    },
    /// A resolv.conf-style file whose nameservers are the targets.
    File {
        /// The path as written.
        path: String,
    },
}

/// A `forward` directive, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// The zone it forwards (`.` for everything).
    pub from: String,
    /// Targets in order.
    pub to: Vec<ForwardTarget>,
    /// 1-based line.
    pub line: usize,
}

/// A parsed Corefile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Corefile {
    /// Server blocks (and snippets) in order.
    pub servers: Vec<ServerBlock>,
}

impl ServerBlock {
    /// The first directive named `name`.
    pub fn plugin(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }

    /// The block's first zone (what CoreDNS's loop plugin probes).
    pub fn first_zone(&self) -> &str {
        self.keys.first().map(|k| k.zone.as_str()).unwrap_or(".")
    }

    /// Every `forward` of the block, decoded.
    pub fn forwards(&self) -> Result<Vec<Forward>, CorefileError> {
        self.directives
            .iter()
            .filter(|d| d.name == "forward")
            .map(decode_forward)
            .collect()
    }
}

fn fqdn(zone: &str) -> String {
    let z = zone.trim();
    if z == "." || z.is_empty() {
        ".".to_string()
    } else {
        format!("{}.", z.trim_end_matches('.').to_ascii_lowercase())
    }
}

fn decode_forward(d: &Directive) -> Result<Forward, CorefileError> {
    let err = |m: String| CorefileError {
        line: d.line,
        message: m,
    };
    let (from, targets) = d
        .args
        .split_first()
        .ok_or_else(|| err("forward needs a zone and at least one target".into()))?;
    if targets.is_empty() {
        return Err(err(format!("forward {from} needs at least one target")));
    }
    let to = targets
        .iter()
        .map(|t| parse_target(t).ok_or_else(|| err(format!("forward: invalid target {t:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Forward {
        from: fqdn(from.split("://").last().unwrap_or(from)),
        to,
        line: d.line,
    })
}

/// Parses one forward target: `1.2.3.4`, `1.2.3.4:5353`, `[::1]:53`, `::1`, `dns://8.8.8.8`,
/// `tls://9.9.9.9`, or a file path (`/etc/resolv.conf`).
pub fn parse_target(t: &str) -> Option<ForwardTarget> {
    if t.starts_with('/') || t.starts_with("./") {
        return Some(ForwardTarget::File {
            path: t.to_string(),
        });
    }
    let (scheme, rest) = match t.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("dns".to_string(), t),
    };
    let default_port = if scheme == "tls" { 853 } else { 53 };
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Some(ForwardTarget::Addr {
            ip,
            port: default_port,
            scheme,
        });
    }
    if let Ok(sa) = rest.parse::<std::net::SocketAddr>() {
        return Some(ForwardTarget::Addr {
            ip: sa.ip(),
            port: sa.port(),
            scheme,
        });
    }
    if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<IpAddr>() {
            return Some(ForwardTarget::Addr {
                ip,
                port: default_port,
                scheme,
            });
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, CorefileError> {
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                chars.next();
                out.push((Tok::Newline, line));
                line += 1;
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '"' => {
                chars.next();
                let start = line;
                let mut w = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(CorefileError {
                                line: start,
                                message: "unterminated quoted string".into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n) => w.push(n),
                            None => {
                                return Err(CorefileError {
                                    line,
                                    message: "unterminated quoted string".into(),
                                })
                            }
                        },
                        Some('\n') => {
                            line += 1;
                            w.push('\n');
                        }
                        Some(o) => w.push(o),
                    }
                }
                out.push((Tok::Word(w), start));
            }
            '\0' => {
                return Err(CorefileError {
                    line,
                    message: "NUL byte: not a text file".into(),
                })
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '"' {
                        break;
                    }
                    // `#` only starts a comment at the start of a token
                    w.push(c);
                    chars.next();
                }
                let tok = match w.as_str() {
                    "{" => Tok::Open,
                    "}" => Tok::Close,
                    _ if w.len() > 1 && w.ends_with('{') => {
                        out.push((Tok::Word(w[..w.len() - 1].to_string()), line));
                        Tok::Open
                    }
                    _ => Tok::Word(w),
                };
                out.push((tok, line));
            }
        }
    }
    Ok(out)
}

/// Parses a Corefile.
pub fn parse_corefile(text: &str) -> Result<Corefile, CorefileError> {
    let toks = tokenize(text)?;
    let mut i = 0;
    let mut servers = Vec::new();
    while i < toks.len() {
        // skip blank lines
        if toks[i].0 == Tok::Newline {
            i += 1;
            continue;
        }
        let line = toks[i].1;
        // keys up to `{` (they may span lines when separated by commas)
        let mut keys_raw: Vec<String> = Vec::new();
        loop {
            match toks.get(i) {
                Some((Tok::Word(w), _)) => {
                    keys_raw.extend(
                        w.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string),
                    );
                    i += 1;
                }
                Some((Tok::Newline, l)) => {
                    if keys_raw.last().is_some_and(
                        |_| matches!(toks.get(i - 1), Some((Tok::Word(w), _)) if w.ends_with(',')),
                    ) {
                        i += 1;
                        continue;
                    }
                    return Err(CorefileError {
                        line: *l,
                        message: format!("server block {} has no `{{`", keys_raw.join(" ")),
                    });
                }
                Some((Tok::Open, _)) => {
                    i += 1;
                    break;
                }
                Some((Tok::Close, l)) => {
                    return Err(CorefileError {
                        line: *l,
                        message: "unexpected `}`".into(),
                    })
                }
                None => {
                    return Err(CorefileError {
                        line,
                        message: format!("server block {} has no `{{`", keys_raw.join(" ")),
                    })
                }
            }
        }
        if keys_raw.is_empty() {
            return Err(CorefileError {
                line,
                message: "server block without a zone".into(),
            });
        }
        let snippet =
            keys_raw.len() == 1 && keys_raw[0].starts_with('(') && keys_raw[0].ends_with(')');
        let keys = if snippet {
            vec![ServerKey {
                zone: keys_raw[0].clone(),
                port: None,
                scheme: None,
            }]
        } else {
            keys_raw
                .iter()
                .map(|k| parse_key(k, line))
                .collect::<Result<Vec<_>, _>>()?
        };
        let (directives, next) = parse_block(&toks, i, line)?;
        i = next;
        servers.push(ServerBlock {
            keys,
            line,
            directives,
            snippet,
        });
    }
    Ok(Corefile { servers })
}

fn parse_key(k: &str, line: usize) -> Result<ServerKey, CorefileError> {
    let (scheme, rest) = match k.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, k),
    };
    let (zone, port) = match rest.rsplit_once(':') {
        Some((z, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            let port = p.parse::<u16>().map_err(|_| CorefileError {
                line,
                message: format!("server key {k:?}: port {p} out of range"),
            })?;
            (if z.is_empty() { "." } else { z }, Some(port))
        }
        _ => (rest, None),
    };
    if zone.is_empty()
        || zone.contains(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ':')
    {
        return Err(CorefileError {
            line,
            message: format!("invalid server key {k:?}"),
        });
    }
    Ok(ServerKey {
        zone: fqdn(zone),
        port,
        scheme,
    })
}

/// Parses directives until the matching `}`; returns them and the index after the `}`.
fn parse_block(
    toks: &[(Tok, usize)],
    mut i: usize,
    open_line: usize,
) -> Result<(Vec<Directive>, usize), CorefileError> {
    let mut out = Vec::new();
    loop {
        match toks.get(i) {
            None => {
                return Err(CorefileError {
                    line: open_line,
                    message: "`{` is never closed".into(),
                })
            }
            Some((Tok::Newline, _)) => i += 1,
            Some((Tok::Close, _)) => return Ok((out, i + 1)),
            Some((Tok::Open, l)) => {
                return Err(CorefileError {
                    line: *l,
                    message: "`{` without a directive".into(),
                })
            }
            Some((Tok::Word(name), line)) => {
                let line = *line;
                let name = name.clone();
                i += 1;
                let mut args = Vec::new();
                let mut block = Vec::new();
                loop {
                    match toks.get(i) {
                        Some((Tok::Word(w), _)) => {
                            args.push(w.clone());
                            i += 1;
                        }
                        Some((Tok::Open, _)) => {
                            let (b, next) = parse_block(toks, i + 1, line)?;
                            block = b;
                            i = next;
                            break;
                        }
                        Some((Tok::Newline, _)) => {
                            i += 1;
                            break;
                        }
                        Some((Tok::Close, _)) | None => break,
                    }
                }
                out.push(Directive {
                    name,
                    args,
                    line,
                    block,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = r#".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
corp.example:53 dns://lab.example {
    forward . 10.0.0.2:5353 [::1]:53 tls://9.9.9.9 # comment
}
"#;

    #[test]
    fn parses_the_kubeadm_corefile_and_a_second_block() {
        let c = parse_corefile(KUBEADM).unwrap();
        assert_eq!(c.servers.len(), 2);
        let s = &c.servers[0];
        assert_eq!(s.keys[0].zone, ".");
        assert_eq!(s.keys[0].port, Some(53));
        assert!(s.plugin("loop").is_some());
        let k = s.plugin("kubernetes").unwrap();
        assert_eq!(k.args, ["cluster.local", "in-addr.arpa", "ip6.arpa"]);
        assert_eq!(k.block.len(), 3);
        let f = s.forwards().unwrap();
        assert_eq!(f[0].from, ".");
        assert_eq!(f[0].line, 13);
        assert_eq!(
            f[0].to,
            [ForwardTarget::File {
                path: "/etc/resolv.conf".into()
            }]
        );
        let s2 = &c.servers[1];
        assert_eq!(s2.first_zone(), "corp.example.");
        assert_eq!(s2.keys[1].scheme.as_deref(), Some("dns"));
        let f = s2.forwards().unwrap();
        assert_eq!(f[0].to.len(), 3);
        assert_eq!(
            f[0].to[1],
            ForwardTarget::Addr {
                ip: "::1".parse().unwrap(),
                port: 53,
                scheme: "dns".into()
            }
        );
        assert!(matches!(f[0].to[2], ForwardTarget::Addr { port: 853, .. }));
    }

    #[test]
    fn bad_corefiles_are_one_line_errors_with_the_line() {
        let cases = [
            (
                ".:53 {\n  forward .\n}\n",
                "line 2: forward . needs at least one target",
            ),
            (".:53 {\n  errors\n", "line 1: `{` is never closed"),
            ("}\n", "line 1: unexpected `}`"),
            (".:53\nerrors\n", "line 1: server block .:53 has no `{`"),
            (
                ".:99999 {\n}\n",
                "line 1: server key \".:99999\": port 99999 out of range",
            ),
            (
                ".:53 {\n  forward . not-an-ip\n}\n",
                "line 2: forward: invalid target \"not-an-ip\"",
            ),
            (
                ".:53 {\n  log \"unterminated\n}\n",
                "line 2: unterminated quoted string",
            ),
        ];
        for (text, want) in cases {
            let got = parse_corefile(text).and_then(|c| {
                c.servers
                    .iter()
                    .map(ServerBlock::forwards)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|_| c)
            });
            assert_eq!(got.unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn braces_glued_to_words_and_snippets() {
        let c =
            parse_corefile("(common) {\n errors\n}\nexample.org{\n import common\n whoami\n}\n")
                .unwrap();
        assert!(c.servers[0].snippet);
        assert_eq!(c.servers[1].keys[0].zone, "example.org.");
        assert_eq!(c.servers[1].directives[0].name, "import");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[ -~\\n{}\"#]{0,200}") {
            if let Ok(c) = parse_corefile(&text) {
                for s in &c.servers {
                    let _ = s.forwards();
                }
            }
        }
    }
}
