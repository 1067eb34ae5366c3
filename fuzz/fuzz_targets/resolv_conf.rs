//! Fuzz target: resolv.conf bytes through the parser, then glibc's search expansion.
#![no_main]

use kdiag_probes::dns::resolv::{
    expand, expand_walk, next_step, parse_resolv_conf_bytes, CandidateResult,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = parse_resolv_conf_bytes(data) else {
        return;
    };
    // Names: a few fixed ones, plus each word of the input that is text.
    let text = String::from_utf8_lossy(data);
    let words = text.split_whitespace().take(8);
    for name in ["web", "www.example.com", "kubernetes.default.", "."]
        .into_iter()
        .chain(words)
    {
        if let Ok(candidates) = expand(name, &conf) {
            assert!(candidates.iter().all(|c| c.ends_with('.')));
            if let Ok(walk) = expand_walk(name, &conf) {
                assert_eq!(walk.candidates, candidates);
                for i in 0..walk.candidates.len() {
                    let _ = next_step(&walk, i, CandidateResult::Timeout);
                    let _ = next_step(&walk, i, CandidateResult::NxDomain);
                }
            }
        }
    }
});
