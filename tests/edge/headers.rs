//! SPEC §5: what reaches the upstream, header by header.

use http::Method;

use crate::support::*;

const ROUTES: &str = r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    requestHeaderAllowlist:
      - X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant
      - X-Gatehouse-Sub
      - X-Named-By-Connection
    userIdClaim: sub
    claimsToHeaders: { X-Gatehouse-Sub: sub, X-Gatehouse-Groups: groups }
    claimsToBaggage: { enduser.id: sub, tenant: tenant }
    upstream: { url: "{agent}" }
  - name: passthrough
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    requestHeaderAllowlist: [Authorization]
    upstream: { url: "{agent}" }
  - name: tools
    protocol: MCP
    path: /mcp
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    upstream: { url: "{agent}" }
    sessionBinding: { enabled: false }   # made-up session ids below; see sessions.rs
  - name: open
    authorizerType: NONE
    upstream: { url: "{agent}" }
"#;

#[tokio::test]
async fn allowlist_identity_and_hop_by_hop() {
    let edge = Edge::start("", ROUTES).await;
    let token = edge.token(|o| {
        o.sub = Some("alice".into());
        o.claims
            .push(("groups".into(), serde_json::json!(["a", "b"])));
        o.claims
            .push(("tenant".into(), serde_json::json!("acme corp")));
    });
    let auth = format!("Bearer {token}");
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("user-agent", "test-client/1"),
                ("x-amzn-bedrock-agentcore-runtime-custom-tenant", "t1"),
                ("x-not-allowed", "dropped"),
                ("cookie", "session=secret"),
                ("x-amz-security-token", "dropped"),
                ("x-gatehouse-sub", "spoofed"),
                ("x-gatehouse-groups", "spoofed"),
                ("x-amzn-bedrock-agentcore-runtime-user-id", "spoofed"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("connection", "x-named-by-connection"),
                ("x-named-by-connection", "dropped"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic eA=="),
                ("mcp-param-region", "eu"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "vendor=1"),
                ("baggage", "enduser.id=mallory,keep=1,tenant=spoofed"),
            ],
            r#"{"prompt":"hi"}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = &edge.agent.requests()[0];
    let h = |name: &str| seen.header(name);

    // Standard and allowlisted headers pass; everything else is dropped.
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(
        h("accept").as_deref(),
        Some("application/json, text/event-stream")
    );
    assert_eq!(h("user-agent").as_deref(), Some("test-client/1"));
    assert_eq!(
        h("x-amzn-bedrock-agentcore-runtime-custom-tenant").as_deref(),
        Some("t1")
    );
    assert_eq!(h("mcp-param-region").as_deref(), Some("eu"));
    for dropped in [
        "x-not-allowed",
        "cookie",
        "x-amz-security-token",
        "x-named-by-connection",
        "te",
        "proxy-authorization",
        "authorization",
        "connection",
    ] {
        assert_eq!(h(dropped), None, "{dropped} reached the upstream");
    }
    // Host is the upstream's own authority.
    assert_eq!(
        h("host").as_deref(),
        Some(edge.agent.addr().to_string().as_str())
    );

    // Identity headers come from the token, never the client.
    assert_eq!(h("x-gatehouse-sub").as_deref(), Some("alice"));
    assert_eq!(h("x-gatehouse-groups").as_deref(), Some("a,b"));
    assert_eq!(
        h("x-amzn-bedrock-agentcore-runtime-user-id").as_deref(),
        Some("alice")
    );

    // X-Forwarded-* set by the edge; client values dropped.
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        h("x-forwarded-host").as_deref(),
        Some(edge.addr.to_string().as_str())
    );

    // A fresh request id, also returned as x-amzn-requestid.
    let request_id = h("x-amzn-bedrock-agentcore-runtime-request-id").unwrap();
    assert_eq!(reply.header("x-amzn-requestid"), Some(request_id.as_str()));

    // Session generated (≥ 33 chars), sent upstream and returned.
    let session = h("x-amzn-bedrock-agentcore-runtime-session-id").unwrap();
    assert!(session.len() >= 33);
    assert_eq!(
        reply.header("x-amzn-bedrock-agentcore-runtime-session-id"),
        Some(session.as_str())
    );

    // Trace: same trace id, the edge's span as parent; tracestate kept.
    let traceparent = h("traceparent").unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(!traceparent.contains("00f067aa0ba902b7"));
    assert!(traceparent.ends_with("-01"));
    assert_eq!(h("tracestate").as_deref(), Some("vendor=1"));

    // Baggage: the edge's entries overwrite the client's, other entries kept.
    let baggage = h("baggage").unwrap();
    let members: Vec<&str> = baggage.split(',').collect();
    assert!(
        members.contains(&format!("session.id={session}").as_str()),
        "{baggage}"
    );
    assert!(members.contains(&"enduser.id=alice"), "{baggage}");
    assert!(members.contains(&"tenant=acme%20corp"), "{baggage}");
    assert!(members.contains(&"keep=1"), "{baggage}");
    assert!(
        !baggage.contains("mallory") && !baggage.contains("spoofed"),
        "{baggage}"
    );
}

#[tokio::test]
async fn client_session_id_is_kept_and_authorization_only_when_allowlisted() {
    let edge = Edge::start("", ROUTES).await;
    let token = edge.valid_token();
    let auth = format!("Bearer {token}");
    let session = "0123456789abcdef0123456789abcdef-session";
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/passthrough/invocations",
            &[
                ("authorization", &auth),
                ("x-amzn-bedrock-agentcore-runtime-session-id", session),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-amzn-bedrock-agentcore-runtime-session-id"),
        Some(session)
    );
    let seen = &edge.agent.requests()[0];
    assert_eq!(
        seen.header("x-amzn-bedrock-agentcore-runtime-session-id")
            .as_deref(),
        Some(session)
    );
    assert_eq!(seen.header("authorization").as_deref(), Some(auth.as_str()));
    assert!(
        seen.header("baggage")
            .unwrap()
            .contains(&format!("session.id={session}"))
    );
}

#[tokio::test]
async fn mcp_session_passes_both_ways_and_paths_map() {
    let edge = Edge::start("", ROUTES).await;
    let auth = format!("Bearer {}", edge.valid_token());
    let reply = edge
        .send(
            Method::POST,
            "/mcp?x=1",
            &[
                ("authorization", &auth),
                ("mcp-session-id", "mcp-abc"),
                ("mcp-protocol-version", "2025-06-18"),
                ("last-event-id", "7"),
            ],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = &edge.agent.requests()[0];
    assert_eq!(seen.uri.to_string(), "/mcp?x=1");
    assert_eq!(seen.header("mcp-session-id").as_deref(), Some("mcp-abc"));
    assert_eq!(
        seen.header("mcp-protocol-version").as_deref(),
        Some("2025-06-18")
    );
    assert_eq!(seen.header("last-event-id").as_deref(), Some("7"));
    // MCP routes get no runtime session header; the MCP session is the baggage session.
    assert_eq!(
        seen.header("x-amzn-bedrock-agentcore-runtime-session-id"),
        None
    );
    assert!(
        seen.header("baggage")
            .unwrap()
            .contains("session.id=mcp-abc")
    );
    assert!(
        reply
            .header("x-amzn-bedrock-agentcore-runtime-session-id")
            .is_none()
    );

    // The invocation form maps to /invocations and drops the query.
    edge.agent.clear();
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations?qualifier=DEFAULT",
            &[("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(edge.agent.requests()[0].uri.to_string(), "/invocations");
}

#[tokio::test]
async fn none_routes_need_no_token_and_still_get_edge_headers() {
    let edge = Edge::start("", ROUTES).await;
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/open/invocations",
            &[("x-amzn-bedrock-agentcore-runtime-user-id", "spoofed")],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = &edge.agent.requests()[0];
    assert!(
        seen.header("x-amzn-bedrock-agentcore-runtime-session-id")
            .is_some()
    );
    assert!(
        seen.header("x-amzn-bedrock-agentcore-runtime-request-id")
            .is_some()
    );
    assert_eq!(
        seen.header("x-amzn-bedrock-agentcore-runtime-user-id"),
        None
    );
}

#[tokio::test]
async fn trusted_forwarded_headers_are_appended() {
    let edge = Edge::start("trustForwardedHeaders: true", ROUTES).await;
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/open/invocations",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "agents.example.com"),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = &edge.agent.requests()[0];
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("agents.example.com")
    );
}

#[tokio::test]
async fn arn_alias_matches_escaped_and_plain() {
    let arn = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj";
    let routes = format!(
        r#"
  - name: support
    arn: "{arn}"
    authorizerType: NONE
    upstream: {{ url: "{{agent}}" }}
"#
    );
    let edge = Edge::start("", &routes).await;
    let escaped: String =
        percent_encoding::utf8_percent_encode(arn, percent_encoding::NON_ALPHANUMERIC).to_string();
    for path in [
        format!("/runtimes/{escaped}/invocations?qualifier=DEFAULT"),
        format!(
            "/runtimes/{}/invocations",
            escaped.replace("%3A", "%3a").replace("%2F", "%2f")
        ),
    ] {
        let reply = edge.send(Method::POST, &path, &[], "{}").await;
        assert_eq!(reply.status, 200, "{path}");
    }
}
