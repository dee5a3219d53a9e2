//! Token validation cost: a warm verified-token cache hit, RS256 and ES256 cache misses next
//! to the raw signature verification jsonwebtoken does for the same token, and the policy
//! check alone. `cargo bench --bench validation`; numbers in docs/performance.md.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use gatehouse::auth::Authorizer;
use gatehouse::auth::cache::TokenCache;
use gatehouse::auth::claims::Claims;
use gatehouse::auth::jwks::{Issuer, IssuerConfig};
use gatehouse::auth::policy::{ClaimRule, Policy};
use gatehouse::dev::{Alg, MintOptions, SigningKey, mint};
use gatehouse::telemetry::metrics::Metrics;
use http::HeaderMap;
use jsonwebtoken::{DecodingKey, Validation};

const ISSUER: &str = "https://idp.bench.example";

fn setup(alg: Alg) -> (Authorizer, String, serde_json::Value) {
    let key = SigningKey::generate(alg, Some(format!("{alg}-1"))).unwrap();
    let jwk = key.public_jwk();
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let config = IssuerConfig::default();
    let issuer =
        Issuer::with_keys(ISSUER, jwks.as_bytes(), config, Arc::new(Metrics::new())).unwrap();
    let authorizer = Authorizer {
        issuer,
        policy: policy(),
        algorithms: vec![
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
        ],
        clock_skew_secs: 30,
        advertised_scopes: vec!["invoke".into()],
        scope_challenge: Some("invoke".into()),
    };
    // The shape of the bench harness's tokens: iss, sub, iat, exp, client_id, scope.
    let options = MintOptions {
        iss: ISSUER.into(),
        sub: Some("user-1".into()),
        client_id: Some("bench-client-1".into()),
        scope: Some("invoke".into()),
        ttl: Duration::from_secs(3600),
        jti: false,
        ..MintOptions::default()
    };
    (authorizer, mint(&key, &options).unwrap(), jwk)
}

fn policy() -> Policy {
    Policy {
        allowed_clients: Some(vec!["bench-client-1".into(), "bench-client-2".into()]),
        allowed_scopes: Some(vec!["invoke".into()]),
        ..Policy::default()
    }
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

fn authenticate(authorizer: &Authorizer, headers: &HeaderMap, cache: &TokenCache) {
    let principal = authorizer
        .authenticate(headers, cache)
        .now_or_never()
        .unwrap()
        .unwrap();
    authorizer.authorize(&principal).unwrap();
    black_box(principal);
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validation");
    for alg in [Alg::RS256, Alg::ES256] {
        let (authorizer, token, jwk) = setup(alg);
        let h = headers(&token);

        let warm = TokenCache::new(1000);
        authenticate(&authorizer, &h, &warm);
        group.bench_function(format!("{alg}/cache_hit"), |b| {
            b.iter(|| authenticate(&authorizer, &h, &warm))
        });

        let off = TokenCache::new(0);
        group.bench_function(format!("{alg}/cache_miss"), |b| {
            b.iter(|| authenticate(&authorizer, &h, &off))
        });

        // The floor: jsonwebtoken verifying the same token (signature, exp, iss) into claims.
        let key = DecodingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).unwrap();
        let mut validation = Validation::new(alg.to_jsonwebtoken());
        validation.set_issuer(&[ISSUER]);
        validation.validate_aud = false;
        group.bench_function(format!("{alg}/jsonwebtoken_decode"), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap(),
                )
            })
        });
    }
    group.finish();

    let claims = Claims::parse(
        br#"{"iss":"https://idp","sub":"u","aud":["a","b"],"client_id":"bench-client-2","scope":"read invoke","groups":["x","support"],"exp":9999999999}"#,
    )
    .unwrap();
    let full = Policy {
        allowed_audience: Some(vec!["b".into()]),
        custom_claims: vec![ClaimRule::ContainsAny {
            claim: "groups".into(),
            values: vec!["support".into(), "admin".into()],
        }],
        ..policy()
    };
    let simple = policy();
    c.bench_function("policy/clients+scopes", |b| {
        b.iter(|| black_box(simple.check(black_box(&claims))))
    });
    c.bench_function("policy/all_four_checks", |b| {
        b.iter(|| black_box(full.check(black_box(&claims))))
    });
    c.bench_function("sha256/token", |b| {
        let (_, token, _) = setup(Alg::RS256);
        b.iter(|| black_box(TokenCache::hash(black_box(&token))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = validation
}
criterion_main!(benches);
