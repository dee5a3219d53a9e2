//! Sessions are not identity: a session id created under one subject's token is refused with
//! another's — 404 on MCP routes, 403 on HTTP routes — without reaching the upstream, and the
//! binding holds across edge replicas that share the key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::mcp::{Handler, mcp_route, scripted};
use crate::support::*;

const KEY: &str = "0123456789abcdef0123456789abcdef-shared";

/// An MCP server that creates `srv-N` on a request without a session and answers others with
/// the session id it received; counts the requests it sees.
async fn mcp_server() -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let (id, body) = match req.headers().get("mcp-session-id") {
                None => (format!("srv-{n}"), "created".to_owned()),
                Some(id) => {
                    let id = id.to_str().unwrap().to_owned();
                    (id.clone(), format!("in {id}"))
                }
            };
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
            response
                .headers_mut()
                .insert("mcp-session-id", id.parse().unwrap());
            response
        })
    });
    (format!("http://{}", scripted(handler).await), seen)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn post(edge: &Edge, token: &str, session: Option<&str>) -> Reply {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(session) = session {
        headers.push(("mcp-session-id", session));
    }
    edge.send(Method::POST, "/mcp", &headers, "{}").await
}

#[tokio::test]
async fn mcp_sessions_are_bound_to_the_subject_by_default() {
    let (upstream, seen) = mcp_server().await;
    let edge = Edge::start("", &mcp_route(&upstream, "")).await;
    let alice = edge.valid_token();
    let bob = edge.token(|o| o.sub = Some("user-2".into()));

    // The server's id reaches the client with a tag; the server never sees the tag.
    let created = post(&edge, &alice, None).await;
    assert_eq!(created.status, 200);
    let bound = created.header("mcp-session-id").unwrap().to_owned();
    let (id, tag) = bound.split_at(bound.len() - 23);
    let tag = tag.strip_prefix('-').unwrap();
    assert_eq!(id, "srv-0");
    assert_eq!(tag.len(), 22);
    let again = post(&edge, &alice, Some(&bound)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, "in srv-0");
    assert_eq!(again.header("mcp-session-id"), Some(bound.as_str()));
    // A new token for the same subject keeps the session.
    let alice_later = edge.token(|o| o.ttl = std::time::Duration::from_secs(600));
    assert_eq!(post(&edge, &alice_later, Some(&bound)).await.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    // Another subject, the bare id, a forged or altered tag: "session not found", and
    // nothing reaches the server.
    let mut altered = bound.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let forged = format!("srv-0-{}", "A".repeat(22));
    let other_client = edge.token(|o| {
        o.sub = None;
        o.client_id = Some("client-a".into());
    });
    for (token, session) in [
        (&bob, bound.as_str()),
        (&alice, "srv-0"),
        (&alice, altered.as_str()),
        (&alice, forged.as_str()),
        (&alice, ".tag"),
        (&alice, ""),
        (&other_client, bound.as_str()),
    ] {
        let reply = post(&edge, token, Some(session)).await;
        assert_eq!(reply.status, 404, "{session:?}");
        assert_eq!(reply.error_type(), Some("ResourceNotFoundException"));
        assert!(
            reply.message().contains("initialize"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    // Bob's own session is his.
    let bobs = post(&edge, &bob, None).await;
    let bobs = bobs.header("mcp-session-id").unwrap().to_owned();
    assert_ne!(bobs, bound);
    assert_eq!(post(&edge, &bob, Some(&bobs)).await.status, 200);
    assert_eq!(post(&edge, &alice, Some(&bobs)).await.status, 404);

    // The refusal is logged with the caller and the reason.
    let lines = edge.access_lines(14).await;
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["status"] == 404 && l["route"] == "tools")
        .collect();
    assert_eq!(refused.len(), 8, "{lines:?}");
    assert!(
        refused
            .iter()
            .all(|l| l.to_string().contains("session_not_bound"))
    );
}

#[tokio::test]
async fn binding_holds_across_edge_replicas_that_share_the_key() {
    let (upstream, _) = mcp_server().await;
    let with_key = format!("    sessionBinding: {{ key: \"{KEY}\" }}\n");
    let issuer = issuer().await;
    let one = Edge::start_with(
        issuer.clone(),
        agent().await,
        "",
        &mcp_route(&upstream, &with_key),
    )
    .await;
    let two = Edge::start_with(
        issuer.clone(),
        agent().await,
        "",
        &mcp_route(&upstream, &with_key),
    )
    .await;
    let other_key = mcp_route(
        &upstream,
        "    sessionBinding: { key: \"another-key-that-is-at-least-32-bytes\" }\n",
    );
    let three = Edge::start_with(issuer, agent().await, "", &other_key).await;
    let alice = one.valid_token();
    let bob = one.token(|o| o.sub = Some("user-2".into()));

    let bound = post(&one, &alice, None).await;
    let bound = bound.header("mcp-session-id").unwrap().to_owned();
    let on_two = post(&two, &alice, Some(&bound)).await;
    assert_eq!(on_two.status, 200);
    assert_eq!(on_two.header("mcp-session-id"), Some(bound.as_str()));
    assert_eq!(post(&two, &bob, Some(&bound)).await.status, 404);
    // Issued under another key: not this edge's.
    assert_eq!(post(&three, &alice, Some(&bound)).await.status, 404);
}

#[tokio::test]
async fn binding_can_be_turned_off_and_routes_without_auth_are_not_bound() {
    let (upstream, seen) = mcp_server().await;
    let routes = format!(
        "{}\n  - name: open\n    protocol: MCP\n    path: /open\n    authorizerType: NONE\n    upstream: {{ url: \"{upstream}\" }}\n",
        mcp_route(&upstream, "    sessionBinding: { enabled: false }\n")
    );
    let edge = Edge::start("", &routes).await;
    let alice = edge.valid_token();
    let bob = edge.token(|o| o.sub = Some("user-2".into()));
    let created = post(&edge, &alice, None).await;
    assert_eq!(created.header("mcp-session-id"), Some("srv-0"));
    assert_eq!(post(&edge, &bob, Some("srv-0")).await.body, "in srv-0");
    let open = edge.send(Method::POST, "/open", &[], "{}").await;
    assert_eq!(open.header("mcp-session-id"), Some("srv-2"));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

const RUNTIME: &str = r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    upstream: { url: "{agent}" }
    sessionBinding: { enabled: true, key: "0123456789abcdef0123456789abcdef-shared" }
"#;

const SESSION: &str = "x-amzn-bedrock-agentcore-runtime-session-id";

async fn invoke(edge: &Edge, token: &str, session: Option<&str>) -> Reply {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(session) = session {
        headers.push((SESSION, session));
    }
    edge.send(
        Method::POST,
        "/runtimes/support/invocations",
        &headers,
        "{}",
    )
    .await
}

#[tokio::test]
async fn runtime_sessions_are_issued_bound_when_enabled() {
    let edge = Edge::start("", RUNTIME).await;
    let alice = edge.valid_token();
    let bob = edge.token(|o| o.sub = Some("user-2".into()));

    // No session id: the edge issues one bound to the caller; agent and client see the same.
    let first = invoke(&edge, &alice, None).await;
    assert_eq!(first.status, 200);
    let issued = first.header(SESSION).unwrap().to_owned();
    assert_eq!(issued.len(), 36 + 1 + 22);
    // Within AgentCore's session-id alphabet, `[a-zA-Z0-9][a-zA-Z0-9-_]*`, so an
    // `agentRuntimeArn` upstream takes it.
    assert!(issued.starts_with(|c: char| c.is_ascii_alphanumeric()));
    assert!(
        issued
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{issued}"
    );
    assert_eq!(
        edge.agent.requests()[0].header(SESSION).as_deref(),
        Some(issued.as_str())
    );
    assert_eq!(invoke(&edge, &alice, Some(&issued)).await.status, 200);
    assert_eq!(edge.agent.request_count(), 2);

    // Another subject with it, or an id the edge did not issue: 403, the agent sees nothing.
    let chosen = "a".repeat(40);
    for (token, session) in [(&bob, issued.as_str()), (&alice, chosen.as_str())] {
        let reply = invoke(&edge, token, Some(session)).await;
        assert_eq!(reply.status, 403, "{session}");
        assert_eq!(reply.error_type(), Some("AccessDeniedException"));
        assert!(
            reply.message().contains("session id"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(edge.agent.request_count(), 2);
    // Malformed ids are refused the same way: the binding check comes first.
    let reply = invoke(&edge, &alice, Some("short")).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn runtime_sessions_are_not_bound_by_default() {
    let routes = RUNTIME.replace(
        "    sessionBinding: { enabled: true, key: \"0123456789abcdef0123456789abcdef-shared\" }\n",
        "",
    );
    let edge = Edge::start("", &routes).await;
    let chosen = "a".repeat(40);
    let bob = edge.token(|o| o.sub = Some("user-2".into()));
    let reply = invoke(&edge, &bob, Some(&chosen)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(SESSION), Some(chosen.as_str()));
    let issued = invoke(&edge, &bob, None).await;
    assert_eq!(issued.header(SESSION).unwrap().len(), 36);
}
