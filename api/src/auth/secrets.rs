//! Handling of secret material: hashing for storage and constant-time equality.
//!
//! Nothing secret is stored in clear in the reserved keyspace: anything that
//! must be recognised later is stored as [`hash_secret`] (SHA-256 with a
//! domain-separation prefix, hex). Comparisons of secret-derived values go
//! through [`constant_time_eq`], which hashes both sides to fixed-size digests
//! and folds the XOR of every byte, so that the time taken depends on neither
//! the position of the first difference nor the lengths of the inputs.
//! (JWT signatures themselves are checked by `jsonwebtoken`'s HMAC
//! `verify_slice`, which is already constant time.)
//!
//! [`fingerprint`] is a short, non-reversible tag of a secret, safe to put in
//! logs ("root token written, fingerprint 3fa2c0d1") where the secret is not.

use std::hint::black_box;

use sha2::{Digest, Sha256};

/// Domain separation for [`hash_secret`], so that its digests never collide
/// with digests of the same bytes computed for another purpose.
const HASH_DOMAIN: &[u8] = b"kvs/auth/secret-hash/v1\0";
/// Domain separation for [`fingerprint`].
const FINGERPRINT_DOMAIN: &[u8] = b"kvs/auth/fingerprint/v1\0";

/// SHA-256 of `secret` (domain-separated), as 64 lowercase hex digits.
pub(crate) fn hash_secret(secret: &[u8]) -> String {
    hex::encode(digest(HASH_DOMAIN, secret))
}

/// Equality of two byte strings in time independent of their content.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = digest(b"", a);
    let db = digest(b"", b);
    let diff = da
        .iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | black_box(x ^ y));
    black_box(diff) == 0
}

/// Equality of two byte strings of public length in time independent of their
/// content (a length mismatch answers at once).
pub(crate) fn fixed_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | black_box(x ^ y));
    black_box(diff) == 0
}

/// The first 8 hex digits of a domain-separated SHA-256 of `secret`: enough
/// to tell two secrets apart in a log line, useless to recover either.
pub(crate) fn fingerprint(secret: &[u8]) -> String {
    let mut text = hex::encode(digest(FINGERPRINT_DOMAIN, secret));
    text.truncate(8);
    text
}

/// SHA-256 over `domain || data`.
pub(crate) fn digest(domain: &[u8], data: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(data);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret "));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn hash_is_stable_hex_and_not_the_input() {
        let h = hash_secret(b"hunter2");
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(h, hash_secret(b"hunter2"));
        assert_ne!(h, hash_secret(b"hunter3"));
        assert!(!h.contains("hunter2"));
    }

    #[test]
    fn hash_is_domain_separated_from_plain_sha256() {
        let plain: [u8; 32] = Sha256::digest(b"hunter2").into();
        assert_ne!(hash_secret(b"hunter2"), hex::encode(plain));
    }

    #[test]
    fn fixed_time_equality() {
        assert!(fixed_time_eq(b"", b""));
        assert!(fixed_time_eq(b"abc", b"abc"));
        assert!(!fixed_time_eq(b"abc", b"abd"));
        assert!(!fixed_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn fingerprint_is_short_and_differs_from_hash() {
        let f = fingerprint(b"token");
        assert_eq!(f.len(), 8);
        assert!(!hash_secret(b"token").starts_with(&f));
        assert_ne!(f, fingerprint(b"token2"));
    }
}
