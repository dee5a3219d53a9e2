//! Claims parsing on any bytes, then every use the edge makes of parsed claims: the route
//! policy (audience, client, scopes, custom claims) and rendering for headers and baggage.
#![no_main]

use gatehouse::auth::claims::Claims;
use gatehouse::auth::policy::{ClaimRule, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = Claims::parse(data) else {
        return;
    };
    let policy = Policy {
        allowed_clients: Some(vec!["client-a".into()]),
        allowed_audience: Some(vec!["api".into()]),
        allowed_scopes: Some(vec!["invoke".into()]),
        custom_claims: vec![
            ClaimRule::Equals {
                claim: "tenant".into(),
                value: "acme".into(),
            },
            ClaimRule::Contains {
                claim: "groups".into(),
                value: "a".into(),
            },
            ClaimRule::ContainsAny {
                claim: "roles".into(),
                values: vec!["x".into(), "y".into()],
            },
        ],
    };
    if policy.check(&claims).is_ok() {
        // Passing means each rule held: re-check them by hand.
        assert!(claims.aud().any(|a| a == "api"));
        assert_eq!(claims.client_id(), Some("client-a"));
        assert!(claims.has_scope("invoke"));
        assert_eq!(claims.get("tenant").and_then(|v| v.as_str()), Some("acme"));
    }
    // The packed form finds every claim it lists, by name, with the same value.
    for (name, value) in claims.iter() {
        assert_eq!(claims.get(name), Some(value));
        if let Some(text) = claims.render(name) {
            let _ = http::HeaderValue::from_str(&text);
        }
    }
});
