//! The audit table of the LMDB store: reading entries back, the chain's recorded head in
//! `meta` (`audit_head`, sealed; see `kvs_sync::audit_head`), and checking the chain.

use std::ops::Bound;

use heed::RwTxn;
use kvs_sync::audit_head::{RecordedHead, reconcile};
use kvs_sync::{AuditEntry, AuditKey, AuditVerdict, StoreError, verify_chain};

use super::{LmdbStore, audit_codec};

/// The `meta` name of the sealed head.
const HEAD: &str = "audit_head";
/// The name of the head's copy outside LMDB, in the data dir.
pub(crate) const HEAD_FILE: &str = "audit.head";
/// Where the head's copy in LMDB is, for messages.
pub(crate) const META_COPY: &str = "LMDB's meta table";

/// How the head is recorded as entries are committed: `head` moved to the newest entry
/// and sealed under `key`.
#[derive(Debug, Clone)]
pub struct AuditSeal {
    pub key: AuditKey,
    /// The head recorded at start (its flaw and unkeyed part go on).
    pub head: RecordedHead,
}

impl AuditSeal {
    /// The sealed head after `entry`.
    pub fn after(&self, entry: &AuditEntry) -> Vec<u8> {
        self.head.advanced(entry.seq, &entry.hash).seal(&self.key)
    }
}

impl LmdbStore {
    /// Audit entries from `since_seq` on, at most `limit`, in seq order.
    pub fn audit_entries(
        &self,
        since_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let from = since_seq.to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .audit
            .range(&rtxn, &(Bound::Included(&from[..]), Bound::Unbounded))?
            .take(limit)
        {
            let (seq, bytes) = item?;
            out.push(audit_codec::decode(seq, bytes));
        }
        Ok(out)
    }

    /// The last audit entry, if any.
    pub fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self
            .audit
            .last(&rtxn)?
            .map(|(seq, bytes)| audit_codec::decode(seq, bytes)))
    }

    /// The audit entry `seq`, if stored.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        Ok(self
            .audit_entries(seq, 1)?
            .into_iter()
            .find(|e| e.seq == seq))
    }

    /// The sealed head kept in `meta`, if any.
    pub fn audit_head(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, HEAD.as_bytes())?.map(<[u8]>::to_vec))
    }

    /// Records the sealed head in `meta`.
    pub fn set_audit_head(&self, sealed: &[u8]) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, HEAD.as_bytes(), sealed)?;
        wtxn.commit()?;
        self.sync()
    }

    /// Removes every audit entry (tests: tampering as someone with the data dir could).
    #[cfg(test)]
    pub(crate) fn clear_audit(&self) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.audit.clear(&mut wtxn)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Records the sealed head within a write transaction.
    pub(super) fn put_audit_head(
        &self,
        wtxn: &mut RwTxn<'_>,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.meta.put(wtxn, HEAD.as_bytes(), sealed)?;
        Ok(())
    }

    /// Checks the whole audit chain under `key`, against the head in `meta` and `file`
    /// (the sealed copy kept outside LMDB, `None` when it is missing).
    pub fn verify_audit(
        &self,
        key: &AuditKey,
        file: Option<&[u8]>,
    ) -> Result<AuditVerdict, StoreError> {
        let rtxn = self.env.read_txn()?;
        let meta = self.meta.get(&rtxn, HEAD.as_bytes())?;
        let last = self
            .audit
            .last(&rtxn)?
            .map(|(seq, bytes)| audit_codec::decode(seq, bytes));
        let entry_at = |seq: u64| -> Result<_, StoreError> {
            let stored = self.audit.get(&rtxn, &seq.to_be_bytes())?;
            Ok(stored.map(|bytes| audit_codec::decode(&seq.to_be_bytes(), bytes)))
        };
        let copies = [(META_COPY, meta), (HEAD_FILE, file)];
        let head = reconcile(key, copies, last.as_ref(), entry_at, false)?.head;
        let mut failed = None;
        let entries = self.audit.iter(&rtxn)?.map_while(|item| match item {
            Ok((seq, bytes)) => Some(audit_codec::decode(seq, bytes)),
            Err(error) => {
                failed = Some(error);
                None
            }
        });
        let verdict = verify_chain(key, &head, entries);
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(verdict),
        }
    }
}
