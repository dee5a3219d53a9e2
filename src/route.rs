//! The route phase: request path → the agent it is for ([`Route`]), or its OAuth protected
//! resource metadata.
//!
//! Matching (SPEC §4.1): `/runtimes/{name-or-escaped-arn}/invocations` exactly (the id is
//! percent-decoded, so `arn%3Aaws%3A...` and `arn:aws:...` both match); explicit `path`s
//! exactly or as a prefix on a segment boundary, longest first. The RFC 9728 metadata URLs are
//! resolved here too — `/.well-known/oauth-protected-resource{path}`, AgentCore's
//! `{path}/.well-known/oauth-protected-resource` and the root form when one route is the
//! default resource — so the next phases know a metadata request needs no token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use percent_encoding::percent_decode_str;

use crate::auth::Authorizer;
use crate::auth::challenge::PRM_SUFFIX;
use crate::context::Recorded;
use crate::cors::CorsPolicy;
use crate::enrich::HeaderPolicy;
use crate::error::ProxyError;
use crate::phase::Check;
use crate::session::SessionBinding;
use crate::telemetry::metrics::RouteMetrics;
use crate::upstream::Upstream;

/// AgentCore `serverProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Mcp,
}

/// One agent behind the edge, compiled from its configuration.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub protocol: Protocol,
    /// The route's path template (`/runtimes/{name}/invocations` or the configured `path`).
    pub path: String,
    /// Explicit `path`s match as prefixes; the invocation form matches exactly.
    pub prefix: bool,
    pub arn: Option<String>,
    /// `None` for `authorizerType: NONE`.
    pub auth: Option<Authorizer>,
    pub headers: HeaderPolicy,
    pub upstream: Upstream,
    pub cors: Option<Arc<CorsPolicy>>,
    pub metrics: RouteMetrics,
    /// SSE comment keep-alive interval toward the client.
    pub keep_alive: Option<Duration>,
    /// Binds session ids to the token subject (`sessionBinding`).
    pub session_binding: Option<SessionBinding>,
    /// The quota rules that apply on this route (global and its own); `None`: no quotas.
    pub quotas: Option<Arc<crate::quota::policy::RouteQuotas>>,
    /// The upstream's own credential (`outboundAuth`, SPEC §13).
    pub outbound: Option<crate::outbound::OutboundAuth>,
    /// The `mcp` block (SPEC §11): read each POST's JSON-RPC message and decide on it.
    pub mcp: Option<Arc<crate::mcp::McpPolicy>>,
}

impl Route {
    /// Whether POSTs on this route are read as one JSON-RPC message before they are forwarded
    /// (the MCP policy phase runs). Routes that do not stream their bodies untouched.
    pub fn reads_messages(&self) -> bool {
        self.mcp.is_some()
    }
}

/// What the request asks of the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Invoke the agent (everything but metadata).
    Invoke,
    /// Its protected resource metadata; `resource_path` is the route path the client used.
    Metadata { resource_path: String },
}

/// The routes of one configuration, indexed for lookup. The indexes hold positions in
/// `routes`, and a request's record holds the position of its route: resolving a request
/// clones no route, so no reference count shared by every request thread is written.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    pub routes: Vec<Arc<Route>>,
    /// Names and ARNs, for `/runtimes/{id}/invocations`.
    by_id: HashMap<String, usize>,
    /// Explicit paths, longest first.
    explicit: Vec<usize>,
    /// Served at the root metadata URL.
    default_resource: Option<usize>,
}

impl RouteTable {
    /// Indexes `routes`; `default_resource` names the route for the root metadata URL.
    pub fn new(routes: Vec<Arc<Route>>, default_resource: Option<Arc<Route>>) -> Self {
        let mut by_id = HashMap::new();
        let mut explicit = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            if route.prefix {
                explicit.push(i);
            } else {
                by_id.insert(route.name.to_string(), i);
            }
            if let Some(arn) = &route.arn {
                by_id.insert(arn.clone(), i);
            }
        }
        explicit.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()));
        let default_resource =
            default_resource.and_then(|d| routes.iter().position(|r| Arc::ptr_eq(r, &d)));
        Self {
            routes,
            by_id,
            explicit,
            default_resource,
        }
    }

    /// The route at a position [`Self::resolve`] returned.
    pub fn get(&self, index: usize) -> Option<&Arc<Route>> {
        self.routes.get(index)
    }

    /// The position of the route for a request path, and whether it asks for metadata.
    pub fn resolve(&self, path: &str) -> Option<(usize, Target)> {
        if let Some(rest) = path.strip_prefix(PRM_SUFFIX) {
            if rest.is_empty() || rest == "/" {
                let index = self.default_resource?;
                let resource_path = self.get(index)?.path.clone();
                return Some((index, Target::Metadata { resource_path }));
            }
            return self.metadata_for(rest);
        }
        if let Some(resource) = path.strip_suffix(PRM_SUFFIX) {
            return self.metadata_for(resource);
        }
        self.invocation(path).map(|index| (index, Target::Invoke))
    }

    fn metadata_for(&self, resource_path: &str) -> Option<(usize, Target)> {
        let index = self.invocation(resource_path)?;
        let route = self.get(index)?;
        // Metadata exists for a route's own path (or its ARN form), not for every path
        // under a prefix route.
        if route.prefix && route.path != resource_path {
            return None;
        }
        route.auth.as_ref()?;
        Some((
            index,
            Target::Metadata {
                resource_path: resource_path.to_owned(),
            },
        ))
    }

    fn invocation(&self, path: &str) -> Option<usize> {
        if let Some(id) = path
            .strip_prefix("/runtimes/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
            .filter(|id| !id.contains('/'))
        {
            let decoded = percent_decode_str(id).decode_utf8().ok()?;
            if let Some(&index) = self.by_id.get(decoded.as_ref()) {
                return Some(index);
            }
        }
        self.explicit.iter().copied().find(|&i| {
            self.get(i).is_some_and(|route| {
                path.strip_prefix(route.path.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || route.path.ends_with('/')
                })
            })
        })
    }
}

/// Resolves the route before anything else: every later phase is per route. Records the
/// route and its [`Target`] in the request record (read them with
/// [`crate::context::RequestRecord::route`] and [`crate::context::RequestRecord::target`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Routing;

impl Check for Routing {
    fn check<B>(&self, request: &mut Request<Recorded<B>>) -> Result<(), ProxyError> {
        let record = request.body().record();
        let (index, target) = record
            .settings
            .routes
            .resolve(request.uri().path())
            .ok_or(ProxyError::NoRoute)?;
        record.set_route(index, target);
        Ok(())
    }
}
