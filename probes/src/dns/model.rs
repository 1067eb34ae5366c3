//! DNS domain types shared by the wire codec, the client shell and the analysis rules.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (with TCP retry on TC=1 unless disabled).
    Udp,
    /// TCP only.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// One question to send to one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySpec {
    /// Where to send it.
    pub server: SocketAddr,
    /// Fully qualified name, with the trailing dot.
    pub name: String,
    /// Record type mnemonic: A, AAAA, SRV, PTR, TXT, HINFO, NS, SOA, CNAME, ANY...
    pub rtype: String,
    /// First transport to use.
    pub transport: Transport,
    /// Send an EDNS0 OPT record (payload 1232). Off = classic 512-byte UDP.
    pub edns: bool,
    /// Retry over TCP when a UDP answer has TC=1.
    pub tcp_fallback: bool,
    /// Per-attempt timeout.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

/// Header flags of an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion desired (echoed).
    pub rd: bool,
    /// Recursion available.
    pub ra: bool,
    /// Authentic data.
    pub ad: bool,
    /// Checking disabled.
    pub cd: bool,
}

impl Flags {
    /// dig-style flag list: `qr aa rd ra`.
    pub fn dig_style(&self) -> String {
        let mut v = vec!["qr"];
        for (on, name) in [
            (self.aa, "aa"),
            (self.tc, "tc"),
            (self.rd, "rd"),
            (self.ra, "ra"),
            (self.ad, "ad"),
            (self.cd, "cd"),
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(" ")
    }
}

/// One resource record, presentation form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rr {
    /// Owner name, fully qualified.
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Type mnemonic.
    pub rtype: String,
    /// RDATA in presentation format, as dig prints it (`10.96.0.1`, `0 50 53 kube-dns.kube-system.svc.cluster.local.`).
    pub data: String,
}

/// A decoded DNS response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Response code mnemonic: NOERROR, NXDOMAIN, SERVFAIL, REFUSED, NOTIMP, FORMERR...
    pub rcode: String,
    /// Header flags.
    pub flags: Flags,
    /// Answer section.
    pub answers: Vec<Rr>,
    /// Authority section.
    pub authority: Vec<Rr>,
    /// Additional section (OPT excluded).
    pub additional: Vec<Rr>,
    /// Size of the response message in bytes.
    pub size: usize,
    /// The transport this answer came over.
    pub transport: Transport,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum QueryFailure {
    /// Nothing came back before the timeout.
    Timeout,
    /// ICMP port unreachable (UDP, connected socket) or RST (TCP): nobody listens or a REJECT rule.
    Refused,
    /// ICMP host/net unreachable.
    Unreachable,
    /// A reply came back but could not be decoded, or did not match the question.
    Malformed(String),
    /// Any other socket error.
    Io(String),
}

impl std::fmt::Display for QueryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryFailure::Timeout => f.write_str("timed out"),
            QueryFailure::Refused => f.write_str("connection refused"),
            QueryFailure::Unreachable => f.write_str("unreachable"),
            QueryFailure::Malformed(m) => write!(f, "malformed reply: {m}"),
            QueryFailure::Io(m) => write!(f, "i/o error: {m}"),
        }
    }
}

/// What happened to one query: every attempt (UDP then a TCP retry) with its latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOutcome {
    /// The question.
    pub spec: QuerySpec,
    /// Attempts in order; the last one is the result.
    pub attempts: Vec<Attempt>,
}

/// One exchange on one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Transport used.
    pub transport: Transport,
    /// Wall time from send to answer or failure.
    #[serde(rename = "latency_us", with = "duration_us")]
    pub latency: Duration,
    /// The answer, or why there was none.
    pub result: Result<Answer, QueryFailure>,
}

impl QueryOutcome {
    /// The final result (last attempt).
    pub fn result(&self) -> Result<&Answer, &QueryFailure> {
        match self.attempts.last() {
            Some(a) => a.result.as_ref(),
            None => Err(&QueryFailure::Timeout),
        }
    }

    /// Total wall time over all attempts.
    pub fn total_latency(&self) -> Duration {
        self.attempts.iter().map(|a| a.latency).sum()
    }

    /// True when a UDP attempt came back truncated.
    pub fn was_truncated(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| matches!(&a.result, Ok(ans) if ans.flags.tc && a.transport == Transport::Udp))
    }

    /// The rcode of the final answer, if any.
    pub fn rcode(&self) -> Option<&str> {
        self.result().ok().map(|a| a.rcode.as_str())
    }

    /// `A IN name @server/udp` for evidence lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {} @{}/{}",
            self.spec.name, self.spec.rtype, self.spec.server, self.spec.transport
        )
    }

    /// `NOERROR 1 answer (10.96.0.1) in 0.2 ms` or `timed out after 2.0 s`.
    pub fn summary(&self) -> String {
        let t = fmt_duration(self.total_latency());
        match self.result() {
            Ok(a) => {
                let data: Vec<&str> = a.answers.iter().map(|r| r.data.as_str()).take(4).collect();
                let more = if a.answers.len() > 4 { ", ..." } else { "" };
                let tc = if self.was_truncated() {
                    " (UDP truncated, retried over TCP)"
                } else {
                    ""
                };
                format!(
                    "{} with {} answer{}{} in {t}{tc}",
                    a.rcode,
                    a.answers.len(),
                    if a.answers.len() == 1 { "" } else { "s" },
                    if data.is_empty() {
                        String::new()
                    } else {
                        format!(" ({}{more})", data.join(", "))
                    }
                )
            }
            Err(e) => format!("{e} after {t}"),
        }
    }
}

/// Formats a duration for people: `42 µs`, `3.1 ms`, `2.0 s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod duration_us {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}
