//! Rules for quotas (SPEC §12): the top-level `quotas` block (store and global rules), each
//! route's `quotas.rules`, and `limits.authFailuresPerIp`. Rates and key parts are parsed by
//! [`crate::quota::rules`], the same code the request path compiles them with.

use std::collections::{HashMap, HashSet};

use super::super::file::{FileConfig, QuotaRuleFile, QuotaStoreFile};
use super::super::locate::YPath;
use super::Ctx;
use super::route::is_route_name;
use crate::quota::rules::{KeyPart, Rate};

/// Key parts a rule may combine at most.
const MAX_KEY_PARTS: usize = 8;

/// The top-level block and every route's rules.
pub(super) fn check(ctx: &mut Ctx<'_>, config: &FileConfig) {
    let mut global_names: HashMap<&str, usize> = HashMap::new();
    if let Some(quotas) = &config.quotas {
        let path = YPath::root().key("quotas");
        if let Some(store) = &quotas.store {
            check_store(ctx, &path.key("store"), store);
        }
        for (i, rule) in quotas.rules.iter().enumerate() {
            let at = path.key("rules").index(i);
            check_rule(ctx, &at, rule, Scope::Global);
            if !rule.name.is_empty()
                && let Some(first) = global_names.insert(&rule.name, i)
            {
                ctx.error(
                    &at.key("name"),
                    format!(
                        "{:?} is already the name of quotas.rules[{first}]: rule names must be unique (they label metrics and the access log)",
                        rule.name
                    ),
                );
            }
        }
    }
    for (r, route) in config.routes.iter().enumerate() {
        let Some(quotas) = &route.quotas else {
            continue;
        };
        let mcp = route.protocol.as_deref() == Some("MCP");
        let mut names: HashSet<&str> = HashSet::new();
        for (i, rule) in quotas.rules.iter().enumerate() {
            let at = YPath::root()
                .key("routes")
                .index(r)
                .key("quotas")
                .key("rules")
                .index(i);
            check_rule(ctx, &at, rule, Scope::Route { mcp });
            if rule.name.is_empty() {
                continue;
            }
            if global_names.contains_key(rule.name.as_str()) {
                ctx.error(
                    &at.key("name"),
                    format!(
                        "{:?} is already the name of a global rule (quotas.rules): give this route's rule another name",
                        rule.name
                    ),
                );
            } else if !names.insert(&rule.name) {
                ctx.error(
                    &at.key("name"),
                    format!(
                        "{:?} is listed twice in this route's rules: rule names must be unique",
                        rule.name
                    ),
                );
            }
        }
    }
}

/// `limits.authFailuresPerIp`.
pub(super) fn check_auth_failures(ctx: &mut Ctx<'_>, path: &YPath, rate: &str) {
    if let Err(e) = Rate::parse(rate) {
        ctx.error(path, e);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Route { mcp: bool },
}

fn check_store(ctx: &mut Ctx<'_>, path: &YPath, store: &QuotaStoreFile) {
    match store.kind.as_str() {
        "local" => {
            for (key, set) in [
                ("url", store.url.is_some()),
                ("keyPrefix", store.key_prefix.is_some()),
                ("timeout", store.timeout.is_some()),
                ("onError", store.on_error.is_some()),
            ] {
                if set {
                    ctx.error_at_key(
                        &path.key(key),
                        "only applies to type: redis: remove it, or set type: redis",
                    );
                }
            }
        }
        "redis" => {
            match &store.url {
                None => ctx.error(
                    path,
                    "type: redis needs a url: add url: redis://127.0.0.1:6379/0",
                ),
                Some(url) if !url.starts_with("redis://") && !url.starts_with("rediss://") => {
                    ctx.error(
                        &path.key("url"),
                        "must start with redis:// (or rediss:// for TLS), e.g. redis://127.0.0.1:6379/0",
                    );
                }
                Some(url) => {
                    if let Err(e) = crate::quota::redis::RedisStore::new(url) {
                        ctx.error(&path.key("url"), e);
                    }
                }
            }
            if store.timeout.is_some_and(|t| t.0.is_zero()) {
                ctx.error(
                    &path.key("timeout"),
                    "must be greater than 0 (e.g. \"50ms\"): it bounds how long a request waits for Redis",
                );
            }
            if let Some(on_error) = &store.on_error
                && on_error != "allow"
                && on_error != "deny"
            {
                ctx.error(
                    &path.key("onError"),
                    format!(
                        "must be \"allow\" (fail open: serve unlimited while Redis is down) or \"deny\" (answer 503); got {on_error:?}"
                    ),
                );
            }
        }
        other => ctx.error(
            &path.key("type"),
            format!("must be \"local\" or \"redis\" (got {other:?})"),
        ),
    }
}

fn check_rule(ctx: &mut Ctx<'_>, path: &YPath, rule: &QuotaRuleFile, scope: Scope) {
    if rule.name.is_empty() {
        let name = path.key("name");
        ctx.error(
            if ctx.written(&name) { &name } else { path },
            "every rule needs a name: add name: (letters, digits, '_' and '-', starting with a letter, up to 48 characters)",
        );
    } else if !is_route_name(&rule.name) {
        ctx.error(
            &path.key("name"),
            format!(
                "{:?} is not a valid rule name: use letters, digits, '_' and '-', starting with a letter, up to 48 characters",
                rule.name
            ),
        );
    }
    check_key(ctx, path, rule, scope);
    match &rule.rate {
        Some(rate) => {
            if let Err(e) = Rate::parse(rate) {
                ctx.error(&path.key("rate"), e);
            }
        }
        None if rule.concurrency.is_none() => ctx.error(
            path,
            "a rule needs a rate (e.g. rate: 25/s), a concurrency limit (e.g. concurrency: 10), or both",
        ),
        None => {}
    }
    if let Some(burst) = rule.burst {
        if rule.rate.is_none() {
            ctx.error_at_key(
                &path.key("burst"),
                "is the bucket size of a rate: add a rate, or remove burst",
            );
        } else if burst == 0 {
            ctx.error(
                &path.key("burst"),
                "must be at least 1 (the default is the rate's count)",
            );
        }
    }
    if rule.concurrency == Some(0) {
        ctx.error(
            &path.key("concurrency"),
            "must be at least 1 (remove it for no concurrency limit)",
        );
    }
    if let Some(matches) = &rule.matches {
        let at = path.key("match");
        if matches.method.is_none() && matches.name.is_none() {
            ctx.error(
                &at,
                "needs a method, a name or both, e.g. { method: tools/call, name: \"search_*\" }",
            );
        }
        for (key, value) in [("method", &matches.method), ("name", &matches.name)] {
            if value.as_deref() == Some("") {
                ctx.error(&at.key(key), "must not be empty (use \"*\" for any)");
            }
        }
        if scope == (Scope::Route { mcp: false }) {
            ctx.error_at_key(
                &at,
                "only MCP routes carry messages to match: remove match, or set protocol: MCP",
            );
        }
    }
}

fn check_key(ctx: &mut Ctx<'_>, rule_path: &YPath, rule: &QuotaRuleFile, scope: Scope) {
    let path = &rule_path.key("key");
    let parts = &rule.key.0;
    if parts.is_empty() {
        ctx.error(
            if ctx.written(path) { path } else { rule_path },
            "a rule needs a key: any of client_id, sub, route, ip, tool, claim:<name> (key: [route] for one limit for the whole route)",
        );
        return;
    }
    if parts.len() > MAX_KEY_PARTS {
        ctx.error(
            path,
            format!("has {} parts; at most {MAX_KEY_PARTS}", parts.len()),
        );
        return;
    }
    let mut seen = HashSet::new();
    for (i, text) in parts.iter().enumerate() {
        let item = ctx.item_path(path, i);
        match KeyPart::parse(text) {
            Err(e) => ctx.error(&item, e),
            Ok(part) => {
                if !seen.insert(part.clone()) {
                    ctx.error(&item, format!("{text} is listed twice: remove one"));
                } else if part == KeyPart::Tool && scope == (Scope::Route { mcp: false }) {
                    ctx.error(
                        &item,
                        "only MCP routes call tools: remove tool, or set protocol: MCP",
                    );
                }
            }
        }
    }
}
