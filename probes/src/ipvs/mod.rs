//! kube-proxy's IPVS mode: the virtual-server table (`ipvsadm -Sn`, `ipvsadm -Ln`,
//! `/proc/net/ip_vs`), the `KUBE-*` ipsets (`ipset save`), the tracer that picks the real
//! servers a new connection can reach (alone, or inside the node's iptables rules and ipsets
//! for masquerade and filter drops), and the renderer of what kube-proxy programs.

pub mod ipset;
pub mod model;
pub mod netlink;
pub mod node;
pub mod parse;
pub mod render;
pub mod trace;

pub use ipset::{parse_ipset_save, IpSets};
pub use model::{Forward, IpvsFormat, IpvsTable, RealServer, VirtualService};
pub use node::trace_node;
pub use parse::{parse_ipvs, ParseError, ParseErrorKind};
pub use trace::trace;
