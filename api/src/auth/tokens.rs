//! Bearer tokens: HS256 JWTs signed with the cluster-wide `jwt_secret`.
//!
//! [`TokenKeys`] issues and verifies tokens. Verification accepts HS256 only
//! (`alg: none`, HS384/HS512 and every asymmetric algorithm are rejected),
//! checks the signature (constant time, inside `jsonwebtoken`'s HMAC), then
//! checks `exp` (and `nbf`, when a token carries one) against the time passed
//! in by the caller: the library's own clock-based checks are switched off so
//! that this module never reads the clock. `exp` and `iat` are JWT `NumericDate`s (seconds, RFC 7519);
//! `IssuedToken::expires_at` is Unix milliseconds like every API timestamp.
//!
//! Verification proves only that a node of the cluster signed the token. The
//! caller must then reject revoked `jti`s and tokens whose `sub` no longer
//! exists ([`TokenError::Revoked`], [`TokenError::UnknownUser`]).
//!
//! The root token ([`TokenKeys::root_token`]) is a pure function of the
//! secret: `sub` is [`ROOT_USER_ID`], scope `admin`, `iat` is 0, `exp` is
//! [`ROOT_TOKEN_EXP_SECS`] and `jti` is a UUID made from a domain-separated
//! SHA-256 of the secret. HS256 is deterministic, so every node of a cluster
//! writes a byte-identical `root.token` and no node ever mints a second root.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::secrets;

/// The fixed id (and name) of the bootstrap administrator on every node.
pub(crate) const ROOT_USER_ID: &str = "root";
/// `exp` of the root token: 2100-01-01T00:00:00Z, in seconds.
pub(crate) const ROOT_TOKEN_EXP_SECS: u64 = 4_102_444_800;
/// Longer `Authorization` values are rejected unparsed.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;
/// How far ahead of this node's clock a token's `nbf` may be: the clocks of the
/// nodes (and of other issuers holding the secret) differ a little.
pub(crate) const NBF_LEEWAY_MS: u64 = 5_000;
/// Domain separation of the root token's `jti` derivation.
const ROOT_JTI_DOMAIN: &[u8] = b"kvs/auth/root-jti/v1\0";

/// What a token allows, before per-key permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// Reads (`GET`/`HEAD` of keys, history, listings, metadata).
    Read,
    /// Writes and deletes of keys, metadata changes.
    Write,
    /// Everything, admin endpoints included; passes every permission check.
    Admin,
}

/// A scope name other than `read`, `write` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown scope {0:?}: expected read, write or admin")]
pub(crate) struct ScopeError(String);

/// The claims of a kvs token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user id.
    pub(crate) sub: String,
    /// Granted scopes, sorted and without duplicates when issued here.
    pub(crate) scopes: Vec<Scope>,
    /// Expiry, seconds since the epoch.
    pub(crate) exp: u64,
    /// Issue time, seconds since the epoch.
    pub(crate) iat: u64,
    /// Token id (a UUID), the handle for revocation.
    pub(crate) jti: String,
    /// Not before, seconds since the epoch: never set here, but honoured in a token
    /// that another holder of the secret signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nbf: Option<u64>,
}

/// A freshly issued token: the body of `201` to `POST /auth/tokens`.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub(crate) struct IssuedToken {
    /// The compact JWT. A secret: never log it.
    pub(crate) token: String,
    /// Its `jti`.
    pub(crate) jti: String,
    /// Its expiry, Unix milliseconds.
    pub(crate) expires_at: u64,
}

/// Why a token was not issued or not accepted. Every variant but the issuing
/// ones is a `401 unauthorized` (see [`TokenError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum TokenError {
    /// Not a well-formed HS256 JWT with kvs claims.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm, or `alg: none`.
    #[error("unsupported token algorithm: only HS256 is accepted")]
    Algorithm,
    /// The signature does not match the cluster's secret.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (by more than [`NBF_LEEWAY_MS`]).
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// The `jti` was revoked (checked by the caller).
    #[error("token revoked")]
    Revoked,
    /// The `sub` user no longer exists (checked by the caller).
    #[error("token user no longer exists")]
    UnknownUser,
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("expected an Authorization header of the form \"Bearer <token>\"")]
    BadHeader,
    /// A ttl of zero or one whose expiry overflows.
    #[error("token ttl must be positive")]
    InvalidTtl,
    /// An empty `jwt_secret`.
    #[error("jwt_secret must not be empty")]
    EmptySecret,
    /// Signing failed (never expected with HS256).
    #[error("failed to sign a token")]
    Signing,
}

impl TokenError {
    /// The spec's error code for this error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidTtl => "bad_request",
            Self::EmptySecret | Self::Signing => "internal",
            _ => "unauthorized",
        }
    }

    /// The HTTP status for this error.
    pub(crate) fn status(&self) -> u16 {
        match self.code() {
            "bad_request" => 400,
            "internal" => 500,
            _ => 401,
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(ScopeError(other.chars().take(32).collect())),
        }
    }
}

impl Scope {
    /// The lowercase name of the scope.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The signing and verifying keys derived from `jwt_secret`.
#[derive(Clone)]
pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    root_jti: String,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys for `jwt_secret`, which must not be empty.
    pub(crate) fn new(jwt_secret: &[u8]) -> Result<Self, TokenError> {
        if jwt_secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.validate_exp = false; // checked against the caller's time
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let digest = secrets::digest(ROOT_JTI_DOMAIN, jwt_secret);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let root_jti = uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string();
        Ok(Self {
            encoding: EncodingKey::from_secret(jwt_secret),
            decoding: DecodingKey::from_secret(jwt_secret),
            validation,
            root_jti,
        })
    }

    /// Issues a token for `sub` with `scopes` (sorted, deduplicated) valid for
    /// `ttl_ms` from `now_ms`. The expiry is rounded up to a whole second.
    pub(crate) fn issue(
        &self,
        sub: &str,
        scopes: &[Scope],
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<IssuedToken, TokenError> {
        if ttl_ms == 0 {
            return Err(TokenError::InvalidTtl);
        }
        // A ttl whose end is past what a Unix-ms clock can say is refused.
        now_ms.checked_add(ttl_ms).ok_or(TokenError::InvalidTtl)?;
        // Whole seconds: `exp - iat` is the ttl (a part of a second counts as one), and
        // the token lasts at least the ttl, so `iat` is the issue time rounded up (a
        // token is valid before its `iat` anyway: node clocks differ a little).
        let iat = now_ms.div_ceil(1000);
        let exp = iat
            .checked_add(ttl_ms.div_ceil(1000))
            .ok_or(TokenError::InvalidTtl)?;
        let claims = Claims {
            sub: sub.to_owned(),
            scopes: normalize_scopes(scopes),
            exp,
            iat,
            jti: Uuid::new_v4().to_string(),
            nbf: None,
        };
        self.sign(claims)
    }

    /// The deterministic root token of this secret (see the module doc).
    pub(crate) fn root_token(&self) -> Result<IssuedToken, TokenError> {
        self.sign(Claims {
            sub: ROOT_USER_ID.to_owned(),
            scopes: vec![Scope::Admin],
            exp: ROOT_TOKEN_EXP_SECS,
            iat: 0,
            jti: self.root_jti.clone(),
            nbf: None,
        })
    }

    /// Verifies `token` at `now_ms`: HS256, signature, well-formed claims,
    /// not expired, not before its `nbf`. Revocation and user existence are the caller's part.
    pub(crate) fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        if data.header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let claims = data.claims;
        if claims.sub.is_empty() || claims.jti.is_empty() {
            return Err(TokenError::Malformed);
        }
        if now_ms >= claims.exp.saturating_mul(1000) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now_ms.saturating_add(NBF_LEEWAY_MS) < nbf.saturating_mul(1000))
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    fn sign(&self, claims: Claims) -> Result<IssuedToken, TokenError> {
        let header = Header::new(Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)?;
        Ok(IssuedToken {
            token,
            jti: claims.jti,
            expires_at: claims.exp.saturating_mul(1000),
        })
    }
}

/// The token of an `Authorization` header value: `None` when there is no
/// header (an anonymous request), an error when it is not `Bearer <token>`.
/// The scheme is case-insensitive (RFC 7235).
pub(crate) fn bearer_token(header: Option<&str>) -> Result<Option<&str>, TokenError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::BadHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(TokenError::BadHeader);
    }
    Ok(Some(token))
}

/// Sorted, deduplicated scopes.
pub(crate) fn normalize_scopes(scopes: &[Scope]) -> Vec<Scope> {
    let mut scopes = scopes.to_vec();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidKeyFormat => TokenError::Algorithm,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
