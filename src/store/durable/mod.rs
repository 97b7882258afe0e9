//! The node's store: LMDB behind a write-ahead log.
//!
//! A write batch is staged: planned against the newest state (durable or not) and
//! written to the WAL. It is acknowledged once an `fdatasync` that started after it has
//! returned ([`DurableStore::make_durable`]): one caller syncs at a time, for every
//! batch written before it started, while other callers (merges from peers) may stage
//! the next batches; so under load a single fsync covers whatever arrived during the
//! previous one. Durable batches go to an
//! in-memory overlay until a background applier has committed them to LMDB (whose own
//! commits cost two fsyncs, now shared by every write of the last second). Point reads
//! look at the overlay first; listings, history and purges first wait until the applier
//! has caught up with every write acknowledged before they started, so every read sees
//! every acknowledged write, and none that is not yet durable. The `Store` trait over it
//! is in `store.rs`, the applier in `applier.rs`, the log's state in `staging.rs`, the
//! audit trail's recorded head in `audit.rs`. A data dir whose LMDB file is gone while its
//! log is there is refused rather than opened as a new, empty store.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use kvs_sync::{
    AuditEntry, AuditKey, AuditVerdict, Change, Store, StoreError, StoreOptions, Version, WriteOp,
    WriteOutcome, WriteRejected, plan_write,
};

use super::LmdbStore;
use super::faults::Faults;
use super::lmdb::{APPLIED_SEQ, Logged};
use super::wal::{self, Wal, WalError};

mod applier;
mod audit;
mod lost_store;
mod room;
mod staging;
mod store;

use self::applier::{APPLY_BATCH, APPLY_BYTES, Pending, Shared, apply_loop};
use self::audit::Audit;
pub(crate) use self::audit::write_head_file as write_audit_head;
use self::lost_store::refuse_a_lost_data_file;
use self::room::replay_failed;
use self::staging::{Batch, Durability, Log};
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;

/// Changes a watcher may fall behind before it is told it lagged (and must resume);
/// the buffer holds their values, so it stays small (1,024 values of at most
/// `max_value_bytes`).
const WATCH_BUFFER: usize = 1024;

/// The error of every write once the log is broken (see `Log::broken`).
fn broken_log(reason: &str) -> StoreError {
    StoreError::Backend(format!("the write-ahead log is broken: {reason}"))
}

/// LMDB with a write-ahead log and a background applier; see the module doc.
pub struct DurableStore {
    lmdb: Arc<LmdbStore>,
    shared: Arc<Shared>,
    log: Arc<Mutex<Log>>,
    durability: Mutex<Durability>,
    /// Signals callers of [`Self::make_durable`] that a sync finished.
    synced: Condvar,
    applier: Mutex<Option<JoinHandle<()>>>,
    /// The data dir: the disk whose free space bounds what the log takes.
    dir: PathBuf,
    compress_from: Option<usize>,
    /// The audit trail's key and head file, while accepted writes append to it.
    audit: Option<Audit>,
    /// Every version as it becomes visible (see [`Self::watch`]).
    changes: tokio::sync::broadcast::Sender<Change>,
    /// The changes sent to `changes` lately, for a watcher's exact resume.
    arrivals: kvs_sync::Arrivals,
    /// Versions of reserved keys made visible (see [`Store::reserved_changes`]).
    reserved_changes: std::sync::atomic::AtomicU64,
}

impl DurableStore {
    /// Opens the store in `dir`, replaying any WAL left by an earlier run into LMDB;
    /// with an audit key, every accepted write also appends to the audit trail, chained
    /// under that key.
    pub fn open(
        dir: &Path,
        options: StoreOptions,
        audit: Option<AuditKey>,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, options, audit, APPLY_BYTES, Arc::default())
    }

    /// [`Self::open`] with the write-ahead log's file operations failing as `faults`
    /// plans (the simulator's storage faults; empty in the node).
    pub fn open_with_faults(
        dir: &Path,
        options: StoreOptions,
        audit: Option<AuditKey>,
        faults: Arc<Faults>,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, options, audit, APPLY_BYTES, faults)
    }

    /// [`Self::open`] with commits of at most `apply_bytes` (see `applier.rs`), the
    /// write-ahead log's file operations failing as `faults` plans.
    fn open_with(
        dir: &Path,
        options: StoreOptions,
        audit: Option<AuditKey>,
        apply_bytes: usize,
        faults: Arc<Faults>,
    ) -> Result<Self, StoreError> {
        let wal_dir = dir.join("wal");
        refuse_a_lost_data_file(dir, &wal_dir)?;
        let lmdb = Arc::new(LmdbStore::open_behind_log(dir, options)?);
        crate::private_files::create_dir(&wal_dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", wal_dir.display())))?;
        // The log keeps records LMDB already holds (its segment is released only once
        // full and applied). Those are not replayed: LMDB may have moved past them by
        // what never went through the log (a session's merge), and a version replayed
        // after its key's tombstone was purged would bring the key back.
        let applied = lmdb.meta_u64(APPLIED_SEQ)?.unwrap_or(0);
        let recovered: Vec<wal::Recovered> = wal::recover(&wal_dir)?
            .into_iter()
            .filter(|r| r.seq > applied)
            .collect();
        let last_seq = recovered.last().map_or(applied, |r| r.seq);
        if !recovered.is_empty() {
            tracing::info!(records = recovered.len(), "replaying the write-ahead log");
            let (seqs, items): (Vec<u64>, Vec<Logged>) =
                recovered.into_iter().map(|r| (r.seq, r.item)).unzip();
            let replay = || {
                for (chunk, seqs) in items.chunks(APPLY_BATCH).zip(seqs.chunks(APPLY_BATCH)) {
                    lmdb.apply_logged(chunk, None, seqs.last().copied().unwrap_or(0))?;
                }
                lmdb.sync()
            };
            replay().map_err(|error| replay_failed(&error, dir, &items))?;
        }
        let (audit, head, recorder) = match audit {
            None => (None, None, None),
            Some(key) => {
                let (audit, head, recorder) = audit::open(&lmdb, dir, &key)?;
                (Some(audit), Some(head), Some(recorder))
            }
        };
        let log = Log {
            wal: Wal::start_with(&wal_dir, last_seq + 1, faults)?,
            next_seq: last_seq + 1,
            audit: head,
            unsynced: VecDeque::new(),
            unsynced_bytes: 0,
            unsynced_latest: HashMap::new(),
            unsettled: VecDeque::new(),
            broken: None,
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                accepted: last_seq,
                applied: last_seq,
                ..Pending::default()
            }),
            work: Condvar::new(),
            applied: Condvar::new(),
            apply_bytes,
            audit: recorder,
        });
        let log = Arc::new(Mutex::new(log));
        let applier = {
            let (lmdb, shared, log) = (Arc::clone(&lmdb), Arc::clone(&shared), Arc::clone(&log));
            std::thread::Builder::new()
                .name("kvs-apply".into())
                .spawn(move || apply_loop(&lmdb, &shared, &log))
                .map_err(|e| StoreError::Backend(format!("starting the applier: {e}")))?
        };
        Ok(Self {
            lmdb,
            shared,
            log,
            durability: Mutex::new(Durability {
                synced_through: last_seq,
                syncing: false,
            }),
            synced: Condvar::new(),
            applier: Mutex::new(Some(applier)),
            dir: dir.to_path_buf(),
            compress_from: options.compression_min_bytes,
            audit,
            changes: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
            arrivals: kvs_sync::Arrivals::with_random_tag(),
            reserved_changes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Every version from now on as it becomes visible to readers (a write, a merge from a
    /// peer, an expiry), in the order readers see them. A receiver that falls more than
    /// [`WATCH_BUFFER`] changes behind is told it lagged; writers never wait for one.
    /// From the first watcher on, the changes are also kept in [`Self::arrivals`].
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
        // Under the overlay's lock, which publishing holds: a change is built for the
        // first watcher from the first publication after it subscribed.
        let _publishing = self.shared.lock();
        self.arrivals.start();
        self.changes.subscribe()
    }

    /// The changes sent to watchers lately, in their order (a watcher's exact resume).
    pub fn arrivals(&self) -> &kvs_sync::Arrivals {
        &self.arrivals
    }

    /// Sends `change` to the watchers and keeps it in [`Self::arrivals`].
    fn send_change(&self, change: Change) {
        self.arrivals.record(change, |change| {
            if self.changes.receiver_count() > 0 {
                let _ = self.changes.send(change.clone());
            }
        });
    }

    /// The LMDB store underneath (node facts live there).
    pub fn lmdb(&self) -> &LmdbStore {
        &self.lmdb
    }

    /// The newest accepted version of `key`, tombstones included.
    fn held(&self, key: &str) -> Result<Option<Version>, StoreError> {
        if let Some((_, version)) = self.shared.lock().latest.get(key) {
            return Ok(Some(Version::clone(version)));
        }
        self.lmdb.get(key)
    }

    fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `batch` to the write-ahead log (not yet durably) and advances the log's
    /// seq; returns the last seq written so far. On failure nothing of the batch was
    /// logged and the audit chain continues where it was.
    fn stage_batch(&self, log: &mut Log, batch: Batch<'_>) -> Result<u64, StoreError> {
        if let Some(reason) = &log.broken {
            return Err(broken_log(reason));
        }
        if let Err(error) = self.check_room(log, &batch.accepted) {
            if let Some(head) = log.audit.as_mut() {
                head.rewind(&batch.accepted);
            }
            return Err(error);
        }
        let records: Vec<(u64, &Logged)> = batch
            .accepted
            .iter()
            .map(|(seq, item)| (*seq, item))
            .collect();
        if let Err(error) = log.wal.write(&records) {
            if let Some(head) = log.audit.as_mut() {
                head.rewind(&batch.accepted);
            }
            if let WalError::Broken(error) = &error {
                log.broken = Some(error.to_string());
            }
            return Err(error.into_store_error());
        }
        log.next_seq += batch.accepted.len() as u64;
        for (seq, item) in batch.accepted {
            if let Logged::Version(staged) = &item {
                log.unsynced_latest
                    .insert(staged.key.clone(), (seq, Arc::clone(&staged.version)));
            }
            log.unsynced_bytes += item.weight();
            log.unsynced.push_back((seq, item));
        }
        Ok(log.next_seq - 1)
    }

    /// Plans `ops` in order against the newest state and writes the accepted ones to the
    /// log; returns each op's result and the seq that [`Self::make_durable`] must reach
    /// before any of them may be reported (a rejection too: it may rest on a staged
    /// write).
    ///
    /// The time the writes are stamped at is read from `clock` under the log's lock, so
    /// that a write stamped before [`Store::unsettled_since`] is read is either shown by
    /// then or counted by it.
    pub fn stage(
        &self,
        ops: &[WriteOp],
        clock: impl FnOnce() -> u64,
    ) -> Result<(Vec<Result<WriteOutcome, WriteRejected>>, u64), StoreError> {
        let mut log = self.lock_log();
        let now_ms = clock();
        let mut batch = Batch::new(log.next_seq);
        match self.plan(&mut log, &mut batch, ops, now_ms) {
            Ok(results) => {
                let through = self.stage_batch(&mut log, batch)?;
                if log.unsettled.back().is_none_or(|&(last, _)| last < through) {
                    log.unsettled.push_back((through, now_ms));
                }
                Ok((results, through))
            }
            Err(error) => {
                if let Some(head) = log.audit.as_mut() {
                    head.rewind(&batch.accepted);
                }
                Err(error)
            }
        }
    }

    /// Adds the accepted `ops` to `batch`, with their audit entries.
    fn plan<'a>(
        &self,
        log: &mut Log,
        batch: &mut Batch<'a>,
        ops: &'a [WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let held = batch.held(self, log, &op.key)?;
            let created = !held.as_ref().is_some_and(|v| v.is_live(now_ms));
            let version = match plan_write(held.as_ref(), op, now_ms) {
                Ok(version) => version,
                Err(rejected) => {
                    results.push(Err(rejected));
                    continue;
                }
            };
            // The audit entry goes first: a crash that cuts the append between the two
            // leaves an entry for a write that never happened (it was not acknowledged),
            // never a write without its entry.
            if let Some(head) = log.audit.as_mut() {
                batch.add(Logged::Audit(head.append(op, now_ms)));
            }
            batch.add_version(&op.key, &version, self.compress_from)?;
            results.push(Ok(WriteOutcome { version, created }));
        }
        Ok(results)
    }

    /// Returns once every item up to `seq` is durable and visible to readers, and the
    /// applier's backlog has room (see [`Self::wait_for_room`]).
    pub fn make_durable(&self, seq: u64) -> Result<(), StoreError> {
        self.sync_through(seq)?;
        self.wait_for_room();
        Ok(())
    }

    /// Returns once every item up to `seq` is durable and visible to readers. One caller
    /// at a time runs the `fdatasync`, for everything written before it started; the
    /// others wait for it and return, or run the next one.
    fn sync_through(&self, seq: u64) -> Result<(), StoreError> {
        let mut durability = self
            .durability
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if durability.synced_through >= seq {
                return Ok(());
            }
            if !durability.syncing {
                break;
            }
            durability = self
                .synced
                .wait(durability)
                .unwrap_or_else(PoisonError::into_inner);
        }
        durability.syncing = true;
        drop(durability);
        let synced = self.sync_log();
        let mut durability = self
            .durability
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        durability.syncing = false;
        if let Ok(through) = synced {
            durability.synced_through = through;
        }
        drop(durability);
        self.synced.notify_all();
        // The sync covered everything staged before this call, `seq` included.
        synced.map(|_| ())
    }

    /// Waits while the applier's backlog is above two commits' worth (backpressure on
    /// writers and merges, so that a bootstrap cannot outrun LMDB in memory).
    fn wait_for_room(&self) {
        let mut pending = self.shared.lock();
        while pending.queued_bytes > 2 * self.shared.apply_bytes && !pending.stopping {
            pending = self
                .shared
                .applied
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Syncs the log and publishes what became durable; returns the last durable seq.
    fn sync_log(&self) -> Result<u64, StoreError> {
        let (target, file) = {
            let log = self.lock_log();
            if let Some(reason) = &log.broken {
                return Err(broken_log(reason));
            }
            (log.next_seq - 1, log.wal.sync_handle())
        };
        let synced = file.sync_data();
        let mut log = self.lock_log();
        if let Err(error) = synced {
            // What the kernel did with the unsynced pages is unknown: refuse everything
            // from here on; a restart replays whatever the log really holds.
            let reason = format!("fdatasync failed: {error}");
            tracing::error!(%reason, "the write-ahead log is broken; writes are refused");
            let error = broken_log(&reason);
            log.broken = Some(reason);
            return Err(error);
        }
        let count = log
            .unsynced
            .iter()
            .take_while(|(seq, _)| *seq <= target)
            .count();
        let durable: Vec<(u64, Logged)> = log.unsynced.drain(..count).collect();
        log.unsynced_bytes -= durable.iter().map(|(_, item)| item.weight()).sum::<usize>();
        log.unsynced_latest.retain(|_, (seq, _)| *seq > target);
        while log
            .unsettled
            .front()
            .is_some_and(|&(last, _)| last <= target)
        {
            log.unsettled.pop_front();
        }
        // Published under the log's lock, so that planners find each item either staged
        // or in the overlay.
        self.publish(durable);
        Ok(target)
    }

    /// Whether `key` read as absent before the version being published (`latest`: the
    /// overlay, then LMDB): nothing held, or a tombstone. An expired value not purged
    /// yet counts as held: its purge has not told readers it expired.
    fn was_absent(&self, latest: &HashMap<String, (u64, Arc<Version>)>, key: &str) -> bool {
        match latest.get(key) {
            Some((_, version)) => version.is_tombstone(),
            None => self
                .lmdb
                .get(key)
                .ok()
                .flatten()
                .is_none_or(|version| version.is_tombstone()),
        }
    }

    /// Hands logged items to readers (the overlay) and to the applier.
    fn publish(&self, accepted: Vec<(u64, Logged)>) {
        let Some(&(last, _)) = accepted.last() else {
            return;
        };
        let mut pending = self.shared.lock();
        // Changes are built once someone watches (and kept for resumes from then on).
        let watched = self.arrivals.recording();
        pending.accepted = last;
        for (seq, item) in accepted {
            if let Logged::Version(staged) = &item {
                if staged.key.starts_with('_') {
                    self.reserved_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                }
                // A tombstone over nothing (a delete of a key never held, or of one
                // deleted already) changes nothing a reader sees: no change to watch.
                let seen = || {
                    !staged.version.is_tombstone() || !self.was_absent(&pending.latest, &staged.key)
                };
                if watched && seen() {
                    // Sent under the overlay's lock, so that changes go out in the order
                    // readers see them.
                    self.send_change(Change {
                        key: staged.key.clone(),
                        version: Version::clone(&staged.version),
                        expired: false,
                    });
                }
                pending
                    .latest
                    .insert(staged.key.clone(), (seq, Arc::clone(&staged.version)));
            }
            pending.queued_bytes += item.weight();
            pending.queue.push_back((seq, item));
        }
        drop(pending);
        self.shared.work.notify_one();
    }

    /// Waits until LMDB holds every write acknowledged before this call (the applier is
    /// hurried); see [`Self::wait_applied`].
    fn caught_up(&self) -> Result<(), StoreError> {
        self.wait_applied(true)
    }

    /// Waits until LMDB holds every write acknowledged before this call, the versions
    /// merged from sessions included; with `hurry`, the applier commits at once rather
    /// than at its next [`applier::APPLY_DELAY`]. While LMDB refuses the applier's
    /// commits (a full disk), fails with the reason at once rather than wait: before, a
    /// listing, the purge and the node's stop waited for as long as the disk was full.
    pub(crate) fn wait_applied(&self, hurry: bool) -> Result<(), StoreError> {
        let mut pending = self.shared.lock();
        let target = pending.accepted;
        if hurry && pending.applied < target {
            pending.hurry = true;
            self.shared.work.notify_all();
        }
        while pending.applied < target && !pending.stopping {
            if let Some(error) = &pending.failing {
                return Err(StoreError::Backend(format!(
                    "LMDB does not take the write-ahead log's records yet, which this needs: {error}"
                )));
            }
            pending = self
                .shared
                .applied
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    /// Writes a consistent snapshot holding every write acknowledged before this call to
    /// a new file at `path` (an LMDB data file); returns its bytes and keys.
    pub fn backup_to(&self, path: &Path) -> Result<(u64, u64), StoreError> {
        self.caught_up()?;
        self.lmdb.copy_to(path)
    }

    /// Audit entries from `since_seq` on, at most `limit`; `None` when the trail is off.
    pub fn audit_entries(
        &self,
        since_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        if self.audit.is_none() {
            return Ok(None);
        }
        self.caught_up()?;
        self.lmdb.audit_entries(since_seq, limit).map(Some)
    }

    /// Checks the audit chain and that it reaches its recorded head; `None` when the
    /// trail is off.
    pub fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError> {
        let Some(audit) = &self.audit else {
            return Ok(None);
        };
        self.caught_up()?;
        audit.verify(&self.lmdb).map(Some)
    }

    /// Stops the applier once it has moved everything to LMDB, flushes LMDB, and empties
    /// the write-ahead log (LMDB now holds all of it durably). When LMDB refuses the last
    /// writes (a full disk), the applier stops trying and the log is kept for the next
    /// start to replay.
    pub fn close(&self) -> Result<(), StoreError> {
        let applier = self
            .applier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(applier) = applier else {
            return Ok(());
        };
        let staged = self.lock_log().next_seq - 1;
        let durable = self.sync_through(staged);
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
        let _ = applier.join();
        self.lmdb.sync()?;
        // A log that could not be made durable stays for the next start to replay.
        durable?;
        if !self.shared.lock().queue.is_empty() {
            return Err(StoreError::Backend(
                "stopped with writes LMDB refused; the write-ahead log keeps them for the next start".into(),
            ));
        }
        let mut log = self.lock_log();
        let next_seq = log.next_seq;
        log.wal.discard_all(next_seq)
    }
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}
