//! The replay of `/watch` over a memory store: one event per change in the order of the
//! changes, and a replay longer than its bound cut after its oldest changes, the client
//! told to resume for the rest.

use super::*;
use crate::routes::Caller;
use crate::routes::watch::{BacklogBound, Watcher, backlog};

/// A watcher of `prefix` with auth off.
fn watcher(prefix: &str) -> Watcher {
    Watcher {
        prefix: prefix.into(),
        caller: Arc::new(Caller::Unchecked),
        auth: None,
    }
}

/// The replay from 0 within `bound`: (kind, key, data) of each event, and whether it
/// was cut.
fn replay(api: &Api<MemoryBackend>, bound: BacklogBound) -> (Vec<(String, String)>, bool) {
    let backlog = backlog(&*api.backend, &watcher("w/"), 0, bound).expect("backlog");
    let events = backlog
        .events
        .iter()
        .map(|replayed| {
            let data = replayed.version.data.clone().unwrap_or_default();
            (format!("{} {}", replayed.kind, replayed.key), data)
        })
        .collect();
    (events, backlog.cut)
}

#[tokio::test]
async fn a_replay_is_every_change_in_order_and_a_long_one_keeps_its_oldest() {
    let api = api(Setup::default());
    // One change a millisecond; a key's later changes come after other keys' earlier ones.
    for (method, path, body) in [
        ("PUT", "/kv/w/b", "1"),
        ("PUT", "/kv/w/a", "1"),
        ("PUT", "/kv/other", "1"),
        ("PUT", "/kv/w/b", "2"),
        ("DELETE", "/kv/w/a", ""),
        ("PUT", "/kv/w/a", "3"),
    ] {
        let answer = request(&api, method, path, Some(body), &[]).await;
        assert!(answer.status < 300, "{method} {path}: {}", answer.status);
        api.backend.advance(1);
    }
    let wide = BacklogBound {
        events: 100,
        bytes: 1 << 20,
    };
    let change = |what: &str, data: &str| (what.to_owned(), data.to_owned());
    let every = vec![
        change("put w/b", "1"),
        change("put w/a", "1"),
        change("put w/b", "2"),
        change("delete w/a", ""),
        change("put w/a", "3"),
    ];
    assert_eq!(replay(&api, wide), (every.clone(), false));
    let three = BacklogBound { events: 3, ..wide };
    assert_eq!(replay(&api, three), (every[..3].to_vec(), true));
    let one_value = BacklogBound {
        events: 100,
        bytes: 1,
    };
    assert_eq!(replay(&api, one_value), (every[..1].to_vec(), true));
}

/// The events of an SSE body: (event, id, data).
fn sse_events(body: &str) -> Vec<(String, String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let data = serde_json::from_str(&field("data:")).unwrap_or(Value::Null);
            (field("event:"), field("id:"), data)
        })
        .collect()
}

#[tokio::test]
async fn a_replay_past_its_bound_ends_with_resume_and_the_resume_brings_the_rest() {
    let api = api(Setup::default());
    // 100,500 keys, 1,000 a millisecond: 500 more than one replay holds.
    let start = api.backend.now_ms();
    for ms in 0..=100u64 {
        let batch: Vec<_> = (0..1000u64)
            .map(|i| ms * 1000 + i)
            .take_while(|n| *n < 100_500)
            .map(|n| replica_put(format!("w/{n:06}"), n.to_string()))
            .collect();
        api.backend
            .store
            .write_batch(&batch, start + ms)
            .expect("written");
    }
    let answer = get(&api, "/watch?prefix=w/&since=0").await;
    assert_eq!(answer.status, 200);
    let events = sse_events(&answer.body);
    assert_eq!(events.len(), 100_001, "the bound, then resume");
    let (kind, _, data) = &events[100_000];
    assert_eq!(kind, "resume");
    assert_eq!(data["error"], "backlog");
    let last = data["last_event_id"]
        .as_str()
        .expect("an id to resume from");
    assert_eq!(last, events[99_999].1);
    assert_eq!(
        events[99_999].2["key"], "w/099999",
        "the oldest changes, in order"
    );
    let resumed = request(
        &api,
        "GET",
        "/watch?prefix=w/",
        None,
        &[("last-event-id", last)],
    )
    .await;
    let rest = sse_events(&resumed.body);
    // The rest of the last event's millisecond comes again, then what was left out.
    let keys: Vec<&str> = rest
        .iter()
        .filter_map(|(_, _, data)| data["key"].as_str())
        .collect();
    assert_eq!(keys.len(), 999 + 500, "{:?}", rest.last());
    assert_eq!(keys.first(), Some(&"w/099000"));
    assert_eq!(keys.last(), Some(&"w/100499"));
}
