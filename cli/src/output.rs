//! Printing: tables for people, JSON/YAML for machines, errors in the same format.

use clap::ValueEnum;
use kdiag_probes::report::{findings_table, Report};
use serde::Serialize;
use std::io::Write;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// JSON (one document).
    Json,
    /// YAML.
    Yaml,
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Renders a value as JSON or YAML.
pub fn machine<T: Serialize>(format: Format, value: &T) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_else(|e| format!("error: {e}\n")),
        _ => {
            let mut s = serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            s.push('\n');
            s
        }
    }
}

/// Prints a report: the table (with `extra` on top) or the envelope.
pub fn print_report(format: Format, report: &Report, extra_table: &str) {
    match format {
        Format::Table => {
            let mut s = extra_table.to_string();
            if !s.is_empty() && !s.ends_with("\n\n") {
                s.push('\n');
            }
            s.push_str(&findings_table(&report.findings));
            emit(&s);
        }
        f => emit(&machine(f, report)),
    }
}

/// Prints a one-line error: on stderr for people, as `{"error": ...}` on stdout for machines.
pub fn print_error(format: Format, msg: &str) {
    let line = msg.replace('\n', " ");
    match format {
        Format::Table => eprintln!("kdiag: error: {line}"),
        f => {
            eprintln!("kdiag: error: {line}");
            emit(&machine(f, &serde_json::json!({ "error": line })));
        }
    }
}
