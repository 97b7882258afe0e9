//! What `kvs-sim` prints: the one result line per run, and the failure report (seed and
//! options, the property with its evidence, the last events, the replay command).

use std::fmt::Write;
use std::path::Path;

use crate::{RunReport, Scenario, duration};

/// `scenario <name> seed <N> trace <hex> PASS|FAIL`.
pub fn result_line(report: &RunReport) -> String {
    let verdict = if report.violation.is_some() {
        "FAIL"
    } else {
        "PASS"
    };
    format!(
        "scenario {} seed {} trace {} {verdict}",
        report.name, report.seed, report.digest
    )
}

/// The report printed before the result line of a failed run.
pub fn failure_report(path: &Path, scenario: &Scenario, report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "=== FAILED: scenario {} seed {}",
        report.name, report.seed
    );
    let _ = writeln!(out, "file: {}", path.display());
    let _ = writeln!(
        out,
        "options: engine {:?}, {} nodes, protocol {}, duration {}, quiesce_at {}",
        scenario.engine,
        scenario.cluster.nodes,
        scenario.cluster.protocol,
        duration::show(scenario.duration),
        duration::show(scenario.quiesce_at()),
    );
    let _ = writeln!(out, "network: {:?}", scenario.network);
    if let Some(v) = &report.violation {
        let _ = writeln!(out, "property failed: {}", v.property);
        let _ = writeln!(out, "evidence: {}", v.evidence);
    }
    let _ = writeln!(
        out,
        "at virtual time {}, after {} events; network: {:?}",
        duration::show(report.virtual_time),
        report.events,
        report.counts
    );
    let _ = writeln!(out, "last {} events:", report.last_events.len());
    for rec in &report.last_events {
        let _ = writeln!(out, "  {rec}");
    }
    let _ = writeln!(
        out,
        "replay: kvs-sim run {} --seed {} --trace trace.jsonl",
        path.display(),
        report.seed
    );
    out
}
