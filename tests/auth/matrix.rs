//! The permission matrix (class × operation × allowing and denying digits), ownership
//! of new keys, `/meta`, and scopes.

use super::*;

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
    // An anonymous creator is recorded as `anonymous` (as in the audit log), in no group.
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
        (Value::from("anonymous"), Value::Null)
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
