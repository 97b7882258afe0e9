//! Tests of request validation and planning.

use super::*;
use serde_json::json;

fn user(id: &str, name: &str, groups: &[&str]) -> User {
    User {
        id: id.into(),
        name: name.into(),
        groups: groups.iter().map(ToString::to_string).collect(),
        created_at: 1,
    }
}

fn group(id: &str, name: &str) -> Group {
    Group {
        id: id.into(),
        name: name.into(),
        created_at: 1,
    }
}

fn world() -> (Vec<User>, Vec<Group>) {
    let users = vec![
        User::root(),
        user("u1", "alice", &["g1"]),
        user("u2", "bob", &["g2", "g1"]),
    ];
    let groups = vec![group("g1", "ops"), group("g2", "dev")];
    (users, groups)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn dup(kind: RecordKind, name: &str) -> ModelError {
    ModelError::DuplicateName {
        kind,
        name: name.into(),
    }
}

fn unknown(kind: RecordKind, id: &str) -> ModelError {
    ModelError::UnknownReference {
        kind,
        id: id.into(),
    }
}

#[test]
fn create_user() {
    let (users, groups) = world();
    let req = CreateUser {
        name: "carol".into(),
        groups: strings(&["g2", "g1", "g2"]),
    };
    let u = plan_create_user(&req, "u3", 99, &users, &groups).expect("valid");
    assert_eq!(
        u,
        User {
            id: "u3".into(),
            name: "carol".into(),
            groups: strings(&["g2", "g1"]),
            created_at: 99
        }
    );
}

#[test]
fn create_user_errors() {
    let (users, groups) = world();
    let mk = |name: &str, gs: &[&str]| CreateUser {
        name: name.into(),
        groups: strings(gs),
    };
    let cases = [
        (mk("alice", &[]), dup(RecordKind::User, "alice")),
        (mk("root", &[]), dup(RecordKind::User, "root")),
        (mk("", &[]), ModelError::InvalidName),
        (mk("car ol", &[]), ModelError::InvalidName),
        (
            mk("carol", &["g1", "nope"]),
            unknown(RecordKind::Group, "nope"),
        ),
    ];
    for (req, want) in cases {
        let got = plan_create_user(&req, "u3", 1, &users, &groups).expect_err("invalid");
        assert_eq!(got, want);
        assert_eq!(got.code(), "bad_request");
    }
}

#[test]
fn create_user_from_json_defaults_groups() {
    let req: CreateUser = serde_json::from_value(json!({"name": "carol"})).expect("json");
    let (users, groups) = world();
    let u = plan_create_user(&req, "u3", 1, &users, &groups).expect("valid");
    assert!(u.groups.is_empty());
}

#[test]
fn update_user() {
    let (users, groups) = world();
    let req = UpdateUser {
        name: Some("alicia".into()),
        groups: Some(strings(&["g2"])),
    };
    let u = plan_update_user("u1", &req, &users, &groups).expect("valid");
    assert_eq!(
        (u.name.as_str(), u.groups.clone()),
        ("alicia", strings(&["g2"]))
    );
    // Keeping one's own name is not a duplicate; an empty update changes nothing.
    let same = UpdateUser {
        name: Some("alice".into()),
        groups: None,
    };
    assert_eq!(
        plan_update_user("u1", &same, &users, &groups),
        Ok(users[1].clone())
    );
    assert_eq!(
        plan_update_user("u1", &UpdateUser::default(), &users, &groups),
        Ok(users[1].clone())
    );
    // root may change groups, and "rename" to its own name.
    let root = UpdateUser {
        name: Some("root".into()),
        groups: Some(strings(&["g1"])),
    };
    assert_eq!(
        plan_update_user("root", &root, &users, &groups)
            .expect("valid")
            .groups,
        strings(&["g1"])
    );
}

#[test]
fn update_user_errors() {
    let (users, groups) = world();
    let name = |n: &str| UpdateUser {
        name: Some(n.into()),
        groups: None,
    };
    let cases = [
        (
            "nope",
            UpdateUser::default(),
            ModelError::NotFound {
                kind: RecordKind::User,
                id: "nope".into(),
            },
        ),
        ("u1", name("bob"), dup(RecordKind::User, "bob")),
        ("u1", name("a/b"), ModelError::InvalidName),
        ("root", name("admin"), ModelError::RootProtected),
        (
            "u1",
            UpdateUser {
                name: None,
                groups: Some(strings(&["x"])),
            },
            unknown(RecordKind::Group, "x"),
        ),
    ];
    for (id, req, want) in cases {
        assert_eq!(plan_update_user(id, &req, &users, &groups), Err(want));
    }
    let nf = plan_update_user("nope", &UpdateUser::default(), &users, &groups).expect_err("404");
    assert_eq!(nf.code(), "not_found");
}

#[test]
fn delete_user() {
    let (users, _) = world();
    assert_eq!(plan_delete_user("u1", &users), Ok(()));
    assert_eq!(
        plan_delete_user("root", &users),
        Err(ModelError::RootProtected)
    );
    assert_eq!(
        plan_delete_user("zz", &users).map_err(|e| e.code()),
        Err("not_found")
    );
}

#[test]
fn create_group_rewrites_members() {
    let (users, groups) = world();
    let req = CreateGroup {
        name: "qa".into(),
        members: strings(&["u2", "root", "u2"]),
    };
    let plan = plan_create_group(&req, "g3", 7, &users, &groups).expect("valid");
    assert_eq!(
        plan.group,
        Group {
            id: "g3".into(),
            name: "qa".into(),
            created_at: 7
        }
    );
    let ids: Vec<_> = plan.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["root", "u2"]);
    assert_eq!(plan.users[1].groups, strings(&["g2", "g1", "g3"]));
    // The first group (the one new keys get) is unchanged by joining another.
    assert_eq!(plan.users[1].groups[0], "g2");
}

#[test]
fn create_group_errors() {
    let (users, groups) = world();
    let mk = |name: &str, ms: &[&str]| CreateGroup {
        name: name.into(),
        members: strings(ms),
    };
    let cases = [
        (mk("ops", &[]), dup(RecordKind::Group, "ops")),
        (mk("-", &["ghost"]), unknown(RecordKind::User, "ghost")),
        (mk(&"x".repeat(65), &[]), ModelError::InvalidName),
    ];
    for (req, want) in cases {
        assert_eq!(plan_create_group(&req, "g3", 1, &users, &groups), Err(want));
    }
    // A group may share a name with a user.
    assert!(plan_create_group(&mk("alice", &[]), "g3", 1, &users, &groups).is_ok());
}

#[test]
fn update_group_members_and_name() {
    let (users, groups) = world();
    let req = UpdateGroup {
        name: Some("operations".into()),
        members: Some(strings(&["u2", "root"])),
    };
    let plan = plan_update_group("g1", &req, &users, &groups).expect("valid");
    assert_eq!(plan.group.name, "operations");
    let changed: Vec<_> = plan
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.groups.clone()))
        .collect();
    assert_eq!(
        changed,
        vec![("root", strings(&["g1"])), ("u1", strings(&[]))]
    );
    let rename_only = UpdateGroup {
        name: Some("ops".into()),
        members: None,
    };
    assert!(
        plan_update_group("g1", &rename_only, &users, &groups)
            .expect("valid")
            .users
            .is_empty()
    );
}

#[test]
fn update_group_errors() {
    let (users, groups) = world();
    let nf = plan_update_group("g9", &UpdateGroup::default(), &users, &groups).expect_err("404");
    assert_eq!(nf.code(), "not_found");
    let dup_name = UpdateGroup {
        name: Some("dev".into()),
        members: None,
    };
    assert_eq!(
        plan_update_group("g1", &dup_name, &users, &groups),
        Err(dup(RecordKind::Group, "dev"))
    );
    let ghost = UpdateGroup {
        name: None,
        members: Some(strings(&["ghost"])),
    };
    assert_eq!(
        plan_update_group("g1", &ghost, &users, &groups),
        Err(unknown(RecordKind::User, "ghost"))
    );
}

#[test]
fn delete_group_strips_it_from_users() {
    let (users, groups) = world();
    let changed = plan_delete_group("g1", &users, &groups).expect("valid");
    let changed: Vec<_> = changed
        .iter()
        .map(|u| (u.id.as_str(), u.groups.clone()))
        .collect();
    assert_eq!(
        changed,
        vec![("u1", strings(&[])), ("u2", strings(&["g2"]))]
    );
    assert_eq!(
        plan_delete_group("g9", &users, &groups).map_err(|e| e.code()),
        Err("not_found")
    );
}

#[test]
fn issue_token() {
    let (users, _) = world();
    let req: IssueToken = serde_json::from_value(
        json!({"user_id": "u1", "scopes": ["write", "read", "write"], "ttl": "24h"}),
    )
    .expect("json");
    let plan = plan_issue_token(&req, &users).expect("valid");
    assert_eq!(
        plan,
        TokenPlan {
            user_id: "u1".into(),
            scopes: vec![Scope::Read, Scope::Write],
            ttl_ms: 86_400_000
        }
    );
    let numeric = IssueToken {
        ttl: json!(60),
        ..req
    };
    assert_eq!(
        plan_issue_token(&numeric, &users).expect("valid").ttl_ms,
        60_000
    );
    let without_ttl: IssueToken =
        serde_json::from_value(json!({"user_id": "u1", "scopes": ["read"]})).expect("json");
    assert_eq!(
        plan_issue_token(&without_ttl, &users)
            .expect("valid")
            .ttl_ms,
        86_400_000,
        "24 hours when the request names no ttl"
    );
    let null_ttl: IssueToken =
        serde_json::from_value(json!({"user_id": "u1", "scopes": ["read"], "ttl": null}))
            .expect("json");
    assert_eq!(
        plan_issue_token(&null_ttl, &users).expect("valid").ttl_ms,
        86_400_000,
        "null is no ttl"
    );
}

#[test]
fn issue_token_errors() {
    let (users, _) = world();
    let mk = |user: &str, scopes: &[&str], ttl: serde_json::Value| IssueToken {
        user_id: user.into(),
        scopes: strings(scopes),
        ttl,
    };
    let bad_ttls = [
        json!("0s"),
        json!(0),
        json!("1.5h"),
        json!("-5s"),
        json!(-5),
        json!(1.5),
        json!(""),
        json!("5 s"),
        json!("5S"),
        json!("h"),
        json!(["1s"]),
        json!("3651d"),
        json!("99999999999999999999s"),
        json!(u64::MAX),
    ];
    for ttl in bad_ttls {
        let err = plan_issue_token(&mk("u1", &["read"], ttl.clone()), &users).expect_err("bad ttl");
        assert!(
            matches!(err, ModelError::InvalidDuration(_)),
            "{ttl}: {err:?}"
        );
        assert_eq!(err.code(), "bad_request");
    }
    let ok = json!("1h");
    assert_eq!(
        plan_issue_token(&mk("ghost", &["read"], ok.clone()), &users),
        Err(unknown(RecordKind::User, "ghost"))
    );
    assert_eq!(
        plan_issue_token(&mk("u1", &[], ok.clone()), &users),
        Err(ModelError::NoScopes)
    );
    for scope in ["superuser", "READ", "", " read"] {
        let err =
            plan_issue_token(&mk("u1", &["read", scope], ok.clone()), &users).expect_err("scope");
        assert_eq!(err, ModelError::UnknownScope(scope.into()));
    }
}

#[test]
fn ttls() {
    let cases = [
        (json!("500ms"), 500),
        (json!("30s"), 30_000),
        (json!("10m"), 600_000),
        (json!("24h"), 86_400_000),
        (json!("7d"), 604_800_000),
        (json!("45"), 45_000),
        (json!(45), 45_000),
        (json!("3650d"), MAX_TOKEN_TTL_MS),
    ];
    for (ttl, ms) in cases {
        assert_eq!(parse_ttl(&ttl), Ok(ms), "{ttl}");
    }
    let err = parse_ttl(&json!("1w")).expect_err("unit");
    assert_eq!(
        err.to_string(),
        "invalid duration \"1w\": use a positive number of seconds or 500ms, 30s, 10m, 24h, 7d"
    );
}

#[test]
fn update_meta() {
    let (users, groups) = world();
    let current = KeyMeta {
        owner: Some("u1".into()),
        group: Some("g1".into()),
        permissions: Permissions::DEFAULT,
    };
    let req: UpdateMeta =
        serde_json::from_value(json!({"owner": "u2", "permissions": "F00"})).expect("json");
    let meta = plan_update_meta(&current, &req, &users, &groups).expect("valid");
    assert_eq!(meta.owner.as_deref(), Some("u2"));
    assert_eq!(meta.group.as_deref(), Some("g1"));
    assert_eq!(meta.permissions.to_string(), "f00");
    let clear: UpdateMeta = serde_json::from_value(json!({"group": null})).expect("json");
    let meta = plan_update_meta(&current, &clear, &users, &groups).expect("valid");
    assert_eq!((meta.owner.as_deref(), meta.group), (Some("u1"), None));
    let empty: UpdateMeta = serde_json::from_value(json!({})).expect("json");
    assert_eq!(
        plan_update_meta(&current, &empty, &users, &groups),
        Ok(current.clone())
    );
}

#[test]
fn update_meta_errors() {
    let (users, groups) = world();
    let current = KeyMeta::for_new_key(None, Permissions::DEFAULT);
    let cases = [
        (
            json!({"owner": "ghost"}),
            unknown(RecordKind::User, "ghost"),
        ),
        (
            json!({"group": "ghost"}),
            unknown(RecordKind::Group, "ghost"),
        ),
        (json!({"permissions": "f3"}), ModelError::InvalidPermissions),
        (
            json!({"permissions": "xyz"}),
            ModelError::InvalidPermissions,
        ),
        (
            json!({"permissions": "1000"}),
            ModelError::InvalidPermissions,
        ),
    ];
    for (body, want) in cases {
        let req: UpdateMeta = serde_json::from_value(body).expect("json");
        assert_eq!(plan_update_meta(&current, &req, &users, &groups), Err(want));
    }
}

#[test]
fn messages_are_clipped() {
    let (users, groups) = world();
    let long = "g".repeat(10_000);
    let req = CreateUser {
        name: "carol".into(),
        groups: vec![long],
    };
    let err = plan_create_user(&req, "u3", 1, &users, &groups).expect_err("unknown");
    assert!(err.to_string().len() < 120);
}
