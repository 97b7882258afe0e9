//! The conformance checks of what replication relies on: the merkle tree and leaf
//! entries, tombstone ages, wall-clock TTLs, merge-order independence, `get_many`.

use uuid::Uuid;

use super::{delete, put, put_with_ttl, write};
use crate::merkle::{LEAVES, Leaf, MerkleTree};
use crate::{Store, StoreOptions, Version};

/// The tree built from scratch over what `store` holds, and the entries by leaf.
fn tree_from_entries<S: Store>(store: &S) -> (MerkleTree, usize) {
    let all: Vec<Leaf> = (0..LEAVES).map(|l| l as Leaf).collect();
    let entries = store.leaf_entries(&all).expect("store works");
    let mut tree = MerkleTree::new();
    for (key, id) in &entries {
        let held = store
            .get(key)
            .expect("store works")
            .expect("listed keys are held");
        assert_eq!(&held.id, id, "leaf entry of {key} matches the held version");
        tree.toggle(key, id);
    }
    (tree, entries.len())
}

/// The merkle tree follows writes, overwrites, deletes, merges and purges, equals the
/// tree built from the held versions, and lists each held key once under its leaf.
pub fn merkle_tracks_every_change<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    assert_eq!(store.merkle().unwrap(), MerkleTree::new());
    for n in 0..50 {
        write(&store, put(&format!("k/{n}"), "1"), 1000 + n).unwrap();
    }
    write(&store, put("k/1", "2"), 2000).unwrap();
    write(&store, delete("k/2"), 2001).unwrap();
    let op = put_with_ttl("k/ttl", "1", 10);
    write(&store, op, 2000).unwrap();
    let remote = Version {
        id: crate::VersionId {
            timestamp: 5000,
            origin_joined_at: 2,
            uuid: Uuid::new_v4(),
        },
        data: Some("9".into()),
        owner: None,
        group: None,
        permissions: 0xf31,
        expires_at: None,
    };
    store
        .merge(&[("k/3".into(), remote.clone()), ("r".into(), remote)])
        .unwrap();
    let (built, count) = tree_from_entries(&store);
    assert_eq!(count, 52, "every key once, tombstones included");
    assert_eq!(store.merkle().unwrap(), built);
    store.purge(3000, 10_000, None).unwrap();
    let (built, _) = tree_from_entries(&store);
    assert_eq!(
        store.merkle().unwrap(),
        built,
        "turning expired values into tombstones"
    );
    store.purge(1_000_000, 10_000, None).unwrap();
    let (built, count) = tree_from_entries(&store);
    assert_eq!(count, 50, "purged tombstones leave the tree");
    assert_eq!(store.merkle().unwrap(), built);
    let leaf = crate::merkle::leaf_of("k/7");
    let entries = store.leaf_entries(&[leaf]).unwrap();
    assert!(entries.iter().any(|(key, _)| key == "k/7"));
    assert!(
        entries
            .iter()
            .all(|(key, _)| crate::merkle::leaf_of(key) == leaf)
    );
}

/// A value that expired becomes a tombstone kept `tombstone_ttl` from its expiry, not
/// from its write.
pub fn tombstone_of_an_expired_value_is_kept_from_its_expiry<G, S: Store>(
    make: &impl Fn(StoreOptions) -> (G, S),
) {
    let (_guard, store) = make(StoreOptions::default());
    let op = put_with_ttl("long", "1", 50_000);
    write(&store, op, 1000).unwrap();
    assert_eq!(store.purge(51_000, 10_000, None).unwrap().expired, 1);
    assert_eq!(store.purge(60_000, 10_000, None).unwrap().tombstones, 0);
    assert!(store.get("long").unwrap().unwrap().is_tombstone());
    assert_eq!(store.purge(61_000, 10_000, None).unwrap().tombstones, 1);
    assert_eq!(store.get("long").unwrap(), None);
}

/// A purge keeps the tombstones of this node's undelivered writes, due or not, as dead
/// from the purge (the same version, so the same merkle tree), and removes the others:
/// its delivered deletes, other nodes' deletes, and burials.
pub fn purge_keeps_undelivered_tombstones<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("delivered", "1"), 400).unwrap();
    write(&store, delete("delivered"), 500).unwrap();
    write(&store, put("mine", "1"), 1000).unwrap();
    let deleted = write(&store, delete("mine"), 1001).unwrap().version;
    let theirs = Version {
        id: crate::VersionId {
            origin_joined_at: 2,
            ..deleted.id
        },
        ..deleted.clone()
    };
    // A burial of an own value (the nil uuid, which no write has) goes as ever.
    let burial = Version {
        id: crate::VersionId {
            timestamp: 1002,
            uuid: Uuid::nil(),
            ..deleted.id
        },
        ..deleted.clone()
    };
    store
        .merge(&[("theirs".into(), theirs), ("buried".into(), burial)])
        .unwrap();
    let undelivered = Some(crate::Undelivered {
        origin_joined_at: 1,
        since_ms: 1000,
    });
    let stats = store.purge(20_000, 10_000, undelivered).unwrap();
    assert_eq!((stats.tombstones, stats.kept_undelivered), (3, 1));
    for gone in ["delivered", "theirs", "buried"] {
        assert_eq!(store.get(gone).unwrap(), None, "{gone}");
    }
    let kept = store.get("mine").unwrap().expect("kept");
    assert_eq!(kept.id, deleted.id);
    assert!(kept.is_tombstone());
    assert_eq!(kept.dead_since(), Some(20_000));
    let (built, count) = tree_from_entries(&store);
    assert_eq!((store.merkle().unwrap(), count), (built, 1));
    // Due again a tombstone_ttl after the purge that kept it: kept while undelivered,
    // removed once delivered.
    let stats = store.purge(29_999, 10_000, undelivered).unwrap();
    assert_eq!((stats.tombstones, stats.kept_undelivered), (0, 0));
    let stats = store.purge(30_000, 10_000, undelivered).unwrap();
    assert_eq!((stats.tombstones, stats.kept_undelivered), (0, 1));
    let delivered = Some(crate::Undelivered {
        origin_joined_at: 1,
        since_ms: 1002,
    });
    let stats = store.purge(40_000, 10_000, delivered).unwrap();
    assert_eq!((stats.tombstones, stats.kept_undelivered), (1, 0));
    assert_eq!(store.get("mine").unwrap(), None);
    assert_eq!(store.merkle().unwrap(), MerkleTree::new());
}

/// A TTL counts from the write's wall-clock time even when the causal rule stamps the
/// write later (the held version came from a node whose clock runs ahead).
pub fn ttl_counts_from_the_wall_clock<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let ahead = write(&store, put("k", "1"), 5000).unwrap().version;
    let op = put_with_ttl("k", "2", 500);
    let written = write(&store, op, 1000).unwrap().version;
    assert!(written.id.timestamp > ahead.id.timestamp);
    assert_eq!(written.expires_at, Some(1500));
}

/// Versions of a few keys with every kind of tie (equal timestamps, equal origins), values
/// and tombstones.
fn contenders() -> Vec<(String, Version)> {
    let mut out = Vec::new();
    for (n, (timestamp, origin, uuid, tombstone)) in [
        (5, 1, 3, false),
        (5, 1, 2, false),
        (5, 2, 1, false),
        (6, 9, 9, true),
        (4, 1, 1, false),
        (6, 9, 8, false),
    ]
    .into_iter()
    .enumerate()
    {
        for key in ["a", "b/c"] {
            out.push((
                key.to_owned(),
                Version {
                    id: crate::VersionId {
                        timestamp,
                        origin_joined_at: origin,
                        uuid: Uuid::from_u128(uuid),
                    },
                    data: (!tombstone).then(|| n.to_string()),
                    owner: None,
                    group: None,
                    permissions: 0xf31,
                    expires_at: None,
                },
            ));
        }
    }
    out
}

/// Merging the same versions in any order, one by one or together, ends in the same
/// state: the winner of each key by the rule, and the same merkle tree.
pub fn merge_order_does_not_matter<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let versions = contenders();
    let mut orders = vec![versions.clone(), versions.iter().rev().cloned().collect()];
    let mut rotated = versions.clone();
    rotated.rotate_left(5);
    orders.push(rotated);
    let (_first_guard, first) = make(StoreOptions::default());
    first.merge(&versions).unwrap();
    for order in orders {
        let (_guard, store) = make(StoreOptions::default());
        for version in order {
            store.merge(&[version]).unwrap();
        }
        for key in ["a", "b/c"] {
            let held = store.get(key).unwrap().unwrap();
            assert_eq!(held.id.timestamp, 6, "{key}");
            assert_eq!(
                held.id.uuid,
                Uuid::from_u128(8),
                "the smaller uuid wins the tie"
            );
            assert_eq!(Some(held), first.get(key).unwrap());
        }
        assert_eq!(store.merkle().unwrap(), first.merkle().unwrap());
    }
}

/// `get_many` answers what `get` answers, key by key, in order.
pub fn get_many_reads_like_get<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("a", "1"), 10).unwrap();
    write(&store, put("b", "2"), 10).unwrap();
    write(&store, delete("b"), 11).unwrap();
    let keys: Vec<String> = ["b", "none", "a", "a"].map(str::to_owned).to_vec();
    let one_by_one: Vec<Option<Version>> = keys.iter().map(|k| store.get(k).unwrap()).collect();
    assert_eq!(store.get_many(&keys).unwrap(), one_by_one);
    assert!(one_by_one[0].as_ref().unwrap().is_tombstone());
    assert_eq!(one_by_one[1], None);
}

/// `versions_after` walks every key in byte order, tombstones included, in pieces of
/// about `max_bytes` (at least one key each), from just after the given key.
pub fn versions_after_walks_all_keys_in_order<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    assert_eq!(store.versions_after(None, 1 << 20).unwrap(), Vec::new());
    let names = ["b", "a/1", "c", "a", "a/2", "z"];
    for name in names {
        write(&store, put(name, "1"), 10).unwrap();
    }
    write(&store, delete("c"), 11).unwrap();
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable();
    let all = store.versions_after(None, 1 << 20).unwrap();
    let keys: Vec<&str> = all.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, expected);
    for (key, version) in &all {
        assert_eq!(Some(version), store.get(key).unwrap().as_ref());
    }
    assert!(all[4].1.is_tombstone(), "the tombstone of c is walked too");
    // One byte per piece still makes progress, a key at a time.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let piece = store.versions_after(after.as_deref(), 1).unwrap();
        let Some((last, _)) = piece.last() else {
            break;
        };
        assert_eq!(piece.len(), 1, "a piece of 1 byte holds one key");
        after = Some(last.clone());
        walked.extend(piece.into_iter().map(|(key, _)| key));
    }
    assert_eq!(walked, expected);
    let rest: Vec<String> = store
        .versions_after(Some("a/2"), 1 << 20)
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(rest, ["b", "c", "z"]);
}

/// `leaf_versions` finds what `leaf_entries` and `get_many` find together.
pub fn leaf_versions_read_like_entries_and_get<G, S: Store>(
    make: &impl Fn(StoreOptions) -> (G, S),
) {
    let (_guard, store) = make(StoreOptions::default());
    for n in 0..200 {
        write(&store, put(&format!("k/{n}"), "1"), 10).unwrap();
    }
    write(&store, delete("k/7"), 11).unwrap();
    let leaves: Vec<Leaf> = (0..LEAVES as u32).map(|leaf| leaf as Leaf).collect();
    let entries = store.leaf_entries(&leaves).unwrap();
    let keys: Vec<String> = entries.iter().map(|(key, _)| key.clone()).collect();
    let held = store.get_many(&keys).unwrap();
    let expected: Vec<(String, Version)> = keys
        .into_iter()
        .zip(held)
        .map(|(key, version)| (key, version.expect("an entry is held")))
        .collect();
    assert_eq!(expected.len(), 200);
    assert_eq!(store.leaf_versions(&leaves).unwrap(), expected);
}

/// What a session merges is stored like a merge: the winner only, visible at once to
/// reads, listings and the merkle tree.
pub fn merge_from_session_stores_like_merge<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let (_other_guard, reference) = make(StoreOptions::default());
    let older = write(&reference, put("a", "1"), 10).unwrap().version;
    let newer = write(&reference, put("a", "2"), 20).unwrap().version;
    let b = write(&reference, put("b", "3"), 30).unwrap().version;
    let incoming = vec![
        ("a".to_owned(), newer.clone()),
        ("a".to_owned(), older),
        ("b".to_owned(), b.clone()),
    ];
    assert_eq!(store.merge_from_session(incoming.clone()).unwrap(), 2);
    assert_eq!(store.get("a").unwrap(), Some(newer));
    assert_eq!(store.get("b").unwrap(), Some(b));
    assert_eq!(store.list("", None, 10, 40).unwrap().items.len(), 2);
    assert_eq!(store.merkle().unwrap(), reference.merkle().unwrap());
    assert_eq!(
        store.merge_from_session(incoming).unwrap(),
        0,
        "nothing new"
    );
}
