//! Anti-entropy with real processes on loopback: a node that was down catches up on the
//! writes and deletes it missed, a new node receives what the cluster holds, a node that
//! expects peers says `syncing` until its first session, and converged nodes report the
//! same merkle root. Absences longer than `tombstone_ttl` are in `anti_entropy_after_ttl.rs`.

mod common;

use std::time::Duration;

use common::Node;
use common::cluster::{
    SECRET, call, cluster, config, gossip_addr, root_token, same_root, signal, stop, sync_status,
    within,
};

/// Rounds every 300 ms, so that tests do not wait for the 5 s default.
const FAST: &str = "sync_interval: 300ms\n";

/// What the restarted node (`nodes[2]`) lacks, with every node's sync status and
/// warnings, for a failure to show why.
fn lagging_evidence(nodes: &[Node]) -> String {
    let missing: Vec<usize> = (0..300)
        .filter(|n| nodes[2].get(&format!("/kv/missed/{n}")).status != 200)
        .collect();
    let mut evidence = format!(
        "the restarted node lacks writes or the delete: /kv/doomed answers {}, \
         {} of 300 missed keys absent (first: {:?})",
        nodes[2].get("/kv/doomed").status,
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (n, node) in nodes.iter().enumerate() {
        evidence += &format!("\nnode {n} /sync: {}", sync_status(node));
        for line in node.drain_logs() {
            if line.contains("WARN") || line.contains("ERROR") {
                evidence += &format!("\nnode {n}: {line}");
            }
        }
    }
    evidence
}

#[test]
fn a_restarted_node_catches_up_on_missed_writes_and_deletes() {
    let mut nodes = cluster(3, FAST);
    assert_eq!(nodes[0].put("/kv/doomed", "1").status, 201);
    assert!(within(Duration::from_secs(5), || nodes[2]
        .get("/kv/doomed")
        .status
        == 200));
    nodes[2].kill();
    for n in 0..300 {
        assert!(
            nodes[n % 2]
                .put(&format!("/kv/missed/{n}"), &n.to_string())
                .status
                < 300
        );
    }
    assert_eq!(nodes[1].delete("/kv/doomed").status, 204);
    nodes[2].launch();
    let caught_up = within(Duration::from_secs(20), || {
        nodes[2].get("/kv/doomed").status == 404
            && (0..300).all(|n| nodes[2].get(&format!("/kv/missed/{n}")).status == 200)
    });
    assert!(caught_up, "{}", lagging_evidence(&nodes));
    let converged = within(Duration::from_secs(10), || {
        same_root(&[&nodes[0], &nodes[1], &nodes[2]])
    });
    assert!(
        converged,
        "merkle roots differ: {:?}",
        nodes.iter().map(sync_status).collect::<Vec<_>>()
    );
    assert_eq!(nodes[2].get("/kv/missed/299").json()["data"], 299);
    let metrics = nodes[2].get("/metrics").body;
    assert!(metrics.contains("kvs_sync_rounds_total"), "{metrics}");
}

#[test]
fn a_new_node_receives_what_the_cluster_holds() {
    let nodes = cluster(2, FAST);
    for n in 0..500 {
        assert_eq!(
            nodes[n % 2].put(&format!("/kv/old/{n:04}"), "\"v\"").status,
            201
        );
    }
    let seed = gossip_addr(&nodes[0]);
    let newcomer = Node::start_named("late", &config(Some(&seed), SECRET, FAST));
    let complete = within(Duration::from_secs(20), || {
        newcomer.get("/health").json()["status"] == "ok" && sync_status(&newcomer)["keys"] == 500
    });
    assert!(
        complete,
        "the new node did not catch up: {}",
        sync_status(&newcomer)
    );
    assert!(within(Duration::from_secs(10), || same_root(&[
        &nodes[0], &nodes[1], &newcomer
    ])));
    let listed = newcomer.get("/kv?prefix=old/&limit=1000").json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(500));
    // The catch-up shows in the log, with what it brought.
    let logs = newcomer.drain_logs();
    let stored = logs
        .iter()
        .filter(|line| line.contains("first sync with a peer complete"))
        .find_map(|line| {
            line.split("stored=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        });
    assert!(
        stored.is_some_and(|n| n >= 500),
        "no first sync storing the 500 keys in the log:\n{}",
        logs.join("\n")
    );
    let status = sync_status(&newcomer);
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{status}");
    assert!(peers.iter().any(|p| p["last_sync"].is_u64()), "{status}");
    // Later rounds find nothing to repair, and say so per peer.
    let agreed = within(Duration::from_secs(10), || {
        let status = sync_status(&newcomer);
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        peers.len() == 2 && peers.iter().all(|p| p["roots_agreed"] == true)
    });
    assert!(agreed, "{}", sync_status(&newcomer));
}

#[test]
fn a_node_that_expects_peers_is_syncing_until_its_first_session() {
    // The seed answers nothing: the node keeps expecting a peer, and serves reads.
    let lonely = Node::start_named("lonely", &config(Some("127.0.0.1:9"), SECRET, FAST));
    assert_eq!(lonely.get("/health").json()["status"], "syncing");
    assert_eq!(sync_status(&lonely)["syncing"], true);
    assert_eq!(lonely.get("/kv/anything").status, 404);
    assert_eq!(lonely.put("/kv/local", "1").status, 201);
    // A node without seeds expects nobody.
    let first = Node::start_named("first", &config(None, SECRET, FAST));
    assert_eq!(first.get("/health").json()["status"], "ok");
}

#[test]
fn sync_status_without_clustering_shows_the_store() {
    let node = Node::start(common::PLAIN);
    let empty = sync_status(&node);
    assert_eq!(empty["keys"], 0);
    assert_eq!(empty["merkle_root"], "0000000000000000");
    assert_eq!(node.put("/kv/a", "1").status, 201);
    let after = sync_status(&node);
    assert_eq!(after["keys"], 1);
    assert_ne!(after["merkle_root"], empty["merkle_root"]);
    assert_eq!(after["peers"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_delete_on_a_node_without_the_key_still_wins_over_older_copies() {
    let nodes = cluster(2, FAST);
    assert_eq!(nodes[0].put("/kv/elsewhere", "\"old\"").status, 201);
    // A node outside the cluster deletes the key it never held: 404, and a tombstone.
    let mut outsider = Node::start_named("outsider", &config(None, SECRET, FAST));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(outsider.delete("/kv/elsewhere").status, 404);
    assert_eq!(outsider.delete("/kv/elsewhere").status, 404);
    // It joins: its delete is newer than the copies the others hold.
    outsider.kill();
    let seed = gossip_addr(&nodes[0]);
    std::fs::write(
        &outsider.config,
        format!(
            "node_id: outsider\nhttp_port: 0\n{}",
            config(Some(&seed), SECRET, FAST)
        ),
    )
    .unwrap();
    outsider.launch();
    let deleted = within(Duration::from_secs(20), || {
        nodes.iter().all(|n| n.get("/kv/elsewhere").status == 404)
    });
    assert!(deleted, "an older copy survived the delete");
    assert!(within(Duration::from_secs(10), || same_root(&[
        &nodes[0], &nodes[1], &outsider
    ])));
}

#[test]
fn a_revocation_and_a_user_deletion_made_while_a_node_was_down_reach_it() {
    let auth =
        "auth_enabled: true\njwt_secret: anti-entropy-test-jwt-secret\nsync_interval: 300ms\n";
    let mut nodes = cluster(3, auth);
    let root = root_token(&nodes[0]).expect("root.token");
    let user = |name: &str| {
        let body = format!("{{\"name\": \"{name}\"}}");
        let made = call(&nodes[0], "POST", "/auth/users", Some(&body), Some(&root));
        assert_eq!(made.status, 201, "{}", made.body);
        made.json()["id"].as_str().unwrap().to_owned()
    };
    let token = |user_id: &str| {
        let body =
            format!("{{\"user_id\": \"{user_id}\", \"scopes\": [\"read\"], \"ttl\": \"1h\"}}");
        let issued = call(&nodes[0], "POST", "/auth/tokens", Some(&body), Some(&root));
        assert_eq!(issued.status, 201, "{}", issued.body);
        issued.json()
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let alice_token = token(&alice);
    let bob_token = token(&bob)["token"].as_str().unwrap().to_owned();
    let alice_jwt = alice_token["token"].as_str().unwrap().to_owned();
    let reads = |node: &Node, jwt: &str| call(node, "GET", "/kv/any", None, Some(jwt)).status;
    assert!(within(Duration::from_secs(10), || reads(
        &nodes[2], &alice_jwt
    ) == 404
        && reads(&nodes[2], &bob_token) == 404));
    nodes[2].kill();
    let jti = alice_token["jti"].as_str().unwrap();
    let revoked = call(
        &nodes[0],
        "DELETE",
        &format!("/auth/tokens/{jti}"),
        None,
        Some(&root),
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let deleted = call(
        &nodes[1],
        "DELETE",
        &format!("/auth/users/{bob}"),
        None,
        Some(&root),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    nodes[2].launch();
    let refused = within(Duration::from_secs(10), || {
        reads(&nodes[2], &alice_jwt) == 401 && reads(&nodes[2], &bob_token) == 401
    });
    assert!(
        refused,
        "a revoked token or a deleted user still works on the restarted node"
    );
}

#[test]
fn a_paused_peer_catches_up_after_sigcont() {
    let nodes = cluster(3, "");
    stop(&nodes[2]);
    let started = std::time::Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for _ in 0..50 {
            let value = format!("\"{}\"", "p".repeat(1000));
            assert!(
                nodes[written % 2]
                    .put(&format!("/kv/paused/{written}"), &value)
                    .status
                    < 300
            );
            written += 1;
        }
    }
    signal(&nodes[2], nix::sys::signal::Signal::SIGCONT);
    let caught_up = within(Duration::from_secs(20), || {
        same_root(&[&nodes[0], &nodes[1], &nodes[2]])
            && sync_status(&nodes[2])["keys"].as_u64() == Some(written as u64)
    });
    assert!(
        caught_up,
        "the paused peer did not catch up on {written} writes"
    );
}

#[test]
fn a_write_after_a_quiet_spell_is_pushed_at_once() {
    // No anti-entropy round in the window (a 5 min interval): only the push can deliver.
    let nodes = cluster(2, "sync_interval: 5m\n");
    assert_eq!(nodes[0].put("/kv/before", "1").status, 201);
    assert!(within(Duration::from_secs(5), || nodes[1]
        .get("/kv/before")
        .status
        == 200));
    // Longer than QUIC's 30 s idle timeout.
    std::thread::sleep(Duration::from_secs(40));
    assert_eq!(nodes[0].put("/kv/after", "1").status, 201);
    assert!(
        within(Duration::from_secs(5), || nodes[1].get("/kv/after").status
            == 200),
        "the first write after a quiet spell was lost"
    );
}
