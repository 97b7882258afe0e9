//! Counters of the replication driver and their metrics on `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use kvs_net::StreamTransport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Replication;
use crate::{PeerStatus, RefusalCounts, SessionStats};

/// Upper bounds (ms) of the replication lag histogram's buckets.
const LAG_BUCKETS_MS: [f64; 14] = [
    1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

/// How long pushed versions took from their write to being stored here: the receiver's
/// clock minus the version's timestamp (meaningful where clocks agree, as on one host or
/// with NTP), per version.
#[derive(Debug)]
pub(crate) struct LagHistogram(Histogram);

impl Default for LagHistogram {
    fn default() -> Self {
        Self(Histogram::new(LAG_BUCKETS_MS))
    }
}

impl LagHistogram {
    pub(crate) fn record(&self, lag_ms: u64) {
        self.0.observe(lag_ms as f64);
    }
}

/// Monotonic counters (Prometheus `_total`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rounds: AtomicU64,
    pub(crate) rounds_failed: AtomicU64,
    pub(crate) round_trips: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) versions_sent: AtomicU64,
    pub(crate) versions_received: AtomicU64,
    pub(crate) versions_stored: AtomicU64,
    pub(crate) refused_malformed: AtomicU64,
    pub(crate) refused_future: AtomicU64,
    pub(crate) refused_past_keeping: AtomicU64,
    pub(crate) buried: AtomicU64,
    pub(crate) pushed: AtomicU64,
    pub(crate) push_acks: AtomicU64,
    pub(crate) push_errors: AtomicU64,
    pub(crate) push_overflows: AtomicU64,
    pub(crate) push_received: AtomicU64,
    pub(crate) push_stored: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) lag: LagHistogram,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts a sync session (run or served) that failed.
    pub(crate) fn round_failed(&self) {
        add(&self.rounds_failed, 1);
    }

    pub(crate) fn refused(&self, refused: RefusalCounts) {
        add(&self.refused_malformed, refused.malformed);
        add(&self.refused_future, refused.from_the_future);
        add(&self.refused_past_keeping, refused.past_keeping);
    }

    /// Adds what a session did between two readings of its figures.
    pub(crate) fn session_delta(&self, before: &SessionStats, now: &SessionStats) {
        add(
            &self.versions_sent,
            now.versions_sent - before.versions_sent,
        );
        add(
            &self.versions_received,
            now.versions_received - before.versions_received,
        );
        add(
            &self.versions_stored,
            now.versions_stored - before.versions_stored,
        );
        add(&self.buried, now.buried - before.buried);
        self.refused(RefusalCounts {
            malformed: now.refused.malformed - before.refused.malformed,
            from_the_future: now.refused.from_the_future - before.refused.from_the_future,
            past_keeping: now.refused.past_keeping - before.refused.past_keeping,
        });
    }

    /// Adds the counters and the lag histogram to the registry of a scrape; each
    /// counter's name gets its `_total` there.
    fn register(&self, registry: &mut Registry) {
        let rows: [(&str, &str, &AtomicU64); 19] = [
            (
                "kvs_sync_rounds",
                "Anti-entropy sessions completed",
                &self.rounds,
            ),
            (
                "kvs_sync_rounds_failed",
                "Anti-entropy sessions that failed",
                &self.rounds_failed,
            ),
            (
                "kvs_sync_round_trips",
                "Round trips of sessions this node opened",
                &self.round_trips,
            ),
            (
                "kvs_sync_sent_bytes",
                "Frame bytes sent by anti-entropy",
                &self.bytes_sent,
            ),
            (
                "kvs_sync_received_bytes",
                "Frame bytes received by anti-entropy",
                &self.bytes_received,
            ),
            (
                "kvs_sync_versions_sent",
                "Versions sent by anti-entropy",
                &self.versions_sent,
            ),
            (
                "kvs_sync_versions_received",
                "Versions received by anti-entropy",
                &self.versions_received,
            ),
            (
                "kvs_sync_versions_stored",
                "Versions received by anti-entropy and stored",
                &self.versions_stored,
            ),
            (
                "kvs_sync_refused_malformed",
                "Versions from peers refused as malformed",
                &self.refused_malformed,
            ),
            (
                "kvs_sync_refused_future",
                "Versions from peers stamped beyond max_clock_skew",
                &self.refused_future,
            ),
            (
                "kvs_sync_refused_past_keeping",
                "Deletions from peers older than tombstone_ttl",
                &self.refused_past_keeping,
            ),
            (
                "kvs_sync_buried",
                "Versions found deleted after a longer absence than tombstone_ttl",
                &self.buried,
            ),
            (
                "kvs_replication_sent",
                "Versions pushed to peers (once per peer)",
                &self.pushed,
            ),
            (
                "kvs_replication_acked",
                "Versions peers acknowledged as stored durably",
                &self.push_acks,
            ),
            (
                "kvs_replication_send_errors",
                "Push batches that failed (left to anti-entropy)",
                &self.push_errors,
            ),
            (
                "kvs_replication_queue_overflows",
                "Peer queues dropped for size (left to anti-entropy)",
                &self.push_overflows,
            ),
            (
                "kvs_replication_received",
                "Versions received by push",
                &self.push_received,
            ),
            (
                "kvs_replication_stored",
                "Versions received by push and stored",
                &self.push_stored,
            ),
            (
                "kvs_replication_malformed",
                "Frames from peers dropped as malformed",
                &self.malformed_frames,
            ),
        ];
        for (name, help, counter) in rows {
            let value = ConstCounter::new(counter.load(Ordering::Relaxed));
            registry.register(name, help, value);
        }
        registry.register(
            "kvs_replication_lag_ms",
            "From a pushed version's write to its storing here",
            self.lag.0.clone(),
        );
    }
}

/// The label of a per-peer gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    node_id: String,
}

/// Adds the per-peer gauges to the registry of a scrape.
fn register_peers(peers: &BTreeMap<String, PeerStatus>, registry: &mut Registry) {
    let last_complete = Family::<PeerLabels, Gauge<u64, AtomicU64>>::default();
    let queue_bytes = Family::<PeerLabels, Gauge<u64, AtomicU64>>::default();
    for (id, peer) in peers {
        let labels = PeerLabels {
            node_id: id.clone(),
        };
        if let Some(at) = peer.last_sync {
            last_complete.get_or_create(&labels).set(at);
        }
        queue_bytes.get_or_create(&labels).set(peer.queue_bytes);
    }
    registry.register(
        "kvs_sync_last_complete_ms",
        "When the last complete session with each peer started (Unix ms)",
        last_complete,
    );
    registry.register(
        "kvs_replication_queue_bytes",
        "Bytes queued for each peer",
        queue_bytes,
    );
}

impl<T: StreamTransport> Replication<T> {
    /// Adds the replication and sync metrics to the registry of one scrape of
    /// `/metrics`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        register_sync(
            registry,
            &self.shared.counters,
            &self.peer_statuses(),
            SyncGauges {
                syncing: self.syncing(),
                stale: self.shared.stale_since().is_some(),
                last_sync_ms: self.last_sync_ms().unwrap_or(0),
            },
        );
    }
}

/// The replication and sync families of `/metrics` for a node with clustering off: the
/// same names as a cluster member's, all at zero, no peers.
pub fn register_unreplicated_metrics(registry: &mut Registry) {
    let nothing = SyncGauges {
        syncing: false,
        stale: false,
        last_sync_ms: 0,
    };
    register_sync(registry, &Counters::default(), &BTreeMap::new(), nothing);
}

/// The node-wide sync gauges of a scrape.
struct SyncGauges {
    syncing: bool,
    stale: bool,
    last_sync_ms: u64,
}

fn register_sync(
    registry: &mut Registry,
    counters: &Counters,
    peers: &BTreeMap<String, PeerStatus>,
    gauges: SyncGauges,
) {
    counters.register(registry);
    register_peers(peers, registry);
    registry.register(
        "kvs_sync_syncing",
        "Whether the first sync with a peer is still to come",
        ConstGauge::new(u32::from(gauges.syncing)),
    );
    registry.register(
        "kvs_sync_stale",
        "Whether this node is stale: out of touch with every peer for longer than tombstone_ttl, until it has caught up",
        ConstGauge::new(u32::from(gauges.stale)),
    );
    registry.register(
        "kvs_sync_last_sync_ms",
        "When the last complete sync started (Unix ms)",
        ConstGauge::new(gauges.last_sync_ms),
    );
}
