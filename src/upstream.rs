//! What a route's upstream is — one `url`, several replicas (`urls`), or an AgentCore Runtime
//! (`agentRuntimeArn`) — as data the forwarder consumes: base URIs built once at load, the
//! balancer, the signer, the pooled client handle and the limits. Choosing a route reads it;
//! only [`crate::forward`] sends anything.
//!
//! `url` upstreams receive `{url}{path}` where `path` is `upstream.path`, or `/invocations`
//! (HTTP routes) / `/mcp` (MCP routes); for routes with an explicit prefix `path`, the rest of
//! the request path after the prefix is appended and the query string kept. The AgentCore
//! invocation form drops the query (`qualifier` is for the edge).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::error::ProxyError;
use crate::forward::UpstreamError;
use crate::forward::balance::Balancer;
use crate::forward::client::{UpstreamClient, UpstreamClients};
use crate::forward::pool::Pool;
use crate::forward::sigv4::{self, AgentCoreSigner};
use crate::route::Route;

/// One upstream base URL (a replica, or the AgentCore invocation URL).
#[derive(Debug)]
pub struct Replica {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's own path prefix joined with the upstream path, without trailing slash.
    pub base_path: String,
    /// `scheme://authority{base_path}[?query]`: the whole URI for exact routes, built once.
    pub(crate) base_uri: Uri,
    /// The HTTP/1.1 keep-alive connections to this replica; `None` sends through the
    /// upstream's `client` (h2 upstreams, AgentCore).
    pub(crate) pool: Option<Arc<Pool>>,
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
            pool: None,
        })
    }

    pub(crate) fn uri_for(&self, route: &Route, uri: &Uri) -> Result<Uri, ProxyError> {
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
    /// Several replicas of one agent (`urls`), each plus `path`. With `pools` (HTTP/1.1
    /// upstreams: the registry and the connect timeout) each replica gets its own pool;
    /// without, requests go through `client`.
    pub(crate) fn replicas(
        urls: &[Uri],
        path: &str,
        client: UpstreamClient,
        pools: Option<(&UpstreamClients, Duration)>,
        limits: UpstreamLimits,
    ) -> Result<Self, String> {
        let replicas = urls
            .iter()
            .map(|url| {
                let mut replica = Replica::new(url, path, None)?;
                if let Some((clients, connect_timeout)) = pools {
                    replica.pool =
                        Some(clients.pool(&replica.scheme, &replica.authority, connect_timeout)?);
                }
                Ok(replica)
            })
            .collect::<Result<Vec<_>, String>>()?;
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

    pub(crate) fn replica(&self, index: usize) -> Result<&Replica, ProxyError> {
        self.replicas.get(index).ok_or_else(|| {
            ProxyError::Upstream(UpstreamError::Unreachable("no upstream replica".into()))
        })
    }
}
