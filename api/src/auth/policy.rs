//! The access decision: may this principal do this operation on this key?
//!
//! [`authorize`] is a pure function of an [`AccessRequest`]; the route layer
//! gathers its inputs (the verified principal, the key's current metadata,
//! for a create the metadata of the nearest existing ancestor, the anonymous
//! flags) and maps [`Denied`] to `401` or `403`. The rules, in order:
//!
//! 1. Anonymous principals may read (`GET`/`HEAD /kv`, listings, `GET
//!    /history`) only with `allow_anonymous_read` and `PUT` only with
//!    `allow_anonymous_write`; the key's digit for them must allow the access
//!    too: the owner's on a key an anonymous client created (owned by
//!    [`ANONYMOUS_OWNER`]: as a file of `nobody` to `nobody`), else the
//!    others' (keys written before auth, with no owner, included). Everything else (`DELETE`,
//!    `/meta`, admin endpoints) needs a token. Every anonymous denial is
//!    [`Denied::Unauthorized`]: presenting a token might help.
//! 2. A token with scope `admin` passes every check.
//! 3. Admin endpoints need scope `admin`: otherwise [`Reason::NotAdmin`].
//! 4. Reads need scope `read`, writes, creates, deletes and metadata
//!    changes need `write`: otherwise [`Reason::MissingScope`].
//! 5. Permission bits, for the principal's class on the key (owner if the
//!    user owns it, else group if the key's group is one of the user's
//!    groups, else other; the first match decides, as in POSIX): read needs
//!    R, overwrite W, delete D, an overwrite that sets a TTL W and D (the
//!    expiry deletes the key), and creating a key needs C on its nearest
//!    existing ancestor (with no existing ancestor, the scope suffices).
//!    Operations on an absent key (read, delete) pass here; the route then
//!    answers `404`.
//! 6. Metadata: reading it needs the owner or R; changing it needs the owner
//!    (or rule 2).

use thiserror::Error;

use super::model::{ANONYMOUS_OWNER, KeyMeta, User};
use super::permissions::{Access, Class};
use super::tokens::{Claims, Scope, TokenError};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No `Authorization` header.
    Anonymous,
    /// A verified token of an existing user.
    User(Subject),
}

/// An authenticated user, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The user id (the token's `sub`).
    pub(crate) user_id: String,
    /// The user's current groups (from the user record, not the token).
    pub(crate) groups: Vec<String>,
    /// The token's scopes.
    pub(crate) scopes: Vec<Scope>,
}

/// What is being done. Metadata references are to the stored [`KeyMeta`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation<'a> {
    /// Read a key or its history; `None` when the key is absent.
    Read(Option<&'a KeyMeta>),
    /// List keys (`GET /kv?prefix=` or `?since=`).
    List,
    /// Overwrite an existing key.
    Write(&'a KeyMeta),
    /// Overwrite an existing key with a TTL: the expiry deletes the key, so this
    /// needs what a delete needs as well as what a write needs.
    WriteExpiring(&'a KeyMeta),
    /// Create an absent key; the metadata of its nearest existing ancestor.
    Create(Option<&'a KeyMeta>),
    /// Delete a key; `None` when the key is absent.
    Delete(Option<&'a KeyMeta>),
    /// `GET /meta/{key}` of an existing key.
    ReadMeta(&'a KeyMeta),
    /// `PUT /meta/{key}` of an existing key.
    ChangeMeta(&'a KeyMeta),
    /// `/auth/...`, `/admin/...`, `/audit...`.
    Admin,
    /// The cluster and operations endpoints (`/members`, `/sync`, `/metrics`,
    /// `/openapi.json`) and the change stream (`/watch`, whose events are then checked
    /// key by key): a token with scope `read`; never anonymous, as the contract's
    /// anonymous reads cover `/kv` and `/history` only.
    Observe,
}

/// The anonymous-access flags of the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnonymousAccess {
    /// `allow_anonymous_read`.
    pub(crate) read: bool,
    /// `allow_anonymous_write`.
    pub(crate) write: bool,
}

/// Everything [`authorize`] decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessRequest<'a> {
    /// Who.
    pub(crate) principal: &'a Principal,
    /// What, on which key metadata.
    pub(crate) operation: Operation<'a>,
    /// The anonymous flags.
    pub(crate) anonymous: AnonymousAccess,
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Denied {
    /// `401 unauthorized`, with `WWW-Authenticate: Bearer`.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthorized,
    /// `403 forbidden`.
    #[error("{0}")]
    Forbidden(Reason),
}

/// Why an authenticated principal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Reason {
    /// The token lacks the scope.
    #[error("the token lacks the {0} scope")]
    MissingScope(Scope),
    /// The endpoint needs scope `admin`.
    #[error("this endpoint needs the admin scope")]
    NotAdmin,
    /// The key's permissions do not grant this access to the principal.
    #[error("the key's permissions do not allow {} here", .0.name())]
    Permission(Access),
    /// Only the owner (or an admin) may change a key's metadata.
    #[error("only the key's owner or an admin may change its metadata")]
    NotOwner,
}

impl Denied {
    /// The spec's error code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
        }
    }

    /// The HTTP status.
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden(_) => 403,
        }
    }

    /// The `WWW-Authenticate` header value to send, if any.
    pub(crate) fn www_authenticate(self) -> Option<&'static str> {
        matches!(self, Self::Unauthorized).then_some("Bearer")
    }
}

impl Principal {
    /// The principal of verified `claims` whose `sub` is `user` (the caller
    /// has checked revocation and that `user.id == claims.sub`).
    pub(crate) fn from_claims(claims: &Claims, user: &User) -> Self {
        Self::User(Subject {
            user_id: user.id.clone(),
            groups: user.groups.clone(),
            scopes: claims.scopes.clone(),
        })
    }
}

/// The principal of verified `claims`, once the route has looked up whether
/// their `jti` is revoked and the user record of their `sub`: a revoked token
/// or a missing (deleted) user is a `401`.
pub(crate) fn admit(
    claims: &Claims,
    revoked: bool,
    user: Option<&User>,
) -> Result<Principal, TokenError> {
    if revoked {
        return Err(TokenError::Revoked);
    }
    match user {
        Some(user) if user.id == claims.sub => Ok(Principal::from_claims(claims, user)),
        _ => Err(TokenError::UnknownUser),
    }
}

impl Subject {
    /// The class of this subject on a key with `meta`.
    pub(crate) fn class_on(&self, meta: &KeyMeta) -> Class {
        if meta.owner.as_deref() == Some(self.user_id.as_str()) {
            Class::Owner
        } else if meta.group.as_ref().is_some_and(|g| self.groups.contains(g)) {
            Class::Group
        } else {
            Class::Other
        }
    }

    fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    fn is_owner(&self, meta: &KeyMeta) -> bool {
        self.class_on(meta) == Class::Owner
    }
}

/// Decides `request`; see the module doc for the rules.
pub(crate) fn authorize(request: &AccessRequest<'_>) -> Result<(), Denied> {
    match request.principal {
        Principal::Anonymous => anonymous(request.operation, request.anonymous),
        Principal::User(subject) => authenticated(subject, request.operation),
    }
}

fn anonymous(operation: Operation<'_>, flags: AnonymousAccess) -> Result<(), Denied> {
    let allowed = match operation {
        Operation::Read(meta) => flags.read && anonymous_may(meta, Access::Read),
        Operation::List => flags.read,
        Operation::Write(meta) => flags.write && anonymous_may(Some(meta), Access::Write),
        // The expiry deletes the key: the digit must grant D as well as W.
        Operation::WriteExpiring(meta) => {
            flags.write
                && anonymous_may(Some(meta), Access::Write)
                && anonymous_may(Some(meta), Access::Delete)
        }
        Operation::Create(ancestor) => flags.write && anonymous_may(ancestor, Access::Create),
        Operation::Delete(_)
        | Operation::ReadMeta(_)
        | Operation::ChangeMeta(_)
        | Operation::Admin
        | Operation::Observe => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// Whether `meta` (if any) allows `access` to an anonymous principal: by the owner's
/// digit on a key an anonymous client created (so that anonymous writers may write it
/// again), else by the others' digit.
fn anonymous_may(meta: Option<&KeyMeta>, access: Access) -> bool {
    meta.is_none_or(|m| {
        let class = match m.owner.as_deref() {
            Some(ANONYMOUS_OWNER) => Class::Owner,
            _ => Class::Other,
        };
        m.permissions.allows(class, access)
    })
}

fn authenticated(subject: &Subject, operation: Operation<'_>) -> Result<(), Denied> {
    if subject.has(Scope::Admin) {
        return Ok(());
    }
    let scope = match operation {
        Operation::Admin => return Err(Denied::Forbidden(Reason::NotAdmin)),
        Operation::Read(_) | Operation::List | Operation::ReadMeta(_) | Operation::Observe => {
            Scope::Read
        }
        Operation::Write(_)
        | Operation::WriteExpiring(_)
        | Operation::Create(_)
        | Operation::Delete(_)
        | Operation::ChangeMeta(_) => Scope::Write,
    };
    if !subject.has(scope) {
        return Err(Denied::Forbidden(Reason::MissingScope(scope)));
    }
    match operation {
        Operation::Read(meta) => check(subject, meta, Access::Read),
        Operation::Write(meta) => check(subject, Some(meta), Access::Write),
        Operation::WriteExpiring(meta) => check(subject, Some(meta), Access::Write)
            .and_then(|()| check(subject, Some(meta), Access::Delete)),
        Operation::Create(ancestor) => check(subject, ancestor, Access::Create),
        Operation::Delete(meta) => check(subject, meta, Access::Delete),
        Operation::ReadMeta(meta) if subject.is_owner(meta) => Ok(()),
        Operation::ReadMeta(meta) => check(subject, Some(meta), Access::Read),
        Operation::ChangeMeta(meta) if subject.is_owner(meta) => Ok(()),
        Operation::ChangeMeta(_) => Err(Denied::Forbidden(Reason::NotOwner)),
        Operation::List | Operation::Admin | Operation::Observe => Ok(()),
    }
}

fn check(subject: &Subject, meta: Option<&KeyMeta>, access: Access) -> Result<(), Denied> {
    match meta {
        Some(m) if !m.permissions.allows(subject.class_on(m), access) => {
            Err(Denied::Forbidden(Reason::Permission(access)))
        }
        _ => Ok(()),
    }
}

impl<'a> Operation<'a> {
    /// The operation of a `PUT` (`expiring`: it sets a TTL): an overwrite when
    /// the key exists, else a create checked against the nearest existing
    /// ancestor.
    pub(crate) fn put(
        current: Option<&'a KeyMeta>,
        ancestor: Option<&'a KeyMeta>,
        expiring: bool,
    ) -> Self {
        match (current, expiring) {
            (Some(meta), true) => Self::WriteExpiring(meta),
            (Some(meta), false) => Self::Write(meta),
            (None, _) => Self::Create(ancestor),
        }
    }
}

/// The proper ancestors of `key`, nearest first: `a/b/c` gives `a/b`, `a`.
/// The route looks them up in order and uses the first that exists.
pub(crate) fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.char_indices()
        .rev()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &key[..i])
        .filter(|prefix| !prefix.is_empty())
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
