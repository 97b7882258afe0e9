//! Listings by prefix (pages in byte order, bad `limit` and `cursor`) and by time, TTLs
//! on the backend's clock (moved by the test, so an expiry is checked to the
//! millisecond without waiting), and history (newest first, capped, off).

use std::sync::Arc;

use kvs_sync::WriteOp;
use serde_json::{Value, json};

use super::{
    Api, MemoryBackend, Setup, api, api_and_root, delete, expect, get, put, read_token,
    replica_put, request,
};
use crate::Backend;

/// Every key of a listing with `query`, page by page; the keys and the number of pages.
async fn list_all(api: &Arc<Api<MemoryBackend>>, query: &str) -> (Vec<String>, usize) {
    list_all_as(api, query, None).await
}

/// Every key of a listing with `query` as the holder of `token` sees it, page by page;
/// the keys and the number of pages.
async fn list_all_as(
    api: &Arc<Api<MemoryBackend>>,
    query: &str,
    token: Option<&str>,
) -> (Vec<String>, usize) {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|bearer| ("authorization", bearer.as_str()))
        .collect();
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/kv?{query}&cursor={c}"),
            None => format!("/kv?{query}"),
        };
        let page = request(api, "GET", &path, None, &headers).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert!(item["uuid"].is_string() && item["timestamp"].is_u64());
            keys.push(item["key"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null());
                return (keys, pages);
            }
        }
    }
}

/// A PUT of `body` at `path` that must succeed; its version's timestamp.
async fn put_stamped(api: &Arc<Api<MemoryBackend>>, path: &str, body: &str) -> u64 {
    let answer = put(api, path, body).await;
    assert!(
        matches!(answer.status, 200 | 201),
        "{path}: {}",
        answer.body
    );
    answer.json()["timestamp"].as_u64().unwrap()
}

#[tokio::test]
async fn listing_by_prefix_pages_in_byte_order() {
    let api = api(Setup::default());
    let mut expected: Vec<String> = (0..25).map(|i| format!("p/{i:03}")).collect();
    expected.push("p/Z".into());
    expected.push("p/ä".into());
    for key in expected.iter().rev() {
        let path = format!("/kv/{}", key.replace('ä', "%C3%A4"));
        assert_eq!(put(&api, &path, "0").await.status, 201);
    }
    put(&api, "/kv/q/1", "0").await;
    put(&api, "/kv/p", "0").await;
    expected.sort();
    let (keys, pages) = list_all(&api, "prefix=p/&limit=10").await;
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);
    let everything = get(&api, "/kv").await.json();
    assert_eq!(everything["items"].as_array().unwrap().len(), 29);
    assert!(everything["next_cursor"].is_null());
    // Beyond u64 is outside the document's schema (its maximum), as in Schemathesis.
    let bad_queries = [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "limit=18446744073709551616",
        "cursor=zz",
        "cursor=6",
    ];
    for bad in bad_queries {
        let answer = get(&api, &format!("/kv?{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.error_code(), "bad_request");
    }
    for big in ["1001", "100000", "18446744073709551615"] {
        let capped = get(&api, &format!("/kv?limit={big}")).await;
        assert_eq!(capped.status, 200, "limit={big}");
        assert_eq!(capped.json()["items"].as_array().unwrap().len(), 29);
    }
}

/// A listing shows a caller only the keys it may read under each key's current metadata,
/// as `/watch` does; a caller who may read none of many keys gets short pages with a
/// cursor rather than one request that reads them all.
#[tokio::test]
async fn a_listing_shows_only_the_keys_the_caller_may_read() {
    let (api, root) = api_and_root().await;
    let bob = expect(
        &api,
        ("POST", "/auth/users", Some(json!({"name": "bob"}))),
        &root,
        201,
    )
    .await;
    let bob = read_token(&api, &root, &bob["id"]).await;
    let mut everything = Vec::new();
    let mut open = Vec::new();
    for i in 0..12 {
        let key = format!("p/{i:02}");
        let path = format!("/kv/{key}");
        expect(&api, ("PUT", path.as_str(), Some(json!(i))), &root, 201).await;
        if i % 3 == 0 {
            let meta = format!("/meta/{key}");
            let private = Some(json!({"permissions": "f00"}));
            expect(&api, ("PUT", meta.as_str(), private), &root, 200).await;
        } else {
            open.push(key.clone());
        }
        everything.push(key);
    }
    for query in ["prefix=p/&limit=2", "prefix=p/", "since=0&limit=3"] {
        let (keys, _) = list_all_as(&api, query, Some(&bob)).await;
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, open, "{query}: bob sees {keys:?}");
        let (keys, _) = list_all_as(&api, query, Some(&root)).await;
        assert_eq!(keys.len(), everything.len(), "{query}: root sees {keys:?}");
    }
    // A key made readable again shows again.
    let opened = Some(json!({"permissions": "f01"}));
    expect(&api, ("PUT", "/meta/p/00", opened), &root, 200).await;
    let (keys, _) = list_all_as(&api, "prefix=p/", Some(&bob)).await;
    assert_eq!(keys.first().map(String::as_str), Some("p/00"));

    // Past 10,010 keys bob may not read, the first page stops empty with a cursor, and
    // following the cursors reaches the one key after them that he may read.
    let hidden = 10_500;
    for i in 0..hidden {
        let op = WriteOp {
            owner: Some("root".into()),
            permissions: 0xf00,
            ..replica_put(format!("h/{i:05}"), "0".into())
        };
        assert!(api.backend.write(op).await.expect("store").is_ok());
    }
    expect(&api, ("PUT", "/kv/h/zz", Some(json!(1))), &root, 201).await;
    let first = request(
        &api,
        "GET",
        "/kv?prefix=h/&limit=5",
        None,
        &[("authorization", &format!("Bearer {bob}"))],
    )
    .await
    .json();
    assert_eq!(first["items"], json!([]), "{first}");
    assert!(first["next_cursor"].is_string(), "{first}");
    let (keys, pages) = list_all_as(&api, "prefix=h/&limit=5", Some(&bob)).await;
    assert_eq!(keys, ["h/zz"]);
    assert_eq!(pages, 2);
    let (keys, _) = list_all_as(&api, "prefix=h/&limit=1000", Some(&root)).await;
    assert_eq!(keys.len(), hidden + 1);
}

#[tokio::test]
async fn listing_since_a_time_orders_by_timestamp() {
    let api = api(Setup::default());
    // Each write a millisecond after the last, so that the order by time is the order of
    // the writes.
    let clock = &api.backend;
    put_stamped(&api, "/kv/old", "0").await;
    clock.advance(1);
    let since = put_stamped(&api, "/kv/s/b", "0").await;
    clock.advance(1);
    put_stamped(&api, "/kv/s/a", "0").await;
    clock.advance(1);
    put_stamped(&api, "/kv/old2", "0").await;
    clock.advance(1);
    put_stamped(&api, "/kv/old", "1").await;
    let (keys, _) = list_all(&api, &format!("since={since}&limit=2")).await;
    assert_eq!(keys, ["s/b", "s/a", "old2", "old"]);
    let page = get(&api, &format!("/kv?since={since}")).await.json();
    let stamps: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(stamps.len(), 4, "{page}");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert_eq!(stamps[0], since);
    assert_eq!(get(&api, "/kv?since=yesterday").await.status, 400);
}

#[tokio::test]
async fn ttl_expires_keys_everywhere() {
    let api = api(Setup::default());
    // A new key's TTL counts from its timestamp, on the node's clock.
    let written = put_stamped(&api, "/kv/t/short?ttl=3s", "\"soon gone\"").await;
    let expires_at = written + 3000;
    put(&api, "/kv/t/long?ttl=1h", "1").await;
    let clock = &api.backend;
    clock.advance(expires_at - 1 - clock.now_ms());
    let answer = get(&api, "/kv/t/short").await;
    assert_eq!(answer.status, 200, "read 1 ms before the expiry");
    assert_eq!(answer.json()["data"], "soon gone");
    clock.advance(1);
    let answer = get(&api, "/kv/t/short").await;
    assert_eq!(answer.status, 404, "read at the expiry");
    let listed = get(&api, "/kv?prefix=t/").await.json();
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["t/long"]);
    assert_eq!(delete(&api, "/kv/t/short").await.status, 404);
    assert_eq!(
        put(&api, "/kv/t/short", "2").await.status,
        201,
        "an expired key is absent"
    );
    assert_eq!(put(&api, "/kv/t/x?ttl=36500d", "1").await.status, 201);
    let too_long = ["ttl=36501d", "ttl=106751991167d"];
    for bad in ["ttl=soon", "ttl=-1s", "ttl=0", "ttl=5y"]
        .into_iter()
        .chain(too_long)
    {
        let answer = put(&api, &format!("/kv/t/x?{bad}"), "1").await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.error_code(), "bad_request");
    }
}

#[tokio::test]
async fn history_is_newest_first_and_capped() {
    let api = api(Setup {
        max_revisions: 3,
        ..Setup::default()
    });
    for i in 0..5 {
        put(&api, "/kv/h", &i.to_string()).await;
    }
    let history = get(&api, "/history/h").await;
    assert_eq!(history.status, 200);
    let revisions = history.json()["revisions"].as_array().unwrap().clone();
    let data: Vec<Value> = revisions.iter().map(|r| r["data"].clone()).collect();
    assert_eq!(data, [json!(4), json!(3), json!(2)]);
    let current = get(&api, "/kv/h").await.json();
    assert_eq!(revisions[0]["uuid"], current["uuid"]);
    assert_eq!(revisions[0]["timestamp"], current["timestamp"]);
    assert_eq!(get(&api, "/history/absent").await.status, 404);
    delete(&api, "/kv/h").await;
    assert_eq!(get(&api, "/history/h").await.status, 404);
    assert_eq!(get(&api, "/history/_bad").await.error_code(), "invalid_key");
}

#[tokio::test]
async fn history_off_answers_404() {
    let api = api(Setup {
        history_enabled: false,
        ..Setup::default()
    });
    put(&api, "/kv/h", "1").await;
    let answer = get(&api, "/history/h").await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "not_found")
    );
}

#[tokio::test]
async fn a_query_that_is_not_percent_encoded_utf8_is_refused() {
    let api = api(Setup::default());
    put(&api, "/kv/%25ZZ/a", "1").await;
    put(&api, "/kv/caf%C3%A9", "2").await;
    for query in [
        "prefix=%ZZ",
        "prefix=%",
        "prefix=%4",
        "prefix=%FF",
        "pre%fix=a",
    ] {
        for path in ["/kv", "/watch", "/audit"] {
            let answer = get(&api, &format!("{path}?{query}")).await;
            assert_eq!(answer.status, 400, "{path}?{query}: {}", answer.body);
            assert_eq!(answer.error_code(), "bad_request", "{path}?{query}");
        }
    }
    // `/health` reads no query, so a probe with a malformed one is still answered.
    let health = get(&api, "/health?x=%ZZ").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    // Escaped, the same characters are a prefix like any other.
    let listed = get(&api, "/kv?prefix=%25ZZ").await.json();
    assert_eq!(listed["items"][0]["key"], "%ZZ/a");
    let listed = get(&api, "/kv?prefix=caf%C3%A9").await.json();
    assert_eq!(listed["items"][0]["key"], "café");
}

#[tokio::test]
async fn an_unknown_query_parameter_is_refused_and_changes_nothing() {
    let api = api(Setup::default());
    put(&api, "/kv/users/a", "1").await;
    // Misspelt parameters, and other stores' (Consul's `cas` and `recurse`), on writes
    // and on the reads that take parameters: each would have changed what the request
    // does had it been ignored.
    for (method, path, parameter) in [
        ("PUT", "/kv/typo?tll=30s", "tll"),
        ("PUT", "/kv/lock?cas=0", "cas"),
        ("PUT", "/kv/users/a?ttl=1s&x=1", "x"),
        ("DELETE", "/kv/users/a?recurse", "recurse"),
        ("PUT", "/meta/users/a?ttl=1s", "ttl"),
        ("GET", "/kv?prefx=users/", "prefx"),
        ("HEAD", "/kv?prefx=users/", "prefx"),
        ("GET", "/watch?prefx=users/", "prefx"),
        ("GET", "/audit?limt=1", "limt"),
    ] {
        let body = (method == "PUT").then_some(r#"{"data":2}"#);
        let answer = request(&api, method, path, body, &[]).await;
        assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
        if method != "HEAD" {
            assert_eq!(answer.error_code(), "bad_request", "{method} {path}");
            assert!(
                answer.body.contains(parameter),
                "{method} {path}: {}",
                answer.body
            );
        }
    }
    assert_eq!(get(&api, "/kv/typo").await.status, 404);
    assert_eq!(get(&api, "/kv/lock").await.status, 404);
    let kept = get(&api, "/kv/users/a").await;
    assert_eq!((kept.status, kept.json()["data"].clone()), (200, json!(1)));
    let meta = get(&api, "/meta/users/a").await.json();
    assert!(meta.get("expires_at").is_some_and(Value::is_null), "{meta}");
    // Each request's own parameters are taken.
    assert_eq!(put(&api, "/kv/b?ttl=1h", "3").await.status, 201);
    for path in [
        "/kv?prefix=users/&limit=5&since=0&cursor=",
        "/audit?since_seq=0&limit=1",
    ] {
        assert_eq!(get(&api, path).await.status, 200, "{path}");
    }
    // Reads that take no parameters ignore theirs (a cache buster changes nothing), as
    // a probe and a scrape do; an unknown path and a method the path does not answer are
    // answered as before.
    for path in [
        "/kv/users/a?consistent",
        "/history/users/a?limit=1",
        "/members?all",
    ] {
        assert_eq!(get(&api, path).await.status, 200, "{path}");
    }
    assert_eq!(get(&api, "/health?verbose").await.status, 200);
    assert_eq!(get(&api, "/metrics?name[]=x").await.status, 200);
    assert_eq!(get(&api, "/nowhere?x=1").await.status, 404);
    assert_eq!(
        request(&api, "POST", "/kv/a?x=1", None, &[]).await.status,
        405
    );
}
