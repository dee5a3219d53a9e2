//! `outboundAuth` rules (SPEC §13), with messages and locations asserted.

use super::super::testutil::{errors, warnings};

const JWT: &str = "authorizerConfiguration: { customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }";

/// One route at line 3; `body` lines follow `- name: a` at 4 spaces.
fn route(body: &str) -> String {
    let body: String = super::super::testutil::dedent(body)
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!("listen: 127.0.0.1:8080\nroutes:\n  - name: a\n{body}")
}

#[test]
fn a_complete_exchange_and_client_credentials_pass() {
    let yaml = route(&format!(
        "
        protocol: MCP
        {JWT}
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        outboundAuth:
          type: tokenExchange
          clientId: edge
          clientSecret: s3cret
          audience: https://tools.internal/mcp
          resource: https://tools.internal/mcp
          scope: tools.read
          timeout: 2s
          maxConcurrency: 4
          cacheMaxEntries: 1000
        "
    ));
    assert_eq!(errors(&yaml), Vec::<String>::new());
    assert_eq!(warnings(&yaml), Vec::<String>::new());
    let yaml = route(
        "
        authorizerType: NONE
        upstream: { url: \"http://127.0.0.1:9000\" }
        outboundAuth: { type: clientCredentials, tokenEndpoint: \"https://idp.example.com/token\", clientId: edge, clientSecret: s }
        ",
    );
    assert_eq!(errors(&yaml), Vec::<String>::new());
}

#[test]
fn authorization_and_outbound_exclude_each_other() {
    let yaml = route(&format!(
        "
        {JWT}
        requestHeaderAllowlist: [X-Tenant, Authorization]
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        outboundAuth: {{ type: tokenExchange, clientId: edge, clientSecret: s, audience: api }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "5:40: routes[0].requestHeaderAllowlist[1]: Authorization and outboundAuth exclude each other: the upstream gets the outbound credential, never the caller's token; remove Authorization from requestHeaderAllowlist"
        ]
    );
}

#[test]
fn mcp_passthrough_is_a_warning_naming_the_rule() {
    let yaml = route(&format!(
        "
        protocol: MCP
        {JWT}
        requestHeaderAllowlist: [Authorization]
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    assert_eq!(errors(&yaml), Vec::<String>::new());
    let warned = warnings(&yaml);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].starts_with("6:30: routes[0].requestHeaderAllowlist[0]: forwards the caller's token to the MCP server: the MCP specification forbids passing a client's token through"), "{warned:?}");
    // HTTP routes forwarding it: no warning (the AgentCore header pattern).
    let yaml = route(&format!(
        "
        {JWT}
        requestHeaderAllowlist: [Authorization]
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    assert_eq!(warnings(&yaml), Vec::<String>::new());
}

#[test]
fn block_rules() {
    let yaml = route(&format!(
        "
        {JWT}
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        outboundAuth:
          type: exchange
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "7:13: routes[0].outboundAuth.type: must be tokenExchange or clientCredentials (got \"exchange\")"
        ]
    );
    let yaml = route(&format!(
        "
        {JWT}
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        outboundAuth:
          type: tokenExchange
          tokenEndpoint: http://idp.example.com/token
          clientSecret: \"\"
          resource: not a uri
          timeout: 0
          maxConcurrency: 0
          cacheMaxEntries: 0
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "7:7: routes[0].outboundAuth: clientId is required: the edge's own client at the token endpoint (e.g. ${EDGE_CLIENT_ID})",
            "8:22: routes[0].outboundAuth.tokenEndpoint: must use https (got \"http://idp.example.com/token\"): the edge's client secret and the caller's token travel in the request; http is allowed only for loopback hosts",
            "9:21: routes[0].outboundAuth.clientSecret: clientSecret is required (sent with client_secret_basic): pass it from the environment, e.g. ${EDGE_CLIENT_SECRET}",
            "10:17: routes[0].outboundAuth.resource: must be an absolute URI (RFC 8707), e.g. https://tools.internal/mcp (got \"not a uri\")",
            "11:16: routes[0].outboundAuth.timeout: must be greater than 0 (e.g. \"5s\")",
            "12:23: routes[0].outboundAuth.maxConcurrency: must be at least 1 (the default is 16): token requests in flight to the endpoint",
            "13:24: routes[0].outboundAuth.cacheMaxEntries: must be at least 1 (the default is 10000): without a cache every request costs a token request",
        ]
    );
}

#[test]
fn exchange_needs_a_caller_and_a_target() {
    let yaml = route(
        "
        authorizerType: NONE
        upstream: { url: \"http://127.0.0.1:9000\" }
        outboundAuth: { type: tokenExchange, clientId: edge, clientSecret: s }
        ",
    );
    let errs = errors(&yaml);
    assert!(errs.iter().any(|e| e.contains("outboundAuth.type: tokenExchange exchanges the caller's validated token, and this route has no CUSTOM_JWT authorizer")), "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("routes[0].outboundAuth: tokenEndpoint is required")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("tokenExchange needs audience or resource")),
        "{errs:?}"
    );
}

#[test]
fn sigv4_upstreams_sign_instead() {
    let yaml = route(&format!(
        "
        {JWT}
        upstream: {{ agentRuntimeArn: \"arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj\" }}
        outboundAuth: {{ type: clientCredentials, clientId: edge, clientSecret: s }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "6:5: routes[0].outboundAuth: an agentRuntimeArn upstream is called with the edge's SigV4 signature, which replaces Authorization: remove outboundAuth"
        ]
    );
}

#[test]
fn unknown_keys_in_the_block() {
    let yaml = route(&format!(
        "
        {JWT}
        upstream: {{ url: \"http://127.0.0.1:9000\" }}
        outboundAuth: {{ type: clientCredentials, clientId: edge, clientSecret: s, secret: x }}
        "
    ));
    let errs = errors(&yaml);
    assert!(
        errs.iter()
            .any(|e| e.contains("routes[0].outboundAuth.secret: unknown key")),
        "{errs:?}"
    );
}
