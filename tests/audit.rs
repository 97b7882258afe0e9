//! The hash-chained audit log against a real node: entries for every kind of mutation,
//! `/audit` paging, `/audit/verify`, and tampering with the stored entries on disk
//! (altering, removing, reordering, cutting the newest off, rewriting with recomputed
//! hashes).

mod common;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::Node;
use kvs::store::audit_codec;

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

/// The config of tampered nodes: the cluster secret (which keys the chain) is in the
/// config, outside the data dir that an attacker rewrites.
const SECRET_IN_CONFIG: &str =
    "clustering_enabled: false\ncluster_secret: 0123456789abcdef0123456789abcdef\n";

/// `verdict` says the chain is broken from `seq` on, and why.
fn assert_broken(verdict: &Value, seq: u64) {
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["first_bad_seq"], seq, "{verdict}");
    assert!(
        verdict["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{verdict}"
    );
}

fn tampered(change: impl FnOnce(&Env, &Database<'static, Bytes, Bytes>)) -> Value {
    let mut node = Node::start(SECRET_IN_CONFIG);
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

/// Entry `seq` as JSON, decoded from the table as an attacker with the binary would.
fn entry(env: &Env, db: &Database<'static, Bytes, Bytes>, seq: u64) -> Value {
    let rtxn = env.read_txn().unwrap();
    let stored = db.get(&rtxn, &seq.to_be_bytes()).unwrap().expect("entry");
    serde_json::to_value(audit_codec::decode(&seq.to_be_bytes(), stored)).unwrap()
}

/// Stores `value` as entry `seq`, in the table's own format.
fn put_entry(env: &Env, db: &Database<'static, Bytes, Bytes>, seq: u64, value: &Value) {
    let mut wtxn = env.write_txn().unwrap();
    let entry = serde_json::from_value(value.clone()).unwrap();
    db.put(&mut wtxn, &seq.to_be_bytes(), &audit_codec::encode(&entry))
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
    assert_broken(&verdict, 3);
}

#[test]
fn entries_written_as_json_by_earlier_versions_still_verify() {
    let verdict = tampered(|env, db| {
        for seq in 1..=last_seq(env, db) {
            let json = serde_json::to_vec(&entry(env, db, seq)).unwrap();
            let mut wtxn = env.write_txn().unwrap();
            db.put(&mut wtxn, &seq.to_be_bytes(), &json).unwrap();
            wtxn.commit().unwrap();
        }
    });
    assert_eq!(verdict["ok"], true, "{verdict}");
}

#[test]
fn a_removed_entry_is_found() {
    let verdict = tampered(|env, db| {
        let mut wtxn = env.write_txn().unwrap();
        db.delete(&mut wtxn, &2u64.to_be_bytes()).unwrap();
        wtxn.commit().unwrap();
    });
    assert_broken(&verdict, 2);
}

#[test]
fn reordered_entries_are_found() {
    let verdict = tampered(|env, db| {
        let (second, third) = (entry(env, db, 2), entry(env, db, 3));
        put_entry(env, db, 2, &third);
        put_entry(env, db, 3, &second);
    });
    assert_broken(&verdict, 2);
}

fn last_seq(env: &Env, db: &Database<'static, Bytes, Bytes>) -> u64 {
    let rtxn = env.read_txn().unwrap();
    let (seq, _) = db.last(&rtxn).unwrap().expect("entries");
    u64::from_be_bytes(seq.try_into().unwrap())
}

fn delete_from(env: &Env, db: &Database<'static, Bytes, Bytes>, from: u64, through: u64) {
    let mut wtxn = env.write_txn().unwrap();
    for seq in from..=through {
        assert!(db.delete(&mut wtxn, &seq.to_be_bytes()).unwrap());
    }
    wtxn.commit().unwrap();
}

#[test]
fn cutting_off_the_newest_entries_is_found() {
    let mut last = 0;
    let verdict = tampered(|env, db| {
        last = last_seq(env, db);
        delete_from(env, db, last - 1, last);
    });
    assert_broken(&verdict, last - 1);
    let reason = verdict["reason"].as_str().unwrap();
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn cutting_off_entries_and_removing_the_head_file_is_found() {
    let mut node = Node::start(SECRET_IN_CONFIG);
    let auth = admin(&node);
    mutate_everything(&node, &auth);
    assert!(node.terminate().success());
    let last = {
        let (env, db) = audit_table(&node);
        let last = last_seq(&env, &db);
        delete_from(&env, &db, last, last);
        last
    };
    let _ = std::fs::remove_file(node.data_dir().join("audit.head"));
    node.launch();
    let verdict = call(&node, "GET", "/audit/verify", None, &auth).json();
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert!(
        verdict["first_bad_seq"].as_u64().unwrap() <= last,
        "{verdict}"
    );
    // The finding stays after later writes move the head on.
    assert_eq!(
        call(&node, "PUT", "/kv/later", Some("1"), &auth).status,
        201
    );
    let again = call(&node, "GET", "/audit/verify", None, &auth).json();
    assert_eq!(again["ok"], false, "{again}");
}

#[test]
fn a_data_file_swapped_for_an_older_backup_is_found() {
    let mut node = Node::start(SECRET_IN_CONFIG);
    let auth = admin(&node);
    let taken = call(&node, "POST", "/admin/backups", None, &auth);
    assert_eq!(taken.status, 201, "{}", taken.body);
    let name = taken.json()["name"].as_str().unwrap().to_owned();
    let backed_up = call(&node, "GET", "/audit/verify", None, &auth).json()["entries"]
        .as_u64()
        .unwrap();
    mutate_everything(&node, &auth);
    assert!(node.terminate().success());
    let backup = node.data_dir().join("backups").join(format!("{name}.mdb"));
    std::fs::copy(backup, node.data_dir().join("data.mdb")).unwrap();
    node.launch();
    let verdict = call(&node, "GET", "/audit/verify", None, &auth).json();
    assert_broken(&verdict, backed_up + 1);
}

/// An entry's hash as chains were computed before they were keyed (the recipe is public):
/// SHA-256 over `prev_hash`, seq, timestamp, actor, action and key, each followed by `\n`.
fn unkeyed_hash(entry: &Value) -> String {
    let mut hasher = Sha256::new();
    for field in ["prev_hash", "seq", "timestamp", "actor", "action", "key"] {
        let part = match &entry[field] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

#[test]
fn an_edited_entry_with_the_rest_rehashed_is_found() {
    let verdict = tampered(|env, db| {
        let last = last_seq(env, db);
        let mut prev_hash = entry(env, db, 2)["hash"].clone();
        for seq in 3..=last {
            let mut rewritten = entry(env, db, seq);
            if seq == 3 {
                rewritten["actor"] = "mallory".into();
            }
            rewritten["prev_hash"] = prev_hash;
            rewritten["hash"] = unkeyed_hash(&rewritten).into();
            put_entry(env, db, seq, &rewritten);
            prev_hash = rewritten["hash"].clone();
        }
    });
    assert_broken(&verdict, 3);
}

#[test]
fn a_clean_restart_still_verifies() {
    let mut node = Node::start(SECRET_IN_CONFIG);
    let auth = admin(&node);
    mutate_everything(&node, &auth);
    assert!(node.terminate().success());
    node.launch();
    assert_eq!(
        call(&node, "PUT", "/kv/after", Some("1"), &auth).status,
        201
    );
    let verdict = call(&node, "GET", "/audit/verify", None, &auth).json();
    assert_eq!(verdict["ok"], true, "{verdict}");
    let count = call(&node, "GET", "/audit?limit=1000", None, &auth).json()["entries"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(verdict["entries"].as_u64().unwrap() as usize, count);
}

#[test]
fn the_log_can_be_off() {
    let node = Node::start("clustering_enabled: false\ntamper_logging_enabled: false\n");
    let auth = admin(&node);
    assert_eq!(call(&node, "GET", "/audit", None, &auth).status, 404);
    assert_eq!(call(&node, "GET", "/audit/verify", None, &auth).status, 404);
}
