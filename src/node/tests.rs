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

/// The sync times a node keeps are written only once LMDB holds what those syncs merged:
/// the merges skip the write-ahead log, and a crash that lost a session's versions
/// (a tombstone) while its time was kept would have the node send back what the session
/// had deleted. The applier commits within a second; here the facts wait for it.
#[test]
fn kept_sync_facts_wait_for_what_the_sessions_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = clustered();
    let store = open_store(&mut config, dir.path()).expect("store");
    let version = kvs_sync::Version {
        id: kvs_sync::VersionId {
            timestamp: now_ms(),
            origin_joined_at: 1,
            uuid: uuid::Uuid::from_u128(7),
        },
        data: Some("1".into()),
        owner: None,
        group: None,
        permissions: 0xf31,
        expires_at: None,
    };
    let merged = store
        .merge_from_session(vec![("merged".into(), version.clone())])
        .expect("merge");
    assert_eq!(merged, 1);
    let kept = KeptFacts {
        last_sync_ms: Some(now_ms()),
        floor_ms: Some(1),
        ..KeptFacts::default()
    };
    upkeep::keep_facts(&store, Some(&kept), None).expect("kept");
    // LMDB itself (not the store's overlay of what the applier has yet to move).
    assert_eq!(
        store.lmdb().get("merged").expect("read"),
        Some(version),
        "the sync time was kept before its session's versions"
    );
    assert_eq!(
        store.lmdb().meta_u64(LAST_SYNC).expect("meta"),
        kept.last_sync_ms
    );
}
