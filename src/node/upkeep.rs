//! The node's background upkeep while it runs: scheduled backups, the purge of expired
//! keys and old tombstones, and the facts kept in the store for the next start (the last
//! complete sync, how far its own writes had reached the peers, the live peers).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kvs_api::MemberInfo;
use kvs_sync::{Store, StoreError};
use tokio::sync::watch;

use super::{
    BLIND_FROM, BLIND_TO, FLOOR, KNOWN_PEERS, KeptFacts, LAST_SYNC, NodeBackend,
    OWN_WRITES_DELIVERED, now_ms,
};
use crate::config::Config;
use crate::store::DurableStore;

/// How often expired keys and old tombstones are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the node's replication facts (the last complete sync, how far its own
/// writes had reached its peers, its blind time and floor) and the live peers are
/// written to the store, when they changed. A crash loses what changed since: a node
/// back from one longer than `tombstone_ttl` later may send a deleted key back if it
/// got or delivered the key within this time before the crash (the simulator, which
/// keeps the facts at the same pace, found the resurrections at 5 s).
pub const KEEP_NODE_FACTS_EVERY: Duration = Duration::from_secs(1);

/// Takes a backup every `backup_interval` and keeps the newest `backup_retention`, while
/// `backup_enabled`.
pub(super) async fn backup_loop(
    config: &Config,
    store: Arc<DurableStore>,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    if !config.backup_enabled {
        return;
    }
    let keep = config.backup_retention as usize;
    let mut interval = tokio::time::interval(config.backup_interval.0);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let (store, dir) = (Arc::clone(&store), data_dir.clone());
        let taken = tokio::task::spawn_blocking(move || {
            let info = crate::backup::take(&store, &dir)?;
            crate::backup::prune(&dir, keep)?;
            Ok::<_, StoreError>(info)
        })
        .await;
        match taken {
            Ok(Ok(info)) => {
                tracing::info!(name = %info.name, bytes = info.bytes, keys = info.keys, "scheduled backup taken")
            }
            Ok(Err(error)) => tracing::error!(%error, "scheduled backup failed"),
            Err(error) => tracing::error!(%error, "scheduled backup task failed"),
        }
    }
}

/// Writes to the store, at start, every [`KEEP_NODE_FACTS_EVERY`] and at shutdown, when the last
/// complete sync started, the time before which the node's writes had all reached
/// every live peer, the time it may lack versions of after a blind catch-up and the
/// oldest time its copy vouches for, so that a restarted node knows how long it was away
/// and what it and the others had (see `ReplicationConfig::last_sync_ms`), and the live
/// peers' gossip addresses, which a restarted node joins through (see [`KNOWN_PEERS`]).
pub(super) async fn keep_node_facts(
    store: Arc<DurableStore>,
    backend: Arc<NodeBackend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (Some(replication), Some(cluster)) = (&backend.replication, &backend.cluster) else {
        return;
    };
    // Written at the first tick: a new node's floor, before it restarts.
    let mut kept_sync = KeptFacts::default();
    let mut kept_peers = String::new();
    let mut interval = tokio::time::interval(KEEP_NODE_FACTS_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = interval.tick() => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        let sync = Some(replication.kept_facts()).filter(|now| *now != kept_sync);
        // A node left alone keeps the peers it last saw: they are whom to try next time.
        let peers = live_peers(&cluster.members(), &backend.node_id);
        let peers = (!peers.is_empty() && peers != kept_peers).then_some(peers);
        if sync.is_some() || peers.is_some() {
            let (store, peers_to_write) = (Arc::clone(&store), peers.clone());
            let written = tokio::task::spawn_blocking(move || {
                keep_facts(&store, sync.as_ref(), peers_to_write.as_deref())
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    kept_sync = sync.unwrap_or(kept_sync);
                    kept_peers = peers.unwrap_or(kept_peers);
                }
                failed => tracing::warn!(?failed, "keeping the last sync time and peers failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Writes `sync` (read before this call) and `peers` to the store, once LMDB holds
/// every write accepted before this call: the versions the syncs it tells of merged went
/// to the applier without the log, and a kept sync time with its session's versions lost
/// to a crash would have the node send back keys the session had deleted.
pub(super) fn keep_facts(
    store: &DurableStore,
    sync: Option<&KeptFacts>,
    peers: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(sync) = sync {
        // Not hurried: the applier's next commit (within a second) is soon enough, and
        // a commit forced every second would write most pages twice as often.
        store.wait_applied(false)?;
        // One transaction: a last sync kept without its floor would read as a past from
        // before floors (floor 0), and a lower floor without its blind time would vouch
        // for that time. The blind time and the floor may go (0: none); the other two
        // only move on.
        let (from, to) = sync.blind_ms.unwrap_or_default();
        let mut facts = vec![
            (BLIND_FROM, from),
            (BLIND_TO, to),
            (FLOOR, sync.floor_ms.unwrap_or(0)),
        ];
        if let Some(at) = sync.own_writes_delivered_ms {
            facts.push((OWN_WRITES_DELIVERED, at));
        }
        if let Some(at) = sync.last_sync_ms {
            facts.push((LAST_SYNC, at));
        }
        store.lmdb().set_meta_u64s(&facts)?;
    }
    if let Some(peers) = peers {
        store.lmdb().set_meta_text(KNOWN_PEERS, peers)?;
    }
    Ok(())
}

/// The gossip addresses of the live members but `own_id`, sorted, one per line.
fn live_peers(members: &[MemberInfo], own_id: &str) -> String {
    let mut peers: Vec<&str> = members
        .iter()
        .filter(|m| m.node_id != own_id && matches!(m.state.as_str(), "alive" | "suspect"))
        .map(|m| m.gossip_addr.as_str())
        .collect();
    peers.sort_unstable();
    peers.join("\n")
}

/// Purges expired keys and old tombstones every [`PURGE_INTERVAL`]; the tombstones of
/// this node's writes that may not have reached every peer yet are kept (see
/// `Replication::undelivered`).
pub(super) async fn purge_loop(
    backend: Arc<NodeBackend>,
    tombstone_ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl_ms = u64::try_from(tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let store = Arc::clone(&backend.store);
        let undelivered = backend.replication.as_ref().and_then(|r| r.undelivered());
        let purge = move || store.purge(now_ms(), ttl_ms, undelivered);
        match tokio::task::spawn_blocking(purge).await {
            Ok(Ok(stats)) if stats.kept_undelivered > 0 => {
                tracing::info!(
                    expired = stats.expired,
                    tombstones = stats.tombstones,
                    kept = stats.kept_undelivered,
                    "purged; kept the tombstones of deletes not yet delivered to every peer"
                );
            }
            Ok(Ok(stats)) if stats.expired + stats.tombstones > 0 => {
                tracing::debug!(
                    expired = stats.expired,
                    tombstones = stats.tombstones,
                    "purged"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "purge failed"),
            Err(error) => tracing::error!(%error, "purge task failed"),
        }
    }
}
