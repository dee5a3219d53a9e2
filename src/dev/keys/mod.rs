//! Signing keys for development and tests: generate, load (PEM or private JWK), publish (public
//! JWK) and sign JWTs.
//!
//! Signing goes straight through aws-lc-rs, the same backend jsonwebtoken uses for verification,
//! so a key is parsed once and reused for every token (jsonwebtoken's RSA signer re-parses the
//! DER on every call, which shows up when `gatehouse bench --mint` makes thousands of tokens).
//! Tokens are checked against `jsonwebtoken::decode` in the tests below, for every algorithm.
//!
//! ```
//! use gatehouse::dev::keys::{mint, Alg, MintOptions, SigningKey};
//! use std::time::Duration;
//!
//! let key = SigningKey::generate(Alg::ES256, Some("k1".into()))?;
//! let token = mint(&key, &MintOptions {
//!     iss: "http://127.0.0.1:9000".into(),
//!     sub: Some("alice".into()),
//!     aud: vec!["my-api".into()],
//!     scope: Some("invoke".into()),
//!     ttl: Duration::from_secs(300),
//!     ..MintOptions::default()
//! })?;
//! assert_eq!(token.split('.').count(), 3);
//! assert_eq!(key.public_jwk()["kid"], "k1");
//! # Ok::<(), gatehouse::dev::keys::KeyError>(())
//! ```

mod jwk;
mod mint;
mod pem;
mod state;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self as sig, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub(crate) use mint::now_unix;
pub use mint::{MintOptions, mint, parse_claim_arg};
pub use state::{DevState, DevStateError};

/// A JWS algorithm gatehouse accepts (the JWA names; HMAC and `none` are deliberately absent).
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// Every algorithm, in the order the spec lists them.
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JWA name, as it appears in a JWS header.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The matching jsonwebtoken algorithm (for verifying what we sign).
    pub fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Alg::RS256 => J::RS256,
            Alg::RS384 => J::RS384,
            Alg::RS512 => J::RS512,
            Alg::PS256 => J::PS256,
            Alg::PS384 => J::PS384,
            Alg::PS512 => J::PS512,
            Alg::ES256 => J::ES256,
            Alg::ES384 => J::ES384,
            Alg::EdDSA => J::EdDSA,
        }
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
        )
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // JWA names are case-sensitive; so is this, to match what a verifier will do.
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlg(s.to_owned()))
    }
}

/// What went wrong making, loading or using a key.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// Not one of [`Alg::ALL`].
    UnknownAlg(String),
    /// The key material is fine but not for this algorithm (e.g. a P-256 key with `ES384`).
    AlgMismatch { alg: Alg, key: &'static str },
    /// The PEM text could not be used; the message says why and what to do.
    Pem(String),
    /// The JWK could not be used; the message names the member.
    Jwk(String),
    /// Something aws-lc-rs cannot do (e.g. RSA keys under 2048 bits).
    Unsupported(String),
    /// aws-lc-rs failed to generate, sign or serialise.
    Crypto(&'static str),
    /// Claims or header could not be serialised.
    Json(serde_json::Error),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::UnknownAlg(a) => write!(
                f,
                "unknown algorithm {a:?}: use one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA"
            ),
            KeyError::AlgMismatch { alg, key } => {
                write!(f, "algorithm {alg} cannot be used with a {key} key")
            }
            KeyError::Pem(m) => write!(f, "PEM key: {m}"),
            KeyError::Jwk(m) => write!(f, "JWK: {m}"),
            KeyError::Unsupported(m) => f.write_str(m),
            KeyError::Crypto(what) => write!(f, "crypto failure: {what}"),
            KeyError::Json(e) => write!(f, "JSON: {e}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for KeyError {
    fn from(e: serde_json::Error) -> Self {
        KeyError::Json(e)
    }
}

/// The private half. aws-lc-rs key pairs are not `Clone`, hence the `Arc` in [`SigningKey`].
enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, Curve),
    Ed(Ed25519KeyPair),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Pair {
    fn describe(&self) -> &'static str {
        match self {
            Pair::Rsa(_) => "RSA",
            Pair::Ec(_, Curve::P256) => "P-256",
            Pair::Ec(_, Curve::P384) => "P-384",
            Pair::Ed(_) => "Ed25519",
        }
    }

    /// The algorithm a key of this type signs with when none is given.
    fn default_alg(&self) -> Alg {
        match self {
            Pair::Rsa(_) => Alg::RS256,
            Pair::Ec(_, Curve::P256) => Alg::ES256,
            Pair::Ec(_, Curve::P384) => Alg::ES384,
            Pair::Ed(_) => Alg::EdDSA,
        }
    }

    fn supports(&self, alg: Alg) -> bool {
        match self {
            Pair::Rsa(_) => alg.is_rsa(),
            Pair::Ec(_, Curve::P256) => alg == Alg::ES256,
            Pair::Ec(_, Curve::P384) => alg == Alg::ES384,
            Pair::Ed(_) => alg == Alg::EdDSA,
        }
    }
}

/// A private signing key with its algorithm and `kid`. Cheap to clone (the key pair is shared).
///
/// `Debug` shows the algorithm, kid and key type only, never private material.
#[derive(Clone)]
pub struct SigningKey {
    alg: Alg,
    kid: Arc<str>,
    pair: Arc<Pair>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &self.pair.describe())
            .field("private", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// A fresh key for `alg`: RSA 2048, P-256, P-384 or Ed25519. Without a `kid`, the key's
    /// RFC 7638 thumbprint is used, so the same key always gets the same `kid`.
    pub fn generate(alg: Alg, kid: Option<String>) -> Result<Self, KeyError> {
        let pair = match alg {
            a if a.is_rsa() => Pair::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| KeyError::Crypto("RSA key generation"))?,
            ),
            Alg::ES256 => Pair::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Crypto("P-256 key generation"))?,
                Curve::P256,
            ),
            Alg::ES384 => Pair::Ec(
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(|_| KeyError::Crypto("P-384 key generation"))?,
                Curve::P384,
            ),
            _ => Pair::Ed(
                Ed25519KeyPair::generate()
                    .map_err(|_| KeyError::Crypto("Ed25519 key generation"))?,
            ),
        };
        Self::assemble(pair, Some(alg), kid)
    }

    /// A fresh RSA key of `bits` for an RS*/PS* `alg`.
    ///
    /// aws-lc-rs only generates (and only signs with) 2048, 3072, 4096 and 8192-bit keys; any
    /// other size is [`KeyError::Unsupported`]. Weak-key tests use the pre-signed 1024-bit token
    /// in `tests/fixtures/keys/` instead.
    pub fn generate_rsa_bits(bits: usize, alg: Alg, kid: Option<String>) -> Result<Self, KeyError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            _ => {
                return Err(KeyError::Unsupported(format!(
                    "RSA keys of {bits} bits are not supported: aws-lc-rs generates and signs with \
                     2048, 3072, 4096 or 8192-bit keys only"
                )));
            }
        };
        let pair =
            RsaKeyPair::generate(size).map_err(|_| KeyError::Crypto("RSA key generation"))?;
        Self::assemble(Pair::Rsa(pair), Some(alg), kid)
    }

    /// Load a private key from PEM: PKCS#8 (`PRIVATE KEY`, any type), PKCS#1 (`RSA PRIVATE KEY`)
    /// or SEC1 (`EC PRIVATE KEY`, an `EC PARAMETERS` block before it is skipped). Without `alg`
    /// the key type decides: RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA.
    pub fn from_pem(pem: &str, alg: Option<Alg>, kid: Option<String>) -> Result<Self, KeyError> {
        let pair = pem::parse_private_key(pem, alg)?;
        Self::assemble(pair, alg, kid)
    }

    /// Load a private JWK (RSA with CRT members, EC P-256/P-384, OKP Ed25519), or a JWK Set
    /// holding exactly one private key. `alg` and `kid` come from the JWK when it has them.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        let (pair, alg, kid) = jwk::parse_private_jwk(jwk)?;
        Self::assemble(pair, alg, kid)
    }

    fn assemble(pair: Pair, alg: Option<Alg>, kid: Option<String>) -> Result<Self, KeyError> {
        let alg = alg.unwrap_or_else(|| pair.default_alg());
        if !pair.supports(alg) {
            return Err(KeyError::AlgMismatch {
                alg,
                key: pair.describe(),
            });
        }
        let kid = match kid {
            Some(k) => k,
            None => jwk::thumbprint(&pair),
        };
        Ok(SigningKey {
            alg,
            kid: kid.into(),
            pair: Arc::new(pair),
        })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The `kid` put in token headers and the public JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The same key under another `kid` (for kid-collision and kid-mismatch tests).
    pub fn with_kid(&self, kid: impl Into<String>) -> SigningKey {
        SigningKey {
            kid: kid.into().into(),
            ..self.clone()
        }
    }

    /// The same key signing with another algorithm of its family (RS256 ↔ PS512 on one RSA key).
    pub fn with_alg(&self, alg: Alg) -> Result<SigningKey, KeyError> {
        if !self.pair.supports(alg) {
            return Err(KeyError::AlgMismatch {
                alg,
                key: self.pair.describe(),
            });
        }
        Ok(SigningKey {
            alg,
            ..self.clone()
        })
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), readable by openssl.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Vec<u8> = match &*self.pair {
            Pair::Rsa(p) => AsDer::<Pkcs8V1Der<'static>>::as_der(p)
                .map_err(|_| KeyError::Crypto("PKCS#8 export"))?
                .as_ref()
                .to_vec(),
            Pair::Ec(p, _) => p
                .to_pkcs8v1()
                .map_err(|_| KeyError::Crypto("PKCS#8 export"))?
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p
                .to_pkcs8v1()
                .map_err(|_| KeyError::Crypto("PKCS#8 export"))?
                .as_ref()
                .to_vec(),
        };
        Ok(pem::encode("PRIVATE KEY", &der))
    }

    /// The public JWK as an issuer publishes it: `kty`, `kid`, `use: sig`, `alg`, and `n`/`e`,
    /// `crv`/`x`/`y` or `crv`/`x`.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = jwk::public_members(&self.pair);
        jwk.insert("kid".into(), self.kid().into());
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), self.alg.as_str().into());
        serde_json::Value::Object(jwk)
    }

    /// Sign `claims` as a compact JWS with header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, KeyError> {
        let header =
            serde_json::json!({ "alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid() });
        self.sign_parts(&serde_json::to_vec(&header)?, &serde_json::to_vec(claims)?)
    }

    /// Sign with `header` exactly as given (no `alg`/`kid` added) over the raw `claims_json`
    /// bytes, which need not be valid JSON: for hostile-token tests (duplicate claims, `alg`
    /// lying about the key, `crit`, `jku`...). The signature always uses this key's [`Alg`].
    pub fn sign_raw(
        &self,
        header: &serde_json::Value,
        claims_json: &[u8],
    ) -> Result<String, KeyError> {
        self.sign_parts(&serde_json::to_vec(header)?, claims_json)
    }

    /// Like [`sign_raw`](Self::sign_raw) with the header as raw bytes too (duplicate header
    /// members, non-JSON headers).
    pub fn sign_parts(&self, header_json: &[u8], claims_json: &[u8]) -> Result<String, KeyError> {
        let mut token = URL_SAFE_NO_PAD.encode(header_json);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims_json));
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// The raw JWS signature of `message` (the JWS signing input), e.g. to pair a signature with
    /// a differently encoded header.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &*self.pair {
            Pair::Rsa(p) => {
                let padding: &'static dyn sig::RsaEncoding = match self.alg {
                    Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                    Alg::RS512 => &sig::RSA_PKCS1_SHA512,
                    Alg::PS256 => &sig::RSA_PSS_SHA256,
                    Alg::PS384 => &sig::RSA_PSS_SHA384,
                    Alg::PS512 => &sig::RSA_PSS_SHA512,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; p.public_modulus_len()];
                p.sign(padding, &rng, message, &mut out)
                    .map_err(|_| KeyError::Crypto("RSA signing"))?;
                Ok(out)
            }
            // The *_FIXED signing algorithms produce r||s, the JWS encoding (not DER).
            Pair::Ec(p, _) => Ok(p
                .sign(&rng, message)
                .map_err(|_| KeyError::Crypto("ECDSA signing"))?
                .as_ref()
                .to_vec()),
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
        }
    }
}

/// Public key bytes, shared by the JWK and thumbprint code.
fn rsa_public(p: &RsaKeyPair) -> (Vec<u8>, Vec<u8>) {
    let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(p.public_key());
    (c.n, c.e)
}

#[cfg(test)]
mod tests;
