//! Rules for one route (name, path, authorizer type, header policy, claim mappings, upstream)
//! and across routes (unique names and paths, one default resource).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::super::defaults::{arn_alias_path, route_path};
use super::super::file::{FileConfig, RouteFile, UpstreamFile};
use super::super::locate::YPath;
use super::headers::{self, MAX_ALLOWLIST};
use super::syntax::{self, parse_http_url, parse_runtime_arn, show_duration};
use super::{Ctx, authorizer, check_cors, check_jwt, positive};

/// How a route authenticates, once its `authorizerType` is understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Jwt,
    Open,
    /// Already reported as an error: follow-on rules that depend on it stay quiet.
    Unknown,
}

pub(super) fn check_routes(ctx: &mut Ctx<'_>, config: &FileConfig) {
    let routes_path = YPath::root().key("routes");
    if config.routes.is_empty() {
        ctx.error(
            &routes_path,
            "at least one route is required: add one under routes",
        );
        return;
    }
    // Name -> route, and every path a route answers on. Maps, not lists: a file can hold
    // thousands of routes.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut paths = Paths {
        routes: &config.routes,
        owners: HashMap::new(),
    };
    let mut default_resource: Option<usize> = None;
    for (i, route) in config.routes.iter().enumerate() {
        let path = routes_path.index(i);
        let name_ok = check_name(ctx, &path, route, &mut names, i);
        let auth = check_one(ctx, &path, route);

        // Paths: explicit or default, plus the ARN alias. A bad or repeated name already
        // failed, and its default path would only repeat that.
        match &route.path {
            Some(p) => paths.claim(ctx, i, p, &path.key("path"), "path"),
            None if name_ok => {
                let p = route_path(&route.name);
                paths.claim(ctx, i, &p, &path.key("name"), "default path");
            }
            None => {}
        }
        if let Some(arn) = &route.arn {
            let arn_path = path.key("arn");
            match parse_runtime_arn(arn) {
                Err(e) => ctx.error(&arn_path, e),
                Ok(_) => paths.claim(ctx, i, &arn_alias_path(arn), &arn_path, "ARN alias path"),
            }
        }

        if route.default_resource == Some(true) {
            let key = path.key("defaultResource");
            if auth == Auth::Open {
                ctx.error(
                    &key,
                    "only a CUSTOM_JWT route has protected resource metadata to serve: remove defaultResource or give the route an authorizer",
                );
            }
            match default_resource {
                Some(first) => ctx.error(
                    &key,
                    format!(
                        "route {:?} (routes[{first}]) is already the default resource: only one route can be",
                        config.routes[first].name
                    ),
                ),
                None => default_resource = Some(i),
            }
        }
    }
}

/// Checks the name's syntax and uniqueness; returns whether it is valid and new.
fn check_name<'c>(
    ctx: &mut Ctx<'_>,
    path: &YPath,
    route: &'c RouteFile,
    names: &mut HashMap<&'c str, usize>,
    i: usize,
) -> bool {
    let name_path = path.key("name");
    if route.name.is_empty() {
        ctx.error(
            if ctx.written(&name_path) { &name_path } else { path },
            "every route needs a name: add name: (letters, digits, '_' and '-', starting with a letter, up to 48 characters)",
        );
        return false;
    }
    let valid = is_route_name(&route.name);
    if !valid {
        ctx.error(
            &name_path,
            format!(
                "{:?} is not a valid route name: use letters, digits, '_' and '-', starting with a letter, up to 48 characters",
                route.name
            ),
        );
    }
    if let Some(first) = names.get(route.name.as_str()) {
        ctx.error(
            &name_path,
            format!(
                "{:?} is already the name of routes[{first}]: route names must be unique",
                route.name
            ),
        );
        return false;
    }
    names.insert(&route.name, i);
    valid
}

/// `^[A-Za-z][A-Za-z0-9_-]{0,47}$`: AgentCore's runtime names, plus `-`.
pub(super) fn is_route_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The paths routes answer on, for the uniqueness rule.
struct Paths<'c> {
    routes: &'c [RouteFile],
    /// Normalized path -> the route answering on it.
    owners: HashMap<String, usize>,
}

impl Paths<'_> {
    /// Records that route `i` answers on `p` (`what` kind of path, written at `at`), reporting
    /// a clash with an earlier route.
    fn claim(&mut self, ctx: &mut Ctx<'_>, i: usize, p: &str, at: &YPath, what: &str) {
        // `/a` and `/a/` would route the same requests.
        let normalized = match p.trim_end_matches('/') {
            "" => "/".to_owned(),
            trimmed => trimmed.to_owned(),
        };
        match self.owners.get(&normalized) {
            Some(&j) if j == i => {}
            Some(&j) => {
                let fix = if what == "default path" {
                    "give one of them an explicit path"
                } else {
                    "give one of them another path"
                };
                let owner = self.routes.get(j).map_or("", |r| r.name.as_str());
                ctx.error(
                    at,
                    format!(
                        "the {what} {p} is already used by route {owner:?} (routes[{j}]): {fix}"
                    ),
                );
            }
            None => {
                self.owners.insert(normalized, i);
            }
        }
    }
}

/// Everything about one route that does not involve other routes.
fn check_one(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile) -> Auth {
    if let Some(protocol) = &route.protocol
        && protocol != "HTTP"
        && protocol != "MCP"
    {
        ctx.error(
            &path.key("protocol"),
            format!(
                "must be \"HTTP\" or \"MCP\" (got {protocol:?}), as AgentCore's serverProtocol"
            ),
        );
    }
    if let Some(p) = &route.path {
        check_route_path(ctx, &path.key("path"), p);
    }
    let auth = check_auth_type(ctx, path, route);
    if let Some(config) = &route.authorizer_configuration
        && auth == Auth::Jwt
    {
        authorizer::check(ctx, &path.key("authorizerConfiguration"), config);
    }
    check_allowlist(ctx, path, route, auth);
    check_claim_mappings(ctx, path, route, auth);
    if let Some(jwt) = &route.jwt {
        check_jwt(ctx, &path.key("jwt"), jwt, false);
        if auth == Auth::Open {
            ctx.warn(
                &path.key("jwt"),
                "is ignored: the route's authorizerType is NONE",
            );
        }
    }
    match &route.upstream {
        Some(upstream) => check_upstream(ctx, &path.key("upstream"), upstream),
        None => ctx.error(
            path,
            "upstream is required: add upstream: { url: http://127.0.0.1:8080 } (or urls, or agentRuntimeArn)",
        ),
    }
    if let Some(cors) = &route.cors {
        check_cors(ctx, &path.key("cors"), cors);
    }
    if let Some(binding) = &route.session_binding
        && let Some(key) = &binding.key
        && key.len() < 32
    {
        ctx.error(
            &path.key("sessionBinding").key("key"),
            format!(
                "must be at least 32 bytes (got {}): generate one with `openssl rand -base64 48` and pass it as ${{GATEHOUSE_SESSION_KEY}}",
                key.len()
            ),
        );
    }
    if auth != Auth::Unknown {
        super::outbound::check(ctx, path, route, auth == Auth::Jwt);
    }
    if let Some(mcp) = &route.mcp {
        super::mcp::check(ctx, &path.key("mcp"), route, mcp);
    }
    if let Some(keep_alive) = route.keep_alive
        && !keep_alive.0.is_zero()
        && keep_alive.0 < Duration::from_secs(1)
    {
        ctx.error(
            &path.key("keepAlive"),
            format!(
                "must be at least 1s, or 0 for none (got {})",
                show_duration(keep_alive.0)
            ),
        );
    }
    auth
}

fn check_route_path(ctx: &mut Ctx<'_>, at: &YPath, p: &str) {
    let problem = if !p.starts_with('/') {
        Some(format!("must start with \"/\" (got {p:?})"))
    } else if p.contains(['?', '#']) {
        Some(format!(
            "must be a path without query or fragment (got {p:?}): remove the ?... or #..."
        ))
    } else if p == "/.well-known" || p.starts_with("/.well-known/") {
        Some(format!(
            "{p} is under /.well-known/, which the edge reserves for the metadata it serves (OAuth protected resource metadata): choose another path"
        ))
    } else if !p.is_ascii()
        || p.contains(char::is_whitespace)
        || p.parse::<http::uri::PathAndQuery>().is_err()
    {
        Some(format!(
            "{p:?} is not a valid URL path: percent-encode spaces and other special characters"
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        ctx.error(at, problem);
    }
}

/// SPEC §3: NONE must be explicit; a pasted authorizerConfiguration implies CUSTOM_JWT.
fn check_auth_type(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile) -> Auth {
    let has_config = route.authorizer_configuration.is_some();
    let type_path = path.key("authorizerType");
    match (route.authorizer_type.as_deref(), has_config) {
        (Some("CUSTOM_JWT") | None, true) => Auth::Jwt,
        (Some("NONE"), false) => Auth::Open,
        (Some("CUSTOM_JWT"), false) => {
            ctx.error(
                &type_path,
                "CUSTOM_JWT needs an authorizerConfiguration with a customJwtAuthorizer: paste it from AgentCore (agentcore.json, the starter toolkit or CreateAgentRuntime)",
            );
            Auth::Unknown
        }
        (Some("NONE"), true) => {
            ctx.error_at_key(
                &path.key("authorizerConfiguration"),
                "the route's authorizerType is NONE, so this authorizer would be ignored: remove it, or set authorizerType: CUSTOM_JWT",
            );
            Auth::Unknown
        }
        (None, false) => {
            ctx.error(
                path,
                "no authorizer: paste an authorizerConfiguration (customJwtAuthorizer) from AgentCore, or set authorizerType: NONE explicitly to serve this route without authentication",
            );
            Auth::Unknown
        }
        (Some(other), _) => {
            let why = if other == "AWS_IAM" {
                "IAM (SigV4) inbound authentication is AgentCore's own; gatehouse authenticates callers with JWTs: use CUSTOM_JWT, or NONE"
            } else {
                "use CUSTOM_JWT or NONE"
            };
            ctx.error(
                &type_path,
                format!("unknown authorizerType {other:?}: {why}"),
            );
            Auth::Unknown
        }
    }
}

fn check_allowlist(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile, auth: Auth) {
    let Some(list) = &route.request_header_allowlist else {
        return;
    };
    let list_path = path.key("requestHeaderAllowlist");
    if list.is_empty() {
        ctx.error(
            &list_path,
            "must list at least one header (AgentCore allows 1 to 20), or be removed",
        );
    }
    if list.len() > MAX_ALLOWLIST {
        ctx.error(
            &list_path,
            format!(
                "has {} headers; AgentCore allows at most {MAX_ALLOWLIST}: remove some",
                list.len()
            ),
        );
    }
    let sigv4 = route
        .upstream
        .as_ref()
        .is_some_and(|u| u.agent_runtime_arn.is_some());
    let mut seen = HashSet::new();
    for (i, name) in list.iter().enumerate() {
        let item = list_path.index(i);
        // When the authorizer type is in doubt, that error is enough.
        if let Some(problem) = headers::allowlist_problem(name, auth != Auth::Open) {
            ctx.error(&item, problem);
        } else if !seen.insert(name.to_ascii_lowercase()) {
            ctx.error(
                &item,
                format!("{name} is listed twice (header names are case-insensitive): remove one"),
            );
        } else if sigv4 && name.eq_ignore_ascii_case("Authorization") {
            ctx.warn(
                &item,
                "Authorization is never forwarded to an agentRuntimeArn upstream: the SigV4 signature replaces it",
            );
        } else if route
            .claims_to_headers
            .keys()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            ctx.warn(
                &item,
                format!(
                    "{name} is set from claimsToHeaders: the client's value is always replaced"
                ),
            );
        }
    }
}

/// `userIdClaim`, `claimsToHeaders` and `claimsToBaggage`: they need a token to read from.
fn check_claim_mappings(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile, auth: Auth) {
    let open = |ctx: &mut Ctx<'_>, key: &str| {
        ctx.error_at_key(
            &path.key(key),
            format!(
                "the route's authorizerType is NONE, so there are no claims to read: remove {key}"
            ),
        );
    };
    if let Some(claim) = &route.user_id_claim {
        if auth == Auth::Open {
            open(ctx, "userIdClaim");
        } else if claim.is_empty() {
            ctx.error(
                &path.key("userIdClaim"),
                "must name a claim (e.g. sub), or be removed",
            );
        }
    }
    let headers_path = path.key("claimsToHeaders");
    if auth == Auth::Open && !route.claims_to_headers.is_empty() {
        open(ctx, "claimsToHeaders");
    } else {
        let mut seen = HashSet::new();
        for (header, claim) in &route.claims_to_headers {
            let at = headers_path.key(header);
            if let Some(problem) = headers::claim_header_problem(header) {
                ctx.error_at_key(&at, problem);
            } else if !seen.insert(header.to_ascii_lowercase()) {
                ctx.error_at_key(
                    &at,
                    format!(
                        "{header} is listed twice (header names are case-insensitive): remove one"
                    ),
                );
            }
            if claim.is_empty() {
                ctx.error(&at, "must name a claim (e.g. sub)");
            }
        }
    }
    let baggage_path = path.key("claimsToBaggage");
    if auth == Auth::Open && !route.claims_to_baggage.is_empty() {
        open(ctx, "claimsToBaggage");
    } else {
        for (key, claim) in &route.claims_to_baggage {
            let at = baggage_path.key(key);
            if key == "session.id" {
                ctx.error_at_key(
                    &at,
                    "session.id is set by the edge to the session id: choose another baggage key",
                );
            } else if !syntax::is_token(key) {
                ctx.error_at_key(
                    &at,
                    format!(
                        "{key:?} is not a valid baggage key: use letters, digits and !#$%&'*+-.^_`|~ (e.g. enduser.id)"
                    ),
                );
            }
            if claim.is_empty() {
                ctx.error(&at, "must name a claim (e.g. sub)");
            }
        }
    }
}

fn check_upstream(ctx: &mut Ctx<'_>, path: &YPath, upstream: &UpstreamFile) {
    let forms: Vec<&str> = [
        ("url", upstream.url.is_some()),
        ("urls", upstream.urls.is_some()),
        ("agentRuntimeArn", upstream.agent_runtime_arn.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    match forms.as_slice() {
        [] => ctx.error(
            path,
            "needs exactly one of url, urls or agentRuntimeArn (e.g. url: http://127.0.0.1:8080)",
        ),
        [_] => {}
        [first, rest @ ..] => {
            for key in rest {
                ctx.error_at_key(
                    &path.key(key),
                    format!("{first} and {key} are alternatives: keep exactly one of url, urls or agentRuntimeArn"),
                );
            }
        }
    }
    if let Some(url) = &upstream.url {
        check_upstream_url(ctx, &path.key("url"), url);
    }
    if let Some(urls) = &upstream.urls {
        let urls_path = path.key("urls");
        if urls.is_empty() {
            ctx.error(&urls_path, "must list at least one URL");
        }
        let mut seen = HashSet::new();
        for (i, url) in urls.iter().enumerate() {
            let item = urls_path.index(i);
            if !seen.insert(url) {
                ctx.error(&item, format!("{url} is listed twice: remove one"));
            } else {
                check_upstream_url(ctx, &item, url);
            }
        }
    }
    let arn_region = upstream.agent_runtime_arn.as_ref().and_then(|arn| {
        parse_runtime_arn(arn)
            .map_err(|e| ctx.error(&path.key("agentRuntimeArn"), e))
            .ok()
    });
    if let Some(p) = &upstream.path {
        let at = path.key("path");
        if upstream.agent_runtime_arn.is_some() {
            ctx.error_at_key(
                &at,
                "an agentRuntimeArn upstream is always invoked at /runtimes/{arn}/invocations: remove path",
            );
        } else if !p.starts_with('/') || p.contains(['?', '#']) {
            ctx.error(
                &at,
                format!("must start with \"/\" and have no query or fragment (got {p:?})"),
            );
        }
    }
    let arn_only = |ctx: &mut Ctx<'_>, key: &str| {
        if upstream.agent_runtime_arn.is_none() {
            ctx.error_at_key(
                &path.key(key),
                format!("{key} only applies to agentRuntimeArn upstreams: remove it"),
            );
        }
    };
    if let Some(region) = &upstream.region {
        arn_only(ctx, "region");
        if let Some(arn_region) = arn_region
            && arn_region != region
        {
            ctx.error(
                &path.key("region"),
                format!(
                    "must match the ARN's region {arn_region} (got {region:?}): fix it or remove it"
                ),
            );
        }
    }
    if let Some(qualifier) = &upstream.qualifier {
        arn_only(ctx, "qualifier");
        let valid = (1..=100).contains(&qualifier.len())
            && qualifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            ctx.error(
                &path.key("qualifier"),
                format!(
                    "{qualifier:?} is not a valid qualifier: 1 to 100 letters, digits or '_' (an endpoint name such as DEFAULT)"
                ),
            );
        }
    }
    if let Some(endpoint) = &upstream.endpoint_url {
        arn_only(ctx, "endpointUrl");
        if let Err(e) = parse_http_url(endpoint) {
            ctx.error(&path.key("endpointUrl"), e);
        }
    }
    if upstream.http2.is_some() && upstream.agent_runtime_arn.is_some() {
        ctx.error_at_key(
            &path.key("http2"),
            "http2 applies to url/urls upstreams (h2c); AgentCore negotiates HTTP/2 over TLS itself: remove it",
        );
    }
    positive(
        ctx,
        &path.key("connectTimeout"),
        upstream.connect_timeout,
        "2s",
    );
}

fn check_upstream_url(ctx: &mut Ctx<'_>, at: &YPath, url: &str) {
    if let Err(e) = parse_http_url(url) {
        ctx.error(at, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names() {
        assert!(
            is_route_name("a") && is_route_name("support-v2_x") && is_route_name(&"a".repeat(48))
        );
        assert!(
            !is_route_name("")
                && !is_route_name("1a")
                && !is_route_name("a b")
                && !is_route_name(&"a".repeat(49))
        );
    }
}
