//! Keys of the LMDB tables: the time indexes (`at` u64 BE ++ key) and history entries
//! (key ++ 0x00 ++ ...).

use std::ops::Bound;

use kvs_sync::StoreError;

pub(super) fn index_key(at: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// A `kv` key (or the key part of an index entry) as text; bytes that are not UTF-8 are
/// a damaged table.
pub(super) fn text_key(bytes: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(bytes).into_owned(),
        reason: e.to_string(),
    })
}

pub(super) fn split_index_key(bytes: &[u8]) -> Result<(u64, &str), StoreError> {
    let (at, key) = bytes
        .split_at_checked(8)
        .ok_or_else(|| StoreError::Corrupt {
            key: String::new(),
            reason: "short index entry".into(),
        })?;
    let key = std::str::from_utf8(key).map_err(|e| StoreError::Corrupt {
        key: String::new(),
        reason: e.to_string(),
    })?;
    Ok((u64::from_be_bytes(at.try_into().unwrap_or_default()), key))
}

pub(super) fn history_prefix(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1 + 24);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out
}

/// Where a walk of a time index (`by_time`, `tombstones`) starts: at `since_ms`, or just
/// after `after` (a time and a key) when that is later.
pub(super) fn time_index_start(since_ms: u64, after: Option<(u64, &str)>) -> Bound<Vec<u8>> {
    let from = index_key(since_ms, "");
    match after.map(|(at, key)| index_key(at, key)) {
        Some(after) if after >= from => Bound::Excluded(after),
        _ => Bound::Included(from),
    }
}
