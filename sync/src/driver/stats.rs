//! Counters of the replication driver and their Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{PeerStatus, RefusalCounts, SessionStats};

/// Upper bounds (ms) of the replication lag histogram's buckets.
const LAG_BUCKETS_MS: [u64; 14] = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 250, 1000, 5000];

/// How long pushed versions took from their write to being stored here: the receiver's
/// clock minus the version's timestamp (meaningful where clocks agree, as on one host or
/// with NTP), per version.
#[derive(Debug, Default)]
pub(crate) struct LagHistogram {
    buckets: [AtomicU64; LAG_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl LagHistogram {
    pub(crate) fn record(&self, lag_ms: u64) {
        if let Some(bucket) = LAG_BUCKETS_MS.iter().position(|&bound| lag_ms <= bound) {
            add(&self.buckets[bucket], 1);
        }
        add(&self.count, 1);
        add(&self.sum_ms, lag_ms);
    }

    fn render(&self, out: &mut String) {
        let name = "kvs_replication_lag_ms";
        let _ = writeln!(
            out,
            "# HELP {name} From a pushed version's write to its storing here.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LAG_BUCKETS_MS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ms.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_count {count}");
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
        self.refused(RefusalCounts {
            malformed: now.refused.malformed - before.refused.malformed,
            from_the_future: now.refused.from_the_future - before.refused.from_the_future,
            past_keeping: now.refused.past_keeping - before.refused.past_keeping,
        });
    }

    pub(crate) fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &AtomicU64); 19] = [
            (
                "sync_rounds_total",
                "Anti-entropy sessions completed.",
                &self.rounds,
            ),
            (
                "sync_rounds_failed_total",
                "Anti-entropy sessions that failed.",
                &self.rounds_failed,
            ),
            (
                "sync_round_trips_total",
                "Round trips of sessions this node opened.",
                &self.round_trips,
            ),
            (
                "sync_sent_bytes_total",
                "Frame bytes sent by anti-entropy.",
                &self.bytes_sent,
            ),
            (
                "sync_received_bytes_total",
                "Frame bytes received by anti-entropy.",
                &self.bytes_received,
            ),
            (
                "sync_versions_sent_total",
                "Versions sent by anti-entropy.",
                &self.versions_sent,
            ),
            (
                "sync_versions_received_total",
                "Versions received by anti-entropy.",
                &self.versions_received,
            ),
            (
                "sync_versions_stored_total",
                "Versions received by anti-entropy and stored.",
                &self.versions_stored,
            ),
            (
                "sync_refused_malformed_total",
                "Versions from peers refused as malformed.",
                &self.refused_malformed,
            ),
            (
                "sync_refused_future_total",
                "Versions from peers stamped beyond max_clock_skew.",
                &self.refused_future,
            ),
            (
                "sync_refused_past_keeping_total",
                "Deletions from peers older than tombstone_ttl.",
                &self.refused_past_keeping,
            ),
            (
                "sync_buried_total",
                "Versions found deleted after a longer absence than tombstone_ttl.",
                &self.buried,
            ),
            (
                "replication_sent_total",
                "Versions pushed to peers (once per peer).",
                &self.pushed,
            ),
            (
                "replication_acked_total",
                "Versions peers acknowledged as stored durably.",
                &self.push_acks,
            ),
            (
                "replication_send_errors_total",
                "Push batches that failed (left to anti-entropy).",
                &self.push_errors,
            ),
            (
                "replication_queue_overflows_total",
                "Peer queues dropped for size (left to anti-entropy).",
                &self.push_overflows,
            ),
            (
                "replication_received_total",
                "Versions received by push.",
                &self.push_received,
            ),
            (
                "replication_stored_total",
                "Versions received by push and stored.",
                &self.push_stored,
            ),
            (
                "replication_malformed_total",
                "Frames from peers dropped as malformed.",
                &self.malformed_frames,
            ),
        ];
        for (name, help, counter) in rows {
            let _ = write!(
                out,
                "# HELP kvs_{name} {help}\n# TYPE kvs_{name} counter\nkvs_{name} {}\n",
                counter.load(Ordering::Relaxed)
            );
        }
        self.lag.render(out);
    }
}

/// Per-peer gauges in Prometheus text.
pub(crate) fn render_peers(peers: &BTreeMap<String, PeerStatus>, out: &mut String) {
    out.push_str("# HELP kvs_sync_last_complete_ms When the last complete session with each peer started (Unix ms).\n# TYPE kvs_sync_last_complete_ms gauge\n");
    for (id, peer) in peers {
        if let Some(at) = peer.last_sync {
            let _ = writeln!(out, "kvs_sync_last_complete_ms{{node_id=\"{id}\"}} {at}");
        }
    }
    out.push_str("# HELP kvs_replication_queue_bytes Bytes queued for each peer.\n# TYPE kvs_replication_queue_bytes gauge\n");
    for (id, peer) in peers {
        let _ = writeln!(
            out,
            "kvs_replication_queue_bytes{{node_id=\"{id}\"}} {}",
            peer.queue_bytes
        );
    }
}
