//! Generate a kube-proxy `iptables-save` dump, or parse + index one and trace a packet,
//! printing the times (for `scripts/bench` and peak-memory measurement with /usr/bin/time).
//!
//!   cargo run --release -p kdiag-probes --example iptables_dump -- gen 10000 10 dump.txt
//!   cargo run --release -p kdiag-probes --example iptables_dump -- parse dump.txt

use kdiag_probes::iptables::render::{render_iptables_save, synthetic, RenderConfig};
use kdiag_probes::iptables::{parse_iptables_save, trace, IpNet};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen", services, endpoints, out] => {
            let (Ok(s), Ok(e)) = (services.parse(), endpoints.parse()) else {
                eprintln!("gen SERVICES ENDPOINTS FILE");
                std::process::exit(2);
            };
            let text = render_iptables_save(
                &synthetic(s, e),
                &RenderConfig {
                    local_cidr: Some(IpNet {
                        addr: "10.244.0.0".parse().unwrap(),
                        prefix: 16,
                    }),
                    localhost_nodeports: true,
                },
            );
            if let Err(e) = std::fs::write(out, &text) {
                eprintln!("{out}: {e}");
                std::process::exit(2);
            }
            eprintln!(
                "wrote {out}: {} lines, {} bytes",
                text.lines().count(),
                text.len()
            );
        }
        ["parse", file] => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    std::process::exit(2);
                }
            };
            let t0 = Instant::now();
            let rules = match parse_iptables_save(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    std::process::exit(2);
                }
            };
            let parsed = t0.elapsed();
            let t1 = Instant::now();
            let r = trace(
                &rules,
                &Packet {
                    src: "10.244.255.1".parse().unwrap(),
                    dst: "10.96.19.137".parse().unwrap(),
                    dport: 80,
                    proto: Proto::Tcp,
                },
                &NodeContext::default(),
            );
            let traced = t1.elapsed();
            eprintln!(
                "parse+index {:.3} s ({} rules, {} bytes); one trace {:.1} us -> {} endpoints",
                parsed.as_secs_f64(),
                rules.rule_count(),
                text.len(),
                traced.as_secs_f64() * 1e6,
                r.endpoints.len()
            );
        }
        _ => {
            eprintln!("usage: iptables_dump gen SERVICES ENDPOINTS FILE | parse FILE");
            std::process::exit(2);
        }
    }
}
