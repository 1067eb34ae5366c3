//! Fuzz target: bytes through the nftables ruleset parser (text and JSON), then the tracer
//! on what parses.
#![no_main]

use kdiag_probes::nft::{parse_ruleset, trace};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_ruleset(text) {
        Ok(rules) => {
            let ctx = NodeContext {
                node_ips: vec!["192.168.0.2".parse().unwrap()],
            };
            for (src, dst, port) in [
                ("10.0.0.2", "172.30.0.41", 80),
                ("203.0.113.2", "192.168.0.2", 30080),
                ("192.168.0.2", "10.0.0.1", 53),
            ] {
                let r = trace(
                    &rules,
                    &Packet {
                        src: src.parse().unwrap(),
                        dst: dst.parse().unwrap(),
                        dport: port,
                        proto: Proto::Tcp,
                    },
                    &ctx,
                );
                let total: f64 = r.outcomes.iter().map(|o| o.probability).sum();
                assert!((total - 1.0).abs() < 1e-6);
            }
        }
        Err(e) => {
            assert!(e.line >= 1);
            assert!(!e.to_string().contains('\n'));
        }
    }
});
