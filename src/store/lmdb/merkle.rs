//! The merkle tree of the LMDB store (`kvs_sync::merkle`), kept in step with `kv`.
//!
//! - `merkle`: the tree's leaves in [`CHUNKS`] chunks, chunk number (u16 BE) -> 256
//!   leaves (u64 BE) ++ CRC-32 of them, written in the same transaction as the versions
//!   they describe, so that the tree on disk always matches the data on disk;
//! - `by_leaf`: leaf (u16 BE) ++ key -> (), the keys of each leaf, for the diff protocol.
//!
//! A write transaction collects leaf deltas ([`MerkleState::note`]); committing writes
//! the dirty chunks and then updates the in-memory tree. At open, the leaves are read
//! back; when they are missing (a store from before the tree) or fail their CRC, the
//! tree and `by_leaf` are rebuilt from `kv` in one pass.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use heed::{Env, RwTxn};
use kvs_sync::merkle::{LEAVES, Leaf, entry_hash, leaf_of};
use kvs_sync::{MerkleTree, StoreError, VersionId};

use super::index_ops::{IndexOps, Table};
use super::{Db, Index};
use crate::store::record;

/// Leaves per stored chunk: the tree's own chunks, written as they are held.
const CHUNK_LEAVES: usize = kvs_sync::merkle::LEAF_CHUNK;
/// Chunks of the stored tree.
const CHUNKS: usize = LEAVES / CHUNK_LEAVES;
/// The layout of the stored tree and its hashes; a different one is rebuilt.
const FORMAT: u64 = 1;
const FORMAT_KEY: &[u8] = b"merkle_format";

/// The tree in memory and the deltas of the open write transaction.
pub(super) struct MerkleState {
    tree: Mutex<MerkleTree>,
    /// Leaf -> XOR delta, for the write transaction in progress (LMDB has one writer
    /// at a time; a transaction that aborts leaves deltas that the next one clears).
    pending: Mutex<HashMap<Leaf, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn leaf_key(leaf: Leaf, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&leaf.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

fn encode_chunk(leaves: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_LEAVES * 8 + 4);
    for leaf in leaves {
        out.extend_from_slice(&leaf.to_be_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_chunk(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.len() != CHUNK_LEAVES * 8 + 4 {
        return None;
    }
    let (leaves, crc) = bytes.split_at(CHUNK_LEAVES * 8);
    if crc32fast::hash(leaves).to_be_bytes() != crc {
        return None;
    }
    Some(
        leaves
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
            .collect(),
    )
}

impl MerkleState {
    /// Reads the stored tree, or rebuilds it (and `by_leaf`) from `kv`.
    pub(super) fn load(
        env: &Env,
        kv: &Db,
        chunks: &Db,
        by_leaf: &Index,
        meta: &Db,
    ) -> Result<Self, StoreError> {
        let tree = match Self::read_stored(env, chunks, meta)? {
            Some(tree) => tree,
            None => Self::rebuild(env, kv, chunks, by_leaf, meta)?,
        };
        Ok(Self {
            tree: Mutex::new(tree),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn read_stored(env: &Env, chunks: &Db, meta: &Db) -> Result<Option<MerkleTree>, StoreError> {
        let rtxn = env.read_txn()?;
        let format = meta.get(&rtxn, FORMAT_KEY)?;
        if format != Some(&FORMAT.to_be_bytes()[..]) {
            return Ok(None);
        }
        let mut leaves = Vec::with_capacity(LEAVES);
        for chunk in 0..CHUNKS as u16 {
            let stored = chunks.get(&rtxn, &chunk.to_be_bytes())?;
            match stored.and_then(decode_chunk) {
                Some(part) => leaves.extend(part),
                None => {
                    tracing::warn!(chunk, "the stored merkle tree is damaged; rebuilding it");
                    return Ok(None);
                }
            }
        }
        Ok(MerkleTree::from_leaves(&leaves))
    }

    /// Builds the tree and `by_leaf` from every record of `kv` and stores them.
    fn rebuild(
        env: &Env,
        kv: &Db,
        chunks: &Db,
        by_leaf: &Index,
        meta: &Db,
    ) -> Result<MerkleTree, StoreError> {
        let started = std::time::Instant::now();
        let mut wtxn = env.write_txn()?;
        by_leaf.clear(&mut wtxn)?;
        let mut leaves = vec![0u64; LEAVES];
        let mut entries: Vec<Vec<u8>> = Vec::new();
        for item in kv.iter(&wtxn)? {
            let (key, bytes) = item?;
            let key = super::keys::text_key(key)?;
            let header = record::decode_header(key, bytes)?;
            let leaf = leaf_of(key);
            leaves[usize::from(leaf)] ^= entry_hash(key, &header.id);
            entries.push(leaf_key(leaf, key));
        }
        entries.sort_unstable();
        for entry in &entries {
            by_leaf.put_with_flags(&mut wtxn, heed::PutFlags::APPEND, entry, &())?;
        }
        for (chunk, part) in leaves.chunks(CHUNK_LEAVES).enumerate() {
            let chunk = chunk as u16;
            chunks.put(&mut wtxn, &chunk.to_be_bytes(), &encode_chunk(part))?;
        }
        meta.put(&mut wtxn, FORMAT_KEY, &FORMAT.to_be_bytes())?;
        wtxn.commit()?;
        if !entries.is_empty() {
            tracing::info!(
                keys = entries.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "rebuilt the merkle tree from the store"
            );
        }
        MerkleTree::from_leaves(&leaves)
            .ok_or_else(|| StoreError::Backend("merkle tree of the wrong size".into()))
    }

    /// Forgets the deltas of a transaction that did not commit.
    pub(super) fn begin(&self) {
        lock(&self.pending).clear();
    }

    /// Notes that `key`'s version changes from `old` to `new` in the open transaction,
    /// and keeps `by_leaf` in step (through `ops`) when the key appears or goes.
    pub(super) fn note(
        &self,
        ops: &IndexOps,
        key: &str,
        old: Option<&VersionId>,
        new: Option<&VersionId>,
    ) {
        let leaf = leaf_of(key);
        let delta =
            old.map_or(0, |id| entry_hash(key, id)) ^ new.map_or(0, |id| entry_hash(key, id));
        *lock(&self.pending).entry(leaf).or_default() ^= delta;
        match (old, new) {
            (None, Some(_)) => ops.put(Table::ByLeaf, u64::from(leaf), key),
            (Some(_), None) => ops.delete(Table::ByLeaf, u64::from(leaf), key),
            _ => {}
        }
    }

    /// Commits `wtxn` with the dirty chunks of the tree, then updates the tree in memory.
    pub(super) fn commit(&self, mut wtxn: RwTxn, chunks: &Db) -> Result<(), StoreError> {
        let deltas: Vec<(Leaf, u64)> = lock(&self.pending)
            .drain()
            .filter(|(_, delta)| *delta != 0)
            .collect();
        if deltas.is_empty() {
            return wtxn.commit().map_err(StoreError::from);
        }
        let written = self.apply_and_write(&mut wtxn, chunks, &deltas);
        let committed = written.and_then(|()| wtxn.commit().map_err(StoreError::from));
        if committed.is_err() {
            // XOR undoes itself: the tree goes back to what the store still holds.
            self.apply(&deltas);
        }
        committed
    }

    fn apply(&self, deltas: &[(Leaf, u64)]) {
        let mut tree = lock(&self.tree);
        for &(leaf, delta) in deltas {
            tree.apply_delta(leaf, delta);
        }
    }

    /// Applies `deltas` to the tree in memory and writes the chunks they touch.
    fn apply_and_write(
        &self,
        wtxn: &mut RwTxn,
        chunks: &Db,
        deltas: &[(Leaf, u64)],
    ) -> Result<(), StoreError> {
        self.apply(deltas);
        let mut dirty: Vec<usize> = deltas
            .iter()
            .map(|(leaf, _)| usize::from(*leaf) / CHUNK_LEAVES)
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        let tree = lock(&self.tree);
        for chunk in dirty {
            let part = tree.leaf_chunk(chunk).unwrap_or_default();
            chunks.put(wtxn, &(chunk as u16).to_be_bytes(), &encode_chunk(part))?;
        }
        Ok(())
    }

    /// A copy of the tree (as of the last commit, or the one being committed).
    pub(super) fn tree(&self) -> MerkleTree {
        lock(&self.tree).clone()
    }

    /// The keys of `leaves` with their version ids.
    pub(super) fn entries<T>(
        env: &Env,
        kv: &Db,
        by_leaf: &Index,
        leaves: &[Leaf],
        decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let rtxn = env.read_txn()?;
        let mut out = Vec::new();
        for &leaf in leaves {
            for item in by_leaf.prefix_iter(&rtxn, &leaf.to_be_bytes())? {
                let (entry, ()) = item?;
                let key = super::keys::text_key(&entry[2..])?;
                if let Some(bytes) = kv.get(&rtxn, key.as_bytes())? {
                    out.push((key.to_owned(), decode(key, bytes)?));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use kvs_sync::conformance::put;
    use kvs_sync::{Store, StoreOptions, WriteOp};

    use super::*;
    use crate::store::LmdbStore;

    fn fill(store: &LmdbStore) {
        let ops: Vec<WriteOp> = (0..300)
            .map(|n| put(&format!("k/{n}"), &n.to_string()))
            .collect();
        store.write_batch(&ops, 1000).unwrap();
    }

    /// Opens the store in `dir`, runs `damage` on its environment, reopens it.
    fn reopened_after(dir: &std::path::Path, damage: impl FnOnce(&LmdbStore)) -> MerkleTree {
        let store = LmdbStore::open(dir, StoreOptions::default()).unwrap();
        damage(&store);
        drop(store);
        let store = LmdbStore::open(dir, StoreOptions::default()).unwrap();
        let all: Vec<Leaf> = (0..LEAVES).map(|l| l as Leaf).collect();
        assert_eq!(store.leaf_entries(&all).unwrap().len(), 300);
        store.merkle().unwrap()
    }

    #[test]
    fn tree_survives_reopen_and_is_rebuilt_when_missing_or_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path(), StoreOptions::default()).unwrap();
        fill(&store);
        let expected = store.merkle().unwrap();
        assert_ne!(expected.root(), 0);
        drop(store);
        assert_eq!(reopened_after(dir.path(), |_| {}), expected);
        let damaged = reopened_after(dir.path(), |store| {
            let mut wtxn = store.env.write_txn().unwrap();
            store
                .merkle_chunks
                .put(&mut wtxn, &7u16.to_be_bytes(), b"garbage")
                .unwrap();
            store.by_leaf.clear(&mut wtxn).unwrap();
            wtxn.commit().unwrap();
        });
        assert_eq!(damaged, expected, "a damaged chunk is rebuilt");
        let missing = reopened_after(dir.path(), |store| {
            let mut wtxn = store.env.write_txn().unwrap();
            store.meta.delete(&mut wtxn, FORMAT_KEY).unwrap();
            store.merkle_chunks.clear(&mut wtxn).unwrap();
            wtxn.commit().unwrap();
        });
        assert_eq!(missing, expected, "a store without a tree gets one");
    }
}
