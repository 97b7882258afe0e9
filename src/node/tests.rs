//! Tests of the node's wiring that need no process: stopping clustering leaves none of
//! the sync endpoint's tasks running.

use std::net::Ipv4Addr;

use super::*;

/// A config for one clustered node on 127.0.0.1, every port picked by the system.
fn clustered() -> Config {
    let yaml = "node_id: a\nhttp_port: 0\ngossip_port: 0\nsync_port: 0\nauth_enabled: false\n";
    Config::parse(yaml, Path::new("t.yaml")).expect("config")
}

/// Stopping clustering joins the sync endpoint's tasks, one serving a connected peer's
/// handshake included, and closes the endpoint to peers.
#[tokio::test]
async fn stopping_clustering_joins_the_sync_endpoint_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = clustered();
    let store = open_store(&mut config, dir.path()).expect("store");
    let http = SocketAddr::from(([127, 0, 0, 1], 1));
    let (stop, shutdown) = watch::channel(false);
    let (cluster, replication, endpoint) =
        start_clustering(&config, &store, dir.path(), http, 0, shutdown)
            .await
            .expect("clustering");
    let sync_addr = endpoint.local_addr().expect("addr");
    // A peer of the same cluster: its connection is proven and handed to replication.
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let secret = ClusterSecret::new(config.cluster_secret.as_bytes());
    let peer = QuicTransport::bind((Ipv4Addr::LOCALHOST, 0).into(), peer_dir.path(), &secret)
        .expect("peer");
    let conn = peer.connect(sync_addr).await.expect("connected");
    assert!(endpoint.tasks_running() >= 1, "the accept loop runs");
    stop.send(true).expect("the node's shutdown signal");
    stop_clustering(
        Some(cluster),
        Some(&replication),
        Some(Arc::clone(&endpoint)),
    )
    .await;
    assert_eq!(endpoint.tasks_running(), 0, "every endpoint task joined");
    let refused = tokio::time::timeout(JOIN_TIMEOUT, peer.connect(sync_addr)).await;
    assert!(!matches!(refused, Ok(Ok(_))), "the endpoint is closed");
    drop(conn);
    store.close().expect("close");
}
