//! What schemathesis (`tests/schemathesis.rs`) found, pinned in process: the served
//! OpenAPI document follows `auth_enabled`, every `405` names the allowed methods,
//! requests the document calls invalid are refused, and the `ttl` a PUT takes is what the
//! document's pattern allows.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Api, MemoryBackend, Setup, api, api_and_root, get, put, request};

/// `GET /openapi.json` with `token`.
async fn document(api: &std::sync::Arc<Api<MemoryBackend>>, token: &str) -> Value {
    let bearer = format!("Bearer {token}");
    request(
        api,
        "GET",
        "/openapi.json",
        None,
        &[("authorization", &bearer)],
    )
    .await
    .json()
}

/// The document's operations: (path, methods in upper case).
fn operations(document: &Value) -> Vec<(String, BTreeSet<String>)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item")
                .keys()
                .filter(|k| *k != "parameters")
                .map(|k| k.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[tokio::test]
async fn the_document_declares_security_only_with_auth_on() {
    let (with_auth, root) = api_and_root().await;
    assert_eq!(
        get(&with_auth, "/openapi.json").await.status,
        401,
        "auth on: a token"
    );
    let on = document(&with_auth, &root).await;
    assert_eq!(on["security"], serde_json::json!([{"bearerAuth": []}]));
    assert!(on["components"]["securitySchemes"]["bearerAuth"].is_object());
    assert!(on["paths"]["/auth/users"].is_object());

    let without = api(Setup::default());
    let off = get(&without, "/openapi.json").await.json();
    assert!(off.get("security").is_none(), "auth off: no security");
    assert!(off["components"].get("securitySchemes").is_none());
    assert!(
        operations(&off)
            .iter()
            .all(|(p, _)| !p.starts_with("/auth/")),
        "auth off: /auth/... answers 404 to everything and is not documented"
    );
    assert_eq!(operations(&off).len() + 6, operations(&on).len());
}

#[tokio::test]
async fn every_405_names_the_methods_the_document_declares() {
    let (api, root) = api_and_root().await;
    let bearer = format!("Bearer {root}");
    let document = document(&api, &root).await;
    for (path, declared) in operations(&document) {
        let concrete = path
            .replace("{key}", "a")
            .replace("{id}", "x")
            .replace("{jti}", "x");
        let answer = request(
            &api,
            "TRACE",
            &concrete,
            None,
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(answer.status, 405, "TRACE {concrete}: {}", answer.body);
        assert_eq!(answer.error_code(), "method_not_allowed");
        let allow = answer.header("allow").expect("Allow on a 405");
        let allowed: BTreeSet<String> = allow.split(", ").map(str::to_owned).collect();
        assert!(
            declared.is_subset(&allowed),
            "{path}: Allow {allow:?} lacks some of {declared:?}"
        );
    }
}

#[tokio::test]
async fn if_match_wins_over_if_none_match_and_no_value_of_either_is_refused() {
    let api = api(Setup::default());
    let json = ("content-type", "application/json");
    // Any string the schema allows is a condition, never a 400: a tag not of ours names
    // no version.
    let headers = [json, ("if-match", "\"x\""), ("if-none-match", "AAA")];
    let answer = request(&api, "PUT", "/kv/a", Some("1"), &headers).await;
    assert_eq!(answer.status, 412, "{}", answer.body);
    let headers = [("if-match", "*"), ("if-none-match", "*")];
    let answer = request(&api, "DELETE", "/kv/a", None, &headers).await;
    assert_eq!(answer.status, 412, "{}", answer.body);
    for value in ["AAA", "", "0", "\"a\", \"b\""] {
        let headers = [json, ("if-none-match", value)];
        let answer = request(&api, "PUT", "/kv/b", Some("1"), &headers).await;
        assert!(
            [200, 201].contains(&answer.status),
            "{value:?}: {} {}",
            answer.status,
            answer.body
        );
    }
}

#[tokio::test]
async fn change_bodies_must_be_objects() {
    let (api, root) = api_and_root().await;
    let bearer = format!("Bearer {root}");
    let auth = [("authorization", bearer.as_str())];
    let answer = request(&api, "PUT", "/kv/a", Some("1"), &auth).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    for (path, body) in [
        ("/meta/a", "[null, null, null]"),
        ("/auth/users/root", "[null, null]"),
        ("/auth/groups", "[\"team\"]"),
    ] {
        let method = if path == "/auth/groups" {
            "POST"
        } else {
            "PUT"
        };
        let answer = request(&api, method, path, Some(body), &auth).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, "bad_request"),
            "{method} {path} {body}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("must be a JSON object"),
            "{}",
            answer.body
        );
    }
}

#[tokio::test]
async fn watch_checks_since_even_with_a_last_event_id() {
    let api = api(Setup::default());
    let headers = [("last-event-id", "12.x")];
    let answer = request(&api, "GET", "/watch?since=-1", None, &headers).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "bad_request")
    );
    for id in ["", "12", "12.0f3e0000-0000-4000-8000-000000000000"] {
        let answer = request(&api, "GET", "/watch", None, &[("last-event-id", id)]).await;
        assert_eq!(answer.status, 200, "Last-Event-ID {id:?}: {}", answer.body);
    }
    // Something after the timestamp that is no uuid would resume from it and send that
    // event again.
    for id in ["x.1", "12.0f3e", "12."] {
        let answer = request(&api, "GET", "/watch", None, &[("last-event-id", id)]).await;
        assert_eq!(answer.status, 400, "Last-Event-ID {id:?}");
    }
}

/// The document's pattern for a PUT's `ttl` matches exactly the values a PUT takes (a
/// positive duration of at most 36500d): at the bounds of every unit, and between. (A
/// looser pattern let schemathesis send `ttl=0183104062m`, over the bound, as valid.)
#[tokio::test]
async fn the_ttl_pattern_allows_exactly_the_ttls_a_put_takes() {
    let api = api(Setup::default());
    let document = get(&api, "/openapi.json").await.json();
    let parameters = document["paths"]["/kv/{key}"]["put"]["parameters"]
        .as_array()
        .expect("parameters");
    let ttl = parameters
        .iter()
        .find(|p| p["name"] == "ttl")
        .expect("a ttl parameter");
    let pattern = regex::Regex::new(ttl["schema"]["pattern"].as_str().expect("pattern"))
        .expect("the pattern compiles");
    let days: u64 = 36_500;
    let bounds = [
        ("ms", days * 86_400_000),
        ("s", days * 86_400),
        ("", days * 86_400),
        ("m", days * 1_440),
        ("h", days * 24),
        ("d", days),
    ];
    let mut tried = 0;
    for (unit, most) in bounds {
        let digits = most.to_string().len() as u32;
        let mut values = vec![0, 1, 9, 10, most / 10, most - 1, most, most + 1, most * 10];
        values.extend([10u64.pow(digits - 1), 10u64.pow(digits) - 1]);
        values.extend((1..=12).map(|step| most / 7 * step));
        for value in values {
            for text in [format!("{value}{unit}"), format!("00{value}{unit}")] {
                let answer = put(&api, &format!("/kv/ttl?ttl={text}"), "1").await;
                let taken = answer.status == 200 || answer.status == 201;
                assert!(taken || answer.status == 400, "{text}: {}", answer.status);
                assert_eq!(pattern.is_match(&text), taken, "ttl={text}");
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 6 * 2 * 23);
}
