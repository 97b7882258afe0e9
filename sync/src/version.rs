//! Versions of a key and the conflict rule between two of them.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity of a version: what the conflict rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionId {
    /// Unix milliseconds of the write (causal: above any version the writer held).
    pub timestamp: u64,
    /// When the origin node first joined its cluster (Unix ms); earlier wins ties.
    pub origin_joined_at: u64,
    /// A fresh UUID per write; the smaller wins the last tie.
    pub uuid: Uuid,
}

impl VersionId {
    /// The conflict rule as an order: `Greater` means `self` wins over `other`.
    ///
    /// Higher timestamp wins; then the origin that joined the cluster earlier; then the
    /// smaller uuid. A pure function of the two ids, so every replica agrees.
    pub fn precedence(&self, other: &Self) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| other.origin_joined_at.cmp(&self.origin_joined_at))
            .then_with(|| other.uuid.cmp(&self.uuid))
    }
}

/// One version of a key: a value or a tombstone, with its ownership and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// What the conflict rule compares.
    pub id: VersionId,
    /// The value as JSON text, or `None` for a tombstone (a delete).
    pub data: Option<String>,
    /// The user who created the key, if known.
    pub owner: Option<String>,
    /// The group of the key, if any.
    pub group: Option<String>,
    /// Permission bits (12 bits: owner, group, others; create 8, delete 4, write 2, read 1).
    pub permissions: u16,
    /// Unix ms after which the version reads as absent.
    pub expires_at: Option<u64>,
}

impl Version {
    /// Whether this version wins over `other` by the conflict rule.
    pub fn supersedes(&self, other: &Version) -> bool {
        self.id.precedence(&other.id) == Ordering::Greater
    }

    /// A tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }

    /// Whether the version has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// Whether the key reads as present at `now_ms`: a value that has not expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    /// When the key stopped being present: a tombstone's delete or the expiry of the
    /// value it replaced (whichever is later), a value's expiry; `None` for a value that
    /// never expires.
    pub fn dead_since(&self) -> Option<u64> {
        match (self.is_tombstone(), self.expires_at) {
            (true, expires_at) => Some(self.id.timestamp.max(expires_at.unwrap_or(0))),
            (false, expires_at) => expires_at,
        }
    }

    /// When this version became the key's state, as the time indexes order it: a value
    /// at its timestamp, a tombstone when the key died ([`Self::dead_since`]).
    pub fn changed_at(&self) -> u64 {
        match self.is_tombstone() {
            true => self.dead_since().unwrap_or(self.id.timestamp),
            false => self.id.timestamp,
        }
    }

    /// Whether, at `now_ms`, the key has been absent for `tombstone_ttl_ms` or longer: no
    /// replica keeps, sends or takes such a version any more.
    pub fn is_past_keeping(&self, now_ms: u64, tombstone_ttl_ms: u64) -> bool {
        self.dead_since()
            .is_some_and(|since| since.saturating_add(tombstone_ttl_ms) <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(timestamp: u64, origin_joined_at: u64, uuid: u128) -> VersionId {
        VersionId {
            timestamp,
            origin_joined_at,
            uuid: Uuid::from_u128(uuid),
        }
    }

    #[test]
    fn higher_timestamp_wins() {
        assert_eq!(id(2, 9, 9).precedence(&id(1, 1, 1)), Ordering::Greater);
        assert_eq!(id(1, 1, 1).precedence(&id(2, 9, 9)), Ordering::Less);
    }

    #[test]
    fn older_origin_wins_equal_timestamps() {
        assert_eq!(id(5, 1, 9).precedence(&id(5, 2, 1)), Ordering::Greater);
    }

    #[test]
    fn smaller_uuid_wins_last_tie() {
        assert_eq!(id(5, 1, 1).precedence(&id(5, 1, 2)), Ordering::Greater);
        assert_eq!(id(5, 1, 1).precedence(&id(5, 1, 1)), Ordering::Equal);
    }

    fn small_id() -> impl proptest::strategy::Strategy<Value = VersionId> {
        use proptest::prelude::*;
        // Few values each, so that equal timestamps and equal origins are common.
        (0..3u64, 0..3u64, 0..3u128).prop_map(|(t, o, u)| id(t, o, u))
    }

    proptest::proptest! {
        #[test]
        fn rule_is_a_total_order(a in small_id(), b in small_id(), c in small_id()) {
            use proptest::prop_assert_eq;
            prop_assert_eq!(a.precedence(&b) == Ordering::Equal, a == b, "totality");
            prop_assert_eq!(a.precedence(&b), b.precedence(&a).reverse(), "antisymmetry");
            if a.precedence(&b).is_ge() && b.precedence(&c).is_ge() {
                prop_assert_eq!(a.precedence(&c).is_ge(), true, "transitivity");
            }
        }
    }

    #[test]
    fn rule_is_antisymmetric() {
        let ids = [id(1, 1, 1), id(1, 2, 1), id(2, 1, 3), id(1, 1, 2)];
        for a in &ids {
            for b in &ids {
                assert_eq!(a.precedence(b), b.precedence(a).reverse());
            }
        }
    }
}
