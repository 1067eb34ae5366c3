//! The I/O shell: raw DNS queries over blocking std sockets, and glibc's search walk over them.
//!
//! UDP uses a *connected* socket so an ICMP port unreachable (nobody listening, or kube-proxy's
//! REJECT for a Service without endpoints) surfaces as [`QueryFailure::Refused`] within
//! microseconds instead of a timeout. All decisions (encoding, matching, the walk) live in the
//! pure modules [`super::wire`] and [`super::resolv`]; this file only moves bytes.

use super::model::{Answer, Attempt, QueryFailure, QueryOutcome, QuerySpec, Transport};
use super::resolv::{expand_walk, next_step, CandidateResult, NameError, ResolvConf, Step};
use super::wire::{decode_response, encode_query, parse_name, parse_rtype, rtype_mnemonic};
use hickory_proto::rr::{Name, RecordType};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Sends one query as `spec` says and records every attempt: UDP, then TCP when the UDP answer
/// is truncated and `spec.tcp_fallback` is set; TCP only for [`Transport::Tcp`].
///
/// Never fails: an invalid name or record type in `spec` is recorded as a single
/// [`QueryFailure::Io`] attempt ("invalid query: ...") with zero latency.
pub fn query(spec: &QuerySpec) -> QueryOutcome {
    let mut outcome = QueryOutcome {
        spec: spec.clone(),
        attempts: Vec::new(),
    };
    let parsed = parse_rtype(&spec.rtype).and_then(|t| parse_name(&spec.name).map(|n| (n, t)));
    let (name, rtype) = match parsed {
        Ok(v) => v,
        Err(e) => {
            outcome.attempts.push(Attempt {
                transport: spec.transport,
                latency: Duration::ZERO,
                result: Err(QueryFailure::Io(format!("invalid query: {e}"))),
            });
            return outcome;
        }
    };
    let timeout = spec.timeout.max(Duration::from_millis(1));
    if spec.transport == Transport::Udp {
        let attempt = udp_attempt(spec.server, &name, rtype, spec.edns, timeout);
        let truncated = matches!(&attempt.result, Ok(a) if a.flags.tc);
        outcome.attempts.push(attempt);
        if !(truncated && spec.tcp_fallback) {
            return outcome;
        }
    }
    outcome
        .attempts
        .push(tcp_attempt(spec.server, &name, rtype, spec.edns, timeout));
    outcome
}

fn udp_attempt(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    edns: bool,
    timeout: Duration,
) -> Attempt {
    let id: u16 = rand::random();
    let msg = encode_query(id, name, rtype, edns);
    let mut start = Instant::now();
    let result = (|| -> Result<Answer, QueryFailure> {
        let bind: SocketAddr = match server.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind).map_err(failure)?;
        sock.connect(server).map_err(failure)?;
        start = Instant::now();
        let deadline = start + timeout;
        sock.send(&msg).map_err(failure)?;
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QueryFailure::Timeout);
            }
            sock.set_read_timeout(Some(left)).map_err(failure)?;
            let n = sock.recv(&mut buf).map_err(failure)?;
            match decode_response(&buf[..n], id, name, rtype, Transport::Udp) {
                Ok(answer) => return Ok(answer),
                // A stub ignores replies that are not for its question (spoof defence).
                Err(_) => continue,
            }
        }
    })();
    Attempt {
        transport: Transport::Udp,
        latency: start.elapsed(),
        result,
    }
}

fn tcp_attempt(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    edns: bool,
    timeout: Duration,
) -> Attempt {
    let id: u16 = rand::random();
    let msg = encode_query(id, name, rtype, edns);
    let start = Instant::now();
    let deadline = start + timeout;
    let result = (|| -> Result<Answer, QueryFailure> {
        let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(failure)?;
        let _ = stream.set_nodelay(true);
        let len = u16::try_from(msg.len())
            .map_err(|_| QueryFailure::Io("query longer than 65535 bytes".into()))?;
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&msg);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QueryFailure::Timeout);
        }
        stream.set_write_timeout(Some(left)).map_err(failure)?;
        stream.write_all(&framed).map_err(failure)?;
        loop {
            let mut len = [0u8; 2];
            read_full(&mut stream, &mut len, deadline)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            read_full(&mut stream, &mut buf, deadline)?;
            match decode_response(&buf, id, name, rtype, Transport::Tcp) {
                Ok(answer) => return Ok(answer),
                Err(_) => continue,
            }
        }
    })();
    Attempt {
        transport: Transport::Tcp,
        latency: start.elapsed(),
        result,
    }
}

fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), QueryFailure> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QueryFailure::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(failure)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(QueryFailure::Io(
                    "connection closed by the server before a full reply".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failure(e)),
        }
    }
    Ok(())
}

/// Maps a socket error to a [`QueryFailure`].
fn failure(e: io::Error) -> QueryFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => QueryFailure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            QueryFailure::Unreachable
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QueryFailure::Timeout,
        _ => QueryFailure::Io(e.to_string()),
    }
}

/// What a search-list walk did: every candidate glibc would try, the queries actually sent
/// (in order), and which candidate answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchOutcome {
    /// The server every query went to.
    pub server: SocketAddr,
    /// All candidates of the expansion, in glibc's order (not all need have been tried).
    pub candidates: Vec<String>,
    /// The queries sent, in order: one per record type per tried candidate.
    pub queries: Vec<QueryOutcome>,
    /// The candidate that got an answer, if any.
    pub answered_by: Option<String>,
}

/// Why a search walk could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// No nameserver in resolv.conf and no server override.
    #[error(
        "no nameserver in resolv.conf and no --server given (glibc would fall back to 127.0.0.1)"
    )]
    NoNameserver,
    /// The name cannot be looked up.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No record type to ask for.
    #[error("no record type to query")]
    NoRecordType,
}

/// The server a walk uses: the override, else resolv.conf's first nameserver on port 53.
/// glibc's `rotate` would spread queries over the nameservers; kdiag keeps the first so the
/// walk is reproducible.
pub fn pick_server(
    conf: &ResolvConf,
    server: Option<SocketAddr>,
) -> Result<SocketAddr, SearchError> {
    match server {
        Some(s) => Ok(s),
        None => conf
            .nameservers
            .first()
            .map(|ns| SocketAddr::new(ns.addr, 53))
            .ok_or(SearchError::NoNameserver),
    }
}

/// Resolves `name` the way glibc's `res_nsearch` would with `conf`: walks the candidates of
/// [`super::resolv::expand`], sending one query per record type (in the given order, e.g. A
/// then AAAA) per candidate, and stops per [`next_step`]. One try per query (no glibc
/// `attempts` retries), each with `timeout`; TCP only when `options use-vc`, else UDP with TCP
/// fallback on truncation. `no-aaaa` is not applied here: pass the record types to ask.
pub fn search(
    conf: &ResolvConf,
    name: &str,
    server: Option<SocketAddr>,
    rtypes: &[RecordType],
    timeout: Duration,
    edns: bool,
) -> Result<SearchOutcome, SearchError> {
    let server = pick_server(conf, server)?;
    if rtypes.is_empty() {
        return Err(SearchError::NoRecordType);
    }
    let walk = expand_walk(name, conf)?;
    let mut out = SearchOutcome {
        server,
        candidates: walk.candidates.clone(),
        queries: Vec::new(),
        answered_by: None,
    };
    let transport = if conf.options.use_vc {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let mut idx = 0;
    // Each step moves strictly forward, so this ends; the bound is belt and braces.
    for _ in 0..walk.candidates.len() {
        let Some(candidate) = walk.candidates.get(idx) else {
            break;
        };
        let mut results = Vec::with_capacity(rtypes.len());
        for &rtype in rtypes {
            let q = query(&QuerySpec {
                server,
                name: candidate.clone(),
                rtype: rtype_mnemonic(rtype),
                transport,
                edns,
                tcp_fallback: true,
                timeout,
            });
            results.push(classify(&q));
            out.queries.push(q);
        }
        let result = CandidateResult::combine(&results);
        if result == CandidateResult::Answer {
            out.answered_by = Some(candidate.clone());
        }
        match next_step(&walk, idx, result) {
            Step::Try(next) if next > idx => idx = next,
            _ => break,
        }
    }
    Ok(out)
}

/// How glibc would classify one query's final result.
fn classify(q: &QueryOutcome) -> CandidateResult {
    match q.result() {
        Ok(a) => CandidateResult::from_rcode(&a.rcode, a.answers.len()),
        Err(QueryFailure::Refused) => CandidateResult::ConnRefused,
        Err(QueryFailure::Timeout) => CandidateResult::Timeout,
        Err(_) => CandidateResult::Failed,
    }
}

#[cfg(test)]
mod tests {
    //! Every test talks only to 127.0.0.1 (SPEC §6).
    use super::*;
    use crate::dns::resolv::parse_resolv_conf;
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, TXT};
    use hickory_proto::rr::{RData, Record};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

    /// What the fake server does with one query: the replies to send, in order.
    type Behaviour = dyn Fn(&Message, Transport) -> Vec<Vec<u8>> + Send + Sync;

    struct Responder {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        seen: Arc<Mutex<Vec<(String, String, Transport)>>>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    impl Responder {
        fn queries(&self) -> Vec<(String, String, Transport)> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn record(msg: &Message, seen: &Mutex<Vec<(String, String, Transport)>>, t: Transport) {
        if let Some(q) = msg.queries.first() {
            seen.lock()
                .unwrap()
                .push((q.name.to_ascii(), rtype_mnemonic(q.query_type), t));
        }
    }

    /// A UDP responder on 127.0.0.1, plus a TCP one on the same port when `tcp`.
    fn responder(tcp: bool, behaviour: Arc<Behaviour>) -> Responder {
        for _ in 0..20 {
            let udp = UdpSocket::bind((LOOPBACK, 0)).unwrap();
            let addr = udp.local_addr().unwrap();
            let listener = if tcp {
                match TcpListener::bind(addr) {
                    Ok(l) => Some(l),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let stop = Arc::new(AtomicBool::new(false));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut threads = Vec::new();
            {
                let (stop, seen, behaviour) = (stop.clone(), seen.clone(), behaviour.clone());
                udp.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((n, from)) = udp.recv_from(&mut buf) else {
                            continue;
                        };
                        assert!(from.ip().is_loopback());
                        let Ok(msg) = Message::from_vec(&buf[..n]) else {
                            continue;
                        };
                        record(&msg, &seen, Transport::Udp);
                        for reply in behaviour(&msg, Transport::Udp) {
                            let _ = udp.send_to(&reply, from);
                        }
                    }
                }));
            }
            if let Some(listener) = listener {
                let (stop, seen, behaviour) = (stop.clone(), seen.clone(), behaviour.clone());
                listener.set_nonblocking(true).unwrap();
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((mut s, _)) = listener.accept() else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).is_err() {
                            continue;
                        }
                        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if s.read_exact(&mut buf).is_err() {
                            continue;
                        }
                        let Ok(msg) = Message::from_vec(&buf) else {
                            continue;
                        };
                        record(&msg, &seen, Transport::Tcp);
                        for reply in behaviour(&msg, Transport::Tcp) {
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            let _ = s.write_all(&framed);
                        }
                    }
                }));
            }
            return Responder {
                addr,
                stop,
                seen,
                threads,
            };
        }
        panic!("could not bind a udp+tcp port pair on 127.0.0.1");
    }

    fn reply_to(q: &Message, rcode: ResponseCode, answers: Vec<Record>) -> Message {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = q.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.response_code = rcode;
        m.add_queries(q.queries.clone());
        m.add_answers(answers);
        m
    }

    fn a_record(q: &Message, last: u8) -> Record {
        Record::from_rdata(
            q.queries[0].name.clone(),
            5,
            RData::A(A::new(10, 96, 0, last)),
        )
    }

    fn spec(server: SocketAddr, name: &str, rtype: &str) -> QuerySpec {
        QuerySpec {
            server,
            name: name.into(),
            rtype: rtype.into(),
            transport: Transport::Udp,
            edns: true,
            tcp_fallback: true,
            timeout: Duration::from_millis(1000),
        }
    }

    fn closed_port() -> SocketAddr {
        let s = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        let addr = s.local_addr().unwrap();
        drop(s);
        addr
    }

    #[test]
    fn noerror_answer() {
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                vec![reply_to(q, ResponseCode::NoError, vec![a_record(q, 1)])
                    .to_vec()
                    .unwrap()]
            }),
        );
        let out = query(&spec(r.addr, "kubernetes.default.svc.cluster.local", "A"));
        assert_eq!(out.attempts.len(), 1);
        let a = out.result().unwrap();
        assert_eq!(a.rcode, "NOERROR");
        assert_eq!(a.answers[0].data, "10.96.0.1");
        assert_eq!(a.transport, Transport::Udp);
        assert!(out.total_latency() < Duration::from_millis(500));
        assert!(out
            .summary()
            .starts_with("NOERROR with 1 answer (10.96.0.1)"));
        assert_eq!(
            r.queries(),
            [(
                "kubernetes.default.svc.cluster.local.".to_string(),
                "A".to_string(),
                Transport::Udp
            )]
        );
    }

    #[test]
    fn nxdomain() {
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                vec![reply_to(q, ResponseCode::NXDomain, vec![])
                    .to_vec()
                    .unwrap()]
            }),
        );
        let out = query(&spec(r.addr, "nope.default.svc.cluster.local.", "AAAA"));
        assert_eq!(out.rcode(), Some("NXDOMAIN"));
        assert!(out.result().unwrap().answers.is_empty());
    }

    fn truncating(q: &Message, t: Transport) -> Vec<Vec<u8>> {
        if t == Transport::Udp {
            let mut m = reply_to(q, ResponseCode::NoError, vec![]);
            m.metadata.truncation = true;
            vec![m.to_vec().unwrap()]
        } else {
            let answers = (1..=40)
                .map(|i| {
                    Record::from_rdata(
                        q.queries[0].name.clone(),
                        5,
                        RData::TXT(TXT::new(vec![format!("record number {i} padding padding")])),
                    )
                })
                .collect();
            vec![reply_to(q, ResponseCode::NoError, answers)
                .to_vec()
                .unwrap()]
        }
    }

    #[test]
    fn truncated_udp_then_tcp() {
        let r = responder(true, Arc::new(truncating));
        let out = query(&spec(r.addr, "big.example.", "TXT"));
        assert_eq!(out.attempts.len(), 2);
        assert!(matches!(&out.attempts[0].result, Ok(a) if a.flags.tc));
        assert_eq!(out.attempts[1].transport, Transport::Tcp);
        let a = out.result().unwrap();
        assert_eq!(a.transport, Transport::Tcp);
        assert_eq!(a.answers.len(), 40);
        assert!(a.size > 1232);
        assert!(out.was_truncated());

        // Without fallback only the truncated UDP answer.
        let mut s = spec(r.addr, "big.example.", "TXT");
        s.tcp_fallback = false;
        assert_eq!(query(&s).attempts.len(), 1);

        // TCP only.
        s.transport = Transport::Tcp;
        let out = query(&s);
        assert_eq!(out.attempts.len(), 1);
        assert_eq!(out.result().unwrap().answers.len(), 40);
    }

    #[test]
    fn truncated_udp_and_tcp_refused() {
        let r = responder(false, Arc::new(truncating));
        // Make sure nothing listens on TCP at that port.
        let _ = TcpListener::bind(r.addr);
        let out = query(&spec(r.addr, "big.example.", "TXT"));
        assert_eq!(out.attempts.len(), 2);
        assert_eq!(out.attempts[1].transport, Transport::Tcp);
        assert_eq!(out.result(), Err(&QueryFailure::Refused));
        assert!(out.was_truncated());
    }

    #[test]
    fn closed_udp_port_is_refused_fast() {
        let addr = closed_port();
        let t0 = Instant::now();
        let out = query(&spec(addr, "a.example.", "A"));
        assert_eq!(out.result(), Err(&QueryFailure::Refused));
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(out.attempts.len(), 1);
    }

    #[test]
    fn silent_server_times_out() {
        let r = responder(false, Arc::new(|_: &Message, _| vec![]));
        let mut s = spec(r.addr, "a.example.", "A");
        s.timeout = Duration::from_millis(200);
        let t0 = Instant::now();
        let out = query(&s);
        let took = t0.elapsed();
        assert_eq!(out.result(), Err(&QueryFailure::Timeout));
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        assert!(out.summary().starts_with("timed out after"));
    }

    #[test]
    fn wrong_id_and_wrong_question_are_skipped() {
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                let mut wrong_id = reply_to(q, ResponseCode::NoError, vec![a_record(q, 66)]);
                wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
                let mut wrong_q = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                wrong_q.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii("evil.example.").unwrap(),
                    RecordType::A,
                ));
                vec![
                    wrong_id.to_vec().unwrap(),
                    b"garbage".to_vec(),
                    wrong_q.to_vec().unwrap(),
                    reply_to(q, ResponseCode::NoError, vec![a_record(q, 7)])
                        .to_vec()
                        .unwrap(),
                ]
            }),
        );
        let out = query(&spec(r.addr, "a.example.", "A"));
        assert_eq!(out.result().unwrap().answers[0].data, "10.96.0.7");
    }

    #[test]
    fn only_wrong_ids_time_out() {
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                let mut m = reply_to(q, ResponseCode::NoError, vec![a_record(q, 1)]);
                m.metadata.id = q.metadata.id.wrapping_add(1);
                vec![m.to_vec().unwrap()]
            }),
        );
        let mut s = spec(r.addr, "a.example.", "A");
        s.timeout = Duration::from_millis(200);
        assert_eq!(query(&s).result(), Err(&QueryFailure::Timeout));
    }

    #[test]
    fn invalid_spec_is_an_attempt_not_a_panic() {
        let out = query(&spec(closed_port(), "a..b", "A"));
        assert!(matches!(out.result(), Err(QueryFailure::Io(m)) if m.starts_with("invalid query")));
        let out = query(&spec(closed_port(), "a.example.", "BOGUS"));
        assert!(
            matches!(out.result(), Err(QueryFailure::Io(m)) if m.contains("unknown record type"))
        );
    }

    #[test]
    fn pick_server_rules() {
        let c = parse_resolv_conf("nameserver 10.96.0.10\nnameserver 10.96.0.11\n").unwrap();
        assert_eq!(
            pick_server(&c, None).unwrap(),
            "10.96.0.10:53".parse().unwrap()
        );
        let o: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(pick_server(&c, Some(o)).unwrap(), o);
        let empty = parse_resolv_conf("search a.example\n").unwrap();
        let e = pick_server(&empty, None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("no nameserver in resolv.conf and no --server"));
        assert!(search(
            &empty,
            "web",
            None,
            &[RecordType::A],
            Duration::from_millis(10),
            true
        )
        .is_err());
    }

    fn cluster_conf() -> ResolvConf {
        parse_resolv_conf("search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n").unwrap()
    }

    #[test]
    fn search_walks_until_an_answer() {
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                let name = q.queries[0].name.to_ascii();
                let t = q.queries[0].query_type;
                let m = if name == "web.svc.cluster.local." && t == RecordType::A {
                    reply_to(q, ResponseCode::NoError, vec![a_record(q, 9)])
                } else if name == "web.svc.cluster.local." {
                    reply_to(q, ResponseCode::NoError, vec![])
                } else {
                    reply_to(q, ResponseCode::NXDomain, vec![])
                };
                vec![m.to_vec().unwrap()]
            }),
        );
        let out = search(
            &cluster_conf(),
            "web",
            Some(r.addr),
            &[RecordType::A, RecordType::AAAA],
            Duration::from_millis(500),
            true,
        )
        .unwrap();
        assert_eq!(out.candidates.len(), 4);
        assert_eq!(out.answered_by.as_deref(), Some("web.svc.cluster.local."));
        let sent: Vec<(String, String)> = out
            .queries
            .iter()
            .map(|q| (q.spec.name.clone(), q.spec.rtype.clone()))
            .collect();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            sent,
            [
                s("web.ns1.svc.cluster.local.", "A"),
                s("web.ns1.svc.cluster.local.", "AAAA"),
                s("web.svc.cluster.local.", "A"),
                s("web.svc.cluster.local.", "AAAA"),
            ]
        );
        assert_eq!(r.queries().len(), 4);
        assert!(serde_json::to_string(&out).unwrap().contains("answered_by"));
    }

    #[test]
    fn search_exhausts_on_nxdomain() {
        let count = Arc::new(AtomicUsize::new(0));
        let c2 = count.clone();
        let r = responder(
            false,
            Arc::new(move |q: &Message, _| {
                c2.fetch_add(1, Ordering::SeqCst);
                vec![reply_to(q, ResponseCode::NXDomain, vec![])
                    .to_vec()
                    .unwrap()]
            }),
        );
        let out = search(
            &cluster_conf(),
            "nope",
            Some(r.addr),
            &[RecordType::A],
            Duration::from_millis(500),
            false,
        )
        .unwrap();
        assert_eq!(out.answered_by, None);
        assert_eq!(out.queries.len(), 4);
        assert_eq!(out.queries[3].spec.name, "nope.");
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn search_stops_on_connection_refused() {
        let out = search(
            &cluster_conf(),
            "web",
            Some(closed_port()),
            &[RecordType::A, RecordType::AAAA],
            Duration::from_millis(500),
            true,
        )
        .unwrap();
        assert_eq!(out.queries.len(), 2);
        assert!(out
            .queries
            .iter()
            .all(|q| q.result() == Err(&QueryFailure::Refused)));
        assert_eq!(out.answered_by, None);
    }

    #[test]
    fn search_timeout_jumps_to_as_is() {
        // Silent for search candidates; answers the name as-is (glibc's last try).
        let r = responder(
            false,
            Arc::new(|q: &Message, _| {
                if q.queries[0].name.to_ascii() == "web." {
                    let rec = Record::from_rdata(
                        q.queries[0].name.clone(),
                        5,
                        RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                    );
                    vec![reply_to(q, ResponseCode::NoError, vec![rec])
                        .to_vec()
                        .unwrap()]
                } else {
                    vec![]
                }
            }),
        );
        let out = search(
            &cluster_conf(),
            "web",
            Some(r.addr),
            &[RecordType::AAAA],
            Duration::from_millis(150),
            true,
        )
        .unwrap();
        let names: Vec<&str> = out.queries.iter().map(|q| q.spec.name.as_str()).collect();
        assert_eq!(names, ["web.ns1.svc.cluster.local.", "web."]);
        assert_eq!(out.answered_by.as_deref(), Some("web."));
    }

    #[test]
    fn search_use_vc_goes_tcp() {
        let r = responder(
            true,
            Arc::new(|q: &Message, _| {
                vec![reply_to(q, ResponseCode::NoError, vec![a_record(q, 3)])
                    .to_vec()
                    .unwrap()]
            }),
        );
        let mut c = cluster_conf();
        c.options.use_vc = true;
        let out = search(
            &c,
            "web.",
            Some(r.addr),
            &[RecordType::A],
            Duration::from_millis(500),
            true,
        )
        .unwrap();
        assert_eq!(out.queries.len(), 1);
        assert_eq!(out.queries[0].attempts[0].transport, Transport::Tcp);
        assert_eq!(r.queries()[0].2, Transport::Tcp);
    }
}
