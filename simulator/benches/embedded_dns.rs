//! One UDP round trip against the embedded CoreDNS: a cluster name answered from the model,
//! and an outside name forwarded to the embedded upstream. Loopback (127.210.0.0/16) only.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use kdiag_simulator::embedded::dns::{
    serve, CoreDns, CoreDnsConfig, CoreDnsFaults, ServerHandle, Upstream, UpstreamMode,
};
use kdiag_simulator::model::{AddressPlan, Cluster};

fn query_bytes(name: &str) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).expect("static name");
    msg.queries.push(Query::query(name, RecordType::A));
    msg.to_vec().expect("encodable query")
}

fn round_trip(sock: &UdpSocket, query: &[u8], buf: &mut [u8]) -> usize {
    sock.send(query).expect("send");
    sock.recv(buf).expect("answer")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let plan = AddressPlan { slice: 210 };
    let (dns, upstream): (ServerHandle, ServerHandle) = rt.block_on(async {
        let mode = Arc::new(RwLock::new(UpstreamMode::Healthy));
        let upstream = serve(
            SocketAddr::new(plan.upstream_ip().into(), 0),
            Upstream::new(mode),
            false,
        )
        .await
        .expect("upstream");
        let core = CoreDns::new(
            CoreDnsConfig {
                zone: "cluster.local".into(),
                ttl: 30,
                upstream: upstream.local_addr(),
                forward_timeout: Duration::from_secs(2),
                recursion_available: false,
                zone_forwards: vec![],
                max_concurrent: 100,
            },
            Arc::new(RwLock::new(Cluster::demo(&plan, 53))),
            Arc::new(RwLock::new(CoreDnsFaults::default())),
        );
        let dns = serve(SocketAddr::new(plan.pod_ip(0, 2).into(), 0), core, false)
            .await
            .expect("coredns");
        (dns, upstream)
    });
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock.connect(dns.local_addr()).expect("connect");
    let mut buf = vec![0u8; 4096];

    let cluster = query_bytes("kubernetes.default.svc.cluster.local.");
    c.bench_function("coredns_udp_cluster_a", |b| {
        b.iter(|| black_box(round_trip(&sock, &cluster, &mut buf)))
    });
    let outside = query_bytes("example.com.");
    c.bench_function("coredns_udp_forwarded_a", |b| {
        b.iter(|| black_box(round_trip(&sock, &outside, &mut buf)))
    });

    rt.block_on(async {
        dns.stop().await;
        upstream.stop().await;
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
