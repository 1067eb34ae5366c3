//! kube-proxy's iptables mode: the `iptables-save` parser, the typed model, and the packet
//! tracer that walks the rules the way the kernel applies them to kube-proxy's traffic.

pub mod check;
pub mod model;
pub mod parse;
pub mod render;
pub mod split;
pub mod trace;

pub use model::{
    Action, Chain, Counters, Flavor, IpNet, Match, RecentMode, Rule, Ruleset, Table, Target,
};
pub use parse::{parse_iptables_save, ParseError, ParseErrorKind};
pub use trace::trace;
