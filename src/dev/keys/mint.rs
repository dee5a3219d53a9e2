//! Minting access tokens shaped like the ones an OAuth server issues (Cognito, Entra, Okta...):
//! what `gatehouse token`, `gatehouse bench --mint` and the tests use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::{KeyError, SigningKey};

/// What goes into a minted token. Empty/`None` fields are left out of the claims.
#[derive(Debug, Clone)]
pub struct MintOptions {
    /// `iss`; must equal the discovery document's `issuer` for gatehouse to accept the token.
    pub iss: String,
    pub sub: Option<String>,
    /// `aud`: left out when empty, a string for one value, an array for several.
    pub aud: Vec<String>,
    pub client_id: Option<String>,
    /// Space-delimited `scope`, as RFC 8693/9068 and Cognito put it.
    pub scope: Option<String>,
    /// `exp = iat + ttl`.
    pub ttl: Duration,
    /// `iat` in Unix seconds; default now. Set it in the past to mint expired tokens.
    pub issued_at: Option<i64>,
    /// `nbf` in Unix seconds; default none.
    pub not_before: Option<i64>,
    /// Add a random `jti` (default true) so that every minted token is distinct, which
    /// `gatehouse bench --mint` relies on to defeat the verified-token cache.
    pub jti: bool,
    /// Extra claims, applied last: they override any of the above (`exp`, `iss`...).
    pub claims: Vec<(String, Value)>,
}

impl Default for MintOptions {
    fn default() -> Self {
        MintOptions {
            iss: String::new(),
            sub: None,
            aud: Vec::new(),
            client_id: None,
            scope: None,
            ttl: Duration::from_secs(3600),
            issued_at: None,
            not_before: None,
            jti: true,
            claims: Vec::new(),
        }
    }
}

impl MintOptions {
    /// The claims set these options produce (with a fresh `iat`/`jti` when not fixed).
    pub fn claims_json(&self) -> Value {
        let mut c = Map::new();
        if !self.iss.is_empty() {
            c.insert("iss".into(), self.iss.clone().into());
        }
        if let Some(sub) = &self.sub {
            c.insert("sub".into(), sub.clone().into());
        }
        match self.aud.as_slice() {
            [] => {}
            [one] => {
                c.insert("aud".into(), one.clone().into());
            }
            many => {
                c.insert("aud".into(), many.to_vec().into());
            }
        }
        if let Some(id) = &self.client_id {
            c.insert("client_id".into(), id.clone().into());
        }
        if let Some(scope) = &self.scope {
            c.insert("scope".into(), scope.clone().into());
        }
        let iat = self.issued_at.unwrap_or_else(now_unix);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        c.insert("iat".into(), iat.into());
        c.insert("exp".into(), iat.saturating_add(ttl).into());
        if let Some(nbf) = self.not_before {
            c.insert("nbf".into(), nbf.into());
        }
        if self.jti {
            let bytes: [u8; 16] = rand::random();
            c.insert("jti".into(), URL_SAFE_NO_PAD.encode(bytes).into());
        }
        for (k, v) in &self.claims {
            c.insert(k.clone(), v.clone());
        }
        Value::Object(c)
    }
}

/// Mint a signed JWT with `key` (header `alg`, `typ: JWT`, `kid`).
pub fn mint(key: &SigningKey, opts: &MintOptions) -> Result<String, KeyError> {
    key.sign(&opts.claims_json())
}

/// Parse a `--claim k=v` argument: `v` is JSON when it parses as JSON (`n=3`, `ok=true`,
/// `groups=["a","b"]`), otherwise a plain string (`tenant=acme`).
pub fn parse_claim_arg(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("claim {s:?} must look like name=value"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("claim {s:?} has an empty name"));
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), v))
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
