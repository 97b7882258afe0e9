//! Indexes put off during a bulk load: while an empty store takes everything a peer
//! holds (a bootstrap), its commits write `kv` (appended, in key order) and the merkle
//! chunks but none of `by_time`, `expiring`, `tombstones` and `by_leaf`, whose random
//! inserts would rewrite most of their pages in every commit. The entries they would have
//! made are kept in memory instead, compactly (a [`Step`]: the keys in one buffer, 16
//! bytes per entry), as long as the load only appends keys and they stay under
//! [`STEP_BYTES`]; at the end the indexes are built from them, each sorted and appended
//! in one transaction ([`LmdbStore::build_deferred_indexes`]). Otherwise (a write in
//! between, a larger load, a restart) they are built from `kv`, in steps of bounded
//! memory.
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
        self.index_ops.set_deferred(true, true);
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
        let (keys, from) = self.build_indexes(&mut wtxn)?;
        self.meta.delete(&mut wtxn, DEFERRED_KEY)?;
        // Cleared before the commit, while this transaction is the only writer: no
        // commit after it may leave its index changes out.
        self.index_ops.set_deferred(false, false);
        if let Err(error) = wtxn.commit() {
            self.index_ops.set_deferred(true, false);
            return Err(error.into());
        }
        tracing::info!(
            keys,
            from,
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
            self.index_ops.set_deferred(true, false);
            self.build_deferred_indexes()?;
        }
        Ok(())
    }

    /// Replaces the four indexes with entries for every record of `kv`: the entries the
    /// load's commits noted, if they are all there (one for each key of `kv`), else read
    /// from `kv` in steps of at most [`STEP_BYTES`]; returns the number of keys and
    /// which of the two it was.
    fn build_indexes(&self, wtxn: &mut RwTxn) -> Result<(u64, &'static str), StoreError> {
        for index in [
            &self.by_time,
            &self.expiring,
            &self.tombstones,
            &self.by_leaf,
        ] {
            index.clear(wtxn)?;
        }
        if let Some(mut step) = self.index_ops.take_noted()
            && step.keys == self.kv.len(wtxn)?
        {
            step.write(self, wtxn)?;
            return Ok((step.keys, "the entries the load noted"));
        }
        Ok((self.index_from_kv(wtxn, STEP_BYTES)?, "kv"))
    }

    /// Writes the four (empty) indexes' entries for every record of `kv`, read in steps
    /// of at most `step_bytes`; returns the number of keys.
    fn index_from_kv(&self, wtxn: &mut RwTxn, step_bytes: usize) -> Result<u64, StoreError> {
        let mut step = Step::holding(step_bytes);
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
        for item in self.kv.range(wtxn, &range)? {
            let (key, bytes_of_record) = item?;
            let key = super::keys::text_key(key)?;
            if !step.add(key, &record::decode_header(key, bytes_of_record)?) {
                // The step is full: the next one starts with this key.
                break;
            }
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

/// Index entries to write at once: their keys (in key order, one after the other in
/// `text`) and the entries of each index. Sorting by (position, start) keeps equal
/// positions in key order, which is each index's order. Either one building step, or
/// what a bulk load's commits noted (`index_ops.rs`), with the lengths as of the last
/// commit (`mark`), to go back to when a transaction does not commit.
pub(super) struct Step {
    /// At most this many bytes ([`STEP_BYTES`] but in tests).
    limit: usize,
    text: Vec<u8>,
    keys: u64,
    last_start: usize,
    by_time: Vec<Entry>,
    expiring: Vec<Entry>,
    tombstones: Vec<Entry>,
    by_leaf: Vec<Entry>,
    marked: Marks,
}

/// The lengths of a [`Step`] at a commit.
#[derive(Default, Clone, Copy)]
struct Marks {
    text: usize,
    keys: u64,
    last_start: usize,
    entries: [usize; 4],
}

impl Default for Step {
    fn default() -> Self {
        Self::holding(STEP_BYTES)
    }
}

impl Step {
    /// An empty step of at most `limit` bytes.
    fn holding(limit: usize) -> Self {
        Self {
            limit,
            text: Vec::new(),
            keys: 0,
            last_start: 0,
            by_time: Vec::new(),
            expiring: Vec::new(),
            tombstones: Vec::new(),
            by_leaf: Vec::new(),
            marked: Marks::default(),
        }
    }

    fn clear(&mut self) {
        *self = Self::holding(self.limit);
    }

    /// How many keys it holds.
    #[cfg(test)]
    pub(super) fn keys(&self) -> u64 {
        self.keys
    }

    /// The last key added.
    fn last_key(&self) -> &[u8] {
        &self.text[self.last_start..]
    }

    fn entries(&mut self, table: Table) -> &mut Vec<Entry> {
        match table {
            Table::ByTime => &mut self.by_time,
            Table::Expiring => &mut self.expiring,
            Table::Tombstones => &mut self.tombstones,
            Table::ByLeaf => &mut self.by_leaf,
        }
    }

    /// Adds the entry of `key` at `position` in `table`: `key` is the last one added or
    /// comes after it. Returns false (adding nothing) for an earlier key, or once the
    /// step holds more than its limit.
    pub(super) fn push(&mut self, table: Table, position: u64, key: &str) -> bool {
        if self.keys == 0 || key.as_bytes() > self.last_key() {
            if self.text.len() + key.len() + self.keys as usize * PER_KEY_BYTES > self.limit {
                return false;
            }
            self.last_start = self.text.len();
            self.text.extend_from_slice(key.as_bytes());
            self.keys += 1;
        } else if key.as_bytes() != self.last_key() {
            return false;
        }
        // A step holds at most STEP_BYTES of keys: offsets fit in u32.
        let (start, len) = (self.last_start as u32, key.len() as u32);
        self.entries(table).push(Entry {
            position,
            start,
            len,
        });
        true
    }

    /// Adds the entries of `key`, whose record has `header`: where the write path puts
    /// them. Returns false (adding nothing) once the step is full.
    fn add(&mut self, key: &str, header: &Header) -> bool {
        if !self.push(Table::ByLeaf, u64::from(leaf_of(key)), key) {
            return false;
        }
        for (table, at) in time_positions(header) {
            // The same key as the entry above: always taken.
            self.push(table, at, key);
        }
        true
    }

    /// Records the lengths as of a commit.
    pub(super) fn mark(&mut self) {
        self.marked = Marks {
            text: self.text.len(),
            keys: self.keys,
            last_start: self.last_start,
            entries: [
                self.by_time.len(),
                self.expiring.len(),
                self.tombstones.len(),
                self.by_leaf.len(),
            ],
        };
    }

    /// Drops what was added since the last commit.
    pub(super) fn roll_back(&mut self) {
        let marked = self.marked;
        self.text.truncate(marked.text);
        self.keys = marked.keys;
        self.last_start = marked.last_start;
        for (table, len) in [
            Table::ByTime,
            Table::Expiring,
            Table::Tombstones,
            Table::ByLeaf,
        ]
        .into_iter()
        .zip(marked.entries)
        {
            self.entries(table).truncate(len);
        }
    }

    /// Writes the step's entries, index by index in entry order (the entry of a key at a
    /// position: `Table::entry`).
    fn write(&mut self, store: &LmdbStore, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        for (table, index) in [
            (Table::ByTime, &store.by_time),
            (Table::Expiring, &store.expiring),
            (Table::Tombstones, &store.tombstones),
            (Table::ByLeaf, &store.by_leaf),
        ] {
            let entries = self.entries(table);
            entries.sort_unstable_by_key(|entry| (entry.position, entry.start));
            let entries = std::mem::take(entries);
            write_sorted(wtxn, index, table.position_bytes(), &entries, &self.text)?;
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
