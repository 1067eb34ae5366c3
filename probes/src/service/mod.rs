//! Service probes: reachability of VIPs, NodePorts and endpoints (`kdiag reach`), and the
//! Service diagnosis that follows the "Debug Services" order.

pub mod analyze;
#[cfg(feature = "live")]
pub mod collect;
pub mod model;
pub mod view;

pub use model::{parse_target, Attempt, Outcome, Proto, Target, TargetError};
