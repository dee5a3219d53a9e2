//! Property tests for the pure rules of the request path: route policy over claims, the
//! `Authorization` header, session ids and the baggage merge. Each property states a rule of
//! SPEC §4.2 or §5 for every input proptest can think of, next to the example-based unit
//! tests beside the code. Run by `cargo test`; a failure is minimised and its seed kept in
//! `tests/properties.proptest-regressions`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::auth::claims::{Claim, Claims};
use gatehouse::auth::policy::{ClaimRule, Denial, Policy};
use gatehouse::auth::token::{MAX_TOKEN_BYTES, TokenError, bearer};
use gatehouse::enrich::HeaderPolicy;
use gatehouse::session::{SESSION_HEADER, runtime_id};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Short names from a small alphabet, so that random claims and policies often meet.
fn name() -> impl Strategy<Value = String> {
    "[a-c]{1,2}"
}

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(name(), 0..4)
}

fn rule() -> impl Strategy<Value = ClaimRule> {
    prop_oneof![
        (name(), name()).prop_map(|(claim, value)| ClaimRule::Equals { claim, value }),
        (name(), name()).prop_map(|(claim, value)| ClaimRule::Contains { claim, value }),
        (name(), names()).prop_map(|(claim, values)| ClaimRule::ContainsAny { claim, values }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::option::of(names()),
        prop::option::of(names()),
        prop::option::of(names()),
        prop::collection::vec(rule(), 0..3),
    )
        .prop_map(|(clients, audience, scopes, custom)| Policy {
            allowed_clients: clients,
            allowed_audience: audience,
            allowed_scopes: scopes,
            custom_claims: custom,
        })
}

/// A claim value of any JSON shape a token might carry.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        name().prop_map(Value::from),
        names().prop_map(|v| json!(v)),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"a": "b"})),
        Just(json!(["a", 1, null])),
    ]
}

/// Claims that parse: registered claims of the right types, other claims of any shape.
fn claims() -> impl Strategy<Value = Claims> {
    (
        prop::option::of(name()),
        prop::option::of(prop_oneof![
            name().prop_map(Value::from),
            names().prop_map(|v| json!(v))
        ]),
        prop::option::of(names().prop_map(|v| v.join(" "))),
        prop::option::of(names()),
        prop::collection::btree_map(name(), value(), 0..4),
    )
        .prop_map(|(client, aud, scope, scp, extra)| {
            let mut object = serde_json::Map::new();
            for (k, v) in extra {
                object.insert(k, v);
            }
            if let Some(c) = client {
                object.insert("client_id".into(), c.into());
            }
            if let Some(a) = aud {
                object.insert("aud".into(), a);
            }
            if let Some(s) = scope {
                object.insert("scope".into(), s.into());
            }
            if let Some(s) = scp {
                object.insert("scp".into(), json!(s));
            }
            Claims::parse(Value::Object(object).to_string().as_bytes()).unwrap()
        })
}

fn holds(rule: &ClaimRule, claims: &Claims) -> bool {
    Policy {
        custom_claims: vec![rule.clone()],
        ..Policy::default()
    }
    .check(claims)
    .is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Allowed means every configured check holds, each judged on its own (AND of ORs).
    #[test]
    fn allowed_means_every_check_holds(policy in policy(), claims in claims()) {
        let each = policy.allowed_audience.as_ref().is_none_or(|a| claims.aud().any(|x| a.iter().any(|y| y == x)))
            && policy.allowed_clients.as_ref().is_none_or(|c| claims.client_id().is_some_and(|id| c.iter().any(|y| y == id)))
            && policy.allowed_scopes.as_ref().is_none_or(|s| claims.scopes().any(|x| s.iter().any(|y| y == x)))
            && policy.custom_claims.iter().all(|r| holds(r, &claims));
        prop_assert_eq!(policy.check(&claims).is_ok(), each);
    }

    /// The first failing check, in the order audience, client, scope, custom claims, is the
    /// one reported: the status (401 for `aud`, 403 otherwise) never depends on luck.
    #[test]
    fn the_first_failing_check_is_reported(policy in policy(), claims in claims()) {
        let audience = Policy { allowed_audience: policy.allowed_audience.clone(), ..Policy::default() };
        let client = Policy { allowed_clients: policy.allowed_clients.clone(), ..Policy::default() };
        let scope = Policy { allowed_scopes: policy.allowed_scopes.clone(), ..Policy::default() };
        let expected = if audience.check(&claims).is_err() {
            Err(Denial::Audience)
        } else if client.check(&claims).is_err() {
            Err(Denial::Client)
        } else if scope.check(&claims).is_err() {
            Err(Denial::Scope)
        } else if let Some(rule) = policy.custom_claims.iter().find(|r| !holds(r, &claims)) {
            Err(Denial::Claim(rule.claim().to_owned()))
        } else {
            Ok(())
        };
        prop_assert_eq!(policy.check(&claims), expected);
    }

    /// Adding a rule never lets in a token that was refused.
    #[test]
    fn more_rules_never_allow_more(policy in policy(), extra in rule(), claims in claims()) {
        let mut stricter = policy.clone();
        stricter.custom_claims.push(extra);
        if policy.check(&claims).is_err() {
            prop_assert!(stricter.check(&claims).is_err());
        }
    }

    /// CONTAINS_ANY is the OR of CONTAINS over its values; a STRING claim never satisfies
    /// an array rule and an array never satisfies EQUALS.
    #[test]
    fn contains_any_is_an_or_of_contains(claim in name(), values in names(), claims in claims()) {
        let any = holds(&ClaimRule::ContainsAny { claim: claim.clone(), values: values.clone() }, &claims);
        let or = values.iter().any(|v| holds(&ClaimRule::Contains { claim: claim.clone(), value: v.clone() }, &claims));
        prop_assert_eq!(any, or);
        if let Some(Claim::String(s)) = claims.get(&claim) {
            let contains = ClaimRule::Contains { claim: claim.clone(), value: s.to_owned() };
            prop_assert!(!holds(&contains, &claims));
        }
        if let Some(Claim::Json(Value::Array(_))) = claims.get(&claim) {
            for v in &values {
                let equals = ClaimRule::Equals { claim: claim.clone(), value: v.clone() };
                prop_assert!(!holds(&equals, &claims));
            }
        }
    }

    /// Scopes match exactly: case, prefixes and substrings of a granted scope are not it.
    #[test]
    fn scopes_match_exactly(granted in "[a-zA-Z:/]{1,8}", asked in "[a-zA-Z:/]{1,9}") {
        let claims = Claims::parse(json!({"scope": format!("x {granted} y")}).to_string().as_bytes()).unwrap();
        prop_assert_eq!(claims.has_scope(&asked), asked == granted || asked == "x" || asked == "y");
    }

    /// `Bearer` in any case, then any amount of spaces or tabs, then the token: the token
    /// comes back unchanged; a second header or another scheme never yields a token.
    #[test]
    fn bearer_extracts_exactly_the_token(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        gap in "[ \t]{1,3}",
        token in "[A-Za-z0-9._~+/-]{1,64}=*",
        other in "[A-Za-z]{1,8}",
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("{scheme}{gap}{token}")).unwrap());
        prop_assert_eq!(bearer(&headers), Ok(token.as_str()));
        headers.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        prop_assert!(matches!(bearer(&headers), Err(TokenError::Malformed(_))));
        if !other.eq_ignore_ascii_case("bearer") {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("{other} {token}")).unwrap());
            prop_assert!(matches!(bearer(&headers), Err(TokenError::Malformed(_))));
        }
    }

    /// Any header value at all: a token that comes out is non-empty, bounded, and trimmed.
    #[test]
    fn bearer_never_returns_junk(value in prop::collection::vec(32u8..127, 0..80)) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(&value).unwrap());
        if let Ok(token) = bearer(&headers) {
            prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            prop_assert!(!token.starts_with([' ', '\t']) && !token.ends_with([' ', '\t']));
        }
    }

    /// A client session id is kept exactly when it is 33–256 characters of `[A-Za-z0-9._:-]`;
    /// anything else is a 400, never silently replaced.
    #[test]
    fn session_ids_follow_the_contract(id in prop_oneof![
        "[A-Za-z0-9._:-]{30,40}",
        "[A-Za-z0-9._:-]{250,260}",
        "[ -~]{30,40}",
    ]) {
        let mut headers = HeaderMap::new();
        headers.insert(SESSION_HEADER.clone(), HeaderValue::from_str(&id).unwrap());
        let valid = (33..=256).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        match runtime_id(&headers) {
            Ok(kept) => {
                prop_assert!(valid);
                prop_assert_eq!(kept.to_str().unwrap(), id.as_str());
            }
            Err(_) => prop_assert!(!valid),
        }
    }

}

proptest! {
    // Each case builds headers of up to 300 members: fewer cases keep this under seconds.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The merged baggage stays within the W3C limits, starts with the edge's `session.id`,
    /// never carries a client's `session.id`, and keeps client entries in their order.
    #[test]
    fn baggage_merge_is_bounded_and_ours_wins(
        members in prop::collection::vec(("[a-z.]{1,12}", "[a-zA-Z0-9%]{0,40}"), 0..300),
        session in "[A-Za-z0-9]{33,40}",
        spoof in any::<bool>(),
    ) {
        let mut members: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if spoof {
            members.insert(members.len() / 2, "session.id=spoofed".into());
        }
        let mut headers = HeaderMap::new();
        if !members.is_empty() {
            headers.insert("baggage", HeaderValue::from_str(&members.join(",")).unwrap());
        }
        let policy = HeaderPolicy::new(&[], None, &[], &[], false).unwrap();
        let merged = policy.baggage(&headers, Some(&session), None);
        prop_assert!(merged.len() <= 8192);
        let entries: Vec<&str> = merged.split(',').collect();
        prop_assert!(entries.len() <= 180);
        prop_assert_eq!(entries[0], format!("session.id={session}"));
        prop_assert!(!merged.contains("spoofed"));
        let clients: Vec<&str> = members.iter().map(String::as_str).filter(|m| !m.starts_with("session.id=")).collect();
        let kept = &entries[1..];
        // Client entries kept are a prefix-preserving subsequence of what was sent.
        let mut sent = clients.iter();
        for entry in kept {
            prop_assert!(sent.any(|m| m == entry), "{} out of order or invented", entry);
        }
    }
}

mod session_binding {
    use std::sync::Arc;

    use gatehouse::auth::Principal;
    use gatehouse::auth::claims::Claims;
    use gatehouse::session::SessionBinding;
    use proptest::prelude::*;

    fn principal(sub: &str) -> Principal {
        let json = serde_json::json!({ "iss": "https://idp", "sub": sub }).to_string();
        let claims = Claims::parse(json.as_bytes()).unwrap();
        Principal {
            claims: Arc::new(claims),
            cache_hit: false,
            kid: None,
            alg: jsonwebtoken::Algorithm::RS256,
        }
    }

    proptest! {
        /// Any session id a server can send (visible ASCII) binds, verifies back to itself for
        /// its subject, and for no other subject.
        #[test]
        fn bound_ids_verify_for_their_subject_only(
            session in "[!-~]{0,64}",
            sub in "[a-z]{1,8}",
            other in "[a-z]{1,8}",
        ) {
            let binding = SessionBinding::new(&[9u8; 32]);
            let owner = principal(&sub);
            let bound = binding.bind("r", &owner, session.as_bytes()).unwrap();
            prop_assert_eq!(binding.verify("r", &owner, bound.as_bytes()), Some(session.as_bytes()));
            if other != sub {
                prop_assert_eq!(binding.verify("r", &principal(&other), bound.as_bytes()), None);
            }
        }

        /// Bytes that were not bound by this key never verify (a forged tag would need the key).
        #[test]
        fn arbitrary_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let binding = SessionBinding::new(&[9u8; 32]);
            prop_assert_eq!(binding.verify("r", &principal("alice"), &bytes), None);
        }
    }
}
