//! The error body of the API, `{"error": {"code", "message"}}`, and its status codes.

use warp::http::StatusCode;

/// An error answer: a spec error code, its status and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Whether the answer carries `WWW-Authenticate: Bearer` (every `401`).
    challenge: bool,
    /// Seconds for a `Retry-After` header (every `429`).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: false,
            retry_after: None,
        }
    }

    /// `429 rate_limited`, with `Retry-After: <seconds>`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {retry_after_secs} s"),
            )
        }
    }

    /// `401 unauthorized`, with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// `403 forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `400 invalid_key`.
    pub fn invalid_key(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_key", message)
    }

    /// `400 invalid_json`.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// `413 payload_too_large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `405 method_not_allowed`.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// `412 precondition_failed`.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// `503 unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// `500 internal`; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the node's log",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `WWW-Authenticate` value to send with this error, if any.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        self.challenge.then_some("Bearer")
    }

    /// The `Retry-After` seconds to send with this error, if any.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The error body as JSON text.
    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code, "message": self.message}}).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl From<kvs_sync::StoreError> for ApiError {
    fn from(error: kvs_sync::StoreError) -> Self {
        match error {
            kvs_sync::StoreError::Full(_) => {
                tracing::warn!(%error, "a write was refused");
                ApiError::unavailable(
                    "the node's disk is full: writes and backups are refused until space is freed",
                )
            }
            error => ApiError::internal(error),
        }
    }
}

impl ApiError {
    /// An error from an auth error's status and code; every `401` gets the challenge.
    fn auth(status: u16, code: &'static str, message: String) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return ApiError::internal(message);
        }
        Self {
            challenge: status == StatusCode::UNAUTHORIZED,
            ..Self::new(status, code, message)
        }
    }
}

impl From<crate::auth::TokenError> for ApiError {
    fn from(error: crate::auth::TokenError) -> Self {
        ApiError::auth(error.status(), error.code(), error.to_string())
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(denied: crate::auth::Denied) -> Self {
        let error = ApiError::auth(denied.status(), denied.code(), denied.to_string());
        debug_assert_eq!(error.www_authenticate(), denied.www_authenticate());
        error
    }
}

impl From<crate::auth::ModelError> for ApiError {
    fn from(error: crate::auth::ModelError) -> Self {
        ApiError::auth(error.status(), error.code(), error.to_string())
    }
}
