//! The JSON/YAML envelope every probe verb prints, and its table rendering for people.

use crate::finding::{sort_worst_first, Finding};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Version of the machine-readable output schema. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The envelope of every probe verb (SPEC §2):
/// `{"schema":1,"findings":[...],"observations":{...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Output schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// What the probes saw, probe by probe; the shape is per verb.
    pub observations: serde_json::Value,
}

impl Report {
    /// Builds a report, sorting the findings worst first.
    pub fn new(mut findings: Vec<Finding>, observations: serde_json::Value) -> Self {
        sort_worst_first(&mut findings);
        Report {
            schema: SCHEMA_VERSION,
            findings,
            observations,
        }
    }
}

/// Renders findings as a table for a person: worst first, each with its evidence and fix.
pub fn findings_table(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("no findings\n");
        return out;
    }
    let code_w = findings
        .iter()
        .map(|f| f.code.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "{:<8}  {:<code_w$}  SUMMARY", "SEVERITY", "CODE");
    for f in findings {
        let _ = writeln!(
            out,
            "{:<8}  {:<code_w$}  {}",
            f.severity.as_str().to_uppercase(),
            f.code.as_str(),
            f.summary
        );
        for e in &f.evidence {
            let _ = writeln!(
                out,
                "{:pad$}  evidence: {}: {}",
                "",
                e.source,
                e.detail,
                pad = 8
            );
        }
        if !f.remediation.is_empty() {
            let _ = writeln!(out, "{:pad$}  fix: {}", "", f.remediation, pad = 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Code;

    #[test]
    fn table_lists_worst_first_with_evidence_and_fix() {
        let r = Report::new(
            vec![
                Finding::new(Code::DnsNdotsAmplification, "8 queries for one name"),
                Finding::new(Code::DnsNoEndpoints, "kube-dns has no ready endpoints")
                    .evidence("endpoints kube-system/kube-dns", "0 ready, 2 not ready")
                    .remediation("look at the CoreDNS pods"),
            ],
            serde_json::json!({}),
        );
        let t = findings_table(&r.findings);
        let expected = "\
SEVERITY  CODE                     SUMMARY
CRITICAL  dns.no-endpoints         kube-dns has no ready endpoints
          evidence: endpoints kube-system/kube-dns: 0 ready, 2 not ready
          fix: look at the CoreDNS pods
INFO      dns.ndots-amplification  8 queries for one name
";
        assert_eq!(t, expected);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["findings"][0]["code"], "dns.no-endpoints");
        assert_eq!(json["findings"][0]["severity"], "critical");
    }

    #[test]
    fn empty_table_says_so() {
        assert_eq!(findings_table(&[]), "no findings\n");
    }
}
