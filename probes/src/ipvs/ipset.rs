//! The ipsets kube-proxy's IPVS mode matches with iptables (`KUBE-CLUSTER-IP`,
//! `KUBE-LOOP-BACK`, `KUBE-NODE-PORT-TCP`, ...), parsed from `ipset save` output, and the
//! membership test `-m set --match-set NAME dst,dst` performs. Pure; every error names its line.

use crate::iptables::IpNet;
use crate::trace::Proto;
use std::collections::HashMap;
use std::net::IpAddr;

/// The set types kube-proxy creates (others are kept by name and match nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetKind {
    /// `hash:ip` (`KUBE-IPVS-IPS`).
    HashIp,
    /// `hash:net`.
    HashNet,
    /// `hash:ip,port` (`KUBE-CLUSTER-IP`, `KUBE-EXTERNAL-IP`, `KUBE-LOAD-BALANCER`, ...).
    HashIpPort,
    /// `hash:ip,port,ip` (`KUBE-LOOP-BACK`, `KUBE-LOAD-BALANCER-SOURCE-IP`).
    HashIpPortIp,
    /// `hash:ip,port,net` (`KUBE-LOAD-BALANCER-SOURCE-CIDR`).
    HashIpPortNet,
    /// `bitmap:port` (`KUBE-NODE-PORT-TCP`, `KUBE-NODE-PORT-UDP`, ...).
    BitmapPort,
    /// Any other type, as written.
    Other(String),
}

impl SetKind {
    fn parse(s: &str) -> SetKind {
        match s {
            "hash:ip" => SetKind::HashIp,
            "hash:net" => SetKind::HashNet,
            "hash:ip,port" => SetKind::HashIpPort,
            "hash:ip,port,ip" => SetKind::HashIpPortIp,
            "hash:ip,port,net" => SetKind::HashIpPortNet,
            "bitmap:port" => SetKind::BitmapPort,
            o => SetKind::Other(o.to_string()),
        }
    }
}

/// One member of a set: the dimensions its type has, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The first address (every `hash:ip*` type).
    pub ip: Option<IpAddr>,
    /// The protocol and port (`,tcp:443`; `bitmap:port` has only the port).
    pub port: Option<(Option<Proto>, u16)>,
    /// The last address or network (`hash:ip,port,ip`, `hash:ip,port,net`, `hash:net`).
    pub net: Option<IpNet>,
    /// 1-based line of the `add`.
    pub line: u32,
}

/// One set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: SetKind,
    /// Members in dump order.
    pub members: Vec<Member>,
    /// 1-based line of the `create`.
    pub line: u32,
}

/// Every set of an `ipset save`, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpSets {
    /// Sets in dump order.
    pub sets: Vec<IpSet>,
    index: HashMap<String, usize>,
}

/// Where `--match-set` takes one dimension from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The packet's source (address or port).
    Src,
    /// The packet's destination.
    Dst,
}

/// The packet fields a set lookup can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (the source port of a new connection is unknown).
    pub dport: u16,
    /// Protocol.
    pub proto: Proto,
}

impl IpSets {
    /// The set called `name`.
    pub fn get(&self, name: &str) -> Option<&IpSet> {
        self.index.get(name).map(|&i| &self.sets[i])
    }

    /// Whether `--match-set name flags` matches: `None` when the set does not exist or a
    /// dimension needs what a trace does not know (a source port).
    pub fn matches(&self, name: &str, flags: &[Dir], p: &Lookup) -> Option<bool> {
        let set = self.get(name)?;
        let addr = |d: Dir| if d == Dir::Src { p.src } else { p.dst };
        let port_of = |d: Dir| (d == Dir::Dst).then_some(p.dport);
        let dims: &[u8] = match set.kind {
            SetKind::HashIp => b"a",
            SetKind::HashNet => b"n",
            SetKind::HashIpPort => b"ap",
            SetKind::HashIpPortIp | SetKind::HashIpPortNet => b"apn",
            SetKind::BitmapPort => b"p",
            SetKind::Other(_) => return Some(false),
        };
        if flags.len() < dims.len() {
            return Some(false);
        }
        // what the packet offers per dimension
        let mut want_ip = None;
        let mut want_port = None;
        let mut want_net = None;
        for (d, f) in dims.iter().zip(flags) {
            match d {
                b'a' => want_ip = Some(addr(*f)),
                b'p' => want_port = Some(port_of(*f)?),
                _ => want_net = Some(addr(*f)),
            }
        }
        Some(set.members.iter().any(|m| {
            want_ip.is_none_or(|ip| m.ip == Some(ip))
                && want_port.is_none_or(|port| match m.port {
                    Some((proto, mp)) => mp == port && proto.is_none_or(|x| x == p.proto),
                    None => false,
                })
                && want_net.is_none_or(|ip| m.net.is_some_and(|n| n.contains(ip)))
        }))
    }
}

/// Why an `ipset save` dump could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with the dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// `create` without a name and type, or `add` without a name and member.
    #[error("{0} needs a set name and a {1}")]
    Incomplete(&'static str, &'static str),
    /// An `add` to a set that was never created.
    #[error("add to set {0:?}, which was not created before")]
    NoSuchSet(String),
    /// A member that does not fit the set's type.
    #[error("bad member {0:?} for a {1} set")]
    BadMember(String, String),
    /// A line that is neither `create` nor `add`.
    #[error("unexpected line {0:?} (want create or add)")]
    Unexpected(String),
}

fn err(line: u32, kind: ParseErrorKind) -> ParseError {
    ParseError { line, kind }
}

/// `10.96.0.1`, `fd00::1`.
fn ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// `tcp:443`, `443` (tcp), `udp:53`, `sctp:80`.
fn proto_port(s: &str) -> Option<(Option<Proto>, u16)> {
    match s.split_once(':') {
        Some((p, port)) => Some((Some(p.parse().ok()?), port.parse().ok()?)),
        None => Some((Some(Proto::Tcp), s.parse().ok()?)),
    }
}

/// `10.0.0.0/8`, or a bare address as a host network.
fn net(s: &str) -> Option<IpNet> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (ip(a)?, p.parse::<u8>().ok()?),
        None => {
            let a = ip(s)?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    if p > if a.is_ipv4() { 32 } else { 128 } {
        return None;
    }
    Some(IpNet { addr: a, prefix: p })
}

fn member(kind: &SetKind, s: &str, line: u32) -> Option<Member> {
    let parts: Vec<&str> = s.split(',').collect();
    let mut m = Member {
        ip: None,
        port: None,
        net: None,
        line,
    };
    match (kind, parts.as_slice()) {
        (SetKind::HashIp, [a]) => m.ip = Some(ip(a)?),
        (SetKind::HashNet, [n]) => m.net = Some(net(n)?),
        (SetKind::HashIpPort, [a, p]) => {
            m.ip = Some(ip(a)?);
            m.port = Some(proto_port(p)?);
        }
        (SetKind::HashIpPortIp | SetKind::HashIpPortNet, [a, p, n]) => {
            m.ip = Some(ip(a)?);
            m.port = Some(proto_port(p)?);
            m.net = Some(net(n)?);
        }
        (SetKind::BitmapPort, [p]) => m.port = Some((None, p.parse().ok()?)),
        (SetKind::Other(_), _) => {}
        _ => return None,
    }
    Some(m)
}

/// Parses `ipset save` (also `ipset save NAME`): `create NAME TYPE [options]` and
/// `add NAME MEMBER [options]` lines; comments and blank lines are skipped.
pub fn parse_ipset_save(input: &str) -> Result<IpSets, ParseError> {
    let mut out = IpSets::default();
    for (i, raw) in input.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut w = l.split_whitespace();
        match w.next() {
            Some("create" | "-N") => {
                let (Some(name), Some(kind)) = (w.next(), w.next()) else {
                    return Err(err(line, ParseErrorKind::Incomplete("create", "type")));
                };
                let set = IpSet {
                    name: name.to_string(),
                    kind: SetKind::parse(kind),
                    members: Vec::new(),
                    line,
                };
                match out.index.get(name) {
                    // `create -exist` twice: the first one stays
                    Some(_) => {}
                    None => {
                        out.index.insert(name.to_string(), out.sets.len());
                        out.sets.push(set);
                    }
                }
            }
            Some("add" | "-A") => {
                let (Some(name), Some(m)) = (w.next(), w.next()) else {
                    return Err(err(line, ParseErrorKind::Incomplete("add", "member")));
                };
                let Some(&ix) = out.index.get(name) else {
                    return Err(err(line, ParseErrorKind::NoSuchSet(name.to_string())));
                };
                let set = &mut out.sets[ix];
                let mem = member(&set.kind, m, line).ok_or_else(|| {
                    let kind = match &set.kind {
                        SetKind::HashIp => "hash:ip",
                        SetKind::HashNet => "hash:net",
                        SetKind::HashIpPort => "hash:ip,port",
                        SetKind::HashIpPortIp => "hash:ip,port,ip",
                        SetKind::HashIpPortNet => "hash:ip,port,net",
                        SetKind::BitmapPort => "bitmap:port",
                        SetKind::Other(o) => o.as_str(),
                    };
                    err(line, ParseErrorKind::BadMember(m.into(), kind.into()))
                })?;
                set.members.push(mem);
            }
            _ => {
                let mut shown: String = l.chars().take(60).collect();
                if shown.len() < l.len() {
                    shown.push_str("...");
                }
                return Err(err(line, ParseErrorKind::Unexpected(shown)));
            }
        }
    }
    Ok(out)
}

/// Parses the `--match-set NAME FLAGS` of an iptables `-m set` match (as the iptables
/// parser keeps it): the set name, the directions, and whether it is negated.
pub fn parse_match_set(text: &str) -> Option<(&str, Vec<Dir>, bool)> {
    let mut w = text.split_whitespace().peekable();
    let mut neg = false;
    while let Some(t) = w.next() {
        match t {
            "!" => neg = true,
            "--match-set" | "--set" => {
                let name = w.next()?;
                let flags = w
                    .next()?
                    .split(',')
                    .map(|f| match f {
                        "src" => Some(Dir::Src),
                        "dst" => Some(Dir::Dst),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                return Some((name, flags, neg));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment
add KUBE-CLUSTER-IP 10.96.0.10,udp:53
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 comment
add KUBE-LOOP-BACK 10.244.1.5,tcp:8080,10.244.1.5
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment
add KUBE-NODE-PORT-TCP 30080
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 comment
add KUBE-IPVS-IPS 10.96.0.1
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 comment
add KUBE-LOAD-BALANCER-SOURCE-CIDR 1.2.3.4,tcp:80,203.0.113.0/24
";

    fn look(src: &str, dst: &str, dport: u16, proto: Proto) -> Lookup {
        Lookup {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            dport,
            proto,
        }
    }

    #[test]
    fn parses_kube_proxy_sets_and_matches_like_the_kernel() {
        let s = parse_ipset_save(SAVE).unwrap();
        assert_eq!(s.sets.len(), 5);
        assert_eq!(s.get("KUBE-CLUSTER-IP").unwrap().members.len(), 2);
        assert_eq!(s.get("KUBE-LOOP-BACK").unwrap().members[0].line, 5);
        use Dir::*;
        let dd = [Dst, Dst];
        let p = look("10.244.0.9", "10.96.0.10", 53, Proto::Udp);
        assert_eq!(s.matches("KUBE-CLUSTER-IP", &dd, &p), Some(true));
        let p = look("10.244.0.9", "10.96.0.10", 53, Proto::Tcp);
        assert_eq!(s.matches("KUBE-CLUSTER-IP", &dd, &p), Some(false));
        // hairpin: the endpoint talks to itself through the VIP
        let hair = look("10.244.1.5", "10.244.1.5", 8080, Proto::Tcp);
        assert_eq!(
            s.matches("KUBE-LOOP-BACK", &[Dst, Dst, Src], &hair),
            Some(true)
        );
        let other = look("10.244.1.6", "10.244.1.5", 8080, Proto::Tcp);
        assert_eq!(
            s.matches("KUBE-LOOP-BACK", &[Dst, Dst, Src], &other),
            Some(false)
        );
        let np = look("1.1.1.1", "192.168.0.2", 30080, Proto::Tcp);
        assert_eq!(s.matches("KUBE-NODE-PORT-TCP", &[Dst], &np), Some(true));
        assert_eq!(s.matches("KUBE-IPVS-IPS", &[Dst], &np), Some(false));
        let src = look("203.0.113.7", "1.2.3.4", 80, Proto::Tcp);
        assert_eq!(
            s.matches("KUBE-LOAD-BALANCER-SOURCE-CIDR", &[Dst, Dst, Src], &src),
            Some(true)
        );
        // a source port is unknown; a missing set is None
        assert_eq!(s.matches("KUBE-NODE-PORT-TCP", &[Src], &np), None);
        assert_eq!(s.matches("NOPE", &[Dst], &np), None);
    }

    #[test]
    fn match_set_options() {
        assert_eq!(
            parse_match_set("-m set --match-set KUBE-CLUSTER-IP dst,dst"),
            Some(("KUBE-CLUSTER-IP", vec![Dir::Dst, Dir::Dst], false))
        );
        assert_eq!(
            parse_match_set("-m set ! --match-set X src"),
            Some(("X", vec![Dir::Src], true))
        );
        assert_eq!(parse_match_set("-m set --match-set X"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_ipset_save("create A hash:ip\nadd A 10.0.0.300\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: bad member \"10.0.0.300\" for a hash:ip set"
        );
        let e = parse_ipset_save("add B 10.0.0.1\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NoSuchSet("B".into()));
        let e = parse_ipset_save("\ncreate\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_ipset_save("create A bitmap:port\nadd A tcp:80\nflush\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_ipset_save("hello world\n").unwrap_err();
        assert!(e.to_string().starts_with("line 1: unexpected line"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "(create|add|[ -~]){0,6}[ -~\n]{0,200}") {
            if let Err(e) = parse_ipset_save(&s) {
                proptest::prop_assert!(e.line >= 1);
                proptest::prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
