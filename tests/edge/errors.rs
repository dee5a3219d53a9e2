//! Every row of SPEC §7: status, `x-amzn-ErrorType`, JSON message, `WWW-Authenticate`.

use std::time::Duration;

use gatehouse::dev::{Behavior, Mode};
use http::Method;

use crate::support::*;

fn claims_route() -> String {
    RouteYaml::new("support")
        .authorizer(r#"allowedAudience: ["https://agents.example.com"]"#)
        .authorizer("customClaims:")
        .authorizer(r#"  - inboundTokenClaimName: "cognito:groups""#)
        .authorizer("    inboundTokenClaimValueType: STRING_ARRAY")
        .authorizer("    authorizingClaimMatchValue:")
        .authorizer("      claimMatchOperator: CONTAINS_ANY")
        .authorizer("      claimMatchValue: { matchValueStringList: [support, admin] }")
        .authorizer(r#"advertisedScopeMapping: { invoke: "api://edge/invoke" }"#)
        .build()
}

fn groups(values: &[&str]) -> (String, serde_json::Value) {
    ("cognito:groups".into(), serde_json::json!(values))
}

#[tokio::test]
async fn authentication_rows() {
    let edge = Edge::start("publicUrl: https://agents.example.com", &claims_route()).await;
    let metadata = "https://agents.example.com/.well-known/oauth-protected-resource/runtimes/support/invocations";

    // No Authorization: 401, bare challenge with resource_metadata and the advertised scope.
    let reply = edge.invoke("support", None, "{}").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_type(), Some("UnauthorizedException"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        format!(r#"Bearer resource_metadata="{metadata}", scope="api://edge/invoke""#)
    );
    assert!(!reply.message().is_empty());

    // Bad token: 401 invalid_token with a description and the metadata URL.
    let reply = edge.invoke("support", Some("not.a.token"), "{}").await;
    assert_eq!(reply.status, 401);
    let www = reply.header("www-authenticate").unwrap();
    assert!(
        www.starts_with(r#"Bearer error="invalid_token", error_description=""#),
        "{www}"
    );
    assert!(
        www.ends_with(&format!(r#"resource_metadata="{metadata}""#)),
        "{www}"
    );

    // Expired.
    let expired = edge.token(|o| {
        o.issued_at = Some(now() - 7200);
        o.ttl = Duration::from_secs(3600);
        o.claims.push(groups(&["support"]));
    });
    let reply = edge.invoke("support", Some(&expired), "{}").await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(reply.message(), "The token has expired.");

    // aud not allowed: 401 invalid_token.
    let wrong_aud = edge.token(|o| {
        o.aud = vec!["https://other.example".into()];
        o.claims.push(groups(&["support"]));
    });
    let reply = edge.invoke("support", Some(&wrong_aud), "{}").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.message(),
        "Claim 'aud' value mismatch with configuration."
    );

    // client_id not allowed: 403, no challenge, message names the claim.
    let wrong_client = edge.token(|o| {
        o.client_id = Some("client-b".into());
        o.claims.push(groups(&["support"]));
    });
    let reply = edge.invoke("support", Some(&wrong_client), "{}").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_type(), Some("AccessDeniedException"));
    assert_eq!(
        reply.message(),
        "Claim 'client_id' value mismatch with configuration."
    );
    assert!(reply.header("www-authenticate").is_none());

    // Custom claim mismatch: 403 naming the claim.
    let wrong_group = edge.token(|o| o.claims.push(groups(&["sales"])));
    let reply = edge.invoke("support", Some(&wrong_group), "{}").await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.message(),
        "Claim 'cognito:groups' value mismatch with configuration."
    );
    assert!(reply.header("www-authenticate").is_none());

    // No allowed scope: 403 insufficient_scope step-up with the advertised scope.
    let no_scope = edge.token(|o| {
        o.scope = Some("read".into());
        o.claims.push(groups(&["support"]));
    });
    let reply = edge.invoke("support", Some(&no_scope), "{}").await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        format!(
            r#"Bearer error="insufficient_scope", scope="api://edge/invoke", resource_metadata="{metadata}""#
        )
    );

    assert_eq!(edge.agent.request_count(), 0);

    // And the valid token passes.
    let good = edge.token(|o| o.claims.push(groups(&["x", "admin"])));
    let reply = edge
        .invoke("support", Some(&good), r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["payload"]["prompt"], "hi");
}

#[tokio::test]
async fn issuer_unavailable_is_503_with_retry_after() {
    let issuer = issuer().await;
    issuer.set_mode(Mode::Status(500));
    let edge = Edge::start_with(issuer, agent().await, "", &support_route()).await;
    let token = edge.valid_token();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_type(), Some("ServiceUnavailableException"));
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(reply.header("www-authenticate").is_none());
    assert_eq!(edge.agent.request_count(), 0);
    let ready = edge.admin("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["issuers"][0]["state"], "loading");
}

#[tokio::test]
async fn request_rows() {
    let edge = Edge::start(
        "limits: { maxRequestHeaderBytes: 4KiB, maxRequestBodyBytes: 1KiB, requestTimeout: 1s }",
        &support_route(),
    )
    .await;
    let token = edge.valid_token();
    let auth = format!("Bearer {token}");

    // Bad session id: 400 ValidationException.
    let reply = edge
        .oneshot(
            Method::POST,
            "/runtimes/support/invocations",
            &[
                ("authorization", &auth),
                ("x-amzn-bedrock-agentcore-runtime-session-id", "short"),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_type(), Some("ValidationException"));
    assert!(reply.message().contains("33 to 256"));

    // No route: 404 ResourceNotFoundException, also under /runtimes.
    for path in [
        "/nothing",
        "/runtimes/other/invocations",
        "/runtimes/support/invocations/extra",
    ] {
        let reply = edge
            .oneshot(Method::POST, path, &[("authorization", &auth)], "{}")
            .await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error_type(), Some("ResourceNotFoundException"));
    }

    // Headers too large: 431 with the edge's JSON.
    let big = "x".repeat(5000);
    let reply = edge
        .oneshot(
            Method::POST,
            "/runtimes/support/invocations",
            &[("authorization", &auth), ("x-big", &big)],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 431);
    assert_eq!(reply.error_type(), Some("ValidationException"));

    // Body too large by Content-Length: 413, upstream never contacted.
    let body = "x".repeat(2000);
    let reply = edge
        .oneshot(
            Method::POST,
            "/runtimes/support/invocations",
            &[("authorization", &auth)],
            &body,
        )
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error_type(), Some("ValidationException"));
    assert_eq!(edge.agent.request_count(), 0);

    // Upstream timed out: 504.
    edge.agent.set_behavior(Behavior::Hang);
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error_type(), Some("GatewayTimeoutException"));

    // Upstream unreachable: 502.
    edge.agent.shutdown().await;
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_type(), Some("BadGatewayException"));
    assert!(!reply.body.is_empty());
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused() {
    let edge = Edge::start("limits: { maxRequestBodyBytes: 1KiB }", &support_route()).await;
    let token = edge.valid_token();
    let chunk = format!("{:x}\r\n{}\r\n", 800, "a".repeat(800));
    let request = format!(
        "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let response = edge.raw(request.as_bytes(), Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    // The upstream may have seen the start of the body, but never a complete request.
    for recorded in edge.agent.requests() {
        assert!(
            recorded.body_len <= 1024,
            "upstream got {} bytes",
            recorded.body_len
        );
    }
}

#[tokio::test]
async fn upstream_status_and_www_authenticate_pass_through() {
    let edge = Edge::start("", &support_route()).await;
    edge.agent.set_behavior(Behavior::Status(401));
    let reply = edge
        .invoke("support", Some(&edge.valid_token()), "{}")
        .await;
    assert_eq!(reply.status, 401);
    // Not an edge error: no x-amzn-ErrorType from the edge.
    assert!(reply.error_type().is_none());
}
