//! The key-value contract of the HTTP API against a real node (LMDB, real HTTP).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, PLAIN};
use serde_json::{Value, json};

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
fn head_answers_headers_without_body() {
    let node = Node::start(PLAIN);
    let uuid = node.put("/kv/h", "[1,2,3]").json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let head = node.request("HEAD", "/kv/h", None, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(format!("\"{uuid}\"")));
    assert!(head.body.is_empty());
    assert_eq!(node.request("HEAD", "/kv/absent", None, &[]).status, 404);
}

#[test]
fn percent_encoded_utf8_keys() {
    let node = Node::start(PLAIN);
    assert_eq!(node.put("/kv/caf%C3%A9/%E2%9C%93%20ok", "1").status, 201);
    assert_eq!(node.get("/kv/caf%C3%A9/%E2%9C%93%20ok").json()["data"], 1);
    assert_eq!(node.put("/kv/a%2Fb", "2").status, 201);
    assert_eq!(
        node.get("/kv/a/b").json()["data"],
        2,
        "%2F is a separator in a key"
    );
    assert_eq!(
        node.get("/kv/a/b/").json()["data"],
        2,
        "a trailing / is not part of a key"
    );
    let listed = node.get("/kv?prefix=caf%C3%A9/");
    assert_eq!(listed.json()["items"][0]["key"], "café/✓ ok");
}

#[test]
fn invalid_keys_are_rejected_and_change_nothing() {
    let node = Node::start(PLAIN);
    let long = "k".repeat(513);
    let just_fits = "k".repeat(512);
    for path in [
        "/kv/_system".to_owned(),
        "/kv/_a/b".to_owned(),
        "/kv/a//b".to_owned(),
        "/kv/a/%2E/b".to_owned(),
        "/kv/a/%2E%2E/b".to_owned(),
        "/kv/a%00b".to_owned(),
        "/kv/tab%09key".to_owned(),
        "/kv/%FF%FE".to_owned(),
        format!("/kv/{long}"),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let answer = node.request(method, &path, Some("1"), &[]);
            assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
            assert_eq!(answer.error_code(), "invalid_key", "{method} {path}");
        }
    }
    assert_eq!(node.put(&format!("/kv/{just_fits}"), "1").status, 201);
    let listed = node.get("/kv").json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[test]
fn bodies_must_be_json() {
    let node = Node::start(PLAIN);
    for body in [
        "",
        "   ",
        "{bad",
        "[1,",
        "undefined",
        "{\"a\":1} trailing",
        "'single'",
    ] {
        let answer = node.put("/kv/j", body);
        assert_eq!(answer.status, 400, "{body:?}");
        assert_eq!(answer.error_code(), "invalid_json", "{body:?}");
    }
    assert_eq!(node.get("/kv/j").status, 404);
}

#[test]
fn body_limit_allows_just_under_and_refuses_over() {
    let node = Node::start(&format!("{PLAIN}max_value_bytes: 1000\n"));
    let fits = format!("\"{}\"", "x".repeat(998));
    assert_eq!(fits.len(), 1000);
    let answer = node.put("/kv/big", &fits);
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        node.get("/kv/big").json()["data"].as_str().unwrap().len(),
        998
    );
    let over = format!("\"{}\"", "x".repeat(999));
    let answer = node.put("/kv/big", &over);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "payload_too_large");
    assert_eq!(
        node.get("/kv/big").json()["data"].as_str().unwrap().len(),
        998
    );
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

#[test]
fn absent_keys_unknown_routes_and_wrong_methods() {
    let node = Node::start(PLAIN);
    let answer = node.get("/kv/nothing");
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    let answer = node.delete("/kv/nothing");
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    let answer = node.get("/nowhere");
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    for (method, path) in [
        ("POST", "/kv/x"),
        ("PATCH", "/kv/x"),
        ("POST", "/kv"),
        ("DELETE", "/health"),
        ("PUT", "/history/x"),
    ] {
        let answer = node.request(method, path, Some("1"), &[]);
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.error_code(), "method_not_allowed");
    }
}

#[test]
fn delete_then_absent_everywhere() {
    let node = Node::start(PLAIN);
    node.put("/kv/d/1", "1");
    node.put("/kv/d/2", "2");
    let answer = node.delete("/kv/d/1");
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    assert_eq!(node.get("/kv/d/1").status, 404);
    assert_eq!(node.delete("/kv/d/1").status, 404);
    let keys: Vec<Value> = node.get("/kv?prefix=d/").json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(keys, [json!("d/2")]);
    assert_eq!(
        node.put("/kv/d/1", "3").status,
        201,
        "a deleted key is created anew"
    );
}

fn list_all(node: &Node, query: &str) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/kv?{query}&cursor={c}"),
            None => format!("/kv?{query}"),
        };
        let page = node.get(&path);
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item["uuid"].is_string() && item["timestamp"].is_u64());
            keys.push(item["key"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null());
                return (keys, pages);
            }
        }
    }
}

#[test]
fn listing_by_prefix_pages_in_byte_order() {
    let node = Node::start(PLAIN);
    let mut expected: Vec<String> = (0..25).map(|i| format!("p/{i:03}")).collect();
    expected.push("p/Z".into());
    expected.push("p/ä".into());
    for key in expected.iter().rev() {
        let path = format!("/kv/{}", key.replace('ä', "%C3%A4"));
        assert_eq!(node.put(&path, "0").status, 201);
    }
    node.put("/kv/q/1", "0");
    node.put("/kv/p", "0");
    expected.sort();
    let (keys, pages) = list_all(&node, "prefix=p/&limit=10");
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);
    let everything = node.get("/kv").json();
    assert_eq!(everything["items"].as_array().unwrap().len(), 29);
    assert!(everything["next_cursor"].is_null());
    for bad in ["limit=0", "limit=-1", "limit=ten", "cursor=zz", "cursor=6"] {
        let answer = node.get(&format!("/kv?{bad}"));
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.error_code(), "bad_request");
    }
    let capped = node.get("/kv?limit=100000");
    assert_eq!(capped.status, 200);
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

/// Waits until the wall clock is past the millisecond `stamp`, so that the next write is
/// stamped later (the node stamps new keys with its wall clock, the one read here).
fn wait_past(stamp: u64) {
    while now_ms() <= stamp {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn listing_since_a_time_orders_by_timestamp() {
    let node = Node::start(PLAIN);
    wait_past(put_stamped(&node, "/kv/old", "0"));
    let since = put_stamped(&node, "/kv/s/b", "0");
    // Distinct milliseconds, so that the order by time is the order of the writes.
    wait_past(since);
    wait_past(put_stamped(&node, "/kv/s/a", "0"));
    wait_past(put_stamped(&node, "/kv/old2", "0"));
    put_stamped(&node, "/kv/old", "1");
    let (keys, _) = list_all(&node, &format!("since={since}&limit=2"));
    assert_eq!(keys, ["s/b", "s/a", "old2", "old"]);
    let page = node.get(&format!("/kv?since={since}")).json();
    let stamps: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(stamps.len(), 4, "{page}");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert_eq!(stamps[0], since);
    assert_eq!(node.get("/kv?since=yesterday").status, 400);
}

#[test]
fn ttl_expires_keys_everywhere() {
    let node = Node::start(PLAIN);
    // A new key's TTL counts from its timestamp, on the node's wall clock.
    let expires_at = put_stamped(&node, "/kv/t/short?ttl=3s", "\"soon gone\"") + 3000;
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
    assert_eq!(node.delete("/kv/t/short").status, 404);
    assert_eq!(
        node.put("/kv/t/short", "2").status,
        201,
        "an expired key is absent"
    );
    for bad in ["ttl=soon", "ttl=-1s", "ttl=0", "ttl=5y"] {
        let answer = node.put(&format!("/kv/t/x?{bad}"), "1");
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.error_code(), "bad_request");
    }
}

#[test]
fn history_is_newest_first_and_capped() {
    let node = Node::start(&format!("{PLAIN}max_revisions: 3\n"));
    for i in 0..5 {
        node.put("/kv/h", &i.to_string());
    }
    let history = node.get("/history/h");
    assert_eq!(history.status, 200);
    let revisions = history.json()["revisions"].as_array().unwrap().clone();
    let data: Vec<Value> = revisions.iter().map(|r| r["data"].clone()).collect();
    assert_eq!(data, [json!(4), json!(3), json!(2)]);
    let current = node.get("/kv/h").json();
    assert_eq!(revisions[0]["uuid"], current["uuid"]);
    assert_eq!(revisions[0]["timestamp"], current["timestamp"]);
    assert_eq!(node.get("/history/absent").status, 404);
    node.delete("/kv/h");
    assert_eq!(node.get("/history/h").status, 404);
    assert_eq!(node.get("/history/_bad").error_code(), "invalid_key");
}

#[test]
fn history_off_answers_404() {
    let node = Node::start(&format!("{PLAIN}revision_history_enabled: false\n"));
    node.put("/kv/h", "1");
    let answer = node.get("/history/h");
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
}

#[test]
fn compare_and_set() {
    let node = Node::start(PLAIN);
    let first = node.put("/kv/c", "1").json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let etag = format!("\"{first}\"");
    let answer = node.request("PUT", "/kv/c", Some("2"), &[("if-match", &etag)]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let second = answer.json()["uuid"].as_str().unwrap().to_owned();
    let stale = node.request("PUT", "/kv/c", Some("3"), &[("if-match", &etag)]);
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (412, "precondition_failed")
    );
    assert_eq!(node.get("/kv/c").json()["data"], 2);
    let exists = node.request("PUT", "/kv/c", Some("4"), &[("if-none-match", "*")]);
    assert_eq!(exists.status, 412);
    let fresh = node.request("PUT", "/kv/c2", Some("5"), &[("if-none-match", "*")]);
    assert_eq!(fresh.status, 201);
    let stale_delete = node.request("DELETE", "/kv/c", None, &[("if-match", &etag)]);
    assert_eq!(stale_delete.status, 412);
    let absent = node.request("PUT", "/kv/none", Some("1"), &[("if-match", &etag)]);
    assert_eq!(absent.status, 412);
    let good_delete = node.request(
        "DELETE",
        "/kv/c",
        None,
        &[("if-match", &format!("\"{second}\""))],
    );
    assert_eq!(good_delete.status, 204);
    assert_eq!(node.get("/kv/c").status, 404);
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
    let metrics = node.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    // Whole lines: `... 1` must not be matched by `... 10`.
    let lines: Vec<&str> = metrics.body.lines().collect();
    for line in [
        "kvs_http_requests_total{route=\"kv\",method=\"PUT\",status=\"201\"} 1",
        "kvs_http_requests_total{route=\"kv\",method=\"GET\",status=\"200\"} 1",
        "kvs_store_keys 1",
        "kvs_http_request_duration_seconds_count{route=\"kv\"} 2",
    ] {
        assert!(
            lines.contains(&line),
            "missing {line:?} in\n{}",
            metrics.body
        );
    }
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
