//! The revision log and its index: what the cap and purges drop leaves both tables,
//! seqs continue across restarts, and a store of the earlier layout moves its history at
//! open.

use heed::CommitOrAbort;
use heed::types::Bytes;
use kvs_sync::conformance::put;
use kvs_sync::{Mutation, Store, StoreOptions, WriteOp};

use super::super::LmdbStore;

fn open(dir: &std::path::Path, max_revisions: usize) -> LmdbStore {
    let options = StoreOptions {
        max_revisions,
        ..StoreOptions::default()
    };
    LmdbStore::open(dir, options).expect("open store")
}

fn write(store: &LmdbStore, op: WriteOp, now_ms: u64) {
    let outcomes = store.write_batch(&[op], now_ms).expect("write");
    assert!(outcomes.iter().all(Result::is_ok), "accepted");
}

fn values(store: &LmdbStore, key: &str) -> Vec<String> {
    let history = store.history(key).expect("history");
    history
        .iter()
        .map(|v| v.data.clone().unwrap_or_default())
        .collect()
}

/// (index entries, log entries).
fn table_lengths(store: &LmdbStore) -> (u64, u64) {
    let rtxn = store.env.read_txn().unwrap();
    let history = &store.history;
    (
        history.index.len(&rtxn).unwrap(),
        history.log.len(&rtxn).unwrap(),
    )
}

#[test]
fn what_the_cap_and_purges_drop_leaves_both_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 3);
    for n in 0..50u64 {
        write(&store, put("a", &n.to_string()), 100 + n);
        write(&store, put("b", &n.to_string()), 100 + n);
    }
    assert_eq!(values(&store, "a"), ["49", "48", "47"]);
    assert_eq!(table_lengths(&store), (6, 6));
    let mut delete = put("a", "");
    delete.mutation = Mutation::Delete;
    write(&store, delete, 1_000);
    assert_eq!(table_lengths(&store), (6, 6), "the tombstone is a revision");
    store.purge(100_000, 1_000, None).unwrap();
    assert_eq!(
        table_lengths(&store),
        (3, 3),
        "a purged key leaves no revision"
    );
    assert_eq!(values(&store, "b"), ["49", "48", "47"]);
}

#[test]
fn revisions_continue_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    write(&store, put("a", "1"), 100);
    write(&store, put("a", "2"), 101);
    drop(store);
    let store = open(dir.path(), 10);
    write(&store, put("a", "3"), 102);
    write(&store, put("b", "1"), 103);
    assert_eq!(values(&store, "a"), ["3", "2", "1"]);
    assert_eq!(table_lengths(&store), (4, 4));
}

#[test]
fn the_same_revision_added_twice_is_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    write(&store, put("a", "1"), 100);
    let version = store.get("a").unwrap().unwrap();
    let record = super::super::record::encode(&version, None).unwrap();
    let mut wtxn = store.env.write_txn().unwrap();
    store
        .history
        .add(&mut wtxn, "a", &version, &record)
        .unwrap();
    wtxn.commit().unwrap();
    assert_eq!(table_lengths(&store), (1, 1));
    assert_eq!(values(&store, "a"), ["1"]);
}

/// The `history` table of the earlier layout (created if missing).
fn legacy_table(store: &LmdbStore) -> heed::Database<'_, Bytes, Bytes> {
    let wtxn = store.env.write_txn().unwrap();
    store
        .env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            let legacy = opener.create_database::<Bytes, Bytes>(wtxn, Some("history"))?;
            heed::Result::Ok(CommitOrAbort::<_, ()>::Commit(legacy))
        })
        .unwrap()
        .unwrap_commit()
}

#[test]
fn a_store_of_the_earlier_layout_moves_its_history_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10);
    for n in 0..5u64 {
        write(&store, put("a", &n.to_string()), 100 + n);
    }
    write(&store, put("b", "x"), 200);
    // Rewrite the history as the earlier layout held it: index keys -> records in a
    // `history` table, the log and the index empty.
    let legacy = legacy_table(&store);
    let mut wtxn = store.env.write_txn().unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = store
        .history
        .index
        .iter(&wtxn)
        .unwrap()
        .map(|item| {
            let (entry, seq) = item.unwrap();
            let record = store.history.log.get(&wtxn, seq).unwrap().unwrap();
            (entry.to_vec(), record.to_vec())
        })
        .collect();
    for (entry, record) in &entries {
        legacy.put(&mut wtxn, entry, record).unwrap();
    }
    store.history.index.clear(&mut wtxn).unwrap();
    store.history.log.clear(&mut wtxn).unwrap();
    wtxn.commit().unwrap();
    assert!(store.history("a").unwrap().is_empty());
    drop(store);

    let store = open(dir.path(), 10);
    assert_eq!(values(&store, "a"), ["4", "3", "2", "1", "0"]);
    assert_eq!(values(&store, "b"), ["x"]);
    assert_eq!(table_lengths(&store), (6, 6));
    let legacy = legacy_table(&store);
    let rtxn = store.env.read_txn().unwrap();
    assert!(legacy.is_empty(&rtxn).unwrap(), "moved, not copied");
    drop(rtxn);
    write(&store, put("a", "5"), 300);
    assert_eq!(values(&store, "a")[..2], ["5", "4"]);
}

#[test]
fn a_lowered_cap_holds_for_keys_not_written_since() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 10);
        for n in 0..5u64 {
            write(&store, put("a", &n.to_string()), 100 + n);
        }
        assert_eq!(values(&store, "a").len(), 5);
    }
    let store = open(dir.path(), 3);
    assert_eq!(values(&store, "a"), ["4", "3", "2"]);
}
