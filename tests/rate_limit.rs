//! Per-client rate limits against a real node: the limit, `429 rate_limited` with
//! `Retry-After`, exempt routes, a new window, and separate budgets per token user.

mod common;

use std::time::Duration;

use common::Node;

#[test]
fn requests_beyond_the_limit_get_429_with_retry_after() {
    let node = Node::start(&format!(
        "{}rate_limiting_enabled: true\nrate_limit_requests: 5\nrate_limit_window: 5s\n",
        common::PLAIN
    ));
    for i in 0..5 {
        assert_eq!(
            node.put(&format!("/kv/r/{i}"), "1").status,
            201,
            "request {i}"
        );
    }
    let limited = node.get("/kv/r/0");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    let refused_put = node.put("/kv/r/refused", "1");
    assert_eq!(refused_put.status, 429);
    for _ in 0..20 {
        assert_eq!(node.get("/health").status, 200, "/health is never limited");
        assert_eq!(
            node.get("/metrics").status,
            200,
            "/metrics is never limited"
        );
    }
    std::thread::sleep(Duration::from_millis(5100));
    assert_eq!(
        node.get("/kv/r/refused").status,
        404,
        "a new window; the refused write did nothing"
    );
}

#[test]
fn each_user_has_its_own_budget() {
    let node = Node::start(
        "clustering_enabled: false\nrate_limiting_enabled: true\nrate_limit_requests: 3\nrate_limit_window: 1m\n",
    );
    let root = std::fs::read_to_string(node.data_dir().join("root.token")).unwrap();
    let root = root.trim();
    let bearer = format!("Bearer {root}");
    let admin = [("authorization", bearer.as_str())];
    let user = node.request(
        "POST",
        "/auth/users",
        Some("{\"name\":\"alice\",\"groups\":[]}"),
        &admin,
    );
    assert_eq!(user.status, 201, "{}", user.body);
    let user_id = user.json()["id"].as_str().unwrap().to_owned();
    let body = format!("{{\"user_id\":\"{user_id}\",\"scopes\":[\"read\"],\"ttl\":\"1h\"}}");
    let token = node.request("POST", "/auth/tokens", Some(&body), &admin);
    assert_eq!(token.status, 201, "{}", token.body);
    let alice = format!("Bearer {}", token.json()["token"].as_str().unwrap());
    // root has used 2 of its 3 requests; alice has a full budget.
    for _ in 0..3 {
        let answer = node.request("GET", "/kv", None, &[("authorization", alice.as_str())]);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let answer = node.request("GET", "/kv", None, &[("authorization", alice.as_str())]);
    assert_eq!(answer.status, 429);
    assert_eq!(
        node.request("GET", "/kv", None, &admin).status,
        200,
        "root's third request"
    );
    assert_eq!(node.request("GET", "/kv", None, &admin).status, 429);
}
