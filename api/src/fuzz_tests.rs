//! Fuzz loops (proptest) of what a client sends the API before any handler runs: keys in
//! paths, query strings (and the values read from them: listing cursors, `ttl`
//! durations, positive integers), `Authorization` headers and JWTs. Each checks that
//! arbitrary input never panics and is refused or parsed to a value that satisfies the
//! rules, and that valid values round-trip. CI runs the default case count; run them
//! long with `PROPTEST_CASES` (see docs/fuzzing.md at the workspace's top).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;

use crate::auth::{Scope, TokenError, TokenKeys, bearer_token};
use crate::duration::{format_duration, parse_duration};
use crate::keys::{MAX_KEY_BYTES, decode_key, validate_key};
use crate::routes::Query;
use crate::routes::positive;
use kvs_sync::Cursor;

const SECRET: &[u8] = b"fuzz-jwt-secret";
const NOW: u64 = 1_700_000_000_000;

/// Any string of up to `max` chars, control characters and non-ASCII included.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Strings made mostly of the characters that matter to a parser (`sep`), with some of
/// anything.
fn shaped(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let one = prop_oneof![
        4 => proptest::sample::select(chars),
        1 => any::<char>(),
    ];
    proptest::collection::vec(one, 0..=max).prop_map(String::from_iter)
}

/// The key rules of the contract, written out independently of `validate_key`.
fn key_is_valid(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key.chars().any(char::is_control)
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !key.starts_with('_')
}

/// Keys that are valid most of the time: segments of printable text, joined by `/`.
fn valid_key() -> impl Strategy<Value = String> {
    let segment = "[^/\\p{Cc}_.][^/\\p{Cc}]{0,12}";
    proptest::collection::vec(segment, 1..6)
        .prop_map(|segments| segments.join("/"))
        .prop_filter("at most MAX_KEY_BYTES", |key| key.len() <= MAX_KEY_BYTES)
}

fn keys() -> TokenKeys {
    TokenKeys::new(SECRET).expect("non-empty secret")
}

/// Unpadded base64url, to build tokens by hand.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Any JSON value, nested a little.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(12).prop_map(Value::String),
        prop_oneof![Just("read"), Just("write"), Just("admin"), Just("root")].prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(6), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Claims objects: the five claims, each of the right type or any JSON, sometimes left
/// out, with some extra members.
fn claims_json() -> impl Strategy<Value = serde_json::Value> {
    let field = |good: BoxedStrategy<serde_json::Value>| {
        prop_oneof![
            3 => good.prop_map(Some),
            1 => json().prop_map(Some),
            1 => Just(None),
        ]
    };
    let scopes = proptest::collection::vec(scope(), 0..4)
        .prop_map(|s| serde_json::json!(s))
        .boxed();
    (
        field(text(10).prop_map(serde_json::Value::from).boxed()),
        field(scopes),
        field(any::<u64>().prop_map(serde_json::Value::from).boxed()),
        field(any::<u64>().prop_map(serde_json::Value::from).boxed()),
        field(text(10).prop_map(serde_json::Value::from).boxed()),
        proptest::collection::btree_map(text(6), json(), 0..3),
    )
        .prop_map(|(sub, scopes, exp, iat, jti, extra)| {
            let mut object: serde_json::Map<String, serde_json::Value> =
                extra.into_iter().collect();
            for (name, value) in [
                ("sub", sub),
                ("scopes", scopes),
                ("exp", exp),
                ("iat", iat),
                ("jti", jti),
            ] {
                if let Some(value) = value {
                    object.insert(name.into(), value);
                }
            }
            serde_json::Value::Object(object)
        })
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::Read), Just(Scope::Write), Just(Scope::Admin)]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::HS256),
        Just(Algorithm::HS384),
        Just(Algorithm::HS512)
    ]
}

/// A changed copy of a token: a char replaced by another of the token alphabet, a cut,
/// a char inserted or removed, at `at`.
fn mutate_token(token: &str, how: u8, at: usize, with: char) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = at % chars.len();
    match how % 4 {
        0 if chars[at] != with => chars[at] = with,
        0 => chars[at] = if with == 'A' { 'B' } else { 'A' },
        1 => chars.truncate(at),
        2 => chars.insert(at, with),
        _ => {
            chars.remove(at);
        }
    }
    chars.into_iter().collect()
}

fn token_char() -> impl Strategy<Value = char> {
    proptest::sample::select(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
            .chars()
            .collect::<Vec<_>>(),
    )
}

proptest! {
    // proptest's default: 256 cases, or PROPTEST_CASES.

    // ---- keys ----

    #[test]
    fn fuzz_key_arbitrary_text_is_judged_by_the_rules(key in prop_oneof![
        text(40),
        shaped("/._a%", 24),
        valid_key(),
    ]) {
        prop_assert_eq!(validate_key(&key).is_ok(), key_is_valid(&key), "{:?}", key);
    }

    #[test]
    fn fuzz_key_arbitrary_paths_decode_to_valid_keys_or_400(raw in prop_oneof![
        shaped("%0123456789abcdefABCDEF/._", 40),
        text(40),
    ]) {
        match decode_key(&raw) {
            Ok(key) => prop_assert!(key_is_valid(&key), "{:?} decoded to {:?}", raw, key),
            Err(error) => {
                prop_assert_eq!(error.status(), 400);
                prop_assert!(error.body().contains("invalid_key"), "{}", error.body());
            }
        }
    }

    #[test]
    fn fuzz_key_valid_keys_round_trip_through_a_path(key in valid_key(), slash in any::<bool>()) {
        prop_assume!(key_is_valid(&key));
        // Encoded every way a client may: each byte escaped, or only `%` and controls.
        let escaped = utf8_percent_encode(&key, NON_ALPHANUMERIC).to_string();
        let light = key.replace('%', "%25");
        for mut raw in [escaped, light] {
            if slash {
                raw.push('/');
            }
            prop_assert_eq!(decode_key(&raw).ok(), Some(key.clone()), "{:?}", raw);
        }
    }

    // ---- query strings ----

    #[test]
    fn fuzz_query_arbitrary_strings_parse_and_the_last_value_wins(raw in prop_oneof![
        shaped("&=+%0123456789abcdefAF", 60),
        text(60),
    ]) {
        // Refused exactly when some name or value is not percent-encoded UTF-8.
        let decoded = |part: &str| crate::keys::strict_percent_decode(&part.replace('+', " "))
            .map(|text| text.into_owned());
        let pairs = raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
            pair.split_once('=').unwrap_or((pair, ""))
        });
        let all_decode = pairs.clone().all(|(name, value)| decoded(name).is_ok() && decoded(value).is_ok());
        let query = match Query::parse(&raw) {
            Ok(query) => query,
            Err(refused) => {
                prop_assert!(!all_decode, "{:?} refused: {:?}", raw, refused);
                prop_assert_eq!(refused.status(), 400);
                return Ok(());
            }
        };
        prop_assert!(all_decode, "{:?} accepted", raw);
        // A parameter's value is the decoded value of its last occurrence.
        for (name, _) in pairs {
            let name = decoded(name).expect("accepted, so decodable");
            prop_assert!(query.get(&name).is_some(), "{:?} lost in {:?}", name, raw);
        }
        for name in ["limit", "cursor", "prefix", "since", "since_seq", "ttl"] {
            if let Ok(Some(n)) = positive(&query, name) {
                prop_assert!(n > 0);
                prop_assert_eq!(query.get(name).map(str::parse::<u64>), Some(Ok(n)));
            }
        }
    }

    #[test]
    fn fuzz_query_encoded_pairs_round_trip(
        pairs in proptest::collection::vec((text(8), text(12)), 0..6),
    ) {
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let raw = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let query = Query::parse(&raw).expect("encoded UTF-8 is accepted");
        for (name, _) in &pairs {
            let last = pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            prop_assert_eq!(query.get(name), last, "{:?}", raw);
        }
    }

    #[test]
    fn fuzz_query_positive_accepts_exactly_positive_integers(value in prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        shaped("0123456789+- ", 24),
    ]) {
        let raw = format!("limit={}", utf8_percent_encode(&value, NON_ALPHANUMERIC));
        let expected = value.parse::<u64>().ok().filter(|&n| n > 0);
        let query = Query::parse(&raw).expect("encoded UTF-8 is accepted");
        match positive(&query, "limit") {
            Ok(got) => prop_assert_eq!(got, Some(expected.expect("accepted, so positive"))),
            Err(error) => {
                prop_assert!(expected.is_none(), "{:?} refused", value);
                prop_assert_eq!(error.status(), 400);
            }
        }
    }

    #[test]
    fn fuzz_query_arbitrary_cursors_are_refused_or_consistent(raw in prop_oneof![
        shaped("0123456789abcdefABCDEF", 60),
        text(30),
    ]) {
        if let Some(cursor) = Cursor::decode(&raw) {
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
    }

    #[test]
    fn fuzz_query_cursors_round_trip(key in text(30), ts in any::<u64>(), by_time in any::<bool>()) {
        let cursor = if by_time { Cursor::Time(ts, key) } else { Cursor::Key(key) };
        let encoded = cursor.encode();
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()), "URL-safe: {}", encoded);
        prop_assert_eq!(Cursor::decode(&encoded), Some(cursor));
    }

    #[test]
    fn fuzz_query_arbitrary_durations_are_refused_or_consistent(raw in prop_oneof![
        shaped("0123456789msdh ", 24),
        text(16),
    ]) {
        if let Ok(duration) = parse_duration(&raw) {
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
            let digits = raw.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
            prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{:?}", raw);
        }
    }

    #[test]
    fn fuzz_query_durations_round_trip(ms in any::<u64>()) {
        let duration = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
    }

    // ---- Authorization headers and JWTs ----

    #[test]
    fn fuzz_jwt_arbitrary_headers_give_a_token_or_an_error(value in prop_oneof![
        shaped("Bearer bearer .-_", 40),
        text(40),
    ]) {
        if let Ok(Some(token)) = bearer_token(Some(&value)) {
            prop_assert!(!token.is_empty() && !token.contains(' '), "{:?}", token);
            prop_assert!(value.contains(token));
        }
    }

    #[test]
    fn fuzz_jwt_arbitrary_tokens_never_verify(token in prop_oneof![
        text(80),
        shaped("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", 200),
        (proptest::collection::vec(any::<u8>(), 0..60), json(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(header, claims, sig)| {
                format!("{}.{}.{}", b64url(&header), b64url(claims.to_string().as_bytes()), b64url(&sig))
            }),
    ]) {
        prop_assert!(keys().verify(&token, NOW).is_err(), "{:?} verified", token);
    }

    #[test]
    fn fuzz_jwt_claims_signed_elsewhere_never_verify(
        claims in claims_json(),
        alg in algorithm(),
        other_secret in proptest::collection::vec(any::<u8>(), 1..40),
    ) {
        prop_assume!(other_secret != SECRET);
        let header = Header::new(alg);
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&other_secret))
            .expect("signing");
        prop_assert!(keys().verify(&forged, NOW).is_err());
        // `alg: none`, with and without a signature.
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(claims.to_string().as_bytes())
        );
        prop_assert!(keys().verify(&none, NOW).is_err());
        let (_, signature) = forged.rsplit_once('.').expect("three parts");
        let none_signed = format!("{none}{signature}");
        prop_assert!(keys().verify(&none_signed, NOW).is_err());
    }

    #[test]
    fn fuzz_jwt_claims_signed_here_verify_only_when_well_formed(claims in claims_json(), alg in algorithm()) {
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(SECRET))
            .expect("signing");
        match keys().verify(&token, NOW) {
            Ok(verified) => {
                prop_assert_eq!(alg, Algorithm::HS256);
                prop_assert_eq!(serde_json::to_value(&verified.sub).unwrap(), claims["sub"].clone());
                prop_assert_eq!(serde_json::to_value(&verified.jti).unwrap(), claims["jti"].clone());
                prop_assert_eq!(serde_json::json!(verified.exp), claims["exp"].clone());
                prop_assert!(!verified.sub.is_empty() && !verified.jti.is_empty());
                prop_assert!(verified.exp.saturating_mul(1000) > NOW, "expired yet accepted");
            }
            Err(TokenError::Algorithm) => prop_assert_ne!(alg, Algorithm::HS256),
            Err(_) => {}
        }
    }

    #[test]
    fn fuzz_jwt_issued_tokens_round_trip_their_claims(
        sub in text(20).prop_filter("non-empty", |s| !s.is_empty()),
        scopes in proptest::collection::vec(scope(), 0..5),
        ttl_ms in 1u64..10 * 365 * 86_400_000,
    ) {
        let keys = keys();
        let issued = keys.issue(&sub, &scopes, ttl_ms, NOW).expect("issued");
        let claims = keys.verify(&issued.token, NOW).expect("verifies");
        let mut sorted = scopes.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&claims.sub, &sub);
        prop_assert_eq!(&claims.scopes, &sorted);
        prop_assert_eq!(&claims.jti, &issued.jti);
        prop_assert_eq!(claims.exp * 1000, issued.expires_at);
        prop_assert!(issued.expires_at >= NOW + ttl_ms && issued.expires_at < NOW + ttl_ms + 1000);
        prop_assert_eq!(keys.verify(&issued.token, issued.expires_at), Err(TokenError::Expired));
        prop_assert!(TokenKeys::new(b"another secret").unwrap().verify(&issued.token, NOW).is_err());
    }

    #[test]
    fn fuzz_jwt_changed_tokens_never_verify(
        sub in "[a-z]{1,12}",
        how in any::<u8>(),
        at in any::<usize>(),
        with in token_char(),
    ) {
        let keys = keys();
        let issued = keys.issue(&sub, &[Scope::Read], 3_600_000, NOW).expect("issued");
        let changed = mutate_token(&issued.token, how, at, with);
        prop_assume!(changed != issued.token);
        prop_assert!(keys.verify(&changed, NOW).is_err(), "{:?} verified", changed);
    }
}
