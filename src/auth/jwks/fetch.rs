//! Fetching for an issuer: the bounded outbound client (timeout, 1 MiB, no redirects, JSON
//! only), the discovery document's two members, and `Cache-Control: max-age`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Timeout(Duration),
    Connect(String),
    Redirect(u16),
    Status(u16),
    TooLarge,
    Invalid(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "no answer within {}ms", d.as_millis()),
            Self::Connect(e) => write!(f, "request failed: {e}"),
            Self::Redirect(s) => write!(f, "HTTP {s} redirect (redirects are not followed)"),
            Self::Status(s) => write!(f, "HTTP {s}"),
            Self::TooLarge => write!(f, "response larger than {MAX_DOCUMENT_BYTES} bytes"),
            Self::Invalid(e) => f.write_str(e),
        }
    }
}

/// The outbound HTTP(S) client for discovery documents, JWKS and token endpoints
/// ([`crate::outbound`]).
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    pub fn new() -> Self {
        let https = crate::tls::https_connector(Duration::from_secs(5), false);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self { client }
    }

    /// GETs a JSON document: 200 only, at most 1 MiB, within `timeout`. Returns the body and
    /// the `Cache-Control: max-age`, if any.
    pub async fn get(
        &self,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<(Bytes, Option<Duration>), FetchError> {
        let request = request(http::Request::get(uri.clone()))
            .body(Full::default())
            .map_err(|e| FetchError::Invalid(e.to_string()))?;
        let (status, headers, body) = self.exchange(request, timeout).await?;
        if status.is_redirection() {
            return Err(FetchError::Redirect(status.as_u16()));
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age = headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        Ok((body, max_age))
    }

    /// POSTs an `application/x-www-form-urlencoded` body (a token request) with the given
    /// `Authorization`, within `timeout`; returns the status and at most 1 MiB of body,
    /// whatever the status (token endpoints explain refusals in 4xx bodies).
    pub async fn post_form(
        &self,
        uri: &Uri,
        authorization: &http::HeaderValue,
        form: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let request = request(http::Request::post(uri.clone()))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::AUTHORIZATION, authorization.clone())
            .body(Full::new(form))
            .map_err(|e| FetchError::Invalid(e.to_string()))?;
        let (status, _, body) = self.exchange(request, timeout).await?;
        Ok((status, body))
    }

    /// Sends `request` and reads at most 1 MiB of the answer, all within `timeout`.
    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), FetchError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Connect(crate::error::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        FetchError::TooLarge
                    } else {
                        FetchError::Connect(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}

/// The headers every request of the fetcher carries.
fn request(builder: http::request::Builder) -> http::request::Builder {
    builder
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("gatehouse/", env!("CARGO_PKG_VERSION")),
        )
}

/// `max-age=N` from a `Cache-Control` value; `no-cache`/`no-store` count as zero.
pub(super) fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        seconds
            .trim()
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

/// The discovery document's members gatehouse uses.
#[derive(Debug, Clone)]
pub(super) struct Discovery {
    pub(super) issuer: Arc<str>,
    pub(super) jwks_uri: Uri,
    /// For `outboundAuth` without a `tokenEndpoint` (SPEC §13); same scheme rule as
    /// `jwks_uri`. Absent or unusable: `None` (routes that need it answer 503).
    pub(super) token_endpoint: Option<Uri>,
}

pub(super) fn parse_discovery(body: &[u8], discovery_url: &Uri) -> Result<Discovery, FetchError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|_| FetchError::Invalid("discovery document is not JSON".into()))?;
    let issuer = doc
        .get("issuer")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FetchError::Invalid("discovery document has no \"issuer\"".into()))?;
    let jwks_uri: Uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| FetchError::Invalid("discovery document has no \"jwks_uri\"".into()))?
        .parse()
        .map_err(|_| FetchError::Invalid("discovery \"jwks_uri\" is not a URL".into()))?;
    if !usable(&jwks_uri, discovery_url) {
        return Err(FetchError::Invalid(
            "discovery \"jwks_uri\" must be an https URL (http only when the discovery URL is http)".into(),
        ));
    }
    let token_endpoint = doc
        .get("token_endpoint")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uri>().ok())
        .filter(|uri| usable(uri, discovery_url));
    Ok(Discovery {
        issuer: Arc::from(issuer),
        jwks_uri,
        token_endpoint,
    })
}

/// An endpoint the discovery document names: https, or http when the discovery URL is http.
fn usable(uri: &Uri, discovery_url: &Uri) -> bool {
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let http_ok = uri.scheme() == Some(&http::uri::Scheme::HTTP)
        && discovery_url.scheme() == Some(&http::uri::Scheme::HTTP);
    (https || http_ok) && uri.host().is_some()
}
