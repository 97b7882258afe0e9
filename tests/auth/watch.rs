//! `/watch` with auth: each change goes only to callers who may read the key under that
//! version's metadata.

use std::time::Duration;

use super::*;
use crate::common::sse::{next, quiet, watch};

#[test]
fn a_watcher_sees_only_the_keys_it_may_read() {
    let node = auth_node("watch-secret", "");
    let w = world(&node);
    let bearer = format!("Bearer {}", w.bob);
    let events = watch(&node, "/watch?prefix=proj/", &[("Authorization", &bearer)]);
    std::thread::sleep(Duration::from_millis(300));
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
    let first = next(&events);
    assert_eq!(
        (&first.data["key"], &first.data["data"]),
        (&json!("proj/secret"), &json!(1))
    );
    let open = next(&events);
    assert_eq!(open.data["key"], "proj/open", "{open:?}");
    assert!(quiet(&events));
    let unauthenticated = call(&node, "GET", "/watch", None, None);
    assert_eq!(unauthenticated.status, 401);
}
