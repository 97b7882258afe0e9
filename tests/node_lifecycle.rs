//! Running, stopping and breaking a node: durability across SIGKILL, graceful SIGTERM,
//! config errors, the default config.

mod common;

use std::time::Duration;

use common::{Node, PLAIN, run_kvs};

#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut node = Node::start(PLAIN);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let base = node.base.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let url = format!("{base}/kv/durable/{w}/{i}");
                    let answer = common::request(
                        &url,
                        "PUT",
                        Some(&format!("{{\"w\":{w},\"i\":{i}}}")),
                        &[],
                    );
                    assert_eq!(answer.status, 201);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    node.delete("/kv/durable/0/0");
    node.kill();
    node.launch();
    for w in 0..4 {
        for i in 0..50 {
            let answer = node.get(&format!("/kv/durable/{w}/{i}"));
            if (w, i) == (0, 0) {
                assert_eq!(answer.status, 404, "the delete survived too");
            } else {
                assert_eq!(answer.status, 200, "durable/{w}/{i} lost");
                assert_eq!(answer.json()["data"]["i"], i);
            }
        }
    }
    // 199 keys, and 200 entries with the deleted one's tombstone.
    assert_eq!(node.metric("kvs_store_keys"), Some(199.0));
    assert_eq!(node.metric("kvs_store_entries"), Some(200.0));
}

#[test]
fn sigterm_stops_gracefully_with_exit_0() {
    let mut node = Node::start(PLAIN);
    node.put("/kv/k", "1");
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    node.launch();
    assert_eq!(node.get("/kv/k").json()["data"], 1);
}

#[test]
fn joined_at_is_kept_across_restarts() {
    let mut node = Node::start(PLAIN);
    let first = node.get("/members").json()["members"][0]["joined_at"].clone();
    node.kill();
    node.launch();
    assert_eq!(
        node.get("/members").json()["members"][0]["joined_at"],
        first
    );
}

fn expect_config_error(yaml: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), yaml).unwrap();
    let out = run_kvs(&["run", "bad.yaml"], dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{yaml:?}: {stderr}");
    assert!(
        stderr.contains(key),
        "{yaml:?}: stderr does not name {key}: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    expect_config_error("node_id: a\nhttp_port: 0\nnot_a_key: 1\n", "not_a_key");
    expect_config_error("node_id: a\nhttp_port: lots\n", "http_port");
    expect_config_error("node_id: a\nhttp_port: 70000\n", "http_port");
    expect_config_error(
        "node_id: a\nhttp_port: 0\nauth_enabled: maybe\n",
        "auth_enabled",
    );
    expect_config_error(
        "node_id: a\nhttp_port: 0\ntombstone_ttl: forever\n",
        "tombstone_ttl",
    );
    expect_config_error(
        "node_id: a\nhttp_port: 0\ndefault_permissions: xyz\n",
        "default_permissions",
    );
    expect_config_error("node_id: a\nhttp_port: 0\nlog_level: loud\n", "log_level");
    expect_config_error(
        "node_id: a\nhttp_port: 0\nseed_nodes: [nowhere]\n",
        "seed_nodes",
    );
    expect_config_error(
        "node_id: a\nhttp_port: 0\nbind_address: not-an-ip\n",
        "bind_address",
    );
    expect_config_error("- just\n- a list\n", "bad.yaml");
}

#[test]
fn a_port_in_use_is_a_config_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    expect_config_error(
        &format!("node_id: a\n{PLAIN}http_port: {port}\n"),
        "http_port",
    );
}

#[test]
fn an_unusable_data_dir_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a dir").unwrap();
    expect_config_error(
        &format!(
            "node_id: a\n{PLAIN}http_port: 0\ndata_dir: {}\n",
            file.display()
        ),
        "data_dir: ",
    );
    expect_config_error(
        &format!(
            "node_id: a\n{PLAIN}http_port: 0\ndata_dir: {}\n",
            file.display()
        ),
        "is not a directory",
    );
    expect_config_error(
        &format!("node_id: a\n{PLAIN}http_port: 0\ndata_dir: \"\"\n"),
        "data_dir: must not be empty",
    );
}

#[test]
fn an_address_this_host_lacks_names_bind_address() {
    // TEST-NET-1 (RFC 5737): never an address of this host.
    expect_config_error(
        &format!("node_id: a\n{PLAIN}http_port: 0\nbind_address: 192.0.2.1\n"),
        "bind_address",
    );
}

/// Runs `kvs ARGS` in `cwd` until `path` appears, then stops it; returns the file's text.
fn written_config(args: &[&str], cwd: &std::path::Path, path: &std::path::Path) -> String {
    let mut child = std::process::Command::new(common::kvs_bin())
        .args(args)
        .current_dir(cwd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(path).expect("config written")
}

#[test]
fn a_missing_config_is_written_with_fresh_identity_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // `kvs fresh` (no subcommand, no .yaml) writes and runs fresh.yaml.
    let path = dir.path().join("fresh.yaml");
    let text = written_config(&["fresh"], dir.path(), &path);
    for key in [
        "node_id:",
        "cluster_secret:",
        "jwt_secret:",
        "http_port: 8080",
        "tombstone_ttl: 7d",
        "# ",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    let other_path = dir.path().join("x/other.yaml");
    let other = written_config(&["run", "x/other.yaml"], dir.path(), &other_path);
    let line = |t: &str, key: &str| t.lines().find(|l| l.starts_with(key)).map(str::to_owned);
    assert_ne!(
        line(&text, "cluster_secret:"),
        line(&other, "cluster_secret:")
    );
    assert_ne!(line(&text, "node_id:"), line(&other, "node_id:"));
    // The written config runs as it is (on a free port).
    let runnable = text
        .replace("http_port: 8080", "http_port: 0")
        .replace("clustering_enabled: true", "clustering_enabled: false");
    let mut node = Node::start(PLAIN);
    std::fs::write(&node.config, runnable).unwrap();
    node.kill();
    node.launch();
    let health = node.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        Some(format!("node_id: {}", health["node_id"].as_str().unwrap())),
        line(&text, "node_id:")
    );
}

#[test]
fn a_config_without_node_id_gets_one_generated_and_kept() {
    let mut node = Node::start(PLAIN);
    node.kill();
    std::fs::write(&node.config, format!("http_port: 0\n{PLAIN}")).unwrap();
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    node.launch();
    let id = node.get("/health").json()["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is not a UUID");
    node.kill();
    node.launch();
    assert_eq!(
        node.get("/health").json()["node_id"],
        id.as_str(),
        "kept across restarts"
    );
}

#[test]
fn a_wildcard_bind_without_an_advertised_address_is_warned_about() {
    let node =
        Node::start("auth_enabled: false\nbind_address: 0.0.0.0\ngossip_port: 0\nsync_port: 0\n");
    assert_eq!(node.get("/health").status, 200);
    let warned = |logs: &[String]| logs.iter().any(|l| l.contains("set advertise_address"));
    let mut logs = node.drain_logs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !warned(&logs) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        logs.extend(node.drain_logs());
    }
    assert!(warned(&logs), "no warning:\n{}", logs.join("\n"));
}

/// A node whose stderr reader has gone (`kvs run n1 2>&1 | head -1`) still stops
/// gracefully on SIGTERM: its log lines are dropped, where the first one that failed used
/// to be reported through `eprintln!` to the same closed pipe, a panic (exit 101).
#[test]
fn a_node_whose_log_reader_has_gone_still_stops_gracefully() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("n1.yaml");
    std::fs::write(&config, format!("{PLAIN}http_port: 0\n")).unwrap();
    let mut child = std::process::Command::new(common::kvs_bin())
        .args(["run", config.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    log.read_line(&mut first).unwrap();
    assert!(first.contains("node started"), "{first}");
    drop(log);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let ended = common::cluster::within(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
