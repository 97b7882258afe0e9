//! Expiry and history against changes of ownership (issue 11): a TTL on an existing key
//! needs the delete right, `/history` shows only the key's current life (since its last
//! expiry or delete), and each revision only to callers who may read it under its own metadata.

use std::time::{Duration, Instant};

use super::*;

/// The `data` of each revision `token` may see in `/history/{key}`, newest first.
fn history(node: &Node, key: &str, token: &str) -> Vec<Value> {
    let path = format!("/history/{key}");
    let body = expect(&call(node, "GET", &path, None, Some(token)), 200, &path);
    let revisions = body["revisions"].as_array().expect("revisions");
    revisions.iter().map(|r| r["data"].clone()).collect()
}

fn put(node: &Node, key: &str, value: &str, token: &str, status: u16) {
    let path = format!("/kv/{key}");
    expect(
        &call(node, "PUT", &path, Some(value), Some(token)),
        status,
        &path,
    );
}

fn set_meta(node: &Node, key: &str, meta: Value, token: &str) {
    let path = format!("/meta/{key}");
    let body = meta.to_string();
    expect(
        &call(node, "PUT", &path, Some(&body), Some(token)),
        200,
        &path,
    );
}

/// Waits (generously) until `key` reads as absent.
fn await_expiry(node: &Node, key: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/kv/{key}");
    while call(node, "GET", &path, None, Some(token)).status != 404 {
        assert!(Instant::now() < deadline, "{key} never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_ttl_on_an_existing_key_needs_the_delete_right() {
    let node = auth_node("ttl-secret", "");
    let w = world(&node);
    put(&node, "proj/plan", r#""alice's plan""#, &w.alice, 201);
    // Bob, in alice's group, may write (f31: group W and R) but not delete.
    assert_403(
        &call(&node, "DELETE", "/kv/proj/plan", None, Some(&w.bob)),
        "delete",
    );
    let expiring = call(
        &node,
        "PUT",
        "/kv/proj/plan?ttl=1ms",
        Some("1"),
        Some(&w.bob),
    );
    assert_403(&expiring, "a ttl deletes the key when it runs out");
    let meta = expect(
        &call(&node, "GET", "/meta/proj/plan", None, Some(&w.alice)),
        200,
        "meta",
    );
    assert_eq!(meta["owner"], w.alice_id.as_str());
    assert_eq!(
        meta["expires_at"],
        Value::Null,
        "the refused PUT changed nothing"
    );
    // A plain overwrite still needs only W; the owner may set a TTL.
    put(&node, "proj/plan", r#""bob's edit""#, &w.bob, 200);
    let owner_ttl = call(
        &node,
        "PUT",
        "/kv/proj/plan?ttl=1h",
        Some("2"),
        Some(&w.alice),
    );
    expect(&owner_ttl, 200, "the owner has D");
    // Creating a key with a TTL needs only what creating it needs.
    put(&node, "fresh?ttl=1h", "3", &w.bob, 201);
}

#[test]
fn history_shows_only_the_current_life() {
    let node = auth_node("life-secret", "");
    let w = world(&node);
    put(
        &node,
        "proj/plan?ttl=300ms",
        r#""alice's old plan""#,
        &w.alice,
        201,
    );
    await_expiry(&node, "proj/plan", &w.alice);
    // Bob creates the key again, owns it, and hides it from everyone else.
    put(&node, "proj/plan", r#""bob's plan""#, &w.bob, 201);
    set_meta(&node, "proj/plan", json!({"permissions": "f00"}), &w.bob);
    let seen = history(&node, "proj/plan", &w.bob);
    assert_eq!(seen, [json!("bob's plan"), json!("bob's plan")], "{seen:?}");
    // Not even an admin sees the previous life through /history.
    assert_eq!(history(&node, "proj/plan", &w.root).len(), 2);
}

#[test]
fn history_starts_again_after_a_delete() {
    let node = auth_node("delete-life-secret", "");
    let w = world(&node);
    put(&node, "proj/memo", r#""alice's draft""#, &w.alice, 201);
    put(&node, "proj/memo", r#""alice's memo""#, &w.alice, 200);
    let path = "/kv/proj/memo";
    expect(
        &call(&node, "DELETE", path, None, Some(&w.alice)),
        204,
        path,
    );
    // Bob creates the key again: he owns it, and sees only his own revisions.
    put(&node, "proj/memo", r#""bob's memo""#, &w.bob, 201);
    let seen = history(&node, "proj/memo", &w.bob);
    assert_eq!(seen, [json!("bob's memo")], "{seen:?}");
    assert_eq!(history(&node, "proj/memo", &w.root), [json!("bob's memo")]);
}

#[test]
fn history_serves_each_revision_under_its_own_metadata() {
    let node = auth_node("revision-secret", "");
    let w = world(&node);
    // Loosened permissions: bob (group) may read f31 and f11 revisions, not f00 ones.
    put(&node, "notes", r#""draft""#, &w.alice, 201);
    set_meta(&node, "notes", json!({"permissions": "f00"}), &w.alice);
    put(&node, "notes", r#""private secret""#, &w.alice, 200);
    put(&node, "notes", r#""public""#, &w.alice, 200);
    set_meta(&node, "notes", json!({"permissions": "f11"}), &w.alice);
    let seen = history(&node, "notes", &w.bob);
    assert_eq!(seen, [json!("public"), json!("draft")], "{seen:?}");
    assert_eq!(
        history(&node, "notes", &w.alice).len(),
        5,
        "the owner sees all"
    );

    // A key that changes hands: its new owner does not get the old owner's private past.
    put(&node, "ledger", r#""first""#, &w.alice, 201);
    set_meta(&node, "ledger", json!({"permissions": "f00"}), &w.alice);
    put(&node, "ledger", r#""hidden""#, &w.alice, 200);
    put(&node, "ledger", r#""current""#, &w.alice, 200);
    let carol_id = expect(
        &call(&node, "GET", "/auth/users", None, Some(&w.root)),
        200,
        "users",
    )["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "carol")
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .expect("carol");
    set_meta(&node, "ledger", json!({"owner": carol_id}), &w.root);
    let seen = history(&node, "ledger", &w.carol);
    assert_eq!(seen, [json!("current"), json!("first")], "{seen:?}");
}
