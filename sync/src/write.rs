//! The local write rules: preconditions, the causal timestamp, what a write produces.
//!
//! [`plan_write`] is a pure function of the held version and the request, shared by every
//! [`crate::Store`] implementation so that they cannot disagree.

use uuid::Uuid;

use crate::{Version, VersionId};

/// What a write does to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Store a value (JSON text), optionally expiring `ttl_ms` after the write.
    Put {
        /// The value as JSON text.
        data: String,
        /// Time to live in milliseconds.
        ttl_ms: Option<u64>,
    },
    /// Delete the key (a tombstone).
    Delete,
    /// Change the ownership and permissions of a live key: a new version with the same
    /// data and expiry. The op's own `owner`, `group` and `permissions` are ignored.
    SetMeta {
        /// The new owner (user id).
        owner: Option<String>,
        /// The new group (group id).
        group: Option<String>,
        /// The new permission bits.
        permissions: u16,
    },
}

/// A condition on the current version for the write to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// The current (live) version must have this uuid (`If-Match`).
    IfMatch(Uuid),
    /// The key must be absent (`If-None-Match: *`).
    IfAbsent,
    /// The key must be present (`If-Match: *`).
    IfPresent,
    /// The current (live) version must have none of these uuids (`If-None-Match` with
    /// entity tags).
    IfNoneMatch(Vec<Uuid>),
}

impl Precondition {
    /// Whether the condition holds while `live` is the key's current version (`None`:
    /// absent, deleted or expired).
    pub fn holds(&self, live: Option<&Version>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::IfMatch(uuid) => live.map(|v| v.id.uuid) == Some(*uuid),
            Precondition::IfAbsent => live.is_none(),
            Precondition::IfPresent => live.is_some(),
            Precondition::IfNoneMatch(uuids) => !live.is_some_and(|v| uuids.contains(&v.id.uuid)),
        }
    }
}

/// A write request for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// The key.
    pub key: String,
    /// What to do.
    pub mutation: Mutation,
    /// When to do it.
    pub precondition: Precondition,
    /// The uuid the new version gets.
    pub uuid: Uuid,
    /// The writing node's `joined_at`.
    pub origin_joined_at: u64,
    /// The writer, owner of a newly created key.
    pub owner: Option<String>,
    /// The group of a newly created key.
    pub group: Option<String>,
    /// Permission bits of a newly created key.
    pub permissions: u16,
    /// Who asked (a user id), for the audit trail; not part of the version.
    pub actor: Option<String>,
}

/// Why a write was refused; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteRejected {
    /// `If-Match` or `If-None-Match` did not hold.
    #[error("the precondition does not hold")]
    PreconditionFailed,
    /// A delete of a deleted key, or a metadata change of a key that is absent, deleted
    /// or expired.
    #[error("the key does not exist")]
    NotFound,
}

/// Decides what a write produces given the version held now (tombstones and expired
/// versions included), at wall time `now_ms`.
///
/// The new timestamp is `max(now_ms, held + 1)`, so an overwrite of a version this node
/// has seen wins whatever the clocks say. A delete of a key that is absent or expired
/// still produces a tombstone (reported as a creation: the key was absent). A new key takes the op's ownership; an
/// overwrite of a live key keeps the key's owner, group and permissions; only
/// [`Mutation::SetMeta`] changes them.
pub fn plan_write(
    held: Option<&Version>,
    op: &WriteOp,
    now_ms: u64,
) -> Result<Version, WriteRejected> {
    let live = held.filter(|v| v.is_live(now_ms));
    if !op.precondition.holds(live) {
        return Err(WriteRejected::PreconditionFailed);
    }
    let timestamp = held.map_or(now_ms, |v| now_ms.max(v.id.timestamp.saturating_add(1)));
    let id = VersionId {
        timestamp,
        origin_joined_at: op.origin_joined_at,
        uuid: op.uuid,
    };
    let (mut owner, mut group, mut permissions) = match live {
        Some(v) => (v.owner.clone(), v.group.clone(), v.permissions),
        None => (op.owner.clone(), op.group.clone(), op.permissions),
    };
    let (data, expires_at) = match (&op.mutation, live) {
        // A TTL counts from the write's wall-clock time, not from the causal timestamp.
        (Mutation::Put { data, ttl_ms }, _) => (
            Some(data.clone()),
            ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
        ),
        // A key that is already deleted stays as it is.
        (Mutation::Delete, None) if held.is_some_and(Version::is_tombstone) => {
            return Err(WriteRejected::NotFound);
        }
        // A key this node does not hold (or holds expired) still gets a tombstone, so
        // that an older copy elsewhere cannot survive the delete; the caller is told the
        // key was absent (`WriteOutcome::created`).
        (Mutation::Delete, _) => (None, None),
        (Mutation::SetMeta { .. }, None) => return Err(WriteRejected::NotFound),
        (
            Mutation::SetMeta {
                owner: new_owner,
                group: new_group,
                permissions: new_permissions,
            },
            Some(v),
        ) => {
            owner.clone_from(new_owner);
            group.clone_from(new_group);
            permissions = *new_permissions;
            (v.data.clone(), v.expires_at)
        }
    };
    Ok(Version {
        id,
        data,
        owner,
        group,
        permissions,
        expires_at,
    })
}
