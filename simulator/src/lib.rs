//! kdiag-simulator: builds a cluster, injects failures from the catalog, runs the probes and
//! checks that the expected findings (and no others) come out.
//!
//! It never touches the host's root network namespace: the embedded backend lives on its own
//! slice of 127.0.0.0/8, in-process.

pub mod embedded;
pub mod kube_proxy;
pub mod model;
pub mod runner;
pub mod scenario;
