//! The key-value routes: `/kv/{key}`, `/kv?prefix|since`, `/history/{key}`.

use bytes::Buf;
use futures_util::Stream;
use kvs_sync::{Cursor, ListPage, Listed, Mutation, Store, Version, WriteOp, WriteRejected};
use uuid::Uuid;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response as WarpResponse;

use super::authn::{Attempt, authorize_under, key_meta};
use super::request::{discard, none_match_names, positive, precondition, read_json_body};
use super::{Api, Caller, Handled, Query, Request, json_response};
use crate::auth::{KeyMeta, Operation, Permissions};
use crate::duration::parse_duration;
use crate::keys::decode_key;
use crate::{ApiError, AuthConfig, Backend};

/// Listing page size when `limit` is absent, and its ceiling.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

impl<B: Backend> Api<B> {
    /// The current live version of `key`, if any.
    pub(super) fn current(&self, key: &str) -> Result<Option<Version>, ApiError> {
        let now = self.backend.now_ms();
        Ok(self.backend.store().get(key)?.filter(|v| v.is_live(now)))
    }

    /// The current live version of `key` once `caller` may read it; `404` when absent.
    fn readable(&self, caller: &Caller, key: &str) -> Result<Version, ApiError> {
        let version = self.current(key)?;
        let meta = version.as_ref().map(key_meta);
        self.authorize(caller, Operation::Read(meta.as_ref()))?;
        version.ok_or_else(|| not_found(key))
    }

    /// `GET` / `HEAD /kv/KEY`; `304 Not Modified` (no body) when `If-None-Match` names
    /// the current version's ETag or is `*`.
    pub(super) fn get_key(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
        raw_key: &str,
        head: bool,
    ) -> Handled {
        self.refuse_anonymous(caller, Attempt::Read)?;
        let key = decode_key(raw_key)?;
        let version = self.readable(caller, &key)?;
        if none_match_names(headers, version.id.uuid) {
            let mut response = WarpResponse::new(String::new().into());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            set_etag(&mut response, version.id.uuid);
            return Ok(response);
        }
        let body = version_json(&version, true);
        // A HEAD answers with GET's headers, its Content-Length included, and no body.
        let length = body.len();
        let mut response = json_response(StatusCode::OK, if head { String::new() } else { body });
        if head {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        set_etag(&mut response, version.id.uuid);
        Ok(response)
    }

    pub(super) async fn put_key<S, D, E>(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        raw_key: &str,
        body: S,
    ) -> Handled
    where
        S: Stream<Item = Result<D, E>> + Send,
        E: std::fmt::Display,
        D: Buf,
    {
        if let Err(refused) = self.refuse_anonymous(caller, Attempt::Write) {
            discard(body).await;
            return Err(refused);
        }
        let key = decode_key(raw_key)?;
        let ttl_ms = ttl_ms(request)?;
        if let Err(denied) = self.may_put(caller, &key, ttl_ms.is_some()) {
            discard(body).await;
            return Err(denied);
        }
        let precondition = precondition(request.headers)?;
        let data = read_json_body(request.headers, body, self.config.max_value_bytes).await?;
        let op = self.write_op(caller, key, Mutation::Put { data, ttl_ms }, precondition);
        let outcome = self.commit(op).await?;
        let status = if outcome.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut response = json_response(status, version_json(&outcome.version, false));
        set_etag(&mut response, outcome.version.id.uuid);
        Ok(response)
    }

    /// Whether `caller` may put `key`: overwrite it (`expiring`: with a TTL, which needs
    /// the delete right too), or create it below its nearest existing ancestor.
    fn may_put(&self, caller: &Caller, key: &str, expiring: bool) -> Result<(), ApiError> {
        if caller.passes_all() {
            return Ok(());
        }
        let current = self.current(key)?.map(|v| key_meta(&v));
        let ancestor = match current {
            Some(_) => None,
            None => self.ancestor_meta(key)?,
        };
        let operation = Operation::put(current.as_ref(), ancestor.as_ref(), expiring);
        self.authorize(caller, operation)
    }

    pub(super) async fn delete_key(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        raw_key: &str,
    ) -> Handled {
        self.refuse_anonymous(caller, Attempt::Other)?;
        let key = decode_key(raw_key)?;
        let precondition = precondition(request.headers)?;
        if !caller.passes_all() {
            let current = self.current(&key)?.map(|v| key_meta(&v));
            self.authorize(caller, Operation::Delete(current.as_ref()))?;
        }
        let op = self.write_op(caller, key.clone(), Mutation::Delete, precondition);
        if self.commit(op).await?.created {
            // A tombstone was recorded all the same, for copies elsewhere.
            return Err(not_found(&key));
        }
        let mut response = json_response(StatusCode::NO_CONTENT, String::new());
        response.headers_mut().remove(header::CONTENT_TYPE);
        Ok(response)
    }

    /// A write of `key` by `caller`, who owns the key if this creates it.
    pub(super) fn write_op(
        &self,
        caller: &Caller,
        key: String,
        mutation: Mutation,
        precondition: kvs_sync::Precondition,
    ) -> WriteOp {
        let permissions =
            Permissions::from_bits(self.config.default_permissions).unwrap_or(Permissions::DEFAULT);
        let meta = match caller.is_anonymous() {
            true => KeyMeta::for_anonymous_key(permissions),
            false => KeyMeta::for_new_key(caller.user(), permissions),
        };
        WriteOp {
            key,
            mutation,
            precondition,
            uuid: Uuid::new_v4(),
            origin_joined_at: self.backend.joined_at(),
            owner: meta.owner,
            group: meta.group,
            permissions: meta.permissions.bits(),
            actor: caller.user().map(|user| user.id.clone()),
        }
    }

    pub(super) async fn commit(&self, op: WriteOp) -> Result<kvs_sync::WriteOutcome, ApiError> {
        let key = op.key.clone();
        match self.backend.write(op).await? {
            Ok(outcome) => Ok(outcome),
            Err(WriteRejected::NotFound) => Err(not_found(&key)),
            Err(WriteRejected::PreconditionFailed) => Err(ApiError::precondition_failed(format!(
                "the precondition on {key:?} does not hold"
            ))),
        }
    }

    pub(super) async fn history(&self, caller: &Caller, raw_key: &str) -> Handled {
        self.refuse_anonymous(caller, Attempt::Read)?;
        if !self.config.history_enabled {
            return Err(ApiError::not_found("revision history is disabled"));
        }
        let key = decode_key(raw_key)?;
        self.readable(caller, &key)?;
        let revisions = self
            .blocking(move |backend| Ok(backend.store().history(&key)?))
            .await?;
        let revisions = current_life(revisions);
        let visible = revisions.iter().filter(|v| self.may_read(caller, v));
        let mut body = String::from("{\"revisions\":[");
        for (i, version) in visible.enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&version_json(version, true));
        }
        body.push_str("]}");
        Ok(json_response(StatusCode::OK, body))
    }

    /// `GET /kv`: a page of up to `limit` visible keys (never one under the reserved
    /// `_` prefix, never a cursor pointing into it), by prefix or by time.
    pub(super) async fn list(&self, caller: &Caller, query: &Query) -> Handled {
        self.authorize(caller, Operation::List)?;
        let limit = positive(query, "limit")?
            .unwrap_or(DEFAULT_LIMIT)
            .min(MAX_LIMIT) as usize;
        let cursor = query
            .get("cursor")
            .filter(|c| !c.is_empty())
            .map(|c| Cursor::decode(c).ok_or_else(|| ApiError::bad_request("cursor is not valid")))
            .transpose()?;
        let prefix = query.get("prefix").unwrap_or("").to_owned();
        if prefix.starts_with('_') {
            // The reserved keyspace (`_auth/...`) is not reachable from `/kv`.
            return Ok(json_response(
                StatusCode::OK,
                page_json(&ListPage::default()),
            ));
        }
        let since = query
            .get("since")
            .map(|since| {
                since.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("since must be Unix milliseconds, not {since:?}"))
                })
            })
            .transpose()?;
        let now = self.backend.now_ms();
        // A caller whom not every check passes sees only the keys it may read, judged by
        // each key's current metadata (as `/watch` does).
        let readable = (!caller.passes_all()).then(|| Readable {
            auth: self.config.auth.clone(),
            caller: caller.clone(),
        });
        let page = self
            .blocking(move |backend| {
                let listing = Listing {
                    store: backend.store(),
                    prefix: &prefix,
                    limit,
                    now,
                    readable: readable.as_ref(),
                };
                match since {
                    Some(since) => listing.since(since, cursor),
                    None => listing.by_prefix(cursor),
                }
            })
            .await?;
        Ok(json_response(StatusCode::OK, page_json(&page)))
    }

    /// Whether `caller` may read `revision` under its own owner, group and permissions
    /// (a revision written while the key was private stays private).
    fn may_read(&self, caller: &Caller, revision: &Version) -> bool {
        caller.passes_all()
            || self
                .authorize(caller, Operation::Read(Some(&key_meta(revision))))
                .is_ok()
    }
}

/// The most keys one listing request reads from the store. A caller who may read few of
/// the keys under a prefix gets a short (even empty) page with a cursor rather than a
/// request that reads the whole keyspace.
const MAX_SCANNED: usize = 10 * (MAX_LIMIT as usize + 1);

/// Who must be able to read a key for a listing to show it.
struct Readable {
    auth: Option<AuthConfig>,
    caller: Caller,
}

impl Readable {
    /// Whether each of `items` is readable under its key's current version (a key deleted
    /// since it was listed is not shown).
    fn filter(&self, store: &dyn Store, items: &mut Vec<Listed>) -> Result<(), ApiError> {
        let keys: Vec<String> = items.iter().map(|item| item.key.clone()).collect();
        let versions = store.get_many(&keys)?;
        let mut versions = versions.into_iter();
        items.retain(|_| {
            versions.next().flatten().is_some_and(|version| {
                authorize_under(
                    self.auth.as_ref(),
                    &self.caller,
                    Operation::Read(Some(&key_meta(&version))),
                )
                .is_ok()
            })
        });
        Ok(())
    }
}

/// One `GET /kv` request's listing.
struct Listing<'a> {
    store: &'a dyn Store,
    prefix: &'a str,
    limit: usize,
    now: u64,
    readable: Option<&'a Readable>,
}

impl Listing<'_> {
    /// Keys under `prefix` in byte order after a key cursor.
    fn by_prefix(&self, cursor: Option<Cursor>) -> Result<ListPage, ApiError> {
        let after = match cursor {
            None => None,
            Some(Cursor::Key(key)) => Some(key),
            Some(Cursor::Time(..)) => {
                return Err(ApiError::bad_request("cursor is not a prefix cursor"));
            }
        };
        self.visible_page(
            after.map(Cursor::Key),
            |next, batch| {
                let after = match next {
                    Some(Cursor::Key(key)) => Some(key.as_str()),
                    _ => None,
                };
                self.store.list(self.prefix, after, batch, self.now)
            },
            |listed| Cursor::Key(listed.key.clone()),
        )
    }

    /// Keys written at or after `since` (and under `prefix`), by time then key, after a
    /// time cursor.
    fn since(&self, since: u64, cursor: Option<Cursor>) -> Result<ListPage, ApiError> {
        if matches!(cursor, Some(Cursor::Key(_))) {
            return Err(ApiError::bad_request("cursor is not a since cursor"));
        }
        self.visible_page(
            cursor,
            |next, batch| {
                let after = match next {
                    Some(Cursor::Time(ts, key)) => Some((*ts, key.as_str())),
                    _ => None,
                };
                let mut page = self.store.list_since(since, after, batch, self.now)?;
                page.items.retain(|item| item.key.starts_with(self.prefix));
                Ok(page)
            },
            |listed| Cursor::Time(listed.id.timestamp, listed.key.clone()),
        )
    }

    /// A page of up to `limit` visible keys (not under the reserved `_` prefix, and
    /// readable by the caller), fetching store pages of `limit + 1` from `cursor` on until
    /// one more than `limit` are visible, the store runs out, or [`MAX_SCANNED`] keys
    /// were read (then the page ends with a cursor after the last key read).
    fn visible_page(
        &self,
        mut cursor: Option<Cursor>,
        mut fetch: impl FnMut(&Option<Cursor>, usize) -> Result<ListPage, kvs_sync::StoreError>,
        cursor_of: impl Fn(&Listed) -> Cursor,
    ) -> Result<ListPage, ApiError> {
        let batch = self.limit.saturating_add(1).min(MAX_LIMIT as usize + 1);
        let mut items = Vec::new();
        let mut scanned = 0;
        loop {
            let page = fetch(&cursor, batch)?;
            scanned += batch;
            let mut fetched = page.items;
            fetched.retain(|item| !item.key.starts_with('_'));
            if let Some(readable) = self.readable {
                readable.filter(self.store, &mut fetched)?;
            }
            items.extend(fetched);
            if items.len() > self.limit || page.next.is_none() {
                return Ok(ListPage::from_overfetched(items, self.limit, cursor_of));
            }
            if scanned >= MAX_SCANNED {
                return Ok(ListPage {
                    items,
                    next: page.next,
                });
            }
            cursor = page.next;
        }
    }
}

/// The longest `ttl` of a PUT: 100 years (36500d). It keeps `expires_at` (Unix ms) far
/// below 2^53, the largest integer a JSON reader that takes numbers as doubles (as
/// JavaScript does) holds exactly.
const MAX_TTL_MS: u64 = 36_500 * 86_400_000;

/// The `ttl` of a PUT in milliseconds, if given; `400` unless a positive duration of at
/// most [`MAX_TTL_MS`].
fn ttl_ms(request: &Request<'_>) -> Result<Option<u64>, ApiError> {
    let Some(ttl) = request.query.get("ttl") else {
        return Ok(None);
    };
    let ttl = parse_duration(ttl).map_err(ApiError::bad_request)?;
    match u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) {
        0 => Err(ApiError::bad_request("ttl must be above zero")),
        ms if ms > MAX_TTL_MS => Err(ApiError::bad_request(
            "ttl must be at most 36500d (100 years)",
        )),
        ms => Ok(Some(ms)),
    }
}

/// The revisions (newest first, as `Store::history` gives them) of the key's current
/// life: those after its last expiry. A revision that had expired by the time the next
/// newer one was written ended a life, and the newer one created the key again, maybe for
/// another owner, so it and everything older are left out. (`Store::history` itself
/// stops at the last delete.)
fn current_life(mut revisions: Vec<Version>) -> Vec<Version> {
    let ended = revisions.windows(2).position(|pair| {
        let (newer, older) = (&pair[0], &pair[1]);
        older.is_tombstone() || older.is_expired(newer.id.timestamp)
    });
    if let Some(i) = ended {
        revisions.truncate(i + 1);
    }
    revisions
}

/// `404 not_found` for `key`.
pub(super) fn not_found(key: &str) -> ApiError {
    ApiError::not_found(format!("key {key:?} not found"))
}

/// `{"uuid","timestamp"[,"data"]}` with the stored JSON text embedded as is.
pub(super) fn version_json(version: &Version, with_data: bool) -> String {
    // Written piece by piece: `format!` took a tenth of a GET's time in the route.
    let data = version.data.as_deref().filter(|_| with_data);
    let mut out = String::with_capacity(80 + data.map_or(0, str::len));
    out.push_str("{\"uuid\":");
    out.push_str(quoted_uuid(version.id.uuid).as_str());
    out.push_str(",\"timestamp\":");
    out.push_str(itoa::Buffer::new().format(version.id.timestamp));
    if with_data {
        out.push_str(",\"data\":");
        out.push_str(data.unwrap_or("null"));
    }
    out.push('}');
    out
}

fn page_json(page: &ListPage) -> String {
    let items: Vec<_> = page
        .items
        .iter()
        .map(|item| {
            serde_json::json!({
                "key": item.key,
                "uuid": item.id.uuid,
                "timestamp": item.id.timestamp,
            })
        })
        .collect();
    let next = page.next.as_ref().map(Cursor::encode);
    serde_json::json!({"items": items, "next_cursor": next}).to_string()
}

pub(super) fn set_etag(response: &mut WarpResponse, uuid: Uuid) {
    if let Ok(value) = HeaderValue::from_str(quoted_uuid(uuid).as_str()) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// `"UUID"`: a version's uuid as a JSON string, and as its ETag.
struct QuotedUuid([u8; 38]);

impl QuotedUuid {
    fn as_str(&self) -> &str {
        // Quotes around a hyphenated uuid: ASCII throughout.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn quoted_uuid(uuid: Uuid) -> QuotedUuid {
    let mut quoted = [b'"'; 38];
    uuid.hyphenated().encode_lower(&mut quoted[1..37]);
    QuotedUuid(quoted)
}

#[cfg(test)]
mod tests {
    use kvs_sync::VersionId;

    use super::*;

    fn revision(timestamp: u64, expires_at: Option<u64>, data: Option<&str>) -> Version {
        Version {
            id: VersionId {
                timestamp,
                origin_joined_at: 1,
                uuid: Uuid::from_u128(u128::from(timestamp)),
            },
            data: data.map(str::to_owned),
            owner: None,
            group: None,
            permissions: 0xf31,
            expires_at,
        }
    }

    fn stamps(revisions: &[Version]) -> Vec<u64> {
        revisions.iter().map(|v| v.id.timestamp).collect()
    }

    #[test]
    fn the_current_life_ends_at_an_expiry() {
        let v = Some("1");
        // 10 expired at 11, before 20 was written: 20 created the key again.
        let history = vec![
            revision(30, None, v),
            revision(20, None, v),
            revision(10, Some(11), v),
        ];
        assert_eq!(stamps(&current_life(history)), [30, 20]);
        // Expiring exactly when the next one is written counts as expired.
        let history = vec![revision(20, None, v), revision(10, Some(20), v)];
        assert_eq!(stamps(&current_life(history)), [20]);
    }

    #[test]
    fn an_overwrite_before_the_expiry_is_the_same_life() {
        let v = Some("1");
        let history = vec![
            revision(20, None, v),
            revision(10, Some(21), v),
            revision(5, None, v),
        ];
        assert_eq!(stamps(&current_life(history)), [20, 10, 5]);
        assert!(current_life(Vec::new()).is_empty());
    }

    #[test]
    fn the_current_life_ends_at_a_tombstone() {
        let history = vec![
            revision(30, None, Some("1")),
            revision(20, None, None),
            revision(10, None, Some("1")),
        ];
        assert_eq!(stamps(&current_life(history)), [30]);
    }
}
