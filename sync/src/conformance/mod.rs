//! The conformance suite every [`Store`] implementation must pass.
//!
//! An implementation's tests invoke [`store_conformance_tests!`](crate::store_conformance_tests)
//! with a factory `|options| -> (guard, impl Store)` that returns a fresh, empty store each
//! call, with a guard (a temp dir, say) that lives as long as the store.

use uuid::Uuid;

use crate::store::Cursor;

mod bulk_load;
mod history;
mod hooked;
mod replication;

pub use self::bulk_load::*;
pub use self::history::*;
pub use self::hooked::{Call, Hooked};
pub use self::replication::*;
use crate::{
    Mutation, Precondition, Store, StoreOptions, Version, VersionId, WriteOp, WriteRejected,
};

/// Generates one `#[test]` per conformance check for a store factory.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@tests $factory;
            put_then_get, overwrite_keeps_ownership, causal_timestamp, preconditions,
            delete_leaves_tombstone, ttl_expiry, list_by_prefix_pages, list_since_pages,
            changes_since_include_deletions_and_expiries,
            history_newest_first_and_capped, history_puts_the_winner_of_a_tie_first, history_starts_at_the_last_delete, history_disabled,
            revisions_keep_every_change_tombstones_included, reserved_changes_count_reserved_keys_taken, purge_expired_and_tombstones, purge_skips_what_was_overwritten, merge_keeps_the_winner,
            batch_ops_see_each_other, values_roundtrip, stats_count_keys, stats_bytes_follow_the_data,
            set_meta_changes_only_metadata, merkle_tracks_every_change,
            tombstone_of_an_expired_value_is_kept_from_its_expiry, purge_keeps_undelivered_tombstones,
            ttl_counts_from_the_wall_clock, merge_order_does_not_matter, get_many_reads_like_get,
            versions_after_walks_all_keys_in_order, leaf_versions_read_like_entries_and_get,
            merge_from_session_stores_like_merge, bulk_load_ends_like_merges);
    };
    (@tests $factory:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::$check(&$factory);
            }
        )*
    };
}

/// A put of `data` at `key` by `alice` of group `staff`, for stores' own tests too.
pub fn put(key: &str, data: &str) -> WriteOp {
    WriteOp {
        key: key.to_owned(),
        mutation: Mutation::Put {
            data: data.to_owned(),
            ttl_ms: None,
        },
        precondition: Precondition::None,
        uuid: Uuid::new_v4(),
        origin_joined_at: 1,
        owner: Some("alice".into()),
        group: Some("staff".into()),
        permissions: 0xf31,
        actor: None,
    }
}

/// [`put`] with a TTL of `ttl_ms`.
fn put_with_ttl(key: &str, data: &str, ttl_ms: u64) -> WriteOp {
    WriteOp {
        mutation: Mutation::Put {
            data: data.to_owned(),
            ttl_ms: Some(ttl_ms),
        },
        ..put(key, data)
    }
}

fn delete(key: &str) -> WriteOp {
    WriteOp {
        mutation: Mutation::Delete,
        ..put(key, "null")
    }
}

fn write<S: Store>(store: &S, op: WriteOp, now: u64) -> Result<crate::WriteOutcome, WriteRejected> {
    let mut results = store.write_batch(&[op], now).expect("store works");
    results.pop().expect("one result per op")
}

fn keys(page: &crate::ListPage) -> Vec<&str> {
    page.items.iter().map(|l| l.key.as_str()).collect()
}

/// A put creates the key; a get returns it.
pub fn put_then_get<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    assert_eq!(store.get("a").unwrap(), None);
    let outcome = write(&store, put("a", "{\"x\":1}"), 1000).unwrap();
    assert!(outcome.created);
    assert_eq!(outcome.version.id.timestamp, 1000);
    let held = store.get("a").unwrap().expect("key present");
    assert_eq!(held, outcome.version);
    assert_eq!(held.data.as_deref(), Some("{\"x\":1}"));
}

/// An overwrite is not a creation and keeps the key's owner, group and permissions.
pub fn overwrite_keeps_ownership<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("a", "1"), 1000).unwrap();
    let mut op = put("a", "2");
    op.owner = Some("bob".into());
    op.permissions = 0x000;
    let outcome = write(&store, op, 2000).unwrap();
    assert!(!outcome.created);
    assert_eq!(outcome.version.owner.as_deref(), Some("alice"));
    assert_eq!(outcome.version.permissions, 0xf31);
    assert_eq!(store.get("a").unwrap().unwrap().data.as_deref(), Some("2"));
}

/// An overwrite gets a timestamp above the held one even when the clock is behind.
pub fn causal_timestamp<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("a", "1"), 5000).unwrap();
    let outcome = write(&store, put("a", "2"), 10).unwrap();
    assert_eq!(outcome.version.id.timestamp, 5001);
    let outcome = write(&store, delete("a"), 10).unwrap();
    assert_eq!(outcome.version.id.timestamp, 5002);
    let outcome = write(&store, put("a", "3"), 10).unwrap();
    assert_eq!(outcome.version.id.timestamp, 5003);
}

/// `If-Match` needs the current uuid; `If-None-Match: *` needs an absent key.
pub fn preconditions<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let mut op = put("a", "1");
    op.precondition = Precondition::IfMatch(Uuid::new_v4());
    assert_eq!(write(&store, op, 1), Err(WriteRejected::PreconditionFailed));
    let mut op = put("a", "0");
    op.precondition = Precondition::IfPresent;
    assert_eq!(write(&store, op, 1), Err(WriteRejected::PreconditionFailed));
    let mut op = put("a", "1");
    op.precondition = Precondition::IfAbsent;
    let first = write(&store, op.clone(), 1).unwrap();
    op.uuid = Uuid::new_v4();
    assert_eq!(write(&store, op, 2), Err(WriteRejected::PreconditionFailed));
    let mut op = put("a", "2");
    op.precondition = Precondition::IfMatch(Uuid::new_v4());
    assert_eq!(write(&store, op, 3), Err(WriteRejected::PreconditionFailed));
    let mut op = delete("a");
    op.precondition = Precondition::IfMatch(Uuid::new_v4());
    assert_eq!(write(&store, op, 3), Err(WriteRejected::PreconditionFailed));
    assert_eq!(store.get("a").unwrap().unwrap(), first.version);
    let mut op = put("a", "2");
    op.precondition = Precondition::IfMatch(first.version.id.uuid);
    write(&store, op, 4).unwrap();
    assert_eq!(store.get("a").unwrap().unwrap().data.as_deref(), Some("2"));
    let mut op = put("a", "3");
    op.precondition = Precondition::IfPresent;
    write(&store, op, 5).unwrap();
    assert_eq!(store.get("a").unwrap().unwrap().data.as_deref(), Some("3"));
}

/// A delete leaves a tombstone; deleting it again is `NotFound`; a put recreates it. A
/// delete of a key never held leaves a tombstone too, reported as absent (`created`).
pub fn delete_leaves_tombstone<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let blind = write(&store, delete("never"), 1).unwrap();
    assert!(blind.created && blind.version.is_tombstone());
    assert_eq!(store.get("never").unwrap(), Some(blind.version));
    assert_eq!(
        write(&store, delete("never"), 2),
        Err(WriteRejected::NotFound)
    );
    write(&store, put("a", "1"), 1).unwrap();
    let tomb = write(&store, delete("a"), 2).unwrap().version;
    assert!(tomb.is_tombstone());
    assert_eq!(store.get("a").unwrap().unwrap(), tomb);
    assert_eq!(write(&store, delete("a"), 3), Err(WriteRejected::NotFound));
    assert!(keys(&store.list("", None, 10, 3).unwrap()).is_empty());
    let again = write(&store, put("a", "2"), 3).unwrap();
    assert!(again.created);
    assert!(again.version.id.timestamp > tomb.id.timestamp);
}

/// A key with a TTL reads as absent from its expiry on.
pub fn ttl_expiry<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let op = put_with_ttl("t", "1", 500);
    let v = write(&store, op, 1000).unwrap().version;
    assert_eq!(v.expires_at, Some(1500));
    assert!(store.get("t").unwrap().unwrap().is_live(1499));
    assert!(!store.get("t").unwrap().unwrap().is_live(1500));
    assert_eq!(keys(&store.list("", None, 10, 1499).unwrap()), ["t"]);
    assert!(keys(&store.list("", None, 10, 1500).unwrap()).is_empty());
    assert!(keys(&store.list_since(0, None, 10, 1500).unwrap()).is_empty());
    let mut cas = put("t", "2");
    cas.precondition = Precondition::IfMatch(v.id.uuid);
    assert_eq!(
        write(&store, cas, 1600),
        Err(WriteRejected::PreconditionFailed)
    );
    let expired = write(&store, delete("t"), 1600).unwrap();
    assert!(expired.created && expired.version.is_tombstone());
    let again = write(&store, put("t", "3"), 1600).unwrap();
    assert!(again.created);
    assert_eq!(again.version.expires_at, None);
}

/// Listing by prefix is in byte order, skips deleted keys and pages with a cursor.
pub fn list_by_prefix_pages<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let names = ["a/1", "a/2", "a/3", "a/4", "a/5", "ab", "b/1", "a"];
    let ops: Vec<_> = names.iter().map(|k| put(k, "0")).collect();
    store.write_batch(&ops, 10).unwrap();
    write(&store, delete("a/3"), 11).unwrap();
    let first = store.list("a/", None, 2, 20).unwrap();
    assert_eq!(keys(&first), ["a/1", "a/2"]);
    let Some(Cursor::Key(after)) = first.next.clone() else {
        panic!("expected a key cursor, got {:?}", first.next)
    };
    let second = store.list("a/", Some(&after), 2, 20).unwrap();
    assert_eq!(keys(&second), ["a/4", "a/5"]);
    assert_eq!(second.next, None, "nothing follows a/5 under a/");
    let past_end = store.list("a/", Some("a/5"), 2, 20).unwrap();
    assert!(past_end.items.is_empty() && past_end.next.is_none());
    let all = store.list("", None, 100, 20).unwrap();
    assert_eq!(keys(&all), ["a", "a/1", "a/2", "a/4", "a/5", "ab", "b/1"]);
    assert_eq!(all.next, None);
    let exact = store.list("a/", None, 4, 20).unwrap();
    assert_eq!(exact.items.len(), 4);
    assert_eq!(exact.next, None, "no cursor when nothing follows");
}

/// Listing by time orders by timestamp then key and pages with a cursor.
pub fn list_since_pages<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("z", "0"), 100).unwrap();
    write(&store, put("y", "0"), 200).unwrap();
    write(&store, put("x", "0"), 200).unwrap();
    write(&store, put("w", "0"), 300).unwrap();
    write(&store, put("z", "1"), 400).unwrap();
    let page = store.list_since(150, None, 2, 500).unwrap();
    assert_eq!(keys(&page), ["x", "y"]);
    let Some(Cursor::Time(ts, key)) = page.next.clone() else {
        panic!("expected a time cursor, got {:?}", page.next)
    };
    let rest = store.list_since(150, Some((ts, &key)), 10, 500).unwrap();
    assert_eq!(keys(&rest), ["w", "z"]);
    assert_eq!(rest.next, None);
    assert_eq!(rest.items[1].id.timestamp, 400);
}

/// Changes since a time: values at their timestamp, deletions and expiries at the time
/// the key died, in (time, key) order, paged by `after`.
pub fn changes_since_include_deletions_and_expiries<G, S: Store>(
    make: &impl Fn(StoreOptions) -> (G, S),
) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("old", "0"), 100).unwrap();
    write(&store, put("a", "1"), 200).unwrap();
    write(&store, put("b", "1"), 210).unwrap();
    write(&store, delete("b"), 220).unwrap();
    write(&store, put_with_ttl("c", "1", 50), 230).unwrap();
    write(&store, put("a", "2"), 240).unwrap();
    write(&store, delete("never"), 250).unwrap();
    store.purge(300, 10_000, None).unwrap();
    let changes = |after: Option<(u64, &str)>, limit| {
        let page = store.changes_since(150, after, limit).unwrap();
        page.into_iter()
            .map(|(at, key)| format!("{at} {key}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(changes(None, 10), ["220 b", "240 a", "250 never", "280 c"]);
    assert_eq!(changes(None, 2), ["220 b", "240 a"]);
    assert_eq!(changes(Some((240, "a")), 10), ["250 never", "280 c"]);
    assert!(store.changes_since(281, None, 10).unwrap().is_empty());
}

/// Purge turns expired values into tombstones and drops old tombstones.
pub fn purge_expired_and_tombstones<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let op = put_with_ttl("ttl", "1", 100);
    write(&store, op, 1000).unwrap();
    write(&store, put("gone", "1"), 1000).unwrap();
    write(&store, delete("gone"), 1001).unwrap();
    write(&store, put("kept", "1"), 1000).unwrap();
    let stats = store.purge(1200, 10_000, None).unwrap();
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.tombstones, 0);
    assert!(store.get("ttl").unwrap().unwrap().is_tombstone());
    let stats = store.purge(20_000, 10_000, None).unwrap();
    assert_eq!(stats.tombstones, 2);
    assert_eq!(store.get("ttl").unwrap(), None);
    assert_eq!(store.get("gone").unwrap(), None);
    assert!(store.history("gone").unwrap().is_empty());
    assert!(store.get("kept").unwrap().unwrap().is_live(20_000));
    assert_eq!(store.stats().unwrap().keys, 1);
}

/// What purging would have removed is left alone once overwritten: a value with a TTL
/// replaced by one without, a tombstone replaced by a value, an expired value replaced
/// by a merged newer one.
pub fn purge_skips_what_was_overwritten<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put_with_ttl("ttl", "1", 100), 1000).unwrap();
    write(&store, put("ttl", "2"), 1050).unwrap();
    write(&store, put("revived", "1"), 1000).unwrap();
    write(&store, delete("revived"), 1001).unwrap();
    write(&store, put("revived", "2"), 1002).unwrap();
    let expiring = write(&store, put_with_ttl("merged", "1", 100), 1000)
        .unwrap()
        .version;
    let newer = Version {
        id: VersionId {
            timestamp: 1100,
            ..expiring.id
        },
        data: Some("3".into()),
        expires_at: None,
        ..expiring
    };
    store.merge(&[("merged".into(), newer)]).unwrap();
    let stats = store.purge(20_000, 10_000, None).unwrap();
    assert_eq!((stats.expired, stats.tombstones), (0, 0));
    for (key, data) in [("ttl", "2"), ("revived", "2"), ("merged", "3")] {
        let held = store.get(key).unwrap().unwrap();
        assert_eq!(held.data.as_deref(), Some(data), "{key}");
    }
}

/// Ops of one batch apply in order and see each other.
pub fn batch_ops_see_each_other<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let mut second = put("k", "2");
    second.precondition = Precondition::IfAbsent;
    let results = store
        .write_batch(&[put("k", "1"), second, put("j", "1"), delete("k")], 7)
        .unwrap();
    assert!(results[0].as_ref().unwrap().created);
    assert_eq!(results[1], Err(WriteRejected::PreconditionFailed));
    assert!(results[2].is_ok());
    assert!(results[3].as_ref().unwrap().version.is_tombstone());
    assert!(store.get("k").unwrap().unwrap().is_tombstone());
}

/// Values of any size and keys of any UTF-8 round-trip unchanged.
pub fn values_roundtrip<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions {
        compression_min_bytes: Some(16),
        ..StoreOptions::default()
    });
    let big = format!("\"{}\"", "ab".repeat(200_000));
    let values = [
        "null",
        "true",
        "-1.5e3",
        "\"ü\"",
        "[1,[2]]",
        "{}",
        big.as_str(),
    ];
    let long_key = "k".repeat(512);
    let keys = ["ключ/値", "a b", long_key.as_str()];
    for (i, value) in values.iter().enumerate() {
        for key in keys {
            write(&store, put(key, value), 10 + i as u64).unwrap();
            assert_eq!(
                store.get(key).unwrap().unwrap().data.as_deref(),
                Some(*value)
            );
        }
    }
    assert_eq!(store.history(&long_key).unwrap().len(), values.len());
}

/// Stats count the live keys a client sees: no tombstones, no reserved `_` entries.
pub fn stats_count_keys<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    assert_eq!(store.stats().unwrap().keys, 0);
    store
        .write_batch(&[put("a", "1"), put("b", "2")], 1)
        .unwrap();
    write(&store, delete("a"), 2).unwrap();
    write(&store, put("_reserved/x", "3"), 3).unwrap();
    assert_eq!(
        store.stats().unwrap().keys,
        1,
        "no tombstone, no reserved key"
    );
    write(&store, delete("_reserved/x"), 4).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.keys, stats.entries),
        (1, 3),
        "b; and a, _reserved/x deleted"
    );
}

/// The size figure follows the data held: it grows by about what is written, and is not
/// the length of a sparse file or a map.
pub fn stats_bytes_follow_the_data<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions {
        max_revisions: 0,
        compression_min_bytes: None,
    });
    let empty = store.stats().unwrap().bytes;
    let value = format!("\"{}\"", "v".repeat(4000));
    let ops: Vec<WriteOp> = (0..250).map(|n| put(&format!("k/{n}"), &value)).collect();
    store.write_batch(&ops, 1).unwrap();
    let full = store.stats().unwrap().bytes;
    assert!(
        full >= empty + 1_000_000,
        "{empty} -> {full} after 1 MB of values"
    );
    assert!(
        full < empty + 10_000_000,
        "{empty} -> {full} after 1 MB of values"
    );
}

/// A metadata change is a new version with the same data and expiry and the new owner,
/// group and permissions; it needs a live key.
pub fn set_meta_changes_only_metadata<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let set_meta = |key: &str| WriteOp {
        mutation: Mutation::SetMeta {
            owner: Some("bob".into()),
            group: None,
            permissions: 0x700,
        },
        ..put(key, "ignored")
    };
    assert_eq!(
        write(&store, set_meta("a"), 1000),
        Err(WriteRejected::NotFound)
    );
    let op = put_with_ttl("a", "{\"v\":1}", 60_000);
    let first = write(&store, op, 1000).unwrap().version;
    let outcome = write(&store, set_meta("a"), 2000).unwrap();
    assert!(!outcome.created);
    let held = store.get("a").unwrap().expect("key present");
    assert_eq!(held, outcome.version);
    assert_ne!(held.id.uuid, first.id.uuid);
    assert_eq!(held.id.timestamp, 2000);
    assert_eq!(held.data.as_deref(), Some("{\"v\":1}"));
    assert_eq!(held.expires_at, first.expires_at);
    assert_eq!(held.owner.as_deref(), Some("bob"));
    assert_eq!(held.group, None);
    assert_eq!(held.permissions, 0x700);
    let overwritten = write(&store, put("a", "2"), 3000).unwrap().version;
    assert_eq!(overwritten.owner.as_deref(), Some("bob"));
    assert_eq!(overwritten.permissions, 0x700);
    write(&store, delete("a"), 4000).unwrap();
    assert_eq!(
        write(&store, set_meta("a"), 5000),
        Err(WriteRejected::NotFound)
    );
    assert_eq!(
        write(&store, set_meta("gone"), 5000),
        Err(WriteRejected::NotFound)
    );
}

/// Versions from another replica are stored only when they win by the conflict rule.
pub fn merge_keeps_the_winner<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let local = write(&store, put("m", "\"local\""), 1000).unwrap().version;
    let older = Version {
        id: crate::VersionId {
            timestamp: 999,
            ..local.id
        },
        data: Some("\"older\"".into()),
        ..local.clone()
    };
    let newer = Version {
        id: crate::VersionId {
            timestamp: 1001,
            origin_joined_at: 7,
            uuid: Uuid::new_v4(),
        },
        data: Some("\"newer\"".into()),
        ..local.clone()
    };
    let tombstone = Version {
        id: crate::VersionId {
            timestamp: 500,
            origin_joined_at: 7,
            uuid: Uuid::new_v4(),
        },
        data: None,
        ..local.clone()
    };
    assert_eq!(store.merge(&[("m".into(), older)]).unwrap(), 0);
    assert_eq!(store.get("m").unwrap().unwrap(), local);
    assert_eq!(
        store
            .merge(&[
                ("m".into(), newer.clone()),
                ("gone".into(), tombstone.clone())
            ])
            .unwrap(),
        2
    );
    assert_eq!(store.get("m").unwrap().unwrap(), newer);
    assert_eq!(store.get("gone").unwrap().unwrap(), tombstone);
    assert!(
        store
            .list("", None, 10, 2000)
            .unwrap()
            .items
            .iter()
            .all(|l| l.key != "gone")
    );
    assert_eq!(
        store.merge(&[("m".into(), newer.clone())]).unwrap(),
        0,
        "idempotent"
    );
    let after = write(&store, put("m", "\"again\""), 10).unwrap().version;
    assert!(
        after.id.timestamp > newer.id.timestamp,
        "a local overwrite follows the merged version"
    );
}
