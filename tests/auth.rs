//! Authentication and authorization against a real node: the permission matrix, forged
//! tokens, the anonymous flags, expiry, revocation, user deletion, the `/auth` and
//! `/meta` endpoints and the root bootstrap.

mod common;

use std::os::unix::fs::PermissionsExt as _;

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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Owner,
    GroupMember,
    Other,
    Anonymous,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
    Delete,
    CreateBelow,
    ChangeMeta,
}

impl Op {
    fn bit(self) -> u16 {
        match self {
            Op::CreateBelow => 8,
            Op::Delete => 4,
            Op::Write => 2,
            Op::Read => 1,
            Op::ChangeMeta => 0,
        }
    }
}

/// The permissions under test: the class's digit allows or denies the operation's bit,
/// and every other digit says the opposite, so that a wrong class would show.
fn permissions(who: Who, op: Op, allow: bool) -> String {
    if op == Op::ChangeMeta || who == Who::Admin {
        // No bit decides a metadata change, and admin passes every check: all or nothing.
        return if allow { "fff" } else { "000" }.into();
    }
    let (mine, rest) = if allow {
        (op.bit(), 0xf ^ op.bit())
    } else {
        (0xf ^ op.bit(), op.bit())
    };
    let shift = match who {
        Who::Owner => 8,
        Who::GroupMember => 4,
        _ => 0,
    };
    let mut bits = 0u16;
    for s in [8, 4, 0] {
        bits |= (if s == shift { mine } else { rest }) << s;
    }
    format!("{bits:03x}")
}

/// The status the contract gives.
fn expected(who: Who, op: Op, allow: bool) -> u16 {
    let success = match op {
        Op::Read | Op::Write | Op::ChangeMeta => 200,
        Op::Delete => 204,
        Op::CreateBelow => 201,
    };
    match (who, op) {
        (Who::Admin, _) | (Who::Owner, Op::ChangeMeta) => success,
        (Who::Anonymous, Op::Delete | Op::ChangeMeta) => 401,
        (Who::GroupMember | Who::Other, Op::ChangeMeta) => 403,
        (Who::Anonymous, _) if !allow => 401,
        _ if allow => success,
        _ => 403,
    }
}

/// Every class × every operation × a digit that allows and one that denies, on a node
/// that lets anonymous clients read and write (so that their digit is what decides).
#[test]
fn permission_matrix() {
    let node = auth_node(
        "matrix-secret",
        "allow_anonymous_read: true\nallow_anonymous_write: true\n",
    );
    let w = world(&node);
    let mut failures = Vec::new();
    for who in [
        Who::Owner,
        Who::GroupMember,
        Who::Other,
        Who::Anonymous,
        Who::Admin,
    ] {
        let token = match who {
            Who::Owner => Some(w.alice.as_str()),
            Who::GroupMember => Some(w.bob.as_str()),
            Who::Other => Some(w.carol.as_str()),
            Who::Anonymous => None,
            Who::Admin => Some(w.root.as_str()),
        };
        for op in [
            Op::Read,
            Op::Write,
            Op::Delete,
            Op::CreateBelow,
            Op::ChangeMeta,
        ] {
            for allow in [true, false] {
                let key = format!("m/{who:?}/{op:?}/{allow}");
                let path = format!("/kv/{key}");
                // alice creates the key: owner alice, group team.
                expect(
                    &call(&node, "PUT", &path, Some("1"), Some(&w.alice)),
                    201,
                    &key,
                );
                let bits = permissions(who, op, allow);
                let body = json!({"permissions": bits}).to_string();
                let meta = format!("/meta/{key}");
                let set = expect(
                    &call(&node, "PUT", &meta, Some(&body), Some(&w.root)),
                    200,
                    &key,
                );
                assert_eq!(set["owner"], w.alice_id.as_str());
                assert_eq!(set["group"], w.team.as_str());
                let answer = match op {
                    Op::Read => call(&node, "GET", &path, None, token),
                    Op::Write => call(&node, "PUT", &path, Some("2"), token),
                    Op::Delete => call(&node, "DELETE", &path, None, token),
                    Op::CreateBelow => {
                        call(&node, "PUT", &format!("{path}/child"), Some("3"), token)
                    }
                    Op::ChangeMeta => {
                        call(&node, "PUT", &meta, Some(r#"{"permissions":"f00"}"#), token)
                    }
                };
                let want = expected(who, op, allow);
                if answer.status != want {
                    failures.push(format!(
                        "{who:?} {op:?} with {bits} ({}): got {} want {want}: {}",
                        if allow { "allows" } else { "denies" },
                        answer.status,
                        answer.body
                    ));
                } else if want == 401 {
                    assert_401(&answer, &key);
                } else if want == 403 {
                    assert_403(&answer, &key);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ownership_defaults_and_metadata() {
    let node = auth_node(
        "meta-secret",
        "allow_anonymous_write: true\ndefault_permissions: f71\n",
    );
    let w = world(&node);
    expect(
        &call(&node, "PUT", "/kv/doc?ttl=1h", Some("{}"), Some(&w.alice)),
        201,
        "create",
    );
    let meta = expect(
        &call(&node, "GET", "/meta/doc", None, Some(&w.alice)),
        200,
        "meta",
    );
    assert_eq!(meta["owner"], w.alice_id.as_str());
    assert_eq!(meta["group"], w.team.as_str());
    assert_eq!(meta["permissions"], "f71");
    assert!(meta["expires_at"].as_u64().is_some(), "{meta}");
    // An overwrite by another writer keeps the owner; a metadata change keeps the data.
    expect(
        &call(&node, "PUT", "/kv/doc", Some("{\"v\":2}"), Some(&w.bob)),
        200,
        "group write",
    );
    let meta = expect(
        &call(&node, "GET", "/meta/doc", None, Some(&w.bob)),
        200,
        "meta",
    );
    assert_eq!(meta["owner"], w.alice_id.as_str());
    let body = json!({"owner": w.bob_id, "group": null, "permissions": "F00"}).to_string();
    let changed = expect(
        &call(&node, "PUT", "/meta/doc", Some(&body), Some(&w.alice)),
        200,
        "chown",
    );
    assert_eq!(
        changed,
        json!({"owner": w.bob_id, "group": null, "permissions": "f00", "expires_at": null})
    );
    let got = expect(
        &call(&node, "GET", "/kv/doc", None, Some(&w.bob)),
        200,
        "read after chown",
    );
    assert_eq!(got["data"], json!({"v": 2}));
    assert_403(
        &call(&node, "GET", "/kv/doc", None, Some(&w.alice)),
        "alice lost access",
    );
    assert_403(
        &call(&node, "GET", "/meta/doc", None, Some(&w.alice)),
        "alice reads meta",
    );
    // An anonymous creator leaves owner and group empty.
    expect(
        &call(&node, "PUT", "/kv/anon", Some("1"), None),
        201,
        "anonymous create",
    );
    let meta = expect(
        &call(&node, "GET", "/meta/anon", None, Some(&w.root)),
        200,
        "meta",
    );
    assert_eq!(
        (meta["owner"].clone(), meta["group"].clone()),
        (Value::Null, Value::Null)
    );
    // Validation of metadata changes.
    for (body, code) in [
        (r#"{"permissions":"fff1"}"#, "bad_request"),
        (r#"{"permissions":"xyz"}"#, "bad_request"),
        (r#"{"owner":"nobody"}"#, "bad_request"),
        (r#"{"group":"nogroup"}"#, "bad_request"),
        (r#"{"permissions":7}"#, "bad_request"),
        ("not json", "invalid_json"),
    ] {
        let answer = call(&node, "PUT", "/meta/anon", Some(body), Some(&w.root));
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, code),
            "{body}"
        );
    }
    assert_eq!(
        call(&node, "GET", "/meta/absent", None, Some(&w.root)).status,
        404
    );
    assert_eq!(
        call(&node, "PUT", "/meta/absent", Some("{}"), Some(&w.root)).status,
        404
    );
    assert_eq!(
        call(&node, "GET", "/meta/_auth/users/root", None, Some(&w.root)).status,
        400
    );
}

#[test]
fn scopes_gate_before_permissions() {
    let node = auth_node("scope-secret", "");
    let w = world(&node);
    let reader = token_for(&node, &w.root, &w.alice_id, &["read"]);
    let writer = token_for(&node, &w.root, &w.alice_id, &["write"]);
    expect(
        &call(&node, "PUT", "/kv/s", Some("1"), Some(&w.alice)),
        201,
        "create",
    );
    expect(
        &call(&node, "GET", "/kv/s", None, Some(&reader)),
        200,
        "read scope reads",
    );
    assert_403(
        &call(&node, "PUT", "/kv/s", Some("2"), Some(&reader)),
        "read scope writes",
    );
    assert_403(
        &call(&node, "DELETE", "/kv/s", None, Some(&reader)),
        "read scope deletes",
    );
    assert_403(
        &call(&node, "PUT", "/kv/new", Some("2"), Some(&reader)),
        "read scope creates",
    );
    assert_403(
        &call(&node, "GET", "/kv/s", None, Some(&writer)),
        "write scope reads",
    );
    assert_403(
        &call(&node, "GET", "/kv?prefix=", None, Some(&writer)),
        "write scope lists",
    );
    assert_403(
        &call(&node, "GET", "/history/s", None, Some(&writer)),
        "write scope history",
    );
    assert_403(
        &call(&node, "GET", "/members", None, Some(&writer)),
        "write scope members",
    );
    expect(
        &call(&node, "PUT", "/kv/s", Some("2"), Some(&writer)),
        200,
        "write scope writes",
    );
    expect(
        &call(&node, "GET", "/kv?prefix=", None, Some(&reader)),
        200,
        "read scope lists",
    );
    expect(
        &call(&node, "GET", "/history/s", None, Some(&reader)),
        200,
        "history",
    );
    expect(
        &call(&node, "GET", "/members", None, Some(&reader)),
        200,
        "members",
    );
    expect(
        &call(&node, "DELETE", "/kv/s", None, Some(&writer)),
        204,
        "write scope deletes",
    );
    // A group change applies to the very next request: bob leaves the team.
    expect(
        &call(&node, "PUT", "/kv/t", Some("1"), Some(&w.alice)),
        201,
        "create",
    );
    let body = json!({"permissions": "f20"}).to_string();
    expect(
        &call(&node, "PUT", "/meta/t", Some(&body), Some(&w.alice)),
        200,
        "chmod",
    );
    expect(
        &call(&node, "PUT", "/kv/t", Some("2"), Some(&w.bob)),
        200,
        "bob in team writes",
    );
    let body = json!({"groups": []}).to_string();
    expect(
        &call(
            &node,
            "PUT",
            &format!("/auth/users/{}", w.bob_id),
            Some(&body),
            Some(&w.root),
        ),
        200,
        "leave",
    );
    assert_403(
        &call(&node, "PUT", "/kv/t", Some("3"), Some(&w.bob)),
        "bob out of team",
    );
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn b64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| {
            acc | u32::from(value(*c)) << (18 - 6 * i)
        });
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A token with its header and payload replaced, keeping `signature`.
fn forge(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    )
}

#[test]
fn forged_expired_revoked_and_orphaned_tokens_are_401() {
    let node = auth_node("forge-secret", "");
    let other = auth_node("another-secret", "");
    let w = world(&node);
    expect(
        &call(&node, "PUT", "/kv/f", Some("1"), Some(&w.root)),
        201,
        "root writes",
    );
    let parts: Vec<&str> = w.carol.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload: Value = serde_json::from_slice(&b64url_decode(parts[1])).expect("claims");
    assert_eq!(payload["scopes"], json!(["read", "write"]));
    let mut admin_payload = payload.clone();
    admin_payload["scopes"] = json!(["admin"]);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let cases = [
        (
            "alg none, no signature",
            forge(&json!({"alg": "none", "typ": "JWT"}), &admin_payload, ""),
        ),
        (
            "alg none, old signature",
            forge(&json!({"alg": "none"}), &payload, parts[2]),
        ),
        (
            "HS384 header",
            forge(&json!({"alg": "HS384", "typ": "JWT"}), &payload, parts[2]),
        ),
        (
            "RS256 header",
            forge(&json!({"alg": "RS256", "typ": "JWT"}), &payload, parts[2]),
        ),
        ("escalated scopes", forge(&hs256, &admin_payload, parts[2])),
        (
            "flipped signature",
            format!(
                "{}.{}.{}x",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 1]
            ),
        ),
        ("other cluster's root", root_token(&other)),
        ("garbage", "not-a-token".into()),
        ("three garbage parts", "a.b.c".into()),
        ("empty signature", format!("{}.{}.", parts[0], parts[1])),
    ];
    for (what, token) in &cases {
        let answer = call(&node, "GET", "/kv/f", None, Some(token));
        assert_401(&answer, what);
        assert!(
            !answer.body.contains(token.as_str()) || token.len() < 12,
            "{what}: token echoed"
        );
    }
    for header in [
        "Basic cm9vdDpyb290",
        "Bearer",
        "Bearer  ",
        "Token abc",
        "bearer a b",
    ] {
        assert_401(&with_header(&node, "GET", "/kv/f", header), header);
    }
    assert_401(
        &call(&node, "DELETE", "/kv/f", None, Some(&cases[4].1)),
        "forged admin deletes",
    );
    // The scheme is case-insensitive; the genuine token works.
    let ok = with_header(&node, "GET", "/kv/f", &format!("bearer {}", w.carol));
    expect(&ok, 200, "genuine token");
    // Expiry.
    let short = issue(&node, &w.root, &w.alice_id, &["read"], "1s");
    let short_token = short["token"].as_str().expect("token").to_owned();
    let expires_at = short["expires_at"].as_u64().expect("expires_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        expires_at > now && expires_at <= now + 2_100,
        "{expires_at} vs {now}"
    );
    std::thread::sleep(std::time::Duration::from_millis(
        expires_at.saturating_sub(now) + 300,
    ));
    let expired = call(&node, "GET", "/kv/f", None, Some(&short_token));
    assert_401(&expired, "expired");
    assert!(expired.body.contains("expired"), "{}", expired.body);
    // Revocation: 204, then 401; revoking again is fine; unknown jtis are 404.
    let issued = issue(&node, &w.root, &w.alice_id, &["read"], "24h");
    let (token, jti) = (
        issued["token"].as_str().expect("token"),
        issued["jti"].as_str().expect("jti"),
    );
    expect(
        &call(&node, "GET", "/kv/f", None, Some(token)),
        200,
        "before revocation",
    );
    expect(
        &call(
            &node,
            "DELETE",
            &format!("/auth/tokens/{jti}"),
            None,
            Some(&w.root),
        ),
        204,
        "revoke",
    );
    let revoked = call(&node, "GET", "/kv/f", None, Some(token));
    assert_401(&revoked, "revoked");
    assert!(revoked.body.contains("revoked"), "{}", revoked.body);
    expect(
        &call(
            &node,
            "DELETE",
            &format!("/auth/tokens/{jti}"),
            None,
            Some(&w.root),
        ),
        204,
        "again",
    );
    let unknown = call(
        &node,
        "DELETE",
        "/auth/tokens/no-such-jti",
        None,
        Some(&w.root),
    );
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "not_found")
    );
    // Deleting a user stops its tokens.
    expect(
        &call(&node, "GET", "/kv/f", None, Some(&w.bob)),
        200,
        "bob before deletion",
    );
    expect(
        &call(
            &node,
            "DELETE",
            &format!("/auth/users/{}", w.bob_id),
            None,
            Some(&w.root),
        ),
        204,
        "delete bob",
    );
    assert_401(
        &call(&node, "GET", "/kv/f", None, Some(&w.bob)),
        "deleted user",
    );
    assert_401(
        &call(&node, "PUT", "/kv/f", Some("2"), Some(&w.bob)),
        "deleted user writes",
    );
}

#[test]
fn anonymous_flags() {
    let closed = auth_node("anon-secret", "");
    let root = root_token(&closed);
    expect(
        &call(&closed, "PUT", "/kv/a", Some("1"), Some(&root)),
        201,
        "root writes",
    );
    for (method, path, body) in [
        ("GET", "/kv/a", None),
        ("HEAD", "/kv/a", None),
        ("GET", "/kv/absent", None),
        ("PUT", "/kv/a", Some("2")),
        ("PUT", "/kv/b", Some("2")),
        ("DELETE", "/kv/a", None),
        ("GET", "/kv?prefix=", None),
        ("GET", "/history/a", None),
        ("GET", "/members", None),
        ("GET", "/meta/a", None),
        ("PUT", "/meta/a", Some("{}")),
        ("GET", "/auth/users", None),
        ("POST", "/auth/tokens", Some("{}")),
    ] {
        let answer = call(&closed, method, path, body, None);
        assert_eq!(answer.status, 401, "{method} {path}");
        assert_eq!(answer.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // Health, metrics and the OpenAPI document stay open.
    for path in ["/health", "/metrics", "/openapi.json"] {
        assert_eq!(call(&closed, "GET", path, None, None).status, 200, "{path}");
    }

    let reads = auth_node("anon-secret", "allow_anonymous_read: true\n");
    let root = root_token(&reads);
    expect(
        &call(&reads, "PUT", "/kv/a", Some("1"), Some(&root)),
        201,
        "root writes",
    );
    expect(
        &call(&reads, "GET", "/kv/a", None, None),
        200,
        "anonymous read",
    );
    assert_eq!(call(&reads, "HEAD", "/kv/a", None, None).status, 200);
    expect(
        &call(&reads, "GET", "/kv?prefix=", None, None),
        200,
        "anonymous list",
    );
    expect(
        &call(&reads, "GET", "/history/a", None, None),
        200,
        "anonymous history",
    );
    assert_eq!(call(&reads, "GET", "/kv/absent", None, None).status, 404);
    assert_401(
        &call(&reads, "PUT", "/kv/a", Some("2"), None),
        "read-only flag, write",
    );
    assert_401(
        &call(&reads, "PUT", "/kv/new", Some("2"), None),
        "read-only flag, create",
    );
    assert_401(&call(&reads, "DELETE", "/kv/a", None, None), "delete");
    expect(
        &call(
            &reads,
            "PUT",
            "/meta/a",
            Some(r#"{"permissions":"f30"}"#),
            Some(&root),
        ),
        200,
        "chmod",
    );
    assert_401(
        &call(&reads, "GET", "/kv/a", None, None),
        "others digit without R",
    );

    let writes = auth_node("anon-secret", "allow_anonymous_write: true\n");
    let root = root_token(&writes);
    expect(
        &call(&writes, "PUT", "/kv/w", Some("1"), None),
        201,
        "anonymous create",
    );
    assert_401(
        &call(&writes, "GET", "/kv/w", None, None),
        "write-only flag, read",
    );
    assert_401(
        &call(&writes, "PUT", "/kv/w", Some("2"), None),
        "default f31: others may not write",
    );
    expect(
        &call(
            &writes,
            "PUT",
            "/meta/w",
            Some(r#"{"permissions":"f3b"}"#),
            Some(&root),
        ),
        200,
        "chmod",
    );
    expect(
        &call(&writes, "PUT", "/kv/w", Some("2"), None),
        200,
        "others digit with W",
    );
    expect(
        &call(&writes, "PUT", "/kv/w/below", Some("3"), None),
        201,
        "others digit with C",
    );
    assert_401(
        &call(&writes, "DELETE", "/kv/w", None, None),
        "DELETE always needs a token",
    );
    assert_401(
        &call(&writes, "GET", "/kv?prefix=", None, None),
        "write-only flag, list",
    );
}

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
    bad(
        "POST",
        "/auth/tokens",
        r#"{"user_id":"root","scopes":["read"]}"#,
        400,
        "bad_request",
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
    // A token given as a number of seconds.
    let issued = issue(&node, root, &w.alice_id, &["read", "read"], "90");
    assert!(issued["jti"].as_str().is_some() && issued["expires_at"].as_u64().is_some());
    // Secrets never show in /metrics, in error bodies or in the log.
    let metrics = call(&node, "GET", "/metrics", None, None).body;
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
