//! Bad scenario files as `kvs-sim run` must treat them: exit code 2, one line on stderr
//! naming the file and the offending key, nothing run (no result line), never a panic,
//! an abort, an exhausted memory or a hang; and every file given is checked before the
//! first run starts.

mod common;

use std::path::{Path, PathBuf};

use common::kvs_sim;

/// A temporary directory holding scenario files.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

/// A small ping-pong scenario that passes, with `extra` appended.
fn ping_pong(extra: &str) -> String {
    format!(
        "name: t\nengine: model\nduration: 5s\n\
         cluster: {{nodes: 3, protocol: ping_pong, config: {{interval: 100ms}}}}\n{extra}\n"
    )
}

/// A small full-engine scenario, with `extra` appended.
fn full(extra: &str) -> String {
    format!(
        "name: t\nengine: full\nduration: 10s\n\
         cluster: {{nodes: 3, config: {{membership: {{seeds: [n1]}}}}}}\n{extra}\n"
    )
}

/// Runs `kvs-sim run` on `files`; asserts exit code 2, no result line, and one line on
/// stderr naming `named_file` and every one of `expected`; returns that line.
fn refused(files: &[&Path], named_file: &Path, expected: &[&str]) -> String {
    let mut args = vec!["run".to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kvs_sim(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{files:?}: {stderr}");
    assert!(stdout.is_empty(), "nothing may run: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let name = named_file.display().to_string();
    assert!(stderr.contains(&name), "names the file {name}: {stderr}");
    for word in expected {
        assert!(stderr.contains(word), "expected `{word}` in: {stderr}");
    }
    stderr.trim_end().to_string()
}

#[test]
fn every_file_is_checked_before_the_first_run() {
    let files = Files::new();
    let good = files.write("good.yaml", &ping_pong(""));
    let unknown_protocol = files.write(
        "bad.yaml",
        "name: b\nengine: model\nduration: 5s\ncluster: {nodes: 2, protocol: pingpong}\n",
    );
    refused(
        &[&good, &unknown_protocol],
        &unknown_protocol,
        &["cluster.protocol", "pingpong"],
    );
    let bad_property = files.write(
        "bad-property.yaml",
        &ping_pong("properties: {final: [{nonsense: {x: 1}}]}"),
    );
    refused(&[&good, &bad_property], &bad_property, &["nonsense"]);
    let bad_workload = files.write(
        "bad-workload.yaml",
        &full("workload: [{clients: 1, rate: fast, keys: 5, mix: {put: 1}, until: 5s}]"),
    );
    refused(
        &[&good, &bad_workload],
        &bad_workload,
        &["workload[0]", "rate"],
    );
}

/// One bad file on its own.
fn refused_alone(text: &str, expected: &[&str]) -> String {
    let files = Files::new();
    let path = files.write("bad.yaml", text);
    refused(&[&path], &path, expected)
}

#[test]
fn sizes_past_the_limits_are_refused_before_anything_is_built() {
    let cases: [(String, &[&str]); 11] = [
        (
            full(
                "workload: [{clients: 1, rate: 10/s, keys: 10, mix: {put: 1}, nodes: [], until: 5s}]",
            ),
            &["workload[0]", "nodes"],
        ),
        (
            "name: t\nengine: model\nduration: 5s\n\
             cluster: {nodes: 3, protocol: ping_pong, config: {size: 18446744073709551615}}"
                .into(),
            &["cluster.config.size", "65507"],
        ),
        (
            "name: t\nengine: model\nduration: 5s\n\
             cluster: {nodes: 3, protocol: ping_pong, config: {size: 4}}"
                .into(),
            &["cluster.config.size", "9..="],
        ),
        (
            ping_pong(
                "timeline:\n  - at: 1s\n    repeat: {every: 1us, times: 1000000000, steps: [{at: 0s, heal: all}]}",
            ),
            &["timeline[0].repeat", "after duration"],
        ),
        (
            ping_pong(
                "timeline:\n  - at: 1s\n    repeat: {every: 1us, times: 200000, steps: [{at: 0s, heal: all}]}",
            ),
            &["timeline", "100000"],
        ),
        (
            full(
                "workload: [{clients: 1, rate: 10/s, keys: 10, mix: {put: 1}, value_bytes: 100000000000, until: 5s}]",
            ),
            &["workload[0]", "value_bytes", "1048576"],
        ),
        (
            full(
                "workload: [{clients: 1000000000, rate: 10/s, keys: 10, mix: {put: 1}, until: 5s}]",
            ),
            &["workload[0]", "clients", "10000"],
        ),
        (
            "name: t\nengine: full\nduration: 1s\ncluster: {nodes: 100000}".into(),
            &["cluster.nodes", "1000"],
        ),
        (
            "name: t\nengine: model\nduration: 1s\ncluster: {nodes: 2001, protocol: swim}".into(),
            &["cluster.nodes", "2000"],
        ),
        (
            full("nemesis: {from: 0s, until: 9s, hold: {min: 1us, max: 1us}, faults: [crash]}"),
            &["nemesis", "100000"],
        ),
        (
            "name: t\nengine: model\nduration: 1s\ncluster: {nodes: 3000, protocol: ping_pong}\n\
             timeline: [{at: 0s, link: {from: all, to: [n1..n2000], set: {loss: 0.1}}}]"
                .into(),
            &["timeline[0]", "4000000"],
        ),
    ];
    for (text, expected) in &cases {
        refused_alone(text, expected);
    }
}
