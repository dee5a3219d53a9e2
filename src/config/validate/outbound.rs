//! `outboundAuth` (SPEC §13): what the upstream receives instead of the caller's token, and
//! the rules around the caller's `Authorization`: `outboundAuth` and `Authorization` in the
//! allowlist exclude each other, and an MCP route that forwards the caller's token gets a
//! warning naming the MCP rule against token passthrough.

use super::super::file::{OutboundAuthFile, RouteFile};
use super::super::locate::YPath;
use super::syntax::{is_loopback_host, parse_http_url};
use super::{Ctx, positive};

/// The MCP rule a route that forwards the caller's token breaks, quoted in the warning.
const MCP_PASSTHROUGH: &str = "the MCP specification forbids passing a client's token through to another resource (Security Best Practices, \"Token Passthrough\")";

/// The caller's `Authorization` is forwarded by this route.
fn forwards_authorization(route: &RouteFile) -> Option<usize> {
    route
        .request_header_allowlist
        .as_ref()?
        .iter()
        .position(|h| h.eq_ignore_ascii_case("authorization"))
}

/// Checks `outboundAuth` and its relation to the allowlist. `jwt`: the route has a
/// CUSTOM_JWT authorizer (there is a caller's token to exchange and an issuer to default to).
pub(super) fn check(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile, jwt: bool) {
    let mcp = route.protocol.as_deref() == Some("MCP");
    let forwarded = forwards_authorization(route);
    let Some(outbound) = &route.outbound_auth else {
        if mcp && let Some(i) = forwarded {
            ctx.warn(
                &path.key("requestHeaderAllowlist").index(i),
                format!(
                    "forwards the caller's token to the MCP server: {MCP_PASSTHROUGH}; this is right only when the upstream is the same resource (e.g. an MCP gateway validating the same issuer's tokens); otherwise remove Authorization and set outboundAuth (tokenExchange or clientCredentials)"
                ),
            );
        }
        return;
    };
    let at = path.key("outboundAuth");
    if let Some(i) = forwarded {
        ctx.error(
            &path.key("requestHeaderAllowlist").index(i),
            "Authorization and outboundAuth exclude each other: the upstream gets the outbound credential, never the caller's token; remove Authorization from requestHeaderAllowlist",
        );
    }
    if route
        .upstream
        .as_ref()
        .is_some_and(|u| u.agent_runtime_arn.is_some())
    {
        ctx.error_at_key(
            &at,
            "an agentRuntimeArn upstream is called with the edge's SigV4 signature, which replaces Authorization: remove outboundAuth",
        );
    }
    check_block(ctx, &at, outbound, jwt);
}

fn check_block(ctx: &mut Ctx<'_>, at: &YPath, outbound: &OutboundAuthFile, jwt: bool) {
    let exchange = match outbound.kind.as_str() {
        "tokenExchange" => true,
        "clientCredentials" => false,
        "" => {
            ctx.error(
                at,
                "type is required: tokenExchange (RFC 8693, the caller's token as subject_token) or clientCredentials (one token for the edge)",
            );
            return;
        }
        other => {
            ctx.error(
                &at.key("type"),
                format!("must be tokenExchange or clientCredentials (got {other:?})"),
            );
            return;
        }
    };
    if exchange && !jwt {
        ctx.error(
            &at.key("type"),
            "tokenExchange exchanges the caller's validated token, and this route has no CUSTOM_JWT authorizer: use clientCredentials, or add an authorizer",
        );
    }
    match &outbound.token_endpoint {
        Some(url) => check_endpoint(ctx, &at.key("tokenEndpoint"), url),
        None if !jwt => ctx.error(
            at,
            "tokenEndpoint is required: the route has no authorizer whose discovery document would name one",
        ),
        None => {}
    }
    for (key, empty, what) in [
        (
            "clientId",
            outbound.client_id.is_empty(),
            "clientId is required: the edge's own client at the token endpoint (e.g. ${EDGE_CLIENT_ID})",
        ),
        (
            "clientSecret",
            outbound.client_secret.0.is_empty(),
            "clientSecret is required (sent with client_secret_basic): pass it from the environment, e.g. ${EDGE_CLIENT_SECRET}",
        ),
    ] {
        if empty {
            let key_path = at.key(key);
            let target = if ctx.written(&key_path) {
                key_path
            } else {
                at.clone()
            };
            ctx.error(&target, what);
        }
    }
    for (key, value) in [
        ("clientId", &outbound.client_id),
        ("clientSecret", &outbound.client_secret.0),
    ] {
        if value.chars().any(char::is_control) {
            ctx.error(
                &at.key(key),
                "contains control characters (a line break from the environment?): remove them",
            );
        }
    }
    if exchange && outbound.audience.is_none() && outbound.resource.is_none() {
        ctx.error(
            at,
            "tokenExchange needs audience or resource (or both): the upstream the new token is for; without them the identity provider would pick the audience",
        );
    }
    for (key, value) in [
        ("audience", &outbound.audience),
        ("resource", &outbound.resource),
        ("scope", &outbound.scope),
    ] {
        if let Some(value) = value
            && (value.trim().is_empty() || value.chars().any(char::is_control))
        {
            ctx.error(
                &at.key(key),
                "must be a non-empty value without control characters, or be removed",
            );
        }
    }
    if let Some(resource) = &outbound.resource
        && !resource.is_empty()
        && parse_http_url(resource).is_err()
        && resource
            .parse::<http::Uri>()
            .map_or(true, |u| u.scheme().is_none())
    {
        ctx.error(
            &at.key("resource"),
            format!(
                "must be an absolute URI (RFC 8707), e.g. https://tools.internal/mcp (got {resource:?})"
            ),
        );
    }
    positive(ctx, &at.key("timeout"), outbound.timeout, "5s");
    if outbound.max_concurrency == Some(0) {
        ctx.error(
            &at.key("maxConcurrency"),
            "must be at least 1 (the default is 16): token requests in flight to the endpoint",
        );
    }
    if outbound.cache_max_entries == Some(0) {
        ctx.error(
            &at.key("cacheMaxEntries"),
            "must be at least 1 (the default is 10000): without a cache every request costs a token request",
        );
    }
}

fn check_endpoint(ctx: &mut Ctx<'_>, at: &YPath, url: &str) {
    match parse_http_url(url) {
        Err(e) => ctx.error(at, e),
        Ok(parsed) if !parsed.https && !is_loopback_host(&parsed.host) => ctx.error(
            at,
            format!(
                "must use https (got {url:?}): the edge's client secret and the caller's token travel in the request; http is allowed only for loopback hosts"
            ),
        ),
        Ok(_) => {}
    }
}
