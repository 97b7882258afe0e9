//! The [`Store`] trait over the durable store: writes and merges through the
//! write-ahead log (session merges straight to the applier), point reads from the
//! overlay first, and the reads that need LMDB once the applier has caught up.

use kvs_sync::{
    Change, ListPage, PurgeStats, Store, StoreError, StoreStats, Version, WriteOp, WriteOutcome,
    WriteRejected,
};

use super::staging::{Batch, Log};
use super::{DurableStore, broken_log};

impl DurableStore {
    /// A batch of the `versions` that supersede what is held (staged, durable or in
    /// LMDB), numbered from the log's next seq.
    fn plan_merge<'a>(
        &self,
        log: &Log,
        versions: &'a [(String, Version)],
    ) -> Result<Batch<'a>, StoreError> {
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
        Ok(batch)
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
        let batch = self.plan_merge(&log, versions)?;
        let stored = batch.accepted.len();
        let through = self.stage_batch(&mut log, batch)?;
        drop(log);
        self.make_durable(through)?;
        Ok(stored)
    }

    /// Skips the write-ahead log: the versions go straight to the overlay and the
    /// applier, after everything staged before them (so that items reach the applier in
    /// seq order), and the call waits for room in the applier's backlog.
    fn merge_from_session(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        let mut log = loop {
            let log = self.lock_log();
            if log.unsynced.is_empty() {
                break log;
            }
            let staged = log.next_seq - 1;
            drop(log);
            self.sync_through(staged)?;
        };
        if let Some(reason) = &log.broken {
            return Err(broken_log(reason));
        }
        let batch = self.plan_merge(&log, versions)?;
        let stored = batch.accepted.len();
        log.next_seq += stored as u64;
        self.publish(batch.accepted);
        drop(log);
        self.wait_for_room();
        Ok(stored)
    }

    /// LMDB puts off its indexes while it holds nothing (see `lmdb/deferred.rs`).
    fn begin_bulk_load(&self) -> Result<(), StoreError> {
        self.lmdb.begin_bulk_load()
    }

    /// Builds the indexes LMDB put off, once the applier has moved in everything
    /// accepted (which it then does without index work).
    fn end_bulk_load(&self) -> Result<(), StoreError> {
        if !self.lmdb.indexes_deferred() {
            return Ok(());
        }
        self.caught_up();
        self.lmdb.end_bulk_load()
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
        let mut expired = Vec::new();
        let stats = self
            .lmdb
            .purge_with(now_ms, tombstone_ttl_ms, &mut |key, tombstone| {
                expired.push((key.to_owned(), tombstone.clone()));
            })?;
        for (key, version) in expired {
            let _ = self.changes.send(Change {
                key,
                version,
                expired: true,
            });
        }
        Ok(stats)
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

    fn leaf_versions(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, Version)>, StoreError> {
        self.caught_up();
        self.lmdb.leaf_versions(leaves)
    }

    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError> {
        self.caught_up();
        self.lmdb.versions_after(after, max_bytes)
    }
}
