//! Tests of token issuing and verification, forged tokens included.

use super::*;
use serde_json::json;

const SECRET: &[u8] = b"cluster-jwt-secret-for-tests";
const NOW: u64 = 1_700_000_000_123;
const HOUR: u64 = 3_600_000;

fn keys() -> TokenKeys {
    TokenKeys::new(SECRET).expect("non-empty secret")
}

/// Unpadded base64url, to build tokens by hand.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn valid_claims_json() -> serde_json::Value {
    json!({
        "sub": "alice", "scopes": ["admin"], "exp": NOW / 1000 + 3600,
        "iat": NOW / 1000, "jti": "6f1c2d3e-0000-4000-8000-000000000000"
    })
}

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    let mut next = || it.next().expect("three parts").to_owned();
    (next(), next(), next())
}

fn sign_with(alg: Algorithm, claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
        .expect("signing")
}

#[test]
fn base64url_helper_matches_known_vectors() {
    assert_eq!(b64url(b""), "");
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

#[test]
fn issue_then_verify_round_trips() {
    let keys = keys();
    let issued = keys
        .issue(
            "alice",
            &[Scope::Write, Scope::Read, Scope::Write],
            HOUR,
            NOW,
        )
        .expect("issue");
    let claims = keys.verify(&issued.token, NOW).expect("verify");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.scopes, vec![Scope::Read, Scope::Write]);
    assert_eq!(claims.jti, issued.jti);
    assert_eq!(claims.iat, NOW.div_ceil(1000));
    assert_eq!(claims.exp - claims.iat, HOUR / 1000, "exp - iat is the ttl");
    assert_eq!(claims.exp * 1000, issued.expires_at);
    assert!(Uuid::parse_str(&issued.jti).is_ok());
}

#[test]
fn expiry_is_rounded_up_to_a_second_and_checked_with_the_given_time() {
    let keys = keys();
    let issued = keys
        .issue("alice", &[Scope::Read], 500, NOW)
        .expect("issue");
    // The ttl and the time of issue are each rounded up to a second.
    assert!(issued.expires_at >= NOW + 500 && issued.expires_at < NOW + 2500);
    assert!(keys.verify(&issued.token, issued.expires_at - 1).is_ok());
    assert_eq!(
        keys.verify(&issued.token, issued.expires_at),
        Err(TokenError::Expired)
    );
    assert_eq!(
        keys.verify(&issued.token, u64::MAX),
        Err(TokenError::Expired)
    );
    // A token is valid before its iat too: node clocks may differ a little.
    assert!(keys.verify(&issued.token, 0).is_ok());
}

#[test]
fn a_token_is_refused_before_its_nbf_beyond_the_leeway() {
    let keys = keys();
    let nbf = NOW / 1000 + 3600;
    let mut claims = valid_claims_json();
    claims["exp"] = json!(nbf + 3600);
    claims["nbf"] = json!(nbf);
    let token = sign_with(Algorithm::HS256, &claims, SECRET);
    assert_eq!(keys.verify(&token, NOW), Err(TokenError::NotYetValid));
    assert_eq!(
        keys.verify(&token, nbf * 1000 - NBF_LEEWAY_MS - 1),
        Err(TokenError::NotYetValid)
    );
    // Clocks differ a little: within the leeway, and from nbf on, it is valid.
    let claims_at = keys
        .verify(&token, nbf * 1000 - NBF_LEEWAY_MS)
        .expect("within leeway");
    assert_eq!(claims_at.nbf, Some(nbf));
    assert!(keys.verify(&token, nbf * 1000).is_ok());
    // An nbf that is not a NumericDate makes the token malformed.
    claims["nbf"] = json!("soon");
    let token = sign_with(Algorithm::HS256, &claims, SECRET);
    assert_eq!(keys.verify(&token, NOW), Err(TokenError::Malformed));
    assert_eq!(TokenError::NotYetValid.status(), 401);
}

#[test]
fn jtis_are_unique() {
    let keys = keys();
    let a = keys
        .issue("alice", &[Scope::Read], HOUR, NOW)
        .expect("issue");
    let b = keys
        .issue("alice", &[Scope::Read], HOUR, NOW)
        .expect("issue");
    assert_ne!(a.jti, b.jti);
    assert_ne!(a.token, b.token);
}

#[test]
fn bad_ttls_are_refused() {
    let keys = keys();
    assert_eq!(
        keys.issue("a", &[Scope::Read], 0, NOW),
        Err(TokenError::InvalidTtl)
    );
    assert_eq!(
        keys.issue("a", &[Scope::Read], u64::MAX, NOW),
        Err(TokenError::InvalidTtl)
    );
    assert_eq!(TokenError::InvalidTtl.code(), "bad_request");
}

#[test]
fn empty_secret_is_refused() {
    assert!(matches!(TokenKeys::new(b""), Err(TokenError::EmptySecret)));
}

#[test]
fn wrong_secret_is_a_bad_signature() {
    let token = TokenKeys::new(b"another secret")
        .and_then(|k| k.issue("alice", &[Scope::Admin], HOUR, NOW))
        .expect("issue");
    assert_eq!(
        keys().verify(&token.token, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn alg_none_is_rejected() {
    let keys = keys();
    let payload = b64url(valid_claims_json().to_string().as_bytes());
    let genuine = keys
        .issue("alice", &[Scope::Admin], HOUR, NOW)
        .expect("issue");
    let (_, _, genuine_sig) = parts(&genuine.token);
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"typ":"JWT"}"#,
        r#"{"alg":null}"#,
        r#"{"alg":""}"#,
    ] {
        let header = b64url(header.as_bytes());
        for sig in ["", genuine_sig.as_str()] {
            let forged = format!("{header}.{payload}.{sig}");
            let err = keys.verify(&forged, NOW).expect_err("alg none must fail");
            assert!(
                matches!(err, TokenError::Algorithm | TokenError::Malformed),
                "{header}: {err:?}"
            );
            assert_eq!(err.code(), "unauthorized");
        }
    }
}

#[test]
fn other_hmac_algorithms_are_rejected_even_with_the_right_secret() {
    let keys = keys();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign_with(alg, &valid_claims_json(), SECRET);
        assert_eq!(
            keys.verify(&token, NOW),
            Err(TokenError::Algorithm),
            "{alg:?}"
        );
    }
}

#[test]
fn asymmetric_algorithm_headers_are_rejected() {
    let keys = keys();
    let genuine = sign_with(Algorithm::HS256, &valid_claims_json(), SECRET);
    let (_, payload, sig) = parts(&genuine);
    for alg in ["RS256", "ES256", "PS256", "EdDSA", "HS1024", "hs256"] {
        let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let forged = format!("{header}.{payload}.{sig}");
        let err = keys.verify(&forged, NOW).expect_err(alg);
        assert!(
            matches!(err, TokenError::Algorithm | TokenError::Malformed),
            "{alg}: {err:?}"
        );
    }
}

#[test]
fn tampered_payload_or_header_is_a_bad_signature() {
    let keys = keys();
    let genuine = keys
        .issue("alice", &[Scope::Read], HOUR, NOW)
        .expect("issue");
    let (header, _, sig) = parts(&genuine.token);
    let mut claims = valid_claims_json();
    claims["jti"] = json!(genuine.jti);
    claims["sub"] = json!("alice");
    let payload = b64url(claims.to_string().as_bytes());
    let forged = format!("{header}.{payload}.{sig}");
    assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));

    let (_, payload, _) = parts(&genuine.token);
    let other_header = b64url(br#"{"typ":"JWT","alg":"HS256","kid":"x"}"#);
    let forged = format!("{other_header}.{payload}.{sig}");
    assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));

    let mut bad_sig = sig.clone();
    let first = if bad_sig.starts_with('A') { "B" } else { "A" };
    bad_sig.replace_range(..1, first);
    let forged = format!("{header}.{payload}.{bad_sig}");
    assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));
    let forged = format!("{header}.{payload}.");
    assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));
}

#[test]
fn malformed_strings_are_rejected() {
    let keys = keys();
    let genuine = keys
        .issue("alice", &[Scope::Read], HOUR, NOW)
        .expect("issue");
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    let with_bearer = format!("Bearer {}", genuine.token);
    let four_parts = format!("{}.x", genuine.token);
    let spaced = format!(" {}", genuine.token);
    let cases = [
        "",
        " ",
        ".",
        "..",
        "...",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "!!!.@@@.###",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9..",
        "\u{0}",
        "é.é.é",
        long.as_str(),
        with_bearer.as_str(),
        four_parts.as_str(),
        spaced.as_str(),
    ];
    for case in cases {
        let err = keys.verify(case, NOW).expect_err(case);
        assert_eq!(err.code(), "unauthorized", "{case:?}");
    }
}

#[test]
fn signed_tokens_without_kvs_claims_are_malformed() {
    let keys = keys();
    let mut cases = Vec::new();
    for field in ["sub", "scopes", "exp", "iat", "jti"] {
        let mut claims = valid_claims_json();
        claims.as_object_mut().expect("object").remove(field);
        cases.push(claims);
    }
    for (field, value) in [
        ("scopes", json!(["superuser"])),
        ("scopes", json!("admin")),
        ("exp", json!("soon")),
        ("exp", json!(-1)),
        ("sub", json!("")),
        ("jti", json!("")),
        ("sub", json!(42)),
    ] {
        let mut claims = valid_claims_json();
        claims[field] = value;
        cases.push(claims);
    }
    cases.push(json!([1, 2, 3]));
    cases.push(json!("claims"));
    for claims in cases {
        let token = sign_with(Algorithm::HS256, &claims, SECRET);
        assert_eq!(
            keys.verify(&token, NOW),
            Err(TokenError::Malformed),
            "{claims}"
        );
    }
}

#[test]
fn hand_signed_valid_claims_are_accepted() {
    let token = sign_with(Algorithm::HS256, &valid_claims_json(), SECRET);
    let claims = keys().verify(&token, NOW).expect("valid");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.scopes, vec![Scope::Admin]);
}

#[test]
fn root_token_is_deterministic_per_secret() {
    let a = keys().root_token().expect("root");
    let b = keys().root_token().expect("root");
    assert_eq!(a, b);
    let other = TokenKeys::new(b"other")
        .and_then(|k| k.root_token())
        .expect("root");
    assert_ne!(a.token, other.token);
    assert_ne!(a.jti, other.jti);
    assert!(Uuid::parse_str(&a.jti).is_ok());
    assert_eq!(a.expires_at, ROOT_TOKEN_EXP_SECS * 1000);
}

#[test]
fn root_token_verifies_as_root_admin_on_any_node() {
    let root = keys().root_token().expect("root");
    let claims = keys().verify(&root.token, NOW).expect("valid");
    assert_eq!(claims.sub, ROOT_USER_ID);
    assert_eq!(claims.scopes, vec![Scope::Admin]);
    assert_eq!(claims.jti, root.jti);
    let wrong = TokenKeys::new(b"other").expect("keys");
    assert_eq!(
        wrong.verify(&root.token, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let keys = keys();
    let issued = keys
        .issue("alice", &[Scope::Admin], HOUR, NOW)
        .expect("issue");
    let secret = String::from_utf8_lossy(SECRET).into_owned();
    let debug = format!("{issued:?} {keys:?}");
    assert!(!debug.contains(&issued.token) && !debug.contains(&secret));
    let (header, payload, sig) = parts(&issued.token);
    assert!(!debug.contains(&sig));
    // Errors from failures on inputs that carry the token, its signature or the secret
    // itself, so that an error which kept any of them would show here.
    let mut tampered = sig.clone();
    tampered.replace_range(..1, if sig.starts_with('A') { "B" } else { "A" });
    let mut secret_in_claims = valid_claims_json();
    secret_in_claims["scopes"] = json!([secret]);
    let mut secret_as_jti = valid_claims_json();
    secret_as_jti["jti"] = json!(secret);
    let other_keys = TokenKeys::new(b"another secret").expect("keys");
    let basic = format!("Basic {}", issued.token);
    let failures = [
        (
            keys.verify(&format!("{header}.{payload}.{tampered}"), NOW)
                .err(),
            TokenError::BadSignature,
        ),
        (
            other_keys.verify(&issued.token, NOW).err(),
            TokenError::BadSignature,
        ),
        (
            keys.verify(&issued.token, issued.expires_at + 1).err(),
            TokenError::Expired,
        ),
        (
            keys.verify(&format!("{}.{sig}", issued.token), NOW).err(),
            TokenError::Malformed,
        ),
        (
            keys.verify(&sign_with(Algorithm::HS256, &secret_in_claims, SECRET), NOW)
                .err(),
            TokenError::Malformed,
        ),
        (
            keys.verify(&sign_with(Algorithm::HS512, &secret_as_jti, SECRET), NOW)
                .err(),
            TokenError::Algorithm,
        ),
        (bearer_token(Some(&basic)).err(), TokenError::BadHeader),
        (
            keys.issue(&secret, &[Scope::Admin], 0, NOW).err(),
            TokenError::InvalidTtl,
        ),
        (TokenKeys::new(b"").err(), TokenError::EmptySecret),
    ];
    for (refused, expected) in failures {
        let err = refused.expect("a failure");
        assert_eq!(err, expected);
        let text = format!("{err} {err:?} {:?}", crate::ApiError::from(err.clone()));
        for kept in [&issued.token, &sig, &tampered, &secret] {
            assert!(!text.contains(kept.as_str()), "{expected:?} keeps {kept:?}");
        }
    }
}

#[test]
fn error_codes_and_statuses() {
    for err in [
        TokenError::Revoked,
        TokenError::UnknownUser,
        TokenError::BadHeader,
    ] {
        assert_eq!((err.code(), err.status()), ("unauthorized", 401));
    }
    assert_eq!(TokenError::InvalidTtl.status(), 400);
    assert_eq!(
        (TokenError::Signing.code(), TokenError::Signing.status()),
        ("internal", 500)
    );
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token(None), Ok(None));
    assert_eq!(bearer_token(Some("Bearer abc")), Ok(Some("abc")));
    assert_eq!(bearer_token(Some("bearer abc")), Ok(Some("abc")));
    assert_eq!(bearer_token(Some("BEARER  abc ")), Ok(Some("abc")));
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "abc",
        "Bearer a b",
        "Bearerabc",
    ] {
        assert_eq!(
            bearer_token(Some(bad)),
            Err(TokenError::BadHeader),
            "{bad:?}"
        );
    }
}

#[test]
fn scopes_parse_and_serialize_lowercase() {
    assert_eq!("read".parse(), Ok(Scope::Read));
    assert_eq!("write".parse(), Ok(Scope::Write));
    assert_eq!("admin".parse(), Ok(Scope::Admin));
    for bad in ["", "Read", "ADMIN", "root", "read ", "*"] {
        assert!(bad.parse::<Scope>().is_err(), "{bad:?}");
    }
    let long = "x".repeat(1000);
    let err = long.parse::<Scope>().expect_err("unknown");
    assert!(err.to_string().len() < 100);
    assert_eq!(
        serde_json::to_string(&Scope::Admin).expect("json"),
        "\"admin\""
    );
    assert!(serde_json::from_str::<Scope>("\"sudo\"").is_err());
    assert_eq!(Scope::Write.to_string(), "write");
    assert_eq!(
        normalize_scopes(&[Scope::Admin, Scope::Read, Scope::Admin]),
        vec![Scope::Read, Scope::Admin]
    );
}
