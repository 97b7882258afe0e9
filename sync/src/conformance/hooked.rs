//! A store that runs a test's hook before each call and then hands the call to the store
//! it wraps: a test sees, holds up or fails the store calls a component makes, without
//! writing a delegating store of its own.

use crate::merkle::{Leaf, MerkleTree};
use crate::{
    ListPage, PurgeStats, Store, StoreError, StoreStats, Undelivered, Version, VersionId, WriteOp,
    WriteOutcome, WriteRejected,
};

/// A call a [`Hooked`] store is about to pass on, with the arguments tests look at.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// [`Store::write_batch`].
    WriteBatch,
    /// [`Store::get`] and [`Store::get_many`].
    Get,
    /// [`Store::list`].
    List,
    /// [`Store::list_since`].
    ListSince,
    /// [`Store::revisions`] and [`Store::history`].
    History,
    /// [`Store::purge`].
    Purge,
    /// [`Store::stats`].
    Stats,
    /// [`Store::merge`].
    Merge,
    /// [`Store::merge_from_session`], with the versions.
    MergeFromSession(&'a [(String, Version)]),
    /// [`Store::merkle`].
    Merkle,
    /// [`Store::leaf_entries`] and [`Store::leaf_versions`].
    LeafEntries,
    /// [`Store::versions_after`].
    VersionsAfter,
    /// [`Store::begin_bulk_load`].
    BeginBulkLoad,
    /// [`Store::end_bulk_load`].
    EndBulkLoad,
}

/// The hook: it sees each call first; an error is the call's answer.
type Hook = Box<dyn Fn(Call<'_>) -> Result<(), StoreError> + Send + Sync>;

/// `inner` with a hook before each call; see the module doc.
pub struct Hooked<S> {
    inner: S,
    hook: Hook,
}

impl<S: Store> Hooked<S> {
    /// Wraps `inner`, running `hook` before each call.
    pub fn new(
        inner: S,
        hook: impl Fn(Call<'_>) -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Box::new(hook),
        }
    }
}

impl<S: Store> Store for Hooked<S> {
    fn write_batch(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError> {
        (self.hook)(Call::WriteBatch)?;
        self.inner.write_batch(ops, now_ms)
    }

    fn get(&self, key: &str) -> Result<Option<Version>, StoreError> {
        (self.hook)(Call::Get)?;
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Version>>, StoreError> {
        (self.hook)(Call::Get)?;
        self.inner.get_many(keys)
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        (self.hook)(Call::List)?;
        self.inner.list(prefix, after, limit, now_ms)
    }

    fn list_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError> {
        (self.hook)(Call::ListSince)?;
        self.inner.list_since(since_ms, after, limit, now_ms)
    }

    fn changes_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        (self.hook)(Call::ListSince)?;
        self.inner.changes_since(since_ms, after, limit)
    }

    fn reserved_changes(&self) -> u64 {
        self.inner.reserved_changes()
    }

    fn revisions(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        (self.hook)(Call::History)?;
        self.inner.revisions(key)
    }

    fn purge(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
    ) -> Result<PurgeStats, StoreError> {
        (self.hook)(Call::Purge)?;
        self.inner.purge(now_ms, tombstone_ttl_ms, undelivered)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        (self.hook)(Call::Stats)?;
        self.inner.stats()
    }

    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError> {
        (self.hook)(Call::Merge)?;
        self.inner.merge(versions)
    }

    fn merge_from_session(&self, versions: Vec<(String, Version)>) -> Result<usize, StoreError> {
        (self.hook)(Call::MergeFromSession(&versions))?;
        self.inner.merge_from_session(versions)
    }

    fn begin_bulk_load(&self) -> Result<(), StoreError> {
        (self.hook)(Call::BeginBulkLoad)?;
        self.inner.begin_bulk_load()
    }

    fn end_bulk_load(&self) -> Result<(), StoreError> {
        (self.hook)(Call::EndBulkLoad)?;
        self.inner.end_bulk_load()
    }

    fn merkle(&self) -> Result<MerkleTree, StoreError> {
        (self.hook)(Call::Merkle)?;
        self.inner.merkle()
    }

    fn leaf_entries(&self, leaves: &[Leaf]) -> Result<Vec<(String, VersionId)>, StoreError> {
        (self.hook)(Call::LeafEntries)?;
        self.inner.leaf_entries(leaves)
    }

    fn leaf_versions(&self, leaves: &[Leaf]) -> Result<Vec<(String, Version)>, StoreError> {
        (self.hook)(Call::LeafEntries)?;
        self.inner.leaf_versions(leaves)
    }

    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError> {
        (self.hook)(Call::VersionsAfter)?;
        self.inner.versions_after(after, max_bytes)
    }
}
