use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{Method, StatusCode, header};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;
use crate::dev::serve::client::{fetch, get, get_json, send};

async fn issuer() -> TestIssuer {
    TestIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Verify `token` the way a relying party would: discovery → JWKS over HTTP → kid → verify.
async fn verify_via_http(discovery_url: &str, token: &str) -> Value {
    let discovery = get_json(discovery_url).await;
    let jwks: JwkSet =
        serde_json::from_value(get_json(discovery["jwks_uri"].as_str().unwrap()).await).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn serves_discovery_and_jwks_that_verify_its_tokens() {
    let issuer = issuer().await;
    let doc = get_json(&issuer.discovery_url()).await;
    assert_eq!(doc["issuer"], issuer.url());
    assert_eq!(doc["jwks_uri"], issuer.jwks_url());
    assert_eq!(doc["token_endpoint"], issuer.token_url());
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let jwks = get_json(&issuer.jwks_url()).await;
    assert_eq!(jwks["keys"][0], issuer.signing_key().public_jwk());
    assert_eq!(jwks, issuer.jwks());
    // RFC 8414 metadata carries the same document.
    let meta = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        issuer.url()
    ))
    .await;
    assert_eq!(meta, doc);
    assert_eq!((issuer.discovery_fetches(), issuer.jwks_fetches()), (2, 1));

    let token = issuer
        .mint(&MintOptions {
            sub: Some("alice".into()),
            ..MintOptions::default()
        })
        .unwrap();
    let claims = verify_via_http(&issuer.discovery_url(), &token).await;
    assert_eq!(claims["iss"], issuer.url());
    assert_eq!(claims["sub"], "alice");
    issuer.reset_counters();
    assert_eq!(issuer.discovery_fetches(), 0);
    issuer.shutdown().await;
}

#[tokio::test]
async fn rotation_keeps_old_keys_published_until_removed() {
    let issuer = issuer().await;
    let first = issuer.signing_key();
    let second = issuer.rotate(Alg::ES256).unwrap();
    assert_eq!(issuer.signing_key().kid(), second.kid());
    assert_eq!(issuer.published_kids(), [first.kid(), second.kid()]);
    let doc = get_json(&issuer.discovery_url()).await;
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    let token = issuer.mint(&MintOptions::default()).unwrap();
    assert_eq!(
        verify_via_http(&issuer.discovery_url(), &token).await["iss"],
        issuer.url()
    );

    assert!(issuer.remove_key(first.kid()));
    assert!(!issuer.remove_key(first.kid()));
    let jwks = get_json(&issuer.jwks_url()).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    // The primary can be withdrawn and still sign: tokens from a key the JWKS dropped.
    issuer.remove_key(second.kid());
    assert!(issuer.published_kids().is_empty());
    assert!(issuer.mint(&MintOptions::default()).is_ok());

    let extra = SigningKey::generate(Alg::EdDSA, Some("side".into())).unwrap();
    issuer.add_key(extra.clone());
    issuer.publish_extra_jwk(json!({ "kty": "RSA", "kid": "broken", "n": "!!" }));
    issuer.publish_extra_jwk(json!({ "kty": "oct", "k": "c2VjcmV0" }));
    let keys = get_json(&issuer.jwks_url()).await["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 3);
    assert_eq!(keys[0]["kid"], "side");
    assert_eq!(keys[1]["kid"], "broken");
    issuer.clear_extra_jwks();
    issuer.rotate_to(extra.clone());
    assert_eq!(issuer.published_kids(), ["side"]);
}

#[tokio::test]
async fn issuer_claim_jwks_uri_cache_control_and_prefix_are_adjustable() {
    let issuer = TestIssuer::start_with(IssuerOptions {
        path_prefix: "/tenant-1/".into(),
        ..IssuerOptions::default()
    })
    .await
    .unwrap();
    assert!(issuer.url().ends_with("/tenant-1"));
    assert!(
        issuer
            .discovery_url()
            .contains("/tenant-1/.well-known/openid-configuration")
    );
    let (status, _, _) = get(&format!(
        "http://{}/.well-known/openid-configuration",
        issuer.addr()
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    issuer.set_issuer_claim("https://login.example.com/tenant-1");
    issuer.set_jwks_uri(Some("https://keys.example.com/jwks".into()));
    issuer.set_cache_control(Some("public, max-age=60".into()));
    let (status, headers, body) = get(&issuer.discovery_url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=60");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["issuer"], "https://login.example.com/tenant-1");
    assert_eq!(doc["jwks_uri"], "https://keys.example.com/jwks");
    assert_eq!(issuer.issuer(), "https://login.example.com/tenant-1");
    let token = issuer.mint(&MintOptions::default()).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "https://login.example.com/tenant-1");

    issuer.reset_issuer_claim();
    issuer.set_jwks_uri(None);
    issuer.set_cache_control(None);
    let (_, headers, body) = get(&issuer.jwks_url()).await;
    assert!(headers.get(header::CACHE_CONTROL).is_none());
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    assert_eq!(
        get_json(&issuer.discovery_url()).await["issuer"],
        issuer.url()
    );
}

#[tokio::test]
async fn failure_modes_answer_as_described() {
    let issuer = issuer().await;
    let url = issuer.jwks_url();

    issuer.set_jwks_mode(Mode::Status(503));
    assert_eq!(get(&url).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // Discovery is unaffected by the JWKS mode.
    assert_eq!(get(&issuer.discovery_url()).await.0, StatusCode::OK);

    issuer.set_jwks_mode(Mode::Status(1000));
    assert_eq!(get(&url).await.0, StatusCode::INTERNAL_SERVER_ERROR);

    issuer.set_jwks_mode(Mode::Garbage);
    let (status, headers, body) = get(&url).await;
    assert_eq!(
        (status, &headers[header::CONTENT_TYPE]),
        (StatusCode::OK, &"application/json".parse().unwrap())
    );
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    issuer.set_jwks_mode(Mode::Html);
    let (_, headers, body) = get(&url).await;
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(body.starts_with(b"<!doctype html>"));

    issuer.set_jwks_mode(Mode::Huge(300_000));
    let (status, headers, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CONTENT_LENGTH).is_none(),
        "chunked, no length"
    );
    assert_eq!(body.len(), 300_000);
    assert!(body.starts_with(br#"{"keys":["#));

    issuer.set_jwks_mode(Mode::Redirect);
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers[header::LOCATION], url.as_str());

    issuer.set_jwks_mode(Mode::Json(json!({ "keys": "not an array" })));
    assert_eq!(get_json(&url).await, json!({ "keys": "not an array" }));

    issuer.set_jwks_mode(Mode::Close);
    // Connection closed with no response: the client sees an error, not a status.
    assert!(send(Method::GET, &url, &[], Bytes::new()).await.is_err());

    issuer.set_jwks_mode(Mode::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get(&url).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    issuer.set_mode(Mode::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        send(Method::GET, &issuer.discovery_url(), &[], Bytes::new()),
    )
    .await;
    assert!(hung.is_err(), "a hanging issuer never answers");
    // Every request counted, whatever the mode.
    assert_eq!(issuer.jwks_fetches(), 9);
    assert_eq!(issuer.discovery_fetches(), 2);

    // Shutdown releases hung connections and closes the port.
    let hung_url = url.clone();
    let pending =
        tokio::spawn(async move { send(Method::GET, &hung_url, &[], Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    issuer.shutdown().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("released");
    assert!(outcome.unwrap().is_err());
    assert!(send(Method::GET, &url, &[], Bytes::new()).await.is_err());
}

#[tokio::test]
async fn concurrent_fetches_against_a_slow_issuer_are_each_counted() {
    let issuer = issuer().await;
    issuer.set_jwks_mode(Mode::Delay(Duration::from_millis(200)));
    let url = issuer.jwks_url();
    let all = (0..5).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await.0 })
    });
    for h in all.collect::<Vec<_>>() {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(issuer.jwks_fetches(), 5);
    issuer
        .wait_for_jwks_fetches(5, Duration::ZERO)
        .await
        .unwrap();
    let later = {
        let issuer = issuer.clone();
        tokio::spawn(async move {
            issuer
                .wait_for_jwks_fetches(6, Duration::from_secs(5))
                .await
        })
    };
    get(&url).await;
    later.await.unwrap().unwrap();
    let err = issuer
        .wait_for_discovery_fetches(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!((err.wanted, err.seen), (1, 0));
}

#[tokio::test]
async fn token_endpoint_issues_client_credentials_tokens() {
    let issuer = issuer().await;
    let form = "grant_type=client_credentials&client_id=my%20app&scope=invoke+read&resource=https%3A%2F%2Fedge.test%2Fmcp";
    let (status, _, body) = fetch(
        Method::POST,
        &issuer.token_url(),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["scope"], "invoke read");
    let claims = verify_via_http(
        &issuer.discovery_url(),
        answer["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(claims["client_id"], "my app");
    assert_eq!(claims["aud"], "https://edge.test/mcp");

    // Client id from HTTP Basic.
    let (status, _, body) = fetch(
        Method::POST,
        &issuer.token_url(),
        &[("authorization", "Basic Y2xpOnNlY3JldA==")],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = serde_json::from_slice::<Value>(&body).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        verify_via_http(&issuer.discovery_url(), &token).await["sub"],
        "cli"
    );

    let (status, _, body) = fetch(
        Method::POST,
        &issuer.token_url(),
        &[],
        "grant_type=password",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "unsupported_grant_type"
    );
    let (status, _, _) = fetch(
        Method::POST,
        &issuer.token_url(),
        &[],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issuer.token_requests(), 4);
    let (status, _, _) = fetch(Method::POST, &issuer.jwks_url(), &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn serves_http2_prior_knowledge_too() {
    let issuer = issuer().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let resp = client
        .get(issuer.jwks_url().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["keys"].is_array());
}
