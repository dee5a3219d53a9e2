//! SPEC §11 with the official MCP SDKs: the Python and TypeScript clients see tool lists
//! filtered for their token, get a usable JSON-RPC error for a denied tool, and the
//! TypeScript client's OAuth provider steps up — after a 403 `insufficient_scope` the SDK's
//! transport re-runs its auth flow, the provider (tests/interop/mcp/client.mjs) asks oidc-provider
//! for a token with the challenged scope, and the retried call succeeds.

use serde_json::{Value, json};

use crate::mcp::{mcp_server, python_client, route, ts_client};
use crate::support::*;

const RULES: &str = r#"    mcp:
      filterLists: true
      rules:
        - match: { method: tools/call, name: "billing_*" }
          allowedScopes: [billing]
        - match: { method: tools/call, name: "admin_*" }
          deny: true
"#;

#[test]
fn official_clients_see_filtered_lists_and_denials() {
    let idp = Peer::idp(&[]);
    let server = mcp_server("solo");
    let upstream = format!(r#"{{ url: "{}" }}"#, server.url);
    let edge = Gatehouse::start("", &route("tools", "/mcp", &idp, &upstream, RULES));
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let mcp = format!("{}/mcp", edge.url);

    let out = python_client(&[&mcp, "--token", &token, "--call", "admin_wipe"]);
    assert_eq!(out["tools"], json!(["progress", "whoami"]), "{out}");
    assert_eq!(
        out["call"]["error"],
        json!({"code": -32003, "message": "Access denied: tools/call admin_wipe"}),
        "{out}"
    );
    // An allowed tool still works, and the server really ran it.
    let out = python_client(&[&mcp, "--token", &token, "--call", "whoami"]);
    assert!(
        out["call"]["result"]
            .as_str()
            .unwrap()
            .contains("\"server\": \"solo\""),
        "{out}"
    );

    let out = ts_client(&[&mcp, "--token", &token, "--call", "admin_wipe"]);
    assert_eq!(out["tools"], json!(["progress", "whoami"]), "{out}");
    let message = out["call"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Access denied: tools/call admin_wipe"),
        "{out}"
    );

    // billing_refund needs a scope this token lacks; without an OAuth provider the client
    // reports the 403 as it is, JSON-RPC error included.
    let out = ts_client(&[
        &mcp,
        "--token",
        &token,
        "--call",
        "billing_refund",
        "--args",
        r#"{"amount":5}"#,
    ]);
    assert_eq!(out["call"]["error"]["code"], 403, "{out}");
    let message = out["call"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Access denied: tools/call billing_refund"),
        "{out}"
    );

    let log = edge.access_log_when(|log| log.iter().filter(|l| l["status"] == 403).count() >= 3);
    let denied: Vec<&Value> = log.iter().filter(|l| l["status"] == 403).collect();
    assert!(denied.len() >= 3, "{log:?}");
}

#[test]
fn typescript_client_steps_up_to_the_challenged_scope() {
    let idp = Peer::idp(&[
        "--any-resource",
        "--scopes",
        "invoke,read,billing",
        "--client",
        "agent-client:agent-secret:invoke,read,billing",
    ]);
    let server = mcp_server("solo");
    let upstream = format!(r#"{{ url: "{}" }}"#, server.url);
    let edge = Gatehouse::start("", &route("tools", "/mcp", &idp, &upstream, RULES));
    let mcp = format!("{}/mcp", edge.url);
    let out = ts_client(&[
        &mcp,
        "--client-id",
        "agent-client",
        "--client-secret",
        "agent-secret",
        "--issuer",
        &idp.url,
        "--scope",
        "invoke",
        "--call",
        "billing_refund",
        "--args",
        r#"{"amount":5}"#,
    ]);
    // The first token (scope invoke) does not list billing_refund ...
    assert_eq!(out["tools"], json!(["progress", "whoami"]), "{out}");
    // ... the call met the challenge, the SDK fetched a token with the challenged scopes and
    // retried: the server ran the tool.
    assert_eq!(out["call"]["result"], r#"{"refunded": 5}"#, "{out}");
    assert_eq!(
        out["tokenScopes"],
        json!(["invoke", "invoke billing"]),
        "{out}"
    );
    let log = edge.access_log_when(|log| {
        log.iter()
            .rfind(|l| l["method"] == "POST")
            .is_some_and(|l| l["status"] == 200)
    });
    let statuses: Vec<i64> = log
        .iter()
        .filter(|l| l["method"] == "POST")
        .map(|l| l["status"].as_i64().unwrap())
        .collect();
    assert!(
        statuses.contains(&403) && statuses.ends_with(&[200]),
        "{statuses:?}"
    );
}
