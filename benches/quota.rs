//! The cost of one local quota decision: the key built from the caller's claims and one GCRA
//! step in governor's keyed limiter, as the quota phase runs it (`RouteQuotas::admit`), for
//! one rule and for three (client, client+route, and a concurrency limit). Also the
//! per-address failure budget's lookup, which every cache-missed token pays when
//! `limits.authFailuresPerIp` is set. `cargo bench --bench quota`; numbers in
//! docs/performance.md. Goal: a local decision ≤ 1 µs.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::auth::Principal;
use gatehouse::auth::claims::Claims;
use gatehouse::auth::failures::FailureBudget;
use gatehouse::config::file::{OneOrMany, QuotaRuleFile};
use gatehouse::quota::Quotas;
use gatehouse::quota::rules::{KeyInput, Rate};
use gatehouse::telemetry::metrics::Metrics;

fn rule(name: &str, key: &[&str], rate: Option<&str>, concurrency: Option<u32>) -> QuotaRuleFile {
    QuotaRuleFile {
        name: name.into(),
        key: OneOrMany(key.iter().map(|k| (*k).to_owned()).collect()),
        // High enough never to refuse: the bench measures the allowed path.
        rate: rate.map(Into::into),
        concurrency,
        ..Default::default()
    }
}

fn decisions(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let quotas = Quotas::compile(None, |_| Err("local only".into())).unwrap();
    let one = quotas
        .for_route(
            "support",
            false,
            &[rule(
                "per-client",
                &["client_id"],
                Some("1000000000/s"),
                None,
            )],
            &metrics,
        )
        .unwrap()
        .unwrap();
    let three = quotas
        .for_route(
            "support",
            false,
            &[
                rule("per-client", &["client_id"], Some("1000000000/s"), None),
                rule(
                    "per-client-route",
                    &["client_id", "route"],
                    Some("1000000000/s"),
                    None,
                ),
                rule("in-flight", &["sub"], None, Some(1_000_000)),
            ],
            &metrics,
        )
        .unwrap()
        .unwrap();
    let claims = Claims::parse(
        br#"{"iss":"https://idp.bench.example","sub":"user-1","client_id":"bench-client-1","scope":"invoke","exp":4000000000}"#,
    )
    .unwrap();
    let principal = Principal {
        claims: Arc::new(claims),
        cache_hit: true,
        kid: None,
        alg: jsonwebtoken::Algorithm::RS256,
    };
    let input = KeyInput {
        route: "support",
        principal: Some(&principal),
        ip: "10.1.2.3".parse().unwrap(),
        message: None,
    };
    c.bench_function("quota: one local rate rule", |b| {
        b.iter(|| black_box(one.admit(black_box(&input)).is_ok()))
    });
    c.bench_function("quota: two rate rules + a concurrency limit", |b| {
        b.iter(|| black_box(three.admit(black_box(&input)).is_ok()))
    });

    let budget = FailureBudget::new(Rate::parse("20/s").unwrap());
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    c.bench_function(
        "authFailuresPerIp: lookup of an address in good standing",
        |b| b.iter(|| black_box(budget.blocked(black_box(ip)))),
    );
}

criterion_group!(benches, decisions);
criterion_main!(benches);
