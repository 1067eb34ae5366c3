//! Parses the IPVS table from `ipvsadm -Sn` (save), `ipvsadm -Ln` (list) or
//! `/proc/net/ip_vs` (the list layout in hex). Pure; every error names its line.

use super::model::{Forward, IpvsFormat, IpvsTable, RealServer, ServiceKey, VirtualService};
use crate::trace::Proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an IPVS dump could not be parsed.
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
    /// An address or `ADDR:PORT` that does not parse.
    #[error("bad address {0:?}")]
    BadAddress(String),
    /// A number that does not parse.
    #[error("bad number {0:?}")]
    BadNumber(String),
    /// An `ipvsadm` option the parser does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// A real server before any virtual service, or for one never declared.
    #[error("real server without its virtual service")]
    Orphan,
    /// A line that is neither a virtual service nor a real server.
    #[error("unexpected line {0:?}")]
    Unexpected(String),
}

fn err(line: u32, kind: ParseErrorKind) -> ParseError {
    ParseError { line, kind }
}

/// Parses an IPVS dump in any of the three formats (detected line by line).
pub fn parse_ipvs(input: &str) -> Result<IpvsTable, ParseError> {
    let mut services: Vec<VirtualService> = Vec::new();
    let mut format: Option<IpvsFormat> = None;
    for (i, raw) in input.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let l = raw.trim();
        if l.is_empty()
            || l.starts_with('#')
            || l.starts_with("IP Virtual Server")
            || l.starts_with("Prot LocalAddress")
            || l.starts_with("-> RemoteAddress")
        {
            continue;
        }
        if l.starts_with("-A ") || l.starts_with("-E ") {
            format.get_or_insert(IpvsFormat::Save);
            services.push(save_service(l, line)?);
        } else if l.starts_with("-a ") || l.starts_with("-e ") {
            format.get_or_insert(IpvsFormat::Save);
            let (key, real) = save_real(l, line)?;
            let vs = services
                .iter_mut()
                .rev()
                .find(|s| s.key == key)
                .ok_or_else(|| err(line, ParseErrorKind::Orphan))?;
            vs.reals.push(real);
        } else if let Some(rest) = l.strip_prefix("->") {
            let hex = format == Some(IpvsFormat::Proc);
            let vs = services
                .last_mut()
                .ok_or_else(|| err(line, ParseErrorKind::Orphan))?;
            vs.reals.push(list_real(rest.trim(), l, line, hex)?);
        } else {
            let mut w = l.split_whitespace();
            let prot = w.next().unwrap_or_default();
            let addr = w.next().unwrap_or_default();
            let key = match prot {
                "FWM" => ServiceKey::Fwmark(num(addr, line)?),
                "TCP" | "UDP" | "SCTP" => {
                    let proto = prot.parse::<Proto>().unwrap_or(Proto::Tcp);
                    let hex = match format {
                        Some(f) => f == IpvsFormat::Proc,
                        None => is_hex_addr(addr),
                    };
                    format.get_or_insert(if hex {
                        IpvsFormat::Proc
                    } else {
                        IpvsFormat::List
                    });
                    let (a, p) = addr_port(addr, hex)
                        .ok_or_else(|| err(line, ParseErrorKind::BadAddress(addr.into())))?;
                    ServiceKey::Addr(proto, a, p)
                }
                _ => return Err(err(line, ParseErrorKind::Unexpected(l.into()))),
            };
            let scheduler = w.next().unwrap_or("rr").to_string();
            let mut persistent = None;
            while let Some(x) = w.next() {
                if x == "persistent" {
                    persistent = Some(num(w.next().unwrap_or_default(), line)?);
                }
            }
            services.push(VirtualService {
                key,
                scheduler,
                persistent,
                reals: Vec::new(),
                text: l.split_whitespace().collect::<Vec<_>>().join(" "),
                line,
            });
        }
    }
    Ok(IpvsTable::new(format.unwrap_or(IpvsFormat::List), services))
}

fn num(s: &str, line: u32) -> Result<u32, ParseError> {
    s.parse()
        .map_err(|_| err(line, ParseErrorKind::BadNumber(s.into())))
}

/// `0A600001:01BB` (no dots, 8 hex digits before the colon).
fn is_hex_addr(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(a, _)| a.len() == 8 && a.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `10.96.0.1:443`, `[fd00::1]:443`, or with `hex`, `0A600001:01BB` / `[fd00::1]:01BB`.
fn addr_port(s: &str, hex: bool) -> Option<(IpAddr, u16)> {
    let (a, p) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => s.rsplit_once(':')?,
    };
    let port = if hex {
        u16::from_str_radix(p, 16).ok()?
    } else {
        p.parse().ok()?
    };
    let addr = if hex && !a.contains(':') && !a.contains('.') {
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?))
    } else if s.starts_with('[') {
        IpAddr::V6(a.parse::<Ipv6Addr>().ok()?)
    } else {
        a.parse().ok()?
    };
    Some((addr, port))
}

fn forward(s: &str) -> Option<Forward> {
    Some(match s {
        "Masq" | "-m" | "--masquerading" => Forward::Masq,
        "Route" | "-g" | "--gatewaying" => Forward::Route,
        "Tunnel" | "-i" | "--ipip" => Forward::Tunnel,
        "Local" => Forward::Local,
        _ => return None,
    })
}

/// `192.168.0.10:6443  Masq  1  0  0` (after `->`).
fn list_real(rest: &str, raw: &str, line: u32, hex: bool) -> Result<RealServer, ParseError> {
    let mut w = rest.split_whitespace();
    let a = w.next().unwrap_or_default();
    let (addr, port) =
        addr_port(a, hex).ok_or_else(|| err(line, ParseErrorKind::BadAddress(a.into())))?;
    let f = w.next().unwrap_or("Masq");
    let forward = forward(f).ok_or_else(|| err(line, ParseErrorKind::Unexpected(f.into())))?;
    let weight = num(w.next().unwrap_or("1"), line)?;
    Ok(RealServer {
        addr,
        port,
        forward,
        weight,
        text: raw.split_whitespace().collect::<Vec<_>>().join(" "),
        line,
    })
}

/// The service key from `-t ADDR:PORT` / `-u` / `--sctp-service` / `-f MARK`.
fn save_key(opt: &str, val: &str, line: u32) -> Result<Option<ServiceKey>, ParseError> {
    let proto = match opt {
        "-t" | "--tcp-service" => Proto::Tcp,
        "-u" | "--udp-service" => Proto::Udp,
        "--sctp-service" => Proto::Sctp,
        "-f" | "--fwmark-service" => return Ok(Some(ServiceKey::Fwmark(num(val, line)?))),
        _ => return Ok(None),
    };
    let (a, p) =
        addr_port(val, false).ok_or_else(|| err(line, ParseErrorKind::BadAddress(val.into())))?;
    Ok(Some(ServiceKey::Addr(proto, a, p)))
}

/// `-A -t 10.96.0.1:443 -s rr [-p 10800]`.
fn save_service(l: &str, line: u32) -> Result<VirtualService, ParseError> {
    let w: Vec<&str> = l.split_whitespace().collect();
    let mut key = None;
    let mut scheduler = "wlc".to_string();
    let mut persistent = None;
    let mut i = 1;
    while i < w.len() {
        let opt = w[i];
        let val = w.get(i + 1).copied().unwrap_or_default();
        if let Some(k) = save_key(opt, val, line)? {
            key = Some(k);
            i += 2;
            continue;
        }
        match opt {
            "-s" | "--scheduler" => {
                scheduler = val.to_string();
                i += 2;
            }
            "-p" | "--persistent" => {
                // the timeout is optional (default 300 s)
                match val.parse::<u32>() {
                    Ok(n) => {
                        persistent = Some(n);
                        i += 2;
                    }
                    Err(_) => {
                        persistent = Some(300);
                        i += 1;
                    }
                }
            }
            "-M" | "--netmask" | "-b" | "--sched-flags" | "--pe" => i += 2,
            "-o" | "--ops" => i += 1,
            o => return Err(err(line, ParseErrorKind::UnknownOption(o.into()))),
        }
    }
    let key = key.ok_or_else(|| err(line, ParseErrorKind::Unexpected(l.into())))?;
    Ok(VirtualService {
        key,
        scheduler,
        persistent,
        reals: Vec::new(),
        text: l.to_string(),
        line,
    })
}

/// `-a -t 10.96.0.1:443 -r 192.168.0.10:6443 -m -w 1`.
fn save_real(l: &str, line: u32) -> Result<(ServiceKey, RealServer), ParseError> {
    let w: Vec<&str> = l.split_whitespace().collect();
    let mut key = None;
    let mut real = None;
    let mut fwd = Forward::Route; // ipvsadm's default is direct routing
    let mut weight = 1;
    let mut i = 1;
    while i < w.len() {
        let opt = w[i];
        let val = w.get(i + 1).copied().unwrap_or_default();
        if let Some(k) = save_key(opt, val, line)? {
            key = Some(k);
            i += 2;
            continue;
        }
        if let Some(f) = forward(opt) {
            fwd = f;
            i += 1;
            continue;
        }
        match opt {
            "-r" | "--real-server" => {
                real = Some(match addr_port(val, false) {
                    Some(ap) => ap,
                    None => (
                        val.parse::<IpAddr>()
                            .map_err(|_| err(line, ParseErrorKind::BadAddress(val.into())))?,
                        0,
                    ),
                });
                i += 2;
            }
            "-w" | "--weight" => {
                weight = num(val, line)?;
                i += 2;
            }
            "-x" | "--u-threshold" | "-y" | "--l-threshold" | "--tun-type" => i += 2,
            o => return Err(err(line, ParseErrorKind::UnknownOption(o.into()))),
        }
    }
    let key = key.ok_or_else(|| err(line, ParseErrorKind::Unexpected(l.into())))?;
    let (addr, mut port) = real.ok_or_else(|| err(line, ParseErrorKind::Unexpected(l.into())))?;
    if port == 0 {
        if let ServiceKey::Addr(_, _, p) = key {
            port = p;
        }
    }
    Ok((
        key,
        RealServer {
            addr,
            port,
            forward: fwd,
            weight,
            text: l.to_string(),
            line,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.168.0.10:6443            Masq    1      3          0
UDP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          5
  -> 10.244.0.3:53                Masq    1      0          5
TCP  10.96.0.20:80 rr persistent 10800
  -> 10.244.1.5:8080              Masq    0      0          2
TCP  [fd00:10:96::1]:443 rr
  -> [fd00:10:244::5]:6443        Masq    1      0          0
FWM  1 rr
";

    #[test]
    fn parses_ipvsadm_list() {
        let t = parse_ipvs(LIST).unwrap();
        assert_eq!(t.format, IpvsFormat::List);
        assert_eq!(t.services.len(), 5);
        assert_eq!(t.real_count(), 5);
        let dns = t
            .service(&ServiceKey::Addr(
                Proto::Udp,
                "10.96.0.10".parse().unwrap(),
                53,
            ))
            .unwrap();
        assert_eq!(dns.reals.len(), 2);
        assert_eq!(dns.reals[1].line, 8);
        let sticky = &t.services[2];
        assert_eq!(sticky.persistent, Some(10800));
        assert_eq!(sticky.reals[0].weight, 0);
        assert_eq!(
            t.services[3].reals[0].addr,
            "fd00:10:244::5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(t.services[4].key, ServiceKey::Fwmark(1));
    }

    #[test]
    fn parses_ipvsadm_save_and_proc() {
        let save = "-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 192.168.0.10:6443 -m -w 1\n-A -u 10.96.0.10:53 -s rr -p 10800\n-a -u 10.96.0.10:53 -r 10.244.0.2:53 -m -w 1\n";
        let t = parse_ipvs(save).unwrap();
        assert_eq!(t.format, IpvsFormat::Save);
        assert_eq!(t.services[1].persistent, Some(10800));
        assert_eq!(t.services[0].reals[0].forward, Forward::Masq);
        let proc = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  0A600001:01BB rr \n  -> C0A8000A:192B      Masq    1      0          0\n";
        let t = parse_ipvs(proc).unwrap();
        assert_eq!(t.format, IpvsFormat::Proc);
        let vs = &t.services[0];
        assert_eq!(
            vs.key,
            ServiceKey::Addr(Proto::Tcp, "10.96.0.1".parse().unwrap(), 443)
        );
        assert_eq!(vs.reals[0].addr, "192.168.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(vs.reals[0].port, 6443);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_ipvs("TCP  10.96.0.1:443 rr\n  -> 10.0.0.300:80 Masq 1 0 0\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: bad address \"10.0.0.300:80\"");
        let e = parse_ipvs("  -> 10.0.0.3:80 Masq 1 0 0\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_ipvs("-A -t 10.96.0.1:443 -s rr -Z\n").unwrap_err();
        assert!(e.to_string().contains("unknown option"));
        let e = parse_ipvs("-a -t 10.96.0.9:443 -r 10.0.0.1:80 -m\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Orphan);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            if let Err(e) = parse_ipvs(&s) {
                proptest::prop_assert!(e.line >= 1);
                proptest::prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
