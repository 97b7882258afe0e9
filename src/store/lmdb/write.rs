//! The write path inside one LMDB transaction: replacing a key's current version with
//! its index entries and merkle change, its history, and applying what the write-ahead
//! log accepted.

use heed::{PutFlags, RwTxn};
use kvs_sync::{StoreError, Version, WriteOp, WriteOutcome, WriteRejected, plan_write};

use super::index_ops::Table;
use super::record::{self, Header};
use super::{AuditSeal, LmdbStore, Logged, Staged};

impl LmdbStore {
    /// Removes `key`'s index entries for the version whose header is `old`.
    fn unindex(&self, key: &str, old: &Header) {
        for (table, at) in time_positions(old) {
            self.index_ops.delete(table, at, key);
        }
    }

    /// Stores `new` (encoded as `record`) as the current version of `key`, replacing the
    /// version whose header is `old`.
    pub(super) fn replace(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        old: Option<&Header>,
        new: &Version,
        record: &[u8],
    ) -> Result<(), StoreError> {
        match old {
            Some(old) => self.unindex(key, old),
            // Past the last key, a new key is appended without a search.
            None if self
                .kv
                .last(wtxn)?
                .is_none_or(|(last, _)| key.as_bytes() > last) =>
            {
                self.kv
                    .put_with_flags(wtxn, PutFlags::APPEND, key.as_bytes(), record)?;
                self.index_new(key, None, new);
                return Ok(());
            }
            None => {}
        }
        self.kv.put(wtxn, key.as_bytes(), record)?;
        self.index_new(key, old, new);
        Ok(())
    }

    /// Notes the index entries and the merkle change of `key`'s new version `new`.
    fn index_new(&self, key: &str, old: Option<&Header>, new: &Version) {
        self.merkle
            .note(&self.index_ops, key, old.map(|h| &h.id), Some(&new.id));
        for (table, at) in time_positions(&Header::of(new)) {
            self.index_ops.put(table, at, key);
        }
    }

    /// Makes `new` (encoded as `record`) the current version of `key` and adds it to
    /// the history.
    pub(super) fn store_version(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        old: Option<&Header>,
        new: &Version,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.replace(wtxn, key, old, new, record)?;
        if key.starts_with('_') {
            self.reserved_changes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        self.add_revision(wtxn, key, new, record)?;
        self.cap_history(wtxn, key)
    }

    /// Adds `version` to `key`'s history (see [`Self::cap_history`]).
    fn add_revision(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        version: &Version,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if self.options.max_revisions == 0 {
            return Ok(());
        }
        self.history.add(wtxn, key, version, bytes)
    }

    /// Drops `key`'s revisions beyond the cap.
    fn cap_history(&self, wtxn: &mut RwTxn, key: &str) -> Result<(), StoreError> {
        match self.options.max_revisions {
            0 => Ok(()),
            max => self.history.drop_after(wtxn, key, max),
        }
    }

    /// Removes `key` (held at `held`) with its history.
    pub(super) fn forget(
        &self,
        wtxn: &mut RwTxn,
        key: &str,
        held: &Header,
    ) -> Result<(), StoreError> {
        self.history.drop_after(wtxn, key, 0)?;
        self.kv.delete(wtxn, key.as_bytes())?;
        self.merkle.note(&self.index_ops, key, Some(&held.id), None);
        Ok(())
    }

    pub(super) fn apply(
        &self,
        wtxn: &mut RwTxn,
        op: &WriteOp,
        now_ms: u64,
    ) -> Result<Result<WriteOutcome, WriteRejected>, StoreError> {
        let held = self.read(wtxn, &op.key)?;
        let created = !held.as_ref().is_some_and(|v| v.is_live(now_ms));
        let version = match plan_write(held.as_ref(), op, now_ms) {
            Ok(version) => version,
            Err(rejected) => return Ok(Err(rejected)),
        };
        let record = record::encode(&version, self.options.compression_min_bytes)?;
        let held = held.as_ref().map(Header::of);
        self.store_version(wtxn, &op.key, held.as_ref(), &version, &record)?;
        Ok(Ok(WriteOutcome { version, created }))
    }

    /// Stores what the write-ahead log accepted, in one commit, as if item by item in
    /// order. A version that does not supersede the one held before it is skipped and an
    /// audit entry overwrites itself, which makes replaying a log idempotent.
    ///
    /// The work is done key by key in key order (B-tree pages are then visited in
    /// order): every superseding version of a key joins its history, and only the last
    /// becomes current, so a key written many times in one batch updates the current
    /// version and its indexes once. A key past the last one held at the start is not
    /// looked up (a bootstrap brings nothing else). Audit entries past the stored ones
    /// are appended; with `seal`, the head after the last of them is recorded in the
    /// same commit and returned (sealed), for its copy outside LMDB. `through` (when not
    /// 0) is the log seq of the last item, recorded in the same commit as
    /// [`APPLIED_SEQ`](super::meta::APPLIED_SEQ).
    pub fn apply_logged(
        &self,
        items: &[Logged],
        seal: Option<&AuditSeal>,
        through: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut wtxn = self.begin()?;
        if through > 0 {
            self.meta.put(
                &mut wtxn,
                super::meta::APPLIED_SEQ.as_bytes(),
                &through.to_be_bytes(),
            )?;
        }
        let mut last_audit = self
            .audit
            .last(&wtxn)?
            .and_then(|(seq, _)| seq.try_into().ok().map(u64::from_be_bytes));
        let mut versions: Vec<&Staged> = Vec::with_capacity(items.len());
        let mut newest_audit = None;
        for item in items {
            match item {
                Logged::Version(staged) => versions.push(staged),
                Logged::Audit(entry) => {
                    let stored = super::audit_codec::encode(entry);
                    let seq = entry.seq.to_be_bytes();
                    let flags = match last_audit {
                        Some(last) if last >= entry.seq => PutFlags::empty(),
                        _ => PutFlags::APPEND,
                    };
                    self.audit.put_with_flags(&mut wtxn, flags, &seq, &stored)?;
                    last_audit = last_audit.max(Some(entry.seq));
                    newest_audit = Some(entry);
                }
            }
        }
        // Stable: the versions of a key stay in log order (already sorted, as in a
        // bootstrap, costs one pass).
        versions.sort_by(|a, b| a.key.cmp(&b.key));
        let last_held = self.kv.last(&wtxn)?.map(|(key, _)| key.to_vec());
        for versions in versions.chunk_by(|a, b| a.key == b.key) {
            let key = versions[0].key.as_str();
            let held = match &last_held {
                Some(last) if key.as_bytes() <= last.as_slice() => self.header(&wtxn, key)?,
                _ => None,
            };
            let mut newest = held.as_ref().map(|h| h.id);
            let mut current = None;
            for staged in versions {
                if newest.is_some_and(|id| staged.version.id.precedence(&id).is_le()) {
                    continue;
                }
                newest = Some(staged.version.id);
                self.add_revision(&mut wtxn, key, &staged.version, &staged.record)?;
                current = Some(staged);
            }
            if let Some(staged) = current {
                self.replace(
                    &mut wtxn,
                    key,
                    held.as_ref(),
                    &staged.version,
                    &staged.record,
                )?;
                self.cap_history(&mut wtxn, key)?;
            }
        }
        let sealed = match (seal, newest_audit) {
            (Some(seal), Some(entry)) => {
                let sealed = seal.after(entry);
                self.put_audit_head(&mut wtxn, &sealed)?;
                Some(sealed)
            }
            _ => None,
        };
        self.commit(wtxn)?;
        Ok(sealed)
    }
}

/// Where the version whose header is `header` sits in the time indexes (its entry there
/// is `index_key(position, key)`): a value in
/// `by_time` (and in `expiring` with a TTL), a tombstone in `tombstones` from when it
/// died.
pub(super) fn time_positions(header: &Header) -> impl Iterator<Item = (Table, u64)> {
    let positions = if header.tombstone {
        let since = header.dead_since().unwrap_or(header.id.timestamp);
        [Some((Table::Tombstones, since)), None]
    } else {
        [
            Some((Table::ByTime, header.id.timestamp)),
            header.expires_at.map(|at| (Table::Expiring, at)),
        ]
    };
    positions.into_iter().flatten()
}
