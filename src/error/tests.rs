use super::*;
use http_body_util::BodyExt;
use std::sync::Arc;

fn challenge(scope: Option<&str>) -> Box<Challenge> {
    Box::new(Challenge {
        resource_metadata: "https://edge/.well-known/oauth-protected-resource/mcp".into(),
        scope: scope.map(Arc::from),
    })
}

async fn parts(error: ProxyError) -> (u16, String, Option<String>, serde_json::Value) {
    let response = error.into_response();
    let status = response.status().as_u16();
    let kind = response.headers()[&X_AMZN_ERROR_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let www = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, kind, www, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn missing_token_has_no_error_code() {
    let (status, kind, www, _) = parts(ProxyError::Auth {
        error: AuthError::Missing,
        challenge: challenge(Some("invoke read")),
    })
    .await;
    assert_eq!((status, kind.as_str()), (401, "UnauthorizedException"));
    assert_eq!(
        www.unwrap(),
        r#"Bearer resource_metadata="https://edge/.well-known/oauth-protected-resource/mcp", scope="invoke read""#
    );
}

#[tokio::test]
async fn invalid_token_challenge() {
    let error = AuthError::Invalid("token \"signature\" is invalid".into());
    let (status, _, www, body) = parts(ProxyError::Auth {
        error,
        challenge: challenge(None),
    })
    .await;
    assert_eq!(status, 401);
    let www = www.unwrap();
    assert!(
        www.starts_with(
            r#"Bearer error="invalid_token", error_description="token 'signature' is invalid""#
        ),
        "{www}"
    );
    assert_eq!(body["message"], "token \"signature\" is invalid");
}

#[tokio::test]
async fn forbidden_and_insufficient_scope() {
    let (status, kind, www, body) = parts(ProxyError::Auth {
        error: AuthError::Denied(Denial::Client),
        challenge: challenge(None),
    })
    .await;
    assert_eq!(
        (status, kind.as_str(), www),
        (403, "AccessDeniedException", None)
    );
    assert_eq!(
        body["message"],
        "Claim 'client_id' value mismatch with configuration."
    );

    let (status, _, www, _) = parts(ProxyError::Auth {
        error: AuthError::Denied(Denial::Scope),
        challenge: challenge(Some("invoke")),
    })
    .await;
    assert_eq!(status, 403);
    assert!(
        www.unwrap().starts_with(
            r#"Bearer error="insufficient_scope", scope="invoke", resource_metadata=""#
        )
    );

    let (status, _, www, _) = parts(ProxyError::Auth {
        error: AuthError::Denied(Denial::Audience),
        challenge: challenge(None),
    })
    .await;
    assert_eq!(status, 401);
    assert!(www.unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn unavailable_has_retry_after() {
    let response = ProxyError::Auth {
        error: AuthError::Unavailable,
        challenge: challenge(None),
    }
    .into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[RETRY_AFTER], "5");
    assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
}

#[tokio::test]
async fn throttled_rows() {
    use crate::quota::headers::{Limit, Throttle};
    let throttle = Throttle {
        rule: "per-client".into(),
        limit: Limit::Rate(crate::quota::rules::Rate::parse("25/s").unwrap()),
        retry_after: std::time::Duration::from_millis(300),
    };
    let response = ProxyError::Quota(QuotaError::Throttled {
        throttle: throttle.clone(),
        jsonrpc: None,
    })
    .into_response();
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(
        response.headers()["ratelimit-policy"],
        r#""per-client";q=25;w=1"#
    );
    assert_eq!(response.headers()["ratelimit"], r#""per-client";r=0;t=1"#);
    let (status, kind, www, body) = parts(ProxyError::Quota(QuotaError::Throttled {
        throttle: throttle.clone(),
        jsonrpc: None,
    }))
    .await;
    assert_eq!(
        (status, kind.as_str(), www),
        (429, "ThrottlingException", None)
    );
    assert_eq!(body, serde_json::json!({"message": "Rate exceeded."}));

    let id = serde_json::value::RawValue::from_string("\"a-7\"".into()).unwrap();
    let (status, _, _, body) = parts(ProxyError::Quota(QuotaError::Throttled {
        throttle,
        jsonrpc: Some(Some(id)),
    }))
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], "a-7");
    assert_eq!(body["error"]["message"], "Rate exceeded.");

    let (status, kind, _, _) = parts(ProxyError::Quota(QuotaError::StoreUnavailable)).await;
    assert_eq!(
        (status, kind.as_str()),
        (503, "ServiceUnavailableException")
    );
}

#[tokio::test]
async fn outbound_rows() {
    let (status, kind, www, body) = parts(ProxyError::Outbound(OutboundError::Refused(
        "invalid_grant".into(),
    )))
    .await;
    assert_eq!(
        (status, kind.as_str(), www),
        (403, "AccessDeniedException", None)
    );
    assert!(body["message"].as_str().unwrap().contains("invalid_grant"));
    let response = ProxyError::Outbound(OutboundError::Unavailable("HTTP 502 from idp".into()))
        .into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[RETRY_AFTER], "5");
    assert_eq!(
        response.headers()[&X_AMZN_ERROR_TYPE],
        "ServiceUnavailableException"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&body).contains("502"),
        "internal reason stays in the log"
    );
}

#[tokio::test]
async fn other_rows() {
    assert_eq!(
        parts(ProxyError::BadRequest("bad session".into())).await.1,
        "ValidationException"
    );
    assert_eq!(
        parts(ProxyError::HeadersTooLarge { limit: 10 }).await.0,
        431
    );
    assert_eq!(parts(ProxyError::BodyTooLarge { limit: 10 }).await.0, 413);
    assert_eq!(parts(ProxyError::OriginNotAllowed).await.0, 403);
    let (status, kind, _, _) = parts(ProxyError::Upstream(UpstreamError::Timeout(
        std::time::Duration::from_secs(3),
    )))
    .await;
    assert_eq!((status, kind.as_str()), (504, "GatewayTimeoutException"));
    let (status, kind, _, _) = parts(ProxyError::Upstream(UpstreamError::Unreachable(
        "refused".into(),
    )))
    .await;
    assert_eq!((status, kind.as_str()), (502, "BadGatewayException"));
}
