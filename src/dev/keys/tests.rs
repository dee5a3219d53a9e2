use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn decoding_key(key: &SigningKey) -> DecodingKey {
    let jwk: Jwk = serde_json::from_value(key.public_jwk()).unwrap();
    DecodingKey::from_jwk(&jwk).unwrap()
}

/// Verify `token` the way a strict validator would and return its claims.
fn verify(key: &SigningKey, token: &str, iss: &str, aud: &str) -> Value {
    let mut v = Validation::new(key.alg().to_jsonwebtoken());
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    v.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(token, &decoding_key(key), &v).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
    assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    data.claims
}

#[test]
fn every_alg_signs_tokens_jsonwebtoken_accepts() {
    for alg in Alg::ALL {
        let key = SigningKey::generate(alg, Some(format!("kid-{alg}"))).unwrap();
        let opts = MintOptions {
            iss: "http://issuer.test".into(),
            sub: Some("alice".into()),
            aud: vec!["api".into()],
            client_id: Some("client-1".into()),
            scope: Some("invoke read".into()),
            ttl: Duration::from_secs(60),
            claims: vec![("tenant".into(), json!("acme"))],
            ..MintOptions::default()
        };
        let claims = verify(
            &key,
            &mint(&key, &opts).unwrap(),
            "http://issuer.test",
            "api",
        );
        assert_eq!(claims["sub"], "alice", "{alg}");
        assert_eq!(claims["client_id"], "client-1");
        assert_eq!(claims["scope"], "invoke read");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            60
        );
        assert!(claims["jti"].is_string());
    }
}

#[test]
fn alg_names_round_trip() {
    for alg in Alg::ALL {
        assert_eq!(alg.to_string().parse::<Alg>().unwrap(), alg);
        assert_eq!(serde_json::to_value(alg).unwrap(), json!(alg.as_str()));
    }
    assert!("rs256".parse::<Alg>().is_err());
    assert!("HS256".parse::<Alg>().is_err());
    assert!("none".parse::<Alg>().is_err());
}

#[test]
fn pkcs8_pem_round_trips_for_every_key_type() {
    for alg in [Alg::PS384, Alg::ES256, Alg::ES384, Alg::EdDSA] {
        let key = SigningKey::generate(alg, None).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        // Same key, same thumbprint kid; the alg is re-derived from the key type (RSA: RS256).
        let back = SigningKey::from_pem(&pem, None, None).unwrap();
        assert_eq!(back.kid(), key.kid(), "{alg}");
        let mut a = key.public_jwk();
        let mut b = back.public_jwk();
        a["alg"] = Value::Null;
        b["alg"] = Value::Null;
        assert_eq!(a, b);
        // A token from the reloaded key verifies against the original's JWK.
        let back = back.with_alg(alg).unwrap();
        let token = mint(
            &back,
            &MintOptions {
                aud: vec!["x".into()],
                iss: "i".into(),
                ..Default::default()
            },
        );
        verify(&key, &token.unwrap(), "i", "x");
    }
}

#[test]
fn kid_defaults_to_the_rfc7638_thumbprint() {
    for alg in [Alg::RS256, Alg::ES256, Alg::ES384, Alg::EdDSA] {
        let key = SigningKey::generate(alg, None).unwrap();
        let jwk: Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        assert_eq!(
            key.kid(),
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            "{alg}"
        );
    }
}

#[test]
fn public_jwk_has_the_members_a_jwks_needs() {
    let rsa = SigningKey::generate(Alg::RS512, Some("r".into()))
        .unwrap()
        .public_jwk();
    assert_eq!(rsa["kty"], "RSA");
    assert_eq!(rsa["kid"], "r");
    assert_eq!(rsa["use"], "sig");
    assert_eq!(rsa["alg"], "RS512");
    assert_eq!(rsa["e"], "AQAB");
    // 2048-bit modulus: 256 bytes -> 342 base64url characters.
    assert_eq!(rsa["n"].as_str().unwrap().len(), 342);
    assert!(rsa.get("d").is_none());

    let ec = SigningKey::generate(Alg::ES384, None).unwrap().public_jwk();
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str()),
        (Some("EC"), Some("P-384"))
    );
    assert_eq!(ec["x"].as_str().unwrap().len(), 64);
    assert_eq!(ec["y"].as_str().unwrap().len(), 64);

    let ed = SigningKey::generate(Alg::EdDSA, None).unwrap().public_jwk();
    assert_eq!(
        (ed["kty"].as_str(), ed["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(ed["x"].as_str().unwrap().len(), 43);
    assert!(ed.get("y").is_none());
}

#[test]
fn fixtures_load_from_every_encoding_to_the_same_key() {
    let groups: [(&[&str], Alg); 4] = [
        (
            &["rsa2048.pkcs1.pem", "rsa2048.pkcs8.pem", "rsa2048.jwk.json"],
            Alg::RS256,
        ),
        (
            &["ecp256.sec1.pem", "ecp256.pkcs8.pem", "ecp256.jwk.json"],
            Alg::ES256,
        ),
        (
            &["ecp384.sec1.pem", "ecp384.pkcs8.pem", "ecp384.jwk.json"],
            Alg::ES384,
        ),
        (&["ed25519.pkcs8.pem", "ed25519.jwk.json"], Alg::EdDSA),
    ];
    for (files, alg) in groups {
        let keys: Vec<SigningKey> = files
            .iter()
            .map(|f| {
                let text = fixture(f);
                if f.ends_with(".json") {
                    let jwk: Value = serde_json::from_str(&text).unwrap();
                    SigningKey::from_jwk(&jwk).unwrap().with_kid("k")
                } else {
                    SigningKey::from_pem(&text, None, Some("k".into())).unwrap()
                }
            })
            .collect();
        for k in &keys {
            let mut a = k.public_jwk();
            let mut b = keys[0].public_jwk();
            a["alg"] = Value::Null;
            b["alg"] = Value::Null;
            assert_eq!(a, b, "{files:?}");
            let k = k.with_alg(alg).unwrap();
            let token = mint(
                &k,
                &MintOptions {
                    iss: "i".into(),
                    aud: vec!["a".into()],
                    ..Default::default()
                },
            );
            verify(&keys[0].with_alg(alg).unwrap(), &token.unwrap(), "i", "a");
        }
    }
    // The JWK's own alg and kid win.
    let jwk: Value = serde_json::from_str(&fixture("rsa2048.jwk.json")).unwrap();
    let k = SigningKey::from_jwk(&jwk).unwrap();
    assert_eq!((k.alg(), k.kid()), (Alg::PS256, "fixture-rsa"));
    // A JWK Set with one private key is accepted too.
    assert!(SigningKey::from_jwk(&json!({ "keys": [jwk] })).is_ok());
}

#[test]
fn bad_keys_give_errors_that_say_why() {
    let err = |r: Result<SigningKey, KeyError>| r.unwrap_err().to_string();
    let p256 = fixture("ecp256.pkcs8.pem");
    assert!(err(SigningKey::from_pem(&p256, Some(Alg::ES384), None)).contains("ES384"));
    assert!(err(SigningKey::from_pem(&p256, Some(Alg::RS256), None)).contains("RS256"));
    let sec1 = fixture("ecp256.sec1.pem");
    assert!(err(SigningKey::from_pem(&sec1, Some(Alg::EdDSA), None)).contains("EdDSA"));
    assert!(err(SigningKey::from_pem("hello", None, None)).contains("no PEM block"));
    let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(err(SigningKey::from_pem(public, None, None)).contains("private key"));
    let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert!(err(SigningKey::from_pem(enc, None, None)).contains("encrypted"));
    assert!(
        err(SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAA",
            None,
            None
        ))
        .contains("END")
    );
    let rsa = SigningKey::generate(Alg::RS256, None).unwrap();
    assert!(err(SigningKey::from_jwk(&rsa.public_jwk())).contains("public JWK"));
    assert!(
        err(SigningKey::from_jwk(
            &json!({"kty":"oct","k":"AAAA","d":"x"})
        ))
        .contains("HMAC")
    );
    assert!(matches!(
        rsa.with_alg(Alg::ES256),
        Err(KeyError::AlgMismatch { .. })
    ));
    assert!(matches!(
        SigningKey::generate_rsa_bits(1024, Alg::RS256, None),
        Err(KeyError::Unsupported(_))
    ));
    assert!(
        SigningKey::generate(Alg::ES256, None)
            .unwrap()
            .with_alg(Alg::ES384)
            .is_err()
    );
}

#[test]
fn debug_never_prints_private_material() {
    for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let key = SigningKey::generate(alg, None).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!shown.contains(&body));
        let state = DevState::new(&key, "i", "d", "j").unwrap();
        assert!(!format!("{state:?}").contains(&body));
    }
}

#[test]
fn sign_raw_keeps_header_and_payload_bytes_verbatim() {
    let key = SigningKey::generate(Alg::ES256, Some("k".into())).unwrap();
    let header = json!({ "alg": "HS256", "kid": "other", "crit": ["exp"] });
    let claims = br#"{"sub":"a","sub":"b"}"#;
    let token = key.sign_raw(&header, claims).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    assert_eq!(decode(parts[1]), claims);
    assert_eq!(
        serde_json::from_slice::<Value>(&decode(parts[0])).unwrap(),
        header
    );
    // The signature is a valid ES256 signature over the first two parts, whatever alg says.
    let ok = jsonwebtoken::crypto::verify(
        parts[2],
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &decoding_key(&key),
        jsonwebtoken::Algorithm::ES256,
    );
    assert!(ok.unwrap());
    let raw = key
        .sign_parts(br#"{"alg":"ES256","alg":"none"}"#, b"not json")
        .unwrap();
    assert_eq!(
        decode(raw.split('.').next().unwrap()),
        br#"{"alg":"ES256","alg":"none"}"#
    );
}

#[test]
fn mint_options_shape_the_claims() {
    let key = SigningKey::generate(Alg::EdDSA, None).unwrap();
    let opts = MintOptions {
        iss: "i".into(),
        aud: vec!["a".into(), "b".into()],
        issued_at: Some(1_000),
        not_before: Some(990),
        ttl: Duration::from_secs(30),
        jti: false,
        claims: vec![("exp".into(), json!("soon")), ("scp".into(), json!(["x"]))],
        ..MintOptions::default()
    };
    let c = opts.claims_json();
    assert_eq!(
        c,
        json!({"iss":"i","aud":["a","b"],"iat":1000,"nbf":990,"exp":"soon","scp":["x"]})
    );
    let token = mint(&key, &opts).unwrap();
    let payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), c);
    // An empty options set still carries iat/exp and nothing else but jti.
    let bare = MintOptions::default().claims_json();
    let mut names: Vec<&String> = bare.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "jti"]);
    assert_ne!(bare["jti"], MintOptions::default().claims_json()["jti"]);
}

#[test]
fn claim_args_parse_json_or_fall_back_to_strings() {
    let p = |s| parse_claim_arg(s).unwrap();
    assert_eq!(p("n=3"), ("n".into(), json!(3)));
    assert_eq!(p("ok=true"), ("ok".into(), json!(true)));
    assert_eq!(
        p(r#"groups=["a","b"]"#),
        ("groups".into(), json!(["a", "b"]))
    );
    assert_eq!(p("tenant=acme"), ("tenant".into(), json!("acme")));
    assert_eq!(
        p("cognito:groups=admin"),
        ("cognito:groups".into(), json!("admin"))
    );
    assert_eq!(p("eq=a=b"), ("eq".into(), json!("a=b")));
    assert_eq!(p("empty="), ("empty".into(), json!("")));
    assert_eq!(p(r#"s="quoted""#), ("s".into(), json!("quoted")));
    assert!(parse_claim_arg("novalue").is_err());
    assert!(parse_claim_arg("=v").is_err());
}

#[test]
fn dev_state_round_trips_privately_and_detects_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("state.json");
    let err = DevState::read_from(&path).unwrap_err();
    assert!(err.to_string().contains("start it first"), "{err}");

    let key = SigningKey::generate(Alg::ES256, None).unwrap();
    let mut state = DevState::new(&key, "http://127.0.0.1:1", "d", "j").unwrap();
    state.client_id = Some("dev-client".into());
    state.scope = Some("invoke".into());
    state.audience = vec!["dev-api".into()];
    state.write_to(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
    let back = DevState::read_from(&path).unwrap();
    assert_eq!(back, state);
    let token = mint(&back.signing_key().unwrap(), &back.mint_options()).unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["client_id"], "dev-client");
    verify(&key, &token, "http://127.0.0.1:1", "dev-api");

    state.pid = u32::MAX;
    state.write_to(&path).unwrap();
    if std::path::Path::new("/proc/self").exists() {
        let err = DevState::read_from(&path).unwrap_err();
        assert!(err.to_string().contains("no longer running"), "{err}");
    }
    DevState::remove_from(&path); // not ours: left alone
    assert!(path.exists());
}

#[test]
fn weak_rsa_fixture_is_validly_signed_but_rejected_by_jsonwebtoken() {
    let jwk: Jwk = serde_json::from_str(&fixture("rsa1024.public.jwk.json")).unwrap();
    let token = fixture("rsa1024.token");
    let token = token.trim();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        panic!("not RSA")
    };
    let n = URL_SAFE_NO_PAD.decode(&rsa.n).unwrap();
    let e = URL_SAFE_NO_PAD.decode(&rsa.e).unwrap();
    let legacy = sig::RsaPublicKeyComponents { n: &n, e: &e };
    let raw_sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert!(
        legacy
            .verify(
                &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                input.as_bytes(),
                &raw_sig
            )
            .is_ok()
    );
    let ok = jsonwebtoken::crypto::verify(
        signature,
        input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS256,
    );
    assert!(!matches!(ok, Ok(true)));
}
