//! Storage of a node: LMDB (`kvs_sync::Store` over heed), the write-ahead log in front
//! of it, and the group committer that turns concurrent writes into one WAL append and
//! one fsync.

mod durable;
pub mod faults;
mod group_commit;
mod lmdb;
mod record;
mod wal;

pub use durable::DurableStore;
pub use group_commit::GroupCommitter;
pub use lmdb::LmdbStore;
/// The largest record the write-ahead log takes (a value must fit with its key and metadata).
pub const MAX_LOG_RECORD: usize = wal::MAX_RECORD as usize;
