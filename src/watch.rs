//! `kvs watch PREFIX`: the node's `/watch` stream printed as it comes, one JSON line per
//! change (`{"event","key","uuid","timestamp","data"?}`), resumed after a disconnect
//! (and after a `resume` event, when this client fell behind): exactly after the last
//! change printed when the node sent it live and still holds it (`Last-Event-ID`, and
//! the node answers `kvs-resumed: exact`), else from [`LOOKBACK_MS`] before the newest
//! change printed, without printing a change twice; after a replay the node cut short,
//! right after the last change printed.

use std::collections::{HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use percent_encoding::utf8_percent_encode;

use crate::client::{QUERY_ESCAPES, Target};
use crate::http_client::{Connection, MAX_ANSWER_BYTES};

/// How long to wait before connecting again after the stream ended.
const RECONNECT: Duration = Duration::from_secs(1);

/// How far before the newest change printed a reconnection replays from. A change that
/// reached the node late (replicated from a node that was cut off for a while, or an
/// expiry, which the purge streams up to a second after its time) has an id older than
/// changes streamed before it, and a resume from the last id would skip it (found by an
/// audit: a write held up on its way for a second never printed after a restart).
const LOOKBACK_MS: u64 = 10_000;

/// `kvs watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    target: Target,
}

/// One event being read: its lines so far.
#[derive(Default)]
struct Pending {
    id: Option<String>,
    kind: Option<String>,
    data: String,
}

/// Why watching stopped for good: the message to print. The node refused (a status
/// other than 200), or could not be reached before the stream ever started (a wrong
/// address or a node that is down fails at once, as `kvs get` does; once a stream ran,
/// a lost connection is retried).
struct Stop(String);

/// Why one connection ended early.
enum Ended {
    /// The connection failed or broke off: the error, to retry.
    Broken(String),
    Stop(Stop),
}

/// `kvs watch PREFIX`.
pub fn watch(args: WatchArgs) -> ExitCode {
    crate::stdout::end_when_reader_goes();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvs: {error}");
            return ExitCode::from(1);
        }
    };
    let Stop(message) = runtime.block_on(watch_forever(&args));
    eprintln!("kvs: {message}");
    ExitCode::from(1)
}

async fn watch_forever(args: &WatchArgs) -> Stop {
    let path = format!(
        "/watch?prefix={}",
        utf8_percent_encode(&args.prefix, QUERY_ESCAPES)
    );
    let (mut delivered, mut streamed) = (Delivered::default(), false);
    loop {
        match watch_once(args, &path, &mut delivered, &mut streamed).await {
            Ok(()) => {}
            Err(Ended::Stop(stop)) => return stop,
            Err(Ended::Broken(error)) if !streamed => return Stop(error),
            Err(Ended::Broken(error)) => eprintln!("kvs: {error}; retrying"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One connection: prints events until the stream ends; sets `streamed` once the node
/// accepted the watch.
async fn watch_once(
    args: &WatchArgs,
    path: &str,
    delivered: &mut Delivered,
    streamed: &mut bool,
) -> Result<(), Ended> {
    let mut resume = delivered.resume();
    // The connection is kept while its response streams.
    let (response, _connection) = loop {
        let mut connection = Connection::open(&args.target.addr)
            .await
            .map_err(|error| Ended::Broken(error.to_string()))?;
        let (query, last_id) = match &resume {
            Resume::Now => (String::new(), None),
            Resume::Since(ms) => (format!("&since={ms}"), None),
            Resume::After(id) | Resume::Exact(id) => (String::new(), Some(id.as_str())),
        };
        let headers: Vec<(&str, &str)> = last_id
            .map(|id| ("Last-Event-ID", id))
            .into_iter()
            .collect();
        let response = connection
            .start(
                Method::GET,
                &format!("{path}{query}"),
                None,
                args.target.token(),
                &headers,
            )
            .await
            .map_err(|error| Ended::Broken(error.to_string()))?;
        let exact = response
            .headers()
            .get(kvs_api::WATCH_RESUMED_HEADER)
            .is_some_and(|how| how == "exact");
        // The node no longer holds the last change printed (it restarted, or that change
        // is past the changes it keeps), or refuses the id (a node of an earlier version):
        // from before the newest change instead.
        if matches!(resume, Resume::Exact(_)) && !exact {
            if let Resume::Exact(id) = resume {
                delivered.refused = Some(id);
            }
            resume = delivered.by_time();
            continue;
        }
        break (response, connection);
    };
    let status = response.status();
    let mut body = response.into_body();
    if status != hyper::StatusCode::OK {
        let text = match http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(error) => error.to_string(),
        };
        let said = crate::client_output::error(&text);
        return Err(Ended::Stop(Stop(format!("{status}: {said}"))));
    }
    *streamed = true;
    let (mut buffer, mut pending) = (String::new(), Pending::default());
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| Ended::Broken(format!("the stream broke off: {error}")))?;
        let Some(bytes) = frame.data_ref() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(bytes));
        if buffer.len() + pending.data.len() > MAX_ANSWER_BYTES {
            return Err(Ended::Stop(Stop(format!(
                "an event of the stream is over {} MiB, more than a kvs node sends: is it one?",
                MAX_ANSWER_BYTES >> 20
            ))));
        }
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            take_line(line.trim_end_matches(['\r', '\n']), &mut pending, delivered);
        }
    }
    Ok(())
}

/// Where a new connection starts.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// From now: nothing printed yet.
    Now,
    /// From this time (Unix ms), dropping the ids printed since.
    Since(u64),
    /// Right after this id (the node cut its replay short there).
    After(String),
    /// Exactly after this id, which the node sent live: every change that reached it
    /// since, if it still holds that one (else [`Delivered::by_time`]).
    Exact(String),
}

/// The changes printed from [`LOOKBACK_MS`] before the newest: a resume from then sends
/// them again, and they are not printed twice.
#[derive(Default)]
struct Delivered {
    /// Each id with its millisecond, in the order printed.
    recent: VecDeque<(u64, String)>,
    ids: HashSet<String>,
    newest_ms: Option<u64>,
    /// The node cut its replay short (`event: resume` with `backlog`): the next
    /// connection continues after the last id printed, which always moves on.
    cut: bool,
    /// The id an exact resume was refused for: not asked again.
    refused: Option<String>,
}

impl Delivered {
    /// Where the next connection starts.
    fn resume(&mut self) -> Resume {
        let last = self.recent.back().map(|(_, id)| id.clone());
        match (std::mem::take(&mut self.cut), last) {
            (true, Some(id)) => Resume::After(id),
            (false, Some(id)) if change_name(&id) != id && self.refused.as_ref() != Some(&id) => {
                Resume::Exact(id)
            }
            _ => self.by_time(),
        }
    }

    /// From [`LOOKBACK_MS`] before the newest change printed (or from now).
    fn by_time(&self) -> Resume {
        match self.newest_ms {
            Some(newest) => Resume::Since(newest.saturating_sub(LOOKBACK_MS)),
            None => Resume::Now,
        }
    }

    /// Records the change event `id` names; false if it was printed already. An id is
    /// `<timestamp>.<uuid>`, the change's name on every node, and a tag of the node's
    /// life after it when it came live: a resume, or a restarted node, may send the same
    /// change under another tag.
    fn fresh(&mut self, id: &str) -> bool {
        let name = change_name(id);
        if self.ids.contains(name) {
            return false;
        }
        let ms: u64 = name
            .split('.')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        let newest = self.newest_ms.map_or(ms, |newest| newest.max(ms));
        self.newest_ms = Some(newest);
        self.ids.insert(name.to_owned());
        self.recent.push_back((ms, id.to_owned()));
        // Forget what a resume no longer replays, but the last id printed.
        while self.recent.len() > 1
            && self
                .recent
                .front()
                .is_some_and(|(at, _)| at.saturating_add(LOOKBACK_MS) < newest)
        {
            if let Some((_, old)) = self.recent.pop_front() {
                self.ids.remove(change_name(&old));
            }
        }
        true
    }
}

/// The change an event id names: the id without the node life's tag, if it has one.
fn change_name(id: &str) -> &str {
    match id.rsplit_once('.') {
        Some((name, _)) if id.matches('.').count() == 2 => name,
        _ => id,
    }
}

/// Adds one line of the stream to `pending`; a blank line ends an event, printed then
/// unless `delivered` has it already.
fn take_line(line: &str, pending: &mut Pending, delivered: &mut Delivered) {
    if let Some(id) = line.strip_prefix("id:") {
        pending.id = Some(id.trim().to_owned());
    } else if let Some(kind) = line.strip_prefix("event:") {
        pending.kind = Some(kind.trim().to_owned());
    } else if let Some(data) = line.strip_prefix("data:") {
        pending.data.push_str(data.trim_start());
    } else if line.is_empty() {
        let event = std::mem::take(pending);
        let Some(kind) = event.kind else {
            return;
        };
        if kind == "resume" {
            let reason: serde_json::Value =
                serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
            delivered.cut = reason["error"] == "backlog";
            if !delivered.cut {
                eprintln!("kvs: fell behind the node; resuming");
            }
            return;
        }
        if event.id.as_deref().is_some_and(|id| !delivered.fresh(id)) {
            return;
        }
        let mut printed: serde_json::Value =
            serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
        if let Some(object) = printed.as_object_mut() {
            object.insert("event".into(), kind.into());
        }
        crate::stdout::line(&printed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Delivered, LOOKBACK_MS, Resume};

    #[test]
    fn a_resume_replays_from_before_the_newest_change_and_prints_nothing_twice() {
        let mut delivered = Delivered::default();
        assert_eq!(delivered.resume(), Resume::Now);
        assert!(delivered.fresh("5000.a") && delivered.fresh("9000.b"));
        assert_eq!(delivered.resume(), Resume::Since(0));
        // The resume sends both again: dropped; a change that came late is printed.
        assert!(!delivered.fresh("5000.a") && !delivered.fresh("9000.b"));
        assert!(delivered.fresh("7000.late"));
        assert!(delivered.fresh("20000.c"));
        assert_eq!(delivered.resume(), Resume::Since(20_000 - LOOKBACK_MS));
        // What a resume from then no longer sends is forgotten.
        assert!(delivered.fresh("5000.a"), "forgotten");
        let kept: Vec<&str> = delivered.recent.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(kept, ["20000.c", "5000.a"]);
    }

    #[test]
    fn a_change_sent_again_under_another_node_life_is_not_printed_twice() {
        let mut delivered = Delivered::default();
        assert!(delivered.fresh("5000.a.0000000f"));
        // A restarted node replays it by time (its bare name), or live under a new tag.
        assert!(!delivered.fresh("5000.a"));
        assert!(!delivered.fresh("5000.a.000000aa"));
        assert!(delivered.fresh("20000.b.000000aa"));
        // Forgotten by its name once a resume no longer sends it.
        assert!(delivered.fresh("20001.c"));
        assert!(delivered.fresh("5000.a"), "forgotten");
    }

    #[test]
    fn after_a_live_change_the_next_connection_asks_for_an_exact_resume_first() {
        let mut delivered = Delivered::default();
        assert!(delivered.fresh("5000.a") && delivered.fresh("9000.b.0000000f"));
        assert_eq!(delivered.resume(), Resume::Exact("9000.b.0000000f".into()));
        // The node cannot (it restarted): from before the newest change instead, and
        // not asked again for that id.
        assert_eq!(delivered.by_time(), Resume::Since(0));
        delivered.refused = Some("9000.b.0000000f".into());
        assert_eq!(delivered.resume(), Resume::Since(0));
        // A replay by time printed last: by time again.
        assert!(delivered.fresh("9500.c"));
        assert_eq!(delivered.resume(), Resume::Since(0));
    }

    #[test]
    fn after_a_replay_cut_short_the_next_connection_goes_on_after_the_last_id() {
        let mut delivered = Delivered::default();
        assert!(delivered.fresh("1.a") && delivered.fresh("2.b"));
        delivered.cut = true;
        assert_eq!(delivered.resume(), Resume::After("2.b".into()));
        // Only once: a later disconnect resumes from before the newest again.
        assert_eq!(delivered.resume(), Resume::Since(0));
    }
}
