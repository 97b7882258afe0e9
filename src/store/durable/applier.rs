//! The applier: a background thread that moves durable batches from the in-memory overlay
//! into LMDB, a second's worth at a time unless a reader waits or a backlog builds up
//! (then in commits of up to [`APPLY_BYTES`]); writers wait while the backlog is above
//! twice that, so memory stays bounded whatever the write rate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvs_sync::{StoreError, Version};

use super::Log;
use super::audit::HeadRecorder;
use crate::store::LmdbStore;
use crate::store::lmdb::Logged;
use crate::store::wal;

/// The most versions the applier moves to LMDB in one transaction.
pub(super) const APPLY_BATCH: usize = 262_144;
/// The most bytes (see [`Logged::weight`]) the applier moves to LMDB in one transaction:
/// under a backlog (a bootstrap), a commit rewrites every index page that random inserts
/// touch, so four commits of 64 MiB write far less than sixteen of 16 MiB (BENCHMARKS.md).
pub(super) const APPLY_BYTES: usize = 64 << 20;
/// The applier lets writes accumulate this long (unless a reader waits): LMDB rewrites
/// every B-tree page a commit touches (under random writes, most of `kv` and of the
/// history's index),
/// so fewer, larger commits write far fewer pages: 100 ms wrote about 4x the bytes
/// per second (BENCHMARKS.md).
pub(super) const APPLY_DELAY: Duration = Duration::from_millis(1000);
/// The delay during a bulk load (LMDB's indexes deferred): its commits only append, so
/// waiting saves nothing, and whatever waits must be applied when the load ends, before
/// the indexes can be built.
pub(super) const BULK_APPLY_DELAY: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(super) struct Pending {
    /// Accepted versions (in the WAL) not yet in LMDB, in WAL order, with their seqs.
    pub(super) queue: VecDeque<(u64, Logged)>,
    /// The weight of `queue`.
    pub(super) queued_bytes: usize,
    /// The newest accepted version of each key in `queue`, with its seq.
    pub(super) latest: HashMap<String, (u64, Arc<Version>)>,
    /// The last seq acknowledged to a writer.
    pub(super) accepted: u64,
    /// The last seq committed to LMDB.
    pub(super) applied: u64,
    /// A reader waits for the applier: apply now rather than after [`APPLY_DELAY`].
    pub(super) hurry: bool,
    pub(super) stopping: bool,
    /// Why LMDB refused the applier's last commit, until one succeeds (a full disk):
    /// readers that would wait for the applier get it as an error instead.
    pub(super) failing: Option<StoreError>,
}

pub(super) struct Shared {
    pub(super) pending: Mutex<Pending>,
    /// Signals the applier that work arrived or that it should stop.
    pub(super) work: Condvar,
    /// Signals readers waiting for the applier.
    pub(super) applied: Condvar,
    /// The most bytes per commit ([`APPLY_BYTES`] but in tests); writers wait while
    /// more than twice this is accepted but not yet in LMDB.
    pub(super) apply_bytes: usize,
    /// Records the audit chain's head with the entries, while the trail is on.
    pub(super) audit: Option<HeadRecorder>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits for accepted writes and takes the next batch for LMDB: after `delay`
/// ([`APPLY_DELAY`] or [`BULK_APPLY_DELAY`]), or at once when a reader waits, the batch
/// is full, or the store stops. `None` when the store stops with nothing left.
pub(super) fn next_batch(shared: &Shared, delay: Duration) -> Option<Vec<(u64, Logged)>> {
    let mut pending = shared.lock();
    while pending.queue.is_empty() && !pending.stopping {
        pending = shared
            .work
            .wait(pending)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if pending.queue.is_empty() {
        return None;
    }
    let deadline = Instant::now() + delay;
    while !pending.hurry
        && !pending.stopping
        && pending.queue.len() < APPLY_BATCH
        && pending.queued_bytes < shared.apply_bytes
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        pending = shared
            .work
            .wait_timeout(pending, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    pending.hurry = false;
    let (mut take, mut bytes) = (0, 0);
    for (_, item) in pending.queue.iter().take(APPLY_BATCH) {
        if take > 0 && bytes + item.weight() > shared.apply_bytes {
            break;
        }
        take += 1;
        bytes += item.weight();
    }
    pending.queued_bytes -= bytes;
    Some(pending.queue.drain(..take).collect())
}

pub(super) fn apply_loop(lmdb: &LmdbStore, shared: &Shared, log: &Mutex<Log>) {
    // LMDB runs without meta-page fsyncs: a system crash may undo its last commit, so the
    // log keeps a commit's records until the next commit has landed.
    let mut durable_through = 0;
    loop {
        let delay = if lmdb.indexes_deferred() {
            BULK_APPLY_DELAY
        } else {
            APPLY_DELAY
        };
        let Some(batch) = next_batch(shared, delay) else {
            return;
        };
        let last_seq = batch.last().map_or(0, |(seq, _)| *seq);
        let staged: Vec<Logged> = batch.into_iter().map(|(_, item)| item).collect();
        let seal = shared.audit.as_ref().map(|recorder| &recorder.seal);
        let sealed = match lmdb.apply_logged(&staged, seal, last_seq) {
            Ok(sealed) => sealed,
            Err(error) => {
                let mut pending = shared.lock();
                let seqs = (last_seq + 1 - staged.len() as u64)..=last_seq;
                for (seq, staged) in seqs.rev().zip(staged.into_iter().rev()) {
                    pending.queued_bytes += staged.weight();
                    pending.queue.push_front((seq, staged));
                }
                if pending.stopping {
                    // Nothing is lost: the write-ahead log keeps what is not in LMDB
                    // (`close` sees the queue and keeps the log) for the next start.
                    // Retrying would hold the stop for as long as the cause lasts (a
                    // full disk).
                    tracing::error!(%error, "moving writes to LMDB failed while stopping; the write-ahead log keeps them for the next start");
                    return;
                }
                tracing::error!(%error, "moving writes to LMDB failed; retrying");
                pending.failing = Some(error);
                drop(pending);
                shared.applied.notify_all();
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let (Some(recorder), Some(sealed)) = (&shared.audit, sealed) {
            recorder.committed(&sealed);
        }
        {
            let mut pending = shared.lock();
            pending.applied = last_seq;
            pending.failing = None;
            pending.latest.retain(|_, (seq, _)| *seq > last_seq);
        }
        shared.applied.notify_all();
        let released = log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wal
            .release_through(durable_through);
        wal::remove_segments(released);
        durable_through = last_seq;
    }
}
