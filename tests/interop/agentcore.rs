//! The core edge with oidc-provider tokens in front of an AgentCore SDK agent.

use serde_json::json;

use crate::support::*;

fn routes(idp: &Peer, agent: &Peer) -> String {
    format!(
        r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: {idp}/.well-known/openid-configuration
        allowedClients: [agent-client]
        allowedAudience: ["https://agents.example.com"]
        allowedScopes: [invoke]
    requestHeaderAllowlist: [X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant]
    upstream: {{ url: "{agent}" }}
"#,
        idp = idp.url,
        agent = agent.url
    )
}

#[test]
fn oidc_provider_tokens_reach_the_agentcore_agent() {
    let idp = Peer::idp(&[]);
    let agent = Peer::agentcore_agent();
    let edge = Gatehouse::start("jwt: { jwksMinRefetchInterval: 1s }", &routes(&idp, &agent));
    let url = format!("{}/runtimes/support/invocations", edge.url);
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");

    // 200 with the echo; the agent saw the session id gatehouse returned.
    let session = "interop-session-0123456789abcdef0123456789";
    let response = http()
        .post(&url)
        .bearer(&token)
        .header("x-amzn-bedrock-agentcore-runtime-session-id", session)
        .header("x-amzn-bedrock-agentcore-runtime-custom-tenant", "acme")
        .json(&json!({"prompt": "hello"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["payload"]["prompt"], "hello");
    assert_eq!(echo["session_id"], session);
    assert_eq!(
        response.header("x-amzn-bedrock-agentcore-runtime-session-id"),
        Some(session)
    );
    let seen = &echo["request_headers"];
    assert_eq!(
        seen["x-amzn-bedrock-agentcore-runtime-custom-tenant"],
        "acme"
    );
    assert!(
        seen.get("Authorization").is_none(),
        "Authorization was not allowlisted: {seen}"
    );
    assert!(
        seen["baggage"]
            .as_str()
            .unwrap()
            .contains(&format!("session.id={session}"))
    );
    assert!(seen["traceparent"].as_str().unwrap().starts_with("00-"));
    // The SDK hides the request id from agent code; it got gatehouse's.
    assert_eq!(
        echo["request_id"].as_str(),
        response.header("x-amzn-requestid")
    );

    // A generated session id is at least 33 characters and reaches the agent.
    let response = http()
        .post(&url)
        .bearer(&token)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let generated = response
        .header("x-amzn-bedrock-agentcore-runtime-session-id")
        .unwrap()
        .to_owned();
    assert!(generated.len() >= 33);
    assert_eq!(response.json()["session_id"], generated.as_str());

    // Streaming through the SDK's SSE.
    let response = http()
        .post(&url)
        .bearer(&token)
        .json(&json!({"stream": 3, "interval_ms": 50}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(
        response.text().matches("data: ").count(),
        4,
        "3 frames and the final echo"
    );

    // 401 and 403 as tabled.
    let response = http().post(&url).json(&json!({})).send().unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata=")
            && challenge.contains(r#"scope="invoke""#),
        "{challenge}"
    );
    let response = http()
        .post(&url)
        .bearer("not.a.token")
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    let other = client_credentials(&idp, "other-client", "other-secret", "invoke");
    let response = http()
        .post(&url)
        .bearer(&other)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json()["message"],
        "Claim 'client_id' value mismatch with configuration."
    );
    let read_only = client_credentials(&idp, "agent-client", "agent-secret", "read");
    let response = http()
        .post(&url)
        .bearer(&read_only)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .starts_with(r#"Bearer error="insufficient_scope", scope="invoke""#)
    );

    // The metadata names the provider's issuer.
    let response = http()
        .get(format!(
            "{}/.well-known/oauth-protected-resource/runtimes/support/invocations",
            edge.url
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json()["authorization_servers"], json!([idp.url]));

    // The access log says who did what; no token in it.
    let lines = edge.wait_access_log(7);
    assert!(lines.iter().any(|l| l["client_id"] == "agent-client"
        && l["status"] == 200
        && l["sub"] == "agent-client"));
    assert!(
        lines
            .iter()
            .any(|l| l["client_id"] == "other-client" && l["auth_outcome"] == "forbidden")
    );
    let log = edge.raw_stdout();
    for t in [&token, &other, &read_only] {
        assert!(
            !log.contains(t.split('.').nth(2).unwrap()),
            "a token signature is in the access log"
        );
    }
}

#[test]
fn key_rotation_at_the_provider_is_picked_up() {
    let idp = Peer::idp(&[]);
    let agent = Peer::agentcore_agent();
    let edge = Gatehouse::start(
        "jwt: { jwksMinRefetchInterval: 1s, jwksRefreshInterval: 2s }",
        &routes(&idp, &agent),
    );
    let url = format!("{}/runtimes/support/invocations", edge.url);
    let old = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    assert_eq!(
        http()
            .post(&url)
            .bearer(&old)
            .json(&json!({}))
            .send()
            .unwrap()
            .status(),
        200
    );

    let rotated = http()
        .post(format!("{}/__admin/rotate", idp.url))
        .send()
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let new = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    assert_ne!(jose_header(&new)["kid"], jose_header(&old)["kid"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The new kid is fetched on first sight; the old key is still published.
    assert_eq!(
        http()
            .post(&url)
            .bearer(&new)
            .json(&json!({}))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http()
            .post(&url)
            .bearer(&old)
            .json(&json!({}))
            .send()
            .unwrap()
            .status(),
        200
    );

    // Retired keys stop verifying once the edge has refreshed (cached tokens included).
    assert_eq!(
        http()
            .post(format!("{}/__admin/retire-old", idp.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut status = 200;
    while std::time::Instant::now() < deadline {
        status = http()
            .post(&url)
            .bearer(&old)
            .json(&json!({}))
            .send()
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(status, 401, "a token whose key was retired is refused");
    assert_eq!(
        http()
            .post(&url)
            .bearer(&new)
            .json(&json!({}))
            .send()
            .unwrap()
            .status(),
        200
    );
}
