//! What users see besides the proxied call: protected resource metadata, CORS, the admin
//! listener, metrics, and the access log.

use http::Method;

use crate::support::*;

fn mcp_route() -> String {
    RouteYaml::new("tools")
        .mcp("/mcp")
        .clients(None)
        .scopes(Some("[invoke, read]"))
        .authorizer(r#"advertisedScopeMapping: { invoke: "mcp:invoke" }"#)
        .key(r#"cors: { allowedOrigins: ["https://inspector.example"] }"#)
        .build()
}

#[tokio::test]
async fn protected_resource_metadata_in_every_form() {
    let edge = Edge::start("publicUrl: https://gw.example.com", &mcp_route()).await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/mcp/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource",
    ] {
        let reply = edge.oneshot(Method::GET, path, &[], "").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let doc = reply.json();
        assert_eq!(doc["resource"], "https://gw.example.com/mcp", "{path}");
        assert_eq!(
            doc["authorization_servers"],
            serde_json::json!([edge.issuer.issuer()])
        );
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["mcp:invoke", "read"])
        );
        assert_eq!(
            doc["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
        assert_eq!(doc["resource_name"], "tools");
    }
    // The 401 challenge points at a document whose resource is the URL the client called.
    let reply = edge.oneshot(Method::POST, "/mcp", &[], "{}").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        r#"Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp:invoke read""#
    );
    // Metadata never needs a token and never reaches the upstream.
    assert_eq!(edge.agent.request_count(), 0);
}

#[tokio::test]
async fn metadata_derives_the_base_url_without_public_url() {
    let edge = Edge::start("", &mcp_route()).await;
    let reply = edge
        .oneshot(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp",
            &[],
            "",
        )
        .await;
    assert_eq!(
        reply.json()["resource"],
        format!("http://{}/mcp", edge.addr)
    );
    let reply = edge
        .oneshot(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp",
            &[("host", "evil\"x")],
            "",
        )
        .await;
    assert!(!reply.json()["resource"].as_str().unwrap().contains('"'));
}

#[tokio::test]
async fn cors_preflight_origin_check_and_exposed_headers() {
    let edge = Edge::start("", &mcp_route()).await;
    let origin = "https://inspector.example";
    let preflight = edge
        .oneshot(
            Method::OPTIONS,
            "/mcp",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, mcp-protocol-version, mcp-session-id",
                ),
            ],
            "",
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(origin)
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("authorization, mcp-protocol-version, mcp-session-id")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE")
    );

    // The real 401 carries CORS headers so the browser can read the challenge.
    let reply = edge
        .oneshot(Method::POST, "/mcp", &[("origin", origin)], "{}")
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
    let exposed = reply.header("access-control-expose-headers").unwrap();
    for name in [
        "mcp-session-id",
        "www-authenticate",
        "x-amzn-bedrock-agentcore-runtime-session-id",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // And the 200.
    let auth = format!("Bearer {}", edge.token(|o| o.client_id = None));
    let reply = edge
        .oneshot(
            Method::POST,
            "/mcp",
            &[("origin", origin), ("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(origin));

    // A foreign origin: 403 before any upstream contact, token or not.
    edge.agent.clear();
    let reply = edge
        .oneshot(
            Method::POST,
            "/mcp",
            &[("origin", "https://evil.example"), ("authorization", &auth)],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(edge.agent.request_count(), 0);
    // Metadata documents follow the same policy.
    let reply = edge
        .oneshot(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp",
            &[("origin", origin)],
            "",
        )
        .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
}

#[tokio::test]
async fn admin_endpoints_and_metrics() {
    let edge = Edge::start("", &support_route()).await;
    assert_eq!(edge.admin("/healthz").await.status, 200);
    let ready = edge.admin("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    let token = edge.valid_token();
    for _ in 0..3 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    assert_eq!(edge.invoke("support", None, "{}").await.status, 401);
    edge.access_lines(4).await;
    let metrics = edge.admin("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"gatehouse_requests_total{route="support",status_class="2xx",auth_outcome="ok"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"gatehouse_requests_total{route="support",status_class="4xx",auth_outcome="missing"} 1"#
    ));
    assert!(
        text.contains(r#"gatehouse_auth_duration_seconds_count{route="support",cache="hit"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"gatehouse_auth_duration_seconds_bucket{le="0.000001""#));
    assert!(text.contains("gatehouse_jwks_keys{issuer="));
    assert!(text.contains("gatehouse_token_cache_entries 1"));
    // The public listener does not serve admin paths.
    assert_eq!(
        edge.send(Method::GET, "/metrics", &[], "").await.status,
        404
    );
}

#[tokio::test]
async fn access_log_says_who_invoked_what_with_which_outcome() {
    let edge = Edge::start("", &support_route()).await;
    let token = edge.token(|o| o.sub = Some("alice".into()));
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    let denied = edge.token(|o| o.client_id = Some("client-z".into()));
    assert_eq!(
        edge.invoke("support", Some(&denied), "{}").await.status,
        403
    );
    let lines = edge.access_lines(2).await;
    let ok = &lines[0];
    for field in [
        "time",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "duration_ms",
        "auth_outcome",
        "client_id",
        "sub",
        "session_id",
        "upstream_status",
        "bytes_in",
        "bytes_out",
        "trace_id",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing in {ok}");
    }
    assert_eq!(ok["route"], "support");
    assert_eq!(ok["auth_outcome"], "ok");
    assert_eq!(ok["client_id"], "client-a");
    assert_eq!(ok["sub"], "alice");
    assert_eq!(ok["upstream_status"], 200);
    assert_eq!(ok["session_id"].as_str().unwrap().len(), 36);
    let refused = &lines[1];
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["auth_outcome"], "forbidden");
    assert_eq!(
        refused["client_id"], "client-z",
        "the refused caller is recorded"
    );
    assert!(refused["upstream_status"].is_null());
    let log = edge.log.text();
    assert!(!log.contains(&token) && !log.contains(token.split('.').nth(2).unwrap()));
}
