//! The DNS wire codec: queries out, responses in, with hickory-proto. Pure: no sockets.
//!
//! Responses are turned into the [`Answer`] model with names and RDATA in the presentation form
//! dig prints (`"1.1.0"` for TXT, `0 50 53 kube-dns.kube-system.svc.cluster.local.` for SRV).

use super::model::{Answer, Flags, QueryFailure, Rr, Transport};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The EDNS0 UDP payload size kdiag advertises (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

const ACCEPTED_TYPES: &str =
    "A, AAAA, SRV, PTR, TXT, HINFO, NS, SOA, CNAME, MX, ANY, CAA or TYPE<n>";

/// Why a record type or name given by a person cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not one of the accepted record type mnemonics.
    #[error("unknown record type {0:?} (expected {ACCEPTED_TYPES})")]
    UnknownType(String),
    /// Not a valid domain name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The text.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses a record type: A, AAAA, SRV, PTR, TXT, HINFO, NS, SOA, CNAME, MX, ANY, CAA or
/// `TYPE<n>` (RFC 3597), case-insensitively.
pub fn parse_rtype(s: &str) -> Result<RecordType, WireError> {
    let up = s.to_ascii_uppercase();
    let t = match up.as_str() {
        "A" => RecordType::A,
        "AAAA" => RecordType::AAAA,
        "SRV" => RecordType::SRV,
        "PTR" => RecordType::PTR,
        "TXT" => RecordType::TXT,
        "HINFO" => RecordType::HINFO,
        "NS" => RecordType::NS,
        "SOA" => RecordType::SOA,
        "CNAME" => RecordType::CNAME,
        "MX" => RecordType::MX,
        "ANY" => RecordType::ANY,
        "CAA" => RecordType::CAA,
        other => match other
            .strip_prefix("TYPE")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u16>().ok())
        {
            Some(n) => RecordType::from(n),
            None => return Err(WireError::UnknownType(s.to_string())),
        },
    };
    Ok(t)
}

/// The mnemonic dig prints for a record type: `A`, `SRV`, or `TYPE65280` for unknown ones.
pub fn rtype_mnemonic(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        other => other.to_string(),
    }
}

/// The rcode mnemonic dig prints: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED,
/// YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, DSOTYPENI, BADVERS, BADKEY, BADTIME, BADMODE,
/// BADNAME, BADALG, BADTRUNC, BADCOOKIE, else `RCODE<n>`.
pub fn rcode_mnemonic(code: u16) -> String {
    let s = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        n => return format!("RCODE{n}"),
    };
    s.to_string()
}

/// Parses a domain name as a person types it and makes it fully qualified.
pub fn parse_name(s: &str) -> Result<Name, WireError> {
    let invalid = |reason: &str| WireError::InvalidName {
        name: s.to_string(),
        reason: one_line(reason),
    };
    if s.is_empty() {
        return Err(invalid("empty name"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    if s != "." && (s.starts_with('.') || s.contains("..")) {
        return Err(invalid("empty label"));
    }
    let parsed = if s.is_ascii() {
        Name::from_ascii(s)
    } else {
        Name::from_utf8(s)
    };
    let mut name = parsed.map_err(|e| invalid(&e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The reverse-lookup name of an address: `4.3.2.1.in-addr.arpa.` or the nibble form under
/// `ip6.arpa.`, for PTR queries (`dig -x`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for b in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0x0f, b >> 4);
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// Encodes a recursive (RD=1) query for `name`/`rtype`, class IN, with an EDNS0 OPT record
/// advertising [`EDNS_PAYLOAD`] bytes when `edns` is set. Infallible: a [`Name`] is always
/// encodable (written uncompressed, as stub resolvers do).
pub fn encode_query(id: u16, name: &Name, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + name.len() + 2 + 4 + if edns { 11 } else { 0 });
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // QR=0 opcode=QUERY RD=1
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.iter() {
        // Labels of a Name are 1..=63 bytes by construction.
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&[0, 1]); // IN
    if edns {
        out.push(0); // root owner
        out.extend_from_slice(&[0, 41]); // OPT
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // ext-rcode, version, flags, rdlen
    }
    out
}

/// Decodes a response to the query `id`/`name`/`rtype` into the [`Answer`] model.
///
/// Fails with [`QueryFailure::Malformed`] when the bytes do not decode, the message is not a
/// response (QR=0), the ID differs, or the question is not the one asked (names compared
/// case-insensitively). A FORMERR or NOTIMP reply without a question section is accepted:
/// a server that cannot parse the question cannot echo it.
pub fn decode_response(
    bytes: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    transport: Transport,
) -> Result<Answer, QueryFailure> {
    let msg = Message::from_vec(bytes)
        .map_err(|e| QueryFailure::Malformed(one_line(&format!("cannot decode: {e}"))))?;
    let md = &msg.metadata;
    if md.message_type != MessageType::Response {
        return Err(QueryFailure::Malformed("not a response (qr=0)".into()));
    }
    if md.id != id {
        return Err(QueryFailure::Malformed(format!(
            "id {} does not match the query id {id}",
            md.id
        )));
    }
    let rcode = u16::from(md.response_code);
    let mut want = name.clone();
    want.set_fqdn(true);
    match msg.queries.as_slice() {
        [q] if q.name == want && q.query_type == rtype => {}
        [] if rcode == 1 || rcode == 4 => {}
        [] => return Err(QueryFailure::Malformed("no question section".into())),
        [q] => {
            return Err(QueryFailure::Malformed(format!(
                "question {} {} does not match {} {}",
                q.name.to_ascii(),
                rtype_mnemonic(q.query_type),
                want.to_ascii(),
                rtype_mnemonic(rtype)
            )))
        }
        qs => {
            return Err(QueryFailure::Malformed(format!(
                "{} questions in the reply (expected 1)",
                qs.len()
            )))
        }
    }
    Ok(Answer {
        rcode: rcode_mnemonic(rcode),
        flags: Flags {
            aa: md.authoritative,
            tc: md.truncation,
            rd: md.recursion_desired,
            ra: md.recursion_available,
            ad: md.authentic_data,
            cd: md.checking_disabled,
        },
        answers: msg.answers.iter().map(to_rr).collect(),
        authority: msg.authorities.iter().map(to_rr).collect(),
        additional: msg
            .additionals
            .iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .map(to_rr)
            .collect(),
        size: bytes.len(),
        transport,
    })
}

/// A record in the [`Rr`] model: owner fully qualified, RDATA as dig prints it.
pub fn to_rr(rec: &Record) -> Rr {
    Rr {
        name: rec.name.to_ascii(),
        ttl: rec.ttl,
        rtype: rtype_mnemonic(rec.record_type()),
        data: present_rdata(&rec.data),
    }
}

/// RDATA in dig's presentation form.
pub fn present_rdata(data: &RData) -> String {
    match data {
        RData::A(a) => a.to_string(),
        RData::AAAA(a) => a.to_string(),
        RData::CNAME(n) => n.0.to_ascii(),
        RData::NS(n) => n.0.to_ascii(),
        RData::PTR(n) => n.0.to_ascii(),
        RData::ANAME(n) => n.0.to_ascii(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange.to_ascii()),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority,
            srv.weight,
            srv.port,
            srv.target.to_ascii()
        ),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            soa.mname.to_ascii(),
            soa.rname.to_ascii(),
            soa.serial,
            soa.refresh as u32,
            soa.retry as u32,
            soa.expire as u32,
            soa.minimum
        ),
        RData::TXT(txt) => {
            let parts: Vec<String> = txt.txt_data.iter().map(|s| quote(s)).collect();
            parts.join(" ")
        }
        RData::HINFO(h) => format!("{} {}", quote(&h.cpu), quote(&h.os)),
        RData::CAA(caa) => format!("{} {} {}", caa.flags(), caa.tag, quote(&caa.value)),
        RData::Unknown { rdata, .. } => generic(&rdata.anything),
        RData::NULL(null) => generic(&null.anything),
        other => {
            let mut s = String::new();
            if write!(s, "{other}").is_ok() && !s.is_empty() {
                s
            } else {
                generic(&other.to_bytes().unwrap_or_default())
            }
        }
    }
}

/// RFC 3597 generic form: `\# 4 0A000001`.
fn generic(bytes: &[u8]) -> String {
    let mut s = format!("\\# {}", bytes.len());
    if !bytes.is_empty() {
        s.push(' ');
        for b in bytes {
            let _ = write!(s, "{b:02X}");
        }
    }
    s
}

/// A character-string as dig prints it: quoted, `"` and `\` escaped, non-printable bytes `\DDD`.
fn quote(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(char::from(b));
            }
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\{b:03}");
            }
        }
    }
    s.push('"');
    s
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Query, ResponseCode};
    use hickory_proto::rr::rdata::NULL;
    use hickory_proto::rr::rdata::{caa::CAA, A, AAAA, CNAME, HINFO, MX, NS, PTR, SOA, SRV, TXT};
    use proptest::prelude::*;
    use std::str::FromStr;

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn response(
        id: u16,
        q: &str,
        t: RecordType,
        rcode: ResponseCode,
        answers: Vec<Record>,
    ) -> Message {
        let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.authoritative = true;
        m.metadata.response_code = rcode;
        m.add_query(Query::query(n(q), t));
        m.add_answers(answers);
        m
    }

    fn decode_one(data: RData, t: RecordType) -> Rr {
        let rec = Record::from_rdata(n("x.example."), 30, data);
        let bytes = response(7, "x.example.", t, ResponseCode::NoError, vec![rec])
            .to_vec()
            .unwrap();
        let a = decode_response(&bytes, 7, &n("x.example."), t, Transport::Udp).unwrap();
        assert_eq!(a.answers.len(), 1);
        a.answers[0].clone()
    }

    #[test]
    fn rtypes() {
        for (s, t) in [
            ("A", RecordType::A),
            ("aaaa", RecordType::AAAA),
            ("Srv", RecordType::SRV),
            ("ptr", RecordType::PTR),
            ("TXT", RecordType::TXT),
            ("hinfo", RecordType::HINFO),
            ("NS", RecordType::NS),
            ("soa", RecordType::SOA),
            ("CNAME", RecordType::CNAME),
            ("mx", RecordType::MX),
            ("any", RecordType::ANY),
            ("CAA", RecordType::CAA),
            ("TYPE1", RecordType::A),
            ("type65280", RecordType::Unknown(65280)),
        ] {
            assert_eq!(parse_rtype(s).unwrap(), t, "{s}");
        }
        for bad in ["", "AX", "TYPE", "TYPE65536", "TYPE-1", "TYPE1x", "DNSKEY"] {
            let e = parse_rtype(bad).unwrap_err().to_string();
            assert!(e.contains("expected A, AAAA, SRV"), "{e}");
        }
        assert_eq!(rtype_mnemonic(RecordType::Unknown(65280)), "TYPE65280");
        assert_eq!(rtype_mnemonic(RecordType::SRV), "SRV");
    }

    #[test]
    fn rcodes() {
        let names: Vec<String> = (0..12).map(rcode_mnemonic).collect();
        assert_eq!(
            names,
            [
                "NOERROR",
                "FORMERR",
                "SERVFAIL",
                "NXDOMAIN",
                "NOTIMP",
                "REFUSED",
                "YXDOMAIN",
                "YXRRSET",
                "NXRRSET",
                "NOTAUTH",
                "NOTZONE",
                "DSOTYPENI"
            ]
        );
        assert_eq!(rcode_mnemonic(12), "RCODE12");
        assert_eq!(rcode_mnemonic(16), "BADVERS");
        assert_eq!(rcode_mnemonic(23), "BADCOOKIE");
        assert_eq!(rcode_mnemonic(4095), "RCODE4095");
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_name("kubernetes.default").unwrap().to_ascii(),
            "kubernetes.default."
        );
        assert_eq!(parse_name("Web.Svc.").unwrap().to_ascii(), "Web.Svc.");
        assert_eq!(
            parse_name("_dns._udp.kube-dns.kube-system.svc.cluster.local")
                .unwrap()
                .num_labels(),
            7
        );
        assert_eq!(parse_name(".").unwrap().to_ascii(), ".");
        assert!(parse_name("bücher.example")
            .unwrap()
            .to_ascii()
            .starts_with("xn--"));
        for bad in ["", "a..b", ".a", "a b", "a\nb"] {
            let e = parse_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid name"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert!(parse_name(&"x".repeat(64)).is_err());
        assert!(parse_name(&vec!["a".repeat(63); 5].join(".")).is_err());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.96.0.10".parse().unwrap()),
            "10.0.96.10.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        assert!(parse_name(&reverse_name("::1".parse().unwrap())).is_ok());
    }

    #[test]
    fn encode_matches_hickory() {
        for edns in [false, true] {
            for t in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::SRV,
                RecordType::Unknown(65280),
            ] {
                let name = n("Kubernetes.default.svc.cluster.local.");
                let ours = encode_query(0xbeef, &name, t, edns);
                let mut m = Message::query();
                m.metadata.id = 0xbeef;
                m.metadata.recursion_desired = true;
                m.add_query(Query::query(name.clone(), t));
                if edns {
                    let mut e = Edns::new();
                    e.set_max_payload(EDNS_PAYLOAD);
                    m.edns = Some(e);
                }
                assert_eq!(ours, m.to_vec().unwrap(), "edns={edns} {t}");
                let back = Message::from_vec(&ours).unwrap();
                assert_eq!(back.metadata.id, 0xbeef);
                assert!(back.metadata.recursion_desired);
                assert_eq!(back.queries[0].name, name);
                assert_eq!(back.edns.is_some(), edns);
                if edns {
                    assert_eq!(back.max_payload(), 1232);
                }
            }
        }
        assert_eq!(encode_query(1, &n("."), RecordType::NS, false).len(), 17);
    }

    #[test]
    fn decode_noerror_answer() {
        let recs = vec![
            Record::from_rdata(
                n("web.default.svc.cluster.local."),
                5,
                RData::A(A::new(10, 96, 0, 1)),
            ),
            Record::from_rdata(
                n("web.default.svc.cluster.local."),
                5,
                RData::A(A::new(10, 96, 0, 2)),
            ),
        ];
        let mut m = response(
            42,
            "WEB.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NoError,
            recs,
        );
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
        m.add_additional(Record::from_rdata(
            n("ns.example."),
            1,
            RData::A(A::new(1, 2, 3, 4)),
        ));
        let bytes = m.to_vec().unwrap();
        let a = decode_response(
            &bytes,
            42,
            &n("web.default.svc.cluster.local."),
            RecordType::A,
            Transport::Tcp,
        )
        .unwrap();
        assert_eq!(a.rcode, "NOERROR");
        assert_eq!(a.flags.dig_style(), "qr aa rd ra");
        assert_eq!(a.answers.len(), 2);
        assert_eq!(a.answers[0].name, "web.default.svc.cluster.local.");
        assert_eq!(a.answers[0].ttl, 5);
        assert_eq!(a.answers[0].rtype, "A");
        assert_eq!(a.answers[1].data, "10.96.0.2");
        assert_eq!(a.additional.len(), 1, "OPT excluded");
        assert_eq!(a.size, bytes.len());
        assert_eq!(a.transport, Transport::Tcp);
    }

    #[test]
    fn decode_nxdomain_with_soa() {
        let mut m = response(
            1,
            "nope.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
            vec![],
        );
        m.add_authority(Record::from_rdata(
            n("cluster.local."),
            30,
            RData::SOA(SOA::new(
                n("ns.dns.cluster.local."),
                n("hostmaster.cluster.local."),
                1700000000,
                7200,
                1800,
                86400,
                30,
            )),
        ));
        let a = decode_response(
            &m.to_vec().unwrap(),
            1,
            &n("nope.cluster.local."),
            RecordType::A,
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(a.rcode, "NXDOMAIN");
        assert!(a.answers.is_empty());
        assert_eq!(a.authority[0].rtype, "SOA");
        assert_eq!(
            a.authority[0].data,
            "ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 7200 1800 86400 30"
        );
    }

    #[test]
    fn decode_extended_rcode_and_truncation() {
        let mut m = response(1, "x.", RecordType::A, ResponseCode::BADVERS, vec![]);
        m.edns = Some(Edns::new());
        m.metadata.truncation = true;
        let a = decode_response(
            &m.to_vec().unwrap(),
            1,
            &n("x."),
            RecordType::A,
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(a.rcode, "BADVERS");
        assert!(a.flags.tc);
    }

    #[test]
    fn decode_rejects_mismatches() {
        let m = response(
            9,
            "a.example.",
            RecordType::A,
            ResponseCode::NoError,
            vec![],
        );
        let bytes = m.to_vec().unwrap();
        let mal = |r: Result<Answer, QueryFailure>| match r {
            Err(QueryFailure::Malformed(m)) => m,
            other => panic!("expected malformed, got {other:?}"),
        };
        assert!(mal(decode_response(
            &bytes,
            10,
            &n("a.example."),
            RecordType::A,
            Transport::Udp
        ))
        .contains("id 9"));
        assert!(mal(decode_response(
            &bytes,
            9,
            &n("b.example."),
            RecordType::A,
            Transport::Udp
        ))
        .contains("does not match"));
        assert!(mal(decode_response(
            &bytes,
            9,
            &n("a.example."),
            RecordType::AAAA,
            Transport::Udp
        ))
        .contains("does not match"));
        assert!(
            decode_response(&bytes, 9, &n("A.EXAMPLE."), RecordType::A, Transport::Udp).is_ok()
        );
        let mut relative = n("a.example");
        relative.set_fqdn(false);
        assert!(decode_response(&bytes, 9, &relative, RecordType::A, Transport::Udp).is_ok());

        let q = encode_query(9, &n("a.example."), RecordType::A, false);
        assert!(mal(decode_response(
            &q,
            9,
            &n("a.example."),
            RecordType::A,
            Transport::Udp
        ))
        .contains("qr=0"));
        assert!(mal(decode_response(
            &[1, 2, 3],
            9,
            &n("a.example."),
            RecordType::A,
            Transport::Udp
        ))
        .starts_with("cannot decode"));
        assert!(mal(decode_response(
            &[],
            9,
            &n("a.example."),
            RecordType::A,
            Transport::Udp
        ))
        .starts_with("cannot decode"));

        let mut two = m.clone();
        two.add_query(Query::query(n("b.example."), RecordType::A));
        assert!(mal(decode_response(
            &two.to_vec().unwrap(),
            9,
            &n("a.example."),
            RecordType::A,
            Transport::Udp
        ))
        .contains("2 questions"));
    }

    #[test]
    fn decode_questionless_formerr_accepted_noerror_not() {
        let mut m = Message::response(3, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = ResponseCode::FormErr;
        let a = decode_response(
            &m.to_vec().unwrap(),
            3,
            &n("a."),
            RecordType::A,
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(a.rcode, "FORMERR");
        m.metadata.response_code = ResponseCode::NoError;
        assert!(decode_response(
            &m.to_vec().unwrap(),
            3,
            &n("a."),
            RecordType::A,
            Transport::Udp
        )
        .is_err());
    }

    #[test]
    fn presentation_like_dig() {
        let a = decode_one(RData::A(A::new(10, 96, 0, 10)), RecordType::A);
        assert_eq!(
            (a.rtype.as_str(), a.data.as_str(), a.name.as_str()),
            ("A", "10.96.0.10", "x.example.")
        );
        assert_eq!(
            decode_one(
                RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10)),
                RecordType::AAAA
            )
            .data,
            "fd00::10"
        );
        assert_eq!(
            decode_one(
                RData::SRV(SRV::new(
                    0,
                    50,
                    53,
                    n("kube-dns.kube-system.svc.cluster.local.")
                )),
                RecordType::SRV
            )
            .data,
            "0 50 53 kube-dns.kube-system.svc.cluster.local."
        );
        assert_eq!(
            decode_one(RData::TXT(TXT::new(vec!["1.1.0".into()])), RecordType::TXT).data,
            "\"1.1.0\""
        );
        assert_eq!(
            decode_one(
                RData::TXT(TXT::new(vec![
                    "v=spf1 -all".into(),
                    "say \"hi\" \\ ok".into()
                ])),
                RecordType::TXT
            )
            .data,
            r#""v=spf1 -all" "say \"hi\" \\ ok""#
        );
        assert_eq!(
            decode_one(
                RData::TXT(TXT::from_bytes(vec![b"a\x00\xff"])),
                RecordType::TXT
            )
            .data,
            r#""a\000\255""#
        );
        assert_eq!(
            decode_one(
                RData::PTR(PTR(n("web.default.svc.cluster.local."))),
                RecordType::PTR
            )
            .data,
            "web.default.svc.cluster.local."
        );
        assert_eq!(
            decode_one(RData::CNAME(CNAME(n("a.example."))), RecordType::CNAME).data,
            "a.example."
        );
        assert_eq!(
            decode_one(RData::NS(NS(n("ns1.example."))), RecordType::NS).data,
            "ns1.example."
        );
        assert_eq!(
            decode_one(
                RData::HINFO(HINFO::new("x86_64".into(), "Linux 6".into())),
                RecordType::HINFO
            )
            .data,
            "\"x86_64\" \"Linux 6\""
        );
        assert_eq!(
            decode_one(RData::MX(MX::new(10, n("mail.example."))), RecordType::MX).data,
            "10 mail.example."
        );
        assert_eq!(
            decode_one(
                RData::SOA(SOA::new(n("a.example."), n("b.example."), 1, -1, 2, 3, 4)),
                RecordType::SOA
            )
            .data,
            "a.example. b.example. 1 4294967295 2 3 4"
        );
        assert_eq!(
            decode_one(
                RData::CAA(CAA::new_issue(false, Some(n("letsencrypt.org")), vec![])),
                RecordType::CAA
            )
            .data,
            "0 issue \"letsencrypt.org\""
        );
        let unknown = decode_one(
            RData::Unknown {
                code: RecordType::Unknown(65280),
                rdata: NULL::with(vec![10, 0, 0, 1]),
            },
            RecordType::Unknown(65280),
        );
        assert_eq!(
            (unknown.rtype.as_str(), unknown.data.as_str()),
            ("TYPE65280", "\\# 4 0A000001")
        );
    }

    #[test]
    fn generic_and_quote() {
        assert_eq!(generic(&[]), "\\# 0");
        assert_eq!(quote(b""), "\"\"");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_response(&bytes, 0, &Name::root(), RecordType::A, Transport::Udp);
        }

        #[test]
        fn decode_never_panics_on_mutated_replies(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8),
            cut in 0usize..200,
        ) {
            let recs = vec![
                Record::from_rdata(n("x.example."), 1, RData::TXT(TXT::new(vec!["hello".into()]))),
                Record::from_rdata(n("x.example."), 1, RData::SRV(SRV::new(1, 2, 3, n("t.example.")))),
            ];
            let mut bytes = response(5, "x.example.", RecordType::TXT, ResponseCode::NoError, recs).to_vec().unwrap();
            for (i, b) in flips {
                if let Some(slot) = bytes.get_mut(i) { *slot = b; }
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = decode_response(&bytes, 5, &n("x.example."), RecordType::TXT, Transport::Udp);
        }

        #[test]
        fn encode_decodes_back(labels in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_-]{0,19}", 1..6), id in any::<u16>(), edns in any::<bool>()) {
            let name = parse_name(&labels.join(".")).unwrap();
            let bytes = encode_query(id, &name, RecordType::SRV, edns);
            let m = Message::from_vec(&bytes).unwrap();
            prop_assert_eq!(m.metadata.id, id);
            prop_assert_eq!(&m.queries[0].name, &name);
        }
    }
}
