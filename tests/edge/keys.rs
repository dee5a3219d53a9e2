//! The issuer's keys: rotation, refetch limits, outages, staleness, the verified-token cache.

use std::time::Duration;

use gatehouse::dev::{Alg, Mode};

use crate::support::*;

#[tokio::test]
async fn rotation_is_picked_up_with_one_refetch_and_old_keys_keep_working() {
    let edge = Edge::start("jwt: { jwksMinRefetchInterval: 1s }", &support_route()).await;
    let old = edge.valid_token();
    // The initial load counts as the last fetch: let one interval pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(edge.invoke("support", Some(&old), "{}").await.status, 200);
    let before = edge.issuer.jwks_fetches();

    let new_key = edge.issuer.rotate(Alg::ES256).unwrap();
    let new = edge.valid_token();
    assert!(new.len() < old.len(), "minted with the new ES256 key");
    let reply = edge.invoke("support", Some(&new), "{}").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        edge.issuer.jwks_fetches(),
        before + 1,
        "exactly one refetch for the new kid"
    );
    // The old key is still published: its tokens still pass, without another fetch.
    assert_eq!(edge.invoke("support", Some(&old), "{}").await.status, 200);
    assert_eq!(edge.issuer.jwks_fetches(), before + 1);
    assert_eq!(new_key.alg(), Alg::ES256);
}

#[tokio::test]
async fn unknown_kid_flood_costs_at_most_one_fetch_per_interval() {
    let edge = Edge::start("jwt: { jwksMinRefetchInterval: 2s }", &support_route()).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = edge.issuer.jwks_fetches();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    let edge = std::sync::Arc::new(edge);
    for i in 0..200 {
        let edge = edge.clone();
        tasks.push(tokio::spawn(async move {
            let token = stranger(Alg::RS256)
                .with_kid(format!("random-{i}"))
                .sign(&default_claims().claims_json())
                .unwrap();
            edge.invoke("support", Some(&token), "{}").await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401);
    }
    // One refetch per started interval of the flood, and at least the first one.
    let allowed = 1 + started.elapsed().as_secs() / 2;
    let fetches = edge.issuer.jwks_fetches() - before;
    assert!(
        (1..=allowed).contains(&fetches),
        "{fetches} fetches for 200 unknown kids (allowed {allowed})"
    );
    assert_eq!(edge.agent.request_count(), 0);
}

#[tokio::test]
async fn cached_keys_survive_an_idp_outage_until_max_staleness() {
    let edge = Edge::start(
        "jwt: { maxKeyStaleness: 2s, jwksRefreshInterval: 1s }",
        &support_route(),
    )
    .await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    edge.issuer.set_mode(Mode::Status(503));
    // Still served from the last good keys.
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.admin("/readyz").await.status, 200);
    // Past maxKeyStaleness: fail closed, also for the cached token, and not ready.
    let app = edge.app.clone();
    assert!(eventually(Duration::from_secs(10), || app.readiness().is_err()).await);
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 503);
    let ready = edge.admin("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["issuers"][0]["state"], "stale");
    // The IdP comes back: recovery without restart.
    edge.issuer.set_mode(Mode::Normal);
    assert!(eventually(Duration::from_secs(10), || app.readiness().is_ok()).await);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
}

#[tokio::test]
async fn idp_down_at_start_recovers_without_restart() {
    let issuer = issuer().await;
    issuer.set_mode(Mode::Close);
    let edge = Edge::start_with(issuer, agent().await, "", &support_route()).await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 503);
    assert_eq!(edge.admin("/readyz").await.status, 503);
    edge.issuer.set_mode(Mode::Normal);
    let app = edge.app.clone();
    assert!(
        eventually(Duration::from_secs(15), || app.readiness().is_ok()).await,
        "keys loaded after the IdP came back"
    );
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
}

#[tokio::test]
async fn a_hanging_fetch_does_not_block_cached_keys() {
    let edge = std::sync::Arc::new(
        Edge::start(
            "jwt: { jwksFetchTimeout: 30s, jwksMinRefetchInterval: 100ms }",
            &support_route(),
        )
        .await,
    );
    let token = edge.valid_token();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    edge.issuer.set_mode(Mode::Hang);
    // A token with an unknown kid starts a fetch that hangs (up to 30s)...
    let stuck = {
        let edge = edge.clone();
        tokio::spawn(async move {
            let t = stranger(Alg::RS256)
                .sign(&default_claims().claims_json())
                .unwrap();
            edge.invoke("support", Some(&t), "{}").await.status
        })
    };
    edge.issuer
        .wait_for_jwks_fetches(2, Duration::from_secs(5))
        .await
        .ok();
    // ...while requests with known keys are answered, before that fetch could end.
    for _ in 0..5 {
        let fresh = edge.valid_token();
        assert_eq!(edge.invoke("support", Some(&fresh), "{}").await.status, 200);
    }
    assert!(
        !stuck.is_finished(),
        "the unknown-kid request is still waiting on the hung fetch"
    );
    stuck.abort();
}

#[tokio::test]
async fn garbage_html_huge_and_redirects_keep_the_last_good_keys() {
    let edge = Edge::start("jwt: { jwksMinRefetchInterval: 100ms }", &support_route()).await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    for mode in [
        Mode::Garbage,
        Mode::Html,
        Mode::Huge(10 * 1024 * 1024),
        Mode::Redirect,
        Mode::Json(serde_json::json!({"keys": "nope"})),
    ] {
        edge.issuer.set_jwks_mode(mode.clone());
        let before = edge.issuer.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(150)).await;
        // An unknown kid forces a refetch against the broken endpoint.
        let odd = stranger(Alg::RS256)
            .sign(&default_claims().claims_json())
            .unwrap();
        assert_eq!(
            edge.invoke("support", Some(&odd), "{}").await.status,
            401,
            "{mode:?}"
        );
        assert!(edge.issuer.jwks_fetches() > before, "{mode:?} was fetched");
        assert_eq!(
            edge.invoke("support", Some(&token), "{}").await.status,
            200,
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn unusable_keys_are_skipped() {
    let issuer = issuer().await;
    issuer.publish_extra_jwk(serde_json::json!({"kty":"oct","kid":"hmac","k":"c2VjcmV0"}));
    issuer.publish_extra_jwk(
        serde_json::json!({"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"}),
    );
    issuer.publish_extra_jwk(serde_json::json!({"kty":"RSA","kid":"garbage","n":"!!","e":"AQAB"}));
    let edge = Edge::start_with(issuer, agent().await, "", &support_route()).await;
    assert_eq!(
        edge.invoke("support", Some(&edge.valid_token()), "{}")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn cache_control_max_age_shortens_the_refresh() {
    let issuer = issuer().await;
    issuer.set_cache_control(Some("public, max-age=1".into()));
    let edge = Edge::start_with(
        issuer,
        agent().await,
        "jwt: { jwksRefreshInterval: 1h, jwksMinRefetchInterval: 1s }",
        &support_route(),
    )
    .await;
    let start = edge.issuer.jwks_fetches();
    assert!(
        edge.issuer
            .wait_for_jwks_fetches(start + 2, Duration::from_secs(10))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_but_policy_runs_every_time() {
    let routes = r#"
  - name: a
    authorizerConfiguration:
      customJwtAuthorizer: { discoveryUrl: "{discovery}", allowedClients: [client-a] }
    upstream: { url: "{agent}" }
  - name: b
    authorizerConfiguration:
      customJwtAuthorizer: { discoveryUrl: "{discovery}", allowedClients: [client-b] }
    upstream: { url: "{agent}" }
"#;
    let edge = Edge::start("telemetry: { serverTiming: true }", routes).await;
    let token = edge.valid_token();
    let first = edge.invoke("a", Some(&token), "{}").await;
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("server-timing")
            .unwrap()
            .contains(r#"desc="miss""#),
        "{:?}",
        first.header("server-timing")
    );
    let second = edge.invoke("a", Some(&token), "{}").await;
    assert!(
        second
            .header("server-timing")
            .unwrap()
            .contains(r#"desc="hit""#)
    );
    assert!(
        second
            .header("server-timing")
            .unwrap()
            .contains("upstream;dur=")
    );
    // Same cached token, other route: its policy still applies.
    assert_eq!(edge.invoke("b", Some(&token), "{}").await.status, 403);
    assert_eq!(edge.app.token_cache.entries(), 1);
}

#[tokio::test]
async fn removing_a_key_revokes_its_cached_tokens() {
    let edge = Edge::start(
        "jwt: { jwksRefreshInterval: 1s, jwksMinRefetchInterval: 1s }",
        &support_route(),
    )
    .await;
    let old_kid = edge.issuer.signing_key().kid().to_owned();
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    edge.issuer.rotate(Alg::RS256).unwrap();
    assert!(edge.issuer.remove_key(&old_kid));
    // Within a refresh or two the withdrawn key is gone, and its tokens with it, cached or not.
    let mut status = 200;
    for _ in 0..100 {
        status = edge
            .invoke("support", Some(&token), "{}")
            .await
            .status
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    assert_eq!(
        edge.invoke("support", Some(&edge.valid_token()), "{}")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn down_at_start_answers_503_with_retry_after_then_recovers() {
    let issuer = issuer().await;
    issuer.set_mode(Mode::Status(503));
    let edge = Edge::start_with(issuer, agent().await, "", &support_route()).await;
    let token = edge.valid_token();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.error_type(), Some("ServiceUnavailableException"));
    let ready = edge.admin("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["issuers"][0]["state"], "loading");
    assert!(
        ready.json()["issuers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{:?}",
        ready.body
    );
    // Only the discovery document is asked for while it fails; no JWKS yet.
    assert_eq!(edge.issuer.jwks_fetches(), 0);
    edge.issuer.set_mode(Mode::Normal);
    let app = edge.app.clone();
    assert!(eventually(Duration::from_secs(15), || app.readiness().is_ok()).await);
    assert_eq!(edge.admin("/readyz").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.agent.request_count(), 1);
}

#[tokio::test]
async fn a_hanging_idp_is_bounded_by_the_fetch_timeout() {
    // Hanging from the start: a request does not wait forever for keys, it gets 503 once the
    // fetch gives up.
    let issuer = issuer().await;
    issuer.set_mode(Mode::Hang);
    let edge = Edge::start_with(
        issuer,
        agent().await,
        "jwt: { jwksFetchTimeout: 1s, jwksMinRefetchInterval: 1s }",
        &support_route(),
    )
    .await;
    let token = edge.valid_token();
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        edge.invoke("support", Some(&token), "{}"),
    )
    .await
    .expect("the request ended: the fetch timeout bounds it");
    assert_eq!(reply.status, 503);
    let ready = edge.admin("/readyz").await;
    assert!(
        ready.json()["issuers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1000ms"),
        "{:?}",
        ready.body
    );

    // Hanging after start: an unknown kid waits for at most one bounded fetch, then 401;
    // cached keys keep working meanwhile and afterwards.
    edge.issuer.set_mode(Mode::Normal);
    let app = edge.app.clone();
    assert!(eventually(Duration::from_secs(15), || app.readiness().is_ok()).await);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    edge.issuer.set_mode(Mode::Hang);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let odd = stranger(Alg::RS256)
        .sign(&default_claims().claims_json())
        .unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        edge.invoke("support", Some(&odd), "{}"),
    )
    .await
    .expect("the unknown-kid request ended after one bounded fetch");
    assert_eq!(reply.status, 401);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.admin("/readyz").await.status, 200);
}

#[tokio::test]
async fn a_broken_discovery_document_keeps_the_last_good_one() {
    let edge = Edge::start(
        "jwt: { jwksRefreshInterval: 1s, jwksMinRefetchInterval: 1s }",
        &support_route(),
    )
    .await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    for mode in [
        Mode::Garbage,
        Mode::Html,
        Mode::Huge(10 * 1024 * 1024),
        Mode::Redirect,
        Mode::Status(500),
        Mode::Json(serde_json::json!({"issuer": "https://evil.example"})),
        Mode::Json(
            serde_json::json!({"issuer": "https://evil.example", "jwks_uri": "file:///etc/passwd"}),
        ),
    ] {
        edge.issuer.set_discovery_mode(mode.clone());
        let seen = edge.issuer.discovery_fetches();
        edge.issuer
            .wait_for_discovery_fetches(seen + 1, Duration::from_secs(15))
            .await
            .unwrap_or_else(|_| panic!("{mode:?} was fetched"));
        // The refresh goes on with the last good discovery document: the JWKS is still read
        // from the real jwks_uri and the issuer is still the real one.
        let jwks = edge.issuer.jwks_fetches();
        edge.issuer
            .wait_for_jwks_fetches(jwks + 1, Duration::from_secs(15))
            .await
            .unwrap();
        assert_eq!(
            edge.invoke("support", Some(&token), "{}").await.status,
            200,
            "{mode:?}"
        );
        assert_eq!(edge.admin("/readyz").await.status, 200, "{mode:?}");
    }
    // A rotation during the breakage is still picked up through the kept jwks_uri.
    edge.issuer.rotate(Alg::ES256).unwrap();
    let rotated = edge.valid_token();
    let mut status = 0;
    for _ in 0..50 {
        status = edge
            .invoke("support", Some(&rotated), "{}")
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200);
}
