//! An in-memory [`Store`], for tests and simulation.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;

use crate::merkle::{Leaf, MerkleTree, leaf_of};
use crate::store::{Cursor, ListPage, Listed, PurgeStats, StoreError, StoreStats, WriteOutcome};
use crate::{Store, StoreOptions, Version, VersionId, WriteOp, WriteRejected, plan_write};

#[derive(Default)]
struct Inner {
    current: BTreeMap<String, Version>,
    history: BTreeMap<String, VecDeque<Version>>,
    /// The merkle tree of `current`.
    tree: MerkleTree,
    /// The keys of `current` by merkle leaf.
    by_leaf: BTreeSet<(Leaf, String)>,
}

/// A [`Store`] held in memory; nothing survives the process.
pub struct MemoryStore {
    options: StoreOptions,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(options: StoreOptions) -> Self {
        Self {
            options,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied op: every op is
        // planned before anything is inserted, so the data is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn record(&mut self, key: &str, version: Version, max_revisions: usize) {
        self.install_if(key, version, max_revisions, |_| true);
    }

    /// Makes `version` current for `key` if `wanted(held version)`, in one search of the
    /// map, keeping the tree, the leaf index and the history in step; whether it did.
    fn install_if(
        &mut self,
        key: &str,
        version: Version,
        max_revisions: usize,
        wanted: impl FnOnce(&Version) -> bool,
    ) -> bool {
        let new_id = version.id;
        let kept = (max_revisions > 0).then(|| version.clone());
        match self.current.entry(key.to_owned()) {
            Entry::Occupied(mut held) => {
                if !wanted(held.get()) {
                    return false;
                }
                let old_id = std::mem::replace(held.get_mut(), version).id;
                self.tree.replace(key, Some(&old_id), Some(&new_id));
            }
            Entry::Vacant(free) => {
                self.tree.toggle(key, &new_id);
                self.by_leaf.insert((leaf_of(key), key.to_owned()));
                free.insert(version);
            }
        }
        if let Some(version) = kept {
            let revisions = self.history.entry(key.to_owned()).or_default();
            revisions.push_front(version);
            revisions.truncate(max_revisions);
        }
        true
    }

    fn forget(&mut self, key: &str) {
        if let Some(old) = self.current.remove(key) {
            self.tree.toggle(key, &old.id);
            self.by_leaf.remove(&(leaf_of(key), key.to_owned()));
        }
        self.history.remove(key);
    }
}

impl Store for MemoryStore {
    fn write_batch(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError> {
        let mut inner = self.lock();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let held = inner.current.get(&op.key);
            let created = !held.is_some_and(|v| v.is_live(now_ms));
            let outcome = plan_write(held, op, now_ms).map(|version| {
                inner.record(&op.key, version.clone(), self.options.max_revisions);
                WriteOutcome { version, created }
            });
            results.push(outcome);
        }
        Ok(results)
    }

    fn get(&self, key: &str) -> Result<Option<Version>, StoreError> {
        Ok(self.lock().current.get(key).cloned())
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        let inner = self.lock();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let items = inner
            .current
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, v)| v.is_live(now_ms))
            .take(limit.saturating_add(1))
            .map(|(key, v)| Listed {
                key: key.clone(),
                id: v.id,
            })
            .collect();
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
        let inner = self.lock();
        let mut items: Vec<Listed> = inner
            .current
            .iter()
            .filter(|(_, v)| v.is_live(now_ms) && v.id.timestamp >= since_ms)
            .filter(|(key, v)| after.is_none_or(|a| (v.id.timestamp, key.as_str()) > a))
            .map(|(key, v)| Listed {
                key: key.clone(),
                id: v.id,
            })
            .collect();
        items.sort_by(|a, b| (a.id.timestamp, &a.key).cmp(&(b.id.timestamp, &b.key)));
        items.truncate(limit.saturating_add(1));
        Ok(ListPage::from_overfetched(items, limit, |l| {
            Cursor::Time(l.id.timestamp, l.key.clone())
        }))
    }

    fn history(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        let inner = self.lock();
        let revisions = inner.history.get(key).into_iter().flatten();
        // A delete ends a life: what is older belongs to the key's previous life.
        Ok(revisions
            .take_while(|v| !v.is_tombstone())
            .cloned()
            .collect())
    }

    fn purge(&self, now_ms: u64, tombstone_ttl_ms: u64) -> Result<PurgeStats, StoreError> {
        let mut inner = self.lock();
        let mut stats = PurgeStats::default();
        for version in inner.current.values_mut() {
            if !version.is_tombstone() && version.is_expired(now_ms) {
                version.data = None;
                stats.expired += 1;
            }
        }
        let dead: Vec<String> = inner
            .current
            .iter()
            .filter(|(_, v)| v.is_tombstone() && v.is_past_keeping(now_ms, tombstone_ttl_ms))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &dead {
            inner.forget(key);
        }
        stats.tombstones = dead.len();
        Ok(stats)
    }

    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut stored = 0;
        let max_revisions = self.options.max_revisions;
        for (key, version) in versions {
            let supersedes = |held: &Version| version.supersedes(held);
            if inner.install_if(key, version.clone(), max_revisions, supersedes) {
                stored += 1;
            }
        }
        Ok(stored)
    }

    fn merkle(&self) -> Result<MerkleTree, StoreError> {
        Ok(self.lock().tree.clone())
    }

    fn leaf_entries(&self, leaves: &[Leaf]) -> Result<Vec<(String, VersionId)>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for &leaf in leaves {
            let keys = inner
                .by_leaf
                .range((leaf, String::new())..)
                .take_while(|(l, _)| *l == leaf);
            for (_, key) in keys {
                if let Some(version) = inner.current.get(key) {
                    out.push((key.clone(), version.id));
                }
            }
        }
        Ok(out)
    }

    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError> {
        let inner = self.lock();
        let range = match after {
            Some(after) => inner
                .current
                .range::<str, _>((Bound::Excluded(after), Bound::Unbounded)),
            None => inner.current.range::<str, _>(..),
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for (key, version) in range {
            if bytes >= max_bytes {
                break;
            }
            bytes += crate::approximate_size(key, version);
            out.push((key.clone(), version.clone()));
        }
        Ok(out)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = self.lock();
        let bytes = inner
            .current
            .iter()
            .map(|(k, v)| k.len() + v.data.as_ref().map_or(0, String::len))
            .sum::<usize>();
        Ok(StoreStats {
            keys: inner.current.len() as u64,
            bytes: bytes as u64,
        })
    }
}

#[cfg(all(test, feature = "conformance"))]
mod conformance_tests {
    crate::store_conformance_tests!(|options| ((), super::MemoryStore::new(options)));
}
