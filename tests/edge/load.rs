//! Load and resource tests, slower than the rest: an unknown-`kid` flood, a slow reader of a
//! 1 GiB stream, and 1,000 concurrent SSE streams against the real binary. Ignored by a plain
//! `cargo test`; `scripts/test.sh` runs them one at a time (`-- --ignored --test-threads=1`),
//! so the memory they measure is theirs alone. Loopback only; each ends by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: scripts/test.sh runs it"]
async fn ten_thousand_unknown_kids_cost_one_fetch_per_interval() {
    let edge = Arc::new(Edge::start("jwt: { jwksMinRefetchInterval: 2s }", &support_route()).await);
    // The initial load counts as the last fetch: start the flood one interval later.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = edge.issuer.jwks_fetches();
    // The kid is looked up before the signature is checked, so a valid token with its header
    // swapped is enough: no signing per request.
    let valid = edge.valid_token();
    let (_, rest) = valid.split_once('.').unwrap();
    let rest: Arc<str> = Arc::from(rest);
    let started = Instant::now();
    let unauthorized = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..50u64 {
        let (edge, rest, unauthorized) = (edge.clone(), rest.clone(), unauthorized.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..200u64 {
                let kid = format!("{:016x}{worker}-{i}", rand::random::<u64>());
                let header = URL_SAFE_NO_PAD
                    .encode(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#));
                let token = format!("{header}.{rest}");
                let reply = edge.invoke("support", Some(&token), "{}").await;
                if reply.status == 401 {
                    unauthorized.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let fetches = edge.issuer.jwks_fetches() - before;
    let allowed = 1 + elapsed.as_secs() / 2;
    eprintln!(
        "unknown-kid flood: 10000 requests in {:.1}s, {fetches} JWKS fetches (allowed {allowed})",
        elapsed.as_secs_f64()
    );
    assert_eq!(unauthorized.load(Ordering::Relaxed), 10_000);
    assert!((1..=allowed).contains(&fetches), "{fetches} fetches");
    assert_eq!(edge.agent.request_count(), 0);
    // And the edge still serves real tokens, from the cache of keys it never lost.
    assert_eq!(
        edge.invoke("support", Some(&edge.valid_token()), "{}")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: scripts/test.sh runs it"]
async fn a_slow_reader_of_a_gigabyte_holds_the_upstream_back() {
    const TOTAL: u64 = 1 << 30;
    const PAUSE_EVERY: u64 = 64 << 20;
    let edge = Edge::start("", &support_route()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from(format!(r#"{{"bytes":{TOTAL}}}"#))))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let pid = std::process::id().to_string();
    let baseline = rss_kib(&pid);
    let mut body = response.into_body();
    let (mut read, mut next_pause) = (0u64, PAUSE_EVERY);
    let (mut peak_rss, mut peak_in_flight) = (baseline, 0u64);
    while let Some(frame) = body.frame().await {
        read += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
        if read >= next_pause {
            next_pause += PAUSE_EVERY;
            // The reader stops for a while: the producer must stop too, a few buffers ahead.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let in_flight = edge.agent.streamed_bytes().saturating_sub(read);
            peak_in_flight = peak_in_flight.max(in_flight);
            peak_rss = peak_rss.max(rss_kib(&pid));
            assert!(
                in_flight < 64 << 20,
                "{} MiB produced but unread: the stream is being buffered",
                in_flight >> 20
            );
        }
    }
    assert_eq!(read, TOTAL);
    eprintln!(
        "slow reader: 1 GiB read; unread-but-produced peak {} KiB; RSS {baseline} KiB -> peak {peak_rss} KiB (+{} KiB) for edge, agent and client together",
        peak_in_flight >> 10,
        peak_rss - baseline
    );
    assert!(
        peak_rss - baseline < 128 * 1024,
        "memory grew by {} KiB",
        peak_rss - baseline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: scripts/test.sh runs it"]
async fn a_thousand_open_sse_streams_cost_little_memory_each() {
    const STREAMS: u64 = 1000;
    let issuer = issuer().await;
    let agent = agent().await;
    let binary = start_binary(&issuer, &agent).await;
    let pid = binary.child.id().to_string();
    let token = {
        let mut opts = default_claims();
        opts.iss = issuer.issuer();
        issuer.mint(&opts).unwrap()
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let send = |body: &'static str| {
        let request = Request::post(format!(
            "http://{}/runtimes/support/invocations",
            binary.addr
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
        client.request(request)
    };
    // Warm up: pools, caches, the allocator's first arenas.
    for _ in 0..20 {
        let response = send(r#"{"stream":2,"intervalMs":1}"#).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let baseline = rss_kib(&pid);
    // 1,000 streams of one event a second for up to ten minutes, each on its own connection.
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let pending = send(r#"{"stream":600,"intervalMs":1000}"#);
        let mut hold = hold_rx.clone();
        tasks.push(tokio::spawn(async move {
            let response = pending.await.unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            body.frame().await.unwrap().unwrap();
            // Keep reading (the stream stays live) until told to hang up.
            loop {
                tokio::select! {
                    frame = body.frame() => { frame.unwrap().unwrap(); }
                    _ = hold.changed() => return,
                }
            }
        }));
    }
    let agent_streams = agent.clone();
    assert!(
        eventually(Duration::from_secs(120), || agent_streams.active_streams()
            as u64
            == STREAMS)
        .await,
        "{} streams open",
        agent.active_streams()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = rss_kib(&pid);
    let per_stream = (open.saturating_sub(baseline)) as f64 / STREAMS as f64;
    eprintln!(
        "1000 SSE streams: edge RSS {baseline} KiB idle -> {open} KiB with the streams open: {per_stream:.1} KiB per stream (client + upstream connection, buffers, record)"
    );
    // Hang up: every upstream stream is cancelled, none is left behind.
    hold_tx.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    agent
        .wait_for_cancelled_streams(STREAMS, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(agent.active_streams(), 0);
    assert!(per_stream < 256.0, "{per_stream} KiB per stream");
}
