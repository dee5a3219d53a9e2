//! Rolling the edge under load, against the real binary (issue 13): twenty reloads lose no
//! request, and a SIGTERM drain answers every request that reached an open connection — no
//! non-2xx, no read error, no timeout; the only failures allowed are refused connects once
//! the listener is closed. Driven by `gatehouse bench`'s load engine (HTTP/1.1 keep-alive,
//! closed loop, 32 connections: the wrk run of the issue). Slow tier; loopback only.

use std::time::Duration;

use gatehouse::bench::load::{self, Outcome, Plan, Stop};
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::support::*;

const CONNECTIONS: usize = 32;

fn plan(binary: &Binary, token: &str, seconds: u64) -> Plan {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Plan {
        url: format!("http://{}/runtimes/support/invocations", binary.addr)
            .parse()
            .unwrap(),
        method: Method::POST,
        headers,
        body: bytes::Bytes::from_static(b"{}"),
        tokens: vec![HeaderValue::from_str(&format!("Bearer {token}")).unwrap()],
        connections: CONNECTIONS,
        stop: Stop::After(Duration::from_secs(seconds)),
        rate: None,
        timeout: Duration::from_secs(10),
        source: None,
    }
}

fn non_2xx(outcome: &Outcome) -> Vec<(u16, u64)> {
    outcome
        .status
        .iter()
        .copied()
        .filter(|(status, _)| !(200..300).contains(status))
        .collect()
}

/// The file start_binary_with wrote, with one setting changed: each reload swaps for real.
fn config(binary: &Binary, server_timing: bool) -> String {
    let text = std::fs::read_to_string(binary.config_path()).unwrap();
    text.replace(
        &format!("serverTiming: {}", !server_timing),
        &format!("serverTiming: {server_timing}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: scripts/test.sh runs it"]
async fn twenty_reloads_then_a_sigterm_under_load_lose_no_request() {
    let issuer = issuer().await;
    let agent = agent().await;
    let mut binary = start_binary_with(
        &issuer,
        &agent,
        "telemetry: { accessLog: \"off\", serverTiming: false }\nshutdownGracePeriod: 20s",
        &support_route(),
    )
    .await;
    let token = token_of(&issuer);

    // Reloads: the file alternates between two valid configurations, SIGHUP every 200 ms.
    let load = tokio::spawn(load::run(plan(&binary, &token, 6), |_| {}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        std::fs::write(binary.config_path(), config(&binary, i % 2 == 0)).unwrap();
        binary.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reloads = load.await.unwrap().unwrap();
    let applied = binary.stderr().matches("configuration reloaded").count();
    eprintln!(
        "reloads: {applied} applied; {} responses {:?}, errors {:?}",
        reloads.responses(),
        reloads.status,
        reloads.errors
    );
    assert_eq!(applied, 20, "{}", binary.stderr_tail(20));
    assert!(reloads.responses() > 0);
    assert_eq!(non_2xx(&reloads), vec![], "{:?}", reloads.status);
    assert_eq!(reloads.errors.total(), 0, "{:?}", reloads.errors);

    // The drain: SIGTERM while 32 keep-alive connections are busy.
    let load = tokio::spawn(load::run(plan(&binary, &token, 4), |_| {}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    binary.signal("TERM");
    let drain = load.await.unwrap().unwrap();
    let exited = eventually(Duration::from_secs(25), || {
        matches!(binary.child.try_wait(), Ok(Some(_)))
    })
    .await;
    eprintln!(
        "drain: {} responses {:?}, errors {:?}",
        drain.responses(),
        drain.status,
        drain.errors
    );
    assert!(exited, "the edge exits after the drain");
    let status = binary.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", binary.stderr_tail(20));
    assert!(
        binary.stderr().contains("drained"),
        "{}",
        binary.stderr_tail(20)
    );
    assert!(drain.responses() > 0);
    assert_eq!(non_2xx(&drain), vec![], "{:?}", drain.status);
    assert_eq!(drain.errors.io, 0, "read errors: {:?}", drain.errors);
    assert_eq!(drain.errors.timeout, 0, "timeouts: {:?}", drain.errors);
    // Refused connects are the clients coming back after their last response.
    assert!(drain.errors.connect > 0, "{:?}", drain.errors);
}
