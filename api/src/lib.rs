//! kvs-api: the HTTP API of a node, as `shared/spec/http-api.md` fixes it.
//!
//! [`Api`] answers HTTP requests ([`Api::handle`], or as a warp filter) over a [`Backend`]
//! (the node: its store, write path and cluster view). Errors are always the contract's `{"error": {"code", "message"}}` body.

mod auth;
mod backend;
mod duration;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod keys;
mod metrics;
mod routes;

pub use backend::{Backend, BackupInfo, MemberInfo};
pub use duration::{format_duration, parse_duration};
pub use error::ApiError;
pub use keys::{MAX_KEY_BYTES, validate_key};
pub use routes::{Api, ApiConfig, AuthConfig, RateLimit, RawRequest, WATCH_RESUMED_HEADER};
