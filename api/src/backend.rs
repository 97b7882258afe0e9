//! What the API needs from the node: its store, its write path, its clock and its view
//! of the cluster.

use std::future::Future;

use kvs_sync::{
    AuditEntry, AuditVerdict, Store, StoreError, SyncStatus, WriteOp, WriteOutcome, WriteRejected,
};
use serde::Serialize;

/// A member of the cluster as `GET /members` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberInfo {
    /// The member's `node_id`.
    pub node_id: String,
    /// Its SWIM address (`host:port`).
    pub gossip_addr: String,
    /// Its HTTP address (`host:port`).
    pub http_addr: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Its incarnation number.
    pub incarnation: u64,
    /// When it first joined the cluster (Unix ms).
    pub joined_at: u64,
    /// How often its state flapped lately (decaying; 0 for a steady member).
    pub flap_score: f64,
    /// Whether it signs tokens with this node's `jwt_secret` (a fingerprint of it travels
    /// in membership); absent for this node itself and for a member that published none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret_matches: Option<bool>,
}

/// A backup as `/admin/backups` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BackupInfo {
    /// Its name (the file is `<data_dir>/backups/<name>.mdb`).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The keys a client sees (live, outside the reserved `_` prefix).
    pub keys: u64,
    /// When it was taken (Unix ms).
    pub created_at: u64,
}

/// The node behind the API.
///
/// Its synchronous methods, and the [`Store`] it hands out, may block (a durable store
/// waits for its applier; verification walks the audit chain): the API makes every call
/// that may wait on tokio's blocking pool, never on a runtime worker. Point reads of the
/// store ([`Store::get`]) and the in-memory views (`members`, `syncing`) are the
/// exceptions, answered on the worker.
pub trait Backend: Send + Sync + 'static {
    /// This node's `node_id`.
    fn node_id(&self) -> &str;

    /// When this node first joined its cluster (Unix ms): the origin of its versions.
    fn joined_at(&self) -> u64;

    /// The wall clock (Unix ms).
    fn now_ms(&self) -> u64;

    /// The local store, for reads.
    fn store(&self) -> &dyn Store;

    /// Applies one write durably (group-committed with concurrent ones), then hands it
    /// to replication.
    fn write(
        &self,
        op: WriteOp,
    ) -> impl Future<Output = Result<Result<WriteOutcome, WriteRejected>, StoreError>> + Send;

    /// The members this node knows, itself included.
    fn members(&self) -> Vec<MemberInfo>;

    /// Audit entries from `since_seq` on, at most `limit`, in order; `None` while the
    /// audit trail is off.
    fn audit_entries(
        &self,
        since_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError>;

    /// Checks the whole audit chain; `None` while the audit trail is off.
    fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError>;

    /// Takes a consistent backup while the node keeps serving.
    fn create_backup(&self) -> impl Future<Output = Result<BackupInfo, StoreError>> + Send;

    /// The backups kept, oldest first.
    fn list_backups(&self) -> Result<Vec<BackupInfo>, StoreError>;

    /// Adds the backend's own metrics (commits, membership, sync) to the registry of one
    /// scrape of `/metrics`.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);

    /// Every change from now on as the store makes it visible (`GET /watch`); `None`
    /// where the backend cannot stream them (`/watch` then answers `503`).
    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<kvs_sync::Change>> {
        None
    }

    /// The changes [`Self::watch`] sent lately, in their order, for an exact resume;
    /// `None` where the backend keeps none (a resume then goes by the event's time).
    fn arrivals(&self) -> Option<&kvs_sync::Arrivals> {
        None
    }

    /// Resolves once the node begins to shut down. Responses that never end by themselves
    /// (`/watch`) end then, so that a graceful shutdown does not wait for their clients.
    /// Never resolves by default.
    fn stopping(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        std::future::pending()
    }

    /// Whether the node has not completed its first sync with a peer yet (`/health`
    /// then says `syncing`); a node without peers to expect never is.
    fn syncing(&self) -> bool {
        false
    }

    /// This node's view of data sync (`GET /sync`); without clustering, the store's
    /// merkle root and key count and no peers.
    fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        Ok(SyncStatus {
            merkle_root: format!("{:016x}", self.store().merkle()?.root()),
            keys: self.store().stats()?.keys,
            syncing: false,
            peers: Vec::new(),
        })
    }
}
