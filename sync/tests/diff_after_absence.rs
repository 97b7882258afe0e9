//! The diff protocol's rules for what is past keeping: a deletion older than
//! `tombstone_ttl` is neither sent nor taken, but buries what it deleted; and a side back
//! after longer than `tombstone_ttl` (stale) buries what a peer that vouches for that time
//! lacks, withholds it from a new peer, and sends its own newer writes; a peer vouches
//! only outside its blind time and from its floor on.

mod common;

use common::{NOW, RULES, bulk, store};
use kvs_sync::{Admission, MemoryStore, Standing, Store, exchange_locally};

#[test]
fn deletions_past_keeping_are_neither_sent_nor_taken() {
    let (a, b) = (store(), store());
    let mut old = bulk(1, 1);
    old[0].1.data = None;
    old[0].1.id.timestamp = NOW - RULES.tombstone_ttl_ms - 1;
    a.merge(&old).unwrap();
    let exchange = exchange_locally(&a, &b, RULES).unwrap();
    assert_eq!(exchange.initiator.versions_sent, 0);
    assert_eq!(b.stats().unwrap().keys, 0);
}

/// Checks that the node `back` buried each of `keys` (it holds a tombstone) and that
/// `peer` did not get it.
fn assert_buried(back: &MemoryStore, peer: &MemoryStore, keys: &[&str]) {
    for gone in keys {
        assert_eq!(peer.get(gone).unwrap(), None, "{gone} came back");
        assert!(back.get(gone).unwrap().unwrap().is_tombstone());
    }
}

/// A node back after longer than `tombstone_ttl` (its last complete session at `since`)
/// syncs with a peer of standing `peer`, opening the session or answering it
/// (`back_opens`): what an established peer lacks and is older than `since` was deleted
/// meanwhile.
fn after_absence(
    peer_standing: Standing,
    back_opens: bool,
) -> (MemoryStore, MemoryStore, kvs_sync::Exchange) {
    let since = NOW - 2 * RULES.tombstone_ttl_ms;
    let (back, peer) = (store(), store());
    let mut old = bulk(3, 1);
    for (_, version) in &mut old {
        version.id.timestamp = since - 10;
    }
    let mut recent = bulk(1, 1);
    recent[0].0 = "written/while/away".into();
    back.merge(&old).unwrap();
    back.merge(&recent).unwrap();
    peer.merge(&old[..1]).unwrap();
    let stale = Standing::Stale { since, blind: None };
    let exchange = if back_opens {
        let sessions = (
            kvs_sync::Session::initiator(RULES).with_standing(stale),
            kvs_sync::Session::responder(RULES).with_standing(peer_standing),
        );
        kvs_sync::exchange_with(sessions, &back, &peer, (NOW, NOW)).unwrap()
    } else {
        let sessions = (
            kvs_sync::Session::initiator(RULES).with_standing(peer_standing),
            kvs_sync::Session::responder(RULES).with_standing(stale),
        );
        let mut exchange = kvs_sync::exchange_with(sessions, &peer, &back, (NOW, NOW)).unwrap();
        std::mem::swap(&mut exchange.initiator, &mut exchange.responder);
        exchange
    };
    (back, peer, exchange)
}

#[test]
fn a_node_back_after_tombstone_ttl_buries_what_was_deleted_meanwhile() {
    for back_opens in [true, false] {
        let (back, peer, exchange) = after_absence(Standing::Established, back_opens);
        assert_eq!(exchange.initiator.buried, 2, "{back_opens} {exchange:?}");
        assert_buried(&back, &peer, &["bulk/000001", "bulk/000002"]);
        assert!(
            peer.get("written/while/away").unwrap().is_some(),
            "a newer write is kept"
        );
        assert!(peer.get("bulk/000000").unwrap().is_some());
        back.purge(NOW, RULES.tombstone_ttl_ms, None).unwrap();
        assert_eq!(back.merkle().unwrap(), peer.merkle().unwrap());
    }
}

/// A burial says that its stale node took the peer's lack of a key for a deletion, not
/// that the key was deleted: a peer that holds the key weighs its own copy by its own
/// rules. Here the peer is the key's writer: established, it keeps its copy (taken as a
/// deletion, a wrong burial buried the writer's copy, and the write was gone everywhere:
/// `data-burial-not-sent`); stale, and holding the key from before its own last
/// session, it buries it as well (not sent at all, burials left such a node with the
/// deleted value, which it sent back once the burial was purged).
#[test]
fn a_burial_is_weighed_by_the_peers_own_rules() {
    let since = NOW - 2 * RULES.tombstone_ttl_ms;
    for (writer_stale, buried) in [(false, 0), (true, 2)] {
        let (back, _, exchange) = after_absence(Standing::Established, true);
        assert_eq!(exchange.initiator.buried, 2, "{exchange:?}");
        let mut written = bulk(3, 1);
        for (_, version) in &mut written {
            version.id.timestamp = since - 10;
        }
        let writer = store();
        writer.merge(&written[1..]).unwrap();
        let writer_standing = match writer_stale {
            true => Standing::Stale { since, blind: None },
            false => Standing::Established,
        };
        let sessions = (
            kvs_sync::Session::initiator(RULES)
                .with_standing(Standing::Stale { since, blind: None }),
            kvs_sync::Session::responder(RULES).with_standing(writer_standing),
        );
        let exchange = kvs_sync::exchange_with(sessions, &back, &writer, (NOW, NOW)).unwrap();
        assert_eq!(
            exchange.responder.buried, buried,
            "{writer_stale} {exchange:?}"
        );
        for (key, version) in &written[1..] {
            let held = writer.get(key).unwrap().unwrap();
            match writer_stale {
                true => assert!(held.is_tombstone(), "{key}"),
                false => assert_eq!(&held, version, "{key}"),
            }
        }
    }
}

/// Two stale nodes (a whole cluster restarted after longer than `tombstone_ttl`): what
/// both held at their last sessions and one of them lacks now was deleted there, and so
/// was what the earlier one received from others before the later one's last session;
/// its own writes newer than its last session may be news, and are sent.
#[test]
fn two_stale_nodes_bury_only_what_both_held_and_one_deleted() {
    const OWN: u64 = 7;
    let (early, late) = (
        NOW - 3 * RULES.tombstone_ttl_ms,
        NOW - 2 * RULES.tombstone_ttl_ms,
    );
    let (a, b) = (store(), store());
    let mut held = bulk(5, 1);
    held[0].1.id.timestamp = early - 10;
    held[1].1.id.timestamp = early + 10;
    held[2].1.id.timestamp = early - 10;
    held[3].1.id.timestamp = early + 10;
    held[4].1.id.timestamp = early + 10;
    held[4].1.id.origin_joined_at = OWN;
    a.merge(&held[..2]).unwrap();
    b.merge(&held[2..]).unwrap();
    let sessions = (
        kvs_sync::Session::initiator(RULES).with_standing(Standing::Stale {
            since: late,
            blind: None,
        }),
        kvs_sync::Session::responder(RULES)
            .with_standing(Standing::Stale {
                since: early,
                blind: None,
            })
            .writing_as(OWN, 0),
    );
    let exchange = kvs_sync::exchange_with(sessions, &a, &b, (NOW, NOW)).unwrap();
    assert_eq!(exchange.initiator.buried, 1, "{exchange:?}");
    assert_eq!(exchange.responder.buried, 2, "{exchange:?}");
    for side in [&a, &b] {
        for gone in ["bulk/000000", "bulk/000002", "bulk/000003"] {
            let version = side.get(gone).unwrap();
            assert!(version.is_none_or(|v| v.is_tombstone()), "{gone} came back");
        }
        for kept in ["bulk/000001", "bulk/000004"] {
            let version = side.get(kept).unwrap();
            assert!(
                version.is_some_and(|v| !v.is_tombstone()),
                "{kept} was lost"
            );
        }
    }
}

/// What a node back after longer than `tombstone_ttl` received from the others after its
/// last complete session (a push shortly before it went away) was deleted meanwhile too,
/// if an established peer lacks it, and so was an own write that had reached every peer
/// (its push acknowledged); its own writes of that time that had not are kept and sent.
#[test]
fn a_node_back_after_tombstone_ttl_sends_only_its_own_newer_writes() {
    const OWN: u64 = 7;
    let since = NOW - 2 * RULES.tombstone_ttl_ms;
    let delivered_before = since + 40;
    let (back, peer) = (store(), store());
    let mut newer = bulk(3, 1);
    newer[0].0 = "pushed/then/deleted".into();
    newer[1].0 = "written/pushed/then/deleted".into();
    newer[1].1.id.origin_joined_at = OWN;
    newer[2].0 = "written/while/away".into();
    newer[2].1.id.origin_joined_at = OWN;
    for (n, (_, version)) in newer.iter_mut().enumerate() {
        version.id.timestamp = since + 10 + 20 * n as u64;
    }
    back.merge(&newer).unwrap();
    let sessions = (
        kvs_sync::Session::initiator(RULES)
            .with_standing(Standing::Stale { since, blind: None })
            .writing_as(OWN, delivered_before),
        kvs_sync::Session::responder(RULES).with_standing(Standing::Established),
    );
    let exchange = kvs_sync::exchange_with(sessions, &back, &peer, (NOW, NOW)).unwrap();
    assert_eq!(exchange.initiator.buried, 2, "{exchange:?}");
    assert_buried(
        &back,
        &peer,
        &["pushed/then/deleted", "written/pushed/then/deleted"],
    );
    assert!(
        peer.get("written/while/away").unwrap().is_some(),
        "a write taken while away is kept"
    );
}

/// A new peer vouches for nothing: a node back after longer than `tombstone_ttl` neither
/// buries on its word nor hands it what may have been deleted meanwhile (the peer would
/// pass it on as its own); its writes of the time away still go.
#[test]
fn a_node_back_after_tombstone_ttl_withholds_its_old_copies_from_a_new_peer() {
    for back_opens in [true, false] {
        let (back, peer, exchange) = after_absence(
            Standing::Joining {
                since: 0,
                blind: None,
            },
            back_opens,
        );
        assert_eq!(exchange.initiator.buried, 0, "{exchange:?}");
        assert_eq!(exchange.initiator.withheld, 2, "{exchange:?}");
        for old in ["bulk/000001", "bulk/000002"] {
            assert_eq!(peer.get(old).unwrap(), None, "{old} was handed on");
            assert!(!back.get(old).unwrap().unwrap().is_tombstone());
        }
        assert!(peer.get("written/while/away").unwrap().is_some());
    }
}

/// A freshly inserted key that an established peer lacks (its push is still on the
/// way) is no deletion a peer could have forgotten: a stale node sends it, whoever wrote
/// it (a review found such keys deleted across the cluster).
#[test]
fn a_stale_node_sends_what_is_younger_than_tombstone_ttl() {
    const OWN: u64 = 7;
    let since = NOW - 2 * RULES.tombstone_ttl_ms;
    let (back, peer) = (store(), store());
    let mut fresh = bulk(1, 1);
    fresh[0].1.id.timestamp = NOW - 10;
    back.merge(&fresh).unwrap();
    let sessions = (
        kvs_sync::Session::initiator(RULES)
            .with_standing(Standing::Stale { since, blind: None })
            .writing_as(OWN, NOW),
        kvs_sync::Session::responder(RULES).with_standing(Standing::Established),
    );
    let exchange = kvs_sync::exchange_with(sessions, &back, &peer, (NOW, NOW)).unwrap();
    assert_eq!(exchange.initiator.buried, 0, "{exchange:?}");
    assert_eq!(peer.get(&fresh[0].0).unwrap(), Some(fresh[0].1.clone()));
}

/// A peer that caught up blind vouches for what it held outside its blind time only: a
/// stale node sends it what is stamped within (a node still away then may have written
/// it), and buries what is older.
#[test]
fn a_blind_peer_vouches_only_outside_its_blind_time() {
    let (from, to) = (
        NOW - 3 * RULES.tombstone_ttl_ms,
        NOW - 2 * RULES.tombstone_ttl_ms,
    );
    let (back, peer) = (store(), store());
    let mut held = bulk(2, 1);
    held[0].1.id.timestamp = from - 10;
    held[1].1.id.timestamp = from + 10;
    back.merge(&held).unwrap();
    let sessions = (
        kvs_sync::Session::initiator(RULES).with_standing(Standing::Stale {
            since: to,
            blind: None,
        }),
        kvs_sync::Session::responder(RULES).with_standing(Standing::Blind { from, to }),
    );
    let exchange = kvs_sync::exchange_with(sessions, &back, &peer, (NOW, NOW)).unwrap();
    assert_eq!(exchange.initiator.buried, 1, "{exchange:?}");
    assert_eq!(peer.get("bulk/000000").unwrap(), None, "it came back");
    assert!(peer.get("bulk/000001").unwrap().is_some(), "it was lost");
}

/// A peer of a cluster begun after a stale node's versions were written (new nodes that
/// met only each other while the stale node's cluster was away) vouches only from its
/// floor on: the stale node sends it what is older, whichever side opens, and buries
/// only what is newer. (Before the floor, such a peer's lack of every older key was
/// taken for deletions, and a whole cluster's data was buried:
/// `data-new-cluster-meets-stale`.)
#[test]
fn a_peer_vouches_only_from_its_floor_on() {
    let floor = NOW - 3 * RULES.tombstone_ttl_ms;
    let since = NOW - 2 * RULES.tombstone_ttl_ms;
    for back_opens in [true, false] {
        let (back, peer) = (store(), store());
        let mut held = bulk(2, 1);
        held[0].1.id.timestamp = floor - 10;
        held[1].1.id.timestamp = floor + 10;
        back.merge(&held).unwrap();
        let stale = kvs_sync::Session::initiator(RULES)
            .with_standing(Standing::Stale { since, blind: None });
        let new_cluster = kvs_sync::Session::responder(RULES)
            .with_standing(Standing::Established)
            .with_floor(floor);
        let exchange = match back_opens {
            true => kvs_sync::exchange_with((stale, new_cluster), &back, &peer, (NOW, NOW)),
            false => {
                let (stale, new_cluster) = (
                    kvs_sync::Session::responder(RULES)
                        .with_standing(Standing::Stale { since, blind: None }),
                    kvs_sync::Session::initiator(RULES)
                        .with_standing(Standing::Established)
                        .with_floor(floor),
                );
                kvs_sync::exchange_with((new_cluster, stale), &peer, &back, (NOW, NOW))
            }
        }
        .unwrap();
        let buried = exchange.initiator.buried + exchange.responder.buried;
        assert_eq!(buried, 1, "{back_opens} {exchange:?}");
        assert_eq!(
            peer.get("bulk/000000").unwrap(),
            Some(held[0].1.clone()),
            "older than the floor: sent ({back_opens})"
        );
        assert_buried(&back, &peer, &["bulk/000001"]);
    }
}

/// A peer whose clock is behind (within `max_clock_skew`) still sends a deletion that is
/// past keeping here: it is not taken, but the value it deleted is buried, and a value
/// written after it is kept. (A spec audit found the deleted value spread again by a node
/// back after `tombstone_ttl` whose first session was with such a peer.)
#[test]
fn a_deletion_past_keeping_here_still_buries_the_value_it_deleted() {
    let (here, behind) = (store(), store());
    let mut held = bulk(2, 1);
    let mut deletions = held.clone();
    for (n, ((_, value), (_, deletion))) in held.iter_mut().zip(&mut deletions).enumerate() {
        deletion.data = None;
        deletion.id.timestamp = NOW - RULES.tombstone_ttl_ms - 1;
        // bulk/000000 was written before the delete, bulk/000001 after it.
        value.id.timestamp = match n {
            0 => deletion.id.timestamp - 10,
            _ => NOW - 10,
        };
    }
    here.merge(&held).unwrap();
    behind.merge(&deletions).unwrap();
    let behind_now = NOW - 15_000;
    let behind_rules = Admission {
        now_ms: behind_now,
        ..RULES
    };
    let sessions = (
        kvs_sync::Session::initiator(RULES),
        kvs_sync::Session::responder(behind_rules),
    );
    let exchange = kvs_sync::exchange_with(sessions, &here, &behind, (NOW, behind_now)).unwrap();
    assert_eq!(exchange.initiator.refused.past_keeping, 1, "{exchange:?}");
    assert_eq!(exchange.initiator.buried, 1, "{exchange:?}");
    assert!(here.get("bulk/000000").unwrap().unwrap().is_tombstone());
    assert_eq!(here.get("bulk/000001").unwrap(), Some(held[1].1.clone()));
    here.purge(NOW, RULES.tombstone_ttl_ms, None).unwrap();
    assert_eq!(here.get("bulk/000000").unwrap(), None, "purged, never sent");
}

/// A deletion past keeping that its node has not purged yet still goes to a peer that
/// holds the key, and buries the value it deleted there: else the peer kept the value,
/// and once the deletion was purged, sent it back as if it were new (found by
/// `data-cold-restart`). Where the peer lacks the key, it is not sent.
#[test]
fn a_deletion_past_keeping_not_purged_yet_buries_the_value_a_peer_still_holds() {
    for holder_opens in [true, false] {
        let (holder, deleter) = (store(), store());
        let mut held = bulk(2, 1);
        let mut deletions = held.clone();
        for ((_, value), (_, deletion)) in held.iter_mut().zip(&mut deletions) {
            deletion.data = None;
            deletion.id.timestamp = NOW - RULES.tombstone_ttl_ms - 1;
            value.id.timestamp = deletion.id.timestamp - 10;
        }
        holder.merge(&held[..1]).unwrap();
        deleter.merge(&deletions).unwrap();
        let mut exchange = match holder_opens {
            true => exchange_locally(&holder, &deleter, RULES).unwrap(),
            false => exchange_locally(&deleter, &holder, RULES).unwrap(),
        };
        if !holder_opens {
            std::mem::swap(&mut exchange.initiator, &mut exchange.responder);
        }
        assert_eq!(exchange.initiator.buried, 1, "{holder_opens} {exchange:?}");
        assert_eq!(
            exchange.responder.versions_sent, 1,
            "only where held: {exchange:?}"
        );
        assert!(holder.get("bulk/000000").unwrap().unwrap().is_tombstone());
        assert_eq!(holder.get("bulk/000001").unwrap(), None);
        deleter.purge(NOW, RULES.tombstone_ttl_ms, None).unwrap();
        holder.purge(NOW, RULES.tombstone_ttl_ms, None).unwrap();
        let after = exchange_locally(&holder, &deleter, RULES).unwrap();
        assert_eq!(deleter.get("bulk/000000").unwrap(), None, "it came back");
        assert!(after.initiator.found_equal(), "{after:?}");
    }
}

/// A node's own delete older than `tombstone_ttl` that has not reached every peer yet
/// (its purges keep it: `kvs_sync::Undelivered`) goes as dead from the session, whether
/// a purge kept it yet or not: the peer takes it over the value it held and keeps it
/// `tombstone_ttl` from now. Once delivered, it is past keeping like any other.
#[test]
fn an_undelivered_own_delete_past_keeping_goes_as_a_fresh_one() {
    const OWN: u64 = 7;
    let deleted_at = NOW - RULES.tombstone_ttl_ms - 100;
    let not_kept_yet = None;
    let kept_a_while_ago = Some(NOW - RULES.tombstone_ttl_ms + 50);
    for expires_at in [not_kept_yet, kept_a_while_ago] {
        for (delivered_before, delivered) in [(deleted_at - 1, false), (deleted_at + 1, true)] {
            let (here, peer) = (store(), store());
            let mut value = bulk(1, 1);
            value[0].1.id.timestamp = deleted_at - 100;
            peer.merge(&value).unwrap();
            let mut delete = value[0].clone();
            delete.1.id.origin_joined_at = OWN;
            delete.1.id.timestamp = deleted_at;
            delete.1.data = None;
            delete.1.expires_at = expires_at;
            here.merge(std::slice::from_ref(&delete)).unwrap();
            let sessions = (
                kvs_sync::Session::initiator(RULES).writing_as(OWN, delivered_before),
                kvs_sync::Session::responder(RULES),
            );
            kvs_sync::exchange_with(sessions, &here, &peer, (NOW, NOW)).unwrap();
            let held = peer.get(&delete.0).unwrap().expect("held");
            assert!(held.is_tombstone(), "{expires_at:?} {delivered}: {held:?}");
            match delivered {
                // Past keeping (kept a while ago, it is not yet: taken as it is).
                true if expires_at.is_none() => assert!(held.id.uuid.is_nil(), "a burial"),
                true => assert_eq!(held, delete.1),
                false => {
                    assert_eq!(held.id, delete.1.id);
                    assert_eq!(held.dead_since(), Some(NOW));
                }
            }
        }
    }
}
