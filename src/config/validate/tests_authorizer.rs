//! `customJwtAuthorizer` rules (AgentCore's model plus gatehouse's own), asserted with their
//! locations.

use super::super::testutil::{errors, warnings};

/// One route whose authorizer block is `block`, indented under the spelling `key`. Line 7 is
/// the block's first line, at column 9.
fn authorizer(key: &str, block: &str) -> String {
    let body: String = super::super::testutil::dedent(block)
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    format!(
        "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    upstream: {{ url: \"http://127.0.0.1:9000\" }}\n    authorizerConfiguration:\n      {key}:\n{body}"
    )
}

const DISCOVERY: &str = "discoveryUrl: https://idp.example.com/.well-known/openid-configuration";

#[test]
fn a_pasted_agentcore_block_loads() {
    let yaml = authorizer(
        "customJWTAuthorizer",
        &format!(
            "
            {DISCOVERY}
            allowedClients: [1abc2def3ghi]
            allowedAudience: [api://edge]
            allowedScopes: [invoke, api://edge/read]
            customClaims:
              - inboundTokenClaimName: cognito:groups
                inboundTokenClaimValueType: STRING_ARRAY
                authorizingClaimMatchValue:
                  claimMatchOperator: CONTAINS_ANY
                  claimMatchValue: {{ matchValueStringList: [support, admin] }}
              - inboundTokenClaimName: tenant
                inboundTokenClaimValueType: STRING
                authorizingClaimMatchValue:
                  claimMatchOperator: EQUALS
                  claimMatchValue: {{ matchValueString: acme }}
            advertisedScopeMapping: {{ invoke: \"api://edge/invoke\" }}
            "
        ),
    );
    assert_eq!(warnings(&yaml), Vec::<String>::new());
}

#[test]
fn discovery_url() {
    let cases = [
        (
            "discoveryUrl: https://idp.example.com/oauth2",
            "7:23: routes[0].authorizerConfiguration.customJwtAuthorizer.discoveryUrl: must end with /.well-known/openid-configuration (got \"https://idp.example.com/oauth2\"): use the issuer's OpenID Connect discovery URL",
        ),
        (
            "discoveryUrl: /.well-known/openid-configuration",
            "7:23: routes[0].authorizerConfiguration.customJwtAuthorizer.discoveryUrl: must end with /.well-known/openid-configuration (got \"/.well-known/openid-configuration\"): use the issuer's OpenID Connect discovery URL",
        ),
        (
            "discoveryUrl: http://idp.example.com/.well-known/openid-configuration",
            "7:23: routes[0].authorizerConfiguration.customJwtAuthorizer.discoveryUrl: must use https (got \"http://idp.example.com/.well-known/openid-configuration\"): keys fetched over plain http could be forged; http is allowed only for loopback hosts (127.0.0.1, ::1, localhost)",
        ),
        (
            "discoveryUrl: idp.example.com/.well-known/openid-configuration",
            "7:23: routes[0].authorizerConfiguration.customJwtAuthorizer.discoveryUrl: \"idp.example.com/.well-known/openid-configuration\" is not an absolute http(s) URL: write it like https://host[:port][/path]",
        ),
        (
            "discoveryUrl: \"\"",
            "7:23: routes[0].authorizerConfiguration.customJwtAuthorizer.discoveryUrl: discoveryUrl is required: the issuer's OpenID Connect discovery URL, ending in /.well-known/openid-configuration",
        ),
        (
            "allowedAudience: [x]",
            "7:9: routes[0].authorizerConfiguration.customJwtAuthorizer: discoveryUrl is required: the issuer's OpenID Connect discovery URL, ending in /.well-known/openid-configuration",
        ),
    ];
    for (line, expected) in cases {
        let block = if line.starts_with("allowed") {
            line.to_owned()
        } else {
            format!("{line}\nallowedClients: [c]")
        };
        assert_eq!(
            errors(&authorizer("customJwtAuthorizer", &block)),
            [expected]
        );
    }
    for loopback in ["127.0.0.1:8081", "localhost", "[::1]:9000", "127.1.2.3"] {
        let block = format!(
            "discoveryUrl: http://{loopback}/.well-known/openid-configuration\nallowedClients: [c]"
        );
        assert!(
            errors(&authorizer("customJwtAuthorizer", &block)).is_empty(),
            "{loopback}"
        );
    }
}

#[test]
fn at_least_one_check_and_non_empty_lists() {
    assert_eq!(
        errors(&authorizer("customJWTAuthorizer", DISCOVERY)),
        [
            "7:9: routes[0].authorizerConfiguration.customJWTAuthorizer: needs at least one of allowedAudience, allowedClients, allowedScopes or customClaims (as in AgentCore): otherwise any token from the issuer would be accepted"
        ]
    );
    let yaml = authorizer(
        "customJwtAuthorizer",
        &format!(
            "{DISCOVERY}\nallowedAudience: []\nallowedClients: [\"\"]\nallowedScopes: []\ncustomClaims: []"
        ),
    );
    let prefix = "routes[0].authorizerConfiguration.customJwtAuthorizer";
    let empty =
        "must not be empty (AgentCore requires at least one entry): list values, or remove the key";
    assert_eq!(
        errors(&yaml),
        [
            format!("8:26: {prefix}.allowedAudience: {empty}"),
            format!("9:26: {prefix}.allowedClients[0]: must not be an empty string"),
            format!("10:24: {prefix}.allowedScopes: {empty}"),
            format!("11:23: {prefix}.customClaims: {empty}"),
        ]
    );
}

#[test]
fn scopes_and_advertised_mapping() {
    let yaml = authorizer(
        "customJwtAuthorizer",
        &format!(
            "
            {DISCOVERY}
            allowedScopes: [invoke, \"two words\", \"back\\\\slash\"]
            advertisedScopeMapping:
              invoke: \"api://edge/invoke\"
              other: x
              read: \"has space\"
            "
        ),
    );
    let prefix = "routes[0].authorizerConfiguration.customJwtAuthorizer";
    assert_eq!(
        errors(&yaml),
        [
            format!(
                "8:33: {prefix}.allowedScopes[1]: \"two words\" is not a valid scope: 1 to 255 printable ASCII characters without spaces, '\"' or '\\'"
            ),
            format!(
                "8:46: {prefix}.allowedScopes[2]: \"back\\\\slash\" is not a valid scope: 1 to 255 printable ASCII characters without spaces, '\"' or '\\'"
            ),
            format!(
                "11:11: {prefix}.advertisedScopeMapping.other: \"other\" is not in allowedScopes: only allowed scopes can be advertised under another name; add it to allowedScopes or remove this entry"
            ),
            format!(
                "12:11: {prefix}.advertisedScopeMapping.read: \"read\" is not in allowedScopes: only allowed scopes can be advertised under another name; add it to allowedScopes or remove this entry"
            ),
            format!(
                "12:17: {prefix}.advertisedScopeMapping.read: \"has space\" is not a valid scope: 1 to 255 printable ASCII characters without spaces, '\"' or '\\'"
            ),
        ]
    );
    let yaml = authorizer(
        "customJwtAuthorizer",
        &format!("{DISCOVERY}\nallowedScopes: [invoke]\nadvertisedScopeMapping: {{}}"),
    );
    assert_eq!(
        errors(&yaml),
        [format!(
            "9:33: {prefix}.advertisedScopeMapping: must have 1 to 50 entries (got 0), as in AgentCore: map allowed scopes to the names to advertise, or remove the key"
        )]
    );
}

/// One custom claim: name, value type, operator, and the `claimMatchValue` flow mapping body.
fn claim(name: &str, value_type: &str, op: &str, value: &str) -> String {
    authorizer(
        "customJwtAuthorizer",
        &format!(
            "
            {DISCOVERY}
            customClaims:
              - inboundTokenClaimName: \"{name}\"
                inboundTokenClaimValueType: {value_type}
                authorizingClaimMatchValue:
                  claimMatchOperator: {op}
                  claimMatchValue: {{ {value} }}
            "
        ),
    )
}

#[test]
fn custom_claims() {
    let p = "routes[0].authorizerConfiguration.customJwtAuthorizer.customClaims[0]";
    let cases = [
        (
            claim("scp", "STRING", "EQUALS", "matchValueString: x"),
            format!(
                "9:36: {p}.inboundTokenClaimName: Custom claim name can't be 'scp'. Please configure claims in the allowed_scopes field"
            ),
        ),
        (
            claim("has space", "STRING", "EQUALS", "matchValueString: x"),
            format!(
                "9:36: {p}.inboundTokenClaimName: \"has space\" is not a valid claim name: 1 to 255 letters, digits, '_', '.', '-' or ':'"
            ),
        ),
        (
            claim("tenant", "NUMBER", "EQUALS", "matchValueString: x"),
            format!(
                "10:41: {p}.inboundTokenClaimValueType: must be \"STRING\" or \"STRING_ARRAY\" (got \"NUMBER\")"
            ),
        ),
        (
            claim("tenant", "STRING", "LIKE", "matchValueString: x"),
            format!(
                "12:35: {p}.authorizingClaimMatchValue.claimMatchOperator: must be \"EQUALS\", \"CONTAINS\" or \"CONTAINS_ANY\" (got \"LIKE\")"
            ),
        ),
        (
            claim("tenant", "STRING", "CONTAINS", "matchValueString: x"),
            format!(
                "12:35: {p}.authorizingClaimMatchValue.claimMatchOperator: a STRING claim is compared with EQUALS (got CONTAINS): use EQUALS, or inboundTokenClaimValueType: STRING_ARRAY for a list claim"
            ),
        ),
        (
            claim("groups", "STRING_ARRAY", "EQUALS", "matchValueString: x"),
            format!(
                "12:35: {p}.authorizingClaimMatchValue.claimMatchOperator: a STRING_ARRAY claim is matched with CONTAINS or CONTAINS_ANY (got EQUALS): use one of those, or inboundTokenClaimValueType: STRING"
            ),
        ),
        (
            claim(
                "groups",
                "STRING_ARRAY",
                "CONTAINS",
                "matchValueString: x, matchValueStringList: [y]",
            ),
            format!(
                "13:32: {p}.authorizingClaimMatchValue.claimMatchValue: set exactly one of matchValueString (EQUALS, CONTAINS) and matchValueStringList (CONTAINS_ANY)"
            ),
        ),
        (
            claim("groups", "STRING_ARRAY", "CONTAINS", ""),
            format!(
                "13:32: {p}.authorizingClaimMatchValue.claimMatchValue: set exactly one of matchValueString (EQUALS, CONTAINS) and matchValueStringList (CONTAINS_ANY)"
            ),
        ),
        (
            claim(
                "groups",
                "STRING_ARRAY",
                "CONTAINS_ANY",
                "matchValueString: x",
            ),
            format!(
                "13:34: {p}.authorizingClaimMatchValue.claimMatchValue.matchValueString: CONTAINS_ANY takes a list: write matchValueStringList: [...] instead"
            ),
        ),
        (
            claim(
                "groups",
                "STRING_ARRAY",
                "CONTAINS",
                "matchValueStringList: [x]",
            ),
            format!(
                "13:34: {p}.authorizingClaimMatchValue.claimMatchValue.matchValueStringList: CONTAINS takes one value: write matchValueString: ... instead"
            ),
        ),
        (
            claim(
                "groups",
                "STRING_ARRAY",
                "CONTAINS_ANY",
                "matchValueStringList: []",
            ),
            format!(
                "13:56: {p}.authorizingClaimMatchValue.claimMatchValue.matchValueStringList: must list at least one value"
            ),
        ),
        (
            claim("tenant", "STRING", "EQUALS", "matchValueString: \"\""),
            format!(
                "13:52: {p}.authorizingClaimMatchValue.claimMatchValue.matchValueString: must be 1 to 255 characters"
            ),
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(errors(&yaml), [expected]);
    }
    for ok in [
        claim(
            "cognito:groups",
            "STRING_ARRAY",
            "CONTAINS",
            "matchValueString: admin",
        ),
        claim("tenant", "STRING", "EQUALS", "matchValueString: acme"),
    ] {
        assert_eq!(warnings(&ok), Vec::<String>::new());
    }
    assert_eq!(
        warnings(&claim(
            "email",
            "STRING",
            "EQUALS",
            "matchValueString: \"a@example.com\""
        )),
        [format!(
            "13:34: {p}.authorizingClaimMatchValue.claimMatchValue.matchValueString: \"a@example.com\" has characters AgentCore would reject (it allows letters, digits, '_', '.' and '-'); gatehouse accepts it"
        )]
    );
}

#[test]
fn aws_only_fields() {
    let yaml = authorizer(
        "customJwtAuthorizer",
        &format!(
            "
            {DISCOVERY}
            allowedClients: [c]
            privateEndpointOverrides: [{{ domain: idp.internal }}]
            allowedWorkloadConfiguration: {{ workloadIdentities: [gw] }}
            "
        ),
    );
    assert_eq!(
        errors(&yaml),
        [
            "10:9: routes[0].authorizerConfiguration.customJwtAuthorizer.allowedWorkloadConfiguration: gatehouse cannot verify AgentCore workload identities, so this restriction could not be enforced: remove it (and restrict callers with allowedClients or customClaims)"
        ]
    );
    let yaml = authorizer(
        "customJwtAuthorizer",
        &format!("{DISCOVERY}\nallowedClients: [c]\nprivateEndpointOverrides: []"),
    );
    assert_eq!(
        warnings(&yaml),
        [
            "9:9: routes[0].authorizerConfiguration.customJwtAuthorizer.privateEndpointOverrides: is ignored: it tells AWS how to reach a private identity provider; gatehouse fetches discovery and keys directly over its own network"
        ]
    );
}

#[test]
fn both_spellings_at_once() {
    let yaml = format!(
        "{}      customJWTAuthorizer: {{ {DISCOVERY}, allowedClients: [c] }}\n",
        authorizer(
            "customJwtAuthorizer",
            &format!("{DISCOVERY}\nallowedClients: [c]")
        )
    );
    assert_eq!(
        errors(&yaml),
        [
            "9:7: routes[0].authorizerConfiguration: has both customJwtAuthorizer and customJWTAuthorizer: they are two spellings of the same block; keep one"
        ]
    );
}
