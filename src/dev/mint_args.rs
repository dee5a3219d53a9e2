//! The token-minting options `gatehouse token` and `gatehouse bench --mint` share, and the one
//! function that turns them into a key and claims.

use std::path::PathBuf;

use super::keys::{Alg, DevState, MintOptions, SigningKey, parse_claim_arg};

/// Where the signing key comes from and what the token says.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MintArgs {
    /// Use the key, issuer, client and scope of the running `gatehouse dev`.
    #[arg(long, conflicts_with = "key")]
    pub dev: bool,
    /// Private key file: PEM (PKCS#8, PKCS#1 RSA, SEC1 EC) or a private JWK.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Signing algorithm (default: from the key type; RS256 for RSA).
    #[arg(long)]
    pub alg: Option<String>,
    /// `kid` header (default: the JWK's kid, or the key's RFC 7638 thumbprint).
    #[arg(long)]
    pub kid: Option<String>,
    /// `iss` claim (must equal the issuer in the discovery document).
    #[arg(long)]
    pub iss: Option<String>,
    /// `sub` claim.
    #[arg(long)]
    pub sub: Option<String>,
    /// `aud` claim (repeat for several).
    #[arg(long)]
    pub aud: Vec<String>,
    /// `client_id` claim.
    #[arg(long)]
    pub client_id: Option<String>,
    /// `scope` claim (space-separated).
    #[arg(long)]
    pub scope: Option<String>,
    /// Lifetime, e.g. 15m or 1h (for `bench`, longer than the run).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Extra claim `name=value`; the value is parsed as JSON when it is JSON (repeatable).
    #[arg(long = "claim")]
    pub claims: Vec<String>,
}

impl MintArgs {
    /// Whether any option other than the lifetime was given.
    pub fn any(&self) -> bool {
        self.dev
            || self.key.is_some()
            || self.alg.is_some()
            || self.kid.is_some()
            || self.iss.is_some()
            || self.sub.is_some()
            || !self.aud.is_empty()
            || self.client_id.is_some()
            || self.scope.is_some()
            || !self.claims.is_empty()
    }

    /// The signing key and the claims: from `gatehouse dev`'s state file or the key file,
    /// then every claim option on top.
    pub fn signer(&self) -> Result<(SigningKey, MintOptions), String> {
        let alg: Option<Alg> = self
            .alg
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    format!("unknown --alg {a:?}: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")
                })
            })
            .transpose()?;
        let (key, mut options) = if self.dev {
            let state = DevState::read().map_err(|e| e.to_string())?;
            (
                state.signing_key().map_err(|e| e.to_string())?,
                state.mint_options(),
            )
        } else {
            let path = self.key.as_ref().ok_or("give --key FILE or --dev")?;
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let key = if text.trim_start().starts_with('{') {
                let jwk: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a JWK: {e}", path.display()))?;
                SigningKey::from_jwk(&jwk)
            } else {
                SigningKey::from_pem(&text, alg, self.kid.clone())
            }
            .map_err(|e| format!("{}: {e}", path.display()))?;
            (key, MintOptions::default())
        };
        let key = match alg {
            Some(alg) if alg != key.alg() => key.with_alg(alg).map_err(|e| e.to_string())?,
            _ => key,
        };
        let key = match &self.kid {
            Some(kid) => key.with_kid(kid.clone()),
            None => key,
        };
        if let Some(iss) = &self.iss {
            options.iss = iss.clone();
        }
        if self.sub.is_some() {
            options.sub = self.sub.clone();
        }
        if !self.aud.is_empty() {
            options.aud = self.aud.clone();
        }
        if self.client_id.is_some() {
            options.client_id = self.client_id.clone();
        }
        if self.scope.is_some() {
            options.scope = self.scope.clone();
        }
        options.ttl =
            crate::config::units::parse_duration(&self.ttl).map_err(|e| format!("--ttl: {e}"))?;
        for claim in &self.claims {
            options
                .claims
                .push(parse_claim_arg(claim).map_err(|e| format!("--claim {claim:?}: {e}"))?);
        }
        if options.iss.is_empty() {
            return Err("give --iss (the issuer in the discovery document), or use --dev".into());
        }
        Ok((key, options))
    }
}
