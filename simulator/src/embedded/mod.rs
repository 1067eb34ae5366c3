//! The embedded backend: an in-process cluster on the lab's own slice of 127.0.0.0/8.

pub mod dns;
pub mod http;
pub mod lab;
pub mod proxy;
pub mod root;
pub mod task;
pub mod workloads;
