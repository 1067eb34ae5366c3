//! `kdiag trace --live` and `kdiag diagnose --live-rules` against rules programmed for real,
//! only inside network namespaces these tests create (`ip netns add kdiag-live-PID-N`,
//! deleted by a guard on every path). Each test checks afterwards that its namespace is gone
//! and that the root namespace's `iptables-legacy-save`, `iptables-nft-save` and
//! `nft list ruleset` output did not change. No packet is sent anywhere.
//!
//! Needs root, `ip`, `iptables` (iptables-nft-restore, iptables-legacy-restore) and `nft`
//! (scripts/test installs the iptables and nftables packages). Without them each test prints
//! a loud SKIPPED line and returns; with KDIAG_NETNS=1 a missing prerequisite fails instead.

use kdiag_probes::iptables::render::{
    render_iptables, ProxierConfig, RenderEndpoint, RenderServicePort,
};
use kdiag_probes::iptables::IpNet;
use kdiag_probes::nft::render::{render_nft_script, NftRenderConfig, NftServicePort};
use kdiag_probes::trace::Proto;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const NODE_IP: &str = "192.168.0.2";

fn kdiag_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kdiag")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `None` when the test can run; else why not (a SKIPPED line, or a failure under
/// KDIAG_NETNS=1).
fn prerequisites(tools: &[&str]) -> Option<String> {
    let why = if !is_root() {
        Some("not root (network namespaces and netfilter rules need CAP_NET_ADMIN)".to_string())
    } else {
        tools
            .iter()
            .find(|t| !have(t))
            .map(|t| format!("{t} is not installed (scripts/test installs iptables and nftables)"))
    };
    let why = why?;
    if std::env::var("KDIAG_NETNS").as_deref() == Ok("1") {
        panic!("KDIAG_NETNS=1 but {why}");
    }
    skipped(&why);
    Some(why)
}

/// A SKIPPED line straight to stderr (libtest's capture only catches `eprintln!`), so it shows
/// even when the test passes.
fn skipped(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "!!!!!!!! SKIPPED live netns test ({}): {why} !!!!!!!!",
        std::thread::current().name().unwrap_or("?")
    );
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(cmd);
    c.args(args)
        .env("KDIAG_LOG", "error")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// What the root namespace's rules look like (comment lines, which carry timestamps, left out).
fn root_snapshot() -> String {
    let mut s = String::new();
    for (cmd, args) in [
        ("iptables-legacy-save", &[][..]),
        ("iptables-nft-save", &[][..]),
        ("ip6tables-legacy-save", &[][..]),
        ("ip6tables-nft-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        if !have(cmd) {
            continue;
        }
        let out = run(cmd, args, None);
        s.push_str(&format!("== {cmd} (exit {:?})\n", out.status.code()));
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if !l.starts_with('#') {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    s
}

fn netns_list() -> String {
    String::from_utf8_lossy(&run("ip", &["netns", "list"], None).stdout).into_owned()
}

/// A network namespace this test owns; deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kdiag-live-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = run("ip", &["netns", "add", &name], None);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    /// Runs `cmd args` inside the namespace.
    fn exec(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run("ip", &all, stdin)
    }

    /// Like `exec`, and the command must succeed.
    fn ok(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.exec(cmd, args, stdin);
        assert!(
            out.status.success(),
            "{cmd} {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kdiag ARGS -o json` inside the namespace: exit code, JSON (when it printed some), stderr.
    fn kdiag(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        let out = self.exec(kdiag_bin(), &all, None);
        json_of(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name], None);
        if !out.status.success() {
            eprintln!(
                "failed to delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn json_of(out: Output) -> (i32, serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `body` with a fresh namespace, then checks that the namespace is gone and the root
/// namespace's rules are as they were.
fn with_netns(body: impl FnOnce(&Netns)) {
    let before = root_snapshot();
    let name;
    {
        let ns = Netns::new();
        name = ns.name.clone();
        body(&ns);
    }
    assert!(
        !netns_list()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name)),
        "namespace {name} still exists"
    );
    assert_eq!(
        root_snapshot(),
        before,
        "the root namespace's rules changed"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ep(s: &str, port: u16) -> RenderEndpoint {
    RenderEndpoint {
        ip: ip(s),
        port,
        ready: true,
    }
}

fn svc(
    ns: &str,
    name: &str,
    proto: Proto,
    vip: &str,
    port: u16,
    node_port: Option<u16>,
    endpoints: Vec<RenderEndpoint>,
) -> RenderServicePort {
    RenderServicePort {
        namespace: ns.into(),
        name: name.into(),
        port_name: if proto == Proto::Udp { "dns" } else { "http" }.into(),
        protocol: proto,
        cluster_ip: ip(vip),
        port,
        node_port,
        endpoints,
    }
}

/// kube-dns (2 endpoints), web (NodePort 30080, 1 endpoint), empty (no endpoints).
fn cluster() -> Vec<RenderServicePort> {
    vec![
        svc(
            "kube-system",
            "kube-dns",
            Proto::Udp,
            "10.96.0.10",
            53,
            None,
            vec![ep("10.244.1.5", 53), ep("10.244.2.6", 53)],
        ),
        svc(
            "default",
            "web",
            Proto::Tcp,
            "10.96.0.20",
            80,
            Some(30080),
            vec![ep("10.244.1.7", 8080)],
        ),
        svc(
            "default",
            "empty",
            Proto::Tcp,
            "10.96.0.30",
            80,
            None,
            Vec::new(),
        ),
    ]
}

fn pod_cidr() -> IpNet {
    IpNet {
        addr: ip("10.244.0.0"),
        prefix: 16,
    }
}

fn iptables_dump(ports: &[RenderServicePort]) -> String {
    let ports: Vec<NftServicePort> = ports.iter().cloned().map(NftServicePort::from).collect();
    render_iptables(
        &ports,
        &ProxierConfig {
            ipv6: false,
            local_cidr: Some(pod_cidr()),
            masquerade_all: false,
            localhost_nodeports: true,
            nodeport_ips: None,
            node_ip: None,
            random_fully: true,
            // with nfacct, kube-proxy's rules match `-m nfacct --nfacct-name ...` counters it
            // creates over nfnetlink first; without them the kernel refuses the rule (ENOENT),
            // and the nfacct tool is not worth a package here. kube-proxy itself leaves the
            // matches out when the counters cannot be made, as here.
            nfacct: false,
        },
    )
}

fn nft_script(ports: &[RenderServicePort]) -> String {
    let ports: Vec<NftServicePort> = ports.iter().cloned().map(NftServicePort::from).collect();
    render_nft_script(
        &ports,
        &NftRenderConfig {
            ipv6: false,
            pod_cidr: Some(pod_cidr()),
            service_cidrs: vec![IpNet {
                addr: ip("10.96.0.0"),
                prefix: 16,
            }],
            nodeport_ips: None,
            node_ip: Some(ip(NODE_IP)),
            masquerade_all: false,
        },
    )
}

/// (src, dst, dport, proto, expected verdict).
const PACKETS: &[(&str, &str, &str, &str, &str)] = &[
    ("10.244.1.9", "10.96.0.10", "53", "udp", "dnat"),
    ("10.244.1.9", "10.96.0.20", "80", "tcp", "dnat"),
    ("10.244.1.9", "10.96.0.30", "80", "tcp", "reject"),
    (NODE_IP, "10.96.0.20", "80", "tcp", "dnat"),
    ("203.0.113.5", NODE_IP, "30080", "tcp", "dnat"),
    ("10.244.1.9", "10.97.0.99", "80", "tcp", "no-match"),
];

fn trace_args<'a>(p: &'a (&str, &str, &str, &str, &str)) -> Vec<&'a str> {
    vec![
        "trace",
        "--src",
        p.0,
        "--dst",
        p.1,
        "--dport",
        p.2,
        "--proto",
        p.3,
        "--node-ip",
        NODE_IP,
    ]
}

/// Traces every packet from the saved text (`--rules`) and live, and checks both agree on
/// verdict, endpoints and masquerade (and that the verdict is the expected one).
fn agree(ns: &Netns, saved: &str, mode: Option<&str>, live_source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules");
    std::fs::write(&file, saved).unwrap();
    let file = file.to_str().unwrap();
    for p in PACKETS {
        let mut saved_args = trace_args(p);
        saved_args.extend(["--rules", file]);
        let mut live_args = trace_args(p);
        live_args.push("--live");
        if let Some(m) = mode {
            saved_args.extend(["--mode", m]);
            live_args.extend(["--mode", m]);
        }
        saved_args.extend(["-o", "json"]);
        let (code_s2, s2, err_s) = json_of(run(kdiag_bin(), &saved_args, None));
        let (code_l, l, err_l) = ns.kdiag(&live_args);
        assert!(code_s2 < 2, "saved trace failed for {p:?}: {err_s}");
        assert!(code_l < 2, "live trace failed for {p:?}: {err_l}");
        assert_eq!(s2["verdict"], p.4, "saved verdict for {p:?}");
        assert_eq!(l["verdict"], s2["verdict"], "verdict for {p:?}");
        assert_eq!(l["endpoints"], s2["endpoints"], "endpoints for {p:?}");
        assert_eq!(l["masquerade"], s2["masquerade"], "masquerade for {p:?}");
        assert_eq!(code_l, code_s2, "exit code for {p:?}");
        let src = l["observations"]["trace"]["live"]["source"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(src, live_source, "live source for {p:?}");
        if p.4 == "dnat" {
            assert!(!l["endpoints"].as_array().unwrap().is_empty(), "{p:?}: {l}");
        }
    }
}

#[test]
fn live_iptables_traces_like_the_saved_dump() {
    if prerequisites(&["ip", "iptables-nft-restore", "iptables-nft-save", "nft"]).is_some() {
        return;
    }
    with_netns(|ns| {
        let dump = iptables_dump(&cluster());
        ns.ok("iptables-nft-restore", &[], Some(&dump));
        // the default `iptables-save` may be either backend: ask for the nft one's view
        // through the mode detection, which reads all three
        let out = ns.kdiag(
            &trace_args(&PACKETS[0])
                .into_iter()
                .chain(["--live"])
                .collect::<Vec<_>>(),
        );
        assert!(out.0 < 2, "{}", out.2);
        let source = out.1["observations"]["trace"]["live"]["source"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            source == "iptables-save" || source == "iptables-nft-save",
            "{source}"
        );
        assert_eq!(out.1["observations"]["trace"]["mode"], "iptables");
        agree(ns, &dump, None, &source);
        agree(ns, &dump, Some("iptables"), &source);

        // without --node-ip, --live takes the namespace's own addresses: give it the node's
        // (on lo: no interface, no route, nothing reachable from outside)
        ns.ok(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
            None,
        );
        for p in &PACKETS[3..5] {
            let mut args = trace_args(p);
            // drop the trailing `--node-ip NODE_IP`
            args.truncate(args.len() - 2);
            assert!(!args.contains(&"--node-ip"), "{args:?}");
            let mut live = args.clone();
            live.push("--live");
            let (code, l, err) = ns.kdiag(&live);
            assert!(code < 2, "{err}");
            assert_eq!(l["verdict"], "dnat", "{p:?}: {l}");
            assert_eq!(
                l["endpoints"],
                serde_json::json!(["10.244.1.7:8080"]),
                "{p:?}"
            );
            assert_eq!(
                l["observations"]["trace"]["node_ips"],
                serde_json::json!([NODE_IP]),
                "{p:?}"
            );
        }
    });
}

#[test]
fn live_nftables_traces_like_the_saved_script() {
    if prerequisites(&["ip", "nft"]).is_some() {
        return;
    }
    with_netns(|ns| {
        let script = nft_script(&cluster());
        ns.ok("nft", &["-f", "-"], Some(&script));
        agree(ns, &script, None, "nft -j list ruleset");
    });
}

#[test]
fn live_rules_of_two_modes_ask_for_mode() {
    if prerequisites(&["ip", "iptables-nft-restore", "nft"]).is_some() {
        return;
    }
    with_netns(|ns| {
        ns.ok(
            "iptables-nft-restore",
            &[],
            Some(&iptables_dump(&cluster())),
        );
        ns.ok("nft", &["-f", "-"], Some(&nft_script(&cluster())));
        let args = trace_args(&PACKETS[0]);
        let mut live = args.clone();
        live.push("--live");
        let (code, _, err) = ns.kdiag(&live);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("several kube-proxy modes"), "{err}");
        assert!(err.contains("give --mode"), "{err}");
        assert!(err.contains("table ip kube-proxy"), "{err}");
        live.extend(["--mode", "nftables"]);
        let (code, v, err) = ns.kdiag(&live);
        assert_eq!(code, 0, "{err}");
        assert_eq!(v["verdict"], "dnat");
        assert_eq!(v["observations"]["trace"]["mode"], "nftables");
        // diagnose: configured nftables, iptables rules beside it
        let (code, v, err) = ns.kdiag(&["diagnose", "--live-rules", "--proxy-mode", "nftables"]);
        assert_eq!(code, 1, "{err}");
        let f = &v["findings"][0];
        assert_eq!(f["code"], "proxy.backend-split", "{v}");
        assert_eq!(f["severity"], "warning", "{v}");
        assert!(
            f["summary"]
                .as_str()
                .unwrap()
                .contains("iptables rules from another mode"),
            "{v}"
        );
    });
}

#[test]
fn live_nothing_programmed_and_no_ipvs_are_one_line_errors() {
    if prerequisites(&["ip"]).is_some() {
        return;
    }
    with_netns(|ns| {
        let mut args = trace_args(&PACKETS[0]);
        args.push("--live");
        let (code, _, err) = ns.kdiag(&args);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("no kube-proxy rules in this network namespace")
                || err.contains("not found: install"),
            "{err}"
        );
        args.extend(["--mode", "ipvs"]);
        let (code, v, err) = ns.kdiag(&args);
        if std::path::Path::new("/proc/net/ip_vs").exists() {
            // ip_vs is loaded: an empty table, so no virtual service matches
            assert_eq!(code, 0, "{err}");
            assert_eq!(v["verdict"], "no-match");
        } else {
            assert_eq!(code, 2, "{err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(
                err.contains("IPVS is not available in this kernel"),
                "{err}"
            );
            assert!(err.contains("modprobe ip_vs"), "{err}");
        }
        // --live with --rules is a usage error
        let (code, _, err) = ns.kdiag(&[
            "trace",
            "--src",
            "10.0.0.1",
            "--dst",
            "10.0.0.2",
            "--dport",
            "1",
            "--live",
            "--rules",
            "/nonexistent",
        ]);
        assert_eq!(code, 2, "{err}");
    });
}

#[test]
fn live_backend_split_between_legacy_and_nft() {
    if prerequisites(&["ip", "iptables-nft-restore", "iptables-legacy-restore"]).is_some() {
        return;
    }
    with_netns(|ns| {
        let all = cluster();
        // kube-dns and web in legacy; web and empty in nft
        let legacy = iptables_dump(&all[..2]);
        let nft = iptables_dump(&all[1..]);
        let out = ns.exec("iptables-legacy-restore", &[], Some(&legacy));
        if !out.status.success() {
            let why = format!(
                "iptables-legacy-restore cannot program this kernel: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if std::env::var("KDIAG_NETNS").as_deref() == Ok("1") {
                panic!("KDIAG_NETNS=1 but {why}");
            }
            skipped(&why);
            return;
        }
        ns.ok("iptables-nft-restore", &[], Some(&nft));
        let mut args = trace_args(&PACKETS[1]);
        args.push("--live");
        let (code, v, err) = ns.kdiag(&args);
        assert_eq!(code, 1, "{err}");
        let split: Vec<&serde_json::Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "proxy.backend-split")
            .collect();
        assert_eq!(split.len(), 1, "{v}");
        let f = split[0];
        assert_eq!(f["severity"], "critical");
        assert!(
            f["summary"].as_str().unwrap().contains(
                "2 Service port(s) in iptables-legacy, 2 in iptables-nft (1 in both, 1 only in legacy, 1 only in nft)"
            ),
            "{f}"
        );
        let ev = |source: &str| {
            f["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["source"] == source)
                .map(|e| e["detail"].as_str().unwrap().to_string())
        };
        assert_eq!(
            ev("only in iptables-legacy-save").as_deref(),
            Some("kube-system/kube-dns:dns")
        );
        assert_eq!(
            ev("only in iptables-nft-save").as_deref(),
            Some("default/empty:http")
        );
        assert_eq!(ev("in both").as_deref(), Some("default/web:http"));
        // the same through diagnose, with kube-proxy configured for IPVS on top
        let (code, v, err) = ns.kdiag(&["diagnose", "--live-rules", "--proxy-mode", "ipvs"]);
        assert_eq!(code, 1, "{err}");
        let codes: Vec<&str> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["summary"].as_str().unwrap())
            .collect();
        assert_eq!(codes.len(), 2, "{v}");
        assert!(
            codes
                .iter()
                .any(|s| s.contains("configured for ipvs mode but the node has iptables rules")),
            "{v}"
        );
    });
}

/// A cluster state where web lists other endpoints than the rules programmed.
const STALE_STATE: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
  "spec":{"clusterIP":"10.96.0.10","selector":{"k8s-app":"kube-dns"},
          "ports":[{"name":"dns","port":53,"protocol":"UDP","targetPort":53}]}},
 {"kind":"Endpoints","metadata":{"name":"kube-dns","namespace":"kube-system"},
  "subsets":[{"addresses":[{"ip":"10.244.1.5"},{"ip":"10.244.2.6"}],
              "ports":[{"name":"dns","port":53,"protocol":"UDP"}]}]},
 {"kind":"Service","metadata":{"name":"web","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.20","selector":{"app":"web"},
          "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}},
 {"kind":"Endpoints","metadata":{"name":"web","namespace":"default"},
  "subsets":[{"addresses":[{"ip":"10.244.3.3"}],
              "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]},
 {"kind":"Pod","metadata":{"name":"client","namespace":"default"},"status":{"podIP":"10.244.1.9"}}
]}"#;

#[test]
fn live_rules_are_cross_checked_against_the_cluster_state() {
    if prerequisites(&["ip", "iptables-nft-restore"]).is_some() {
        return;
    }
    with_netns(|ns| {
        ns.ok(
            "iptables-nft-restore",
            &[],
            Some(&iptables_dump(&cluster())),
        );
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        std::fs::write(&state, STALE_STATE).unwrap();
        // diagnose also probes DNS and the Services: the namespace has no interface up and
        // no route, so every attempt fails at once without a packet leaving it
        let (code, v, err) = ns.kdiag(&[
            "diagnose",
            "--live-rules",
            "--cluster-state",
            state.to_str().unwrap(),
            "--timeout",
            "300ms",
            "--no-capture",
        ]);
        assert_eq!(code, 1, "{err}");
        let stale: Vec<&serde_json::Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "proxy.rules-stale")
            .collect();
        assert_eq!(stale.len(), 1, "{v}");
        let text = stale[0].to_string();
        assert!(text.contains("default/web:http"), "{text}");
        assert!(text.contains("10.244.1.7:8080"), "{text}");
        assert!(text.contains("10.244.3.3:8080"), "{text}");
        // kube-dns's rules agree with its endpoints: no finding about it
        assert!(
            !v["findings"].as_array().unwrap().iter().any(|f| f["code"]
                .as_str()
                .unwrap()
                .starts_with("proxy.")
                && f.to_string().contains("kube-dns:dns")),
            "{v}"
        );
    });
}
