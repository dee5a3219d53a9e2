//! Loader tests: unknown keys, type and syntax errors, substitution, hostile input, and the
//! example configurations under `config/`.

use std::fs;
use std::path::Path;

use super::testutil::{dedent, env, errors, load};
use super::{MAX_CONFIG_BYTES, load_path, load_str};

const ROUTE: &str = "routes:\n  - name: a\n    authorizerType: NONE\n    upstream: { url: \"http://127.0.0.1:9000\" }\n";

#[test]
fn diagnostics_display_as_file_line_column() {
    let text = format!("listen: x\n{ROUTE}");
    let err = load_str("edge.yaml", &text, Path::new("."), &env).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "edge.yaml:1:9: listen: \"x\" is not a listen address: write ip:port, [ipv6]:port or localhost:port (e.g. 0.0.0.0:8080)"
    );
}

#[test]
fn every_unknown_key_is_reported() {
    let yaml = "
        listen: 127.0.0.1:8080
        listn: 0.0.0.0:80
        limits: { request_timeout: 1s }
        routes:
          - name: a
            authorizerType: NONE
            upstream: { url: \"http://127.0.0.1:9000\" }
          - name: b
            upstream: { uri: \"http://127.0.0.1:9000\" }
            authorizerConfiguration:
              customJWTAuthorizer:
                discoveryUrl: https://idp.example.com/.well-known/openid-configuration
                allowedClient: [c]
                customClaims:
                  - inboundTokenClaimName: g
                    inboundTokenClaimValueType: STRING
                    authorizingClaimMatchValue:
                      claimMatchOperator: EQUALS
                      claimMatchValue: { matchValue: x }
                      extra: 1
            zzzzzz: true
    ";
    let route_keys = super::schema::fields(super::schema::Struct::Route).join(", ");
    let authorizer = "routes[1].authorizerConfiguration.customJWTAuthorizer";
    let matcher = format!("{authorizer}.customClaims[0].authorizingClaimMatchValue");
    assert_eq!(
        errors(yaml),
        [
            "2:1: listn: unknown key (expected one of: listen, publicUrl, tls, admin, shutdownGracePeriod, trustForwardedHeaders, watchConfig, limits, jwt, telemetry, cors, quotas, routes); did you mean \"listen\"?".to_owned(),
            "3:11: limits.request_timeout: unknown key (expected one of: maxRequestHeaderBytes, maxRequestBodyBytes, requestTimeout, streamIdleTimeout, headerReadTimeout, maxConnections, authFailuresPerIp); did you mean \"requestTimeout\"?".to_owned(),
            // The rules still run: without its url, the upstream has no form.
            "9:15: routes[1].upstream: needs exactly one of url, urls or agentRuntimeArn (e.g. url: http://127.0.0.1:8080)".to_owned(),
            "9:17: routes[1].upstream.uri: unknown key (expected one of: url, urls, path, agentRuntimeArn, region, qualifier, endpointUrl, connectTimeout, http2); did you mean \"url\"?".to_owned(),
            format!("13:9: {authorizer}.allowedClient: unknown key (expected one of: discoveryUrl, allowedClients, allowedAudience, allowedScopes, customClaims, advertisedScopeMapping, privateEndpoint, privateEndpointOverrides, allowedWorkloadConfiguration); did you mean \"allowedClients\"?"),
            format!("19:32: {matcher}.claimMatchValue: set exactly one of matchValueString (EQUALS, CONTAINS) and matchValueStringList (CONTAINS_ANY)"),
            format!("19:34: {matcher}.claimMatchValue.matchValue: unknown key (expected one of: matchValueString, matchValueStringList)"),
            format!("20:15: {matcher}.extra: unknown key (expected one of: claimMatchOperator, claimMatchValue)"),
            format!("21:5: routes[1].zzzzzz: unknown key (expected one of: {route_keys})"),
        ]
    );
}

#[test]
fn unknown_keys_and_a_type_error_are_reported_together() {
    let yaml = format!(
        "{}{ROUTE}",
        dedent(
            "
            listen: 127.0.0.1:8080
            limits: { requestTimeout: 30 }
            telemetry: { samplin: 1 }
        "
        )
    );
    assert_eq!(
        errors(&yaml),
        [
            "2:27: limits.requestTimeout: duration 30 has no unit: write it as a string like \"30s\" or \"30ms\"",
            "3:14: telemetry.samplin: unknown key (expected one of: serviceName, otlp, sampling, accessLog, serverTiming, enduserId); did you mean \"sampling\"?",
        ]
    );
}

#[test]
fn type_errors_name_their_path() {
    let with_route = |block: &str| format!("{}{ROUTE}", dedent(block));
    assert_eq!(
        errors(&with_route(
            "listen: 127.0.0.1:8080\nlimits: { maxRequestBodyBytes: 12XB }"
        )),
        [
            "2:32: limits.maxRequestBodyBytes: size \"12XB\" has unknown unit \"XB\": use B, KB, MB, GB, KiB, MiB or GiB"
        ]
    );
    assert_eq!(
        errors(&with_route(
            "listen: 127.0.0.1:8080\ntelemetry: { sampling: lots }"
        )),
        ["2:24: telemetry.sampling: expected a number (e.g. 0.5)"]
    );
    assert_eq!(
        errors(&with_route(
            "listen: 127.0.0.1:8080\nlimits: { maxConnections: -1 }"
        )),
        ["2:27: limits.maxConnections: expected a whole number that fits in u32"]
    );
    assert_eq!(
        errors(&with_route(
            "listen: 127.0.0.1:8080\ntls: { certFile: a.pem }"
        )),
        ["2:6: tls: missing required key `keyFile`: add it"]
    );
    assert_eq!(
        errors("listen: 127.0.0.1:8080\nroutes: { name: a }\n"),
        ["2:9: routes: expected sequence start"]
    );
    assert_eq!(errors("- listen\n"), ["1:1: expected mapping start"]);
    // A mapping used as a key: serde's type error, not an unknown key "?".
    assert_eq!(errors("? [a, b]\n: c\n"), ["1:3: expected string scalar"]);
}

#[test]
fn syntax_errors_are_located() {
    assert_eq!(
        errors("listen: 127.0.0.1:8080\nroutes: [\n"),
        ["2:9: YAML syntax error: unclosed bracket '['"]
    );
    assert_eq!(
        errors("listen: a\nlisten: b\n"),
        ["2:1: duplicate mapping key: listen, set DuplicateKeyPolicy in Options if acceptable"]
    );
    let two_docs = format!("listen: 127.0.0.1:8080\n{ROUTE}---\nlisten: x\n");
    assert_eq!(errors(&two_docs).len(), 1, "{:?}", errors(&two_docs));
}

#[test]
fn substitution() {
    let yaml =
        format!("listen: ${{NOPE}}\npublicUrl: https://${{HOST}}/ ${{ALSO_NOPE:-}}\n{ROUTE}");
    assert_eq!(
        errors(&yaml),
        [
            "1:9: environment variable NOPE is not set: set it, or give a default with ${NOPE:-value}",
        ]
    );
    // After substitution, later columns on the same line still point into the original text.
    let yaml = format!("listen: 127.0.0.1:8080\npublicUrl: https://${{HOST}}/x?$$y\n{ROUTE}");
    assert_eq!(
        errors(&yaml),
        ["2:12: publicUrl: \"https://idp.example.com/x?$y\" has a query (?...): remove it"]
    );
    let yaml = format!(
        "listen: 127.0.0.1:8080\ntelemetry: {{ serviceName: \"${{EMPTY:-edge}}\", accessLog: nope }}\n{ROUTE}"
    );
    assert_eq!(
        errors(&yaml),
        ["2:56: telemetry.accessLog: must be \"stdout\" or \"off\" (got \"nope\")"]
    );
}

#[test]
fn json_is_yaml() {
    let json = r#"{
      "listen": ["127.0.0.1:8080"],
      "routes": [{"name": "a", "authorizerType": "NONE", "upstream": {"url": "http://127.0.0.1:9000"}, "bogus": 1}]
    }"#;
    let errs = errors(json);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("3:104: routes[0].bogus: unknown key"),
        "{}",
        errs[0]
    );
}

#[test]
fn anchors_and_merges_work_and_are_checked() {
    let yaml = "
        listen: 127.0.0.1:8080
        routes:
          - &base
            name: a
            authorizerType: NONE
            upstream: { url: \"http://127.0.0.1:9000\" }
          - <<: *base
            name: b
    ";
    let loaded = load(yaml).unwrap();
    assert_eq!(loaded.config.routes[1].name, "b");
    assert_eq!(
        loaded.config.routes[1].authorizer_type.as_deref(),
        Some("NONE")
    );

    let yaml = "
        listen: 127.0.0.1:8080
        x-defaults: &d { authorizerType: NONE, upstream: { url: \"http://127.0.0.1:9000\" }, typo: 1 }
        routes:
          - <<: *d
            name: a
    ";
    assert_eq!(
        errors(yaml),
        [
            "2:1: x-defaults: unknown key (expected one of: listen, publicUrl, tls, admin, shutdownGracePeriod, trustForwardedHeaders, watchConfig, limits, jwt, telemetry, cors, quotas, routes)",
            "4:5: routes[0].typo: unknown key (expected one of: name, protocol, path, arn, authorizerType, authorizerConfiguration, requestHeaderAllowlist, userIdClaim, claimsToHeaders, claimsToBaggage, jwt, upstream, cors, defaultResource, sessionBinding, keepAlive, quotas, outboundAuth, mcp)",
        ]
    );
}

#[test]
fn hostile_input_is_refused_clearly() {
    let check = |text: &str, expected: &str| {
        let errs = match load_str("t.yaml", text, Path::new("."), &env) {
            Ok(_) => panic!("loaded"),
            Err(errs) => errs,
        };
        assert!(
            errs.iter().any(|e| e.to_string().contains(expected)),
            "{expected}: {errs:#?}"
        );
    };
    // An alias bomb: nine levels of nine-fold aliases.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("listen: *a8\n");
    check(&bomb, "refused: ");
    check(&"[".repeat(10_000), "YAML syntax error");
    check(
        &format!("listen: {}\n", "a".repeat(MAX_CONFIG_BYTES)),
        "larger than 4 MiB",
    );
    check("listen: a\0b\n", "t.yaml:1:10: the file contains NUL bytes");
    check("\u{1}\u{2}\u{3}\n", "YAML syntax error");
    check(
        &format!("listen: [{}]\n", "1,".repeat(100_001)),
        "more than 100000 YAML values",
    );
}

#[test]
fn load_path_reads_files_and_refuses_bad_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("edge.yaml");
    fs::write(&good, format!("\u{feff}listen: 127.0.0.1:8080\n{ROUTE}")).unwrap();
    let loaded = load_path(&good).unwrap();
    assert_eq!(loaded.base_dir, dir.path());

    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, b"listen: 127.0.0.1:8080\nx: \xff\xfe\n").unwrap();
    let errs = load_path(&bad).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        format!(
            "{}:2:4: the file is not valid UTF-8: save it as UTF-8 (YAML and JSON are text)",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let errs = load_path(&missing).unwrap_err();
    assert!(
        errs[0]
            .message
            .starts_with("cannot read the configuration file: ")
    );

    let big = dir.path().join("big.yaml");
    fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES + 1]).unwrap();
    assert!(
        load_path(&big).unwrap_err()[0]
            .message
            .contains("larger than 4 MiB")
    );
}

#[test]
fn an_empty_file_says_what_is_missing() {
    assert_eq!(
        errors(""),
        [
            "1:1: listen: at least one listener is required: add listen: 0.0.0.0:8080 (or a list of addresses)",
            "1:1: routes: at least one route is required: add one under routes",
        ]
    );
}

/// Every example under `config/` must load (with only the defaults of its `${VAR:-...}`).
#[test]
fn example_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        match load_str(&name, &text, &dir, &|_| None) {
            Ok(loaded) => assert!(loaded.warnings.is_empty(), "{name}: {:#?}", loaded.warnings),
            Err(errs) => panic!(
                "{name} does not load:\n{}",
                errs.iter().map(|e| format!("{e}\n")).collect::<String>()
            ),
        }
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the example configs in {}",
        dir.display()
    );
}

/// `config/full.yaml` is the commented reference: it must show every key, except the few it
/// can only show in comments (files that must exist, blocks that warn or fail).
#[test]
fn full_example_shows_every_key() {
    use super::schema::{ALL, Struct, fields, keys_written};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/full.yaml");
    let text = fs::read_to_string(path).unwrap();
    let (text, map) = super::env::substitute(&text, &|_| None).unwrap();
    let index = super::locate::Index::build(&text, map).unwrap();
    let written = keys_written(&index);
    let commented_out = [
        (Struct::Root, "tls"),
        (Struct::AuthorizerConfiguration, "customJWTAuthorizer"),
        (Struct::CustomJwt, "privateEndpoint"),
        (Struct::CustomJwt, "privateEndpointOverrides"),
        (Struct::CustomJwt, "allowedWorkloadConfiguration"),
        (Struct::SessionBinding, "key"),
        // rules and cedar are alternatives; config/mcp-cedar.yaml shows cedar.
        (Struct::Mcp, "cedar"),
        (Struct::Cedar, "policies"),
        (Struct::Cedar, "resource"),
    ];
    let mut missing = Vec::new();
    for s in ALL {
        if s == Struct::Tls {
            continue;
        }
        for key in fields(s) {
            let shown = written.iter().any(|(ws, wk)| *ws == s && wk == key);
            if !shown && !commented_out.contains(&(s, *key)) {
                missing.push(format!("{s:?}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/full.yaml does not show: {missing:?}"
    );
}

/// Thousands of routes and list entries: rules that compare entries use maps, not pairwise
/// scans, so this stays fast; and past the limit, problems are counted rather than listed.
#[test]
fn large_files_stay_linear_and_reports_are_bounded() {
    let mut yaml = String::from("listen: 127.0.0.1:8080\nroutes:\n");
    for i in 0..5_000 {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, authorizerType: NONE, upstream: {{ url: \"http://127.0.0.1:9000\" }} }}\n"
        ));
    }
    assert!(load_str("t.yaml", &yaml, Path::new("."), &env).is_ok());

    let bad: String = (0..1_000).map(|i| format!("X-Amz-{i}, ")).collect();
    let yaml = format!(
        "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    authorizerType: NONE\n    upstream: {{ url: \"http://127.0.0.1:9000\" }}\n    requestHeaderAllowlist: [{bad}]\n"
    );
    let errs = load_str("t.yaml", &yaml, Path::new("."), &env).unwrap_err();
    assert_eq!(errs.len(), super::validate::MAX_ERRORS + 1);
    assert_eq!(
        errs.last().unwrap().to_string(),
        "t.yaml:1:1: 501 more problems are not shown: fix the ones above and run again"
    );
}
