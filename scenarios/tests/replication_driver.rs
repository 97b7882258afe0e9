//! The replication driver (`kvs_sync::driver`) on the simulator, by hand: two nodes sync
//! a write over simulated streams, and `drain` stops every task the driver started,
//! those serving the peer's connection and streams included.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvs_net::Clock;
use kvs_scenarios::simnet::{SimNet, SimStreams};
use kvs_scenarios::{Network, node_addr};
use kvs_sync::driver::{PeerEvent, Replication, ReplicationConfig};
use kvs_sync::{MemoryStore, Mutation, Precondition, Store, StoreOptions, WriteOp};
use tokio::sync::watch;

fn write(key: &str) -> WriteOp {
    WriteOp {
        key: key.into(),
        mutation: Mutation::Put {
            data: "1".into(),
            ttl_ms: None,
        },
        precondition: Precondition::None,
        uuid: uuid::Uuid::from_u128(key.len() as u128 + 1),
        origin_joined_at: 1,
        owner: None,
        group: None,
        permissions: 0,
        actor: None,
    }
}

#[test]
fn two_nodes_sync_and_drain_stops_every_task() {
    let mut net = SimNet::new(2, &Network::default(), 9).expect("net");
    let (_stop, shutdown) = watch::channel(false);
    let stores: Vec<Arc<MemoryStore>> = (0..2)
        .map(|_| Arc::new(MemoryStore::new(StoreOptions::default())))
        .collect();
    let nodes: Vec<Arc<Replication<SimStreams>>> = (0..2)
        .map(|i| {
            let config = ReplicationConfig {
                node_id: format!("n{}", i + 1),
                sync_interval: Duration::from_secs(1),
                ..ReplicationConfig::default()
            };
            Arc::new(Replication::start(
                Arc::new(net.runtime(i)),
                Arc::new(net.streams(i)),
                Arc::clone(&stores[i]) as Arc<dyn Store>,
                Arc::new(net.clock(i)),
                config,
                shutdown.clone(),
            ))
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let other = 1 - i;
        node.peer_event(PeerEvent::Up {
            node_id: format!("n{}", other + 1),
            addr: node_addr(other),
        });
    }
    let now_ms = net.clock(0).unix_micros() / 1000;
    for key in ["a", "bb", "ccc"] {
        let outcome = stores[0].write_batch(&[write(key)], now_ms).expect("write");
        let version = &outcome[0].as_ref().expect("accepted").version;
        nodes[0].push(key, version);
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
