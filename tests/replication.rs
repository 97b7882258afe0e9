//! Push replication with real processes on loopback: a write on one node is readable on
//! the others, deletes too, even when its client hangs up before the answer, concurrent
//! writes converge to one winner everywhere, and a node with another `cluster_secret`
//! neither receives nor sends anything.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::Node;
use common::cluster::{
    call, cluster, config, gossip_addr, same_root_as, sync_status, uuid_on, within,
};

#[test]
fn writes_and_deletes_reach_every_node() {
    let nodes = cluster(3, "");
    let written = nodes[0].put("/kv/r/1", "{\"v\":1}");
    assert_eq!(written.status, 201);
    let uuid = written.json()["uuid"].clone();
    let everywhere = within(Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| uuid_on(n, "r/1").as_ref() == Some(&uuid))
    });
    assert!(everywhere, "the write did not reach every node");
    assert_eq!(nodes[2].get("/kv/r/1").json()["data"]["v"], 1);

    assert_eq!(nodes[1].delete("/kv/r/1").status, 204);
    let gone = within(Duration::from_secs(5), || {
        nodes.iter().all(|n| n.get("/kv/r/1").status == 404)
    });
    assert!(gone, "the delete did not reach every node");
    // Node 0 stored one pushed version, node 1's delete (a whole line: not `... 10`).
    let metrics = nodes[0].get("/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|line| line == "kvs_replication_stored_total 1"),
        "{metrics}"
    );
    // Each pushed version received adds one observation to the lag histogram, whose
    // buckets are 1 ms to 5 s.
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .to_owned()
    };
    assert_eq!(
        value("kvs_replication_lag_ms_count"),
        value("kvs_replication_received_total"),
        "{metrics}"
    );
    assert_eq!(
        value("kvs_replication_lag_ms_bucket{le=\"+Inf\"}"),
        value("kvs_replication_lag_ms_count"),
    );
    let bounds: Vec<&str> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("kvs_replication_lag_ms_bucket{le=\"")?;
            rest.split_once('"').map(|(bound, _)| bound)
        })
        .collect();
    let expected = [
        "1", "2", "3", "5", "7", "10", "15", "20", "30", "50", "100", "250", "1000", "5000", "+Inf",
    ];
    assert_eq!(bounds, expected, "{metrics}");
    for line in [
        "# TYPE kvs_replication_lag_ms histogram",
        "# TYPE kvs_replication_stored_total counter",
        "# TYPE kvs_replication_queue_bytes gauge",
        "# TYPE kvs_sync_rounds_total counter",
        "# TYPE kvs_sync_syncing gauge",
        "# TYPE kvs_members gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in {metrics}"
        );
    }
}

/// The keys under `prefix` that `node` lists.
fn listed(node: &Node, prefix: &str) -> BTreeSet<String> {
    let page = node.get(&format!("/kv?prefix={prefix}&limit=1000")).json();
    page["items"]
        .as_array()
        .expect("a listing")
        .iter()
        .map(|item| item["key"].as_str().expect("a key").to_owned())
        .collect()
}

/// hyper drops a request's future when its client hangs up; a write the commit thread had
/// taken then was stored but never pushed, and reached the other nodes only at the next
/// anti-entropy round (an hour here, so that only the push can bring it).
#[test]
fn a_write_whose_client_hung_up_is_still_pushed() {
    let nodes = cluster(2, "sync_interval: 1h\n");
    // The first sync sessions (at the start) are over, so none will bring these writes.
    let first_syncs_done = within(Duration::from_secs(10), || {
        nodes.iter().all(|node| {
            let status = sync_status(node);
            status["syncing"] == false
                && status["peers"]
                    .as_array()
                    .is_some_and(|peers| peers.iter().all(|p| !p["last_sync"].is_null()))
        })
    });
    assert!(first_syncs_done, "{}", sync_status(&nodes[0]));
    let address = nodes[0].base.trim_start_matches("http://");
    let body = "{\"v\":1}";
    for i in 0..60 {
        let mut stream = TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "PUT /kv/hung/{i} HTTP/1.1\r\nHost: kvs\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        // Hang up at once or up to 3 ms later: before, while or after the commit.
        std::thread::sleep(Duration::from_micros(250 * (i % 13)));
        drop(stream);
    }
    // What the first node stored, once it stops changing.
    let mut committed = listed(&nodes[0], "hung/");
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = listed(&nodes[0], "hung/");
        if now == committed {
            break;
        }
        committed = now;
    }
    assert!(
        !committed.is_empty(),
        "no write of a hung-up client was stored"
    );
    let pushed = within(Duration::from_secs(5), || {
        listed(&nodes[1], "hung/") == committed
    });
    assert!(
        pushed,
        "stored on the first node but not pushed: {:?}",
        committed
            .difference(&listed(&nodes[1], "hung/"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_writes_converge_to_one_winner() {
    let nodes = cluster(3, "");
    for round in 0..5 {
        let key = format!("/kv/race/{round}");
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let url = format!("{}{key}", n.base);
                std::thread::spawn(move || common::request(&url, "PUT", Some("\"x\""), &[]))
            })
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap().status < 300);
        }
        let key = key.trim_start_matches("/kv/");
        let agreed = within(Duration::from_secs(5), || {
            let first = uuid_on(&nodes[0], key);
            first.is_some() && nodes.iter().all(|n| uuid_on(n, key) == first)
        });
        assert!(agreed, "round {round}: nodes disagree on the winner");
    }
}

#[test]
fn a_node_with_another_secret_exchanges_nothing() {
    let nodes = cluster(2, "");
    let seed = gossip_addr(&nodes[0]);
    let outsider = Node::start_named(
        "outsider",
        &config(Some(&seed), "another-secret-entirely", ""),
    );
    assert_eq!(outsider.put("/kv/from/outside", "1").status, 201);
    assert_eq!(nodes[0].put("/kv/from/inside", "1").status, 201);
    assert!(within(Duration::from_secs(5), || nodes[1]
        .get("/kv/from/inside")
        .status
        == 200));
    std::thread::sleep(Duration::from_secs(1));
    for node in &nodes {
        assert_eq!(node.get("/kv/from/outside").status, 404);
    }
    assert_eq!(outsider.get("/kv/from/inside").status, 404);
}

#[test]
fn concurrent_large_values_replicate() {
    let nodes = cluster(2, "");
    let value = format!("\"{}\"", "v".repeat(900_000));
    let writers: Vec<_> = (0..24)
        .map(|n| {
            let (url, value) = (format!("{}/kv/big/{n}", nodes[0].base), value.clone());
            std::thread::spawn(move || common::request(&url, "PUT", Some(&value), &[]).status)
        })
        .collect();
    for writer in writers {
        assert_eq!(writer.join().unwrap(), 201);
    }
    let replicated = within(Duration::from_secs(30), || {
        (0..24).all(|n| uuid_on(&nodes[1], &format!("big/{n}")).is_some())
    });
    assert!(replicated, "large values did not all replicate");
    let copy = nodes[1].get("/kv/big/7").json();
    assert_eq!(copy["data"].as_str().map(str::len), Some(900_000));
}

/// A read token for root issued on `node` for an hour: (token, jti).
fn issue_read_token(node: &Node, root: &str) -> (String, String) {
    let body = r#"{"user_id":"root","scopes":["read"],"ttl":"1h"}"#;
    let issued = call(node, "POST", "/auth/tokens", Some(body), Some(root));
    assert_eq!(issued.status, 201, "{}", issued.body);
    let issued = issued.json();
    let field = |name: &str| issued[name].as_str().unwrap().to_owned();
    (field("token"), field("jti"))
}

/// A revocation made on one node applies on the others as soon as it is there, not up
/// to a second later from their caches of authenticated callers: a node empties its cache
/// when its store takes an `_auth/` record from a peer (found by an audit: a revoked
/// token still worked on another node 0.6 s after the revocation).
#[test]
fn a_revocation_applies_on_every_node_as_soon_as_it_arrives() {
    let nodes = cluster(
        2,
        "auth_enabled: true\njwt_secret: revocation-reaches-everyone\n",
    );
    let root = common::cluster::root_token(&nodes[0]).expect("root token");
    let (token, jti) = &issue_read_token(&nodes[0], &root);
    // The token is accepted on n1, and n1 caches its caller.
    let arrived = within(Duration::from_secs(10), || {
        same_root_as(&[&nodes[0], &nodes[1]], &root)
            && call(&nodes[1], "GET", "/kv/x", None, Some(token)).status == 404
    });
    assert!(arrived, "the token does not work on n1");
    let revoked = call(
        &nodes[0],
        "DELETE",
        &format!("/auth/tokens/{jti}"),
        None,
        Some(&root),
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let replicated = within(Duration::from_secs(10), || {
        same_root_as(&[&nodes[0], &nodes[1]], &root)
    });
    assert!(replicated, "the revocation did not reach n1");
    let after = call(&nodes[1], "GET", "/kv/x", None, Some(token));
    assert_eq!(
        after.status, 401,
        "the revoked token still works on n1: {}",
        after.body
    );
}

/// A token revoked on another node than the one that issued it, at once: `204`, as the
/// spec has it (the revoking node waits a moment for the token's record; it answered
/// `404` about once in ten tries, found by a black-box audit), and the token stops
/// working on both nodes.
#[test]
fn a_token_revoked_at_once_on_another_node_is_revoked_with_204() {
    let nodes = cluster(
        2,
        "auth_enabled: true\njwt_secret: revoke-on-the-other-node\n",
    );
    let root = common::cluster::root_token(&nodes[0]).expect("root token");
    for _ in 0..10 {
        let (token, jti) = &issue_read_token(&nodes[0], &root);
        let path = format!("/auth/tokens/{jti}");
        let revoked = call(&nodes[1], "DELETE", &path, None, Some(&root));
        assert_eq!(revoked.status, 204, "{}", revoked.body);
        let everywhere = within(Duration::from_secs(10), || {
            nodes
                .iter()
                .all(|node| call(node, "GET", "/kv/x", None, Some(token)).status == 401)
        });
        assert!(everywhere, "the revoked token still works somewhere");
    }
}
