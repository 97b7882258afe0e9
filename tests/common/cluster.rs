//! Clusters of real nodes on loopback for the replication tests: configs that join
//! through a seed, the wait until every node sees every member, and polling helpers.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;

use serde_json::Value;

use super::Node;

/// The cluster secret of test clusters.
pub const SECRET: &str = "replication-test-secret";

/// A clustered config (free ports; auth off unless `extra` sets `auth_enabled`) joining
/// through `seed`, plus `extra` lines.
pub fn config(seed: Option<&str>, secret: &str, extra: &str) -> String {
    let seeds = seed.map_or("[]".to_owned(), |s| format!("[\"{s}\"]"));
    let auth = match extra.contains("auth_enabled:") {
        true => "",
        false => "auth_enabled: false\n",
    };
    format!(
        "{auth}gossip_port: 0\nsync_port: 0\ncluster_secret: {secret}\nseed_nodes: {seeds}\n{extra}"
    )
}

/// A UDP port free on 127.0.0.1 now, for a node that must keep its gossip address across
/// restarts (one restarted on port 0 is unreachable through its old address). It is drawn
/// below the kernel's range for port 0, so that no other node of a test running alongside
/// can be given it before this one binds it, and never twice in this process (a port
/// the kernel chose for port 0 was, once in a CI run, taken by another node first).
pub fn free_udp_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(10_000..first_ephemeral.max(10_001));
        if !given.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// The root token of `node`, when auth is on.
pub fn root_token(node: &Node) -> Option<String> {
    let text = std::fs::read_to_string(node.data_dir().join("root.token")).ok()?;
    Some(text.trim_end().to_owned())
}

/// A request with `token` as the bearer, if any.
pub fn call(
    node: &Node,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> super::Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    node.request(method, path, body, &headers)
}

/// The gossip address `node` publishes for itself.
pub fn gossip_addr(node: &Node) -> String {
    let members = call(node, "GET", "/members", None, root_token(node).as_deref()).json();
    members["members"][0]["gossip_addr"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `check` every 50 ms for at most `limit`.
pub fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `n` nodes `n0`.. joined through `n0`, each config with `extra` lines; returns once
/// every node counts `n` live members.
pub fn cluster(n: usize, extra: &str) -> Vec<Node> {
    let first = Node::start_named("n0", &config(None, SECRET, extra));
    let seed = gossip_addr(&first);
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(Node::start_named(
            &format!("n{i}"),
            &config(Some(&seed), SECRET, extra),
        ));
    }
    let formed = within(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|node| node.get("/health").json()["members"] == n)
    });
    assert!(formed, "the cluster did not form");
    nodes
}

/// The uuid of `key`'s current version on `node`, if it is there.
pub fn uuid_on(node: &Node, key: &str) -> Option<Value> {
    let answer = node.get(&format!("/kv/{key}"));
    (answer.status == 200).then(|| answer.json()["uuid"].clone())
}

/// `node`'s `GET /sync`.
pub fn sync_status(node: &Node) -> Value {
    node.get("/sync").json()
}

/// Whether `nodes` report the same merkle root. A node that answers `/sync` with no root
/// (an error, such as the 401 of a node with auth on, or no answer) reports none: two such
/// answers are not equal roots (they were taken for equal, and a test with auth on checked
/// what had not arrived yet). [`same_root_as`] asks with a token.
pub fn same_root(nodes: &[&Node]) -> bool {
    roots_agree(nodes.iter().map(|n| sync_status(n)["merkle_root"].clone()))
}

/// [`same_root`] asked with `token` (for nodes with auth on).
pub fn same_root_as(nodes: &[&Node], token: &str) -> bool {
    roots_agree(
        nodes
            .iter()
            .map(|n| call(n, "GET", "/sync", None, Some(token)).json()["merkle_root"].clone()),
    )
}

fn roots_agree(roots: impl Iterator<Item = Value>) -> bool {
    let roots: Vec<Value> = roots.collect();
    roots
        .iter()
        .all(|root| root.is_string() && *root == roots[0])
}

/// Sends `signal` to `node`'s process.
pub fn signal(node: &Node, signal: nix::sys::signal::Signal) {
    let pid = node.child.as_ref().expect("running").id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
}

/// Stops `node`'s process (SIGSTOP) and waits until it has stopped: `kill` returns once
/// the signal is sent, and on a loaded machine the node's threads run on for a few
/// milliseconds, time enough to take a push of the next write. (A delete made just after
/// `kill` reached n2 that way in 7 of 1,086 runs under load: n2, with nothing left to
/// bury, reported `kvs_sync_buried_total` 0.)
pub fn stop(node: &Node) {
    use nix::sys::signal::Signal;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    signal(node, Signal::SIGSTOP);
    let pid = nix::unistd::Pid::from_raw(node.child.as_ref().expect("running").id() as i32);
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        other => panic!("the node did not stop: {other:?}"),
    }
}
