//! Upstream faults: refused, accept-then-hang, garbage, reset mid-response, idle streams. Each
//! gets its SPEC §7 status (or, once the response has started, a cut stream the client can
//! see), and the access log says what happened.

use std::time::Duration;

use bytes::Bytes;
use gatehouse::dev::Behavior;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A route to `url` instead of the echo agent.
fn route_to(url: &str) -> String {
    support_route().replace("{agent}", url)
}

#[tokio::test]
async fn connection_refused_is_502() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let edge = Edge::start("", &route_to(&format!("http://127.0.0.1:{port}"))).await;
    let reply = edge
        .invoke("support", Some(&edge.valid_token()), "{}")
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_type(), Some("BadGatewayException"));
    assert_eq!(reply.message(), "The agent could not be reached.");
    let line = &edge.access_lines(1).await[0];
    assert_eq!(line["status"], 502);
    assert_eq!(line["error"], "upstream_unreachable");
    assert!(line["upstream_status"].is_null());
}

#[tokio::test]
async fn accept_then_hang_is_504_at_request_timeout_and_the_upstream_is_released() {
    // A socket that accepts and never reads or answers (below HTTP), and an HTTP agent that
    // reads the request and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let routes = format!(
        "{}{}",
        &support_route(),
        route_to(&silent_url).replace("name: support", "name: silent")
    );
    let edge = Edge::start("limits: { requestTimeout: 1s }", &routes).await;
    let token = edge.valid_token();
    let reply = edge.invoke("silent", Some(&token), "{}").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error_type(), Some("GatewayTimeoutException"));
    assert_eq!(reply.message(), "The agent did not answer within 1s.");

    edge.agent.set_behavior(Behavior::Hang);
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 504);
    // The edge gave up on the upstream request too: the agent sees it dropped.
    edge.agent
        .wait_for_abandoned_requests(1, Duration::from_secs(5))
        .await
        .unwrap();
    let lines = edge.access_lines(2).await;
    assert!(
        lines.iter().all(|l| l["error"] == "upstream_timeout"),
        "{lines:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn garbage_or_a_closed_connection_before_the_response_is_502() {
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = garbage.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
    });
    let routes = format!(
        "{}{}",
        &support_route(),
        route_to(&garbage_url).replace("name: support", "name: garbage")
    );
    let edge = Edge::start("", &routes).await;
    let token = edge.valid_token();
    let reply = edge.invoke("garbage", Some(&token), "{}").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_type(), Some("BadGatewayException"));

    edge.agent.set_behavior(Behavior::CloseImmediately);
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_type(), Some("BadGatewayException"));
    server.abort();
}

#[tokio::test]
async fn reset_mid_response_ends_the_clients_stream_and_is_logged() {
    let edge = Edge::start("", &support_route()).await;
    edge.agent.set_behavior(Behavior::ResetMidStream);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    // The headers were already sent when the upstream broke: the status stays 200...
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: {\"index\":0}\n\n");
    // ...and the client sees the stream end abnormally, not a clean end of body.
    let mut ended_with_error = false;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            ended_with_error = true;
            break;
        }
    }
    assert!(ended_with_error, "the cut was passed on, not hidden");
    let line = &edge.access_lines(1).await[0];
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["aborted"], true, "{line}");
    assert_eq!(line["error"], "stream_error", "{line}");
    assert_eq!(line["bytes_out"], first.len());
}

#[tokio::test]
async fn an_idle_upstream_stream_is_cut_at_stream_idle_timeout() {
    let edge = Edge::start("limits: { streamIdleTimeout: 1s }", &support_route()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(
            br#"{"stream":3,"intervalMs":5000}"#,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    let next = tokio::time::timeout(Duration::from_secs(4), body.frame()).await;
    assert!(
        matches!(next, Ok(Some(Err(_))) | Ok(None)),
        "the silent stream was cut before its next event"
    );
    edge.agent
        .wait_for_cancelled_streams(1, Duration::from_secs(5))
        .await
        .unwrap();
    let line = &edge.access_lines(1).await[0];
    assert_eq!(line["aborted"], true, "{line}");
}
