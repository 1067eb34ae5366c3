//! Fuzz target: bytes through the `ipset save` parser, then set lookups on what parses.
#![no_main]

use kdiag_probes::ipvs::ipset::{parse_ipset_save, Dir, Lookup};
use kdiag_probes::trace::Proto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_ipset_save(text) {
        Ok(sets) => {
            let p = Lookup {
                src: "10.244.0.9".parse().unwrap(),
                dst: "10.96.0.10".parse().unwrap(),
                dport: 53,
                proto: Proto::Udp,
            };
            for s in &sets.sets {
                for flags in [&[Dir::Dst][..], &[Dir::Dst, Dir::Dst], &[Dir::Dst, Dir::Dst, Dir::Src]] {
                    let _ = sets.matches(&s.name, flags, &p);
                }
            }
        }
        Err(e) => {
            assert!(e.line >= 1);
            assert!(!e.to_string().contains('\n'));
        }
    }
});
