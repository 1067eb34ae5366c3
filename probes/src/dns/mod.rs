//! DNS probes: resolv.conf analysis, the wire codec, raw queries, and cluster DNS diagnosis.

pub mod analyze;
#[cfg(feature = "live")]
pub mod capture;
#[cfg(feature = "live")]
pub mod client;
pub mod corefile;
#[cfg(feature = "live")]
pub mod diagnose;
pub mod kubelet;
#[cfg(feature = "live")]
pub mod loopcheck;
pub mod loops;
pub mod model;
pub mod packet;
pub mod resolv;
pub mod wire;

#[cfg(feature = "live")]
pub use client::{query, search, SearchError, SearchOutcome};
pub use resolv::{
    expand, parse_resolv_conf, parse_resolv_conf_bytes, NameError, ResolvConf, ResolvError,
};
pub use wire::{decode_response, encode_query, parse_name, parse_rtype, reverse_name, WireError};
