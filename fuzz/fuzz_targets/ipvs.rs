//! Fuzz target: bytes through the IPVS dump parser (ipvsadm -Sn / -Ln, /proc/net/ip_vs),
//! then the tracer on what parses.
#![no_main]

use kdiag_probes::ipvs::{parse_ipvs, trace};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_ipvs(text) {
        Ok(table) => {
            for (dst, port, proto) in [
                ("10.96.0.10", 53, Proto::Udp),
                ("10.96.0.1", 443, Proto::Tcp),
            ] {
                let r = trace(
                    &table,
                    &Packet {
                        src: "10.244.0.9".parse().unwrap(),
                        dst: dst.parse().unwrap(),
                        dport: port,
                        proto,
                    },
                    &NodeContext::default(),
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
