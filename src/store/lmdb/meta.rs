//! Node facts in the `meta` table (`joined_at`, the incarnation, generated ids and
//! secrets, the last sync), and operations on the whole environment.

use std::path::Path;

use heed::CommitOrAbort;
use heed::types::Bytes;
use kvs_sync::StoreError;

use super::LmdbStore;

/// The text of node facts `names` in the store of data dir `dir`, read without writing
/// anything (the node may be running: LMDB lets another process read alongside it);
/// `None` for a fact not stored. Fails if `dir` holds no store.
#[allow(unsafe_code)]
pub fn read_meta_texts(dir: &Path, names: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
    if !dir.join("data.mdb").is_file() {
        return Err(StoreError::Backend(format!(
            "{} holds no store yet",
            dir.display()
        )));
    }
    let mut builder = heed::EnvOpenOptions::new();
    builder.map_size(super::MAP_SIZE).max_dbs(16);
    // SAFETY: read-only; this process opens the environment once, and only to read these
    // facts (LMDB's lock file coordinates it with the node's process).
    unsafe { builder.flags(heed::EnvFlags::READ_ONLY) };
    let env = unsafe { builder.open(dir) }?;
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

impl LmdbStore {
    /// The value of node fact `name`, storing `init` first if it has none.
    pub fn meta_u64_or_init(&self, name: &str, init: u64) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(bytes) = self.meta.get(&wtxn, name.as_bytes())? {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
                key: name.to_owned(),
                reason: "meta value is not a u64".into(),
            })?;
            return Ok(u64::from_be_bytes(bytes));
        }
        self.meta
            .put(&mut wtxn, name.as_bytes(), &init.to_be_bytes())?;
        wtxn.commit()?;
        Ok(init)
    }

    /// Sets node fact `name` to `value`.
    pub fn set_meta_u64(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.meta
            .put(&mut wtxn, name.as_bytes(), &value.to_be_bytes())?;
        wtxn.commit().map_err(StoreError::from)
    }

    /// Adds one to node fact `name` (0 when absent) and returns the new value.
    pub fn increment_meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let held = match self.meta.get(&wtxn, name.as_bytes())? {
            Some(bytes) => {
                u64::from_be_bytes(bytes.try_into().map_err(|_| StoreError::Corrupt {
                    key: name.to_owned(),
                    reason: "meta value is not a u64".into(),
                })?)
            }
            None => 0,
        };
        let next = held + 1;
        self.meta
            .put(&mut wtxn, name.as_bytes(), &next.to_be_bytes())?;
        wtxn.commit()?;
        self.sync()?;
        Ok(next)
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

    /// Writes a compacted copy of the whole environment (one read transaction, so a
    /// consistent snapshot) to a new file at `path`; returns its size in bytes and the
    /// number of keys it holds.
    pub fn copy_to(&self, path: &Path) -> Result<(u64, u64), StoreError> {
        let file = self
            .env
            .copy_to_path(path, heed::CompactionOption::Enabled)?;
        file.sync_all()
            .map_err(|e| StoreError::Backend(format!("syncing {}: {e}", path.display())))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((bytes, self.key_count()?))
    }

    /// Keys held, tombstones included.
    pub fn key_count(&self) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn()?;
        self.kv.len(&rtxn).map_err(StoreError::from)
    }

    /// Flushes the environment to disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.env.force_sync().map_err(StoreError::from)
    }
}
