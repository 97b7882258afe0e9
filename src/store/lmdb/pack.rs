//! Packing: a copy of the whole environment with every table rebuilt from its entries in
//! key order, for `kvs compact`.
//!
//! LMDB's own compacting copy (`mdb_env_copy2` with `MDB_CP_COMPACT`, what backups use)
//! leaves out the free pages but copies each page as it is. Keys inserted in random order
//! leave a B-tree's leaf pages about two-thirds full, and that stays so in the copy. Here
//! each table is appended entry by entry into a fresh environment, so that its pages are
//! filled before the next is begun: about 40 % fewer pages for `kv`, and no free pages.
//! [`LmdbStore::used_bytes`] tells how much of the file holds data, for the metric that
//! says when a compaction pays.

use std::path::Path;

use heed::types::{Bytes, DecodeIgnore, Str};
use heed::{CommitOrAbort, CommitToken, Database, Env, EnvOpenOptions, OnCommit, PutFlags};
use kvs_sync::StoreError;

use super::{Db, LmdbStore, MAP_SIZE};

/// The bytes of entries after which the copy commits and begins a new transaction, so
/// that a large store is never held in one transaction's dirty pages.
const COMMIT_BYTES: usize = 64 << 20;

/// The named tables of an environment, opened in the transaction that lists them.
struct NamedTables<'t>(Vec<(String, Database<'t, Bytes, Bytes>)>);

impl OnCommit for NamedTables<'_> {
    type Committed = Vec<(String, Db)>;

    fn on_commit(self, token: &CommitToken) -> Self::Committed {
        self.0
            .into_iter()
            .map(|(name, table)| (name, table.on_commit(token)))
            .collect()
    }
}

/// Every named table of `env`, in name order, as raw bytes.
fn named_tables(env: &Env) -> Result<Vec<(String, Db)>, StoreError> {
    let opened = env.open_databases_and_commit(env.read_txn()?, |opener, rtxn| {
        let names = opener
            .open_database::<Str, DecodeIgnore>(rtxn, None)?
            .ok_or_else(|| StoreError::Backend("no unnamed database".into()))?;
        let mut tables = Vec::new();
        for entry in names.iter(rtxn)? {
            let (name, ()) = entry?;
            let table = opener
                .open_database(rtxn, Some(name))?
                .ok_or_else(|| StoreError::Backend(format!("no table {name}")))?;
            tables.push((name.to_owned(), table));
        }
        Ok::<_, StoreError>(CommitOrAbort::<_, ()>::Commit(NamedTables(tables)))
    })?;
    Ok(opened.unwrap_commit())
}

impl LmdbStore {
    /// Bytes of the pages that hold data: every table's, the unnamed table's and the two
    /// meta pages. The rest of the file up to its last page is free pages, kept for later
    /// commits.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let tables = named_tables(&self.env)?;
        let rtxn = self.env.read_txn()?;
        let unnamed = self.env.unnamed_database_stat();
        let mut bytes = (2 + unnamed.branch_pages + unnamed.leaf_pages + unnamed.overflow_pages)
            * unnamed.page_size as usize;
        for (_, table) in &tables {
            bytes += table.stat(&rtxn)?.non_free_page_size();
        }
        Ok(bytes as u64)
    }

    /// Writes a packed copy of the store into `dir` (a new, empty directory): every table
    /// of the environment, the same entries, read in one transaction (a consistent
    /// snapshot). Returns the size of the copy's data file in bytes.
    #[allow(unsafe_code)]
    pub fn write_packed(&self, dir: &Path) -> Result<u64, StoreError> {
        let tables = named_tables(&self.env)?;
        let mut builder = EnvOpenOptions::new();
        builder.map_size(MAP_SIZE).max_dbs(16);
        // SAFETY: `dir` is new and only this environment, from this thread, opens it until
        // it is closed below, so it needs no lock table (a file written through a memory
        // map, where a full disk ends the process with SIGBUS instead of failing a call).
        unsafe { builder.flags(heed::EnvFlags::NO_LOCK) };
        // SAFETY: as above.
        let packed = unsafe { builder.open(dir) }?;
        let targets = packed
            .create_databases_and_commit(packed.write_txn()?, |opener, wtxn| {
                let mut targets = Vec::new();
                for (name, _) in &tables {
                    targets.push((name.clone(), opener.create_database(wtxn, Some(name))?));
                }
                Ok::<_, StoreError>(CommitOrAbort::<_, ()>::Commit(NamedTables(targets)))
            })?
            .unwrap_commit();
        let rtxn = self.env.read_txn()?;
        let mut wtxn = packed.write_txn()?;
        let mut uncommitted = 0;
        for ((_, source), (_, target)) in tables.iter().zip(&targets) {
            for entry in source.iter(&rtxn)? {
                let (key, value) = entry?;
                target.put_with_flags(&mut wtxn, PutFlags::APPEND, key, value)?;
                uncommitted += key.len() + value.len();
                if uncommitted >= COMMIT_BYTES {
                    wtxn.commit()?;
                    wtxn = packed.write_txn()?;
                    uncommitted = 0;
                }
            }
        }
        wtxn.commit()?;
        drop(rtxn);
        let bytes = packed.real_disk_size()?;
        packed.prepare_for_closing().wait();
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use kvs_sync::conformance::put;
    use kvs_sync::{Mutation, Store, StoreOptions, WriteOp};

    use super::*;

    type Entries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

    /// Every entry of every table of `store`.
    fn entries(store: &LmdbStore) -> Entries {
        let tables = named_tables(&store.env).unwrap();
        let rtxn = store.env.read_txn().unwrap();
        tables
            .into_iter()
            .map(|(name, table)| {
                let entries = table.iter(&rtxn).unwrap().map(|e| e.unwrap());
                let entries = entries.map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                (name, entries)
            })
            .collect()
    }

    #[test]
    fn the_packed_copy_holds_every_entry_of_every_table_in_fewer_pages() {
        let options = StoreOptions {
            max_revisions: 3,
            ..StoreOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path(), options).unwrap();
        let value = format!("\"{}\"", "v".repeat(300));
        // Keys in a scattered order (pages split half full), each written twice (a
        // history), some with a TTL, some deleted (tombstones), in commits of 100.
        let ops: Vec<WriteOp> = (0..6_000u64)
            .map(|i| {
                let n = (i * 7_919) % 3_000;
                let mut op = put(&format!("k/{n}"), &value);
                match n % 10 {
                    0 if i >= 3_000 => op.mutation = Mutation::Delete,
                    1 => {
                        op.mutation = Mutation::Put {
                            data: value.clone(),
                            ttl_ms: Some(60_000),
                        }
                    }
                    _ => {}
                }
                op
            })
            .collect();
        for (at, batch) in ops.chunks(100).enumerate() {
            store.write_batch(batch, 1_000 + at as u64).unwrap();
        }
        let held = entries(&store);
        let names: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
        for table in [
            "kv",
            "by_time",
            "expiring",
            "tombstones",
            "revisions",
            "revision_log",
        ] {
            let count = held
                .iter()
                .find(|(name, _)| name == table)
                .map(|(_, e)| e.len());
            assert!(count > Some(0), "{table} holds entries: {names:?}");
        }

        let packed_dir = tempfile::tempdir().unwrap();
        let packed_bytes = store.write_packed(packed_dir.path()).unwrap();
        let source_bytes = store.env.real_disk_size().unwrap();
        assert!(
            packed_bytes * 4 < source_bytes * 3,
            "{source_bytes} -> {packed_bytes}"
        );
        let packed = LmdbStore::open(packed_dir.path(), options).unwrap();
        assert!(entries(&packed) == held, "the same tables and entries");
        assert_eq!(packed.get("k/5").unwrap(), store.get("k/5").unwrap());
    }
}
