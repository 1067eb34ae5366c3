//! iptables pure-core benches on a generated kube-proxy dump of 10,000 Services × 10
//! endpoints (SPEC §7): parse + index, and one trace after indexing. No I/O, no network.

use criterion::{criterion_group, criterion_main, Criterion};
use kdiag_probes::iptables::render::{render_iptables_save, synthetic, RenderConfig};
use kdiag_probes::iptables::{parse_iptables_save, trace, IpNet};
use kdiag_probes::trace::{NodeContext, Packet, Proto};
use std::hint::black_box;

fn dump() -> String {
    render_iptables_save(
        &synthetic(10_000, 10),
        &RenderConfig {
            local_cidr: Some(IpNet {
                addr: "10.244.0.0".parse().unwrap(),
                prefix: 16,
            }),
            localhost_nodeports: true,
        },
    )
}

fn benches(c: &mut Criterion) {
    let text = dump();
    let mut g = c.benchmark_group("iptables_10k_services_x_10_endpoints");
    g.sample_size(10);
    g.bench_function("parse_and_index", |b| {
        b.iter(|| parse_iptables_save(black_box(&text)).unwrap())
    });
    g.finish();
    let rules = parse_iptables_save(&text).unwrap();
    let ctx = NodeContext::default();
    let pkt = Packet {
        src: "10.244.255.1".parse().unwrap(),
        dst: "10.96.19.137".parse().unwrap(),
        dport: 80,
        proto: Proto::Tcp,
    };
    assert_eq!(trace(&rules, &pkt, &ctx).endpoints.len(), 10);
    c.bench_function("iptables_trace_one_packet_10k", |b| {
        b.iter(|| trace(black_box(&rules), black_box(&pkt), &ctx))
    });
}

criterion_group!(group, benches);
criterion_main!(group);
