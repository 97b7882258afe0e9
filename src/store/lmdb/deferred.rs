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
/// What one key costs in a step besides its bytes (its sort entries).
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
            if step.keys == 0 {
                return Ok(keys);
            }
            keys += step.keys;
            after = Some(step.last_key().to_vec());
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

/// One index entry of a building step: its sort position, and where its key is in the
/// step's `text`.
#[derive(Clone, Copy)]
struct Entry {
    position: u64,
    start: u32,
    len: u32,
}

/// The index entries of one building step: its keys (in key order, one after the other
/// in `text`) and the entries of each index. Sorting by (position, start) keeps equal
/// positions in key order, which is each index's order.
#[derive(Default)]
struct Step {
    text: Vec<u8>,
    keys: u64,
    last_start: usize,
    by_time: Vec<Entry>,
    expiring: Vec<Entry>,
    tombstones: Vec<Entry>,
    by_leaf: Vec<Entry>,
}

impl Step {
    fn clear(&mut self) {
        self.text.clear();
        self.keys = 0;
        self.last_start = 0;
        self.by_time.clear();
        self.expiring.clear();
        self.tombstones.clear();
        self.by_leaf.clear();
    }

    /// The last key added.
    fn last_key(&self) -> &[u8] {
        &self.text[self.last_start..]
    }

    /// Adds the entries of `key`, whose record has `header`: where the write path puts
    /// them.
    fn add(&mut self, key: &str, header: &Header) {
        self.last_start = self.text.len();
        // A step holds at most STEP_BYTES of keys: offsets fit in u32.
        let (start, len) = (self.last_start as u32, key.len() as u32);
        self.text.extend_from_slice(key.as_bytes());
        self.keys += 1;
        let entry = |position| Entry {
            position,
            start,
            len,
        };
        self.by_leaf.push(entry(u64::from(leaf_of(key))));
        for (table, at) in time_positions(header) {
            let entries = match table {
                Table::ByTime => &mut self.by_time,
                Table::Expiring => &mut self.expiring,
                Table::Tombstones => &mut self.tombstones,
                Table::ByLeaf => &mut self.by_leaf,
            };
            entries.push(entry(at));
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
            entries.sort_unstable_by_key(|entry| (entry.position, entry.start));
            write_sorted(wtxn, index, width, entries, &self.text)?;
        }
        Ok(())
    }
}

/// Puts the `sorted` entries into `index`, each the last `width` bytes of the position
/// (BE) ++ the key: appended past its last entry, else inserted.
fn write_sorted(
    wtxn: &mut RwTxn,
    index: &Index,
    width: usize,
    sorted: &[Entry],
    text: &[u8],
) -> Result<(), StoreError> {
    let mut last = index.last(wtxn)?.map(|(entry, ())| entry.to_vec());
    let mut bytes = Vec::new();
    for entry in sorted {
        let key = &text[entry.start as usize..][..entry.len as usize];
        bytes.clear();
        bytes.extend_from_slice(&entry.position.to_be_bytes()[8 - width..]);
        bytes.extend_from_slice(key);
        match &mut last {
            Some(last) if bytes <= *last => index.put(wtxn, &bytes, &())?,
            _ => {
                index.put_with_flags(wtxn, PutFlags::APPEND, &bytes, &())?;
                last.get_or_insert_default().clone_from(&bytes);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
