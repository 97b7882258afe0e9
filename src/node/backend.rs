//! The node as the API sees it: the [`Backend`] over the durable store, the group
//! committer (writes, then their pushes), membership, replication and backups.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvs_api::{Backend, BackupInfo, MemberInfo};
use kvs_net::QuicTransport;
use kvs_sync::driver::Replication;
use kvs_sync::{
    AuditEntry, AuditVerdict, Store, StoreError, SyncStatus, WriteOp, WriteOutcome, WriteRejected,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::now_ms;
use crate::cluster::Cluster;
use crate::store::{DurableStore, GroupCommitter};

/// The node as the API sees it.
pub struct NodeBackend {
    pub(super) node_id: String,
    pub(super) joined_at: u64,
    pub(super) http_addr: SocketAddr,
    pub(super) gossip_addr: SocketAddr,
    pub(super) store: Arc<DurableStore>,
    pub(super) committer: GroupCommitter,
    pub(super) cluster: Option<Cluster>,
    pub(super) replication: Option<Arc<Replication<QuicTransport>>>,
    pub(super) data_dir: PathBuf,
    /// Turns true when the node begins to shut down.
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Backend for NodeBackend {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn joined_at(&self) -> u64 {
        self.joined_at
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<kvs_sync::Change>> {
        Some(self.store.watch())
    }

    fn arrivals(&self) -> Option<&kvs_sync::Arrivals> {
        Some(self.store.arrivals())
    }

    fn stopping(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }

    async fn write(&self, op: WriteOp) -> Result<Result<WriteOutcome, WriteRejected>, StoreError> {
        let key = op.key.clone();
        let result = self.committer.write(op).await;
        if let (Some(replication), Ok(Ok(outcome))) = (&self.replication, &result) {
            replication.push(&key, &outcome.version);
        }
        result
    }

    fn members(&self) -> Vec<MemberInfo> {
        if let Some(cluster) = &self.cluster {
            return cluster.members();
        }
        vec![MemberInfo {
            node_id: self.node_id.clone(),
            gossip_addr: self.gossip_addr.to_string(),
            http_addr: self.http_addr.to_string(),
            state: "alive".into(),
            incarnation: 0,
            joined_at: self.joined_at,
            flap_score: 0.0,
            jwt_secret_matches: None,
        }]
    }

    async fn create_backup(&self) -> Result<BackupInfo, StoreError> {
        let (store, data_dir) = (Arc::clone(&self.store), self.data_dir.clone());
        tokio::task::spawn_blocking(move || crate::backup::take(&store, &data_dir))
            .await
            .map_err(|e| StoreError::Backend(format!("the backup task failed: {e}")))?
    }

    fn list_backups(&self) -> Result<Vec<BackupInfo>, StoreError> {
        crate::backup::list(&self.data_dir)
    }

    fn audit_entries(
        &self,
        since_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        self.store.audit_entries(since_seq, limit)
    }

    fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError> {
        self.store.verify_audit()
    }

    fn syncing(&self) -> bool {
        self.replication.as_ref().is_some_and(|r| r.syncing())
    }

    fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        match &self.replication {
            Some(replication) => replication.status(),
            None => Ok(SyncStatus {
                merkle_root: format!("{:016x}", self.store.merkle()?.root()),
                keys: self.store.stats()?.keys,
                syncing: false,
                peers: Vec::new(),
            }),
        }
    }

    fn register_metrics(&self, registry: &mut Registry) {
        // With clustering off the same families are there: this node alone, no sync.
        match &self.cluster {
            Some(cluster) => cluster.register_metrics(registry),
            None => crate::cluster::register_single_node_metrics(registry, &self.node_id),
        }
        match &self.replication {
            Some(replication) => replication.register_metrics(registry),
            None => kvs_sync::driver::register_unreplicated_metrics(registry),
        }
        if let Ok(used) = self.store.lmdb().used_bytes() {
            registry.register(
                "kvs_store_used_bytes",
                "Bytes of the data file's pages that hold data; kvs_store_bytes less this is \
                 free pages, which kvs compact gives back with the unused room of part-filled pages",
                ConstGauge::new(used),
            );
        }
        let stats = self.committer.stats();
        registry.register(
            "kvs_store_commits",
            "Store commits (one fsync each)",
            ConstCounter::new(stats.commits.load(Ordering::Relaxed)),
        );
        registry.register(
            "kvs_store_committed_writes",
            "Writes committed",
            ConstCounter::new(stats.ops.load(Ordering::Relaxed)),
        );
    }
}
