//! End-to-end tests of the `kdiag` binary: the embedded lab against dig, exit codes, errors.
//! All traffic stays on the lab's own slice of 127.0.0.0/8.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn kdiag() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdiag"));
    c.env("KDIAG_LOG", "error");
    c
}

struct Lab {
    child: Child,
    info: serde_json::Value,
}

impl Lab {
    fn up(base: &std::path::Path) -> Lab {
        let mut child = kdiag()
            .args(["lab", "up", "-o", "json"])
            .env("KDIAG_LAB_DIR", base)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kdiag lab up");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the first line");
        let info: serde_json::Value = serde_json::from_str(&line).expect("first line is JSON");
        assert_eq!(info["event"], "up");
        Lab { child, info }
    }

    fn dns(&self) -> (String, String) {
        let dns = self.info["dns"].as_str().unwrap().to_string();
        let (ip, port) = dns.rsplit_once(':').unwrap();
        (ip.to_string(), port.to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn dig_answers(ip: &str, port: &str, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            name,
            rtype,
            "+noall",
            "+answer",
            "+time=2",
            "+tries=1",
        ])
        .output()
        .expect("run dig");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            // name ttl class type data...
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0].to_lowercase(), f[3], f[4..].join(" "))
        })
        .collect();
    v.sort();
    v
}

fn kdiag_answers(dns: &str, name: &str, rtype: &str) -> (Vec<String>, String) {
    let out = kdiag()
        .args(["dns", name, "--server", dns, "--type", rtype, "-o", "json"])
        .output()
        .expect("run kdiag dns");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kdiag dns prints JSON");
    let attempts = v["observations"]["queries"][0]["attempts"]
        .as_array()
        .unwrap();
    let last = attempts.last().unwrap();
    let ok = &last["result"]["Ok"];
    let rcode = ok["rcode"].as_str().unwrap_or("").to_string();
    let mut answers: Vec<String> = ok["answers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r["name"].as_str().unwrap().to_lowercase(),
                        r["rtype"].as_str().unwrap(),
                        r["data"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    answers.sort();
    (answers, rcode)
}

#[test]
fn dig_and_kdiag_dns_agree_on_the_lab() {
    if !have("dig") {
        eprintln!("SKIPPED dig_and_kdiag_dns_agree_on_the_lab: dig is not installed (apt-get install bind9-dnsutils; scripts/test does)");
        assert!(
            std::env::var_os("CI").is_none(),
            "dig must be installed in CI (scripts/test installs it)"
        );
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let (ip, port) = lab.dns();
    let dns = lab.info["dns"].as_str().unwrap().to_string();
    let cases = [
        ("kubernetes.default.svc.cluster.local.", "A"),
        ("kube-dns.kube-system.svc.cluster.local.", "A"),
        ("hostnames-headless.default.svc.cluster.local.", "A"),
        ("_http._tcp.hostnames.default.svc.cluster.local.", "SRV"),
        ("_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV"),
        ("dns-version.cluster.local.", "TXT"),
        ("www.example.com.", "A"),
        ("mysql-servce.default.svc.cluster.local.", "A"),
    ];
    for (name, rtype) in cases {
        let d = dig_answers(&ip, &port, name, rtype);
        let (k, rcode) = kdiag_answers(&dns, name, rtype);
        // dig prints "name ttl IN type data"; compare name, type and data
        let d: Vec<String> = d
            .iter()
            .map(|l| {
                let mut f = l.splitn(3, ' ');
                let (n, t, rest) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
                format!("{n} {t} {rest}")
            })
            .collect();
        assert_eq!(d, k, "{name} {rtype}: dig and kdiag disagree");
        if name.starts_with("mysql-servce") {
            assert_eq!(rcode, "NXDOMAIN");
            assert!(d.is_empty());
        } else {
            assert!(!d.is_empty(), "{name} {rtype} has answers");
        }
    }
    // PTR of the kubernetes ClusterIP through -x
    let kube_ip = dig_answers(&ip, &port, "kubernetes.default.svc.cluster.local.", "A")[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let out = kdiag()
        .args(["dns", &kube_ip, "-x", "--server", &dns, "-o", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kubernetes.default.svc.cluster.local."),
        "{text}"
    );
}

#[test]
fn diagnose_a_healthy_lab_exits_0_and_a_wrong_name_exits_1() {
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let root = lab.info["nodes"]["node-1"].as_str().unwrap();
    let state = lab.info["cluster_state"].as_str().unwrap();
    let run = |name: &str| {
        kdiag()
            .args([
                "diagnose",
                "--root",
                root,
                "--cluster-state",
                state,
                "--name",
                name,
                "-o",
                "json",
            ])
            .output()
            .unwrap()
    };
    let ok = run("web-service");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // the lab's node root has kube-proxy's rules in both modes; both trace the DNS VIP to
    // the same CoreDNS pods
    let dns_vip = lab.info["dns"].as_str().unwrap();
    let (vip, port) = dns_vip.rsplit_once(':').unwrap();
    let trace = |mode: &str| {
        let out = kdiag()
            .args(["trace", "--root", root, "--mode", mode, "-o", "json"])
            .args([
                "--src", vip, "--dst", vip, "--dport", port, "--proto", "udp",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verdict"], "dnat", "{mode}");
        let mut eps: Vec<String> = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        eps.sort();
        eps
    };
    let ipt = trace("iptables");
    assert_eq!(ipt.len(), 2, "{ipt:?}");
    assert_eq!(trace("nftables"), ipt);
    let bad = run("web-servce");
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["findings"][0]["code"], "dns.nxdomain");
    assert!(v["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("default/web-service"));
    // the search walk is visible in the resolv.conf mode too
    let resolv = lab.info["resolv_conf"].as_str().unwrap();
    let dns = lab.info["dns"].as_str().unwrap();
    let out = kdiag()
        .args([
            "dns",
            "mysql-service",
            "--resolv-conf",
            resolv,
            "--server",
            dns,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["observations"]["search"]["answered_by"],
        "mysql-service.default.svc.cluster.local."
    );
}

#[test]
fn scenario_run_json_reports_every_builtin_scenario_passing() {
    let base = tempfile::tempdir().unwrap();
    let out = kdiag()
        .args(["scenario", "run", "-o", "json"])
        .env("KDIAG_LAB_DIR", base.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 0, "{v:#}");
    assert_eq!(v["skipped"], 0, "{v:#}");
    assert!(v["passed"].as_u64().unwrap() >= 9);
    for s in v["scenarios"].as_array().unwrap() {
        assert_eq!(s["status"], "pass", "{s:#}");
        assert_eq!(s["backend"], "embedded");
    }
    assert_eq!(out.status.code(), Some(0));
    // every lab was torn down
    let left: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("embedded-"))
        .collect();
    assert!(left.is_empty(), "labs left behind: {left:?}");
}

fn one_line_error(args: &[&str]) -> String {
    let out = kdiag().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let scen = dir.path().join("typo.yaml");
    std::fs::write(
        &scen,
        "name: x\nsummary: y\nfaluts:\n  - kind: dns-pods-down\nexpect:\n  findings: [dns.no-endpoints]\n",
    )
    .unwrap();
    let e = one_line_error(&["scenario", "run", scen.to_str().unwrap()]);
    assert!(e.contains("typo.yaml:3:1: unknown field `faluts`"), "{e}");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.0.0.1\nthis is garbage\n").unwrap();
    let e = one_line_error(&["dns", "x", "--resolv-conf", resolv.to_str().unwrap()]);
    assert!(e.contains("line 2"), "{e}");
    std::fs::write(&resolv, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    one_line_error(&["dns", "x", "--resolv-conf", resolv.to_str().unwrap()]);
    one_line_error(&["dns", "x"]); // no server: never the system resolver
    one_line_error(&["dns", "x", "--server", "not-an-ip"]);
    one_line_error(&["dns", "x", "--server", "127.0.0.1", "--type", "BOGUS"]);
    one_line_error(&["dns", "a..b", "--server", "127.0.0.1"]);
    one_line_error(&["diagnose", "--cluster-state", resolv.to_str().unwrap()]);
    one_line_error(&["scenario", "run", "/nonexistent/x.yaml"]);
}

#[test]
fn refused_is_fast_and_reported() {
    // a closed port on loopback: connected UDP sees ICMP port unreachable at once
    let out = kdiag()
        .args([
            "dns",
            "x.example.",
            "--server",
            "127.0.0.1:9",
            "-o",
            "json",
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["code"], "dns.server-unreachable");
    let a = &v["observations"]["queries"][0]["attempts"][0];
    assert_eq!(a["result"]["Err"]["kind"], "refused", "{a}");
    assert!(a["latency_us"].as_u64().unwrap() < 500_000);
}

#[test]
fn codes_and_list_work() {
    let out = kdiag().args(["codes", "-o", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 34);
    let out = kdiag()
        .args(["scenario", "list", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "baseline-healthy"));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn lab_with(base: &std::path::Path, scenario: &str) -> Lab {
    let mut child = kdiag()
        .args(["lab", "up", "-o", "json", "--scenario", scenario])
        .env("KDIAG_LAB_DIR", base)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn kdiag lab up --scenario");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read the first line");
    let info: serde_json::Value = serde_json::from_str(&line).expect("first line is JSON");
    Lab { child, info }
}

#[test]
fn loop_static_analysis_alone_catches_the_seed_case() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("Corefile");
    let rc = dir.path().join("resolv.conf");
    std::fs::write(
        &cf,
        ".:53 {\n    errors\n    forward . /etc/resolv.conf\n    loop\n}\n",
    )
    .unwrap();
    std::fs::write(
        &rc,
        "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\nnameserver 127.0.0.53\noptions edns0 trust-ad\n",
    )
    .unwrap();
    let out = kdiag()
        .args([
            "loop",
            "--corefile",
            cf.to_str().unwrap(),
            "--resolv-conf",
            rc.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["code"], "dns.upstream-loopback");
    assert!(v["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("127.0.0.53"));
    assert_eq!(
        v["observations"]["probes"].as_array().unwrap().len(),
        0,
        "no server, no traffic"
    );
    // bad Corefiles: one line, exit 2
    std::fs::write(&cf, ".:53 {\n    forward .\n").unwrap();
    let e = one_line_error(&["loop", "--corefile", cf.to_str().unwrap()]);
    assert!(e.contains("line 1") || e.contains("line 2"), "{e}");
    std::fs::write(&cf, ".:53 {\n    forward . not-an-address\n}\n").unwrap();
    let e = one_line_error(&["loop", "--corefile", cf.to_str().unwrap()]);
    assert!(e.contains("line 2: forward: invalid target"), "{e}");
    one_line_error(&["loop"]);
}

#[test]
fn loop_against_a_looping_lab_exits_1_and_a_healthy_one_exits_0() {
    if !is_root() {
        eprintln!("SKIPPED loop_against_a_looping_lab...: packet capture needs root (CAP_NET_RAW)");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let run = |lab: &Lab| {
        let root = lab.info["nodes"]["node-1"].as_str().unwrap().to_string();
        let state = lab.info["cluster_state"].as_str().unwrap().to_string();
        let out = kdiag()
            .args([
                "loop",
                "--root",
                &root,
                "--cluster-state",
                &state,
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    let looping = lab_with(base.path(), "dns-loop-two-hop");
    let (code, v) = run(&looping);
    assert_eq!(code, Some(1), "{v:#}");
    let f = &v["findings"][0];
    assert_eq!(f["code"], "dns.loop");
    assert_eq!(f["severity"], "critical");
    assert!(
        f["evidence"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("arrivals"),
        "{f:#}"
    );
    drop(looping);
    let healthy = Lab::up(base.path());
    let (code, v) = run(&healthy);
    assert_eq!(code, Some(0), "{v:#}");
    assert!(v["findings"].as_array().unwrap().is_empty(), "{v:#}");
}

#[test]
fn no_false_loop_in_100_healthy_runs() {
    use kdiag_probes::dns::loopcheck::{check_loops, LoopCheckInput};
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let server: std::net::SocketAddr = lab.info["dns"].as_str().unwrap().parse().unwrap();
    let capture = is_root();
    let started = std::time::Instant::now();
    for i in 0..100 {
        let c = check_loops(&LoopCheckInput {
            server: Some(server),
            corefile: None,
            resolv: vec![],
            logs: vec![],
            own: vec![server.ip()],
            cluster_owned: vec![],
            timeout: Duration::from_secs(3),
            probes_per_zone: 2,
            capture,
            slow: Duration::from_millis(1500),
        })
        .unwrap();
        assert!(c.findings.is_empty(), "run {i}: {:?}", c.findings);
        assert!(
            c.probes
                .iter()
                .all(|p| p.outcome.rcode() == Some("NXDOMAIN")),
            "run {i}"
        );
        if capture {
            assert!(
                c.probes.iter().all(|p| p.sightings.is_some_and(|n| n <= 2)),
                "run {i}"
            );
        }
    }
    eprintln!(
        "100 healthy loop checks (capture={capture}) in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../probes/tests/fixtures/iptables/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn trace_json_has_verdict_endpoints_masquerade_and_walk() {
    let out = kdiag()
        .args(["trace", "-o", "json", "--rules"])
        .arg(fixture("upstream/trace-packet.iptables-save"))
        .args([
            "--src",
            "192.168.0.2",
            "--dst",
            "192.168.99.22",
            "--dport",
            "80",
        ])
        .args(["--node-ip", "192.168.0.2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["verdict"], "dnat");
    assert_eq!(v["endpoints"], serde_json::json!(["10.180.0.2:80"]));
    assert_eq!(v["masquerade"], true);
    assert_eq!(v["findings"], serde_json::json!([]));
    let walk = v["walk"].as_array().unwrap();
    assert_eq!(walk[0]["table"], "nat");
    assert_eq!(walk[0]["chain"], "OUTPUT");
    assert!(walk
        .iter()
        .any(|s| s["chain"] == "KUBE-SEP-RS4RBKLTHTF2IUXJ"
            && s["rule"]
                .as_str()
                .unwrap()
                .contains("--to-destination 10.180.0.2:80")));
    assert_eq!(
        v["observations"]["trace"]["outcomes"][0]["probability"],
        1.0
    );
}

fn nft_fixture(name: &str) -> String {
    format!(
        "{}/../probes/tests/fixtures/nft/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `kdiag trace` on kube-proxy's nftables ruleset: `nft list ruleset` text and `nft -j`
/// JSON, detected from the content, give the same verdict, endpoints and masquerade.
#[test]
fn trace_nftables_list_and_json_detected_from_content() {
    for file in ["kube-proxy.nft-list", "kube-proxy.nft.json"] {
        let out = kdiag()
            .args(["trace", "-o", "json", "--rules"])
            .arg(nft_fixture(file))
            .args([
                "--src",
                "203.0.113.2",
                "--dst",
                "192.168.0.2",
                "--dport",
                "30080",
            ])
            .args(["--node-ip", "192.168.0.2"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verdict"], "dnat", "{file}");
        assert_eq!(
            v["endpoints"],
            serde_json::json!(["10.180.0.1:80", "10.180.0.2:80"]),
            "{file}"
        );
        assert_eq!(v["masquerade"], true, "{file}");
        assert_eq!(v["observations"]["trace"]["mode"], "nftables");
        assert_eq!(
            v["observations"]["trace"]["tables"],
            serde_json::json!(["ip kube-proxy"])
        );
        let walk = v["walk"].as_array().unwrap();
        assert_eq!(walk[0]["table"], "ip kube-proxy");
        assert!(walk.iter().any(|s| s["chain"] == "services"), "{file}");
        assert_eq!(
            v["observations"]["trace"]["outcomes"][0]["probability"],
            0.5
        );
    }
    // no endpoints: REJECT through no-endpoint-services, exit 1 with svc.no-endpoints
    let out = kdiag()
        .args(["trace", "-o", "json", "--mode", "nftables", "--rules"])
        .arg(nft_fixture("kube-proxy.nft-list"))
        .args(["--src", "10.0.0.2", "--dst", "172.30.0.46", "--dport", "80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["findings"][0]["code"], "svc.no-endpoints");
    assert!(v["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("ns1/gone:p80"));
    // the table output draws the walk
    let out = kdiag()
        .args(["trace", "-o", "table", "--rules"])
        .arg(nft_fixture("upstream/overall-rules.nft"))
        .args(["--src", "10.0.0.2", "--dst", "172.30.0.44", "--dport", "80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(nft -f script, "), "{text}");
    assert!(
        text.contains("ip kube-proxy/service-LAUZTJTB-ns4/svc4/tcp/p80"),
        "{text}"
    );
    assert!(
        text.contains("DNAT to 10.180.0.4:80 (50%), 10.180.0.5:80 (50%)"),
        "{text}"
    );
}

/// `kdiag trace` on an `ipvsadm -Ln` dump: the real servers by weight.
#[test]
fn trace_ipvs_list_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ipvsadm.txt");
    std::fs::write(
        &f,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
UDP  10.96.0.10:53 rr\n\
  -> 10.244.0.2:53                Masq    1      0          0\n\
  -> 10.244.0.3:53                Masq    1      0          0\n",
    )
    .unwrap();
    let out = kdiag()
        .args(["trace", "-o", "json", "--rules"])
        .arg(&f)
        .args([
            "--src",
            "10.244.0.9",
            "--dst",
            "10.96.0.10",
            "--dport",
            "53",
        ])
        .args(["--proto", "udp"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "dnat");
    assert_eq!(
        v["endpoints"],
        serde_json::json!(["10.244.0.2:53", "10.244.0.3:53"])
    );
    assert_eq!(v["observations"]["trace"]["mode"], "ipvs");
    assert_eq!(v["observations"]["trace"]["format"], "list");
    assert_eq!(v["walk"][0]["table"], "ipvs");
    assert_eq!(v["walk"][0]["line"], 4);
}

/// On a lab node root, `--mode ipvs` evaluates kube-proxy's ipsets and ipvs-mode iptables
/// rules around the virtual servers: hairpin masquerade, and KUBE-IPVS-FILTER's reject of a
/// VIP port no virtual service serves.
#[test]
fn trace_ipvs_on_a_lab_root_evaluates_masquerade_and_filter() {
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let root = lab.info["nodes"]["node-1"].as_str().unwrap().to_string();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.info["cluster_state"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    // a hostnames pod on node-1, and the sticky Service in front of it
    let pod = state["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["kind"] == "Pod"
                && i["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("hostnames-")
                && i["spec"]["nodeName"] == "node-1"
        })
        .expect("a hostnames pod on node-1");
    let pod_ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let vip = lab.info["services"]["default/hostnames-sticky"]
        .as_str()
        .unwrap()
        .to_string();
    let (vip_ip, vip_port) = vip.rsplit_once(':').unwrap();
    let run = |dport: &str| {
        let out = kdiag()
            .args(["trace", "-o", "json", "--mode", "ipvs", "--root", &root])
            .args(["--src", &pod_ip, "--dst", vip_ip, "--dport", dport])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = run(vip_port);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["verdict"], "dnat", "{v:#}");
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 3, "{v:#}");
    let t = &v["observations"]["trace"];
    assert!(t["evaluated_with"]["ipset"]
        .as_str()
        .unwrap()
        .ends_with("ipset.txt"));
    assert!(!t["notes"].to_string().contains("not evaluated"), "{t:#}");
    // only the path back to the client itself is masqueraded (KUBE-LOOP-BACK)
    for o in t["outcomes"].as_array().unwrap() {
        let to_self = o["endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{pod_ip}:"));
        assert_eq!(o["masquerade"], to_self, "{o:#}");
    }
    assert_eq!(v["masquerade"], true);
    assert!(v["walk"].to_string().contains("KUBE-LOOP-BACK"), "{v:#}");
    // a port of the VIP that no virtual service serves
    let (code, v) = run("81");
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["verdict"], "reject", "{v:#}");
    assert_eq!(
        v["walk"].as_array().unwrap().last().unwrap()["chain"],
        "KUBE-IPVS-FILTER"
    );
}

#[test]
fn trace_reject_is_svc_no_endpoints_exit_1() {
    let out = kdiag()
        .args(["trace", "-o", "json", "--rules"])
        .arg(fixture("upstream/trace-packet.iptables-save"))
        .args(["--src", "10.0.0.2", "--dst", "172.30.0.46", "--dport", "80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["findings"][0]["code"], "svc.no-endpoints");
    assert!(v["findings"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("ns6/svc6:p80"));
}

#[test]
fn trace_errors_are_one_line_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        "*nat\n:A - [0:0]\n-A A -s 300.1.1.1 -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    let nft = dir.path().join("nft.txt");
    std::fs::write(
        &nft,
        "table ip kube-proxy {\n\tchain services {\n\t\tjump\n",
    )
    .unwrap();
    let ipvs = dir.path().join("ipvs.txt");
    std::fs::write(
        &ipvs,
        "-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 10.0.0.300:6443 -m -w 1\n",
    )
    .unwrap();
    for (file, want) in [
        (bad.clone(), "line 3: bad address"),
        (nft, "line 3: expected a chain name"),
        (ipvs, "line 2: bad address"),
        (dir.path().join("missing"), "failed to read"),
    ] {
        let out = kdiag()
            .args([
                "trace", "-o", "table", "--src", "10.0.0.1", "--dst", "10.0.0.2",
            ])
            .args(["--dport", "80", "--rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn reach_shows_the_distribution_over_a_lab_service_and_affinity() {
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let state = lab.info["cluster_state"].as_str().unwrap();
    let out = kdiag()
        .args([
            "reach",
            "default/hostnames",
            "default/hostnames-sticky",
            "-n",
            "12",
            "--cluster-state",
            state,
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reach = v["observations"]["reach"].as_array().unwrap();
    let spread = &reach[0]["summary"];
    assert_eq!(spread["reached"], 12);
    // 12 random picks over 3 pods all landing on one: 3^-11; at least two backends answer
    assert!(
        spread["backends"].as_object().unwrap().len() >= 2,
        "{spread}"
    );
    for b in spread["backends"].as_object().unwrap().keys() {
        assert!(b.starts_with("hostnames-"), "{b}");
    }
    assert_eq!(spread["affinity"]["kind"], "spread");
    let sticky = &reach[1]["summary"];
    assert_eq!(sticky["affinity"]["kind"], "sticky", "{sticky}");
    assert_eq!(reach[1]["session_affinity"], "ClientIP");
    // a raw socket target: the MySQL banner comes back; a closed port is refused, exit 1
    let mysql = lab.info["services"]["default/mysql-service"]
        .as_str()
        .unwrap();
    let vip_ip = mysql.rsplit_once(':').unwrap().0;
    let out = kdiag()
        .args([
            "reach",
            mysql,
            &format!("{vip_ip}:9"),
            "-n",
            "3",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reach = v["observations"]["reach"].as_array().unwrap();
    assert_eq!(reach[0]["summary"]["outcomes"]["answered"], 3);
    let banner = reach[0]["attempts"][0]["outcome"]["reply"]
        .as_str()
        .unwrap();
    assert!(banner.contains("mysql-0"), "{banner}");
    assert_eq!(reach[1]["summary"]["outcomes"]["refused"], 3);
    // a Service target without a cluster state is a one-line usage error
    one_line_error(&["reach", "default/hostnames"]);
    one_line_error(&["reach", "example.com:80"]);
}

#[test]
fn diagnose_cross_checks_the_labs_rules_and_rejects_garbage_rules() {
    let base = tempfile::tempdir().unwrap();
    let lab = Lab::up(base.path());
    let root = lab.info["nodes"]["node-1"].as_str().unwrap().to_string();
    let state = lab.info["cluster_state"].as_str().unwrap().to_string();
    let diagnose = |root: &str, state: &str, rules: &str| {
        let out = kdiag()
            .args([
                "diagnose",
                "--root",
                root,
                "--cluster-state",
                state,
                "--rules",
                rules,
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    // every mode's rules file of the lab, mode detected from the content
    const FILES: [(&str, &str); 3] = [
        ("iptables-save.txt", "iptables"),
        ("nft-ruleset.txt", "nftables"),
        ("ipvsadm.txt", "ipvs"),
    ];
    for (file, _) in FILES {
        let (code, v) = diagnose(&root, &state, &format!("{root}/var/lib/kdiag/{file}"));
        assert_eq!(code, Some(0), "{file}: {v:#}");
    }
    // kube-proxy stopped syncing and the hostnames pods moved: every mode's rules are stale
    let stale = lab_with(base.path(), "proxy-rules-stale");
    let sroot = stale.info["nodes"]["node-1"].as_str().unwrap().to_string();
    let sstate = stale.info["cluster_state"].as_str().unwrap().to_string();
    for (file, mode) in FILES {
        let (code, v) = diagnose(&sroot, &sstate, &format!("{sroot}/var/lib/kdiag/{file}"));
        assert_eq!(code, Some(1), "{file}: {v:#}");
        let stale: Vec<&serde_json::Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "proxy.rules-stale")
            .collect();
        assert_eq!(stale.len(), 2, "{file}: {v:#}");
        let summary = stale[0]["summary"].as_str().unwrap();
        assert!(summary.contains("rules for default/hostnames"), "{summary}");
        let traced = stale[0]["evidence"].as_array().unwrap().iter().any(|e| {
            e["source"]
                .as_str()
                .unwrap()
                .starts_with(&format!("trace ({mode})"))
        });
        assert!(traced, "{file}: {:#}", stale[0]);
        assert!(
            summary.contains("3 endpoint(s) the API no longer lists"),
            "{summary}"
        );
    }
    drop(stale);
    let garbage = base.path().join("garbage.rules");
    std::fs::write(
        &garbage,
        "*nat\n-A KUBE-SERVICES -d 300.1.1.1/32 -j X\nCOMMIT\n",
    )
    .unwrap();
    let e = one_line_error(&[
        "diagnose",
        "--root",
        &root,
        "--cluster-state",
        &state,
        "--rules",
        garbage.to_str().unwrap(),
    ]);
    assert!(e.contains("line 2"), "{e}");
}
