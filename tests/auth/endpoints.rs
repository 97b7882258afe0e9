//! The admin endpoints (`/auth/...`), their validation, secrets in logs and metrics, and
//! the root bootstrap.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn admin_endpoints_need_the_admin_scope() {
    let node = auth_node("admin-secret", "");
    let w = world(&node);
    for (method, path, body) in [
        ("GET", "/auth/users", None),
        ("POST", "/auth/users", Some(r#"{"name":"eve"}"#)),
        ("GET", "/auth/users/root", None),
        ("DELETE", "/auth/users/root", None),
        ("GET", "/auth/groups", None),
        ("POST", "/auth/groups", Some(r#"{"name":"evil"}"#)),
        (
            "POST",
            "/auth/tokens",
            Some(r#"{"user_id":"root","scopes":["admin"],"ttl":"1h"}"#),
        ),
        ("DELETE", "/auth/tokens/x", None),
    ] {
        assert_403(&call(&node, method, path, body, Some(&w.alice)), path);
    }
    // The OpenAPI document covers the auth endpoints and the bearer scheme.
    let openapi = call(&node, "GET", "/openapi.json", None, Some(&w.alice)).json();
    for path in [
        "/auth/users",
        "/auth/users/{id}",
        "/auth/groups",
        "/auth/groups/{id}",
        "/auth/tokens",
        "/auth/tokens/{jti}",
        "/meta/{key}",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert_eq!(
        openapi["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    // /admin/... and /audit... are admin endpoints too: refused without the admin scope,
    // answered with it (the audit trail is on by default).
    for path in ["/admin/backups", "/audit", "/audit/verify"] {
        assert_403(&call(&node, "GET", path, None, Some(&w.alice)), path);
        assert_401(&call(&node, "GET", path, None, None), path);
        expect(&call(&node, "GET", path, None, Some(&w.root)), 200, path);
    }
    // An admin token issued to a plain user is an admin.
    let admin = token_for(&node, &w.root, &w.alice_id, &["admin"]);
    expect(
        &call(&node, "GET", "/auth/users", None, Some(&admin)),
        200,
        "admin scope",
    );
}

#[test]
fn users_groups_and_tokens_endpoints() {
    let node = auth_node("crud-secret", "");
    let w = world(&node);
    let root = w.root.as_str();
    let req =
        |method: &str, path: &str, body: Option<&str>| call(&node, method, path, body, Some(root));
    let users = expect(&req("GET", "/auth/users", None), 200, "list users");
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    for name in ["root", "alice", "bob", "carol"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let group = expect(
        &req("GET", &format!("/auth/groups/{}", w.team), None),
        200,
        "group",
    );
    assert_eq!(group["name"], "team");
    let mut members: Vec<String> =
        serde_json::from_value(group["members"].clone()).expect("members");
    members.sort();
    let mut want = vec![w.alice_id.clone(), w.bob_id.clone()];
    want.sort();
    assert_eq!(members, want);
    // A group created with members lands in their records.
    let body = json!({"name": "ops", "members": [w.bob_id]}).to_string();
    let ops = expect(&req("POST", "/auth/groups", Some(&body)), 201, "ops");
    let ops_id = ops["id"].as_str().expect("id").to_owned();
    assert_eq!(ops["members"], json!([w.bob_id]));
    let bob = expect(
        &req("GET", &format!("/auth/users/{}", w.bob_id), None),
        200,
        "bob",
    );
    assert_eq!(bob["groups"], json!([w.team, ops_id]));
    let body = json!({"name": "operators", "members": [w.alice_id]}).to_string();
    let ops = expect(
        &req("PUT", &format!("/auth/groups/{ops_id}"), Some(&body)),
        200,
        "update group",
    );
    assert_eq!(
        (ops["name"].clone(), ops["members"].clone()),
        (json!("operators"), json!([w.alice_id]))
    );
    expect(
        &req("DELETE", &format!("/auth/groups/{ops_id}"), None),
        204,
        "delete group",
    );
    let alice = expect(
        &req("GET", &format!("/auth/users/{}", w.alice_id), None),
        200,
        "alice",
    );
    assert_eq!(alice["groups"], json!([w.team]));
    let body = json!({"name": "alicia"}).to_string();
    let renamed = expect(
        &req("PUT", &format!("/auth/users/{}", w.alice_id), Some(&body)),
        200,
        "rename",
    );
    assert_eq!(renamed["name"], "alicia");
    // Validation errors.
    let bad = |method: &str, path: &str, body: &str, status: u16, code: &str| {
        let answer = req(method, path, Some(body));
        assert_eq!(
            (answer.status, answer.error_code()),
            (status, code.to_owned()),
            "{method} {path} {body}"
        );
    };
    bad(
        "POST",
        "/auth/users",
        r#"{"name":"bob"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/users",
        r#"{"name":"has space"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/users",
        r#"{"name":"x","groups":["nope"]}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/users",
        r#"{"groups":[]}"#,
        400,
        "bad_request",
    );
    bad("POST", "/auth/users", "{", 400, "invalid_json");
    bad(
        "POST",
        "/auth/groups",
        r#"{"name":"team"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/groups",
        r#"{"name":"g","members":["nobody"]}"#,
        400,
        "bad_request",
    );
    bad(
        "PUT",
        "/auth/users/nobody",
        r#"{"name":"z"}"#,
        404,
        "not_found",
    );
    bad(
        "PUT",
        "/auth/groups/nogroup",
        r#"{"name":"z"}"#,
        404,
        "not_found",
    );
    bad(
        "PUT",
        "/auth/users/root",
        r#"{"name":"admin"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"nobody","scopes":["read"],"ttl":"1h"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"root","scopes":["sudo"],"ttl":"1h"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"root","scopes":[],"ttl":"1h"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"root","scopes":["read"],"ttl":"1w"}"#,
        400,
        "bad_request",
    );
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"root","scopes":["read"],"ttl":"0s"}"#,
        400,
        "bad_request",
    );
    // No ttl: a token for 24 hours.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let no_ttl = req(
        "POST",
        "/auth/tokens",
        Some(r#"{"user_id":"root","scopes":["read"]}"#),
    );
    assert_eq!(no_ttl.status, 201);
    let expires_at = no_ttl.json()["expires_at"].as_u64().expect("expires_at");
    let day = 24 * 3_600_000;
    assert!(
        expires_at >= before + day && expires_at <= before + day + 60_000,
        "{expires_at} is not a day after {before}"
    );
    for (method, path) in [
        ("DELETE", "/auth/users/nobody"),
        ("GET", "/auth/users/nobody"),
        ("GET", "/auth/groups/x"),
        ("DELETE", "/auth/groups/x"),
        ("GET", "/auth/nothing"),
    ] {
        assert_eq!(req(method, path, None).status, 404, "{method} {path}");
    }
    assert_eq!(req("DELETE", "/auth/users/root", None).status, 400);
    assert_eq!(req("PATCH", "/auth/users", None).status, 405);
    // A HEAD answers as the GET does, without the body.
    expect(&req("PUT", "/kv/headed", Some("1")), 201, "a key");
    for path in [
        "/auth/users".to_owned(),
        format!("/auth/groups/{}", w.team),
        "/admin/backups".to_owned(),
        "/meta/headed".to_owned(),
    ] {
        let head = req("HEAD", &path, None);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}: {}", head.body);
    }
    assert_eq!(req("HEAD", "/auth/users/nobody", None).status, 404);
    // A token given as a number of seconds.
    let issued = issue(&node, root, &w.alice_id, &["read", "read"], "90");
    assert!(issued["jti"].as_str().is_some() && issued["expires_at"].as_u64().is_some());
    // The auth records are out of reach of /kv listings.
    for path in [
        "/kv?prefix=_auth/",
        "/kv?prefix=_",
        "/kv?prefix=",
        "/kv?since=0",
        "/kv?since=0&prefix=_auth",
    ] {
        let page = expect(&req("GET", path, None), 200, path);
        assert!(!page.to_string().contains("_auth"), "{path}: {page}");
    }
    // Secrets never show in /metrics, in error bodies or in the log.
    let metrics = call(&node, "GET", "/metrics", None, Some(root));
    assert_eq!(metrics.status, 200);
    let metrics = metrics.body;
    let logs = node.drain_logs().join("\n");
    for secret in [
        root,
        w.alice.as_str(),
        issued["token"].as_str().expect("token"),
        "crud-secret",
    ] {
        assert!(!metrics.contains(secret), "secret in /metrics");
        assert!(!logs.contains(secret), "secret in the log");
    }
}

/// Runs the node's config in a process of its own until it has started, then kills it;
/// returns everything it logged.
fn run_until_started(node: &Node) -> String {
    let log = node.dir.path().join("manual.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = std::process::Command::new(common::kvs_bin())
        .arg("run")
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn kvs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut text = String::new();
    while std::time::Instant::now() < deadline && !text.contains("node started") {
        std::thread::sleep(std::time::Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("node started"),
        "the node did not start: {text}"
    );
    text
}

#[test]
fn root_bootstrap_is_private_stable_and_cluster_wide() {
    let mut node = auth_node("boot-secret", "");
    let path = node.data_dir().join("root.token");
    let text = std::fs::read_to_string(&path).expect("root.token");
    assert!(text.ends_with('\n') && text.trim_end().split('.').count() == 3);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let root = root_token(&node);
    expect(
        &call(&node, "PUT", "/kv/r", Some("1"), Some(&root)),
        201,
        "root writes",
    );
    // A restart keeps the token and the single root user; a missing file is rewritten
    // (and logged with its fingerprint, never the token).
    node.terminate();
    std::fs::remove_file(&path).expect("remove root.token");
    let logs = run_until_started(&node);
    assert!(logs.contains("root token written"), "{logs}");
    assert!(logs.contains("fingerprint="), "{logs}");
    assert!(!logs.contains(&root), "the token is logged");
    assert!(
        !logs.contains("root user created"),
        "a second root user: {logs}"
    );
    assert_eq!(root_token(&node), root);
    node.launch();
    assert_eq!(root_token(&node), root);
    let users = expect(
        &call(&node, "GET", "/auth/users", None, Some(&root)),
        200,
        "users",
    );
    let roots = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter(|u| u["name"] == "root")
        .count();
    assert_eq!(roots, 1);
    // Another node sharing jwt_secret writes the same token, and each works on the other.
    let twin = auth_node("boot-secret", "");
    assert_eq!(root_token(&twin), root);
    expect(
        &call(&twin, "GET", "/auth/users/root", None, Some(&root)),
        200,
        "twin",
    );
    // Health never needs auth.
    let health = call(&node, "GET", "/health", None, Some("garbage"));
    assert_eq!(health.status, 200);
}

#[test]
fn auth_disabled_keeps_the_api_open() {
    let node = Node::start(common::PLAIN);
    assert!(!node.data_dir().join("root.token").exists());
    expect(&call(&node, "PUT", "/kv/x", Some("1"), None), 201, "put");
    let meta = expect(&call(&node, "GET", "/meta/x", None, None), 200, "meta");
    assert_eq!(
        meta,
        json!({"owner": null, "group": null, "permissions": "f31", "expires_at": null})
    );
    let body = r#"{"permissions":"000"}"#;
    expect(
        &call(&node, "PUT", "/meta/x", Some(body), None),
        200,
        "chmod",
    );
    expect(
        &call(&node, "GET", "/kv/x", None, None),
        200,
        "not enforced",
    );
    expect(
        &call(&node, "DELETE", "/kv/x", None, None),
        204,
        "not enforced",
    );
    let users = call(&node, "GET", "/auth/users", None, None);
    assert_eq!(
        (users.status, users.error_code().as_str()),
        (404, "not_found")
    );
}
