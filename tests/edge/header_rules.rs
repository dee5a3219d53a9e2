//! SPEC §5 as a property over the real edge: for any mix of client headers — identity headers,
//! hop-by-hop headers, allowlisted and unknown ones, `Connection` naming an allowlisted one,
//! edge-owned ids — the upstream receives exactly what a rule says it should, and the
//! identity headers always come from the token.

use gatehouse::dev::Recorded;
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

const ROUTE: &str = r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
    requestHeaderAllowlist: [X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant]
    userIdClaim: sub
    claimsToHeaders: { X-Gatehouse-Sub: sub }
    upstream: { url: "{agent}" }
"#;

const TENANT: &str = "x-amzn-bedrock-agentcore-runtime-custom-tenant";
const USER_ID: &str = "x-amzn-bedrock-agentcore-runtime-user-id";
const REQUEST_ID: &str = "x-amzn-bedrock-agentcore-runtime-request-id";

/// Client headers the property draws from.
const NAMES: &[&str] = &[
    "x-gatehouse-sub",
    USER_ID,
    TENANT,
    "x-random",
    "cookie",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "mcp-param-region",
    REQUEST_ID,
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// Never forwarded from the client, whatever it sends.
const DROPPED: &[&str] = &[
    "x-random",
    "cookie",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "authorization",
];

fn sent_values(sent: &[(usize, String)], name: &str) -> Vec<String> {
    sent.iter()
        .filter(|(i, _)| NAMES[*i] == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn check(seen: &Recorded, sent: &[(usize, String)], named: bool) -> Result<(), TestCaseError> {
    // Identity comes from the token only.
    prop_assert_eq!(seen.header(USER_ID), Some("user-1".to_owned()));
    prop_assert_eq!(seen.header("x-gatehouse-sub"), Some("user-1".to_owned()));
    // The allowlisted header passes as sent, unless `Connection` made it hop-by-hop.
    let tenant = sent_values(sent, TENANT);
    let expected = (!tenant.is_empty() && !named).then(|| tenant.join(", "));
    prop_assert_eq!(seen.header(TENANT), expected);
    let region = sent_values(sent, "mcp-param-region");
    prop_assert_eq!(
        seen.header("mcp-param-region"),
        (!region.is_empty()).then(|| region.join(", "))
    );
    for name in DROPPED {
        prop_assert!(seen.header(name).is_none(), "{} reached the upstream", name);
    }
    // Ids and forwarding headers are the edge's own.
    let request_id = seen.header(REQUEST_ID).unwrap_or_default();
    prop_assert!(!sent_values(sent, REQUEST_ID).contains(&request_id));
    prop_assert_eq!(request_id.len(), 36);
    let traceparent = seen.header("traceparent").unwrap_or_default();
    prop_assert!(!sent_values(sent, "traceparent").contains(&traceparent));
    prop_assert_eq!(traceparent.len(), 55);
    prop_assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1".to_owned()));
    // The client's Host (the edge's address), never a client-sent X-Forwarded-Host.
    let forwarded_host = seen.header("x-forwarded-host").unwrap_or_default();
    prop_assert!(
        forwarded_host.starts_with("127.0.0.1:"),
        "{}",
        forwarded_host
    );
    Ok(())
}

#[test]
fn client_headers_reach_the_upstream_only_by_rule() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let edge = runtime.block_on(Edge::start("", ROUTE));
    let auth = format!("Bearer {}", edge.valid_token());
    let strategy = (
        prop::collection::vec((0..NAMES.len(), "[a-z0-9]{1,8}"), 0..10),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(sent, named)| {
            runtime.block_on(async {
                edge.agent.clear();
                let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
                for (i, value) in &sent {
                    headers.push((NAMES[*i], value));
                }
                if named {
                    headers.push(("connection", TENANT));
                }
                let reply = edge
                    .send(
                        Method::POST,
                        "/runtimes/support/invocations",
                        &headers,
                        "{}",
                    )
                    .await;
                prop_assert_eq!(reply.status, 200, "{:?}", reply.body);
                let seen = edge.agent.requests();
                prop_assert_eq!(seen.len(), 1);
                check(&seen[0], &sent, named)
            })
        })
        .unwrap();
}
