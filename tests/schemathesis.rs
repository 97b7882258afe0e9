//! schemathesis (PyPI, `st`) against `GET /openapi.json` of a live node, once with
//! `auth_enabled: false` and once with auth on and the root token: every check
//! (`--checks all`: no 5xx, status codes, content types, headers and bodies as the
//! document declares them, schema-violating requests refused, schema-valid ones accepted,
//! missing or bad credentials refused, `405` with `Allow` for undeclared methods, ...)
//! over every phase (examples, coverage, fuzzing, stateful), with a fixed seed and a bound
//! on examples per operation so that a run is reproducible and short. Any failure fails
//! the test with schemathesis' report. The exceptions the contract needs are in
//! `tests/schemathesis.toml`, each with its reason.
//!
//! Without `st` it prints a skip line, or fails when `CI` is set (`.ci/run` installs it).
//! `KVS_ST_EXAMPLES` overrides the examples per operation, `KVS_ST_SEED` the seed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Node, PLAIN};

/// Examples per operation and phase: both runs together stay well under a minute and a
/// half on two cores in a debug build.
const EXAMPLES: &str = "10";
/// The seed: the same requests on every run.
const SEED: &str = "20261203";

/// Whether `st` runs; else prints the skip line, or panics under CI.
fn st_available() -> bool {
    let found = Command::new("st")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/schemathesis.rs needs schemathesis (`pip install schemathesis`), and CI \
             must not skip it"
        );
        println!("skipped: needs schemathesis (`st`; pip install schemathesis)");
    }
    found
}

/// Runs `st run` against `node` with `extra` arguments; panics with its report unless it
/// found nothing.
fn schemathesis(node: &Node, what: &str, extra: &[&str]) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let examples = std::env::var("KVS_ST_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let seed = std::env::var("KVS_ST_SEED").unwrap_or_else(|_| SEED.to_owned());
    let url = format!("{}/openapi.json", node.base);
    let started = Instant::now();
    let output = Command::new("st")
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(&url)
        .args(["--checks", "all"])
        .args(["--max-examples", &examples, "--seed", &seed])
        // No example database: the same seed gives the same run, wherever it runs.
        .args(["--generation-database", "none"])
        .args(extra)
        // Anything schemathesis writes stays in the node's temp dir.
        .current_dir(node.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run st");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "schemathesis, {what} ({} s):\n{report}",
        started.elapsed().as_secs()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures with {what} ({}); its report is above",
        output.status
    );
}

#[test]
fn schemathesis_auth_off() {
    if !st_available() {
        return;
    }
    let node = Node::start(PLAIN);
    schemathesis(&node, "auth off", &[]);
}

#[test]
fn schemathesis_auth_on_as_root() {
    if !st_available() {
        return;
    }
    let node = Node::start("clustering_enabled: false\n");
    let token = std::fs::read_to_string(node.data_dir().join("root.token")).expect("root.token");
    let header = format!("Authorization: Bearer {}", token.trim_end());
    schemathesis(&node, "auth on, root token", &["-H", &header]);
}
