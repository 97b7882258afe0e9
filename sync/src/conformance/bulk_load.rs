//! The conformance checks of a bulk load ([`Store::begin_bulk_load`]): whatever a store
//! puts off during one, it ends with what merges of the same versions give, and reads
//! in between see everything merged so far.

use super::{delete, put, put_with_ttl, write};
use crate::merkle::{LEAVES, Leaf};
use crate::{Store, StoreOptions, Version};

/// When the checks read: some values have expired by then.
const NOW: u64 = 5_000;

/// Every version of a store written key by key, with overwrites, deletes and TTLs at
/// different times, in key order (as a bootstrap brings them).
fn bootstrap_source<S: Store>(store: &S) -> Vec<(String, Version)> {
    for n in 0..600u64 {
        let key = format!("k/{:03}", (n * 7) % 600);
        let op = if n % 5 == 0 {
            put_with_ttl(&key, &n.to_string(), n * 10)
        } else {
            put(&key, &n.to_string())
        };
        write(store, op, 1_000 + n).unwrap();
        if n % 7 == 0 {
            write(store, put(&key, "again"), 2_000 + n).unwrap();
        }
        if n % 11 == 0 {
            write(store, delete(&key), 3_000 + n).unwrap();
        }
    }
    store.versions_after(None, usize::MAX).unwrap()
}

/// `store` and `reference` answer alike every read that rests on an index, and purge
/// alike.
fn assert_same_reads<S: Store, R: Store>(store: &S, reference: &R) {
    let all: Vec<Leaf> = (0..LEAVES).map(|l| l as Leaf).collect();
    assert_eq!(store.merkle().unwrap(), reference.merkle().unwrap());
    assert_eq!(
        store.leaf_entries(&all).unwrap(),
        reference.leaf_entries(&all).unwrap()
    );
    assert_eq!(
        store.list_since(0, None, 1_000, NOW).unwrap(),
        reference.list_since(0, None, 1_000, NOW).unwrap()
    );
    assert_eq!(
        store.list("", None, 1_000, NOW).unwrap(),
        reference.list("", None, 1_000, NOW).unwrap()
    );
    assert_eq!(
        store.purge(NOW, 1_000, None).unwrap(),
        reference.purge(NOW, 1_000, None).unwrap()
    );
    assert_eq!(
        store.versions_after(None, usize::MAX).unwrap(),
        reference.versions_after(None, usize::MAX).unwrap()
    );
}

/// A bulk load into an empty store, with reads of the indexes in the middle and merges
/// after them, ends with what the same versions merged into another store give: the
/// tree, the leaves' entries, listings by time and key, and a purge.
pub fn bulk_load_ends_like_merges<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let options = StoreOptions::default();
    let (_source_guard, source) = make(options);
    let versions = bootstrap_source(&source);
    let (half, rest) = versions.split_at(versions.len() / 2);
    for reads_between in [false, true] {
        let (_guard, store) = make(options);
        let (_reference_guard, reference) = make(options);
        store.begin_bulk_load().unwrap();
        for piece in half.chunks(50) {
            store.merge_from_session(piece.to_vec()).unwrap();
        }
        if reads_between {
            reference.merge(half).unwrap();
            assert_eq!(
                store.list_since(0, None, 1_000, NOW).unwrap(),
                reference.list_since(0, None, 1_000, NOW).unwrap(),
                "a read during the load sees everything merged so far"
            );
        }
        for piece in rest.chunks(50) {
            store.merge_from_session(piece.to_vec()).unwrap();
        }
        store.end_bulk_load().unwrap();
        reference.merge(&versions).unwrap();
        assert_same_reads(&store, &reference);
    }
}
