//! The kvs-sim command line as `shared/scenarios.md` binds it: determinism across
//! processes, different seeds differ, a failing run's report and exit code, bad input.

mod common;

use common::{kvs_sim, lines, scenarios_dir};

fn file(name: &str) -> String {
    scenarios_dir().join(name).display().to_string()
}

#[test]
fn same_file_and_seed_give_the_same_digest_in_separate_processes() {
    let f = file("fabric-clog-crash.yaml");
    let a = lines(&kvs_sim(&["run", &f, "--seed", "7"]));
    let b = lines(&kvs_sim(&["run", &f, "--seed", "7"]));
    assert_eq!(a.len(), 1);
    assert_eq!(a, b);
    assert_eq!((a[0].name.as_str(), a[0].seed), ("fabric-clog-crash", 7));
}

#[test]
fn different_seeds_give_different_digests() {
    let out = kvs_sim(&["run", &file("fabric-partition.yaml"), "--seeds", "3"]);
    assert!(out.status.success());
    let l = lines(&out);
    assert_eq!(l.iter().map(|l| l.seed).collect::<Vec<_>>(), [1, 2, 3]);
    assert_ne!(l[0].digest, l[1].digest);
    assert_ne!(l[1].digest, l[2].digest);
    assert_ne!(l[0].digest, l[2].digest);
}

#[test]
fn a_seed_range_plays_those_seeds_as_the_same_seeds_alone_do() {
    let f = file("fabric-partition.yaml");
    let range = lines(&kvs_sim(&["run", &f, "--seeds", "1002..=1003"]));
    assert_eq!(
        range.iter().map(|l| l.seed).collect::<Vec<_>>(),
        [1002, 1003]
    );
    let alone = lines(&kvs_sim(&["run", &f, "--seed", "1003"]));
    assert_eq!(range[1], alone[0]);
    let refused = kvs_sim(&["run", &f, "--seeds", "1003..1002"]);
    assert_eq!(refused.status.code(), Some(2), "a usage error");
}

#[test]
fn a_failing_run_reports_seed_evidence_and_replay_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("doomed.yaml");
    let text = std::fs::read_to_string(file("fabric-partition.yaml")).expect("read");
    let doomed = text
        .replace("name: fabric-partition", "name: doomed")
        .replace("loss: 0.01", "loss: 1.0");
    std::fs::write(&path, doomed).expect("write");
    let p = path.display().to_string();
    let out = kvs_sim(&["run", &p, "--seed", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let l = lines(&out);
    assert_eq!(
        (l[0].name.as_str(), l[0].seed, l[0].verdict.as_str()),
        ("doomed", 5, "FAIL")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scenario doomed seed 5"), "{err}");
    assert!(err.contains("property failed: pongs_resume"), "{err}");
    assert!(err.contains("last 30 events"), "{err}");
    assert!(
        err.contains(&format!("replay: kvs-sim run {p} --seed 5")),
        "{err}"
    );
}

#[test]
fn trace_file_is_jsonl_and_digest_does_not_depend_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("t.jsonl");
    let f = file("fabric-loss.yaml");
    let with = lines(&kvs_sim(&[
        "run",
        &f,
        "--trace",
        &trace.display().to_string(),
    ]));
    let without = lines(&kvs_sim(&["run", &f]));
    assert_eq!(with, without);
    let text = std::fs::read_to_string(&trace).expect("trace written");
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v.is_object());
        n += 1;
    }
    assert!(n > 1000, "{n} trace lines");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("engine: quantum", "unknown variant `quantum`"),
        ("engine: model\nbogus: 1", "unknown field `bogus`"),
        (
            "engine: model\ntimeline: [{at: 1s, crash: [n9]}]",
            "unknown node `n9`",
        ),
        (
            "engine: model\ntimeline: [{at: 1s, explode: all}]",
            "explode",
        ),
        (
            "engine: model\nnetwork: {default: {loss: 2}}",
            "network.default.loss: 2 is not a probability",
        ),
        (
            "engine: model\nproperties: {always: [nonsense]}",
            "unknown property `nonsense`",
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        let text = format!(
            "name: bad\nduration: 5s\ncluster: {{nodes: 2, protocol: ping_pong}}\n{extra}\n"
        );
        std::fs::write(&path, text).expect("write");
        let out = kvs_sim(&["run", &path.display().to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(
            err.contains(expected),
            "case {i}: expected `{expected}` in: {err}"
        );
    }
    let missing = kvs_sim(&["run", "/nonexistent/x.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_reader_that_goes_away_ends_the_run_quietly() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-sim"))
        .args(["run", &file("fabric-partition.yaml"), "--seeds", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvs-sim runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 9];
    stdout.read_exact(&mut first).expect("a result line");
    assert_eq!(&first, b"scenario ");
    // As `| head -1` does: the reader goes after its first line.
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    let status = child.wait().expect("kvs-sim ends");
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_run_that_judged_nothing_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = "engine: model\nduration: 20s\n\
                   cluster: {nodes: 4, protocol: swim, config: {seeds: [n1]}}\n";
    let cases = [
        ("no-properties", String::new(), "no property is checked"),
        (
            "no-crash",
            "properties:\n  always: [{failure_detected: {within: 5s}}]\n".to_owned(),
            "failure_detected judged no crash",
        ),
        (
            "crash-too-late",
            "timeline:\n  - {at: 18s, crash: n2}\n\
             properties:\n  always: [{failure_detected: {within: 5s}}]\n"
                .to_owned(),
            "failure_detected judged no crash",
        ),
    ];
    for (name, tail, reason) in cases {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, format!("name: {name}\n{cluster}{tail}")).expect("write");
        let out = kvs_sim(&["run", &path.display().to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            err.contains(&format!("scenario {name} seed 1: vacuous: {reason}")),
            "{name}: {err}"
        );
    }
    // A run that judged a crash says nothing of the kind.
    let judged = dir.path().join("judged.yaml");
    let tail = "timeline:\n  - {at: 5s, crash: n2}\n\
                properties:\n  always: [{failure_detected: {within: 5s}}]\n";
    std::fs::write(&judged, format!("name: judged\n{cluster}{tail}")).expect("write");
    let out = kvs_sim(&["run", &judged.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("vacuous"), "{err}");
}
