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
    let cases: [(String, &[&str]); 15] = [
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
            "name: t\nengine: full\nduration: 1s\ncluster: {nodes: 401}".into(),
            &["cluster.nodes", "400"],
        ),
        // Each load within its limits, the values held over the nodes past 2 GiB.
        (
            full("workload: [{clients: 10, rate: 1000/s, keys: 1000000, mix: {put: 1}, until: 9s, value_bytes: 1048576}]"),
            &["workload", "MiB of values held", "2048"],
        ),
        (
            full("workload: [{clients: 10, rate: 1000000/s, keys: 10, mix: {put: 1}, until: 9s}, {clients: 10, rate: 1000000/s, keys: 10, mix: {put: 1}, until: 9s}]"),
            &["workload", "operations", "10000000"],
        ),
        (
            ping_pong("").replace("duration: 5s", "duration: 25h"),
            &["duration", "86400"],
        ),
        // Each link step within its limit, all of them together past 40 million links.
        (
            "name: t\nengine: model\nduration: 100s\ncluster: {nodes: 2000, protocol: ping_pong}\n\
             timeline:\n  - {at: 1s, repeat: {times: 20, every: 1s, steps: [{at: 0s, link: {from: [n1..n1999], to: [n2..n2000], set: {loss: 0.1}}}]}}\n"
                .into(),
            &["timeline", "40000000 links"],
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

/// A small SWIM scenario with `properties`.
fn swim(properties: &str) -> String {
    format!(
        "name: t\nengine: model\nduration: 10s\n\
         cluster: {{nodes: 4, protocol: swim}}\nproperties: {properties}\n"
    )
}

#[test]
fn every_property_refuses_keys_it_does_not_take() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            swim("{always: [{incarnation_monotonic: {bogus: 1}}]}"),
            &["incarnation_monotonic", "`bogus`"],
        ),
        (
            swim("{always: [{no_zombie: {bogus: 1}}]}"),
            &["no_zombie", "`bogus`"],
        ),
        (
            swim("{always: [{failure_detected: {within: 5s, bogus: 1}}]}"),
            &["failure_detected", "`bogus`"],
        ),
        (
            swim("{final: [{membership_converged: {wihtin: 1ms}}]}"),
            &["membership_converged", "`wihtin`"],
        ),
        (
            swim("{final: [{membership_converged: {within: 1s}}]}"),
            &["membership_converged", "`within`"],
        ),
        (
            swim("{eventually: [{membership_converged: {within: 1s, bogus: 1}}]}"),
            &["membership_converged", "`bogus`"],
        ),
        (
            swim("{final: [{dissemination: {node: n4, rounds: 10, bogus: 1}}]}"),
            &["dissemination", "`bogus`"],
        ),
        (
            swim("{always: [{message_load: {max_bytes_per_node_s: 9, bogus: 1}}]}"),
            &["message_load", "`bogus`"],
        ),
        (
            swim("{final: [{no_false_deaths: {maximum: 1}}]}"),
            &["no_false_deaths", "maximum"],
        ),
        (
            swim("{final: [{false_suspicions_at_most: {count: 1, bogus: 1}}]}"),
            &["false_suspicions_at_most", "bogus"],
        ),
        (
            ping_pong("properties: {always: [{no_delivery_across_partition: {bogus: 1}}]}"),
            &["no_delivery_across_partition", "`bogus`"],
        ),
        (
            ping_pong("properties: {always: [{no_delivery_to_down_node: {bogus: 1}}]}"),
            &["no_delivery_to_down_node", "`bogus`"],
        ),
        (
            ping_pong("properties: {eventually: [{pongs_resume: {within: 1s, bogus: 1}}]}"),
            &["pongs_resume", "`bogus`"],
        ),
        (
            ping_pong("properties: {final: [{loss_rate: {min: 2, max: 3}}]}"),
            &["loss_rate", "min"],
        ),
        (
            ping_pong("properties: {final: [{loss_rate: {min: 0.5, max: 0.1}}]}"),
            &["loss_rate", "min"],
        ),
        (
            ping_pong("properties: {final: [{delivered_at_least: {count: 1, bogus: 1}}]}"),
            &["delivered_at_least", "bogus"],
        ),
        (
            full("properties: {eventually: [{data_converged: {within: 1s, bogus: 2}}]}"),
            &["data_converged", "`bogus`"],
        ),
        (
            full("properties: {final: [{data_converged: {within: 1ms}}]}"),
            &["data_converged", "`within`"],
        ),
        (
            full("properties: {final: [{no_lost_acked_writes: {bogus: 1}}]}"),
            &["no_lost_acked_writes", "`bogus`"],
        ),
        (
            full("properties: {final: [{one_winner: {bogus: 1}}]}"),
            &["one_winner", "`bogus`"],
        ),
        (
            full("quiesce_at: 5s\nproperties: {eventually: [{data_converged: {within: 6s}}]}"),
            &["data_converged", "after duration"],
        ),
    ];
    for (text, expected) in &cases {
        refused_alone(text, expected);
    }
}

#[test]
fn node_names_are_nodes_of_the_cluster_written_one_way() {
    let swim_with = |config: &str| {
        format!(
            "name: t\nengine: model\nduration: 10s\ncluster: {{nodes: 4, protocol: swim, config: {config}}}\n"
        )
    };
    let cases: Vec<(String, &[&str])> = vec![
        (swim_with("{seeds: [n9]}"), &["cluster.config", "seeds", "n9"]),
        (swim_with("{seeds: []}"), &["cluster.config", "seeds", "empty"]),
        (swim_with("{seeds: [n01]}"), &["cluster.config", "seeds", "n01"]),
        (
            "name: t\nengine: full\nduration: 10s\ncluster: {nodes: 3, config: {membership: {seeds: [n9]}}}\n"
                .into(),
            &["cluster.config.membership", "seeds", "n9"],
        ),
        (
            swim("{final: [{false_suspicions_at_most: {count: 1, exclude: [n9]}}]}"),
            &["false_suspicions_at_most", "exclude", "n9"],
        ),
        (
            swim("{final: [{dissemination: {node: n9, rounds: 10}}]}"),
            &["dissemination", "node", "n9"],
        ),
        (
            ping_pong("timeline: [{at: 1s, crash: [n01]}]"),
            &["timeline[0]", "n01"],
        ),
        (
            ping_pong("timeline: [{at: 1s, crash: [n1..n03]}]"),
            &["timeline[0]", "n03"],
        ),
    ];
    for (text, expected) in &cases {
        refused_alone(text, expected);
    }
    // A cluster of one node needs no seed.
    let files = Files::new();
    let alone = files.write(
        "alone.yaml",
        "name: alone\nengine: model\nduration: 1s\ncluster: {nodes: 1, protocol: swim, config: {seeds: []}}\n",
    );
    let out = kvs_sim(&["run", &alone.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_is_in_one_partition_group() {
    refused_alone(
        &ping_pong("timeline: [{at: 1s, partition: [[n1, n2], [n2, n3]]}]"),
        &["timeline[0].partition", "n2", "groups 0 and 1"],
    );
}

#[test]
fn a_name_fits_the_result_line_and_the_replay_line_quotes_the_path() {
    for name in [
        "\"x seed 1 trace 00 PASS\\nscenario fake\"",
        "\"a b\"",
        "\"\"",
        "\"tab\\tin\"",
    ] {
        refused_alone(
            &format!(
                "name: {name}\nengine: model\nduration: 1s\ncluster: {{nodes: 2, protocol: ping_pong}}\n"
            ),
            &["name"],
        );
    }
    let files = Files::new();
    let spaced = files.write(
        "with space.yaml",
        &ping_pong("properties: {final: [{delivered_at_least: {count: 100000000}}]}"),
    );
    let out = kvs_sim(&["run", &spaced.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "replay: kvs-sim run '{}' --seed 1",
            spaced.display()
        )),
        "{err}"
    );
}

#[test]
fn errors_name_the_key_and_the_step() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            ping_pong("network: {default: {loss: 1.5}}"),
            &["network.default", "loss", "1.5"],
        ),
        (
            ping_pong(
                "network: {links: [{from: [n1], to: all, set: {burst: {enter: 2, exit: 0.5, loss: 1}}}]}",
            ),
            &["network.links[0].set", "burst.enter"],
        ),
        (
            ping_pong("network: {default: {latency: {min: 5ms, mean: 1ms, max: 9ms}}}"),
            &["network.default", "latency", "min <= mean <= max"],
        ),
        (
            ping_pong("network: {links: [{from: [n9], to: all, set: {loss: 0.1}}]}"),
            &["network.links[0].from", "n9"],
        ),
        (
            ping_pong("timeline: [{at: 1s, link: {from: [n1], to: [n2], set: {duplicate: 7}}}]"),
            &["timeline[0].link.set", "duplicate"],
        ),
        (
            ping_pong("timeline: [{at: 1s, heal: all}, {at: 9s, heal: all}]"),
            &["timeline[1].at", "after duration"],
        ),
        (
            ping_pong("timeline: [{at: 2s, heal: all}, {at: 1s, heal: all}]"),
            &["timeline[1].at", "time order"],
        ),
        (
            ping_pong("timeline: [{at: 1s, heal: all}, {at: 2s, crash: [n3..n1]}]"),
            &["timeline[1].crash", "empty range `n3..n1`"],
        ),
        (
            ping_pong("timeline: [{at: 1s, heal: all}, {at: 2s, clog: {from: n1, to: n2}}]"),
            &["timeline[1]", "clog", "missing field `for`"],
        ),
        (
            ping_pong("timeline: [{at: 1s, clog: {from: [n1], to: [n7], for: 1s}}]"),
            &["timeline[0].clog.to", "n7"],
        ),
        (
            ping_pong(
                "timeline:\n  - at: 1s\n    repeat: {every: 1s, times: 2, steps: [{at: 0s, pause: [n8]}]}",
            ),
            &["timeline[0].repeat.steps[0].pause", "n8"],
        ),
        (
            ping_pong("quiesce_at: -1s"),
            &["quiesce_at", "cannot be negative"],
        ),
        (full("clocks: {n9: {offset: 1s}}"), &["clocks.n9", "n9"]),
    ];
    for (text, expected) in &cases {
        refused_alone(text, expected);
    }
    // A byte order mark at the start is not part of the YAML.
    let files = Files::new();
    let bom = files.write("bom.yaml", &format!("\u{feff}{}", ping_pong("")));
    let out = kvs_sim(&["run", &bom.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn times_fall_within_the_run() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            "name: t\nengine: model\nduration: 0s\ncluster: {nodes: 2, protocol: ping_pong}\n".into(),
            &["duration", "above zero"],
        ),
        (ping_pong("quiesce_at: 6s"), &["quiesce_at", "after duration"]),
        (
            full("workload: [{clients: 1, rate: 10/s, keys: 10, mix: {put: 1}, until: 11s}]"),
            &["workload[0].until", "after duration"],
        ),
        (
            full("nemesis: {from: 1s, until: 11s, hold: {min: 1s, max: 2s}, faults: [crash]}"),
            &["nemesis.until", "after duration"],
        ),
        (
            swim("{always: [{message_load: {max_bytes_per_node_s: 9, from: 10s}}]}"),
            &["message_load", "from"],
        ),
        (
            "name: t\nengine: model\nduration: 10s\ncluster: {nodes: 4, protocol: swim, config: {join_stagger: 4s}}\n".into(),
            &["cluster.config", "join_stagger"],
        ),
        (
            "name: t\nengine: full\nduration: 10s\ncluster: {nodes: 3, config: {membership: {join_stagger: 6s}}}\n".into(),
            &["cluster.config.membership", "join_stagger"],
        ),
        // `eventually` is judged from quiesce_at: the faults must have stopped by then.
        (
            "name: t\nengine: model\nduration: 30s\ncluster: {nodes: 4, protocol: swim}\n\
             timeline:\n  - {at: 10s, partition: [[n1, n2]]}\n\
             properties:\n  eventually: [{membership_converged: {within: 15s}}]\n"
                .into(),
            &["timeline[0]", "not healed by quiesce_at"],
        ),
        (
            "name: t\nengine: model\nduration: 30s\ncluster: {nodes: 4, protocol: swim}\n\
             quiesce_at: 1s\ntimeline:\n  - {at: 20s, crash: n2}\n\
             properties:\n  eventually: [{membership_converged: {within: 5s}}]\n"
                .into(),
            &["timeline[0]", "after quiesce_at"],
        ),
        (
            full(
                "nemesis: {from: 1s, until: 9s, hold: {min: 1s, max: 2s}, faults: [crash]}\n\
                 quiesce_at: 2s\nproperties:\n  eventually: [{data_converged: {within: 5s}}]",
            ),
            &["nemesis.until", "after quiesce_at"],
        ),
    ];
    // A rate too low to schedule (one operation every 1e296 years) panicked.
    refused_alone(
        &full("workload: [{clients: 1, rate: 1e-300/s, keys: 5, mix: {put: 1}, until: 5s}]"),
        &["workload[0]", "rate", "0.001/s"],
    );
    for (text, expected) in &cases {
        refused_alone(text, expected);
    }
}
