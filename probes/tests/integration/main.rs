//! kdiag-probes integration tests: golden inputs under `tests/fixtures/`.

mod iptables;
mod nft;
