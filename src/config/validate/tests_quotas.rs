//! Quota rules (SPEC §12): every message with its location.

use super::super::testutil::{dedent, errors};

fn config(top: &str, route_extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:8080\n{}routes:\n  - name: a\n    authorizerType: NONE\n    upstream: {{ url: \"http://127.0.0.1:9000\" }}\n{}",
        dedent(top),
        route_extra
    )
}

#[test]
fn a_full_quota_block_loads() {
    let top = "
        limits: { authFailuresPerIp: 20/s }
        quotas:
          store: { type: redis, url: \"redis://:pw@127.0.0.1:6379/0\", keyPrefix: \"gh:\", timeout: 50ms, onError: deny }
          rules:
            - { name: per-client, key: [client_id, \"claim:tenant\"], rate: 25/s, burst: 50, concurrency: 10 }
            - { name: per-tool, key: tool, rate: 5/m, match: { method: tools/call, name: \"s_*\" } }
            - { name: in-flight, key: [ip], concurrency: 3 }
    ";
    let route =
        "    quotas:\n      rules:\n        - { name: per-route, key: [route], rate: 100/h }\n";
    assert_eq!(errors(&config(top, route)), Vec::<String>::new());
}

#[test]
fn store() {
    assert_eq!(
        errors(&config("quotas: { store: { type: memcached } }\n", "")),
        ["2:26: quotas.store.type: must be \"local\" or \"redis\" (got \"memcached\")"]
    );
    assert_eq!(
        errors(&config("quotas: { store: { type: redis } }\n", "")),
        ["2:18: quotas.store: type: redis needs a url: add url: redis://127.0.0.1:6379/0"]
    );
    assert_eq!(
        errors(&config(
            "quotas: { store: { type: redis, url: \"http://x\", timeout: 0, onError: open } }\n",
            ""
        )),
        [
            "2:38: quotas.store.url: must start with redis:// (or rediss:// for TLS), e.g. redis://127.0.0.1:6379/0",
            "2:59: quotas.store.timeout: must be greater than 0 (e.g. \"50ms\"): it bounds how long a request waits for Redis",
            "2:71: quotas.store.onError: must be \"allow\" (fail open: serve unlimited while Redis is down) or \"deny\" (answer 503); got \"open\"",
        ]
    );
    assert_eq!(
        errors(&config(
            "quotas: { store: { type: local, timeout: 5s } }\n",
            ""
        )),
        ["2:33: quotas.store.timeout: only applies to type: redis: remove it, or set type: redis"]
    );
}

#[test]
fn rules() {
    let top = "
        quotas:
          rules:
            - { name: 9lives, key: [client_id], rate: 25 }
            - { name: b, key: [user, client_id, client_id], rate: 0/s }
            - { name: c, key: [ip] }
            - { name: d, key: [ip], concurrency: 0, burst: 3 }
            - { name: e, key: [], rate: 1/s, burst: 0, match: {} }
            - { name: e, key: [\"claim:\"], rate: 1/d }
    ";
    assert_eq!(
        errors(&config(top, "")),
        [
            "4:15: quotas.rules[0].name: \"9lives\" is not a valid rule name: use letters, digits, '_' and '-', starting with a letter, up to 48 characters",
            "4:47: quotas.rules[0].rate: rate \"25\" has no unit: write it like \"25/s\", \"400/m\" or \"1000/h\"",
            "5:24: quotas.rules[1].key[0]: unknown key part \"user\": use client_id, sub, route, ip, tool or claim:<name>",
            "5:41: quotas.rules[1].key[2]: client_id is listed twice: remove one",
            "5:59: quotas.rules[1].rate: rate \"0/s\" allows nothing: use at least 1 (remove the rule to stop limiting)",
            "6:7: quotas.rules[2]: a rule needs a rate (e.g. rate: 25/s), a concurrency limit (e.g. concurrency: 10), or both",
            "7:42: quotas.rules[3].concurrency: must be at least 1 (remove it for no concurrency limit)",
            "7:45: quotas.rules[3].burst: is the bucket size of a rate: add a rate, or remove burst",
            "8:23: quotas.rules[4].key: a rule needs a key: any of client_id, sub, route, ip, tool, claim:<name> (key: [route] for one limit for the whole route)",
            "8:45: quotas.rules[4].burst: must be at least 1 (the default is the rate's count)",
            "8:55: quotas.rules[4].match: needs a method, a name or both, e.g. { method: tools/call, name: \"search_*\" }",
            "9:15: quotas.rules[5].name: \"e\" is already the name of quotas.rules[4]: rule names must be unique (they label metrics and the access log)",
            "9:24: quotas.rules[5].key[0]: unknown key part \"claim:\": use client_id, sub, route, ip, tool or claim:<name>",
            "9:41: quotas.rules[5].rate: rate \"1/d\" has unknown unit \"d\": use s, m or h",
        ]
    );
}

#[test]
fn route_rules() {
    let top = "quotas: { rules: [ { name: shared, key: [sub], rate: 1/s } ] }\n";
    let route = "    quotas:\n      rules:\n        - { name: shared, key: [tool], rate: 1/s, match: { method: initialize } }\n        - { name: own, key: [sub], rate: 1/s }\n        - { name: own, key: [sub], rate: 1/s }\n";
    assert_eq!(
        errors(&config(top, route)),
        [
            "9:19: routes[0].quotas.rules[0].name: \"shared\" is already the name of a global rule (quotas.rules): give this route's rule another name",
            "9:33: routes[0].quotas.rules[0].key[0]: only MCP routes call tools: remove tool, or set protocol: MCP",
            "9:51: routes[0].quotas.rules[0].match: only MCP routes carry messages to match: remove match, or set protocol: MCP",
            "11:19: routes[0].quotas.rules[2].name: \"own\" is listed twice in this route's rules: rule names must be unique",
        ]
    );
}

#[test]
fn auth_failures_per_ip() {
    assert_eq!(
        errors(&config("limits: { authFailuresPerIp: lots }\n", "")),
        [
            "2:30: limits.authFailuresPerIp: rate \"lots\" has no unit: write it like \"25/s\", \"400/m\" or \"1000/h\""
        ]
    );
}
