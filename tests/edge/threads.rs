//! Request threads (`serve --threads N`), against the real binary: N worker threads each
//! accept and serve their own connections (with their own upstream connections), every
//! request is answered, and SIGTERM drains them all and exits cleanly. Loopback only; the
//! load is bounded in time.

use std::time::Duration;

use gatehouse::bench::load::{self, Plan, Stop};
use gatehouse::dev::{EchoAgent, TestIssuer};
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::support::*;

fn worker_threads(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("gatehouse-worke"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_request_threads_serve_every_connection_and_drain_on_sigterm() {
    let issuer = issuer().await;
    let agent = agent().await;
    let mut binary = start_binary_env(
        &issuer,
        &agent,
        "telemetry: { accessLog: \"off\" }\nshutdownGracePeriod: 10s",
        &support_route(),
        &[("GATEHOUSE_THREADS", "3")],
    )
    .await;
    // Each thread names itself once it runs, which may be just after /readyz answers.
    let pid = binary.pid();
    assert!(
        eventually(Duration::from_secs(5), || worker_threads(&pid) == 3).await,
        "{} worker threads",
        worker_threads(&pid)
    );
    let token = token_of(&issuer);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let plan = Plan {
        url: format!("http://{}/runtimes/support/invocations", binary.addr)
            .parse()
            .unwrap(),
        method: Method::POST,
        headers,
        body: bytes::Bytes::from_static(b"{\"prompt\":\"hi\"}"),
        tokens: vec![HeaderValue::from_str(&format!("Bearer {token}")).unwrap()],
        connections: 24,
        stop: Stop::After(Duration::from_secs(2)),
        rate: None,
        timeout: Duration::from_secs(10),
        source: None,
    };
    let outcome = load::run(plan, |_| {}).await.unwrap();
    assert!(outcome.responses() > 100, "{:?}", outcome.status);
    assert_eq!(outcome.status, vec![(200, outcome.responses())]);
    assert_eq!(outcome.errors.total(), 0, "{:?}", outcome.errors);

    binary.signal("TERM");
    let exited = eventually(Duration::from_secs(15), || {
        matches!(binary.child.try_wait(), Ok(Some(_)))
    })
    .await;
    assert!(exited, "the edge exits after the drain");
    let status = binary.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", binary.stderr_tail(20));
    assert!(
        binary.stderr().contains("drained"),
        "{}",
        binary.stderr_tail(20)
    );
}

/// `gatehouse_client_connections{thread}` of each request thread, from `/metrics`.
async fn open_per_thread(binary: &Binary) -> Vec<f64> {
    let (status, text) = binary.admin_get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|line| line.starts_with("gatehouse_client_connections{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_request_threads() {
    let (binary, token, _peers) = three_threads("telemetry: { accessLog: \"off\" }").await;
    let addr: std::net::SocketAddr = binary.addr.parse().unwrap();
    // A burst of keep-alive connections, each answered once and kept open: whichever thread
    // wins each accept, none ends up with more than two above another.
    let mut open = Vec::new();
    for _ in 0..18 {
        let mut sender = connect(addr).await;
        assert_eq!(post_on(&mut sender, addr, &token).await.0, 200);
        open.push(sender);
    }
    let counts = open_per_thread(&binary).await;
    assert_eq!(counts.len(), 3, "one gauge per thread: {counts:?}");
    assert_eq!(counts.iter().sum::<f64>(), 18.0, "{counts:?}");
    let (min, max) = counts
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    assert!(max - min <= 2.0, "{counts:?}");

    // Closed connections are counted out.
    drop(open);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            open_per_thread(&binary).await.iter().all(|&c| c == 0.0)
        })
        .await,
        "{:?}",
        open_per_thread(&binary).await
    );
}

#[tokio::test]
async fn zero_threads_is_refused() {
    let output = std::process::Command::new(gatehouse_bin())
        .args(["serve", "--threads", "0", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--threads must be at least 1"), "{stderr}");
}

/// The binary with three request threads in front of a fresh issuer and agent (the support
/// route), a valid token for it, and the issuer and agent (kept for the test's length).
async fn three_threads(top: &str) -> (Binary, String, (TestIssuer, EchoAgent)) {
    let issuer = issuer().await;
    let agent = agent().await;
    let binary = start_binary_env(
        &issuer,
        &agent,
        top,
        &support_route(),
        &[("GATEHOUSE_THREADS", "3")],
    )
    .await;
    (binary, token_of(&issuer), (issuer, agent))
}

/// A new keep-alive HTTP/1.1 connection to `addr`.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// One keep-alive connection's answer to a POST on the support route (status and whether the
/// response carries `Server-Timing`).
async fn post_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: std::net::SocketAddr,
    token: &str,
) -> (u16, bool) {
    let request = http::Request::post(format!("http://{addr}/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let timed = response.headers().contains_key("server-timing");
    let status = response.status().as_u16();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    (status, timed)
}

/// Each request thread runs requests on its own copy of the settings; a reload replaces every
/// thread's copy, so requests on connections already open on any thread see the new
/// configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_every_request_thread() {
    let (binary, token, _peers) =
        three_threads("telemetry: { accessLog: \"off\", serverTiming: false }").await;
    let addr: std::net::SocketAddr = binary.addr.parse().unwrap();
    let mut open = Vec::new();
    for _ in 0..9 {
        let mut sender = connect(addr).await;
        assert_eq!(post_on(&mut sender, addr, &token).await, (200, false));
        open.push(sender);
    }
    let counts = open_per_thread(&binary).await;
    assert!(
        counts.iter().all(|&c| c > 0.0),
        "every thread has a connection: {counts:?}"
    );

    let text = std::fs::read_to_string(binary.config_path()).unwrap();
    std::fs::write(
        binary.config_path(),
        text.replace("serverTiming: false", "serverTiming: true"),
    )
    .unwrap();
    binary.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || binary
            .stderr()
            .contains("configuration reloaded"))
        .await,
        "{}",
        binary.stderr_tail(20)
    );
    for sender in &mut open {
        assert_eq!(post_on(sender, addr, &token).await, (200, true));
    }
}
