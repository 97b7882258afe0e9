//! The history of each key: a time-ordered log of revisions and a small per-key index.
//!
//! - `revision_log`: seq (u64 BE, one per stored revision, increasing) -> record;
//! - `revisions`: key ++ 0x00 ++ !timestamp ++ uuid -> seq (u64 BE), newest first per
//!   key (keys hold no control characters, so 0x00 ends a key).
//!
//! Why two tables: a table of records keyed by key puts each revision next to the key's
//! older ones, so random writes dirty most of its pages, and the applier's commit rewrote
//! all of them every second (tens of MB for a few thousand keys, the PUT tail of
//! BENCHMARKS.md). In the log a commit's revisions are appended together, and the
//! revisions dropped past the cap were appended together earlier, so their pages empty
//! out and are freed rather than rewritten; only the index, about 50 bytes per revision,
//! takes random writes.
//!
//! Stores written before the log kept records in the `history` table, keyed like
//! `revisions`; [`History::migrate`] moves them at open.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::{Env, PutFlags, RoTxn, RwTxn};
use kvs_sync::{StoreError, Version};

use super::Db;
use super::keys::history_prefix;
use super::record;

/// Revisions moved from the legacy table per transaction at open.
const MIGRATE_BATCH: usize = 100_000;

/// The history tables and the seq of the next revision.
pub(super) struct History {
    index: Db,
    log: Db,
    /// The seq the next revision gets: above every seq in the log.
    next: AtomicU64,
}

impl History {
    /// The history over `index` (`revisions`) and `log` (`revision_log`).
    pub(super) fn new(env: &Env, index: Db, log: Db) -> Result<Self, StoreError> {
        let rtxn = env.read_txn()?;
        let next = match log.last(&rtxn)? {
            Some((seq, _)) => decode_seq(seq)? + 1,
            None => 0,
        };
        Ok(Self {
            index,
            log,
            next: AtomicU64::new(next),
        })
    }

    /// Adds `version` of `key` (encoded as `record`) as a revision; a version stored
    /// already keeps its one copy.
    pub(super) fn add(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        version: &Version,
        record: &[u8],
    ) -> Result<(), StoreError> {
        // LMDB's single writer holds `wtxn`: nothing else moves `next` meanwhile.
        let seq = self.next.load(Ordering::Relaxed);
        let seq_bytes = seq.to_be_bytes();
        // One search for both: the entry is put unless the version has one already.
        if self
            .index
            .get_or_put(wtxn, &entry_key(key, version), &seq_bytes)?
            .is_some()
        {
            return Ok(());
        }
        self.log
            .put_with_flags(wtxn, PutFlags::APPEND, &seq_bytes, record)?;
        self.next.store(seq + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes `key`'s revisions after the newest `keep`.
    pub(super) fn drop_after(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        let stale: Vec<(Vec<u8>, [u8; 8])> = self
            .index
            .prefix_iter(wtxn, &history_prefix(key))?
            .skip(keep)
            .map(|item| {
                let (entry, seq) = item?;
                Ok((entry.to_vec(), decode_seq(seq)?.to_be_bytes()))
            })
            .collect::<Result<_, StoreError>>()?;
        for (entry, seq) in stale {
            self.index.delete(wtxn, &entry)?;
            self.log.delete(wtxn, &seq)?;
        }
        Ok(())
    }

    /// The versions of `key`'s revisions, in the index's order (newest timestamp first,
    /// one millisecond's by uuid).
    pub(super) fn read(&self, rtxn: &RoTxn, key: &str) -> Result<Vec<Version>, StoreError> {
        let mut out = Vec::new();
        for item in self.index.prefix_iter(rtxn, &history_prefix(key))? {
            let (_, seq) = item?;
            let record = self
                .log
                .get(rtxn, seq)?
                .ok_or_else(|| StoreError::Corrupt {
                    key: key.to_owned(),
                    reason: "a revision in the history index is missing from the log".into(),
                })?;
            out.push(record::decode(key, record)?);
        }
        Ok(out)
    }

    /// Moves the revisions of `legacy` (the `history` table of stores written before the
    /// log: index keys -> records) into the log and the index, a batch per transaction,
    /// each batch deleted from `legacy` in the transaction that moves it (an interrupted
    /// move resumes at the next open).
    pub(super) fn migrate(&self, env: &Env, legacy: &Db) -> Result<(), StoreError> {
        let rtxn = env.read_txn()?;
        let held = legacy.len(&rtxn)?;
        drop(rtxn);
        if held == 0 {
            return Ok(());
        }
        // Once per data dir, and as long as the history is large: said before it starts.
        tracing::info!(revisions = held, "moving the history into the revision log");
        let mut moved = 0;
        loop {
            let mut wtxn = env.write_txn()?;
            let batch: Vec<(Vec<u8>, Vec<u8>)> = legacy
                .iter(&wtxn)?
                .take(MIGRATE_BATCH)
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()?;
            let Some((last, _)) = batch.last() else {
                tracing::info!(revisions = moved, "moved the history into the revision log");
                return Ok(());
            };
            let last = last.clone();
            for (entry, record) in &batch {
                let seq = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                self.log
                    .put_with_flags(&mut wtxn, PutFlags::APPEND, &seq, record)?;
                self.index.put(&mut wtxn, entry, &seq)?;
            }
            let moved_range = (Bound::Unbounded, Bound::Included(last.as_slice()));
            legacy.delete_range(&mut wtxn, &moved_range)?;
            wtxn.commit()?;
            moved += batch.len() as u64;
        }
    }
}

/// `key`'s index entry for `version`: newest first within the key.
fn entry_key(key: &str, version: &Version) -> Vec<u8> {
    let mut entry = history_prefix(key);
    entry.extend_from_slice(&(!version.id.timestamp).to_be_bytes());
    entry.extend_from_slice(version.id.uuid.as_bytes());
    entry
}

fn decode_seq(bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        key: String::new(),
        reason: "a revision seq is not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests;
