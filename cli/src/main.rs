//! The `kdiag` binary.
fn main() {}
