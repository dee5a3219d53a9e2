//! The token's claims, parsed once, strictly, and shared by the verified-token cache, the
//! policy checks and the identity headers.
//!
//! Registered claims are typed (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `client_id`,
//! `scope`/`scp`); every claim is also kept as JSON for `customClaims`, `claimsToHeaders` and
//! `claimsToBaggage`. Parsing is deliberately strict because the payload is attacker-chosen
//! until the signature is checked, and a lenient reading is how confusion bugs start: a
//! duplicate top-level name, a registered claim of the wrong JSON type, or a NumericDate that
//! is not a finite number within years 0..9999 rejects the whole token.
//!
//! ```
//! use gatehouse::auth::claims::Claims;
//! let c = Claims::parse(br#"{"iss":"https://idp","exp":2000000000,"aud":"api","scope":"a b"}"#).unwrap();
//! assert_eq!(c.aud, vec!["api".to_string()]);
//! assert!(c.has_scope("b"));
//! ```

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::mcp::cedar::PrincipalMemo;

/// Latest NumericDate accepted: 9999-12-31T23:59:59Z. Anything larger is an attack or a bug.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Parsed claims of a verified token.
#[derive(Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub client_id: Option<String>,
    /// Union of the space-delimited `scope` string and the `scp` claim (array or string).
    pub scopes: Vec<String>,
    /// Every claim as sent, for custom-claim rules and claim-to-header mapping.
    pub all: Map<String, Value>,
    /// The caller as MCP Cedar policies see it, built on the first Cedar decision and kept
    /// with the claims: for a cached token, once per token rather than once per request.
    pub cedar: PrincipalMemo,
}

// Claims are personal data; keep them out of debug output except the routing-relevant bits.
impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("client_id", &self.client_id)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// Why a payload was refused. The text is safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsError(pub String);

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Claims {
    /// Parses a JWT payload (already base64url-decoded).
    pub fn parse(json: &[u8]) -> Result<Self, ClaimsError> {
        Self::from_map(unique_object(json)?)
    }

    fn from_map(all: Map<String, Value>) -> Result<Self, ClaimsError> {
        let iss = string_claim(&all, "iss")?;
        let sub = string_claim(&all, "sub")?;
        let client_id = string_claim(&all, "client_id")?;
        let aud = match all.get("aud") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ClaimsError(
                        "claim 'aud' must be a string or an array of strings".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'aud' must be a string or an array of strings".into(),
                ));
            }
        };
        let mut scopes = Vec::new();
        match all.get("scope") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'scope' must be a space-delimited string".into(),
                ));
            }
        }
        match all.get("scp") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => scopes.push(s.clone()),
                        _ => {
                            return Err(ClaimsError(
                                "claim 'scp' must be a string or an array of strings".into(),
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'scp' must be a string or an array of strings".into(),
                ));
            }
        }
        Ok(Self {
            exp: numeric_date(&all, "exp")?,
            nbf: numeric_date(&all, "nbf")?,
            iat: numeric_date(&all, "iat")?,
            iss,
            sub,
            aud,
            client_id,
            scopes,
            all,
            cedar: PrincipalMemo::default(),
        })
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// A claim rendered for an HTTP header or baggage value: strings as-is, arrays of scalars
    /// joined with `,`, numbers and booleans in JSON form; objects and nulls give `None`.
    pub fn render(&self, name: &str) -> Option<String> {
        match self.all.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Array(items) => {
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match item {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        _ => return None,
                    }
                }
                Some(out)
            }
            Value::Null | Value::Object(_) => None,
        }
    }
}

fn string_claim(all: &Map<String, Value>, name: &str) -> Result<Option<String>, ClaimsError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClaimsError(format!("claim '{name}' must be a string"))),
    }
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional (floored).
fn numeric_date(all: &Map<String, Value>, name: &str) -> Result<Option<i64>, ClaimsError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let seconds = n
                .as_f64()
                .filter(|s| s.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(s))
                .ok_or_else(|| ClaimsError(format!("claim '{name}' is out of range")))?;
            // In range by the filter above, so the conversion is exact after flooring.
            #[allow(clippy::cast_possible_truncation)]
            Ok(Some(seconds.floor() as i64))
        }
        Some(_) => Err(ClaimsError(format!(
            "claim '{name}' must be a number of seconds (NumericDate)"
        ))),
    }
}

/// Parses a JSON object, refusing duplicate top-level member names and trailing data.
///
/// The error text is fixed per kind of failure and never quotes the input: serde_json's own
/// messages do (`invalid type: string "eyJ..."`), and a payload that is a nested token would
/// be echoed to the client in the body and the `WWW-Authenticate` challenge.
pub(crate) fn unique_object(json: &[u8]) -> Result<Map<String, Value>, ClaimsError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let map = UniqueKeys::deserialize(&mut de)
        .map_err(|e| {
            let what = if e.to_string().starts_with(DUPLICATE) {
                DUPLICATE
            } else {
                match e.classify() {
                    serde_json::error::Category::Data => "not an object",
                    serde_json::error::Category::Eof => "truncated",
                    serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                        "not valid JSON"
                    }
                }
            };
            ClaimsError(format!("token payload is not a JSON object: {what}"))
        })?
        .0;
    de.end()
        .map_err(|_| ClaimsError("token payload has trailing data".into()))?;
    Ok(map)
}

const DUPLICATE: &str = "duplicate member name";

/// A JSON object whose top-level member names are unique (RFC 7519 §4 says a parser MUST
/// either reject duplicates or take the last; taking the last lets two parsers disagree).
struct UniqueKeys(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueKeys, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.insert(key, value).is_some() {
                        return Err(de::Error::custom(DUPLICATE));
                    }
                }
                Ok(UniqueKeys(map))
            }
        }
        de.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Claims, String> {
        Claims::parse(json.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn registered_claims_are_typed() {
        let c = parse(
            r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":1.9,"iat":2,"client_id":"c","scope":"x  y","scp":["z"]}"#,
        )
        .unwrap();
        assert_eq!(c.iss.as_deref(), Some("i"));
        assert_eq!(c.aud, vec!["a", "b"]);
        assert_eq!((c.exp, c.nbf, c.iat), (Some(10), Some(1), Some(2)));
        assert_eq!(c.scopes, vec!["x", "y", "z"]);
        assert_eq!(c.client_id.as_deref(), Some("c"));
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert_eq!(
            parse(r#"{"exp":"10"}"#).unwrap_err(),
            "claim 'exp' must be a number of seconds (NumericDate)"
        );
        assert_eq!(
            parse(r#"{"exp":1e300}"#).unwrap_err(),
            "claim 'exp' is out of range"
        );
        assert_eq!(
            parse(r#"{"nbf":-5}"#).unwrap_err(),
            "claim 'nbf' is out of range"
        );
        assert_eq!(
            parse(r#"{"aud":5}"#).unwrap_err(),
            "claim 'aud' must be a string or an array of strings"
        );
        assert_eq!(
            parse(r#"{"aud":{"a":1}}"#).unwrap_err(),
            "claim 'aud' must be a string or an array of strings"
        );
        assert_eq!(
            parse(r#"{"aud":[1]}"#).unwrap_err(),
            "claim 'aud' must be a string or an array of strings"
        );
        assert_eq!(
            parse(r#"{"scope":["a"]}"#).unwrap_err(),
            "claim 'scope' must be a space-delimited string"
        );
        assert_eq!(
            parse(r#"{"scp":7}"#).unwrap_err(),
            "claim 'scp' must be a string or an array of strings"
        );
        assert_eq!(
            parse(r#"{"iss":1}"#).unwrap_err(),
            "claim 'iss' must be a string"
        );
        assert_eq!(
            parse(r#"{"client_id":true}"#).unwrap_err(),
            "claim 'client_id' must be a string"
        );
    }

    #[test]
    fn empty_audience_array_means_no_audience() {
        assert!(parse(r#"{"aud":[]}"#).unwrap().aud.is_empty());
    }

    #[test]
    fn duplicates_and_non_objects_are_rejected() {
        assert!(
            parse(r#"{"sub":"a","sub":"b"}"#)
                .unwrap_err()
                .contains("duplicate member name")
        );
        assert!(parse(r#"[1]"#).is_err());
        assert!(parse(r#"{"a":1} x"#).unwrap_err().contains("trailing"));
        assert!(parse("").is_err());
    }

    #[test]
    fn errors_never_quote_the_payload() {
        for json in [
            r#""eyJhbGciOiJSUzI1NiJ9.secret.sig""#,
            r#"["eyJhbGciOiJSUzI1NiJ9.secret.sig"]"#,
            r#"{"eyJhbGciOiJSUzI1NiJ9.secret.sig" 1}"#,
            r#"{"a":"eyJhbGciOiJSUzI1NiJ9.secret.sig""#,
            "eyJhbGciOiJSUzI1NiJ9.secret.sig",
        ] {
            let error = parse(json).unwrap_err();
            assert!(!error.contains("secret"), "{json}: {error}");
            assert!(
                error.starts_with("token payload is not a JSON object: "),
                "{error}"
            );
        }
    }

    #[test]
    fn render_for_headers() {
        let c =
            parse(r#"{"g":["a","b"],"n":5,"b":true,"o":{"x":1},"s":"v","mixed":["a",{"x":1}]}"#)
                .unwrap();
        assert_eq!(c.render("g").as_deref(), Some("a,b"));
        assert_eq!(c.render("n").as_deref(), Some("5"));
        assert_eq!(c.render("b").as_deref(), Some("true"));
        assert_eq!(c.render("s").as_deref(), Some("v"));
        assert_eq!(c.render("o"), None);
        assert_eq!(c.render("mixed"), None);
        assert_eq!(c.render("missing"), None);
    }
}
