//! JWK encoding (RFC 7517/7518/8037): public members, RFC 7638 thumbprints, and private JWK
//! parsing.

use aws_lc_rs::digest;
use aws_lc_rs::rsa::KeyPairComponents;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::{Alg, Curve, KeyError, Pair, rsa_public};

/// The key-type members of the public JWK (no `kid`, `use` or `alg`).
pub(super) fn public_members(pair: &Pair) -> Map<String, Value> {
    let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    let mut m = Map::new();
    match pair {
        Pair::Rsa(p) => {
            let (n, e) = rsa_public(p);
            m.insert("kty".into(), "RSA".into());
            m.insert("n".into(), b64(&n));
            m.insert("e".into(), b64(&e));
        }
        Pair::Ec(p, curve) => {
            // Uncompressed SEC1 point: 0x04 || x || y, each coordinate the field size.
            let point = p.public_key().as_ref();
            let (crv, size) = match curve {
                Curve::P256 => ("P-256", 32),
                Curve::P384 => ("P-384", 48),
            };
            let (x, y) = point
                .get(1..)
                .unwrap_or_default()
                .split_at(size.min(point.len() / 2));
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), b64(x));
            m.insert("y".into(), b64(y));
        }
        Pair::Ed(p) => {
            m.insert("kty".into(), "OKP".into());
            m.insert("crv".into(), "Ed25519".into());
            m.insert("x".into(), b64(p.public_key().as_ref()));
        }
    }
    m
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url): a stable `kid` for a key.
pub(super) fn thumbprint(pair: &Pair) -> String {
    let m = public_members(pair);
    // The required members only, in lexicographic order, no whitespace. serde_json's Map is
    // a BTreeMap here (no preserve_order feature), so serialising sorts the keys for us.
    let required: &[&str] = match pair {
        Pair::Rsa(_) => &["e", "kty", "n"],
        Pair::Ec(..) => &["crv", "kty", "x", "y"],
        Pair::Ed(_) => &["crv", "kty", "x"],
    };
    let mut canon = String::from("{");
    for (i, name) in required.iter().enumerate() {
        if i > 0 {
            canon.push(',');
        }
        let value = m.get(*name).and_then(Value::as_str).unwrap_or_default();
        canon.push_str(&format!("\"{name}\":\"{value}\""));
    }
    canon.push('}');
    let hash = digest::digest(&digest::SHA256, canon.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.as_ref())
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Jwk(format!("missing string member {name:?}")))
}

fn bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let s = member(jwk, name)?;
    // Tolerate padding: some tools emit it although RFC 7515 says not to.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| KeyError::Jwk(format!("member {name:?} is not base64url: {e}")))
}

/// Left-pad a big-endian integer to `len` bytes (JWK `d` for EC keys may be shortened).
fn fixed(mut b: Vec<u8>, len: usize) -> Vec<u8> {
    while b.len() < len {
        b.insert(0, 0);
    }
    b
}

/// Strip leading zero bytes: aws-lc-rs wants `n` and `e` minimal.
fn minimal(b: Vec<u8>) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

pub(super) fn parse_private_jwk(
    value: &Value,
) -> Result<(Pair, Option<Alg>, Option<String>), KeyError> {
    let jwk = match value.get("keys") {
        Some(Value::Array(keys)) => {
            let private: Vec<&Value> = keys.iter().filter(|k| k.get("d").is_some()).collect();
            match private.as_slice() {
                [one] => *one,
                [] => return Err(KeyError::Jwk("the JWK Set holds no private key".into())),
                _ => {
                    return Err(KeyError::Jwk(
                        "the JWK Set holds several private keys: pass one JWK".into(),
                    ));
                }
            }
        }
        _ => value,
    };
    let jwk = jwk
        .as_object()
        .ok_or_else(|| KeyError::Jwk("expected a JSON object".into()))?;
    if !jwk.contains_key("d") {
        return Err(KeyError::Jwk(
            "this is a public JWK (no \"d\"): signing needs the private key".into(),
        ));
    }
    let alg = match jwk.get("alg").and_then(Value::as_str) {
        Some(a) => Some(a.parse::<Alg>()?),
        None => None,
    };
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let pair = match member(jwk, "kty")? {
        "RSA" => {
            let missing: Vec<&str> = ["p", "q", "dp", "dq", "qi"]
                .into_iter()
                .filter(|m| !jwk.contains_key(*m))
                .collect();
            if !missing.is_empty() {
                return Err(KeyError::Jwk(format!(
                    "RSA JWK lacks the CRT members {}: aws-lc-rs needs them",
                    missing.join(", ")
                )));
            }
            let components = KeyPairComponents {
                public_key: RsaPublicKeyComponents {
                    n: minimal(bytes(jwk, "n")?),
                    e: minimal(bytes(jwk, "e")?),
                },
                d: bytes(jwk, "d")?,
                p: bytes(jwk, "p")?,
                q: bytes(jwk, "q")?,
                dP: bytes(jwk, "dp")?,
                dQ: bytes(jwk, "dq")?,
                qInv: bytes(jwk, "qi")?,
            };
            Pair::Rsa(
                RsaKeyPair::from_components(&components)
                    .map_err(|e| KeyError::Jwk(format!("RSA key rejected: {e}")))?,
            )
        }
        "EC" => {
            let (signing, curve, size) = match member(jwk, "crv")? {
                "P-256" => (&ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256, 32),
                "P-384" => (&ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384, 48),
                other => {
                    return Err(KeyError::Jwk(format!(
                        "EC curve {other:?} is not supported (P-256, P-384)"
                    )));
                }
            };
            let mut point = vec![4u8];
            point.extend(fixed(bytes(jwk, "x")?, size));
            point.extend(fixed(bytes(jwk, "y")?, size));
            let d = fixed(bytes(jwk, "d")?, size);
            Pair::Ec(
                EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &point)
                    .map_err(|e| KeyError::Jwk(format!("EC key rejected: {e}")))?,
                curve,
            )
        }
        "OKP" => {
            let crv = member(jwk, "crv")?;
            if crv != "Ed25519" {
                return Err(KeyError::Jwk(format!(
                    "OKP curve {crv:?} is not supported (Ed25519)"
                )));
            }
            Pair::Ed(
                Ed25519KeyPair::from_seed_and_public_key(&bytes(jwk, "d")?, &bytes(jwk, "x")?)
                    .map_err(|e| KeyError::Jwk(format!("Ed25519 key rejected: {e}")))?,
            )
        }
        other => {
            return Err(KeyError::Jwk(format!(
                "kty {other:?} cannot sign here (RSA, EC or OKP; HMAC keys are never accepted)"
            )));
        }
    };
    Ok((pair, alg, kid))
}
