//! The key-value contract of the HTTP API against a real node (LMDB, real HTTP), for what
//! only a process shows: every JSON kind through LMDB and back, the default body limit of
//! the node's config over TCP, an expiry on the node's own clock, and the node's health,
//! members, metrics and OpenAPI document. The statuses, error codes and JSON fields of
//! each route (keys, bodies, limits, `404`/`405`, compare-and-set, listings, TTL parsing,
//! history) are checked in process, over a memory store: `api/src/routes/tests/`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, PLAIN};
use serde_json::json;

#[test]
fn every_json_kind_roundtrips_with_created_then_ok() {
    let node = Node::start(PLAIN);
    let values = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-12.5e-3),
        json!(18446744073709551615u64),
        json!("text with \"quotes\" and ünïcødé ✓"),
        json!([1, "two", [3.0], {"four": null}]),
        json!({"nested": {"deep": [true, {"x": "y"}]}, "empty": {}, "list": []}),
    ];
    for (i, value) in values.iter().enumerate() {
        let path = format!("/kv/kinds/{i}");
        let created = node.put(&path, &value.to_string());
        assert_eq!(created.status, 201, "{}", created.body);
        let uuid = created.json()["uuid"].as_str().unwrap().to_owned();
        assert!(created.json()["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        let got = node.get(&path);
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["data"], *value);
        assert_eq!(got.json()["uuid"], uuid.as_str());
        assert_eq!(got.header("etag"), Some(format!("\"{uuid}\"")));
        assert_eq!(
            got.header("content-type").as_deref(),
            Some("application/json")
        );
        let overwritten = node.put(&path, "{\"v\":2}");
        assert_eq!(overwritten.status, 200);
        assert_ne!(overwritten.json()["uuid"], uuid.as_str());
    }
}

#[test]
fn default_limit_takes_a_value_just_under_one_mib() {
    let node = Node::start(PLAIN);
    let value = format!("\"{}\"", "v".repeat(1_048_576 - 2));
    assert_eq!(node.put("/kv/mib", &value).status, 201);
    assert_eq!(
        node.get("/kv/mib").json()["data"].as_str().unwrap().len(),
        1_048_574
    );
    let over = format!("\"{}\"", "v".repeat(1_048_576 - 1));
    assert_eq!(node.put("/kv/mib2", &over).status, 413);
}

/// The wall clock in milliseconds, as the node reads it.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since_epoch.as_millis()).unwrap()
}

/// A PUT of `body` at `path` that must succeed; its version's timestamp.
fn put_stamped(node: &Node, path: &str, body: &str) -> u64 {
    let answer = node.put(path, body);
    assert!(
        matches!(answer.status, 200 | 201),
        "{path}: {}",
        answer.body
    );
    answer.json()["timestamp"].as_u64().unwrap()
}

#[test]
fn ttl_expires_on_the_node_clock() {
    let node = Node::start(PLAIN);
    // A new key's TTL counts from its timestamp, on the node's wall clock.
    let expires_at = put_stamped(&node, "/kv/t/short?ttl=1s", "\"soon gone\"") + 1000;
    node.put("/kv/t/long?ttl=1h", "1");
    // Read until it is gone: present while the read surely came before the expiry,
    // absent once it surely came after, whatever the machine's load.
    let mut reads_before = 0;
    loop {
        let sent = now_ms();
        let answer = node.get("/kv/t/short");
        let received = now_ms();
        if received < expires_at {
            assert_eq!(
                answer.status,
                200,
                "read {} ms before the expiry",
                expires_at - received
            );
            assert_eq!(answer.json()["data"], "soon gone");
            reads_before += 1;
        }
        if sent >= expires_at {
            assert_eq!(
                answer.status,
                404,
                "read {} ms after the expiry",
                sent - expires_at
            );
        }
        if answer.status == 404 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{reads_before} reads before the expiry");
    let listed = node.get("/kv?prefix=t/").json();
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["t/long"]);
}

#[test]
fn health_members_metrics_and_openapi() {
    let node = Node::start(PLAIN);
    let health = node.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node_id"], "test-node");
    assert!(health["version"].is_string());
    assert_eq!(health["members"], 1);
    let members = node.get("/members").json();
    let me = &members["members"][0];
    assert_eq!(me["node_id"], "test-node");
    assert_eq!(me["state"], "alive");
    for field in ["gossip_addr", "http_addr", "incarnation", "joined_at"] {
        assert!(!me[field].is_null(), "{field}");
    }
    node.put("/kv/m", "1");
    node.get("/kv/m");
    assert_eq!(node.get("/sync").status, 200);
    let metrics = node.get("/metrics");
    assert_eq!(metrics.status, 200);
    // The Prometheus text format 0.0.4, which the body is in (no OpenMetrics `# EOF`).
    assert_eq!(
        metrics.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!metrics.body.contains("# EOF"), "{}", metrics.body);
    // Whole lines: `... 1` must not be matched by `... 10`.
    let lines: Vec<&str> = metrics.body.lines().collect();
    for line in [
        "# TYPE kvs_http_requests_total counter",
        "kvs_http_requests_total{route=\"kv\",method=\"PUT\",status=\"201\"} 1",
        "kvs_http_requests_total{route=\"kv\",method=\"GET\",status=\"200\"} 1",
        // `/sync` under its own route (it was `other`, found by an operations audit).
        "kvs_http_requests_total{route=\"sync\",method=\"GET\",status=\"200\"} 1",
        "# TYPE kvs_store_keys gauge",
        "kvs_store_keys 1",
        "# TYPE kvs_http_request_duration_seconds histogram",
        "kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"+Inf\"} 2",
        "kvs_http_request_duration_seconds_count{route=\"kv\"} 2",
        "# TYPE kvs_store_commits_total counter",
        "# TYPE kvs_store_committed_writes_total counter",
        "kvs_store_committed_writes_total 1",
        // Clustering is off here, yet the cluster's families are there: the node alone,
        // alive, nothing probed or synced (the contract lists them for every node).
        "kvs_members{state=\"alive\"} 1",
        "kvs_members{state=\"dead\"} 0",
        "kvs_member_flap_score{node_id=\"test-node\"} 0.0",
        "kvs_membership_probes_total 0",
        "kvs_sync_rounds_total 0",
        "kvs_sync_sent_bytes_total 0",
        "kvs_sync_syncing 0",
    ] {
        assert!(
            lines.contains(&line),
            "missing {line:?} in\n{}",
            metrics.body
        );
    }
    for name in ["kvs_store_bytes ", "kvs_store_commits_total "] {
        assert!(
            lines.iter().any(|line| line.starts_with(name)),
            "missing {name:?} in\n{}",
            metrics.body
        );
    }
    // The latency buckets' bounds, in order, as dashboards query them.
    let bounds: Vec<&str> = lines
        .iter()
        .filter_map(|line| {
            let rest =
                line.strip_prefix("kvs_http_request_duration_seconds_bucket{route=\"kv\",le=\"")?;
            rest.split_once('"').map(|(bound, _)| bound)
        })
        .collect();
    assert_eq!(
        bounds,
        [
            "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
            "0.1", "0.5", "1", "+Inf"
        ]
    );
    let openapi = node.get("/openapi.json").json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/kv/{key}",
        "/kv",
        "/history/{key}",
        "/health",
        "/members",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
}
