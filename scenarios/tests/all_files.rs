//! Every scenario file in `scenarios/` passes with a small seed count, each run played
//! twice in process (`--check-determinism`). The whole-node files (`data-*.yaml`, engine
//! `full`) and the others run as two tests, so that they run side by side. The files of
//! `bench/` are not played, but must pass the checks a run makes first.

mod common;

use common::{kvs_sim, lines, scenarios_dir};

/// The scenario files whose name starts with `data-` (`true`) or not (`false`).
fn files(data: bool) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("data-") == data)
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

fn all_pass_with_two_seeds(files: &[String]) {
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

#[test]
fn every_model_scenario_file_passes_with_two_seeds() {
    let files = files(false);
    assert!(files.len() >= 11, "scenario files: {files:?}");
    all_pass_with_two_seeds(&files);
}

#[test]
fn every_whole_node_scenario_file_passes_with_two_seeds() {
    let files = files(true);
    assert!(files.len() >= 8, "data scenario files: {files:?}");
    all_pass_with_two_seeds(&files);
}

/// The benchmark files (`bench/`, not played here) pass every check a run makes first.
#[test]
fn every_bench_file_passes_the_checks() {
    let dir = scenarios_dir().join("bench");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("bench dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let scenario = kvs_scenarios::Scenario::load(&path).expect("parses");
        kvs_scenarios::check_scenario(&scenario)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(checked >= 10, "bench files: {checked}");
}
