//! DNS probes: resolv.conf analysis, the wire codec, raw queries, and cluster DNS diagnosis.

pub mod analyze;
pub mod kubelet;
pub mod model;
