//! An in-memory [`Store`], for tests and simulation.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use crate::merkle::{Leaf, MerkleTree, leaf_of};
use crate::store::{
    Cursor, ListPage, Listed, PurgeStats, StoreError, StoreStats, Undelivered, WriteOutcome,
};
use crate::{Store, StoreOptions, Version, VersionId, WriteOp, WriteRejected, plan_write};

/// The data, found by key through a hash map (merges and gets, the hot path) and in key
/// order through `keys` (listings and the bulk stream), which changes only when a key
/// comes or goes.
#[derive(Default)]
struct Inner {
    current: FxHashMap<String, Version>,
    /// The keys of `current`, in order.
    keys: BTreeSet<String>,
    history: FxHashMap<String, VecDeque<Version>>,
    /// The merkle tree of `current`.
    tree: MerkleTree,
    /// The keys of `current` by merkle leaf.
    by_leaf: BTreeSet<(Leaf, String)>,
    /// What purging looks at, so that it never scans the whole store.
    deaths: Deaths,
    /// See [`Store::reserved_changes`].
    reserved_changes: u64,
}

/// The held versions that purging will change, by when: values with an expiry (by
/// `expires_at`) and tombstones (by [`Version::dead_since`]).
#[derive(Default)]
struct Deaths {
    expiring: BTreeSet<(u64, String)>,
    tombstones: BTreeSet<(u64, String)>,
}

impl Deaths {
    fn slot(&mut self, version: &Version) -> Option<(&mut BTreeSet<(u64, String)>, u64)> {
        if version.is_tombstone() {
            Some((&mut self.tombstones, version.dead_since()?))
        } else {
            Some((&mut self.expiring, version.expires_at?))
        }
    }

    fn add(&mut self, key: &str, version: &Version) {
        if let Some((set, at)) = self.slot(version) {
            set.insert((at, key.to_owned()));
        }
    }

    fn remove(&mut self, key: &str, version: &Version) {
        if let Some((set, at)) = self.slot(version) {
            set.remove(&(at, key.to_owned()));
        }
    }

    /// Takes the keys of `set` due at `at` or earlier.
    fn take_due(set: &mut BTreeSet<(u64, String)>, at: u64) -> Vec<String> {
        let later = set.split_off(&(at.saturating_add(1), String::new()));
        std::mem::replace(set, later)
            .into_iter()
            .map(|(_, key)| key)
            .collect()
    }
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
    fn record(&mut self, key: &str, version: &Version, max_revisions: usize) {
        self.install_if(key, version, max_revisions, |_| true);
    }

    /// Makes a copy of `version` current for `key` if `wanted(held version)`, keeping the
    /// tree, the key order, the leaf index and the history in step; whether it did.
    fn install_if(
        &mut self,
        key: &str,
        version: &Version,
        max_revisions: usize,
        wanted: impl FnOnce(&Version) -> bool,
    ) -> bool {
        let new_id = version.id;
        if let Some(held) = self.current.get_mut(key) {
            if !wanted(held) {
                return false;
            }
            let old = std::mem::replace(held, version.clone());
            self.tree.replace(key, Some(&old.id), Some(&new_id));
            self.deaths.remove(key, &old);
            self.deaths.add(key, version);
        } else {
            self.deaths.add(key, version);
            self.tree.toggle(key, &new_id);
            self.by_leaf.insert((leaf_of(key), key.to_owned()));
            self.keys.insert(key.to_owned());
            self.current.insert(key.to_owned(), version.clone());
        }
        if key.starts_with('_') {
            self.reserved_changes += 1;
        }
        if max_revisions > 0 {
            let revisions = self.history.entry(key.to_owned()).or_default();
            revisions.push_front(version.clone());
            revisions.truncate(max_revisions);
        }
        true
    }

    fn forget(&mut self, key: &str) {
        if let Some(old) = self.current.remove(key) {
            self.tree.toggle(key, &old.id);
            self.deaths.remove(key, &old);
            self.by_leaf.remove(&(leaf_of(key), key.to_owned()));
            self.keys.remove(key);
        }
        self.history.remove(key);
    }

    /// The held versions with keys in `range`, in key order.
    fn in_order(
        &self,
        range: (Bound<&str>, Bound<&str>),
    ) -> impl Iterator<Item = (&String, &Version)> {
        self.keys
            .range::<str, _>(range)
            .filter_map(|key| Some((key, self.current.get(key)?)))
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
                inner.record(&op.key, &version, self.options.max_revisions);
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
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let items = inner
            .in_order((start, Bound::Unbounded))
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

    fn changes_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let inner = self.lock();
        let mut changes: Vec<(u64, String)> = inner
            .current
            .iter()
            .map(|(key, v)| (v.changed_at(), key))
            .filter(|&(at, key)| at >= since_ms && after.is_none_or(|a| (at, key.as_str()) > a))
            .map(|(at, key)| (at, key.clone()))
            .collect();
        changes.sort();
        changes.truncate(limit);
        Ok(changes)
    }

    fn revisions(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        let inner = self.lock();
        let mut revisions: Vec<Version> = inner
            .history
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // Kept in the order they came: newest first means by the conflict rule.
        revisions.sort_by(|a, b| b.id.precedence(&a.id));
        Ok(revisions)
    }

    fn purge(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
    ) -> Result<PurgeStats, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut stats = PurgeStats::default();
        for key in Deaths::take_due(&mut inner.deaths.expiring, now_ms) {
            let held = inner.current.get_mut(&key);
            if let Some(version) = held.filter(|v| !v.is_tombstone() && v.is_expired(now_ms)) {
                version.data = None;
                inner.deaths.add(&key, version);
                stats.expired += 1;
            }
        }
        let buried = now_ms.checked_sub(tombstone_ttl_ms);
        let dead = buried.map_or_else(Vec::new, |at| {
            Deaths::take_due(&mut inner.deaths.tombstones, at)
        });
        for key in &dead {
            let Some(held) = inner.current.get_mut(key) else {
                continue;
            };
            if !held.is_tombstone() || !held.is_past_keeping(now_ms, tombstone_ttl_ms) {
                continue;
            }
            if undelivered.is_some_and(|undelivered| undelivered.holds(held)) {
                *held = Undelivered::kept(held, now_ms);
                let kept = held.clone();
                inner.deaths.add(key, &kept);
                stats.kept_undelivered += 1;
            } else {
                inner.forget(key);
                stats.tombstones += 1;
            }
        }
        Ok(stats)
    }

    fn reserved_changes(&self) -> u64 {
        self.lock().reserved_changes
    }

    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut stored = 0;
        let max_revisions = self.options.max_revisions;
        for (key, version) in versions {
            let supersedes = |held: &Version| version.supersedes(held);
            if inner.install_if(key, version, max_revisions, supersedes) {
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
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = inner.in_order((start, Bound::Unbounded));
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
        let keys = inner
            .current
            .iter()
            .filter(|(key, v)| !key.starts_with('_') && !v.is_tombstone())
            .count();
        Ok(StoreStats {
            keys: keys as u64,
            entries: inner.current.len() as u64,
            bytes: bytes as u64,
        })
    }
}

#[cfg(all(test, feature = "conformance"))]
mod conformance_tests {
    crate::store_conformance_tests!(|options| ((), super::MemoryStore::new(options)));
}
