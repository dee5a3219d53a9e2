//! Hostile tokens and headers: every case gets its exact status, the upstream receives
//! nothing, and no token string reaches the access log or the edge's own logs.
//!
//! The cases follow RFC 8725 §2–3, the OWASP JWT cheat sheet and what jwt_tool tries:
//! algorithm confusion in every direction (HMAC, RSA, RSA-PSS, ECDSA and EdDSA headers against
//! RSA, P-256, P-384 and Ed25519 keys, and against a JWK whose own `alg` differs), `kid` as an
//! injection or traversal sink, keys smuggled in through `jwk`/`jku`/`x5u`/`x5c`, JOSE
//! extensions the edge does not implement (`crit`, `b64`, `zip`, JWE), nested tokens, duplicate
//! and look-alike members, claims of the wrong JSON type or range, and signatures in the wrong
//! encoding (DER, padded, truncated, non-canonical base64url, the all-zero "psychic" ECDSA
//! signature of CVE-2022-21449).

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
    hmac(aws_lc_rs::hmac::HMAC_SHA256, header, claims, secret)
}

/// Signs with any HMAC (the header's `alg` is whatever the caller wrote).
fn hmac(alg: aws_lc_rs::hmac::Algorithm, header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(alg, secret);
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

/// The default route plus `allowedAudience`, so that `aud` cases have something to fail.
const AUDIENCE_ROUTE: &str = r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{discovery}"
        allowedClients: [client-a]
        allowedAudience: ["https://agents.example.com"]
        allowedScopes: [invoke]
    upstream: { url: "{agent}" }
"#;

#[tokio::test]
async fn hostile_tokens_are_refused_before_the_upstream() {
    let (logs, _guard) = Logs::capture();
    // Every key type is published before the edge's first fetch, so algorithm-confusion cases
    // meet a key the edge knows (the positive controls at the end prove it) rather than an
    // unknown kid.
    let issuer = issuer().await;
    let ec_key = SigningKey::generate(Alg::ES256, Some("ec-stranger".into())).unwrap();
    let p384_key = SigningKey::generate(Alg::ES384, Some("p384-key".into())).unwrap();
    let ed_key = SigningKey::generate(Alg::EdDSA, Some("ed-key".into())).unwrap();
    // An RSA key whose JWK says `alg: PS256`: the same key must not verify RS256.
    let pinned = SigningKey::generate(Alg::PS256, Some("pinned-ps256".into())).unwrap();
    for k in [&ec_key, &p384_key, &ed_key, &pinned] {
        issuer.add_key(k.clone());
    }
    let edge = Edge::start_with(
        issuer,
        agent().await,
        "jwt: { clockSkew: 30s, jwksMinRefetchInterval: 1h }",
        AUDIENCE_ROUTE,
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
    // `signer` signs, but the header names `alg` and `kid` as given.
    let confused = |signer: &SigningKey, alg: &str, kid: &str| {
        signer
            .sign_raw(
                &json!({"alg": alg, "typ": "JWT", "kid": kid}),
                claims.to_string().as_bytes(),
            )
            .unwrap()
    };
    let raw_claims = |text: String| {
        key.sign_parts(header.to_string().as_bytes(), text.as_bytes())
            .unwrap()
    };
    let public_pem = key.public_jwk();
    let attacker = SigningKey::generate(Alg::RS256, Some("attacker".into())).unwrap();
    let parts: Vec<&str> = valid.split('.').collect();
    let ec_token = ec_key.sign(&claims).unwrap();
    let ec_parts: Vec<&str> = ec_token.split('.').collect();

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
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let kid_case =
        |name: &'static str, kid: Value| case(name, with_header(&|h| h["kid"] = kid.clone()), 401);
    let claim_case = |name: &'static str, claim: &'static str, value: Value, status: u16| {
        case(name, with(&|c| c[claim] = value.clone()), status)
    };
    cases.extend([
        // Algorithm confusion, every direction: the key's type decides, never the header.
        case(
            "HS384 signed with the P-256 public JWK",
            hmac(
                aws_lc_rs::hmac::HMAC_SHA384,
                &json!({"alg":"HS384","kid":"ec-stranger"}),
                &claims,
                ec_key.public_jwk().to_string().as_bytes(),
            ),
            401,
        ),
        case(
            "HS512 signed with the Ed25519 public key",
            hmac(
                aws_lc_rs::hmac::HMAC_SHA512,
                &json!({"alg":"HS512","kid":"ed-key"}),
                &claims,
                ed_key.public_jwk()["x"].as_str().unwrap().as_bytes(),
            ),
            401,
        ),
        case("RS256 header naming the Ed25519 key", confused(&key, "RS256", "ed-key"), 401),
        case("PS256 header naming the P-384 key", confused(&key.with_alg(Alg::PS256).unwrap(), "PS256", "p384-key"), 401),
        case("ES256 header naming the Ed25519 key", confused(&ec_key, "ES256", "ed-key"), 401),
        case("ES256 header naming the P-384 key", confused(&ec_key, "ES256", "p384-key"), 401),
        case("ES384 header naming the P-256 key", confused(&p384_key, "ES384", "ec-stranger"), 401),
        case("ES384 header over a P-256 signature", confused(&ec_key, "ES384", "ec-stranger"), 401),
        case("EdDSA header naming the RSA key", confused(&ed_key, "EdDSA", &kid), 401),
        case("EdDSA header naming the P-256 key", confused(&ed_key, "EdDSA", "ec-stranger"), 401),
        case("RS256 header over a PS256 signature", confused(&key.with_alg(Alg::PS256).unwrap(), "RS256", &kid), 401),
        case("RS512 header over an RS256 signature", with_header(&|h| h["alg"] = json!("RS512")), 401),
        // The JWK says PS256: a valid RS256 signature by the very same key is still refused.
        case("RS256 by a key whose JWK alg is PS256", confused(&pinned.with_alg(Alg::RS256).unwrap(), "RS256", "pinned-ps256"), 401),
        case("PS384 by a key whose JWK alg is PS256", confused(&pinned.with_alg(Alg::PS384).unwrap(), "PS384", "pinned-ps256"), 401),
        // alg spellings.
        case("alg lower case", with_header(&|h| h["alg"] = json!("rs256")), 401),
        case("alg with a trailing space", with_header(&|h| h["alg"] = json!("RS256 ")), 401),
        case("alg with a full-width R", with_header(&|h| h["alg"] = json!("\u{ff32}S256")), 401),
        case("alg empty", with_header(&|h| h["alg"] = json!("")), 401),
        case("alg null", with_header(&|h| h["alg"] = Value::Null), 401),
        case(
            "alg member name with a Cyrillic a",
            key.sign_parts(
                format!("{{\"\u{0430}lg\":\"RS256\",\"kid\":\"{kid}\"}}").as_bytes(),
                claims.to_string().as_bytes(),
            )
            .unwrap(),
            401,
        ),
        // kid as an injection sink: never a path, a query or a lookup beyond an exact match.
        kid_case("kid path traversal", json!("../../../../../../dev/null")),
        kid_case("kid absolute path", json!("/proc/sys/kernel/randomize_va_space")),
        kid_case("kid SQL injection", json!("x' UNION SELECT 'secret' --")),
        kid_case("kid JSON text", json!(r#"{"kid":"x"}"#)),
        kid_case("kid as a JSON object", json!({"$ne": null})),
        kid_case("kid null", Value::Null),
        kid_case("kid with a NUL", json!(format!("{kid}\u{0}"))),
        kid_case("kid with CR LF", json!(format!("{kid}\r\nx-injected: 1"))),
        kid_case("kid of 10 KB", json!("k".repeat(10 * 1024))),
        kid_case("kid with a zero-width space", json!(format!("{kid}\u{200b}"))),
        kid_case("kid with a trailing space", json!(format!("{kid} "))),
        // Keys and extensions from the token itself.
        case(
            "x5c and jwk of an attacker key under the issuer's kid",
            attacker
                .sign_raw(
                    &json!({"alg":"RS256","kid":kid,"x5c":["MIIB"],"jwk":attacker.public_jwk(),"jku":edge.issuer.jwks_url()}),
                    claims.to_string().as_bytes(),
                )
                .unwrap(),
            401,
        ),
        case("crit empty", with_header(&|h| h["crit"] = json!([])), 401),
        case("b64 false without crit", with_header(&|h| h["b64"] = json!(false)), 401),
        case("zip DEF", with_header(&|h| h["zip"] = json!("DEF")), 401),
        case("JWE header in three parts", with_header(&|h| h["enc"] = json!("A256GCM")), 401),
        case(
            "nested JWT as the payload",
            key.sign_parts(
                json!({"alg":"RS256","kid":kid,"cty":"JWT"}).to_string().as_bytes(),
                valid.as_bytes(),
            )
            .unwrap(),
            401,
        ),
        case("nested JWT as a JSON string payload", raw_claims(Value::String(valid.clone()).to_string()), 401),
        // Duplicate members, also spelled with escapes (RFC 8259 compares decoded names).
        case(
            "duplicate kid in header",
            key.sign_parts(
                format!(r#"{{"alg":"RS256","kid":"{kid}","kid":"attacker"}}"#).as_bytes(),
                claims.to_string().as_bytes(),
            )
            .unwrap(),
            401,
        ),
        case(
            "duplicate alg spelled with an escape",
            key.sign_parts(
                format!(r#"{{"alg":"RS256","kid":"{kid}","\u0061lg":"none"}}"#).as_bytes(),
                claims.to_string().as_bytes(),
            )
            .unwrap(),
            401,
        ),
        case(
            "duplicate exp in payload",
            raw_claims(format!(r#"{},"exp":9999999999}}"#, claims.to_string().trim_end_matches('}'))),
            401,
        ),
        case(
            "duplicate iss spelled with an escape",
            raw_claims(format!(r#"{},"\u0069ss":"https://evil.example"}}"#, claims.to_string().trim_end_matches('}'))),
            401,
        ),
        case("header with a byte-order mark", key.sign_parts(format!("\u{feff}{header}").as_bytes(), claims.to_string().as_bytes()).unwrap(), 401),
        case("header with trailing data", key.sign_parts(format!("{header}\0").as_bytes(), claims.to_string().as_bytes()).unwrap(), 401),
        case("payload with trailing data", raw_claims(format!("{claims} {{}}")), 401),
        // Claims of the wrong type or range.
        claim_case("exp negative", "exp", json!(-1), 401),
        claim_case("exp beyond year 9999", "exp", json!(1e20), 401),
        claim_case("exp as a boolean", "exp", json!(true), 401),
        claim_case("exp null", "exp", Value::Null, 401),
        claim_case("exp as an array", "exp", json!([now() + 600]), 401),
        claim_case("nbf as a string", "nbf", json!(now().to_string()), 401),
        claim_case("iat huge", "iat", json!(1e300), 401),
        claim_case("iat as a float string", "iat", json!("1.5e9"), 401),
        claim_case("aud as an object", "aud", json!({"aud": AUDIENCE}), 401),
        claim_case("aud as an empty array", "aud", json!([]), 401),
        claim_case("aud with a number in the array", "aud", json!([AUDIENCE, 5]), 401),
        claim_case("aud null", "aud", Value::Null, 401),
        claim_case("aud of another resource", "aud", json!(["https://other.example"]), 401),
        claim_case("scope as a number", "scope", json!(5), 401),
        claim_case("scope as an object", "scope", json!({"invoke": true}), 401),
        claim_case("scope null", "scope", Value::Null, 403),
        claim_case("scp as a number", "scp", json!(1), 401),
        claim_case("scp with a number in the array", "scp", json!(["invoke", 1]), 401),
        claim_case("client_id as an array", "client_id", json!([CLIENT]), 401),
        claim_case("sub as a number", "sub", json!(42), 401),
        claim_case("iss as an array", "iss", json!([edge.issuer.issuer()]), 401),
        // Signatures in the wrong shape.
        case("padded signature", format!("{}.{}.{}==", parts[0], parts[1], parts[2]), 401),
        case(
            "signature with a leading zero byte",
            format!("{}.{}.{}", parts[0], parts[1], b64([&[0u8][..], &signature].concat())),
            401,
        ),
        case(
            "signature with non-canonical trailing bits",
            format!("{}.{}.{}", parts[0], parts[1], non_canonical(parts[2])),
            401,
        ),
        case("signature of the wrong key size (P-256 over RS256)", format!("{}.{}.{}", parts[0], parts[1], ec_parts[2]), 401),
        case("psychic ECDSA signature (r = s = 0)", format!("{}.{}.{}", ec_parts[0], ec_parts[1], b64([0u8; 64])), 401),
        case("ECDSA signature of n, n", format!("{}.{}.{}", ec_parts[0], ec_parts[1], b64([P256_ORDER, P256_ORDER].concat())), 401),
        case("ES256 signature cut by one byte", format!("{}.{}.{}", ec_parts[0], ec_parts[1], b64(&URL_SAFE_NO_PAD.decode(ec_parts[2]).unwrap()[..63])), 401),
        Case {
            name: "tab inside the token",
            authorization: vec![format!("Bearer {}.{}.\t{}", parts[0], parts[1], parts[2])],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "token in a Proxy-Authorization header",
            authorization: vec![],
            extra: vec![("proxy-authorization", format!("Bearer {valid}"))],
            query: String::new(),
            status: 401,
        },
        Case {
            name: "Bearer scheme twice",
            authorization: vec![format!("Bearer Bearer {valid}")],
            extra: vec![],
            query: String::new(),
            status: 401,
        },
    ]);
    // ES256 signature in DER form instead of the raw r||s JWS form.
    let der_token = {
        let header = json!({"alg":"ES256","kid":"ec-stranger"});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let raw = ec_key.sign_bytes(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(raw_to_der(&raw)))
    };
    cases.push(case("ES256 signature in DER form", der_token, 401));
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
    }

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

    // Positive controls: the scheme in lower case, and every published key type with its own
    // algorithm. They show the refusals above were about the attack, not an unknown key.
    let mut controls = vec![format!("bearer {valid}")];
    for signer in [&ec_key, &p384_key, &ed_key, &pinned] {
        controls.push(format!("Bearer {}", signer.sign(&claims).unwrap()));
    }
    for (i, authorization) in controls.iter().enumerate() {
        let reply = edge
            .send(
                Method::POST,
                "/runtimes/support/invocations",
                &[("authorization", authorization)],
                "{}",
            )
            .await;
        assert_eq!(reply.status, 200, "control {i}: {:?}", reply.body);
        assert_eq!(edge.agent.request_count(), i as u64 + 1);
    }

    // No token, whole or in part, in the access log or the edge's own logs (DEBUG level).
    let lines = edge.access_lines(cases.len() + controls.len()).await;
    assert_eq!(lines.len(), cases.len() + controls.len());
    let access = edge.log.text();
    let debug = logs.text();
    assert!(debug.contains("gatehouse"), "the log capture works");
    let tokens = cases
        .iter()
        .flat_map(|c| c.authorization.iter().chain(c.extra.iter().map(|(_, v)| v)))
        .chain(controls.iter());
    for token in tokens {
        for part in token.split(['.', ' ', '=', '\t']).filter(|p| p.len() >= 20) {
            assert!(
                !access.contains(part),
                "the access log contains a token part"
            );
            assert!(
                !debug.contains(part),
                "the edge's logs contain a token part"
            );
        }
    }
}

/// The last character of a base64url string with its unused low bits set: the same bytes
/// under a lenient decoder, refused by a strict one.
fn non_canonical(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (head, last) = text.split_at(text.len() - 1);
    let index = ALPHABET
        .iter()
        .position(|&c| c == last.as_bytes()[0])
        .unwrap();
    // 256-byte RSA signatures end in a character carrying 2 data bits and 4 zero bits.
    assert_eq!(text.len() % 4, 2);
    format!("{head}{}", ALPHABET[index | 1] as char)
}

/// The order n of P-256: r = s = n is the "zero" signature in disguise.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

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
async fn weak_rsa_keys_in_the_jwks_are_skipped_and_logged_once() {
    let (logs, _guard) = Logs::capture();
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
        "jwt: { jwksRefreshInterval: 1s, jwksMinRefetchInterval: 1s }",
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
    assert_eq!(
        reply.message(),
        "token kid is not among the issuer's keys",
        "the weak key was never loaded"
    );
    assert_eq!(edge.agent.request_count(), 0);
    // Several refreshes later, the same JWKS has been read again and again; its weak key was
    // reported once, when first seen.
    edge.issuer
        .wait_for_jwks_fetches(4, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(edge.invoke("weak", Some(&token), "{}").await.status, 401);
    let text = logs.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("weak-rsa-1024") && l.contains("1024 bits"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("at least 2048 are required"));
    assert!(!text.contains(&token), "the token is not logged");
}
