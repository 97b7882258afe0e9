//! Storage of a node: the LMDB implementation of `kvs_sync::Store` and the group
//! committer that turns concurrent writes into one transaction and one fsync.

mod group_commit;
mod lmdb;
mod record;

pub(crate) use group_commit::GroupCommitter;
pub(crate) use lmdb::LmdbStore;
