//! Indexes put off during a bulk load: while an empty store takes everything a peer
//! holds (a bootstrap), its commits write `kv` (appended, in key order) and the merkle
//! chunks but none of `by_time`, `expiring`, `tombstones` and `by_leaf`, whose random
//! inserts would rewrite most of their pages in every commit. The indexes are then
//! built from `kv` in one transaction, in steps of bounded memory, each sorted and
//! appended ([`LmdbStore::build_deferred_indexes`]).
//!
//! The flag is kept in `meta` (`indexes_deferred`), set in its own commit before the
//! first deferred one and cleared in the build's commit: a store reopened with it set
//! (a crash mid-load) builds its indexes at open. A read of an index builds them first,
//! so no reader ever sees one incomplete; a purge meanwhile does nothing.

use heed::{PutFlags, RwTxn};
use kvs_sync::StoreError;
use kvs_sync::merkle::leaf_of;

use super::index_ops::Table;
use super::record::{self, Header};
use super::write::time_positions;
use super::{Index, LmdbStore};

/// The `meta` entry present while indexes are deferred.
const DEFERRED_KEY: &[u8] = b"indexes_deferred";
/// Bytes of keys (with a fixed allowance per key) read from `kv` per building step:
/// the entries in memory during a build stay below about this.
const STEP_BYTES: usize = 64 << 20;
/// What one key costs in a step besides its bytes (its offset and sort entries).
const PER_KEY_BYTES: usize = 48;

impl LmdbStore {
    /// Puts off the indexes while the store holds no key (a bulk load is starting);
    /// returns whether they are deferred now.
    pub fn defer_indexes(&self) -> Result<bool, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if self.index_ops.is_deferred() {
            return Ok(true);
        }
        if !self.kv.is_empty(&wtxn)? {
            return Ok(false);
        }
        self.meta.put(&mut wtxn, DEFERRED_KEY, &[])?;
        wtxn.commit()?;
        self.index_ops.set_deferred(true);
        Ok(true)
    }

    /// Whether the indexes are deferred.
    pub fn indexes_deferred(&self) -> bool {
        self.index_ops.is_deferred()
    }

    /// Builds the deferred indexes, if any, from `kv` (see the module doc).
    pub fn build_deferred_indexes(&self) -> Result<(), StoreError> {
        if !self.index_ops.is_deferred() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut wtxn = self.env.write_txn()?;
        if !self.index_ops.is_deferred() {
            // Another caller built them while this one waited for the writer.
            return Ok(());
        }
        let keys = self.build_indexes(&mut wtxn)?;
        self.meta.delete(&mut wtxn, DEFERRED_KEY)?;
        // Cleared before the commit, while this transaction is the only writer: no
        // commit after it may leave its index changes out.
        self.index_ops.set_deferred(false);
        if let Err(error) = wtxn.commit() {
            self.index_ops.set_deferred(true);
            return Err(error.into());
        }
        tracing::info!(
            keys,
            took_ms = started.elapsed().as_millis() as u64,
            "built the indexes deferred during a bulk load"
        );
        Ok(())
    }

    /// Resumes the state `meta` records at open: indexes deferred by a run that stopped
    /// before building them are built now.
    pub(super) fn resume_deferred_indexes(&self) -> Result<(), StoreError> {
        let rtxn = self.env.read_txn()?;
        let deferred = self.meta.get(&rtxn, DEFERRED_KEY)?.is_some();
        drop(rtxn);
        if deferred {
            self.index_ops.set_deferred(true);
            self.build_deferred_indexes()?;
        }
        Ok(())
    }

    /// Replaces the four indexes with entries for every record of `kv`, in steps of at
    /// most [`STEP_BYTES`]; returns the number of keys.
    fn build_indexes(&self, wtxn: &mut RwTxn) -> Result<u64, StoreError> {
        for index in [
            &self.by_time,
            &self.expiring,
            &self.tombstones,
            &self.by_leaf,
        ] {
            index.clear(wtxn)?;
        }
        let mut step = Step::default();
        let mut after: Option<Vec<u8>> = None;
        let mut keys = 0;
        loop {
            self.read_step(wtxn, after.as_deref(), &mut step)?;
            if step.keys.is_empty() {
                return Ok(keys);
            }
            keys += step.keys.len() as u64;
            after = step.keys.last().map(|key| key.as_bytes().to_vec());
            step.write(self, wtxn)?;
        }
    }

    /// Reads the records after `after` into `step`, up to [`STEP_BYTES`].
    fn read_step(
        &self,
        wtxn: &RwTxn,
        after: Option<&[u8]>,
        step: &mut Step,
    ) -> Result<(), StoreError> {
        step.clear();
        let range = match after {
            Some(after) => (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded),
            None => (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        };
        let mut bytes = 0;
        for item in self.kv.range(wtxn, &range)? {
            if bytes >= STEP_BYTES {
                break;
            }
            let (key, bytes_of_record) = item?;
            let key = super::keys::text_key(key)?;
            bytes += key.len() + PER_KEY_BYTES;
            step.add(key, &record::decode_header(key, bytes_of_record)?);
        }
        Ok(())
    }
}

/// The index entries of one building step: its keys (in key order) and, per index,
/// (sort position, key number) pairs; a stable sort by position keeps equal positions
/// in key order, which is each index's order.
#[derive(Default)]
struct Step {
    keys: Vec<String>,
    by_time: Vec<(u64, u32)>,
    expiring: Vec<(u64, u32)>,
    tombstones: Vec<(u64, u32)>,
    by_leaf: Vec<(u64, u32)>,
}

impl Step {
    fn clear(&mut self) {
        self.keys.clear();
        self.by_time.clear();
        self.expiring.clear();
        self.tombstones.clear();
        self.by_leaf.clear();
    }

    /// Adds the entries of `key`, whose record has `header`: where the write path puts
    /// them.
    fn add(&mut self, key: &str, header: &Header) {
        let number = self.keys.len() as u32;
        self.keys.push(key.to_owned());
        self.by_leaf.push((u64::from(leaf_of(key)), number));
        for (table, at) in time_positions(header) {
            let entries = match table {
                Table::ByTime => &mut self.by_time,
                Table::Expiring => &mut self.expiring,
                Table::Tombstones => &mut self.tombstones,
                Table::ByLeaf => &mut self.by_leaf,
            };
            entries.push((at, number));
        }
    }

    /// Writes the step's entries, index by index in entry order: a time index entry is
    /// the time (u64 BE) ++ key (`keys::index_key`), a `by_leaf` one the leaf (u16 BE)
    /// ++ key (`merkle::leaf_key`).
    fn write(&mut self, store: &LmdbStore, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        for (index, entries, width) in [
            (&store.by_time, &mut self.by_time, 8),
            (&store.expiring, &mut self.expiring, 8),
            (&store.tombstones, &mut self.tombstones, 8),
            (&store.by_leaf, &mut self.by_leaf, 2),
        ] {
            entries.sort_by_key(|(position, _)| *position);
            write_sorted(wtxn, index, width, entries, &self.keys)?;
        }
        Ok(())
    }
}

/// Puts the entries of `sorted` (position, key number) into `index`, each the last
/// `width` bytes of the position (BE) ++ the key: appended past its last entry, else
/// inserted.
fn write_sorted(
    wtxn: &mut RwTxn,
    index: &Index,
    width: usize,
    sorted: &[(u64, u32)],
    keys: &[String],
) -> Result<(), StoreError> {
    let mut last = index.last(wtxn)?.map(|(entry, ())| entry.to_vec());
    let mut entry = Vec::new();
    for &(position, number) in sorted {
        entry.clear();
        entry.extend_from_slice(&position.to_be_bytes()[8 - width..]);
        entry.extend_from_slice(keys[number as usize].as_bytes());
        match &mut last {
            Some(last) if entry <= *last => index.put(wtxn, &entry, &())?,
            _ => {
                index.put_with_flags(wtxn, PutFlags::APPEND, &entry, &())?;
                last.get_or_insert_default().clone_from(&entry);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
