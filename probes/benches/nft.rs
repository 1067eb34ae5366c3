//! nftables pure-core benches on a generated kube-proxy ruleset of 10,000 Services × 10
//! endpoints (SPEC §7), as `nft list ruleset` text: parse + index, and one trace after
//! indexing. No I/O, no network.

use criterion::{criterion_group, criterion_main, Criterion};
use kdiag_probes::iptables::render::synthetic;
use kdiag_probes::iptables::IpNet;
use kdiag_probes::nft::render::{render_nft_list, NftRenderConfig, NftServicePort};
use kdiag_probes::nft::{parse_text, trace};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use std::hint::black_box;

fn ruleset() -> String {
    let ports: Vec<NftServicePort> = synthetic(10_000, 10).into_iter().map(Into::into).collect();
    render_nft_list(
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
    )
}

fn benches(c: &mut Criterion) {
    let text = ruleset();
    let mut g = c.benchmark_group("nft_10k_services_x_10_endpoints");
    g.sample_size(10);
    g.bench_function("parse_and_index", |b| {
        b.iter(|| parse_text(black_box(&text)).unwrap())
    });
    g.finish();
    let rules = parse_text(&text).unwrap();
    let ctx = NodeContext::default();
    let pkt = Packet {
        src: "10.244.255.1".parse().unwrap(),
        dst: "10.96.19.137".parse().unwrap(),
        dport: 80,
        proto: Proto::Tcp,
    };
    assert_eq!(trace(&rules, &pkt, &ctx).endpoints.len(), 10);
    c.bench_function("nft_trace_one_packet_10k", |b| {
        b.iter(|| trace(black_box(&rules), black_box(&pkt), &ctx))
    });
}

criterion_group!(group, benches);
criterion_main!(group);
