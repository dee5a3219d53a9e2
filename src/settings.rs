//! The runtime configuration: the validated file compiled into what the request path uses —
//! URLs parsed, header names built, policies compiled, issuers and connection pools shared.
//!
//! Two parts. [`Startup`] is read once (listeners, TLS, admin, grace period): changing it needs
//! a restart. [`Settings`] is everything per request; a reload compiles a new one and swaps the
//! `Arc` (see [`crate::app::App::reload`]), and a request keeps the `Arc` it started with.
//! Defaults come from [`crate::config::defaults`] (documented in docs/configuration.md).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::Algorithm;

use crate::auth::Authorizer;
use crate::auth::failures::FailureBudget;
use crate::auth::jwks::{Issuer, IssuerConfig};
use crate::auth::policy::{ClaimRule, Policy};
use crate::config::defaults;
use crate::config::file::{
    CorsFile, CustomClaim, CustomJwtAuthorizer, FileConfig, JwtFile, RouteFile,
};
use crate::cors::CorsPolicy;
use crate::enrich::HeaderPolicy;
use crate::forward::UpstreamClients;
use crate::forward::sigv4::{self, AgentCoreSigner, CredentialCache};
use crate::quota::Quotas;
use crate::quota::redis::RedisStore;
use crate::quota::rules::Rate;
use crate::route::{Protocol, Route, RouteTable};
use crate::session::SessionBinding;
use crate::telemetry::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamLimits};

/// Browsers may cache a preflight answer this long (gatehouse's own default).
pub(crate) const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// What is read once at startup.
#[derive(Debug, Clone)]
pub struct Startup {
    pub listeners: Vec<SocketAddr>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub admin: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub watch_config: bool,
    pub token_cache_entries: u64,
}

/// Request limits (SPEC §3 `limits`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_header_bytes: u64,
    pub max_request_body_bytes: u64,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

/// Everything a request needs, swapped as one on reload.
#[derive(Debug)]
pub struct Settings {
    pub routes: RouteTable,
    pub public_url: Option<String>,
    pub limits: Limits,
    pub trust_forwarded_headers: bool,
    pub server_timing: bool,
    pub access_log: bool,
    /// Sampling and span contents (`telemetry.sampling`, `telemetry.enduserId`).
    pub tracing: crate::telemetry::spans::TraceSettings,
    /// `limits.authFailuresPerIp`: failed validations per client address.
    pub auth_failures: Option<Arc<FailureBudget>>,
}

/// The long-lived pieces a compiled configuration points into, kept across reloads.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub fetcher: crate::auth::jwks::Fetcher,
    pub clients: UpstreamClients,
    issuers: std::sync::Mutex<HashMap<String, std::sync::Weak<Issuer>>>,
    /// AWS credentials for `agentRuntimeArn` upstreams, one cache for the process: loaded
    /// once, refreshed ahead of expiry, kept across reloads.
    aws: std::sync::OnceLock<Arc<CredentialCache>>,
    /// The session-binding key of routes that configure none: random, for this process only,
    /// kept across reloads.
    session_key: [u8; 32],
    /// Quota stores by Redis URL: one connection per Redis for the process, kept across
    /// reloads while some configuration uses it.
    quota_stores: std::sync::Mutex<HashMap<String, std::sync::Weak<RedisStore>>>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            fetcher: crate::auth::jwks::Fetcher::new(),
            clients: UpstreamClients::default(),
            issuers: std::sync::Mutex::new(HashMap::new()),
            aws: std::sync::OnceLock::new(),
            session_key: rand::random(),
            quota_stores: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The Redis quota store for `url`: the running one, or a new one (connected lazily).
    fn quota_store(&self, url: &str) -> Result<Arc<RedisStore>, String> {
        let mut stores = self
            .quota_stores
            .lock()
            .map_err(|_| "quota store registry poisoned".to_owned())?;
        if let Some(existing) = stores.get(url).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        let store = Arc::new(RedisStore::new(url)?);
        stores.insert(url.to_owned(), Arc::downgrade(&store));
        stores.retain(|_, weak| weak.strong_count() > 0);
        Ok(store)
    }

    /// The process's AWS credentials (the default chain; `region` is the first AgentCore
    /// route's, used for STS by web identity), prefetched on first use.
    fn aws_credentials(&self, region: &str) -> Arc<CredentialCache> {
        self.aws
            .get_or_init(|| {
                let cache = CredentialCache::default_chain(region);
                cache.prefetch();
                cache
            })
            .clone()
    }

    /// The issuer for a discovery URL: the running one (with its cached keys), reconfigured,
    /// or a new one that starts fetching.
    fn issuer(&self, url: &Uri, config: IssuerConfig) -> Arc<Issuer> {
        let key = url.to_string();
        let Ok(mut issuers) = self.issuers.lock() else {
            return Issuer::start(
                url.clone(),
                config,
                self.fetcher.clone(),
                self.metrics.clone(),
            );
        };
        if let Some(existing) = issuers.get(&key).and_then(std::sync::Weak::upgrade) {
            existing.set_config(config);
            return existing;
        }
        let issuer = Issuer::start(
            url.clone(),
            config,
            self.fetcher.clone(),
            self.metrics.clone(),
        );
        issuers.insert(key, Arc::downgrade(&issuer));
        issuers.retain(|_, weak| weak.strong_count() > 0);
        issuer
    }
}

/// Compiles a validated file. Errors here are the few the validator cannot see (a listener
/// name that does not resolve, a TLS file that vanished) and are phrased for the operator.
pub(crate) fn compile(
    file: &FileConfig,
    base_dir: &Path,
    shared: &Shared,
) -> Result<(Startup, Settings), String> {
    let top_jwt = file.jwt.clone().unwrap_or_default();
    let startup = startup(file, base_dir, &top_jwt)?;
    let context = RouteContext {
        file,
        limits: limits(file),
        issuers: issuers(file, &top_jwt, shared)?,
        top_jwt,
        trust_forwarded: file.trust_forwarded_headers.unwrap_or(false),
        base_dir,
        quotas: Quotas::compile(file.quotas.as_ref(), |url| shared.quota_store(url))?,
        shared,
    };
    let mut routes = Vec::new();
    let mut default_resource = None;
    for route_file in &file.routes {
        let route = Arc::new(compile_route(route_file, &context)?);
        if route_file.default_resource == Some(true) {
            default_resource = Some(route.clone());
        }
        routes.push(route);
    }
    if default_resource.is_none() {
        let mut protected = routes.iter().filter(|r| r.auth.is_some());
        if let (Some(only), None) = (protected.next(), protected.next()) {
            default_resource = Some(only.clone());
        }
    }
    let telemetry = file.telemetry.clone().unwrap_or_default();
    let settings = Settings {
        routes: RouteTable::new(routes, default_resource),
        public_url: file
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned()),
        limits: context.limits,
        trust_forwarded_headers: context.trust_forwarded,
        server_timing: telemetry.server_timing.unwrap_or(false),
        access_log: telemetry.access_log.as_deref() != Some("off"),
        tracing: crate::telemetry::spans::TraceSettings::from_file(Some(&telemetry)),
        auth_failures: auth_failures(file)?,
    };
    Ok((startup, settings))
}

/// What every route of one file is compiled against.
struct RouteContext<'a> {
    file: &'a FileConfig,
    top_jwt: JwtFile,
    limits: Limits,
    trust_forwarded: bool,
    /// Where relative paths in the file (Cedar policies) start.
    base_dir: &'a Path,
    /// By discovery URL.
    issuers: HashMap<String, Arc<Issuer>>,
    /// The global quota rules (`quotas:`), each route adds its own.
    quotas: Quotas,
    shared: &'a Shared,
}

/// `limits.authFailuresPerIp`: the per-address budget of failed validations.
fn auth_failures(file: &FileConfig) -> Result<Option<Arc<FailureBudget>>, String> {
    let Some(rate) = file
        .limits
        .as_ref()
        .and_then(|l| l.auth_failures_per_ip.as_deref())
    else {
        return Ok(None);
    };
    let rate = Rate::parse(rate).map_err(|e| format!("limits.authFailuresPerIp: {e}"))?;
    Ok(Some(FailureBudget::new(rate)))
}

/// `limits`, with the defaults.
fn limits(file: &FileConfig) -> Limits {
    let limits_file = file.limits.clone().unwrap_or_default();
    Limits {
        max_request_header_bytes: limits_file
            .max_request_header_bytes
            .map_or(defaults::MAX_REQUEST_HEADER_BYTES, |s| s.0),
        max_request_body_bytes: limits_file
            .max_request_body_bytes
            .map_or(defaults::MAX_REQUEST_BODY_BYTES, |s| s.0),
        request_timeout: limits_file
            .request_timeout
            .map_or(defaults::REQUEST_TIMEOUT, |d| d.0),
        stream_idle_timeout: limits_file
            .stream_idle_timeout
            .map_or(defaults::STREAM_IDLE_TIMEOUT, |d| d.0),
        header_read_timeout: limits_file
            .header_read_timeout
            .map_or(defaults::HEADER_READ_TIMEOUT, |d| d.0),
        max_connections: limits_file
            .max_connections
            .unwrap_or(defaults::MAX_CONNECTIONS),
    }
}

/// What is read once: listeners, TLS files, admin, grace period, cache size.
fn startup(file: &FileConfig, base_dir: &Path, top_jwt: &JwtFile) -> Result<Startup, String> {
    Ok(Startup {
        listeners: file
            .listen
            .0
            .iter()
            .map(|l| socket_addr(l))
            .collect::<Result<_, _>>()?,
        tls: file
            .tls
            .as_ref()
            .map(|t| (base_dir.join(&t.cert_file), base_dir.join(&t.key_file))),
        admin: file
            .admin
            .as_ref()
            .map(|a| socket_addr(&a.listen))
            .transpose()?,
        shutdown_grace: file
            .shutdown_grace_period
            .map_or(defaults::SHUTDOWN_GRACE_PERIOD, |d| d.0),
        watch_config: file.watch_config.unwrap_or(false),
        token_cache_entries: top_jwt
            .verified_token_cache
            .as_ref()
            .map_or(defaults::VERIFIED_TOKEN_CACHE_ENTRIES, |c| c.max_entries),
    })
}

/// One issuer per discovery URL. Routes sharing an issuer share its keys: its timing is the
/// strictest they ask for.
fn issuers(
    file: &FileConfig,
    top_jwt: &JwtFile,
    shared: &Shared,
) -> Result<HashMap<String, Arc<Issuer>>, String> {
    let mut issuer_configs: HashMap<String, (Uri, IssuerConfig)> = HashMap::new();
    for route in &file.routes {
        if let Some(authorizer) = jwt_authorizer(route) {
            let url: Uri = authorizer
                .discovery_url
                .parse()
                .map_err(|_| format!("route {}: discoveryUrl is not a URL", route.name))?;
            let config = issuer_config(top_jwt, route.jwt.as_ref());
            issuer_configs
                .entry(url.to_string())
                .and_modify(|(_, c)| *c = c.strictest(config))
                .or_insert((url, config));
        }
    }
    Ok(issuer_configs
        .into_iter()
        .map(|(key, (url, config))| (key, shared.issuer(&url, config)))
        .collect())
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("cannot use listen address {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {text:?} resolves to nothing"))
}

fn jwt_authorizer(route: &RouteFile) -> Option<&CustomJwtAuthorizer> {
    if route.authorizer_type.as_deref() == Some("NONE") {
        return None;
    }
    route
        .authorizer_configuration
        .as_ref()
        .map(|c| &c.custom_jwt_authorizer)
}

fn issuer_config(top: &JwtFile, route: Option<&JwtFile>) -> IssuerConfig {
    let pick = |f: fn(&JwtFile) -> Option<Duration>, default: Duration| {
        route.and_then(f).or_else(|| f(top)).unwrap_or(default)
    };
    IssuerConfig {
        refresh_interval: pick(
            |j| j.jwks_refresh_interval.map(|d| d.0),
            defaults::JWKS_REFRESH_INTERVAL,
        ),
        min_refetch_interval: pick(
            |j| j.jwks_min_refetch_interval.map(|d| d.0),
            defaults::JWKS_MIN_REFETCH_INTERVAL,
        ),
        max_staleness: pick(
            |j| j.max_key_staleness.map(|d| d.0),
            defaults::MAX_KEY_STALENESS,
        ),
        fetch_timeout: pick(
            |j| j.jwks_fetch_timeout.map(|d| d.0),
            defaults::JWKS_FETCH_TIMEOUT,
        ),
    }
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    crate::auth::token::asymmetric_alg(name)
        .ok_or_else(|| format!("algorithm {name:?} is not accepted"))
}

fn compile_route(route: &RouteFile, context: &RouteContext) -> Result<Route, String> {
    let name = route.name.as_str();
    let protocol = match route.protocol.as_deref() {
        Some("MCP") => Protocol::Mcp,
        _ => Protocol::Http,
    };
    let (path, prefix) = match &route.path {
        Some(path) => (path.clone(), true),
        None => (defaults::route_path(name), false),
    };

    let auth = authorizer(route, context)?;

    let allowlist = route.request_header_allowlist.clone().unwrap_or_default();
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let headers = HeaderPolicy::new(
        &allowlist,
        route.user_id_claim.clone(),
        &pairs(&route.claims_to_headers),
        &pairs(&route.claims_to_baggage),
        context.trust_forwarded,
    )
    .map_err(|e| format!("route {name}: {e}"))?;

    let upstream = compile_upstream(route, protocol, &context.limits, context.shared)
        .map_err(|e| format!("route {name}: {e}"))?;

    let cors = route
        .cors
        .as_ref()
        .or(context.file.cors.as_ref())
        .map(|c| Arc::new(cors_policy(c, &allowlist)));
    let session_binding = session_binding(route, protocol, auth.is_some(), context.shared);
    let own_quotas = route.quotas.as_ref().map(|q| q.rules.as_slice());
    let quotas = context
        .quotas
        .for_route(
            name,
            protocol == Protocol::Mcp,
            own_quotas.unwrap_or_default(),
            &context.shared.metrics,
        )
        .map_err(|e| format!("route {name}: quotas: {e}"))?;
    let outbound = match &route.outbound_auth {
        Some(file) => Some(
            compile_outbound(file, name, auth.as_ref(), &context.limits, context.shared)
                .map_err(|e| format!("route {name}: outboundAuth: {e}"))?,
        ),
        None => None,
    };
    let mcp = match &route.mcp {
        Some(mcp) => {
            let mapping = jwt_authorizer(route).map(|a| &a.advertised_scope_mapping);
            let advertise = |scope: &str| {
                mapping
                    .and_then(|m| m.get(scope))
                    .cloned()
                    .unwrap_or_else(|| scope.to_owned())
            };
            Some(Arc::new(
                crate::mcp::McpPolicy::compile(
                    mcp,
                    name,
                    context.base_dir,
                    &advertise,
                    auth.as_ref().map_or(&[][..], |a| &a.advertised_scopes),
                    &claim_rule,
                )
                .map_err(|e| format!("route {name}: mcp: {e}"))?,
            ))
        }
        // A quota keyed on the tool (or matching methods) needs the message even where no
        // rule decides on it: the MCP phase reads it and decides nothing.
        None if protocol == Protocol::Mcp && quotas.as_ref().is_some_and(|q| q.needs_message()) => {
            Some(Arc::new(crate::mcp::McpPolicy::read_only(
                defaults::MCP_MAX_MESSAGE_BYTES,
            )))
        }
        None => None,
    };
    Ok(Route {
        name: Arc::from(name),
        protocol,
        path,
        prefix,
        arn: route.arn.clone(),
        auth,
        headers,
        upstream,
        cors,
        metrics: context.shared.metrics.route(name),
        keep_alive: route.keep_alive.map(|d| d.0).filter(|d| !d.is_zero()),
        session_binding,
        quotas,
        outbound,
        mcp,
    })
}

/// The route's `customJwtAuthorizer` with the `jwt` settings that apply to it; `None` for
/// `authorizerType: NONE`.
fn authorizer(route: &RouteFile, context: &RouteContext) -> Result<Option<Authorizer>, String> {
    let name = route.name.as_str();
    let Some(authorizer) = jwt_authorizer(route) else {
        return Ok(None);
    };
    let url: Uri = authorizer
        .discovery_url
        .parse()
        .map_err(|_| format!("route {name}: bad discoveryUrl"))?;
    let issuer = context
        .issuers
        .get(&url.to_string())
        .cloned()
        .ok_or_else(|| format!("route {name}: issuer not prepared"))?;
    let route_jwt = route.jwt.as_ref();
    let algorithms = match route_jwt
        .and_then(|j| j.algorithms.as_ref())
        .or(context.top_jwt.algorithms.as_ref())
    {
        Some(names) => names
            .iter()
            .map(|n| algorithm(n))
            .collect::<Result<Vec<_>, _>>()?,
        None => defaults::ALGORITHMS
            .iter()
            .map(|n| algorithm(n))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let skew = route_jwt
        .and_then(|j| j.clock_skew)
        .or(context.top_jwt.clock_skew)
        .map_or(defaults::CLOCK_SKEW, |d| d.0);
    let advertised: Vec<String> = authorizer
        .allowed_scopes
        .iter()
        .flatten()
        .map(|s| {
            authorizer
                .advertised_scope_mapping
                .get(s)
                .cloned()
                .unwrap_or_else(|| s.clone())
        })
        .collect();
    Ok(Some(Authorizer {
        issuer,
        policy: Policy {
            allowed_clients: authorizer.allowed_clients.clone(),
            allowed_audience: authorizer.allowed_audience.clone(),
            allowed_scopes: authorizer.allowed_scopes.clone(),
            custom_claims: authorizer
                .custom_claims
                .iter()
                .flatten()
                .map(claim_rule)
                .collect::<Result<_, _>>()?,
        },
        algorithms,
        clock_skew_secs: i64::try_from(skew.as_secs()).unwrap_or(i64::MAX),
        scope_challenge: (!advertised.is_empty()).then(|| Arc::from(advertised.join(" "))),
        advertised_scopes: advertised,
    }))
}

/// `sessionBinding`: on by default for MCP routes, only where there is a subject to bind to.
fn session_binding(
    route: &RouteFile,
    protocol: Protocol,
    authenticated: bool,
    shared: &Shared,
) -> Option<SessionBinding> {
    let file = route.session_binding.as_ref();
    let enabled = file.and_then(|f| f.enabled);
    if !enabled.unwrap_or(protocol == Protocol::Mcp) || !authenticated {
        return None;
    }
    let key = match file.and_then(|f| f.key.as_ref()) {
        Some(key) => key.as_bytes(),
        None => {
            tracing::warn!(
                route = %route.name,
                "sessionBinding has no key: using this process's random key, so bound sessions \
                 end when it restarts and cannot move between edge replicas (set \
                 sessionBinding.key, the same on every replica)"
            );
            &shared.session_key
        }
    };
    Some(SessionBinding::new(key))
}

/// The route's upstream: one `url`, several `urls` (replicas with session affinity), or an
/// `agentRuntimeArn` (AgentCore Runtime, SigV4-signed).
fn compile_upstream(
    route: &RouteFile,
    protocol: Protocol,
    limits: &Limits,
    shared: &Shared,
) -> Result<Upstream, String> {
    let upstream_file = route.upstream.clone().unwrap_or_default();
    let limits = UpstreamLimits {
        request_timeout: limits.request_timeout,
        stream_idle_timeout: limits.stream_idle_timeout,
        max_body_bytes: limits.max_request_body_bytes,
    };
    let connect_timeout = upstream_file
        .connect_timeout
        .map_or(defaults::CONNECT_TIMEOUT, |d| d.0);
    let default_path = match protocol {
        Protocol::Http => defaults::HTTP_UPSTREAM_PATH,
        Protocol::Mcp => defaults::MCP_UPSTREAM_PATH,
    };
    let path = upstream_file.path.as_deref().unwrap_or(default_path);
    let parse = |text: &str| {
        text.parse::<Uri>()
            .map_err(|_| format!("upstream url {text:?} is not a URL"))
    };
    match (
        &upstream_file.url,
        &upstream_file.urls,
        &upstream_file.agent_runtime_arn,
    ) {
        (Some(url), None, None) => {
            let client = shared
                .clients
                .get(connect_timeout, upstream_file.http2.unwrap_or(false));
            Upstream::replicas(&[parse(url)?], path, client, limits)
        }
        (None, Some(urls), None) => {
            let urls = urls
                .iter()
                .map(|u| parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            let client = shared
                .clients
                .get(connect_timeout, upstream_file.http2.unwrap_or(false));
            Upstream::replicas(&urls, path, client, limits)
        }
        (None, None, Some(arn)) => {
            let region = upstream_file
                .region
                .clone()
                .or_else(|| sigv4::arn_region(arn).map(str::to_owned))
                .ok_or("agentRuntimeArn has no region")?;
            let endpoint = upstream_file
                .endpoint_url
                .clone()
                .unwrap_or_else(|| sigv4::default_endpoint(arn, &region));
            let qualifier = upstream_file
                .qualifier
                .as_deref()
                .unwrap_or(defaults::QUALIFIER);
            let signer = AgentCoreSigner {
                credentials: shared.aws_credentials(&region),
                region,
            };
            let client = shared.clients.get(connect_timeout, false);
            Upstream::agentcore(&parse(&endpoint)?, arn, qualifier, signer, client, limits)
        }
        _ => Err("upstream needs exactly one of url, urls, agentRuntimeArn".into()),
    }
}

fn cors_policy(cors: &CorsFile, allowlist: &[String]) -> CorsPolicy {
    let mut extra = cors.allowed_headers.clone();
    extra.extend(allowlist.iter().cloned());
    CorsPolicy::new(
        &cors.allowed_origins,
        &extra,
        cors.max_age.map_or(DEFAULT_CORS_MAX_AGE, |d| d.0),
    )
}

fn claim_rule(claim: &CustomClaim) -> Result<ClaimRule, String> {
    let name = claim.inbound_token_claim_name.clone();
    let value = &claim.authorizing_claim_match_value;
    let single = || {
        value
            .claim_match_value
            .match_value_string
            .clone()
            .ok_or_else(|| format!("custom claim {name}: matchValueString is required"))
    };
    match value.claim_match_operator.as_str() {
        "EQUALS" => Ok(ClaimRule::Equals {
            value: single()?,
            claim: name,
        }),
        "CONTAINS" => Ok(ClaimRule::Contains {
            value: single()?,
            claim: name,
        }),
        "CONTAINS_ANY" => Ok(ClaimRule::ContainsAny {
            values: value
                .claim_match_value
                .match_value_string_list
                .clone()
                .ok_or_else(|| format!("custom claim {name}: matchValueStringList is required"))?,
            claim: name,
        }),
        other => Err(format!("custom claim {name}: unknown operator {other}")),
    }
}

/// `outboundAuth` (SPEC §13). The cache and the concurrency bound are per route and start
/// empty on every reload (a reload may change the endpoint, client or audience).
fn compile_outbound(
    file: &crate::config::file::OutboundAuthFile,
    route: &str,
    auth: Option<&Authorizer>,
    limits: &Limits,
    shared: &Shared,
) -> Result<crate::outbound::OutboundAuth, String> {
    use crate::outbound::{Endpoint, Kind, OutboundAuth};
    let kind = match file.kind.as_str() {
        "tokenExchange" => Kind::TokenExchange,
        "clientCredentials" => Kind::ClientCredentials,
        other => return Err(format!("unknown type {other:?}")),
    };
    let endpoint = match (&file.token_endpoint, auth) {
        (Some(url), _) => Endpoint::Fixed(
            url.parse()
                .map_err(|_| format!("tokenEndpoint {url:?} is not a URL"))?,
        ),
        (None, Some(authorizer)) => Endpoint::Discovered(authorizer.issuer.clone()),
        (None, None) => return Err("tokenEndpoint is required".into()),
    };
    let request = crate::outbound::client::TokenRequest::new(
        &file.client_id,
        &file.client_secret.0,
        file.audience.as_deref(),
        file.resource.as_deref(),
        file.scope.as_deref(),
    )?;
    // Never longer than the request itself may take.
    let timeout = file
        .timeout
        .map_or(defaults::OUTBOUND_TIMEOUT, |d| d.0)
        .min(limits.request_timeout);
    let concurrency = file
        .max_concurrency
        .unwrap_or(defaults::OUTBOUND_MAX_CONCURRENCY)
        .max(1);
    Ok(OutboundAuth {
        kind,
        endpoint,
        request,
        timeout,
        permits: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(concurrency).unwrap_or(1),
        )),
        cache: crate::outbound::cache::OutboundCache::new(
            file.cache_max_entries
                .unwrap_or(defaults::OUTBOUND_CACHE_MAX_ENTRIES)
                .max(1),
        ),
        fetcher: shared.fetcher.clone(),
        counters: shared.metrics.outbound_counters(route),
    })
}
