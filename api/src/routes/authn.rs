//! Authentication of every request and the route side of authorization.
//!
//! [`Api::authenticate`] turns the `Authorization` header into a [`Caller`]: with
//! `auth_enabled: false` every caller is [`Caller::Unchecked`]; otherwise the bearer token
//! is verified (HS256, signature, expiry), then its `jti` is looked up under
//! `_auth/revoked/` and its `sub` under `_auth/users/` (a user with a record under
//! `_auth/deleted-users/` counts as deleted, whatever that says), and each of the user's groups
//! under `_auth/groups/` (a deleted group grants nothing). The result is
//! cached briefly (see `caller_cache`), and the cache is emptied by every `_auth/` write
//! on this node and every one its store takes from a peer, so a revocation or a user
//! deletion applies to the very next request once it is here.
//! [`Api::authorize`]
//! hands the decision to the pure [`crate::auth::authorize`].

use std::sync::Arc;

use kvs_sync::Version;
use warp::http::{HeaderMap, header};

use super::Api;
use super::records::was_deleted;
use crate::auth::{
    AccessRequest, AnonymousAccess, KeyMeta, Operation, Permissions, Principal, Scope, TokenError,
    TokenKeys, User, admit, ancestors, authorize, bearer_token, deleted_group_key,
    deleted_user_key, group_key, revoked_key, user_key,
};
use crate::{ApiError, Backend};

/// The authentication settings of a node with `auth_enabled: true`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub(crate) keys: TokenKeys,
    pub(crate) anonymous: AnonymousAccess,
}

impl AuthConfig {
    /// Settings from `jwt_secret` (must not be empty) and the anonymous-access flags
    /// `allow_anonymous_read` and `allow_anonymous_write`.
    pub fn new(
        jwt_secret: &str,
        allow_anonymous_read: bool,
        allow_anonymous_write: bool,
    ) -> Result<Self, ApiError> {
        let keys = TokenKeys::new(jwt_secret.as_bytes())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self {
            keys,
            anonymous: AnonymousAccess {
                read: allow_anonymous_read,
                write: allow_anonymous_write,
            },
        })
    }
}

/// Who sent a request, as far as the routes care.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// `auth_enabled: false`: every check passes and new keys have no owner.
    Unchecked,
    /// An authenticated user (with their current record) or an anonymous client.
    Checked {
        /// The principal the policy decides on.
        principal: Principal,
        /// The user record of an authenticated caller.
        user: Option<User>,
    },
}

impl Caller {
    /// The user record of an authenticated caller.
    pub(crate) fn user(&self) -> Option<&User> {
        match self {
            Caller::Checked { user, .. } => user.as_ref(),
            Caller::Unchecked => None,
        }
    }

    /// Whether every check passes for this caller (auth off, or scope `admin`), so that
    /// no metadata needs to be read to authorize it.
    pub(crate) fn passes_all(&self) -> bool {
        match self {
            Caller::Unchecked => true,
            Caller::Checked {
                principal: Principal::User(subject),
                ..
            } => subject.scopes.contains(&Scope::Admin),
            Caller::Checked { .. } => false,
        }
    }

    /// Whether the caller is an unauthenticated client of a node with auth on.
    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(
            self,
            Caller::Checked {
                principal: Principal::Anonymous,
                ..
            }
        )
    }
}

/// What a request on a key attempts, as far as anonymous access goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt {
    /// `GET`/`HEAD /kv/...`, `GET /history/...` (`allow_anonymous_read`).
    Read,
    /// `PUT /kv/...` (`allow_anonymous_write`).
    Write,
    /// Anything else on a key (`DELETE`, `/meta`): never anonymous.
    Other,
}

/// The ownership and permissions recorded in a key's version.
pub(crate) fn key_meta(version: &Version) -> KeyMeta {
    KeyMeta {
        owner: version.owner.clone(),
        group: version.group.clone(),
        permissions: Permissions::from_bits(version.permissions & 0xfff)
            .unwrap_or(Permissions::NONE),
    }
}

impl<B: Backend> Api<B> {
    /// The caller of a request with `headers`; `401` for any bad token.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, ApiError> {
        let Some(auth) = &self.config.auth else {
            return Ok(Arc::clone(&self.callers.unchecked));
        };
        let header = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| TokenError::BadHeader))
            .transpose()?;
        let Some(token) = bearer_token(header)? else {
            return Ok(Arc::clone(&self.callers.anonymous));
        };
        let now = self.backend.now_ms();
        self.callers.follow(self.backend.store().reserved_changes());
        if let Some(caller) = self.callers.get(token, now) {
            return Ok(caller);
        }
        let epoch = self.callers.epoch();
        let claims = auth.keys.verify(token, now)?;
        let store = self.backend.store();
        let revoked = store
            .get(&revoked_key(&claims.jti))?
            .is_some_and(|v| v.is_live(now));
        let user = match store.get(&user_key(&claims.sub))? {
            Some(v)
                if v.is_live(now) && !was_deleted(store, &deleted_user_key(&claims.sub), now)? =>
            {
                v.data
                    .as_deref()
                    .and_then(|text| serde_json::from_str::<User>(text).ok())
            }
            _ => None,
        };
        let user = user
            .map(|u| self.without_deleted_groups(u, now))
            .transpose()?;
        let principal = admit(&claims, revoked, user.as_ref())?;
        let caller = Arc::new(Caller::Checked { principal, user });
        let expires_at = claims.exp.saturating_mul(1000);
        self.callers.insert(token, &caller, epoch, now, expires_at);
        Ok(caller)
    }

    /// `user` without the ids of groups that no longer exist. Deleting a group rewrites
    /// its members' records, but a user record written concurrently elsewhere (and merged
    /// after the delete) can still name it: such an id grants nothing, and new keys do not
    /// get it as their group. One store read per group of the user.
    fn without_deleted_groups(&self, mut user: User, now: u64) -> Result<User, ApiError> {
        let store = self.backend.store();
        let mut kept = Vec::with_capacity(user.groups.len());
        for id in user.groups {
            let live = store.get(&group_key(&id))?.is_some_and(|v| v.is_live(now));
            if live && !was_deleted(store, &deleted_group_key(&id), now)? {
                kept.push(id);
            }
        }
        user.groups = kept;
        Ok(user)
    }

    /// The auth settings; `404` when `auth_enabled` is false.
    pub(crate) fn auth_config(&self) -> Result<&AuthConfig, ApiError> {
        self.config.auth.as_ref().ok_or_else(|| {
            ApiError::not_found("authentication is disabled on this node (auth_enabled: false)")
        })
    }

    /// Decides `operation` for `caller`: `401`/`403` on refusal.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        operation: Operation<'_>,
    ) -> Result<(), ApiError> {
        authorize_under(self.config.auth.as_ref(), caller, operation)
    }

    /// Refuses (`401`) an anonymous caller whom the configuration lets make no `attempt`
    /// of this kind at all, before the request's input is checked: without a token, the
    /// answer to a request it could never make is `401` whatever it sent.
    pub(crate) fn refuse_anonymous(
        &self,
        caller: &Caller,
        attempt: Attempt,
    ) -> Result<(), ApiError> {
        if !caller.is_anonymous() {
            return Ok(());
        }
        // For an anonymous caller these decide on the configuration's flags alone.
        let operation = match attempt {
            Attempt::Read => Operation::List,
            Attempt::Write => Operation::Create(None),
            Attempt::Other => Operation::Delete(None),
        };
        self.authorize(caller, operation)
    }

    /// The metadata of the nearest existing (live) ancestor of `key`, which decides
    /// whether a key may be created below it.
    pub(crate) fn ancestor_meta(&self, key: &str) -> Result<Option<KeyMeta>, ApiError> {
        let now = self.backend.now_ms();
        for ancestor in ancestors(key) {
            if let Some(version) = self
                .backend
                .store()
                .get(ancestor)?
                .filter(|v| v.is_live(now))
            {
                return Ok(Some(key_meta(&version)));
            }
        }
        Ok(None)
    }
}

/// Whether `caller` may do `operation` under `auth` (none: auth is off, all may).
pub(crate) fn authorize_under(
    auth: Option<&AuthConfig>,
    caller: &Caller,
    operation: Operation<'_>,
) -> Result<(), ApiError> {
    let (Caller::Checked { principal, .. }, Some(auth)) = (caller, auth) else {
        return Ok(());
    };
    authorize(&AccessRequest {
        principal,
        operation,
        anonymous: auth.anonymous,
    })
    .map_err(ApiError::from)
}
