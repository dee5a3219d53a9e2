//! An issuer's signing keys: a JWKS parsed into verification keys that are ready to use.
//!
//! Tolerant of the set, strict about each key: a JWKS with one unusable entry (an HMAC
//! secret, an encryption key, an unknown curve, an RSA modulus under 2048 bits, a malformed
//! member) still yields every other key, and each skipped entry is reported once so the
//! operator can see why. A key is usable only for the algorithms its type allows, narrowed to
//! its own `alg` when the JWK names one; that is what stops algorithm confusion.
//!
//! Keys are parsed once, when the JWKS is loaded, into aws-lc-rs `ParsedPublicKey`s (one per
//! algorithm the key allows), so that verifying a token does not parse the key again: this
//! is most of the cost a cache miss pays on top of the signature itself (see
//! docs/performance.md). The JWK members are read with `jsonwebtoken`'s JWK types.
//!
//! ```
//! use gatehouse::auth::keys::parse_jwks;
//! let parsed = parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
//! assert!(parsed.keys.is_empty());
//! assert_eq!(parsed.skipped.len(), 1);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use serde_json::Value;

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// What kind of public key this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    Ed25519,
}

/// One public key from the issuer's JWKS, ready to verify signatures.
pub struct VerifyKey {
    pub kid: Option<Arc<str>>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it has one: then only that algorithm is accepted.
    pub jwk_alg: Option<Algorithm>,
    /// The key material as published (`n`/`e`, `x`/`y`, `x`), to recognise an unchanged key
    /// across refreshes and keep its identity (the verified-token cache holds it weakly).
    fingerprint: String,
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("jwk_alg", &self.jwk_alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether a token signed with `alg` may be checked with this key.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Verifies `signature` over `message` with `alg`; false for any mismatch or refusal.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// The usable keys of one JWKS document, with the reasons other entries were skipped.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyKey>,
    pub skipped: Vec<String>,
}

/// Parses a JWKS document. Fails only when the document itself is not a JWKS.
pub fn parse_jwks(json: &[u8]) -> Result<ParsedJwks, String> {
    let doc: Value = serde_json::from_slice(json).map_err(|_| "JWKS is not JSON".to_owned())?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no \"keys\" array".to_owned())?;
    let mut parsed = ParsedJwks::default();
    for (index, entry) in entries.iter().enumerate() {
        match parse_key(entry) {
            Ok(key) => parsed.keys.push(key),
            Err(reason) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                let kid: String = kid.chars().filter(|c| !c.is_control()).take(64).collect();
                parsed
                    .skipped
                    .push(format!("key #{index} (kid {kid:?}) skipped: {reason}"));
            }
        }
    }
    Ok(parsed)
}

fn parse_key(entry: &Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "malformed JWK".to_owned())?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("its \"use\" is not \"sig\"".into()),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("its \"key_ops\" do not include \"verify\"".into());
    }
    let jwk_alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => {
            Some(signature_alg(alg).ok_or("its \"alg\" is not an asymmetric signature algorithm")?)
        }
    };
    let kid = jwk.common.key_id.as_deref().map(Arc::from);
    let (kind, fingerprint, verifiers) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = decode(&rsa.n, "n")?;
            let e = decode(&rsa.e, "e")?;
            let bits = bit_length(&n);
            if bits < 2048 {
                return Err(format!(
                    "RSA key has {bits} bits; at least 2048 are required"
                ));
            }
            if bits > 8192 {
                return Err(format!(
                    "RSA key has {bits} bits; at most 8192 are supported"
                ));
            }
            let components = RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            let mut verifiers = Vec::new();
            for alg in RSA_ALGS {
                if jwk_alg.is_some_and(|a| a != alg) {
                    continue;
                }
                let parsed = components
                    .to_parsed_public_key(rsa_params(alg))
                    .map_err(|e| format!("RSA key rejected: {e}"))?;
                verifiers.push((alg, parsed));
            }
            if verifiers.is_empty() {
                return Err("its \"alg\" is not an RSA algorithm".into());
            }
            (
                KeyKind::Rsa { bits },
                format!("{}.{}", rsa.n, rsa.e),
                verifiers,
            )
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (kind, alg, algorithm, width): (_, _, &'static dyn VerificationAlgorithm, _) =
                match ec.curve {
                    EllipticCurve::P256 => (
                        KeyKind::EcP256,
                        Algorithm::ES256,
                        &signature::ECDSA_P256_SHA256_FIXED,
                        32,
                    ),
                    EllipticCurve::P384 => (
                        KeyKind::EcP384,
                        Algorithm::ES384,
                        &signature::ECDSA_P384_SHA384_FIXED,
                        48,
                    ),
                    _ => return Err("EC curve is not P-256 or P-384".into()),
                };
            if jwk_alg.is_some_and(|a| a != alg) {
                return Err("its \"alg\" does not match its curve".into());
            }
            let x = decode(&ec.x, "x")?;
            let y = decode(&ec.y, "y")?;
            if x.len() != width || y.len() != width {
                return Err("EC coordinates have the wrong length for the curve".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * width);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let parsed = ParsedPublicKey::new(algorithm, &point)
                .map_err(|e| format!("EC key rejected: {e}"))?;
            (kind, format!("{}.{}", ec.x, ec.y), vec![(alg, parsed)])
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err("OKP curve is not Ed25519".into());
            }
            if jwk_alg.is_some_and(|a| a != Algorithm::EdDSA) {
                return Err("its \"alg\" does not match its curve".into());
            }
            let x = decode(&okp.x, "x")?;
            let parsed = ParsedPublicKey::new(&signature::ED25519, &x)
                .map_err(|e| format!("Ed25519 key rejected: {e}"))?;
            (
                KeyKind::Ed25519,
                okp.x.clone(),
                vec![(Algorithm::EdDSA, parsed)],
            )
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are never used: HMAC tokens are refused".into());
        }
        _ => return Err("unsupported key type".into()),
    };
    Ok(VerifyKey {
        kid,
        kind,
        jwk_alg,
        fingerprint,
        verifiers,
    })
}

fn decode(value: &str, member: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("member \"{member}\" is not base64url"))
}

fn bit_length(big_endian: &[u8]) -> usize {
    let Some(first) = big_endian.iter().position(|&b| b != 0) else {
        return 0;
    };
    let leading = big_endian[first].leading_zeros() as usize;
    (big_endian.len() - first) * 8 - leading
}

fn rsa_params(alg: Algorithm) -> &'static RsaParameters {
    match alg {
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn signature_alg(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The outcome of looking a token's key up.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<VerifyKey>),
    /// The `kid` is not published (a refetch may help).
    UnknownKid,
    /// The `kid` is published, but not for this algorithm.
    WrongAlgorithm,
    /// No `kid` and not exactly one key for the algorithm.
    NoUniqueKey,
}

/// The current keys of one issuer.
#[derive(Debug)]
pub struct KeySet {
    /// The discovery document's `issuer`: a token's `iss` must equal it exactly.
    pub issuer: Arc<str>,
    pub keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<Arc<str>, Vec<Arc<VerifyKey>>>,
    /// When these keys were fetched (monotonic, for staleness).
    pub fetched_at: Instant,
    /// The same moment as wall-clock time, for operators.
    pub fetched_at_wall: SystemTime,
}

impl KeySet {
    /// Builds a key set, reusing the `Arc` of every key that is unchanged since `previous`
    /// so that tokens cached against it stay valid; a key that disappeared from the JWKS is
    /// dropped, which invalidates the tokens it verified.
    pub fn new(issuer: Arc<str>, fresh: Vec<VerifyKey>, previous: Option<&KeySet>) -> Self {
        let keys: Vec<Arc<VerifyKey>> = fresh
            .into_iter()
            .map(|key| {
                previous
                    .and_then(|p| {
                        p.keys.iter().find(|old| {
                            old.kid == key.kid
                                && old.fingerprint == key.fingerprint
                                && old.jwk_alg == key.jwk_alg
                        })
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::new(key))
            })
            .collect();
        let mut by_kid: HashMap<Arc<str>, Vec<Arc<VerifyKey>>> = HashMap::new();
        for key in &keys {
            if let Some(kid) = &key.kid {
                by_kid.entry(kid.clone()).or_default().push(key.clone());
            }
        }
        Self {
            issuer,
            keys,
            by_kid,
            fetched_at: Instant::now(),
            fetched_at_wall: SystemTime::now(),
        }
    }

    /// Finds the key for a token: by `kid` when it has one; otherwise the single key that
    /// accepts `alg`, if there is exactly one (never "the first key").
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Lookup::UnknownKid,
                Some(keys) => keys
                    .iter()
                    .find(|k| k.accepts(alg))
                    .map_or(Lookup::WrongAlgorithm, |k| Lookup::Found(k.clone())),
            },
            None => {
                let mut matching = self.keys.iter().filter(|k| k.accepts(alg));
                match (matching.next(), matching.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    _ => Lookup::NoUniqueKey,
                }
            }
        }
    }

    /// Whether `key` is still one of these keys.
    pub fn contains(&self, key: &Arc<VerifyKey>) -> bool {
        self.keys.iter().any(|k| Arc::ptr_eq(k, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(kid: &str, alg: Option<&str>) -> (RsaKeyPair, Value) {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let mut jwk = serde_json::json!({"kty":"RSA","kid":kid,"n":b64(&c.n),"e":b64(&c.e)});
        if let Some(alg) = alg {
            jwk["alg"] = alg.into();
        }
        (pair, jwk)
    }

    fn sign_rsa(pair: &RsaKeyPair, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg,
            &mut sig,
        )
        .unwrap();
        sig
    }

    #[test]
    fn rsa_key_verifies_and_respects_jwk_alg() {
        let (pair, jwk) = rsa_jwk("r1", None);
        let parsed = parse_jwks(serde_json::json!({"keys":[jwk]}).to_string().as_bytes()).unwrap();
        let key = &parsed.keys[0];
        assert_eq!(key.kind, KeyKind::Rsa { bits: 2048 });
        let sig = sign_rsa(&pair, b"msg");
        assert!(key.verify(Algorithm::RS256, b"msg", &sig));
        assert!(!key.verify(Algorithm::RS256, b"other", &sig));
        assert!(!key.verify(Algorithm::ES256, b"msg", &sig));
        assert!(key.accepts(Algorithm::PS512));

        let (_, pinned) = rsa_jwk("r2", Some("PS256"));
        let parsed =
            parse_jwks(serde_json::json!({"keys":[pinned]}).to_string().as_bytes()).unwrap();
        assert!(parsed.keys[0].accepts(Algorithm::PS256));
        assert!(!parsed.keys[0].accepts(Algorithm::RS256));
    }

    #[test]
    fn ec_and_ed_keys() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = ec.public_key().as_ref();
        let ec_jwk = serde_json::json!({"kty":"EC","crv":"P-256","kid":"e1","x":b64(&point[1..33]),"y":b64(&point[33..])});
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":"d1","x":b64(ed.public_key().as_ref())});
        let parsed = parse_jwks(
            serde_json::json!({"keys":[ec_jwk, ed_jwk]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.skipped, Vec::<String>::new());
        let sig = ec.sign(&rng, b"m").unwrap();
        assert!(parsed.keys[0].verify(Algorithm::ES256, b"m", sig.as_ref()));
        assert!(!parsed.keys[0].accepts(Algorithm::ES384));
        let sig = ed.sign(b"m");
        assert!(parsed.keys[1].verify(Algorithm::EdDSA, b"m", sig.as_ref()));
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let (_, good) = rsa_jwk("good", None);
        let small_n = b64(&[0xC5; 128]); // 1024 bits
        let keys = serde_json::json!({"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"small","n":small_n,"e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":good["n"],"e":"AQAB"},
            {"kty":"RSA","kid":"wrap","alg":"RSA-OAEP","n":good["n"],"e":"AQAB"},
            {"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"},
            {"kty":"EC","crv":"P-256","kid":"badlen","x":"AA","y":"AA"},
            {"kty":"RSA","kid":"mismatch","alg":"ES256","n":good["n"],"e":"AQAB"},
            {"kty":"weird","kid":"x"},
            "not an object",
            good,
        ]});
        let parsed = parse_jwks(keys.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.keys.len(), 1, "{:?}", parsed.skipped);
        assert_eq!(parsed.skipped.len(), 9);
        assert!(
            parsed.skipped[1].contains("1024 bits"),
            "{}",
            parsed.skipped[1]
        );
        assert!(parsed.skipped[0].contains("symmetric"));
    }

    #[test]
    fn documents_that_are_not_jwks() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys":{}}"#).is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().keys.is_empty());
    }

    #[test]
    fn lookup_by_kid_and_without_kid() {
        let (_, a) = rsa_jwk("a", None);
        let (_, b) = rsa_jwk("b", None);
        let parsed = parse_jwks(serde_json::json!({"keys":[a]}).to_string().as_bytes()).unwrap();
        let set = KeySet::new("iss".into(), parsed.keys, None);
        assert!(matches!(
            set.find(Some("a"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("a"), Algorithm::ES256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("z"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.find(None, Algorithm::RS256), Lookup::Found(_)));

        // Two RSA keys: a token without kid matches neither ("never the first key").
        let (_, a2) = rsa_jwk("a", None);
        let parsed =
            parse_jwks(serde_json::json!({"keys":[a2, b]}).to_string().as_bytes()).unwrap();
        let set2 = KeySet::new("iss".into(), parsed.keys, Some(&set));
        assert!(matches!(
            set2.find(None, Algorithm::RS256),
            Lookup::NoUniqueKey
        ));
        // "a" was re-generated with new material: a different key, so the old one is gone.
        let Lookup::Found(old_a) = set.find(Some("a"), Algorithm::RS256) else {
            panic!()
        };
        assert!(!set2.contains(&old_a));
    }

    #[test]
    fn unchanged_keys_keep_their_identity_across_refreshes() {
        let (_, a) = rsa_jwk("a", None);
        let doc = serde_json::json!({"keys":[a]}).to_string();
        let first = KeySet::new("iss".into(), parse_jwks(doc.as_bytes()).unwrap().keys, None);
        let second = KeySet::new(
            "iss".into(),
            parse_jwks(doc.as_bytes()).unwrap().keys,
            Some(&first),
        );
        assert!(Arc::ptr_eq(&first.keys[0], &second.keys[0]));
        let empty = KeySet::new("iss".into(), Vec::new(), Some(&second));
        assert!(!empty.contains(&second.keys[0]));
    }
}
