//! `kvs compact` against a real node's data dir: refused while the node runs, then the
//! stopped node's data file rewritten smaller with the same data, history, tombstones and
//! audit chain; a config or data file it cannot use is refused and left as it was.

mod common;

use common::{Node, PLAIN, run_kvs};

fn data_file_bytes(node: &Node) -> u64 {
    std::fs::metadata(node.data_dir().join("data.mdb"))
        .unwrap()
        .len()
}

fn compact(node: &Node) -> std::process::Output {
    run_kvs(
        &["compact", node.config.to_str().unwrap()],
        node.dir.path(),
        &[],
    )
}

/// What the compaction must keep: the merkle root and key count, a history, a deleted
/// key's absence, every value.
fn facts(node: &Node, keys: &[String]) -> (serde_json::Value, serde_json::Value, Vec<String>) {
    let sync = node.get("/sync").json();
    let history = node.get("/history/h/k").json();
    assert_eq!(node.get("/kv/k/7").status, 404, "the deleted key");
    let values = keys
        .iter()
        .map(|k| node.get(&format!("/kv/{k}")).body)
        .collect();
    (
        serde_json::json!([sync["merkle_root"], sync["keys"]]),
        history,
        values,
    )
}

#[test]
fn a_stopped_nodes_data_file_is_rewritten_smaller_with_the_same_data() {
    let mut node = Node::start(PLAIN);
    // Keys in a scattered order, as clients write them: the B-tree's pages split half full.
    let keys: Vec<String> = (0..2_000u64)
        .map(|i| format!("k/{}", (i * 7_919) % 2_000))
        .collect();
    let value = format!("\"{}\"", "v".repeat(200));
    for key in &keys {
        assert_eq!(node.put(&format!("/kv/{key}"), &value).status, 201);
    }
    for n in 1..=3 {
        assert!(node.put("/kv/h/k", &n.to_string()).status < 300);
    }
    assert_eq!(node.delete("/kv/k/7").status, 204);
    let kept: Vec<String> = keys.iter().filter(|k| *k != "k/7").cloned().collect();
    let before = facts(&node, &kept);
    assert_eq!(before.0[1], 2_000, "1,999 keys and h/k: {}", before.0);

    let refused = compact(&node);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "refused while the node runs"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    assert!(node.terminate().success());
    let bytes_before = data_file_bytes(&node);
    // What a compaction cut short (a crash) left behind goes at the next one.
    let leftover = node.data_dir().join("compacting");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("data.mdb"), b"cut short").unwrap();
    let done = compact(&node);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("(2000 keys)"), "{said}");
    let bytes_after = data_file_bytes(&node);
    assert!(
        bytes_after * 4 < bytes_before * 3,
        "{bytes_before} -> {bytes_after} bytes"
    );
    assert!(
        said.contains(&format!("{bytes_before} -> {bytes_after} bytes")),
        "{said}"
    );
    assert!(!node.data_dir().join("compacting").exists());
    assert!(!kvs::private_files::exposed(
        &node.data_dir().join("data.mdb")
    ));

    // So does the node's start.
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("data.mdb"), b"cut short").unwrap();
    node.launch();
    assert!(
        !leftover.exists(),
        "the node's start clears a compaction cut short"
    );
    assert_eq!(facts(&node, &kept), before);
    let file = node.metric("kvs_store_bytes").unwrap();
    let used = node.metric("kvs_store_used_bytes").unwrap();
    assert!(
        used <= file && file - used <= 16.0 * 4096.0,
        "{used} of {file} bytes hold data"
    );
    let verdict = node.get("/audit/verify").json();
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(node.put("/kv/after", "1").status, 201, "writes go on");
    assert!(node.terminate().success());
    assert!(
        compact(&node).status.success(),
        "a packed file compacts again"
    );
}

#[test]
fn a_data_file_or_config_it_cannot_use_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, format!("node_id: n\nhttp_port: 0\n{PLAIN}")).unwrap();
    let run = |config: &str| run_kvs(&["compact", config], dir.path(), &[]);

    let no_data = run(config.to_str().unwrap());
    assert_eq!(no_data.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_data.stderr).contains("data.mdb"));

    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let garbage = vec![0x5au8; 64 * 1024];
    std::fs::write(data_dir.join("data.mdb"), &garbage).unwrap();
    let refused = run(config.to_str().unwrap());
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(std::fs::read(data_dir.join("data.mdb")).unwrap(), garbage);
    assert!(!data_dir.join("compacting").exists());

    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "no_such_key: 1\n").unwrap();
    assert_eq!(run(bad_config.to_str().unwrap()).status.code(), Some(2));
}
