//! The outbound-credential cache hit (SPEC §13): what a request on an `outboundAuth` route
//! pays once its exchanged token is cached — the cache lookup alone, and the phase's whole
//! acquisition (`OutboundAuth::credential`: the caller's remaining lifetime, the timeout
//! wrapper, the single-flight lookup). The goal is ≤ 2 µs. `cargo bench --bench outbound`;
//! numbers in docs/performance.md.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use gatehouse::auth::cache::TokenCache;
use gatehouse::auth::jwks::Fetcher;
use gatehouse::outbound::cache::{Credential, OutboundCache};
use gatehouse::outbound::client::TokenRequest;
use gatehouse::outbound::{Endpoint, Kind, OutboundAuth, OutboundCounters, SubjectToken};
use http::HeaderValue;

fn credential() -> Credential {
    Credential::new(
        HeaderValue::from_static("Bearer exchanged.token.value"),
        Instant::now(),
        Duration::from_secs(3600),
        None,
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let caller = format!("Bearer {}", "x".repeat(900));
    let hash = TokenCache::hash(&caller[7..]);

    let cache = OutboundCache::new(10_000);
    rt.block_on(cache.get_or_fetch(hash, async { Ok::<_, ()>(credential()) }))
        .unwrap();
    c.bench_function("outbound cache hit (lookup)", |b| {
        b.iter(|| {
            cache
                .get_or_fetch(black_box(hash), async { Err::<Credential, ()>(()) })
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });

    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    let subject = SubjectToken::new(HeaderValue::try_from(caller).unwrap(), hash, Some(exp));
    let outbound = OutboundAuth {
        kind: Kind::TokenExchange,
        endpoint: Endpoint::Fixed("http://127.0.0.1:9/token".parse().unwrap()),
        request: TokenRequest::new("edge", "secret", Some("https://tools"), None, None).unwrap(),
        timeout: Duration::from_secs(5),
        permits: Arc::new(tokio::sync::Semaphore::new(16)),
        cache: OutboundCache::new(10_000),
        fetcher: Fetcher::new(),
        counters: OutboundCounters::default(),
    };
    rt.block_on(
        outbound
            .cache
            .get_or_fetch(hash, async { Ok::<_, ()>(credential()) }),
    )
    .unwrap();
    c.bench_function("outbound credential hit (phase)", |b| {
        b.iter(|| {
            outbound
                .credential(Some(black_box(&subject)))
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
