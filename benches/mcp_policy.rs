//! The MCP policy phase's CPU per request (SPEC §11): reading a 1 KiB `tools/call` and deciding
//! it with 10 rules or a 20-policy Cedar set, and filtering a 100-tool `tools/list` response.
//! A route without `mcp` does none of this (its body streams). `cargo bench --bench
//! mcp_policy`; numbers in docs/performance.md.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use gatehouse::auth::claims::Claims;
use gatehouse::auth::policy::{ClaimRule, Policy};
use gatehouse::mcp::cedar::CedarPolicy;
use gatehouse::mcp::engine::{CallerLists, Decider, McpPolicy};
use gatehouse::mcp::filter::{ListFilter, ListKind};
use gatehouse::mcp::read::read_message;
use gatehouse::mcp::rules::{Glob, Rule, Rules};
use http::HeaderMap;
use http_body_util::Full;
use serde_json::json;

fn claims() -> Arc<Claims> {
    Arc::new(
        Claims::parse(
            br#"{"iss":"https://idp","sub":"user-1","client_id":"agent","scope":"invoke billing","groups":["support","ops"],"exp":2000000000}"#,
        )
        .unwrap(),
    )
}

/// Ten rules; the call matches the last one, so all ten are tried.
fn rules() -> McpPolicy {
    let mut rules: Vec<Rule> = (0..9)
        .map(|i| Rule {
            label: format!("rules[{i}]").into(),
            method: Some(Glob::new("tools/call")),
            name: Some(Glob::new(&format!("team{i}_*"))),
            policy: Policy {
                allowed_scopes: Some(vec![format!("team{i}")]),
                ..Policy::default()
            },
            deny: false,
            scope_challenge: None,
        })
        .collect();
    rules.push(Rule {
        label: "rules[9]".into(),
        method: Some(Glob::new("tools/*")),
        name: Some(Glob::new("billing_*")),
        policy: Policy {
            allowed_scopes: Some(vec!["billing".into()]),
            allowed_clients: Some(vec!["agent".into()]),
            custom_claims: vec![ClaimRule::Contains {
                claim: "groups".into(),
                value: "support".into(),
            }],
            ..Policy::default()
        },
        deny: false,
        scope_challenge: None,
    });
    McpPolicy {
        max_message_bytes: 4 << 20,
        enforce: true,
        filter_lists: true,
        decider: Decider::Rules(Rules {
            rules,
            default_allow: false,
        }),
    }
}

/// Twenty policies in AgentCore's style; the call is permitted by the last.
fn cedar() -> McpPolicy {
    let mut text = String::new();
    for i in 0..19 {
        text.push_str(&format!(
            "permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::\"team{i}_tool\", resource == AgentCore::Gateway::\"gw\") when {{ principal.getTag(\"scope\") like \"*team{i}*\" }};\n"
        ));
    }
    text.push_str("permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::\"billing_refund\", resource == AgentCore::Gateway::\"gw\") when { principal.getTag(\"scope\") like \"*billing*\" && context.input.amount <= 500 };\n");
    let policy = CedarPolicy::new(&[("bench.cedar".into(), text)], "gw").unwrap();
    McpPolicy {
        max_message_bytes: 4 << 20,
        enforce: true,
        filter_lists: true,
        decider: Decider::Cedar {
            policy: Box::new(policy),
            default_allow: true,
        },
    }
}

/// A `tools/call` of about 1 KiB.
fn call() -> Bytes {
    let note = "x".repeat(900);
    Bytes::from(
        json!({"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"billing_refund","arguments":{"amount":120,"orderId":"o-123","note":note}}})
            .to_string(),
    )
}

fn list(n: usize, name: impl Fn(usize) -> String) -> Bytes {
    let tools: Vec<_> = (0..n)
        .map(|i| {
            let name = name(i);
            json!({"name": name, "description": "A tool that does something useful.", "inputSchema": {"type":"object","properties":{"a":{"type":"string"}}}})
        })
        .collect();
    Bytes::from(json!({"jsonrpc":"2.0","id":2,"result":{"tools":tools}}).to_string())
}

/// `fresh_claims`: a copy of the claims per request, as without the verified-token cache
/// (the copy's cost included); otherwise one `Arc<Claims>` as the token cache shares it.
fn decide(c: &mut Criterion, name: &str, policy: &McpPolicy, fresh_claims: bool) {
    let body = call();
    let headers = HeaderMap::new();
    let claims = claims();
    c.bench_function(name, |b| {
        b.iter(|| {
            let (message, bytes) = read_message(&headers, Full::new(body.clone()), 4 << 20)
                .now_or_never()
                .unwrap()
                .unwrap();
            let claims = if fresh_claims {
                Arc::new(Claims::clone(&claims))
            } else {
                claims.clone()
            };
            let verdict = policy.decide(&claims, &message).unwrap();
            assert!(verdict.outcome.is_ok());
            black_box((message, bytes))
        })
    });
}

fn mcp(c: &mut Criterion) {
    let body = call();
    let headers = HeaderMap::new();
    assert_eq!(body.len() / 100, 10, "about 1 KiB");
    c.bench_function("mcp/read_1KiB", |b| {
        b.iter(|| {
            black_box(
                read_message(&headers, Full::new(body.clone()), 4 << 20)
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    decide(c, "mcp/read+10_rules", &rules(), false);
    decide(c, "mcp/read+cedar_20_policies", &cedar(), false);
    decide(c, "mcp/read+cedar_20_policies/new_claims", &cedar(), true);

    // Half the tools allowed by the rules; none named by a Cedar policy (denied unevaluated).
    let tools = list(100, |i| {
        if i % 2 == 0 {
            format!("billing_{i}")
        } else {
            format!("team3_{i}")
        }
    });
    // Every tool named by a Cedar policy, so each is evaluated (partially): half are
    // `billing_refund` (permitted depending on `context.input`: kept), half `team{k}_tool`
    // (the scope lacks `team{k}`: dropped).
    let named = list(100, |i| {
        if i % 2 == 0 {
            "billing_refund".into()
        } else {
            format!("team{}_tool", i % 19)
        }
    });
    for (name, policy, tools) in [
        ("mcp/filter_100_tools/rules", rules(), &tools),
        ("mcp/filter_100_tools/cedar", cedar(), &tools),
        ("mcp/filter_100_tools/cedar_all_named", cedar(), &named),
    ] {
        let policy = Arc::new(policy);
        let claims = claims();
        // A filter per response, as the phase makes one per list request (the Cedar
        // principal is built once per filter).
        let filter = || ListFilter {
            kind: ListKind::Tools,
            id: json!(2),
            keep: Arc::new(CallerLists::new(policy.clone(), claims.clone())),
        };
        assert!(filter().rewrite(tools).unwrap().len() < tools.len());
        c.bench_function(name, |b| {
            b.iter(|| black_box(filter().rewrite(black_box(tools))))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = mcp
}
criterion_main!(benches);
