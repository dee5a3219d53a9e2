//! The CORS phase (SPEC §8), for browser clients such as MCP Inspector: preflights are
//! answered here without a token; a request whose `Origin` the route's policy does not allow
//! gets 403 before any upstream contact; allowed origins get `Access-Control-Allow-Origin` and
//! `Access-Control-Expose-Headers` (`Mcp-Session-Id`, `WWW-Authenticate`, the session header)
//! on every response — the 401 too, or the browser cannot read the challenge and OAuth
//! discovery never starts.
//!
//! HTTP routes without a `cors` policy (their own or the top-level one) do not look at
//! `Origin`: non-browser clients send none, and a browser without CORS headers cannot read
//! responses cross-origin anyway. MCP routes without one accept only the edge's own origins
//! (`publicUrl`'s, and a loopback listener's `http://localhost:P`, `http://127.0.0.1:P`,
//! `http://[::1]:P`), as MCP servers must (DNS-rebinding protection), since `Origin` is not
//! forwarded to the upstream that would otherwise check it. The allowed origin is echoed (never `*`), with `Vary: Origin`.

use std::collections::HashSet;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Either, Ready, ready};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::context::{Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::route::Protocol;

/// Request headers a browser may always send.
const DEFAULT_ALLOWED: [&str; 13] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "x-amzn-bedrock-agentcore-runtime-session-id",
    "traceparent",
    "tracestate",
    "baggage",
    "x-amzn-trace-id",
];
const EXPOSED: &str = "mcp-session-id, mcp-protocol-version, www-authenticate, x-amzn-bedrock-agentcore-runtime-session-id, x-amzn-requestid, x-amzn-errortype, retry-after, server-timing";
const METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// One route's compiled CORS policy.
#[derive(Debug)]
pub struct CorsPolicy {
    any_origin: bool,
    origins: Vec<String>,
    allowed_headers: HashSet<String>,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// `origins` are `*` or `scheme://host[:port]` (validated at load); `extra_headers` are
    /// added to the default allowed request headers (the route's allowlist is passed here too).
    pub fn new(origins: &[String], extra_headers: &[String], max_age: Duration) -> Self {
        let mut allowed_headers: HashSet<String> =
            DEFAULT_ALLOWED.iter().map(|h| (*h).to_owned()).collect();
        allowed_headers.extend(extra_headers.iter().map(|h| h.to_ascii_lowercase()));
        Self {
            any_origin: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            allowed_headers,
            max_age: HeaderValue::from(max_age.as_secs()),
        }
    }

    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Adds the headers every response to an allowed origin carries.
    pub fn decorate(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }

    /// The answer to a preflight from an allowed origin.
    fn preflight(&self, request: &HeaderMap) -> Response<ProxyBody> {
        let requested = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let allowed: Vec<String> = requested
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| {
                !h.is_empty() && (self.allowed_headers.contains(h) || h.starts_with("mcp-param-"))
            })
            .collect();
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        if let Ok(value) = HeaderValue::from_str(&allowed.join(", "))
            && !allowed.is_empty()
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }
}

/// Whether `origin` is one of the edge's own (SPEC §8): `publicUrl`'s, and on a loopback
/// listener on port P, `http://localhost:P`, `http://127.0.0.1:P` and `http://[::1]:P` (P
/// omitted when it is 80, as browsers do). ASCII case does not matter.
fn is_own_origin(record: &RequestRecord, origin: &HeaderValue) -> bool {
    let origin = origin.as_bytes();
    if let Some(url) = &record.settings.public_url
        && origin.eq_ignore_ascii_case(own_origin(url).as_bytes())
    {
        return true;
    }
    let Some(listener) = record.conn.listener.filter(|l| l.ip().is_loopback()) else {
        return false;
    };
    // Only on this rare path (an MCP route without CORS policy, a browser client): the
    // three strings are made when needed.
    let port = listener.port();
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|host| {
        origin.eq_ignore_ascii_case(format!("http://{host}:{port}").as_bytes())
            || (port == 80 && origin.eq_ignore_ascii_case(format!("http://{host}").as_bytes()))
    })
}

/// `scheme://host[:port]` of a URL (an origin has no path).
fn own_origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Answers preflights and enforces the route's allowed origins.
#[derive(Clone, Debug, Default)]
pub(crate) struct CorsLayer;

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Cors<S> {
        Cors { inner }
    }
}

/// See [`CorsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Cors<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for Cors<S>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    /// The inner service's future itself on the common path: no box, no move of it.
    type Future = Either<S::Future, Ready<Result<Self::Response, ProxyError>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let record = request.body().record();
        let route = record.route();
        let policy = route.and_then(|r| r.cors.clone());
        let mcp = route.is_some_and(|r| r.protocol == Protocol::Mcp);
        let origin = request.headers().get(header::ORIGIN).cloned();
        // MCP servers must refuse foreign Origins (DNS rebinding; MCP 2025-11-25 transports).
        // The edge does not forward Origin and rewrites Host (the upstream would only see the
        // edge), so it checks here: on an MCP route without a CORS policy only the edge's own
        // origins may appear. Never the Host-derived one: under DNS rebinding Host and Origin
        // are both the attacker's name.
        if policy.is_none()
            && mcp
            && let Some(origin) = &origin
            && !is_own_origin(record, origin)
        {
            return Either::Right(ready(Err(ProxyError::OriginNotAllowed)));
        }
        let (Some(policy), Some(origin)) = (policy, origin) else {
            return Either::Left(self.inner.call(request));
        };
        if !policy.allows(&origin) {
            return Either::Right(ready(Err(ProxyError::OriginNotAllowed)));
        }
        record.set_cors(origin, policy.clone());
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let response = policy.preflight(request.headers());
            return Either::Right(ready(Ok(response)));
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let policy = CorsPolicy::new(
            &["https://inspector.example".into()],
            &[],
            Duration::from_secs(60),
        );
        assert!(policy.allows(&HeaderValue::from_static("https://inspector.example")));
        assert!(policy.allows(&HeaderValue::from_static("HTTPS://Inspector.Example")));
        assert!(!policy.allows(&HeaderValue::from_static("https://evil.example")));
        assert!(!policy.allows(&HeaderValue::from_static("null")));
        let any = CorsPolicy::new(&["*".into()], &[], Duration::from_secs(60));
        assert!(any.allows(&HeaderValue::from_static("https://x")));
    }

    #[test]
    fn own_origins() {
        assert_eq!(
            own_origin("https://gw.example.com"),
            "https://gw.example.com"
        );
        assert_eq!(
            own_origin("https://gw.example.com:8443/base"),
            "https://gw.example.com:8443"
        );
    }

    #[test]
    fn preflight_lists_allowed_headers_only() {
        let policy = CorsPolicy::new(&["*".into()], &["X-Tenant".into()], Duration::from_secs(60));
        let mut request = HeaderMap::new();
        request.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static(
                "Authorization, mcp-protocol-version, x-tenant, mcp-param-region, x-evil",
            ),
        );
        let response = policy.preflight(&request);
        assert_eq!(response.status(), 204);
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, mcp-protocol-version, x-tenant, mcp-param-region"
        );
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            METHODS
        );
    }
}
