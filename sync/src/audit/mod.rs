//! The audit trail: one entry per accepted mutation, each hash covering the previous
//! entry's hash, so that altering, removing or reordering any stored entry breaks the
//! chain from that entry on.
//!
//! `hash = HMAC-SHA256(audit key, "entry\n" | prev_hash | seq | timestamp | actor | action
//! | key)` in hex, the fields each followed by `\n`; the first entry's `prev_hash` is 64
//! zeros. The audit key ([`AuditKey`]) is derived from `cluster_secret`, which lives in
//! the config, outside the data dir: whoever can rewrite the data dir but does not know
//! the secret cannot compute an entry's hash, so an entry edited and the rest rehashed
//! no longer verify.
//!
//! Chains written before they were keyed used `SHA-256` over the same fields without the
//! `"entry\n"` prefix ([`AuditEntry::unkeyed_hash`]). A node that finds such a chain and
//! no recorded head adopts it at start: entries up to that point stay checked with the
//! unkeyed hash (anchored by the first keyed entry and the recorded head, which cover the
//! last unkeyed hash), and verification reports how many there are.
//!
//! The chain's head (seq and hash of the newest entry) is recorded, authenticated with the
//! same key ([`head`]), and verification checks that the chain reaches it: removing the
//! newest entries, which the links alone cannot show, is found too.
//!
//! What this cannot find, by construction (someone who can write the data dir but lacks
//! the secret):
//! - a rollback of the whole data dir (the entries and both copies of the head) to an
//!   earlier copy of itself: every part is authentic, only older. Keeping the head off
//!   the machine (exchanging heads with peers) would be needed; nodes do not do that yet;
//! - the whole trail removed with both copies of the head, or rewritten with unkeyed
//!   hashes and both copies removed: the data dir then looks like one from before audit
//!   trails were kept, or before they were keyed (verification reports the unkeyed
//!   entries, so the second shows);
//! - anything, when `cluster_secret` is not in the config: the node keeps a generated one
//!   in the data dir, so the key is there too.
//!
//! A change of `cluster_secret` changes the key: the existing chain no longer verifies.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Mutation, WriteOp};

pub mod head;
#[cfg(test)]
mod tests;

use self::head::RecordedHead;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The label that separates the audit key from every other use of the cluster secret.
const KEY_LABEL: &[u8] = b"kvs audit chain key v1";

/// The key of the audit chain's MACs: derived from the cluster secret, never stored.
#[derive(Clone)]
pub struct AuditKey {
    key: [u8; 32],
    /// Derived from an empty secret (none in the config): known to anyone.
    weak: bool,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("weak", &self.weak)
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// The audit key of `secret` (the config's `cluster_secret`):
    /// `HMAC-SHA256(secret, "kvs audit chain key v1")`.
    pub fn from_secret(secret: &str) -> Self {
        let mut mac = Self::mac_with(secret.as_bytes());
        mac.update(KEY_LABEL);
        Self {
            key: mac.finalize().into_bytes().into(),
            weak: secret.is_empty(),
        }
    }

    /// Whether the key came from an empty secret, so that it protects nothing.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    fn mac_with(key: &[u8]) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
    }

    /// The MAC of `parts` under this key, each part followed by `\n`, in hex.
    pub(crate) fn mac(&self, parts: &[&str]) -> String {
        let mut mac = Self::mac_with(&self.key);
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

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

impl AuditEntry {
    /// The entry for accepted `op` at `timestamp`, chained after `prev_hash`.
    pub fn for_op(seq: u64, timestamp: u64, op: &WriteOp, prev_hash: &str, key: &AuditKey) -> Self {
        let (action, op_key) = describe(op);
        let actor = op.actor.clone().unwrap_or_else(|| "anonymous".to_owned());
        let mut entry = Self {
            seq,
            timestamp,
            actor,
            action,
            key: op_key,
            hash: String::new(),
            prev_hash: prev_hash.to_owned(),
        };
        entry.hash = entry.keyed_hash(key);
        entry
    }

    fn fields(&self) -> [String; 6] {
        [
            self.prev_hash.clone(),
            self.seq.to_string(),
            self.timestamp.to_string(),
            self.actor.clone(),
            self.action.clone(),
            self.key.clone(),
        ]
    }

    /// The entry's hash under `key`, from its fields.
    pub fn keyed_hash(&self, key: &AuditKey) -> String {
        let fields = self.fields();
        let mut parts = vec!["entry"];
        parts.extend(fields.iter().map(String::as_str));
        key.mac(&parts)
    }

    /// The entry's hash as chains computed it before they were keyed: SHA-256 over the
    /// fields, each followed by `\n`. Anyone can compute it.
    pub fn unkeyed_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in self.fields() {
            hasher.update(part.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    /// Whether the entry's hash matches its fields under `key`.
    pub fn is_intact(&self, key: &AuditKey) -> bool {
        self.hash == self.keyed_hash(key)
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
        ("_auth/deleted-users/", "user"),
        ("_auth/groups/", "group"),
        ("_auth/deleted-groups/", "group"),
        ("_auth/tokens/", "token"),
        ("_auth/revoked/", "token"),
    ];
    for (prefix, kind) in records {
        if let Some(id) = op.key.strip_prefix(prefix) {
            let verb = match (kind, verb, prefix) {
                (_, _, "_auth/revoked/") => "revoke",
                (_, _, "_auth/deleted-users/" | "_auth/deleted-groups/") => "delete",
                ("token", "put", _) => "issue",
                _ => verb,
            };
            return (format!("{kind}.{verb}"), id.to_owned());
        }
    }
    (verb.to_owned(), op.key.clone())
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every entry is intact and in place, and the chain reaches its recorded head.
    Intact {
        /// Entries checked.
        entries: u64,
        /// How many of them (the oldest) were written before chains were keyed, and are
        /// checked with the unkeyed hash.
        unkeyed: u64,
    },
    /// The first entry that was altered, removed (a gap, or cut off the end) or
    /// reordered, or from which on the chain cannot be trusted.
    Broken {
        /// Its sequence number (for a gap or a cut: the first missing one).
        first_bad_seq: u64,
        /// What was found, in words.
        reason: String,
    },
}

/// Checks entries stored in seq order (as read from the store) under `key`, against the
/// head recorded for them (see [`head::reconcile`]).
pub fn verify_chain(
    key: &AuditKey,
    head: &RecordedHead,
    entries: impl IntoIterator<Item = AuditEntry>,
) -> AuditVerdict {
    let verdict = walk(key, head, entries);
    match (&head.flaw, verdict) {
        (Some(flaw), AuditVerdict::Broken { first_bad_seq, .. }) if flaw.seq <= first_bad_seq => {
            flaw.verdict()
        }
        (Some(flaw), AuditVerdict::Intact { .. }) => flaw.verdict(),
        (_, verdict) => verdict,
    }
}

fn broken(first_bad_seq: u64, reason: String) -> AuditVerdict {
    AuditVerdict::Broken {
        first_bad_seq,
        reason,
    }
}

fn walk(
    key: &AuditKey,
    head: &RecordedHead,
    entries: impl IntoIterator<Item = AuditEntry>,
) -> AuditVerdict {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for entry in entries {
        let seq = expected_seq;
        if entry.seq > seq {
            return broken(
                seq,
                format!(
                    "entry {seq} is missing: the next stored entry is {}",
                    entry.seq
                ),
            );
        }
        if entry.seq < seq {
            return broken(entry.seq, format!("entry {} is out of order", entry.seq));
        }
        if entry.prev_hash != prev_hash {
            return broken(
                seq,
                format!("entry {seq} does not link to the entry before it"),
            );
        }
        let intact = match seq <= head.unkeyed_through {
            true => entry.hash == entry.unkeyed_hash(),
            false => entry.is_intact(key),
        };
        if !intact {
            return broken(
                seq,
                format!("entry {seq} does not match its hash under the audit key"),
            );
        }
        if seq == head.seq && entry.hash != head.hash {
            return broken(seq, format!("entry {seq} is not the recorded head"));
        }
        prev_hash = entry.hash;
        expected_seq += 1;
    }
    let entries = expected_seq - 1;
    if entries < head.seq {
        return broken(
            expected_seq,
            format!(
                "entries {expected_seq} to {} are missing: the chain ends before its recorded head",
                head.seq
            ),
        );
    }
    AuditVerdict::Intact {
        entries,
        unkeyed: head.unkeyed_through.min(entries),
    }
}
