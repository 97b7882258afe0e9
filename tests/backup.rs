//! Backups against a real node: `POST`/`GET /admin/backups` while it serves, `kvs backup`
//! (running and stopped), and `kvs restore` into a stopped node.

mod common;

use common::{Node, request, run_kvs};
use heed::types::Bytes;
use std::time::Duration;

fn root(node: &Node) -> String {
    let token = std::fs::read_to_string(node.data_dir().join("root.token")).unwrap();
    format!("Bearer {}", token.trim())
}

fn put(node: &Node, auth: &str, key: &str, value: &str) {
    let answer = node.request(
        "PUT",
        &format!("/kv/{key}"),
        Some(value),
        &[("authorization", auth)],
    );
    assert!(
        answer.status == 200 || answer.status == 201,
        "{}",
        answer.body
    );
}

fn get_status(node: &Node, auth: &str, key: &str) -> u16 {
    node.request(
        "GET",
        &format!("/kv/{key}"),
        None,
        &[("authorization", auth)],
    )
    .status
}

fn config_arg(node: &Node) -> String {
    node.config.to_str().unwrap().to_owned()
}

/// Runs `kvs COMMAND <node's config> EXTRA...` in the node's dir and asserts success.
fn kvs_ok(node: &Node, command: &str, extra: &[&std::path::Path]) {
    let config = config_arg(node);
    let mut args = vec![command, config.as_str()];
    let extra: Vec<String> = extra
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    if command == "backup" {
        args.push("--out");
    }
    args.extend(extra.iter().map(String::as_str));
    let out = run_kvs(&args, node.dir.path(), &[]);
    assert!(
        out.status.success(),
        "kvs {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn backup_while_serving_then_restore_into_the_stopped_node() {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    for i in 0..50 {
        put(&node, &auth, &format!("b/{i}"), &format!("{{\"i\":{i}}}"));
    }
    put(&node, &auth, "b/deleted", "1");
    let bearer = [("authorization", auth.as_str())];
    assert_eq!(
        node.request("DELETE", "/kv/b/deleted", None, &bearer)
            .status,
        204
    );
    // The keys a client sees: neither the tombstone nor root's user and token records.
    let status = node.request("GET", "/sync", None, &bearer).json();
    assert_eq!(status["keys"], 50, "{status}");
    let taken = node.request("POST", "/admin/backups", None, &[("authorization", &auth)]);
    assert_eq!(taken.status, 201, "{}", taken.body);
    let info = taken.json();
    assert!(info["bytes"].as_u64().unwrap() > 0);
    assert_eq!(info["keys"], 50, "{info}");
    assert!(info["created_at"].as_u64().unwrap() > 0);
    let name = info["name"].as_str().unwrap().to_owned();
    let listed = node
        .request("GET", "/admin/backups", None, &[("authorization", &auth)])
        .json();
    assert!(
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == name.as_str())
    );
    let file = node.data_dir().join("backups").join(format!("{name}.mdb"));
    let copy = node.dir.path().join("copy.mdb");
    std::fs::copy(&file, &copy).unwrap();

    put(&node, &auth, "after/backup", "1");
    assert_eq!(
        node.request("DELETE", "/kv/b/0", None, &[("authorization", &auth)])
            .status,
        204
    );
    let refused = run_kvs(
        &["restore", &config_arg(&node), copy.to_str().unwrap()],
        node.dir.path(),
        &[],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "restore refuses while the node runs"
    );

    assert!(node.terminate().success());
    kvs_ok(&node, "restore", &[&copy]);
    node.launch();
    assert_eq!(
        get_status(&node, &auth, "after/backup"),
        404,
        "written after the backup"
    );
    assert_eq!(
        get_status(&node, &auth, "b/0"),
        200,
        "deleted after the backup"
    );
    assert_eq!(get_status(&node, &auth, "b/49"), 200);
    let verdict = node
        .request("GET", "/audit/verify", None, &[("authorization", &auth)])
        .json();
    assert_eq!(
        verdict["ok"], true,
        "a restored chain, shorter than before, is not taken for one cut short: {verdict}"
    );
}

#[test]
fn backups_asked_for_at_once_each_get_a_name_and_a_file_of_their_own() {
    const ROUNDS: usize = 5;
    const AT_ONCE: usize = 10;
    let node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    put(&node, &auth, "k", "1");
    let url = format!("{}/admin/backups", node.base);
    let mut names = Vec::new();
    for _ in 0..ROUNDS {
        let answers: Vec<_> = std::thread::scope(|scope| {
            let asks: Vec<_> = (0..AT_ONCE)
                .map(|_| scope.spawn(|| request(&url, "POST", None, &[("authorization", &auth)])))
                .collect();
            asks.into_iter().map(|ask| ask.join().unwrap()).collect()
        });
        for answer in answers {
            assert_eq!(answer.status, 201, "{}", answer.body);
            assert_eq!(answer.json()["keys"], 1, "{}", answer.body);
            names.push(answer.json()["name"].as_str().unwrap().to_owned());
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ROUNDS * AT_ONCE, "names shared: {names:?}");
    let listed = node
        .request("GET", "/admin/backups", None, &[("authorization", &auth)])
        .json();
    let listed = listed["backups"].as_array().unwrap().len();
    assert_eq!(listed, ROUNDS * AT_ONCE);
    for name in &names {
        let file = node.data_dir().join("backups").join(format!("{name}.mdb"));
        assert!(std::fs::metadata(&file).unwrap().len() > 0, "{name}");
    }
}

#[test]
fn the_cli_backs_up_a_running_and_a_stopped_node() {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    put(&node, &auth, "c/1", "1");
    let running_out = node.dir.path().join("running.mdb");
    kvs_ok(&node, "backup", &[&running_out]);
    assert!(std::fs::metadata(&running_out).unwrap().len() > 0);
    assert_eq!(
        get_status(&node, &auth, "c/1"),
        200,
        "the node kept serving"
    );

    put(&node, &auth, "c/2", "2");
    node.kill();
    let stopped_out = node.dir.path().join("stopped.mdb");
    kvs_ok(&node, "backup", &[&stopped_out]);
    // The stopped node's backup includes c/2, which was only in its write-ahead log.
    kvs_ok(&node, "restore", &[&running_out]);
    node.launch();
    assert_eq!(get_status(&node, &auth, "c/2"), 404);
    assert!(node.terminate().success());
    kvs_ok(&node, "restore", &[&stopped_out]);
    node.launch();
    assert_eq!(get_status(&node, &auth, "c/2"), 200);
}

#[test]
fn a_garbage_empty_truncated_or_foreign_backup_is_refused_and_changes_nothing() {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    put(&node, &auth, "g/1", "1");
    let backup = node.dir.path().join("good.mdb");
    kvs_ok(&node, "backup", &[&backup]);
    assert!(node.terminate().success());
    let dir = node.dir.path();
    let good = std::fs::read(&backup).unwrap();
    let files = [
        ("garbage", b"this is not an LMDB file at all".to_vec()),
        ("empty", Vec::new()),
        // LMDB would map the missing pages: a SIGBUS, not an error, unless checked first.
        ("truncated", good[..good.len() / 2].to_vec()),
        // It opens, and opening it as a store would create kvs's tables: "0 keys".
        ("foreign", foreign_lmdb_file(dir)),
    ];
    for (name, bytes) in files {
        let stderr = restore_refused(&node, &dir.join(format!("{name}.mdb")), &bytes);
        assert!(stderr.contains("not a kvs backup"), "{name}: {stderr}");
        // A backup cut short has lost its checksum too: it is said to be truncated.
        if name == "truncated" {
            assert!(stderr.contains("truncated"), "{stderr}");
        }
    }
    // Damaged where LMDB would read it: a value's page (restored as it was, wrong data or
    // a node that crashed on it later), the last page (a SIGBUS in the restore itself).
    let page = 4096;
    let data_len = good.len() - 56;
    for (name, at) in [
        ("value page", 2 * page + 100),
        ("last page", data_len - page + 16),
    ] {
        let mut damaged = good.clone();
        damaged[at..at + 200]
            .iter_mut()
            .for_each(|byte| *byte ^= 0x5a);
        let stderr = restore_refused(&node, &dir.join("damaged.mdb"), &damaged);
        assert!(stderr.contains("is damaged"), "{name}: {stderr}");
    }
    // A path that names no file is a usage error (exit 2), and said as such.
    for (path, said) in [
        (dir.join("missing.mdb"), "cannot read"),
        (dir.to_path_buf(), "is not a file"),
    ] {
        let out = run_kvs(
            &["restore", &config_arg(&node), path.to_str().unwrap()],
            dir,
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(said) && !stderr.contains("damaged"),
            "{stderr}"
        );
    }
    node.launch();
    assert_eq!(get_status(&node, &auth, "g/1"), 200);
}

/// Writes `bytes` to `file`, has `kvs restore` refuse it into `node`'s data dir (exit 1),
/// and returns what it said.
fn restore_refused(node: &Node, file: &std::path::Path, bytes: &[u8]) -> String {
    std::fs::write(file, bytes).unwrap();
    let out = run_kvs(
        &["restore", &config_arg(node), file.to_str().unwrap()],
        node.dir.path(),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", file.display());
    stderr
}

/// The data file of an LMDB environment with a table of its own and none of kvs's.
#[allow(unsafe_code)]
fn foreign_lmdb_file(dir: &std::path::Path) -> Vec<u8> {
    let env_dir = dir.join("foreign-env");
    std::fs::create_dir_all(&env_dir).unwrap();
    let mut options = heed::EnvOpenOptions::new();
    options.max_dbs(2);
    // SAFETY: a fresh environment that only this function opens, once.
    let env = unsafe { options.open(&env_dir) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    env.create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
        let table = opener.create_database::<Bytes, Bytes>(wtxn, Some("other"))?;
        table.put(wtxn, b"hello", b"world")?;
        Ok(heed::CommitOrAbort::<_, ()>::Commit(table))
    })
    .unwrap();
    std::fs::read(env_dir.join("data.mdb")).unwrap()
}

#[test]
fn a_restore_that_fails_midway_leaves_no_copy_behind() {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    put(&node, &auth, "r/1", "1");
    let taken = node.request("POST", "/admin/backups", None, &[("authorization", &auth)]);
    assert_eq!(taken.status, 201, "{}", taken.body);
    let name = taken.json()["name"].as_str().unwrap().to_owned();
    let backup = node.data_dir().join("backups").join(format!("{name}.mdb"));
    assert!(node.terminate().success());
    // The write-ahead log's place holds a file: clearing the log fails.
    let wal = node.data_dir().join("wal");
    std::fs::remove_dir_all(&wal).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    let out = run_kvs(
        &["restore", &config_arg(&node), backup.to_str().unwrap()],
        node.dir.path(),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!node.data_dir().join("restoring").exists());
    // What a restore killed midway left is cleared by the next one.
    std::fs::remove_file(&wal).unwrap();
    let left = node.data_dir().join("restoring");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("data.mdb"), b"half a copy").unwrap();
    kvs_ok(&node, "restore", &[&backup]);
    assert!(!left.exists());
    node.launch();
    assert_eq!(get_status(&node, &auth, "r/1"), 200);
}

#[test]
fn a_backup_of_a_node_that_never_started_is_refused_and_makes_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("never-data");
    std::fs::write(
        dir.path().join("never.yaml"),
        format!(
            "node_id: never\ndata_dir: {}\nauth_enabled: false\nclustering_enabled: false\n",
            data_dir.display()
        ),
    )
    .unwrap();
    let out = run_kvs(&["backup", "never.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no data"), "{stderr}");
    assert!(!data_dir.exists(), "the backup made the data dir");
}

/// Found by a black-box audit: a backup of node A restored into node B's data dir made
/// B start as A (A's generated node id, A's secrets), and the cluster split without a
/// word. The restored node keeps its own id; into a data dir with no store, the backup's
/// node comes back as itself.
#[test]
fn a_restore_keeps_the_identity_of_the_node_it_restores_into() {
    let generated_id = |node: &mut Node| {
        // No node_id in the config: the node generates one and keeps it in its store.
        assert!(node.terminate().success());
        std::fs::write(&node.config, format!("http_port: 0\n{}", common::PLAIN)).unwrap();
        node.launch();
        let health = node.request("GET", "/health", None, &[]).json();
        health["node_id"].as_str().unwrap().to_owned()
    };
    let mut a = Node::start(common::PLAIN);
    let mut b = Node::start(common::PLAIN);
    let (a_id, b_id) = (generated_id(&mut a), generated_id(&mut b));
    assert_ne!(a_id, b_id);
    let put = a.request("PUT", "/kv/from-a", Some("1"), &[]);
    assert_eq!(put.status, 201, "{}", put.body);
    let taken = a.request("POST", "/admin/backups", None, &[]);
    assert_eq!(taken.status, 201, "{}", taken.body);
    let name = taken.json()["name"].as_str().unwrap().to_owned();
    let backup = a.data_dir().join("backups").join(format!("{name}.mdb"));

    assert!(b.terminate().success());
    kvs_ok(&b, "restore", &[&backup]);
    b.launch();
    let health = b.request("GET", "/health", None, &[]).json();
    assert_eq!(
        health["node_id"],
        b_id.as_str(),
        "B took A's identity: {health}"
    );
    assert_eq!(b.request("GET", "/kv/from-a", None, &[]).status, 200);
    assert!(!b.data_dir().join("restoring").exists());

    // A rebuilt from its own backup into an emptied data dir is A again.
    assert!(a.terminate().success());
    let kept = a.dir.path().join("a-backup.mdb");
    std::fs::copy(&backup, &kept).unwrap();
    std::fs::remove_dir_all(a.data_dir()).unwrap();
    std::fs::create_dir(a.data_dir()).unwrap();
    kvs_ok(&a, "restore", &[&kept]);
    a.launch();
    let health = a.request("GET", "/health", None, &[]).json();
    assert_eq!(health["node_id"], a_id.as_str(), "{health}");
}

/// Found by an audit: a data dir whose `data.mdb` was deleted or emptied (a crash on a
/// file system that allocates late) started as a new, empty node, with new secrets and a
/// new root token (every token of the cluster refused), its audit chain broken for good;
/// `kvs compact` "compacted" it to 0 keys. Both now refuse it, and a restore mends it.
#[test]
fn a_data_dir_whose_data_file_is_gone_is_refused_until_a_backup_is_restored() {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = root(&node);
    put(&node, &auth, "kept/1", "1");
    let backup = node.dir.path().join("kept.mdb");
    kvs_ok(&node, "backup", &[&backup]);
    assert!(node.terminate().success());
    let data_file = node.data_dir().join("data.mdb");
    let token_before = std::fs::read(node.data_dir().join("root.token")).unwrap();
    for (lost, said) in [("emptied", "is empty"), ("deleted", "is missing")] {
        match lost {
            "emptied" => std::fs::write(&data_file, b"").unwrap(),
            _ => std::fs::remove_file(&data_file).unwrap(),
        }
        for command in ["run", "compact"] {
            let config = config_arg(&node);
            let args = [command, config.as_str()];
            let out = common::run_kvs_within(&args, node.dir.path(), Duration::from_secs(20));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{lost}, kvs {command}: {stderr}");
            assert!(
                stderr.contains("data.mdb"),
                "{lost}, kvs {command}: {stderr}"
            );
            // (`kvs compact` of a deleted file fails at the file, before the store.)
            if (command, lost) != ("compact", "deleted") {
                assert!(
                    stderr.contains(said) && stderr.contains("kvs restore"),
                    "{lost}, kvs {command}: {stderr}"
                );
            }
        }
        assert_eq!(
            std::fs::read(node.data_dir().join("root.token")).unwrap(),
            token_before,
            "{lost}: the root token was written anew"
        );
    }
    kvs_ok(&node, "restore", &[&backup]);
    node.launch();
    assert_eq!(get_status(&node, &auth, "kept/1"), 200);
}
