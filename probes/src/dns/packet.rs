//! Decoding captured frames down to the DNS question. Pure; never panics on any bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A DNS message seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// DNS message ID.
    pub id: u16,
    /// QR bit: a response.
    pub response: bool,
    /// The first question's name, lowercase, with a trailing dot.
    pub qname: String,
}

/// Link layer of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II (also what AF_PACKET shows for `lo`).
    Ethernet,
    /// Raw IP (tun devices).
    RawIp,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Decodes a UDP DNS message from a captured frame, or `None` if it is anything else.
pub fn parse_frame(frame: &[u8], link: LinkType) -> Option<DnsPacket> {
    let ip = match link {
        LinkType::Ethernet => {
            let mut ethertype = be16(frame, 12)?;
            let mut off = 14;
            if ethertype == 0x8100 {
                ethertype = be16(frame, 16)?;
                off = 18;
            }
            if ethertype != 0x0800 && ethertype != 0x86dd {
                return None;
            }
            frame.get(off..)?
        }
        LinkType::RawIp => frame,
    };
    let version = ip.first()? >> 4;
    let (src_ip, dst_ip, l4) = match version {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if ihl < 20 || *ip.get(9)? != 17 {
                return None;
            }
            // fragments other than the first carry no UDP header
            let frag = be16(ip, 6)? & 0x1fff;
            if frag != 0 {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                ip.get(ihl..)?,
            )
        }
        6 => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    let dns = l4.get(8..)?;
    let id = be16(dns, 0)?;
    let response = dns.get(2)? & 0x80 != 0;
    if be16(dns, 4)? == 0 {
        return None;
    }
    // the question name: uncompressed labels from offset 12
    let mut name = String::new();
    let mut at = 12;
    loop {
        let len = usize::from(*dns.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 || name.len() > 255 {
            return None;
        }
        let label = dns.get(at + 1..at + 1 + len)?;
        for &b in label {
            name.push(char::from(b.to_ascii_lowercase()));
        }
        name.push('.');
        at += 1 + len;
    }
    if name.is_empty() {
        name.push('.');
    }
    Some(DnsPacket {
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        id,
        response,
        qname: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(qname: &[&str], qr: bool) -> Vec<u8> {
        let mut dns = vec![
            0x12,
            0x34,
            if qr { 0x81 } else { 0x01 },
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for l in qname {
            dns.push(l.len() as u8);
            dns.extend_from_slice(l.as_bytes());
        }
        dns.extend_from_slice(&[0, 0, 13, 0, 1]);
        let mut udp = vec![0xd4, 0x31, 0, 53];
        udp.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&dns);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 9, 1, 10,
        ];
        let total = (20 + udp.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&udp);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        eth
    }

    #[test]
    fn decodes_a_hinfo_query_on_lo() {
        let f = frame(&["4547991504243258144", "3688648895315093531"], false);
        let p = parse_frame(&f, LinkType::Ethernet).unwrap();
        assert_eq!(p.qname, "4547991504243258144.3688648895315093531.");
        assert_eq!(p.dst, "127.9.1.10:53".parse().unwrap());
        assert_eq!(p.src, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(p.id, 0x1234);
        assert!(!p.response);
        let raw = &f[14..];
        assert_eq!(parse_frame(raw, LinkType::RawIp).unwrap(), p);
        assert!(
            parse_frame(&frame(&["A", "B"], true), LinkType::Ethernet)
                .unwrap()
                .response
        );
        assert_eq!(
            parse_frame(&frame(&["A", "B"], true), LinkType::Ethernet)
                .unwrap()
                .qname,
            "a.b."
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_frame(&bytes, LinkType::Ethernet);
            let _ = parse_frame(&bytes, LinkType::RawIp);
        }
    }
}
