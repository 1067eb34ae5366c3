//! Reachability domain types: what to reach (targets), how one attempt ended, and the HTTP
//! reply parser. Pure.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A Service port as the user names it in `ns/svc:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    /// By number (the Service port, not the targetPort).
    Number(u16),
    /// By the Service port's name.
    Name(String),
}

/// What `kdiag reach` is asked to reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// `IP:PORT[/tcp|udp]`.
    Socket {
        /// Address.
        addr: SocketAddr,
        /// Protocol.
        proto: Proto,
    },
    /// `http://IP:PORT/path`.
    Http {
        /// Address.
        addr: SocketAddr,
        /// Path with query, `/` at least.
        path: String,
    },
    /// `ns/svc[:port]`, resolved through the cluster state.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Which Service port; the first when absent.
        port: Option<PortRef>,
    },
}

/// A target string that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target {given:?}: {why} (expected IP:PORT[/tcp|udp], http://IP:PORT/path or NAMESPACE/SERVICE[:PORT])")]
pub struct TargetError {
    /// The string given.
    pub given: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses a `kdiag reach` target. Host names are not accepted: kdiag never uses the system
/// resolver, and a Service is named `ns/svc`.
pub fn parse_target(s: &str) -> Result<Target, TargetError> {
    let err = |why: &str| TargetError {
        given: s.to_string(),
        why: why.to_string(),
    };
    if let Some(rest) = s.strip_prefix("http://") {
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = match hostport.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => match hostport.parse::<std::net::IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 80),
                Err(_) => {
                    return Err(err(
                        "the host must be an IP address (with an optional :PORT)",
                    ))
                }
            },
        };
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err("the path has spaces or control characters"));
        }
        return Ok(Target::Http {
            addr,
            path: path.to_string(),
        });
    }
    if s.contains("://") {
        return Err(err("only http:// URLs are supported"));
    }
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, Some(Proto::Tcp)),
        Some((b, "udp")) => (b, Some(Proto::Udp)),
        _ => (s, None),
    };
    if let Ok(addr) = body.parse::<SocketAddr>() {
        return Ok(Target::Socket {
            addr,
            proto: proto.unwrap_or(Proto::Tcp),
        });
    }
    if proto.is_none() {
        if let Some((ns, rest)) = s.split_once('/') {
            let (name, port) = match rest.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (rest, None),
            };
            let dns_label = |x: &str| {
                !x.is_empty()
                    && x.len() <= 63
                    && x.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !x.starts_with('-')
                    && !x.ends_with('-')
            };
            if !dns_label(ns) || !dns_label(name) {
                return Err(err("namespace and Service name must be DNS labels"));
            }
            let port = match port {
                None => None,
                Some(p) => match p.parse::<u16>() {
                    Ok(0) => return Err(err("port 0")),
                    Ok(n) => Some(PortRef::Number(n)),
                    Err(_) if dns_label(p) => Some(PortRef::Name(p.to_string())),
                    Err(_) => return Err(err("the port is neither a number nor a port name")),
                },
            };
            return Ok(Target::Service {
                namespace: ns.to_string(),
                name: name.to_string(),
                port,
            });
        }
    }
    Err(err("not an IP:PORT"))
}

/// How one attempt to reach something ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// The TCP handshake completed and the peer closed without sending anything.
    Connected,
    /// Something answered: a TCP banner, a UDP datagram, or an HTTP response.
    Answered {
        /// HTTP status, for HTTP attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The reply (HTTP body), lossily decoded and cut at 512 bytes.
        reply: String,
    },
    /// RST to the SYN, or ICMP port unreachable for UDP: nobody listens, or a REJECT rule.
    Refused,
    /// Nothing came back in time (a DROP rule, a black hole).
    Timeout,
    /// ICMP host or network unreachable.
    Unreachable,
    /// The connection was accepted, then reset (a relay whose backend is dead).
    Reset,
    /// Any other socket error.
    Error {
        /// The error.
        message: String,
    },
}

impl Outcome {
    /// True when the target was reached (connected or answered).
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Connected | Outcome::Answered { .. })
    }

    /// True when it failed before a connection existed (refused, timeout, unreachable):
    /// nothing accepts traffic at that address, as opposed to a relay that accepted it.
    pub fn failed_at_connect(&self) -> bool {
        matches!(
            self,
            Outcome::Refused | Outcome::Timeout | Outcome::Unreachable
        )
    }

    /// Short class name used in tables and distributions.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Answered { .. } => "answered",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Reset => "reset",
            Outcome::Error { .. } => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Connected => f.write_str("connected"),
            Outcome::Answered {
                status: Some(s),
                reply,
            } => write!(f, "HTTP {s}: {}", one_line(reply, 80)),
            Outcome::Answered {
                status: None,
                reply,
            } => {
                write!(f, "answered: {}", one_line(reply, 80))
            }
            Outcome::Refused => f.write_str("connection refused"),
            Outcome::Timeout => f.write_str("timed out"),
            Outcome::Unreachable => f.write_str("unreachable"),
            Outcome::Reset => f.write_str("reset after connect"),
            Outcome::Error { message } => write!(f, "error: {message}"),
        }
    }
}

/// The first line of `s`, cut to `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Where it went.
    pub addr: SocketAddr,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time, connect to close.
    #[serde(rename = "latency_us", with = "micros")]
    pub latency: Duration,
    /// The backend that answered, when the reply names one (a pod name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

/// Most bytes of a reply kept.
pub const REPLY_LIMIT: usize = 512;

/// Parses an HTTP/1.x response: `(status, body)`. `None` when the bytes are not one.
pub fn parse_http_response(bytes: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => match text.find("\n\n") {
            Some(i) => (&text[..i], &text[i + 2..]),
            None => (&text[..], ""),
        },
    };
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    Some((status, truncate(body)))
}

/// Lossily decodes and cuts a reply to [`REPLY_LIMIT`] bytes (on a char boundary).
pub fn truncate(s: &str) -> String {
    if s.len() <= REPLY_LIMIT {
        return s.to_string();
    }
    let mut end = REPLY_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The backend a reply names: a known pod name appearing in it, else (serve_hostname style)
/// a reply that is a single hostname-like word.
pub fn backend_of(reply: &str, known: &[String]) -> Option<String> {
    if let Some(k) = known
        .iter()
        .filter(|k| !k.is_empty() && reply.contains(k.as_str()))
        .max_by_key(|k| k.len())
    {
        return Some(k.clone());
    }
    let t = reply.trim();
    let word = !t.is_empty()
        && t.len() <= 253
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    word.then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("127.1.1.22:80").unwrap(),
            Target::Socket {
                addr: "127.1.1.22:80".parse().unwrap(),
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            parse_target("127.1.1.10:53/udp").unwrap(),
            Target::Socket {
                addr: "127.1.1.10:53".parse().unwrap(),
                proto: Proto::Udp
            }
        );
        assert_eq!(
            parse_target("[::1]:80/tcp").unwrap(),
            Target::Socket {
                addr: "[::1]:80".parse().unwrap(),
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            parse_target("http://127.1.1.20:80/healthz?x=1").unwrap(),
            Target::Http {
                addr: "127.1.1.20:80".parse().unwrap(),
                path: "/healthz?x=1".into()
            }
        );
        assert_eq!(
            parse_target("http://127.1.1.20").unwrap(),
            Target::Http {
                addr: "127.1.1.20:80".parse().unwrap(),
                path: "/".into()
            }
        );
        assert_eq!(
            parse_target("default/hostnames").unwrap(),
            Target::Service {
                namespace: "default".into(),
                name: "hostnames".into(),
                port: None
            }
        );
        assert_eq!(
            parse_target("default/web-service:http").unwrap(),
            Target::Service {
                namespace: "default".into(),
                name: "web-service".into(),
                port: Some(PortRef::Name("http".into()))
            }
        );
        assert_eq!(
            parse_target("default/web-service:80").unwrap(),
            Target::Service {
                namespace: "default".into(),
                name: "web-service".into(),
                port: Some(PortRef::Number(80))
            }
        );
    }

    #[test]
    fn bad_targets_are_one_line_errors() {
        for bad in [
            "",
            "example.com:80",
            "https://127.0.0.1/",
            "http://example.com/",
            "127.0.0.1",
            "127.0.0.1:80/sctp",
            "Default/x",
            "a/b:0",
            "a/b:c d",
            "http://127.0.0.1:80/a b",
        ] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.starts_with("invalid target"), "{e}");
        }
    }

    #[test]
    fn http_replies_parse() {
        assert_eq!(
            parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npod\n"),
            Some((200, "pod\n".into()))
        );
        assert_eq!(
            parse_http_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            Some((503, String::new()))
        );
        assert_eq!(parse_http_response(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_http_response(b"HTTP/1.1 999 x\r\n\r\n"), None);
        assert_eq!(parse_http_response(b""), None);
    }

    #[test]
    fn backends_are_named_by_the_reply() {
        let known = vec!["webapp-a".to_string(), "webapp-ab".to_string()];
        assert_eq!(
            backend_of("Hello from webapp-ab (db ok)", &known).as_deref(),
            Some("webapp-ab")
        );
        assert_eq!(
            backend_of("hostnames-6d8c4b5f7-q2w3e\n", &[]).as_deref(),
            Some("hostnames-6d8c4b5f7-q2w3e")
        );
        assert_eq!(backend_of("<html>hi there</html>", &[]), None);
        assert_eq!(backend_of("", &[]), None);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,200}", b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_target(&s);
            let _ = parse_http_response(&b);
            let _ = backend_of(&s, &[]);
            let _ = truncate(&s.repeat(5));
        }
    }
}
