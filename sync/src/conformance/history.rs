//! The conformance checks of what a store keeps of each key's past: the history of its
//! current life, every kept revision (what `/watch` replays), and the count of reserved
//! versions taken (what the API's caller cache follows).

use uuid::Uuid;

use super::{delete, put, put_with_ttl, write};
use crate::{Store, StoreOptions, Version, VersionId};

/// History lists value versions newest first, the current first, capped.
pub fn history_newest_first_and_capped<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions {
        max_revisions: 3,
        ..StoreOptions::default()
    });
    for i in 0..5u64 {
        write(&store, put("h", &i.to_string()), 100 + i).unwrap();
    }
    let history = store.history("h").unwrap();
    let data: Vec<_> = history.iter().map(|v| v.data.as_deref().unwrap()).collect();
    assert_eq!(data, ["4", "3", "2"]);
    assert_eq!(history[0], store.get("h").unwrap().unwrap());
    assert!(store.history("none").unwrap().is_empty());
}

/// Two versions of one millisecond (written on two nodes): the winner by the conflict
/// rule (the origin that joined earlier, though its uuid is larger) comes first, as the
/// current version. LMDB's history listed them by uuid, the loser first (found by a
/// black-box audit).
pub fn history_puts_the_winner_of_a_tie_first<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    let first = write(&store, put("tie", "0"), 1000).unwrap().version;
    let at = |joined_at: u64, uuid: u128, data: &str| Version {
        id: VersionId {
            timestamp: 1005,
            origin_joined_at: joined_at,
            uuid: Uuid::from_u128(uuid),
        },
        data: Some(data.into()),
        ..first.clone()
    };
    let (winner, loser) = (at(1, 2, "\"winner\""), at(2, 1, "\"loser\""));
    assert!(winner.supersedes(&loser));
    store.merge(&[("tie".into(), loser)]).unwrap();
    store.merge(&[("tie".into(), winner.clone())]).unwrap();
    assert_eq!(store.get("tie").unwrap().unwrap(), winner);
    let history = store.history("tie").unwrap();
    let data: Vec<_> = history.iter().map(|v| v.data.as_deref().unwrap()).collect();
    assert_eq!(data, ["\"winner\"", "\"loser\"", "0"]);
}

/// A key deleted and created again shows only its new life's revisions.
pub fn history_starts_at_the_last_delete<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions::default());
    write(&store, put("h", "1"), 100).unwrap();
    write(&store, put("h", "2"), 101).unwrap();
    write(&store, delete("h"), 102).unwrap();
    assert!(store.history("h").unwrap().is_empty(), "deleted");
    write(&store, put("h", "3"), 103).unwrap();
    write(&store, put("h", "4"), 104).unwrap();
    let history = store.history("h").unwrap();
    let data: Vec<_> = history.iter().map(|v| v.data.as_deref().unwrap()).collect();
    assert_eq!(data, ["4", "3"], "the previous life is not shown");
}

/// With history off, nothing is kept.
pub fn history_disabled<G, S: Store>(make: &impl Fn(StoreOptions) -> (G, S)) {
    let (_guard, store) = make(StoreOptions {
        max_revisions: 0,
        ..StoreOptions::default()
    });
    write(&store, put("h", "1"), 1).unwrap();
    write(&store, put("h", "2"), 2).unwrap();
    assert!(store.history("h").unwrap().is_empty());
}

/// Revisions keep every change, deletes included, across lives, capped; an expiry
/// shares its value's entry; with history off there are none.
pub fn revisions_keep_every_change_tombstones_included<G, S: Store>(
    make: &impl Fn(StoreOptions) -> (G, S),
) {
    let data = |revisions: Vec<Version>| -> Vec<Option<String>> {
        revisions.into_iter().map(|v| v.data).collect()
    };
    let life = |store: &S| {
        write(store, put("r", "1"), 100).unwrap();
        write(store, put("r", "2"), 101).unwrap();
        write(store, delete("r"), 102).unwrap();
        write(store, put("r", "3"), 103).unwrap();
    };
    let (_guard, store) = make(StoreOptions::default());
    life(&store);
    let some = |d: &str| Some(d.to_owned());
    assert_eq!(
        data(store.revisions("r").unwrap()),
        [some("3"), None, some("2"), some("1")]
    );
    assert_eq!(
        store.revisions("r").unwrap()[0],
        store.get("r").unwrap().unwrap()
    );
    write(&store, put_with_ttl("t", "1", 100), 1000).unwrap();
    store.purge(1200, 10_000, None).unwrap();
    let expired = store.revisions("t").unwrap();
    assert_eq!(
        data(expired.clone()),
        [some("1")],
        "the expiry shares the entry"
    );
    assert_eq!(expired[0].id, store.get("t").unwrap().unwrap().id);
    assert!(store.revisions("none").unwrap().is_empty());

    let (_guard, capped) = make(StoreOptions {
        max_revisions: 3,
        ..StoreOptions::default()
    });
    life(&capped);
    assert_eq!(
        data(capped.revisions("r").unwrap()),
        [some("3"), None, some("2")]
    );

    let (_guard, off) = make(StoreOptions {
        max_revisions: 0,
        ..StoreOptions::default()
    });
    life(&off);
    assert!(off.revisions("r").unwrap().is_empty());
}

/// Versions of reserved keys are counted as they are taken, written or merged; other
/// keys are not.
pub fn reserved_changes_count_reserved_keys_taken<G, S: Store>(
    make: &impl Fn(StoreOptions) -> (G, S),
) {
    let (_guard, store) = make(StoreOptions::default());
    let before = store.reserved_changes();
    write(&store, put("plain", "1"), 100).unwrap();
    assert_eq!(store.reserved_changes(), before, "not a reserved key");
    let written = write(&store, put("_auth/users/a", "1"), 101)
        .unwrap()
        .version;
    assert_eq!(store.reserved_changes(), before + 1, "written");
    let merged = Version {
        id: VersionId {
            timestamp: 102,
            ..written.id
        },
        ..written.clone()
    };
    store
        .merge(&[("_auth/users/b".into(), merged.clone())])
        .unwrap();
    assert_eq!(store.reserved_changes(), before + 2, "merged");
    store.merge(&[("_auth/users/b".into(), merged)]).unwrap();
    assert_eq!(
        store.reserved_changes(),
        before + 2,
        "held already: not taken"
    );
    let from_session = Version {
        id: VersionId {
            timestamp: 103,
            ..written.id
        },
        ..written
    };
    store
        .merge_from_session(vec![("_auth/users/c".into(), from_session)])
        .unwrap();
    assert_eq!(store.reserved_changes(), before + 3, "from a session");
}
