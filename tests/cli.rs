//! The command line: the HTTP client commands (JSON when piped, tables with `--table`),
//! `init` and shell completions, run as real processes (daemon instances:
//! `cli_daemon.rs`).

mod common;

use common::run_kvs;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn client_commands_talk_to_a_node() {
    let node = common::Node::start(common::PLAIN);
    let dir = tempfile::tempdir().unwrap();
    let env = [("KVS_ADDR", node.base.as_str())];
    let put = run_kvs(&["put", "cli/ключ one", "{\"n\": 1}"], dir.path(), &env);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(stdout(&put).contains("uuid"));
    let get = run_kvs(&["get", "cli/ключ one"], dir.path(), &env);
    let value: serde_json::Value = serde_json::from_str(stdout(&get).trim()).unwrap();
    assert_eq!(value["data"]["n"], 1);
    let ls = run_kvs(&["ls", "cli/"], dir.path(), &env);
    assert!(stdout(&ls).contains("cli/ключ one"));
    let members = run_kvs(&["members", "--addr", &node.base], dir.path(), &[]);
    assert!(stdout(&members).contains("test-node"));
    assert!(
        run_kvs(&["del", "cli/ключ one"], dir.path(), &env)
            .status
            .success()
    );
    let missing = run_kvs(&["get", "cli/ключ one"], dir.path(), &env);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    let bad_json = run_kvs(&["put", "k", "{nope"], dir.path(), &env);
    assert_eq!(bad_json.status.code(), Some(2));
    let with_ttl = run_kvs(&["put", "t", "1", "--ttl", "1h"], dir.path(), &env);
    assert!(with_ttl.status.success());
    let no_node = run_kvs(
        &["get", "k", "--addr", "http://127.0.0.1:1"],
        dir.path(),
        &[],
    );
    assert_eq!(no_node.status.code(), Some(1));
}

/// Runs `kvs ARGS` with its stdout a pipe whose reader has gone (`kvs ls | head -1` once
/// `head` has its line), stopping it after `then` if it has not ended by itself.
fn with_reader_gone(
    args: &[&str],
    env: &[(&str, &str)],
    then: impl FnOnce(),
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut command = Command::new(common::kvs_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    then();
    let ended = common::cluster::within(std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn init_refuses_a_name_that_names_no_node() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("j.yaml"), "node_id: j\nhttp_port: 0\n").unwrap();
    for name in ["", ".", "..", "a/.."] {
        let out = run_kvs(&["init", name, "--join", "j"], dir.path(), &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {said}");
        assert!(said.contains("names no config"), "{name:?}: {said}");
    }
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "only j.yaml: {files:?}");
}

/// `kvs start ''` wrote `.yaml`, then the daemon read that as a name and wrote and ran on
/// `.yaml.yaml`, with other secrets; a CONFIG that names no file is a usage error.
#[test]
fn a_config_argument_that_names_no_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    for command in ["run", "start", "stop", "restart", "backup", "compact"] {
        for name in ["", " ", "d/", ".yaml", "..", "d/.yml"] {
            let out = run_kvs(&[command, name], dir.path(), &[("KVS_HOME", home)]);
            let said = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {name:?}: {said}");
            assert!(
                said.contains("names no config"),
                "{command} {name:?}: {said}"
            );
        }
    }
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "nothing written: {files:?}");
}

#[test]
fn an_address_that_can_never_work_is_a_usage_error_even_for_watch() {
    let dir = tempfile::tempdir().unwrap();
    for addr in [
        "localhost",
        "ftp://h:1",
        "http://127.0.0.1:99999",
        "http://::1:8080",
    ] {
        for command in [&["get", "k"][..], &["watch", "p"], &["ls"]] {
            let mut args = command.to_vec();
            args.extend(["--addr", addr]);
            // watch used to retry such an address for ever.
            let out = run_kvs(&args, dir.path(), &[]);
            let said = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
            assert!(said.contains("is not http://host:port"), "{args:?}: {said}");
        }
    }
}

/// `--addr` and `--token` before the subcommand as after it (as etcdctl takes them), and
/// a negative number as a value (clap took `-1` for an option).
#[test]
fn client_options_go_before_the_subcommand_and_a_value_may_be_negative() {
    let node = common::Node::start(common::PLAIN);
    let dir = tempfile::tempdir().unwrap();
    let put = run_kvs(
        &["--addr", &node.base, "--token=", "put", "n", "-1"],
        dir.path(),
        &[],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = run_kvs(&["--addr", &node.base, "get", "n"], dir.path(), &[]);
    let value: serde_json::Value = serde_json::from_str(stdout(&get).trim()).unwrap();
    assert_eq!(value["data"], -1);
    let plain = run_kvs(&["get", "n", "--addr", &node.base], dir.path(), &[]);
    assert_eq!(stdout(&plain), stdout(&get));
}

/// A mistyped address or a node that is down: `kvs watch` says so and exits 1 at once, as
/// `kvs get` does. (It retried such an address every second for ever, printing
/// `retrying`; it retries only once a stream has run, to resume after a disconnect.)
#[test]
fn watch_of_an_address_where_nothing_listens_exits_1_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("http://127.0.0.1:{port}");
    let args = ["watch", "p/", "--addr", &addr];
    let out = common::run_kvs_within(&args, dir.path(), std::time::Duration::from_secs(20));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot connect"), "{said}");
    assert!(!said.contains("retrying"), "{said}");
    assert!(out.stdout.is_empty());
}

#[test]
fn output_to_a_reader_that_has_gone_ends_quietly_with_exit_0() {
    let node = common::Node::start(common::PLAIN);
    let env = [("KVS_ADDR", node.base.as_str())];
    assert_eq!(node.put("/kv/pipe/a", "1").status, 201);
    let ls = with_reader_gone(&["ls", "pipe/"], &env, || {});
    let watch = with_reader_gone(&["watch", "pipe/"], &env, || {
        // The watch prints this change, into the closed pipe.
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(node.put("/kv/pipe/b", "2").status, 201);
    });
    // No change at all: the watch ends as its reader goes, not at its next line.
    let quiet_watch = with_reader_gone(&["watch", "quiet/"], &env, || {});
    let completions = with_reader_gone(&["completions", "bash"], &[], || {});
    for (command, out) in [
        ("ls", ls),
        ("watch", watch),
        ("watch with no change", quiet_watch),
        ("completions", completions),
    ] {
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "kvs {command}: {said}");
        assert!(!said.contains("panicked"), "kvs {command}: {said}");
    }
}

#[test]
fn client_commands_print_tables_on_request_and_json_when_piped() {
    let node = common::Node::start(common::PLAIN);
    let dir = tempfile::tempdir().unwrap();
    let env = [("KVS_ADDR", node.base.as_str())];
    let put = run_kvs(
        &["put", "t/a", "{\"n\": [1, 2]}", "--table"],
        dir.path(),
        &env,
    );
    assert!(
        stdout(&put).starts_with("created t/a: uuid "),
        "{}",
        stdout(&put)
    );
    let again = run_kvs(&["put", "t/a", "3", "--table"], dir.path(), &env);
    assert!(stdout(&again).starts_with("updated t/a: uuid "));
    run_kvs(&["put", "t/a", "{\"n\": [1, 2]}"], dir.path(), &env);

    let get = stdout(&run_kvs(&["get", "t/a", "--table"], dir.path(), &env));
    assert!(get.starts_with("FIELD"), "{get}");
    assert!(get.contains("key        t/a"), "{get}");
    assert!(
        get.ends_with("{\n  \"n\": [\n    1,\n    2\n  ]\n}\n"),
        "{get}"
    );
    // Piped (as here) or with --json: the node's answer as it is.
    for args in [&["get", "t/a"][..], &["get", "t/a", "--json"][..]] {
        let piped: serde_json::Value =
            serde_json::from_str(stdout(&run_kvs(args, dir.path(), &env)).trim()).unwrap();
        assert_eq!(piped["data"]["n"][1], 2);
    }
    let ls = stdout(&run_kvs(&["ls", "t/", "--table"], dir.path(), &env));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("KEY  WRITTEN"), "{ls}");
    assert!(lines[1].starts_with("t/a  20"), "{ls}");
    assert_eq!(lines[2], "(1 keys)");
    let members = stdout(&run_kvs(&["members", "--table"], dir.path(), &env));
    assert!(members.starts_with("NODE"), "{members}");
    assert!(members.contains("test-node  alive"), "{members}");
    let both = run_kvs(&["get", "t/a", "--json", "--table"], dir.path(), &env);
    assert_eq!(both.status.code(), Some(2), "--json and --table conflict");
    let missing = run_kvs(&["get", "t/none", "--table"], dir.path(), &env);
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("404 Not Found: not_found: "), "{said}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    let bash = run_kvs(&["completions", "bash"], dir.path(), &[]);
    assert!(bash.status.success());
    assert!(
        stdout(&bash).contains("complete -F _kvs"),
        "{}",
        stdout(&bash)
    );
    for (shell, mark) in [("zsh", "#compdef kvs"), ("fish", "complete -c kvs")] {
        let out = run_kvs(&["completions", shell], dir.path(), &[]);
        assert!(stdout(&out).contains(mark), "{shell}");
        assert!(
            stdout(&out).contains("members"),
            "{shell} completes subcommands"
        );
    }
    let unknown = run_kvs(&["completions", "tcsh"], dir.path(), &[]);
    assert_eq!(unknown.status.code(), Some(2));
}

/// A port that is free now (bound to port 0, then released).
fn free_port(udp: bool) -> u16 {
    match udp {
        true => std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        false => std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    }
}

#[test]
fn init_writes_a_config_that_joins_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [("KVS_HOME", home.to_str().unwrap())];
    let gossip = write_node1(
        dir.path(),
        "cluster_secret: init-test-cluster-secret\njwt_secret: init-test-jwt-secret\n",
    );
    let init = run_kvs(&["init", "node2", "--join", "node1"], dir.path(), &env);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(stdout(&init).contains(&format!("joining through 127.0.0.1:{gossip}")));
    let again = run_kvs(&["init", "node2", "--join", "node1"], dir.path(), &env);
    assert_eq!(again.status.code(), Some(2), "an existing config is kept");
    start_node(dir.path(), &env, "node1");
    let joined = sees_members(&start_node(dir.path(), &env, "node2"), 2);
    for name in ["node1", "node2"] {
        run_kvs(&["stop", name], dir.path(), &env);
    }
    assert!(joined, "node2 did not join node1");
}

/// A config with no secrets: its node generates them at its first start and keeps them
/// in its data dir, from where `kvs init --join` takes them while the node runs.
#[test]
fn init_takes_the_secrets_a_running_node_generated() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let env = [("KVS_HOME", home.to_str().unwrap())];
    write_node1(dir.path(), "");
    let early = run_kvs(&["init", "node2", "--join", "node1"], dir.path(), &env);
    assert_eq!(early.status.code(), Some(2), "no secrets exist yet");
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("start that node once"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    assert!(!dir.path().join("node2.yaml").exists());
    start_node(dir.path(), &env, "node1");
    let init = run_kvs(&["init", "node2", "--join", "node1"], dir.path(), &env);
    let joined = init.status.success() && sees_members(&start_node(dir.path(), &env, "node2"), 2);
    for name in ["node1", "node2"] {
        run_kvs(&["stop", name], dir.path(), &env);
    }
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(joined, "node2 did not join node1");
}

/// Writes `node1.yaml` in `dir`: free ports, auth off, then `extra`; its gossip port.
fn write_node1(dir: &std::path::Path, extra: &str) -> u16 {
    let (http, gossip, sync) = (free_port(false), free_port(true), free_port(true));
    std::fs::write(
        dir.join("node1.yaml"),
        format!(
            "http_port: {http}\ngossip_port: {gossip}\nsync_port: {sync}\nauth_enabled: false\n{extra}"
        ),
    )
    .unwrap();
    gossip
}

/// Starts node `name` with `kvs start` (in `dir`); its HTTP base URL.
fn start_node(dir: &std::path::Path, env: &[(&str, &str)], name: &str) -> String {
    let started = run_kvs(&["start", name], dir, env);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let addr = stdout(&started)
        .split_whitespace()
        .find(|w| w.contains("127.0.0.1:"))
        .map(str::to_owned)
        .expect("an address");
    format!("http://{}", addr.trim_start_matches("http://"))
}

/// Whether the node at `base` counts `members` members within 10 s.
fn sees_members(base: &str, members: usize) -> bool {
    (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let health = common::request(&format!("{base}/health"), "GET", None, &[]);
        health.status == 200 && health.json()["members"] == members
    })
}

#[test]
fn kvs_ls_follows_every_page_of_a_long_listing() {
    let node = common::Node::start(common::PLAIN);
    let dir = tempfile::tempdir().unwrap();
    let env = [("KVS_ADDR", node.base.as_str())];
    // One more than the node's largest page (1,000).
    for n in 0..1001 {
        assert_eq!(node.put(&format!("/kv/many/{n:04}"), "1").status, 201);
    }
    assert_eq!(node.put("/kv/other", "1").status, 201);
    let piped: serde_json::Value =
        serde_json::from_str(stdout(&run_kvs(&["ls", "many/"], dir.path(), &env)).trim()).unwrap();
    let keys: Vec<&str> = piped["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["key"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..1001).map(|n| format!("many/{n:04}")).collect();
    assert_eq!(keys, expected);
    assert!(piped["next_cursor"].is_null());
    let table = stdout(&run_kvs(&["ls", "many/", "--table"], dir.path(), &env));
    assert!(table.ends_with("(1001 keys)\n"), "{table}");
}

/// A server that answers every listing with the same cursor (a broken or hostile node):
/// `kvs ls` stops with an error instead of asking forever.
#[test]
fn kvs_ls_refuses_a_cursor_that_repeats_itself() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        let body = r#"{"items":[{"key":"x","uuid":"u","timestamp":1}],"next_cursor":"same"}"#;
        // One connection, answered request by request.
        for _ in 0..1000 {
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{addr}");
    let out = run_kvs(&["ls", "x", "--addr", &base], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cursor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Found by a black-box audit: `kvs get ''` printed the whole listing (`GET /kv/`) with
/// exit 0. An empty key is a usage error, before any request.
#[test]
fn an_empty_key_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    // No node at this address: the refusal comes before any request.
    let env = [("KVS_ADDR", "http://127.0.0.1:9")];
    for args in [&["get", ""][..], &["del", ""], &["put", "", "1"]] {
        let out = run_kvs(args, dir.path(), &env);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains("cannot be empty"), "{args:?}: {said}");
    }
}

#[test]
fn watch_refused_by_the_node_says_why_in_one_line_as_get_does() {
    let node = common::Node::start("clustering_enabled: false\n");
    let dir = tempfile::tempdir().unwrap();
    for command in [&["get", "k"][..], &["watch", "p"]] {
        let mut args = command.to_vec();
        args.extend(["--addr", &node.base, "--token", "not-a-token"]);
        let out = run_kvs(&args, dir.path(), &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("401 Unauthorized: unauthorized: "),
            "{args:?}: {said}"
        );
        assert!(!said.contains("{\"error\""), "{args:?}: {said}");
    }
}

/// Found by an audit: an argument that is not UTF-8 panicked (exit 101, a stack trace).
#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let not_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    for args in [
        vec!["get".as_ref(), not_utf8],
        vec!["run".as_ref(), not_utf8],
        vec![not_utf8],
    ] {
        let out = std::process::Command::new(common::kvs_bin())
            .args(&args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(
            said.contains("is not UTF-8") && !said.contains("panicked"),
            "{said}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// Found by an audit: against a server that answers without end (a mistyped `--addr`),
/// the client read the whole answer into memory (gigabytes in seconds).
#[test]
fn an_answer_without_end_is_refused_past_a_bound() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
                while stream.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    for args in [&["get", "k"][..], &["ls"], &["members"], &["watch", "p"]] {
        let mut args = args.to_vec();
        args.extend(["--addr", addr.as_str()]);
        let out = run_kvs(&args, dir.path(), &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains("over 64 MiB"), "{args:?}: {said}");
    }
}
