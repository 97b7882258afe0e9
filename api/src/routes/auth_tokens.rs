//! `/auth/tokens`: issue (`POST`) and revoke (`DELETE /auth/tokens/{jti}`) tokens.
//!
//! Issuing signs an HS256 JWT and records `_auth/tokens/<jti>` (user, scopes, expiry and
//! a SHA-256 of the token, never the token) until the token expires. Revoking writes
//! `_auth/revoked/<jti>` until the same expiry; every node checks it on each request, so
//! the token stops working on a node as soon as the record has replicated there.

use warp::http::StatusCode;

use super::Api;
use super::Handled;
use super::auth_routes::{json_reply, no_content};
use crate::auth::{
    IssueToken, IssuedToken, ModelError, RecordKind, Revocation, TokenRecord, hash_secret,
    plan_issue_token, revoked_key, token_key,
};
use crate::{ApiError, Backend};

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
        let record = self.load::<TokenRecord>(&token_key(jti))?.ok_or_else(|| {
            ApiError::from(ModelError::NotFound {
                kind: RecordKind::Token,
                id: jti.chars().take(64).collect(),
            })
        })?;
        let now = self.backend.now_ms();
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
