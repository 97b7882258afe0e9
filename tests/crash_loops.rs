//! Crash loops (issue 11): hard kills (SIGKILL) of real `kvs` processes at random moments,
//! each followed by a restart on the same data dir and the checks that nothing
//! acknowledged was lost, that the audit chain verifies and that the store opened
//! cleanly (no ERROR line, no panic, no damaged merkle tree, no flawed audit chain in
//! the node's log).
//!
//! - `single_node_kills_under_write_load` (audit trail off) and
//!   `single_node_kills_with_the_audit_trail_on` (`tamper_logging_enabled: true`, and
//!   `GET /audit/verify` must answer `ok` with at least one entry per acknowledged
//!   mutation after every restart) share the single-node kills: 8 client threads PUT
//!   and DELETE keys of their own and keys they all share, and every answer is recorded.
//!   One restart in five is killed as well, 0-150 ms after its start, before it serves
//!   (while it replays its write-ahead log): these kills come on top of the count.
//!   After each restart every key must hold the result of an operation that nothing
//!   acknowledged later replaced: for a key of one client exactly its last acknowledged
//!   write (or the one that was in flight when the node died), for a shared key one of
//!   the writes not followed by an acknowledged one, a delete meaning absent.
//! - `cluster_kills_during_bootstrap_and_anti_entropy`: a peer holds `KVS_CRASH_KEYS`
//!   keys; a node is killed while it bootstraps from it (a new node each time, killed
//!   after a random delay or once it holds a random share of the keys) and while an anti-entropy round
//!   brings it back up to date after it missed a quarter of the keys' overwrites and
//!   some deletes; a client writes to the killed node meanwhile. After each restart the
//!   node must reach the peer's merkle root and hold what the client was acknowledged.
//!
//! Counts and budget: `KVS_CRASH_LOOPS=S+C` (default `50+10`, the counts: 25
//! kills in each single-node test, 10 in the cluster) and `KVS_CRASH_KEYS=N` (default
//! 3000 keys on the peer), which run in about 45 s in a debug build on 2 shared cores
//! (the preload of 20,000 keys alone takes about 30 s there). The full run is
//! `KVS_CRASH_LOOPS=50+10 KVS_CRASH_KEYS=20000 cargo test --release --test crash_loops`
//! (figures in BENCHMARKS.md, "Crash loops"). `KVS_CRASH_SEED=N` replays the random
//! choices of a run (the seed is printed, and named in every failure); where a kill
//! lands also depends on timing, so a replay is likely, not certain, to hit the same
//! moment. When a test fails, its nodes' dirs (config, data dir, `node.log` over every
//! life) are kept and named on stderr.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use common::cluster::{SECRET, config, within};

/// Lines of a node's log that mean it did not open (or run) cleanly, besides any line
/// at level ERROR.
const UNCLEAN: [&str; 5] = [
    "panicked",
    "damaged",
    "flawed",
    "chain ends at",
    "before its recorded head",
];

/// Client threads of the single-node loops.
const CLIENTS: usize = 8;
/// Keys of each client's own, and keys every client writes.
const OWN_KEYS: usize = 24;
const SHARED_KEYS: usize = 16;

/// `(single-node kills, cluster kills)` from `KVS_CRASH_LOOPS=S+C`.
fn loops() -> (usize, usize) {
    let text = std::env::var("KVS_CRASH_LOOPS").unwrap_or_else(|_| "50+10".to_owned());
    let (single, cluster) = text
        .split_once('+')
        .unwrap_or_else(|| panic!("KVS_CRASH_LOOPS={text:?}: expected S+C, like 50+10"));
    let parse = |n: &str| {
        n.trim()
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("KVS_CRASH_LOOPS={text:?}: {n:?} is not a count"))
    };
    (parse(single), parse(cluster))
}

/// The run's seed: `KVS_CRASH_SEED`, else fresh; printed so that a failure names it.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("KVS_CRASH_SEED") {
        Ok(text) => text.parse().expect("KVS_CRASH_SEED is a number"),
        Err(_) => rand::random(),
    };
    println!("{test}: seed {seed} (replay with KVS_CRASH_SEED={seed})");
    seed
}

/// A `kvs` process on a config in its own temp dir, logging to `node.log` there across
/// restarts; killed on drop (before the dir goes), even when an assertion failed.
struct Proc {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    base: String,
    /// Where this life's lines start in `log`.
    offset: u64,
    /// Kept when a test fails, so that its data and log can be examined.
    dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Writes `node_id: name`, a free HTTP port and `extra` as the config and starts it.
    fn start(name: &str, extra: &str) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.yaml");
        std::fs::write(&config, format!("node_id: {name}\nhttp_port: 0\n{extra}"))
            .expect("write config");
        let mut proc = Proc {
            name: name.to_owned(),
            log: dir.path().join("node.log"),
            config,
            child: None,
            base: String::new(),
            offset: 0,
            dir: Some(dir),
        };
        proc.launch();
        proc
    }

    /// Starts the process on its config and data dir; returns once it serves HTTP.
    fn launch(&mut self) {
        self.spawn();
        self.wait_serving();
    }

    /// Starts the process on its config and data dir.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log");
        let child = Command::new(common::kvs_bin())
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvs");
        self.child = Some(child);
    }

    /// Waits until the process serves HTTP.
    fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.this_life();
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(addr) = whole
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http_addr="))
            {
                self.base = format!("http://{addr}");
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not serve within 60 s:\n{}",
                self.name,
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log lines of the current (or last) life of the process.
    fn this_life(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// SIGKILL, then waits for the process to be gone.
    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop), then waits for the exit.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let status = child.wait().expect("wait");
            assert!(status.success(), "{} stopped with {status}", self.name);
        }
    }

    /// The lines of this life that say the node did not open or run cleanly.
    fn unclean_lines(&self) -> Vec<String> {
        self.this_life()
            .lines()
            .filter(|line| line.contains(" ERROR ") || UNCLEAN.iter().any(|u| line.contains(u)))
            .map(str::to_owned)
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET that must be answered, as JSON.
    fn get_json(&self, path: &str) -> Value {
        let (status, body) = send(&agent(), "GET", &self.url(path), None)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.name));
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.name);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Waits until `/health` answers `status: ok`.
    fn wait_healthy(&self) {
        let healthy = within(Duration::from_secs(60), || {
            send(&agent(), "GET", &self.url("/health"), None)
                .is_ok_and(|(status, body)| status == 200 && body.contains("\"status\":\"ok\""))
        });
        assert!(
            healthy,
            "{} is not healthy after its restart:\n{}",
            self.name,
            tail(&self.this_life())
        );
    }

    /// The current key of every live key under `prefix` with its uuid.
    fn listing(&self, prefix: &str) -> HashMap<String, String> {
        let mut keys = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/kv?prefix={prefix}&limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!(
                    "&cursor={}",
                    percent_encoding::utf8_percent_encode(
                        cursor,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ));
            }
            let page = self.get_json(&path);
            for item in page["items"].as_array().expect("items") {
                let key = item["key"].as_str().expect("key").to_owned();
                keys.insert(key, item["uuid"].as_str().expect("uuid").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return keys,
            }
        }
    }

    /// `GET /sync`'s `(merkle_root, keys)`, `None` when the node does not answer.
    fn sync(&self) -> Option<(String, u64)> {
        let (status, body) = send(&agent(), "GET", &self.url("/sync"), None).ok()?;
        let sync: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        Some((
            sync["merkle_root"].as_str()?.to_owned(),
            sync["keys"].as_u64()?,
        ))
    }

    /// Asserts that `/audit/verify` answers ok with at least `acknowledged` entries.
    fn audit_verifies(&self, acknowledged: usize, context: &str) {
        let verdict = self.get_json("/audit/verify");
        assert_eq!(verdict["ok"], true, "{context}: the audit chain: {verdict}");
        let entries = verdict["entries"].as_u64().unwrap_or(0) as usize;
        assert!(
            entries >= acknowledged,
            "{context}: {entries} audit entries for {acknowledged} acknowledged mutations"
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "{}'s data dir and log are kept in {}",
                self.name,
                dir.keep().display()
            );
        }
    }
}

/// The last 40 lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A blocking client that reports every status as data.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One request: `(status, body)`, or why no answer came.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let answer = match (method, body) {
        ("PUT", Some(body)) => agent
            .put(url)
            .header("content-type", "application/json")
            .send(body),
        ("DELETE", None) => agent.delete(url).call(),
        ("GET", None) => agent.get(url).call(),
        _ => panic!("{method} with {body:?}"),
    };
    let mut response = answer.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// What a client asked.
#[derive(Clone, Debug)]
enum Kind {
    /// The JSON value sent (unique in the run).
    Put(String),
    Delete,
}

/// What the node answered.
#[derive(Clone, Debug)]
enum Outcome {
    /// `200`/`201` with this version's uuid.
    Put(String),
    /// `204`.
    Deleted,
    /// `404` to a DELETE: the key was absent, which it still is.
    Absent,
    /// No answer (the node died, or the request failed): it may or may not have applied.
    Uncertain(String),
}

/// One request and its answer.
#[derive(Clone, Debug)]
struct Op {
    client: usize,
    key: String,
    kind: Kind,
    start: Instant,
    /// When the answer came; for an uncertain request, when the node was dead for sure.
    end: Instant,
    outcome: Outcome,
}

impl Op {
    fn completed(&self) -> bool {
        !matches!(self.outcome, Outcome::Uncertain(_))
    }

    fn acknowledged_mutation(&self) -> bool {
        matches!(self.outcome, Outcome::Put(_) | Outcome::Deleted)
    }
}

/// Every request per key, over all lives of the node.
type History = BTreeMap<String, Vec<Op>>;

/// What a client thread reports back.
struct Report {
    ops: Vec<Op>,
    /// Answers that no client should get from a healthy node (5xx, 4xx but a DELETE's
    /// 404, failures before the kill).
    anomalies: Vec<String>,
}

/// A client: PUTs (unique values, some above `compression_min_bytes`) and DELETEs of
/// `keys()` until `killing` is set and the node stops answering.
fn client(
    base: String,
    client: usize,
    mut rng: StdRng,
    keys: impl Fn(&mut StdRng) -> String,
    killing: Arc<AtomicBool>,
) -> Report {
    let agent = agent();
    let mut ops = Vec::new();
    let mut anomalies = Vec::new();
    let mut n = 0u64;
    while !killing.load(Ordering::SeqCst) {
        let key = keys(&mut rng);
        let kind = if rng.gen_bool(0.75) {
            let pad = if rng.gen_bool(0.1) {
                rng.gen_range(1500..6000)
            } else {
                rng.gen_range(0..64)
            };
            let tag: u64 = rng.r#gen();
            n += 1;
            Kind::Put(format!(
                "{{\"client\":{client},\"n\":{n},\"tag\":\"{tag:016x}\",\"pad\":\"{}\"}}",
                "p".repeat(pad)
            ))
        } else {
            Kind::Delete
        };
        let url = format!("{base}/kv/{key}");
        let start = Instant::now();
        let answer = match &kind {
            Kind::Put(value) => send(&agent, "PUT", &url, Some(value)),
            Kind::Delete => send(&agent, "DELETE", &url, None),
        };
        let end = Instant::now();
        let outcome = match (&kind, answer) {
            (Kind::Put(_), Ok((200 | 201, body))) => {
                let uuid = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["uuid"].as_str().map(str::to_owned));
                match uuid {
                    Some(uuid) => Outcome::Put(uuid),
                    None => {
                        anomalies.push(format!("PUT {key}: no uuid in {body}"));
                        Outcome::Uncertain(body)
                    }
                }
            }
            (Kind::Delete, Ok((204, _))) => Outcome::Deleted,
            (Kind::Delete, Ok((404, _))) => Outcome::Absent,
            (_, Ok((status, body))) => {
                anomalies.push(format!("{kind:?} {key}: {status} {body}"));
                Outcome::Uncertain(format!("{status} {body}"))
            }
            (_, Err(error)) => {
                if !killing.load(Ordering::SeqCst) {
                    anomalies.push(format!(
                        "{kind:?} {key}: no answer before the kill: {error}"
                    ));
                }
                Outcome::Uncertain(error)
            }
        };
        ops.push(Op {
            client,
            key,
            kind,
            start,
            end,
            outcome,
        });
    }
    Report { ops, anomalies }
}

/// Counts of one check.
#[derive(Default, Debug)]
struct Checked {
    keys: usize,
    data_compared: usize,
}

/// Checks `node`'s keys under `prefix` against `history`: every key holds the result of
/// an operation that no acknowledged one followed (one that started after it was
/// answered, or after the node died when it was not), and no other key exists.
fn check(
    node: &Proc,
    prefix: &str,
    history: &History,
    rng: &mut StdRng,
) -> Result<Checked, Vec<String>> {
    let listing = node.listing(prefix);
    let mut failures = Vec::new();
    let mut checked = Checked::default();
    let data_of = |key: &str| -> Option<Value> {
        let (status, body) = send(&agent(), "GET", &node.url(&format!("/kv/{key}")), None).ok()?;
        (status == 200)
            .then(|| serde_json::from_str::<Value>(&body).ok())??
            .get("data")
            .cloned()
    };
    for (key, ops) in history {
        checked.keys += 1;
        let last_start = ops
            .iter()
            .filter(|op| op.completed())
            .map(|op| op.start)
            .max();
        let candidates: Vec<&Op> = ops
            .iter()
            .filter(|op| last_start.is_none_or(|last| op.end >= last))
            .collect();
        let shown = |candidates: &[&Op]| {
            candidates
                .iter()
                .map(|op| {
                    let what = match &op.kind {
                        Kind::Put(value) => format!("PUT {}", &value[..value.len().min(60)]),
                        Kind::Delete => "DELETE".to_owned(),
                    };
                    let answer = match &op.outcome {
                        Outcome::Uncertain(why) => format!("no answer ({why})"),
                        answered => format!("{answered:?}"),
                    };
                    format!("client {} {what} -> {answer}", op.client)
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        match listing.get(key) {
            None => {
                let absent_ok = last_start.is_none()
                    || candidates.iter().any(|op| matches!(op.kind, Kind::Delete));
                if !absent_ok {
                    failures.push(format!(
                        "{key} is absent; it should hold one of: {}",
                        shown(&candidates)
                    ));
                }
            }
            Some(uuid) => {
                let acknowledged = candidates
                    .iter()
                    .find(|op| matches!(&op.outcome, Outcome::Put(u) if u == uuid));
                if let Some(op) = acknowledged {
                    if rng.gen_bool(0.1) {
                        checked.data_compared += 1;
                        let Kind::Put(value) = &op.kind else {
                            unreachable!()
                        };
                        let expected: Value = serde_json::from_str(value).expect("sent JSON");
                        let data = data_of(key);
                        if data.as_ref() != Some(&expected) {
                            failures.push(format!(
                                "{key} has the acknowledged uuid {uuid} but data {data:?}"
                            ));
                        }
                    }
                    continue;
                }
                // Not an acknowledged version: it must be a write that was in flight.
                let data = data_of(key);
                checked.data_compared += 1;
                let in_flight = candidates.iter().any(|op| match (&op.kind, &op.outcome) {
                    (Kind::Put(value), Outcome::Uncertain(_)) => {
                        serde_json::from_str::<Value>(value).ok() == data
                    }
                    _ => false,
                });
                if !in_flight {
                    failures.push(format!(
                        "{key} holds {uuid} ({data:?}), which is none of: {}",
                        shown(&candidates)
                    ));
                }
            }
        }
    }
    for key in listing.keys().filter(|key| !history.contains_key(*key)) {
        failures.push(format!("{key} exists but nobody wrote it"));
    }
    match failures.is_empty() {
        true => Ok(checked),
        false => Err(failures),
    }
}

/// The single-node loop: `kills` SIGKILLs under 8 clients, each followed by a restart
/// and the checks.
fn single_node_kills(test: &str, kills: usize, audit: bool) {
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let extra = format!(
        "auth_enabled: false\nclustering_enabled: false\ntamper_logging_enabled: {audit}\n"
    );
    let mut node = Proc::start("crash", &extra);
    let mut history = History::new();
    let (mut acknowledged, mut uncertain, mut keys_checked, mut data_compared) = (0, 0, 0, 0);
    let mut startup_kills = 0;
    let started = Instant::now();
    for round in 1..=kills {
        let context = format!("{test}, seed {seed}, kill {round} of {kills}");
        let killing = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (base, killing) = (node.base.clone(), killing.clone());
                let client_rng = StdRng::seed_from_u64(rng.r#gen());
                std::thread::spawn(move || {
                    let keys = move |rng: &mut StdRng| {
                        if rng.gen_bool(0.7) {
                            format!("cl/own/{c}/{}", rng.gen_range(0..OWN_KEYS))
                        } else {
                            format!("cl/shared/{}", rng.gen_range(0..SHARED_KEYS))
                        }
                    };
                    client(base, c, client_rng, keys, killing)
                })
            })
            .collect();
        // The random moment: anywhere from at once to 800 ms into the load.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..800)));
        killing.store(true, Ordering::SeqCst);
        node.sigkill();
        let dead = Instant::now();
        let mut anomalies = Vec::new();
        for handle in clients {
            let report = handle.join().expect("a client panicked");
            anomalies.extend(report.anomalies);
            for mut op in report.ops {
                if op.completed() {
                    acknowledged += usize::from(op.acknowledged_mutation());
                } else {
                    op.end = dead;
                    uncertain += 1;
                }
                history.entry(op.key.clone()).or_default().push(op);
            }
        }
        assert!(
            anomalies.is_empty(),
            "{context}: unexpected answers: {anomalies:#?}"
        );
        // One restart in five is killed too, before it serves: while it replays its
        // write-ahead log and opens the store.
        if rng.gen_bool(0.2) {
            node.spawn();
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
            node.sigkill();
            startup_kills += 1;
        }
        node.launch();
        node.wait_healthy();
        match check(&node, "cl/", &history, &mut rng) {
            Ok(checked) => {
                keys_checked += checked.keys;
                data_compared += checked.data_compared;
            }
            Err(failures) => panic!(
                "{context}: {} keys wrong after the restart:\n{}\nlog:\n{}",
                failures.len(),
                failures.join("\n"),
                tail(&node.this_life())
            ),
        }
        if audit {
            node.audit_verifies(acknowledged, &context);
        }
        let unclean = node.unclean_lines();
        assert!(
            unclean.is_empty(),
            "{context}: the node did not open cleanly:\n{}",
            unclean.join("\n")
        );
    }
    println!(
        "{test}: {kills} kills under load and {startup_kills} during a restart, \
         {acknowledged} acknowledged writes and deletes, {uncertain} \
         in flight at a kill, {keys_checked} key checks ({data_compared} values compared) in \
         {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn single_node_kills_under_write_load() {
    let (single, _) = loops();
    single_node_kills(
        "single_node_kills_under_write_load",
        single - single / 2,
        false,
    );
}

#[test]
fn single_node_kills_with_the_audit_trail_on() {
    let (single, _) = loops();
    single_node_kills(
        "single_node_kills_with_the_audit_trail_on",
        single / 2,
        true,
    );
}

/// Writes `count` changes to `node` over 8 threads: overwrites of `boot/{i}` for the
/// first `count` keys, every tenth of them a delete instead.
fn change(node: &Proc, count: usize, round: usize) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let base = node.base.clone();
            std::thread::spawn(move || {
                let agent = agent();
                for i in (t..count).step_by(8) {
                    let url = format!("{base}/kv/boot/{i}");
                    let answer = match i % 10 {
                        0 => send(&agent, "DELETE", &url, None),
                        _ => send(&agent, "PUT", &url, Some(&format!("{{\"round\":{round}}}"))),
                    };
                    let status = answer.unwrap_or_else(|e| panic!("{url}: {e}")).0;
                    assert!(status < 300 || status == 404, "{url}: {status}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a writer panicked");
    }
}

/// Polls `node`'s and `peer`'s merkle roots until they are equal, for at most `limit`.
fn same_root(node: &Proc, peer: &Proc, limit: Duration) -> bool {
    within(limit, || match (node.sync(), peer.sync()) {
        (Some(a), Some(b)) => a.0 == b.0,
        _ => false,
    })
}

#[test]
fn cluster_kills_during_bootstrap_and_anti_entropy() {
    let (_, kills) = loops();
    let keys: usize = std::env::var("KVS_CRASH_KEYS")
        .map(|text| text.parse().expect("KVS_CRASH_KEYS is a number"))
        .unwrap_or(3000);
    let test = "cluster_kills_during_bootstrap_and_anti_entropy";
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let fast = "sync_interval: 300ms\n";
    let peer = Proc::start("peer", &config(None, SECRET, fast));
    let started = Instant::now();
    let bench = Command::new(common::kvs_bin())
        .args(["bench", "--addr", &peer.base, "--keys", &keys.to_string()])
        .args(["--prefix", "boot", "--value-size", "64", "--get-ratio", "1"])
        .args(["--duration", "100ms", "--connections", "16"])
        .output()
        .expect("run kvs bench");
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    println!(
        "{test}: {keys} keys preloaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let gossip = peer
        .this_life()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("gossip_addr="))
        .expect("gossip_addr in the peer's log")
        .to_owned();
    let joiner = config(Some(&gossip), SECRET, fast);
    let mut node: Option<Proc> = None;
    let mut history = History::new();
    let (mut landed, mut acknowledged, mut moments) = (0, 0, Vec::new());
    // How long catching up takes after missed changes, and a bootstrap: the kill comes at
    // a random moment within it (first guesses, then what a kill that came too late saw).
    let mut catch_up = [Duration::from_millis(1000), Duration::from_millis(500)];
    for round in 1..=kills {
        let context = format!("{test}, seed {seed}, kill {round} of {kills}");
        let bootstrap = round % 2 == 1;
        if bootstrap {
            // A new node each time: the last one leaves gracefully.
            if let Some(mut old) = node.take() {
                old.terminate();
            }
            node = Some(Proc::start(&format!("joiner{round}"), &joiner));
        } else {
            // The node misses changes while it is down; anti-entropy brings them back.
            let node = node.as_mut().expect("a node from the last round");
            node.terminate();
            change(&peer, keys / 4, round);
            node.launch();
        }
        let node = node.as_mut().expect("started");
        let killing = Arc::new(AtomicBool::new(false));
        let writer = {
            let (base, killing) = (node.base.clone(), killing.clone());
            let writer_rng = StdRng::seed_from_u64(rng.r#gen());
            let keys = move |rng: &mut StdRng| format!("w/{round}/{}", rng.gen_range(0..16));
            std::thread::spawn(move || client(base, round, writer_rng, keys, killing))
        };
        // Kill after a random delay within the time catching up takes, or once a
        // bootstrapping node holds a random share of the keys; `landed` counts the kills
        // made before the node had caught up.
        let target = rng.gen_range(0..keys as u64);
        let delay = rng.gen_range(Duration::ZERO..catch_up[usize::from(bootstrap)]);
        let since = Instant::now();
        // Bootstrap: `behind` while it holds fewer keys than the peer had before; after
        // missed changes: while one of three changed keys is not updated yet.
        let peer_keys = peer.sync().expect("the peer answers").1;
        let sample: Vec<String> = [1, keys / 8 + 1, keys / 4 - 1]
            .iter()
            .map(|i| format!("/kv/boot/{}", i + usize::from(i % 10 == 0)))
            .collect();
        let updated = |path: &String| {
            send(&agent(), "GET", &node.url(path), None).is_ok_and(|(status, body)| {
                status == 200 && body.contains(&format!("\"round\":{round}"))
            })
        };
        let (mut behind, mut held_at_kill) = (true, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let held = node.sync().map_or(0, |(_, held)| held);
            held_at_kill = held;
            behind = match bootstrap {
                true => held < peer_keys,
                false => !sample.iter().all(updated),
            };
            let due = since.elapsed() >= delay || (bootstrap && held >= target);
            if !behind {
                // Caught up before the kill: aim within that time from now on.
                let took = since.elapsed().max(Duration::from_millis(20));
                catch_up[usize::from(bootstrap)] = took;
                break;
            }
            if due {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        killing.store(true, Ordering::SeqCst);
        node.sigkill();
        let dead = Instant::now();
        landed += usize::from(behind);
        moments.push(format!(
            "{} {:.2} s in, {held_at_kill} keys{}",
            if bootstrap {
                "bootstrap"
            } else {
                "anti-entropy"
            },
            since.elapsed().as_secs_f64(),
            if behind { "" } else { " (caught up)" }
        ));
        let report = writer.join().expect("the writer panicked");
        assert!(
            report.anomalies.is_empty(),
            "{context}: {:#?}",
            report.anomalies
        );
        for mut op in report.ops {
            if !op.completed() {
                op.end = dead;
            }
            acknowledged += usize::from(op.acknowledged_mutation());
            history.entry(op.key.clone()).or_default().push(op);
        }
        node.launch();
        assert!(
            same_root(node, &peer, Duration::from_secs(60)),
            "{context}: the restarted node did not reach the peer's merkle root: {:?} vs {:?}\n{}",
            node.sync(),
            peer.sync(),
            tail(&node.this_life())
        );
        node.wait_healthy();
        for holder in [&*node, &peer] {
            if let Err(failures) = check(holder, "w/", &history, &mut rng) {
                panic!("{context}: on {}:\n{}", holder.name, failures.join("\n"));
            }
        }
        node.audit_verifies(0, &context);
        let unclean = node.unclean_lines();
        assert!(
            unclean.is_empty(),
            "{context}: the node did not open cleanly:\n{}",
            unclean.join("\n")
        );
    }
    peer.audit_verifies(acknowledged, test);
    assert!(
        peer.unclean_lines().is_empty(),
        "{:?}",
        peer.unclean_lines()
    );
    println!(
        "{test}: {kills} kills ({landed} before the node had caught up), {acknowledged} \
         acknowledged writes to the killed node, all on the peer; {:.1} s; the kills: {}",
        started.elapsed().as_secs_f64(),
        moments.join(", ")
    );
}

/// The check itself: it accepts what was acknowledged and notices a lost write, a
/// changed value, a deleted key that came back and a key nobody wrote.
#[test]
fn the_check_notices_lost_changed_resurrected_and_unknown_keys() {
    let node = Proc::start(
        "checked",
        "auth_enabled: false\nclustering_enabled: false\n",
    );
    let http = agent();
    let mut rng = StdRng::seed_from_u64(1);
    let mut history = History::new();
    let mut record = |key: &str, kind: Kind| {
        let start = Instant::now();
        let url = node.url(&format!("/kv/{key}"));
        let outcome = match &kind {
            Kind::Put(value) => {
                let (status, body) = send(&http, "PUT", &url, Some(value)).expect("PUT");
                assert_eq!(status, 201, "{body}");
                let answer: Value = serde_json::from_str(&body).expect("JSON");
                Outcome::Put(answer["uuid"].as_str().expect("uuid").to_owned())
            }
            Kind::Delete => {
                assert_eq!(send(&http, "DELETE", &url, None).expect("DELETE").0, 204);
                Outcome::Deleted
            }
        };
        let op = Op {
            client: 0,
            key: key.to_owned(),
            kind,
            start,
            end: Instant::now(),
            outcome,
        };
        history.entry(key.to_owned()).or_default().push(op);
    };
    record("cl/kept", Kind::Put("{\"v\":1}".to_owned()));
    record("cl/gone", Kind::Put("{\"v\":2}".to_owned()));
    record("cl/gone", Kind::Delete);
    check(&node, "cl/", &history, &mut rng).expect("the acknowledged state passes");
    let put = |key: &str, value: &str| {
        let url = node.url(&format!("/kv/{key}"));
        assert!(send(&agent(), "PUT", &url, Some(value)).expect("PUT").0 < 300);
    };
    let found = |check: Result<Checked, Vec<String>>, what: &str| {
        let failures = check.expect_err(what);
        assert!(
            failures.iter().any(|f| f.contains(what)),
            "{what}: {failures:?}"
        );
    };
    let url = node.url("/kv/cl/kept");
    assert_eq!(send(&agent(), "DELETE", &url, None).expect("DELETE").0, 204);
    found(check(&node, "cl/", &history, &mut rng), "cl/kept is absent");
    put("cl/kept", "{\"v\":1}");
    found(check(&node, "cl/", &history, &mut rng), "cl/kept holds");
    put("cl/gone", "{\"v\":2}");
    found(check(&node, "cl/", &history, &mut rng), "cl/gone holds");
    put("cl/unknown", "1");
    found(
        check(&node, "cl/", &history, &mut rng),
        "cl/unknown exists but nobody wrote it",
    );
}
