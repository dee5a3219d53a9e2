//! How connections end (SPEC §7 last paragraph, §2 drain): an error sent before the request is
//! read reaches a client that writes its whole request before reading; a drain serves the
//! next request on an idle keep-alive connection instead of resetting it, and sends GOAWAY on
//! HTTP/2 while streams in flight finish.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

/// How many times each early error is tried: the reset it guards against happened about one
/// try in three.
const TRIES: usize = 200;

/// Writes the whole request, then reads: returns the status line, or what went wrong. A small
/// send buffer keeps the client from getting ahead of the edge's reads, as on a real network:
/// it is still writing when the edge answers.
async fn write_then_read(addr: std::net::SocketAddr, request: &[u8]) -> Result<String, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_send_buffer_size(16 * 1024)
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) => return Err(format!("EOF after {} bytes", seen.len())),
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Sends `request` [`TRIES`] times, eight clients at once; every try must read `status`.
async fn always_answered(edge: &Edge, request: Vec<u8>, status: &str) {
    let request = std::sync::Arc::new(request);
    let mut failures = Vec::new();
    for _ in 0..TRIES / 8 {
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let (addr, request) = (edge.addr, request.clone());
                tokio::spawn(async move { write_then_read(addr, &request).await })
            })
            .collect();
        for t in tries {
            match t.await.unwrap() {
                Ok(line) if line.starts_with(&format!("HTTP/1.1 {status}")) => {}
                Ok(line) => failures.push(line),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} tries did not read {status}: {:?}",
        failures.len(),
        TRIES / 8 * 8,
        &failures[..failures.len().min(5)]
    );
}

fn post(headers: &str, body_len: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n{headers}\r\n"
    )
    .into_bytes();
    request.resize(request.len() + body_len, b' ');
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_431_for_a_100_kb_header_reaches_a_client_still_writing() {
    let edge = Edge::start("", &support_route()).await;
    let header = format!("authorization: Bearer {}\r\n", "a".repeat(100 * 1024));
    // With a body behind the header, as http.client sends it: still writing at the 431.
    always_answered(&edge, post(&header, 512 << 10), "431").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_for_a_body_over_the_limit_reaches_a_client_still_writing() {
    let edge = Edge::start("limits: { maxRequestBodyBytes: 64KiB }", &support_route()).await;
    let header = format!("authorization: Bearer {}\r\n", edge.valid_token());
    always_answered(&edge, post(&header, 512 << 10), "413").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_before_a_large_body_reaches_a_client_still_writing() {
    let edge = Edge::start("", &support_route()).await;
    always_answered(&edge, post("", 512 << 10), "401").await;
}

async fn http1_connection(edge: &Edge) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

fn invocation(edge: &Edge, token: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/runtimes/support/invocations")
        .header("host", edge.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn a_drain_serves_the_next_request_on_an_idle_connection_with_connection_close() {
    let mut edge = Edge::start("shutdownGracePeriod: 20s", &support_route()).await;
    let token = edge.valid_token();
    let mut sender = http1_connection(&edge).await;
    let first = sender
        .send_request(invocation(&edge, &token, "{}"))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_ne!(
        first.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    first.into_body().collect().await.unwrap();

    let drained = edge.begin_shutdown();
    // The connection is idle when the drain starts; the client sends on it a moment later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused from the start of the drain.
    assert!(TcpStream::connect(edge.addr).await.is_err());
    sender.ready().await.unwrap();
    let second = sender
        .send_request(invocation(&edge, &token, "{}"))
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["connection"], "close");
    second.into_body().collect().await.unwrap();
    // That was its last response: the edge closes it, and with it gone the drain ends.
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the drain ends when the last connection is gone")
        .unwrap()
        .unwrap();
    assert!(sender.ready().await.is_err());
}

#[tokio::test]
async fn a_drain_closes_a_connection_that_stays_idle_and_ends_before_the_grace_period() {
    let mut edge = Edge::start("shutdownGracePeriod: 60s", &support_route()).await;
    let token = edge.valid_token();
    let mut sender = http1_connection(&edge).await;
    let first = sender
        .send_request(invocation(&edge, &token, "{}"))
        .await
        .unwrap();
    first.into_body().collect().await.unwrap();
    let drained = edge.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(20), drained)
        .await
        .expect("an idle connection does not hold the drain to the grace period")
        .unwrap()
        .unwrap();
    assert!(sender.ready().await.is_err());
}

#[tokio::test]
async fn a_drain_sends_goaway_on_http2_and_lets_the_stream_in_flight_finish() {
    let mut edge = Edge::start("shutdownGracePeriod: 20s", &support_route()).await;
    let token = edge.valid_token();
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // A stream of 6 events, 200 ms apart, is in flight when the drain starts.
    let response = sender
        .send_request(invocation(
            &edge,
            &token,
            r#"{"stream":6,"intervalMs":200}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let drained = edge.begin_shutdown();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data:").count(),
        6,
        "{body:?}"
    );
    // GOAWAY: the client's connection ends without an error and takes no new stream.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the edge ends the HTTP/2 connection after its last stream")
        .unwrap()
        .unwrap();
    assert!(
        sender
            .send_request(invocation(&edge, &token, "{}"))
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
