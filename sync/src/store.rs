//! The storage seam: what a replica's store must do, whatever it is built on.

use crate::merkle::{Leaf, MerkleTree};
use crate::{Version, VersionId, WriteOp, WriteRejected};

/// How a store keeps data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Versions kept per key for history, the current one included; 0 turns history off.
    pub max_revisions: usize,
    /// Values of at least this many bytes are compressed (zstd); `None` turns it off.
    /// Stores that keep data in memory may ignore it.
    pub compression_min_bytes: Option<usize>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_revisions: 10,
            compression_min_bytes: Some(1024),
        }
    }
}

/// A failure of the storage itself (not of a request).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The underlying database failed.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The disk is full: the write was not taken (nothing acknowledged is lost), and
    /// writes are taken again once space is freed.
    #[error("no space left on the node's disk: {0}")]
    Full(String),
    /// A stored record could not be decoded.
    #[error("corrupt record for key {key:?}: {reason}")]
    Corrupt {
        /// The key whose record is corrupt.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// The result of an accepted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The version now current.
    pub version: Version,
    /// Whether the key was absent (never written, deleted or expired) before.
    pub created: bool,
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Its current version's identity.
    pub id: VersionId,
}

/// Where a listing stopped; pass it back to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After this key (listing by prefix).
    Key(String),
    /// After this timestamp and key (listing by time).
    Time(u64, String),
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// Live keys, in the listing's order.
    pub items: Vec<Listed>,
    /// Where to continue, when more may follow.
    pub next: Option<Cursor>,
}

impl ListPage {
    /// A page from up to `limit + 1` items: the extra item only tells that more follow,
    /// and the cursor then points at the last item kept.
    pub fn from_overfetched(
        mut items: Vec<Listed>,
        limit: usize,
        cursor: impl Fn(&Listed) -> Cursor,
    ) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor)
        } else {
            None
        };
        ListPage { items, next }
    }
}

/// A version that became a key's current one on a store: what `/watch` streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: String,
    /// Its new version (a tombstone for a delete or an expiry).
    pub version: Version,
    /// Whether the key expired (its tombstone was written by a purge, not a delete).
    pub expired: bool,
}

impl Change {
    /// Whether the change is an expiry: a purge's tombstone here, or one that came from
    /// a peer (a tombstone that keeps the expiry of the value it replaced: a node that
    /// gets the key only after its expiry merges the purge's tombstone, and reported it
    /// as a `delete`; found by a black-box audit).
    pub fn is_expiry(&self) -> bool {
        self.expired || (self.version.is_tombstone() && self.version.expires_at.is_some())
    }

    /// The event name: `put`, `delete` or `expire`.
    pub fn kind(&self) -> &'static str {
        match (self.is_expiry(), self.version.is_tombstone()) {
            (true, _) => "expire",
            (false, true) => "delete",
            (false, false) => "put",
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeStats {
    /// Expired values turned into tombstones.
    pub expired: usize,
    /// Tombstones older than the tombstone lifetime removed with their history.
    pub tombstones: usize,
    /// Tombstones as old, kept because they may not have reached every peer
    /// ([`Undelivered`]).
    pub kept_undelivered: usize,
}

/// This node's own writes that may not have reached every peer yet: those of its origin
/// (`origin_joined_at`, as in their [`crate::VersionId`]) stamped at or after `since_ms`.
///
/// [`Store::purge`] keeps their tombstones past `tombstone_ttl`: a node cut off from
/// every peer for longer would otherwise forget the deletes it took meanwhile before any
/// peer had them, and take the values back from its peers when it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered {
    /// The `origin_joined_at` of this node's writes.
    pub origin_joined_at: u64,
    /// The time (Unix ms) before which all of them had reached every live peer.
    pub since_ms: u64,
}

impl Undelivered {
    /// Whether `version` is one of these writes.
    pub fn holds(&self, version: &Version) -> bool {
        self.holds_id(&version.id)
    }

    /// Whether the version `id` names is one of these writes (a burial, which no write
    /// made, never is: it hides a value only here, and goes soon).
    pub fn holds_id(&self, id: &crate::VersionId) -> bool {
        id.origin_joined_at == self.origin_joined_at
            && id.timestamp >= self.since_ms
            && !id.uuid.is_nil()
    }

    /// The tombstone `version` kept as dead from `now_ms` (the same version id, so the
    /// same merkle leaf and the same place under the conflict rule; `expires_at` marks
    /// when the key counts as dead from): when it reaches a peer it is a deletion the
    /// peer takes and keeps, not one past keeping that it drops while it still holds the
    /// value deleted.
    pub fn kept(version: &Version, now_ms: u64) -> Version {
        Version {
            expires_at: Some(now_ms),
            ..version.clone()
        }
    }
}

/// Size figures of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// The keys a client sees: live values outside the reserved `_` prefix (an expired
    /// value may count until the purge).
    pub keys: u64,
    /// Every entry held: the keys, tombstones not yet purged, and reserved entries.
    pub entries: u64,
    /// Bytes the store occupies (on disk, or an estimate in memory).
    pub bytes: u64,
}

/// A replica's store. Every method is blocking; async callers run it off the reactor.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` in order as one atomic, durable commit; each op sees the effect of
    /// the ones before it. A rejected op changes nothing and does not stop the others.
    #[allow(clippy::type_complexity)]
    fn write_batch(
        &self,
        ops: &[WriteOp],
        now_ms: u64,
    ) -> Result<Vec<Result<WriteOutcome, WriteRejected>>, StoreError>;

    /// The version held for `key`, tombstones and expired versions included.
    fn get(&self, key: &str) -> Result<Option<Version>, StoreError>;

    /// [`Store::get`] of each of `keys`, in order; a store may read them in one pass.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Version>>, StoreError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Live keys starting with `prefix`, in byte order, after `after`, at most `limit`.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError>;

    /// Live keys written at or after `since_ms`, by timestamp then key, after `after`.
    fn list_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ListPage, StoreError>;

    /// Keys whose current version came at or after `since_ms`, deletions and expiries
    /// included: a value at its timestamp, a tombstone at the time the key died
    /// ([`Version::dead_since`]). Each as `(that time, key)`, ordered by both, after
    /// `after`, at most `limit`: what `/watch` replays to a client that (re)connects.
    fn changes_since(
        &self,
        since_ms: u64,
        after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// Every kept version of `key`, tombstones included, newest first by the conflict
    /// rule, the current one first: the last `max_revisions` versions the key held (a
    /// purge's tombstone shares the entry of the value it replaced); none while history
    /// is off. What `/watch` replays, one event per change.
    fn revisions(&self, key: &str) -> Result<Vec<Version>, StoreError>;

    /// Kept versions of `key` that hold a value, newest first, the current one first,
    /// back to its last delete: a key created again does not show its previous life.
    fn history(&self, key: &str) -> Result<Vec<Version>, StoreError> {
        let mut revisions = self.revisions(key)?;
        let life = revisions
            .iter()
            .position(Version::is_tombstone)
            .unwrap_or(revisions.len());
        revisions.truncate(life);
        Ok(revisions)
    }

    /// How many versions of reserved keys (under `_`: users, groups, tokens) this store
    /// has taken since it opened, written here or merged from a peer, counted as soon as
    /// readers see them: whoever caches what those keys say (the API's authenticated
    /// callers) reads them again once this moves.
    fn reserved_changes(&self) -> u64;

    /// Turns expired values into tombstones and removes tombstones older than
    /// `tombstone_ttl_ms`, with their history, but those of `undelivered` writes, which
    /// are kept as dead from `now_ms` ([`Undelivered::kept`]).
    fn purge(
        &self,
        now_ms: u64,
        tombstone_ttl_ms: u64,
        undelivered: Option<Undelivered>,
    ) -> Result<PurgeStats, StoreError>;

    /// Size figures.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Takes versions from another replica: each is stored when it supersedes the version
    /// held (by the conflict rule), else ignored. Returns how many were stored.
    fn merge(&self, versions: &[(String, Version)]) -> Result<usize, StoreError>;

    /// [`Store::merge`] of what an anti-entropy session brought. It need not be durable
    /// when this returns (a crash may lose it; the next session brings it again), which
    /// lets a store skip its write-ahead log on a bootstrap. The versions are handed over,
    /// so that a store can keep them without a copy.
    fn merge_from_session(&self, versions: Vec<(String, Version)>) -> Result<usize, StoreError> {
        self.merge(&versions)
    }

    /// A session is about to bring everything a peer holds into this store, which holds
    /// nothing (a bootstrap): the store may put off work it does faster once at the end,
    /// such as building an index in one pass, until [`Store::end_bulk_load`]. Every read
    /// stays correct meanwhile.
    fn begin_bulk_load(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Does the work a bulk load put off, if any (the session that began it ended, or
    /// another one did, or failed); returns once it is done.
    fn end_bulk_load(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The earliest time (Unix ms) that a write this store accepted but does not show
    /// its readers yet was stamped at or after, if any: a store that makes writes
    /// durable after stamping them (a group commit) shows them only then, so an
    /// anti-entropy session that starts meanwhile does not carry them, and must not
    /// count them as delivered (see `Completed::own_writes_before` in the driver). A
    /// write stamped before this is read is either shown by then or counted by it.
    fn unsettled_since(&self) -> Option<u64> {
        None
    }

    /// The merkle tree of every version held, tombstones included (see
    /// [`crate::merkle`]), kept up to date as writes are applied. A store that applies
    /// writes in the background may lag its readers by what it has not applied yet.
    fn merkle(&self) -> Result<MerkleTree, StoreError>;

    /// The keys held in `leaves` of the merkle tree, tombstones included, with the ids
    /// of their versions; by leaf, then key.
    fn leaf_entries(&self, leaves: &[Leaf]) -> Result<Vec<(String, VersionId)>, StoreError>;

    /// Every key after `after` (tombstones included) with its version, in key order,
    /// until about `max_bytes` (see [`crate::approximate_size`]; at least one
    /// key when any is left): how a node that holds nothing gets everything, in the
    /// order its store inserts fastest.
    fn versions_after(
        &self,
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<Vec<(String, Version)>, StoreError>;

    /// The keys held in `leaves` with their versions, in the order of
    /// [`Store::leaf_entries`]; a store may read them in one pass.
    fn leaf_versions(&self, leaves: &[Leaf]) -> Result<Vec<(String, Version)>, StoreError> {
        let keys: Vec<String> = self
            .leaf_entries(leaves)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let held = self.get_many(&keys)?;
        Ok(keys
            .into_iter()
            .zip(held)
            .filter_map(|(key, version)| Some((key, version?)))
            .collect())
    }
}

#[cfg(feature = "heed")]
impl From<heed::Error> for StoreError {
    fn from(error: heed::Error) -> Self {
        StoreError::Backend(error.to_string())
    }
}

impl Cursor {
    /// The cursor as an opaque, URL-safe string (hex).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        match self {
            Cursor::Key(key) => {
                bytes.push(b'k');
                bytes.extend_from_slice(key.as_bytes());
            }
            Cursor::Time(ts, key) => {
                bytes.push(b't');
                bytes.extend_from_slice(&ts.to_be_bytes());
                bytes.extend_from_slice(key.as_bytes());
            }
        }
        hex::encode(bytes)
    }

    /// Parses [`Cursor::encode`]'s output; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = hex::decode(text).ok()?;
        let (kind, rest) = bytes.split_first()?;
        match kind {
            b'k' => Some(Cursor::Key(String::from_utf8(rest.to_vec()).ok()?)),
            b't' if rest.len() >= 8 => {
                let (ts, key) = rest.split_at(8);
                let ts = u64::from_be_bytes(ts.try_into().ok()?);
                Some(Cursor::Time(ts, String::from_utf8(key.to_vec()).ok()?))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, Cursor};
    use crate::{Version, VersionId};

    #[test]
    fn a_tombstone_that_keeps_an_expiry_is_an_expire_wherever_it_came_from() {
        let version = |data: Option<&str>, expires_at| Version {
            id: VersionId {
                timestamp: 10,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(1),
            },
            data: data.map(str::to_owned),
            owner: None,
            group: None,
            permissions: 0,
            expires_at,
        };
        let change = |version, expired| Change {
            key: "k".into(),
            version,
            expired,
        };
        assert_eq!(change(version(Some("1"), Some(20)), false).kind(), "put");
        assert_eq!(change(version(None, None), false).kind(), "delete");
        assert_eq!(change(version(None, Some(20)), true).kind(), "expire");
        // The purge's tombstone as a peer sends it: merged, not purged here.
        let merged = change(version(None, Some(20)), false);
        assert!(merged.is_expiry());
        assert_eq!(merged.kind(), "expire");
    }

    #[test]
    fn cursor_roundtrip() {
        for c in [
            Cursor::Key("a/b/ü".into()),
            Cursor::Time(1_700_000_000_000, "k".into()),
            Cursor::Key(String::new()),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn garbage_cursor_is_none() {
        for s in ["", "z", "6", "zz", "74", "ff", "6bff", "é1"] {
            assert_eq!(Cursor::decode(s), None, "{s}");
        }
    }
}
