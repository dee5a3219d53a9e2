//! Quotas (SPEC §12) in process: 429 with `Retry-After` and the RateLimit headers, only
//! authorized requests counted, keys kept apart, concurrency permits released when the body
//! ends and when the client goes away, `tool` keys and `match` on MCP messages, and
//! `limits.authFailuresPerIp` refusing an address before any signature check.

use std::time::Duration;

use bytes::Bytes;
use gatehouse::dev::{Alg, SigningKey};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use crate::support::*;

/// [`support_route`] with route-level quota rules appended.
fn support_with(rules: &str) -> String {
    format!("{}    quotas:\n      rules:\n{rules}", support_route())
}

#[tokio::test]
async fn over_the_rate_is_429_with_headers_and_nothing_forwarded() {
    let edge = Edge::start(
        "",
        &support_with("        - { name: per-client, key: [client_id], rate: 2/m }\n"),
    )
    .await;
    let token = edge.valid_token();
    for _ in 0..2 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.error_type(), Some("ThrottlingException"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"message": "Rate exceeded."})
    );
    // One request of 2/m comes back every 30 s.
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "{retry}");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""per-client";q=2;w=60"#)
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!(r#""per-client";r=0;t={retry}"#).as_str())
    );
    assert!(reply.header("www-authenticate").is_none());
    assert_eq!(
        edge.agent.request_count(),
        2,
        "the throttled request reached nothing"
    );

    let lines = edge.access_lines(3).await;
    assert_eq!(lines[2]["status"], 429);
    assert_eq!(lines[2]["throttled"], "per-client");
    assert!(lines[0].get("throttled").is_none());
    let metrics = edge.admin("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"gatehouse_throttled_total{route="support",rule="per-client"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn only_authorized_requests_use_quota() {
    let edge = Edge::start(
        "",
        &support_with("        - { name: per-route, key: [route], rate: 1/m }\n"),
    )
    .await;
    let forged = SigningKey::generate(Alg::RS256, Some(edge.issuer.signing_key().kid().into()))
        .unwrap()
        .sign(&{
            let mut o = default_claims();
            o.iss = edge.issuer.issuer();
            o.claims_json()
        })
        .unwrap();
    let wrong_client = edge.token(|o| o.client_id = Some("intruder".into()));
    let no_scope = edge.token(|o| o.scope = Some("read".into()));
    for _ in 0..3 {
        assert_eq!(edge.invoke("support", None, "{}").await.status, 401);
        assert_eq!(
            edge.invoke("support", Some(&forged), "{}").await.status,
            401
        );
        assert_eq!(
            edge.invoke("support", Some(&wrong_client), "{}")
                .await
                .status,
            403
        );
        assert_eq!(
            edge.invoke("support", Some(&no_scope), "{}").await.status,
            403
        );
    }
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 429);
}

#[tokio::test]
async fn keys_keep_callers_apart_and_global_rules_apply_to_every_route() {
    let top = "quotas:\n  rules:\n    - { name: per-sub, key: [sub], rate: 1/m }\n";
    let edge = Edge::start(top, &support_route()).await;
    let alice = edge.token(|o| o.sub = Some("alice".into()));
    let bob = edge.token(|o| o.sub = Some("bob".into()));
    assert_eq!(edge.invoke("support", Some(&alice), "{}").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&bob), "{}").await.status, 200);
    // A new token for the same subject is the same key.
    let alice_again = edge.token(|o| {
        o.sub = Some("alice".into());
        o.ttl = Duration::from_secs(1800);
    });
    let reply = edge.invoke("support", Some(&alice_again), "{}").await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""per-sub";q=1;w=60"#)
    );
    assert_eq!(edge.invoke("support", Some(&bob), "{}").await.status, 429);
}

#[tokio::test]
async fn burst_allows_more_than_the_rate_at_once() {
    let edge = Edge::start(
        "",
        &support_with("        - { name: bursty, key: [client_id], rate: 1/h, burst: 4 }\n"),
    )
    .await;
    let token = edge.valid_token();
    for _ in 0..4 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 429);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
}

fn stream_request(edge: &Edge, token: &str, events: u32) -> Request<Full<Bytes>> {
    Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"stream":{events},"intervalMs":50}}"#
        ))))
        .unwrap()
}

#[tokio::test]
async fn concurrency_is_released_when_the_body_ends_and_when_the_client_goes_away() {
    let edge = Edge::start(
        "",
        &support_with("        - { name: in-flight, key: [client_id], concurrency: 1 }\n"),
    )
    .await;
    let token = edge.valid_token();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // A stream in flight holds the one slot.
    let streaming = client
        .request(stream_request(&edge, &token, 3))
        .await
        .unwrap();
    assert_eq!(streaming.status(), 200);
    let second = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(second.status, 429);
    assert_eq!(
        second.header("ratelimit-policy"),
        Some(r#""in-flight";q=1;qu="concurrent-requests""#)
    );
    assert_eq!(second.header("retry-after"), Some("1"));
    // Reading it to its end gives the slot back.
    streaming.into_body().collect().await.unwrap();
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            edge.invoke("support", Some(&token), "{}").await.status == 200
        })
        .await
    );

    // A client that goes away mid-stream gives it back too.
    let abandoned = client
        .request(stream_request(&edge, &token, 1000))
        .await
        .unwrap();
    let mut body = abandoned.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 429);
    drop(body);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            edge.invoke("support", Some(&token), "{}").await.status == 200
        })
        .await,
        "the permit came back after the client went away"
    );
}

/// A client whose connections come from another loopback address.
fn client_from(address: &str) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(address.parse().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn invoke_from(
    client: &Client<HttpConnector, Full<Bytes>>,
    edge: &Edge,
    token: &str,
) -> (u16, http::HeaderMap) {
    let request = Request::post(edge.url("/runtimes/support/invocations"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    response.into_body().collect().await.unwrap();
    (status, headers)
}

#[tokio::test]
async fn auth_failures_per_ip_refuse_an_address_before_any_signature_check() {
    let edge = Edge::start("limits: { authFailuresPerIp: 3/m }", &support_route()).await;
    let attacker = client_from("127.0.0.3");
    let honest = client_from("127.0.0.4");
    let forged = SigningKey::generate(Alg::RS256, Some(edge.issuer.signing_key().kid().into()))
        .unwrap()
        .sign(&{
            let mut o = default_claims();
            o.iss = edge.issuer.issuer();
            o.claims_json()
        })
        .unwrap();
    let valid = edge.valid_token();
    // Valid tokens never count against the budget.
    for _ in 0..5 {
        assert_eq!(invoke_from(&attacker, &edge, &valid).await.0, 200);
    }
    // The budget (3, and the failure that exceeds it) is answered 401 ...
    for _ in 0..4 {
        assert_eq!(invoke_from(&attacker, &edge, &forged).await.0, 401);
    }
    // ... then the address is refused before its token is looked at, valid or not.
    let (status, headers) = invoke_from(&attacker, &edge, &forged).await;
    assert_eq!(status, 429);
    assert_eq!(headers["x-amzn-errortype"], "ThrottlingException");
    assert!(headers.get("www-authenticate").is_none());
    assert_eq!(
        headers["ratelimit-policy"],
        r#""authFailuresPerIp";q=3;w=60"#
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(invoke_from(&attacker, &edge, &valid).await.0, 429);
    // Another address is unaffected.
    assert_eq!(invoke_from(&honest, &edge, &valid).await.0, 200);
    assert_eq!(invoke_from(&honest, &edge, &forged).await.0, 401);

    let lines = edge.access_lines(16).await;
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 429 && l["throttled"] == "authFailuresPerIp"),
        "{lines:?}"
    );
    let metrics = edge.admin("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"gatehouse_throttled_total{route="support",rule="authFailuresPerIp"} 2"#),
        "{text}"
    );
}

const MCP_ROUTE: &str = r#"
  - name: tools
    protocol: MCP
    path: /mcp
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    upstream: { url: "{agent}" }
    quotas:
      rules:
        - { name: per-tool, key: [client_id, tool], rate: 1/m }
        - name: search
          key: [client_id]
          rate: 2/m
          match: { method: tools/call, name: "search_*" }
"#;

/// A POST through the stack (in-process), from 127.0.0.1: the MCP phase reads the message,
/// since a quota rule keys on the tool.
async fn call_tool(edge: &Edge, token: &str, method: &str, name: Option<&str>, id: &str) -> Reply {
    let stack = gatehouse::stack::build::<Full<Bytes>>(edge.app.clone());
    let params = match name {
        Some(name) => format!(r#"{{"name":"{name}","arguments":{{}}}}"#),
        None => "{}".to_owned(),
    };
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = stack.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn tool_keys_and_match_follow_the_mcp_message() {
    let edge = Edge::start("", MCP_ROUTE).await;
    let route = edge.app.settings().routes.routes[0].clone();
    assert!(route.quotas.as_ref().unwrap().needs_message());
    let token = edge.valid_token();

    // One call per tool per minute: each tool has its own bucket.
    assert_eq!(
        call_tool(&edge, &token, "tools/call", Some("weather"), "1")
            .await
            .status,
        200
    );
    assert_eq!(
        call_tool(&edge, &token, "tools/call", Some("clock"), "2")
            .await
            .status,
        200
    );
    let reply = call_tool(&edge, &token, "tools/call", Some("weather"), r#""w-3""#).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.error_type(), Some("ThrottlingException"));
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(
        body["id"], "w-3",
        "the JSON-RPC error carries the request's id"
    );
    assert_eq!(body["error"]["message"], "Rate exceeded.");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""per-tool";q=1;w=60"#)
    );

    // Methods without a tool are not counted by the tool rule, nor by the search match.
    for id in 4..8 {
        let reply = call_tool(&edge, &token, "tools/list", None, &id.to_string()).await;
        assert_eq!(reply.status, 200);
    }
    // search_* calls count in both rules; the match rule (2/m) refuses the third.
    assert_eq!(
        call_tool(&edge, &token, "tools/call", Some("search_a"), "8")
            .await
            .status,
        200
    );
    assert_eq!(
        call_tool(&edge, &token, "tools/call", Some("search_b"), "9")
            .await
            .status,
        200
    );
    let reply = call_tool(&edge, &token, "tools/call", Some("search_c"), "10").await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""search";q=2;w=60"#)
    );
}

#[tokio::test]
async fn routes_without_rules_are_untouched_and_mcp_rules_skip_http_routes() {
    // A global tool rule cannot apply to an HTTP route: it is not compiled there.
    let top = "quotas:\n  rules:\n    - { name: per-tool, key: [tool], rate: 1/m }\n";
    let edge = Edge::start(top, &support_route()).await;
    let route = edge.app.settings().routes.routes[0].clone();
    assert!(route.quotas.is_none());
    let token = edge.valid_token();
    for _ in 0..5 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
}
