//! MCP routes (Streamable HTTP through the edge): every method authenticated, MCP headers
//! both ways, status codes and empty bodies untouched, `Origin` and `Authorization` toward the
//! upstream, SSE keep-alives only between events, discovery metadata for the MCP URL.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

use crate::support::*;

type Out = UnsyncBoxBody<Bytes, Infallible>;
pub(crate) type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Out>> + Send>> + Send + Sync,
>;

/// A tiny upstream whose answers the test writes.
pub(crate) async fn scripted(handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn full(status: u16, body: &'static str) -> Response<Out> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

/// An SSE response whose chunks the test sends through the returned channel.
fn sse() -> (Response<Out>, mpsc::UnboundedSender<&'static str>) {
    let (tx, rx) = mpsc::unbounded_channel::<&'static str>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(chunk.as_bytes()))),
            rx,
        ))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    (response, tx)
}

pub(crate) fn mcp_route(upstream: &str, extra: &str) -> String {
    let mut route = RouteYaml::new("tools")
        .mcp("/mcp")
        .upstream(&format!(r#"{{ url: "{upstream}" }}"#))
        .build();
    route.push_str(extra);
    route
}

#[tokio::test]
async fn headers_pass_both_ways_and_every_method_is_authenticated() {
    let agent = agent().await;
    // The session id is the test's own (sessions.rs covers binding).
    let routes = mcp_route(
        &agent.url(),
        "    cors: { allowedOrigins: [\"https://somewhere.example\"] }\n    sessionBinding: { enabled: false }\n",
    );
    let edge = Edge::start_with(issuer().await, agent, "", &routes).await;
    let auth = format!("Bearer {}", edge.valid_token());
    let mcp_headers = [
        ("mcp-session-id", "sess-1"),
        ("MCP-Protocol-Version", "2025-11-25"),
        ("Last-Event-ID", "ev-7"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "echo"),
        ("Mcp-Param-Region", "=?base64?ZXUtd2VzdA==?="),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
    ];
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let mut headers = mcp_headers.to_vec();
        headers.push(("authorization", &auth));
        headers.push(("origin", "https://somewhere.example"));
        headers.push(("cookie", "a=b"));
        headers.push(("accept-encoding", "gzip"));
        let reply = edge.send(method.clone(), "/mcp", &headers, "{}").await;
        assert_eq!(reply.status, 200, "{method}");
        assert_eq!(reply.header("mcp-session-id"), Some("sess-1"));
        let seen = reply.json();
        assert_eq!(seen["method"], method.as_str());
        assert_eq!(seen["path"], "/mcp");
        let h = &seen["headers"];
        for (name, value) in &mcp_headers {
            assert_eq!(h[name.to_ascii_lowercase()], *value, "{name} on {method}");
        }
        // The upstream's own authority; no browser Origin, cookie, token or compression.
        assert_eq!(h["host"], edge.agent.addr().to_string());
        for dropped in ["origin", "cookie", "authorization", "accept-encoding"] {
            assert!(h.get(dropped).is_none(), "{dropped} reached the upstream");
        }
        assert_eq!(h["baggage"], "session.id=sess-1");

        // A session id never stands in for a token.
        let reply = edge.send(method.clone(), "/mcp", &mcp_headers, "{}").await;
        assert_eq!(reply.status, 401, "{method}");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer resource_metadata=")
        );
    }
    assert_eq!(edge.agent.request_count(), 3);
}

#[tokio::test]
async fn statuses_and_empty_bodies_pass_unchanged() {
    let handler: Handler = Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            match (
                req.method().clone(),
                req.headers().get("mcp-method").cloned(),
            ) {
                // A notification: 202, no body.
                (Method::POST, Some(m)) if m == "notifications/initialized" => full(202, ""),
                (Method::POST, _) => {
                    let mut r = full(401, r#"{"error":"upstream says no"}"#);
                    r.headers_mut().insert(
                        "www-authenticate",
                        r#"Bearer error="invalid_token", resource_metadata="https://up/x""#
                            .parse()
                            .unwrap(),
                    );
                    r
                }
                (Method::GET, _) => full(405, ""),
                _ => full(
                    404,
                    r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Session not found"}}"#,
                ),
            }
        })
    });
    let upstream = scripted(handler).await;
    // The upstream's own 404 for a session id it does not know (not the edge's binding check).
    let routes = mcp_route(
        &format!("http://{upstream}"),
        "    sessionBinding: { enabled: false }\n",
    );
    let edge = Edge::start("", &routes).await;
    let auth = format!("Bearer {}", edge.valid_token());
    let reply = edge
        .send(
            Method::POST,
            "/mcp",
            &[
                ("authorization", &auth),
                ("mcp-method", "notifications/initialized"),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 202);
    assert!(reply.body.is_empty());
    let reply = edge
        .send(Method::GET, "/mcp", &[("authorization", &auth)], "")
        .await;
    assert_eq!(reply.status, 405);
    assert!(
        reply.error_type().is_none(),
        "the upstream's 405, not the edge's"
    );
    let reply = edge
        .send(
            Method::DELETE,
            "/mcp",
            &[("authorization", &auth), ("mcp-session-id", "gone")],
            "",
        )
        .await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.starts_with(b"{\"jsonrpc\""));
    let reply = edge
        .send(Method::POST, "/mcp", &[("authorization", &auth)], "{}")
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", resource_metadata="https://up/x""#)
    );
}

#[tokio::test]
async fn authorization_reaches_the_upstream_only_when_allowlisted() {
    let agent = agent().await;
    let routes = mcp_route(
        &agent.url(),
        "    requestHeaderAllowlist: [Authorization]\n",
    );
    let edge = Edge::start_with(issuer().await, agent, "", &routes).await;
    let token = edge.valid_token();
    let auth = format!("Bearer {token}");
    let reply = edge
        .send(Method::POST, "/mcp", &[("authorization", &auth)], "{}")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["authorization"], auth.as_str());
}

#[tokio::test]
async fn keep_alives_go_between_events_only() {
    let (tx_slot, mut rx_slot) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |_req| {
        let tx_slot = tx_slot.clone();
        Box::pin(async move {
            let (response, tx) = sse();
            let _ = tx_slot.send(tx);
            response
        })
    });
    let upstream = scripted(handler).await;
    let routes = mcp_route(&format!("http://{upstream}"), "    keepAlive: 1s\n");
    let edge = Edge::start("", &routes).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/mcp"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let tx = rx_slot.recv().await.unwrap();
    let mut body = response.into_body();
    let mut next = async || {
        let frame = body.frame().await.unwrap().unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };

    tx.send("id: 1\ndata: {\"a\":1}\n\n").unwrap();
    assert_eq!(next().await, "id: 1\ndata: {\"a\":1}\n\n");
    // Silence after a complete event: a comment.
    assert_eq!(next().await, ": keep-alive\n\n");
    // Silence inside an event (the upstream stalls mid-line): nothing may be injected, the
    // next bytes are the rest of the event.
    tx.send("data: {\"b\"").unwrap();
    assert_eq!(next().await, "data: {\"b\"");
    let waited = tokio::time::timeout(Duration::from_millis(2500), next()).await;
    assert!(
        waited.is_err(),
        "something was injected mid-event: {waited:?}"
    );
    tx.send(":2}\n\n").unwrap();
    let mut rest = String::new();
    while !rest.ends_with("\n\n") {
        rest.push_str(&next().await);
    }
    assert_eq!(rest, ":2}\n\n");
    assert_eq!(next().await, ": keep-alive\n\n");
    drop(tx);
}

#[tokio::test]
async fn discovery_metadata_names_the_public_mcp_url() {
    let agent = agent().await;
    let routes = mcp_route(&agent.url(), "");
    let edge = Edge::start_with(
        issuer().await,
        agent,
        "publicUrl: https://gw.example.com",
        &routes,
    )
    .await;
    let reply = edge.send(Method::POST, "/mcp", &[], "{}").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            r#"Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp", scope="invoke""#
        )
    );
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/mcp/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource",
    ] {
        let reply = edge.send(Method::GET, path, &[], "").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let doc = reply.json();
        assert_eq!(doc["resource"], "https://gw.example.com/mcp", "{path}");
        assert_eq!(
            doc["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
        assert_eq!(doc["scopes_supported"], serde_json::json!(["invoke"]));
        assert_eq!(doc["authorization_servers"][0], edge.issuer.issuer());
    }
    // Step-up: a valid token without the scope.
    let token = edge.token(|c| c.scope = Some("read".into()));
    let reply = edge
        .send(
            Method::POST,
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with(r#"Bearer error="insufficient_scope", scope="invoke", resource_metadata="https://gw.example.com/"#)
    );
}

#[tokio::test]
async fn mcp_routes_without_cors_accept_only_their_own_origin() {
    let agent = agent().await;
    let routes = mcp_route(&agent.url(), "");
    let edge = Edge::start_with(
        issuer().await,
        agent,
        "publicUrl: https://gw.example.com",
        &routes,
    )
    .await;
    let auth = format!("Bearer {}", edge.valid_token());
    for (origin, status) in [
        ("https://gw.example.com", 200),
        ("HTTPS://GW.example.com", 200),
        ("https://evil.example", 403),
        // DNS rebinding: the attacker's name in both Host and Origin.
        ("http://127.0.0.1", 403),
        ("null", 403),
    ] {
        let host = origin.trim_start_matches("http://");
        let reply = edge
            .send(
                Method::POST,
                "/mcp",
                &[("authorization", &auth), ("origin", origin), ("host", host)],
                "{}",
            )
            .await;
        assert_eq!(reply.status, status, "{origin}");
    }
    // No Origin (non-browser clients): fine.
    let reply = edge
        .send(Method::POST, "/mcp", &[("authorization", &auth)], "{}")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(edge.agent.request_count(), 3);
}

#[tokio::test]
async fn a_loopback_listeners_own_origins_pass_but_a_rebinding_host_does_not() {
    // No CORS policy, no publicUrl: the listener's own loopback origins are the edge's.
    let agent = agent().await;
    let routes = mcp_route(&agent.url(), "");
    let edge = Edge::start_with(issuer().await, agent, "", &routes).await;
    let auth = format!("Bearer {}", edge.valid_token());
    let port = edge.addr.port();
    let cases = [
        (format!("http://127.0.0.1:{port}"), None, 200),
        (format!("http://localhost:{port}"), None, 200),
        (format!("http://[::1]:{port}"), None, 200),
        (format!("HTTP://LOCALHOST:{port}"), None, 200),
        // The same hosts on another port, or over another scheme, are other origins.
        (
            format!("http://127.0.0.1:{}", port.wrapping_add(1)),
            None,
            403,
        ),
        (format!("https://127.0.0.1:{port}"), None, 403),
        (format!("http://127.0.0.1:{port}/"), None, 403),
        // DNS rebinding: the page's Origin equals the request's Host, and is not the edge's.
        (
            format!("http://rebind.example:{port}"),
            Some(format!("rebind.example:{port}")),
            403,
        ),
        ("null".to_owned(), None, 403),
    ];
    let mut passed = 0;
    for (origin, host, status) in &cases {
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("origin", origin.as_str()),
        ];
        if let Some(host) = host {
            headers.push(("host", host.as_str()));
        }
        let reply = edge.send(Method::POST, "/mcp", &headers, "{}").await;
        assert_eq!(reply.status, *status, "{origin}");
        if *status == 403 {
            assert_eq!(reply.json()["message"], "Origin not allowed.", "{origin}");
        } else {
            passed += 1;
        }
    }
    // Refused origins never reach the agent.
    assert_eq!(edge.agent.request_count(), passed);
}

/// A stateful MCP server replica: `initialize` (a POST without a session) creates a session
/// named after the replica; requests for sessions it does not hold get 404, as the SDKs do.
fn stateful_replica(name: &'static str, deleted: Arc<std::sync::Mutex<Vec<String>>>) -> Handler {
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Arc::new(move |req: Request<Incoming>| {
        let created = created.clone();
        let deleted = deleted.clone();
        Box::pin(async move {
            let session = req
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_owned());
            match (req.method().clone(), session) {
                (Method::POST, None) => {
                    let n = created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut r = full(200, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
                    r.headers_mut()
                        .insert("mcp-session-id", format!("{name}-{n}").parse().unwrap());
                    r
                }
                (method, Some(id)) if id.starts_with(&format!("{name}-")) => {
                    if method == Method::DELETE {
                        deleted.lock().unwrap().push(id);
                    }
                    full(200, "{}")
                }
                _ => full(404, ""),
            }
        })
    })
}

#[tokio::test]
async fn new_sessions_are_created_on_the_replica_their_id_hashes_to() {
    let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut urls = Vec::new();
    for name in ["r0", "r1", "r2"] {
        let addr = scripted(stateful_replica(name, deleted.clone())).await;
        urls.push(format!("\"http://{addr}\""));
    }
    let routes = mcp_route("x", "").replace(
        r#"upstream: { url: "x" }"#,
        &format!("upstream: {{ urls: [{}] }}", urls.join(", ")),
    );
    let edge = Edge::start("", &routes).await;
    let auth = format!("Bearer {}", edge.valid_token());
    let mut sessions = Vec::new();
    for _ in 0..30 {
        let reply = edge
            .send(
                Method::POST,
                "/mcp",
                &[("authorization", &auth)],
                r#"{"method":"initialize"}"#,
            )
            .await;
        assert_eq!(reply.status, 200);
        sessions.push(reply.header("mcp-session-id").unwrap().to_owned());
    }
    // Every later request of every session finds it (a misrouted one would get 404).
    for id in &sessions {
        for method in [Method::POST, Method::GET, Method::DELETE] {
            let reply = edge
                .send(
                    method.clone(),
                    "/mcp",
                    &[("authorization", &auth), ("mcp-session-id", id)],
                    "{}",
                )
                .await;
            assert_eq!(reply.status, 200, "{method} {id}");
        }
    }
    assert!(sessions.iter().any(|s| s.starts_with("r0-")));
    assert!(sessions.iter().any(|s| s.starts_with("r1-")));
    assert!(sessions.iter().any(|s| s.starts_with("r2-")));
    // The sessions made on the wrong replica were deleted there again: every created id is
    // either handed out or deleted (the deletes run in the background).
    // Handed out bound (`{id}-{tag}`, a 22-character tag: sessions.rs); the replicas know the ids without tags.
    let handed_out: std::collections::HashSet<&str> =
        sessions.iter().map(|s| &s[..s.len() - 23]).collect();
    assert!(
        eventually(Duration::from_secs(5), || {
            let deleted = deleted.lock().unwrap();
            let orphans = deleted
                .iter()
                .filter(|d| !handed_out.contains(d.as_str()))
                .count();
            // 30 deletes of handed-out sessions from the loop above, plus the orphans.
            deleted.len() == 30 + orphans && orphans > 0
        })
        .await,
        "{:?}",
        deleted.lock().unwrap()
    );
}

#[tokio::test]
async fn keep_alives_over_h2() {
    let handler: Handler = Arc::new(|_req| {
        Box::pin(async move {
            let (response, tx) = sse();
            tx.send("data: {\"a\":1}\n\n").unwrap();
            // The stream stays open (and silent) while the test reads it.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
            response
        })
    });
    let upstream = scripted(handler).await;
    let routes = mcp_route(&format!("http://{upstream}"), "    keepAlive: 1s\n");
    let edge = Edge::start("", &routes).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/mcp"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(response.headers().get("transfer-encoding").is_none());
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains(": keep-alive\n\n") {
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
    assert_eq!(text, "data: {\"a\":1}\n\n: keep-alive\n\n");
}
