//! Fuzz target: arbitrary bytes as a DNS response to an A query.
#![no_main]

use hickory_proto::rr::{Name, RecordType};
use kdiag_probes::dns::model::Transport;
use kdiag_probes::dns::wire::decode_response;
use libfuzzer_sys::fuzz_target;
use std::str::FromStr;

fuzz_target!(|data: &[u8]| {
    // Use the message's own ID so the fuzzer gets past the ID check.
    let id = match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    for name in ["a.example.", "."] {
        if let Ok(name) = Name::from_str(name) {
            for rtype in [RecordType::A, RecordType::TXT, RecordType::SRV] {
                let _ = decode_response(data, id, &name, rtype, Transport::Udp);
            }
        }
    }
});
