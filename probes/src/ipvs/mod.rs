//! kube-proxy's IPVS mode: the virtual-server table (`ipvsadm -Sn`, `ipvsadm -Ln`,
//! `/proc/net/ip_vs`), and the tracer that picks the real servers a new connection can reach.

pub mod model;
pub mod netlink;
pub mod parse;
pub mod trace;

pub use model::{Forward, IpvsFormat, IpvsTable, RealServer, VirtualService};
pub use parse::{parse_ipvs, ParseError, ParseErrorKind};
pub use trace::trace;
