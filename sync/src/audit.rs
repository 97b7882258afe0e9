//! The audit trail: one entry per accepted mutation, each hash covering the previous
//! entry's hash, so that altering, removing or reordering any stored entry breaks the
//! chain from that entry on.
//!
//! `hash = SHA-256(prev_hash | seq | timestamp | actor | action | key)` in hex, the fields
//! joined by `\n`; the first entry's `prev_hash` is 64 zeros.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Mutation, WriteOp};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When the mutation was accepted (Unix ms).
    pub timestamp: u64,
    /// Who asked: a user id, or `anonymous`.
    pub actor: String,
    /// `put`, `delete` or `meta` for keys; `user.put`, `user.delete`, `group.put`,
    /// `group.delete`, `token.issue`, `token.revoke` for `/auth` records.
    pub action: String,
    /// The key (for `/auth` records, the record's id).
    pub key: String,
    /// This entry's hash.
    pub hash: String,
    /// The previous entry's hash.
    pub prev_hash: String,
}

fn chain_hash(
    prev_hash: &str,
    seq: u64,
    timestamp: u64,
    actor: &str,
    action: &str,
    key: &str,
) -> String {
    let mut hasher = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &timestamp.to_string(),
        actor,
        action,
        key,
    ] {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

impl AuditEntry {
    /// The entry for accepted `op` at `timestamp`, chained after `prev_hash`.
    pub fn for_op(seq: u64, timestamp: u64, op: &WriteOp, prev_hash: &str) -> Self {
        let (action, key) = describe(op);
        let actor = op.actor.clone().unwrap_or_else(|| "anonymous".to_owned());
        let hash = chain_hash(prev_hash, seq, timestamp, &actor, &action, &key);
        Self {
            seq,
            timestamp,
            actor,
            action,
            key,
            hash,
            prev_hash: prev_hash.to_owned(),
        }
    }

    /// Whether the entry's hash matches its fields.
    pub fn is_intact(&self) -> bool {
        self.hash
            == chain_hash(
                &self.prev_hash,
                self.seq,
                self.timestamp,
                &self.actor,
                &self.action,
                &self.key,
            )
    }
}

/// What the audit trail calls an op: its action and the key it names.
fn describe(op: &WriteOp) -> (String, String) {
    let verb = match op.mutation {
        Mutation::Put { .. } => "put",
        Mutation::Delete => "delete",
        Mutation::SetMeta { .. } => "meta",
    };
    let records = [
        ("_auth/users/", "user"),
        ("_auth/groups/", "group"),
        ("_auth/tokens/", "token"),
        ("_auth/revoked/", "token"),
    ];
    for (prefix, kind) in records {
        if let Some(id) = op.key.strip_prefix(prefix) {
            let verb = match (kind, verb, prefix) {
                (_, _, "_auth/revoked/") => "revoke",
                ("token", "put", _) => "issue",
                _ => verb,
            };
            return (format!("{kind}.{verb}"), id.to_owned());
        }
    }
    (verb.to_owned(), op.key.clone())
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every entry is intact and in place.
    Intact {
        /// Entries checked.
        entries: u64,
    },
    /// The first entry that was altered, removed (a gap) or reordered.
    Broken {
        /// Its sequence number (for a gap: the missing one).
        first_bad_seq: u64,
    },
}

/// Checks entries stored in seq order (as read from the store).
pub fn verify_chain(entries: impl IntoIterator<Item = AuditEntry>) -> AuditVerdict {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for entry in entries {
        if entry.seq != expected_seq || entry.prev_hash != prev_hash || !entry.is_intact() {
            return AuditVerdict::Broken {
                first_bad_seq: expected_seq.min(entry.seq),
            };
        }
        prev_hash = entry.hash;
        expected_seq += 1;
    }
    AuditVerdict::Intact {
        entries: expected_seq - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Precondition;

    fn op(key: &str, mutation: Mutation) -> WriteOp {
        WriteOp {
            key: key.into(),
            mutation,
            precondition: Precondition::None,
            uuid: uuid::Uuid::nil(),
            origin_joined_at: 1,
            owner: None,
            group: None,
            permissions: 0xf31,
            actor: Some("alice".into()),
        }
    }

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let put = Mutation::Put {
                    data: "1".into(),
                    ttl_ms: None,
                };
                let entry =
                    AuditEntry::for_op(seq, 1000 + seq, &op(&format!("k{seq}"), put), &prev);
                prev = entry.hash.clone();
                entry
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_chain(chain(5)), AuditVerdict::Intact { entries: 5 });
        assert_eq!(
            verify_chain(Vec::new()),
            AuditVerdict::Intact { entries: 0 }
        );
    }

    #[test]
    fn alteration_removal_and_reordering_are_found() {
        let mut altered = chain(5);
        altered[2].actor = "mallory".into();
        assert_eq!(
            verify_chain(altered),
            AuditVerdict::Broken { first_bad_seq: 3 }
        );
        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(
            verify_chain(removed),
            AuditVerdict::Broken { first_bad_seq: 2 }
        );
        let mut reordered = chain(5);
        reordered.swap(3, 4);
        assert_eq!(
            verify_chain(reordered),
            AuditVerdict::Broken { first_bad_seq: 4 }
        );
        let mut rehashed = chain(5);
        rehashed[1].key = "other".into();
        rehashed[1].hash = chain_hash(&rehashed[1].prev_hash, 2, 1002, "alice", "put", "other");
        assert_eq!(
            verify_chain(rehashed),
            AuditVerdict::Broken { first_bad_seq: 3 },
            "a recomputed hash breaks the next link"
        );
        let truncated_front: Vec<_> = chain(3).into_iter().skip(1).collect();
        assert_eq!(
            verify_chain(truncated_front),
            AuditVerdict::Broken { first_bad_seq: 1 }
        );
    }

    #[test]
    fn actions_name_records() {
        let put = || Mutation::Put {
            data: "{}".into(),
            ttl_ms: None,
        };
        let cases = [
            (op("a/b", put()), "put", "a/b"),
            (op("a/b", Mutation::Delete), "delete", "a/b"),
            (op("_auth/users/u1", put()), "user.put", "u1"),
            (op("_auth/users/u1", Mutation::Delete), "user.delete", "u1"),
            (op("_auth/groups/g1", put()), "group.put", "g1"),
            (op("_auth/tokens/j1", put()), "token.issue", "j1"),
            (op("_auth/revoked/j1", put()), "token.revoke", "j1"),
        ];
        for (op, action, key) in cases {
            assert_eq!(describe(&op), (action.to_owned(), key.to_owned()));
        }
    }
}
