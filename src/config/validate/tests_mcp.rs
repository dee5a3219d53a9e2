//! The `mcp` block: values, rules and Cedar policy files (located in their own file).

use super::super::testutil::{errors, load_in};

const JWT: &str = "{ customJwtAuthorizer: { discoveryUrl: \"https://idp.example.com/.well-known/openid-configuration\", allowedClients: [c] } }";

fn route(mcp: &str) -> String {
    format!(
        "listen: 127.0.0.1:8080\nroutes:\n  - name: tools\n    protocol: MCP\n    authorizerConfiguration: {JWT}\n    upstream: {{ url: \"http://127.0.0.1:9000\" }}\n    mcp:\n{}",
        mcp.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("      {}\n", l.strip_prefix("        ").unwrap_or(l)))
            .collect::<String>()
    )
}

#[test]
fn a_full_rules_block_loads() {
    let yaml = route(
        "
        maxMessageBytes: 1MiB
        enforcement: logOnly
        default: deny
        filterLists: true
        rules:
          - match: { method: tools/call, name: \"billing_*\" }
            allowedScopes: [billing]
            allowedClients: [ops-console]
            customClaims:
              - inboundTokenClaimName: groups
                inboundTokenClaimValueType: STRING_ARRAY
                authorizingClaimMatchValue: { claimMatchOperator: CONTAINS, claimMatchValue: { matchValueString: billing } }
          - match: { name: \"admin_*\" }
            deny: true
          - match: { method: \"tools/*\" }
        ",
    );
    assert_eq!(errors(&yaml), Vec::<String>::new(), "{yaml}");
}

#[test]
fn bad_values_and_rules() {
    let yaml = route(
        "
        maxMessageBytes: 0
        enforcement: audit
        default: maybe
        rules:
          - match: { method: \"\" }
            allowedScopes: [\"two words\"]
            deny: true
          - allowedClients: []
            typo: 1
        ",
    );
    assert_eq!(
        errors(&yaml),
        [
            "8:24: routes[0].mcp.maxMessageBytes: must be more than 0: the largest JSON-RPC message a client may POST, e.g. 4MiB",
            "9:20: routes[0].mcp.enforcement: must be \"enforce\" or \"logOnly\" (got \"audit\")",
            "10:16: routes[0].mcp.default: must be \"allow\" or \"deny\" (got \"maybe\")",
            "12:28: routes[0].mcp.rules[0].match.method: must not be empty: a name, a glob such as \"billing_*\", or remove the key to match any",
            "13:27: routes[0].mcp.rules[0].allowedScopes[0]: \"two words\" is not a valid scope: 1 to 255 printable ASCII characters without spaces, '\"' or '\\'",
            "14:11: routes[0].mcp.rules[0].deny: a deny rule refuses whatever matches: its allowedScopes, allowedClients and customClaims would never be checked; split it into two rules",
            "15:27: routes[0].mcp.rules[1].allowedClients: must not be empty (AgentCore requires at least one entry): list values, or remove the key",
            "16:11: routes[0].mcp.rules[1].typo: unknown key (expected one of: match, allowedScopes, allowedClients, customClaims, deny)",
        ]
    );
}

#[test]
fn only_on_mcp_routes_and_not_both() {
    let yaml = "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    authorizerType: NONE\n    upstream: { url: \"http://127.0.0.1:9000\" }\n    mcp: { rules: [], cedar: { policies: p.cedar } }\n";
    assert_eq!(
        errors(yaml),
        [
            "6:5: routes[0].mcp: only an MCP route (protocol: MCP) carries JSON-RPC messages to decide on: remove mcp, or set protocol: MCP",
            "6:23: routes[0].mcp.cedar: rules and cedar are alternatives: decide with one of them (Cedar policies can express every rule)",
        ]
    );
}

#[test]
fn cedar_files_are_parsed_and_errors_located_in_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.cedar"),
        "permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::\"get_weather\", resource);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource);\n\n  forbid(principal action, resource);\n",
    )
    .unwrap();
    let ok = route(
        "cedar: { policies: good.cedar, resource: \"arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw\" }",
    );
    assert!(load_in(&ok, dir.path()).is_ok());

    let bad = route("cedar: { policies: [good.cedar, bad.cedar, missing.cedar] }");
    let diagnostics = load_in(&bad, dir.path()).unwrap_err();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].file, "t.yaml");
    assert!(
        diagnostics[0].message.contains("missing.cedar"),
        "{diagnostics:#?}"
    );

    let bad = route("cedar: { policies: [good.cedar, bad.cedar] }");
    let diagnostics = load_in(&bad, dir.path()).unwrap_err();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert!(d.file.ends_with("bad.cedar"), "{d}");
    assert_eq!((d.line, d.column), (3, 20), "{d}");
    assert!(d.message.starts_with("Cedar: "), "{d}");
}
