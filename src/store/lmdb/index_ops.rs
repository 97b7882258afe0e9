//! Index changes of one write transaction, held until its commit and then applied index
//! by index in key order: inserts at random places of a B-tree then visit its pages in
//! order, and entries past the last one are appended without a search (a bootstrap's
//! commits of 200,000 versions write `by_leaf` almost purely by appending). While the
//! indexes are deferred (`deferred.rs`), changes are not even noted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use heed::{PutFlags, RwTxn};
use kvs_sync::StoreError;

use super::Index;

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
}

impl IndexOps {
    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }

    pub(super) fn set_deferred(&self, deferred: bool) {
        self.deferred.store(deferred, Ordering::Release);
    }

    /// Forgets the changes of a transaction that did not commit.
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    /// Notes that `entry` goes into `table` (made only when the indexes are not deferred).
    pub(super) fn put(&self, table: Table, entry: impl FnOnce() -> Vec<u8>) {
        if !self.is_deferred() {
            self.lock().push((table, entry(), true));
        }
    }

    /// Notes that `entry` leaves `table` (made only when the indexes are not deferred).
    pub(super) fn delete(&self, table: Table, entry: impl FnOnce() -> Vec<u8>) {
        if !self.is_deferred() {
            self.lock().push((table, entry(), false));
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
        store.index_ops.put(Table::ByTime, || b"m".to_vec());
        store.commit(wtxn).unwrap();
        wtxn = store.begin().unwrap();
        let ops = &store.index_ops;
        ops.put(Table::ByTime, || b"z".to_vec());
        ops.put(Table::ByTime, || b"a".to_vec());
        ops.delete(Table::ByTime, || b"a".to_vec()); // put, then delete: gone
        ops.delete(Table::ByTime, || b"b".to_vec());
        ops.put(Table::ByTime, || b"b".to_vec()); // delete, then put: there
        ops.delete(Table::ByTime, || b"m".to_vec());
        ops.put(Table::ByLeaf, || b"q".to_vec());
        ops.put(Table::ByTime, || b"y".to_vec()); // before "z", after everything held
        store.commit(wtxn).unwrap();
        assert_eq!(entries(&store, &store.by_time), [&b"b"[..], b"y", b"z"]);
        assert_eq!(entries(&store, &store.by_leaf), [b"q"]);
        assert_eq!(entries(&store, &store.expiring), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_transaction_that_does_not_commit_leaves_no_changes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let wtxn = store.begin().unwrap();
        store.index_ops.put(Table::Expiring, || b"lost".to_vec());
        drop(wtxn);
        let wtxn = store.begin().unwrap();
        store.index_ops.put(Table::Expiring, || b"kept".to_vec());
        store.commit(wtxn).unwrap();
        assert_eq!(entries(&store, &store.expiring), [b"kept"]);
    }
}
