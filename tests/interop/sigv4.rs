//! AgentCore Runtime with IAM auth: gatehouse signs with SigV4 and a fake data plane checks
//! every signature with botocore's own signer (tests/interop/agentcore_fake). Credentials come
//! from the real aws-config chain in the gatehouse process: environment variables, and a
//! shared-config profile whose `credential_process` hands out short-lived temporary
//! credentials (so refresh ahead of expiry is exercised).

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::support::*;

const ARN: &str =
    "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support_agent-AbCdEfGhIj";

fn route(idp: &Peer, fake: &Peer, arn: &str, qualifier: &str) -> String {
    format!(
        r#"
  - name: iam
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: {idp}/.well-known/openid-configuration
        allowedClients: [agent-client]
    requestHeaderAllowlist: [Authorization, X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant]
    userIdClaim: sub
    upstream:
      agentRuntimeArn: "{arn}"
      qualifier: {qualifier}
      endpointUrl: "{fake}"
"#,
        idp = idp.url,
        fake = fake.url
    )
}

/// No ambient AWS configuration leaks in from the machine running the tests.
fn isolated(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_CONFIG_FILE", "/nonexistent/gatehouse-test".to_owned()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/gatehouse-test".to_owned(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_PROFILE", "default".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    env
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn seen(fake: &Peer) -> Vec<Value> {
    http()
        .get(format!("{}/__requests", fake.url))
        .send()
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

fn assert_all_verified(fake: &Peer, n: usize) -> Vec<Value> {
    let seen = seen(fake);
    assert_eq!(seen.len(), n, "{seen:?}");
    for request in &seen {
        assert_eq!(
            request["ok"], true,
            "botocore refused a signature: {request}"
        );
    }
    seen
}

#[test]
fn signed_invocations_pass_botocore() {
    let idp = Peer::idp(&[]);
    let fake = Peer::agentcore_fake();
    let env = isolated(&[
        ("AWS_ACCESS_KEY_ID", "AKIDPLAINEXAMPLE".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "secret-AKIDPLAINEXAMPLE".to_owned(),
        ),
    ]);
    let edge = Gatehouse::start_with("", &route(&idp, &fake, ARN, "prod_v2"), &env_refs(&env));
    let url = format!("{}/runtimes/iam/invocations", edge.url);
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");

    // A small JSON body: hashed into the signature.
    let response = http()
        .post(&url)
        .bearer(&token)
        .header("x-amzn-bedrock-agentcore-runtime-custom-tenant", "acme")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"prompt": "hello"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["arn"], ARN);
    assert_eq!(echo["qualifier"], "prod_v2");
    assert_eq!(echo["payload"], json!({"prompt": "hello"}));
    assert_eq!(echo["unsignedPayload"], false);
    assert_eq!(echo["accessKey"], "AKIDPLAINEXAMPLE");
    let headers = &echo["headers"];
    let authorization = headers["authorization"].as_str().unwrap();
    assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPLAINEXAMPLE/"));
    assert!(authorization.contains("/us-east-1/bedrock-agentcore/aws4_request"));
    assert!(
        !authorization.contains(&token),
        "the caller's token reached AWS"
    );
    assert!(headers.get("x-amz-security-token").is_none());
    let session = headers["x-amzn-bedrock-agentcore-runtime-session-id"]
        .as_str()
        .unwrap();
    assert!(session.len() >= 33);
    assert_eq!(
        response.header("x-amzn-bedrock-agentcore-runtime-session-id"),
        Some(session)
    );
    assert_eq!(
        headers["x-amzn-bedrock-agentcore-runtime-user-id"],
        "agent-client"
    );
    assert_eq!(
        headers["x-amzn-bedrock-agentcore-runtime-custom-tenant"],
        "acme"
    );
    assert!(
        headers["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
    );

    // The client's session id is kept.
    let mine = "client-session-0123456789abcdef0123456789";
    let response = http()
        .post(&url)
        .bearer(&token)
        .header("x-amzn-bedrock-agentcore-runtime-session-id", mine)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json()["headers"]["x-amzn-bedrock-agentcore-runtime-session-id"],
        mine
    );

    // A body above the buffering bound streams through as UNSIGNED-PAYLOAD.
    let big = json!({"blob": "x".repeat(5 * 1024 * 1024)});
    let response = http().post(&url).bearer(&token).json(&big).send().unwrap();
    assert_eq!(response.status(), 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["unsignedPayload"], true);
    assert_eq!(echo["bodyBytes"], big.to_string().len());

    // A streaming response passes through as SSE.
    let response = http()
        .post(&url)
        .bearer(&token)
        .json(&json!({"stream": 3}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(response.text().matches("data: ").count(), 3);

    // Unauthenticated callers never reach AWS.
    let response = http().post(&url).json(&json!({})).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_all_verified(&fake, 4);
}

#[test]
fn temporary_credentials_from_a_profile_are_refreshed_ahead_of_expiry() {
    let idp = Peer::idp(&[]);
    let fake = Peer::agentcore_fake();
    let dir = tempfile::tempdir().unwrap();
    // credential_process: a new temporary key on every call, valid for two minutes (inside
    // the edge's five-minute refresh window, so every use schedules a background refresh).
    let script = dir.path().join("creds.py");
    let counter = dir.path().join("count");
    std::fs::write(
        &script,
        format!(
            r#"import datetime, json, pathlib
p = pathlib.Path({counter:?})
n = int(p.read_text()) + 1 if p.exists() else 1
p.write_text(str(n))
key = f"ASIATEMP{{n:08d}}"
exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=120)
print(json.dumps({{"Version": 1, "AccessKeyId": key, "SecretAccessKey": "secret-" + key,
    "SessionToken": "token-" + key, "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"#
        ),
    )
    .unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[default]\ncredential_process = {} {}\n",
            python().display(),
            script.display()
        ),
    )
    .unwrap();
    let mut env = isolated(&[]);
    env[0].1 = config.display().to_string();
    let edge = Gatehouse::start_with("", &route(&idp, &fake, ARN, "DEFAULT"), &env_refs(&env));
    let url = format!("{}/runtimes/iam/invocations", edge.url);
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let mut keys = Vec::new();
    let started = SystemTime::now();
    for _ in 0..30 {
        let response = http()
            .post(&url)
            .bearer(&token)
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text());
        let echo = response.json();
        assert_eq!(echo["qualifier"], "DEFAULT");
        assert!(
            echo["headers"]["x-amz-security-token"]
                .as_str()
                .unwrap()
                .starts_with("token-ASIATEMP")
        );
        keys.push(echo["accessKey"].as_str().unwrap().to_owned());
        if keys.iter().any(|k| k != &keys[0]) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        keys.iter().any(|k| k != &keys[0]),
        "credentials were not refreshed within {:?}: {keys:?}",
        started.elapsed()
    );
    assert_all_verified(&fake, keys.len());
}

/// Paths and queries with every character a URL can carry, signed by gatehouse's signer (the
/// library, since `validate` only admits real runtime ARNs) and checked by botocore.
#[test]
fn every_special_character_in_arns_and_qualifiers() {
    use aws_credential_types::Credentials;
    use gatehouse::config::defaults::arn_alias_path;
    use gatehouse::forward::sigv4::{Payload, URI_ENCODE, sign_headers};
    use percent_encoding::utf8_percent_encode;

    let fake = Peer::agentcore_fake();
    let specials: String = (0x20u8..0x7f)
        .map(char::from)
        .filter(|c| !c.is_ascii_alphanumeric())
        .collect();
    let arns = [
        ARN.to_owned(),
        "arn:aws-us-gov:bedrock-agentcore:us-gov-west-1:123456789012:runtime/A_b-0123456789"
            .to_owned(),
        format!("arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/x{specials}y"),
        "arn:aws:bedrock-agentcore:ap-south-1:123456789012:runtime/dots/./../é漢-😀".to_owned(),
    ];
    let qualifiers = ["DEFAULT", "prod_v2", "a b&c=d+e/f?g#h%i"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut n = 0;
    for (i, arn) in arns.iter().enumerate() {
        for qualifier in qualifiers {
            let key = if i % 2 == 0 {
                "AKIDLIBRARY"
            } else {
                "ASIALIBRARY"
            };
            let creds = Credentials::new(
                key,
                format!("secret-{key}"),
                key.starts_with("ASIA").then(|| format!("token-{key}")),
                None,
                "test",
            );
            let uri: http::Uri = format!(
                "{}{}?qualifier={}",
                fake.url,
                arn_alias_path(arn),
                utf8_percent_encode(qualifier, URI_ENCODE)
            )
            .parse()
            .unwrap();
            let body = bytes::Bytes::from(format!(r#"{{"case":{n}}}"#));
            let mut headers = http::HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            sign_headers(
                &http::Method::POST,
                &uri,
                &mut headers,
                &Payload::of(&body),
                true,
                &creds,
                "us-east-1",
                "bedrock-agentcore",
                SystemTime::now(),
            )
            .unwrap();
            let mut request = http::Request::post(uri)
                .body(http_body_util::Full::new(body))
                .unwrap();
            *request.headers_mut() = headers;
            let (status, echo) = rt.block_on(async {
                use http_body_util::BodyExt;
                let response = client.request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&body).unwrap())
            });
            assert_eq!(status, 200, "{arn} {qualifier}: {echo}");
            assert_eq!(echo["arn"], arn.as_str());
            assert_eq!(echo["qualifier"], qualifier);
            n += 1;
        }
    }
    assert_all_verified(&fake, n);
}
