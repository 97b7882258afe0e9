//! Node facts in the `meta` table (`joined_at`, the incarnation, generated ids and
//! secrets, the last sync), operations on the whole environment, and the checks of a
//! store file from elsewhere (a backup to restore) before LMDB maps it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use heed::CommitOrAbort;
use heed::types::Bytes;
use kvs_sync::StoreError;

use super::LmdbStore;

/// LMDB's meta pages (the first two pages of the file): their magic number and data
/// format version, and where the page size, the last page used and the transaction id
/// sit in each (`MDB_meta` after the 16-byte page header, on 64-bit builds).
const LMDB_MAGIC: u32 = 0xBEEF_C0DE;
const LMDB_DATA_VERSION: u32 = 1;
const META_PAGE_SIZE_AT: usize = 40;
const META_LAST_PAGE_AT: usize = 136;
const META_TXN_ID_AT: usize = 144;
const META_LEN: usize = 152;

/// Checks that `file` is a whole LMDB data file before anything maps it: LMDB trusts the
/// file to hold every page its newest meta page names, and reading past the end of a
/// truncated file is a SIGBUS, not an error.
pub fn check_data_file(file: &Path) -> Result<(), String> {
    let mut handle = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let len = handle.metadata().map_err(|e| e.to_string())?.len();
    let too_short = |_| format!("{len} bytes is too short for an LMDB data file");
    let mut first = [0u8; META_LEN];
    handle.read_exact(&mut first).map_err(too_short)?;
    let page_size = u32_at(&first, META_PAGE_SIZE_AT);
    if !is_meta_page(&first) || !(512..=65536).contains(&page_size) || !page_size.is_power_of_two()
    {
        return Err("not an LMDB data file".into());
    }
    let mut second = [0u8; META_LEN];
    handle
        .seek(SeekFrom::Start(u64::from(page_size)))
        .map_err(|e| e.to_string())?;
    handle.read_exact(&mut second).map_err(too_short)?;
    // LMDB uses whichever meta page has the newer transaction.
    let newest = [&first, &second]
        .into_iter()
        .filter(|page| is_meta_page(page))
        .max_by_key(|page| u64_at(page, META_TXN_ID_AT))
        .unwrap_or(&first);
    let pages = u64_at(newest, META_LAST_PAGE_AT).saturating_add(1);
    let needed = pages.saturating_mul(u64::from(page_size));
    if len < needed {
        return Err(format!(
            "truncated: {len} bytes, but its {pages} pages take {needed}"
        ));
    }
    Ok(())
}

fn is_meta_page(page: &[u8; META_LEN]) -> bool {
    u32_at(page, 16) == LMDB_MAGIC && u32_at(page, 20) == LMDB_DATA_VERSION
}

fn u32_at(bytes: &[u8; META_LEN], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8; META_LEN], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Opens the environment of data dir `dir` read-only: nothing is written (a node may be
/// running on it: LMDB lets another process read alongside).
#[allow(unsafe_code)]
fn open_read_only(dir: &Path) -> Result<heed::Env, StoreError> {
    if !dir.join("data.mdb").is_file() {
        return Err(StoreError::Backend(format!(
            "{} holds no store yet",
            dir.display()
        )));
    }
    let mut builder = heed::EnvOpenOptions::new();
    builder.map_size(super::MAP_SIZE).max_dbs(16);
    // SAFETY: read-only; this process opens the environment once, and only to read
    // (LMDB's lock file coordinates it with a node's process).
    unsafe { builder.flags(heed::EnvFlags::READ_ONLY) };
    Ok(unsafe { builder.open(dir) }?)
}

/// Whether the environment of `dir` is a kvs store (it has the `kv` and `meta` tables),
/// read without writing anything.
pub fn holds_kvs_store(dir: &Path) -> Result<bool, StoreError> {
    let env = open_read_only(dir)?;
    let tables = env
        .open_databases_and_commit(env.read_txn()?, |opener, rtxn| -> heed::Result<_> {
            let kv = opener.open_database::<Bytes, Bytes>(rtxn, Some("kv"))?;
            let meta = opener.open_database::<Bytes, Bytes>(rtxn, Some("meta"))?;
            Ok(CommitOrAbort::<_, ()>::Commit((kv, meta)))
        })?
        .unwrap_commit();
    Ok(matches!(tables, (Some(_), Some(_))))
}

/// The text of node facts `names` in the store of data dir `dir`, read without writing
/// anything (the node may be running); `None` for a fact not stored. Fails if `dir` holds
/// no store.
pub fn read_meta_texts(dir: &Path, names: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
    let env = open_read_only(dir)?;
    let meta = env
        .open_databases_and_commit(env.read_txn()?, |opener, rtxn| -> heed::Result<_> {
            let meta = opener.open_database::<Bytes, Bytes>(rtxn, Some("meta"))?;
            Ok(CommitOrAbort::<_, ()>::Commit(meta))
        })?
        .unwrap_commit();
    let rtxn = env.read_txn()?;
    names
        .iter()
        .map(|name| {
            let Some(db) = &meta else { return Ok(None) };
            let Some(bytes) = db.get(&rtxn, name.as_bytes())? else {
                return Ok(None);
            };
            String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: (*name).to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// The `meta` entry of the last write-ahead log seq whose item LMDB holds, written in
/// the commit that stored it: a replay skips the records up to it (see
/// `DurableStore::open`).
pub(crate) const APPLIED_SEQ: &str = "wal_applied_seq";

/// The u64 that node fact `name` holds as `bytes` (big-endian).
fn meta_u64_of(name: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        key: name.to_owned(),
        reason: "meta value is not a u64".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl LmdbStore {
    /// The value of node fact `name`, if it has one.
    pub fn meta_u64(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let rtxn = self.env.read_txn()?;
        self.meta
            .get(&rtxn, name.as_bytes())?
            .map(|bytes| meta_u64_of(name, bytes))
            .transpose()
    }

    /// The value of node fact `name`, storing `init` first if it has none.
    pub fn meta_u64_or_init(&self, name: &str, init: u64) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(bytes) = self.meta.get(&wtxn, name.as_bytes())? {
            return meta_u64_of(name, bytes);
        }
        self.meta
            .put(&mut wtxn, name.as_bytes(), &init.to_be_bytes())?;
        wtxn.commit()?;
        Ok(init)
    }

    /// Sets each node fact `name` to its `value`, all in one transaction.
    pub fn set_meta_u64s(&self, facts: &[(&str, u64)]) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        for (name, value) in facts {
            self.meta
                .put(&mut wtxn, name.as_bytes(), &value.to_be_bytes())?;
        }
        wtxn.commit().map_err(StoreError::from)
    }

    /// Adds one to node fact `name` (0 when absent) and returns the new value.
    pub fn increment_meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let held = match self.meta.get(&wtxn, name.as_bytes())? {
            Some(bytes) => meta_u64_of(name, bytes)?,
            None => 0,
        };
        let next = held.saturating_add(1);
        self.meta
            .put(&mut wtxn, name.as_bytes(), &next.to_be_bytes())?;
        wtxn.commit()?;
        self.sync()?;
        Ok(next)
    }

    /// The text of node fact `name`, if stored.
    pub fn meta_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let Some(bytes) = self.meta.get(&rtxn, name.as_bytes())? else {
            return Ok(None);
        };
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: name.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Sets node fact `name` to `text`.
    pub fn set_meta_text(&self, name: &str, text: &str) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, name.as_bytes(), text.as_bytes())?;
        wtxn.commit().map_err(StoreError::from)
    }

    /// The text of node fact `name`, storing `init` first if it has none.
    pub fn meta_text_or_init(&self, name: &str, init: &str) -> Result<String, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(bytes) = self.meta.get(&wtxn, name.as_bytes())? {
            return String::from_utf8(bytes.to_vec()).map_err(|e| StoreError::Corrupt {
                key: name.to_owned(),
                reason: e.to_string(),
            });
        }
        self.meta.put(&mut wtxn, name.as_bytes(), init.as_bytes())?;
        wtxn.commit()?;
        Ok(init.to_owned())
    }

    /// Writes a packed copy of the whole environment (every table rebuilt in key order,
    /// see `pack.rs`; read in one transaction, so a consistent snapshot) to a new file at
    /// `path`, sealed (see `seal.rs`); returns its size in bytes and the number of keys it
    /// holds.
    pub fn copy_to(&self, path: &Path) -> Result<(u64, u64), StoreError> {
        let backend = |what: &Path, e: std::io::Error| {
            StoreError::Backend(format!("{}: {e}", what.display()))
        };
        let staging = path.with_extension("packing");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| backend(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| backend(&staging, e))?;
        let packed = self.write_packed(&staging).and_then(|_| {
            let packed = staging.join("data.mdb");
            let bytes = super::seal::seal(&packed).map_err(|e| backend(&packed, e))?;
            std::fs::rename(&packed, path).map_err(|e| backend(path, e))?;
            Ok(bytes)
        });
        let removed = std::fs::remove_dir_all(&staging).map_err(|e| backend(&staging, e));
        let bytes = packed?;
        removed?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| backend(dir, e))?;
        }
        Ok((bytes, self.key_count()?))
    }

    /// The keys a client sees: live values outside the reserved `_` prefix (an expired
    /// value counts until the purge, within a second). `by_time` holds exactly the
    /// values; while a bulk load defers it, every entry of `kv` counts (tombstones too,
    /// until the load ends).
    pub fn key_count(&self) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn()?;
        self.key_count_in(&rtxn)
    }

    /// [`Self::key_count`] in transaction `rtxn`.
    pub(super) fn key_count_in(&self, rtxn: &heed::RoTxn) -> Result<u64, StoreError> {
        let deferred = self.indexes_deferred();
        let held = match deferred {
            true => self.kv.len(rtxn)?,
            false => self.by_time.len(rtxn)?,
        };
        let mut reserved = 0;
        for entry in self.kv.prefix_iter(rtxn, b"_")? {
            let (key, bytes) = entry?;
            let key = std::str::from_utf8(key).unwrap_or_default();
            if deferred || !super::record::decode_header(key, bytes)?.tombstone {
                reserved += 1;
            }
        }
        Ok(held.saturating_sub(reserved))
    }

    /// Flushes the environment to disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.env.force_sync().map_err(StoreError::from)
    }
}
