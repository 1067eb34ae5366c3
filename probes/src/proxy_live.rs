//! [live] kube-proxy's rules as the current network namespace has them: `iptables-save`
//! (and each backend's own `iptables-legacy-save` / `iptables-nft-save`), `nft -j list
//! ruleset`, and the IPVS table over generic netlink (falling back to `/proc/net/ip_vs`).
//!
//! The I/O shell only: it runs the tools (each with a timeout; their stderr goes into the
//! error) and opens one netlink socket, then hands text to the same parsers the saved dumps
//! go through ([`crate::iptables`], [`crate::nft`], [`crate::ipvs`]). Read-only: it sends
//! netlink GET requests and runs the `*-save` / `list` commands, nothing that changes a rule.
//! To look at another namespace, run kdiag inside it (`ip netns exec NS kdiag ...`).

use crate::finding::Finding;
use crate::iptables::split::{backend_split, programmed_modes, Dump, Programmed, ProxyMode};
use crate::ipvs::netlink::{self, Message, NetlinkError, NlDest, NlService};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why the live rules could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The tool is not installed (or not on PATH).
    #[error("{tool} not found: install the {package} package (e.g. `apt-get install {package}`)")]
    Missing {
        /// The command.
        tool: String,
        /// The distribution package that has it.
        package: &'static str,
    },
    /// The tool ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its stderr, on one line.
        stderr: String,
    },
    /// The tool did not finish in time (it was killed).
    #[error("`{cmd}` did not finish within {secs:.1} s (killed){}", stderr_suffix(.stderr))]
    Timeout {
        /// The command line.
        cmd: String,
        /// The timeout.
        secs: f64,
        /// What it had written to stderr.
        stderr: String,
    },
    /// The tool's output is not UTF-8.
    #[error("`{cmd}` printed something that is not UTF-8 text")]
    NotText {
        /// The command line.
        cmd: String,
    },
    /// A system call failed.
    #[error("failed to {what}: {err}")]
    Io {
        /// What kdiag was doing.
        what: String,
        /// The error.
        err: std::io::Error,
    },
    /// The IPVS netlink answer could not be used.
    #[error("IPVS over generic netlink: {0}")]
    Netlink(NetlinkError),
    /// A dump read from the node does not parse.
    #[error("{from}: {msg}")]
    Parse {
        /// The command it came from.
        from: String,
        /// The parser's error (with its line).
        msg: String,
    },
    /// Rules of more than one kube-proxy mode are programmed.
    #[error("rules of several kube-proxy modes are programmed here ({found}): give --mode iptables|nftables|ipvs")]
    Ambiguous {
        /// Each mode with its evidence.
        found: String,
    },
    /// No source of rules could be read at all.
    #[error("could not read any rules in this network namespace: {why}")]
    NothingRead {
        /// Each source's error.
        why: String,
    },
    /// No kube-proxy rules at all.
    #[error("no kube-proxy rules in this network namespace ({looked}); run kdiag in the node's namespace (`ip netns exec`, or `nsenter -t PID -n`) or give --rules FILE")]
    NothingProgrammed {
        /// What was looked at and what each said.
        looked: String,
    },
    /// Neither the IPVS netlink family nor /proc/net/ip_vs exists.
    #[error(
        "IPVS is not available in this kernel (no \"IPVS\" generic netlink family, no \
         /proc/net/ip_vs): load the ip_vs module (`modprobe ip_vs`) if kube-proxy runs in IPVS \
         mode, else trace with --mode iptables or --mode nftables"
    )]
    NoIpvs,
}

fn stderr_suffix(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Text read from the node and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The command (`iptables-nft-save`), or `netlink IPVS` / `/proc/net/ip_vs`.
    pub source: String,
    /// What it printed (for netlink: the table as `ipvsadm -Sn` text).
    pub text: String,
}

/// The distribution package a tool comes in.
fn package_of(tool: &str) -> &'static str {
    if tool.starts_with("nft") {
        "nftables"
    } else if tool.starts_with("ipvsadm") {
        "ipvsadm"
    } else if tool.starts_with("ipset") {
        "ipset"
    } else {
        "iptables"
    }
}

/// One line of a tool's stderr: lines joined with "; ", at most 300 bytes.
fn one_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

/// Runs `tool args` with a timeout; its stdout as text, or an error carrying its stderr.
pub fn run(tool: &str, args: &[&str], timeout: Duration) -> Result<String, LiveError> {
    let cmd = std::iter::once(tool)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = match Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LiveError::Missing {
                tool: tool.to_string(),
                package: package_of(tool),
            })
        }
        Err(err) => {
            return Err(LiveError::Io {
                what: format!("run `{cmd}`"),
                err,
            })
        }
    };
    // Drain both pipes on their own threads so a chatty tool never blocks on a full pipe.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    // (A grandchild that inherited a pipe may hold it open past a kill: the results come
    // through channels read with a deadline, never a join that could hang.)
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut b);
        }
        let _ = out_tx.send(b);
    });
    std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut b);
        }
        let _ = err_tx.send(b);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                // our own child, by its handle
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LiveError::Io {
                    what: format!("wait for `{cmd}`"),
                    err,
                });
            }
        }
    };
    let grace = Duration::from_millis(200);
    let out = match status {
        Some(_) => out_rx.recv_timeout(timeout.max(grace)).ok(),
        None => None,
    };
    let err = one_line(&err_rx.recv_timeout(grace).unwrap_or_default());
    // exited, but something it started still holds its output open: as good as a hang
    let (Some(status), Some(out)) = (status, out) else {
        return Err(LiveError::Timeout {
            cmd,
            secs: timeout.as_secs_f64(),
            stderr: err,
        });
    };
    if !status.success() {
        return Err(LiveError::Failed {
            cmd,
            status: status.to_string(),
            stderr: if err.is_empty() {
                "(nothing on stderr)".into()
            } else {
                err
            },
        });
    }
    String::from_utf8(out).map_err(|_| LiveError::NotText { cmd })
}

/// Which `iptables-save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-save`: whichever backend the host's alternatives point at.
    Default,
    /// `iptables-legacy-save` (x_tables).
    Legacy,
    /// `iptables-nft-save` (nf_tables).
    Nft,
}

/// The save command for `backend` and the address family (`ip6tables-*` when `ipv6`).
pub fn save_command(backend: Backend, ipv6: bool) -> String {
    let base = if ipv6 { "ip6tables" } else { "iptables" };
    match backend {
        Backend::Default => format!("{base}-save"),
        Backend::Legacy => format!("{base}-legacy-save"),
        Backend::Nft => format!("{base}-nft-save"),
    }
}

/// `iptables-save` (or `ip6tables-save`) of one backend.
pub fn iptables_save(
    backend: Backend,
    ipv6: bool,
    timeout: Duration,
) -> Result<Captured, LiveError> {
    let tool = save_command(backend, ipv6);
    let text = run(&tool, &[], timeout)?;
    Ok(Captured { source: tool, text })
}

/// `ipset save`: kube-proxy's IPVS-mode sets (`KUBE-CLUSTER-IP`, `KUBE-LOOP-BACK`, ...).
pub fn ipset_save(timeout: Duration) -> Result<Captured, LiveError> {
    let tool = "ipset";
    let text = run(tool, &["save"], timeout)?;
    Ok(Captured {
        source: "ipset save".into(),
        text,
    })
}

/// `nft -j list ruleset`.
pub fn nft_ruleset(timeout: Duration) -> Result<Captured, LiveError> {
    let text = run("nft", &["-j", "list", "ruleset"], timeout)?;
    Ok(Captured {
        source: "nft -j list ruleset".into(),
        text,
    })
}

/// A netlink socket for generic netlink in the current namespace.
struct Genl {
    sock: socket2::Socket,
    seq: u32,
    buf: Vec<u8>,
}

const AF_NETLINK: i32 = 16;
const NETLINK_GENERIC: i32 = 16;
const SOCK_RAW: i32 = 3;

impl Genl {
    fn open(timeout: Duration) -> Result<Genl, LiveError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |err| LiveError::Io { what, err }
        };
        let sock = socket2::Socket::new(
            socket2::Domain::from(AF_NETLINK),
            socket2::Type::from(SOCK_RAW),
            Some(socket2::Protocol::from(NETLINK_GENERIC)),
        )
        .map_err(io("open a generic netlink socket"))?;
        sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(io("set the netlink socket's timeout"))?;
        Ok(Genl {
            sock,
            seq: 0,
            buf: vec![0; 256 * 1024],
        })
    }

    /// Sends one request (built by `make(seq)`) and reads the answer's messages up to
    /// `NLMSG_DONE` (dump) or the acknowledgement.
    fn request(
        &mut self,
        what: &str,
        make: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<Vec<Message>, LiveError> {
        self.seq = self.seq.wrapping_add(1);
        let req = make(self.seq);
        (&self.sock).write_all(&req).map_err(|err| LiveError::Io {
            what: format!("send the netlink {what} request"),
            err,
        })?;
        let mut all = Vec::new();
        loop {
            let n = (&self.sock)
                .read(&mut self.buf)
                .map_err(|err| LiveError::Io {
                    what: format!("read the netlink {what} answer"),
                    err,
                })?;
            if n == 0 {
                return Ok(all);
            }
            let msgs = netlink::parse_messages(&self.buf[..n]).map_err(LiveError::Netlink)?;
            let end = msgs
                .iter()
                .any(|m| matches!(m, Message::Done | Message::Ack));
            all.extend(msgs);
            if end {
                return Ok(all);
            }
        }
    }
}

/// The IPVS table over generic netlink, as `ipvsadm -Sn` text; `Ok(None)` when the kernel
/// has no IPVS family (no ip_vs module).
pub fn ipvs_netlink(timeout: Duration) -> Result<Option<String>, LiveError> {
    let mut g = Genl::open(timeout)?;
    let family = match g.request("family", |seq| {
        netlink::get_family_request(netlink::IPVS_GENL_NAME, seq)
    }) {
        Ok(msgs) => netlink::family_id(&msgs).map_err(LiveError::Netlink)?,
        Err(LiveError::Netlink(NetlinkError::Kernel { errno: 2 })) => None,
        Err(e) => return Err(e),
    };
    let Some(family) = family else {
        return Ok(None);
    };
    let msgs = g.request("IPVS_CMD_GET_SERVICE", |seq| {
        netlink::get_services_request(family, seq)
    })?;
    let services = netlink::services(&msgs).map_err(LiveError::Netlink)?;
    let mut table: Vec<(NlService, Vec<NlDest>)> = Vec::with_capacity(services.len());
    for svc in services {
        let msgs = g.request("IPVS_CMD_GET_DEST", |seq| {
            netlink::get_dests_request(family, seq, &svc)
        })?;
        let reals = netlink::dests(&msgs, svc.af).map_err(LiveError::Netlink)?;
        table.push((svc, reals));
    }
    Ok(Some(netlink::render_save(&table)))
}

/// The IPVS table: netlink first, then `/proc/net/ip_vs`; [`LiveError::NoIpvs`] when the
/// kernel has neither.
pub fn ipvs_table(timeout: Duration) -> Result<Captured, LiveError> {
    if let Some(text) = ipvs_netlink(timeout)? {
        return Ok(Captured {
            source: "IPVS over generic netlink (as ipvsadm -Sn)".into(),
            text,
        });
    }
    match std::fs::read_to_string("/proc/net/ip_vs") {
        Ok(text) => Ok(Captured {
            source: "/proc/net/ip_vs".into(),
            text,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LiveError::NoIpvs),
        Err(err) => Err(LiveError::Io {
            what: "read /proc/net/ip_vs".into(),
            err,
        }),
    }
}

/// The addresses `ip -j addr show` lists (what `-m addrtype --dst-type LOCAL` matches,
/// beside loopback).
pub fn local_addresses(timeout: Duration) -> Result<Vec<IpAddr>, LiveError> {
    let text = run("ip", &["-j", "addr", "show"], timeout).map_err(|e| match e {
        LiveError::Missing { tool, .. } => LiveError::Missing {
            tool,
            package: "iproute2",
        },
        e => e,
    })?;
    parse_ip_addr_json(&text).map_err(|msg| LiveError::Parse {
        from: "ip -j addr show".into(),
        msg,
    })
}

/// The `local` addresses in `ip -j addr show` output. Pure.
fn parse_ip_addr_json(text: &str) -> Result<Vec<IpAddr>, String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("line {}: not the JSON `ip -j` prints: {e}", e.line()))?;
    let links = v.as_array().ok_or("not a JSON array of links")?;
    let mut out = Vec::new();
    for link in links {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(out)
}

/// What `kdiag trace --live` traces: the mode, the rules' text, and what else it saw.
#[derive(Debug)]
pub struct Selection {
    /// The mode traced (given, or the only one programmed).
    pub mode: ProxyMode,
    /// The rules of that mode.
    pub captured: Captured,
    /// Every kube-proxy rule set found (when the mode was detected).
    pub programmed: Vec<Programmed>,
    /// `proxy.backend-split` from the two iptables backends (when they were read).
    pub findings: Vec<Finding>,
    /// Sources that could not be read, one line each (`iptables-legacy-save not found ...`).
    pub notes: Vec<String>,
}

/// What the current namespace has programmed, read from every source asked for.
#[derive(Debug)]
pub struct Inspection {
    /// The iptables dump to trace: the first of `iptables-save`, `iptables-nft-save`,
    /// `iptables-legacy-save` with a nat KUBE-SERVICES chain, else the first read.
    pub iptables: Option<Captured>,
    /// `nft -j list ruleset`.
    pub nft: Option<Captured>,
    /// The IPVS table.
    pub ipvs: Option<Captured>,
    /// Every kube-proxy rule set found, by mode.
    pub programmed: Vec<Programmed>,
    /// `proxy.backend-split` from the two iptables backends.
    pub findings: Vec<Finding>,
    /// Sources that could not be read, one line each.
    pub notes: Vec<String>,
    /// What each source that was read said about kube-proxy (for "nothing programmed").
    looked: Vec<String>,
}

/// The iptables dumps of the three save commands, parsed lazily by the caller.
struct IptablesDumps {
    default: Result<Captured, LiveError>,
    legacy: Result<Captured, LiveError>,
    nft: Result<Captured, LiveError>,
}

fn read_iptables(ipv6: bool, timeout: Duration) -> IptablesDumps {
    IptablesDumps {
        default: iptables_save(Backend::Default, ipv6, timeout),
        legacy: iptables_save(Backend::Legacy, ipv6, timeout),
        nft: iptables_save(Backend::Nft, ipv6, timeout),
    }
}

fn parse_ipt<'a>(c: &'a Captured) -> Result<crate::iptables::Ruleset<'a>, LiveError> {
    crate::iptables::parse_iptables_save(&c.text).map_err(|e| LiveError::Parse {
        from: c.source.clone(),
        msg: e.to_string(),
    })
}

fn has_kube_services(r: &crate::iptables::Ruleset<'_>) -> bool {
    r.table("nat")
        .is_some_and(|t| t.chain("KUBE-SERVICES").is_some())
}

/// Reads the current namespace's rules: only `mode`'s when given (its source failing is an
/// error), else every source (a source that fails is a note). `ipv6` picks `ip6tables-*`.
pub fn inspect(
    mode: Option<ProxyMode>,
    ipv6: bool,
    timeout: Duration,
) -> Result<Inspection, LiveError> {
    let mut notes = Vec::new();
    let ipt = match mode {
        None | Some(ProxyMode::Iptables) => Some(read_iptables(ipv6, timeout)),
        _ => None,
    };
    let nft = match mode {
        None | Some(ProxyMode::Nftables) => Some(nft_ruleset(timeout)),
        _ => None,
    };
    let ipvs = match mode {
        None | Some(ProxyMode::Ipvs) => Some(ipvs_table(timeout)),
        _ => None,
    };
    // parse what was read
    let mut findings = Vec::new();
    let mut ipt_pick: Option<Captured> = None;
    let mut programmed = Vec::new();
    let mut looked = Vec::new();
    let mut errors = Vec::new();
    if let Some(d) = &ipt {
        let parsed: Vec<(&Captured, crate::iptables::Ruleset<'_>)> =
            [&d.default, &d.nft, &d.legacy]
                .into_iter()
                .filter_map(|r| match r {
                    Ok(c) => Some(parse_ipt(c).map(|p| (c, p))),
                    Err(e) => {
                        notes.push(e.to_string());
                        None
                    }
                })
                .collect::<Result<_, _>>()?;
        let dumps: Vec<Dump<'_, '_>> = parsed
            .iter()
            .map(|(c, r)| Dump {
                source: &c.source,
                rules: r,
            })
            .collect();
        let by = |b: Backend| {
            let name = save_command(b, ipv6);
            dumps.iter().find(|d| d.source == name).copied()
        };
        findings.extend(backend_split(by(Backend::Legacy), by(Backend::Nft)));
        programmed.extend(programmed_modes(&dumps, None, None));
        ipt_pick = parsed
            .iter()
            .find(|(_, r)| has_kube_services(r))
            .or(parsed.first())
            .map(|(c, _)| (*c).clone());
        if let Some(c) = &ipt_pick {
            looked.push(format!("{}: no kube-proxy chains", c.source));
        }
    }
    let mut nft_pick = None;
    if let Some(n) = nft {
        match n {
            Ok(c) => {
                let rs = crate::nft::parse_ruleset(&c.text).map_err(|e| LiveError::Parse {
                    from: c.source.clone(),
                    msg: e.to_string(),
                })?;
                let tables: Vec<(String, String)> = rs
                    .tables
                    .iter()
                    .map(|t| (t.family.as_str().to_string(), t.name.clone()))
                    .collect();
                programmed.extend(programmed_modes(&[], Some((&c.source, &tables)), None));
                looked.push(format!("{}: no table kube-proxy", c.source));
                nft_pick = Some(c);
            }
            Err(e) if mode.is_some() => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut ipvs_pick = None;
    if let Some(v) = ipvs {
        match v {
            Ok(c) => {
                let t = crate::ipvs::parse_ipvs(&c.text).map_err(|e| LiveError::Parse {
                    from: c.source.clone(),
                    msg: e.to_string(),
                })?;
                programmed.extend(programmed_modes(&[], None, Some((&c.source, &t))));
                looked.push(format!("{}: no virtual service", c.source));
                ipvs_pick = Some(c);
            }
            Err(e) if mode.is_some() => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    programmed.sort_by_key(|p| p.mode);
    programmed.dedup_by_key(|p| p.mode);
    if ipt_pick.is_none() {
        if let Some(e) = ipt.and_then(|d| d.default.err()) {
            if mode.is_some() {
                return Err(e);
            }
        }
    }
    notes.extend(errors);
    Ok(Inspection {
        iptables: ipt_pick,
        nft: nft_pick,
        ipvs: ipvs_pick,
        programmed,
        findings,
        notes,
        looked,
    })
}

/// Reads the current namespace's rules for `kdiag trace --live` ([`inspect`]) and picks the
/// mode to trace: `mode` when given, else the one mode whose rules are programmed (an error
/// names the modes when several are, or what was looked at when none is).
pub fn select(
    mode: Option<ProxyMode>,
    ipv6: bool,
    timeout: Duration,
) -> Result<Selection, LiveError> {
    let Inspection {
        iptables: ipt_pick,
        nft: nft_pick,
        ipvs: ipvs_pick,
        programmed,
        findings,
        notes,
        mut looked,
    } = inspect(mode, ipv6, timeout)?;
    let chosen = match mode {
        Some(m) => m,
        None => match programmed.as_slice() {
            [one] => one.mode,
            [] if looked.is_empty() => {
                return Err(LiveError::NothingRead {
                    why: notes.join("; "),
                })
            }
            [] => {
                looked.extend(notes);
                return Err(LiveError::NothingProgrammed {
                    looked: looked.join("; "),
                });
            }
            many => {
                return Err(LiveError::Ambiguous {
                    found: many
                        .iter()
                        .map(|p| format!("{}: {}", p.mode, p.evidence))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
            }
        },
    };
    let captured = match chosen {
        ProxyMode::Iptables => ipt_pick.ok_or(LiveError::NothingProgrammed {
            looked: "no iptables-save output".into(),
        })?,
        ProxyMode::Nftables => nft_pick.ok_or(LiveError::NothingProgrammed {
            looked: "no nft output".into(),
        })?,
        ProxyMode::Ipvs => ipvs_pick.ok_or(LiveError::NoIpvs)?,
    };
    Ok(Selection {
        mode: chosen,
        captured,
        programmed,
        findings,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let e = run("kdiag-no-such-tool-save", &[], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, LiveError::Missing { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "kdiag-no-such-tool-save not found: install the iptables package (e.g. `apt-get install iptables`)"
        );
        let e = run("nft-kdiag-missing", &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("nftables package"), "{e}");
    }

    #[test]
    fn failure_carries_stderr_on_one_line() {
        let e = run(
            "sh",
            &["-c", "echo first >&2; echo second >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c echo first >&2; echo second >&2; exit 3` failed (exit status: 3): first; second"
        );
    }

    #[test]
    fn slow_tool_is_killed_at_the_timeout() {
        let t = Instant::now();
        let e = run(
            "sh",
            &["-c", "echo started >&2; exec sleep 30"],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(matches!(e, LiveError::Timeout { .. }), "{e}");
        assert!(e.to_string().ends_with("(killed): started"), "{e}");
    }

    #[test]
    fn output_held_open_by_a_grandchild_is_a_timeout_not_a_hang() {
        let t = Instant::now();
        let e = run(
            "sh",
            &["-c", "sleep 3 & echo partial"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(matches!(e, LiveError::Timeout { .. }), "{e}");
    }

    #[test]
    fn output_is_returned() {
        let out = run(
            "sh",
            &["-c", "printf '*nat\\nCOMMIT\\n'"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out, "*nat\nCOMMIT\n");
    }

    #[test]
    fn local_addresses_from_ip_json() {
        let text = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}]},
{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.168.0.2","prefixlen":24},{"family":"inet6","local":"fe80::1","prefixlen":64}]},
{"ifindex":3,"ifname":"kube-ipvs0","addr_info":[]},{"ifindex":4,"ifname":"x"}]"#;
        let ips = parse_ip_addr_json(text).unwrap();
        let want: Vec<IpAddr> = ["127.0.0.1", "::1", "192.168.0.2", "fe80::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        assert_eq!(parse_ip_addr_json("[]").unwrap(), Vec::<IpAddr>::new());
        let e = parse_ip_addr_json("[\n{").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_ip_addr_json("{}").is_err());
    }

    #[test]
    fn save_commands() {
        assert_eq!(save_command(Backend::Default, false), "iptables-save");
        assert_eq!(save_command(Backend::Legacy, false), "iptables-legacy-save");
        assert_eq!(save_command(Backend::Nft, true), "ip6tables-nft-save");
    }

    #[test]
    fn ipvs_without_the_module_is_a_clear_error() {
        // ip_vs registers both the netlink family and /proc/net/ip_vs (in every namespace):
        // without it the answer is NoIpvs; with it, a table that parses (as root) or a
        // one-line permission error. Never a panic or a hang.
        let loaded = std::path::Path::new("/proc/net/ip_vs").exists();
        match ipvs_table(Duration::from_secs(2)) {
            Ok(c) => {
                assert!(loaded, "a table without ip_vs: {c:?}");
                crate::ipvs::parse_ipvs(&c.text).expect("the live table parses");
            }
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'), "{s}");
                if loaded {
                    assert!(
                        matches!(e, LiveError::Netlink(_) | LiveError::Io { .. }),
                        "{s}"
                    );
                } else {
                    assert!(matches!(e, LiveError::NoIpvs), "{s}");
                    assert!(s.contains("modprobe ip_vs"), "{s}");
                }
            }
        }
    }
}
