//! Abusive clients: trickled and oversized headers, malformed and smuggling requests, HTTP/2
//! stream floods and rapid resets, connection floods. The edge answers or closes within its
//! limits, never forwards what it refused, and keeps serving everyone else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The status line's code, if the edge answered at all.
fn status_of(response: &str) -> Option<u16> {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

async fn still_serving(edge: &Edge) {
    let reply = edge
        .invoke("support", Some(&edge.valid_token()), "{}")
        .await;
    assert_eq!(reply.status, 200, "the edge still serves normal requests");
}

#[tokio::test]
async fn trickled_headers_are_cut_at_header_read_timeout() {
    // Not idle: one byte every 100 ms, forever. The timeout is for the whole header section.
    let edge = Edge::start("limits: { headerReadTimeout: 1s }", &support_route()).await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    stream
        .write_all(b"POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        loop {
            if stream.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(20), trickle).await;
    assert!(
        closed.is_ok(),
        "the connection was closed under the trickle"
    );
    assert_eq!(edge.agent.request_count(), 0);
    still_serving(&edge).await;
}

#[tokio::test]
async fn a_megabyte_of_headers_is_431_and_so_are_too_many() {
    let edge = Edge::start("", &support_route()).await;
    let token = edge.valid_token();
    // One field of 1 MiB: beyond hyper's parser limit (maxRequestHeaderBytes + 16 KiB), so
    // hyper itself refuses it, with 431 and a closed connection.
    let huge = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nx-big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let response = edge.raw(huge.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(
        status_of(&response),
        Some(431),
        "{}",
        &response[..response.len().min(200)]
    );
    // Many small fields, 1 MiB in all.
    let mut many = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
    );
    for i in 0..40_000 {
        many.push_str(&format!("x-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let response = edge.raw(many.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(
        status_of(&response),
        Some(431),
        "{}",
        &response[..response.len().min(200)]
    );
    // More than hyper's 100 fields, though only a few KiB: refused by count.
    let mut fields = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
    );
    for i in 0..150 {
        fields.push_str(&format!("x-{i}: v\r\n"));
    }
    fields.push_str("\r\n");
    let response = edge.raw(fields.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&response), Some(431), "{response}");
    assert_eq!(edge.agent.request_count(), 0);
    still_serving(&edge).await;
}

#[tokio::test]
async fn malformed_and_smuggling_requests_never_reach_the_upstream() {
    let edge = Edge::start("", &support_route()).await;
    let token = edge.valid_token();
    let path = "/runtimes/support/invocations";
    let auth = format!("authorization: Bearer {token}\r\n");
    let cases: Vec<(&str, String)> = vec![
        (
            "garbage",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n".into(),
        ),
        ("no version", format!("POST {path}\r\n\r\n")),
        (
            "bad version",
            format!("POST {path} HTTP/7.1\r\nhost: x\r\n\r\n"),
        ),
        (
            "space in the header name",
            format!("POST {path} HTTP/1.1\r\nhost: x\r\nbad name: 1\r\n\r\n"),
        ),
        (
            "NUL in a header value",
            format!("POST {path} HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n"),
        ),
        (
            "obsolete line folding",
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}x-a: a\r\n  folded\r\ncontent-length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            "two different Content-Length",
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 2\r\ncontent-length: 40\r\n\r\n{{}}"
            ),
        ),
        (
            "Content-Length that is not a number",
            format!("POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 2x\r\n\r\n{{}}"),
        ),
        (
            "bad chunk size",
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "URI of 100 KB",
            format!(
                "GET /{} HTTP/1.1\r\nhost: x\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
        ),
    ];
    for (name, request) in &cases {
        let response = edge.raw(request.as_bytes(), Duration::from_secs(5)).await;
        let status = status_of(&response);
        assert!(
            matches!(status, None | Some(400 | 414 | 431 | 505)),
            "{name}: {status:?} {}",
            &response[..response.len().min(200)]
        );
        if *name == "bad chunk size" {
            // Framing broken after the headers were accepted: the client's fault, a 400 (it
            // used to be a 502 that blamed the agent).
            assert_eq!(status, Some(400), "{response}");
        }
    }
    assert_eq!(
        edge.agent.request_count(),
        0,
        "a malformed request was forwarded"
    );

    // CL.TE / TE.CL smuggling: whatever the edge makes of the framing, the agent never sees
    // the hidden second request as a request of its own.
    let smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let _ = edge.raw(request.as_bytes(), Duration::from_secs(3)).await;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}transfer-encoding: chunked, identity\r\n\r\n{body}"
    );
    let _ = edge.raw(request.as_bytes(), Duration::from_secs(3)).await;
    for seen in edge.agent.requests() {
        assert_eq!(seen.path(), "/invocations", "smuggled: {:?}", seen.uri);
    }
    still_serving(&edge).await;
}

#[tokio::test]
async fn a_body_over_the_limit_on_h2_is_refused_and_the_upstream_gets_no_more() {
    let edge = Edge::start("limits: { maxRequestBodyBytes: 1KiB }", &support_route()).await;
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(())
        .unwrap();
    // No content-length: the limit is enforced while streaming.
    let (response, mut send) = client.send_request(request, false).unwrap();
    for _ in 0..8 {
        if send.send_data(Bytes::from(vec![b'a'; 512]), false).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = send.send_data(Bytes::new(), true);
    match tokio::time::timeout(Duration::from_secs(10), response).await {
        Ok(Ok(response)) => assert_eq!(response.status(), 413),
        // Or the stream was reset: the client knows the request was not taken.
        Ok(Err(error)) => assert!(error.is_reset() || error.is_go_away(), "{error}"),
        Err(_) => panic!("no answer to an oversized h2 body"),
    }
    for seen in edge.agent.requests() {
        assert!(
            seen.body_len <= 1024,
            "upstream got {} bytes",
            seen.body_len
        );
    }
}

#[tokio::test]
async fn h2_stream_limit_is_advertised_and_rapid_resets_leave_nothing_behind() {
    let edge = Edge::start("", &support_route()).await;
    let token = edge.valid_token();
    edge.agent.set_behavior(gatehouse::dev::Behavior::Hang);
    let stream = TcpStream::connect(edge.addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(stream).await.unwrap();
    // Read the server's SETTINGS before asking for its limits.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut connection).await;
    assert_eq!(connection.max_concurrent_send_streams(), 256);
    let driver = tokio::spawn(connection);

    // Rapid reset (CVE-2023-44487): open streams and cancel them at once, many times over.
    let mut sent = 0;
    let mut client = client;
    for i in 0..2000 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break, // GOAWAY: the edge closed the abusive connection
        };
        let authorization = if i % 2 == 0 {
            format!("Bearer {token}")
        } else {
            "Bearer not.a.token".to_owned()
        };
        let request = http::Request::post(edge.url("/runtimes/support/invocations"))
            .header("authorization", authorization)
            .body(())
            .unwrap();
        let Ok((_, mut send)) = client.send_request(request, true) else {
            break;
        };
        send.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // (the client is dropped here, or was when the loop broke)
    assert!(sent > 0);
    // Whatever reached the agent before its stream was reset was abandoned with it: no
    // upstream request outlives its cancelled client stream.
    let app = edge.agent.clone();
    assert!(
        eventually(Duration::from_secs(10), || app.abandoned_requests()
            == app.request_count())
        .await,
        "{} upstream requests, {} abandoned",
        app.request_count(),
        app.abandoned_requests()
    );
    driver.abort();
    edge.agent.set_behavior(gatehouse::dev::Behavior::Normal);
    still_serving(&edge).await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let edge = Arc::new(
        Edge::start(
            "limits: { maxConnections: 4, headerReadTimeout: 30s }",
            &support_route(),
        )
        .await,
    );
    let request = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 2\r\n\r\n{{}}",
        edge.valid_token()
    );
    // Four keep-alive connections, each with one answered request, held open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(edge.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // A fifth connects (the kernel queues it) but is not served while the four are open.
    let mut fifth = TcpStream::connect(edge.addr).await.unwrap();
    fifth.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond maxConnections");
    assert_eq!(edge.agent.request_count(), 4);
    // One closes: the fifth is accepted and answered.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(edge.agent.request_count(), 5);
}

#[tokio::test]
async fn idle_connections_are_closed_so_they_cannot_hold_every_slot() {
    // A connection flood that opens connections and sends nothing, or sends one request and
    // then idles, must not keep maxConnections slots forever.
    let edge = Edge::start(
        "limits: { maxConnections: 2, headerReadTimeout: 1s }",
        &support_route(),
    )
    .await;
    let request = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 2\r\n\r\n{{}}",
        edge.valid_token()
    );
    let silent = TcpStream::connect(edge.addr).await.unwrap();
    let mut idle = TcpStream::connect(edge.addr).await.unwrap();
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Both slots are taken; both holders get closed by the edge, and a third is served.
    let mut third = TcpStream::connect(edge.addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(20), third.read(&mut buf))
        .await
        .expect("a slot was freed by the edge")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle keep-alive connection was closed");
    drop(silent);
}
