//! What a replica takes from its peers: the checks every version received by push or by
//! anti-entropy passes before it reaches [`crate::Store::merge`], so that no peer (or bug)
//! can plant a key the API would refuse, a value that is not JSON, a timestamp from the
//! future that would win every later conflict, or a deletion nobody keeps any more.

use crate::Version;

/// The longest key a peer may send (API keys are at most 512 bytes; `_auth` ids are short).
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a version from a peer was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is empty, too long, or holds control characters.
    #[error("malformed key")]
    BadKey,
    /// The value is not JSON, or an expiry is 0.
    #[error("malformed value")]
    BadValue,
    /// Stamped further ahead of the local clock than `max_clock_skew`, or a tombstone
    /// of a value expiring further ahead (an expired value is made a tombstone only once
    /// its expiry has passed, so such a tombstone would stay dead, unpurged, for ever).
    #[error("timestamp from the future")]
    FromTheFuture,
    /// A deletion (or expiry) older than `tombstone_ttl`: every replica drops it.
    #[error("deletion past keeping")]
    PastKeeping,
}

/// The receiving node's clock and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The local wall clock (Unix ms).
    pub now_ms: u64,
    /// How far ahead of `now_ms` a version may be stamped.
    pub max_clock_skew_ms: u64,
    /// How long deletions are kept.
    pub tombstone_ttl_ms: u64,
}

impl Admission {
    /// Checks one version from a peer.
    pub fn check(&self, key: &str, version: &Version) -> Result<(), Refusal> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(Refusal::BadKey);
        }
        let latest = self.now_ms.saturating_add(self.max_clock_skew_ms);
        let died_later = version.is_tombstone() && version.expires_at.is_some_and(|at| at > latest);
        if version.id.timestamp > latest || died_later {
            return Err(Refusal::FromTheFuture);
        }
        if version.expires_at == Some(0) {
            return Err(Refusal::BadValue);
        }
        if let Some(data) = &version.data
            && serde_json::from_str::<serde::de::IgnoredAny>(data).is_err()
        {
            return Err(Refusal::BadValue);
        }
        if version.is_past_keeping(self.now_ms, self.tombstone_ttl_ms) {
            return Err(Refusal::PastKeeping);
        }
        Ok(())
    }

    /// Splits `versions` into those taken and a count of refusals by reason.
    pub fn filter(
        &self,
        versions: Vec<(String, Version)>,
    ) -> (Vec<(String, Version)>, RefusalCounts) {
        let sorted = self.sort(versions);
        (sorted.taken, sorted.counts)
    }

    /// Splits `versions` into those taken, the deletions refused as past keeping (which a
    /// session still uses: see `Session::merge`), and a count of refusals by reason.
    pub fn sort(&self, versions: Vec<(String, Version)>) -> Sorted {
        let mut sorted = Sorted::default();
        for (key, version) in versions {
            match self.check(&key, &version) {
                Ok(()) => sorted.taken.push((key, version)),
                Err(refusal) => {
                    sorted.counts.add(refusal);
                    if refusal == Refusal::PastKeeping {
                        sorted.past_keeping.push((key, version));
                    }
                }
            }
        }
        sorted
    }
}

/// Versions from a peer as [`Admission::sort`] splits them.
#[derive(Debug, Default)]
pub struct Sorted {
    /// Those that pass.
    pub taken: Vec<(String, Version)>,
    /// Deletions (or expiries) refused as past keeping.
    pub past_keeping: Vec<(String, Version)>,
    /// Refusals by reason, `past_keeping` included.
    pub counts: RefusalCounts,
}

/// Refused versions by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    /// Malformed keys or values.
    pub malformed: u64,
    /// Stamped too far in the future.
    pub from_the_future: u64,
    /// Deletions past keeping.
    pub past_keeping: u64,
}

impl RefusalCounts {
    fn add(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::BadKey | Refusal::BadValue => self.malformed += 1,
            Refusal::FromTheFuture => self.from_the_future += 1,
            Refusal::PastKeeping => self.past_keeping += 1,
        }
    }

    /// Adds `other` into these counts.
    pub fn merge(&mut self, other: RefusalCounts) {
        self.malformed += other.malformed;
        self.from_the_future += other.from_the_future;
        self.past_keeping += other.past_keeping;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VersionId;

    fn version(timestamp: u64, data: Option<&str>, expires_at: Option<u64>) -> Version {
        Version {
            id: VersionId {
                timestamp,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(7),
            },
            data: data.map(str::to_owned),
            owner: None,
            group: None,
            permissions: 0xf31,
            expires_at,
        }
    }

    const RULES: Admission = Admission {
        now_ms: 1_000_000,
        max_clock_skew_ms: 30_000,
        tombstone_ttl_ms: 100_000,
    };

    #[test]
    fn sane_versions_pass() {
        assert_eq!(
            RULES.check("a/b", &version(1_000_000, Some("{\"x\":1}"), None)),
            Ok(())
        );
        assert_eq!(
            RULES.check("a", &version(1_030_000, Some("1"), Some(2_000_000))),
            Ok(())
        );
        assert_eq!(RULES.check("gone", &version(950_000, None, None)), Ok(()));
        // A value that expired (on a clock up to max_clock_skew ahead) into a tombstone.
        assert_eq!(
            RULES.check("expired", &version(950_000, None, Some(1_030_000))),
            Ok(())
        );
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let fine = version(1_000_000, Some("1"), None);
        assert_eq!(RULES.check("", &fine), Err(Refusal::BadKey));
        assert_eq!(RULES.check(&"k".repeat(1025), &fine), Err(Refusal::BadKey));
        assert_eq!(RULES.check("a\nb", &fine), Err(Refusal::BadKey));
        assert_eq!(
            RULES.check("a", &version(1_000_000, Some("{"), None)),
            Err(Refusal::BadValue)
        );
        assert_eq!(
            RULES.check("a", &version(1_000_000, Some("1"), Some(0))),
            Err(Refusal::BadValue)
        );
        assert_eq!(
            RULES.check("a", &version(1_030_001, Some("1"), None)),
            Err(Refusal::FromTheFuture)
        );
        assert_eq!(
            RULES.check("a", &version(u64::MAX, None, None)),
            Err(Refusal::FromTheFuture)
        );
        assert_eq!(
            RULES.check("a", &version(950_000, None, Some(1_030_001))),
            Err(Refusal::FromTheFuture)
        );
        assert_eq!(
            RULES.check("a", &version(950_000, None, Some(u64::MAX))),
            Err(Refusal::FromTheFuture)
        );
        assert_eq!(
            RULES.check("a", &version(900_000, None, None)),
            Err(Refusal::PastKeeping)
        );
        assert_eq!(
            RULES.check("a", &version(10, Some("1"), Some(900_000))),
            Err(Refusal::PastKeeping)
        );
    }

    #[test]
    fn filter_counts_what_it_drops() {
        let (taken, counts) = RULES.filter(vec![
            ("a".into(), version(1_000_000, Some("1"), None)),
            ("".into(), version(1_000_000, Some("1"), None)),
            ("b".into(), version(u64::MAX, Some("1"), None)),
            ("c".into(), version(1, None, None)),
        ]);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            counts,
            RefusalCounts {
                malformed: 1,
                from_the_future: 1,
                past_keeping: 1
            }
        );
    }
}
