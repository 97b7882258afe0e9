//! The `/auth/...` endpoints: dispatch, the admin check, and request bodies.
//!
//! Every `/auth` endpoint needs scope `admin` (`403` without it, `401` without a token).
//! With `auth_enabled: false` they answer `404`. Changes are serialized on the node by
//! `Api::admin_lock`, so that checks such as unique names see the previous change.

use bytes::Buf;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use warp::http::{Method, Response, StatusCode, header};
use warp::reply::Response as WarpResponse;

use super::request::{discard, from_object, read_json_body};
use super::{Api, Caller, Handled, Request, json_response};
use crate::auth::{BodyFields, Operation};
use crate::{ApiError, Backend};

/// The largest `/auth` request body.
const MAX_AUTH_BODY: usize = 64 * 1024;

impl<B: Backend> Api<B> {
    pub(super) async fn auth<S, D, E>(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        rest: &str,
        body: S,
    ) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        if let Err(refused) = self.admin_check(caller) {
            discard(body).await;
            return Err(refused);
        }
        let method = request.method;
        let (kind, id) = match rest.split_once('/') {
            Some((kind, id)) if !id.is_empty() && !id.contains('/') => (kind, Some(id)),
            Some(_) => ("", None),
            None => (rest, None),
        };
        match (kind, id, method.clone()) {
            ("users", None, Method::GET) => self.list_users().await,
            ("users", None, Method::POST) => self.create_user(json(request, body).await?).await,
            ("users", Some(id), Method::GET) => self.get_user(id).await,
            ("users", Some(id), Method::PUT) => {
                self.update_user(id, json(request, body).await?).await
            }
            ("users", Some(id), Method::DELETE) => self.delete_user(id).await,
            ("groups", None, Method::GET) => self.list_groups().await,
            ("groups", None, Method::POST) => self.create_group(json(request, body).await?).await,
            ("groups", Some(id), Method::GET) => self.get_group(id).await,
            ("groups", Some(id), Method::PUT) => {
                self.update_group(id, json(request, body).await?).await
            }
            ("groups", Some(id), Method::DELETE) => self.delete_group(id).await,
            ("tokens", None, Method::POST) => self.issue_token(json(request, body).await?).await,
            ("tokens", Some(jti), Method::DELETE) => self.revoke_token(jti).await,
            ("users" | "groups" | "tokens", _, _) => {
                Err(ApiError::method_not_allowed(method.as_str(), request.path))
            }
            _ => Err(ApiError::not_found(format!(
                "no route for {}",
                request.path
            ))),
        }
    }

    /// `/auth` needs auth on and scope `admin`.
    fn admin_check(&self, caller: &Caller) -> Result<(), ApiError> {
        if matches!(caller, Caller::Unchecked) {
            return Err(ApiError::not_found(
                "authentication is disabled on this node (auth_enabled: false)",
            ));
        }
        self.authorize(caller, Operation::Admin)
    }
}

/// The request body as `T`: `400 invalid_json` when it is not JSON, `400 bad_request`
/// when it has the wrong shape or a field `T` does not accept.
async fn json<T, S, D, E>(request: &Request<'_>, body: S) -> Result<T, ApiError>
where
    T: DeserializeOwned + BodyFields,
    S: Stream<Item = Result<D, E>> + Send,
    E: std::fmt::Display,
    D: Buf,
{
    let text = read_json_body(request.headers, body, MAX_AUTH_BODY).await?;
    from_object(&text, "invalid request")
}

/// A `200`/`201` answer with `value` as JSON.
pub(super) fn json_reply<T: serde::Serialize>(status: StatusCode, value: &T) -> Handled {
    let body = serde_json::to_string(value).map_err(ApiError::internal)?;
    Ok(json_response(status, body))
}

/// `204 No Content`.
pub(super) fn no_content() -> WarpResponse {
    let mut response = Response::new(String::new().into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}
