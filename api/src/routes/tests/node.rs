//! What a black-box test cannot set up (records as a replica merges them, a store call
//! that blocks until the test lets it go), and the console's headers.

use std::sync::Arc;

use serde_json::json;

use super::{api_and_root, api_with_root, call, expect, read_token, replica_put};
use crate::Backend;
use crate::auth::{Group, User, group_key, user_key};

/// Issue 11, item 12: a group id left in a user record (a concurrent edit merged after
/// the group's delete) no longer grants the group's digit.
#[tokio::test]
async fn a_deleted_group_grants_nothing() {
    let (api, root) = api_and_root().await;
    let post = |path, body| ("POST", path, Some(body));
    let team = expect(
        &api,
        post("/auth/groups", json!({"name": "team"})),
        &root,
        201,
    )
    .await;
    let team = team["id"].as_str().expect("group id").to_owned();
    let body = json!({"name": "alice", "groups": [team]});
    let alice = expect(&api, post("/auth/users", body), &root, 201).await;
    let alice_record: User = serde_json::from_value(alice.clone()).expect("user record");
    let token = read_token(&api, &root, &alice["id"]).await;
    expect(
        &api,
        ("PUT", "/kv/doc", Some(json!("team only"))),
        &root,
        201,
    )
    .await;
    let meta = json!({"group": team, "permissions": "f10"});
    expect(&api, ("PUT", "/meta/doc", Some(meta)), &root, 200).await;
    expect(&api, ("GET", "/kv/doc", None), &token, 200).await;

    let delete = format!("/auth/groups/{team}");
    expect(&api, ("DELETE", delete.as_str(), None), &root, 204).await;
    // A replica's concurrent rewrite of alice, still naming the group, wins afterwards.
    let data = serde_json::to_string(&alice_record).expect("json");
    let stale = replica_put(user_key(&alice_record.id), data);
    let written = api.backend.write(stale).await.expect("store");
    assert!(written.is_ok(), "the stale user record is stored");

    let (status, body) = call(&api, "GET", "/kv/doc", None, &token).await;
    assert_eq!(status, 403, "the deleted group still grants read: {body}");
}

/// Found by a black-box audit: a user deleted on one node and renamed on another that
/// had not seen the delete yet came back once the two met (the later rename wins by the
/// conflict rule), and its tokens worked again.
#[tokio::test]
async fn a_deleted_user_stays_deleted_when_a_concurrent_write_of_it_wins() {
    let (api, root) = api_and_root().await;
    let post = |path, body| ("POST", path, Some(body));
    let alice = expect(
        &api,
        post("/auth/users", json!({"name": "alice"})),
        &root,
        201,
    )
    .await;
    let alice_record: User = serde_json::from_value(alice.clone()).expect("user record");
    let token = read_token(&api, &root, &alice["id"]).await;
    expect(&api, ("GET", "/kv/missing", None), &token, 404).await;
    let path = format!("/auth/users/{}", alice_record.id);
    expect(&api, ("DELETE", path.as_str(), None), &root, 204).await;
    // A rename made on a node that had not seen the delete, merged afterwards, wins.
    let renamed = User {
        name: "alice-renamed".into(),
        ..alice_record.clone()
    };
    let data = serde_json::to_string(&renamed).expect("json");
    let stale = replica_put(user_key(&renamed.id), data);
    let written = api.backend.write(stale).await.expect("store");
    assert!(written.is_ok(), "the stale user record is stored");

    let (status, body) = call(&api, "GET", "/kv/missing", None, &token).await;
    assert_eq!(status, 401, "the deleted user's token works again: {body}");
    expect(&api, ("GET", path.as_str(), None), &root, 404).await;
    let rename = Some(json!({"name": "again"}));
    expect(&api, ("PUT", path.as_str(), rename), &root, 404).await;
    let users = expect(&api, ("GET", "/auth/users", None), &root, 200).await;
    assert!(
        !users.to_string().contains(&alice_record.id),
        "listed: {users}"
    );
    let group = json!({"name": "team", "members": [alice_record.id]});
    expect(&api, post("/auth/groups", group), &root, 400).await;
}

/// The same for a group: deleted on one node while another, that had not seen the
/// delete, renamed it and rewrote a member's record with it; both of those win, and the
/// group granted its member access again.
#[tokio::test]
async fn a_deleted_group_stays_deleted_when_concurrent_writes_of_it_win() {
    let (api, root) = api_and_root().await;
    let post = |path, body| ("POST", path, Some(body));
    let team = expect(
        &api,
        post("/auth/groups", json!({"name": "team"})),
        &root,
        201,
    )
    .await;
    let team_record: Group = serde_json::from_value(team.clone()).expect("group record");
    let body = json!({"name": "alice", "groups": [team_record.id]});
    let alice = expect(&api, post("/auth/users", body), &root, 201).await;
    let alice_record: User = serde_json::from_value(alice.clone()).expect("user record");
    let token = read_token(&api, &root, &alice["id"]).await;
    expect(&api, ("PUT", "/kv/doc", Some(json!(1))), &root, 201).await;
    let meta = json!({"group": team_record.id, "permissions": "f10"});
    expect(&api, ("PUT", "/meta/doc", Some(meta)), &root, 200).await;
    expect(&api, ("GET", "/kv/doc", None), &token, 200).await;
    let path = format!("/auth/groups/{}", team_record.id);
    expect(&api, ("DELETE", path.as_str(), None), &root, 204).await;
    // The rename and alice's record naming the group, merged afterwards, win.
    let renamed = Group {
        name: "team-renamed".into(),
        ..team_record.clone()
    };
    for (key, data) in [
        (group_key(&renamed.id), serde_json::to_string(&renamed)),
        (
            user_key(&alice_record.id),
            serde_json::to_string(&alice_record),
        ),
    ] {
        let stale = replica_put(key, data.expect("json"));
        assert!(api.backend.write(stale).await.expect("store").is_ok());
    }
    let (status, body) = call(&api, "GET", "/kv/doc", None, &token).await;
    assert_eq!(status, 403, "the deleted group grants read again: {body}");
    expect(&api, ("GET", path.as_str(), None), &root, 404).await;
    let groups = expect(&api, ("GET", "/auth/groups", None), &root, 200).await;
    assert_eq!(groups["groups"], json!([]), "{groups}");
}

/// Found by a black-box audit: a root token file left readable by others (0644) stayed
/// so at every start. The node makes it 0600 again.
#[tokio::test]
async fn a_root_token_readable_by_others_is_made_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let (api, root) = api_with_root();
    let dir = tempfile::tempdir().expect("temp dir");
    api.bootstrap_auth(dir.path()).await.expect("bootstrap");
    let file = dir.path().join("root.token");
    assert_eq!(std::fs::read_to_string(&file).expect("token").trim(), root);
    let mode = || std::fs::metadata(&file).expect("mode").permissions().mode() & 0o777;
    assert_eq!(mode(), 0o600);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    api.bootstrap_auth(dir.path())
        .await
        .expect("bootstrap again");
    assert_eq!(mode(), 0o600);
}

/// Issue 11, item 13: every route whose store call may block (waiting for the durable
/// store's applier, walking the audit chain, reading the backup directory) waits off the
/// runtime. The test's runtime has one thread; while a request is held inside the store,
/// another request is answered and another task runs, and the held request then finishes.
#[tokio::test(flavor = "current_thread")]
async fn a_request_held_in_the_store_does_not_stall_the_runtime() {
    let (api, root) = api_and_root().await;
    expect(&api, ("PUT", "/kv/doc", Some(json!(1))), &root, 201).await;
    let held_routes = [
        "/kv",
        "/kv?prefix=d",
        "/kv?since=0",
        "/history/doc",
        "/metrics",
        "/sync",
        "/audit",
        "/audit/verify",
        "/admin/backups",
        "/auth/users",
        "/auth/groups",
    ];
    for path in held_routes {
        let (entered, release) = api.backend.gate.arm();
        let held = tokio::spawn({
            let (api, root) = (Arc::clone(&api), root.clone());
            async move { call(&api, "GET", path, None, &root).await }
        });
        entered
            .await
            .unwrap_or_else(|_| panic!("GET {path}: the store call blocked the runtime thread"));

        // The runtime's one thread is free: another request and another task run.
        expect(&api, ("GET", "/health", None), &root, 200).await;
        let ping = tokio::spawn(async { "pong" }).await.expect("ping task");
        assert_eq!(ping, "pong");
        assert!(!held.is_finished(), "GET {path} finished while held");

        release.send(()).expect("the held call waits");
        let (status, body) = held.await.expect("held request");
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

#[tokio::test]
async fn the_console_is_served_without_a_token_and_loads_nothing_from_elsewhere() {
    let (api, _root) = api_with_root();
    let response = warp::test::request()
        .method("GET")
        .path("/ui")
        .reply(&api.filter())
        .await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "text/html; charset=utf-8");
    let page = std::str::from_utf8(response.body()).unwrap();
    assert!(page.contains("<title>kvs console</title>"));
    for route in [
        "/members",
        "/sync",
        "/kv?",
        "/meta/",
        "/history/",
        "/health",
        "/watch?",
        "/metrics",
    ] {
        assert!(page.contains(route), "the console reads {route}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let posted = warp::test::request()
        .method("POST")
        .path("/ui")
        .reply(&api.filter())
        .await;
    assert_eq!(posted.status(), 405);
}
