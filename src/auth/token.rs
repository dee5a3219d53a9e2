//! The front end of token validation: the `Authorization` header and the compact JWS, before
//! any key is touched.
//!
//! Everything here is attacker-controlled, so the rules are narrow and each refusal has its
//! own message: exactly one `Authorization: Bearer` header (scheme case-insensitive), token
//! characters from RFC 6750 `b64token`, at most [`MAX_TOKEN_BYTES`], three base64url parts with
//! no padding and canonical trailing bits, a header that is a JSON object with unique member
//! names whose `alg` is asymmetric, and no `crit`, `b64`, `zip` or `enc` (JWE) — the edge
//! implements none of those extensions, and RFC 7515 §4.1.11 says an unknown critical
//! extension makes the token invalid. `jku`, `jwk`, `x5u` and `x5c` are ignored: keys come
//! only from the issuer's JWKS.
//!
//! ```
//! use gatehouse::auth::token::{bearer, Jws};
//! let mut headers = http::HeaderMap::new();
//! headers.insert("authorization", "Bearer a.b.c".parse().unwrap());
//! assert_eq!(bearer(&headers).unwrap(), "a.b.c");
//! assert!(Jws::parse("a.b.c").is_err()); // not base64url JSON
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::claims::Claims;

/// Longest token accepted. Real access tokens are 0.5–4 KiB; this leaves room for large
/// group claims while bounding the work an attacker can ask for.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `kid` accepted.
const MAX_KID_BYTES: usize = 256;

/// Why the credential was refused before any key was consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization` header, or `Bearer` with nothing after it.
    Missing,
    /// Anything else; the text is safe to send back (it never contains the token).
    Malformed(&'static str),
}

/// Extracts the bearer token: exactly one `Authorization` header, scheme `Bearer`
/// (case-insensitive), `b64token` characters only.
pub fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenError::Missing)?;
    if values.next().is_some() {
        return Err(TokenError::Malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("Authorization header is not ASCII"))?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return Err(TokenError::Missing);
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed(
            "Authorization header must use the Bearer scheme",
        ));
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token is too large"));
    }
    // The character check is left to `Jws::parse`, which only cache misses reach: a token in
    // the verified-token cache passed it already, and a hash lookup is safe on any bytes.
    Ok(token)
}

/// RFC 6750 §2.1 `b64token` characters, as a table (this runs over every byte of a token).
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

/// A compact JWS whose header has been read and checked; signature not yet verified.
#[derive(Debug)]
pub struct Jws<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

impl<'a> Jws<'a> {
    /// Splits and checks the header. Does not look at the payload.
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        if !is_b64token(token) {
            return Err(TokenError::Malformed(
                "token contains characters not allowed in a bearer token",
            ));
        }
        let dots = token.bytes().filter(|&b| b == b'.').count();
        match dots {
            2 => {}
            4 => {
                return Err(TokenError::Malformed(
                    "encrypted tokens (JWE) are not accepted",
                ));
            }
            _ => {
                return Err(TokenError::Malformed(
                    "token is not a JWS in compact form (three parts)",
                ));
            }
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed(
            "token is not a JWS in compact form (three parts)",
        ))?;
        let (header_b64, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed(
            "token is not a JWS in compact form (three parts)",
        ))?;
        if header_b64.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::Malformed("token has an empty part"));
        }
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed("token header is not base64url"))?;
        let header = super::claims::unique_object(&header_json).map_err(|_| {
            TokenError::Malformed("token header is not a JSON object with unique names")
        })?;
        if header.contains_key("enc") {
            return Err(TokenError::Malformed(
                "encrypted tokens (JWE) are not accepted",
            ));
        }
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "token has a critical header parameter the edge does not support",
            ));
        }
        if header.contains_key("b64") {
            return Err(TokenError::Malformed(
                "unencoded payloads (b64) are not accepted",
            ));
        }
        if header.contains_key("zip") {
            return Err(TokenError::Malformed(
                "compressed payloads (zip) are not accepted",
            ));
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => parse_alg(alg)?,
            Some(_) => return Err(TokenError::Malformed("token header 'alg' must be a string")),
            None => return Err(TokenError::Malformed("token header has no 'alg'")),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if is_sane_kid(kid) => Some(kid.clone()),
            Some(Value::String(_)) => {
                return Err(TokenError::Malformed(
                    "token header 'kid' is not a usable key id",
                ));
            }
            Some(_) => return Err(TokenError::Malformed("token header 'kid' must be a string")),
        };
        Ok(Self {
            alg,
            kid,
            signing_input,
            payload,
            signature,
        })
    }

    /// Decodes and parses the payload. Call only after the signature verified.
    pub fn claims(&self) -> Result<Claims, String> {
        let json = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| "token payload is not base64url".to_owned())?;
        Claims::parse(&json).map_err(|e| e.0)
    }

    /// The decoded signature bytes.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, TokenError> {
        URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| TokenError::Malformed("token signature is not base64url"))
    }
}

fn is_sane_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_BYTES && !kid.chars().any(char::is_control)
}

/// The asymmetric JWS algorithms the edge can verify, by their JOSE name (exact case): the
/// one list for tokens' `alg` and configured `algorithms`.
pub(crate) fn asymmetric_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Only asymmetric JWS algorithms are ever accepted; naming the others gives a precise error.
fn parse_alg(alg: &str) -> Result<Algorithm, TokenError> {
    if let Some(alg) = asymmetric_alg(alg) {
        return Ok(alg);
    }
    match alg {
        "HS256" | "HS384" | "HS512" => {
            Err(TokenError::Malformed("HMAC algorithms are never accepted"))
        }
        _ if alg.eq_ignore_ascii_case("none") => {
            Err(TokenError::Malformed("alg 'none' is never accepted"))
        }
        _ => Err(TokenError::Malformed("token alg is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn bearer_rules() {
        assert_eq!(bearer(&headers(&[])), Err(TokenError::Missing));
        assert_eq!(bearer(&headers(&["Bearer"])), Err(TokenError::Missing));
        assert_eq!(bearer(&headers(&["Bearer   "])), Err(TokenError::Missing));
        assert_eq!(bearer(&headers(&["Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer(&headers(&["bEaReR   a.b.c"])), Ok("a.b.c"));
        assert_eq!(
            bearer(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(TokenError::Malformed(
                "Authorization header must use the Bearer scheme"
            ))
        );
        assert_eq!(
            bearer(&headers(&["Bearer a.b.c", "Bearer d.e.f"])),
            Err(TokenError::Malformed("more than one Authorization header"))
        );
        // Character rules are checked with the JWS (on cache misses only).
        assert!(Jws::parse(bearer(&headers(&["Bearer a.b.c x"])).unwrap()).is_err());
        assert_eq!(
            Jws::parse(bearer(&headers(&["Bearer a\"b"])).unwrap()).unwrap_err(),
            TokenError::Malformed("token contains characters not allowed in a bearer token")
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            bearer(&headers(&[&huge])),
            Err(TokenError::Malformed("token is too large"))
        );
    }

    #[test]
    fn non_ascii_authorization_header() {
        // Not UTF-8, and UTF-8 but not ASCII.
        for value in [&b"Bearer \xff"[..], "Bearer abc\u{e9}def".as_bytes()] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                bearer(&h),
                Err(TokenError::Malformed("Authorization header is not ASCII")),
                "{value:?}"
            );
        }
    }

    fn token(header: &str) -> String {
        format!("{}.{}.{}", b64(header), b64("{}"), b64("sig"))
    }

    #[test]
    fn jws_header_rules() {
        let ok = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT","jku":"https://evil","x5u":"x","jwk":{}}"#,
        );
        let jws = Jws::parse(&ok).unwrap();
        assert_eq!(
            (jws.alg, jws.kid.as_deref()),
            (Algorithm::RS256, Some("k1"))
        );

        let cases: &[(&str, &str)] = &[
            (r#"{"alg":"none"}"#, "alg 'none' is never accepted"),
            (r#"{"alg":"NONE"}"#, "alg 'none' is never accepted"),
            (r#"{"alg":"HS256"}"#, "HMAC algorithms are never accepted"),
            (r#"{"alg":"ES512"}"#, "token alg is not supported"),
            (r#"{"alg":5}"#, "token header 'alg' must be a string"),
            (r#"{"kid":"x"}"#, "token header has no 'alg'"),
            (
                r#"{"alg":"RS256","crit":["exp"]}"#,
                "token has a critical header parameter the edge does not support",
            ),
            (
                r#"{"alg":"RS256","b64":false}"#,
                "unencoded payloads (b64) are not accepted",
            ),
            (
                r#"{"alg":"RS256","enc":"A128GCM"}"#,
                "encrypted tokens (JWE) are not accepted",
            ),
            (
                r#"{"alg":"RS256","zip":"DEF"}"#,
                "compressed payloads (zip) are not accepted",
            ),
            (
                r#"{"alg":"RS256","alg":"none"}"#,
                "token header is not a JSON object with unique names",
            ),
            (
                r#"{"alg":"RS256","kid":7}"#,
                "token header 'kid' must be a string",
            ),
            (
                r#"{"alg":"RS256","kid":""}"#,
                "token header 'kid' is not a usable key id",
            ),
            (
                r#"{"alg":"RS256","kid":"a\nb"}"#,
                "token header 'kid' is not a usable key id",
            ),
            (
                r#"["alg"]"#,
                "token header is not a JSON object with unique names",
            ),
        ];
        for (header, message) in cases {
            assert_eq!(
                Jws::parse(&token(header)).unwrap_err(),
                TokenError::Malformed(message),
                "{header}"
            );
        }
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "k".repeat(10_000));
        assert!(Jws::parse(&token(&long_kid)).is_err());
    }

    #[test]
    fn jws_shape_rules() {
        assert_eq!(
            Jws::parse("a.b").unwrap_err(),
            TokenError::Malformed("token is not a JWS in compact form (three parts)")
        );
        assert_eq!(
            Jws::parse("a.b.c.d.e").unwrap_err(),
            TokenError::Malformed("encrypted tokens (JWE) are not accepted")
        );
        assert_eq!(
            Jws::parse("..").unwrap_err(),
            TokenError::Malformed("token has an empty part")
        );
        let header = b64(r#"{"alg":"RS256"}"#);
        // Padding and the standard alphabet are not base64url.
        assert!(Jws::parse(&format!("{header}=.e30.c2ln")).is_err());
        assert!(
            Jws::parse(&format!("{}.e30.c2ln", header.replace('-', "+"))).is_err()
                || !header.contains('-')
        );
    }

    #[test]
    fn non_canonical_base64_is_rejected() {
        // "e30" is "{}"; "e31" has non-zero trailing bits and decodes to the same bytes only
        // under a lenient decoder.
        let header = b64(r#"{"alg":"RS256"}"#);
        let token = format!("{header}.e31.c2ln");
        let jws = Jws::parse(&token).unwrap();
        assert!(jws.claims().is_err());
    }
}
