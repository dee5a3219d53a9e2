//! Request threads (`serve --threads N`), against the real binary: N worker threads each
//! accept and serve their own connections (with their own upstream connections), every
//! request is answered, and SIGTERM drains them all and exits cleanly. Loopback only; the
//! load is bounded in time.

use std::time::Duration;

use gatehouse::bench::load::{self, Plan, Stop};
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
