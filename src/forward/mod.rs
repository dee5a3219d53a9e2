//! The forward phase: the request goes to the route's upstream over a pooled keep-alive
//! connection, and the response streams back.
//!
//! `url` upstreams receive `{url}{path}` where `path` is `upstream.path`, or `/invocations`
//! (HTTP routes) / `/mcp` (MCP routes); for routes with an explicit prefix `path`, the rest of
//! the request path after the prefix is appended and the query string kept. The AgentCore
//! invocation form drops the query (`qualifier` is for the edge). No response headers within
//! `requestTimeout`: 504. Connection refused, reset or TLS failure before a response: 502.
//! After the headers, the body streams under `streamIdleTimeout` (SSE: with the route's
//! comment keep-alives, [`body`]).
//!
//! Three kinds of upstream, one [`Upstream`]: one `url` (the hot path: no balancing, no
//! buffering); several `urls`, where [`balance`] picks the replica by session affinity and
//! passive health, a refused connection moves the untouched body to the next replica
//! ([`reclaim`]), and a new MCP session is created on the replica its id hashes to; and an
//! `agentRuntimeArn`, signed with SigV4 ([`sigv4`]).

pub mod balance;
pub mod body;
pub mod reclaim;
pub mod sigv4;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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

use hyper::body::Incoming;

use self::balance::Balancer;
use self::body::RequestBody;
pub use self::body::UpstreamBody;
use self::reclaim::{Prefixed, Reclaimable};
use self::sigv4::{AgentCoreSigner, Payload, SIGNED_PAYLOAD_LIMIT};
use crate::body::{BoxError, ProxyBody};
use crate::context::RequestRecord;
use crate::error::ProxyError;
use crate::route::{Protocol, Route};
use crate::session::{MCP_SESSION_HEADER, affinity_key};

/// Why the upstream exchange failed before a response arrived.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// Refused, reset, TLS or protocol failure (502).
    Unreachable(String),
    /// No response headers within `requestTimeout` (504).
    Timeout(Duration),
    /// An AgentCore request could not be signed: no AWS credentials (502).
    Signing(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "upstream unreachable: {e}"),
            Self::Timeout(d) => write!(f, "upstream timed out after {}s", d.as_secs()),
            Self::Signing(e) => write!(f, "cannot sign the upstream request: {e}"),
        }
    }
}

type OutboundBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle pooled connections are closed after this (see `build_client`).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
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
        // Below the keep-alive timeouts common agent servers close idle connections at
        // (uvicorn and Node: 5 s): reusing a connection the server is closing at that moment
        // fails a request that was already written, which cannot be retried safely.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if http2 {
        client.http2_only(true);
    }
    client.build(https)
}

/// One upstream base URL (a replica, or the AgentCore invocation URL).
#[derive(Debug)]
pub struct Replica {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's own path prefix joined with the upstream path, without trailing slash.
    pub base_path: String,
    /// `scheme://authority{base_path}[?query]`: the whole URI for exact routes, built once.
    base_uri: Uri,
}

impl Replica {
    /// `url` plus `path` (default by protocol).
    fn new(url: &Uri, path: &str, query: Option<&str>) -> Result<Self, String> {
        let scheme = url.scheme().cloned().ok_or("upstream URL has no scheme")?;
        let authority = url.authority().cloned().ok_or("upstream URL has no host")?;
        let prefix = url.path().trim_end_matches('/');
        let base_path = format!("{prefix}{}", path.trim_end_matches('/'));
        let mut whole = if base_path.is_empty() {
            "/".to_owned()
        } else {
            base_path.clone()
        };
        if let Some(query) = query {
            whole.push('?');
            whole.push_str(query);
        }
        let base_uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(whole)
            .build()
            .map_err(|e| format!("upstream URL and path do not make a URL: {e}"))?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            base_uri,
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
}

/// Where one route's requests go: one URL, several replicas, or AgentCore Runtime (signed).
#[derive(Debug)]
pub struct Upstream {
    /// The first replica's authority (the AgentCore endpoint's for `agentRuntimeArn`): the
    /// `server.address` when no request picked a replica yet.
    pub authority: Authority,
    pub replicas: Vec<Replica>,
    /// Replica choice when there are several.
    pub balancer: Option<Balancer>,
    /// `agentRuntimeArn` upstreams: the ARN and how to sign for it.
    pub agentcore: Option<AgentCore>,
    pub client: UpstreamClient,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub max_body_bytes: u64,
}

/// An `agentRuntimeArn` upstream.
#[derive(Debug)]
pub struct AgentCore {
    pub arn: Arc<str>,
    pub qualifier: String,
    pub signer: AgentCoreSigner,
}

/// The timeouts and limits every upstream kind shares.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLimits {
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
        Self::replicas(
            std::slice::from_ref(url),
            path,
            client,
            UpstreamLimits {
                request_timeout,
                stream_idle_timeout,
                max_body_bytes,
            },
        )
    }

    /// Several replicas of one agent (`urls`), each plus `path`.
    pub fn replicas(
        urls: &[Uri],
        path: &str,
        client: UpstreamClient,
        limits: UpstreamLimits,
    ) -> Result<Self, String> {
        let replicas = urls
            .iter()
            .map(|url| Replica::new(url, path, None))
            .collect::<Result<Vec<_>, _>>()?;
        let balancer = (replicas.len() > 1).then(|| {
            let ids: Vec<String> = urls.iter().map(ToString::to_string).collect();
            Balancer::new(&ids)
        });
        let Some(first) = replicas.first() else {
            return Err("upstream has no URL".into());
        };
        Ok(Self {
            authority: first.authority.clone(),
            replicas,
            balancer,
            agentcore: None,
            client,
            request_timeout: limits.request_timeout,
            stream_idle_timeout: limits.stream_idle_timeout,
            max_body_bytes: limits.max_body_bytes,
        })
    }

    /// AgentCore Runtime: `POST {endpoint}/runtimes/{escaped arn}/invocations?qualifier=Q`.
    pub fn agentcore(
        endpoint: &Uri,
        arn: &str,
        qualifier: &str,
        signer: AgentCoreSigner,
        client: UpstreamClient,
        limits: UpstreamLimits,
    ) -> Result<Self, String> {
        let path = crate::config::defaults::arn_alias_path(arn);
        let query = format!(
            "qualifier={}",
            percent_encoding::utf8_percent_encode(qualifier, sigv4::URI_ENCODE)
        );
        let replica = Replica::new(endpoint, &path, Some(&query))?;
        Ok(Self {
            authority: replica.authority.clone(),
            replicas: vec![replica],
            balancer: None,
            agentcore: Some(AgentCore {
                arn: Arc::from(arn),
                qualifier: qualifier.to_owned(),
                signer,
            }),
            client,
            request_timeout: limits.request_timeout,
            stream_idle_timeout: limits.stream_idle_timeout,
            max_body_bytes: limits.max_body_bytes,
        })
    }

    fn replica(&self, index: usize) -> Result<&Replica, ProxyError> {
        self.replicas.get(index).ok_or_else(|| {
            ProxyError::Upstream(UpstreamError::Unreachable("no upstream replica".into()))
        })
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
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let body = RequestBody::new(body, self.max_body_bytes, Some(record.clone()));
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        // The replica and AgentCore paths are boxed: inlined, their state would make every
        // request's future (the plain path's too) larger to build and move.
        let sent = if let Some(agentcore) = &self.agentcore {
            record.set_upstream_arn(&agentcore.arn);
            tokio::time::timeout_at(deadline, Box::pin(self.send_signed(agentcore, parts, body)))
                .await
        } else if let Some(balancer) = &self.balancer {
            let placing = route.protocol == Protocol::Mcp
                && parts.method == http::Method::POST
                && affinity_key(&parts.headers).is_none();
            let sending = Box::pin(async {
                let sent = if placing {
                    self.send_placing(balancer, route, &parts, body).await
                } else {
                    self.send_balanced(balancer, route, &parts, body).await
                };
                sent.map(|(response, index)| {
                    // The replica that answered, for the client span's server.address.
                    if let Some(replica) = self.replicas.get(index) {
                        record.set_upstream_address(&replica.authority);
                    }
                    response
                })
            });
            tokio::time::timeout_at(deadline, sending).await
        } else {
            parts.uri = self.replica(0)?.uri_for(route, &parts.uri)?;
            tokio::time::timeout_at(
                deadline,
                self.client
                    .request(Request::from_parts(parts, body.boxed_unsync())),
            )
            .await
            .map(|r| r.map_err(SendError::Client))
        };
        let response = match sent {
            Err(_) => {
                return Err(ProxyError::Upstream(UpstreamError::Timeout(
                    self.request_timeout,
                )));
            }
            Ok(Err(SendError::Edge(error))) => return Err(error),
            Ok(Err(SendError::Client(error))) => {
                let error = ProxyError::from_upstream(&error);
                if let ProxyError::Upstream(UpstreamError::Unreachable(chain)) = &error {
                    tracing::debug!(route = %route.name, error = %chain, "upstream request failed");
                }
                return Err(error);
            }
            Ok(Ok(response)) => response,
        };
        record.set_upstream(response.status().as_u16(), started.elapsed());
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        crate::session::record_upstream_id(route.protocol, &record, &parts.headers);
        let mut body = UpstreamBody::new(body, self.stream_idle_timeout);
        if is_event_stream(&parts.headers) {
            // Reverse proxies in front of the edge (nginx) must not buffer the stream either.
            parts
                .headers
                .entry(X_ACCEL_BUFFERING.clone())
                .or_insert(HeaderValue::from_static("no"));
            if let Some(interval) = route.keep_alive {
                body = body.with_keep_alive(interval);
            }
        }
        Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
    }

    /// Several replicas: the session's replica (or the next in round robin); a replica that
    /// refuses the connection is marked down and the request goes to the next choice, as long
    /// as its body has not started to go out. Returns the response and the replica's index.
    async fn send_balanced<R>(
        &self,
        balancer: &Balancer,
        route: &Route,
        parts: &http::request::Parts,
        body: R,
    ) -> Result<(Response<Incoming>, usize), SendError>
    where
        R: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    {
        let session = affinity_key(&parts.headers);
        let mut tried: Vec<usize> = Vec::new();
        let slot = Arc::new(Mutex::new(Some(body)));
        loop {
            let Some(index) = balancer.pick(session.as_ref().map(|s| s.as_bytes()), &tried) else {
                return Err(SendError::Edge(ProxyError::Upstream(
                    UpstreamError::Unreachable("every replica refused the connection".into()),
                )));
            };
            tried.push(index);
            let replica = self.replica(index).map_err(SendError::Edge)?;
            let mut request = Request::new(Reclaimable::new(slot.clone()).boxed_unsync());
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = replica
                .uri_for(route, &parts.uri)
                .map_err(SendError::Edge)?;
            *request.headers_mut() = parts.headers.clone();
            *request.version_mut() = parts.version;
            match self.client.request(request).await {
                Ok(response) => return Ok((response, index)),
                Err(error) if error.is_connect() => {
                    balancer.mark_down(index);
                    tracing::warn!(route = %route.name, replica = %replica.authority, error = %crate::error::error_chain(&error), "replica refused the connection; marked down");
                    // The body never left if hyper did not take it out of the slot.
                    let untouched = slot.lock().map(|b| b.is_some()).unwrap_or(false);
                    if !untouched {
                        return Err(SendError::Client(error));
                    }
                }
                Err(error) => return Err(SendError::Client(error)),
            }
        }
    }

    /// A sessionless MCP POST to several replicas, which may be an `initialize` that makes a
    /// stateful server choose a session id. Later requests with that id go to the replica the
    /// id hashes to, so the session must be created there: when the answer carries a new
    /// `Mcp-Session-Id` that hashes elsewhere, the session is deleted again on the replica
    /// that made it and the request is repeated (round robin moves on) until a replica makes
    /// an id that hashes to itself — on average as many attempts as there are replicas, only
    /// when a session starts, and no state shared between edges. The body is replayed from
    /// memory (JSON-RPC messages are small); a body above [`PLACEMENT_BODY_LIMIT`] is sent once.
    async fn send_placing<B>(
        &self,
        balancer: &Balancer,
        route: &Route,
        parts: &http::request::Parts,
        body: RequestBody<B>,
    ) -> Result<(Response<Incoming>, usize), SendError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (prefix, rest) = read_up_to(body, PLACEMENT_BODY_LIMIT).await?;
        if let Some(rest) = rest {
            let whole = Prefixed::new(prefix, rest.boxed_unsync());
            return self.send_balanced(balancer, route, parts, whole).await;
        }
        let body = prefix;
        // Each attempt lands right with probability 1/n: after 16n attempts a miss is
        // below 1e-7 (n = 3: 4e-9), while the expected count stays n.
        let attempts = balancer.len().saturating_mul(16).max(32);
        for attempt in 1..=attempts {
            let full = http_body_util::Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            let (response, index) = self.send_balanced(balancer, route, parts, full).await?;
            let Some(id) = response.headers().get(&MCP_SESSION_HEADER) else {
                return Ok((response, index));
            };
            if balancer.pick(Some(id.as_bytes()), &[]) == Some(index) {
                return Ok((response, index));
            }
            if attempt == attempts {
                tracing::warn!(route = %route.name, attempts, "no replica created a session that hashes to itself; later requests of this session may reach another replica");
                return Ok((response, index));
            }
            self.delete_session(route, parts, index, id.clone());
        }
        Err(SendError::Edge(ProxyError::Upstream(
            UpstreamError::Unreachable("no replica answered".into()),
        )))
    }

    /// Ends a session the edge made by mistake (best effort, in the background).
    fn delete_session(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        index: usize,
        id: HeaderValue,
    ) {
        let Some(Ok(uri)) = self
            .replicas
            .get(index)
            .map(|r| r.uri_for(route, &parts.uri))
        else {
            return;
        };
        let mut request = Request::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = http::Method::DELETE;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in &parts.headers {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(MCP_SESSION_HEADER.clone(), id);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        });
    }

    /// AgentCore Runtime: reads a small body once to hash it (larger ones stream, unsigned
    /// payload), signs, sends.
    async fn send_signed<B>(
        &self,
        agentcore: &AgentCore,
        mut parts: http::request::Parts,
        body: RequestBody<B>,
    ) -> Result<Response<Incoming>, SendError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let replica = self.replica(0).map_err(SendError::Edge)?;
        parts.uri = replica.base_uri.clone();
        parts.method = http::Method::POST;
        let (buffered, rest) = read_up_to(body, SIGNED_PAYLOAD_LIMIT).await?;
        let (payload, outbound) = match rest {
            None => (
                Payload::of(&buffered),
                http_body_util::Full::new(buffered)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            Some(rest) => (
                Payload::Unsigned,
                Prefixed::new(buffered, rest.boxed_unsync()).boxed_unsync(),
            ),
        };
        agentcore
            .signer
            .sign(&parts.method, &parts.uri, &mut parts.headers, &payload)
            .await
            .map_err(|e| SendError::Edge(ProxyError::Upstream(UpstreamError::Signing(e.0))))?;
        self.client
            .request(Request::from_parts(parts, outbound))
            .await
            .map_err(SendError::Client)
    }
}

/// Sessionless MCP bodies up to this size are kept to be replayed (see `send_placing`).
pub const PLACEMENT_BODY_LIMIT: usize = 256 * 1024;

/// Reads `body` until it ends or passes `limit` bytes: the bytes read, and the rest of the
/// body when it did not end.
async fn read_up_to<B>(
    mut body: RequestBody<B>,
    limit: usize,
) -> Result<(Bytes, Option<RequestBody<B>>), SendError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut buffered = BytesMut::new();
    while buffered.len() <= limit {
        match body.frame().await {
            None => return Ok((buffered.freeze(), None)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffered.extend_from_slice(&data);
                }
            }
            // The client's body failed: over the limit (413) or unreadable (400).
            Some(Err(error)) => return Err(SendError::Edge(ProxyError::from_upstream(&*error))),
        }
    }
    Ok((buffered.freeze(), Some(body)))
}

/// How sending failed: an error the edge decided, or the client's.
enum SendError {
    Edge(ProxyError),
    Client(hyper_util::client::legacy::Error),
}

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii_start()
            .get(..17)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
    })
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
