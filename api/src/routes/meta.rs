//! `GET` and `PUT /meta/{key}`: a key's owner, group, permissions and expiry.
//!
//! The metadata is part of the key's current version; a change is a
//! [`Mutation::SetMeta`] write (a new version with the same data and expiry), so it
//! replicates like any write. Reading it needs the `read` scope and the owner or the R
//! bit; changing it needs the `write` scope and the owner (or `admin`). With
//! `auth_enabled: false` both are open.

use bytes::Buf;
use futures_util::Stream;
use kvs_sync::{Mutation, Version};
use warp::http::{Method, StatusCode};
use warp::reply::Response as WarpResponse;

use super::authn::{Attempt, key_meta};
use super::kv::not_found;
use super::kv::set_etag;
use super::request::{discard, from_object, precondition, read_json_body};
use super::{Api, Caller, Handled, Request, json_response};
use crate::auth::{KeyMeta, Operation, UpdateMeta, plan_update_meta};
use crate::keys::decode_key;
use crate::{ApiError, Backend};

impl<B: Backend> Api<B> {
    pub(super) async fn meta<S, D, E>(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        raw_key: &str,
        body: S,
    ) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        if let Err(refused) = self.refuse_anonymous(caller, Attempt::Other) {
            discard(body).await;
            return Err(refused);
        }
        let key = decode_key(raw_key)?;
        let version = self.current(&key)?;
        let meta = version.as_ref().map(key_meta);
        match *request.method {
            Method::GET => {
                let operation = match &meta {
                    Some(meta) => Operation::ReadMeta(meta),
                    None if caller.is_anonymous() => Operation::ReadMeta(&NO_META),
                    None => Operation::Read(None),
                };
                self.authorize(caller, operation)?;
                let version = version.ok_or_else(|| not_found(&key))?;
                Ok(meta_response(&version))
            }
            Method::PUT => {
                // An absent key's metadata: only an authenticated writer learns it is absent.
                let operation = match &meta {
                    Some(meta) => Operation::ChangeMeta(meta),
                    None => Operation::Delete(None),
                };
                if let Err(denied) = self.authorize(caller, operation) {
                    discard(body).await;
                    return Err(denied);
                }
                let Some(version) = version else {
                    discard(body).await;
                    return Err(not_found(&key));
                };
                self.change_meta(request, caller, key, &version, body).await
            }
            _ => Err(ApiError::method_not_allowed(
                request.method.as_str(),
                request.path,
            )),
        }
    }

    async fn change_meta<S, D, E>(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        key: String,
        current: &Version,
        body: S,
    ) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        let precondition = precondition(request.headers)?;
        let text = read_json_body(request.headers, body, self.config.max_value_bytes).await?;
        let change: UpdateMeta = from_object(&text, "not a metadata change")?;
        if change.names_nothing() {
            // `{}`, or only the read-only fields: no new version (whose new ETag would fail
            // every client holding the current one), revision, event or audit entry. The
            // key is read afresh: the body may have been long in coming.
            let now = self.current(&key)?.ok_or_else(|| not_found(&key))?;
            if !precondition.holds(Some(&now)) {
                return Err(ApiError::precondition_failed(format!(
                    "the precondition on {key:?} does not hold"
                )));
            }
            return Ok(meta_response(&now));
        }
        let (users, groups) = if change.owner.is_some() || change.group.is_some() {
            (self.users().await?, self.groups().await?)
        } else {
            (Vec::new(), Vec::new())
        };
        let new = plan_update_meta(&key_meta(current), &change, &users, &groups)?;
        let mutation = Mutation::SetMeta {
            owner: new.owner,
            group: new.group,
            permissions: new.permissions.bits(),
        };
        let op = self.write_op(caller, key, mutation, precondition);
        let outcome = self.commit(op).await?;
        Ok(meta_response(&outcome.version))
    }
}

/// Stands in for an absent key's metadata when only the principal matters.
static NO_META: KeyMeta = KeyMeta {
    owner: None,
    group: None,
    permissions: crate::auth::Permissions::NONE,
};

/// `200 {"owner","group","permissions","expires_at"}` of a version, with its `ETag` (a
/// metadata change is a new version: the next conditional write needs its tag).
fn meta_response(version: &Version) -> WarpResponse {
    let meta = key_meta(version);
    let body = serde_json::json!({
        "owner": meta.owner,
        "group": meta.group,
        "permissions": meta.permissions.to_string(),
        "expires_at": version.expires_at,
    });
    let mut response = json_response(StatusCode::OK, body.to_string());
    set_etag(&mut response, version.id.uuid);
    response
}
