//! kdiag-probes: looks at a Kubernetes node and its cluster and turns what it sees into
//! [`finding::Finding`]s with stable codes, evidence and remediation.
//!
//! The core (parsers, codecs, diagnosis rules) is pure: functions over text, bytes and structs.
//! The thin I/O shells that open sockets or read files sit behind the `live` feature.
//! This crate never mutates the node: probes are read-only.

pub mod cluster;
pub mod dns;
pub mod finding;
pub mod iptables;
pub mod ipvs;
pub mod nft;
pub mod proxy_check;
#[cfg(feature = "live")]
pub mod proxy_live;
pub mod report;
pub mod service;
pub mod trace;

pub use finding::{Code, Evidence, Finding, Severity};
pub use report::Report;
