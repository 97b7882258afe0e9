//! Room on the disk: a node refuses writes before its log holds more than LMDB has room
//! to take in, and says how much room a replay needed when LMDB refused it.

use std::path::Path;

use kvs_sync::StoreError;

use super::{DurableStore, Log};
use crate::store::lmdb::Logged;
use crate::store::wal;

/// How many bytes of free disk a node keeps for each byte its log holds that LMDB does
/// not yet (the record in the log, and its copy in LMDB with the tables' overhead): see
/// `DurableStore::check_room`.
const ROOM_PER_UNAPPLIED_BYTE: u64 = 2;

/// Free disk kept besides, for LMDB's own pages (branch pages, the free list, metadata).
const ROOM_MARGIN: u64 = 1 << 20;

/// The error of a replay of `items` into LMDB in `dir` that failed with `error`, with
/// the disk's free space if it may be the cause (a full disk shows as an I/O error).
pub(super) fn replay_failed(error: &StoreError, dir: &Path, items: &[Logged]) -> StoreError {
    let needed: usize = items.iter().map(Logged::weight).sum();
    let free = wal::free_bytes(dir).map_or_else(|e| format!("unknown ({e})"), |b| b.to_string());
    StoreError::Backend(format!(
        "replaying the write-ahead log into LMDB failed: {error} (the disk has {free} bytes \
         free; the {} records to replay need about {needed}; the log is kept as it was)",
        items.len()
    ))
}

impl DurableStore {
    /// Refuses `batch` (as a full disk) if, once it is logged, the disk would have less
    /// room than [`ROOM_PER_UNAPPLIED_BYTE`] times what the log then holds that LMDB does
    /// not yet (plus [`ROOM_MARGIN`]): LMDB needs about as much again to take it in, and
    /// the log's segment is released only once full and applied. Without this, a burst
    /// of writes on a small disk filled it with log records that LMDB then had no room
    /// for, and the node could not replay them at its next start, even after space was
    /// freed (found by the full-disk test in a release build). Where the free space
    /// cannot be read, nothing is refused.
    pub(super) fn check_room(&self, log: &Log, batch: &[(u64, Logged)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Ok(free) = wal::free_bytes(&self.dir) else {
            return Ok(());
        };
        let unapplied = self.shared.lock().queued_bytes
            + log.unsynced_bytes
            + batch.iter().map(|(_, item)| item.weight()).sum::<usize>();
        let needed = (unapplied as u64)
            .saturating_mul(ROOM_PER_UNAPPLIED_BYTE)
            .saturating_add(ROOM_MARGIN);
        if free < needed {
            return Err(StoreError::Full(format!(
                "{free} bytes free, and moving the {unapplied} bytes the write-ahead log holds \
                 for LMDB needs about {needed}"
            )));
        }
        Ok(())
    }
}
