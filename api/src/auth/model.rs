//! The auth records, where they live, and the typed errors of auth requests.
//!
//! # Reserved keyspace
//! Users, groups, issued tokens and revocations are stored as ordinary
//! versioned entries under keys whose first segment is `_auth`, so that they
//! replicate exactly like data (the conflict rule picks one version of each
//! record). `/kv` can never reach them: a key whose first segment starts with
//! `_` is `400 invalid_key` there. The layout (values are the JSON of the
//! records below):
//!
//! | key | value |
//! |---|---|
//! | `_auth/users/<id>` | [`User`] |
//! | `_auth/groups/<id>` | [`Group`] |
//! | `_auth/tokens/<jti>` | [`TokenRecord`], written with a TTL up to the token's expiry |
//! | `_auth/revoked/<jti>` | [`Revocation`], written with a TTL up to the token's expiry |
//! | `_auth/deleted-users/<id>` | [`Deleted`], kept for good |
//! | `_auth/deleted-groups/<id>` | [`Deleted`], kept for good |
//!
//! A key's ownership and permissions ([`KeyMeta`]) are not records: they are part of
//! every version of the key itself (`owner`, `group`, `permissions`), so they
//! replicate with its data.
//!
//! # Group membership
//! A user's `groups` and a group's `members` are two views of one relation.
//! The user record is the only source of truth: [`User::groups`] is stored,
//! while a group's members are derived ([`GroupView::of`]) from the users
//! whose `groups` name it. One fact lives in one record, so concurrent edits
//! replicated from two nodes can never leave the two views disagreeing, and
//! the permission check needs only the (already loaded) user record. Group
//! requests that name members are therefore planned as rewrites of user
//! records. A group id left in a user record after a concurrent group delete
//! is ignored on read ([`User::without_dangling_groups`] for `/auth/users`;
//! authentication drops it before any permission check).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::permissions::Permissions;
use super::tokens::{ROOT_USER_ID, Scope};

/// Prefix of user records.
pub(crate) const USERS_PREFIX: &str = "_auth/users/";
/// Prefix of group records.
pub(crate) const GROUPS_PREFIX: &str = "_auth/groups/";
/// Prefix of revocation records.
pub(crate) const REVOKED_PREFIX: &str = "_auth/revoked/";
/// Prefix of issued-token records.
pub(crate) const TOKENS_PREFIX: &str = "_auth/tokens/";
/// Prefix of the records of deleted users.
pub(crate) const DELETED_USERS_PREFIX: &str = "_auth/deleted-users/";
/// Prefix of the records of deleted groups.
pub(crate) const DELETED_GROUPS_PREFIX: &str = "_auth/deleted-groups/";

/// The storage key of a user record.
pub(crate) fn user_key(id: &str) -> String {
    format!("{USERS_PREFIX}{id}")
}

/// The storage key of a group record.
pub(crate) fn group_key(id: &str) -> String {
    format!("{GROUPS_PREFIX}{id}")
}

/// The storage key of a revocation record.
pub(crate) fn revoked_key(jti: &str) -> String {
    format!("{REVOKED_PREFIX}{jti}")
}

/// The storage key of the record that user `id` was deleted.
pub(crate) fn deleted_user_key(id: &str) -> String {
    format!("{DELETED_USERS_PREFIX}{id}")
}

/// The storage key of the record that group `id` was deleted.
pub(crate) fn deleted_group_key(id: &str) -> String {
    format!("{DELETED_GROUPS_PREFIX}{id}")
}

/// The storage key of an issued-token record.
pub(crate) fn token_key(jti: &str) -> String {
    format!("{TOKENS_PREFIX}{jti}")
}

/// A user. Scopes are not part of the user: they are granted per token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    /// Stable id (a UUID; `root` for the bootstrap user).
    pub(crate) id: String,
    /// Unique display name, see [`validate_name`].
    pub(crate) name: String,
    /// Ids of the groups the user belongs to, in order; the first one is the
    /// group of keys the user creates. The source of truth of membership.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// Creation time, Unix milliseconds.
    #[serde(default)]
    pub(crate) created_at: u64,
}

/// A group as stored: its members live in the user records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Stable id (a UUID).
    pub(crate) id: String,
    /// Unique display name, see [`validate_name`].
    pub(crate) name: String,
    /// Creation time, Unix milliseconds.
    #[serde(default)]
    pub(crate) created_at: u64,
}

/// A group as served by `/auth/groups`: `{"id","name","members"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GroupView {
    /// The group id.
    pub(crate) id: String,
    /// The group name.
    pub(crate) name: String,
    /// Ids of the users whose `groups` name this group, in `users` order.
    pub(crate) members: Vec<String>,
    /// Creation time, Unix milliseconds.
    pub(crate) created_at: u64,
}

/// A revoked token id, kept until the token would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revocation {
    /// The revoked `jti`.
    pub(crate) jti: String,
    /// When the token expires, Unix milliseconds; the record may go after.
    pub(crate) expires_at: u64,
}

/// That a user or a group was deleted, kept for good: a record written concurrently
/// elsewhere (a rename, a membership change, on a node that had not seen the delete yet)
/// can win over the delete by the conflict rule, but a user or group with this record
/// counts as deleted whatever its own record says: the user's tokens stay refused, the
/// group grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Deleted {
    /// The deleted user's or group's id.
    pub(crate) id: String,
    /// When it was deleted, Unix milliseconds.
    pub(crate) deleted_at: u64,
}

/// An issued token, as far as revocation needs it. The token itself is a
/// secret and is kept only as [`super::hash_secret`] of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    /// The token's `jti`.
    pub(crate) jti: String,
    /// The user it was issued to.
    pub(crate) user_id: String,
    /// Its scopes.
    pub(crate) scopes: Vec<Scope>,
    /// Issue time, Unix milliseconds.
    pub(crate) issued_at: u64,
    /// Expiry, Unix milliseconds.
    pub(crate) expires_at: u64,
    /// SHA-256 of the token (domain-separated, hex).
    pub(crate) token_sha256: String,
}

/// Ownership and permissions of one user key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyMeta {
    /// The owning user id; `None` for keys written anonymously or before auth.
    pub(crate) owner: Option<String>,
    /// The key's group id, if any.
    pub(crate) group: Option<String>,
    /// The permission bits.
    pub(crate) permissions: Permissions,
}

/// The kind of record an error talks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A user.
    User,
    /// A group.
    Group,
    /// A token (by `jti`).
    Token,
}

/// A rejected auth request. Messages carry ids and names, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum ModelError {
    /// A name that is not 1 to 64 characters, or holds one a name may not (see
    /// `validate_name`).
    #[error(
        "invalid name: use 1 to 64 characters, without white space, control or invisible \
         characters (zero-width, direction marks, soft hyphen), '/' or ':'"
    )]
    InvalidName,
    /// Another record of the same kind has this name.
    #[error("a {kind} named {name:?} already exists")]
    DuplicateName {
        /// User or group.
        kind: RecordKind,
        /// The clashing name.
        name: String,
    },
    /// The record addressed by the path does not exist (`404`).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What was looked up.
        kind: RecordKind,
        /// The id from the path.
        id: String,
    },
    /// The body names a record that does not exist (`400`).
    #[error("unknown {kind} id {id:?}")]
    UnknownReference {
        /// What was referenced.
        kind: RecordKind,
        /// The id from the body.
        id: String,
    },
    /// A scope other than `read`, `write`, `admin`.
    #[error("unknown scope {0:?}: expected read, write or admin")]
    UnknownScope(String),
    /// An empty scope list.
    #[error("a token needs at least one scope")]
    NoScopes,
    /// A permission string that is not three hex digits.
    #[error("permissions must be exactly three hex digits (owner, group, others), like \"f31\"")]
    InvalidPermissions,
    /// A duration that is not `500ms`, `30s`, `10m`, `24h`, `7d` or seconds.
    #[error("invalid duration {0:?}: use a positive number of seconds or 500ms, 30s, 10m, 24h, 7d")]
    InvalidDuration(String),
    /// The bootstrap user cannot be deleted or renamed.
    #[error("the root user cannot be deleted or renamed")]
    RootProtected,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Token => "token",
        })
    }
}

impl ModelError {
    /// The spec's error code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            _ => "bad_request",
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            _ => 400,
        }
    }
}

/// Client-supplied text, shortened for an error message.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Checks a user or group name: 1..=64 characters, none of them a control character,
/// white space, an invisible formatting character (zero-width and direction marks, U+FEFF:
/// a name that looks like another's), `/` or `:`. An e-mail address is a name (it was
/// `[A-Za-z0-9_.-]` only, which refused `alice@example.com`). `api/openapi.json` has the
/// same rule as a pattern.
pub(crate) fn validate_name(name: &str) -> Result<(), ModelError> {
    let forbidden = |c: char| {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '/' | ':' | '\u{ad}' | '\u{feff}')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}')
            || matches!(c, '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}')
    };
    let ok = (1..=64).contains(&name.chars().count()) && !name.chars().any(forbidden);
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidName)
    }
}

impl User {
    /// The bootstrap administrator. Every node writes this exact record (the
    /// same id, name and `created_at`), so replicas agree on it whichever
    /// version the conflict rule keeps.
    pub(crate) fn root() -> Self {
        Self {
            id: ROOT_USER_ID.to_owned(),
            name: ROOT_USER_ID.to_owned(),
            groups: Vec::new(),
            created_at: 0,
        }
    }

    /// Whether this is the bootstrap administrator.
    pub(crate) fn is_root(&self) -> bool {
        self.id == ROOT_USER_ID
    }

    /// A copy without ids of groups that no longer exist.
    pub(crate) fn without_dangling_groups(&self, groups: &[Group]) -> Self {
        let mut user = self.clone();
        user.groups.retain(|id| groups.iter().any(|g| &g.id == id));
        user
    }
}

impl GroupView {
    /// The served form of `group`: its members are the `users` naming it.
    pub(crate) fn of(group: &Group, users: &[User]) -> Self {
        let members = users
            .iter()
            .filter(|u| u.groups.iter().any(|g| g == &group.id))
            .map(|u| u.id.clone())
            .collect();
        Self {
            id: group.id.clone(),
            name: group.name.clone(),
            members,
            created_at: group.created_at,
        }
    }
}

/// The owner recorded for a key an anonymous client created while auth was on. No user
/// can have this id (user ids are UUIDs, and `root`), nor can `PUT /meta` give it (an
/// owner must be an existing user).
pub(crate) const ANONYMOUS_OWNER: &str = "anonymous";

impl KeyMeta {
    /// The metadata of a key created by `writer` (`None`: auth is off): owned
    /// by the writer, in the writer's first group, with `permissions`
    /// (the configured `default_permissions`).
    pub(crate) fn for_new_key(writer: Option<&User>, permissions: Permissions) -> Self {
        Self {
            owner: writer.map(|u| u.id.clone()),
            group: writer.and_then(|u| u.groups.first().cloned()),
            permissions,
        }
    }

    /// The metadata of a key an anonymous client creates: owned by
    /// [`ANONYMOUS_OWNER`], in no group, with `permissions`.
    pub(crate) fn for_anonymous_key(permissions: Permissions) -> Self {
        Self {
            owner: Some(ANONYMOUS_OWNER.to_owned()),
            group: None,
            permissions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, groups: &[&str]) -> User {
        User {
            id: id.into(),
            name: id.into(),
            groups: groups.iter().map(ToString::to_string).collect(),
            created_at: 1,
        }
    }

    #[test]
    fn keyspace_layout() {
        assert_eq!(user_key("u1"), "_auth/users/u1");
        assert_eq!(group_key("g1"), "_auth/groups/g1");
        assert_eq!(revoked_key("j1"), "_auth/revoked/j1");
        assert_eq!(token_key("j1"), "_auth/tokens/j1");
        for key in [
            user_key("x"),
            group_key("x"),
            revoked_key("x"),
            token_key("x"),
        ] {
            assert!(
                crate::validate_key(&key).is_err(),
                "{key} reachable from /kv"
            );
        }
    }

    #[test]
    fn names() {
        let widest = "é".repeat(64);
        for good in [
            "a",
            "alice",
            "A.b-c_d",
            "0",
            "alice@example.com",
            "é",
            "ops+1",
            &widest,
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let long = "x".repeat(65);
        let bad = [
            "",
            " ",
            "a b",
            "a/b",
            "a\n",
            "a:b",
            "\u{a0}a",
            "a\u{feff}",
            "a\u{85}",
            "root\u{200b}",
            "a\u{202e}b",
            "a\u{2060}",
            "\u{ad}",
        ];
        for bad in bad.into_iter().chain([long.as_str()]) {
            assert_eq!(validate_name(bad), Err(ModelError::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn root_is_fixed() {
        assert_eq!(User::root(), User::root());
        assert!(User::root().is_root());
        assert_eq!(User::root().id, "root");
        assert!(!user("alice", &[]).is_root());
    }

    #[test]
    fn members_are_derived_from_users() {
        let g = Group {
            id: "g1".into(),
            name: "ops".into(),
            created_at: 5,
        };
        let users = [
            user("a", &["g1", "g2"]),
            user("b", &["g2"]),
            user("c", &["g1"]),
        ];
        let view = GroupView::of(&g, &users);
        assert_eq!(view.members, vec!["a".to_string(), "c".to_string()]);
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["members"], serde_json::json!(["a", "c"]));
        assert_eq!(json["name"], "ops");
    }

    #[test]
    fn dangling_groups_are_hidden() {
        let groups = [Group {
            id: "g1".into(),
            name: "ops".into(),
            created_at: 0,
        }];
        let u = user("a", &["gone", "g1"]).without_dangling_groups(&groups);
        assert_eq!(u.groups, vec!["g1".to_string()]);
    }

    #[test]
    fn new_key_meta() {
        let p = Permissions::DEFAULT;
        let m = KeyMeta::for_new_key(Some(&user("a", &["g1", "g2"])), p);
        assert_eq!(m.owner.as_deref(), Some("a"));
        assert_eq!(m.group.as_deref(), Some("g1"));
        let m = KeyMeta::for_new_key(Some(&user("a", &[])), p);
        assert_eq!((m.owner.as_deref(), m.group), (Some("a"), None));
        let m = KeyMeta::for_new_key(None, p);
        assert_eq!((m.owner, m.group, m.permissions), (None, None, p));
        let m = KeyMeta::for_anonymous_key(p);
        assert_eq!(m.owner.as_deref(), Some(ANONYMOUS_OWNER));
        assert_eq!((m.group, m.permissions), (None, p));
    }

    #[test]
    fn records_round_trip_as_json() {
        let meta = KeyMeta {
            owner: Some("a".into()),
            group: None,
            permissions: Permissions::DEFAULT,
        };
        let json = serde_json::to_string(&meta).expect("json");
        assert_eq!(json, r#"{"owner":"a","group":null,"permissions":"f31"}"#);
        assert_eq!(serde_json::from_str::<KeyMeta>(&json).expect("back"), meta);
        let u: User = serde_json::from_str(r#"{"id":"x","name":"x"}"#).expect("defaults");
        assert!(u.groups.is_empty());
    }

    #[test]
    fn error_codes() {
        let nf = ModelError::NotFound {
            kind: RecordKind::User,
            id: "u".into(),
        };
        assert_eq!((nf.code(), nf.status()), ("not_found", 404));
        assert_eq!(nf.to_string(), "user \"u\" not found");
        let unknown = ModelError::UnknownReference {
            kind: RecordKind::Group,
            id: "g".into(),
        };
        assert_eq!((unknown.code(), unknown.status()), ("bad_request", 400));
        for e in [
            ModelError::InvalidName,
            ModelError::NoScopes,
            ModelError::RootProtected,
        ] {
            assert_eq!(e.code(), "bad_request");
        }
        assert_eq!(clip(&"x".repeat(100)).len(), 64);
    }
}
