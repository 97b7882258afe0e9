//! The [`Store`] trait over the durable store: writes and merges through the
//! write-ahead log (session merges straight to the applier), point reads from the
//! overlay first, and the reads that need LMDB once the applier has caught up.

use std::collections::HashMap;

use kvs_sync::{
    Change, ListPage, PurgeStats, Store, StoreError, StoreStats, Undelivered, Version, VersionId,
    WriteOp, WriteOutcome, WriteRejected,
};

use super::staging::{Batch, Log};
use super::{DurableStore, broken_log};

impl DurableStore {
    /// The id of the version each of `keys` holds: the overlay under one lock, then
    /// LMDB in one read transaction for the rest.
    fn held_ids(&self, keys: &[&str]) -> Result<Vec<Option<VersionId>>, StoreError> {
        let mut found: Vec<Option<VersionId>> = {
            let pending = self.shared.lock();
            keys.iter()
                .map(|&key| pending.latest.get(key).map(|(_, version)| version.id))
                .collect()
        };
        let missing: Vec<&str> = keys
            .iter()
            .zip(&found)
            .filter(|(_, held)| held.is_none())
            .map(|(&key, _)| key)
            .collect();
        let mut from_lmdb = self.lmdb.read_ids(&missing)?.into_iter();
        for held in found.iter_mut().filter(|held| held.is_none()) {
            *held = from_lmdb.next().flatten();
        }
        Ok(found)
    }

    /// A batch of the `versions` that supersede what is held (staged, durable or in
    /// LMDB), numbered from the log's next seq. The versions are moved into the batch,
    /// not copied (a bootstrap merges thousands per call).
    fn plan_merge(
        &self,
        log: &Log,
        versions: Vec<(String, Version)>,
    ) -> Result<Batch<'static>, StoreError> {
        // What each key holds outside this batch (the conflict rule needs only the id),
        // read in one pass.
        let keys: Vec<&str> = versions.iter().map(|(key, _)| key.as_str()).collect();
        let outside = self.held_ids(&keys)?;
        // Which versions win: each against the one held, or the last winner for its key
        // earlier in this batch.
        let mut winner: HashMap<&str, usize> = HashMap::new();
        let mut wins = Vec::with_capacity(versions.len());
        for (at, ((key, version), outside)) in versions.iter().zip(&outside).enumerate() {
            let held = match winner.get(key.as_str()) {
                Some(&earlier) => Some(versions[earlier].1.id),
                None => log
                    .unsynced_latest
                    .get(key)
                    .map(|(_, staged)| staged.id)
                    .or(*outside),
            };
            let wins_here = held.is_none_or(|held| version.id.precedence(&held).is_gt());
            if wins_here {
                winner.insert(key, at);
            }
            wins.push(wins_here);
        }
        let mut batch = Batch::new(log.next_seq);
        for ((key, version), wins) in versions.into_iter().zip(wins) {
            if wins {
                batch.add_merged(key, version, self.compress_from)?;
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
        let (results, through) = self.stage(ops, || now_ms)?;
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
                .map(|key| pending.latest.get(key).map(|(_, v)| Version::clone(v)))
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
        let batch = self.plan_merge(&log, versions.to_vec())?;
        let stored = batch.accepted.len();
        let through = self.stage_batch(&mut log, batch)?;
        drop(log);
        self.make_durable(through)?;
        Ok(stored)
    }

    /// Skips the write-ahead log: the versions go straight to the overlay and the
    /// applier, after everything staged before them (so that items reach the applier in
    /// seq order), and the call waits for room in the applier's backlog.
    fn merge_from_session(&self, versions: Vec<(String, Version)>) -> Result<usize, StoreError> {
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
        self.caught_up()?;
        self.lmdb.end_bulk_load()
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        self.caught_up()?;
        self.lmdb.list(prefix, after, limit, now_ms)
    }

    fn list_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        self.caught_up()?;
        self.lmdb.list_since(since_ms, after, limit, now_ms)
    }

    fn changes_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.caught_up()?;
        self.lmdb.changes_since(since_ms, after, limit)
    }

    fn reserved_changes(&self) -> u64 {
        self.reserved_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn revisions(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        self.caught_up()?;
        self.lmdb.revisions(key)
    }

    fn purge(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
    ) -> Result<PurgeStats, StoreError> {
        self.caught_up()?;
        let mut expired = Vec::new();
        let stats = self.lmdb.purge_with(
            now_ms,
            tombstone_ttl_ms,
            undelivered,
            &mut |key, tombstone| {
                expired.push((key.to_owned(), tombstone.clone()));
            },
        )?;
        // Under the overlay's lock, as writes are published: a key written again since
        // the purge read it streams no expiry after its new version.
        let pending = self.shared.lock();
        for (key, version) in expired {
            let replaced = pending
                .latest
                .get(&key)
                .is_some_and(|(_, newer)| newer.id != version.id);
            if !replaced {
                self.send_change(Change {
                    key,
                    version,
                    expired: true,
                });
            }
        }
        drop(pending);
        Ok(stats)
    }

    /// The figures once LMDB holds every acknowledged write, or, while it refuses the
    /// log's records (a full disk), those of what it holds: `/metrics` goes on answering.
    fn stats(&self) -> Result<StoreStats, StoreError> {
        if let Err(error) = self.caught_up() {
            tracing::debug!(%error, "store figures without the log's last records");
        }
        self.lmdb.stats()
    }

    /// The stamp time of the oldest batch of writes staged in the log and not yet synced.
    fn unsettled_since(&self) -> Option<u64> {
        let log = self.lock_log();
        log.unsettled.front().map(|&(_, stamped_from)| stamped_from)
    }

    /// The tree of every write acknowledged before this call (the applier is hurried).
    fn merkle(&self) -> Result<kvs_sync::MerkleTree, StoreError> {
        self.caught_up()?;
        self.lmdb.merkle()
    }

    fn leaf_entries(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, kvs_sync::VersionId)>, StoreError> {
        self.caught_up()?;
        self.lmdb.leaf_entries(leaves)
    }

    fn leaf_versions(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, Version)>, StoreError> {
        self.caught_up()?;
        self.lmdb.leaf_versions(leaves)
    }

    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError> {
        self.caught_up()?;
        self.lmdb.versions_after(after, max_bytes)
    }
}
