//! Route rules, with messages and locations asserted.

use super::super::testutil::{errors, warnings};

/// `listen` and `routes:` on lines 1 and 2; the route under test starts on line 3.
fn routes(body: &str) -> String {
    let body: String = super::super::testutil::dedent(body)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    format!("listen: 127.0.0.1:8080\nroutes:\n{body}")
}

const NONE_ROUTE: &str = "
    - name: a
      authorizerType: NONE
      upstream: { url: \"http://127.0.0.1:9000\" }
";

#[test]
fn at_least_one_route() {
    assert_eq!(
        errors("listen: 127.0.0.1:8080\n"),
        ["1:1: routes: at least one route is required: add one under routes"]
    );
    assert_eq!(
        errors("listen: 127.0.0.1:8080\nroutes: []\n"),
        ["2:9: routes: at least one route is required: add one under routes"]
    );
}

#[test]
fn names() {
    let yaml = routes(
        "
        - name: 9lives
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: a
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: a
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        ",
    );
    assert_eq!(
        errors(&yaml),
        [
            "3:11: routes[0].name: \"9lives\" is not a valid route name: use letters, digits, '_' and '-', starting with a letter, up to 48 characters",
            "9:11: routes[2].name: \"a\" is already the name of routes[1]: route names must be unique",
            "12:5: routes[3]: every route needs a name: add name: (letters, digits, '_' and '-', starting with a letter, up to 48 characters)",
        ]
    );
}

#[test]
fn protocol_and_path() {
    let yaml = routes(
        "
        - name: a
          protocol: A2A
          path: runtimes/a
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: b
          path: /b?x=1
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: c
          path: /.well-known/mcp
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: d
          path: /d e
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: e
          protocol: MCP
          path: /mcp
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: f
          path: /café
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\" }
        ",
    );
    assert_eq!(
        errors(&yaml),
        [
            "4:15: routes[0].protocol: must be \"HTTP\" or \"MCP\" (got \"A2A\"), as AgentCore's serverProtocol",
            "5:11: routes[0].path: must start with \"/\" (got \"runtimes/a\")",
            "9:11: routes[1].path: must be a path without query or fragment (got \"/b?x=1\"): remove the ?... or #...",
            "13:11: routes[2].path: /.well-known/mcp is under /.well-known/, which the edge reserves for the metadata it serves (OAuth protected resource metadata): choose another path",
            "17:11: routes[3].path: \"/d e\" is not a valid URL path: percent-encode spaces and other special characters",
            "26:11: routes[5].path: \"/café\" is not a valid URL path: percent-encode spaces and other special characters",
        ]
    );
}

#[test]
fn paths_are_unique() {
    let arn = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj";
    let escaped = "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fsupport-AbCdEfGhIj/invocations";
    let yaml = routes(&format!(
        "
        - name: a
          arn: {arn}
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: b
          path: /runtimes/a/invocations/
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: c
          path: {escaped}
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: d
          path: /runtimes/e/invocations
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: e
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: f
          arn: arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/nope
          authorizerType: NONE
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "8:11: routes[1].path: the path /runtimes/a/invocations/ is already used by route \"a\" (routes[0]): give one of them another path",
            format!("12:11: routes[2].path: the path {escaped} is already used by route \"a\" (routes[0]): give one of them another path").as_str(),
            "19:11: routes[4].name: the default path /runtimes/e/invocations is already used by route \"d\" (routes[3]): give one of them an explicit path",
            "23:10: routes[5].arn: \"arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/nope\" is not an AgentCore runtime ARN: expected arn:aws:bedrock-agentcore:REGION:ACCOUNT:runtime/NAME-XXXXXXXXXX (e.g. arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj)",
        ]
    );
}

#[test]
fn authorizer_type() {
    let jwt = "{ customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }";
    let yaml = routes(&format!(
        "
        - name: a
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: b
          authorizerType: CUSTOM_JWT
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: c
          authorizerType: NONE
          authorizerConfiguration: {jwt}
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: d
          authorizerType: AWS_IAM
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: e
          authorizerType: custom_jwt
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: f
          authorizerConfiguration: {jwt}
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: g
          authorizerType: CUSTOM_JWT
          authorizerConfiguration: {jwt}
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "3:5: routes[0]: no authorizer: paste an authorizerConfiguration (customJwtAuthorizer) from AgentCore, or set authorizerType: NONE explicitly to serve this route without authentication",
            "6:21: routes[1].authorizerType: CUSTOM_JWT needs an authorizerConfiguration with a customJwtAuthorizer: paste it from AgentCore (agentcore.json, the starter toolkit or CreateAgentRuntime)",
            "10:5: routes[2].authorizerConfiguration: the route's authorizerType is NONE, so this authorizer would be ignored: remove it, or set authorizerType: CUSTOM_JWT",
            "13:21: routes[3].authorizerType: unknown authorizerType \"AWS_IAM\": IAM (SigV4) inbound authentication is AgentCore's own; gatehouse authenticates callers with JWTs: use CUSTOM_JWT, or NONE",
            "16:21: routes[4].authorizerType: unknown authorizerType \"custom_jwt\": use CUSTOM_JWT or NONE",
        ]
    );
}

#[test]
fn header_allowlist() {
    let names = "[Authorization, X-Tenant, x-tenant, Connection, Proxy-Foo, Cookie, Access-Control-Allow-Origin, X-Amz-Date, X-Amzn-Trace-Id, X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant, 1bad]";
    let yaml = routes(&format!(
        "
        - name: a
          authorizerType: NONE
          requestHeaderAllowlist: {names}
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    let col = |item: &str| 29 + names.find(item).unwrap();
    assert_eq!(
        errors(&yaml),
        [
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[0]: Authorization can be forwarded only on CUSTOM_JWT routes (as in AgentCore): remove it, or give the route a customJwtAuthorizer",
                col("Authorization")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[2]: x-tenant is listed twice (header names are case-insensitive): remove one",
                col("x-tenant")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[3]: Connection is a hop-by-hop header, which proxies never forward: remove it",
                col("Connection")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[4]: Proxy-Foo is a hop-by-hop header, which proxies never forward: remove it",
                col("Proxy-Foo")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[5]: Cookie is on AgentCore's restricted header list (the edge or HTTP itself manages it): remove it",
                col("Cookie")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[6]: Access-Control-Allow-Origin is on AgentCore's restricted header list (the edge or HTTP itself manages it): remove it",
                col("Access-Control")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[7]: X-Amz-Date: x-amz-* headers are reserved for AWS request signing (SigV4): remove it",
                col("X-Amz-Date")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[8]: X-Amzn-Trace-Id: x-amzn-* headers are reserved for AWS; the only allowed ones start with X-Amzn-Bedrock-AgentCore-Runtime-Custom- (e.g. X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant)",
                col("X-Amzn-Trace-Id")
            ),
            format!(
                "5:{}: routes[0].requestHeaderAllowlist[10]: \"1bad\" is not a valid header name: use letters, digits, '-' and '_', starting with a letter, at most 256 characters",
                col("1bad")
            ),
        ]
    );

    let many: Vec<String> = (0..21).map(|i| format!("X-H{i}")).collect();
    let yaml = routes(&format!(
        "
        - name: a
          authorizerType: NONE
          requestHeaderAllowlist: [{}]
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: b
          authorizerType: NONE
          requestHeaderAllowlist: []
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        ",
        many.join(", ")
    ));
    assert_eq!(
        errors(&yaml),
        [
            "5:29: routes[0].requestHeaderAllowlist: has 21 headers; AgentCore allows at most 20: remove some",
            "9:29: routes[1].requestHeaderAllowlist: must list at least one header (AgentCore allows 1 to 20), or be removed",
        ]
    );
}

#[test]
fn allowlist_warnings() {
    let yaml = routes(
        "
        - name: a
          authorizerConfiguration: { customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }
          requestHeaderAllowlist:
            - Authorization
            - X-Gatehouse-Sub
          claimsToHeaders: { X-Gatehouse-Sub: sub }
          upstream: { agentRuntimeArn: \"arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj\" }
        ",
    );
    assert_eq!(
        warnings(&yaml),
        [
            "6:9: routes[0].requestHeaderAllowlist[0]: Authorization is never forwarded to an agentRuntimeArn upstream: the SigV4 signature replaces it",
            "7:9: routes[0].requestHeaderAllowlist[1]: X-Gatehouse-Sub is set from claimsToHeaders: the client's value is always replaced",
        ]
    );
}

#[test]
fn claim_mappings() {
    let yaml = routes(
        "
        - name: a
          authorizerConfiguration: { customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }
          userIdClaim: \"\"
          claimsToHeaders:
            X-Sub: sub
            x-sub: sub
            Cookie: sub
            X-Amz-User: sub
            Authorization: sub
            X-Empty: \"\"
          claimsToBaggage:
            session.id: sub
            \"bad key\": sub
            enduser.id: \"\"
          upstream: { url: \"http://127.0.0.1:9000\" }
        - name: b
          authorizerType: NONE
          userIdClaim: sub
          claimsToHeaders: { X-Sub: sub }
          claimsToBaggage: { enduser.id: sub }
          upstream: { url: \"http://127.0.0.1:9000\" }
        ",
    );
    assert_eq!(
        errors(&yaml),
        [
            "5:18: routes[0].userIdClaim: must name a claim (e.g. sub), or be removed",
            "8:7: routes[0].claimsToHeaders.x-sub: x-sub is listed twice (header names are case-insensitive): remove one",
            "9:7: routes[0].claimsToHeaders.Cookie: Cookie is on AgentCore's restricted header list (the edge or HTTP itself manages it): remove it",
            "10:7: routes[0].claimsToHeaders.X-Amz-User: X-Amz-User: x-amz-* headers are reserved for AWS request signing (SigV4): remove it",
            "11:7: routes[0].claimsToHeaders.Authorization: Authorization carries the caller's token and cannot be set from a claim: choose another header name",
            "12:16: routes[0].claimsToHeaders.X-Empty: must name a claim (e.g. sub)",
            "14:7: routes[0].claimsToBaggage[\"session.id\"]: session.id is set by the edge to the session id: choose another baggage key",
            "15:7: routes[0].claimsToBaggage[\"bad key\"]: \"bad key\" is not a valid baggage key: use letters, digits and !#$%&'*+-.^_`|~ (e.g. enduser.id)",
            "16:19: routes[0].claimsToBaggage[\"enduser.id\"]: must name a claim (e.g. sub)",
            "20:5: routes[1].userIdClaim: the route's authorizerType is NONE, so there are no claims to read: remove userIdClaim",
            "21:5: routes[1].claimsToHeaders: the route's authorizerType is NONE, so there are no claims to read: remove claimsToHeaders",
            "22:5: routes[1].claimsToBaggage: the route's authorizerType is NONE, so there are no claims to read: remove claimsToBaggage",
        ]
    );
}

#[test]
fn upstream_forms() {
    let yaml = routes(
        "
        - name: a
          authorizerType: NONE
        - name: b
          authorizerType: NONE
          upstream: { connectTimeout: 2s }
        - name: c
          authorizerType: NONE
          upstream: { url: \"http://127.0.0.1:9000\", urls: [\"http://127.0.0.1:9001\"] }
        - name: d
          authorizerType: NONE
          upstream:
            url: 127.0.0.1:9000
            path: invocations
            connectTimeout: 0
        - name: e
          authorizerType: NONE
          upstream:
            urls: [\"http://a:1\", \"http://a:1\", \"https://b/x?y\"]
            region: us-east-1
            qualifier: prod
            endpointUrl: http://localhost:1
        - name: f
          authorizerType: NONE
          upstream: { urls: [] }
        ",
    );
    assert_eq!(
        errors(&yaml),
        [
            "3:5: routes[0]: upstream is required: add upstream: { url: http://127.0.0.1:8080 } (or urls, or agentRuntimeArn)",
            "7:15: routes[1].upstream: needs exactly one of url, urls or agentRuntimeArn (e.g. url: http://127.0.0.1:8080)",
            "10:47: routes[2].upstream.urls: url and urls are alternatives: keep exactly one of url, urls or agentRuntimeArn",
            "14:12: routes[3].upstream.url: \"127.0.0.1:9000\" is not an absolute http(s) URL: write it like https://host[:port][/path]",
            "15:13: routes[3].upstream.path: must start with \"/\" and have no query or fragment (got \"invocations\")",
            "16:23: routes[3].upstream.connectTimeout: must be greater than 0 (e.g. \"2s\")",
            "20:28: routes[4].upstream.urls[1]: http://a:1 is listed twice: remove one",
            "20:42: routes[4].upstream.urls[2]: \"https://b/x?y\" has a query (?...): remove it",
            "21:7: routes[4].upstream.region: region only applies to agentRuntimeArn upstreams: remove it",
            "22:7: routes[4].upstream.qualifier: qualifier only applies to agentRuntimeArn upstreams: remove it",
            "23:7: routes[4].upstream.endpointUrl: endpointUrl only applies to agentRuntimeArn upstreams: remove it",
            "26:23: routes[5].upstream.urls: must list at least one URL",
        ]
    );
}

#[test]
fn agentcore_upstreams() {
    let arn = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj";
    let yaml = routes(&format!(
        "
        - name: a
          authorizerType: NONE
          upstream:
            agentRuntimeArn: {arn}
            region: us-west-2
            qualifier: \"not-valid\"
            endpointUrl: bedrock.local
            path: /x
            http2: true
        - name: b
          authorizerType: NONE
          upstream: {{ agentRuntimeArn: \"arn:aws:bedrock-agentcore:us-east-1:1:runtime/x\" }}
        - name: c
          authorizerType: NONE
          upstream: {{ agentRuntimeArn: {arn}, region: us-east-1, qualifier: prod_2, endpointUrl: \"http://127.0.0.1:4566\" }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "7:15: routes[0].upstream.region: must match the ARN's region us-east-1 (got \"us-west-2\"): fix it or remove it",
            "8:18: routes[0].upstream.qualifier: \"not-valid\" is not a valid qualifier: 1 to 100 letters, digits or '_' (an endpoint name such as DEFAULT)",
            "9:20: routes[0].upstream.endpointUrl: \"bedrock.local\" is not an absolute http(s) URL: write it like https://host[:port][/path]",
            "10:7: routes[0].upstream.path: an agentRuntimeArn upstream is always invoked at /runtimes/{arn}/invocations: remove path",
            "11:7: routes[0].upstream.http2: http2 applies to url/urls upstreams (h2c); AgentCore negotiates HTTP/2 over TLS itself: remove it",
            "14:34: routes[1].upstream.agentRuntimeArn: \"arn:aws:bedrock-agentcore:us-east-1:1:runtime/x\" is not an AgentCore runtime ARN: expected arn:aws:bedrock-agentcore:REGION:ACCOUNT:runtime/NAME-XXXXXXXXXX (e.g. arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj)",
        ]
    );
}

#[test]
fn default_resource_session_binding_keep_alive() {
    let jwt = "{ customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }";
    let yaml = routes(&format!(
        "
        - name: a
          authorizerConfiguration: {jwt}
          defaultResource: true
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: b
          authorizerConfiguration: {jwt}
          defaultResource: true
          sessionBinding: {{ key: short }}
          keepAlive: 500ms
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        - name: c
          authorizerType: NONE
          defaultResource: true
          keepAlive: 0
          jwt: {{ clockSkew: 1s, verifiedTokenCache: {{ maxEntries: 10 }} }}
          upstream: {{ url: \"http://127.0.0.1:9000\" }}
        "
    ));
    assert_eq!(
        errors(&yaml),
        [
            "9:22: routes[1].defaultResource: route \"a\" (routes[0]) is already the default resource: only one route can be",
            "10:28: routes[1].sessionBinding.key: must be at least 32 bytes (got 5): generate one with `openssl rand -base64 48` and pass it as ${GATEHOUSE_SESSION_KEY}",
            "11:16: routes[1].keepAlive: must be at least 1s, or 0 for none (got 500ms)",
            "15:22: routes[2].defaultResource: only a CUSTOM_JWT route has protected resource metadata to serve: remove defaultResource or give the route an authorizer",
            "15:22: routes[2].defaultResource: route \"a\" (routes[0]) is already the default resource: only one route can be",
            "17:27: routes[2].jwt.verifiedTokenCache: the verified-token cache is shared by all routes: move verifiedTokenCache to the top-level jwt block",
        ]
    );
}

#[test]
fn a_none_route_warns_about_its_jwt_block() {
    let yaml = routes(&format!("{NONE_ROUTE}      jwt: {{ clockSkew: 1s }}\n"));
    assert_eq!(
        warnings(&yaml),
        ["6:5: routes[0].jwt: is ignored: the route's authorizerType is NONE"]
    );
}
