//! Per-client rate limits against a real node: the limit, `429 rate_limited` with
//! `Retry-After`, exempt routes, a new window, separate budgets per token user, and
//! refused tokens counted against the address. Windows are an hour long wherever a test
//! needs requests to share one; the window's end is unit-tested on an injected clock.

mod common;

use std::time::{Duration, Instant};

use common::Node;

/// Polls `check` until it holds, for at most `limit`; the time it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn requests_beyond_the_limit_get_429_with_retry_after() {
    // A window far longer than the test: no request can fall into a new one.
    let node = Node::start(&format!(
        "{}rate_limiting_enabled: true\nrate_limit_requests: 5\nrate_limit_window: 1h\n",
        common::PLAIN
    ));
    let first = Instant::now();
    for i in 0..5 {
        assert_eq!(
            node.put(&format!("/kv/r/{i}"), "1").status,
            201,
            "request {i}"
        );
    }
    let limited = node.get("/kv/r/0");
    let elapsed = first.elapsed().as_secs_f64();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    // The window started after `first`: what is left of it is at least 3600 s less the
    // time since then (both processes read the same monotonic clock).
    assert!(
        retry <= 3600 && retry as f64 >= 3600.0 - elapsed,
        "Retry-After {retry} after {elapsed:.3} s"
    );
    let refused_put = node.put("/kv/r/refused", "1");
    assert_eq!(refused_put.status, 429);
    assert_eq!(refused_put.error_code(), "rate_limited");
    for _ in 0..20 {
        assert_eq!(node.get("/health").status, 200, "/health is never limited");
        assert_eq!(
            node.get("/metrics").status,
            200,
            "/metrics is never limited"
        );
    }
    // Only /health and /metrics are exempt.
    assert_eq!(node.get("/openapi.json").status, 429);
    assert_eq!(node.get("/ui").status, 429);
    assert_eq!(
        node.metric("kvs_store_keys"),
        Some(5.0),
        "the refused write did nothing"
    );
    assert_eq!(
        node.metric("kvs_http_requests_total{route=\"kv\",method=\"PUT\",status=\"429\"}"),
        Some(1.0)
    );
}

#[test]
fn a_new_window_admits_again() {
    let node = Node::start(&format!(
        "{}rate_limiting_enabled: true\nrate_limit_requests: 1\nrate_limit_window: 1s\n",
        common::PLAIN
    ));
    // Two requests inside one 1 s window; a loaded machine may need a few tries.
    let limited_at = within(Duration::from_secs(30), || {
        node.get("/kv/r/x").status == 429
    })
    .expect("no two requests fell into one 1 s window within 30 s");
    let started = Instant::now();
    let admitted = within(Duration::from_secs(30), || {
        node.get("/kv/r/x").status == 404
    });
    assert!(admitted.is_some(), "still limited 30 s after a 1 s window");
    eprintln!(
        "limited after {limited_at:?}, admitted again {:?} later",
        started.elapsed()
    );
}

#[test]
fn refused_tokens_count_against_the_address() {
    let node = Node::start(
        "clustering_enabled: false\nrate_limiting_enabled: true\nrate_limit_requests: 3\nrate_limit_window: 1h\n",
    );
    let forged = [("authorization", "Bearer not.a.token")];
    for i in 0..3 {
        let answer = node.request("GET", "/kv", None, &forged);
        assert_eq!(answer.status, 401, "request {i}: {}", answer.body);
    }
    let answer = node.request("GET", "/kv", None, &forged);
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.error_code(), "rate_limited");
    assert!(answer.header("retry-after").is_some());
    let anonymous = node.get("/kv");
    assert_eq!(
        anonymous.status, 429,
        "the address's budget is spent: {}",
        anonymous.body
    );
    // /metrics is never rate limited: a bad token there is only refused.
    for _ in 0..3 {
        let answer = node.request("GET", "/metrics", None, &forged);
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let root = std::fs::read_to_string(node.data_dir().join("root.token")).unwrap();
    let bearer = format!("Bearer {}", root.trim());
    let answer = node.request("GET", "/kv", None, &[("authorization", bearer.as_str())]);
    assert_eq!(
        answer.status, 200,
        "root has its own budget: {}",
        answer.body
    );
}

#[test]
fn each_user_has_its_own_budget() {
    let node = Node::start(
        "clustering_enabled: false\nrate_limiting_enabled: true\nrate_limit_requests: 3\nrate_limit_window: 1h\n",
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
