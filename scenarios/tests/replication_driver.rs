//! The replication driver (`kvs_sync::driver`) on the simulator, by hand: two nodes sync
//! a write over simulated streams, `drain` stops every task the driver started, those
//! serving the peer's connection and streams included, and a peer that comes back is
//! never reached over a connection made with an earlier life of it, and a session that
//! fails ends the bulk load it began; a node answering a peer's session opens none with
//! it meanwhile, a node joining a cluster is sent the store once, a peer's refuted
//! suspicion does not end the session under way with it, and a node paused longer than
//! `tombstone_ttl` just before a session completes brings no deleted key back (a
//! joining node whose session's partner dies: `partner_gone.rs`).

mod driver;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driver::{start, start_expecting, start_with, up, write};
use kvs_net::Clock;
use kvs_scenarios::Network;
use kvs_scenarios::simnet::{SimClock, SimNet, SimStreams};
use kvs_sync::conformance::{Call, Hooked};
use kvs_sync::driver::{PeerEvent, Replication, ReplicationConfig};
use kvs_sync::{MemoryStore, Mutation, Store, StoreError, StoreOptions, WriteOp};
use tokio::sync::watch;

/// A delete of `key`, as [`write`] is its put.
fn delete(key: &str) -> WriteOp {
    WriteOp {
        mutation: Mutation::Delete,
        ..write(key)
    }
}

/// Whether `store` holds nothing of `key` but a tombstone, if that.
fn gone(store: &dyn Store, key: &str) -> bool {
    store
        .get(key)
        .expect("get")
        .is_none_or(|v| v.is_tombstone())
}

/// Writes `key` on `store` and pushes it through `node`.
fn write_and_push(net: &SimNet, node: &Replication<SimStreams>, store: &MemoryStore, key: &str) {
    let now_ms = net.clock(0).unix_micros() / 1000;
    let outcome = store.write_batch(&[write(key)], now_ms).expect("write");
    node.push(key, &outcome[0].as_ref().expect("accepted").version);
}

/// The history of `data-nemesis` seed 22: n1's push to n2 times out while n2 is down,
/// n2 goes down in n1's view, n1's second attempt connects to a restart of n2 that
/// crashes again at once, and n2 comes back for good. The round n1 starts when n2 comes
/// back must use a new connection: the one the push made leads to a process that is gone
/// (before the fix, the round waited 30 s for a reply and n2's own sessions with n1 were
/// refused meanwhile as crossing it).
#[test]
fn a_peer_back_is_not_reached_over_a_connection_to_an_earlier_life() {
    let mut net = SimNet::new(2, &Network::default(), 3).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let store = |_| Arc::new(MemoryStore::new(StoreOptions::default()));
    let n1_store = store(());
    let n1 = start(&net, 0, &n1_store, &shutdown);
    let n2 = start(&net, 1, &store(()), &shutdown);
    up(&n1, 1);
    up(&n2, 0);
    net.run_until(Duration::from_secs(2));

    net.crash(1);
    drop(n2);
    write_and_push(&net, &n1, &n1_store, "a");
    // The push waits 5 s for its acknowledgement, then connects again; meanwhile
    // membership says n2 is down.
    net.run_until(Duration::from_millis(7_500));
    n1.peer_event(PeerEvent::Down {
        node_id: "n2".into(),
    });
    net.set_up(1, true);
    let short_life = start(&net, 1, &store(()), &shutdown);
    net.run_until(Duration::from_secs(9));
    net.crash(1);
    drop(short_life);

    net.run_until(Duration::from_secs(10));
    net.set_up(1, true);
    let back_store = store(());
    let back = start(&net, 1, &back_store, &shutdown);
    up(&back, 0);
    up(&n1, 1);
    net.run_until(Duration::from_millis(10_500));
    assert!(
        back_store.get("a").expect("get").is_some(),
        "n1's round with n2 (back) completed within 0.5 s"
    );
}

#[test]
fn two_nodes_sync_and_drain_stops_every_task() {
    let mut net = SimNet::new(2, &Network::default(), 9).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let stores: Vec<Arc<MemoryStore>> = (0..2)
        .map(|_| Arc::new(MemoryStore::new(StoreOptions::default())))
        .collect();
    let nodes: Vec<Arc<Replication<SimStreams>>> = (0..2)
        .map(|i| start(&net, i, &stores[i], &shutdown))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        up(node, 1 - i);
    }
    for key in ["a", "bb", "ccc"] {
        write_and_push(&net, &nodes[0], &stores[0], key);
    }
    net.run_until(Duration::from_secs(5));
    for key in ["a", "bb", "ccc"] {
        assert!(
            stores[1].get(key).expect("get").is_some(),
            "{key} reached n2"
        );
    }
    assert_eq!(
        stores[0].merkle().expect("tree").root(),
        stores[1].merkle().expect("tree").root()
    );
    assert!(nodes[0].serving_tasks() > 0, "n1 serves n2's connection");

    let drained = Arc::new(AtomicBool::new(false));
    let (node, done) = (Arc::clone(&nodes[0]), Arc::clone(&drained));
    net.spawn(async move {
        node.drain(Duration::from_secs(1)).await;
        done.store(true, Ordering::SeqCst);
    });
    net.run_until(Duration::from_secs(8));
    assert!(drained.load(Ordering::SeqCst), "drain returned");
    assert_eq!(nodes[0].serving_tasks(), 0, "nothing of n1 serves on");
}

/// n2 starts empty and its first session merges fail: the driver ends the bulk load that
/// session began (each begin is followed by its end), and a later session brings
/// everything.
#[test]
fn a_failed_session_ends_the_bulk_load_it_began() {
    let mut net = SimNet::new(2, &Network::default(), 5).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let full = Arc::new(MemoryStore::new(StoreOptions::default()));
    let now_ms = net.clock(0).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..100).map(|n| write(&format!("k/{n:03}"))).collect();
    full.write_batch(&ops, now_ms).expect("writes");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let failing = Arc::new(AtomicBool::new(true));
    let (log, fail) = (Arc::clone(&calls), Arc::clone(&failing));
    let empty = Arc::new(Hooked::new(
        MemoryStore::new(StoreOptions::default()),
        move |call| {
            match call {
                Call::BeginBulkLoad => log.lock().expect("log").push("begin"),
                Call::EndBulkLoad => log.lock().expect("log").push("end"),
                Call::MergeFromSession(_) if fail.load(Ordering::SeqCst) => {
                    return Err(StoreError::Backend("refused by the test".into()));
                }
                _ => {}
            }
            Ok(())
        },
    ));
    let n1 = start(&net, 0, &full, &shutdown);
    let n2 = start(&net, 1, &empty, &shutdown);
    up(&n1, 1);
    up(&n2, 0);
    net.run_until(Duration::from_secs(3));
    let failed = calls.lock().expect("log").clone();
    assert!(!failed.is_empty(), "a session began a bulk load");
    assert_eq!(failed.last(), Some(&"end"), "{failed:?}");
    failing.store(false, Ordering::SeqCst);
    net.run_until(Duration::from_secs(6));
    let calls = calls.lock().expect("log").clone();
    assert!(
        calls.len() > failed.len(),
        "a later session loaded: {calls:?}"
    );
    for pair in calls.chunks(2) {
        assert_eq!(pair, ["begin", "end"], "{calls:?}");
    }
    assert_eq!(
        empty.merkle().expect("tree").root(),
        full.merkle().expect("tree").root()
    );
}

/// n2 holds 2,000 keys and opens a session with n1, which holds nothing; n1 learns of n2
/// while it answers that session. n1 runs no round of its own meanwhile: one session
/// carries both directions, and a second would stream the whole store again (n2 would
/// answer it, as n1's id is the smaller).
#[test]
fn a_node_answering_a_peers_session_opens_none_with_it() {
    let mut net = SimNet::new(2, &Network::default(), 7).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let full = Arc::new(MemoryStore::new(StoreOptions::default()));
    let now_ms = net.clock(1).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..2_000).map(|n| write(&format!("k/{n:04}"))).collect();
    full.write_batch(&ops, now_ms).expect("writes");
    let (empty, merged) = counted_empty_store();
    let n1 = start(&net, 0, &empty, &shutdown);
    let n2 = start(&net, 1, &full, &shutdown);
    up(&n2, 0);
    // The session is open and its versions on the way.
    net.run_until(Duration::from_millis(4));
    assert_eq!(*merged.lock().expect("count"), 0);
    up(&n1, 1);
    net.run_until(Duration::from_millis(900));
    assert_eq!(
        empty.merkle().expect("tree").root(),
        full.merkle().expect("tree").root()
    );
    assert_eq!(
        *merged.lock().expect("count"),
        2_000,
        "each version came once"
    );
}

/// Counts the versions merged into an empty store through sessions.
fn counted_empty_store() -> (Arc<Hooked<MemoryStore>>, Arc<Mutex<usize>>) {
    let merged = Arc::new(Mutex::new(0));
    let count = Arc::clone(&merged);
    let store = Hooked::new(MemoryStore::new(StoreOptions::default()), move |call| {
        if let Call::MergeFromSession(versions) = call {
            *count.lock().expect("count") += versions.len();
        }
        Ok(())
    });
    (Arc::new(store), merged)
}

/// A new node (with seeds) joins three members holding 2,000 keys, and each of them opens
/// a session with it on seeing it join: until its first session completes, the new node
/// takes part in one at a time, so that it is sent each version once, not three times;
/// the members it refused sync with it later and find nothing to repair.
#[test]
fn a_node_joining_a_cluster_is_sent_the_store_once() {
    let mut net = SimNet::new(4, &Network::default(), 11).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let now_ms = net.clock(1).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..2_000).map(|n| write(&format!("k/{n:04}"))).collect();
    let members: Vec<Arc<MemoryStore>> = (0..3)
        .map(|_| {
            let store = MemoryStore::new(StoreOptions::default());
            store.write_batch(&ops, now_ms).expect("writes");
            Arc::new(store)
        })
        .collect();
    let root = members[0].merkle().expect("tree").root();
    assert!(
        members
            .iter()
            .all(|store| store.merkle().expect("tree").root() == root)
    );
    let (joining, merged) = counted_empty_store();
    let new_node = start_expecting(&net, 0, &joining, &shutdown, true);
    let nodes: Vec<_> = (1..4)
        .map(|i| start(&net, i, &members[i - 1], &shutdown))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        up(node, 0);
        up(&new_node, i + 1);
    }
    net.run_until(Duration::from_secs(5));
    assert_eq!(joining.merkle().expect("tree").root(), root);
    assert_eq!(
        *merged.lock().expect("count"),
        2_000,
        "each version came once"
    );
    assert!(!new_node.syncing());
    for node in &nodes {
        let status = node.status().expect("status");
        let with_new_node = status.peers.iter().find(|peer| peer.node_id == "n1");
        assert!(
            with_new_node.is_some_and(|peer| peer.last_sync.is_some()),
            "every member completed a session with the new node: {status:?}"
        );
    }
}

/// When (virtual time) node 1's first session with node 2, which holds 300 keys, over
/// links of 100 ms each way, completes; with `refuted_at`, membership says node 2 is
/// alive again in the same life (a suspicion it refuted) at that time.
fn first_session_done_at(refuted_at: Option<Duration>) -> Duration {
    let network: Network =
        serde_yaml::from_str("default: {latency: {min: 100ms, mean: 100ms, max: 100ms}}")
            .expect("network");
    let mut net = SimNet::new(2, &network, 5).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let now_ms = net.clock(1).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..300).map(|n| write(&format!("k/{n:03}"))).collect();
    let held = Arc::new(MemoryStore::new(StoreOptions::default()));
    held.write_batch(&ops, now_ms).expect("writes");
    let n1 = start(
        &net,
        0,
        &Arc::new(MemoryStore::new(StoreOptions::default())),
        &shutdown,
    );
    let _n2 = start(&net, 1, &held, &shutdown);
    up(&n1, 1);
    let synced = |n1: &Replication<SimStreams>| {
        let status = n1.status().expect("status");
        status.peers.iter().any(|peer| peer.last_sync.is_some())
    };
    let step = Duration::from_millis(10);
    while !synced(&n1) {
        assert!(net.now() < Duration::from_secs(10), "no session completed");
        let next = net.now() + step;
        if refuted_at.is_some_and(|at| net.now() < at && at <= next) {
            net.run_until(refuted_at.expect("refuted"));
            up(&n1, 1);
        }
        net.run_until(next);
    }
    net.now()
}

/// A peer alive again in the same life is the same run of it: the session under way
/// with it goes on. (Before, every refuted suspicion ended the rounds with that peer
/// and dropped its connection, which under loss cost sessions over and over.)
#[test]
fn a_refuted_suspicion_does_not_end_the_session_under_way() {
    let plain = first_session_done_at(None);
    assert!(plain >= Duration::from_millis(300), "{plain:?}");
    let refuted = first_session_done_at(Some(plain / 2));
    assert_eq!(refuted, plain);
}

/// A node's clock that jumps ahead: what a process stopped for that long (SIGSTOP, a
/// frozen VM) reads when it runs again.
struct Resumed {
    clock: SimClock,
    ahead_us: Arc<AtomicU64>,
}

impl Clock for Resumed {
    fn now(&self) -> Duration {
        self.clock.now() + Duration::from_micros(self.ahead_us.load(Ordering::SeqCst))
    }

    fn unix_micros(&self) -> u64 {
        self.clock.unix_micros() + self.ahead_us.load(Ordering::SeqCst)
    }
}

/// n2 answers n1's session and is stopped for 5 s (tombstone_ttl: 3 s) between reading
/// n1's last message and completing the session, where the simulator cannot stop a task:
/// its clock jumps 5 s ahead there. n1 ran on meanwhile: it deleted a key both held and
/// purged the tombstone (n1's clock is 5 s behind n2's from then on, so n1 does it in
/// the seconds that follow). n2 must find that it was out of touch, be stale, and bury
/// the key. (Before the fix, the session's completion counted as a touch when n2
/// resumed: n2 never became stale and sent the key back to n1. Found by reading the
/// code after `a_node_paused_longer_than_tombstone_ttl_brings_no_deleted_key_back` in
/// `tests/anti_entropy_after_ttl.rs` failed.)
#[test]
fn a_node_paused_as_a_session_completes_brings_no_deleted_key_back() {
    let mut net = SimNet::new(2, &Network::default(), 13).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let ttl = Duration::from_secs(3);
    let n1_now = |net: &SimNet| net.clock(0).unix_micros() / 1000;
    let n1_store = Arc::new(MemoryStore::new(StoreOptions::default()));
    // Older than n2's first session, which shows that the cluster had it.
    n1_store
        .write_batch(&[write("k")], n1_now(&net) - 1_000)
        .expect("write");
    let ahead_us = Arc::new(AtomicU64::new(0));
    let (armed, stopped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (arm, stop, jump) = (
        Arc::clone(&armed),
        Arc::clone(&stopped),
        Arc::clone(&ahead_us),
    );
    // n2 reads its tree once it has n1's `Hello`, then answers `Done` (equal roots) and
    // the session is complete.
    let n2_store = Arc::new(Hooked::new(
        MemoryStore::new(StoreOptions::default()),
        move |call| {
            if matches!(call, Call::Merkle) && arm.swap(false, Ordering::SeqCst) {
                jump.store(5_000_000, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
            }
            Ok(())
        },
    ));
    let config = |i: usize, sync_interval| ReplicationConfig {
        node_id: format!("n{}", i + 1),
        sync_interval,
        tombstone_ttl: ttl,
        ..ReplicationConfig::default()
    };
    // n1 opens a session every 7.5 to 10 s; n2 none after the first.
    let n1_config = config(0, Duration::from_secs(10));
    let n1 = start_with(&net, 0, &n1_store, &shutdown, n1_config);
    let clock = Resumed {
        clock: net.clock(1),
        ahead_us,
    };
    let n2 = Replication::start(
        Arc::new(net.runtime(1)),
        Arc::new(net.streams(1)),
        Arc::clone(&n2_store) as Arc<dyn Store>,
        Arc::new(clock),
        config(1, Duration::from_secs(3600)),
        shutdown.clone(),
    );
    up(&n1, 1);
    up(&n2, 0);
    net.run_until(Duration::from_secs(1));
    assert!(n2_store.get("k").expect("get").is_some(), "n2 got the key");

    armed.store(true, Ordering::SeqCst);
    while !stopped.load(Ordering::SeqCst) {
        assert!(net.now() < Duration::from_secs(15), "n1 opened no session");
        net.run_until(net.now() + Duration::from_millis(10));
    }
    let resumed = net.now();
    net.run_until(resumed + Duration::from_millis(500));
    n1_store
        .write_batch(&[delete("k")], n1_now(&net))
        .expect("delete");
    net.run_until(resumed + Duration::from_millis(4_500));
    let ttl_ms = u64::try_from(ttl.as_millis()).expect("ms");
    n1_store.purge(n1_now(&net), ttl_ms, None).expect("purge");
    assert_eq!(
        n1_store.get("k").expect("get"),
        None,
        "n1 forgot the delete"
    );
    // n1's next sessions with n2.
    net.run_until(resumed + Duration::from_secs(25));
    assert!(gone(n1_store.as_ref(), "k"), "the deleted key came back");
    assert!(gone(n2_store.as_ref(), "k"), "n2 kept the deleted key");
}

/// n2 takes in n1's key in its first session and crashes before it kept the session's
/// time (the real node wrote it every 5 s then), so its next life starts with the key and
/// no last sync. n1 deletes the key and purges the tombstone meanwhile. Back longer
/// than `tombstone_ttl` after its first start, n2 must be stale and bury the key. (Before
/// the fix it took itself for a node that never synced, was never stale, and sent the
/// key back to n1. Found by hand on real processes: a node killed 2 s after its first
/// sync and started again 20 s later brought a deleted key back to all four nodes.)
#[test]
fn a_node_back_with_data_but_no_kept_session_brings_no_deleted_key_back() {
    let mut net = SimNet::new(2, &Network::default(), 5).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let ttl = Duration::from_secs(3);
    let now = |net: &SimNet, i: usize| net.clock(i).unix_micros() / 1000;
    let n1_store = Arc::new(MemoryStore::new(StoreOptions::default()));
    n1_store
        .write_batch(&[write("k")], now(&net, 0) - 1_000)
        .expect("write");
    let config = |i: usize| ReplicationConfig {
        node_id: format!("n{}", i + 1),
        sync_interval: Duration::from_secs(1),
        tombstone_ttl: ttl,
        ..ReplicationConfig::default()
    };
    let n1 = start_with(&net, 0, &n1_store, &shutdown, config(0));
    let n2_store = Arc::new(MemoryStore::new(StoreOptions::default()));
    // A node given seeds, at its first start; no session kept in either life.
    let n2_config = ReplicationConfig {
        expect_peers: true,
        joined_at: now(&net, 1),
        ..config(1)
    };
    let n2 = start_with(&net, 1, &n2_store, &shutdown, n2_config.clone());
    up(&n1, 1);
    up(&n2, 0);
    net.run_until(Duration::from_secs(1));
    assert!(n2.last_sync_ms().is_some(), "n2's first session completed");
    assert!(
        n2_store.get("k").expect("get").is_some(),
        "and brought the key"
    );

    net.crash(1);
    drop(n2);
    n1.peer_event(PeerEvent::Down {
        node_id: "n2".into(),
    });
    n1_store
        .write_batch(&[delete("k")], now(&net, 0))
        .expect("delete");
    net.run_until(Duration::from_secs(6));
    let ttl_ms = u64::try_from(ttl.as_millis()).expect("ms");
    n1_store.purge(now(&net, 0), ttl_ms, None).expect("purge");
    assert_eq!(
        n1_store.get("k").expect("get"),
        None,
        "n1 forgot the delete"
    );

    net.set_up(1, true);
    let n2 = start_with(&net, 1, &n2_store, &shutdown, n2_config);
    up(&n2, 0);
    up(&n1, 1);
    net.run_until(Duration::from_secs(12));
    assert!(gone(n1_store.as_ref(), "k"), "the deleted key came back");
    assert!(gone(n2_store.as_ref(), "k"), "n2 kept the deleted key");
    assert!(n2.last_sync_ms().is_some(), "n2 caught up");
}

/// A session's messages that arrive once it has outlived `tombstone_ttl` (less
/// `max_clock_skew`) are not taken: they hold the peer's copy as it was when it read
/// it, and a key deleted here since may have been purged here. n1 opens a session with
/// n2, which holds a key; as n2 reads the key to send it, n1's clock jumps 2.5 s
/// (`tombstone_ttl` 3 s, `max_clock_skew` 1 s: the session takes messages for 2 s), as
/// if n2 had been paused that long with the session open (n1, in touch meanwhile in a
/// real cluster, is not stale).
/// n1 must not take the key from that session (its next round, a new session, would).
/// (Before the fix it did: found by a chaos test of real processes, where a peer paused
/// mid-session past `tombstone_ttl` sent, as it resumed, keys deleted and purged
/// meanwhile, and they came back.)
#[test]
fn a_session_that_outlived_tombstone_ttl_is_not_taken_from() {
    let mut net = SimNet::new(2, &Network::default(), 17).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let n1_ahead = Arc::new(AtomicU64::new(0));
    let jump = Arc::clone(&n1_ahead);
    let n2_store = Arc::new(Hooked::new(
        MemoryStore::new(StoreOptions::default()),
        move |call| {
            // n2 reading versions to send (it opens no session: it does not know n1).
            if matches!(
                call,
                Call::Get | Call::List | Call::LeafEntries | Call::VersionsAfter
            ) {
                jump.store(2_500_000, Ordering::SeqCst);
            }
            Ok(())
        },
    ));
    let before = net.clock(1).unix_micros() / 1000 - 1_000;
    n2_store.write_batch(&[write("k")], before).expect("write");
    let config = |i: usize, sync_interval| ReplicationConfig {
        node_id: format!("n{}", i + 1),
        sync_interval,
        tombstone_ttl: Duration::from_secs(3),
        max_clock_skew: Duration::from_secs(1),
        ..ReplicationConfig::default()
    };
    let n1_store = Arc::new(MemoryStore::new(StoreOptions::default()));
    let n1 = Replication::start(
        Arc::new(net.runtime(0)),
        Arc::new(net.streams(0)),
        Arc::clone(&n1_store) as Arc<dyn Store>,
        Arc::new(Resumed {
            clock: net.clock(0),
            ahead_us: n1_ahead,
        }),
        config(0, Duration::from_secs(3600)),
        shutdown.clone(),
    );
    let _n2 = start_with(
        &net,
        1,
        &n2_store,
        &shutdown,
        config(1, Duration::from_secs(3600)),
    );
    up(&n1, 1);
    net.run_until(Duration::from_secs(2));
    assert!(
        n1_store.get("k").expect("get").is_none(),
        "n1 took the key from a session older than tombstone_ttl"
    );
    // A new session (n1 told again that n2 is live) takes it.
    up(&n1, 1);
    net.run_until(Duration::from_secs(4));
    assert!(n1_store.get("k").expect("get").is_some(), "a new session");
}
