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
//! every acknowledged write, and none that is not yet durable.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvs_sync::{
    AuditEntry, AuditVerdict, GENESIS_HASH, ListPage, PurgeStats, Store, StoreError, StoreOptions,
    StoreStats, Version, WriteOp, WriteOutcome, WriteRejected, plan_write,
};

use super::lmdb::{Logged, Staged};
use super::wal::{self, Wal, WalError};
use super::{LmdbStore, record};

/// The most versions the applier moves to LMDB in one transaction.
const APPLY_BATCH: usize = 65536;
/// The applier lets writes accumulate this long (unless a reader waits): LMDB rewrites
/// every B-tree page a commit touches (under random writes, most of the history table),
/// so fewer, larger commits write far fewer pages: 100 ms wrote about 4x the bytes
/// per second (BENCHMARKS.md).
const APPLY_DELAY: Duration = Duration::from_millis(1000);

#[derive(Default)]
struct Pending {
    /// Accepted versions (in the WAL) not yet in LMDB, in WAL order, with their seqs.
    queue: VecDeque<(u64, Logged)>,
    /// The newest accepted version of each key in `queue`, with its seq.
    latest: HashMap<String, (u64, Version)>,
    /// The last seq acknowledged to a writer.
    accepted: u64,
    /// The last seq committed to LMDB.
    applied: u64,
    /// A reader waits for the applier: apply now rather than after [`APPLY_DELAY`].
    hurry: bool,
    stopping: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signals the applier that work arrived or that it should stop.
    work: Condvar,
    /// Signals readers waiting for the applier.
    applied: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Log {
    wal: Wal,
    next_seq: u64,
    /// The audit chain's head, while the audit trail is on.
    audit: Option<AuditHead>,
    /// Items written to the WAL but not yet durable, in seq order.
    unsynced: VecDeque<(u64, Logged)>,
    /// The newest version of each key in `unsynced`, with its seq: what later batches
    /// are planned against.
    unsynced_latest: HashMap<String, (u64, Version)>,
    /// Set when the log can no longer be trusted (a failed fsync, a write that could not
    /// be undone): every later write is refused until a restart replays the log.
    broken: Option<String>,
}

/// Who makes the log durable.
struct Durability {
    /// Every item with a seq up to this is durable (and published).
    synced_through: u64,
    /// A caller is running an fsync.
    syncing: bool,
}

/// Where the audit chain continues.
struct AuditHead {
    next_seq: u64,
    last_hash: String,
}

impl AuditHead {
    /// Chains an entry for accepted `op`.
    fn append(&mut self, op: &WriteOp, now_ms: u64) -> AuditEntry {
        let entry = AuditEntry::for_op(self.next_seq, now_ms, op, &self.last_hash);
        self.next_seq += 1;
        self.last_hash.clone_from(&entry.hash);
        entry
    }

    /// Forgets the entries of a batch that was not logged.
    fn rewind(&mut self, batch: &[(u64, Logged)]) {
        let first = batch.iter().find_map(|(_, item)| match item {
            Logged::Audit(entry) => Some(entry),
            Logged::Version(_) => None,
        });
        if let Some(first) = first {
            self.next_seq = first.seq;
            self.last_hash.clone_from(&first.prev_hash);
        }
    }
}

/// Items of one write batch being prepared under the log lock.
struct Batch<'a> {
    first_seq: u64,
    /// The newest version of each key this batch changes.
    in_batch: HashMap<&'a str, Version>,
    accepted: Vec<(u64, Logged)>,
}

impl<'a> Batch<'a> {
    fn new(first_seq: u64) -> Self {
        Self {
            first_seq,
            in_batch: HashMap::new(),
            accepted: Vec::new(),
        }
    }

    /// The version of `key` held once the batch's earlier items and every staged batch
    /// apply.
    fn held(
        &self,
        store: &DurableStore,
        log: &Log,
        key: &str,
    ) -> Result<Option<Version>, StoreError> {
        if let Some(version) = self.in_batch.get(key) {
            return Ok(Some(version.clone()));
        }
        if let Some((_, version)) = log.unsynced_latest.get(key) {
            return Ok(Some(version.clone()));
        }
        store.held(key)
    }

    fn add(&mut self, item: Logged) {
        let seq = self.first_seq + self.accepted.len() as u64;
        self.accepted.push((seq, item));
    }

    fn add_version(
        &mut self,
        key: &'a str,
        version: &Version,
        compress_from: Option<usize>,
    ) -> Result<(), StoreError> {
        let record = record::encode(version, compress_from)?;
        self.in_batch.insert(key, version.clone());
        self.add(Logged::Version(Staged {
            key: key.to_owned(),
            version: version.clone(),
            record,
        }));
        Ok(())
    }
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
    compress_from: Option<usize>,
    /// Whether accepted writes append to the audit trail.
    audit: bool,
}

impl DurableStore {
    /// Opens the store in `dir`, replaying any WAL left by an earlier run into LMDB;
    /// with `audit`, every accepted write also appends to the audit trail.
    pub fn open(dir: &Path, options: StoreOptions, audit: bool) -> Result<Self, StoreError> {
        let lmdb = Arc::new(LmdbStore::open_behind_log(dir, options)?);
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", wal_dir.display())))?;
        let recovered = wal::recover(&wal_dir)?;
        let last_seq = recovered.last().map_or(0, |r| r.seq);
        if !recovered.is_empty() {
            tracing::info!(records = recovered.len(), "replaying the write-ahead log");
            let items: Vec<Logged> = recovered.into_iter().map(|r| r.item).collect();
            for chunk in items.chunks(APPLY_BATCH) {
                lmdb.apply_logged(chunk)?;
            }
            lmdb.sync()?;
        }
        let audit_enabled = audit;
        let audit = match audit {
            false => None,
            true => Some(match lmdb.last_audit_entry()? {
                Some(last) => AuditHead {
                    next_seq: last.seq + 1,
                    last_hash: last.hash,
                },
                None => AuditHead {
                    next_seq: 1,
                    last_hash: GENESIS_HASH.to_owned(),
                },
            }),
        };
        let log = Log {
            wal: Wal::start(&wal_dir, last_seq + 1)?,
            next_seq: last_seq + 1,
            audit,
            unsynced: VecDeque::new(),
            unsynced_latest: HashMap::new(),
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
            compress_from: options.compression_min_bytes,
            audit: audit_enabled,
        })
    }

    /// The LMDB store underneath (node facts live there).
    pub fn lmdb(&self) -> &LmdbStore {
        &self.lmdb
    }

    /// The newest accepted version of `key`, tombstones included.
    fn held(&self, key: &str) -> Result<Option<Version>, StoreError> {
        if let Some((_, version)) = self.shared.lock().latest.get(key) {
            return Ok(Some(version.clone()));
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
            return Err(StoreError::Backend(format!(
                "the write-ahead log is broken: {reason}"
            )));
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
                    .insert(staged.key.clone(), (seq, staged.version.clone()));
            }
            log.unsynced.push_back((seq, item));
        }
        Ok(log.next_seq - 1)
    }

    /// Plans `ops` in order against the newest state and writes the accepted ones to the
    /// log; returns each op's result and the seq that [`Self::make_durable`] must reach
    /// before any of them may be reported (a rejection too: it may rest on a staged
    /// write).
    pub fn stage(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<(Vec<Result<WriteOutcome, WriteRejected>>, u64), StoreError> {
        let mut log = self.lock_log();
        let mut batch = Batch::new(log.next_seq);
        match self.plan(&mut log, &mut batch, ops, now_ms) {
            Ok(results) => Ok((results, self.stage_batch(&mut log, batch)?)),
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
            batch.add_version(&op.key, &version, self.compress_from)?;
            if let Some(head) = log.audit.as_mut() {
                batch.add(Logged::Audit(head.append(op, now_ms)));
            }
            results.push(Ok(WriteOutcome { version, created }));
        }
        Ok(results)
    }

    /// Returns once every item up to `seq` is durable and visible to readers. One caller
    /// at a time runs the `fdatasync`, for everything written before it started; the
    /// others wait for it and return, or run the next one.
    pub fn make_durable(&self, seq: u64) -> Result<(), StoreError> {
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

    /// Syncs the log and publishes what became durable; returns the last durable seq.
    fn sync_log(&self) -> Result<u64, StoreError> {
        let (target, file) = {
            let log = self.lock_log();
            if let Some(reason) = &log.broken {
                return Err(StoreError::Backend(format!(
                    "the write-ahead log is broken: {reason}"
                )));
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
            log.broken = Some(reason.clone());
            return Err(StoreError::Backend(format!(
                "the write-ahead log is broken: {reason}"
            )));
        }
        let count = log
            .unsynced
            .iter()
            .take_while(|(seq, _)| *seq <= target)
            .count();
        let durable: Vec<(u64, Logged)> = log.unsynced.drain(..count).collect();
        log.unsynced_latest.retain(|_, (seq, _)| *seq > target);
        // Published under the log's lock, so that planners find each item either staged
        // or in the overlay.
        self.publish(durable);
        Ok(target)
    }

    /// Hands logged items to readers (the overlay) and to the applier.
    fn publish(&self, accepted: Vec<(u64, Logged)>) {
        let Some(&(last, _)) = accepted.last() else {
            return;
        };
        let mut pending = self.shared.lock();
        pending.accepted = last;
        for (seq, item) in accepted {
            if let Logged::Version(staged) = &item {
                pending
                    .latest
                    .insert(staged.key.clone(), (seq, staged.version.clone()));
            }
            pending.queue.push_back((seq, item));
        }
        drop(pending);
        self.shared.work.notify_one();
    }

    /// Waits until LMDB holds every write acknowledged before this call.
    fn caught_up(&self) {
        let mut pending = self.shared.lock();
        let target = pending.accepted;
        if pending.applied < target {
            pending.hurry = true;
            self.shared.work.notify_all();
        }
        while pending.applied < target && !pending.stopping {
            pending = self
                .shared
                .applied
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes a consistent snapshot holding every write acknowledged before this call to
    /// a new file at `path` (an LMDB data file); returns its bytes and keys.
    pub fn backup_to(&self, path: &Path) -> Result<(u64, u64), StoreError> {
        self.caught_up();
        self.lmdb.copy_to(path)
    }

    /// Audit entries from `since_seq` on, at most `limit`; `None` when the trail is off.
    pub fn audit_entries(
        &self,
        since_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        if !self.audit {
            return Ok(None);
        }
        self.caught_up();
        self.lmdb.audit_entries(since_seq, limit).map(Some)
    }

    /// Checks the audit chain; `None` when the trail is off.
    pub fn verify_audit(&self) -> Result<Option<AuditVerdict>, StoreError> {
        if !self.audit {
            return Ok(None);
        }
        self.caught_up();
        self.lmdb.verify_audit().map(Some)
    }

    /// Stops the applier once it has moved everything to LMDB, flushes LMDB, and empties
    /// the write-ahead log (LMDB now holds all of it durably).
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
        let durable = self.make_durable(staged);
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
        let _ = applier.join();
        self.lmdb.sync()?;
        // A log that could not be made durable stays for the next start to replay.
        durable?;
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

/// Waits for accepted writes and takes the next batch for LMDB: after [`APPLY_DELAY`],
/// or at once when a reader waits, the batch is full, or the store stops. `None` when the
/// store stops with nothing left.
fn next_batch(shared: &Shared) -> Option<Vec<(u64, Logged)>> {
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
    let deadline = Instant::now() + APPLY_DELAY;
    while !pending.hurry && !pending.stopping && pending.queue.len() < APPLY_BATCH {
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
    let take = pending.queue.len().min(APPLY_BATCH);
    Some(pending.queue.drain(..take).collect())
}

fn apply_loop(lmdb: &LmdbStore, shared: &Shared, log: &Mutex<Log>) {
    // LMDB runs without meta-page fsyncs: a system crash may undo its last commit, so the
    // log keeps a commit's records until the next commit has landed.
    let mut durable_through = 0;
    loop {
        let Some(batch) = next_batch(shared) else {
            return;
        };
        let last_seq = batch.last().map_or(0, |(seq, _)| *seq);
        let staged: Vec<Logged> = batch.into_iter().map(|(_, item)| item).collect();
        if let Err(error) = lmdb.apply_logged(&staged) {
            tracing::error!(%error, "moving writes to LMDB failed; retrying");
            let mut pending = shared.lock();
            let seqs = (last_seq + 1 - staged.len() as u64)..=last_seq;
            for (seq, staged) in seqs.rev().zip(staged.into_iter().rev()) {
                pending.queue.push_front((seq, staged));
            }
            drop(pending);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        {
            let mut pending = shared.lock();
            pending.applied = last_seq;
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

impl Store for DurableStore {
    fn write_batch(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError> {
        let (results, through) = self.stage(ops, now_ms)?;
        self.make_durable(through)?;
        Ok(results)
    }

    fn get(&self, key: &str) -> Result<Option<Version>, StoreError> {
        self.held(key)
    }

    /// The overlay under one lock, then LMDB in one read transaction for the rest.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Version>>, StoreError> {
        let mut found: Vec<Option<Version>> = {
            let pending = self.shared.lock();
            keys.iter()
                .map(|key| pending.latest.get(key).map(|(_, v)| v.clone()))
                .collect()
        };
        let missing: Vec<String> = keys
            .iter()
            .zip(&found)
            .filter(|(_, held)| held.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let mut from_lmdb = self.lmdb.get_many(&missing)?.into_iter();
        for held in found.iter_mut().filter(|held| held.is_none()) {
            *held = from_lmdb.next().flatten();
        }
        Ok(found)
    }

    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        let mut log = self.lock_log();
        let mut batch = Batch::new(log.next_seq);
        // What each key holds outside this batch, read in one pass (a bootstrap merges
        // thousands of versions per call).
        let keys: Vec<String> = versions.iter().map(|(key, _)| key.clone()).collect();
        let mut outside = self.get_many(&keys)?;
        for (held, key) in outside.iter_mut().zip(&keys) {
            if let Some((_, staged)) = log.unsynced_latest.get(key) {
                *held = Some(staged.clone());
            }
        }
        for ((key, version), outside) in versions.iter().zip(outside) {
            let held = batch.in_batch.get(key.as_str()).cloned().or(outside);
            if held.as_ref().is_none_or(|h| version.supersedes(h)) {
                batch.add_version(key, version, self.compress_from)?;
            }
        }
        let stored = batch.accepted.len();
        let through = self.stage_batch(&mut log, batch)?;
        drop(log);
        self.make_durable(through)?;
        Ok(stored)
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        self.caught_up();
        self.lmdb.list(prefix, after, limit, now_ms)
    }

    fn list_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        self.caught_up();
        self.lmdb.list_since(since_ms, after, limit, now_ms)
    }

    fn history(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        self.caught_up();
        self.lmdb.history(key)
    }

    fn purge(&self, now_ms: u64, tombstone_ttl_ms: u64) -> Result<PurgeStats, StoreError> {
        self.caught_up();
        self.lmdb.purge(now_ms, tombstone_ttl_ms)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.caught_up();
        self.lmdb.stats()
    }

    /// The tree of every write acknowledged before this call (the applier is hurried).
    fn merkle(&self) -> Result<kvs_sync::MerkleTree, StoreError> {
        self.caught_up();
        self.lmdb.merkle()
    }

    fn leaf_entries(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, kvs_sync::VersionId)>, StoreError> {
        self.caught_up();
        self.lmdb.leaf_entries(leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    kvs_sync::store_conformance_tests!(|options| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DurableStore::open(dir.path(), options, true).expect("open store");
        (dir, store)
    });

    fn put(key: &str, data: &str) -> WriteOp {
        WriteOp {
            key: key.into(),
            mutation: kvs_sync::Mutation::Put {
                data: data.into(),
                ttl_ms: None,
            },
            precondition: kvs_sync::Precondition::None,
            uuid: uuid::Uuid::new_v4(),
            origin_joined_at: 1,
            owner: None,
            group: None,
            permissions: 0xf31,
            actor: None,
        }
    }

    #[test]
    fn staged_writes_are_planned_on_but_read_only_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        let (results, through) = store.stage(&[put("k", "1")], 10).unwrap();
        assert!(results[0].as_ref().unwrap().created);
        assert_eq!(store.get("k").unwrap(), None, "not durable yet");
        let mut create = put("k", "2");
        create.precondition = kvs_sync::Precondition::IfAbsent;
        let (results, later) = store.stage(&[create, put("k", "3")], 10).unwrap();
        assert_eq!(results[0], Err(WriteRejected::PreconditionFailed));
        let overwrite = results[1].as_ref().unwrap();
        assert!(!overwrite.created);
        assert!(
            overwrite.version.id.timestamp > 10,
            "the causal rule saw the staged write"
        );
        assert!(later > through);
        // One sync covers everything staged before it, the later batch too.
        store.make_durable(through).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().data.as_deref(), Some("3"));
        store.make_durable(later).unwrap();
        assert_eq!(store.history("k").unwrap().len(), 2);
    }

    #[test]
    fn concurrent_writers_each_read_their_write_and_all_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store =
                Arc::new(DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap());
            let writers: Vec<_> = (0..8)
                .map(|w| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        for i in 0..100 {
                            let key = format!("w{w}/{i}");
                            let done = store.write_batch(&[put(&key, "1")], 10).unwrap();
                            assert!(done[0].is_ok());
                            assert!(store.get(&key).unwrap().is_some(), "read after ack");
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
        }
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        assert_eq!(store.list("", None, 1000, 20).unwrap().items.len(), 800);
        assert_eq!(
            store.verify_audit().unwrap(),
            Some(AuditVerdict::Intact { entries: 800 })
        );
    }

    #[test]
    fn a_broken_log_refuses_every_write_and_is_kept_for_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        store.write_batch(&[put("kept", "1")], 10).unwrap();
        let (_, through) = store.stage(&[put("unsure", "2")], 11).unwrap();
        // As after a failed fdatasync: what the log holds of "unsure" is unknown.
        store.lock_log().broken = Some("fdatasync failed: test".into());
        assert!(store.make_durable(through).is_err());
        assert_eq!(store.get("unsure").unwrap(), None, "never acknowledged");
        let refused = store.write_batch(&[put("k", "3")], 12).unwrap_err();
        assert!(refused.to_string().contains("broken"), "{refused}");
        let version = plan_write(None, &put("pushed", "4"), 13).unwrap();
        assert!(store.merge(&[("pushed".into(), version)]).is_err());
        assert!(store.close().is_err(), "the log is not discarded");
        drop(store);
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        assert!(store.get("kept").unwrap().is_some());
        assert_eq!(store.get("k").unwrap(), None);
        assert_eq!(store.get("pushed").unwrap(), None);
    }

    #[test]
    fn a_replayed_log_restores_writes_lmdb_never_saw() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        let first = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        first.write_batch(&[put("kept", "1")], 10).unwrap();
        drop(first);
        // A log written as if the process died before the applier ran.
        let orphan = plan_write(None, &put("orphan", "2"), 20).unwrap();
        let mut wal = Wal::start(&wal_dir, 100).unwrap();
        wal.append(&[(100, &Logged::Version(staged_as("orphan", &orphan)))])
            .unwrap();
        drop(wal);
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        assert_eq!(store.get("orphan").unwrap(), Some(orphan));
        assert_eq!(
            store.get("kept").unwrap().unwrap().data.as_deref(),
            Some("1")
        );
        let later = store.write_batch(&[put("next", "3")], 30).unwrap();
        assert!(later[0].is_ok());
        assert_eq!(store.list("", None, 10, 40).unwrap().items.len(), 3);
    }

    fn staged(version: &Version) -> Staged {
        staged_as("k", version)
    }

    fn staged_as(key: &str, version: &Version) -> Staged {
        Staged {
            key: key.into(),
            version: version.clone(),
            record: record::encode(version, None).unwrap(),
        }
    }

    #[test]
    fn replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        std::fs::create_dir_all(&wal_dir).unwrap();
        let v1 = plan_write(None, &put("k", "1"), 10).unwrap();
        let v2 = plan_write(Some(&v1), &put("k", "2"), 10).unwrap();
        {
            let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
            store
                .lmdb()
                .apply_logged(&[Logged::Version(staged(&v1)), Logged::Version(staged(&v2))])
                .unwrap();
        }
        let mut wal = Wal::start(&wal_dir, 1).unwrap();
        wal.append(&[
            (1, &Logged::Version(staged(&v1))),
            (2, &Logged::Version(staged(&v2))),
        ])
        .unwrap();
        drop(wal);
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        assert_eq!(store.get("k").unwrap(), Some(v2));
        assert_eq!(
            store.history("k").unwrap().len(),
            2,
            "no duplicate revisions"
        );
    }

    #[test]
    fn the_audit_chain_continues_across_restarts_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut op = put("a", "1");
        op.actor = Some("alice".into());
        {
            let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
            store.write_batch(&[op.clone(), put("b", "2")], 10).unwrap();
            let mut failing = put("a", "3");
            failing.precondition = kvs_sync::Precondition::IfAbsent;
            store.write_batch(&[failing], 11).unwrap();
        }
        let store = DurableStore::open(dir.path(), StoreOptions::default(), true).unwrap();
        store.write_batch(&[put("a", "4")], 12).unwrap();
        let entries = store.audit_entries(1, 100).unwrap().unwrap();
        let summary: Vec<(u64, &str, &str)> = entries
            .iter()
            .map(|e| (e.seq, e.actor.as_str(), e.key.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "alice", "a"),
                (2, "anonymous", "b"),
                (3, "anonymous", "a")
            ]
        );
        assert_eq!(entries[2].prev_hash, entries[1].hash);
        assert_eq!(
            store.verify_audit().unwrap(),
            Some(AuditVerdict::Intact { entries: 3 })
        );
        assert_eq!(store.audit_entries(3, 100).unwrap().unwrap().len(), 1);
        let off = tempfile::tempdir().unwrap();
        let store = DurableStore::open(off.path(), StoreOptions::default(), false).unwrap();
        store.write_batch(&[put("a", "1")], 1).unwrap();
        assert_eq!(store.audit_entries(1, 10).unwrap(), None);
    }
}
