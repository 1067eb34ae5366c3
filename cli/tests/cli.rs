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
