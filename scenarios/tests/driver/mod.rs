//! Replication drivers started by hand on the simulator, for the driver's tests
//! (`replication_driver.rs`, `hostile_sessions.rs`).

use std::sync::Arc;
use std::time::Duration;

use kvs_scenarios::node_addr;
use kvs_scenarios::simnet::{SimNet, SimStreams};
use kvs_sync::driver::{PeerEvent, Replication, ReplicationConfig};
use kvs_sync::{Mutation, Precondition, Store, WriteOp};
use tokio::sync::watch;

pub(crate) fn write(key: &str) -> WriteOp {
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

/// Starts node `i`'s replication over `store` on `net`.
pub(crate) fn start<S: Store>(
    net: &SimNet,
    i: usize,
    store: &Arc<S>,
    shutdown: &watch::Receiver<bool>,
) -> Arc<Replication<SimStreams>> {
    start_expecting(net, i, store, shutdown, false)
}

/// Starts node `i`'s replication over `store` on `net`; with `expect_peers`, the node
/// is not established until its first complete session (a node given seeds).
pub(crate) fn start_expecting<S: Store>(
    net: &SimNet,
    i: usize,
    store: &Arc<S>,
    shutdown: &watch::Receiver<bool>,
    expect_peers: bool,
) -> Arc<Replication<SimStreams>> {
    let config = ReplicationConfig {
        node_id: format!("n{}", i + 1),
        sync_interval: Duration::from_secs(1),
        expect_peers,
        ..ReplicationConfig::default()
    };
    start_with(net, i, store, shutdown, config)
}

/// Starts node `i`'s replication over `store` on `net` with `config`.
pub(crate) fn start_with<S: Store>(
    net: &SimNet,
    i: usize,
    store: &Arc<S>,
    shutdown: &watch::Receiver<bool>,
    config: ReplicationConfig,
) -> Arc<Replication<SimStreams>> {
    Arc::new(Replication::start(
        Arc::new(net.runtime(i)),
        Arc::new(net.streams(i)),
        Arc::clone(store) as Arc<dyn Store>,
        Arc::new(net.clock(i)),
        config,
        shutdown.clone(),
    ))
}

pub(crate) fn up(node: &Replication<SimStreams>, peer: usize) {
    node.peer_event(PeerEvent::Up {
        node_id: format!("n{}", peer + 1),
        addr: node_addr(peer),
        life: 0,
    });
}
