//! Every edge-wide rule, with its message and location asserted (routes: `tests_route.rs`,
//! authorizers: `tests_authorizer.rs`).

use std::fs;

use super::super::testutil::{dedent, errors, load_in, warnings};

/// A valid route, appended after the edge-wide keys under test.
const ROUTES: &str = "routes:\n  - name: a\n    authorizerType: NONE\n    upstream: { url: \"http://127.0.0.1:9000\" }\n";

/// The edge-wide block followed by [`ROUTES`]: line numbers in the block stay as written.
fn top(block: &str) -> String {
    format!("{}{ROUTES}", dedent(block))
}

#[test]
fn a_minimal_file_loads() {
    assert_eq!(errors(&top("listen: 127.0.0.1:8080")), Vec::<String>::new());
}

#[test]
fn listen() {
    assert_eq!(
        errors(ROUTES),
        [
            "1:1: listen: at least one listener is required: add listen: 0.0.0.0:8080 (or a list of addresses)"
        ]
    );
    assert_eq!(
        errors(&top("listen: example.com:80")),
        [
            "1:9: listen: \"example.com:80\" is not a listen address: write ip:port, [ipv6]:port or localhost:port (e.g. 0.0.0.0:8080)"
        ]
    );
    assert_eq!(
        errors(&top(
            "listen: [\"0.0.0.0:8080\", \"[::1]:8443\", localhost:8080, 8080]"
        )),
        [
            "1:40: listen[2]: localhost:8080 overlaps the listener 0.0.0.0:8080 above: remove one",
            "1:56: listen[3]: \"8080\" is not a listen address: write ip:port, [ipv6]:port or localhost:port (e.g. 0.0.0.0:8080)",
        ]
    );
}

#[test]
fn admin_listen() {
    assert_eq!(
        errors(&top(
            "listen: 0.0.0.0:8080\nadmin: { listen: 127.0.0.1:8080 }"
        )),
        [
            "2:18: admin.listen: 127.0.0.1:8080 overlaps the public listener 0.0.0.0:8080: /metrics and the health checks must never be served on the public listener; use another port"
        ]
    );
    assert_eq!(
        errors(&top("listen: 0.0.0.0:8080\nadmin:\n  listen: nope")),
        [
            "3:11: admin.listen: \"nope\" is not a listen address: write ip:port, [ipv6]:port or localhost:port (e.g. 0.0.0.0:8080)"
        ]
    );
    assert_eq!(
        errors(&top(
            "listen: 0.0.0.0:8080\nadmin: { listen: 127.0.0.1:9901 }"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn public_url() {
    let cases = [
        (
            "publicUrl: agents.example.com",
            "2:12: publicUrl: \"agents.example.com\" is not an absolute http(s) URL: write it like https://host[:port][/path]",
        ),
        (
            "publicUrl: ftp://agents.example.com",
            "2:12: publicUrl: \"ftp://agents.example.com\" has scheme \"ftp\": only http and https URLs are supported",
        ),
        (
            "publicUrl: https://agents.example.com/?x=1",
            "2:12: publicUrl: \"https://agents.example.com/?x=1\" has a query (?...): remove it",
        ),
        (
            "publicUrl: https://agents.example.com#top",
            "2:12: publicUrl: \"https://agents.example.com#top\" has a fragment (#...): remove it",
        ),
        (
            "publicUrl: https://agents.example.com/",
            "2:12: publicUrl: must not end with \"/\" (got \"https://agents.example.com/\"): write \"https://agents.example.com\"; route paths are appended to it",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(
            errors(&top(&format!("listen: 127.0.0.1:8080\n{line}"))),
            [expected]
        );
    }
    assert!(
        errors(&top(
            "listen: 127.0.0.1:8080\npublicUrl: https://x.example.com/edge"
        ))
        .is_empty()
    );
}

#[test]
fn tls_files_are_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    fs::write(dir.path().join("certs/edge.pem"), cert).unwrap();
    fs::write(dir.path().join("certs/edge.key"), key).unwrap();
    fs::write(dir.path().join("certs/empty.pem"), "nothing here\n").unwrap();
    fs::write(
        dir.path().join("certs/bad.pem"),
        "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let load = |tls: &str| -> Vec<String> {
        let yaml = top(&format!("listen: 127.0.0.1:8443\ntls:\n{tls}"));
        match load_in(&yaml, dir.path()) {
            Ok(_) => Vec::new(),
            Err(ds) => ds
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect(),
        }
    };
    assert_eq!(
        load("  certFile: certs/edge.pem\n  keyFile: certs/edge.key"),
        Vec::<String>::new()
    );

    let missing = load("  certFile: certs/nope.pem\n  keyFile: certs/edge.pem");
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(
        missing[0].starts_with("3:13: tls.certFile: cannot read "),
        "{}",
        missing[0]
    );
    assert!(
        missing[0].ends_with("relative paths are relative to the configuration file's directory")
    );
    assert_eq!(
        missing[1],
        "4:12: tls.keyFile: \"certs/edge.pem\" has no unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): give the certificate's key without a passphrase"
    );
    assert_eq!(
        load("  certFile: certs/empty.pem\n  keyFile: certs/edge.key"),
        [
            "3:13: tls.certFile: \"certs/empty.pem\" has no PEM certificate (-----BEGIN CERTIFICATE-----): give the certificate chain, leaf first"
        ]
    );
    let bad = load("  certFile: certs/bad.pem\n  keyFile: certs/edge.key");
    assert!(
        bad[0].starts_with("3:13: tls.certFile: \"certs/bad.pem\" is not valid PEM ("),
        "{bad:?}"
    );
}

#[test]
fn limits() {
    let yaml = top("
        listen: 127.0.0.1:8080
        limits:
          maxRequestHeaderBytes: 512
          maxRequestBodyBytes: 0
          requestTimeout: 0
          streamIdleTimeout: 0
          headerReadTimeout: 0s
          maxConnections: 0
    ");
    assert_eq!(
        errors(&yaml),
        [
            "3:26: limits.maxRequestHeaderBytes: must be between 1KiB and 1MiB (got 512 bytes); the default is 64KiB",
            "4:24: limits.maxRequestBodyBytes: must be greater than 0 (e.g. 100MB, AgentCore's payload limit)",
            "5:19: limits.requestTimeout: must be greater than 0 (e.g. \"15m\")",
            "7:22: limits.headerReadTimeout: must be greater than 0 (e.g. \"10s\")",
            "8:19: limits.maxConnections: must be greater than 0 (the default is 10000)",
        ]
    );
    assert_eq!(
        errors(&top(
            "listen: 127.0.0.1:8080\nlimits: { maxRequestHeaderBytes: 2MiB }"
        )),
        [
            "2:34: limits.maxRequestHeaderBytes: must be between 1KiB and 1MiB (got 2097152 bytes); the default is 64KiB"
        ]
    );
    assert!(
        errors(&top(
            "listen: 127.0.0.1:8080\nlimits: { maxRequestHeaderBytes: 1KiB }"
        ))
        .is_empty()
    );
}

#[test]
fn jwt_algorithms() {
    let yaml = top("
        listen: 127.0.0.1:8080
        jwt:
          algorithms: [RS256, HS256, none, rs384, XS1, RS256, EdDSA]
    ");
    assert_eq!(
        errors(&yaml),
        [
            "3:23: jwt.algorithms[1]: HS256 is never accepted: HMAC and none are rejected by design; remove it",
            "3:30: jwt.algorithms[2]: none is never accepted: HMAC and none are rejected by design; remove it",
            "3:36: jwt.algorithms[3]: unknown algorithm \"rs384\": did you mean RS384?",
            "3:43: jwt.algorithms[4]: unknown algorithm \"XS1\": use some of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
            "3:48: jwt.algorithms[5]: RS256 is listed twice: remove one",
        ]
    );
    assert_eq!(
        errors(&top("listen: 127.0.0.1:8080\njwt: { algorithms: [] }")),
        [
            "2:20: jwt.algorithms: must list at least one algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA), or be removed to accept all of them"
        ]
    );
}

#[test]
fn jwt_durations() {
    let yaml = top("
        listen: 127.0.0.1:8080
        jwt:
          clockSkew: 10m
          jwksRefreshInterval: 0
          jwksMinRefetchInterval: 0s
          maxKeyStaleness: 0
          jwksFetchTimeout: 0ms
          verifiedTokenCache: { maxEntries: 0 }
    ");
    assert_eq!(
        errors(&yaml),
        [
            "3:14: jwt.clockSkew: must be at most 5m (got 10m): a longer skew keeps expired tokens valid; fix the clocks instead (NTP)",
            "4:24: jwt.jwksRefreshInterval: must be greater than 0 (e.g. \"5m\")",
            "5:27: jwt.jwksMinRefetchInterval: must be greater than 0 (e.g. \"10s\")",
            "6:20: jwt.maxKeyStaleness: must be greater than 0 (e.g. \"24h\")",
            "7:21: jwt.jwksFetchTimeout: must be greater than 0 (e.g. \"5s\")",
        ]
    );
    assert!(errors(&top("listen: 127.0.0.1:8080\njwt: { clockSkew: 5m }")).is_empty());
    assert!(errors(&top("listen: 127.0.0.1:8080\njwt: { clockSkew: 0 }")).is_empty());
}

#[test]
fn telemetry() {
    let yaml = top("
        listen: 127.0.0.1:8080
        telemetry:
          serviceName: \"\"
          sampling: 1.5
          accessLog: file
          otlp:
            endpoint: 127.0.0.1:4317
            protocol: http
            timeout: 0
            headers: { \"bad header\": x, ok: \"a\\nb\" }
    ");
    assert_eq!(
        errors(&yaml),
        [
            "3:16: telemetry.serviceName: must not be empty: it names this edge in traces (default \"gatehouse\")",
            "4:13: telemetry.sampling: must be between 0 and 1 (got 1.5): 1 traces every request, 0.1 one in ten",
            "5:14: telemetry.accessLog: must be \"stdout\" or \"off\" (got \"file\")",
            "7:15: telemetry.otlp.endpoint: \"127.0.0.1:4317\" is not an absolute http(s) URL: write it like https://host[:port][/path] (e.g. http://127.0.0.1:4317)",
            "8:15: telemetry.otlp.protocol: must be \"grpc\" or \"http/protobuf\" (got \"http\")",
            "9:14: telemetry.otlp.timeout: must be greater than 0 (e.g. \"10s\")",
            "10:16: telemetry.otlp.headers[\"bad header\"]: \"bad header\" is not a valid header name",
            "10:37: telemetry.otlp.headers.ok: the value contains control characters (line breaks?): remove them",
        ]
    );
}

#[test]
fn cors() {
    let yaml = top("
        listen: 127.0.0.1:8080
        cors:
          allowedOrigins: [https://app.example.com, https://app.example.com/, https://app.example.com, http://localhost:3000]
          allowedHeaders: [X-Tenant, \"bad header\"]
    ");
    assert_eq!(
        errors(&yaml),
        [
            "3:45: cors.allowedOrigins[1]: \"https://app.example.com/\" is not an origin: write scheme://host[:port] with no path or trailing slash (e.g. https://app.example.com), or \"*\" for any origin",
            "3:71: cors.allowedOrigins[2]: https://app.example.com is listed twice: remove one",
            "4:30: cors.allowedHeaders[1]: \"bad header\" is not a valid header name: use letters, digits and -",
        ]
    );
    assert_eq!(
        errors(&top(
            "listen: 127.0.0.1:8080\ncors: { allowedOrigins: [\"*\", https://a.example.com] }"
        )),
        [
            "2:31: cors.allowedOrigins[1]: \"*\" already allows every origin: remove the other entries or the \"*\""
        ]
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = top("
        listen: nope
        publicUrl: https://x/
        limits: { requestTimeout: 0 }
        telemetry: { sampling: 2 }
    ");
    assert_eq!(errors(&yaml).len(), 4);
}

#[test]
fn a_warning_does_not_fail_the_load() {
    let yaml = "
        listen: 127.0.0.1:8080
        routes:
          - name: a
            upstream: { url: \"http://127.0.0.1:9000\" }
            authorizerConfiguration:
              customJwtAuthorizer:
                discoveryUrl: https://idp.example.com/.well-known/openid-configuration
                allowedClients: [c]
                privateEndpoint: { managedVpcResource: { vpcIdentifier: vpc-1 } }
    ";
    assert_eq!(
        warnings(yaml),
        [
            "9:9: routes[0].authorizerConfiguration.customJwtAuthorizer.privateEndpoint: is ignored: it tells AWS how to reach a private identity provider; gatehouse fetches discovery and keys directly over its own network"
        ]
    );
}
