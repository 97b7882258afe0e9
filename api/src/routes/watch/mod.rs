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

use std::collections::HashSet;
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

mod by_time;
mod exact;
mod ids;

#[cfg(test)]
pub(super) use self::by_time::BacklogBound;
pub(super) use self::by_time::backlog;
use self::by_time::{BACKLOG_BOUND, Backlog};
use self::exact::{Arrived, arrived};
use self::ids::{LastEvent, arrival_id, change_id};

/// The response header that says how a `Last-Event-ID` was taken up: `exact` (every
/// change that reached this node after the event, in that order) or `by-time` (from the
/// event's millisecond: a change that reached the node late with an earlier time is
/// missed, so a client that must not miss one resumes from earlier with `since`).
pub const WATCH_RESUMED_HEADER: &str = "kvs-resumed";

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

/// One change as an SSE event with id `id`: `{"key", ...}` then the version as `GET /kv`
/// gives it (its stored JSON embedded as is; `data` only in a `put`: a replayed value
/// past its expiry but not yet purged still holds its data).
fn event(key: &str, version: &Version, kind: &str, id: String) -> Event {
    let body = version_json(version, kind == "put" && version.data.is_some());
    let data = format!("{{\"key\":{},{}", serde_json::Value::from(key), &body[1..]);
    spaced(Some(&id), kind, &data)
}

/// An event written `field: value`, with the space after each colon that most clients'
/// parsers look for (`startswith("data: ")`). warp writes `field:value`; the standard
/// drops one space at the start of a value, so a standard parser reads the same event
/// either way (found by a black-box audit of the stream).
fn spaced(id: Option<&str>, kind: &str, data: &str) -> Event {
    // A stored value is JSON as it was sent, where a bare `\r` is white space; SSE ends
    // a line at one too.
    let lines = data.replace("\r\n", "\n").replace('\r', "\n");
    let event = Event::default()
        .event(format!(" {kind}"))
        .data(format!(" {}", lines.replace('\n', "\n ")));
    match id {
        Some(id) => event.id(format!(" {id}")),
        None => event,
    }
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
    spaced(None, "resume", &data.to_string())
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

    pub(super) fn replayed(key: &str, timestamp: u64) -> Replayed {
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

    /// Each field goes out as `name: value`, every line of the data as its own `data: `.
    #[test]
    fn events_are_written_with_a_space_after_each_field_name() {
        let written = super::spaced(Some("1.a"), "put", "{\"key\":\"k\",\n\"n\":1}");
        assert_eq!(
            written.to_string(),
            "event: put\ndata: {\"key\":\"k\",\ndata: \"n\":1}\nid: 1.a\n\n"
        );
        let carriage = super::spaced(None, "put", "{\r\n\"n\":\r1}");
        assert_eq!(
            carriage.to_string(),
            "event: put\ndata: {\ndata: \"n\":\ndata: 1}\n\n"
        );
        let resume = super::spaced(None, "resume", "{}");
        assert_eq!(resume.to_string(), "event: resume\ndata: {}\n\n");
    }
}
