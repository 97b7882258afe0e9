//! Keys from URLs: percent-decoding and the validity rules of the contract.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::ApiError;

/// The longest key in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Decodes a key from the raw (percent-encoded) path after `/kv/` and checks it.
///
/// A trailing `/` is not part of the key. Valid keys are 1 to 512 bytes of UTF-8, with
/// non-empty segments, no `.` or `..` segment, no control characters, and a first
/// segment that does not start with `_` (reserved for the system).
pub(crate) fn decode_key(raw: &str) -> Result<String, ApiError> {
    let decoded = strict_percent_decode(raw)
        .map_err(|unfit| ApiError::invalid_key(format!("the key {unfit}")))?;
    let key = decoded.strip_suffix('/').unwrap_or(&decoded);
    validate_key(key)?;
    Ok(key.to_owned())
}

/// Decodes `raw` (a path segment or a query value) where every `%` starts an escape of
/// two hex digits and the bytes decoded are UTF-8; otherwise says what is wrong. A lone
/// `%` is refused: percent_decode_str would keep it as text, so that `a%zz` and `a%25zz`
/// would name one key.
pub(crate) fn strict_percent_decode(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = raw.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'%'
            && !(bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err("has a '%' that does not start an escape of two hex digits");
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "is not valid UTF-8 once decoded")
}

/// Checks a decoded key against the contract's rules.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid_key("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::invalid_key(format!(
            "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::invalid_key(
            "the key contains a control character",
        ));
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(ApiError::invalid_key("the key has an empty segment")),
            "." | ".." => {
                return Err(ApiError::invalid_key("the key has a '.' or '..' segment"));
            }
            _ => {}
        }
    }
    if key.starts_with('_') {
        return Err(ApiError::invalid_key(
            "keys starting with '_' are reserved for the system",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys() {
        for (raw, key) in [
            ("a", "a"),
            ("users/john/profile", "users/john/profile"),
            ("a/", "a"),
            ("caf%C3%A9/x", "café/x"),
            ("a%2Fb", "a/b"),
            ("a_b/_c", "a_b/_c"),
            ("sp%20ace", "sp ace"),
            ("a%25zz", "a%zz"),
            ("%6b%6B", "kk"),
        ] {
            assert_eq!(decode_key(raw).unwrap(), key, "{raw}");
        }
        assert!(decode_key(&"k".repeat(512)).is_ok());
    }

    #[test]
    fn invalid_keys() {
        let long = "k".repeat(513);
        for raw in [
            "",
            "/",
            "a//b",
            "/a",
            "a/./b",
            "..",
            "a/..",
            "_sys",
            "_a/b",
            "a%00b",
            "a%0Ab",
            "%FF",
            "a//",
            "a%zz",
            "a%",
            "a%4",
            "%g0",
            long.as_str(),
        ] {
            let err = decode_key(raw).unwrap_err();
            assert_eq!(err.status(), 400, "{raw}");
            assert!(err.body().contains("invalid_key"), "{raw}");
        }
    }
}
