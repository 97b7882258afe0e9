//! Reading requests: query strings, preconditions and size-limited JSON bodies.

use std::borrow::Cow;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use uuid::Uuid;
use warp::http::{HeaderMap, header};

use kvs_sync::Precondition;

use crate::ApiError;
use crate::auth::BodyFields;
use crate::keys::strict_percent_decode;

/// A parsed query string (`a=1&b=2`); later duplicates win.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// The pairs of `raw`, `+` read as a space; `400` when a name or a value is not
    /// percent-encoded UTF-8 (`prefix=%ZZ`, `prefix=%FF`), as a key in the path would be.
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            strict_percent_decode(&s)
                .map(Cow::into_owned)
                .map_err(|unfit| ApiError::bad_request(format!("the query string {unfit}")))
        };
        let pairs = raw.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        });
        Ok(Query(pairs.collect::<Result<_, ApiError>>()?))
    }

    /// `400` naming the first parameter not in `allowed`: a misspelt `ttl` or `prefix`
    /// is refused rather than ignored, as an unknown body field or config key is.
    pub(crate) fn only(&self, allowed: &[&str], request: &str) -> Result<(), ApiError> {
        let Some((unknown, _)) = self
            .0
            .iter()
            .find(|(name, _)| !allowed.contains(&name.as_str()))
        else {
            return Ok(());
        };
        let takes = match allowed {
            [] => "no query parameters".to_owned(),
            names => format!("only {}", names.join(", ")),
        };
        Err(ApiError::bad_request(format!(
            "unknown query parameter {unknown:?}: {request} takes {takes}"
        )))
    }

    /// Whether the query string holds no parameter.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The precondition of a PUT or DELETE from `If-Match` / `If-None-Match`.
pub(crate) fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let text = |name| {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    // If-None-Match: `*`, only if the key is absent (a PUT creates; a DELETE of nothing
    // answers 404); entity tags, only if none names the current version (weak ones
    // compared weakly, as RFC 9110 has). A tag that is not one of ours names no version.
    let none_match = match text(header::IF_NONE_MATCH)? {
        None => None,
        Some("*") => Some(Precondition::IfAbsent),
        Some(tags) => {
            let ours: Vec<Uuid> = opaque_tags(tags)
                .filter_map(|tag| Uuid::parse_str(tag).ok())
                .collect();
            (!ours.is_empty()).then_some(Precondition::IfNoneMatch(ours))
        }
    };
    if let Some(value) = text(header::IF_MATCH)? {
        if value == "*" {
            return Ok(Precondition::IfPresent);
        }
        // If-Match compares strongly: a weak tag (W/"...") matches nothing, nor does an
        // etag that is not one of ours, nor a list of tags (one tag per request).
        let uuid = match value.starts_with("W/") || value.contains(',') {
            true => Uuid::nil(),
            false => Uuid::parse_str(value.trim_matches('"')).unwrap_or(Uuid::nil()),
        };
        return Ok(Precondition::IfMatch(uuid));
    }
    Ok(none_match.unwrap_or(Precondition::None))
}

/// Whether a read's `If-None-Match` names the version `uuid`: `*`, or a list of entity
/// tags one of which is `"<uuid>"` (compared weakly, as RFC 9110 has for reads).
pub(crate) fn none_match_names(headers: &HeaderMap, uuid: Uuid) -> bool {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let current = uuid.hyphenated().encode_lower(&mut text);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value.split(',').any(|tag| tag.trim() == "*")
                || opaque_tags(value).any(|tag| tag == current)
        })
}

/// The opaque parts of a list of entity tags (`"a", W/"b"` -> `a`, `b`): a weak tag
/// compares as its strong form; what is not a quoted tag is left out.
fn opaque_tags(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .map(|tag| tag.strip_prefix("W/").unwrap_or(tag))
        .filter_map(|tag| tag.strip_prefix('"')?.strip_suffix('"'))
}

/// Parses a JSON body that must be an object (serde would also read a struct from an
/// array of its fields, `[null, null]`, which no client means) with no field but those
/// `T` accepts.
pub(crate) fn from_object<T: serde::de::DeserializeOwned + BodyFields>(
    text: &str,
    what: &str,
) -> Result<T, ApiError> {
    let fields: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(_) if !text.trim_start().starts_with('{') => {
            return Err(ApiError::bad_request(format!(
                "{what}: the body must be a JSON object"
            )));
        }
        Err(error) => return Err(ApiError::bad_request(format!("{what}: {error}"))),
    };
    if let Some(unknown) = fields
        .keys()
        .find(|name| !T::ACCEPTED.contains(&name.as_str()))
    {
        let shown: String = unknown.chars().take(64).collect();
        return Err(ApiError::bad_request(format!(
            "{what}: unknown field {shown:?}; the fields are {}",
            T::ACCEPTED.join(", ")
        )));
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// Reads a JSON body of at most `limit` bytes and returns its text, validated.
pub(crate) async fn read_json_body<S, D, E>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
) -> Result<String, ApiError>
where
    S: Stream<Item = Result<D, E>> + Send,
    E: std::fmt::Display,
    D: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(body);
    if declared.is_some_and(|len| len > limit as u64) {
        // A client that waits for `100 Continue` has sent no body: reading it would ask
        // for the body only to refuse it. It gets the `413` at once.
        if !expects_continue(headers) {
            drain(body, limit).await;
        }
        return Err(ApiError::payload_too_large(limit));
    }
    let mut bytes = Vec::with_capacity(declared.map_or(256, |len| len as usize));
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        if bytes.len() + chunk.remaining() > limit {
            drain(body, limit).await;
            return Err(ApiError::payload_too_large(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "the body is empty; send a JSON value",
        ));
    }
    let raw: Box<RawValue> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_json(format!("the body is not JSON: {e}")))?;
    if let Some(at) = lone_surrogate(raw.get().as_bytes()) {
        // The raw parse does not pair `\uD800`-`\uDFFF` escapes: a lone one is no text,
        // and strict clients could not read the value back.
        return Err(ApiError::invalid_json(format!(
            "the body is not JSON: a lone surrogate escape at byte {at}"
        )));
    }
    Ok(raw.get().to_owned())
}

/// The offset of the first `\u` escape in `json` (well-formed JSON text) that is half a
/// surrogate pair without its other half, if any. Only escapes are looked at: a string
/// holding a backslash is written `\\`, so every `\` in a string starts an escape.
fn lone_surrogate(json: &[u8]) -> Option<usize> {
    let unit = |at: usize| -> Option<u16> {
        let hex = json.get(at..at + 6)?;
        let digits = std::str::from_utf8(hex.strip_prefix(b"\\u")?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut at = 0;
    while at < json.len() {
        if json[at] != b'\\' {
            at += 1;
            continue;
        }
        match unit(at) {
            Some(0xD800..=0xDBFF) => {
                if !matches!(unit(at + 6), Some(0xDC00..=0xDFFF)) {
                    return Some(at);
                }
                at += 12;
            }
            Some(0xDC00..=0xDFFF) => return Some(at),
            // Another escape: `\u` and four digits, or a backslash and one character.
            Some(_) => at += 6,
            None => at += 2,
        }
    }
    None
}

/// Whether the request asks for `100 Continue` before it sends its body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads and discards what is left of an oversized body (up to a bound in bytes and in
/// time), so that the client, still sending, reads the `413` rather than a reset
/// connection; a client still sending after that has its connection closed after the
/// answer.
async fn drain<S, D, E>(mut body: std::pin::Pin<&mut S>, limit: usize)
where
    S: Stream<Item = Result<D, E>>,
    D: Buf,
{
    let bound = limit.saturating_mul(4).max(DRAIN_AT_LEAST);
    let drained = async {
        let mut drained = 0usize;
        while drained < bound {
            match body.next().await {
                Some(Ok(chunk)) => drained += chunk.remaining(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, drained).await;
}

/// Reads and discards a body the request is refused without (up to a bound), so that
/// the client reads the refusal rather than a reset connection.
pub(crate) async fn discard<S, D, E>(body: S)
where
    S: Stream<Item = Result<D, E>> + Send,
    E: std::fmt::Display,
    D: Buf,
{
    drain(std::pin::pin!(body), 0).await;
}

/// Oversized bodies are drained up to 4x the limit, and at least this much.
const DRAIN_AT_LEAST: usize = 16 << 20;
/// A refused body is drained for this long at most: a client that sends it slowly, or
/// stops, gets its answer then.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Parses a positive integer query parameter.
pub(crate) fn positive(query: &Query, name: &str) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|v| match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be a positive integer, not {v:?}"
            ))),
        })
        .transpose()
}
