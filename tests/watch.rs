//! `GET /watch` against a real node: live puts, deletes and expiries under a prefix, a
//! backlog from `since`, a resume from `Last-Event-ID` that repeats nothing and replays
//! the deletes and expiries it missed (and a change that reached the node late), and a
//! watcher that reads nothing while writes go on: told to resume, and never in their way;
//! an open stream ends when the node shuts down, and does not hold the shutdown up.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::sse::{next, open, quiet, read_events, resumed_as, watch};
use common::{Node, PLAIN};
use serde_json::Value;

#[test]
fn puts_deletes_and_expiries_under_the_prefix_stream_live() {
    let node = Node::start(PLAIN);
    let events = watch(&node, "/watch?prefix=w/", &[]);
    // The stream is open once a first write outside the prefix went unnoticed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.put("/kv/other/x", "1").status, 201);
    assert_eq!(node.put("/kv/w/a", r#"{"n":1}"#).status, 201);
    let put = next(&events);
    assert_eq!(put.kind, "put");
    assert_eq!(put.data["key"], "w/a");
    assert_eq!(put.data["data"], serde_json::json!({"n": 1}));
    let written = node.get("/kv/w/a").json();
    assert_eq!(put.data["uuid"], written["uuid"]);
    assert_eq!(put.data["timestamp"], written["timestamp"]);
    assert!(
        put.id
            .as_deref()
            .unwrap()
            .starts_with(&written["timestamp"].to_string())
    );
    assert_eq!(node.delete("/kv/w/a").status, 204);
    let deleted = next(&events);
    assert_eq!(
        (deleted.kind.as_str(), &deleted.data["key"]),
        ("delete", &Value::from("w/a"))
    );
    assert!(deleted.data.get("data").is_none(), "{:?}", deleted.data);
    assert_eq!(node.put("/kv/w/short?ttl=1s", "2").status, 201);
    let put = next(&events);
    assert_eq!(put.kind, "put");
    let expired = next(&events);
    assert_eq!(
        (expired.kind.as_str(), &expired.data["key"]),
        ("expire", &Value::from("w/short"))
    );
    // The expiry is an event of its own: its id is not the put's (clients drop repeats).
    assert_ne!(expired.id, put.id);
    assert_eq!(expired.data["uuid"], put.data["uuid"]);
    assert!(quiet(&events), "nothing from outside the prefix");
}

/// A DELETE of a key that never existed (404; a tombstone all the same, so that an
/// older copy elsewhere cannot survive it) changes nothing a reader sees: no event (found
/// by an audit: every watcher got a `delete` for any key name a writer chose).
#[test]
fn a_delete_of_a_key_that_never_existed_is_no_event() {
    let node = Node::start(PLAIN);
    let events = watch(&node, "/watch?prefix=w/", &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.delete("/kv/w/never").status, 404);
    assert_eq!(node.put("/kv/w/gone", "1").status, 201);
    assert_eq!(node.delete("/kv/w/gone").status, 204);
    assert_eq!(node.delete("/kv/w/gone").status, 404);
    assert_eq!(node.put("/kv/w/x", "1").status, 201);
    let kinds: Vec<(String, Value)> = (0..3)
        .map(|_| next(&events))
        .map(|e| (e.kind, e.data["key"].clone()))
        .collect();
    let event = |kind: &str, key: &str| (kind.to_owned(), Value::from(key));
    assert_eq!(
        kinds,
        [
            event("put", "w/gone"),
            event("delete", "w/gone"),
            event("put", "w/x")
        ]
    );
}

#[test]
fn since_sends_the_backlog_and_last_event_id_resumes_without_repeats() {
    let node = Node::start(PLAIN);
    assert_eq!(node.put("/kv/r/1", "1").status, 201);
    assert_eq!(node.put("/kv/r/2", "2").status, 201);
    let events = watch(&node, "/watch?prefix=r/&since=0", &[]);
    let first = next(&events);
    let second = next(&events);
    assert_eq!(
        (&first.data["key"], &second.data["key"]),
        (&Value::from("r/1"), &Value::from("r/2"))
    );
    // Resume after the first: the second comes again (it is at or after that time) but
    // the first does not.
    let resumed = watch(
        &node,
        "/watch?prefix=r/",
        &[("Last-Event-ID", first.id.as_deref().unwrap())],
    );
    let mut keys = vec![next(&resumed).data["key"].clone()];
    while let Ok(event) = resumed.recv_timeout(Duration::from_millis(500)) {
        keys.push(event.data["key"].clone());
    }
    assert!(keys.contains(&Value::from("r/2")), "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.as_str() == Some("r/2")).count(),
        1,
        "{keys:?}"
    );
    assert_eq!(node.put("/kv/r/3", "3").status, 201);
    assert_eq!(next(&resumed).data["key"], "r/3");
}

/// The changes a client missed: a delete, an overwrite and an expiry, while away.
fn miss_changes(node: &Node) -> (u64, String) {
    assert_eq!(node.put("/kv/m/a", "1").status, 201);
    let first = node.get("/kv/m/a").json();
    let last = format!("{}.{}", first["timestamp"], first["uuid"].as_str().unwrap());
    assert_eq!(node.put("/kv/m/b", "1").status, 201);
    assert_eq!(node.put("/kv/m/c?ttl=1s", "1").status, 201);
    assert_eq!(node.delete("/kv/m/a").status, 204);
    assert_eq!(node.put("/kv/m/b", "2").status, 200);
    // The expiry is purged within a second of it.
    std::thread::sleep(Duration::from_millis(2500));
    (first["timestamp"].as_u64().unwrap(), last)
}

/// `n` events from `events` as (kind, key, data), then nothing more.
fn replayed(
    events: &mpsc::Receiver<common::sse::Event>,
    n: usize,
) -> Vec<(String, Value, Option<Value>)> {
    let replayed = (0..n)
        .map(|_| next(events))
        .map(|e| (e.kind, e.data["key"].clone(), e.data.get("data").cloned()))
        .collect();
    assert!(quiet(events), "nothing more than {replayed:?}");
    replayed
}

#[test]
fn a_resume_replays_every_change_it_missed_in_order() {
    let node = Node::start(PLAIN);
    let (since, last) = miss_changes(&node);
    let change = |kind: &str, key: &str, data: Option<i64>| {
        (kind.to_owned(), Value::from(key), data.map(Value::from))
    };
    let missed = [
        change("put", "m/b", Some(1)),
        change("put", "m/c", Some(1)),
        change("delete", "m/a", None),
        change("put", "m/b", Some(2)),
        change("expire", "m/c", None),
    ];
    let events = watch(&node, "/watch?prefix=m/", &[("Last-Event-ID", &last)]);
    assert_eq!(replayed(&events, 5), missed, "one event per change");
    // From a time instead: the same, after the first put.
    let events = watch(&node, &format!("/watch?prefix=m/&since={since}"), &[]);
    let mut all = vec![change("put", "m/a", Some(1))];
    all.extend(missed);
    assert_eq!(replayed(&events, 6), all);
}

#[test]
fn without_history_a_resume_replays_each_key_as_it_is_now() {
    let node = Node::start(&format!("{PLAIN}revision_history_enabled: false\n"));
    let (_, last) = miss_changes(&node);
    let events = watch(&node, "/watch?prefix=m/", &[("Last-Event-ID", &last)]);
    assert_eq!(
        replayed(&events, 3),
        [
            ("delete".to_owned(), Value::from("m/a"), None),
            ("put".to_owned(), Value::from("m/b"), Some(Value::from(2))),
            ("expire".to_owned(), Value::from("m/c"), None),
        ]
    );
}

#[test]
fn a_resume_from_a_put_still_sends_its_expiry() {
    let node = Node::start(PLAIN);
    assert_eq!(node.put("/kv/r/t?ttl=2s", "1").status, 201);
    let written = node.get("/kv/r/t").json();
    let last = format!(
        "{}.{}",
        written["timestamp"],
        written["uuid"].as_str().unwrap()
    );
    let events = watch(&node, "/watch?prefix=r/", &[("Last-Event-ID", &last)]);
    let expired = next(&events);
    assert_eq!(
        (expired.kind.as_str(), &expired.data["key"]),
        ("expire", &Value::from("r/t"))
    );
}

/// A change can reach a node after changes with later times: an expiry, which the purge
/// streams up to a second after the value expired, or a write replicated late. A client
/// that got the later change and left before the earlier one arrived, resuming from the
/// id it got, is sent that change (a resume by time skipped it).
#[test]
fn a_resume_sends_a_change_that_reached_the_node_late_with_an_earlier_time() {
    let node = Node::start(PLAIN);
    for attempt in 0..3 {
        let prefix = format!("late{attempt}/");
        let live = watch(&node, &format!("/watch?prefix={prefix}"), &[]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(node.put(&format!("/kv/{prefix}t?ttl=1s"), "1").status, 201);
        assert_eq!(next(&live).kind, "put");
        // Written as soon as `t` reads expired, before the purge streams its expiry.
        while node.get(&format!("/kv/{prefix}t")).status == 200 {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(node.put(&format!("/kv/{prefix}b"), "2").status, 201);
        let (first, second) = (next(&live), next(&live));
        if first.kind == "expire" {
            continue; // the purge ran in between: not the case this test is about
        }
        assert_eq!(
            (first.kind.as_str(), second.kind.as_str()),
            ("put", "expire")
        );
        let millisecond = |id: &Option<String>| -> u64 {
            id.as_deref()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            millisecond(&second.id) < millisecond(&first.id),
            "the expiry's time is earlier"
        );
        let resumed = watch(
            &node,
            &format!("/watch?prefix={prefix}"),
            &[("Last-Event-ID", first.id.as_deref().unwrap())],
        );
        assert_eq!(
            replayed(&resumed, 1),
            [("expire".to_owned(), Value::from(format!("{prefix}t")), None)]
        );
        return;
    }
    panic!("the purge streamed each expiry before the next write, three times");
}

/// The `kvs-resumed` header says how a Last-Event-ID was taken up, so that a client can
/// resume from further back when the node could not resume exactly.
#[test]
fn the_response_says_whether_a_resume_is_exact() {
    let node = Node::start(PLAIN);
    let live = watch(&node, "/watch?prefix=h/", &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.put("/kv/h/a", "1").status, 201);
    let id = next(&live).id.expect("an id");
    let (name, tag) = id.rsplit_once('.').expect("a live id has a tag");
    let other_tag = format!("{name}.{:08x}", u32::from_str_radix(tag, 16).unwrap() ^ 1);
    let resumed = |last: &str| resumed_as(&node, "/watch?prefix=h/", &[("Last-Event-ID", last)]);
    assert_eq!(resumed(&id).as_deref(), Some("exact"));
    for by_time in [name, other_tag.as_str(), name.split('.').next().unwrap()] {
        assert_eq!(resumed(by_time).as_deref(), Some("by-time"), "{by_time}");
    }
    assert_eq!(resumed_as(&node, "/watch?prefix=h/&since=0", &[]), None);
}

#[test]
fn a_bad_last_event_id_or_since_is_refused() {
    let node = Node::start(PLAIN);
    let answer = node.request("GET", "/watch?since=yesterday", None, &[]);
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = node.request("GET", "/watch", None, &[("Last-Event-ID", "nonsense")]);
    assert_eq!(answer.status, 400, "{}", answer.body);
}

/// `kvs watch PREFIX` against `node`, and the lines it prints as they come.
fn kvs_watch(node: &Node, prefix: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut watcher = std::process::Command::new(common::kvs_bin())
        .args(["watch", prefix, "--addr", &node.base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kvs watch");
    let stdout = watcher.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (watcher, received)
}

#[test]
fn kvs_watch_prints_each_change_as_a_json_line() {
    let node = Node::start(PLAIN);
    let (mut watcher, received) = kvs_watch(&node, "cli/");
    // Writes until the watcher is connected and prints the first one it sees.
    let mut printed = None;
    for n in 0..100 {
        assert_eq!(node.put(&format!("/kv/cli/{n}"), "7").status, 201);
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            printed = Some(line);
            break;
        }
    }
    let line: Value = serde_json::from_str(&printed.expect("a line")).unwrap();
    assert_eq!(line["event"], "put");
    assert!(line["key"].as_str().unwrap().starts_with("cli/"), "{line}");
    assert_eq!(line["data"], 7);
    // A value with a TTL: its put, then its expiry, each printed.
    assert_eq!(node.put("/kv/cli/ttl?ttl=1s", "8").status, 201);
    let mut seen = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(20)) {
        let line: Value = serde_json::from_str(&line).unwrap();
        if line["key"] == "cli/ttl" {
            seen.push(line["event"].as_str().unwrap().to_owned());
            if seen.len() == 2 {
                break;
            }
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(seen, ["put", "expire"]);
}

/// `kvs watch` across a restart of its node: it connects again and replays from a little
/// before the newest change it printed (a change that reached the node late is not
/// skipped), printing no change twice.
#[test]
fn kvs_watch_goes_on_after_its_node_restarts_printing_each_change_once() {
    let mut node = Node::start(PLAIN);
    // The restart keeps the port the watcher knows.
    node.keep_port();
    let (mut watcher, received) = kvs_watch(&node, "r/");
    let key = |line: String| {
        let line: Value = serde_json::from_str(&line).unwrap();
        line["key"].as_str().unwrap().to_owned()
    };
    // Connected once it prints a write.
    let mut printed = Vec::new();
    for n in 0..100 {
        assert_eq!(node.put(&format!("/kv/r/first{n}"), "1").status, 201);
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            printed.push(key(line));
            break;
        }
    }
    assert_eq!(printed.len(), 1, "the watcher printed nothing");
    for k in ["a", "b"] {
        assert_eq!(node.put(&format!("/kv/r/{k}"), "1").status, 201);
    }
    while printed.len() < 3 {
        printed.push(key(received
            .recv_timeout(Duration::from_secs(10))
            .expect("a, b")));
    }
    node.kill();
    node.launch();
    for k in ["c", "d"] {
        assert_eq!(node.put(&format!("/kv/r/{k}"), "1").status, 201);
    }
    while let Ok(line) = received.recv_timeout(Duration::from_secs(5)) {
        printed.push(key(line));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    // The replay after the restart may bring writes made before the watcher first
    // connected (they are in its look-back); nothing comes twice, nothing is missing.
    let once: std::collections::HashSet<&String> = printed.iter().collect();
    assert_eq!(once.len(), printed.len(), "printed twice: {printed:?}");
    let wanted: Vec<&String> = printed
        .iter()
        .filter(|k| ["r/a", "r/b", "r/c", "r/d"].contains(&k.as_str()))
        .collect();
    assert_eq!(wanted, ["r/a", "r/b", "r/c", "r/d"], "{printed:?}");
}

#[test]
fn kvs_watch_without_a_token_on_an_auth_node_exits_1() {
    let node = Node::start("clustering_enabled: false\n");
    let output = std::process::Command::new(common::kvs_bin())
        .args(["watch", "x/", "--addr", &node.base, "--token", ""])
        .env_remove("KVS_TOKEN")
        .output()
        .expect("kvs watch");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}

/// Puts `writes` new keys `<prefix><n>` of `value_bytes` each from four threads at
/// once, and returns once every one is acknowledged (201).
fn write_from_four_threads(node: &Node, prefix: &str, writes: usize, value_bytes: usize) {
    let value = format!("\"{}\"", "x".repeat(value_bytes));
    let base = &node.base;
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let value = &value;
            scope.spawn(move || {
                for n in (writer..writes).step_by(4) {
                    let url = format!("{base}/kv/{prefix}{n:05}");
                    let headers = [("content-type", "application/json")];
                    let answer = common::request(&url, "PUT", Some(value), &headers);
                    assert_eq!(answer.status, 201, "{}", answer.body);
                }
            });
        }
    });
}

#[test]
fn a_watcher_that_falls_behind_is_told_to_resume_and_never_holds_up_writes() {
    const WRITES: usize = 3000;
    let node = Node::start(PLAIN);
    // A watcher that reads nothing: once the socket buffers are full, the node cannot
    // hand it more, and its changes pile up past the store's buffer of 1,024.
    let stalled = open(&node, "/watch?prefix=slow/", &[]);
    std::thread::sleep(Duration::from_millis(300));
    write_from_four_threads(&node, "slow/", WRITES, 16 << 10);
    // Every write is acknowledged while the watcher still reads nothing.
    let events = read_events(stalled);
    let mut seen = std::collections::BTreeSet::new();
    let mut last_put = None;
    let resume = loop {
        let event = next(&events);
        match event.kind.as_str() {
            "put" => {
                seen.insert(event.data["key"].as_str().unwrap().to_owned());
                last_put = event.id;
            }
            "resume" => break event,
            other => panic!("unexpected {other} event"),
        }
    };
    assert!(seen.len() < WRITES, "the watcher fell behind");
    assert_eq!(resume.data["error"], "lagged", "{:?}", resume.data);
    assert_eq!(resume.data["last_event_id"].as_str(), last_put.as_deref());
    assert!(
        events.recv_timeout(Duration::from_secs(5)).is_err(),
        "the stream ends after resume"
    );
    // Resuming from the id it was given loses nothing, and repeats at most the changes
    // of that id's millisecond: exact while the node still holds that change among its
    // last ones (32 MiB of them: these 48 MB of writes outgrow that, and the resume goes
    // by time); a client drops the ones it has seen.
    let last = last_put.expect("some events before falling behind");
    let last_ms = last.split('.').next().unwrap().to_owned();
    let resumed = watch(&node, "/watch?prefix=slow/", &[("Last-Event-ID", &last)]);
    while let Ok(event) = resumed.recv_timeout(Duration::from_secs(2)) {
        assert_eq!(event.kind, "put");
        let id = event.id.clone().unwrap_or_default();
        let change = |id: &str| id.split('.').take(2).collect::<Vec<_>>().join(".");
        assert_ne!(
            change(&id),
            change(&last),
            "the event resumed after is not sent again"
        );
        let key = event.data["key"].as_str().unwrap().to_owned();
        if !seen.insert(key) {
            assert!(id.starts_with(&format!("{last_ms}.")), "{id} repeated");
        }
    }
    assert_eq!(
        seen.len(),
        WRITES,
        "every write seen across the two streams"
    );
}

/// A watcher that falls behind while the node still holds the changes since its last
/// event resumes exactly: every change it missed, none twice.
#[test]
fn a_watcher_that_fell_behind_resumes_exactly_while_the_node_holds_its_place() {
    const WRITES: usize = 8000;
    let node = Node::start(PLAIN);
    let stalled = open(&node, "/watch?prefix=lag/", &[]);
    std::thread::sleep(Duration::from_millis(300));
    // 2 KiB values: the socket buffers fill after a few thousand, and the 8,000 changes
    // (16 MB) stay within what the node keeps (32 MiB).
    write_from_four_threads(&node, "lag/", WRITES, 2 << 10);
    let events = read_events(stalled);
    let mut seen = std::collections::BTreeSet::new();
    let resume = loop {
        let event = next(&events);
        match event.kind.as_str() {
            "put" => assert!(seen.insert(event.data["key"].as_str().unwrap().to_owned())),
            "resume" => break event,
            other => panic!("unexpected {other} event"),
        }
    };
    assert!(seen.len() < WRITES, "the watcher fell behind");
    let last = resume.data["last_event_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let path = "/watch?prefix=lag/";
    assert_eq!(
        resumed_as(&node, path, &[("Last-Event-ID", &last)]).as_deref(),
        Some("exact")
    );
    let resumed = watch(&node, path, &[("Last-Event-ID", &last)]);
    while seen.len() < WRITES {
        let event = next(&resumed);
        let key = event.data["key"].as_str().unwrap().to_owned();
        assert!(seen.insert(key), "{:?} sent again", event.id);
    }
    assert!(quiet(&resumed), "nothing more");
}

#[test]
fn sigterm_ends_an_open_watch_and_the_node_exits() {
    let mut node = Node::start(PLAIN);
    let events = watch(&node, "/watch?prefix=w/", &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.put("/kv/w/a", "1").status, 201);
    assert_eq!(next(&events).kind, "put", "the stream is open");
    let pid = nix::unistd::Pid::from_raw(node.child.as_ref().expect("running").id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // The server ends the stream (the reader sees its end) rather than waiting for the
    // client to go; a stream still open 20 s later fails here.
    assert_eq!(
        events.recv_timeout(Duration::from_secs(20)).map(|e| e.kind),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the stream ended"
    );
    let status = node.child.take().expect("running").wait().expect("wait");
    assert!(status.success(), "{status:?}");
}
