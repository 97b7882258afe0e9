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
