//! The key-value contract's statuses, error codes and JSON fields on `/kv/{key}`: HEAD,
//! percent-encoded keys, invalid keys, bodies that are not JSON, the body limit, absent
//! keys, unknown routes and wrong methods, deletes, compare-and-set.

use serde_json::{Value, json};

use super::{Setup, api, delete, get, put, request};

#[tokio::test]
async fn head_answers_headers_without_body() {
    let api = api(Setup::default());
    let uuid = put(&api, "/kv/h", "[1,2,3]").await.json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let head = request(&api, "HEAD", "/kv/h", None, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("etag"), Some(format!("\"{uuid}\"")));
    assert!(head.body.is_empty());
    // GET's headers, its Content-Length included.
    let got = request(&api, "GET", "/kv/h", None, &[]).await;
    assert_eq!(
        head.header("content-length"),
        Some(got.body.len().to_string())
    );
    let absent = request(&api, "HEAD", "/kv/absent", None, &[]).await;
    assert_eq!(absent.status, 404);
}

#[tokio::test]
async fn percent_encoded_utf8_keys() {
    let api = api(Setup::default());
    assert_eq!(
        put(&api, "/kv/caf%C3%A9/%E2%9C%93%20ok", "1").await.status,
        201
    );
    let got = get(&api, "/kv/caf%C3%A9/%E2%9C%93%20ok").await;
    assert_eq!(got.json()["data"], 1);
    assert_eq!(put(&api, "/kv/a%2Fb", "2").await.status, 201);
    assert_eq!(
        get(&api, "/kv/a/b").await.json()["data"],
        2,
        "%2F is a separator in a key"
    );
    assert_eq!(
        get(&api, "/kv/a/b/").await.json()["data"],
        2,
        "a trailing / is not part of a key"
    );
    let listed = get(&api, "/kv?prefix=caf%C3%A9/").await;
    assert_eq!(listed.json()["items"][0]["key"], "café/✓ ok");
}

#[tokio::test]
async fn invalid_keys_are_rejected_and_change_nothing() {
    let api = api(Setup::default());
    let long = "k".repeat(513);
    let just_fits = "k".repeat(512);
    for path in [
        "/kv/_system".to_owned(),
        "/kv/_a/b".to_owned(),
        "/kv/a//b".to_owned(),
        "/kv/a/%2E/b".to_owned(),
        "/kv/a/%2E%2E/b".to_owned(),
        "/kv/a%00b".to_owned(),
        "/kv/tab%09key".to_owned(),
        "/kv/%FF%FE".to_owned(),
        "/kv/a%zz".to_owned(),
        "/kv/a%4".to_owned(),
        "/kv/a%".to_owned(),
        format!("/kv/{long}"),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let answer = request(&api, method, &path, Some("1"), &[]).await;
            assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
            assert_eq!(answer.error_code(), "invalid_key", "{method} {path}");
        }
    }
    // `/kv/` is the listing for a GET; a write or a delete there names the empty key.
    for method in ["PUT", "DELETE"] {
        let answer = request(&api, method, "/kv/", Some("1"), &[]).await;
        assert_eq!(answer.status, 400, "{method} /kv/: {}", answer.body);
        assert_eq!(answer.error_code(), "invalid_key", "{method} /kv/");
    }
    assert_eq!(
        put(&api, &format!("/kv/{just_fits}"), "1").await.status,
        201
    );
    let listed = get(&api, "/kv").await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bodies_must_be_json() {
    let api = api(Setup::default());
    for body in [
        "",
        "   ",
        "{bad",
        "[1,",
        "undefined",
        "{\"a\":1} trailing",
        "'single'",
        // Lone surrogate escapes: no text, and strict JSON readers refuse them.
        r#""\ud800""#,
        r#"{"a":["\uDFFF"]}"#,
        r#""\ud83d\u0041""#,
        r#""\ud83d\\""#,
        r#"["\ude00\ud83d"]"#,
    ] {
        let answer = put(&api, "/kv/j", body).await;
        assert_eq!(answer.status, 400, "{body:?}");
        assert_eq!(answer.error_code(), "invalid_json", "{body:?}");
    }
    assert_eq!(get(&api, "/kv/j").await.status, 404);
    // A pair is one character, kept as sent; so is an escaped backslash before "ud".
    for body in [
        r#""\ud83d\ude00""#,
        r#""\\ud800""#,
        r#""\uD7FF""#,
        r#""\\\ud83d\ude00\"""#,
    ] {
        assert_eq!(put(&api, "/kv/j", body).await.status / 100, 2, "{body:?}");
        let stored = get(&api, "/kv/j").await.json();
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(stored["data"], sent, "{body:?}");
    }
    // A pair does not make the body checked otherwise: a number beyond f64 and deep
    // nesting are taken as they are, with one as without one.
    let deep = format!("{}\"\\ud83d\\ude00\"{}", "[".repeat(200), "]".repeat(200));
    for body in [r#"["\ud83d\ude00",1e400]"#, r#"[1e400]"#, &deep] {
        assert_eq!(put(&api, "/kv/j", body).await.status / 100, 2, "{body:?}");
        let stored = get(&api, "/kv/j").await;
        assert!(stored.body.contains(body), "{body:?}: {}", stored.body);
    }
}

#[tokio::test]
async fn body_limit_allows_just_under_and_refuses_over() {
    let api = api(Setup {
        max_value_bytes: 1000,
        ..Setup::default()
    });
    let fits = format!("\"{}\"", "x".repeat(998));
    assert_eq!(fits.len(), 1000);
    let answer = put(&api, "/kv/big", &fits).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let stored = get(&api, "/kv/big").await.json();
    assert_eq!(stored["data"].as_str().unwrap().len(), 998);
    let over = format!("\"{}\"", "x".repeat(999));
    let answer = put(&api, "/kv/big", &over).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "payload_too_large");
    let stored = get(&api, "/kv/big").await.json();
    assert_eq!(stored["data"].as_str().unwrap().len(), 998);
}

#[tokio::test]
async fn absent_keys_unknown_routes_and_wrong_methods() {
    let api = api(Setup::default());
    let answer = get(&api, "/kv/nothing").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    let answer = delete(&api, "/kv/nothing").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    let answer = get(&api, "/nowhere").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
    for (method, path) in [
        ("POST", "/kv/x"),
        ("PATCH", "/kv/x"),
        ("POST", "/kv"),
        ("DELETE", "/health"),
        ("PUT", "/history/x"),
    ] {
        let answer = request(&api, method, path, Some("1"), &[]).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.error_code(), "method_not_allowed");
    }
}

#[tokio::test]
async fn delete_then_absent_everywhere() {
    let api = api(Setup::default());
    put(&api, "/kv/d/1", "1").await;
    put(&api, "/kv/d/2", "2").await;
    let answer = delete(&api, "/kv/d/1").await;
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    assert_eq!(get(&api, "/kv/d/1").await.status, 404);
    assert_eq!(delete(&api, "/kv/d/1").await.status, 404);
    let keys: Vec<Value> = get(&api, "/kv?prefix=d/").await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(keys, [json!("d/2")]);
    assert_eq!(
        put(&api, "/kv/d/1", "3").await.status,
        201,
        "a deleted key is created anew"
    );
}

#[tokio::test]
async fn a_read_naming_the_current_etag_in_if_none_match_is_not_modified() {
    let api = api(Setup::default());
    let first = put(&api, "/kv/n", "1").await.json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let etag = format!("\"{first}\"");
    let listed = format!("\"00000000-0000-0000-0000-000000000000\", W/{etag}");
    for (method, tag) in [
        ("GET", etag.as_str()),
        ("HEAD", etag.as_str()),
        ("GET", listed.as_str()),
        ("GET", "*"),
    ] {
        let answer = request(&api, method, "/kv/n", None, &[("if-none-match", tag)]).await;
        assert_eq!(answer.status, 304, "{method} {tag}");
        assert!(answer.body.is_empty());
        assert_eq!(answer.headers["etag"], etag.as_str());
    }
    let other = [("if-none-match", "\"00000000-0000-0000-0000-000000000000\"")];
    assert_eq!(
        request(&api, "GET", "/kv/n", None, &other).await.status,
        200
    );
    put(&api, "/kv/n", "2").await;
    let changed = request(&api, "GET", "/kv/n", None, &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["data"], 2);
    let absent = request(&api, "GET", "/kv/none", None, &[("if-none-match", "*")]).await;
    assert_eq!(absent.status, 404);
}

#[tokio::test]
async fn a_write_naming_the_current_etag_in_if_none_match_is_refused() {
    let api = api(Setup::default());
    let first = put(&api, "/kv/m", "1").await.json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let current = format!("\"{first}\"");
    let same = [("if-none-match", current.as_str())];
    let refused = request(&api, "PUT", "/kv/m", Some("2"), &same).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (412, "precondition_failed")
    );
    let kept = request(&api, "DELETE", "/kv/m", None, &same).await;
    assert_eq!(kept.status, 412);
    assert_eq!(get(&api, "/kv/m").await.json()["data"], 1);
    // Another tag, ours or not, names no current version: the write goes ahead.
    let other = [("if-none-match", "\"00000000-0000-0000-0000-000000000000\"")];
    assert_eq!(
        request(&api, "PUT", "/kv/m", Some("3"), &other)
            .await
            .status,
        200
    );
    let foreign = [("if-none-match", "\"v1\"")];
    assert_eq!(
        request(&api, "PUT", "/kv/m", Some("4"), &foreign)
            .await
            .status,
        200
    );
    assert_eq!(get(&api, "/kv/m").await.json()["data"], 4);
    let now = get(&api, "/kv/m").await.json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let weak = format!("W/\"{now}\"");
    let weakly = request(&api, "PUT", "/kv/m", Some("5"), &[("if-none-match", &weak)]).await;
    assert_eq!(weakly.status, 412, "a weak tag compares weakly");
    let listed = format!("\"a\", \"{now}\"");
    let in_a_list = request(
        &api,
        "PUT",
        "/kv/m",
        Some("6"),
        &[("if-none-match", &listed)],
    )
    .await;
    assert_eq!(in_a_list.status, 412, "one tag of a list names it");
    // `*` on a DELETE: only if the key is absent.
    let star = request(&api, "DELETE", "/kv/m", None, &[("if-none-match", "*")]).await;
    assert_eq!(star.status, 412);
    assert_eq!(get(&api, "/kv/m").await.json()["data"], 4);
}

#[tokio::test]
async fn compare_and_set() {
    let api = api(Setup::default());
    let first = put(&api, "/kv/c", "1").await.json()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let etag = format!("\"{first}\"");
    let if_match = [("if-match", etag.as_str())];
    let answer = request(&api, "PUT", "/kv/c", Some("2"), &if_match).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let second = answer.json()["uuid"].as_str().unwrap().to_owned();
    let stale = request(&api, "PUT", "/kv/c", Some("3"), &if_match).await;
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (412, "precondition_failed")
    );
    assert_eq!(get(&api, "/kv/c").await.json()["data"], 2);
    let if_none_match = [("if-none-match", "*")];
    let exists = request(&api, "PUT", "/kv/c", Some("4"), &if_none_match).await;
    assert_eq!(exists.status, 412);
    let fresh = request(&api, "PUT", "/kv/c2", Some("5"), &if_none_match).await;
    assert_eq!(fresh.status, 201);
    let stale_delete = request(&api, "DELETE", "/kv/c", None, &if_match).await;
    assert_eq!(stale_delete.status, 412);
    let absent = request(&api, "PUT", "/kv/none", Some("1"), &if_match).await;
    assert_eq!(absent.status, 412);
    let current = format!("\"{second}\"");
    // Strong comparison: the weak form of the current etag does not match, nor does a
    // list of tags.
    let weak = format!("W/{current}");
    let weak_delete = request(&api, "DELETE", "/kv/c", None, &[("if-match", &weak)]).await;
    assert_eq!(weak_delete.status, 412);
    let list = format!("{current}, \"other\"");
    let listed = request(&api, "DELETE", "/kv/c", None, &[("if-match", &list)]).await;
    assert_eq!(listed.status, 412);
    let good_delete = request(&api, "DELETE", "/kv/c", None, &[("if-match", &current)]).await;
    assert_eq!(good_delete.status, 204);
    assert_eq!(get(&api, "/kv/c").await.status, 404);
}
