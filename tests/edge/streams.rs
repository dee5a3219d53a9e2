//! Forwarding: streaming both ways, SSE without buffering, client disconnect, HTTP/2 (h2c and
//! TLS with ALPN), graceful drain, slow clients.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

async fn stream_request(
    edge: &Edge,
    events: u32,
    interval_ms: u32,
) -> http::Response<hyper::body::Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"stream":{events},"intervalMs":{interval_ms}}}"#
        ))))
        .unwrap();
    client.request(request).await.unwrap()
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let edge = Edge::start("", &support_route()).await;
    let response = stream_request(&edge, 4, 300).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("data: "),
        "{first:?}"
    );
    // The first event is here while the agent is still producing the others.
    assert_eq!(edge.agent.completed_streams(), 0);
    assert_eq!(edge.agent.active_streams(), 1);
    let rest = body.collect().await.unwrap().to_bytes();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(all.matches("data: ").count(), 4, "{all}");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let edge = Edge::start("", &support_route()).await;
    let response = stream_request(&edge, 1000, 100).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    edge.agent
        .wait_for_cancelled_streams(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(edge.agent.completed_streams(), 0);
    // The access log records the aborted stream.
    let lines = edge.access_lines(1).await;
    assert_eq!(lines[0]["aborted"], true, "{lines:?}");
    assert_eq!(lines[0]["status"], 200);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let edge = Edge::start("", &support_route()).await;
    let payload = format!(r#"{{"data":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let reply = edge
        .invoke("support", Some(&edge.valid_token()), &payload)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(edge.agent.requests()[0].body_len, payload.len() as u64);
    let lines = edge.access_lines(1).await;
    assert_eq!(lines[0]["bytes_in"], payload.len());
    assert_eq!(lines[0]["bytes_out"], reply.body.len());
}

#[tokio::test]
async fn h2c_clients_work() {
    let edge = Edge::start("", &support_route()).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(
            br#"{"stream":3,"intervalMs":10}"#,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("transfer-encoding").is_none());
    assert!(response.headers().get("connection").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body).matches("data: ").count(), 3);
}

#[tokio::test]
async fn an_h2c_preface_split_across_packets_is_still_http2() {
    // The edge tells HTTP/2 from HTTP/1.1 by peeking at a connection's first bytes; when they
    // are only the start of the preface, hyper-util reads on and decides.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = Edge::start("", &support_route()).await;
    let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    stream.write_all(&preface[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&preface[5..]).await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("the edge answers")
        .unwrap();
    // An HTTP/1.1 parser would have answered "HTTP/1.1 400".
    assert_eq!(head[3], 4, "the edge's first frame is SETTINGS: {head:?}");
}

#[tokio::test]
async fn tls_listener_negotiates_h2_and_http11() {
    let issuer = issuer().await;
    let agent = agent().await;
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls: {{ certFile: tls/edge.pem, keyFile: tls/edge.key }}\nroutes:\n{}",
        fill(&support_route(), &issuer, &agent)
    );
    let edge = Edge::from_yaml(issuer, agent, &yaml).await;
    let pem = std::fs::read("tests/fixtures/tls/ca.pem").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    for version in [http::Version::HTTP_2, http::Version::HTTP_11] {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        // The connector offers exactly the ALPN protocol of the enabled version.
        let https = if version == http::Version::HTTP_2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
        let request = Request::post(format!(
            "https://localhost:{}/runtimes/support/invocations",
            edge.addr.port()
        ))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
    }
    let seen = edge.agent.requests();
    assert_eq!(
        seen[0].header("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

#[tokio::test]
async fn drain_lets_streams_finish_and_refuses_new_connections() {
    let mut edge = Edge::start("shutdownGracePeriod: 20s", &support_route()).await;
    let response = stream_request(&edge, 5, 200).await;
    let reading =
        tokio::spawn(async move { response.into_body().collect().await.map(|b| b.to_bytes()) });
    edge.agent
        .wait_for_requests(1, Duration::from_secs(5))
        .await
        .unwrap();
    let done = edge.begin_shutdown();
    // New connections are refused once draining starts.
    let addr = edge.addr;
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            addr
        )
        .is_err())
        .await,
        "still accepting during drain"
    );
    let body = reading.await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body).matches("data: ").count(),
        5,
        "the in-flight stream completed"
    );
    assert!(done.await.unwrap().is_ok());
}

#[tokio::test]
async fn slowloris_is_closed_at_header_read_timeout() {
    let edge = Edge::start("limits: { headerReadTimeout: 1s }", &support_route()).await;
    let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the edge closes the connection on its own.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open long after headerReadTimeout"
    );
    assert_eq!(edge.agent.request_count(), 0);
}

#[tokio::test]
async fn a_response_outlasting_header_read_timeout_is_not_cut() {
    // The timeout is for request heads: a stream of 2.4 s behind a 1 s headerReadTimeout runs
    // to its end, and the connection then serves the next request.
    let edge = Edge::start("limits: { headerReadTimeout: 1s }", &support_route()).await;
    let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"stream":6,"intervalMs":400}"#;
    let request = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        edge.valid_token(),
        body.len()
    );
    for round in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 8192];
        // Chunked: the stream ends with its last chunk.
        while !seen.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
                .await
                .expect("the response stalled")
                .unwrap();
            assert!(
                n > 0,
                "round {round}: closed mid-response after {} bytes",
                seen.len()
            );
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(text.matches("data: ").count(), 6, "round {round}: {text}");
    }
    assert_eq!(edge.agent.request_count(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_the_pool() {
    let edge = Arc::new(Edge::start("", &support_route()).await);
    let token = edge.valid_token();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let edge = edge.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            edge.invoke("support", Some(&token), &format!(r#"{{"i":{i}}}"#))
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(edge.agent.request_count(), 50);
}
