//! The replication driver on the simulator, by hand: a joining node whose session's
//! partner stops midway and is declared dead is free at once to sync with another member.

mod driver;

use std::sync::Arc;
use std::time::Duration;

use driver::{start, start_expecting, up, write};
use kvs_net::Clock;
use kvs_scenarios::Network;
use kvs_scenarios::simnet::SimNet;
use kvs_sync::driver::PeerEvent;
use kvs_sync::{MemoryStore, Store, StoreOptions, WriteOp};
use tokio::sync::watch;

/// n3 joins (seeds given: it takes part in one session at a time until it has synced);
/// n1 opens a session to stream it 20,000 keys, n3 learns of n1 meanwhile (and opens no
/// round of its own with it: it is answering n1's), n1 stops midway, and membership
/// declares it dead: the session n3 answers ends at once, and n3 syncs with n2. (Before, that session
/// waited out the 30 s reply timeout and n3 refused n2's sessions all that time; found
/// by a black-box audit, where catching up stalled for 32-35 s after the streaming
/// member was killed.)
#[test]
fn a_joining_node_whose_partner_dies_mid_session_syncs_with_another_at_once() {
    let network: Network =
        serde_yaml::from_str("default: {latency: {min: 100ms, mean: 100ms, max: 100ms}}")
            .expect("network");
    let mut net = SimNet::new(3, &network, 7).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let now_ms = net.clock(1).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..20_000).map(|n| write(&format!("k/{n:05}"))).collect();
    let held: Vec<Arc<MemoryStore>> = (0..2)
        .map(|_| {
            let store = MemoryStore::new(StoreOptions::default());
            store.write_batch(&ops, now_ms).expect("writes");
            Arc::new(store)
        })
        .collect();
    let root = held[0].merkle().expect("tree").root();
    let n1 = start(&net, 0, &held[0], &shutdown);
    let n2 = start(&net, 1, &held[1], &shutdown);
    let joining = Arc::new(MemoryStore::new(StoreOptions::default()));
    let n3 = start_expecting(&net, 2, &joining, &shutdown, true);
    up(&n1, 2);
    // Over these links n1's session reaches n3 after about 300 ms (connection, then its
    // first message) and would complete about 150 ms later; n3 learns of n1 while it
    // answers it, and n1 stops midway.
    net.run_until(Duration::from_millis(310));
    up(&n3, 0);
    net.run_until(Duration::from_millis(360));
    let count = |store: &MemoryStore| store.stats().expect("stats").keys;
    let before = n3.status().expect("status");
    assert!(
        before.peers.iter().all(|peer| peer.last_sync.is_none()) && count(&joining) == 0,
        "the session ended before the stop: {before:?}"
    );
    // Stopped, or cut off: its connections stay open and silent (a killed process's
    // QUIC connections end only at the idle timeout, as a real peer finds out).
    net.pause(0, true);
    let stopped_at = net.now();
    n3.peer_event(PeerEvent::Down {
        node_id: "n1".into(),
    });
    n2.peer_event(PeerEvent::Down {
        node_id: "n1".into(),
    });
    up(&n3, 1);
    up(&n2, 2);
    while joining.merkle().expect("tree").root() != root {
        assert!(
            net.now() < stopped_at + Duration::from_secs(10),
            "n3 had {} of 20,000 keys 10 s after n1 stopped",
            count(&joining)
        );
        let next = net.now() + Duration::from_millis(100);
        net.run_until(next);
    }
    assert!(!n3.syncing());
    drop(n1);
}
