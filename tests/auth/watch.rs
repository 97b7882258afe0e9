//! `/watch` with auth: each change goes only to callers who may read the key under that
//! version's metadata, as the caller authenticates at that change (a revoked token ends
//! the stream; a user who left a group sees no more of the group's keys); a replay
//! sends a key's past only to a caller who may read the key now.

use std::time::Duration;

use super::*;
use crate::common::sse::{ends, next, quiet, resumed_as, watch};

#[test]
fn a_watcher_sees_only_the_keys_it_may_read() {
    let node = auth_node("watch-secret", "");
    let w = world(&node);
    let bearer = format!("Bearer {}", w.bob);
    let events = watch(&node, "/watch?prefix=proj/", &[("Authorization", &bearer)]);
    std::thread::sleep(Duration::from_millis(300));
    let path = "/kv/proj/before";
    expect(
        &call(&node, "PUT", path, Some("0"), Some(&w.alice)),
        201,
        path,
    );
    let path = "/kv/proj/secret";
    expect(
        &call(&node, "PUT", path, Some("1"), Some(&w.alice)),
        201,
        path,
    );
    let meta = json!({"permissions": "f00"}).to_string();
    let path = "/meta/proj/secret";
    expect(
        &call(&node, "PUT", path, Some(&meta), Some(&w.alice)),
        200,
        path,
    );
    let path = "/kv/proj/secret";
    expect(
        &call(&node, "PUT", path, Some("2"), Some(&w.alice)),
        200,
        path,
    );
    let path = "/kv/proj/open";
    expect(
        &call(&node, "PUT", path, Some("3"), Some(&w.alice)),
        201,
        path,
    );
    // Bob reads proj/secret's first version (group read) but not what follows f00.
    let before = next(&events);
    assert_eq!(before.data["key"], "proj/before");
    let first = next(&events);
    assert_eq!(
        (&first.data["key"], &first.data["data"]),
        (&json!("proj/secret"), &json!(1))
    );
    let open = next(&events);
    assert_eq!(open.data["key"], "proj/open", "{open:?}");
    assert!(quiet(&events));
    // A replay sends bob none of proj/secret's past, now that he may not read the key.
    let replay = watch(
        &node,
        "/watch?prefix=proj/&since=0",
        &[("Authorization", &bearer)],
    );
    assert_eq!(next(&replay).data["key"], "proj/before");
    assert_eq!(next(&replay).data["key"], "proj/open");
    assert!(quiet(&replay), "nothing of a key he may no longer read");
    // Nor does an exact resume from the event before it (found by an audit: it sent
    // proj/secret's first version).
    let from_before = [
        ("Authorization", bearer.as_str()),
        ("Last-Event-ID", before.id.as_deref().expect("an id")),
    ];
    assert_eq!(
        resumed_as(&node, "/watch?prefix=proj/", &from_before).as_deref(),
        Some("exact")
    );
    let resumed = watch(&node, "/watch?prefix=proj/", &from_before);
    assert_eq!(next(&resumed).data["key"], "proj/open");
    assert!(quiet(&resumed), "nothing of a key he may no longer read");
    let unauthenticated = call(&node, "GET", "/watch", None, None);
    assert_eq!(unauthenticated.status, 401);
}

/// Found by a black-box audit: a stream opened before its token was revoked went on
/// sending every change (and one of a user removed from a group, the group's keys).
#[test]
fn a_watch_stream_ends_once_its_token_is_revoked() {
    let node = auth_node("watch-revoke-secret", "");
    let w = world(&node);
    let issued = issue(&node, &w.root, &w.bob_id, &["read"], "1h");
    let bearer = format!("Bearer {}", issued["token"].as_str().expect("token"));
    let events = watch(&node, "/watch?prefix=w/", &[("Authorization", &bearer)]);
    std::thread::sleep(Duration::from_millis(300));
    let put = |path: &str, value: &str| {
        expect(
            &call(&node, "PUT", path, Some(value), Some(&w.alice)),
            201,
            path,
        );
    };
    put("/kv/w/before", "1");
    assert_eq!(next(&events).data["key"], "w/before");
    let revoke = format!("/auth/tokens/{}", issued["jti"].as_str().expect("jti"));
    expect(
        &call(&node, "DELETE", &revoke, None, Some(&w.root)),
        204,
        "revoke",
    );
    put("/kv/w/after", "2");
    assert!(ends(&events), "the revoked token's stream goes on");
}

#[test]
fn a_watch_stream_follows_its_users_groups() {
    let node = auth_node("watch-groups-secret", "");
    let w = world(&node);
    let bearer = format!("Bearer {}", w.bob);
    let events = watch(&node, "/watch?prefix=w/", &[("Authorization", &bearer)]);
    std::thread::sleep(Duration::from_millis(300));
    let put_team_only = |path: &str, value: &str, status: u16| {
        expect(
            &call(&node, "PUT", path, Some(value), Some(&w.alice)),
            status,
            path,
        );
        let meta = json!({"permissions": "f30"}).to_string();
        let meta_path = path.replacen("/kv/", "/meta/", 1);
        expect(
            &call(&node, "PUT", &meta_path, Some(&meta), Some(&w.alice)),
            200,
            &meta_path,
        );
    };
    put_team_only("/kv/w/team", "1", 201);
    let seen: Vec<Value> = (0..2).map(|_| next(&events).data["data"].clone()).collect();
    assert_eq!(
        seen,
        [json!(1), json!(1)],
        "the put and its metadata change"
    );
    let bob = format!("/auth/users/{}", w.bob_id);
    let no_groups = json!({"groups": []}).to_string();
    expect(
        &call(&node, "PUT", &bob, Some(&no_groups), Some(&w.root)),
        200,
        "bob",
    );
    put_team_only("/kv/w/team", "2", 200);
    let path = "/kv/w/open";
    expect(
        &call(&node, "PUT", path, Some("3"), Some(&w.alice)),
        201,
        path,
    );
    let open = next(&events);
    assert_eq!(
        open.data["key"], "w/open",
        "bob still sees the team's key: {open:?}"
    );
    assert!(quiet(&events));
}
