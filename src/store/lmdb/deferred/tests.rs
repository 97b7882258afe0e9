//! The deferred indexes: built at the end, at a read, or at open after a crash, they
//! equal the ones commits keep.

use kvs_sync::conformance::put;
use kvs_sync::{Mutation, Store, StoreOptions, Version, WriteOp};

use super::*;

/// Every entry of every index and of the stored tree.
fn indexes(store: &LmdbStore) -> Vec<Vec<Vec<u8>>> {
    let rtxn = store.env.read_txn().unwrap();
    let mut out: Vec<Vec<Vec<u8>>> = [
        &store.by_time,
        &store.expiring,
        &store.tombstones,
        &store.by_leaf,
    ]
    .iter()
    .map(|index| {
        index
            .iter(&rtxn)
            .unwrap()
            .map(|item| item.unwrap().0.to_vec())
            .collect()
    })
    .collect();
    out.push(
        store
            .merkle_chunks
            .iter(&rtxn)
            .unwrap()
            .flat_map(|item| {
                let (chunk, leaves) = item.unwrap();
                [chunk.to_vec(), leaves.to_vec()]
            })
            .collect(),
    );
    out
}

/// Versions of many keys, in key order: values, values with a TTL, tombstones.
fn versions(source: &LmdbStore) -> Vec<(String, Version)> {
    let ops: Vec<WriteOp> = (0..2_000u64)
        .map(|n| {
            let mut op = put(&format!("k/{n:04}"), "v");
            match n % 3 {
                0 => op.mutation = Mutation::Delete,
                1 => {
                    op.mutation = Mutation::Put {
                        data: "v".into(),
                        ttl_ms: Some(n),
                    }
                }
                _ => {}
            }
            op
        })
        .collect();
    for (n, batch) in ops.chunks(300).enumerate() {
        source.write_batch(batch, 1_000 + n as u64).unwrap();
    }
    source.versions_after(None, usize::MAX).unwrap()
}

fn open(dir: &std::path::Path) -> LmdbStore {
    LmdbStore::open(dir, StoreOptions::default()).unwrap()
}

/// The versions of [`versions`], and an empty store (in `dir`) deferring its indexes.
fn deferring() -> (tempfile::TempDir, LmdbStore, Vec<(String, Version)>) {
    let source_dir = tempfile::tempdir().unwrap();
    let versions = versions(&open(source_dir.path()));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.defer_indexes().unwrap());
    (dir, store, versions)
}

/// A store that merged `versions` commit by commit, and what its indexes hold.
fn reference(versions: &[(String, Version)]) -> Vec<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for piece in versions.chunks(250) {
        store.merge(piece).unwrap();
    }
    indexes(&store)
}

#[test]
fn indexes_built_at_the_end_equal_the_ones_commits_keep() {
    let (_dir, store, versions) = deferring();
    for piece in versions.chunks(250) {
        store.merge(piece).unwrap();
    }
    let empty = indexes(&store);
    assert!(empty[..4].iter().all(Vec::is_empty), "nothing indexed yet");
    assert_eq!(store.purge(u64::MAX, 0, None).unwrap(), Default::default());
    assert_eq!(
        store.index_ops.noted_keys(),
        Some(2_000),
        "built from what the commits noted"
    );
    store.build_deferred_indexes().unwrap();
    assert!(!store.indexes_deferred());
    assert_eq!(indexes(&store), reference(&versions));
}

#[test]
fn a_read_of_an_index_builds_them_and_later_commits_keep_them() {
    let (_dir, store, versions) = deferring();
    let (first, rest) = versions.split_at(900);
    store.merge(first).unwrap();
    assert_eq!(
        store.list_since(0, None, 10_000, 0).unwrap().items.len(),
        600
    );
    assert!(!store.indexes_deferred());
    store.merge(rest).unwrap();
    assert_eq!(indexes(&store), reference(&versions));
}

#[test]
fn indexes_still_deferred_after_a_crash_are_built_at_open() {
    let (dir, store, versions) = deferring();
    store.merge(&versions[..1_000]).unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(!store.indexes_deferred());
    store.merge(&versions[1_000..]).unwrap();
    assert_eq!(indexes(&store), reference(&versions));
}

#[test]
fn indexes_are_deferred_only_while_the_store_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_batch(&[put("k", "v")], 1).unwrap();
    assert!(!store.defer_indexes().unwrap());
    assert!(!store.indexes_deferred());
    store.build_deferred_indexes().unwrap();
    assert_eq!(indexes(&store)[0].len(), 1, "nothing rebuilt");
}

#[test]
fn keys_merged_out_of_order_are_indexed_from_kv() {
    let (_dir, store, versions) = deferring();
    store.merge(&versions[1_000..1_500]).unwrap();
    assert_eq!(store.index_ops.noted_keys(), Some(500));
    store.merge(&versions[..1_000]).unwrap();
    assert_eq!(store.index_ops.noted_keys(), None, "not an append");
    store.merge(&versions[1_500..]).unwrap();
    store.build_deferred_indexes().unwrap();
    assert_eq!(indexes(&store), reference(&versions));
}

#[test]
fn a_transaction_that_does_not_commit_leaves_nothing_noted() {
    let (_dir, store, versions) = deferring();
    store.merge(&versions[..1_000]).unwrap();
    let wtxn = store.begin().unwrap();
    store.index_ops.put(Table::ByTime, 1, "zz/after-every-key");
    assert_eq!(store.index_ops.noted_keys(), Some(1_001));
    drop(wtxn);
    store.merge(&versions[1_000..]).unwrap();
    assert_eq!(store.index_ops.noted_keys(), Some(2_000));
    store.build_deferred_indexes().unwrap();
    assert_eq!(indexes(&store), reference(&versions));
}

#[test]
fn indexes_read_from_kv_in_small_steps_equal_the_ones_commits_keep() {
    let source_dir = tempfile::tempdir().unwrap();
    let versions = versions(&open(source_dir.path()));
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for piece in versions.chunks(250) {
        store.merge(piece).unwrap();
    }
    let mut wtxn = store.env.write_txn().unwrap();
    for index in [
        &store.by_time,
        &store.expiring,
        &store.tombstones,
        &store.by_leaf,
    ] {
        index.clear(&mut wtxn).unwrap();
    }
    // About 60 keys per step: the steps' entries interleave in the time indexes.
    let keys = store.index_from_kv(&mut wtxn, 4_096).unwrap();
    wtxn.commit().unwrap();
    assert_eq!(keys, 2_000);
    assert_eq!(indexes(&store), reference(&versions));
}
