//! Purging: expired values become tombstones, and tombstones past `tombstone_ttl` go
//! (those of this node's undelivered deletes are kept, see [`Undelivered`]), a bounded
//! batch of each time index per pass.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};
use kvs_sync::{PurgeStats, StoreError, Undelivered, Version};

use super::keys::{index_key, split_index_key};
use super::record::{self, Header};
use super::{Index, LmdbStore};

/// Entries a single purge pass handles, so that it never holds the writer for long.
const PURGE_BATCH: usize = 10_000;

impl LmdbStore {
    /// [`Store::purge`], telling `on_expired` of each expired key with the tombstone that
    /// replaces its value (before the commit: on an error, nothing was purged). While the
    /// indexes are deferred, nothing is purged: a bulk load is under way, and expired
    /// values are hidden from readers anyway.
    pub fn purge_with(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
        on_expired: &mut dyn FnMut(&str, &Version),
    ) -> Result<PurgeStats, StoreError> {
        let mut wtxn = self.begin()?;
        if self.index_ops.is_deferred() {
            return Ok(PurgeStats::default());
        }
        let mut stats = PurgeStats::default();
        let mut changed = false;
        for (_, key) in self.due(&wtxn, &self.expiring, now_ms)? {
            let Some(held) = self.read(&wtxn, &key)? else {
                continue;
            };
            if held.is_expired(now_ms) && !held.is_tombstone() {
                let tombstone = Version {
                    data: None,
                    ..held.clone()
                };
                let record = record::encode(&tombstone, self.options.compression_min_bytes)?;
                self.replace(
                    &mut wtxn,
                    &key,
                    Some(&Header::of(&held)),
                    &tombstone,
                    &record,
                )?;
                on_expired(&key, &tombstone);
                stats.expired += 1;
            }
        }
        self.flush_indexes(&mut wtxn)?;
        for (at, key) in self.due(
            &wtxn,
            &self.tombstones,
            now_ms.saturating_sub(tombstone_ttl_ms),
        )? {
            self.tombstones.delete(&mut wtxn, &index_key(at, &key))?;
            changed = true;
            // Only a tombstone that is still held and past keeping goes; an index entry
            // left by an older layout is just dropped.
            match self.header(&wtxn, &key)? {
                Some(held)
                    if held.tombstone
                        && held.dead_since().is_some_and(|since| {
                            since.saturating_add(tombstone_ttl_ms) <= now_ms
                        }) =>
                {
                    if undelivered.is_some_and(|undelivered| undelivered.holds_id(&held.id)) {
                        self.keep_undelivered(&mut wtxn, &key, &held, now_ms)?;
                        stats.kept_undelivered += 1;
                    } else {
                        self.forget(&mut wtxn, &key, &held)?;
                        stats.tombstones += 1;
                    }
                }
                _ => {}
            }
        }
        if stats.kept_undelivered > 0 {
            self.flush_indexes(&mut wtxn)?;
        }
        if changed || stats != PurgeStats::default() {
            self.commit(wtxn)?;
        }
        Ok(stats)
    }

    /// Keeps `key`'s tombstone (held at `held`), due for purging, as dead from `now_ms`
    /// ([`Undelivered::kept`]); its index entries move with it.
    fn keep_undelivered(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        held: &Header,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(tombstone) = self.read(wtxn, key)? else {
            return Ok(());
        };
        let kept = Undelivered::kept(&tombstone, now_ms);
        let record = record::encode(&kept, self.options.compression_min_bytes)?;
        self.replace(wtxn, key, Some(held), &kept, &record)
    }

    /// Index entries of `index` at or before `until`, at most [`PURGE_BATCH`].
    fn due(
        &self,
        txn: &RoTxn,
        index: &Index,
        until: u64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let end = (until.saturating_add(1)).to_be_bytes();
        let range = (Bound::Unbounded, Bound::Excluded(&end[..]));
        let mut out = Vec::new();
        for item in index.range(txn, &range)?.take(PURGE_BATCH) {
            let (entry, ()) = item?;
            let (at, key) = split_index_key(entry)?;
            out.push((at, key.to_owned()));
        }
        Ok(out)
    }
}
