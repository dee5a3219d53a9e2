//! Hostile tokens and headers: every case gets its exact status, the upstream receives
//! nothing, and no token string reaches the access log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::dev::{Alg, SigningKey};
use http::Method;
use serde_json::{Value, json};

use crate::support::*;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims of a valid token for the default route, as JSON.
fn valid_claims(edge: &Edge) -> Value {
    let mut claims = default_claims();
    claims.iss = edge.issuer.issuer();
    claims.claims_json()
}

/// Signs `header`/`claims` with HMAC-SHA256 under `secret` (the alg-confusion attack).
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

struct Case {
    name: &'static str,
    /// The full Authorization header(s); empty for none.
    authorization: Vec<String>,
    /// Extra headers (cookies...) and a path suffix (query string).
    extra: Vec<(&'static str, String)>,
    query: String,
    status: u16,
}

fn case(name: &'static str, token: String, status: u16) -> Case {
    Case {
        name,
        authorization: vec![format!("Bearer {token}")],
        extra: vec![],
        query: String::new(),
        status,
    }
}

#[tokio::test]
async fn hostile_tokens_are_refused_before_the_upstream() {
    let edge = Edge::start(
        "jwt: { clockSkew: 30s, jwksMinRefetchInterval: 1h }",
        SUPPORT_ROUTE,
    )
    .await;
    let key = edge.issuer.signing_key();
    let kid = key.kid().to_owned();
    let claims = valid_claims(&edge);
    let valid = edge.valid_token();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let sign = |header: &Value, claims: &Value| {
        key.sign_raw(header, claims.to_string().as_bytes()).unwrap()
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        sign(&header, &c)
    };
    let with_header = |change: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        change(&mut h);
        sign(&h, &claims)
    };
    let public_pem = key.public_jwk();
    let attacker = SigningKey::generate(Alg::RS256, Some("attacker".into())).unwrap();
    let ec_key = SigningKey::generate(Alg::ES256, Some("ec-stranger".into())).unwrap();
    edge.issuer.add_key(ec_key.clone());
    let parts: Vec<&str> = valid.split('.').collect();

    let mut cases = vec![
        Case {
            name: "no Authorization header",
            authorization: vec![],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "Bearer with no token",
            authorization: vec!["Bearer".into()],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "Basic scheme",
            authorization: vec!["Basic dXNlcjpwYXNz".into()],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "token scheme other than Bearer",
            authorization: vec![format!("Token {valid}")],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        case(
            "alg none, no signature",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","typ":"JWT"}).to_string()),
                b64(claims.to_string())
            ),
            401,
        ),
        case(
            "alg none, with signature",
            format!(
                "{}.{}.{}",
                b64(json!({"alg":"none"}).to_string()),
                b64(claims.to_string()),
                parts[2]
            ),
            401,
        ),
        case(
            "alg NoNe",
            format!(
                "{}.{}.{}",
                b64(json!({"alg":"NoNe"}).to_string()),
                b64(claims.to_string()),
                parts[2]
            ),
            401,
        ),
        case(
            "HS256 signed with the RSA public JWK",
            hs256(
                &json!({"alg":"HS256","kid":kid}),
                &claims,
                public_pem.to_string().as_bytes(),
            ),
            401,
        ),
        case(
            "HS256 signed with the RSA modulus",
            hs256(
                &json!({"alg":"HS256","kid":kid}),
                &claims,
                public_pem["n"].as_str().unwrap().as_bytes(),
            ),
            401,
        ),
        case(
            "HS512 with empty secret",
            hs256(&json!({"alg":"HS512"}), &claims, b""),
            401,
        ),
        case(
            "jku to an attacker JWKS",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","kid":"attacker","jku":"http://127.0.0.1:1/jwks.json"}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case(
            "embedded jwk of an attacker key",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","kid":"attacker","jwk":attacker.public_jwk()}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case(
            "embedded jwk reusing a known kid",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","kid":kid,"jwk":attacker.public_jwk()}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case(
            "x5u to an attacker cert",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","kid":"attacker","x5u":"http://127.0.0.1:1/cert.pem"}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case(
            "x5c with an attacker cert",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case(
            "unknown crit",
            with_header(&|h| h["crit"] = json!(["exp"])),
            401,
        ),
        case(
            "b64 false",
            with_header(&|h| {
                h["b64"] = json!(false);
                h["crit"] = json!(["b64"]);
            }),
            401,
        ),
        case(
            "signed by a stranger with the issuer's kid",
            stranger(Alg::RS256)
                .with_kid(kid.clone())
                .sign(&claims)
                .unwrap(),
            401,
        ),
        case(
            "unknown kid",
            stranger(Alg::RS256).sign(&claims).unwrap(),
            401,
        ),
        case(
            "RS256 token naming an EC key",
            sign(&json!({"alg":"RS256","kid":"ec-stranger"}), &claims),
            401,
        ),
        case(
            "ES256 token naming the RSA key",
            ec_key.with_kid(kid.clone()).sign(&claims).unwrap(),
            401,
        ),
        case(
            "PS256 header over an RS256 signature",
            with_header(&|h| h["alg"] = json!("PS256")),
            401,
        ),
        case(
            "expired",
            with(&|c| {
                c["exp"] = json!(now() - 600);
                c["iat"] = json!(now() - 4200);
            }),
            401,
        ),
        case(
            "expired just beyond the skew",
            with(&|c| c["exp"] = json!(now() - 31)),
            401,
        ),
        case(
            "not yet valid (nbf)",
            with(&|c| c["nbf"] = json!(now() + 600)),
            401,
        ),
        case(
            "issued in the future (iat)",
            with(&|c| c["iat"] = json!(now() + 600)),
            401,
        ),
        case(
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.example")),
            401,
        ),
        case(
            "iss with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{}/", edge.issuer.issuer()))),
            401,
        ),
        case(
            "no iss",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            401,
        ),
        case(
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            401,
        ),
        case(
            "exp as a string",
            with(&|c| c["exp"] = json!((now() + 600).to_string())),
            401,
        ),
        case("exp huge", with(&|c| c["exp"] = json!(1e300)), 401),
        case("aud as a number", with(&|c| c["aud"] = json!(5)), 401),
        case(
            "scope as an array",
            with(&|c| c["scope"] = json!(["invoke"])),
            401,
        ),
        case("two parts", format!("{}.{}", parts[0], parts[1]), 401),
        case(
            "five parts (JWE)",
            format!(
                "{}.{}.{}.{}.{}",
                parts[0], parts[1], parts[2], parts[1], parts[2]
            ),
            401,
        ),
        case("one part", parts[0].to_owned(), 401),
        case(
            "empty signature",
            format!("{}.{}.", parts[0], parts[1]),
            401,
        ),
        case(
            "bad base64 header",
            format!("!!!.{}.{}", parts[1], parts[2]),
            401,
        ),
        case(
            "padded base64 header",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            401,
        ),
        case(
            "standard-alphabet signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                parts[2].replace('-', "+").replace('_', "/")
            ),
            401,
        ),
        case(
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with_claims(&claims, "sub", json!("admin")).to_string()),
                parts[2]
            ),
            401,
        ),
        case(
            "truncated signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 4]
            ),
            401,
        ),
        case(
            "signature with extra bytes",
            format!("{}.{}.{}AAAA", parts[0], parts[1], parts[2]),
            401,
        ),
        case(
            "duplicate alg in header",
            key.sign_parts(
                format!(r#"{{"alg":"RS256","kid":"{kid}","alg":"none"}}"#).as_bytes(),
                claims.to_string().as_bytes(),
            )
            .unwrap(),
            401,
        ),
        case(
            "duplicate sub in payload",
            key.sign_parts(
                header.to_string().as_bytes(),
                format!(
                    r#"{},"sub":"admin"}}"#,
                    claims.to_string().trim_end_matches('}')
                )
                .as_bytes(),
            )
            .unwrap(),
            401,
        ),
        case(
            "huge token",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
            401,
        ),
        case(
            "header not JSON",
            format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
            401,
        ),
        case(
            "wrong client (valid token)",
            edge.token(|o| o.client_id = Some("client-b".into())),
            403,
        ),
        case("no client_id", edge.token(|o| o.client_id = None), 403),
        case(
            "missing scope",
            edge.token(|o| o.scope = Some("read".into())),
            403,
        ),
        Case {
            name: "two Authorization headers",
            authorization: vec![format!("Bearer {valid}"), format!("Bearer {valid}")],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "token only in the query string",
            authorization: vec![],
            extra: vec![],
            query: format!("?access_token={valid}"),
            status: 401,
        },
        Case {
            name: "token only in a cookie",
            authorization: vec![],
            extra: vec![("cookie", format!("access_token={valid}"))],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "whitespace inside the token",
            authorization: vec![format!("Bearer {} {}", parts[0], parts[1])],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
    ];
    // ES256 signature in DER form instead of the raw r||s JWS form.
    let es = edge.token(|_| {});
    let _ = es;
    let der_token = {
        let header = json!({"alg":"ES256","kid":"ec-stranger"});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let raw = ec_key.sign_bytes(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(raw_to_der(&raw)))
    };
    cases.push(case("ES256 signature in DER form", der_token, 401));
    assert!(cases.len() >= 30);

    for case in &cases {
        let mut headers: Vec<(&str, &str)> = case
            .authorization
            .iter()
            .map(|a| ("authorization", a.as_str()))
            .collect();
        for (name, value) in &case.extra {
            headers.push((name, value.as_str()));
        }
        let path = format!("/runtimes/support/invocations{}", case.query);
        let reply = edge.send(Method::POST, &path, &headers, "{}").await;
        assert_eq!(
            reply.status.as_u16(),
            case.status,
            "{}: {:?}",
            case.name,
            reply.body
        );
        assert_eq!(
            edge.agent.request_count(),
            0,
            "{} reached the upstream",
            case.name
        );
        let www = reply.header("www-authenticate").unwrap_or("");
        if case.status == 401 {
            assert_eq!(
                reply.error_type(),
                Some("UnauthorizedException"),
                "{}",
                case.name
            );
            assert!(www.starts_with("Bearer "), "{}: {www}", case.name);
        } else {
            assert_eq!(
                reply.error_type(),
                Some("AccessDeniedException"),
                "{}",
                case.name
            );
        }
        assert!(
            !reply
                .body
                .windows(20)
                .any(|w| valid.as_bytes().windows(20).any(|t| t == w)),
            "{} echoes the token",
            case.name
        );
    }

    // The positive control, with the scheme in lower case.
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations",
            &[("authorization", &format!("bearer {valid}"))],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(edge.agent.request_count(), 1);

    // No token, whole or in part, in the access log.
    let lines = edge.access_lines(cases.len() + 1).await;
    assert!(lines.len() > cases.len());
    let log = edge.log.text();
    for part in valid.split('.') {
        assert!(!log.contains(part), "the access log contains a token part");
    }
}

fn with_claims(claims: &Value, name: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[name] = value;
    c
}

/// Converts a raw P-256 signature (r||s) to ASN.1 DER.
fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut b: Vec<u8> = bytes.iter().copied().skip_while(|&x| x == 0).collect();
        if b.first().is_some_and(|&x| x & 0x80 != 0) {
            b.insert(0, 0);
        }
        let mut out = vec![0x02, b.len() as u8];
        out.extend(b);
        out
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body: Vec<u8> = [integer(r), integer(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn weak_rsa_keys_in_the_jwks_are_skipped() {
    // The fixture token was signed by a 1024-bit key whose JWK the issuer publishes.
    let dir = std::path::Path::new("tests/fixtures/keys");
    let jwk: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("rsa1024.public.jwk.json")).unwrap(),
    )
    .unwrap();
    let token = std::fs::read_to_string(dir.join("rsa1024.token"))
        .unwrap()
        .trim()
        .to_owned();
    let issuer = issuer().await;
    issuer.set_issuer_claim("https://weak-issuer.test");
    issuer.publish_extra_jwk(jwk);
    let edge = Edge::start_with(
        issuer,
        agent().await,
        "",
        r#"
  - name: weak
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [weak-client]
    upstream: { url: "{agent}" }
"#,
    )
    .await;
    let reply = edge.invoke("weak", Some(&token), "{}").await;
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    assert_eq!(edge.agent.request_count(), 0);
}
