//! A route's `mcp` block (SPEC §11): values, rules, and the Cedar policy files, which are read
//! and parsed here so `gatehouse validate` reports their syntax errors as `FILE:LINE:COL` in
//! the policy file itself.

use super::super::file::{CedarFile, McpFile, McpRuleFile, RouteFile};
use super::super::locate::YPath;
use super::authorizer::{check_claim, check_scope, check_values, non_empty};
use super::{Ctx, PolicyFileProblem};
use crate::mcp::cedar::CedarPolicy;

/// Cedar policy files larger than this are refused (a policy set is a few KiB).
const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;

pub(super) fn check(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile, mcp: &McpFile) {
    if route.protocol.as_deref() != Some("MCP") {
        ctx.error_at_key(
            path,
            "only an MCP route (protocol: MCP) carries JSON-RPC messages to decide on: remove mcp, or set protocol: MCP",
        );
    }
    if let Some(size) = mcp.max_message_bytes
        && size.0 == 0
    {
        ctx.error(
            &path.key("maxMessageBytes"),
            "must be more than 0: the largest JSON-RPC message a client may POST, e.g. 4MiB",
        );
    }
    for (key, value, allowed) in [
        ("enforcement", &mcp.enforcement, ["enforce", "logOnly"]),
        ("default", &mcp.default, ["allow", "deny"]),
    ] {
        if let Some(value) = value
            && !allowed.contains(&value.as_str())
        {
            ctx.error(
                &path.key(key),
                format!(
                    "must be {:?} or {:?} (got {value:?})",
                    allowed[0], allowed[1]
                ),
            );
        }
    }
    match (&mcp.rules, &mcp.cedar) {
        (Some(_), Some(_)) => ctx.error_at_key(
            &path.key("cedar"),
            "rules and cedar are alternatives: decide with one of them (Cedar policies can express every rule)",
        ),
        (Some(rules), None) => {
            for (i, rule) in rules.iter().enumerate() {
                check_rule(ctx, &path.key("rules").index(i), rule);
            }
        }
        (None, Some(cedar)) => check_cedar(ctx, &path.key("cedar"), route, cedar),
        (None, None) => {}
    }
}

fn check_rule(ctx: &mut Ctx<'_>, path: &YPath, rule: &McpRuleFile) {
    if let Some(m) = &rule.match_ {
        for (key, value) in [("method", &m.method), ("name", &m.name)] {
            if value.as_deref() == Some("") {
                ctx.error(
                    &path.key("match").key(key),
                    "must not be empty: a name, a glob such as \"billing_*\", or remove the key to match any",
                );
            }
        }
    }
    let conditions = rule.allowed_scopes.is_some()
        || rule.allowed_clients.is_some()
        || rule.custom_claims.is_some();
    if rule.deny == Some(true) && conditions {
        ctx.error_at_key(
            &path.key("deny"),
            "a deny rule refuses whatever matches: its allowedScopes, allowedClients and customClaims would never be checked; split it into two rules",
        );
    }
    if let Some(clients) = &rule.allowed_clients {
        check_values(ctx, &path.key("allowedClients"), clients);
    }
    if let Some(scopes) = &rule.allowed_scopes {
        let at = path.key("allowedScopes");
        non_empty(ctx, &at, scopes.is_empty());
        for (i, scope) in scopes.iter().enumerate() {
            if let Err(e) = check_scope(scope) {
                ctx.error(&at.index(i), e);
            }
        }
    }
    if let Some(claims) = &rule.custom_claims {
        let at = path.key("customClaims");
        non_empty(ctx, &at, claims.is_empty());
        for (i, claim) in claims.iter().enumerate() {
            check_claim(ctx, &at.index(i), claim);
        }
    }
}

fn check_cedar(ctx: &mut Ctx<'_>, path: &YPath, route: &RouteFile, cedar: &CedarFile) {
    let policies_path = path.key("policies");
    if cedar.policies.0.is_empty() {
        ctx.error(
            if ctx.written(&policies_path) {
                &policies_path
            } else {
                path
            },
            "policies is required: one Cedar policy file or a list, relative to this file",
        );
        return;
    }
    if cedar.resource.as_deref() == Some("") {
        ctx.error(
            &path.key("resource"),
            "must not be empty: the gateway ARN your policies name, or remove it to use the route name",
        );
    }
    let mut files = Vec::new();
    for (i, file) in cedar.policies.0.iter().enumerate() {
        let at = ctx.item_path(&policies_path, i);
        let full = ctx.base_dir.join(file);
        let size = std::fs::metadata(&full).map(|m| m.len());
        match size {
            Err(e) => ctx.error(&at, format!("cannot read {}: {e}", full.display())),
            Ok(size) if size > MAX_POLICY_FILE_BYTES => ctx.error(
                &at,
                format!(
                    "{} is larger than {} KiB: is it a Cedar policy file?",
                    full.display(),
                    MAX_POLICY_FILE_BYTES / 1024
                ),
            ),
            Ok(_) => match std::fs::read_to_string(&full) {
                Ok(text) => files.push((full.display().to_string(), text)),
                Err(e) => ctx.error(&at, format!("cannot read {}: {e}", full.display())),
            },
        }
    }
    if files.len() != cedar.policies.0.len() {
        return;
    }
    let resource = cedar.resource.as_deref().unwrap_or(&route.name);
    if let Err(errors) = CedarPolicy::new(&files, resource) {
        for e in errors {
            ctx.policy_file_error(PolicyFileProblem {
                file: e.file,
                line: e.line,
                column: e.column,
                message: format!("Cedar: {}", e.message),
            });
        }
    }
}
