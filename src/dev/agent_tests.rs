use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::*;
use crate::dev::serve::client::{fetch, get_json, send};

const SESSION: &str = "0123456789abcdef0123456789abcdef-session";

async fn agent() -> EchoAgent {
    EchoAgent::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn invoke(agent: &EchoAgent, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let url = format!("{}/invocations?qualifier=DEFAULT", agent.url());
    let (status, _, body) = fetch(Method::POST, &url, headers, body.to_owned()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn ping_follows_the_runtime_contract() {
    let agent = agent().await;
    let ping = get_json(&format!("{}/ping", agent.url())).await;
    assert_eq!(ping["status"], "Healthy");
    let t = ping["time_of_last_update"].as_i64().unwrap();
    assert!(t > 1_700_000_000);
    // Stable across pings: advancing it would keep an idle session alive forever.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get_json(&format!("{}/ping", agent.url())).await["time_of_last_update"],
        t
    );
}

#[tokio::test]
async fn invocations_echo_payload_headers_and_session() {
    let agent = agent().await;
    let (status, echo) = invoke(
        &agent,
        &[
            ("content-type", "application/json"),
            ("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", SESSION),
            ("authorization", "Bearer secret-token"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ],
        r#"{"prompt":"hi"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["payload"], json!({ "prompt": "hi" }));
    assert_eq!(echo["sessionId"], SESSION);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/invocations");
    assert_eq!(echo["query"], "qualifier=DEFAULT");
    assert_eq!(echo["bodyBytes"], 15);
    assert_eq!(echo["headers"]["x-multi"], "a, b");
    assert_eq!(
        echo["headers"]["x-amzn-bedrock-agentcore-runtime-session-id"],
        SESSION
    );
    assert_eq!(echo["headers"]["authorization"], "Bearer secret-token");

    let seen = agent
        .wait_for_requests(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!((r.method.clone(), r.path()), (Method::POST, "/invocations"));
    assert_eq!(r.header("X-Multi").as_deref(), Some("a, b"));
    assert_eq!(r.body_json(), Some(json!({ "prompt": "hi" })));
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Bearer secret-token")
    );
    assert!(
        !format!("{r:?}").contains("secret-token"),
        "Debug redacts Authorization"
    );

    // Not JSON: echoed as a string; no session header: null.
    let (_, echo) = invoke(&agent, &[], "plain words").await;
    assert_eq!(echo["payload"], "plain words");
    assert_eq!(echo["sessionId"], Value::Null);
    assert_eq!(agent.request_count(), 2);
}

#[tokio::test]
async fn any_path_echoes_so_it_can_stand_in_for_an_mcp_server() {
    let agent = agent().await;
    let (status, headers, body) = fetch(
        Method::POST,
        &format!("{}/mcp", agent.url()),
        &[
            ("mcp-session-id", "mcp-123"),
            ("accept", "application/json, text/event-stream"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["mcp-session-id"], "mcp-123");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/mcp");
    assert_eq!(echo["payload"]["method"], "tools/list");
    assert_eq!(agent.requests()[0].path(), "/mcp");
}

#[tokio::test]
async fn streams_sse_one_event_at_a_time() {
    let agent = agent().await;
    let interval = Duration::from_millis(250);
    let started = Instant::now();
    let resp = send(
        Method::POST,
        &format!("{}/invocations", agent.url()),
        &[("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", SESSION)],
        r#"{"stream": 3, "intervalMs": 250}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        // Each read carries exactly one whole event: nothing was batched up.
        let text = String::from_utf8(data.to_vec()).unwrap();
        assert!(
            text.starts_with("data: ") && text.ends_with("\n\n"),
            "{text:?}"
        );
        assert_eq!(text.matches("data: ").count(), 1, "{text:?}");
        let event: Value = serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
        events.push((started.elapsed(), event));
        if events.len() == 1 {
            assert_eq!(agent.active_streams(), 1);
        }
    }
    assert_eq!(events.len(), 3);
    for (i, (_, e)) in events.iter().enumerate() {
        assert_eq!(e["index"], i);
        assert_eq!(e["count"], 3);
        assert_eq!(e["sessionId"], SESSION);
    }
    // The last event cannot have arrived before the server slept twice (a lower bound only:
    // sleeps never end early); the first arrived while the stream was still open (above).
    assert!(events[2].0 >= interval * 2);
    assert_eq!(
        (agent.completed_streams(), agent.cancelled_streams()),
        (1, 0)
    );
    assert_eq!(agent.active_streams(), 0);
}

#[tokio::test]
async fn a_reader_going_away_cancels_the_stream() {
    let agent = agent().await;
    let resp = send(
        Method::POST,
        &format!("{}/invocations", agent.url()),
        &[],
        r#"{"stream": 1000, "intervalMs": 20}"#,
    )
    .await
    .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    agent
        .wait_for_cancelled_streams(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(agent.active_streams(), 0);
    assert_eq!(agent.completed_streams(), 0);
}

#[tokio::test]
async fn behaviors_simulate_broken_upstreams() {
    let agent = agent().await;
    let url = format!("{}/invocations", agent.url());

    agent.set_behavior(Behavior::Status(503));
    let (status, echo) = invoke(&agent, &[], "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(echo["message"].as_str().unwrap().contains("503"));

    agent.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(invoke(&agent, &[], "{}").await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    agent.set_behavior(Behavior::CloseImmediately);
    assert!(send(Method::POST, &url, &[], "{}").await.is_err());

    agent.set_behavior(Behavior::ResetMidStream);
    let resp = send(Method::POST, &url, &[], "{}").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "));
    let mut broke = false;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            broke = true;
            break;
        }
    }
    assert!(broke, "the body ends in an error, not a clean end");

    agent.set_behavior(Behavior::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        send(Method::POST, &url, &[], "{}"),
    )
    .await;
    assert!(hung.is_err());
    // Even failed and hung requests were recorded: tests can tell the upstream was reached.
    assert_eq!(agent.request_count(), 5);

    agent.set_behavior(Behavior::Normal);
    assert_eq!(invoke(&agent, &[], "{}").await.0, StatusCode::OK);
    agent.shutdown().await;
    assert!(send(Method::POST, &url, &[], "{}").await.is_err());
}

#[tokio::test]
async fn recording_is_bounded() {
    let agent = EchoAgent::start_with(AgentOptions {
        record_limit: 3,
        record_body_limit: 1024,
        ..AgentOptions::default()
    })
    .await
    .unwrap();
    let big = "x".repeat(3 * 1024 * 1024);
    let (status, echo) = invoke(&agent, &[], &big).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["bodyBytes"], 3 * 1024 * 1024);
    assert!(echo["payload"].as_str().unwrap().contains("not echoed"));
    let r = &agent.requests()[0];
    assert_eq!(
        (r.body.len(), r.body_len, r.body_truncated),
        (1024, 3 * 1024 * 1024, true)
    );
    assert_eq!(r.body_json(), None);

    for i in 0..4 {
        invoke(&agent, &[], &format!("{{\"n\":{i}}}")).await;
    }
    let kept: Vec<Value> = agent
        .requests()
        .iter()
        .filter_map(Recorded::body_json)
        .collect();
    assert_eq!(kept, [json!({"n":1}), json!({"n":2}), json!({"n":3})]);
    assert_eq!(agent.request_count(), 5);

    let err = agent
        .wait_for_requests(6, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!((err.wanted, err.seen), (6, 5));
    agent.clear();
    assert!(agent.requests().is_empty());
    assert_eq!(agent.request_count(), 0);
    let waiter = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.wait_for_requests(1, Duration::from_secs(5)).await })
    };
    invoke(&agent, &[], "{}").await;
    assert_eq!(waiter.await.unwrap().unwrap().len(), 1);
}

#[tokio::test]
async fn a_caller_giving_up_on_a_hung_request_is_seen_as_abandoned() {
    let agent = agent().await;
    agent.set_behavior(Behavior::Hang);
    let url = format!("{}/invocations", agent.url());
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        send(Method::POST, &url, &[], "{}"),
    )
    .await;
    assert!(gave_up.is_err());
    agent
        .wait_for_abandoned_requests(1, Duration::from_secs(5))
        .await
        .unwrap();
    agent.set_behavior(Behavior::Delay(Duration::from_secs(30)));
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        send(Method::POST, &url, &[], "{}"),
    )
    .await;
    assert!(gave_up.is_err());
    agent
        .wait_for_abandoned_requests(2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(agent.request_count(), 2);
}
