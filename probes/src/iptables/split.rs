//! `proxy.backend-split` from what is actually programmed. Pure.
//!
//! Two ways a node ends up with half its rules where the other half never looks:
//! - kube-proxy's (or kubelet's) `KUBE-*` chains exist in both iptables backends, the
//!   x_tables one (`iptables-legacy-save`) and the nf_tables one (`iptables-nft-save`), or
//!   its Service rules are split between them ([`backend_split`]);
//! - kube-proxy is configured for one mode (its KubeProxyConfiguration `mode:`, or
//!   `--proxy-mode`) while the rules programmed are another mode's ([`mode_mismatch`]).
//!
//! [`programmed_modes`] says which of kube-proxy's rule sets exist: iptables mode
//! (`KUBE-SVC-*`/`KUBE-SEP-*` chains, or `KUBE-SERVICES` without ipset matches), IPVS mode
//! (virtual services, or `KUBE-SERVICES` matching kube-proxy's ipsets) and nftables mode
//! (a `kube-proxy` table).

use super::model::Ruleset;
use crate::finding::{Code, Finding, Severity};
use crate::ipvs::IpvsTable;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// kube-proxy's proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// `iptables` (the default on Linux).
    Iptables,
    /// `ipvs`.
    Ipvs,
    /// `nftables`.
    Nftables,
}

impl ProxyMode {
    /// The name kube-proxy's `mode:` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode kube-proxy does not have on Linux.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kube-proxy mode {0:?} (want iptables, ipvs or nftables)")]
pub struct UnknownMode(pub String);

impl FromStr for ProxyMode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            // kube-proxy's empty mode is its platform default: iptables on Linux
            "" | "iptables" => Ok(ProxyMode::Iptables),
            "ipvs" => Ok(ProxyMode::Ipvs),
            "nftables" => Ok(ProxyMode::Nftables),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// Why a KubeProxyConfiguration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ConfigError {
    /// 1-based line (0 when the YAML error has no position).
    pub line: u32,
    /// What is wrong.
    pub msg: String,
}

/// The mode in a KubeProxyConfiguration (kubeadm's `config.conf` in the kube-proxy
/// ConfigMap, mounted at `/var/lib/kube-proxy/config.conf`), with its line. No `mode:` or an
/// empty one is kube-proxy's default, iptables.
pub fn parse_kube_proxy_mode(text: &str) -> Result<(ProxyMode, u32), ConfigError> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
        line: e
            .location()
            .map(|l| u32::try_from(l.line()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        msg: format!("not YAML: {e}"),
    })?;
    let map = doc.as_mapping().ok_or(ConfigError {
        line: 1,
        msg: "not a KubeProxyConfiguration (not a YAML mapping)".into(),
    })?;
    if let Some(kind) = map.get("kind").and_then(|k| k.as_str()) {
        if kind != "KubeProxyConfiguration" {
            return Err(ConfigError {
                line: line_of(text, "kind:"),
                msg: format!("kind is {kind:?}, not KubeProxyConfiguration"),
            });
        }
    }
    let line = line_of(text, "mode:");
    match map.get("mode") {
        None | Some(serde_yaml::Value::Null) => Ok((ProxyMode::Iptables, line)),
        Some(serde_yaml::Value::String(s)) => {
            s.parse()
                .map(|m| (m, line))
                .map_err(|e: UnknownMode| ConfigError {
                    line,
                    msg: e.to_string(),
                })
        }
        Some(_) => Err(ConfigError {
            line,
            msg: "mode is not a string".into(),
        }),
    }
}

/// The 1-based line of the first top-level `key` (0 if none).
fn line_of(text: &str, key: &str) -> u32 {
    text.lines()
        .position(|l| l.starts_with(key))
        .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// One `iptables-save` dump and what wrote it (`iptables-legacy-save`, `iptables-nft-save`).
#[derive(Debug, Clone, Copy)]
pub struct Dump<'r, 'a> {
    /// The command (or file) the dump came from, for the evidence.
    pub source: &'r str,
    /// The parsed dump.
    pub rules: &'r Ruleset<'a>,
}

/// Chains kube-proxy (and kubelet) create: everything named `KUBE-*`.
fn is_kube_chain(name: &str) -> bool {
    name.starts_with("KUBE-")
}

/// `table/chain` of every `KUBE-*` chain, with the line it is declared on.
fn kube_chains(r: &Ruleset<'_>) -> BTreeMap<String, u32> {
    r.tables
        .iter()
        .flat_map(|t| {
            t.chains
                .iter()
                .filter(|c| is_kube_chain(c.name))
                .map(move |c| (format!("{}/{}", t.name, c.name), c.line))
        })
        .collect()
}

/// Service ports (`ns/name:port`, from kube-proxy's rule comments) with the first rule that
/// names each: `(line, rule)`.
fn service_rules<'a>(r: &Ruleset<'a>) -> BTreeMap<String, (u32, &'a str)> {
    let mut out = BTreeMap::new();
    for t in &r.tables {
        for c in t.chains.iter().filter(|c| is_kube_chain(c.name)) {
            for rule in &c.rules {
                let Some(comment) = rule.comment() else {
                    continue;
                };
                let name = comment.split_whitespace().next().unwrap_or_default();
                if name.contains('/') && !name.starts_with('/') {
                    out.entry(name.to_string()).or_insert((rule.line, rule.raw));
                }
            }
        }
    }
    out
}

/// At most `n` names, then "and N more".
fn some(names: &[&String], n: usize) -> String {
    let mut s = names
        .iter()
        .take(n)
        .map(|x| x.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > n {
        s.push_str(&format!(" and {} more", names.len() - n));
    }
    s
}

const SPLIT_FIX: &str = "find which backend kube-proxy, kubelet and the CNI use (`iptables -V` says \
     legacy or nf_tables in each of their containers; kube-proxy follows the backend kubelet's \
     KUBE-KUBELET-CANARY chain is in); make them all use the same one (the host's \
     `update-alternatives --config iptables`), then flush the other backend's KUBE-* chains \
     (`iptables-legacy -t nat -F` / `iptables-nft -t nat -F` for the stale one) and restart kube-proxy";

/// `proxy.backend-split` from the two iptables backends' dumps (either may be absent): the
/// Services whose rules are in each, and the `KUBE-*` chains declared in both.
pub fn backend_split<'a>(legacy: Option<Dump<'_, 'a>>, nft: Option<Dump<'_, 'a>>) -> Vec<Finding> {
    let (Some(legacy), Some(nft)) = (legacy, nft) else {
        return Vec::new();
    };
    let (lc, nc) = (kube_chains(legacy.rules), kube_chains(nft.rules));
    let both: Vec<&String> = lc.keys().filter(|k| nc.contains_key(*k)).collect();
    let (ls, ns) = (service_rules(legacy.rules), service_rules(nft.rules));
    if !ls.is_empty() && !ns.is_empty() {
        let only_l: Vec<&String> = ls.keys().filter(|k| !ns.contains_key(*k)).collect();
        let only_n: Vec<&String> = ns.keys().filter(|k| !ls.contains_key(*k)).collect();
        let in_both: Vec<&String> = ls.keys().filter(|k| ns.contains_key(*k)).collect();
        let mut f = Finding::new(
            Code::ProxyBackendSplit,
            format!(
                "kube-proxy's Service rules are in both iptables backends: {} Service port(s) in \
                 iptables-legacy, {} in iptables-nft ({} in both, {} only in legacy, {} only in nft); \
                 a packet sees only the rules of the backend that hooked it first",
                ls.len(),
                ns.len(),
                in_both.len(),
                only_l.len(),
                only_n.len()
            ),
        );
        for (d, set) in [(&legacy, &ls), (&nft, &ns)] {
            if let Some((name, (line, raw))) = set.iter().next() {
                f = f.evidence(
                    format!("{} line {line}", d.source),
                    format!("{raw}  ({name}; {} Service port(s) here)", set.len()),
                );
            }
        }
        if !only_l.is_empty() {
            f = f.evidence(format!("only in {}", legacy.source), some(&only_l, 10));
        }
        if !only_n.is_empty() {
            f = f.evidence(format!("only in {}", nft.source), some(&only_n, 10));
        }
        if !in_both.is_empty() {
            f = f.evidence("in both", some(&in_both, 10));
        }
        return vec![f.remediation(SPLIT_FIX)];
    }
    if both.is_empty() {
        return Vec::new();
    }
    let mut f = Finding::new(
        Code::ProxyBackendSplit,
        format!(
            "{} KUBE-* chain(s) exist in both iptables-legacy and iptables-nft ({}): kube-proxy \
             and kubelet may be writing to different backends",
            both.len(),
            some(&both, 5)
        ),
    )
    .severity(Severity::Warning);
    for (d, chains, svcs) in [(&legacy, &lc, &ls), (&nft, &nc, &ns)] {
        if let Some(line) = both.first().and_then(|k| chains.get(*k)) {
            f = f.evidence(
                format!("{} line {line}", d.source),
                format!(
                    "chain {} declared ({} KUBE-* chains, {} Service port(s) with rules)",
                    both[0],
                    chains.len(),
                    svcs.len()
                ),
            );
        }
    }
    vec![f.remediation(SPLIT_FIX)]
}

/// One of kube-proxy's rule sets found on the node, with where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Programmed {
    /// The mode whose rules these are.
    pub mode: ProxyMode,
    /// Where: `iptables-nft-save line 12: chain nat/KUBE-SVC-...`.
    pub evidence: String,
}

/// Which of kube-proxy's rule sets exist, from the iptables dumps, the nftables tables
/// (`(source, [(family, name)])`) and the IPVS table (`(source, table)`).
pub fn programmed_modes(
    iptables: &[Dump<'_, '_>],
    nft_tables: Option<(&str, &[(String, String)])>,
    ipvs: Option<(&str, &IpvsTable)>,
) -> Vec<Programmed> {
    let mut out: Vec<Programmed> = Vec::new();
    let mut add = |mode, evidence: String| {
        if !out.iter().any(|p| p.mode == mode) {
            out.push(Programmed { mode, evidence });
        }
    };
    for d in iptables {
        let Some(nat) = d.rules.table("nat") else {
            continue;
        };
        if let Some(c) = nat
            .chains
            .iter()
            .find(|c| c.name.starts_with("KUBE-SVC-") || c.name.starts_with("KUBE-SEP-"))
        {
            add(
                ProxyMode::Iptables,
                format!("{} line {}: chain nat/{}", d.source, c.line, c.name),
            );
        }
        if let Some(svcs) = nat.chain("KUBE-SERVICES") {
            match svcs
                .rules
                .iter()
                .find(|r| r.raw.contains("--match-set KUBE-"))
            {
                Some(r) => add(
                    ProxyMode::Ipvs,
                    format!("{} line {}: {}", d.source, r.line, r.raw),
                ),
                None => add(
                    ProxyMode::Iptables,
                    format!("{} line {}: chain nat/KUBE-SERVICES", d.source, svcs.line),
                ),
            }
        }
    }
    if let Some((source, tables)) = nft_tables {
        if let Some((family, name)) = tables.iter().find(|(_, n)| n == "kube-proxy") {
            add(
                ProxyMode::Nftables,
                format!("{source}: table {family} {name}"),
            );
        }
    }
    if let Some((source, table)) = ipvs {
        if let Some(s) = table.services.first() {
            add(
                ProxyMode::Ipvs,
                format!(
                    "{source}: {} virtual service(s), e.g. line {}: {}",
                    table.services.len(),
                    s.line,
                    s.text
                ),
            );
        }
    }
    out.sort_by_key(|p| p.mode);
    out
}

/// kube-proxy's configured mode and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The mode.
    pub mode: ProxyMode,
    /// `/var/lib/kube-proxy/config.conf line 30: mode: "ipvs"` or `--proxy-mode ipvs`.
    pub source: String,
}

/// `proxy.backend-split` when the configured mode disagrees with what is programmed: none
/// of the configured mode's rules while another mode's exist (critical), or the configured
/// mode's rules beside another mode's leftovers (warning). Nothing when nothing is
/// programmed (that is `proxy.rules-missing`'s business).
pub fn mode_mismatch(configured: &Configured, programmed: &[Programmed]) -> Option<Finding> {
    let others: Vec<&Programmed> = programmed
        .iter()
        .filter(|p| p.mode != configured.mode)
        .collect();
    if others.is_empty() {
        return None;
    }
    let names: BTreeSet<&str> = others.iter().map(|p| p.mode.as_str()).collect();
    let names = names.into_iter().collect::<Vec<_>>().join(" and ");
    let has_own = programmed.iter().any(|p| p.mode == configured.mode);
    let mut f = if has_own {
        Finding::new(
            Code::ProxyBackendSplit,
            format!(
                "kube-proxy runs in {} mode, and {names} rules from another mode are still \
                 programmed beside its own",
                configured.mode
            ),
        )
        .severity(Severity::Warning)
    } else {
        Finding::new(
            Code::ProxyBackendSplit,
            format!(
                "kube-proxy is configured for {} mode but the node has {names} rules and none of {} mode's",
                configured.mode, configured.mode
            ),
        )
    };
    f = f.evidence("configured", configured.source.clone());
    for p in programmed {
        f = f.evidence(format!("programmed ({})", p.mode), p.evidence.clone());
    }
    Some(f.remediation(format!(
        "if kube-proxy runs with this configuration, it is not syncing (check its logs and \
         healthz on :10256); rules of another mode are leftovers of a mode switch: remove them \
         (`kube-proxy --cleanup` with the old mode, or flush the KUBE-* chains / `nft delete \
         table ip kube-proxy` / `ipvsadm -C`) so that only {} rules remain",
        configured.mode
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse_iptables_save;

    const LEGACY: &str = "# Generated by iptables-save v1.8.9 on Thu Nov 26 02:25:34 2026
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -m udp --dport 53 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-SVC-AAAAAAAAAAAAAAAA
COMMIT
";

    const NFT: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 02:25:34 2026
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-SVC-BBBBBBBBBBBBBBBB
-A KUBE-SERVICES -d 10.96.5.5/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-BBBBBBBBBBBBBBBB
COMMIT
";

    const NFT_CHAINS_ONLY: &str = "*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
COMMIT
";

    const IPVS_MODE: &str = "*nat
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
COMMIT
";

    fn dump<'r, 'a>(source: &'r str, rules: &'r Ruleset<'a>) -> Dump<'r, 'a> {
        Dump { source, rules }
    }

    #[test]
    fn services_split_between_backends() {
        let l = parse_iptables_save(LEGACY).unwrap();
        let n = parse_iptables_save(NFT).unwrap();
        let f = backend_split(
            Some(dump("iptables-legacy-save", &l)),
            Some(dump("iptables-nft-save", &n)),
        );
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(f.code, Code::ProxyBackendSplit);
        assert_eq!(f.severity, Severity::Critical);
        assert!(
            f.summary.contains("2 Service port(s) in iptables-legacy, 2 in iptables-nft (1 in both, 1 only in legacy, 1 only in nft)"),
            "{}",
            f.summary
        );
        let ev: Vec<(&str, &str)> = f
            .evidence
            .iter()
            .map(|e| (e.source.as_str(), e.detail.as_str()))
            .collect();
        assert!(ev.contains(&("only in iptables-legacy-save", "kube-system/kube-dns:dns")));
        assert!(ev.contains(&("only in iptables-nft-save", "default/web:http")));
        assert!(ev.contains(&("in both", "default/kubernetes:https")));
        // the evidence quotes a rule with its line
        assert!(ev.iter().any(|(s, d)| *s == "iptables-legacy-save line 9"
            && d.starts_with("-A KUBE-SERVICES -d 10.96.0.1/32")));
    }

    #[test]
    fn chains_in_both_without_rules_is_a_warning() {
        let l = parse_iptables_save(LEGACY).unwrap();
        let n = parse_iptables_save(NFT_CHAINS_ONLY).unwrap();
        let f = backend_split(
            Some(dump("iptables-legacy-save", &l)),
            Some(dump("iptables-nft-save", &n)),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].summary.contains("nat/KUBE-SERVICES"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[0].evidence.len(), 2);
        assert_eq!(f[0].evidence[1].source, "iptables-nft-save line 2");
    }

    #[test]
    fn one_backend_is_no_split() {
        let l = parse_iptables_save(LEGACY).unwrap();
        let empty = parse_iptables_save("").unwrap();
        assert!(backend_split(Some(dump("a", &l)), None).is_empty());
        assert!(backend_split(None, Some(dump("b", &l))).is_empty());
        assert!(backend_split(Some(dump("a", &l)), Some(dump("b", &empty))).is_empty());
    }

    #[test]
    fn modes_programmed() {
        let l = parse_iptables_save(LEGACY).unwrap();
        let v = parse_iptables_save(IPVS_MODE).unwrap();
        let p = programmed_modes(&[dump("iptables-save", &l)], None, None);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].mode, ProxyMode::Iptables);
        assert_eq!(
            p[0].evidence,
            "iptables-save line 6: chain nat/KUBE-SVC-AAAAAAAAAAAAAAAA"
        );
        let p = programmed_modes(&[dump("iptables-save", &v)], None, None);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].mode, ProxyMode::Ipvs);
        let tables = vec![
            ("ip".to_string(), "filter".to_string()),
            ("ip".to_string(), "kube-proxy".to_string()),
        ];
        let ipvs = crate::ipvs::parse_ipvs("-A -t 10.96.0.1:443 -s rr\n").unwrap();
        let p = programmed_modes(
            &[],
            Some(("nft -j list ruleset", &tables)),
            Some(("netlink", &ipvs)),
        );
        let modes: Vec<ProxyMode> = p.iter().map(|x| x.mode).collect();
        assert_eq!(modes, [ProxyMode::Ipvs, ProxyMode::Nftables]);
        assert_eq!(p[1].evidence, "nft -j list ruleset: table ip kube-proxy");
        // nothing of kube-proxy's
        let p = programmed_modes(&[], Some(("nft", &tables[..1])), None);
        assert!(p.is_empty());
    }

    #[test]
    fn configured_mode_disagrees() {
        let l = parse_iptables_save(LEGACY).unwrap();
        let programmed = programmed_modes(&[dump("iptables-save", &l)], None, None);
        let cfg = Configured {
            mode: ProxyMode::Ipvs,
            source: "config.conf line 3: mode: ipvs".into(),
        };
        let f = mode_mismatch(&cfg, &programmed).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert!(f
            .summary
            .contains("configured for ipvs mode but the node has iptables rules"));
        assert_eq!(f.evidence[0].detail, "config.conf line 3: mode: ipvs");
        assert_eq!(f.evidence[1].source, "programmed (iptables)");
        // agreeing: nothing
        let ok = Configured {
            mode: ProxyMode::Iptables,
            source: "--proxy-mode".into(),
        };
        assert!(mode_mismatch(&ok, &programmed).is_none());
        // nothing programmed: not this rule's business
        assert!(mode_mismatch(&cfg, &[]).is_none());
        // own rules plus leftovers: a warning
        let tables = vec![("ip".to_string(), "kube-proxy".to_string())];
        let both = programmed_modes(&[dump("iptables-save", &l)], Some(("nft", &tables)), None);
        let nft_cfg = Configured {
            mode: ProxyMode::Nftables,
            source: "--proxy-mode".into(),
        };
        let f = mode_mismatch(&nft_cfg, &both).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.summary.contains("iptables rules from another mode"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn kube_proxy_config_mode() {
        let cfg = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
mode: \"ipvs\"
ipvs:
  scheduler: rr
";
        assert_eq!(parse_kube_proxy_mode(cfg), Ok((ProxyMode::Ipvs, 4)));
        assert_eq!(
            parse_kube_proxy_mode("kind: KubeProxyConfiguration\nmode: \"\"\n"),
            Ok((ProxyMode::Iptables, 2))
        );
        assert_eq!(
            parse_kube_proxy_mode("kind: KubeProxyConfiguration\n"),
            Ok((ProxyMode::Iptables, 0))
        );
        let e =
            parse_kube_proxy_mode("kind: KubeProxyConfiguration\nmode: userspace\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string()
                .starts_with("line 2: unknown kube-proxy mode \"userspace\""),
            "{e}"
        );
        let e = parse_kube_proxy_mode("kind: KubeletConfiguration\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_kube_proxy_mode("mode: [\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
        assert!(parse_kube_proxy_mode("- a\n").is_err());
        assert!(parse_kube_proxy_mode("mode: 3\n").is_err());
    }
}
