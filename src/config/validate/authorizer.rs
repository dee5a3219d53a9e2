//! The pasted AgentCore `customJwtAuthorizer` (`CustomJWTAuthorizerConfiguration`): the
//! constraints of AgentCore's control-plane model (research/agentcore.md §1.2, §1.5), so a
//! block that AgentCore accepts is accepted here, plus gatehouse's own: https discovery, and
//! no workload-identity restrictions it could not enforce.

use super::super::file::{AuthorizerConfiguration, CustomClaim, CustomJwtAuthorizer};
use super::super::locate::YPath;
use super::Ctx;
use super::syntax::{is_loopback_host, parse_http_url};

const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// Checks the authorizer under `config_path` (`routes[i].authorizerConfiguration`).
pub(super) fn check(ctx: &mut Ctx<'_>, config_path: &YPath, config: &AuthorizerConfiguration) {
    // Name the block the way the file spells it.
    let upper = config_path.key("customJWTAuthorizer");
    let path = if ctx.written(&upper) {
        upper
    } else {
        config_path.key("customJwtAuthorizer")
    };
    let a = &config.custom_jwt_authorizer;
    check_discovery_url(ctx, &path, a);

    if a.allowed_audience.is_none()
        && a.allowed_clients.is_none()
        && a.allowed_scopes.is_none()
        && a.custom_claims.is_none()
    {
        ctx.error(
            &path,
            "needs at least one of allowedAudience, allowedClients, allowedScopes or customClaims (as in AgentCore): otherwise any token from the issuer would be accepted",
        );
    }
    for (key, list) in [
        ("allowedAudience", &a.allowed_audience),
        ("allowedClients", &a.allowed_clients),
    ] {
        if let Some(list) = list {
            check_values(ctx, &path.key(key), list);
        }
    }
    if let Some(scopes) = &a.allowed_scopes {
        let scopes_path = path.key("allowedScopes");
        non_empty(ctx, &scopes_path, scopes.is_empty());
        for (i, scope) in scopes.iter().enumerate() {
            if let Err(e) = check_scope(scope) {
                ctx.error(&scopes_path.index(i), e);
            }
        }
    }
    check_scope_mapping(ctx, &path, a);
    if let Some(claims) = &a.custom_claims {
        let claims_path = path.key("customClaims");
        non_empty(ctx, &claims_path, claims.is_empty());
        for (i, claim) in claims.iter().enumerate() {
            check_claim(ctx, &claims_path.index(i), claim);
        }
    }
    for (key, set) in [
        ("privateEndpoint", a.private_endpoint.is_some()),
        (
            "privateEndpointOverrides",
            a.private_endpoint_overrides.is_some(),
        ),
    ] {
        if set {
            ctx.warn(
                &path.key(key),
                "is ignored: it tells AWS how to reach a private identity provider; gatehouse fetches discovery and keys directly over its own network",
            );
        }
    }
    if a.allowed_workload_configuration.is_some() {
        ctx.error_at_key(
            &path.key("allowedWorkloadConfiguration"),
            "gatehouse cannot verify AgentCore workload identities, so this restriction could not be enforced: remove it (and restrict callers with allowedClients or customClaims)",
        );
    }
}

fn check_discovery_url(ctx: &mut Ctx<'_>, path: &YPath, a: &CustomJwtAuthorizer) {
    let at = path.key("discoveryUrl");
    let url = &a.discovery_url;
    if url.is_empty() {
        ctx.error(
            if ctx.written(&at) { &at } else { path },
            "discoveryUrl is required: the issuer's OpenID Connect discovery URL, ending in /.well-known/openid-configuration",
        );
        return;
    }
    // AgentCore's pattern: ^.+/\.well-known/openid-configuration$
    if !(url.ends_with(DISCOVERY_SUFFIX) && url.len() > DISCOVERY_SUFFIX.len()) {
        ctx.error(
            &at,
            format!(
                "must end with {DISCOVERY_SUFFIX} (got {url:?}): use the issuer's OpenID Connect discovery URL"
            ),
        );
        return;
    }
    match parse_http_url(url) {
        Err(e) => ctx.error(&at, e),
        Ok(parsed) if !parsed.https && !is_loopback_host(&parsed.host) => ctx.error(
            &at,
            format!(
                "must use https (got {url:?}): keys fetched over plain http could be forged; http is allowed only for loopback hosts (127.0.0.1, ::1, localhost)"
            ),
        ),
        Ok(_) => {}
    }
}

pub(super) fn non_empty(ctx: &mut Ctx<'_>, path: &YPath, empty: bool) {
    if empty {
        ctx.error(
            path,
            "must not be empty (AgentCore requires at least one entry): list values, or remove the key",
        );
    }
}

/// `allowedAudience` and `allowedClients`: any non-empty strings.
pub(super) fn check_values(ctx: &mut Ctx<'_>, path: &YPath, list: &[String]) {
    non_empty(ctx, path, list.is_empty());
    for (i, value) in list.iter().enumerate() {
        if value.is_empty() {
            ctx.error(&path.index(i), "must not be an empty string");
        }
    }
}

/// AgentCore's scope syntax: 1..255 of `[\x21\x23-\x5B\x5D-\x7E]` (RFC 6749 scope-token).
pub(super) fn check_scope(scope: &str) -> Result<(), String> {
    let valid_char = |c: char| matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E');
    if scope.is_empty() || scope.len() > 255 || !scope.chars().all(valid_char) {
        return Err(format!(
            "{scope:?} is not a valid scope: 1 to 255 printable ASCII characters without spaces, '\"' or '\\'"
        ));
    }
    Ok(())
}

fn check_scope_mapping(ctx: &mut Ctx<'_>, path: &YPath, a: &CustomJwtAuthorizer) {
    let map_path = path.key("advertisedScopeMapping");
    if !ctx.written(&map_path) {
        return;
    }
    let mapping = &a.advertised_scope_mapping;
    if mapping.is_empty() || mapping.len() > 50 {
        ctx.error(
            &map_path,
            format!(
                "must have 1 to 50 entries (got {}), as in AgentCore: map allowed scopes to the names to advertise, or remove the key",
                mapping.len()
            ),
        );
    }
    let allowed: std::collections::HashSet<&String> = a.allowed_scopes.iter().flatten().collect();
    for (scope, advertised) in mapping {
        let at = map_path.key(scope);
        if !allowed.contains(scope) {
            ctx.error_at_key(
                &at,
                format!(
                    "{scope:?} is not in allowedScopes: only allowed scopes can be advertised under another name; add it to allowedScopes or remove this entry"
                ),
            );
        }
        if let Err(e) = check_scope(advertised) {
            ctx.error(&at, e);
        }
    }
}

pub(super) fn check_claim(ctx: &mut Ctx<'_>, path: &YPath, claim: &CustomClaim) {
    let name = &claim.inbound_token_claim_name;
    let name_path = path.key("inboundTokenClaimName");
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if name == "scp" {
        ctx.error(
            &name_path,
            "Custom claim name can't be 'scp'. Please configure claims in the allowed_scopes field",
        );
    } else if !name_ok {
        ctx.error(
            &name_path,
            format!(
                "{name:?} is not a valid claim name: 1 to 255 letters, digits, '_', '.', '-' or ':'"
            ),
        );
    }

    let value_type = claim.inbound_token_claim_value_type.as_str();
    let type_ok = matches!(value_type, "STRING" | "STRING_ARRAY");
    if !type_ok {
        ctx.error(
            &path.key("inboundTokenClaimValueType"),
            format!("must be \"STRING\" or \"STRING_ARRAY\" (got {value_type:?})"),
        );
    }
    let match_path = path.key("authorizingClaimMatchValue");
    let matcher = &claim.authorizing_claim_match_value;
    let op = matcher.claim_match_operator.as_str();
    let op_path = match_path.key("claimMatchOperator");
    match (value_type, op) {
        (_, op) if !matches!(op, "EQUALS" | "CONTAINS" | "CONTAINS_ANY") => ctx.error(
            &op_path,
            format!("must be \"EQUALS\", \"CONTAINS\" or \"CONTAINS_ANY\" (got {op:?})"),
        ),
        ("STRING", "CONTAINS" | "CONTAINS_ANY") => ctx.error(
            &op_path,
            format!(
                "a STRING claim is compared with EQUALS (got {op}): use EQUALS, or inboundTokenClaimValueType: STRING_ARRAY for a list claim"
            ),
        ),
        ("STRING_ARRAY", "EQUALS") => ctx.error(
            &op_path,
            "a STRING_ARRAY claim is matched with CONTAINS or CONTAINS_ANY (got EQUALS): use one of those, or inboundTokenClaimValueType: STRING",
        ),
        _ => {}
    }

    let value_path = match_path.key("claimMatchValue");
    let value = &matcher.claim_match_value;
    match (&value.match_value_string, &value.match_value_string_list) {
        (Some(_), Some(_)) | (None, None) => ctx.error(
            &value_path,
            "set exactly one of matchValueString (EQUALS, CONTAINS) and matchValueStringList (CONTAINS_ANY)",
        ),
        (Some(single), None) => {
            let at = value_path.key("matchValueString");
            if op == "CONTAINS_ANY" {
                ctx.error_at_key(
                    &at,
                    "CONTAINS_ANY takes a list: write matchValueStringList: [...] instead",
                );
            } else {
                check_match_value(ctx, &at, single);
            }
        }
        (None, Some(list)) => {
            let at = value_path.key("matchValueStringList");
            if matches!(op, "EQUALS" | "CONTAINS") {
                ctx.error_at_key(
                    &at,
                    format!("{op} takes one value: write matchValueString: ... instead"),
                );
            } else if list.is_empty() {
                ctx.error(&at, "must list at least one value");
            } else {
                for (i, item) in list.iter().enumerate() {
                    check_match_value(ctx, &at.index(i), item);
                }
            }
        }
    }
}

/// A value a claim is compared with. AgentCore's model restricts single values to
/// `[A-Za-z0-9_.-]+`; gatehouse can compare anything, so other characters only warn that the
/// block would not paste back into AgentCore.
fn check_match_value(ctx: &mut Ctx<'_>, at: &YPath, value: &str) {
    if value.is_empty() || value.len() > 255 {
        ctx.error(at, "must be 1 to 255 characters");
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        ctx.warn(
            at,
            format!(
                "{value:?} has characters AgentCore would reject (it allows letters, digits, '_', '.' and '-'); gatehouse accepts it"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert!(check_scope("invoke").is_ok());
        assert!(check_scope("api://edge/invoke").is_ok());
        assert!(check_scope("a b").is_err());
        assert!(check_scope("a\"b").is_err());
        assert!(check_scope("a\\b").is_err());
        assert!(check_scope("").is_err());
        assert!(check_scope(&"x".repeat(256)).is_err());
    }
}
