//! The IPVS virtual-server table: virtual services (protocol, VIP, port, or a firewall
//! mark), their scheduler and persistence, and their real servers with forwarding method and
//! weight. Pure data.

use crate::trace::Proto;
use std::collections::HashMap;
use std::net::IpAddr;

/// Which dump a table was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum IpvsFormat {
    /// `ipvsadm -Sn` (`-A -t VIP:PORT -s rr` / `-a -t VIP:PORT -r RIP:PORT -m -w 1`).
    Save,
    /// `ipvsadm -Ln` (`TCP  VIP:PORT rr` / `  -> RIP:PORT Masq 1 0 0`).
    List,
    /// `/proc/net/ip_vs` (the list layout with hexadecimal addresses and ports).
    Proc,
}

/// How IPVS forwards to a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forward {
    /// NAT (`-m`, `Masq`): the destination is rewritten to the real server (kube-proxy's).
    Masq,
    /// Direct routing (`-g`, `Route`).
    Route,
    /// IP-in-IP tunnelling (`-i`, `Tunnel`).
    Tunnel,
    /// Local delivery (`Local`).
    Local,
}

/// One real server (an endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServer {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight; 0 takes no new connections (kube-proxy's terminating endpoints).
    pub weight: u32,
    /// The line as written.
    pub text: String,
    /// 1-based line.
    pub line: u32,
}

/// What a virtual service matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// Protocol, VIP and port.
    Addr(Proto, IpAddr, u16),
    /// A firewall mark set by iptables (`-f MARK`, `FWM`).
    Fwmark(u32),
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    /// What it matches.
    pub key: ServiceKey,
    /// Scheduler (`rr`, `wrr`, `lc`, `sh`, ...).
    pub scheduler: String,
    /// `persistent N` / `-p N`: session affinity for N seconds.
    pub persistent: Option<u32>,
    /// The real servers, in dump order.
    pub reals: Vec<RealServer>,
    /// The line as written.
    pub text: String,
    /// 1-based line.
    pub line: u32,
}

/// The whole table, indexed by (protocol, VIP, port).
#[derive(Debug, Clone)]
pub struct IpvsTable {
    /// The dump it was read from.
    pub format: IpvsFormat,
    /// Virtual services in dump order.
    pub services: Vec<VirtualService>,
    pub(crate) index: HashMap<ServiceKey, usize>,
}

impl IpvsTable {
    pub(crate) fn new(format: IpvsFormat, services: Vec<VirtualService>) -> IpvsTable {
        let mut index = HashMap::with_capacity(services.len());
        for (i, s) in services.iter().enumerate() {
            index.entry(s.key).or_insert(i);
        }
        IpvsTable {
            format,
            services,
            index,
        }
    }

    /// The virtual service for `key`, if any.
    pub fn service(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.index.get(key).map(|&i| &self.services[i])
    }

    /// Number of real servers over all virtual services.
    pub fn real_count(&self) -> usize {
        self.services.iter().map(|s| s.reals.len()).sum()
    }
}
