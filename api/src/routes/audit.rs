//! The audit routes (scope `admin`): `GET /audit?since_seq=S&limit=N` and
//! `GET /audit/verify`.

use kvs_sync::AuditVerdict;
use warp::http::StatusCode;

use super::request::positive;
use super::{Api, Handled, Query, json_response};
use crate::{ApiError, Backend};

/// Entries per page when `limit` is absent, and its ceiling.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

fn disabled() -> ApiError {
    ApiError::not_found("the audit log is disabled (tamper_logging_enabled: false)")
}

impl<B: Backend> Api<B> {
    pub(super) async fn audit_entries(&self, query: &Query) -> Handled {
        let since = match query.get("since_seq") {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("since_seq must be a whole number, not {text:?}"))
            })?,
        };
        let limit = positive(query, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .min(MAX_LIMIT) as usize;
        let entries = self
            .blocking(move |backend| Ok(backend.audit_entries(since, limit)?))
            .await?
            .ok_or_else(disabled)?;
        let body = serde_json::json!({ "entries": entries });
        Ok(json_response(StatusCode::OK, body.to_string()))
    }

    pub(super) async fn audit_verify(&self) -> Handled {
        let verdict = self.blocking(|backend| Ok(backend.verify_audit()?)).await?;
        let body = match verdict.ok_or_else(disabled)? {
            AuditVerdict::Intact { entries, unkeyed } => {
                let mut body = serde_json::json!({"ok": true, "entries": entries});
                if unkeyed > 0 {
                    // Entries written before the chain was keyed (see kvs_sync's audit).
                    body["unkeyed"] = unkeyed.into();
                }
                body
            }
            AuditVerdict::Broken {
                first_bad_seq,
                reason,
            } => {
                serde_json::json!({"ok": false, "first_bad_seq": first_bad_seq, "reason": reason})
            }
        };
        Ok(json_response(StatusCode::OK, body.to_string()))
    }
}
