//! The diff protocol between two in-memory stores: after one session both hold the same
//! versions (the winner of each key by the conflict rule), whatever the two sides held:
//! random pairs with tombstones, TTLs and equal-timestamp conflicts, empty sides and a
//! 100,000-key side; and the cost follows the differences. (What is past keeping and a
//! side back after `tombstone_ttl`: `diff_after_absence.rs`.) A peer that knows the
//! cluster secret but repeats a wanted key gets its version once.

mod common;

use std::sync::{Arc, Mutex};

use common::{NOW, RULES, bulk, store};
use kvs_sync::conformance::{Call, Hooked};
use kvs_sync::merkle::{key_hash, leaf_of};
use kvs_sync::protocol::Message;
use kvs_sync::{MemoryStore, Session, Standing, Store, Version, VersionId, exchange_locally};
use proptest::prelude::*;
use uuid::Uuid;

/// A version of a key as the strategy draws it.
#[derive(Debug, Clone)]
struct Drawn {
    key: u16,
    timestamp: u64,
    origin: u64,
    uuid: u8,
    /// With `uuid`, picks a tombstone, an expired value or a value.
    kind: u8,
}

impl Drawn {
    fn version(&self) -> (String, Version) {
        // The content is a function of the id: one id is one write.
        let (data, expires_at) = match (self.uuid + self.kind) % 4 {
            0 => (None, None),
            1 => (Some(format!("{}", self.timestamp)), Some(NOW - 5)),
            _ => (Some(format!("\"v{}\"", self.uuid)), None),
        };
        (
            format!("k/{}", self.key),
            Version {
                id: VersionId {
                    timestamp: NOW - 500_000 + self.timestamp,
                    origin_joined_at: self.origin,
                    // Never nil, which marks a burial (no write has it).
                    uuid: Uuid::from_u128(
                        1 << 16 | u128::from(self.uuid) << 8 | u128::from(self.kind),
                    ),
                },
                data,
                owner: None,
                group: None,
                permissions: 0xf31,
                expires_at,
            },
        )
    }
}

fn drawn() -> impl Strategy<Value = Drawn> {
    // Few timestamps, origins and uuids, so that equal-timestamp conflicts are common.
    (0..300u16, 0..4u64, 1..3u64, 0..3u8, 0..4u8).prop_map(
        |(key, timestamp, origin, uuid, kind)| Drawn {
            key,
            timestamp,
            origin,
            uuid,
            kind,
        },
    )
}

fn fill(store: &MemoryStore, versions: &[Drawn]) {
    let versions: Vec<(String, Version)> = versions.iter().map(Drawn::version).collect();
    store.merge(&versions).unwrap();
}

/// Every drawn key the store holds, with its version.
fn contents(store: &MemoryStore) -> Vec<(String, Version)> {
    (0..300)
        .filter_map(|n| {
            let key = format!("k/{n}");
            store.get(&key).unwrap().map(|version| (key, version))
        })
        .collect()
}

fn assert_converged(a: &MemoryStore, b: &MemoryStore, expected: &MemoryStore) {
    let expected = contents(expected);
    for (side, store) in [("initiator", a), ("responder", b)] {
        let held = contents(store);
        let wrong: Vec<_> = held
            .iter()
            .filter(|entry| !expected.contains(entry))
            .map(|(key, _)| key)
            .collect();
        assert!(
            wrong.is_empty(),
            "{side} holds the wrong version of {wrong:?}"
        );
        assert_eq!(held.len(), expected.len(), "{side} holds other keys");
    }
    assert_eq!(a.merkle().unwrap(), b.merkle().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_session_makes_two_random_stores_identical(
        left in proptest::collection::vec(drawn(), 0..200),
        right in proptest::collection::vec(drawn(), 0..200),
    ) {
        let (a, b, expected) = (store(), store(), store());
        fill(&a, &left);
        fill(&b, &right);
        fill(&expected, &left);
        fill(&expected, &right);
        let exchange = exchange_locally(&a, &b, RULES).unwrap();
        assert_converged(&a, &b, &expected);
        prop_assert!(exchange.round_trips <= 3, "{exchange:?}");
    }
}

fn empty_side_gets_everything(count: usize, empty_initiates: bool) {
    let (full, empty) = (store(), store());
    full.merge(&bulk(count, 1)).unwrap();
    let exchange = if empty_initiates {
        exchange_locally(&empty, &full, RULES).unwrap()
    } else {
        exchange_locally(&full, &empty, RULES).unwrap()
    };
    assert_eq!(empty.merkle().unwrap(), full.merkle().unwrap());
    assert_eq!(empty.stats().unwrap().keys, count as u64);
    let sent = exchange.initiator.versions_sent + exchange.responder.versions_sent;
    assert_eq!(sent, count as u64, "each version once: {exchange:?}");
    assert!(!exchange.initiator.found_equal() && !exchange.responder.found_equal());
}

/// What a store was called for: the keys of session merges, in order, and bulk loads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Merged(String),
    Begin,
    End,
}

/// `inner` with the events of its calls recorded in `events`.
fn recorded(inner: MemoryStore, events: &Arc<Mutex<Vec<Event>>>) -> Hooked<MemoryStore> {
    let events = Arc::clone(events);
    Hooked::new(inner, move |call| {
        let mut events = events.lock().unwrap();
        match call {
            Call::MergeFromSession(versions) => {
                events.extend(versions.iter().map(|(key, _)| Event::Merged(key.clone())))
            }
            Call::BeginBulkLoad => events.push(Event::Begin),
            Call::EndBulkLoad => events.push(Event::End),
            _ => {}
        }
        Ok(())
    })
}

/// A side that holds nothing gets everything in key order (the order a B-tree store
/// inserts fastest), in the one round trip of `Hello`, whichever side opened, within a
/// bulk load of its store (begun with the first versions, ended with the session).
#[test]
fn an_empty_side_gets_everything_in_key_order_in_one_round_trip() {
    for empty_initiates in [true, false] {
        let full_events = Arc::new(Mutex::new(Vec::new()));
        let full = recorded(store(), &full_events);
        full.merge(&bulk(20_000, 1)).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let empty = recorded(store(), &events);
        let exchange = if empty_initiates {
            exchange_locally(&empty, &full, RULES).unwrap()
        } else {
            exchange_locally(&full, &empty, RULES).unwrap()
        };
        let events = events.lock().unwrap().clone();
        assert_eq!(events.first(), Some(&Event::Begin));
        assert_eq!(events.last(), Some(&Event::End));
        let merged: Vec<String> = events[1..events.len() - 1]
            .iter()
            .map(|event| match event {
                Event::Merged(key) => key.clone(),
                _ => panic!("one bulk load: {event:?}"),
            })
            .collect();
        let mut sorted = merged.clone();
        sorted.sort_unstable();
        assert_eq!(merged.len(), 20_000, "empty_initiates: {empty_initiates}");
        assert!(
            merged == sorted,
            "not in key order (empty_initiates: {empty_initiates})"
        );
        assert_eq!(exchange.round_trips, 1, "{exchange:?}");
        assert_eq!(empty.merkle().unwrap(), full.merkle().unwrap());
        assert!(
            full_events.lock().unwrap().is_empty(),
            "the full side loads nothing"
        );
    }
}

/// A side that holds something does not bulk-load, even when it lacks most keys.
#[test]
fn a_side_that_holds_something_gets_no_bulk_load() {
    let full = store();
    full.merge(&bulk(5_000, 1)).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sparse = recorded(store(), &events);
    sparse.merge(&bulk(1, 1)).unwrap();
    exchange_locally(&sparse, &full, RULES).unwrap();
    assert_eq!(sparse.merkle().unwrap(), full.merkle().unwrap());
    let events = events.lock().unwrap();
    assert!(!events.contains(&Event::Begin) && !events.contains(&Event::End));
}

#[test]
fn an_empty_initiator_gets_a_100_000_key_store_in_one_session() {
    empty_side_gets_everything(100_000, true);
}

#[test]
fn an_empty_responder_gets_the_initiators_store_in_one_session() {
    empty_side_gets_everything(10_000, false);
}

#[test]
fn equal_stores_exchange_one_round_trip_of_hashes() {
    let (a, b) = (store(), store());
    a.merge(&bulk(10_000, 1)).unwrap();
    b.merge(&bulk(10_000, 1)).unwrap();
    let exchange = exchange_locally(&a, &b, RULES).unwrap();
    assert_eq!(exchange.round_trips, 1);
    assert!(
        exchange.bytes_out + exchange.bytes_in < 4096,
        "{exchange:?}"
    );
    assert_eq!(
        exchange.initiator.versions_sent + exchange.responder.versions_sent,
        0
    );
    assert!(exchange.initiator.found_equal() && exchange.responder.found_equal());
}

#[test]
fn cost_follows_the_differences_not_the_size() {
    let (a, b) = (store(), store());
    let all = bulk(100_000, 1);
    a.merge(&all).unwrap();
    b.merge(&all[100..]).unwrap();
    let exchange = exchange_locally(&a, &b, RULES).unwrap();
    assert_eq!(a.merkle().unwrap(), b.merkle().unwrap());
    assert_eq!(exchange.round_trips, 3);
    assert_eq!(exchange.initiator.versions_sent, 100);
    assert_eq!(exchange.responder.versions_sent, 0);
    assert!(
        exchange.bytes_out + exchange.bytes_in < 100_000,
        "{exchange:?}"
    );
    assert!(!exchange.initiator.found_equal() && !exchange.responder.found_equal());
}

#[test]
fn refused_versions_are_counted_and_not_stored() {
    let (a, b) = (store(), store());
    let mut future = bulk(1, 1);
    future[0].1.id.timestamp = NOW + 60_000;
    a.merge(&future).unwrap();
    let exchange = exchange_locally(&a, &b, RULES).unwrap();
    assert_eq!(exchange.responder.refused.from_the_future, 1);
    assert_eq!(b.stats().unwrap().keys, 0);
}

/// An established peer's opening whose root and level-2 hashes match no store's.
fn hello_unlike_any_store() -> Message {
    Message::Hello {
        root: 1,
        level2: vec![1; 256],
        standing: Standing::Established,
        floor: 0,
    }
}

/// A responder tells its standing as the opening arrives, before touching its store (a
/// store waiting for its writer would hold the initiator's first answer up), once: not
/// again with its answer to the opening. An initiator never has one to tell early.
#[test]
fn a_responder_tells_its_standing_first_and_once() {
    let s = store();
    let mut initiator = Session::initiator(RULES);
    assert!(initiator.early_standing().is_none());
    let joining = Standing::Joining {
        since: 7,
        blind: None,
    };
    let mut responder = Session::responder(RULES).with_standing(joining);
    let Some(Message::Standing { standing, .. }) = responder.early_standing() else {
        panic!("no early standing");
    };
    assert_eq!(standing, joining);
    assert!(responder.early_standing().is_none());
    let out = responder.handle(hello_unlike_any_store(), &s, NOW).unwrap();
    assert!(
        !out.iter().any(|m| matches!(m, Message::Standing { .. })),
        "{out:?}"
    );
    assert!(matches!(out.as_slice(), [Message::Nodes { .. }]), "{out:?}");
}

#[test]
fn a_want_that_repeats_a_key_gets_its_version_once() {
    let s = store();
    let value = format!("\"{}\"", "x".repeat(10_000));
    let version = Version {
        data: Some(value),
        ..version_at(NOW - 1000)
    };
    s.merge(&[("big".to_string(), version)]).unwrap();
    let mut responder = Session::responder(RULES);
    let hello = hello_unlike_any_store();
    assert_eq!(responder.handle(hello, &s, NOW).unwrap().len(), 2);
    let node = (leaf_of("big") / 16) as u32;
    let nodes = Message::Nodes {
        level: 3,
        parents: vec![node],
        hashes: vec![1; 16],
    };
    assert!(responder.handle(nodes, &s, NOW).unwrap().is_empty());
    let mut entries = Vec::new();
    while responder.has_output() {
        entries.extend(responder.poll_output(&s).unwrap());
    }
    assert!(
        matches!(entries.last(), Some(Message::Entries { .. })),
        "{entries:?}"
    );
    // 20,000 copies of one hash (180 KB) used to make 200 MB of answers, held at once.
    let want = Message::Want {
        differing: vec![key_hash("big"); 20_000],
        lacking: vec![],
    };
    let out = responder.handle(want, &s, NOW).unwrap();
    assert_eq!(responder.stats().versions_sent, 1);
    let sent: usize = out
        .iter()
        .map(|m| kvs_sync::protocol::encode(m).len())
        .sum();
    assert!(sent < 20_000, "{sent} bytes answered");
}

/// A version of `key` written at `at` by origin 1.
fn version_at(at: u64) -> Version {
    Version {
        id: VersionId {
            timestamp: at,
            origin_joined_at: 1,
            uuid: Uuid::from_u128(u128::from(at)),
        },
        data: Some("1".into()),
        owner: None,
        group: None,
        permissions: 0xf31,
        expires_at: None,
    }
}

/// Plays a session between `initiator` on `ours` and a responder on `theirs` until the
/// responder's first `Entries`, which it returns undelivered.
fn first_entries(initiator: &mut Session, ours: &MemoryStore, theirs: &MemoryStore) -> Message {
    let mut responder = Session::responder(RULES);
    let mut to_responder = initiator.start(ours).unwrap();
    loop {
        let mut to_initiator = Vec::new();
        for message in to_responder.drain(..) {
            to_initiator.extend(responder.handle(message, theirs, NOW).unwrap());
            while responder.has_output() {
                to_initiator.extend(responder.poll_output(theirs).unwrap());
            }
        }
        for message in to_initiator {
            if matches!(message, Message::Entries { .. }) {
                return message;
            }
            to_responder.extend(initiator.handle(message, ours, NOW).unwrap());
            while initiator.has_output() {
                to_responder.extend(initiator.poll_output(ours).unwrap());
            }
        }
        assert!(
            !to_responder.is_empty(),
            "the session ended before any Entries"
        );
    }
}

#[test]
fn a_node_or_leaf_listed_twice_ends_the_session() {
    let (ours, theirs) = (store(), store());
    ours.merge(&[("k".into(), version_at(NOW - 1000))]).unwrap();
    theirs
        .merge(&[("k".into(), version_at(NOW - 2000))])
        .unwrap();
    theirs
        .merge(&[("other".into(), version_at(NOW - 2000))])
        .unwrap();
    let mut initiator = Session::initiator(RULES);
    let Message::Entries { leaves, entries } = first_entries(&mut initiator, &ours, &theirs) else {
        unreachable!()
    };
    let twice = Message::Entries {
        leaves: [leaves.clone(), leaves].concat(),
        entries,
    };
    let refused = initiator.handle(twice, &ours, NOW).unwrap_err();
    assert!(refused.to_string().contains("listed twice"), "{refused}");

    let mut responder = Session::responder(RULES);
    let hello = hello_unlike_any_store();
    responder.handle(hello, &theirs, NOW).unwrap();
    let node = (leaf_of("k") / 16) as u32;
    let nodes = Message::Nodes {
        level: 3,
        parents: vec![node, node],
        hashes: vec![1; 32],
    };
    let refused = responder.handle(nodes, &theirs, NOW).unwrap_err();
    assert!(refused.to_string().contains("listed twice"), "{refused}");
}

/// Found by an audit of real processes: with `max_value_bytes` near its maximum, a value
/// of 16 MB went into one message with the versions before it (in the order they are
/// sent) past the frame limit, which the stream refused; every round failed the same
/// way, and a new node stayed `syncing` for good. A message now holds the budget, or one
/// version alone. (With 100 versions of 64 KB sent around it, the old rule put the
/// 16 MB one into a message of 18 MB.)
#[test]
fn a_value_near_the_largest_travels_in_a_message_of_its_own() {
    let mut versions = bulk(101, 1);
    for (n, (key, version)) in versions.iter_mut().enumerate() {
        let size = if n < 100 { 64_000 } else { 16_000_000 };
        *key = format!("large/{n:03}");
        version.data = Some(format!("\"{}\"", "x".repeat(size - 2)));
    }
    for (empty_initiates, holds_every_other) in [(true, false), (false, false), (true, true)] {
        let (full, other) = (store(), store());
        full.merge(&versions).unwrap();
        if holds_every_other {
            let half: Vec<_> = versions[..100].iter().step_by(2).cloned().collect();
            other.merge(&half).unwrap();
        }
        let exchange = match empty_initiates {
            true => exchange_locally(&other, &full, RULES),
            false => exchange_locally(&full, &other, RULES),
        };
        let exchange = exchange.unwrap_or_else(|error| {
            panic!(
                "empty_initiates {empty_initiates}, holds_every_other {holds_every_other}: {error}"
            )
        });
        assert_eq!(
            other.merkle().unwrap(),
            full.merkle().unwrap(),
            "{exchange:?}"
        );
        assert_eq!(
            other.get("large/100").unwrap(),
            Some(versions[100].1.clone())
        );
    }
}
