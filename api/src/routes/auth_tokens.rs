//! `/auth/tokens`: issue (`POST`) and revoke (`DELETE /auth/tokens/{jti}`) tokens.
//!
//! Issuing signs an HS256 JWT and records `_auth/tokens/<jti>` (user, scopes, expiry and
//! a SHA-256 of the token, never the token) until the token expires. Revoking writes
//! `_auth/revoked/<jti>` until the same expiry (for a `jti` this node has no record of
//! yet, until the longest token lifetime); every node checks it on each request, so the
//! token stops working on a node as soon as the record has replicated there.

use std::time::{Duration, Instant};

use uuid::Uuid;
use warp::http::StatusCode;

use super::Api;
use super::Handled;
use super::auth_routes::{json_reply, no_content};
use crate::auth::{
    IssueToken, IssuedToken, MAX_TOKEN_TTL_MS, ModelError, RecordKind, Revocation, TokenRecord,
    hash_secret, plan_issue_token, revoked_key, token_key,
};
use crate::{ApiError, Backend};

/// How long a revoke of a `jti` this node has no record of waits for the record to
/// arrive from the node that issued the token (pushes take milliseconds).
const RECORD_WAIT: Duration = Duration::from_secs(2);
/// How often it looks meanwhile.
const RECORD_POLL: Duration = Duration::from_millis(20);

/// A token ttl error that names the accepted range, the 10-year cap included.
fn ttl_error(error: ModelError) -> ApiError {
    match error {
        ModelError::InvalidDuration(ttl) => ApiError::bad_request(format!(
            "invalid ttl {ttl:?}: use 500ms, 30s, 10m, 24h, 7d or a number of seconds, above \
             zero and at most 10 years (3650d, 315360000 seconds)"
        )),
        other => ApiError::from(other),
    }
}

impl<B: Backend> Api<B> {
    pub(super) async fn issue_token(&self, request: IssueToken) -> Handled {
        let auth = self.auth_config()?;
        let plan = plan_issue_token(&request, &self.users().await?).map_err(ttl_error)?;
        let now = self.backend.now_ms();
        let issued = auth
            .keys
            .issue(&plan.user_id, &plan.scopes, plan.ttl_ms, now)?;
        self.record_token(&issued, &plan.user_id, &plan.scopes, now)
            .await?;
        tracing::info!(jti = %issued.jti, user_id = %plan.user_id, "token issued");
        json_reply(StatusCode::CREATED, &issued)
    }

    /// Records an issued token under `_auth/tokens/<jti>` until it expires.
    pub(super) async fn record_token(
        &self,
        issued: &IssuedToken,
        user_id: &str,
        scopes: &[crate::auth::Scope],
        now: u64,
    ) -> Result<(), ApiError> {
        let record = TokenRecord {
            jti: issued.jti.clone(),
            user_id: user_id.to_owned(),
            scopes: scopes.to_vec(),
            issued_at: now,
            expires_at: issued.expires_at,
            token_sha256: hash_secret(issued.token.as_bytes()),
        };
        let ttl = issued.expires_at.saturating_sub(now).max(1);
        self.put_record(token_key(&issued.jti), &record, Some(ttl))
            .await
    }

    pub(super) async fn revoke_token(&self, jti: &str) -> Handled {
        let now = self.backend.now_ms();
        let Some(record) = self.load::<TokenRecord>(&token_key(jti))? else {
            return self.revoke_unknown(jti, now).await;
        };
        let revocation = Revocation {
            jti: record.jti.clone(),
            expires_at: record.expires_at,
        };
        let ttl = record.expires_at.saturating_sub(now).max(1);
        self.put_record(revoked_key(&record.jti), &revocation, Some(ttl))
            .await?;
        tracing::info!(jti = %record.jti, user_id = %record.user_id, "token revoked");
        Ok(no_content())
    }

    /// A `jti` with no token record on this node. A token is valid on every node by its
    /// signature alone, before its record has replicated to all of them, so a `jti` that
    /// could be one (a UUID as tokens carry it) is revoked all the same, for the longest
    /// lifetime a token can have: revoking on another node than the one that issued the
    /// token a moment ago does not leave it working. Then `204` if the token's record
    /// arrives within [`RECORD_WAIT`] (issued elsewhere a moment ago: the revoke
    /// answered `404` in about one try of ten, found by a black-box audit), else `404`.
    async fn revoke_unknown(&self, jti: &str, now: u64) -> Handled {
        let shown: String = jti.chars().take(64).collect();
        if Uuid::parse_str(jti).map(|uuid| uuid.to_string()).as_deref() != Ok(jti) {
            return Err(ApiError::from(ModelError::NotFound {
                kind: RecordKind::Token,
                id: shown,
            }));
        }
        let revocation = Revocation {
            jti: jti.to_owned(),
            expires_at: now.saturating_add(MAX_TOKEN_TTL_MS),
        };
        self.put_record(revoked_key(jti), &revocation, Some(MAX_TOKEN_TTL_MS))
            .await?;
        tracing::info!(jti, "a jti this node has no token for revoked");
        let waited_until = Instant::now() + RECORD_WAIT;
        while Instant::now() < waited_until {
            tokio::time::sleep(RECORD_POLL).await;
            if self.load::<TokenRecord>(&token_key(jti))?.is_some() {
                tracing::info!(jti, "the revoked token's record arrived");
                return Ok(no_content());
            }
        }
        Err(ApiError::not_found(format!(
            "token {shown:?} not found on this node; its revocation is recorded all the same, \
             so a token with this jti issued on another node stops working everywhere"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_past_the_cap_names_the_cap() {
        let error = ttl_error(ModelError::InvalidDuration("3651d".into()));
        let text = format!("{error:?}");
        assert!(text.contains("at most 10 years"), "{text}");
        assert!(text.contains("3651d"), "{text}");
    }
}
