//! Generate kube-proxy's nftables ruleset (`nft list ruleset` text), or parse + index one and
//! trace a packet, printing the times (for `scripts/bench` and peak-memory measurement with
//! /usr/bin/time).
//!
//!   cargo run --release -p kdiag-probes --example nft_dump -- gen 10000 10 ruleset.txt
//!   cargo run --release -p kdiag-probes --example nft_dump -- parse ruleset.txt [REPEAT]

use kdiag_probes::iptables::render::synthetic;
use kdiag_probes::iptables::IpNet;
use kdiag_probes::nft::render::{render_nft_list, NftRenderConfig, NftServicePort};
use kdiag_probes::nft::{parse_ruleset, trace};
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
            let ports: Vec<NftServicePort> = synthetic(s, e).into_iter().map(Into::into).collect();
            let text = render_nft_list(
                &ports,
                &NftRenderConfig {
                    ipv6: false,
                    pod_cidr: Some(IpNet {
                        addr: "10.244.0.0".parse().unwrap(),
                        prefix: 16,
                    }),
                    service_cidrs: vec![IpNet {
                        addr: "10.96.0.0".parse().unwrap(),
                        prefix: 12,
                    }],
                    nodeport_ips: None,
                    node_ip: None,
                    masquerade_all: false,
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
        ["parse", file, rest @ ..] => {
            let repeat: u32 = rest.first().and_then(|n| n.parse().ok()).unwrap_or(0);
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    std::process::exit(2);
                }
            };
            let t0 = Instant::now();
            let rules = match parse_ruleset(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    std::process::exit(2);
                }
            };
            let parsed = t0.elapsed();
            let pkt = Packet {
                src: "10.244.255.1".parse().unwrap(),
                dst: "10.96.19.137".parse().unwrap(),
                dport: 80,
                proto: Proto::Tcp,
            };
            let t0 = Instant::now();
            let other = Packet {
                dst: "192.0.2.1".parse().unwrap(),
                ..pkt
            };
            let _ = trace(&rules, &other, &NodeContext::default());
            eprintln!(
                "warm-up trace (no match) {:.1} us",
                t0.elapsed().as_secs_f64() * 1e6
            );
            let t1 = Instant::now();
            let r = trace(&rules, &pkt, &NodeContext::default());
            let first = t1.elapsed();
            let t2 = Instant::now();
            for _ in 0..repeat {
                let r2 = trace(&rules, &pkt, &NodeContext::default());
                assert_eq!(r.endpoints, r2.endpoints);
            }
            let traced = t2.elapsed() / repeat.max(1);
            eprintln!(
                "parse+index {:.3} s ({} rules, {} bytes); first trace {:.1} us, then {:.1} us each (mean of {}) -> {} endpoints",
                parsed.as_secs_f64(),
                rules.rule_count(),
                text.len(),
                first.as_secs_f64() * 1e6,
                traced.as_secs_f64() * 1e6,
                repeat,
                r.endpoints.len()
            );
        }
        _ => {
            eprintln!("usage: nft_dump gen SERVICES ENDPOINTS FILE | parse FILE [REPEAT]");
            std::process::exit(2);
        }
    }
}
