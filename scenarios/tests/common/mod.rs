//! Helpers shared by the kvs-sim tests: run the built binary and parse its result lines.
#![allow(dead_code, reason = "each test file uses a subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The scenarios directory.
pub(crate) fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs `kvs-sim` with arguments.
pub(crate) fn kvs_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvs-sim"))
        .args(args)
        .output()
        .expect("kvs-sim runs")
}

/// One parsed result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The scenario's name.
    pub(crate) name: String,
    /// The seed.
    pub(crate) seed: u64,
    /// The trace digest (hex).
    pub(crate) digest: String,
    /// `PASS` or `FAIL`.
    pub(crate) verdict: String,
}

/// The result lines of a run's stdout (`scenario <name> seed <N> trace <hex> PASS|FAIL`).
pub(crate) fn lines(out: &Output) -> Vec<Line> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 7, "result line format: {l}");
            assert_eq!((w[0], w[2], w[4]), ("scenario", "seed", "trace"), "{l}");
            assert_eq!(w[5].len(), 64, "sha-256 hex digest: {l}");
            Line {
                name: w[1].into(),
                seed: w[3].parse().expect("seed"),
                digest: w[5].into(),
                verdict: w[6].into(),
            }
        })
        .collect()
}
