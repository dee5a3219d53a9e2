//! One route of the file, compiled: its authorizer, upstream, CORS policy, session binding,
//! MCP policy, quotas and outbound credential, against what every route shares
//! ([`super::RouteContext`]).

use super::*;

pub(super) fn compile_route(route: &RouteFile, context: &RouteContext) -> Result<Route, String> {
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
        (Some(_), None, None) | (None, Some(_), None) => {
            let urls = match (&upstream_file.url, &upstream_file.urls) {
                (Some(url), _) => vec![parse(url)?],
                (None, urls) => urls
                    .iter()
                    .flatten()
                    .map(|u| parse(u))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let http2 = upstream_file.http2.unwrap_or(false);
            let client = shared.clients.get(connect_timeout, http2);
            let pools = (!http2).then_some((&shared.clients, connect_timeout));
            Upstream::replicas(&urls, path, client, pools, limits)
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
