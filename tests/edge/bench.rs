//! `gatehouse bench` against a running edge: the numbers it reports are consistent with each
//! other and with the edge's own metrics (never checked for speed).

use std::time::Duration;

use clap::Parser;
use gatehouse::bench::{self, BenchArgs, load};
use serde_json::Value;

use crate::support::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(line: &[&str]) -> BenchArgs {
    let mut argv = vec!["bench"];
    argv.extend_from_slice(line);
    Cli::try_parse_from(argv).unwrap().bench
}

fn ordered(p: &Value) {
    let at = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} in {p}"));
    assert!(at("p50") <= at("p90"), "{p}");
    assert!(at("p90") <= at("p99"), "{p}");
    assert!(at("p99") <= at("p99_9"), "{p}");
    assert!(at("p99_9") <= at("max"), "{p}");
    assert!(at("p50") >= 0.0);
}

async fn requests_total(edge: &Edge) -> u64 {
    let text = String::from_utf8(edge.admin("/metrics").await.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| l.starts_with("gatehouse_requests_total{") && l.contains("route=\"support\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// The binary, minting distinct tokens from a key file, closed loop, `--json`.
#[tokio::test]
async fn the_cli_mints_distinct_tokens_and_reports_consistent_numbers() {
    let edge = Edge::start("telemetry: { serverTiming: true }", &support_route()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, edge.issuer.signing_key().to_pkcs8_pem().unwrap()).unwrap();
    let before = requests_total(&edge).await;
    let url = edge.url("/runtimes/support/invocations");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(["bench", "--url", &url, "--mint", "--key"])
        .arg(&key)
        .args([
            "--iss",
            &edge.issuer.issuer(),
            "--client-id",
            CLIENT,
            "--scope",
            "invoke",
        ])
        .args(["--aud", AUDIENCE, "--kid", edge.issuer.signing_key().kid()])
        .args(["--distinct-tokens", "3", "-c", "4", "-n", "120", "--json"]);
    // The edge runs on this test's runtime: wait for the child off it.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["requests"], 120);
    assert_eq!(report["responses"], 120);
    assert_eq!(report["status"]["200"], 120, "{report}");
    assert_eq!(report["errors"]["connect"], 0);
    assert_eq!(report["tokens"], 3);
    assert_eq!(report["latency_ms"]["count"], 120);
    ordered(&report["latency_ms"]);
    // The edge's own view: one validation per request, at least one miss per token.
    let auth = &report["server_auth_ms"];
    assert_eq!(auth["count"], 120);
    assert_eq!(
        auth["hits"].as_u64().unwrap() + auth["misses"].as_u64().unwrap(),
        120
    );
    assert!(auth["misses"].as_u64().unwrap() >= 3, "{auth}");
    ordered(auth);
    ordered(&report["server_upstream_ms"]);
    assert!(report["throughput_rps"].as_f64().unwrap() > 0.0);
    assert_eq!(requests_total(&edge).await - before, 120);
    assert_eq!(edge.agent.request_count(), 120);
    let ids: std::collections::HashSet<String> = edge
        .agent
        .requests()
        .iter()
        .filter_map(|r| r.header("x-amzn-bedrock-agentcore-runtime-request-id"))
        .collect();
    assert_eq!(ids.len(), 120, "one upstream request per bench request");
}

/// Fixed rate, a token file, status counts for a mix of accepted and refused tokens.
#[tokio::test]
async fn fixed_rate_with_a_token_file_counts_every_status() {
    let edge = Edge::start("telemetry: { serverTiming: true }", &support_route()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.txt");
    let good = edge.valid_token();
    let intruder = edge.token(|o| o.client_id = Some("intruder".into()));
    std::fs::write(&file, format!("# two tokens\n{good}\n\n{intruder}\n")).unwrap();
    let url = edge.url("/runtimes/support/invocations");
    let path = file.to_str().unwrap();
    let plan = bench::plan(&args(&[
        "--url",
        &url,
        "--token-file",
        path,
        "--rate",
        "400",
        "-n",
        "60",
        "-c",
        "3",
        "-H",
        "X-Test: 1",
    ]))
    .unwrap();
    assert_eq!(plan.tokens.len(), 2);
    let outcome = load::run(plan, |_| {}).await.unwrap();
    assert_eq!(outcome.responses(), 60);
    assert_eq!(outcome.errors.total(), 0);
    assert_eq!(outcome.status, vec![(200, 30), (403, 30)]);
    assert_eq!(outcome.latency.len(), 60);
    assert_eq!(outcome.server_auth.len(), 60);
    // 60 requests at 400/s are scheduled over 147.5 ms; the run cannot be shorter.
    assert!(outcome.elapsed >= Duration::from_millis(147));
    let report = bench::Report {
        target: "test",
        connections: 3,
        rate: Some(400.0),
        tokens: 2,
        outcome: &outcome,
    };
    let json = report.json();
    assert_eq!(json["mode"], "rate");
    assert_eq!(json["status"]["403"], 30);
    ordered(&json["latency_ms"]);
    let text = report.text();
    assert!(text.contains("200: 30  403: 30"), "{text}");
    assert!(text.contains("edge validation (ms)"), "{text}");
}

#[tokio::test]
async fn refused_connections_are_errors_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let plan = bench::plan(&args(&["--url", &url, "-n", "5"])).unwrap();
    let error = load::run(plan, |_| {}).await.unwrap_err();
    assert!(error.contains("cannot connect"), "{error}");
    for bad in [
        vec!["--url", "ftp://x/"],
        vec!["--url", "http://x/", "--rate", "0"],
        vec!["--url", "http://x/", "-c", "0"],
        vec!["--url", "http://x/", "-H", "no-colon"],
        vec!["--url", "http://x/", "--duration", "soon"],
    ] {
        assert!(bench::plan(&args(&bad)).is_err(), "{bad:?}");
    }
    assert!(
        Cli::try_parse_from(["bench", "--url", "http://x/", "--token", "a", "--mint"]).is_err()
    );
    assert!(Cli::try_parse_from(["bench", "--url", "http://x/", "-n", "1", "-d", "1s"]).is_err());
}
