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
pub(crate) use durable::write_audit_head;
pub use group_commit::GroupCommitter;
pub(crate) use lmdb::HEAD_FILE as AUDIT_HEAD_FILE;
pub use lmdb::audit_codec;
pub use lmdb::{LmdbStore, Seal, check_data_file, holds_kvs_store, read_meta_texts, read_seal};
pub(crate) use wal::free_bytes;
/// The largest record the write-ahead log takes (a value must fit with its key and metadata).
pub const MAX_LOG_RECORD: usize = wal::MAX_RECORD as usize;
