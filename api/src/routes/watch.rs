//! `GET /watch?prefix=P&since=T`: every change under a prefix as Server-Sent Events.
//!
//! Each event is `event: put|delete|expire` and `data: {"key","uuid","timestamp","data"?}`,
//! sent only to a caller who may read the key under that version's metadata (the
//! reserved `_` keys never). The stream subscribes to the store's changes first, then
//! replays what the client asked for, then streams changes as the node makes them
//! visible. Nothing written meanwhile falls between the two, and a change seen in both
//! is sent once.
//!
//! Ids: a change is named `<timestamp>.<uuid>` (for an expiry, the time the value
//! expired in place of its timestamp), the same on every node. Events sent in the order
//! changes reached this node (live, or an exact resume) add the tag of the node's store
//! life, `<timestamp>.<uuid>.<tag>`; a replay by time sends the bare name.
//!
//! Resuming (`Last-Event-ID`): an id this node's current life sent, among its last
//! changes ([`kvs_sync::Arrivals`]), resumes exactly: every change that reached the node
//! after that event, in that order (a write replicated late, or an expiry, included).
//! Any other id (another node's, an earlier life's, or one past those last changes)
//! resumes by time, like `since`: one event per change at or after the event's
//! millisecond, in the order of the changes, every put, delete and expiry the key's
//! history holds (its last `max_revisions` versions; with history off, only each key's
//! latest change, like a compacted etcd watch). A change that reached the node after
//! the client left with a time before the event's is missed then. The named event is
//! not sent again; others of its millisecond may be (at least once).
//!
//! A replay by time holds its oldest changes within [`BACKLOG_BOUND`]; a longer one ends
//! after them with `event: resume` (`backlog`), so that one watcher never makes the node
//! hold the whole history at once. A client that falls more than the store's buffer
//! behind gets `event: resume` with the id to resume from (exact, while the node still
//! holds the change), and the stream ends: writers never wait for a watcher.

use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use futures_util::{Stream, StreamExt, stream};
use kvs_sync::{Change, Version};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use warp::Reply;
use warp::http::{HeaderMap, header};
use warp::sse::Event;

use super::authn::{AuthConfig, Caller, authorize_under, key_meta};

use super::kv::version_json;
use super::{Api, Handled, Request};
use crate::auth::Operation;
use crate::{ApiError, Backend};

/// The response header that says how a `Last-Event-ID` was taken up: `exact` (every
/// change that reached this node after the event, in that order) or `by-time` (from the
/// event's millisecond: a change that reached the node late with an earlier time is
/// missed, so a client that must not miss one resumes from earlier with `since`).
pub const WATCH_RESUMED_HEADER: &str = "kvs-resumed";

/// Keys of the backlog read per page.
const BACKLOG_PAGE: usize = 1000;

/// Who watches what.
#[derive(Clone)]
pub(super) struct Watcher {
    pub(super) prefix: String,
    /// The caller as last authenticated.
    pub(super) caller: Arc<Caller>,
    pub(super) auth: Option<AuthConfig>,
}

impl Watcher {
    /// Whether the caller sees `version` of `key`.
    fn sees(&self, key: &str, version: &Version) -> bool {
        key.starts_with(&self.prefix)
            && !key.starts_with('_')
            && (self.caller.passes_all()
                || authorize_under(
                    self.auth.as_ref(),
                    &self.caller,
                    Operation::Read(Some(&key_meta(version))),
                )
                .is_ok())
    }
}

/// Authenticates a stream's caller again, as a request with its `Authorization` header
/// would be now: a revoked or expired token, or a deleted user, fails; a change of the
/// user's groups shows (within the caller cache's second for a change made elsewhere).
type Recheck = Box<dyn Fn() -> Result<Arc<Caller>, ApiError> + Send + Sync>;

/// The time a change to `version` happened: its timestamp, or for an expiry the time
/// the value expired (the purge's tombstone keeps the value's timestamp and uuid), at
/// least a millisecond after the timestamp: a value can expire at or before its own
/// timestamp (its TTL counts from the writer's clock, the timestamp is causal, later
/// than the version it replaced), and its expiry must not share the put's name.
fn change_at(version: &Version, expired: bool) -> u64 {
    match version.dead_since() {
        Some(at) if expired => at.max(version.id.timestamp.saturating_add(1)),
        _ => version.id.timestamp,
    }
}

/// What names a change: `<time>.<uuid>` (see [`change_at`]), so that the expiry of a
/// value has a name of its own (a client that drops repeated ids, or a resume from the
/// put, must not lose the expiry). The same on every node.
fn change_id(version: &Version, expired: bool) -> String {
    format!("{}.{}", change_at(version, expired), version.id.uuid)
}

/// The id of an event sent in the order changes reached this node (live, or replayed
/// from [`kvs_sync::Arrivals`]): the change's name and the tag of this node's store life,
/// which a resume finds its place by. A replay by time sends bare change names.
fn arrival_id(change_id: &str, tag: u32) -> String {
    format!("{change_id}.{tag:08x}")
}

/// A Last-Event-ID: `<time>.<uuid>.<tag>` as sent in arrival order, `<time>.<uuid>` as
/// sent in a replay by time, or a bare time.
#[derive(Debug, Clone, PartialEq)]
struct LastEvent {
    at: u64,
    uuid: Option<uuid::Uuid>,
    tag: Option<u32>,
}

impl LastEvent {
    /// `None` for anything else (a time with something else after the `.` would resume
    /// from it and send that event again).
    fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('.');
        let at = parts
            .next()
            .filter(|at| at.bytes().all(|b| b.is_ascii_digit()))?
            .parse()
            .ok()?;
        let uuid = parts.next().map(uuid::Uuid::try_parse).transpose().ok()?;
        let tag = match parts.next() {
            Some(tag)
                if tag.len() == 8
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Some(u32::from_str_radix(tag, 16).ok()?)
            }
            Some(_) => return None,
            None => None,
        };
        match parts.next() {
            Some(_) => None,
            None => Some(Self { at, uuid, tag }),
        }
    }

    /// The name of the change it names, if it names one.
    fn change_id(&self) -> Option<String> {
        self.uuid.map(|uuid| format!("{}.{uuid}", self.at))
    }

    /// Every change this node sent after the event, in their order: the event was sent
    /// in arrival order by this node's store life and is still among its recent changes.
    fn arrivals_after(&self, arrivals: &kvs_sync::Arrivals) -> Option<Vec<Arc<Change>>> {
        let (uuid, tag) = (self.uuid?, self.tag?);
        arrivals.after(tag, |change| {
            change.version.id.uuid == uuid
                && change_at(&change.version, change.is_expiry()) == self.at
        })
    }
}

/// The changes a key's versions stand for, oldest first, as `(time, kind, version)`:
/// `revisions` newest first (the store's [`kvs_sync::Store::revisions`]). A value is a
/// `put` at its timestamp, and an `expire` at its expiry too once that passed before the
/// next version came (a purge's tombstone shares its value's revision); a tombstone is
/// an `expire` when it keeps the expiry of the value it replaced, else a `delete`, at
/// the time the key died.
fn changes_of(revisions: &[Version], now_ms: u64) -> Vec<(u64, &'static str, &Version)> {
    let mut changes = Vec::new();
    // Oldest first, each with the time of the version that replaced it, if any.
    for (i, version) in revisions.iter().enumerate().rev() {
        if version.is_tombstone() {
            let kind = match version.expires_at {
                Some(_) => "expire",
                None => "delete",
            };
            changes.push((change_at(version, kind == "expire"), kind, version));
            continue;
        }
        changes.push((version.id.timestamp, "put", version));
        let replaced_at = i.checked_sub(1).map(|newer| revisions[newer].changed_at());
        if let Some(expired_at) = version
            .expires_at
            .map(|_| change_at(version, true))
            .filter(|&at| at <= now_ms && replaced_at.is_none_or(|replaced| at < replaced))
        {
            changes.push((expired_at, "expire", version));
        }
    }
    changes
}

/// One change as an SSE event with id `id`: `{"key", ...}` then the version as `GET /kv`
/// gives it (its stored JSON embedded as is; `data` only in a `put`: a replayed value
/// past its expiry but not yet purged still holds its data).
fn event(key: &str, version: &Version, kind: &str, id: String) -> Event {
    let body = version_json(version, kind == "put" && version.data.is_some());
    let data = format!("{{\"key\":{},{}", serde_json::Value::from(key), &body[1..]);
    Event::default().id(id).event(kind).data(data)
}

impl<B: Backend> Api<B> {
    /// `GET /watch`.
    pub(super) async fn watch(&self, request: &Request<'_>, caller: &Caller) -> Handled {
        self.authorize(caller, Operation::Observe)?;
        let prefix = request.query.get("prefix").unwrap_or("").to_owned();
        // Empty, a Last-Event-ID names no event (the same as none).
        let last = match request
            .headers
            .get("last-event-id")
            .filter(|id| !id.is_empty())
        {
            Some(id) => Some(
                id.to_str()
                    .ok()
                    .and_then(LastEvent::parse)
                    .ok_or_else(|| ApiError::bad_request("Last-Event-ID is not valid"))?,
            ),
            None => None,
        };
        // `since` is checked even when Last-Event-ID wins over it.
        let since = request
            .query
            .get("since")
            .map(|since| {
                since
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request("since must be a time in Unix ms"))
            })
            .transpose()?;
        // Subscribed before any replay is read: nothing falls between the two.
        let live = self
            .backend
            .watch()
            .ok_or_else(|| ApiError::unavailable("this node cannot stream changes"))?;
        let watcher = Watcher {
            prefix,
            caller: Arc::new(caller.clone()),
            auth: self.config.auth.clone(),
        };
        let recheck: Recheck = {
            let api = self.me.upgrade().ok_or_else(|| {
                ApiError::unavailable("this node is stopping and cannot stream changes")
            })?;
            let mut headers = HeaderMap::new();
            if let Some(authorization) = request.headers.get(header::AUTHORIZATION) {
                headers.insert(header::AUTHORIZATION, authorization.clone());
            }
            Box::new(move || api.authenticate(&headers))
        };
        let tag = self.backend.arrivals().map(kvs_sync::Arrivals::tag);
        let exact = match &last {
            Some(resume) if resume.tag.is_some() => {
                let (resume, watcher) = (resume.clone(), watcher.clone());
                self.blocking(move |backend| arrived(backend, &resume, &watcher))
                    .await?
            }
            _ => None,
        };
        // How a Last-Event-ID was taken up, for the client (see [`WATCH_RESUMED_HEADER`]).
        let how = match (&last, &exact) {
            (None, _) => None,
            (Some(_), Some(_)) => Some("exact"),
            (Some(_), None) => Some("by-time"),
        };
        // The changes the replay read that the live stream may bring again.
        let mut sent = Sent::default();
        let Backlog { events, cut } = match exact {
            // Exactly after the event: every change this node sent after it, in order.
            Some(Arrived { events, names }) => {
                sent = Sent {
                    names,
                    at_one_point: true,
                };
                Backlog { events, cut: false }
            }
            // Otherwise by time: from the event's, or from `since`.
            None => match last.as_ref().map(|last| last.at).or(since) {
                Some(since) => {
                    let watcher = watcher.clone();
                    self.blocking(move |backend| backlog(backend, &watcher, since, BACKLOG_BOUND))
                        .await?
                }
                None => Backlog::default(),
            },
        };
        // The event the client resumes after was delivered: it is not sent again.
        let last_change = last.as_ref().and_then(LastEvent::change_id);
        let backlog: Vec<Replayed> = events
            .into_iter()
            .filter(|replayed| Some(&replayed.id) != last_change.as_ref())
            .collect();
        let last_replayed = backlog.last().map(Replayed::event_id).or_else(|| {
            request
                .headers
                .get("last-event-id")
                .and_then(|id| id.to_str().ok())
                .map(str::to_owned)
        });
        sent.names.extend(backlog.iter().map(|r| r.id.clone()));
        sent.names.extend(last_change);
        let first = stream::iter(
            backlog
                .into_iter()
                .map(|replayed| Ok::<_, std::convert::Infallible>(replayed.event())),
        );
        let then = match cut {
            // The rest of a replay too long to hold: the client resumes for it.
            true => stream::iter(Some(Ok(resume_event(
                "backlog",
                "the replay goes on; reconnect with Last-Event-ID",
                last_replayed,
            ))))
            .left_stream(),
            false => live_events(live, watcher, recheck, sent, tag, last_replayed).right_stream(),
        };
        let events = first.chain(then).take_until(self.backend.stopping());
        let mut response = warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response();
        if let Some(how) = how {
            response.headers_mut().insert(
                WATCH_RESUMED_HEADER,
                warp::http::HeaderValue::from_static(how),
            );
        }
        Ok(response)
    }
}

/// `event: resume`, the last event of a stream the client is to resume with the id of
/// the last change it got (`last_event_id`).
fn resume_event(error: &str, message: &str, last_event_id: Option<String>) -> Event {
    let data = serde_json::json!({
        "error": error,
        "message": message,
        "last_event_id": last_event_id,
    });
    Event::default().event("resume").data(data.to_string())
}

/// One event of a replay.
pub(super) struct Replayed {
    pub(super) key: String,
    pub(super) version: Version,
    pub(super) kind: &'static str,
    /// The change's name ([`change_id`]).
    pub(super) id: String,
    /// The tag of this node's store life, when replayed in arrival order.
    pub(super) tag: Option<u32>,
}

impl Replayed {
    fn event_id(&self) -> String {
        match self.tag {
            Some(tag) => arrival_id(&self.id, tag),
            None => self.id.clone(),
        }
    }

    fn event(&self) -> Event {
        event(&self.key, &self.version, self.kind, self.event_id())
    }
}

/// An exact resume: the events the watcher sees, and the names of every change read
/// (the live stream drops them, seen or not).
struct Arrived {
    events: Vec<Replayed>,
    names: HashSet<String>,
}

/// The changes this node sent after the event `resume` names, if it still holds that
/// one ([`kvs_sync::Arrivals`]), as the events the watcher sees, in arrival order: under
/// each version's metadata, and of keys it may read now, as a replay by time (a key
/// made private while the client was away does not leak its earlier values; found by
/// an audit).
fn arrived(
    backend: &impl Backend,
    resume: &LastEvent,
    watcher: &Watcher,
) -> Result<Option<Arrived>, ApiError> {
    let Some(arrivals) = backend.arrivals() else {
        return Ok(None);
    };
    let Some(changes) = resume.arrivals_after(arrivals) else {
        return Ok(None);
    };
    let tag = arrivals.tag();
    let names = changes
        .iter()
        .map(|change| change_id(&change.version, change.is_expiry()))
        .collect();
    let changes: Vec<Arc<Change>> = changes
        .into_iter()
        .filter(|change| watcher.sees(&change.key, &change.version))
        .collect();
    let keys: Vec<String> = changes
        .iter()
        .map(|change| change.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let current = backend.store().get_many(&keys)?;
    let readable: HashSet<String> = keys
        .into_iter()
        .zip(current)
        .filter(|(key, current)| current.as_ref().is_some_and(|now| watcher.sees(key, now)))
        .map(|(key, _)| key)
        .collect();
    let events = changes
        .into_iter()
        .filter(|change| readable.contains(&change.key))
        .map(|change| Replayed {
            id: change_id(&change.version, change.is_expiry()),
            kind: change.kind(),
            key: change.key.clone(),
            version: change.version.clone(),
            tag: Some(tag),
        })
        .collect();
    Ok(Some(Arrived { events, names }))
}

/// How much of a replay one stream holds: its oldest changes up to this many events and
/// about this many bytes (at least one event); the client resumes for the rest.
#[derive(Debug, Clone, Copy)]
pub(super) struct BacklogBound {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// The bound of every replay: a node holds at most this much for one watcher.
const BACKLOG_BOUND: BacklogBound = BacklogBound {
    events: 100_000,
    bytes: 64 << 20,
};

/// The events of a replay, oldest first, and whether later ones were left out.
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) events: Vec<Replayed>,
    pub(super) cut: bool,
}

/// An event of a replay in the order of the changes: by time, then key, then the order
/// a key's changes came in.
struct Ordered {
    at: u64,
    order: usize,
    bytes: usize,
    replayed: Replayed,
}

impl Ordered {
    fn position(&self) -> (u64, &str, usize) {
        (self.at, &self.replayed.key, self.order)
    }
}

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.position() == other.position()
    }
}

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

/// The oldest events offered, within a [`BacklogBound`], each once.
struct Oldest {
    bound: BacklogBound,
    /// A max-heap: the newest held is the first to go.
    held: BinaryHeap<Ordered>,
    /// The ids held: a key written while the replay reads the time index a page at a
    /// time moves to a later page and is read twice, with the changes it had then (found
    /// by an audit: one change sent twice, back to back, under concurrent writes).
    ids: HashSet<String>,
    bytes: usize,
    offered: usize,
    cut: bool,
}

impl Oldest {
    fn new(bound: BacklogBound) -> Self {
        Self {
            bound,
            held: BinaryHeap::new(),
            ids: HashSet::new(),
            bytes: 0,
            offered: 0,
            cut: false,
        }
    }

    /// Takes the change at `at`; a key's changes are offered in their order.
    fn offer(&mut self, at: u64, replayed: Replayed) {
        if !self.ids.insert(replayed.id.clone()) {
            return;
        }
        let bytes = kvs_sync::approximate_size(&replayed.key, &replayed.version);
        self.held.push(Ordered {
            at,
            order: self.offered,
            bytes,
            replayed,
        });
        self.offered += 1;
        self.bytes += bytes;
        while self.held.len() > self.bound.events
            || (self.bytes > self.bound.bytes && self.held.len() > 1)
        {
            if let Some(newest) = self.held.pop() {
                self.bytes -= newest.bytes;
                self.ids.remove(&newest.replayed.id);
            }
            self.cut = true;
        }
    }

    fn into_backlog(self) -> Backlog {
        Backlog {
            events: self
                .held
                .into_sorted_vec()
                .into_iter()
                .map(|ordered| ordered.replayed)
                .collect(),
            cut: self.cut,
        }
    }
}

/// The changes under the watcher's prefix at or after `since` that it may see (under
/// the version's metadata and the key's current one), in the order of the changes (see
/// [`changes_of`]), the oldest within `bound`: the keys that changed since then, from
/// the time index a page at a time, each with its kept revisions.
pub(super) fn backlog(
    backend: &impl Backend,
    watcher: &Watcher,
    since: u64,
    bound: BacklogBound,
) -> Result<Backlog, ApiError> {
    let store = backend.store();
    let now_ms = backend.now_ms();
    let mut oldest = Oldest::new(bound);
    let mut after: Option<(u64, String)> = None;
    loop {
        let page = store.changes_since(
            since,
            after.as_ref().map(|(at, key)| (*at, key.as_str())),
            BACKLOG_PAGE,
        )?;
        let full = page.len() == BACKLOG_PAGE;
        let keys: Vec<String> = page
            .iter()
            .map(|(_, key)| key)
            .filter(|key| key.starts_with(&watcher.prefix) && !key.starts_with('_'))
            .cloned()
            .collect();
        let versions = store.get_many(&keys)?;
        for (key, current) in keys.into_iter().zip(versions) {
            // A caller who may no longer read the key gets none of its past either.
            let Some(current) = current.filter(|current| watcher.sees(&key, current)) else {
                continue;
            };
            let mut revisions = store.revisions(&key)?;
            // With history off there are none; a purge's tombstone is its value's entry.
            if revisions
                .first()
                .is_none_or(|newest| newest.id != current.id)
            {
                revisions.insert(0, current);
            }
            for (at, kind, version) in changes_of(&revisions, now_ms) {
                if at >= since && watcher.sees(&key, version) {
                    let replayed = Replayed {
                        key: key.clone(),
                        version: version.clone(),
                        kind,
                        id: change_id(version, kind == "expire"),
                        tag: None,
                    };
                    oldest.offer(at, replayed);
                }
            }
        }
        match page.into_iter().last() {
            Some(last) if full => after = Some(last),
            _ => return Ok(oldest.into_backlog()),
        }
    }
}

/// The changes a replay read, which the live stream may bring again (it subscribed
/// first): it drops them.
#[derive(Default)]
struct Sent {
    names: HashSet<String>,
    /// They were read at one point of the node's order (an exact resume): once a change
    /// past them comes live, no later one is among them, and they are forgotten (a
    /// replay by time keeps them: its changes are in time order, not the node's).
    at_one_point: bool,
}

impl Sent {
    /// Whether the replay read the change named `name`.
    fn read(&mut self, name: &str) -> bool {
        if self.names.is_empty() {
            return false;
        }
        let read = self.names.contains(name);
        if !read && self.at_one_point {
            self.names = HashSet::new();
        }
        read
    }
}

/// The live changes the watcher sees, minus those the backlog sent; a lagging receiver
/// ends the stream with a `resume` event. The caller is authenticated again at each
/// change under the prefix (see [`Recheck`]), and the stream ends once that fails: a stream opened before
/// a token was revoked or expired, or its user deleted, sends nothing more, and one whose
/// user left a group sends only what the user may still read.
fn live_events(
    live: Receiver<Change>,
    watcher: Watcher,
    recheck: Recheck,
    sent: Sent,
    tag: Option<u32>,
    last: Option<String>,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    stream::unfold(
        (live, watcher, recheck, sent, last, false),
        move |(mut live, mut watcher, recheck, mut sent, mut last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match live.recv().await {
                    Ok(change) => {
                        // Changes the watcher never sees cost it no authentication.
                        if !change.key.starts_with(&watcher.prefix) || change.key.starts_with('_') {
                            continue;
                        }
                        match recheck() {
                            Ok(caller) => watcher.caller = caller,
                            Err(error) => {
                                tracing::debug!(%error, "a watch stream ends: its caller no longer authenticates");
                                return None;
                            }
                        }
                        let name = change_id(&change.version, change.is_expiry());
                        if sent.read(&name) || !watcher.sees(&change.key, &change.version) {
                            continue;
                        }
                        let id = tag.map_or(name.clone(), |tag| arrival_id(&name, tag));
                        last = Some(id.clone());
                        let event = event(&change.key, &change.version, change.kind(), id);
                        return Some((Ok(event), (live, watcher, recheck, sent, last, false)));
                    }
                    Err(RecvError::Lagged(_)) => {
                        let event = resume_event(
                            "lagged",
                            "this watcher fell behind; reconnect with Last-Event-ID",
                            last.clone(),
                        );
                        return Some((Ok(event), (live, watcher, recheck, sent, last, true)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(key: &str, timestamp: u64) -> Replayed {
        let version = kvs_sync::Version {
            id: kvs_sync::VersionId {
                timestamp,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(u128::from(timestamp)),
            },
            data: Some("1".into()),
            owner: None,
            group: None,
            permissions: 0,
            expires_at: None,
        };
        Replayed {
            key: key.into(),
            id: change_id(&version, false),
            tag: None,
            version,
            kind: "put",
        }
    }

    #[test]
    fn a_change_offered_twice_is_held_once() {
        let mut oldest = Oldest::new(BACKLOG_BOUND);
        for (key, at) in [("b", 2), ("a", 1), ("b", 2), ("c", 3), ("a", 1)] {
            oldest.offer(at, replayed(key, at));
        }
        let backlog = oldest.into_backlog();
        let keys: Vec<&str> = backlog.events.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(!backlog.cut);
    }

    #[test]
    fn what_an_exact_replay_read_is_dropped_live_until_a_later_change_comes() {
        let names = || ["1.a", "2.b"].map(String::from).into_iter().collect();
        let mut exact = Sent {
            names: names(),
            at_one_point: true,
        };
        assert!(exact.read("1.a"));
        assert!(!exact.read("3.c"), "past what the replay read");
        assert!(
            !exact.read("2.b"),
            "forgotten: nothing later can be among them"
        );
        assert!(exact.names.is_empty());
        // A replay by time keeps them all for the stream's life.
        let mut by_time = Sent {
            names: names(),
            at_one_point: false,
        };
        assert!(!by_time.read("3.c"));
        assert!(by_time.read("2.b"));
    }

    #[test]
    fn an_expiry_is_named_apart_from_its_put_even_at_the_values_own_time() {
        let mut value = replayed("k", 100).version;
        // A TTL that ran out before the causal timestamp (a skewed clock).
        value.expires_at = Some(90);
        let purged = Version {
            data: None,
            ..value.clone()
        };
        assert_ne!(change_id(&value, false), change_id(&value, true));
        assert_eq!(change_at(&value, true), 101);
        // The purge's tombstone streams under the name a replay gives the value's expiry.
        assert_eq!(change_id(&purged, true), change_id(&value, true));
        let changes: Vec<(u64, &str)> = changes_of(std::slice::from_ref(&value), 1000)
            .into_iter()
            .map(|(at, kind, _)| (at, kind))
            .collect();
        assert_eq!(changes, [(100, "put"), (101, "expire")]);
        value.expires_at = Some(150);
        assert_eq!(change_at(&value, true), 150);
    }

    #[test]
    fn a_last_event_id_is_an_id_as_sent_or_a_bare_timestamp() {
        let name = change_id(&replayed("k", 17).version, false);
        let uuid = Some(uuid::Uuid::from_u128(17));
        let parsed = |id: &str| LastEvent::parse(id);
        assert_eq!(
            parsed(&name),
            Some(LastEvent {
                at: 17,
                uuid,
                tag: None
            })
        );
        assert_eq!(
            parsed(&arrival_id(&name, 0xa1b2c3d4)),
            Some(LastEvent {
                at: 17,
                uuid,
                tag: Some(0xa1b2c3d4)
            })
        );
        assert_eq!(
            parsed("17"),
            Some(LastEvent {
                at: 17,
                uuid: None,
                tag: None
            })
        );
        assert_eq!(
            parsed(&arrival_id(&name, 5)).unwrap().change_id(),
            Some(name.clone())
        );
        for bad in [
            "17.garbage",
            "17.",
            "abc",
            "abc.00000000-0000-0000-0000-000000000011",
            "",
            &format!("{name}."),
            &format!("{name}.a1b2c3"),
            &format!("{name}.a1b2c3dx"),
            &format!("{name}.+a1b2c3d"),
            "+17",
            &format!("{name}.A1B2C3D4"),
            &format!("{name}.a1b2c3d4.0"),
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }
}
