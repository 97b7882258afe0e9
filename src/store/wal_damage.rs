//! Telling a write cut short by a crash from damage, at the end of the newest log
//! segment: a crash leaves what an append had not yet written as zeros (segments are
//! zeroed ahead, and a growing file reads zeros or ends), and may write a later page of
//! an append before an earlier one; damage leaves neither.

use super::{read_record, record_header};

/// The unit a disk writes whole, as etcd reckons a torn entry.
const SECTOR: usize = 512;

/// Whether `tail` is all zeros.
pub(super) fn rest_is_zeros(tail: &[u8]) -> bool {
    tail.iter().all(|&byte| byte == 0)
}

/// Where a bad record begins at byte `at` of the newest segment `bytes`, whose last good
/// record has `last_seq`: the seq of a whole record after it, when one follows and the
/// bad bytes before it hold no zeroed sector (a crash leaves the space an append had not
/// yet written as zeros, and may write a later page of that append before an earlier one).
pub(super) fn damage_before_a_record(bytes: &[u8], at: usize, last_seq: u64) -> Option<u64> {
    let tail = &bytes[at..];
    let most = last_seq.saturating_add(tail.len() as u64);
    let (offset, seq) = (1..tail.len().saturating_sub(8 + 11 - 1)).find_map(|offset| {
        let seq = u64::from_be_bytes(tail[offset + 8..offset + 16].try_into().ok()?);
        if seq <= last_seq || seq > most {
            return None;
        }
        match read_record(&mut &tail[offset..]) {
            Ok(Some(record)) if record.seq == seq => Some((offset, seq)),
            _ => None,
        }
    })?;
    let bad = &tail[..offset];
    let unwritten_head = bad.len() >= 8 && bad[..8].iter().all(|&b| b == 0);
    let zeroed_sector = (at.div_ceil(SECTOR) * SECTOR..at + offset)
        .step_by(SECTOR)
        .any(|from| {
            from + SECTOR <= at + offset && bytes[from..from + SECTOR].iter().all(|&b| b == 0)
        });
    (!unwritten_head && !zeroed_sector).then_some(seq)
}

/// Whether the bad record at byte `at` of the newest segment `bytes` is whole (its length
/// ends it within the file) with a checksum that does not match, and no part of it left
/// as zeros: neither a sector of it (split at the file's sector boundaries, as etcd tells
/// a torn entry) nor its end (an append that failed midway wrote a prefix). A crash
/// leaves the part of an append not yet written as zeros (segments are zeroed ahead, and
/// a file grows with zeros), so such a record was written whole, acknowledged, and
/// damaged since.
pub(super) fn whole_but_damaged(bytes: &[u8], at: usize) -> bool {
    let Some((len, crc)) = bytes
        .get(at..at + 8)
        .and_then(|head| record_header(head.try_into().ok()?))
    else {
        return false;
    };
    let end = at + 8 + len;
    let Some(payload) = bytes.get(at + 8..end) else {
        return false;
    };
    if crc32fast::hash(payload) == crc || payload.last() == Some(&0) {
        return false;
    }
    let mut from = at;
    while from < end {
        let to = ((from / SECTOR + 1) * SECTOR).min(end);
        if bytes[from..to].iter().all(|&byte| byte == 0) {
            return false;
        }
        from = to;
    }
    true
}
