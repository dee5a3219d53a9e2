//! The forward phase: the request goes to the route's upstream over a pooled keep-alive
//! connection, and the response streams back.
//!
//! `url` upstreams receive `{url}{path}` where `path` is `upstream.path`, or `/invocations`
//! (HTTP routes) / `/mcp` (MCP routes); for routes with an explicit prefix `path`, the rest of
//! the request path after the prefix is appended and the query string kept. The AgentCore
//! invocation form drops the query (`qualifier` is for the edge). No response headers within
//! `requestTimeout`: 504. Connection refused, reset or TLS failure before a response: 502.
//! After the headers, the body streams under `streamIdleTimeout`.

pub mod body;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::{Layer, Service};

pub use self::body::UpstreamBody;
use self::body::{BodyTooLarge, ClientBodyError, RequestBody};
use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::route::{Protocol, Route};
use crate::telemetry::record::RequestRecord;

/// Why the upstream exchange failed before a response arrived.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// Refused, reset, TLS or protocol failure (502).
    Unreachable(String),
    /// No response headers within `requestTimeout` (504).
    Timeout(Duration),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "upstream unreachable: {e}"),
            Self::Timeout(d) => write!(f, "upstream timed out after {}s", d.as_secs()),
        }
    }
}

type OutboundBody = UnsyncBoxBody<Bytes, BoxError>;
/// The pooled client toward upstreams (HTTP/1.1, or h2c/h2 when configured).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// Connection pools shared by every route with the same connect settings, and kept across
/// reloads so that a reload does not drop warm connections.
#[derive(Debug, Default)]
pub struct UpstreamClients {
    pools: Mutex<HashMap<(Duration, bool), UpstreamClient>>,
}

impl UpstreamClients {
    pub fn get(&self, connect_timeout: Duration, http2: bool) -> UpstreamClient {
        let Ok(mut pools) = self.pools.lock() else {
            return build_client(connect_timeout, http2);
        };
        pools
            .entry((connect_timeout, http2))
            .or_insert_with(|| build_client(connect_timeout, http2))
            .clone()
    }
}

fn build_client(connect_timeout: Duration, http2: bool) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = (*crate::tls::client_config()).clone();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = if http2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if http2 {
        client.http2_only(true);
    }
    client.build(https)
}

/// Where one route's requests go.
#[derive(Debug)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's own path prefix joined with the upstream path, without trailing slash.
    pub base_path: String,
    /// `scheme://authority{base_path}`: the whole URI for exact routes, built once.
    base_uri: Uri,
    pub client: UpstreamClient,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub max_body_bytes: u64,
}

impl Upstream {
    /// `url` plus `path` (default by protocol).
    pub fn new(
        url: &Uri,
        path: &str,
        client: UpstreamClient,
        request_timeout: Duration,
        stream_idle_timeout: Duration,
        max_body_bytes: u64,
    ) -> Result<Self, String> {
        let scheme = url.scheme().cloned().ok_or("upstream URL has no scheme")?;
        let authority = url.authority().cloned().ok_or("upstream URL has no host")?;
        let prefix = url.path().trim_end_matches('/');
        let base_path = format!("{prefix}{}", path.trim_end_matches('/'));
        let base_uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(if base_path.is_empty() {
                "/"
            } else {
                base_path.as_str()
            })
            .build()
            .map_err(|e| format!("upstream URL and path do not make a URL: {e}"))?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            base_uri,
            client,
            request_timeout,
            stream_idle_timeout,
            max_body_bytes,
        })
    }

    fn uri_for(&self, route: &Route, uri: &Uri) -> Result<Uri, ProxyError> {
        if !route.prefix {
            return Ok(self.base_uri.clone());
        }
        let mut path = self.base_path.clone();
        let rest = uri.path().strip_prefix(route.path.as_str()).unwrap_or("");
        if !rest.is_empty() {
            if !rest.starts_with('/') {
                path.push('/');
            }
            path.push_str(rest);
        }
        if let Some(query) = uri.query() {
            path.push('?');
            path.push_str(query);
        }
        if path.is_empty() {
            path.push('/');
        }
        let path = PathAndQuery::try_from(path)
            .map_err(|_| ProxyError::BadRequest("Invalid request path.".into()))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("Invalid request path.".into()))
    }

    /// Sends the (already enriched) request and returns the streaming response.
    pub async fn send<B>(
        &self,
        route: &Route,
        request: Request<B>,
        record: Arc<RequestRecord>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.uri_for(route, &parts.uri)?;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let body = RequestBody::new(body, self.max_body_bytes, Some(record.clone())).boxed_unsync();
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.request_timeout,
            self.client.request(Request::from_parts(parts, body)),
        )
        .await;
        let response = match sent {
            Err(_) => {
                return Err(ProxyError::Upstream(UpstreamError::Timeout(
                    self.request_timeout,
                )));
            }
            Ok(Err(error)) => {
                if let Some(limit) = find_cause::<BodyTooLarge>(&error) {
                    return Err(ProxyError::BodyTooLarge { limit: limit.0 });
                }
                if find_cause::<ClientBodyError>(&error).is_some() {
                    // Malformed chunking or a client that went away mid-body: a 400 for the
                    // client (and the logs), not a 502 that blames the agent.
                    return Err(ProxyError::BadRequest(
                        "The request body could not be read.".into(),
                    ));
                }
                tracing::debug!(route = %route.name, error = %error_chain(&error), "upstream request failed");
                return Err(ProxyError::Upstream(UpstreamError::Unreachable(
                    error_chain(&error),
                )));
            }
            Ok(Ok(response)) => response,
        };
        record.set_upstream(response.status().as_u16(), started.elapsed());
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if route.protocol == Protocol::Mcp
            && record.session_id().is_none()
            && let Some(id) = parts.headers.get(&crate::enrich::MCP_SESSION_HEADER)
        {
            record.set_session_id(id.clone());
        }
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(UpstreamBody::new(body, self.stream_idle_timeout)),
        ))
    }
}

fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The innermost service: sends the request to the route's upstream.
#[derive(Clone, Debug, Default)]
pub struct ForwardLayer;

impl<S> Layer<S> for ForwardLayer {
    type Service = Forward;
    fn layer(&self, _: S) -> Forward {
        Forward
    }
}

/// See [`ForwardLayer`].
#[derive(Clone, Debug, Default)]
pub struct Forward;

impl<B> Service<Request<B>> for Forward
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request.extensions().get::<Arc<Route>>().cloned();
        let record = request.extensions().get::<Arc<RequestRecord>>().cloned();
        Box::pin(async move {
            let (Some(route), Some(record)) = (route, record) else {
                return Err(ProxyError::NoRoute);
            };
            route.upstream.send(&route, request, record).await
        })
    }
}
