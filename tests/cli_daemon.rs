//! The command line's daemon instances (`start`, `status`, `stop`, `restart`): pid
//! files, stale and foreign ones, two starts at once, and configs refused before
//! anything is written, run as real processes.

mod common;

use common::run_kvs;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn daemon_start_status_restart_stop() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    let env = [("KVS_HOME", home)];
    std::fs::write(
        dir.path().join("d1.yaml"),
        "node_id: d1\nhttp_port: 0\nauth_enabled: false\nclustering_enabled: false\n",
    )
    .unwrap();

    let started = run_kvs(&["start", "d1"], dir.path(), &env);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let line = stdout(&started);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("address printed")
        .to_owned();
    let pid: i32 = std::fs::read_to_string(format!("{home}/pids/d1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(line.contains(&pid.to_string()));
    assert!(std::path::Path::new(&format!("{home}/logs/kvs_d1.yaml.log")).exists());
    assert_eq!(
        common::request(&format!("{url}/health"), "GET", None, &[]).status,
        200
    );

    let again = run_kvs(&["start", "d1.yaml"], dir.path(), &env);
    assert_eq!(again.status.code(), Some(1), "already running");
    // Another config on the same data dir is a config error, as with `kvs run`.
    std::fs::write(
        dir.path().join("d2.yaml"),
        "node_id: d2\nhttp_port: 0\nauth_enabled: false\nclustering_enabled: false\n",
    )
    .unwrap();
    let taken = run_kvs(&["start", "d2"], dir.path(), &env);
    assert_eq!(taken.status.code(), Some(2), "data dir in use");
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(
        said.contains("d2.yaml: data_dir: ") && said.contains("in use"),
        "{said}"
    );
    let run = run_kvs(&["run", "d2"], dir.path(), &env);
    assert_eq!(run.status.code(), Some(2), "data dir in use");

    let status = run_kvs(&["status"], dir.path(), &env);
    assert!(status.status.success());
    let table = stdout(&status);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("d1") && l.contains("running") && l.contains(&pid.to_string())),
        "{table}"
    );

    let restarted = run_kvs(&["restart", "d1"], dir.path(), &env);
    assert!(restarted.status.success());
    let new_pid: i32 = std::fs::read_to_string(format!("{home}/pids/d1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, pid);

    let stopped = run_kvs(&["stop", "d1"], dir.path(), &env);
    assert!(stopped.status.success());
    assert!(!std::path::Path::new(&format!("{home}/pids/d1.pid")).exists());
    let not_running = run_kvs(&["stop", "d1"], dir.path(), &env);
    assert_eq!(not_running.status.code(), Some(1));
}

#[test]
fn a_stale_pid_file_is_reported_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("pids")).unwrap();
    // A pid far above any pid_max: no such process.
    std::fs::write(home.join("pids/s1.pid"), "2147483000\n").unwrap();
    let env = [("KVS_HOME", home.to_str().unwrap())];
    let status = stdout(&run_kvs(&["status"], dir.path(), &env));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("s1") && l.contains("stale")),
        "{status}"
    );
    std::fs::write(
        dir.path().join("s1.yaml"),
        "node_id: s1\nhttp_port: 0\nauth_enabled: false\nclustering_enabled: false\n",
    )
    .unwrap();
    assert!(run_kvs(&["start", "s1"], dir.path(), &env).status.success());
    let status = stdout(&run_kvs(&["status", "s1"], dir.path(), &env));
    assert!(status.contains("running"), "{status}");
    assert!(run_kvs(&["stop", "s1"], dir.path(), &env).status.success());
}

#[test]
fn a_pid_file_naming_another_process_is_stale_and_never_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("pids")).unwrap();
    // The daemon's pid was taken by another process since (after a reboot, say).
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(home.join("pids/s1.pid"), format!("{}\n", other.id())).unwrap();
    let env = [("KVS_HOME", home.to_str().unwrap())];
    let status = stdout(&run_kvs(&["status", "s1"], dir.path(), &env));
    assert!(status.contains("stale"), "{status}");
    let stop = run_kvs(&["stop", "s1"], dir.path(), &env);
    assert_eq!(stop.status.code(), Some(1), "not running");
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process was signalled"
    );
    std::fs::write(home.join("pids/s1.pid"), format!("{}\n", other.id())).unwrap();
    std::fs::write(
        dir.path().join("s1.yaml"),
        "node_id: s1\nhttp_port: 0\nauth_enabled: false\nclustering_enabled: false\n",
    )
    .unwrap();
    let start = run_kvs(&["start", "s1"], dir.path(), &env);
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    assert!(run_kvs(&["stop", "s1"], dir.path(), &env).status.success());
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process was signalled"
    );
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn two_starts_of_one_config_at_once_leave_one_daemon_that_stop_stops() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::write(
        dir.path().join("s1.yaml"),
        "node_id: s1\nhttp_port: 0\nauth_enabled: false\nclustering_enabled: false\n",
    )
    .unwrap();
    let env = [("KVS_HOME", home.to_str().unwrap())];
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let (dir, home) = (dir.path().to_owned(), home.clone());
            std::thread::spawn(move || {
                run_kvs(
                    &["start", "s1"],
                    &dir,
                    &[("KVS_HOME", home.to_str().unwrap())],
                )
            })
        })
        .collect();
    let codes: Vec<Option<i32>> = starts
        .into_iter()
        .map(|start| start.join().unwrap().status.code())
        .collect();
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(1)),
        "{codes:?}"
    );
    let status = stdout(&run_kvs(&["status", "s1"], dir.path(), &env));
    assert!(status.contains("running"), "{status}");
    assert!(run_kvs(&["stop", "s1"], dir.path(), &env).status.success());
}

#[test]
fn start_names_the_key_of_a_port_in_use_and_writes_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let taken_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp, udp) = (
        taken_tcp.local_addr().unwrap().port(),
        taken_udp.local_addr().unwrap().port(),
    );
    // Ports no other test is given (a node of one could take them before this one ran).
    let free_tcp = common::cluster::free_udp_port();
    let (free_gossip, free_sync) = (
        common::cluster::free_udp_port(),
        common::cluster::free_udp_port(),
    );
    for (key, ports) in [
        ("http_port", [tcp, free_gossip, free_sync]),
        ("gossip_port", [free_tcp, udp, free_sync]),
        ("sync_port", [free_tcp, free_gossip, udp]),
    ] {
        let [http, gossip, sync] = ports;
        let data_dir = dir.path().join(format!("{key}-data"));
        std::fs::write(
            dir.path().join("busy.yaml"),
            format!(
                "node_id: b\nhttp_port: {http}\ngossip_port: {gossip}\nsync_port: {sync}\n\
                 data_dir: {}\nauth_enabled: false\ncluster_secret: {}\n",
                data_dir.display(),
                "0123456789abcdef".repeat(2)
            ),
        )
        .unwrap();
        let out = run_kvs(
            &["start", "busy"],
            dir.path(),
            &[("KVS_HOME", home.to_str().unwrap())],
        );
        assert_eq!(out.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key) && stderr.contains("busy.yaml"),
            "{key}: {stderr}"
        );
        // Refused before anything was written: no data dir, no secrets, no lock.
        assert!(!data_dir.exists(), "{key}: the data dir was made");
    }
}

#[test]
fn a_bad_config_fails_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "node_id: b\nwhat: 1\n").unwrap();
    let home = dir.path().join("home");
    let out = run_kvs(
        &["start", "bad"],
        dir.path(),
        &[("KVS_HOME", home.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("what"));
}

/// Where `$KVS_HOME` is a file, `status` says so, and `start` of a new config fails
/// before it writes the config: it wrote one for a node that never started.
#[test]
fn a_kvs_home_that_is_a_file_is_reported_and_start_writes_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::write(&home, b"a file").unwrap();
    let env = [("KVS_HOME", home.to_str().unwrap())];
    let out = run_kvs(&["status"], dir.path(), &env);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a directory"), "{said}");

    let out = run_kvs(&["start", "n1"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Not a directory"), "{said}");
    assert!(!dir.path().join("n1.yaml").exists(), "a config was written");
}

/// Found by a black-box audit: `restart` with a config broken since the start stopped the
/// node and left it down; and `stop`/`restart` of `y/node1` stopped the node that
/// `x/node1` runs (instances are named by file name). Both now leave the node running.
#[test]
fn restart_with_a_broken_config_and_stop_of_another_config_leave_the_node_running() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    let env = [("KVS_HOME", home)];
    let config = "http_port: 0\nauth_enabled: false\nclustering_enabled: false\n";
    for sub in ["x", "y"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        let text = format!("node_id: {sub}\n{config}");
        std::fs::write(dir.path().join(sub).join("node1.yaml"), text).unwrap();
    }
    let started = run_kvs(&["start", "x/node1"], dir.path(), &env);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let url = stdout(&started)
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("address printed")
        .to_owned();
    let host = url.trim_start_matches("http://").to_owned();
    let healthy = || {
        std::net::TcpStream::connect(&host).is_ok()
            && common::request(&format!("{url}/health"), "GET", None, &[]).status == 200
    };

    for command in ["stop", "restart"] {
        let other = run_kvs(&[command, "y/node1"], dir.path(), &env);
        assert_eq!(other.status.code(), Some(1), "{command} y/node1");
        let said = String::from_utf8_lossy(&other.stderr);
        assert!(said.contains("x/node1.yaml"), "{command}: {said}");
        assert!(healthy(), "{command} y/node1 stopped x/node1's node");
    }

    let x = dir.path().join("x").join("node1.yaml");
    std::fs::write(&x, format!("node_id: x\n{config}bogus_key: 1\n")).unwrap();
    let broken = run_kvs(&["restart", "x/node1"], dir.path(), &env);
    assert_eq!(
        broken.status.code(),
        Some(2),
        "restart with a broken config"
    );
    assert!(String::from_utf8_lossy(&broken.stderr).contains("bogus_key"));
    assert!(healthy(), "the broken restart stopped the node");

    std::fs::write(&x, format!("node_id: x\n{config}")).unwrap();
    let stopped = run_kvs(&["stop", "x/node1"], dir.path(), &env);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!healthy());
}
