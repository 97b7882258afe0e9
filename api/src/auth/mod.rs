//! Authentication and authorization: tokens, permissions, the access policy.
//!
//! This module is the pure core of `auth_enabled: true` (no IO, no warp, no
//! clock: times come in as Unix milliseconds). The routes use it in this
//! order for every request:
//!
//! 1. **Authenticate.** [`bearer_token`] reads the `Authorization` header:
//!    none means [`Principal::Anonymous`]; otherwise [`TokenKeys::verify`]
//!    checks an HS256 JWT signed with `jwt_secret` (`alg: none`, other
//!    algorithms, bad signatures, tampering, expiry against the passed-in
//!    time and malformed tokens are all rejected). The route then rejects a
//!    revoked `jti` (a record at `_auth/revoked/<jti>`) and a `sub` whose
//!    user record (`_auth/users/<sub>`) is gone, and [`admit`] builds the
//!    principal from the *current* user record, so group changes apply at
//!    once. Any failure is a [`TokenError`]: `401`
//!    with `WWW-Authenticate: Bearer`.
//! 2. **Authorize.** [`authorize`] decides an [`AccessRequest`]: the
//!    principal, the [`Operation`] with the key's current [`KeyMeta`] (for a
//!    create, the nearest existing ancestor's, found via [`ancestors`]) and
//!    the anonymous flags. Scopes gate first (`read` for reads, `write` for
//!    writes and deletes, `admin` for admin endpoints and as a pass for
//!    everything), then the 12 permission bits ([`Permissions`], three hex
//!    digits: owner, group, others; create 8, delete 4, write 2, read 1) of
//!    the principal's [`Class`](permissions::Class). [`Denied`] maps to `401` or `403`.
//!    Anonymous clients, when a flag lets them in, are in class `Other`, but
//!    in class `Owner` on the keys anonymous clients created.
//! 3. **Record.** A created key gets [`KeyMeta::for_new_key`] (owner the
//!    writer, group the writer's first group, `default_permissions`), or
//!    [`KeyMeta::for_anonymous_key`] (owner `anonymous`, no group).
//!    `/auth/...` and `/meta/...` bodies are validated into records by the
//!    `plan_*` functions, whose [`ModelError`]s carry the spec's codes.
//!
//! # Storage and replication
//! Users, groups, issued-token records and revocations are versioned entries
//! under the reserved first segment `_auth` (see [`model`] for the layout),
//! so they replicate like data and `/kv` cannot reach them. Group membership
//! is stored once, in the user records; a group's `members` is derived. A
//! key's [`KeyMeta`] (owner, group, permissions) is not a record: it is part
//! of every version of the key, so it replicates with the key's data.
//!
//! # Root bootstrap
//! The root user is the fixed record [`User::root`] (id and name `root`,
//! `created_at` 0) and its token [`TokenKeys::root_token`] is a pure
//! function of `jwt_secret` (fixed `sub`, `iat`, `exp`, and a `jti` derived
//! from the secret by SHA-256). Every node of a cluster therefore writes the
//! same record and the same `root.token`: there is one root user whichever
//! node starts first, and every node's `root.token` works everywhere. The
//! root user can be neither deleted nor renamed.
//!
//! # Secrets
//! No secret is logged, put in an error or a `Debug` output: [`IssuedToken`]
//! and [`TokenKeys`] redact themselves, error messages name ids, never
//! tokens. Log a [`fingerprint`] instead of a token. Anything secret kept at
//! rest is stored as [`hash_secret`]; secret comparisons use
//! [`constant_time_eq`] or, for values of public length, [`fixed_time_eq`]
//! (signatures are compared in constant time by the HMAC implementation).

mod model;
mod permissions;
mod policy;
mod requests;
mod secrets;
mod tokens;

pub(crate) use model::{
    Deleted, GROUPS_PREFIX, Group, GroupView, KeyMeta, ModelError, RecordKind, Revocation,
    TokenRecord, USERS_PREFIX, User, deleted_group_key, deleted_user_key, group_key, revoked_key,
    token_key, user_key,
};
pub(crate) use permissions::Permissions;
pub(crate) use policy::{
    AccessRequest, AnonymousAccess, Denied, Operation, Principal, admit, ancestors, authorize,
};
pub(crate) use requests::{
    BodyFields, CreateGroup, CreateUser, GroupPlan, IssueToken, MAX_TOKEN_TTL_MS, UpdateGroup,
    UpdateMeta, UpdateUser, plan_create_group, plan_create_user, plan_delete_group,
    plan_delete_user, plan_issue_token, plan_update_group, plan_update_meta, plan_update_user,
};
pub(crate) use secrets::{constant_time_eq, fingerprint, fixed_time_eq, hash_secret};
pub(crate) use tokens::{IssuedToken, ROOT_USER_ID, Scope, TokenError, TokenKeys, bearer_token};
