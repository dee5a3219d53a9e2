//! Memory per cached verified token (issue 9): how many bytes of RSS one more distinct token
//! in the verified-token cache costs, split into the cache's own entry, the parsed claims, and
//! the whole path (verify, parse, insert). Each case runs in a fresh child process with the
//! binary's allocator (mimalloc, as `gatehouse`), so that one case's freed pages do not hide
//! the next one's growth. Layouts do not depend on optimisation, so a debug build measures the
//! same bytes as a release one:
//!
//! ```sh
//! TOKENS=100000 cargo test --bench token_memory   # debug build
//! cargo bench --bench token_memory                # release; TOKENS=100000 by default
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench` argument, no `TOKENS`) it runs 2,000
//! tokens: a smoke test of the cases, not a measurement.
//!
//! Tokens have the shape `gatehouse bench --mint --dev` sends (iss, sub, client_id, scope,
//! iat, exp, jti); numbers in docs/performance.md ("Memory").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use gatehouse::auth::Authorizer;
use gatehouse::auth::cache::{CachedToken, TokenCache};
use gatehouse::auth::claims::Claims;
use gatehouse::auth::jwks::{Issuer, IssuerConfig};
use gatehouse::auth::policy::Policy;
use gatehouse::dev::{Alg, MintOptions, SigningKey, mint};
use gatehouse::telemetry::metrics::Metrics;
use http::HeaderMap;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "http://127.0.0.1:18420";
const CASE: &str = "TOKEN_MEMORY_CASE";

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn options() -> MintOptions {
    MintOptions {
        iss: ISSUER.into(),
        sub: Some("dev-user".into()),
        client_id: Some("dev-client".into()),
        scope: Some("invoke".into()),
        ttl: Duration::from_secs(3600),
        jti: true,
        ..MintOptions::default()
    }
}

fn authorizer(key: &SigningKey) -> Authorizer {
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let config = IssuerConfig::default();
    let issuer =
        Issuer::with_keys(ISSUER, jwks.as_bytes(), config, Arc::new(Metrics::new())).unwrap();
    Authorizer {
        issuer,
        policy: Policy {
            allowed_clients: Some(vec!["dev-client".into()]),
            allowed_scopes: Some(vec!["invoke".into()]),
            ..Policy::default()
        },
        algorithms: vec![jsonwebtoken::Algorithm::EdDSA],
        clock_skew_secs: 30,
        advertised_scopes: vec!["invoke".into()],
        scope_challenge: Some("invoke".into()),
    }
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

fn hash_of(i: usize) -> [u8; 32] {
    TokenCache::hash(&i.to_string())
}

/// Bytes of RSS per item that `fill` adds once its inputs (built by `prepare`) exist.
fn per_item<T, K>(n: usize, prepare: impl FnOnce() -> T, fill: impl FnOnce(T) -> K) -> f64 {
    let input = prepare();
    let before = rss();
    let kept = fill(input);
    let after = rss();
    black_box(&kept);
    (after.saturating_sub(before)) as f64 / n as f64
}

fn run_case(case: &str, n: usize) -> f64 {
    let key = SigningKey::generate(Alg::EdDSA, Some("k1".into())).unwrap();
    let authorizer = authorizer(&key);
    let cache_of = || TokenCache::new(2 * n as u64);
    let authenticate = |token: &str, cache: &TokenCache| {
        let principal = authorizer
            .authenticate(&headers(token), cache)
            .now_or_never()
            .unwrap()
            .unwrap();
        authorizer.authorize(&principal).unwrap();
    };
    match case {
        // The cache's own cost: distinct keys, one shared value.
        "entry" => {
            let warm = cache_of();
            let token = mint(&key, &options()).unwrap();
            authenticate(&token, &warm);
            let value = warm.get(&TokenCache::hash(&token)).unwrap();
            per_item(
                n,
                || (cache_of(), (0..n).map(hash_of).collect::<Vec<_>>()),
                |(cache, hashes)| {
                    for hash in hashes {
                        cache.insert(hash, value.clone());
                    }
                    cache.entries();
                    cache
                },
            )
        }
        // The parsed claims alone, as the cache holds them.
        "claims" => per_item(
            n,
            || {
                (0..n)
                    .map(|_| serde_json::to_vec(&options().claims_json()).unwrap())
                    .collect::<Vec<_>>()
            },
            |payloads| {
                let mut kept = Vec::with_capacity(payloads.len());
                kept.extend(payloads.iter().map(|p| Arc::new(Claims::parse(p).unwrap())));
                kept
            },
        ),
        // Everything a distinct token leaves behind: verified, parsed, cached.
        "token" => per_item(
            n,
            || {
                let tokens: Vec<String> = (0..n).map(|_| mint(&key, &options()).unwrap()).collect();
                let cache = cache_of();
                // The first entry of a cache allocates its shared structures.
                authenticate(&tokens[0], &cache);
                (tokens, cache)
            },
            |(tokens, cache)| {
                for token in &tokens[1..] {
                    authenticate(token, &cache);
                }
                assert_eq!(cache.entries(), n as u64);
                cache
            },
        ),
        other => panic!("unknown case {other}"),
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 100_000 } else { 2_000 })
        .max(1);
    if let Ok(case) = std::env::var(CASE) {
        println!("{}", run_case(&case, n));
        return;
    }
    println!(
        "size_of: Claims {} B, CachedToken {} B",
        size_of::<Claims>(),
        size_of::<CachedToken>()
    );
    let exe = std::env::current_exe().unwrap();
    for (case, what) in [
        ("entry", "cache entry alone (one shared value)"),
        ("claims", "parsed claims alone (Arc<Claims>)"),
        ("token", "distinct token verified and cached"),
    ] {
        let out = Command::new(&exe)
            .env(CASE, case)
            .env("TOKENS", n.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{case}: {out:?}");
        let bytes: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        println!(
            "{what:<40} {bytes:>7.0} B per token, {:>6.1} MiB at {n}",
            bytes * n as f64 / 1048576.0
        );
    }
}
