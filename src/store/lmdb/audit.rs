//! The audit table of the LMDB store: reading entries back and checking the chain.

use std::ops::Bound;

use kvs_sync::{AuditEntry, AuditVerdict, StoreError, verify_chain};

use super::LmdbStore;

/// An audit entry from its stored bytes; one that does not decode comes back with an
/// empty hash, which no chain check accepts.
fn decode_audit(seq: &[u8], json: &[u8]) -> AuditEntry {
    serde_json::from_slice(json).unwrap_or_else(|_| AuditEntry {
        seq: seq.try_into().map(u64::from_be_bytes).unwrap_or(0),
        timestamp: 0,
        actor: String::new(),
        action: String::new(),
        key: String::new(),
        hash: String::new(),
        prev_hash: String::new(),
    })
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
            let (seq, json) = item?;
            out.push(decode_audit(seq, json));
        }
        Ok(out)
    }

    /// The last audit entry, if any.
    pub fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self
            .audit
            .last(&rtxn)?
            .map(|(seq, json)| decode_audit(seq, json)))
    }

    /// Checks the whole audit chain.
    pub fn verify_audit(&self) -> Result<AuditVerdict, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut failed = None;
        let entries = self.audit.iter(&rtxn)?.map_while(|item| match item {
            Ok((seq, json)) => Some(decode_audit(seq, json)),
            Err(error) => {
                failed = Some(error);
                None
            }
        });
        let verdict = verify_chain(entries);
        match failed {
            Some(error) => Err(error.into()),
            None => Ok(verdict),
        }
    }
}
