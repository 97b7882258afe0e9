//! Staging: the write-ahead log's state under its lock, the audit chain's head, and the
//! batch being planned.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kvs_sync::{AuditEntry, AuditKey, StoreError, Version, WriteOp};

use super::DurableStore;
use crate::store::lmdb::{Logged, Staged};
use crate::store::record;
use crate::store::wal::Wal;

pub(super) struct Log {
    pub(super) wal: Wal,
    pub(super) next_seq: u64,
    /// The audit chain's head, while the audit trail is on.
    pub(super) audit: Option<AuditHead>,
    /// Items written to the WAL but not yet durable, in seq order.
    pub(super) unsynced: VecDeque<(u64, Logged)>,
    /// The weight of `unsynced` ([`Logged::weight`]).
    pub(super) unsynced_bytes: usize,
    /// The newest version of each key in `unsynced`, with its seq: what later batches
    /// are planned against.
    pub(super) unsynced_latest: HashMap<String, (u64, Arc<Version>)>,
    /// Each staged batch of local writes not yet durable: its last seq and the time its
    /// versions were stamped at or after (see [`kvs_sync::Store::unsettled_since`]).
    pub(super) unsettled: VecDeque<(u64, u64)>,
    /// Set when the log can no longer be trusted (a failed fsync, a write that could not
    /// be undone): every later write is refused until a restart replays the log.
    pub(super) broken: Option<String>,
}

/// Who makes the log durable.
pub(super) struct Durability {
    /// Every item with a seq up to this is durable (and published).
    pub(super) synced_through: u64,
    /// A caller is running an fsync.
    pub(super) syncing: bool,
}

/// Where the audit chain continues.
pub(super) struct AuditHead {
    pub(super) next_seq: u64,
    pub(super) last_hash: String,
    pub(super) key: AuditKey,
}

impl AuditHead {
    /// Chains an entry for accepted `op`.
    pub(super) fn append(&mut self, op: &WriteOp, now_ms: u64) -> AuditEntry {
        let entry = AuditEntry::for_op(self.next_seq, now_ms, op, &self.last_hash, &self.key);
        self.next_seq += 1;
        self.last_hash.clone_from(&entry.hash);
        entry
    }

    /// Forgets the entries of a batch that was not logged.
    pub(super) fn rewind(&mut self, batch: &[(u64, Logged)]) {
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
pub(super) struct Batch<'a> {
    pub(super) first_seq: u64,
    /// The newest version of each key this batch changes.
    pub(super) in_batch: HashMap<&'a str, Arc<Version>>,
    pub(super) accepted: Vec<(u64, Logged)>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(first_seq: u64) -> Self {
        Self {
            first_seq,
            in_batch: HashMap::new(),
            accepted: Vec::new(),
        }
    }

    /// The version of `key` held once the batch's earlier items and every staged batch
    /// apply.
    pub(super) fn held(
        &self,
        store: &DurableStore,
        log: &Log,
        key: &str,
    ) -> Result<Option<Version>, StoreError> {
        if let Some(version) = self.in_batch.get(key) {
            return Ok(Some(Version::clone(version)));
        }
        if let Some((_, version)) = log.unsynced_latest.get(key) {
            return Ok(Some(Version::clone(version)));
        }
        store.held(key)
    }

    /// Adds `version` of `key`, which a merge planned against what is held (see
    /// `plan_merge`; it needs no `in_batch` entry).
    pub(super) fn add_merged(
        &mut self,
        key: String,
        version: Version,
        compress_from: Option<usize>,
    ) -> Result<(), StoreError> {
        self.stage(key, Arc::new(version), compress_from)
    }

    /// Adds `version` of `key` with its record encoding.
    fn stage(
        &mut self,
        key: String,
        version: Arc<Version>,
        compress_from: Option<usize>,
    ) -> Result<(), StoreError> {
        let record = record::encode(&version, compress_from)?;
        self.add(Logged::Version(Staged {
            key,
            version,
            record,
        }));
        Ok(())
    }

    pub(super) fn add(&mut self, item: Logged) {
        let seq = self.first_seq + self.accepted.len() as u64;
        self.accepted.push((seq, item));
    }

    pub(super) fn add_version(
        &mut self,
        key: &'a str,
        version: &Version,
        compress_from: Option<usize>,
    ) -> Result<(), StoreError> {
        let version = Arc::new(version.clone());
        self.in_batch.insert(key, Arc::clone(&version));
        self.stage(key.to_owned(), version, compress_from)
    }
}
