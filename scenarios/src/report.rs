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

/// Why a run that passed judged nothing, if it did not (`shared/scenarios.md`: a vacuous
/// run should say so): no property at all, a `failure_detected` that met no crash it could
/// judge (none, or each too close to the end), data properties over a run in which no
/// write was acknowledged. Each reason is a line's worth.
pub fn vacuity(scenario: &Scenario, report: &RunReport) -> Vec<String> {
    let properties = &scenario.properties;
    let names: Vec<String> = [
        &properties.always,
        &properties.eventually,
        &properties.at_end,
    ]
    .into_iter()
    .flatten()
    .filter_map(|entry| entry.parts().ok().map(|(name, _)| name))
    .collect();
    let measured = |figure: &str| report.measurements.iter().any(|(name, _)| name == figure);
    let mut reasons = Vec::new();
    if names.is_empty() {
        reasons.push("no property is checked".to_owned());
    }
    if names.iter().any(|name| name == "failure_detected")
        && !measured("failure_detected.crash_to_dead_s")
    {
        reasons.push("failure_detected judged no crash (none, or each too near the end)".into());
    }
    let acked = report
        .measurements
        .iter()
        .find(|(name, _)| name == "workload.acked")
        .map(|(_, acked)| *acked);
    if acked == Some(0.0) && !names.is_empty() {
        reasons.push("no write was acknowledged".to_owned());
    }
    reasons
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
    // The full engine runs whole nodes, not a protocol.
    let protocol = match scenario.engine {
        crate::Engine::Model => format!(", protocol {}", scenario.cluster.protocol),
        crate::Engine::Full => String::new(),
    };
    let _ = writeln!(
        out,
        "options: engine {:?}, {} nodes{protocol}, duration {}, quiesce_at {}",
        scenario.engine,
        scenario.cluster.nodes,
        duration::show(scenario.duration),
        duration::show(scenario.quiesce_at()),
    );
    let _ = writeln!(out, "network: {:?}", scenario.network);
    for (name, value) in [
        ("cluster.config", &scenario.cluster.config),
        ("workload", &scenario.workload),
        ("clocks", &scenario.clocks),
        ("nemesis", &scenario.nemesis),
    ] {
        if !value.is_null() {
            let shown = serde_json::to_string(value).unwrap_or_default();
            let _ = writeln!(out, "{name}: {shown}");
        }
    }
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
        shell_quoted(&path.display().to_string()),
        report.seed
    );
    out
}

/// `text` as one word for a POSIX shell: as it is when it holds only characters no shell
/// treats specially, else in single quotes (a quote inside written `'\''`).
fn shell_quoted(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The figures one run measured: `report: scenario <name> seed <N> figure=value ...`.
pub fn measurement_line(report: &RunReport) -> String {
    let mut out = format!("report: scenario {} seed {}", report.name, report.seed);
    for (name, value) in &report.measurements {
        let _ = write!(out, " {name}={value:.4}");
    }
    out
}

/// Figures gathered over many runs, per scenario and figure, summarised by
/// [`Summary::lines`]: count, sum, mean, p50, p99 and max (nearest-rank percentiles).
#[derive(Debug, Default)]
pub struct Summary {
    samples: std::collections::BTreeMap<(String, String), Vec<f64>>,
}

impl Summary {
    /// Adds one run's figures.
    pub fn add(&mut self, report: &RunReport) {
        for (name, value) in &report.measurements {
            self.samples
                .entry((report.name.clone(), name.clone()))
                .or_default()
                .push(*value);
        }
    }

    /// One line per scenario and figure.
    pub fn lines(&self) -> Vec<String> {
        self.samples
            .iter()
            .map(|((scenario, figure), values)| {
                let mut v = values.clone();
                v.sort_by(f64::total_cmp);
                let rank = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
                let sum: f64 = v.iter().sum();
                format!(
                    "summary: scenario {scenario} {figure}: n {} sum {sum:.4} mean {:.4} p50 {:.4} p99 {:.4} max {:.4}",
                    v.len(),
                    sum / v.len() as f64,
                    rank(0.5),
                    rank(0.99),
                    v[v.len() - 1]
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell_where_needed() {
        assert_eq!(shell_quoted("scenarios/x-1.yaml"), "scenarios/x-1.yaml");
        assert_eq!(shell_quoted("d15 with space.yaml"), "'d15 with space.yaml'");
        assert_eq!(shell_quoted("it's.yaml"), "'it'\\''s.yaml'");
        assert_eq!(shell_quoted("$(rm -rf x).yaml"), "'$(rm -rf x).yaml'");
    }

    #[test]
    fn summary_percentiles() {
        let mut s = Summary::default();
        s.samples
            .insert(("x".into(), "f".into()), (1..=100).map(f64::from).collect());
        let line = &s.lines()[0];
        assert!(line.contains("n 100 sum 5050.0000"), "{line}");
        assert!(
            line.contains("p50 50.0000 p99 99.0000 max 100.0000"),
            "{line}"
        );
    }
}
