//! The published AWS SigV4 test suite (as shipped in the `aws-sigv4` crate's
//! `aws-signing-test-suite/v4`), for the cases that apply to header signing.
use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn time() -> SystemTime {
    // 2015-08-30T12:36:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn signed(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    payload: Payload,
    content_sha256: bool,
    token: Option<&str>,
) -> HeaderMap {
    let creds = Credentials::new(AKID, SECRET, token.map(str::to_owned), None, "test");
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    sign_headers(
        &method,
        &uri.parse().unwrap(),
        &mut map,
        &payload,
        content_sha256,
        &creds,
        "us-east-1",
        "service",
        time(),
    )
    .unwrap();
    map
}

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn get_vanilla() {
    let h = signed(
        Method::GET,
        "https://example.amazonaws.com/",
        &[],
        Payload::Hash(EMPTY.into()),
        false,
        None,
    );
    assert_eq!(h["x-amz-date"], "20150830T123600Z");
    assert_eq!(
        h["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn get_vanilla_with_session_token() {
    let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    let h = signed(
        Method::GET,
        "https://example.amazonaws.com/",
        &[],
        Payload::Hash(EMPTY.into()),
        false,
        Some(token),
    );
    assert_eq!(h["x-amz-security-token"], token);
    assert_eq!(
        h["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    );
}

#[test]
fn post_vanilla() {
    let h = signed(
        Method::POST,
        "https://example.amazonaws.com/",
        &[],
        Payload::of(b""),
        false,
        None,
    );
    assert_eq!(
        h["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    );
}

#[test]
fn post_x_www_form_urlencoded_signs_the_body() {
    // The vector also signs content-length; gatehouse leaves it unsigned (framing may
    // change on the way), so only the body hash is checked against the suite here.
    let payload = Payload::of(b"Param1=value1");
    let Payload::Hash(hash) = payload.clone() else {
        unreachable!()
    };
    assert_eq!(
        hash,
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    let h = signed(
        Method::POST,
        "https://example.amazonaws.com/",
        &[("content-type", "application/x-www-form-urlencoded")],
        payload,
        true,
        None,
    );
    assert_eq!(h["x-amz-content-sha256"], hash.as_str());
    assert!(
        h["authorization"]
            .to_str()
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,")
    );
}

#[test]
fn authorization_of_the_caller_is_replaced_and_unsigned_headers_stay() {
    let h = signed(
        Method::POST,
        "https://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fa-AbCdEfGhIj/invocations?qualifier=DEFAULT",
        &[
            ("authorization", "Bearer caller-token"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            (
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &"s".repeat(40),
            ),
            ("mcp-session-id", "abc"),
        ],
        Payload::Unsigned,
        true,
        None,
    );
    let auth = h["authorization"].to_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 "), "{auth}");
    assert!(!auth.contains("caller-token"));
    assert!(auth.contains(
        "SignedHeaders=host;mcp-session-id;x-amz-content-sha256;x-amz-date;x-amzn-bedrock-agentcore-runtime-session-id,"
    ));
    assert_eq!(h["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    assert!(h.contains_key("traceparent"));
    assert!(h["authorization"].is_sensitive());
}

#[test]
fn endpoints() {
    let arn = "arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/a-AbCdEfGhIj";
    assert_eq!(arn_region(arn), Some("eu-west-1"));
    assert_eq!(
        default_endpoint(arn, "eu-west-1"),
        "https://bedrock-agentcore.eu-west-1.amazonaws.com"
    );
    assert_eq!(
        default_endpoint(
            "arn:aws-cn:bedrock-agentcore:cn-north-1:1:runtime/x",
            "cn-north-1"
        ),
        "https://bedrock-agentcore.cn-north-1.amazonaws.com.cn"
    );
}

#[tokio::test]
async fn cache_loads_once_and_refreshes_ahead_of_expiry() {
    use std::sync::atomic::AtomicU32;
    #[derive(Debug)]
    struct Counting(Arc<AtomicU32>, Duration);
    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.1),
                "test",
            )))
        }
    }
    let calls = Arc::new(AtomicU32::new(0));
    let cache = CredentialCache::with_provider(Counting(calls.clone(), Duration::from_secs(3600)));
    let (a, b) = tokio::join!(cache.get(), cache.get());
    assert_eq!(a.unwrap().access_key_id(), "AKID0");
    assert_eq!(b.unwrap().access_key_id(), "AKID0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Expiring within the refresh window: served from the cache, refreshed behind.
    let calls = Arc::new(AtomicU32::new(0));
    let cache = CredentialCache::with_provider(Counting(calls.clone(), Duration::from_secs(120)));
    assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
    assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
    for _ in 0..100 {
        if calls.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(calls.load(Ordering::SeqCst) >= 2);
    assert_eq!(cache.get().await.unwrap().access_key_id().len(), 5);
}
