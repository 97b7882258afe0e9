//! How replication runs: [`ReplicationConfig`], what the node or the simulator gives
//! [`super::Replication::start`], and its defaults.

use std::time::Duration;

/// How replication runs.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// This node's `node_id`: where two nodes open a session with each other at once,
    /// the one with the smaller id keeps its own and refuses the other's (one session
    /// carries both directions).
    pub node_id: String,
    /// Between anti-entropy rounds.
    pub sync_interval: Duration,
    /// Versions stamped further ahead of the local clock are refused.
    pub max_clock_skew: Duration,
    /// How long deletions are kept.
    pub tombstone_ttl: Duration,
    /// Bytes queued for one peer at most; beyond, the peer is left to anti-entropy.
    pub queue_bytes: usize,
    /// Bytes of versions per push batch, about (one version always goes alone).
    pub batch_bytes: usize,
    /// Seeds the choice of peers.
    pub seed: u64,
    /// Whether this node expects peers (it has seeds): it reports `syncing` until its
    /// first complete session with one.
    pub expect_peers: bool,
    /// When this node's last complete session started (Unix ms), as kept by the node
    /// across restarts. Once that is longer ago than `tombstone_ttl` at start, or once the
    /// node has been out of touch with every peer that long as it runs (paused, or with
    /// no live peer), the node is stale: it buries or withholds what may have been
    /// deleted meanwhile (see [`crate::Session::with_standing`]) until a session with a
    /// peer that vouches (established, or blind) completes, or, when no live peer does
    /// (the whole cluster was away), until it has completed a session with each live
    /// peer and the set of live peers has not changed for a `sync_interval` (then it is
    /// blind over the time between: [`crate::Standing::Blind`]).
    pub last_sync_ms: Option<u64>,
    /// This node's `joined_at`, the `origin_joined_at` of its own writes (0: unknown): a
    /// stale node sends only its own newer writes (see [`crate::Session::writing_as`]).
    pub joined_at: u64,
    /// The time (Unix ms) before which every write of this node had reached every live
    /// peer, as kept by the node across restarts (see
    /// [`super::Replication::own_writes_delivered_ms`]).
    pub own_writes_delivered_ms: Option<u64>,
    /// The time `[from, to)` (Unix ms) this node may lack versions of, as kept by the
    /// node across restarts (see [`super::Replication::blind_ms`]).
    pub blind_ms: Option<(u64, u64)>,
    /// This node's floor (Unix ms), as kept by the node across restarts (see
    /// [`super::Replication::floor_ms`]).
    pub floor_ms: Option<u64>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            sync_interval: Duration::from_secs(5),
            max_clock_skew: Duration::from_secs(30),
            tombstone_ttl: Duration::from_secs(7 * 24 * 3600),
            // 64 MiB: about 30 s of a 2,000 writes/s load of 1 KB values.
            queue_bytes: 64 << 20,
            // What a sync frame's versions are filled to: well below the QUIC frame limit
            // (16 MiB) and above one 1 MiB value.
            batch_bytes: crate::protocol::VERSIONS_BUDGET,
            seed: 0,
            expect_peers: false,
            last_sync_ms: None,
            joined_at: 0,
            own_writes_delivered_ms: None,
            blind_ms: None,
            floor_ms: None,
        }
    }
}

/// What a node keeps of its replication across restarts, and gives back in its next
/// [`ReplicationConfig`] (each field is the one of the same name there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptFacts {
    /// When its last complete sync started.
    pub last_sync_ms: Option<u64>,
    /// The time before which its writes had all reached every live peer.
    pub own_writes_delivered_ms: Option<u64>,
    /// The time it may lack versions of, after a blind catch-up.
    pub blind_ms: Option<(u64, u64)>,
    /// The oldest time its copy vouches for.
    pub floor_ms: Option<u64>,
}
