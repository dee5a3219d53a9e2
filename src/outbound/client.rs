//! The token-endpoint client: one RFC 6749 token request (form POST, `client_secret_basic`)
//! and the parsing of its answer — an RFC 6749 §5.1 / RFC 8693 §2.2.1 success, an RFC 6749
//! §5.2 error, or something else.
//!
//! Three outcomes, because the caller answers each differently: an issued token; a refusal
//! (`invalid_grant`, `unauthorized_client`, `invalid_scope`, ... — 403, the same request
//! will be refused again); and an endpoint that is unreachable, slow past the timeout, 5xx or
//! answering something that is not OAuth (503, retry later). Nothing here ever puts a token or
//! the client secret into an error: the texts are written for logs and responses.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::auth::jwks::Fetcher;
use crate::auth::token::MAX_TOKEN_BYTES;

/// RFC 8693 grant type and token type names.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `expires_in` assumed when the endpoint sends none (RFC 6749 makes it optional).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);

/// `application/x-www-form-urlencoded` escapes everything but unreserved characters (RFC 6749
/// Appendix B: the same set is used for `client_secret_basic` credentials).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What is asked for, besides the grant.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `Authorization: Basic ...` of the edge's client (RFC 6749 §2.3.1), marked sensitive.
    authorization: HeaderValue,
    /// `&audience=..&resource=..&scope=..`, already encoded.
    params: String,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The grant of one request.
#[derive(Clone, Copy)]
pub enum Grant<'a> {
    /// RFC 8693, with the caller's validated access token as `subject_token`.
    Exchange {
        subject_token: &'a str,
    },
    ClientCredentials,
}

impl fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exchange { .. } => "Exchange { subject_token: <redacted> }",
            Self::ClientCredentials => "ClientCredentials",
        })
    }
}

impl TokenRequest {
    pub fn new(
        client_id: &str,
        client_secret: &str,
        audience: Option<&str>,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Self, String> {
        // RFC 6749 §2.3.1: both parts form-encoded before they are joined and base64'd.
        let credentials = format!(
            "{}:{}",
            utf8_percent_encode(client_id, FORM),
            utf8_percent_encode(client_secret, FORM)
        );
        let mut authorization =
            HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials)))
                .map_err(|_| "the client credentials cannot be sent in a header".to_owned())?;
        authorization.set_sensitive(true);
        let mut params = String::new();
        for (name, value) in [
            ("audience", audience),
            ("resource", resource),
            ("scope", scope),
        ] {
            if let Some(value) = value {
                params.push('&');
                params.push_str(name);
                params.push('=');
                params.extend(utf8_percent_encode(value, FORM));
            }
        }
        Ok(Self {
            authorization,
            params,
        })
    }

    /// The form body for `grant`.
    pub fn form(&self, grant: Grant<'_>) -> Bytes {
        let mut body = String::with_capacity(256 + self.params.len());
        match grant {
            Grant::Exchange { subject_token } => {
                body.push_str("grant_type=");
                body.extend(utf8_percent_encode(TOKEN_EXCHANGE_GRANT, FORM));
                body.push_str("&subject_token=");
                body.extend(utf8_percent_encode(subject_token, FORM));
                body.push_str("&subject_token_type=");
                body.extend(utf8_percent_encode(ACCESS_TOKEN_TYPE, FORM));
                body.push_str("&requested_token_type=");
                body.extend(utf8_percent_encode(ACCESS_TOKEN_TYPE, FORM));
            }
            Grant::ClientCredentials => body.push_str("grant_type=client_credentials"),
        }
        body.push_str(&self.params);
        Bytes::from(body)
    }

    /// Sends the request and reads the answer.
    pub async fn send(
        &self,
        fetcher: &Fetcher,
        endpoint: &Uri,
        grant: Grant<'_>,
        timeout: Duration,
    ) -> Result<Issued, EndpointError> {
        let (status, body) = fetcher
            .post_form(endpoint, &self.authorization, self.form(grant), timeout)
            .await
            .map_err(|e| EndpointError::Unavailable(e.to_string()))?;
        parse_response(status, &body)
    }
}

/// A token the endpoint issued.
#[derive(Clone)]
pub struct Issued {
    /// `Bearer <access_token>`, marked sensitive.
    pub authorization: HeaderValue,
    pub expires_in: Duration,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("authorization", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// The endpoint answered with an RFC 6749 error code (`invalid_grant`, ...): 403.
    Refused(String),
    /// Unreachable, timed out, 5xx, or an answer that is not OAuth: 503.
    Unavailable(String),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(code) => write!(f, "the token endpoint refused: {code}"),
            Self::Unavailable(why) => write!(f, "the token endpoint is unavailable: {why}"),
        }
    }
}

#[derive(Deserialize)]
struct Success<'a> {
    #[serde(borrow)]
    access_token: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    token_type: Option<std::borrow::Cow<'a, str>>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Failure<'a> {
    #[serde(borrow)]
    error: std::borrow::Cow<'a, str>,
}

/// An RFC 6749 error code: `%x20-21 / %x23-5B / %x5D-7E`, and short. Anything else is not
/// repeated to the caller.
fn error_code(code: &str) -> Option<&str> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    ok.then_some(code)
}

/// Reads the endpoint's answer (public for the unit tests and the fuzz target).
pub fn parse_response(status: StatusCode, body: &[u8]) -> Result<Issued, EndpointError> {
    if status.is_server_error() {
        return Err(EndpointError::Unavailable(format!(
            "HTTP {}",
            status.as_u16()
        )));
    }
    // RFC 6749 §5.2: 400 (or 401 for a failed client authentication; some IdPs use 403)
    // with `error`. Any other 4xx (404, 405, 429, ...) is an endpoint problem, not a refusal.
    if matches!(status.as_u16(), 400 | 401 | 403) {
        return match serde_json::from_slice::<Failure<'_>>(body) {
            Ok(failure) => match error_code(&failure.error) {
                Some(code) => Err(EndpointError::Refused(code.to_owned())),
                None => Err(EndpointError::Unavailable(format!(
                    "HTTP {} with an error code that is not RFC 6749",
                    status.as_u16()
                ))),
            },
            Err(_) => Err(EndpointError::Unavailable(format!(
                "HTTP {} without an OAuth error",
                status.as_u16()
            ))),
        };
    }
    if status != StatusCode::OK {
        return Err(EndpointError::Unavailable(format!(
            "HTTP {} (expected 200)",
            status.as_u16()
        )));
    }
    let malformed = |why: &str| EndpointError::Unavailable(format!("malformed answer: {why}"));
    let success: Success<'_> =
        serde_json::from_slice(body).map_err(|_| malformed("not a JSON object"))?;
    let token = success
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no access_token"))?;
    // RFC 8693 §2.2.1: `N_A` when the issued token is not an access token; a bearer token
    // is what the upstream can use.
    match success.token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(malformed("token_type is not Bearer")),
        None => return Err(malformed("no token_type")),
    }
    if token.len() > MAX_TOKEN_BYTES
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
    {
        return Err(malformed(
            "access_token is not a bearer token (RFC 6750 b64token)",
        ));
    }
    let expires_in = match success.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        // Some endpoints send the number as a string.
        Some(serde_json::Value::String(s)) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| malformed("expires_in is not a number"))?,
        Some(value) => value
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| malformed("expires_in is not a number of seconds"))?,
    };
    let mut authorization = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| malformed("access_token cannot be sent in a header"))?;
    authorization.set_sensitive(true);
    Ok(Issued {
        authorization,
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TokenRequest {
        TokenRequest::new(
            "edge client",
            "s3cr:t&=",
            Some("https://tools/mcp"),
            None,
            Some("read write"),
        )
        .unwrap()
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        let r = request();
        let encoded = r
            .authorization
            .to_str()
            .unwrap()
            .strip_prefix("Basic ")
            .unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "edge%20client:s3cr%3At%26%3D");
        assert!(r.authorization.is_sensitive());
        assert!(!format!("{r:?}").contains("Basic"));
    }

    #[test]
    fn exchange_form() {
        let body = request().form(Grant::Exchange {
            subject_token: "a.b+c",
        });
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=a.b%2Bc\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &audience=https%3A%2F%2Ftools%2Fmcp&scope=read%20write"
        );
        let body = request().form(Grant::ClientCredentials);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "grant_type=client_credentials&audience=https%3A%2F%2Ftools%2Fmcp&scope=read%20write"
        );
    }

    #[test]
    fn successes() {
        let ok = parse_response(
            StatusCode::OK,
            br#"{"access_token":"x.y.z","token_type":"Bearer","expires_in":300,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
        )
        .unwrap();
        assert_eq!(ok.authorization, "Bearer x.y.z");
        assert!(ok.authorization.is_sensitive());
        assert_eq!(ok.expires_in, Duration::from_secs(300));
        assert!(!format!("{ok:?}").contains("x.y.z"));
        let ok = parse_response(
            StatusCode::OK,
            br#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#,
        )
        .unwrap();
        assert_eq!(ok.expires_in, Duration::from_secs(60));
        let ok = parse_response(
            StatusCode::OK,
            br#"{"access_token":"t","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.expires_in, DEFAULT_EXPIRES_IN);
    }

    #[test]
    fn refusals_name_the_code() {
        for (status, code) in [
            (400, "invalid_grant"),
            (400, "invalid_scope"),
            (401, "invalid_client"),
            (400, "unauthorized_client"),
            (400, "invalid_target"),
            (403, "access_denied"),
        ] {
            let body = format!(r#"{{"error":"{code}","error_description":"nope"}}"#);
            assert_eq!(
                parse_response(StatusCode::from_u16(status).unwrap(), body.as_bytes()).unwrap_err(),
                EndpointError::Refused(code.into())
            );
        }
    }

    #[test]
    fn everything_else_is_unavailable() {
        let unavailable = |status: u16, body: &[u8]| {
            matches!(
                parse_response(StatusCode::from_u16(status).unwrap(), body),
                Err(EndpointError::Unavailable(_))
            )
        };
        assert!(unavailable(500, br#"{"error":"server_error"}"#));
        assert!(unavailable(503, b""));
        assert!(unavailable(400, b"<html>bad</html>"));
        assert!(unavailable(
            400,
            br#"{"error":"has \"quotes\" and spaces"}"#
        ));
        assert!(unavailable(302, b""));
        assert!(unavailable(404, br#"{"error":"not_found"}"#));
        assert!(unavailable(429, br#"{"error":"slow_down"}"#));
        assert!(unavailable(200, b"not json"));
        assert!(unavailable(200, br#"{"token_type":"Bearer"}"#));
        assert!(unavailable(
            200,
            br#"{"access_token":"","token_type":"Bearer"}"#
        ));
        assert!(unavailable(
            200,
            br#"{"access_token":"t","token_type":"N_A"}"#
        ));
        assert!(unavailable(200, br#"{"access_token":"t"}"#));
        assert!(unavailable(
            200,
            br#"{"access_token":"t\r\nX-Injected: 1","token_type":"Bearer"}"#
        ));
        assert!(unavailable(
            200,
            br#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#
        ));
        let long = format!(
            r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
            "a".repeat(MAX_TOKEN_BYTES + 1)
        );
        assert!(unavailable(200, long.as_bytes()));
    }
}
