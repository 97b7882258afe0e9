//! What `GET /sync` shows of a node's data sync.

use serde::Serialize;

/// One peer as `GET /sync` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// The peer's `node_id`.
    pub node_id: String,
    /// When the last session with it that completed had started (Unix ms): each side
    /// held at least what the other held at that time.
    pub last_sync: Option<u64>,
    /// Bytes of versions queued for it.
    pub queue_bytes: u64,
    /// Whether it missed pushes that anti-entropy has not repaired yet.
    pub behind: bool,
    /// Whether the last complete session found the two merkle roots equal (nothing to
    /// repair); false before the first one.
    pub roots_agreed: bool,
}

/// This node's view of data sync (`GET /sync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// The merkle root (hex): equal on two nodes means equal data.
    pub merkle_root: String,
    /// Live keys, as listings count them (no tombstones, no reserved `_` entries).
    pub keys: u64,
    /// Whether the node has not completed its first session with a peer yet.
    pub syncing: bool,
    /// The live peers.
    pub peers: Vec<PeerStatus>,
}
