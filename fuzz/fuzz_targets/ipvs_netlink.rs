//! Fuzz target: bytes as a kernel's generic netlink answer to the IPVS dumps: messages,
//! family lookup, services and destinations decoded; what decodes is written out as
//! `ipvsadm -Sn` text, which must parse.
#![no_main]

use kdiag_probes::ipvs::netlink::{dests, family_id, parse_messages, render_save, services};
use kdiag_probes::ipvs::parse_ipvs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msgs) = parse_messages(data) else {
        return;
    };
    let _ = family_id(&msgs);
    let Ok(svcs) = services(&msgs) else {
        return;
    };
    let table: Vec<_> = svcs
        .into_iter()
        .map(|s| {
            let d = dests(&msgs, s.af).unwrap_or_default();
            (s, d)
        })
        .collect();
    let text = render_save(&table);
    if let Err(e) = parse_ipvs(&text) {
        panic!("render_save wrote what parse_ipvs rejects: {e}\n{text}");
    }
});
