//! Outbound credentials (SPEC §13) against a real token endpoint: oidc-provider, with the RFC
//! 8693 token-exchange grant registered through its own extension point
//! (`provider.registerGrantType`, tests/interop/idp/server.mjs), so the real OP authenticates
//! the edge's client, validates the caller's token with its own keys and issues the new JWT
//! (`act: {sub: edge-client}`). Behind the edge, the official Python SDK's MCP server runs as a
//! resource server that refuses every token whose audience is not itself, and reports the
//! `Authorization` it received (`whoami`). The OP counts its exchanges: caching and
//! single-flight are proven there, not by the edge's own word.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::mcp::{claims, python_client};
use crate::support::*;

/// The MCP server's own identifier: the audience of the tokens it accepts.
const TOOLS: &str = "https://tools.internal/mcp";

fn idp() -> Peer {
    Peer::idp(&[
        "--client",
        "agent-client:agent-secret:invoke,read",
        "--client",
        "other-client:other-secret:invoke,read",
        "--client",
        "edge-client:edge-secret:invoke,read,tools",
        "--scopes",
        "invoke,read,tools",
        "--exchange-clients",
        "edge-client",
        "--any-resource",
    ])
}

fn guarded_server() -> Peer {
    Peer::spawn(
        "mcp-server",
        &python(),
        &[
            "tests/interop/mcp/server.py",
            "--port",
            "0",
            "--watch-stdin",
            "--name",
            "tools",
            "--expect-audience",
            TOOLS,
        ],
    )
}

fn route(name: &str, idp: &Peer, server: &Peer, outbound: &str) -> String {
    format!(
        r#"
  - name: {name}
    protocol: MCP
    path: /{name}/mcp
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: {idp}/.well-known/openid-configuration
        allowedAudience: [https://agents.example.com]
        allowedScopes: [invoke]
    upstream: {{ url: "{server}" }}
    outboundAuth: {outbound}
"#,
        idp = idp.url,
        server = server.url,
    )
}

fn exchange(extra: &str) -> String {
    format!(
        "{{ type: tokenExchange, clientId: edge-client, clientSecret: edge-secret, audience: \"{TOOLS}\", scope: tools{extra} }}"
    )
}

fn stats(idp: &Peer) -> Value {
    http()
        .get(format!("{}/__admin/stats", idp.url))
        .send()
        .unwrap()
        .json()
}

fn reset(idp: &Peer) {
    http()
        .post(format!("{}/__admin/stats/reset", idp.url))
        .send()
        .unwrap();
}

fn fault(idp: &Peer, faults: &Value) {
    let r = http()
        .post(format!("{}/__admin/fault", idp.url))
        .json(faults)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn refused_by_server(server: &Peer) -> u64 {
    http()
        .get(format!("{}/__refused", server.url))
        .send()
        .unwrap()
        .json()["refused"]
        .as_u64()
        .unwrap()
}

fn caller() -> impl Fn(&Peer) -> String {
    |idp| client_credentials(idp, "agent-client", "agent-secret", "invoke")
}

/// An MCP `initialize` through the edge.
fn initialize(edge: &Gatehouse, route: &str, token: &str) -> Response {
    http()
        .post(format!("{}/{route}/mcp", edge.url))
        .bearer(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}
        }))
        .send()
        .unwrap()
}

/// Verifies a JWT with the OP's published keys.
fn verify_with_idp_keys(idp: &Peer, token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(
        &http()
            .get(format!("{}/jwks", idp.url))
            .send()
            .unwrap()
            .text(),
    )
    .unwrap();
    let kid = jose_header(token)["kid"].as_str().unwrap().to_owned();
    let jwk = jwks.find(&kid).expect("signed with a published key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[TOOLS]);
    validation.set_issuer(&[&idp.url]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn the_mcp_server_gets_an_exchanged_token_never_the_callers() {
    let idp = idp();
    let server = guarded_server();
    let edge = Gatehouse::start("", &route("tools", &idp, &server, &exchange("")));
    let token = caller()(&idp);
    reset(&idp);

    // The official Python client: list, call, stream progress, call again — one session.
    let out = python_client(&[&format!("{}/tools/mcp", edge.url), "--token", &token]);
    let received = out["whoami"]["authorization"].as_str().unwrap();
    let exchanged = received.strip_prefix("Bearer ").unwrap();
    assert_ne!(
        exchanged, token,
        "the caller's token reached the MCP server"
    );
    assert_eq!(out["whoami_again"]["authorization"], received, "cached");
    // Issued by the OP for the MCP server, speaking for the caller, with the edge as actor.
    let claims = verify_with_idp_keys(&idp, exchanged);
    assert_eq!(claims["aud"], TOOLS);
    assert_eq!(claims["sub"], "agent-client");
    assert_eq!(claims["act"], json!({"sub": "edge-client"}));
    assert_eq!(claims["client_id"], "edge-client");
    assert_eq!(claims["scope"], "tools");
    // Every request of the session used one exchange; the server never saw a foreign token.
    let requests = out["requests"].as_array().unwrap().len();
    assert!(requests >= 5, "{out}");
    assert_eq!(stats(&idp)["exchange"], 1, "{}", stats(&idp));
    assert_eq!(refused_by_server(&server), 0);

    // Another caller token: its own exchange, its own token.
    let other = client_credentials(&idp, "other-client", "other-secret", "invoke");
    let out = python_client(&[&format!("{}/tools/mcp", edge.url), "--token", &other]);
    let received_other = out["whoami"]["authorization"].as_str().unwrap();
    assert_ne!(received_other, received);
    assert_eq!(
        claims_of(received_other)["sub"],
        "other-client",
        "exchanged for the caller"
    );
    assert_eq!(stats(&idp)["exchange"], 2);

    // Metrics: hits and issues, by route.
    let metrics = http()
        .get(format!("{}/metrics", edge.admin))
        .send()
        .unwrap()
        .text();
    assert!(
        metrics.contains(r#"gatehouse_outbound_tokens_total{route="tools",result="issued"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"gatehouse_outbound_tokens_total{route="tools",result="hit"}"#));
    // Never a token in the access log or the edge's own output.
    let log = edge.access_log();
    let text = format!("{log:?}{}", edge.raw_stdout());
    for secret in [token.as_str(), exchanged, "edge-secret"] {
        assert!(!text.contains(secret), "a credential was logged");
    }
}

fn claims_of(authorization: &str) -> Value {
    claims(authorization.strip_prefix("Bearer ").unwrap())
}

#[test]
fn concurrent_misses_make_one_exchange_and_distinct_callers_queue() {
    let idp = idp();
    let server = guarded_server();
    let routes = format!(
        "{}{}",
        route("tools", &idp, &server, &exchange("")),
        route("narrow", &idp, &server, &exchange(", maxConcurrency: 2")),
    );
    let edge = Arc::new(Gatehouse::start("", &routes));
    // A slow endpoint, so that every request below arrives while the first exchange runs.
    fault(&idp, &json!({"exchange": {"delayMs": 400}}));

    let token = caller()(&idp);
    reset(&idp);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let edge = edge.clone();
            let token = token.clone();
            std::thread::spawn(move || initialize(&edge, "tools", &token).status())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(stats(&idp)["exchange"], 1, "single-flight: {}", stats(&idp));

    // Eight distinct callers at once on a route allowing two exchanges in flight.
    let tokens: Vec<String> = (0..8).map(|_| caller()(&idp)).collect();
    reset(&idp);
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let edge = edge.clone();
            std::thread::spawn(move || initialize(&edge, "narrow", &token).status())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let s = stats(&idp);
    assert_eq!(s["exchange"], 8, "{s}");
    assert_eq!(s["exchangeMaxInFlight"], 2, "{s}");
    assert_eq!(refused_by_server(&server), 0);
}

#[test]
fn refusals_are_403_and_an_unavailable_endpoint_is_503_and_nothing_is_forwarded() {
    let idp = idp();
    let server = guarded_server();
    let edge = Gatehouse::start(
        "",
        &route("tools", &idp, &server, &exchange(", timeout: 1s")),
    );
    let cached = caller()(&idp);
    assert_eq!(initialize(&edge, "tools", &cached).status(), 200);

    for code in ["invalid_grant", "unauthorized_client", "invalid_scope"] {
        fault(&idp, &json!({"exchange": {"refuse": code}}));
        let r = initialize(&edge, "tools", &caller()(&idp));
        assert_eq!(r.status(), 403, "{}", r.text());
        assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
        assert!(
            r.json()["message"].as_str().unwrap().contains(code),
            "{}",
            r.text()
        );
    }
    for (what, faults) in [
        ("5xx", json!({"exchange": {"status": 502}})),
        (
            "not OAuth",
            json!({"exchange": {"body": "<html>maintenance</html>", "contentType": "text/html"}}),
        ),
        (
            "no token",
            json!({"exchange": {"body": {"token_type": "Bearer"}}}),
        ),
        ("dropped", json!({"exchange": {"drop": true}})),
        // Hangs far past the route's 1s timeout: the request gets 503 instead of waiting.
        ("hangs", json!({"exchange": {"delayMs": 30000}})),
    ] {
        fault(&idp, &faults);
        let r = initialize(&edge, "tools", &caller()(&idp));
        assert_eq!(r.status(), 503, "{what}: {}", r.text());
        assert_eq!(
            r.header("x-amzn-errortype"),
            Some("ServiceUnavailableException")
        );
        assert!(r.header("retry-after").is_some(), "{what}");
    }
    fault(&idp, &json!({}));

    // The OP goes away: a caller whose exchange is cached still gets through, a new one 503.
    let fresh = caller()(&idp);
    drop(idp);
    assert_eq!(initialize(&edge, "tools", &cached).status(), 200);
    let r = initialize(&edge, "tools", &fresh);
    assert_eq!(r.status(), 503, "{}", r.text());

    // None of the refused requests reached the server (no upstream status in the log), and
    // it never received a token that was not for itself. Eleven requests in all; a line is
    // written when its response has ended, which may be just after the client has read it.
    let log = edge.wait_access_log(11);
    let failed: Vec<&Value> = log
        .iter()
        .filter(|l| l["status"] == 403 || l["status"] == 503)
        .collect();
    assert_eq!(failed.len(), 9, "{log:?}");
    assert!(
        failed.iter().all(|l| l["upstream_status"].is_null()),
        "{failed:?}"
    );
    assert_eq!(refused_by_server(&server), 0);
}

#[test]
fn client_credentials_is_one_edge_token_for_every_caller() {
    let idp = idp();
    let server = guarded_server();
    let outbound = format!(
        "{{ type: clientCredentials, clientId: edge-client, clientSecret: edge-secret, resource: \"{TOOLS}\", scope: tools }}"
    );
    let edge = Gatehouse::start("", &route("tools", &idp, &server, &outbound));
    let a = caller()(&idp);
    let b = client_credentials(&idp, "other-client", "other-secret", "invoke");
    reset(&idp);
    let out_a = python_client(&[&format!("{}/tools/mcp", edge.url), "--token", &a]);
    let out_b = python_client(&[&format!("{}/tools/mcp", edge.url), "--token", &b]);
    let received = out_a["whoami"]["authorization"].as_str().unwrap();
    assert_eq!(out_b["whoami"]["authorization"], received);
    let claims = verify_with_idp_keys(&idp, received.strip_prefix("Bearer ").unwrap());
    assert_eq!(claims["sub"], "edge-client");
    assert_eq!(claims["aud"], TOOLS);
    assert_eq!(stats(&idp)["token"], 1, "{}", stats(&idp));
    assert_eq!(refused_by_server(&server), 0);
}
