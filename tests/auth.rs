//! Authentication and authorization against a real node: the permission matrix, forged
//! tokens, the anonymous flags, expiry, revocation, user deletion, the `/auth` and
//! `/meta` endpoints and the root bootstrap.

mod common;

#[path = "auth/endpoints.rs"]
mod endpoints;
#[path = "auth/history.rs"]
mod history;
#[path = "auth/matrix.rs"]
mod matrix;
#[path = "auth/tokens.rs"]
mod tokens;
#[path = "auth/watch.rs"]
mod watch;

use common::{Answer, Node};
use serde_json::{Value, json};

/// A node with auth on (the default) and a known `jwt_secret`, plus `extra` YAML.
fn auth_node(secret: &str, extra: &str) -> Node {
    Node::start(&format!(
        "clustering_enabled: false\njwt_secret: {secret}\n{extra}"
    ))
}

fn root_token(node: &Node) -> String {
    let text = std::fs::read_to_string(node.data_dir().join("root.token")).expect("root.token");
    text.trim_end().to_owned()
}

/// One request with an optional bearer token.
fn call(node: &Node, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    node.request(method, path, body, &headers)
}

fn with_header(node: &Node, method: &str, path: &str, authorization: &str) -> Answer {
    node.request(method, path, None, &[("authorization", authorization)])
}

fn expect(answer: &Answer, status: u16, what: &str) -> Value {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    }
}

fn assert_401(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    assert_eq!(answer.error_code(), "unauthorized", "{what}");
    assert_eq!(
        answer.header("www-authenticate").as_deref(),
        Some("Bearer"),
        "{what}"
    );
}

fn assert_403(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {}", answer.body);
    assert_eq!(answer.error_code(), "forbidden", "{what}");
    assert_eq!(answer.header("www-authenticate"), None, "{what}");
}

/// Users and tokens on one node: alice and bob in group `team`, carol in none.
struct World {
    root: String,
    team: String,
    alice: String,
    bob: String,
    carol: String,
    alice_id: String,
    bob_id: String,
}

fn create_user(node: &Node, root: &str, name: &str, groups: &[&str]) -> String {
    let body = json!({"name": name, "groups": groups}).to_string();
    let user = expect(
        &call(node, "POST", "/auth/users", Some(&body), Some(root)),
        201,
        name,
    );
    assert_eq!(user["name"], name);
    user["id"].as_str().expect("id").to_owned()
}

fn issue(node: &Node, root: &str, user_id: &str, scopes: &[&str], ttl: &str) -> Value {
    let body = json!({"user_id": user_id, "scopes": scopes, "ttl": ttl}).to_string();
    expect(
        &call(node, "POST", "/auth/tokens", Some(&body), Some(root)),
        201,
        "issue",
    )
}

fn token_for(node: &Node, root: &str, user_id: &str, scopes: &[&str]) -> String {
    issue(node, root, user_id, scopes, "1h")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn world(node: &Node) -> World {
    let root = root_token(node);
    let body = json!({"name": "team"}).to_string();
    let team = expect(
        &call(node, "POST", "/auth/groups", Some(&body), Some(&root)),
        201,
        "group",
    );
    let team = team["id"].as_str().expect("group id").to_owned();
    let alice_id = create_user(node, &root, "alice", &[&team]);
    let bob_id = create_user(node, &root, "bob", &[&team]);
    let carol_id = create_user(node, &root, "carol", &[]);
    let rw = ["read", "write"];
    World {
        alice: token_for(node, &root, &alice_id, &rw),
        bob: token_for(node, &root, &bob_id, &rw),
        carol: token_for(node, &root, &carol_id, &rw),
        root,
        team,
        alice_id,
        bob_id,
    }
}
