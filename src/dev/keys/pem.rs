//! A minimal PEM reader/writer (RFC 7468) and private-key parsing on top of it. Small enough
//! that it is not worth a dependency; the DER inside is handed to aws-lc-rs to parse.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Alg, Curve, KeyError, Pair};

/// One `-----BEGIN label-----` ... `-----END label-----` block.
struct Block {
    label: String,
    der: Vec<u8>,
    /// RFC 1421 headers such as `Proc-Type: 4,ENCRYPTED` (legacy encrypted OpenSSL keys).
    encrypted: bool,
}

fn blocks(text: &str) -> Result<Vec<Block>, KeyError> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut encrypted = false;
        let mut closed = false;
        for body in lines.by_ref() {
            if body == end {
                closed = true;
                break;
            }
            if body.contains(':') {
                encrypted |= body.contains("ENCRYPTED");
                continue;
            }
            b64.push_str(body);
        }
        if !closed {
            return Err(KeyError::Pem(format!("no `{end}` line")));
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| KeyError::Pem(format!("bad base64 in {label} block: {e}")))?;
        out.push(Block {
            label: label.to_owned(),
            der,
            encrypted,
        });
    }
    Ok(out)
}

/// PEM-encode `der` with 64-character lines.
pub(super) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so splitting on byte boundaries is safe.
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Find the private key in `text` and parse it, guided by `alg` when given.
pub(super) fn parse_private_key(text: &str, alg: Option<Alg>) -> Result<Pair, KeyError> {
    let all = blocks(text)?;
    if all.is_empty() {
        return Err(KeyError::Pem(
            "no PEM block found: expected -----BEGIN PRIVATE KEY----- (PKCS#8), \
             RSA PRIVATE KEY (PKCS#1) or EC PRIVATE KEY (SEC1)"
                .into(),
        ));
    }
    for block in &all {
        match block.label.as_str() {
            "PRIVATE KEY" => return pkcs8(&block.der, alg),
            "RSA PRIVATE KEY" if block.encrypted => return Err(encrypted()),
            "RSA PRIVATE KEY" => {
                return RsaKeyPair::from_der(&block.der)
                    .map(Pair::Rsa)
                    .map_err(|e| KeyError::Pem(format!("RSA PRIVATE KEY rejected: {e}")));
            }
            "EC PRIVATE KEY" if block.encrypted => return Err(encrypted()),
            "EC PRIVATE KEY" => return sec1(&block.der, alg),
            "ENCRYPTED PRIVATE KEY" => return Err(encrypted()),
            // `openssl ecparam -genkey` writes the curve first; the key block follows.
            _ => continue,
        }
    }
    let labels: Vec<&str> = all.iter().map(|b| b.label.as_str()).collect();
    Err(KeyError::Pem(format!(
        "no private key in the PEM text (found: {}); signing needs the private key",
        labels.join(", ")
    )))
}

fn encrypted() -> KeyError {
    KeyError::Pem(
        "encrypted private keys are not supported: decrypt first with \
         `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`"
            .into(),
    )
}

/// Which key types to try, in order: the one `alg` names, or all of them.
fn candidates(alg: Option<Alg>) -> &'static [&'static str] {
    match alg {
        Some(a) if a.is_rsa() => &["rsa"],
        Some(Alg::ES256) => &["p256"],
        Some(Alg::ES384) => &["p384"],
        Some(_) => &["ed25519"],
        None => &["rsa", "p256", "p384", "ed25519"],
    }
}

fn pkcs8(der: &[u8], alg: Option<Alg>) -> Result<Pair, KeyError> {
    for kind in candidates(alg) {
        let pair = match *kind {
            "rsa" => RsaKeyPair::from_pkcs8(der).ok().map(Pair::Rsa),
            "p256" => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .ok()
                .map(|p| Pair::Ec(p, Curve::P256)),
            "p384" => EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
                .ok()
                .map(|p| Pair::Ec(p, Curve::P384)),
            _ => Ed25519KeyPair::from_pkcs8(der).ok().map(Pair::Ed),
        };
        if let Some(pair) = pair {
            return Ok(pair);
        }
    }
    Err(match alg {
        Some(a) => KeyError::Pem(format!(
            "the PKCS#8 key is not a key for {a} (or is unsupported, e.g. RSA under 2048 bits)"
        )),
        None => KeyError::Pem(
            "unsupported PKCS#8 key: expected RSA (2048-8192 bits), P-256, P-384 or Ed25519".into(),
        ),
    })
}

fn sec1(der: &[u8], alg: Option<Alg>) -> Result<Pair, KeyError> {
    for kind in candidates(alg) {
        let (signing, curve) = match *kind {
            "p256" => (&ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256),
            "p384" => (&ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384),
            _ => continue,
        };
        if let Ok(p) = EcdsaKeyPair::from_private_key_der(signing, der) {
            return Ok(Pair::Ec(p, curve));
        }
    }
    Err(match alg {
        Some(a) if a != Alg::ES256 && a != Alg::ES384 => {
            KeyError::AlgMismatch { alg: a, key: "EC" }
        }
        _ => KeyError::Pem(
            "EC PRIVATE KEY rejected: only P-256 (ES256) and P-384 (ES384) are supported".into(),
        ),
    })
}
