//! Fuzz target: bytes through the iptables-save parser, then the tracer on what parses.
#![no_main]

use kdiag_probes::iptables::{parse_iptables_save, trace};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_iptables_save(text) {
        Ok(rules) => {
            let ctx = NodeContext {
                node_ips: vec!["192.168.0.2".parse().unwrap()],
            };
            for (dst, port) in [("10.96.0.10", 53), ("192.168.0.2", 30080), ("10.0.0.1", 80)] {
                let r = trace(
                    &rules,
                    &Packet {
                        src: "10.244.0.5".parse().unwrap(),
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
