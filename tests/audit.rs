//! The hash-chained audit log against a real node: entries for every kind of mutation,
//! `/audit` paging, `/audit/verify`, and tampering with the stored entries on disk.

mod common;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use serde_json::Value;

use common::Node;

fn admin(node: &Node) -> String {
    let token = std::fs::read_to_string(node.data_dir().join("root.token")).unwrap();
    format!("Bearer {}", token.trim())
}

fn call(node: &Node, method: &str, path: &str, body: Option<&str>, auth: &str) -> common::Answer {
    node.request(method, path, body, &[("authorization", auth)])
}

/// Opens the node's LMDB environment (the node must be stopped) and its `audit` table.
#[allow(unsafe_code)]
fn audit_table(node: &Node) -> (Env, Database<'static, Bytes, Bytes>) {
    let mut options = EnvOpenOptions::new();
    options.map_size(256 << 30).max_dbs(8);
    // SAFETY: the node that owns this environment has exited; nothing else maps it.
    let env = unsafe { options.open(node.data_dir()) }.expect("open LMDB");
    let wtxn = env.write_txn().unwrap();
    let db = env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit(
                opener.create_database::<Bytes, Bytes>(wtxn, Some("audit"))?,
            ))
        })
        .unwrap()
        .unwrap_commit();
    (env, db)
}

fn mutate_everything(node: &Node, auth: &str) {
    let user = call(
        node,
        "POST",
        "/auth/users",
        Some("{\"name\":\"bob\",\"groups\":[]}"),
        auth,
    );
    assert_eq!(user.status, 201, "{}", user.body);
    let bob = user.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(call(node, "PUT", "/kv/a/1", Some("1"), auth).status, 201);
    assert_eq!(
        call(
            node,
            "PUT",
            "/meta/a/1",
            Some("{\"permissions\":\"f00\"}"),
            auth
        )
        .status,
        200
    );
    assert_eq!(call(node, "DELETE", "/kv/a/1", None, auth).status, 204);
    let body = format!("{{\"user_id\":\"{bob}\",\"scopes\":[\"read\"],\"ttl\":\"1h\"}}");
    assert_eq!(
        call(node, "POST", "/auth/tokens", Some(&body), auth).status,
        201
    );
}

#[test]
fn every_mutation_is_chained_and_verifies() {
    let node = Node::start("clustering_enabled: false\n");
    let auth = admin(&node);
    let before = call(&node, "GET", "/audit", None, &auth).json()["entries"]
        .as_array()
        .unwrap()
        .len();
    mutate_everything(&node, &auth);
    let page = call(
        &node,
        "GET",
        &format!("/audit?since_seq={}&limit=1000", before + 1),
        None,
        &auth,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let entries = page.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.put", "put", "meta", "delete", "token.issue"]
    );
    for entry in &entries {
        assert_eq!(entry["actor"], "root");
        for field in ["seq", "timestamp", "key", "hash", "prev_hash"] {
            assert!(!entry[field].is_null(), "{field} in {entry}");
        }
    }
    assert_eq!(entries[1]["key"], "a/1");
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1
        );
    }
    let limited = call(&node, "GET", "/audit?limit=2", None, &auth).json();
    assert_eq!(limited["entries"].as_array().unwrap().len(), 2);
    let verdict = call(&node, "GET", "/audit/verify", None, &auth).json();
    assert_eq!(verdict["ok"], true);
    assert_eq!(verdict["entries"].as_u64().unwrap() as usize, before + 5);
    assert_eq!(
        call(&node, "GET", "/audit?since_seq=x", None, &auth).status,
        400
    );
}

fn tampered(change: impl FnOnce(&Env, &Database<'static, Bytes, Bytes>)) -> Value {
    let mut node = Node::start("clustering_enabled: false\n");
    let auth = admin(&node);
    mutate_everything(&node, &auth);
    assert!(node.terminate().success());
    {
        let (env, db) = audit_table(&node);
        change(&env, &db);
    }
    node.launch();
    call(&node, "GET", "/audit/verify", None, &auth).json()
}

fn entry(env: &Env, db: &Database<'static, Bytes, Bytes>, seq: u64) -> Value {
    let rtxn = env.read_txn().unwrap();
    serde_json::from_slice(db.get(&rtxn, &seq.to_be_bytes()).unwrap().expect("entry")).unwrap()
}

fn put_entry(env: &Env, db: &Database<'static, Bytes, Bytes>, seq: u64, value: &Value) {
    let mut wtxn = env.write_txn().unwrap();
    db.put(
        &mut wtxn,
        &seq.to_be_bytes(),
        &serde_json::to_vec(value).unwrap(),
    )
    .unwrap();
    wtxn.commit().unwrap();
}

#[test]
fn an_altered_entry_is_found() {
    let verdict = tampered(|env, db| {
        let mut third = entry(env, db, 3);
        third["actor"] = "mallory".into();
        put_entry(env, db, 3, &third);
    });
    assert_eq!(
        verdict,
        serde_json::json!({"ok": false, "first_bad_seq": 3})
    );
}

#[test]
fn a_removed_entry_is_found() {
    let verdict = tampered(|env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.delete(&mut wtxn, &2u64.to_be_bytes()).unwrap();
        wtxn.commit().unwrap();
    });
    assert_eq!(
        verdict,
        serde_json::json!({"ok": false, "first_bad_seq": 2})
    );
}

#[test]
fn reordered_entries_are_found() {
    let verdict = tampered(|env, db| {
        let (second, third) = (entry(env, db, 2), entry(env, db, 3));
        put_entry(env, db, 2, &third);
        put_entry(env, db, 3, &second);
    });
    assert_eq!(
        verdict,
        serde_json::json!({"ok": false, "first_bad_seq": 2})
    );
}

#[test]
fn the_log_can_be_off() {
    let node = Node::start("clustering_enabled: false\ntamper_logging_enabled: false\n");
    let auth = admin(&node);
    assert_eq!(call(&node, "GET", "/audit", None, &auth).status, 404);
    assert_eq!(call(&node, "GET", "/audit/verify", None, &auth).status, 404);
}
