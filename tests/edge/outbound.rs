//! Outbound credentials (SPEC §13) in-process: the test issuer's token endpoint (named by its
//! discovery document) exchanges the caller's token or issues the edge's own, and the
//! recording agent shows what the upstream received. The same against oidc-provider, with
//! faults, single-flight and bounded concurrency, is in tests/interop/outbound.rs.

use base64::Engine;
use serde_json::Value;

use crate::support::*;

const TARGET: &str = "https://tools.internal/mcp";

fn route(name: &str, outbound: &str) -> String {
    format!(
        r#"
  - name: {name}
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{{discovery}}"
        allowedClients: [client-a]
    upstream: {{ url: "{{agent}}" }}
    outboundAuth: {outbound}
"#
    )
}

fn payload(authorization: &str) -> Value {
    let token = authorization.strip_prefix("Bearer ").unwrap();
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_upstream_gets_the_exchanged_token_cached_per_caller() {
    let routes = route(
        "tools",
        &format!(
            "{{ type: tokenExchange, clientId: edge, clientSecret: s, audience: \"{TARGET}\" }}"
        ),
    );
    let edge = Edge::start("", &routes).await;
    let token = edge.valid_token();
    edge.issuer.reset_counters();

    for _ in 0..3 {
        assert_eq!(edge.invoke("tools", Some(&token), "{}").await.status, 200);
    }
    let seen = edge.agent.requests();
    let received = seen[0].header("authorization").unwrap();
    assert_ne!(received, format!("Bearer {token}"));
    assert!(
        seen.iter()
            .all(|r| r.header("authorization").as_deref() == Some(&*received))
    );
    let claims = payload(&received);
    assert_eq!(claims["aud"], TARGET);
    assert_eq!(claims["act"]["sub"], "edge");
    assert_eq!(claims["sub"], payload(&format!("Bearer {token}"))["sub"]);
    assert_eq!(
        edge.issuer.token_requests(),
        1,
        "one exchange for three requests"
    );

    // Another caller token, another exchange.
    let other = edge.token(|o| o.sub = Some("someone-else".into()));
    assert_eq!(edge.invoke("tools", Some(&other), "{}").await.status, 200);
    let last = edge.agent.requests().pop().unwrap();
    assert_eq!(
        payload(&last.header("authorization").unwrap())["sub"],
        "someone-else"
    );
    assert_eq!(edge.issuer.token_requests(), 2);

    // A client cannot smuggle its own Authorization past the phase: it is never the caller's.
    assert!(
        edge.agent
            .requests()
            .iter()
            .all(|r| r.headers.get_all("authorization").iter().count() == 1)
    );
}

#[tokio::test]
async fn client_credentials_is_one_token_for_every_caller() {
    let routes = route(
        "reports",
        "{ type: clientCredentials, clientId: edge, clientSecret: s, resource: \"https://reports.internal\" }",
    );
    let edge = Edge::start("", &routes).await;
    let a = edge.valid_token();
    let b = edge.token(|o| o.sub = Some("b".into()));
    edge.issuer.reset_counters();
    assert_eq!(edge.invoke("reports", Some(&a), "{}").await.status, 200);
    assert_eq!(edge.invoke("reports", Some(&b), "{}").await.status, 200);
    let seen = edge.agent.requests();
    let first = seen[0].header("authorization").unwrap();
    assert_eq!(seen[1].header("authorization").unwrap(), first);
    let claims = payload(&first);
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("edge"), Some("https://reports.internal"))
    );
    assert_eq!(edge.issuer.token_requests(), 1);
}

#[tokio::test]
async fn a_refusal_is_403_naming_the_code_and_nothing_is_forwarded() {
    // The test issuer refuses an exchange for the audience "refuse".
    let routes = route(
        "tools",
        "{ type: tokenExchange, clientId: edge, clientSecret: s, audience: refuse }",
    );
    let edge = Edge::start("", &routes).await;
    let reply = edge.invoke("tools", Some(&edge.valid_token()), "{}").await;
    assert_eq!(reply.status, 403, "{}", reply.message());
    assert_eq!(reply.error_type(), Some("AccessDeniedException"));
    assert!(
        reply.message().contains("invalid_grant"),
        "{}",
        reply.message()
    );
    assert_eq!(
        edge.agent.request_count(),
        0,
        "forwarded without the credential"
    );
}

#[tokio::test]
async fn an_endpoint_that_is_not_oauth_is_503_and_nothing_is_forwarded() {
    let routes = route(
        "tools",
        &format!(
            "{{ type: tokenExchange, tokenEndpoint: \"{{issuer}}/nowhere\", clientId: edge, clientSecret: s, audience: \"{TARGET}\", timeout: 2s }}"
        ),
    );
    let edge = Edge::start("", &routes).await;
    let token = edge.valid_token();
    let reply = edge.invoke("tools", Some(&token), "{}").await;
    assert_eq!(reply.status, 503, "{}", reply.message());
    assert_eq!(reply.error_type(), Some("ServiceUnavailableException"));
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        edge.agent.request_count(),
        0,
        "forwarded without the credential"
    );
    let line = &edge.access_lines(1).await[0];
    assert_eq!(line["status"], 503);
    assert!(!line.to_string().contains(&token));
}

#[tokio::test]
async fn a_token_exchange_span_per_request_says_whether_it_was_cached() {
    use crate::telemetry::{attr, collect, named, traced_edge};
    let routes = fill_route_for_traces();
    let (edge, exporter) = traced_edge("", &routes).await;
    let token = edge.valid_token();
    for _ in 0..2 {
        assert_eq!(edge.invoke("tools", Some(&token), "{}").await.status, 200);
    }
    let refused = edge.invoke("refusing", Some(&token), "{}").await;
    assert_eq!(refused.status, 403);
    let spans = collect(&edge, &exporter, 9).await;
    let exchanges = named(&spans, "gatehouse.token_exchange");
    assert_eq!(exchanges.len(), 3, "{spans:#?}");
    let results: Vec<(Option<String>, Option<String>)> = exchanges
        .iter()
        .map(|s| {
            (
                attr(s, "gatehouse.cache_hit"),
                attr(s, "gatehouse.outbound.result"),
            )
        })
        .collect();
    for expected in [
        (Some("false".to_owned()), Some("issued".to_owned())),
        (Some("true".to_owned()), Some("hit".to_owned())),
        (Some("false".to_owned()), Some("refused".to_owned())),
    ] {
        assert!(results.contains(&expected), "{results:?}");
    }
    // Children of their request's server span, and never a token in any attribute.
    for exchange in &exchanges {
        assert!(
            spans
                .iter()
                .any(|s| s.span_kind == opentelemetry::trace::SpanKind::Server
                    && s.span_context.span_id() == exchange.parent_span_id
                    && s.span_context.trace_id() == exchange.span_context.trace_id())
        );
    }
    for span in &spans {
        for kv in &span.attributes {
            assert!(!kv.value.as_str().contains(&token[..40]), "{span:#?}");
        }
    }
}

fn fill_route_for_traces() -> String {
    format!(
        "{}{}",
        route(
            "tools",
            &format!(
                "{{ type: tokenExchange, clientId: edge, clientSecret: s, audience: \"{TARGET}\" }}"
            ),
        ),
        route(
            "refusing",
            "{ type: tokenExchange, clientId: edge, clientSecret: s, audience: refuse }",
        )
    )
}
