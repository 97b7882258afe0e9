//! Validation of `/auth/...` and `/meta/...` request bodies into records.
//!
//! Each `plan_*` function is pure: it takes the request, the current records
//! (the route layer lists `_auth/users/` and `_auth/groups/`; both are small)
//! and, for creations, a fresh id and the time, and returns the records to
//! write, or a [`ModelError`] carrying the spec's error code. Unknown ids in
//! the path are `404 not_found`; unknown ids named in the body, bad names,
//! duplicate names, bad scopes, bad durations and bad permissions are
//! `400 bad_request`.

use serde::{Deserialize, Deserializer};

use super::model::{Group, KeyMeta, ModelError, RecordKind, User, clip, validate_name};
use super::permissions::Permissions;
use super::tokens::{Scope, normalize_scopes};

/// The longest token lifetime `POST /auth/tokens` grants: 10 years.
pub(crate) const MAX_TOKEN_TTL_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// The fields a request body may have: its own, and the read-only ones of what the
/// matching `GET` answers (ignored), so that a client may send back what it read, changed.
/// Any other field is refused (`400`): a misspelt `"permission"` must not be taken as a
/// request that changes nothing.
pub(crate) trait BodyFields {
    /// The field names accepted.
    const ACCEPTED: &'static [&'static str];
}

/// `POST /auth/users`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CreateUser {
    /// The name.
    pub(crate) name: String,
    /// Group ids; the first is the group of keys the user creates.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
}

/// `PUT /auth/users/{id}`: absent fields stay unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct UpdateUser {
    /// A new name.
    pub(crate) name: Option<String>,
    /// The new, complete list of group ids.
    pub(crate) groups: Option<Vec<String>>,
}

impl UpdateUser {
    /// Whether the change names no field to change (`{}`): no write at all.
    pub(crate) fn names_nothing(&self) -> bool {
        self.name.is_none() && self.groups.is_none()
    }
}

/// `POST /auth/groups`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CreateGroup {
    /// The name.
    pub(crate) name: String,
    /// User ids of the members.
    #[serde(default)]
    pub(crate) members: Vec<String>,
}

/// `PUT /auth/groups/{id}`: absent fields stay unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct UpdateGroup {
    /// A new name.
    pub(crate) name: Option<String>,
    /// The new, complete list of member user ids.
    pub(crate) members: Option<Vec<String>>,
}

impl UpdateGroup {
    /// Whether the change names no field to change (`{}`): no write at all.
    pub(crate) fn names_nothing(&self) -> bool {
        self.name.is_none() && self.members.is_none()
    }
}

/// `POST /auth/tokens`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueToken {
    /// The user the token is for.
    pub(crate) user_id: String,
    /// Scope names, checked by [`parse_scopes`].
    pub(crate) scopes: Vec<String>,
    /// The lifetime: a duration string or a number of seconds; 24 hours when absent or
    /// `null`.
    #[serde(default = "default_token_ttl")]
    pub(crate) ttl: serde_json::Value,
}

/// The lifetime of a token whose request names none.
fn default_token_ttl() -> serde_json::Value {
    serde_json::Value::from("24h")
}

/// `PUT /meta/{key}`: absent fields stay unchanged; `null` clears the owner
/// or the group.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct UpdateMeta {
    /// The new owner user id.
    #[serde(default, deserialize_with = "present")]
    pub(crate) owner: Option<Option<String>>,
    /// The new group id.
    #[serde(default, deserialize_with = "present")]
    pub(crate) group: Option<Option<String>>,
    /// The new permissions, three hex digits.
    pub(crate) permissions: Option<String>,
}

impl UpdateMeta {
    /// Whether the change names no field to change (`{}`, or only read-only fields): it
    /// is then no write at all. One that restates the metadata as it is is a write, as a
    /// PUT of the same value is.
    pub(crate) fn names_nothing(&self) -> bool {
        self.owner.is_none() && self.group.is_none() && self.permissions.is_none()
    }
}

impl BodyFields for CreateUser {
    const ACCEPTED: &'static [&'static str] = &["name", "groups", "id", "created_at"];
}

impl BodyFields for UpdateUser {
    const ACCEPTED: &'static [&'static str] = &["name", "groups", "id", "created_at"];
}

impl BodyFields for CreateGroup {
    const ACCEPTED: &'static [&'static str] = &["name", "members", "id", "created_at"];
}

impl BodyFields for UpdateGroup {
    const ACCEPTED: &'static [&'static str] = &["name", "members", "id", "created_at"];
}

impl BodyFields for IssueToken {
    const ACCEPTED: &'static [&'static str] = &["user_id", "scopes", "ttl"];
}

impl BodyFields for UpdateMeta {
    const ACCEPTED: &'static [&'static str] = &["owner", "group", "permissions", "expires_at"];
}

/// A validated `POST /auth/tokens`: pass to `TokenKeys::issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenPlan {
    /// The user id (`sub`).
    pub(crate) user_id: String,
    /// Sorted, deduplicated, non-empty.
    pub(crate) scopes: Vec<Scope>,
    /// The lifetime in milliseconds, 1..=[`MAX_TOKEN_TTL_MS`].
    pub(crate) ttl_ms: u64,
}

/// The writes of a group request: the group record and the user records
/// whose `groups` changed (membership lives in user records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupPlan {
    /// The group record to write.
    pub(crate) group: Group,
    /// The user records to rewrite.
    pub(crate) users: Vec<User>,
}

/// Lets `null` be told apart from an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn find<'a>(users: &'a [User], id: &str) -> Option<&'a User> {
    users.iter().find(|u| u.id == id)
}

fn check_unique_name<'a>(
    kind: RecordKind,
    name: &str,
    mut existing: impl Iterator<Item = (&'a str, &'a str)>,
    self_id: Option<&str>,
) -> Result<(), ModelError> {
    validate_name(name)?;
    if existing.any(|(id, other)| other == name && Some(id) != self_id) {
        return Err(ModelError::DuplicateName {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Deduplicated ids (first occurrence kept), each present in `known`.
fn known_ids(
    kind: RecordKind,
    ids: &[String],
    mut known: impl FnMut(&str) -> bool,
) -> Result<Vec<String>, ModelError> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !known(id) {
            return Err(ModelError::UnknownReference { kind, id: clip(id) });
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

fn group_ids(ids: &[String], groups: &[Group]) -> Result<Vec<String>, ModelError> {
    known_ids(RecordKind::Group, ids, |id| {
        groups.iter().any(|g| g.id == id)
    })
}

fn user_ids(ids: &[String], users: &[User]) -> Result<Vec<String>, ModelError> {
    known_ids(RecordKind::User, ids, |id| find(users, id).is_some())
}

fn user_names(users: &[User]) -> impl Iterator<Item = (&str, &str)> {
    users.iter().map(|u| (u.id.as_str(), u.name.as_str()))
}

fn group_names(groups: &[Group]) -> impl Iterator<Item = (&str, &str)> {
    groups.iter().map(|g| (g.id.as_str(), g.name.as_str()))
}

/// `POST /auth/users`: the new user record with id `id`.
pub(crate) fn plan_create_user(
    req: &CreateUser,
    id: &str,
    now_ms: u64,
    users: &[User],
    groups: &[Group],
) -> Result<User, ModelError> {
    check_unique_name(RecordKind::User, &req.name, user_names(users), None)?;
    Ok(User {
        id: id.to_owned(),
        name: req.name.clone(),
        groups: group_ids(&req.groups, groups)?,
        created_at: now_ms,
    })
}

/// `PUT /auth/users/{id}`: the updated user record. `root` keeps its name.
pub(crate) fn plan_update_user(
    id: &str,
    req: &UpdateUser,
    users: &[User],
    groups: &[Group],
) -> Result<User, ModelError> {
    let mut user = find(users, id)
        .cloned()
        .ok_or_else(|| not_found(RecordKind::User, id))?;
    if let Some(name) = &req.name {
        if user.is_root() && name != &user.name {
            return Err(ModelError::RootProtected);
        }
        check_unique_name(RecordKind::User, name, user_names(users), Some(id))?;
        user.name.clone_from(name);
    }
    if let Some(ids) = &req.groups {
        user.groups = group_ids(ids, groups)?;
    }
    Ok(user)
}

/// `DELETE /auth/users/{id}`: checks that the user exists and is not `root`.
/// The route deletes `_auth/users/<id>`; the user's tokens then fail the
/// user-existence check. Keys it owns keep the id (only admins change them).
pub(crate) fn plan_delete_user(id: &str, users: &[User]) -> Result<(), ModelError> {
    let user = find(users, id).ok_or_else(|| not_found(RecordKind::User, id))?;
    if user.is_root() {
        return Err(ModelError::RootProtected);
    }
    Ok(())
}

/// `POST /auth/groups`: the group with id `id`, and its members rewritten.
pub(crate) fn plan_create_group(
    req: &CreateGroup,
    id: &str,
    now_ms: u64,
    users: &[User],
    groups: &[Group],
) -> Result<GroupPlan, ModelError> {
    check_unique_name(RecordKind::Group, &req.name, group_names(groups), None)?;
    let members = user_ids(&req.members, users)?;
    let group = Group {
        id: id.to_owned(),
        name: req.name.clone(),
        created_at: now_ms,
    };
    Ok(GroupPlan {
        users: set_members(id, &members, users),
        group,
    })
}

/// `PUT /auth/groups/{id}`: the renamed group and/or its new member set.
pub(crate) fn plan_update_group(
    id: &str,
    req: &UpdateGroup,
    users: &[User],
    groups: &[Group],
) -> Result<GroupPlan, ModelError> {
    let mut group = groups
        .iter()
        .find(|g| g.id == id)
        .cloned()
        .ok_or_else(|| not_found(RecordKind::Group, id))?;
    if let Some(name) = &req.name {
        check_unique_name(RecordKind::Group, name, group_names(groups), Some(id))?;
        group.name.clone_from(name);
    }
    let users = match &req.members {
        Some(ids) => set_members(id, &user_ids(ids, users)?, users),
        None => Vec::new(),
    };
    Ok(GroupPlan { group, users })
}

/// `DELETE /auth/groups/{id}`: the user records to rewrite without it.
pub(crate) fn plan_delete_group(
    id: &str,
    users: &[User],
    groups: &[Group],
) -> Result<Vec<User>, ModelError> {
    if !groups.iter().any(|g| g.id == id) {
        return Err(not_found(RecordKind::Group, id));
    }
    Ok(set_members(id, &[], users))
}

/// The users whose `groups` change so that exactly `members` are in `group`.
fn set_members(group: &str, members: &[String], users: &[User]) -> Vec<User> {
    let mut changed = Vec::new();
    for user in users {
        let want = members.iter().any(|m| m == &user.id);
        let has = user.groups.iter().any(|g| g == group);
        if want != has {
            let mut user = user.clone();
            if want {
                user.groups.push(group.to_owned());
            } else {
                user.groups.retain(|g| g != group);
            }
            changed.push(user);
        }
    }
    changed
}

/// `POST /auth/tokens`: a known user, known scopes, a positive ttl.
pub(crate) fn plan_issue_token(req: &IssueToken, users: &[User]) -> Result<TokenPlan, ModelError> {
    if find(users, &req.user_id).is_none() {
        return Err(ModelError::UnknownReference {
            kind: RecordKind::User,
            id: clip(&req.user_id),
        });
    }
    let scopes = parse_scopes(&req.scopes)?;
    let ttl_ms = parse_ttl(&req.ttl)?;
    Ok(TokenPlan {
        user_id: req.user_id.clone(),
        scopes,
        ttl_ms,
    })
}

/// A token ttl: a duration string or a number of seconds, in
/// 1..=[`MAX_TOKEN_TTL_MS`] milliseconds.
pub(crate) fn parse_ttl(ttl: &serde_json::Value) -> Result<u64, ModelError> {
    let text = match ttl {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let bad = || ModelError::InvalidDuration(clip(&text));
    let ttl_ms = match ttl {
        // `"ttl": null` names no ttl, like leaving it out.
        serde_json::Value::Null => return parse_ttl(&default_token_ttl()),
        serde_json::Value::String(text) => crate::duration::parse_duration(text)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .ok_or_else(bad)?,
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if ttl_ms == 0 || ttl_ms > MAX_TOKEN_TTL_MS {
        return Err(bad());
    }
    Ok(ttl_ms)
}

/// Known, non-empty scope names, sorted and deduplicated.
pub(crate) fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ModelError> {
    let scopes = names
        .iter()
        .map(|n| {
            n.parse::<Scope>()
                .map_err(|_| ModelError::UnknownScope(clip(n)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err(ModelError::NoScopes);
    }
    Ok(normalize_scopes(&scopes))
}

/// `PUT /meta/{key}`: the new metadata. The caller has already authorized
/// the change (owner or admin, see the policy). The owner and group, when
/// set, must exist.
pub(crate) fn plan_update_meta(
    current: &KeyMeta,
    req: &UpdateMeta,
    users: &[User],
    groups: &[Group],
) -> Result<KeyMeta, ModelError> {
    let mut meta = current.clone();
    if let Some(owner) = &req.owner {
        if let Some(id) = owner {
            user_ids(std::slice::from_ref(id), users)?;
        }
        meta.owner.clone_from(owner);
    }
    if let Some(group) = &req.group {
        if let Some(id) = group {
            group_ids(std::slice::from_ref(id), groups)?;
        }
        meta.group.clone_from(group);
    }
    if let Some(text) = &req.permissions {
        meta.permissions = text
            .parse::<Permissions>()
            .map_err(|_| ModelError::InvalidPermissions)?;
    }
    Ok(meta)
}

fn not_found(kind: RecordKind, id: &str) -> ModelError {
    ModelError::NotFound { kind, id: clip(id) }
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
