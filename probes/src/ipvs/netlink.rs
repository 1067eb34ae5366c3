//! The IPVS table over generic netlink, as bytes: the requests (resolve the "IPVS" family,
//! dump its services, dump each service's destinations) and a decoder for the kernel's
//! answers, plus the `ipvsadm -Sn` text the dump amounts to (so the table goes through
//! [`super::parse_ipvs`] like every other IPVS dump). Pure: no socket here; the shell in
//! `proxy_live` sends and receives.
//!
//! Layouts from the kernel's uapi headers: `linux/netlink.h` (nlmsghdr, nlattr),
//! `linux/genetlink.h` (genlmsghdr, the nlctrl family) and `linux/ip_vs.h` (IPVS_CMD_*,
//! IPVS_SVC_ATTR_*, IPVS_DEST_ATTR_*). Netlink headers are in host byte order; IPVS ports are
//! in network byte order. A short or hostile buffer is an error naming the byte offset,
//! never a panic.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The generic netlink controller's family id (`GENL_ID_CTRL`).
pub const GENL_ID_CTRL: u16 = 0x10;
/// The IPVS family's name (`IPVS_GENL_NAME`).
pub const IPVS_GENL_NAME: &str = "IPVS";
/// The IPVS family's version (`IPVS_GENL_VERSION`).
pub const IPVS_GENL_VERSION: u8 = 1;

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

const IP_VS_SVC_F_PERSISTENT: u32 = 0x1;
const IP_VS_CONN_F_FWD_MASK: u32 = 0x7;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Why a netlink answer could not be decoded (or what the kernel refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A header or attribute runs past the end of its buffer.
    #[error("byte {at}: truncated {what}")]
    Truncated {
        /// Offset of the header or attribute in the datagram.
        at: usize,
        /// What was cut off.
        what: &'static str,
    },
    /// A length field that is too small to hold its own header.
    #[error("byte {at}: bad length {len} in {what}")]
    BadLength {
        /// Offset.
        at: usize,
        /// The length read.
        len: usize,
        /// Which header.
        what: &'static str,
    },
    /// The kernel answered with an error (`NLMSG_ERROR` with a negative errno).
    #[error("the kernel answered errno {errno} ({})", errno_name(*errno))]
    Kernel {
        /// The positive errno.
        errno: i32,
    },
    /// An attribute with a value the decoder cannot use.
    #[error("byte {at}: bad {what}")]
    BadValue {
        /// Offset of the attribute.
        at: usize,
        /// Which attribute.
        what: &'static str,
    },
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM: not permitted, run as root",
        2 => "ENOENT: no such family or object",
        3 => "ESRCH: no such service",
        13 => "EACCES: permission denied",
        22 => "EINVAL: invalid request",
        95 => "EOPNOTSUPP: not supported",
        _ => "see errno(3)",
    }
}

/// One virtual service as the kernel reports it (`IPVS_CMD_ATTR_SERVICE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlService {
    /// Address family (`AF_INET` 2, `AF_INET6` 10).
    pub af: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP); 0 for a firewall-mark service.
    pub protocol: u16,
    /// Virtual address (none for a firewall-mark service).
    pub addr: Option<IpAddr>,
    /// Virtual port.
    pub port: u16,
    /// Firewall mark (0 when the service is keyed by address).
    pub fwmark: u32,
    /// Scheduler name (`rr`, `wrr`, ...).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags.
    pub flags: u32,
    /// Persistence timeout in seconds (meaningful with `IP_VS_SVC_F_PERSISTENT`).
    pub timeout: u32,
}

/// One real server as the kernel reports it (`IPVS_CMD_ATTR_DEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlDest {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Forwarding method (`IP_VS_CONN_F_MASQ` 0, `LOCALNODE` 1, `TUNNEL` 2, `DROUTE` 3).
    pub fwd: u32,
    /// Weight.
    pub weight: u32,
}

/// A message of a netlink answer, decoded as far as the caller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A generic netlink message: its command and its top-level attributes' raw bytes
    /// (type, offset of the payload in the datagram, payload).
    Genl {
        /// `genlmsghdr.cmd`.
        cmd: u8,
        /// Top-level attributes.
        attrs: Vec<(u16, usize, Vec<u8>)>,
    },
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// `NLMSG_ERROR` with errno 0: an acknowledgement.
    Ack,
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn message(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&family.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    b.extend_from_slice(&[cmd, version, 0, 0]);
    b.extend_from_slice(attrs);
    b
}

/// `CTRL_CMD_GETFAMILY` for `name` (the kernel answers with the family's id).
pub fn get_family_request(name: &str, seq: u32) -> Vec<u8> {
    let mut a = Vec::new();
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    push_attr(&mut a, CTRL_ATTR_FAMILY_NAME, &n);
    message(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        &a,
    )
}

/// `IPVS_CMD_GET_SERVICE` as a dump: every virtual service.
pub fn get_services_request(family: u16, seq: u32) -> Vec<u8> {
    message(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_SERVICE,
        IPVS_GENL_VERSION,
        &[],
    )
}

/// `IPVS_CMD_GET_DEST` as a dump: the real servers of `svc` (named by its address family,
/// protocol, address and port, or by its firewall mark).
pub fn get_dests_request(family: u16, seq: u32, svc: &NlService) -> Vec<u8> {
    let mut inner = Vec::new();
    push_attr(&mut inner, IPVS_SVC_ATTR_AF, &svc.af.to_ne_bytes());
    if svc.fwmark != 0 {
        push_attr(&mut inner, IPVS_SVC_ATTR_FWMARK, &svc.fwmark.to_ne_bytes());
    } else {
        push_attr(
            &mut inner,
            IPVS_SVC_ATTR_PROTOCOL,
            &svc.protocol.to_ne_bytes(),
        );
        let mut addr = [0u8; 16];
        match svc.addr {
            Some(IpAddr::V4(a)) => addr[..4].copy_from_slice(&a.octets()),
            Some(IpAddr::V6(a)) => addr.copy_from_slice(&a.octets()),
            None => {}
        }
        push_attr(&mut inner, IPVS_SVC_ATTR_ADDR, &addr);
        push_attr(&mut inner, IPVS_SVC_ATTR_PORT, &svc.port.to_be_bytes());
    }
    let mut a = Vec::new();
    push_attr(&mut a, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, &inner);
    message(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_DEST,
        IPVS_GENL_VERSION,
        &a,
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One attribute: type without flags, offset of its payload in the datagram, payload.
type Attr<'a> = (u16, usize, &'a [u8]);

/// The attributes in `b` (whose first byte is at offset `base` of the datagram).
fn attrs(b: &[u8], base: usize) -> Result<Vec<Attr<'_>>, NetlinkError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at = base + i;
        let (Some(len), Some(ty)) = (u16_at(b, i), u16_at(b, i + 2)) else {
            return Err(NetlinkError::Truncated {
                at,
                what: "attribute header",
            });
        };
        let len = usize::from(len);
        if len < NLA_HDRLEN {
            return Err(NetlinkError::BadLength {
                at,
                len,
                what: "attribute",
            });
        }
        let payload = b
            .get(i + NLA_HDRLEN..i + len)
            .ok_or(NetlinkError::Truncated {
                at,
                what: "attribute",
            })?;
        out.push((ty & NLA_TYPE_MASK, at + NLA_HDRLEN, payload));
        i += (len + 3) & !3;
    }
    Ok(out)
}

/// Splits one datagram into its messages. An `NLMSG_ERROR` with a non-zero errno is an
/// error; messages of other types (not generic netlink) are skipped.
pub fn parse_messages(b: &[u8]) -> Result<Vec<Message>, NetlinkError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (Some(len), Some(ty)) = (u32_at(b, i), u16_at(b, i + 4)) else {
            return Err(NetlinkError::Truncated {
                at: i,
                what: "message header",
            });
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN {
            return Err(NetlinkError::BadLength {
                at: i,
                len,
                what: "message",
            });
        }
        let body =
            b.get(i + NLMSG_HDRLEN..i.saturating_add(len))
                .ok_or(NetlinkError::Truncated {
                    at: i,
                    what: "message",
                })?;
        match ty {
            NLMSG_DONE => out.push(Message::Done),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or(NetlinkError::Truncated {
                    at: i + NLMSG_HDRLEN,
                    what: "error code",
                })? as i32;
                if code == 0 {
                    out.push(Message::Ack);
                } else {
                    return Err(NetlinkError::Kernel {
                        errno: code.saturating_neg(),
                    });
                }
            }
            t if t >= GENL_ID_CTRL => {
                let hdr = body.get(..GENL_HDRLEN).ok_or(NetlinkError::Truncated {
                    at: i + NLMSG_HDRLEN,
                    what: "generic netlink header",
                })?;
                let base = i + NLMSG_HDRLEN + GENL_HDRLEN;
                let list = attrs(&body[GENL_HDRLEN..], base)?;
                out.push(Message::Genl {
                    cmd: hdr[0],
                    attrs: list
                        .into_iter()
                        .map(|(t, at, p)| (t, at, p.to_vec()))
                        .collect(),
                });
            }
            _ => {}
        }
        i += (len + 3) & !3;
    }
    Ok(out)
}

/// The family id in a `CTRL_CMD_NEWFAMILY` answer, if the messages carry one.
pub fn family_id(msgs: &[Message]) -> Result<Option<u16>, NetlinkError> {
    for m in msgs {
        if let Message::Genl { attrs, .. } = m {
            for (ty, at, p) in attrs {
                if *ty == CTRL_ATTR_FAMILY_ID {
                    return u16_at(p, 0).map(Some).ok_or(NetlinkError::BadValue {
                        at: *at,
                        what: "family id",
                    });
                }
            }
        }
    }
    Ok(None)
}

fn addr_of(af: u16, p: &[u8], at: usize, what: &'static str) -> Result<IpAddr, NetlinkError> {
    let bad = NetlinkError::BadValue { at, what };
    match af {
        AF_INET => {
            let o: [u8; 4] = p.get(..4).and_then(|s| s.try_into().ok()).ok_or(bad)?;
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        AF_INET6 => {
            let o: [u8; 16] = p.get(..16).and_then(|s| s.try_into().ok()).ok_or(bad)?;
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(bad),
    }
}

fn num32(p: &[u8], at: usize, what: &'static str) -> Result<u32, NetlinkError> {
    u32_at(p, 0).ok_or(NetlinkError::BadValue { at, what })
}

fn num16(p: &[u8], at: usize, what: &'static str) -> Result<u16, NetlinkError> {
    u16_at(p, 0).ok_or(NetlinkError::BadValue { at, what })
}

fn port_be(p: &[u8], at: usize) -> Result<u16, NetlinkError> {
    p.get(..2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(NetlinkError::BadValue { at, what: "port" })
}

/// The nested attributes under `IPVS_CMD_ATTR_<which>` in each generic netlink message.
fn nested(msgs: &[Message], which: u16) -> impl Iterator<Item = (usize, &[u8])> {
    msgs.iter().flat_map(move |m| match m {
        Message::Genl { attrs, .. } => attrs
            .iter()
            .filter(|(t, _, _)| *t == which)
            .map(|(_, at, p)| (*at, p.as_slice()))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    })
}

/// The services in the answer to [`get_services_request`].
pub fn services(msgs: &[Message]) -> Result<Vec<NlService>, NetlinkError> {
    let mut out = Vec::new();
    for (base, payload) in nested(msgs, IPVS_CMD_ATTR_SERVICE) {
        let list = attrs(payload, base)?;
        let mut af = None;
        let mut addr_raw = None;
        let mut s = NlService {
            af: 0,
            protocol: 0,
            addr: None,
            port: 0,
            fwmark: 0,
            scheduler: String::new(),
            flags: 0,
            timeout: 0,
        };
        for (ty, at, p) in list {
            match ty {
                IPVS_SVC_ATTR_AF => af = Some(num16(p, at, "service address family")?),
                IPVS_SVC_ATTR_PROTOCOL => s.protocol = num16(p, at, "service protocol")?,
                IPVS_SVC_ATTR_ADDR => addr_raw = Some((at, p)),
                IPVS_SVC_ATTR_PORT => s.port = port_be(p, at)?,
                IPVS_SVC_ATTR_FWMARK => s.fwmark = num32(p, at, "firewall mark")?,
                IPVS_SVC_ATTR_SCHED_NAME => {
                    let name = p.split(|c| *c == 0).next().unwrap_or_default();
                    s.scheduler = std::str::from_utf8(name)
                        .ok()
                        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic()))
                        .ok_or(NetlinkError::BadValue {
                            at,
                            what: "scheduler name",
                        })?
                        .to_string();
                }
                IPVS_SVC_ATTR_FLAGS => s.flags = num32(p, at, "service flags")?,
                IPVS_SVC_ATTR_TIMEOUT => s.timeout = num32(p, at, "service timeout")?,
                _ => {}
            }
        }
        s.af = af.ok_or(NetlinkError::BadValue {
            at: base,
            what: "service without an address family",
        })?;
        if s.fwmark == 0 {
            let (at, p) = addr_raw.ok_or(NetlinkError::BadValue {
                at: base,
                what: "service without an address",
            })?;
            s.addr = Some(addr_of(s.af, p, at, "service address")?);
            // IPVS balances TCP, UDP and SCTP only
            if ![6, 17, 132].contains(&s.protocol) {
                return Err(NetlinkError::BadValue {
                    at: base,
                    what: "service protocol",
                });
            }
        }
        if s.scheduler.is_empty() {
            return Err(NetlinkError::BadValue {
                at: base,
                what: "service without a scheduler",
            });
        }
        out.push(s);
    }
    Ok(out)
}

/// The real servers in the answer to [`get_dests_request`] for a service of family `svc_af`.
pub fn dests(msgs: &[Message], svc_af: u16) -> Result<Vec<NlDest>, NetlinkError> {
    let mut out = Vec::new();
    for (base, payload) in nested(msgs, IPVS_CMD_ATTR_DEST) {
        let list = attrs(payload, base)?;
        let mut af = svc_af;
        let mut addr_raw = None;
        let mut port = None;
        let mut fwd = 0;
        let mut weight = 0;
        for (ty, at, p) in list {
            match ty {
                IPVS_DEST_ATTR_ADDR => addr_raw = Some((at, p)),
                IPVS_DEST_ATTR_PORT => port = Some(port_be(p, at)?),
                IPVS_DEST_ATTR_FWD_METHOD => fwd = num32(p, at, "forwarding method")?,
                IPVS_DEST_ATTR_WEIGHT => weight = num32(p, at, "weight")?,
                IPVS_DEST_ATTR_ADDR_FAMILY => af = num16(p, at, "destination address family")?,
                _ => {}
            }
        }
        let (at, p) = addr_raw.ok_or(NetlinkError::BadValue {
            at: base,
            what: "destination without an address",
        })?;
        out.push(NlDest {
            addr: addr_of(af, p, at, "destination address")?,
            port: port.unwrap_or(0),
            fwd: fwd & IP_VS_CONN_F_FWD_MASK,
            weight,
        });
    }
    Ok(out)
}

fn host_port(ip: IpAddr, port: u16) -> String {
    crate::trace::join_host_port(ip, port)
}

/// The table as `ipvsadm -Sn` prints it (ipvsadm's own `-m`/`-g`/`-i` for the forwarding
/// method, `-g` for a local node as ipvsadm writes it, `-p N` for persistence).
pub fn render_save(table: &[(NlService, Vec<NlDest>)]) -> String {
    let mut s = String::new();
    for (svc, reals) in table {
        let key = match (svc.fwmark, svc.addr) {
            (0, Some(addr)) => {
                let opt = match svc.protocol {
                    17 => "-u",
                    132 => "--sctp-service",
                    _ => "-t",
                };
                format!("{opt} {}", host_port(addr, svc.port))
            }
            (mark, _) => format!("-f {mark}"),
        };
        let _ = write!(s, "-A {key} -s {}", svc.scheduler);
        if svc.flags & IP_VS_SVC_F_PERSISTENT != 0 {
            let _ = write!(s, " -p {}", svc.timeout);
        }
        s.push('\n');
        for r in reals {
            let fwd = match r.fwd {
                0 => "-m",
                2 => "-i",
                _ => "-g",
            };
            let _ = writeln!(
                s,
                "-a {key} -r {} {fwd} -w {}",
                host_port(r.addr, r.port),
                r.weight
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of `ty` around `body` (a generic netlink header and attributes).
    fn nlmsg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(body);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        b
    }

    fn genl(cmd: u8, attrs: &[u8]) -> Vec<u8> {
        let mut b = vec![cmd, 1, 0, 0];
        b.extend_from_slice(attrs);
        b
    }

    fn svc_attrs(af: u16, proto: u16, addr: &[u8], port: u16, sched: &str, flags: u32) -> Vec<u8> {
        let mut a = Vec::new();
        push_attr(&mut a, IPVS_SVC_ATTR_AF, &af.to_ne_bytes());
        push_attr(&mut a, IPVS_SVC_ATTR_PROTOCOL, &proto.to_ne_bytes());
        let mut raw = [0u8; 16];
        raw[..addr.len()].copy_from_slice(addr);
        push_attr(&mut a, IPVS_SVC_ATTR_ADDR, &raw);
        push_attr(&mut a, IPVS_SVC_ATTR_PORT, &port.to_be_bytes());
        let mut name = sched.as_bytes().to_vec();
        name.push(0);
        push_attr(&mut a, IPVS_SVC_ATTR_SCHED_NAME, &name);
        let mut fl = flags.to_ne_bytes().to_vec();
        fl.extend_from_slice(&u32::MAX.to_ne_bytes());
        push_attr(&mut a, IPVS_SVC_ATTR_FLAGS, &fl);
        push_attr(&mut a, IPVS_SVC_ATTR_TIMEOUT, &10800u32.to_ne_bytes());
        let mut outer = Vec::new();
        push_attr(&mut outer, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, &a);
        outer
    }

    fn dest_attrs(addr: [u8; 4], port: u16, fwd: u32, weight: u32) -> Vec<u8> {
        let mut a = Vec::new();
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&addr);
        push_attr(&mut a, IPVS_DEST_ATTR_ADDR, &raw);
        push_attr(&mut a, IPVS_DEST_ATTR_PORT, &port.to_be_bytes());
        push_attr(&mut a, IPVS_DEST_ATTR_FWD_METHOD, &fwd.to_ne_bytes());
        push_attr(&mut a, IPVS_DEST_ATTR_WEIGHT, &weight.to_ne_bytes());
        push_attr(&mut a, IPVS_DEST_ATTR_ADDR_FAMILY, &AF_INET.to_ne_bytes());
        let mut outer = Vec::new();
        push_attr(&mut outer, IPVS_CMD_ATTR_DEST | NLA_F_NESTED, &a);
        outer
    }

    #[test]
    fn family_request_layout() {
        let r = get_family_request("IPVS", 7);
        // nlmsghdr(16) + genlmsghdr(4) + nlattr(4) + "IPVS\0" padded to 8
        assert_eq!(r.len(), 32);
        assert_eq!(u32_at(&r, 0), Some(32));
        assert_eq!(u16_at(&r, 4), Some(GENL_ID_CTRL));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(r[16], CTRL_CMD_GETFAMILY);
        assert_eq!(u16_at(&r, 20), Some(9)); // attribute length: 4 + 5
        assert_eq!(u16_at(&r, 22), Some(CTRL_ATTR_FAMILY_NAME));
        assert_eq!(&r[24..29], b"IPVS\0");
    }

    #[test]
    fn family_id_from_answer() {
        let mut a = Vec::new();
        push_attr(&mut a, CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
        push_attr(&mut a, CTRL_ATTR_FAMILY_ID, &0x1du16.to_ne_bytes());
        let mut dgram = nlmsg(GENL_ID_CTRL, &genl(1, &a));
        dgram.extend(nlmsg(NLMSG_ERROR, &0i32.to_ne_bytes()));
        let msgs = parse_messages(&dgram).unwrap();
        assert_eq!(msgs.last(), Some(&Message::Ack));
        assert_eq!(family_id(&msgs), Ok(Some(0x1d)));
    }

    #[test]
    fn missing_family_is_enoent() {
        // the controller's answer when no module registered "IPVS"
        let mut body = (-2i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&get_family_request("IPVS", 1)[..16]);
        let e = parse_messages(&nlmsg(NLMSG_ERROR, &body)).unwrap_err();
        assert_eq!(e, NetlinkError::Kernel { errno: 2 });
        assert!(e.to_string().contains("ENOENT"), "{e}");
    }

    #[test]
    fn service_and_dest_dump_render_as_ipvsadm_save() {
        let mut dgram = nlmsg(
            0x1d,
            &genl(
                1,
                &svc_attrs(
                    AF_INET,
                    6,
                    &[10, 96, 0, 1],
                    443,
                    "rr",
                    IP_VS_SVC_F_PERSISTENT,
                ),
            ),
        );
        dgram.extend(nlmsg(
            0x1d,
            &genl(
                1,
                &svc_attrs(
                    AF_INET6,
                    17,
                    &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa],
                    53,
                    "wrr",
                    0,
                ),
            ),
        ));
        dgram.extend(nlmsg(NLMSG_DONE, &0i32.to_ne_bytes()));
        let msgs = parse_messages(&dgram).unwrap();
        assert_eq!(msgs.last(), Some(&Message::Done));
        let svcs = services(&msgs).unwrap();
        assert_eq!(svcs.len(), 2);
        assert_eq!(svcs[0].addr, Some("10.96.0.1".parse().unwrap()));
        assert_eq!(svcs[0].port, 443);
        assert_eq!(svcs[0].scheduler, "rr");
        assert_eq!(svcs[1].addr, Some("fd00::a".parse().unwrap()));
        assert_eq!(svcs[1].protocol, 17);

        let mut d = nlmsg(0x1d, &genl(5, &dest_attrs([10, 244, 1, 5], 6443, 0, 1)));
        d.extend(nlmsg(
            0x1d,
            &genl(5, &dest_attrs([10, 244, 2, 6], 6443, 0, 0)),
        ));
        let reals = dests(&parse_messages(&d).unwrap(), AF_INET).unwrap();
        assert_eq!(reals.len(), 2);
        assert_eq!(reals[1].weight, 0);

        let text = render_save(&[(svcs[0].clone(), reals), (svcs[1].clone(), Vec::new())]);
        assert_eq!(
            text,
            "-A -t 10.96.0.1:443 -s rr -p 10800\n\
             -a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 1\n\
             -a -t 10.96.0.1:443 -r 10.244.2.6:6443 -m -w 0\n\
             -A -u [fd00::a]:53 -s wrr\n"
        );
        // and it reads back through the common parser
        let table = crate::ipvs::parse_ipvs(&text).unwrap();
        assert_eq!(table.services.len(), 2);
        assert_eq!(table.real_count(), 2);
        assert_eq!(table.services[0].persistent, Some(10800));
    }

    #[test]
    fn dest_request_names_the_service() {
        let svc = NlService {
            af: AF_INET,
            protocol: 6,
            addr: Some("10.96.0.10".parse().unwrap()),
            port: 53,
            fwmark: 0,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        };
        let r = get_dests_request(0x1d, 3, &svc);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(r[16], IPVS_CMD_GET_DEST);
        let top = attrs(&r[20..], 20).unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IPVS_CMD_ATTR_SERVICE);
        let inner = attrs(top[0].2, top[0].1).unwrap();
        let types: Vec<u16> = inner.iter().map(|a| a.0).collect();
        assert_eq!(
            types,
            [
                IPVS_SVC_ATTR_AF,
                IPVS_SVC_ATTR_PROTOCOL,
                IPVS_SVC_ATTR_ADDR,
                IPVS_SVC_ATTR_PORT
            ]
        );
        assert_eq!(inner[3].2, &53u16.to_be_bytes());
    }

    #[test]
    fn short_and_hostile_buffers_are_errors() {
        assert!(matches!(
            parse_messages(&[1, 2, 3]),
            Err(NetlinkError::Truncated { at: 0, .. })
        ));
        // length smaller than the header
        let mut b = nlmsg(0x1d, &genl(1, &[]));
        b[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(matches!(
            parse_messages(&b),
            Err(NetlinkError::BadLength { len: 4, .. })
        ));
        // length past the end
        let mut b = nlmsg(0x1d, &genl(1, &[]));
        b[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_messages(&b).is_err());
        // an attribute claiming more than is there
        let mut a = Vec::new();
        push_attr(&mut a, IPVS_CMD_ATTR_SERVICE, &[0; 8]);
        a[..2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(matches!(
            parse_messages(&nlmsg(0x1d, &genl(1, &a))),
            Err(NetlinkError::Truncated { at: 20, .. })
        ));
        // a zero-length attribute (would loop forever if accepted)
        let mut a = vec![0u8; 8];
        a[..2].copy_from_slice(&0u16.to_ne_bytes());
        assert!(matches!(
            parse_messages(&nlmsg(0x1d, &genl(1, &a))),
            Err(NetlinkError::BadLength { len: 0, .. })
        ));
        // a service whose address is too short for its family
        let mut inner = Vec::new();
        push_attr(&mut inner, IPVS_SVC_ATTR_AF, &AF_INET6.to_ne_bytes());
        push_attr(&mut inner, IPVS_SVC_ATTR_ADDR, &[10, 0, 0, 1]);
        let mut outer = Vec::new();
        push_attr(&mut outer, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, &inner);
        let msgs = parse_messages(&nlmsg(0x1d, &genl(1, &outer))).unwrap();
        assert!(matches!(
            services(&msgs),
            Err(NetlinkError::BadValue {
                what: "service address",
                ..
            })
        ));
        // an error message too short to hold its code
        assert!(parse_messages(&nlmsg(NLMSG_ERROR, &[0, 0])).is_err());
    }

    #[test]
    fn any_bytes_decode_or_error() {
        // a cheap deterministic sweep over mutated and cut datagrams: never a panic
        let base = nlmsg(
            0x1d,
            &genl(1, &svc_attrs(AF_INET, 6, &[10, 96, 0, 1], 443, "rr", 0)),
        );
        assert_eq!(services(&parse_messages(&base).unwrap()).unwrap().len(), 1);
        let mut errors = 0;
        for i in 0..base.len() {
            for v in [0u8, 1, 3, 0x7f, 0xff] {
                let mut b = base.clone();
                b[i] = v;
                if let Ok(m) = parse_messages(&b) {
                    let _ = services(&m);
                    let _ = dests(&m, AF_INET);
                    let _ = family_id(&m);
                }
                if parse_messages(&b[..i]).is_err() {
                    errors += 1;
                }
            }
        }
        // every cut inside a header or attribute is caught
        assert!(errors > base.len(), "{errors} errors");
    }

    proptest::proptest! {
        /// Random bytes spliced into a real service dump: decoded or refused, never a panic,
        /// and whatever decodes renders text the ipvsadm parser reads back.
        #[test]
        fn spliced_datagrams_decode_or_error(
            at in 0usize..120,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut b = nlmsg(
                0x1d,
                &genl(1, &svc_attrs(AF_INET, 6, &[10, 96, 0, 1], 443, "rr", 0)),
            );
            b.extend(nlmsg(0x1d, &genl(5, &dest_attrs([10, 244, 1, 5], 80, 0, 1))));
            let at = at.min(b.len());
            b.splice(at..at, junk);
            if let Ok(m) = parse_messages(&b) {
                if let Ok(svcs) = services(&m) {
                    let reals = dests(&m, AF_INET).unwrap_or_default();
                    let table: Vec<_> = svcs.into_iter().map(|s| (s, reals.clone())).collect();
                    let text = render_save(&table);
                    proptest::prop_assert!(crate::ipvs::parse_ipvs(&text).is_ok(), "{text}");
                }
            }
        }
    }
}
