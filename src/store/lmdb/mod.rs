//! The LMDB (heed) implementation of `kvs_sync::Store`.
//!
//! Databases of the environment:
//! - `kv`: key -> record (the current version, tombstones included);
//! - `by_time`: timestamp (u64 BE) ++ key -> () for values, the `since` index;
//! - `expiring`: expires_at ++ key -> () for values with a TTL;
//! - `tombstones`: timestamp ++ key -> () for tombstones, purged after `tombstone_ttl`;
//! - `revision_log` and `revisions`: each key's history, a time-ordered log of records
//!   and a per-key index into it (`history.rs`; `history`, the table of records keyed by
//!   key of earlier stores, is moved into them at open);
//! - `meta`: node facts such as `joined_at` (`meta.rs`), the audit chain's sealed head
//!   (`audit_head`, `audit.rs`), and `indexes_deferred` during a bulk load (`deferred.rs`);
//! - `audit`: the audit trail, seq (u64 BE) -> entry (JSON), see `kvs_sync::AuditEntry` (`audit.rs`);
//! - `merkle` and `by_leaf`: the merkle tree of `kv` and the keys of each of its leaves
//!   (`merkle.rs`), updated in every transaction that changes `kv` (`by_leaf` but
//!   during a bulk load, like the other indexes).
//!
//! The write path is in `write.rs`; index changes are held until their transaction commits
//! and then applied in key order (`index_ops.rs`), or, during a bulk load into an empty
//! store, put off and built once at its end (`deferred.rs`). A copy of the whole
//! environment with every table rebuilt in key order (`kvs compact`, backups) is written
//! by `pack.rs`.
//!
//! Opened with [`LmdbStore::open`], every commit is fsynced (LMDB's default durability);
//! the node opens it with [`LmdbStore::open_behind_log`], behind its write-ahead log.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use heed::types::{Bytes, Unit};
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn};
use kvs_sync::{
    AuditEntry, Cursor, ListPage, Listed, PurgeStats, Store, StoreError, StoreOptions, StoreStats,
    Undelivered, Version, VersionId, WriteOp, WriteOutcome, WriteRejected,
};

use self::history::History;
use self::merkle::MerkleState;
use super::record::{self, Header};

mod audit;
pub mod audit_codec;
mod changes;
mod deferred;
mod history;
mod index_ops;
mod keys;
mod merkle;
mod meta;
pub(crate) use meta::APPLIED_SEQ;
pub use meta::{check_data_file, holds_kvs_store, read_meta_texts};
mod pack;
mod purge;
mod seal;
pub use seal::{Seal, read_seal};
mod write;

pub(crate) use self::audit::{AuditSeal, HEAD_FILE, META_COPY};

use self::index_ops::{IndexOps, Tables};
use self::keys::{split_index_key, time_index_start};

/// The largest the memory map may grow (virtual address space, not disk).
const MAP_SIZE: usize = 256 << 30;

type Db = Database<'static, Bytes, Bytes>;
type Index = Database<'static, Bytes, Unit>;

/// A version ready to store: its key, the version, and its encoded record.
pub struct Staged {
    /// The key.
    pub key: String,
    /// The version, shared with the durable store's overlay of versions not yet in LMDB.
    pub version: Arc<Version>,
    /// `version` in the record encoding.
    pub record: Vec<u8>,
}

/// What the write-ahead log carries to LMDB.
pub enum Logged {
    /// A new version of a key.
    Version(Staged),
    /// An audit entry.
    Audit(AuditEntry),
}

impl Logged {
    /// About how many bytes the item takes in memory (its record or entry, its key, and
    /// what holds them).
    pub fn weight(&self) -> usize {
        match self {
            Logged::Version(staged) => staged.key.len() + staged.record.len() + 128,
            Logged::Audit(_) => 512,
        }
    }
}

/// A store over an LMDB environment in a directory.
pub struct LmdbStore {
    env: Env,
    kv: Db,
    by_time: Index,
    expiring: Index,
    tombstones: Index,
    history: History,
    meta: Db,
    audit: Db,
    merkle_chunks: Db,
    by_leaf: Index,
    merkle: MerkleState,
    /// Index changes of the open write transaction, written at its commit.
    index_ops: IndexOps,
    options: StoreOptions,
    /// Versions of reserved keys stored (see [`Store::reserved_changes`]; counted when
    /// stored, a little before their commit: a reader reads them again a little early).
    reserved_changes: std::sync::atomic::AtomicU64,
}

impl LmdbStore {
    /// Opens (creating if needed) the store in directory `dir`; every commit is durable.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_with(dir, options, EnvFlags::empty())
    }

    /// Opens the store for use behind a write-ahead log: a commit skips the fsync of
    /// LMDB's meta page, which keeps the database intact but lets a system crash undo the
    /// last commit; its writes must stay in the log until a later commit or
    /// [`Self::sync`]. Pages are written with `write(2)`, not through the memory map
    /// (`WRITE_MAP`): on a full disk a page of the sparse data file that cannot be
    /// allocated ends a process that writes it through the map with SIGBUS, while
    /// `write(2)` fails the commit cleanly (it is retried once space is freed).
    pub fn open_behind_log(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_with(dir, options, EnvFlags::NO_META_SYNC)
    }

    #[allow(unsafe_code)]
    fn open_with(dir: &Path, options: StoreOptions, flags: EnvFlags) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        // LMDB maps the file and trusts its meta page: pages past the end of a truncated
        // file end the process with SIGBUS at the first read, so that is checked first
        // (an empty file is a new store, as a missing one is).
        let data_file = dir.join("data.mdb");
        if std::fs::metadata(&data_file).is_ok_and(|m| m.len() > 0) {
            check_data_file(&data_file).map_err(|reason| {
                StoreError::Backend(format!("{}: {reason}", data_file.display()))
            })?;
        }
        let mut builder = EnvOpenOptions::new();
        builder.map_size(MAP_SIZE).max_dbs(16).max_readers(1024);
        // SAFETY: NO_META_SYNC keeps LMDB's integrity; what it gives up is covered by the
        // caller's write-ahead log (see `open_behind_log`).
        unsafe { builder.flags(flags) };
        // SAFETY: LMDB requires that an environment is opened at most once per process
        // and that its files are not modified by other means while open. The node opens
        // its data dir once, and `kvs restore` refuses to touch a running node's dir.
        let env = unsafe { builder.open(dir) }?;
        let wtxn = env.write_txn()?;
        let (
            (kv, by_time, expiring, tombstones, meta, audit),
            (merkle_chunks, by_leaf),
            (revisions, revision_log, legacy_history),
        ) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    (
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("kv"))?,
                        opener.create_database::<Bytes, Unit>(wtxn, Some("by_time"))?,
                        opener.create_database::<Bytes, Unit>(wtxn, Some("expiring"))?,
                        opener.create_database::<Bytes, Unit>(wtxn, Some("tombstones"))?,
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?,
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("audit"))?,
                    ),
                    (
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("merkle"))?,
                        opener.create_database::<Bytes, Unit>(wtxn, Some("by_leaf"))?,
                    ),
                    (
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("revisions"))?,
                        opener.create_database::<Bytes, Bytes>(wtxn, Some("revision_log"))?,
                        opener.open_database::<Bytes, Bytes>(wtxn, Some("history"))?,
                    ),
                )))
            })?
            .unwrap_commit();
        let history = History::new(&env, revisions, revision_log)?;
        if let Some(legacy) = legacy_history {
            history.migrate(&env, &legacy)?;
        }
        let merkle = MerkleState::load(&env, &kv, &merkle_chunks, &by_leaf, &meta)?;
        let store = Self {
            env,
            kv,
            by_time,
            expiring,
            tombstones,
            history,
            meta,
            audit,
            merkle_chunks,
            by_leaf,
            merkle,
            index_ops: IndexOps::default(),
            options,
            reserved_changes: std::sync::atomic::AtomicU64::new(0),
        };
        store.resume_deferred_indexes()?;
        Ok(store)
    }

    /// Opens a write transaction that may change versions (and so the merkle tree).
    fn begin(&self) -> Result<RwTxn<'_>, StoreError> {
        let wtxn = self.env.write_txn()?;
        self.merkle.begin();
        self.index_ops.clear();
        Ok(wtxn)
    }

    /// Holds LMDB's single writer (every commit waits until the transaction drops).
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> RwTxn<'_> {
        self.env.write_txn().expect("write transaction")
    }

    /// Commits a transaction opened by [`Self::begin`], with its index and merkle tree
    /// changes.
    fn commit(&self, mut wtxn: RwTxn<'_>) -> Result<(), StoreError> {
        self.flush_indexes(&mut wtxn)?;
        self.merkle.commit(wtxn, &self.merkle_chunks)?;
        self.index_ops.committed();
        Ok(())
    }

    /// Writes the index changes noted so far (before the indexes are read in the same
    /// transaction).
    fn flush_indexes(&self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        let tables = Tables {
            by_time: &self.by_time,
            expiring: &self.expiring,
            tombstones: &self.tombstones,
            by_leaf: &self.by_leaf,
        };
        self.index_ops.flush(wtxn, &tables)
    }

    fn read(&self, txn: &RoTxn, key: &str) -> Result<Option<Version>, StoreError> {
        self.kv
            .get(txn, key.as_bytes())?
            .map(|bytes| record::decode(key, bytes))
            .transpose()
    }

    fn header(&self, txn: &RoTxn, key: &str) -> Result<Option<Header>, StoreError> {
        self.kv
            .get(txn, key.as_bytes())?
            .map(|bytes| record::decode_header(key, bytes))
            .transpose()
    }

    /// The id of the version each of `keys` holds (what the conflict rule compares),
    /// in one read transaction, decoding no value; a key past the last one held is not
    /// looked up (a bootstrap asks for nothing else).
    pub fn read_ids(&self, keys: &[&str]) -> Result<Vec<Option<VersionId>>, StoreError> {
        self.read_each(keys, |rtxn, key| {
            Ok(self.header(rtxn, key)?.map(|header| header.id))
        })
    }

    /// `read` of each of `keys` in one read transaction, skipping the keys past the last
    /// one held.
    fn read_each<K: AsRef<str>, T>(
        &self,
        keys: &[K],
        read: impl Fn(&RoTxn, &str) -> Result<Option<T>, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let last = self.kv.last(&rtxn)?.map(|(key, _)| key);
        keys.iter()
            .map(|key| match last {
                Some(last) if key.as_ref().as_bytes() <= last => read(&rtxn, key.as_ref()),
                _ => Ok(None),
            })
            .collect()
    }
}

impl Store for LmdbStore {
    fn write_batch(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError> {
        let mut wtxn = self.begin()?;
        let results = ops
            .iter()
            .map(|op| self.apply(&mut wtxn, op, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(wtxn)?;
        Ok(results)
    }

    fn get(&self, key: &str) -> Result<Option<Version>, StoreError> {
        let rtxn = self.env.read_txn()?;
        self.read(&rtxn, key)
    }

    /// One read transaction for all of `keys`; a key past the last one held is not
    /// looked up (a bootstrap asks for nothing else).
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Version>>, StoreError> {
        self.read_each(keys, |rtxn, key| self.read(rtxn, key))
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        let rtxn = self.env.read_txn()?;
        let start = match after {
            Some(after) if after >= prefix && !after.is_empty() => {
                Bound::Excluded(after.as_bytes())
            }
            // LMDB refuses an empty key as a range bound.
            _ if prefix.is_empty() => Bound::Unbounded,
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut items = Vec::new();
        for item in self.kv.range(&rtxn, &(start, Bound::Unbounded))? {
            let (key, bytes) = item?;
            if !key.starts_with(prefix.as_bytes()) || items.len() > limit {
                break;
            }
            let key = String::from_utf8_lossy(key);
            let header = record::decode_header(&key, bytes)?;
            if header.is_live(now_ms) {
                items.push(Listed {
                    key: key.into_owned(),
                    id: header.id,
                });
            }
        }
        Ok(ListPage::from_overfetched(items, limit, |l| {
            Cursor::Key(l.key.clone())
        }))
    }

    fn list_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        self.build_deferred_indexes()?;
        let rtxn = self.env.read_txn()?;
        let start = time_index_start(since_ms, after);
        let mut items = Vec::new();
        for item in self.by_time.range(
            &rtxn,
            &(start.as_ref().map(Vec::as_slice), Bound::Unbounded),
        )? {
            if items.len() > limit {
                break;
            }
            let (entry, ()) = item?;
            let (_, key) = split_index_key(entry)?;
            if let Some(header) = self.header(&rtxn, key)?.filter(|h| h.is_live(now_ms)) {
                items.push(Listed {
                    key: key.to_owned(),
                    id: header.id,
                });
            }
        }
        Ok(ListPage::from_overfetched(items, limit, |l| {
            Cursor::Time(l.id.timestamp, l.key.clone())
        }))
    }

    fn changes_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.changes_in_time_order(since_ms, after, limit)
    }

    fn reserved_changes(&self) -> u64 {
        self.reserved_changes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn revisions(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = self.history.read(&rtxn, key)?;
        // The table orders one millisecond's versions by uuid; newest first means by the
        // conflict rule (the origin that joined earlier wins a tie), the current first.
        out.sort_by(|a, b| b.id.precedence(&a.id));
        // A key not written since `max_revisions` was lowered still holds more; the cap
        // drops them at its next write.
        out.truncate(self.options.max_revisions);
        Ok(out)
    }

    fn purge(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
    ) -> Result<PurgeStats, StoreError> {
        self.purge_with(now_ms, tombstone_ttl_ms, undelivered, &mut |_, _| {})
    }

    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        let mut wtxn = self.begin()?;
        let mut stored = 0;
        for (key, version) in versions {
            let held = self.header(&wtxn, key)?;
            if held
                .as_ref()
                .is_some_and(|h| version.id.precedence(&h.id).is_le())
            {
                continue;
            }
            let record = record::encode(version, self.options.compression_min_bytes)?;
            self.store_version(&mut wtxn, key, held.as_ref(), version, &record)?;
            stored += 1;
        }
        self.commit(wtxn)?;
        Ok(stored)
    }

    fn begin_bulk_load(&self) -> Result<(), StoreError> {
        self.defer_indexes().map(|_| ())
    }

    fn end_bulk_load(&self) -> Result<(), StoreError> {
        self.build_deferred_indexes()
    }

    fn merkle(&self) -> Result<kvs_sync::MerkleTree, StoreError> {
        Ok(self.merkle.tree())
    }

    fn leaf_entries(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, kvs_sync::VersionId)>, StoreError> {
        self.build_deferred_indexes()?;
        MerkleState::entries(&self.env, &self.kv, &self.by_leaf, leaves, |key, bytes| {
            Ok(record::decode_header(key, bytes)?.id)
        })
    }

    /// One read transaction over `kv`; a record's size stands for its version's.
    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let range = match after {
            Some(after) => (Bound::Excluded(after.as_bytes()), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.kv.range(&rtxn, &range)? {
            if bytes >= max_bytes {
                break;
            }
            let (key, record) = item?;
            let key = keys::text_key(key)?;
            bytes += key.len() + record.len();
            out.push((key.to_owned(), record::decode(key, record)?));
        }
        Ok(out)
    }

    /// One read transaction, each record read once.
    fn leaf_versions(
        &self,
        leaves: &[kvs_sync::merkle::Leaf],
    ) -> Result<Vec<(String, Version)>, StoreError> {
        self.build_deferred_indexes()?;
        MerkleState::entries(&self.env, &self.kv, &self.by_leaf, leaves, record::decode)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let rtxn = self.env.read_txn()?;
        // The pages up to the last one in use (free pages among them), which is how long
        // the file is since pages are written with `write(2)`; through the memory map
        // (`WRITE_MAP`, before) the file was sparse and as long as the map (256 GiB).
        let page_size = self.kv.stat(&rtxn)?.page_size;
        let pages = self.env.info().last_page_number as u64 + 1;
        Ok(StoreStats {
            keys: self.key_count_in(&rtxn)?,
            entries: self.kv.len(&rtxn)?,
            bytes: pages * u64::from(page_size),
        })
    }
}

#[cfg(test)]
mod tests;
