//! Keys whose current version changed since a time, deletions and expiries included
//! (`Store::changes_since`, what `/watch` replays): the value and tombstone time indexes
//! walked together.

use std::ops::Bound;

use kvs_sync::StoreError;

use super::LmdbStore;
use super::keys::{split_index_key, time_index_start};

impl LmdbStore {
    /// [`kvs_sync::Store::changes_since`].
    pub(super) fn changes_in_time_order(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.build_deferred_indexes()?;
        let rtxn = self.env.read_txn()?;
        let start = time_index_start(since_ms, after);
        let range = (start.as_ref().map(Vec::as_slice), Bound::Unbounded);
        // Values sit in `by_time` at their timestamp, tombstones in `tombstones` from when
        // the key died: both are ordered by (time, key), so they merge as they come.
        let mut values = self.by_time.range(&rtxn, &range)?.peekable();
        let mut tombstones = self.tombstones.range(&rtxn, &range)?.peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_value = match (values.peek(), tombstones.peek()) {
                (None, None) => break,
                (Some(Ok((value, ()))), Some(Ok((tombstone, ())))) => value <= tombstone,
                (Some(_), None) | (Some(Err(_)), _) => true,
                (None, Some(_)) | (Some(Ok(_)), Some(Err(_))) => false,
            };
            let next = if take_value {
                values.next()
            } else {
                tombstones.next()
            };
            let Some(item) = next else { break };
            let (entry, ()) = item?;
            let (at, key) = split_index_key(entry)?;
            out.push((at, key.to_owned()));
        }
        Ok(out)
    }
}
