//! Every scenario file in `scenarios/` passes with a small seed count, each run played
//! twice in process (`--check-determinism`).

mod common;

use common::{kvs_sim, lines, scenarios_dir};

#[test]
fn every_scenario_file_passes_with_two_seeds() {
    let mut files: Vec<String> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenario files: {files:?}");
    let mut args = vec!["run"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--seeds", "2", "--check-determinism"]);
    let out = kvs_sim(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kvs-sim failed:\n{stderr}");
    let results = lines(&out);
    assert_eq!(results.len(), files.len() * 2);
    assert!(results.iter().all(|l| l.verdict == "PASS"), "{results:?}");
}
