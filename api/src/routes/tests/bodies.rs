//! The bodies of `/auth` and `/meta` requests: a field the request does not take is
//! refused and changes nothing; what a `GET` answered can be sent back changed.

use serde_json::json;

use super::{api_and_root, call, expect, request};

/// Found by a black-box audit: `PUT /meta/{key}` with a misspelt `"permission"` answered
/// `200` and wrote a new version with nothing changed, so an owner who meant to make a
/// key private was told it was done while it stayed readable to all.
#[tokio::test]
async fn a_body_with_a_field_the_request_does_not_take_is_refused() {
    let (api, root) = api_and_root().await;
    expect(&api, ("PUT", "/kv/doc", Some(json!(1))), &root, 201).await;
    let before = expect(&api, ("GET", "/kv/doc", None), &root, 200).await;
    let misspelt = Some(json!({"permission": "f00"}));
    let (status, body) = call(&api, "PUT", "/meta/doc", misspelt, &root).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("\"permission\"") && message.contains("permissions"),
        "{message}"
    );
    let after = expect(&api, ("GET", "/kv/doc", None), &root, 200).await;
    assert_eq!(after["uuid"], before["uuid"], "a new version was written");

    let refused = [
        ("POST", "/auth/users", json!({"nme": "alice"})),
        (
            "POST",
            "/auth/groups",
            json!({"name": "team", "member": []}),
        ),
        (
            "POST",
            "/auth/tokens",
            json!({"user_id": "root", "scopes": ["read"], "tll": "1h"}),
        ),
    ];
    for (method, path, body) in refused {
        let (status, answer) = call(&api, method, path, Some(body.clone()), &root).await;
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
    }
    let users = expect(&api, ("GET", "/auth/users", None), &root, 200).await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "{users}");

    // What a GET answered, sent back changed.
    let meta = expect(&api, ("GET", "/meta/doc", None), &root, 200).await;
    let mut private = meta.clone();
    private["permissions"] = json!("f00");
    let changed = expect(&api, ("PUT", "/meta/doc", Some(private)), &root, 200).await;
    assert_eq!(changed["permissions"], "f00", "{changed}");
    let alice = json!({"name": "alice"});
    let alice = expect(&api, ("POST", "/auth/users", Some(alice)), &root, 201).await;
    let mut renamed = alice.clone();
    renamed["name"] = json!("alice2");
    let path = format!("/auth/users/{}", alice["id"].as_str().expect("id"));
    let answer = expect(&api, ("PUT", path.as_str(), Some(renamed)), &root, 200).await;
    assert_eq!(answer["name"], "alice2");
    let team = json!({"name": "team"});
    let team = expect(&api, ("POST", "/auth/groups", Some(team)), &root, 201).await;
    let mut with_alice = team.clone();
    with_alice["members"] = json!([alice["id"]]);
    let path = format!("/auth/groups/{}", team["id"].as_str().expect("id"));
    let answer = expect(&api, ("PUT", path.as_str(), Some(with_alice)), &root, 200).await;
    assert_eq!(answer["members"], json!([alice["id"]]));
}

/// Found by a README audit: a `PUT /meta/{key}` that named nothing to change (`{}`, or
/// only the read-only `expires_at`) wrote a new version, so every client holding the
/// key's ETag got `412` next; and no answer told the new ETag.
#[tokio::test]
async fn a_metadata_change_that_names_nothing_writes_nothing_and_each_answer_tells_the_etag() {
    let (api, root) = api_and_root().await;
    let bearer = format!("Bearer {root}");
    let auth = [("authorization", bearer.as_str())];
    let created = request(&api, "PUT", "/kv/doc", Some("1"), &auth).await;
    let etag = created.header("etag").expect("an ETag");
    let same = expect(&api, ("GET", "/meta/doc", None), &root, 200).await;
    for body in [json!({}), json!({"expires_at": 1})] {
        let answer = request(&api, "PUT", "/meta/doc", Some(&body.to_string()), &auth).await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.body);
        assert_eq!(
            answer.header("etag").as_deref(),
            Some(etag.as_str()),
            "{body}"
        );
        assert_eq!(answer.json(), same, "{body}");
    }
    let revisions = expect(&api, ("GET", "/history/doc", None), &root, 200).await;
    assert_eq!(revisions["revisions"].as_array().map(Vec::len), Some(1));
    // Its precondition is still checked.
    let stale = [
        auth[0],
        ("if-match", "\"00000000-0000-0000-0000-000000000001\""),
    ];
    let refused = request(&api, "PUT", "/meta/doc", Some("{}"), &stale).await;
    assert_eq!(refused.status, 412, "{}", refused.body);
    let current = [auth[0], ("if-match", etag.as_str())];
    let taken = request(&api, "PUT", "/meta/doc", Some("{}"), &current).await;
    assert_eq!(taken.status, 200, "{}", taken.body);
    // A change is a new version, and its answer carries the new ETag, which the next
    // conditional write takes.
    let private = json!({"permissions": "f00"}).to_string();
    let changed = request(&api, "PUT", "/meta/doc", Some(&private), &current).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let new_etag = changed.header("etag").expect("the new ETag");
    assert_ne!(new_etag, etag);
    let next = [auth[0], ("if-match", new_etag.as_str())];
    let written = request(&api, "PUT", "/kv/doc", Some("2"), &next).await;
    assert_eq!(written.status, 200, "{}", written.body);
}

/// Found by an audit of bad input: `PUT /auth/users/{id} {}` rewrote the user record (a
/// new version to replicate, an audit entry) with nothing changed; so did a group's.
#[tokio::test]
async fn a_user_or_group_change_that_names_nothing_writes_nothing() {
    use crate::Backend;
    use crate::auth::{group_key, user_key};
    let (api, root) = api_and_root().await;
    let alice = expect(
        &api,
        ("POST", "/auth/users", Some(json!({"name": "alice"}))),
        &root,
        201,
    )
    .await;
    let alice_id = alice["id"].as_str().expect("id").to_owned();
    let team = json!({"name": "team", "members": [alice_id]});
    let team = expect(&api, ("POST", "/auth/groups", Some(team)), &root, 201).await;
    let team_id = team["id"].as_str().expect("id").to_owned();
    let versions = || {
        let store = api.backend.store();
        let uuid = |key: String| store.get(&key).unwrap().expect("a record").id.uuid;
        (uuid(user_key(&alice_id)), uuid(group_key(&team_id)))
    };
    let before = versions();
    let (user_path, group_path) = (
        format!("/auth/users/{alice_id}"),
        format!("/auth/groups/{team_id}"),
    );
    for (path, body) in [
        (user_path.as_str(), json!({})),
        (user_path.as_str(), json!({"id": "x", "created_at": 1})),
        (group_path.as_str(), json!({})),
    ] {
        let answer = expect(&api, ("PUT", path, Some(body.clone())), &root, 200).await;
        assert!(answer["name"].is_string(), "{path} {body}: {answer}");
    }
    assert_eq!(versions(), before, "a record was written anew");
    // A change is written.
    expect(
        &api,
        ("PUT", user_path.as_str(), Some(json!({"name": "alice2"}))),
        &root,
        200,
    )
    .await;
    expect(
        &api,
        ("PUT", group_path.as_str(), Some(json!({"name": "team2"}))),
        &root,
        200,
    )
    .await;
    let after = versions();
    assert!(
        after.0 != before.0 && after.1 != before.1,
        "{before:?} {after:?}"
    );
}
