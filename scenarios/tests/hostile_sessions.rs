//! A hostile peer, a bare task on the simulated streams that knows the cluster secret,
//! holds a sync session ten minutes at most, whichever side opened it: a joining node
//! and an established node's rounds both get to their other peers after that.

mod driver;

use std::sync::Arc;
use std::time::Duration;

use driver::{start, start_expecting, up, write};
use kvs_net::{BiStream, Clock, Connection, Runtime, StreamTransport};
use kvs_scenarios::simnet::{SimNet, SimRuntime};
use kvs_scenarios::{Network, node_addr};
use kvs_sync::driver::KIND_SYNC;
use kvs_sync::protocol::{Message, encode};
use kvs_sync::{MemoryStore, Standing, Store, StoreOptions, WriteOp};
use tokio::sync::watch;

/// How a hostile peer (node 2 of the net, no driver) holds a session open: its first
/// message, then an empty `Versions` every 20 s, which ends nothing and comes well
/// within the 30 s a reply may take. It reads nothing of what it is sent.
async fn hold_session<S: BiStream>(mut stream: S, first: Message, runtime: SimRuntime) {
    if stream.send_frame(&encode(&first)).await.is_err() {
        return;
    }
    loop {
        runtime.sleep(Duration::from_secs(20)).await;
        if stream
            .send_frame(&encode(&Message::Versions(Vec::new())))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// n1 lacks the 100 keys n3 holds until the hostile peer's session ends: at 9 min of
/// virtual time it still lacks them, at 11 min it holds them (sessions last 10 min at
/// most). Before the limit, the session was held for ever and n1 never got them.
fn held_back_by_a_hostile_session(net: &mut SimNet, n1: &Arc<MemoryStore>, n3: &Arc<MemoryStore>) {
    let root = n3.merkle().expect("tree").root();
    net.run_until(Duration::from_secs(9 * 60));
    assert_ne!(
        n1.merkle().expect("tree").root(),
        root,
        "the session was held"
    );
    net.run_until(Duration::from_secs(11 * 60));
    assert_eq!(n1.merkle().expect("tree").root(), root, "n1 synced with n3");
}

fn stores_of_n1_and_n3(net: &SimNet) -> (Arc<MemoryStore>, Arc<MemoryStore>) {
    let now_ms = net.clock(2).unix_micros() / 1000;
    let ops: Vec<WriteOp> = (0..100).map(|n| write(&format!("k/{n:03}"))).collect();
    let n3 = MemoryStore::new(StoreOptions::default());
    n3.write_batch(&ops, now_ms).expect("writes");
    (
        Arc::new(MemoryStore::new(StoreOptions::default())),
        Arc::new(n3),
    )
}

/// A new node (with seeds) takes part in one session at a time until its first one
/// completes; a hostile peer that opens a session with it and keeps it going must not
/// keep it from every other peer for ever.
#[test]
fn a_hostile_peer_holds_a_joining_nodes_session_ten_minutes_at_most() {
    let mut net = SimNet::new(3, &Network::default(), 17).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let (n1_store, n3_store) = stores_of_n1_and_n3(&net);
    let n1 = start_expecting(&net, 0, &n1_store, &shutdown, true);
    let (streams, runtime) = (net.streams(1), net.runtime(1));
    net.spawn(async move {
        let Ok(connection) = streams.connect(node_addr(0)).await else {
            return;
        };
        let Ok(mut stream) = connection.open_stream().await else {
            return;
        };
        if stream.send_frame(KIND_SYNC).await.is_err() {
            return;
        }
        let hello = Message::Hello {
            root: 1,
            level2: vec![1; 256],
            standing: Standing::Established,
            floor: 0,
        };
        hold_session(stream, hello, runtime).await;
        drop(connection);
    });
    net.run_until(Duration::from_secs(1));
    let n3 = start(&net, 2, &n3_store, &shutdown);
    up(&n1, 2);
    up(&n3, 0);
    held_back_by_a_hostile_session(&mut net, &n1_store, &n3_store);
}

/// An established node runs its rounds one at a time; a hostile peer that answers the
/// node's round and keeps it going must not keep the node from its other peers for ever.
#[test]
fn a_hostile_peer_holds_a_round_ten_minutes_at_most() {
    let mut net = SimNet::new(3, &Network::default(), 19).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let (n1_store, n3_store) = stores_of_n1_and_n3(&net);
    let n1 = start(&net, 0, &n1_store, &shutdown);
    let (streams, runtime) = (net.streams(1), net.runtime(1));
    net.spawn(async move {
        let Ok(connection) = streams.accept().await else {
            return;
        };
        let Ok(mut stream) = connection.accept_stream().await else {
            return;
        };
        // The stream's kind, then n1's `Hello`.
        for _ in 0..2 {
            if !matches!(stream.recv_frame().await, Ok(Some(_))) {
                return;
            }
        }
        let standing = Message::Standing {
            standing: Standing::Established,
            floor: 0,
        };
        hold_session(stream, standing, runtime).await;
        drop(connection);
    });
    up(&n1, 1);
    net.run_until(Duration::from_secs(1));
    // n3 answers n1's rounds and opens none of its own with n1.
    let _n3 = start(&net, 2, &n3_store, &shutdown);
    up(&n1, 2);
    held_back_by_a_hostile_session(&mut net, &n1_store, &n3_store);
}
