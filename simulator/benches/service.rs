//! Service probes over the embedded lab's pieces: a full Service diagnosis of one Service with
//! 10 endpoints over 3 nodes, and `kdiag reach`'s per-attempt overhead against a raw connect
//! loop. Loopback (127.211.0.0/16) only.

use std::hint::black_box;
use std::io::Read;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kdiag_probes::service::collect::{
    attempt, diagnose_services, Probe, ProbeKind, ServiceDiagnoseInput,
};
use kdiag_simulator::embedded::proxy::{Backend, Frontend, Proto, Proxy, Route};
use kdiag_simulator::embedded::workloads::serve_hostname;
use kdiag_simulator::model::{
    AddressPlan, Cluster, Node, Pod, PodPort, Service, ServicePolicy, ServicePort, TargetPort,
    Workload,
};

fn cluster(plan: &AddressPlan) -> Cluster {
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            name: format!("node-{}", i + 1),
            ip: plan.node_ip(i),
            pod_cidr: (plan.pod_ip(i, 0), 24),
            ready: true,
        })
        .collect();
    let pods = (0..10u8)
        .map(|i| Pod {
            namespace: "default".into(),
            name: format!("hostnames-{i}"),
            node: nodes[usize::from(i) % 3].name.clone(),
            ip: plan.pod_ip(usize::from(i) % 3, 20 + i),
            labels: [("app".to_string(), "hostnames".to_string())].into(),
            ports: vec![PodPort {
                name: Some("http".into()),
                port: 9376,
                protocol: "TCP".into(),
            }],
            ready: true,
            phase: "Running".into(),
            restarts: 0,
            waiting_reason: None,
            termination_message: None,
            hostname: None,
            workload: Workload::ServeHostname,
            listening: true,
            logs: vec![],
        })
        .collect();
    Cluster {
        domain: "cluster.local".into(),
        nodes,
        pods,
        services: vec![Service {
            namespace: "default".into(),
            name: "hostnames".into(),
            cluster_ip: Some(plan.service_ip(22)),
            selector: [("app".to_string(), "hostnames".to_string())].into(),
            ports: vec![ServicePort {
                name: Some("http".into()),
                protocol: "TCP".into(),
                port: 80,
                target: TargetPort::Number(9376),
                node_port: Some(30376),
            }],
            external_name: None,
            policy: ServicePolicy::default(),
        }],
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let plan = AddressPlan { slice: 211 };
    let cl = cluster(&plan);
    let (servers, mut proxy) = rt.block_on(async {
        let mut servers = Vec::new();
        for p in &cl.pods {
            servers.push(
                serve_hostname(SocketAddr::new(IpAddr::V4(p.ip), 9376), &p.name)
                    .await
                    .expect("pod server"),
            );
        }
        let backends: Vec<Backend> = cl
            .pods
            .iter()
            .map(|p| Backend {
                addr: SocketAddr::new(IpAddr::V4(p.ip), 9376),
                node: p.node.clone(),
            })
            .collect();
        let route = Route {
            backends,
            ..Route::default()
        };
        let mut desired = vec![(
            Frontend {
                addr: SocketAddr::new(IpAddr::V4(plan.service_ip(22)), 80),
                proto: Proto::Tcp,
            },
            route.clone(),
        )];
        for n in &cl.nodes {
            desired.push((
                Frontend {
                    addr: SocketAddr::new(IpAddr::V4(n.ip), 30376),
                    proto: Proto::Tcp,
                },
                route.clone(),
            ));
        }
        let mut proxy = Proxy::new();
        let problems = proxy.reconcile(&desired).await;
        assert!(problems.is_empty(), "{problems:?}");
        (servers, proxy)
    });
    let state = cl.to_state();
    let input = ServiceDiagnoseInput {
        cluster: &state,
        services: vec![("default".into(), "hostnames".into())],
        root: None,
        dns_server: None,
        zone: "cluster.local".into(),
        timeout: Duration::from_secs(2),
        vip_attempts: 3,
        nodeport_attempts: 2,
        max_services: 1,
        max_endpoints: 16,
    };
    let d = diagnose_services(&input);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
    assert_eq!(d.services[0].direct.len(), 10);
    c.bench_function("service_diagnosis_10_endpoints_3_nodes", |b| {
        b.iter(|| black_box(diagnose_services(&input)))
    });

    let pod = SocketAddr::new(IpAddr::V4(cl.pods[0].ip), 9376);
    let known: Vec<String> = cl.pods.iter().map(|p| p.name.clone()).collect();
    let probe = Probe {
        addr: pod,
        kind: ProbeKind::Tcp,
    };
    c.bench_function("reach_attempt_tcp", |b| {
        b.iter(|| black_box(attempt(&probe, Duration::from_secs(2), &known)))
    });
    c.bench_function("raw_connect_halfclose_read", |b| {
        b.iter(|| {
            let mut s = TcpStream::connect_timeout(&pod, Duration::from_secs(2)).expect("connect");
            s.shutdown(Shutdown::Write).expect("shutdown");
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).expect("read");
            black_box(buf)
        })
    });
    let http = Probe {
        addr: pod,
        kind: ProbeKind::Http { path: "/".into() },
    };
    c.bench_function("reach_attempt_http", |b| {
        b.iter(|| black_box(attempt(&http, Duration::from_secs(2), &known)))
    });
    rt.block_on(async {
        proxy.shutdown().await;
        for s in servers {
            s.stop().await;
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
