//! The `gatehouse` binary's commands, as a user runs them: `validate` (exit codes and
//! `FILE:LINE:COL: message`), `token` (a token the dev tools verify), `dev --print-config`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::Command;

fn gatehouse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .unwrap()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn validate_accepts_the_examples_and_summarises_routes() {
    let mut seen = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        // Configurations only: `config/policies/` holds the Cedar files they name.
        if !path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            continue;
        }
        seen += 1;
        let out = gatehouse(&["validate", "--config", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.lines().all(|l| l.starts_with("route ")), "{stdout}");
        assert!(!stdout.is_empty());
    }
    assert!(
        seen >= 5,
        "only {seen} example configurations found in config/"
    );
}

#[test]
fn validate_reports_every_error_with_its_location() {
    let config = file(
        r#"listen: 127.0.0.1:8080
routes:
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: https://idp.example/openid
        allowedClients: [a]
    requestHeaderAllowlist: [X-Amz-Date]
    upstream: { url: "http://127.0.0.1:9000", uri: x }
"#,
    );
    let path = config.path().to_str().unwrap();
    let out = gatehouse(&["validate", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with(path)).collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with(&format!("{path}:6:23: ")) && l.contains("discoveryUrl")),
        "{stderr}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with(&format!("{path}:8:30: ")) && l.contains("x-amz-")),
        "{stderr}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with(&format!("{path}:9:47: ")) && l.contains("unknown key")),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix them and run `gatehouse validate"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_broken_config_and_says_why() {
    let config = file("listen: nowhere\nroutes: []\n");
    let out = gatehouse(&["serve", "--config", config.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:9: "));
}

#[test]
fn token_mints_from_a_pem_key() {
    let out = gatehouse(&[
        "token",
        "--key",
        "tests/fixtures/keys/ecp256.pkcs8.pem",
        "--iss",
        "https://idp.example",
        "--client-id",
        "c1",
        "--scope",
        "invoke",
        "--aud",
        "a1",
        "--aud",
        "a2",
        "--ttl",
        "10m",
        "--claim",
        "groups=[\"x\",\"y\"]",
        "--claim",
        "tenant=acme",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    let jwk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/keys/ecp256.jwk.json").unwrap(),
    )
    .unwrap();
    let mut public = jwk.clone();
    public.as_object_mut().unwrap().remove("d");
    let key =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(public).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["a1"]);
    validation.set_issuer(&["https://idp.example"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap();
    let claims = data.claims;
    assert_eq!(claims["client_id"], "c1");
    assert_eq!(claims["aud"], serde_json::json!(["a1", "a2"]));
    assert_eq!(claims["groups"], serde_json::json!(["x", "y"]));
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    let missing = gatehouse(&["token", "--key", "tests/fixtures/keys/ecp256.pkcs8.pem"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--iss"));
}

#[test]
fn token_dev_without_a_running_dev_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["token", "--dev"])
        .env(
            "GATEHOUSE_DEV_STATE",
            "/nonexistent/gatehouse-dev/state.json",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("start it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_config_is_a_valid_configuration() {
    let out = gatehouse(&["dev", "--print-config", "--port", "18181"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = file(&String::from_utf8(out.stdout).unwrap());
    let check = gatehouse(&["validate", "--config", config.path().to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("route echo HTTP /runtimes/echo/invocations auth=CUSTOM_JWT")
    );
}

#[test]
fn every_command_has_help() {
    for command in ["serve", "validate", "dev", "token"] {
        let out = gatehouse(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{command}"
        );
    }
}
