//! Forged, expired, revoked and orphaned tokens, and the anonymous-access flags.

use super::*;

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
        ("GET", "/sync", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
        ("GET", "/watch", None),
        ("GET", "/meta/a", None),
        ("PUT", "/meta/a", Some("{}")),
        ("GET", "/auth/users", None),
        ("POST", "/auth/tokens", Some("{}")),
        // Without a token, input it could never send is still 401, not 400.
        ("DELETE", "/kv/_x", None),
        ("PUT", "/kv/a//b", Some("1")),
        ("PUT", "/kv/a?ttl=soon", Some("1")),
        ("GET", "/kv/a%zz", None),
        ("GET", "/history/_x", None),
        ("PUT", "/meta/a//b", Some("{}")),
    ] {
        let answer = call(&closed, method, path, body, None);
        assert_eq!(answer.status, 401, "{method} {path}");
        assert_eq!(answer.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // Health and the console page stay open; the operations endpoints take a token.
    for path in ["/health", "/ui"] {
        assert_eq!(call(&closed, "GET", path, None, None).status, 200, "{path}");
    }
    for path in ["/members", "/sync", "/metrics", "/openapi.json"] {
        let answer = call(&closed, "GET", path, None, Some(&root));
        assert_eq!(answer.status, 200, "{path} with a token");
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
    // Anonymous reads cover keys and history, not the cluster and operations endpoints
    // nor the change stream.
    for path in ["/members", "/sync", "/metrics", "/openapi.json", "/watch"] {
        assert_401(&call(&reads, "GET", path, None, None), path);
    }
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
    // A key written anonymously is owned by `anonymous`, and the owner's digit is
    // anonymous callers' there: they may overwrite it, as they created it.
    expect(
        &call(&writes, "PUT", "/kv/w", Some("2"), None),
        200,
        "anonymous overwrite of an anonymous key",
    );
    let meta = expect(
        &call(&writes, "GET", "/meta/w", None, Some(&root)),
        200,
        "meta",
    );
    assert_eq!(meta["owner"], "anonymous", "{meta}");
    assert_eq!(meta["group"], serde_json::Value::Null, "{meta}");
    expect(
        &call(&writes, "PUT", "/kv/r", Some("1"), Some(&root)),
        201,
        "root writes",
    );
    assert_401(
        &call(&writes, "PUT", "/kv/r", Some("2"), None),
        "root's key, default f31: others may not write",
    );
    expect(
        &call(
            &writes,
            "PUT",
            "/meta/r",
            Some(r#"{"permissions":"f3b"}"#),
            Some(&root),
        ),
        200,
        "chmod",
    );
    expect(
        &call(&writes, "PUT", "/kv/r", Some("2"), None),
        200,
        "others digit with W",
    );
    expect(
        &call(&writes, "PUT", "/kv/r/below", Some("3"), None),
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

/// A token is valid on every node by its signature before its record has replicated to
/// all of them. Revoking it on a node that has no record of it yet answered `404` and
/// recorded nothing, so the token kept working (found by a black-box audit: a revoke
/// sent to another node right after the issue). Two nodes with one `jwt_secret` that
/// share no data stand for the moment before the record arrives.
#[test]
fn a_token_revoked_where_its_record_has_not_arrived_stops_working() {
    let issuer = auth_node("revoke-elsewhere-secret", "");
    let other = auth_node("revoke-elsewhere-secret", "");
    let root = root_token(&issuer);
    let issued = issue(&issuer, &root, "root", &["read"], "1h");
    let token = issued["token"].as_str().expect("token");
    let jti = issued["jti"].as_str().expect("jti");
    let read = call(&other, "GET", "/kv/anything", None, Some(token));
    assert_eq!(read.status, 404, "the token works on the other node");
    let path = format!("/auth/tokens/{jti}");
    let answer = call(&other, "DELETE", &path, None, Some(&root));
    let body = expect(&answer, 404, "revoke where the record is missing");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("recorded"), "{message}");
    assert_401(
        &call(&other, "GET", "/kv/anything", None, Some(token)),
        "the revoked token on the node that revoked it",
    );
    // Not a jti a token could carry: nothing recorded, the plain 404.
    for bad in ["not-a-uuid", &jti.to_uppercase()] {
        let answer = call(
            &other,
            "DELETE",
            &format!("/auth/tokens/{bad}"),
            None,
            Some(&root),
        );
        let body = expect(&answer, 404, bad);
        assert!(!body.to_string().contains("recorded"), "{bad}: {body}");
    }
}
