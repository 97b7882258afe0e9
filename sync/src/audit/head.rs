//! The audit chain's recorded head: the seq and hash of the newest entry, sealed with the
//! audit key, kept by the node in two places (LMDB's `meta` table, committed with the
//! entries, and a file beside it), so that a chain cut short shows: the links cannot tell
//! a chain whose newest entries were removed from one that never had them.
//!
//! [`reconcile`] reads both copies against the stored chain, at start (where the chain
//! continues, what to warn about) and for every verification. What it finds wrong is a
//! [`Flaw`] that every later head carries on, so that a finding is not lost once new
//! entries move the head on. A chain cut short needs no flaw: the chain continues after
//! the recorded head, so the missing entries stay a gap.

use serde::{Deserialize, Serialize};

use super::{AuditEntry, AuditKey, AuditVerdict, GENESIS_HASH};

/// What the node recorded about its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedHead {
    /// The newest entry's seq (0: no entry yet).
    pub seq: u64,
    /// The newest entry's hash ([`GENESIS_HASH`] with none).
    pub hash: String,
    /// Entries up to this seq were written before chains were keyed.
    pub unkeyed_through: u64,
    /// The earliest finding that stays reported, if any.
    pub flaw: Option<Flaw>,
}

/// A finding kept in the head: from `seq` on, the chain cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flaw {
    /// The first seq concerned.
    pub seq: u64,
    /// What was found, in words.
    pub reason: String,
}

impl Flaw {
    pub(crate) fn verdict(&self) -> AuditVerdict {
        AuditVerdict::Broken {
            first_bad_seq: self.seq,
            reason: self.reason.clone(),
        }
    }
}

/// A head as stored: its fields and their MAC.
#[derive(Serialize, Deserialize)]
struct Sealed {
    #[serde(flatten)]
    head: RecordedHead,
    mac: String,
}

impl RecordedHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self::at(0, GENESIS_HASH.to_owned(), 0, None)
    }

    fn at(seq: u64, hash: String, unkeyed_through: u64, flaw: Option<Flaw>) -> Self {
        Self {
            seq,
            hash,
            unkeyed_through,
            flaw,
        }
    }

    fn mac(&self, key: &AuditKey) -> String {
        let (flaw_seq, reason) = match &self.flaw {
            Some(flaw) => (flaw.seq.to_string(), flaw.reason.as_str()),
            None => ("-".to_owned(), ""),
        };
        key.mac(&[
            "head",
            &self.seq.to_string(),
            &self.hash,
            &self.unkeyed_through.to_string(),
            &flaw_seq,
            reason,
        ])
    }

    /// The head as stored, with its MAC under `key` (JSON).
    pub fn seal(&self, key: &AuditKey) -> Vec<u8> {
        let sealed = Sealed {
            head: self.clone(),
            mac: self.mac(key),
        };
        serde_json::to_vec(&sealed).expect("a head serializes")
    }

    /// The head stored as `bytes`, if its MAC under `key` holds; else why not.
    pub fn unseal(bytes: &[u8], key: &AuditKey) -> Result<Self, &'static str> {
        let sealed: Sealed = serde_json::from_slice(bytes).map_err(|_| "does not decode")?;
        match sealed.mac == sealed.head.mac(key) {
            true => Ok(sealed.head),
            false => Err("is not authentic (altered, or sealed under another cluster_secret)"),
        }
    }

    /// This head moved to a newer entry (flaw and unkeyed part kept).
    pub fn advanced(&self, seq: u64, hash: &str) -> Self {
        Self::at(
            seq,
            hash.to_owned(),
            self.unkeyed_through,
            self.flaw.clone(),
        )
    }
}

/// What [`reconcile`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The head to check the chain against and to record from now on: where the chain
    /// continues (the newest stored entry, or the recorded head when the chain ends
    /// before it), with the earliest flaw.
    pub head: RecordedHead,
    /// What a node should warn about at start.
    pub notes: Vec<String>,
}

/// Reads the stored copies of the head (`(where, bytes)`, `None` for a missing one)
/// against the chain, whose newest entry is `last`; `entry_at` reads the stored entry
/// with a seq. With `adopt_unkeyed`, a chain with no recorded head whose newest entry has
/// the unkeyed hash (written before chains were keyed) is adopted as unkeyed.
pub fn reconcile<E>(
    key: &AuditKey,
    copies: [(&str, Option<&[u8]>); 2],
    last: Option<&AuditEntry>,
    entry_at: impl FnOnce(u64) -> Result<Option<AuditEntry>, E>,
    adopt_unkeyed: bool,
) -> Result<Reconciled, E> {
    let last_seq = last.map_or(0, |entry| entry.seq);
    let (mut good, mut bad, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (place, bytes) in copies {
        match bytes.map(|bytes| RecordedHead::unseal(bytes, key)) {
            None => missing.push(place),
            Some(Ok(head)) => good.push(head),
            Some(Err(why)) => bad.push(format!("the recorded head in {place} {why}")),
        }
    }
    let mut flaws: Vec<Flaw> = good.iter().filter_map(|h| h.flaw.clone()).collect();
    let mut notes = Vec::new();
    let recorded = good.iter().max_by_key(|head| head.seq).cloned();
    let beyond = last_seq.max(recorded.as_ref().map_or(0, |head| head.seq)) + 1;
    let cut = |why: String| Flaw {
        seq: beyond,
        reason: format!("{why}: entries from {beyond} on may have been cut off"),
    };
    flaws.extend(bad.iter().cloned().map(cut));
    let fresh = last.is_none() && bad.is_empty() && good.iter().all(|head| head.seq == 0);
    let base = match recorded {
        Some(recorded) => {
            if !missing.is_empty() && !fresh {
                let places = missing.join(" and ");
                flaws.push(cut(format!("the recorded head in {places} was missing")));
            }
            if recorded.seq > 0
                && let Some(entry) = entry_at(recorded.seq)?
                && entry.hash != recorded.hash
            {
                flaws.push(Flaw {
                    seq: recorded.seq,
                    reason: format!("entry {} is not the recorded head", recorded.seq),
                });
            }
            if recorded.seq > last_seq {
                notes.push(format!(
                    "the audit chain ends at entry {last_seq}, before its recorded head {}",
                    recorded.seq
                ));
            }
            recorded
        }
        None => match last {
            None => RecordedHead::genesis(),
            Some(last) => {
                let unkeyed = last.hash == last.unkeyed_hash() && !last.is_intact(key);
                if adopt_unkeyed && unkeyed && bad.is_empty() {
                    notes.push(format!(
                        "audit entries 1 to {} were written before the chain was keyed; \
                         they are kept and checked with the unkeyed hash",
                        last.seq
                    ));
                    RecordedHead::at(last.seq, last.hash.clone(), last.seq, None)
                } else {
                    if bad.is_empty() {
                        flaws.push(cut("the recorded head was missing".to_owned()));
                    }
                    RecordedHead::at(last.seq, last.hash.clone(), 0, None)
                }
            }
        },
    };
    let flaw = flaws.into_iter().min_by_key(|flaw| flaw.seq);
    if let Some(flaw) = &flaw {
        notes.push(format!(
            "the audit chain is flawed from entry {}: {}",
            flaw.seq, flaw.reason
        ));
    }
    let mut head = match last {
        Some(last) if last.seq >= base.seq => base.advanced(last.seq, &last.hash),
        _ => base,
    };
    head.flaw = flaw;
    Ok(Reconciled { head, notes })
}
