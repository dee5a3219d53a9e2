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

mod route;
use route::compile_route;

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
    /// Request threads (`serve --threads`): 1 serves on the caller's runtime; more start that
    /// many threads, each with its own single-threaded runtime (see `server`).
    pub workers: usize,
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
#[derive(Debug, Clone)]
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
        workers: 1,
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
