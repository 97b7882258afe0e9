//! Membership with real processes on loopback: joining through a seed, failure detection,
//! rejoin with a higher incarnation, graceful leave, and a foreign cluster kept out.

mod common;

use std::time::{Duration, Instant};

use common::Node;
use serde_json::Value;

const SECRET: &str = "membership-test-secret";

fn config(seed: Option<&str>, secret: &str) -> String {
    let seeds = seed.map_or("[]".to_owned(), |s| format!("[\"{s}\"]"));
    format!(
        "auth_enabled: false\ngossip_port: 0\nsync_port: 0\ncluster_secret: {secret}\nseed_nodes: {seeds}\n"
    )
}

fn members(node: &Node) -> Vec<Value> {
    node.get("/members").json()["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn member(node: &Node, id: &str) -> Option<Value> {
    members(node).into_iter().find(|m| m["node_id"] == id)
}

fn gossip_addr(node: &Node, id: &str) -> String {
    member(node, id).expect("itself")["gossip_addr"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls until `check` holds, for at most `limit`; returns the time it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// How long the polls below wait at most: far beyond what the protocol needs (its
/// timing is checked on virtual time in membership/tests/swim.rs and the scenarios), so
/// that only a failure, not a loaded machine, makes a test fail. Each logs what it took.
const LOOSE: Duration = Duration::from_secs(30);

fn state_of(node: &Node, id: &str) -> Option<String> {
    member(node, id).and_then(|m| m["state"].as_str().map(str::to_owned))
}

fn three_nodes() -> (Node, Node, Node) {
    let a = Node::start_named("a", &config(None, SECRET));
    let seed = gossip_addr(&a, "a");
    let b = Node::start_named("b", &config(Some(&seed), SECRET));
    let c = Node::start_named("c", &config(Some(&seed), SECRET));
    let joined = within(LOOSE, || {
        [&a, &b, &c].iter().all(|n| {
            let m = members(n);
            m.len() == 3 && m.iter().all(|m| m["state"] == "alive")
        })
    });
    assert!(
        joined.is_some(),
        "three nodes did not all see each other: {:?}",
        members(&a)
    );
    eprintln!("three nodes joined in {joined:?}");
    (a, b, c)
}

#[test]
fn nodes_join_through_one_seed_and_agree() {
    let (a, b, c) = three_nodes();
    for node in [&a, &b, &c] {
        assert_eq!(node.get("/health").json()["members"], 3);
        for m in members(node) {
            assert!(m["http_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(m["joined_at"].as_u64().unwrap() > 0);
            assert!(m["incarnation"].as_u64().unwrap() >= 1);
            assert!(m["flap_score"].is_number(), "{m}");
        }
    }
    assert_eq!(a.metric("kvs_members{state=\"alive\"}"), Some(3.0));
    let probed = within(LOOSE, || {
        a.metric("kvs_membership_probes_total")
            .is_some_and(|n| n > 0.0)
    });
    assert!(probed.is_some(), "a never counted a probe");
}

#[test]
fn a_killed_node_is_dead_everywhere_and_rejoins_higher() {
    let (a, b, mut c) = three_nodes();
    let incarnation = member(&a, "c").unwrap()["incarnation"].as_u64().unwrap();
    let joined_at = member(&a, "c").unwrap()["joined_at"].clone();
    c.kill();
    // The 3 s bound is checked on virtual time (membership/tests/swim.rs and the
    // scenarios); real processes on a loaded machine only need to get there.
    let took = within(LOOSE, || {
        state_of(&a, "c").as_deref() == Some("dead") && state_of(&b, "c").as_deref() == Some("dead")
    });
    assert!(
        took.is_some(),
        "not dead on both within {LOOSE:?}: {:?} / {:?}",
        state_of(&a, "c"),
        state_of(&b, "c")
    );
    eprintln!("crash to dead on both: {took:?}");
    c.launch();
    let back = within(LOOSE, || {
        [&a, &b].iter().all(|n| {
            member(n, "c").is_some_and(|m| {
                m["state"] == "alive" && m["incarnation"].as_u64().unwrap() > incarnation
            })
        })
    });
    assert!(
        back.is_some(),
        "c did not come back with a higher incarnation: {:?}",
        member(&a, "c")
    );
    eprintln!("restart to alive again on both: {back:?}");
    assert_eq!(
        member(&a, "c").unwrap()["joined_at"],
        joined_at,
        "joined_at never changes"
    );
}

#[test]
fn a_restarted_node_without_seeds_rejoins_through_the_peers_it_knew() {
    // a, the first node, has no seed; b and c joined through it.
    let (mut a, mut b, mut c) = three_nodes();
    let incarnation = member(&b, "a").unwrap()["incarnation"].as_u64().unwrap();
    assert!(
        a.terminate().success(),
        "a graceful stop keeps the live peers"
    );
    // Back on another gossip port (port 0): no peer knows where to find it, so only the
    // peers it remembers can bring it back.
    a.launch();
    let new_addr = gossip_addr(&a, "a");
    let back = within(LOOSE, || {
        [&b, &c].iter().all(|n| {
            member(n, "a").is_some_and(|m| {
                m["state"] == "alive"
                    && m["gossip_addr"] == new_addr.as_str()
                    && m["incarnation"].as_u64().unwrap() > incarnation
            })
        }) && members(&a).iter().filter(|m| m["state"] == "alive").count() == 3
    });
    assert!(
        back.is_some(),
        "a did not rejoin: it sees {:?}; b sees {:?}",
        members(&a),
        member(&b, "a")
    );
    eprintln!("restart to rejoined: {back:?}");
    // Alone, with peers it knew but none up, it is not in sync with its cluster.
    assert!(b.terminate().success() && c.terminate().success());
    assert!(a.terminate().success());
    a.launch();
    assert_eq!(a.get("/health").json()["status"], "syncing");
}

#[test]
fn sigterm_shows_as_left_not_dead() {
    let (a, mut b, c) = three_nodes();
    assert!(b.terminate().success());
    let left = within(LOOSE, || {
        state_of(&a, "b").as_deref() == Some("left") && state_of(&c, "b").as_deref() == Some("left")
    });
    assert!(left.is_some(), "b is {:?} on a", state_of(&a, "b"));
    eprintln!("exit to left on both: {left:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        state_of(&a, "b").as_deref(),
        Some("left"),
        "left is not turned into dead"
    );
}

#[test]
fn a_node_with_another_secret_never_appears() {
    let a = Node::start_named("a", &config(None, SECRET));
    let seed = gossip_addr(&a, "a");
    let b = Node::start_named("b", &config(Some(&seed), SECRET));
    let intruder = Node::start_named("intruder", &config(Some(&seed), "some-other-secret"));
    assert!(within(LOOSE, || members(&a).len() == 2).is_some());
    std::thread::sleep(Duration::from_secs(3));
    for node in [&a, &b] {
        let ids: Vec<Value> = members(node).iter().map(|m| m["node_id"].clone()).collect();
        assert!(!ids.contains(&Value::from("intruder")), "{ids:?}");
    }
    assert_eq!(members(&intruder).len(), 1, "the intruder sees only itself");
    let rejected = a.metric("kvs_membership_rejected_datagrams_total");
    assert!(
        rejected.is_some_and(|n| n > 0.0),
        "the intruder's datagrams are counted as rejected: {rejected:?}"
    );
    // Both ends say why, rather than leave the intruder running on alone in silence.
    let says = |node: &Node, words: &str| {
        let mut logs = node.drain_logs();
        let said = within(LOOSE, || {
            logs.extend(node.drain_logs());
            logs.iter().any(|line| line.contains(words))
        });
        assert!(said.is_some(), "no \"{words}\" in:\n{}", logs.join("\n"));
    };
    says(&a, "another cluster_secret");
    says(&intruder, "has answered yet");
}

/// `GET path` on `node`, with its root token where auth is on.
fn get_as_root(node: &Node, path: &str) -> common::Answer {
    let token = common::cluster::root_token(node);
    common::cluster::call(node, "GET", path, None, token.as_deref())
}

#[test]
fn a_member_with_another_jwt_secret_joins_but_is_told_and_marked() {
    let node = |id: &str, seed: Option<&str>, auth: bool, jwt: &str| {
        let config = config(seed, SECRET).replace(
            "auth_enabled: false",
            &format!("auth_enabled: {auth}\njwt_secret: {jwt}"),
        );
        Node::start_named(id, &config)
    };
    const SHARED: &str = "tokens-of-the-cluster-0123456789";
    let a = node("a", None, true, SHARED);
    let seed = common::cluster::gossip_addr(&a);
    let b = node("b", Some(&seed), true, SHARED);
    let odd = node("odd", Some(&seed), true, "tokens-of-some-other-0123456789");
    // With auth off a node checks no token: it publishes and compares no fingerprint.
    let open = node("open", Some(&seed), false, "tokens-of-a-third-0123456789ab");
    let members_of = |n: &Node| {
        get_as_root(n, "/members").json()["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let joined = within(LOOSE, || {
        [&a, &b, &odd, &open].iter().all(|n| {
            let m = members_of(n);
            m.len() == 4 && m.iter().all(|m| m["state"] == "alive")
        })
    });
    assert!(
        joined.is_some(),
        "the cluster secret is shared: all four join"
    );
    let matches = |n: &Node, id: &str| {
        let members = members_of(n);
        let member = members
            .iter()
            .find(|m| m["node_id"] == id)
            .expect("a member");
        member["jwt_secret_matches"].clone()
    };
    assert_eq!(matches(&a, "a"), Value::Null, "not said of the node itself");
    assert_eq!(matches(&a, "b"), Value::Bool(true));
    assert_eq!(matches(&a, "odd"), Value::Bool(false));
    assert_eq!(matches(&a, "open"), Value::Null, "open publishes none");
    assert_eq!(matches(&odd, "a"), Value::Bool(false));
    assert_eq!(matches(&odd, "b"), Value::Bool(false));
    assert_eq!(matches(&open, "odd"), Value::Null, "open compares none");
    let gauge = |n: &Node| {
        let metrics = get_as_root(n, "/metrics").body;
        metrics.lines().find_map(|line| {
            line.strip_prefix("kvs_members_other_jwt_secret ")?
                .parse::<f64>()
                .ok()
        })
    };
    assert_eq!(gauge(&a), Some(1.0));
    assert_eq!(gauge(&b), Some(1.0));
    assert_eq!(gauge(&odd), Some(2.0));
    assert_eq!(open.metric("kvs_members_other_jwt_secret"), Some(0.0));
    // Each node warns once per member with another secret (the log may come in late).
    let warnings_of = |n: &Node, expected: usize| {
        let told_here = |n: &Node| {
            n.drain_logs()
                .into_iter()
                .filter(|line| line.contains("has another jwt_secret"))
                .collect::<Vec<_>>()
        };
        let mut told = Vec::new();
        within(LOOSE, || {
            told.extend(told_here(n));
            told.len() >= expected
        });
        std::thread::sleep(Duration::from_millis(500));
        told.extend(told_here(n));
        told
    };
    let told = warnings_of(&a, 1);
    assert_eq!(told.len(), 1, "a warns once, about odd: {told:?}");
    assert!(told[0].contains("member odd "), "{told:?}");
    assert_eq!(warnings_of(&odd, 2).len(), 2, "odd warns about a and b");
    assert!(warnings_of(&b, 1)[0].contains("member odd "));
    assert!(warnings_of(&open, 0).is_empty(), "open warns about no one");
}

#[test]
fn members_that_left_or_died_are_forgotten_after_member_reap_after() {
    // member_reap_after must be at least twice push_pull_interval.
    let reaping = |seed: Option<&str>| {
        format!(
            "{}push_pull_interval: 1s\nmember_reap_after: 3s\n",
            config(seed, SECRET)
        )
    };
    let a = Node::start_named("a", &reaping(None));
    let seed = gossip_addr(&a, "a");
    let mut b = Node::start_named("b", &reaping(Some(&seed)));
    let mut c = Node::start_named("c", &reaping(Some(&seed)));
    assert!(within(LOOSE, || members(&a).len() == 3).is_some());
    // One after the other: each is seen down, then forgotten.
    assert!(b.terminate().success());
    let left = within(LOOSE, || state_of(&a, "b").as_deref() == Some("left"));
    assert!(left.is_some(), "b is {:?} on a", state_of(&a, "b"));
    let forgotten = within(LOOSE, || member(&a, "b").is_none());
    assert!(forgotten.is_some(), "b is still listed: {:?}", members(&a));
    c.kill();
    let dead = within(LOOSE, || state_of(&a, "c").as_deref() == Some("dead"));
    assert!(dead.is_some(), "c is {:?} on a", state_of(&a, "c"));
    let forgotten = within(LOOSE, || member(&a, "c").is_none());
    assert!(forgotten.is_some(), "c is still listed: {:?}", members(&a));
    let said = a.drain_logs();
    let forgot = said
        .iter()
        .filter(|line| line.contains("member forgotten"))
        .count();
    assert_eq!(forgot, 2, "{}", said.join("\n"));
    assert_eq!(a.metric("kvs_members{state=\"left\"}"), Some(0.0));
    assert_eq!(a.metric("kvs_members{state=\"dead\"}"), Some(0.0));
    // Forgotten is not refused: b comes back as a new member.
    b.launch();
    let back = within(LOOSE, || state_of(&a, "b").as_deref() == Some("alive"));
    assert!(back.is_some(), "b is {:?} on a", state_of(&a, "b"));
}

#[test]
fn a_whole_cluster_restarted_comes_back_above_the_incarnations_it_had_reached() {
    let mut a = Node::start_named("a", &config(None, SECRET));
    let seed = gossip_addr(&a, "a");
    let mut b = Node::start_named("b", &config(Some(&seed), SECRET));
    assert!(within(LOOSE, || state_of(&a, "b").as_deref() == Some("alive")).is_some());
    let started = member(&a, "b").unwrap()["incarnation"].as_u64().unwrap();
    // Paused until suspected, b refutes the suspicion with a higher incarnation.
    common::cluster::stop(&b);
    let suspected = within(LOOSE, || state_of(&a, "b").as_deref() != Some("alive"));
    common::cluster::signal(&b, nix::sys::signal::Signal::SIGCONT);
    assert!(suspected.is_some(), "b was never suspected");
    let refuted = within(LOOSE, || {
        member(&a, "b")
            .is_some_and(|m| m["state"] == "alive" && m["incarnation"].as_u64().unwrap() > started)
    });
    assert!(refuted.is_some(), "b is {:?} on a", member(&a, "b"));
    let reached = member(&b, "b").unwrap()["incarnation"].as_u64().unwrap();
    // No member remembers b's incarnation when the whole cluster restarts.
    assert!(b.terminate().success() && a.terminate().success());
    a.launch();
    b.launch();
    let again = member(&b, "b").unwrap()["incarnation"].as_u64().unwrap();
    assert!(
        again > reached,
        "b came back at incarnation {again}, having reached {reached}"
    );
}
