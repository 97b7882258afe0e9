//! Files that hold secrets or data are private (issue 11): the data dir, the write-ahead
//! log, backups and `kvs backup --out` copies against a real node, and the warning a node
//! logs at start when its config file is readable by group or others.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Node, PLAIN, run_kvs};

fn mode(path: &Path) -> u32 {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn data_backups_and_the_log_are_private() {
    let node = Node::start(PLAIN);
    assert_eq!(node.put("/kv/k", r#""v""#).status, 201);
    let backup = node.request("POST", "/admin/backups", None, &[]);
    assert_eq!(backup.status, 201, "{}", backup.body);
    let name = backup.json()["name"].as_str().expect("name").to_owned();

    let data = node.data_dir();
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(mode(&data.join("data.mdb")), 0o600, "the LMDB data");
    let backups = data.join("backups");
    assert_eq!(mode(&backups), 0o700, "the backups dir");
    for ext in ["mdb", "json"] {
        assert_eq!(mode(&backups.join(format!("{name}.{ext}"))), 0o600, "{ext}");
    }
    assert_eq!(mode(&data.join("wal")), 0o700, "the write-ahead log's dir");
    let segments: Vec<_> = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(!segments.is_empty(), "no log segment");
    for segment in &segments {
        assert_eq!(mode(segment), 0o600, "{}", segment.display());
    }

    let out = node.dir.path().join("copy.mdb");
    let config = node.config.to_str().expect("utf-8");
    let args = ["backup", config, "--out", out.to_str().expect("utf-8")];
    let ran = run_kvs(&args, node.dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "kvs backup: {stderr}");
    assert_eq!(mode(&out), 0o600, "the --out copy");
}

/// Runs a node on `config` until it has started, stops it with SIGTERM, and returns its
/// whole log.
fn start_log(config: &Path, dir: &Path) -> String {
    let log = dir.join("start.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = std::process::Command::new(common::kvs_bin())
        .arg("run")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn kvs");
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while Instant::now() < deadline && !read().contains("node started") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    let text = read();
    assert!(
        text.contains("node stopped"),
        "the node did not run: {text}"
    );
    text
}

#[test]
fn a_config_others_may_read_is_warned_about_when_it_holds_the_secrets() {
    let secrets = format!(
        "cluster_secret: \"{}\"\njwt_secret: \"{}\"\n",
        "c".repeat(64),
        "j".repeat(64)
    );
    let mut node = Node::start(&format!("{PLAIN}{secrets}"));
    node.kill();
    let warning = "readable by group or others";
    set_mode(&node.config, 0o640);
    let log = start_log(&node.config, node.dir.path());
    assert!(log.contains(warning), "no warning for mode 0640: {log}");
    set_mode(&node.config, 0o600);
    let log = start_log(&node.config, node.dir.path());
    assert!(!log.contains(warning), "a warning for mode 0600: {log}");
    // Without them (they are in the data dir) there is nothing to warn about.
    let mut plain = Node::start(PLAIN);
    plain.kill();
    set_mode(&plain.config, 0o640);
    let log = start_log(&plain.config, plain.dir.path());
    assert!(
        !log.contains(warning),
        "a warning for a config without secrets: {log}"
    );
}
