//! Index changes of one write transaction, held until its commit and then applied index
//! by index in key order: inserts at random places of a B-tree then visit its pages in
//! order, and entries past the last one are appended without a search. While the indexes
//! are deferred (`deferred.rs`), they are not made: a bulk load that only appends keys
//! keeps its entries in a compact [`Step`] instead, to build the indexes from at its end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use heed::{PutFlags, RwTxn};
use kvs_sync::StoreError;

use super::Index;
use super::deferred::Step;
use super::keys::index_key;
use super::merkle::leaf_key;
use kvs_sync::merkle::Leaf;

/// The index tables, in the order their changes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Table {
    ByTime,
    Expiring,
    Tombstones,
    ByLeaf,
}

/// The index tables of a store, as [`IndexOps::flush`] writes them.
pub(super) struct Tables<'a> {
    pub(super) by_time: &'a Index,
    pub(super) expiring: &'a Index,
    pub(super) tombstones: &'a Index,
    pub(super) by_leaf: &'a Index,
}

impl Table {
    /// The bytes of the position at the head of an entry: a leaf (u16 BE) in `by_leaf`,
    /// a time (u64 BE) in the others (`keys::index_key`, `merkle::leaf_key`).
    pub(super) fn position_bytes(self) -> usize {
        match self {
            Table::ByLeaf => 2,
            Table::ByTime | Table::Expiring | Table::Tombstones => 8,
        }
    }

    /// The entry of `key` at `position` (a leaf in `by_leaf`, else a time).
    fn entry(self, position: u64, key: &str) -> Vec<u8> {
        match self {
            Table::ByLeaf => leaf_key(position as Leaf, key),
            Table::ByTime | Table::Expiring | Table::Tombstones => index_key(position, key),
        }
    }
}

impl Tables<'_> {
    fn get(&self, table: Table) -> &Index {
        match table {
            Table::ByTime => self.by_time,
            Table::Expiring => self.expiring,
            Table::Tombstones => self.tombstones,
            Table::ByLeaf => self.by_leaf,
        }
    }
}

/// One change: an entry put (`true`) or deleted.
type Op = (Table, Vec<u8>, bool);

/// The pending changes of the open write transaction (LMDB has one writer at a time, so
/// the lock is never contended).
#[derive(Default)]
pub(super) struct IndexOps {
    ops: Mutex<Vec<Op>>,
    /// Set while the indexes are deferred: changes are dropped. Changed only by the
    /// writer, so it holds still during a write transaction.
    deferred: AtomicBool,
    /// While deferred by a bulk load: the entries its commits would have made, as long as
    /// they only added keys past the last one (else `None`: the indexes are then built
    /// from `kv`).
    noted: Mutex<Option<Step>>,
}

impl IndexOps {
    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }

    /// Defers the indexes (or ends that); `noting` keeps the entries of a bulk load that
    /// starts on an empty store.
    pub(super) fn set_deferred(&self, deferred: bool, noting: bool) {
        *self.noted() = (deferred && noting).then(Step::default);
        self.deferred.store(deferred, Ordering::Release);
    }

    fn noted(&self) -> MutexGuard<'_, Option<Step>> {
        self.noted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the changes of a transaction that did not commit.
    pub(super) fn clear(&self) {
        self.lock().clear();
        if let Some(noted) = self.noted().as_mut() {
            noted.roll_back();
        }
    }

    /// The transaction whose changes were noted committed.
    pub(super) fn committed(&self) {
        if let Some(noted) = self.noted().as_mut() {
            noted.mark();
        }
    }

    /// How many keys the entries noted so far cover (`None`: not noting).
    #[cfg(test)]
    pub(super) fn noted_keys(&self) -> Option<u64> {
        self.noted().as_ref().map(Step::keys)
    }

    /// Takes the entries noted during a bulk load, if they are all there.
    pub(super) fn take_noted(&self) -> Option<Step> {
        self.noted().take()
    }

    /// Notes that `key` goes into `table` at `position`.
    pub(super) fn put(&self, table: Table, position: u64, key: &str) {
        if !self.is_deferred() {
            self.lock().push((table, table.entry(position, key), true));
            return;
        }
        let mut noted = self.noted();
        if noted
            .as_mut()
            .is_some_and(|step| !step.push(table, position, key))
        {
            *noted = None;
        }
    }

    /// Notes that `key` leaves `table` at `position`.
    pub(super) fn delete(&self, table: Table, position: u64, key: &str) {
        if self.is_deferred() {
            // Not an append: the entries noted so far no longer match `kv`.
            *self.noted() = None;
        } else {
            self.lock().push((table, table.entry(position, key), false));
        }
    }

    /// Writes the pending changes into `wtxn`: sorted by table and entry, the changes
    /// of one entry in the order they were made.
    pub(super) fn flush(&self, wtxn: &mut RwTxn, tables: &Tables) -> Result<(), StoreError> {
        let mut ops = std::mem::take(&mut *self.lock());
        ops.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut current: Option<(Table, Option<Vec<u8>>)> = None;
        for (table, entry, put) in ops {
            let index = tables.get(table);
            // An upper bound of the table's last entry: beyond it, a put appends.
            let last = match &mut current {
                Some((open, last)) if *open == table => last,
                _ => {
                    let found = index.last(wtxn)?;
                    let last = found.map(|(entry, ())| entry.to_vec());
                    &mut current.insert((table, last)).1
                }
            };
            if !put {
                index.delete(wtxn, &entry)?;
                continue;
            }
            if last.as_ref().is_none_or(|last| entry > *last) {
                index.put_with_flags(wtxn, PutFlags::APPEND, &entry, &())?;
                *last = Some(entry);
            } else {
                index.put(wtxn, &entry, &())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kvs_sync::StoreOptions;

    use super::*;
    use crate::store::LmdbStore;

    fn entries(store: &LmdbStore, index: &Index) -> Vec<Vec<u8>> {
        let rtxn = store.env.read_txn().unwrap();
        index
            .iter(&rtxn)
            .unwrap()
            .map(|item| item.unwrap().0.to_vec())
            .collect()
    }

    #[test]
    fn changes_land_sorted_with_each_entrys_changes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut wtxn = store.begin().unwrap();
        store.index_ops.put(Table::ByTime, 5, "m");
        store.commit(wtxn).unwrap();
        wtxn = store.begin().unwrap();
        let ops = &store.index_ops;
        ops.put(Table::ByTime, 9, "z");
        ops.put(Table::ByTime, 1, "a");
        ops.delete(Table::ByTime, 1, "a"); // put, then delete: gone
        ops.delete(Table::ByTime, 2, "b");
        ops.put(Table::ByTime, 2, "b"); // delete, then put: there
        ops.delete(Table::ByTime, 5, "m");
        ops.put(Table::ByLeaf, 7, "q");
        ops.put(Table::ByTime, 8, "y"); // before "z", after everything held
        store.commit(wtxn).unwrap();
        let time = |at: u64, key: &str| Table::ByTime.entry(at, key);
        assert_eq!(
            entries(&store, &store.by_time),
            [time(2, "b"), time(8, "y"), time(9, "z")]
        );
        assert_eq!(
            entries(&store, &store.by_leaf),
            [[&[0, 7][..], b"q"].concat()]
        );
        assert_eq!(entries(&store, &store.expiring), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_transaction_that_does_not_commit_leaves_no_changes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let wtxn = store.begin().unwrap();
        store.index_ops.put(Table::Expiring, 1, "lost");
        drop(wtxn);
        let wtxn = store.begin().unwrap();
        store.index_ops.put(Table::Expiring, 2, "kept");
        store.commit(wtxn).unwrap();
        assert_eq!(
            entries(&store, &store.expiring),
            [Table::Expiring.entry(2, "kept")]
        );
    }
}
