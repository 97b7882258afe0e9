//! The README works verbatim, top to bottom (issue 16): its shell examples and the yaml
//! configs they use run in order in a fresh folder against fresh nodes, with only ports
//! and folders substituted, and each documented status and output is checked. The
//! conventions are in `tests/common/readme/mod.rs` and the README's "Conventions of the
//! examples".

mod common;

use common::readme::session::Session;
use common::readme::{Expect, Outcome, Step, blocks, check, glob, json_matches, steps};
use serde_json::json;

const README: &str = include_str!("../README.md");

#[test]
fn the_readme_runs_top_to_bottom() {
    let steps = steps(&blocks(README)).expect("the README's examples parse");
    assert!(steps.len() > 40, "only {} steps found", steps.len());
    let mut session = Session::new();
    for step in &steps {
        let Some(outcome) = session.execute(step) else {
            continue;
        };
        println!("{step:?}\n=> {outcome:?}");
        let Step::Run {
            command,
            expect,
            line,
        } = step
        else {
            continue;
        };
        let expect: Vec<Expect> = expect.iter().map(|e| localize(&session, e)).collect();
        if let Err(why) = check(&outcome, &expect) {
            panic!(
                "README line {line}: {why}\ncommand: {command}\nexit {}\nstdout: {}\nstderr: {}",
                outcome.exit, outcome.stdout, outcome.stderr
            );
        }
    }
}

/// An expectation with the README's ports replaced.
fn localize(session: &Session, expect: &Expect) -> Expect {
    match expect {
        Expect::Line(line) => Expect::Line(session.localize(line)),
        other => other.clone(),
    }
}

#[test]
fn node_configs_and_data_dirs_stay_out_of_git() {
    let repo = env!("CARGO_MANIFEST_DIR");
    for path in [
        "node1.yaml",
        "node2.yaml",
        "data/root.token",
        "data2/data.mdb",
    ] {
        let ignored = std::process::Command::new("git")
            .args(["-C", repo, "check-ignore", "-q", "--no-index", path])
            .status()
            .expect("git");
        assert!(ignored.success(), "{path} is not ignored by .gitignore");
    }
}

#[test]
fn a_documented_output_that_differs_fails() {
    let steps = steps(&blocks(
        "```sh\ncurl localhost:8080/kv/a\n# 404 {\"error\":{\"code\":\"not_found\",\"message\":\"...\"}}\n```\n",
    ))
    .unwrap();
    let Step::Run { expect, .. } = &steps[0] else {
        panic!("{steps:?}")
    };
    let answer = |status, body: &str| Outcome {
        statuses: vec![status],
        stdout: body.into(),
        ..Outcome::default()
    };
    let body = r#"{"error":{"code":"not_found","message":"key \"a\" not found"}}"#;
    assert_eq!(check(&answer(404, body), expect), Ok(()));
    assert!(check(&answer(401, body), expect).is_err());
    let other = r#"{"error":{"code":"unauthorized","message":"no"}}"#;
    assert!(check(&answer(404, other), expect).is_err());
    assert!(
        check(&answer(500, ""), &[]).is_err(),
        "an undocumented error fails"
    );
    let failed = Outcome {
        exit: 1,
        ..Outcome::default()
    };
    assert!(
        check(&failed, &[]).is_err(),
        "an undocumented exit status fails"
    );
}

#[test]
fn placeholders_match_only_their_kind() {
    let wanted = json!({"id": "...", "n": 1, "ok": true, "list": ["x", "..."]});
    let got = json!({"id": "anything", "n": 7, "ok": true, "list": ["x", "y", "z"]});
    assert!(json_matches(&wanted, &got));
    assert!(!json_matches(
        &wanted,
        &json!({"id": "a", "n": 7, "ok": false, "list": ["x"]})
    ));
    assert!(!json_matches(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(json_matches(&json!("backup-..."), &json!("backup-17")));
    assert!(!json_matches(&json!("backup-..."), &json!("other")));
    assert!(!json_matches(&json!([]), &json!([1])));
    assert!(glob(
        "started node1 pid ... http://127.0.0.1:...",
        "started node1 pid 12 http://127.0.0.1:8080"
    ));
    assert!(!glob("stopped node1", "stopped node12"));
}
