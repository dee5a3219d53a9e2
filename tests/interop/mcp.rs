//! MCP through the edge with the official SDKs on both sides: an `MCPServer` (Python `mcp`
//! 2.x, FastMCP's successor; Streamable HTTP, stateful sessions, SSE) upstream, and the official
//! Python and TypeScript clients in front, with tokens from oidc-provider — handed over, or
//! obtained by the SDKs themselves through the 401 → metadata → token discovery path.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

pub(crate) fn mcp_server(name: &str) -> Peer {
    Peer::spawn(
        "mcp-server",
        &python(),
        &[
            "tests/interop/mcp/server.py",
            "--port",
            "0",
            "--watch-stdin",
            "--name",
            name,
        ],
    )
}

/// Runs a client script; its stdout is one JSON object.
fn client(program: &Path, script: &str, args: &[&str]) -> Value {
    let output = Command::new(program)
        .arg(script)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}; run scripts/setup-interop.sh"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{script}: no JSON on stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success() && value.get("error").is_none(),
        "{script} failed: {value}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    value
}

pub(crate) fn python_client(args: &[&str]) -> Value {
    client(&python(), "tests/interop/mcp/client.py", args)
}

pub(crate) fn ts_client(args: &[&str]) -> Value {
    client(Path::new("node"), "tests/interop/mcp/client.mjs", args)
}

pub(crate) fn route(name: &str, path: &str, idp: &Peer, upstream: &str, extra: &str) -> String {
    format!(
        r#"
  - name: {name}
    protocol: MCP
    path: {path}
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: {idp}/.well-known/openid-configuration
        allowedClients: [agent-client]
        allowedScopes: [invoke]
    upstream: {upstream}
{extra}"#,
        idp = idp.url
    )
}

/// The test server's tools, as `tools/list` sorts them.
pub(crate) const ALL_TOOLS: [&str; 4] = ["admin_wipe", "billing_refund", "progress", "whoami"];

/// Progress notifications arrived as the server sent them: each before the next was sent.
fn assert_streamed(progress: &Value) {
    let sent = progress["sent"].as_array().unwrap();
    let arrived = progress["arrived"].as_array().unwrap();
    assert_eq!(sent.len(), 3, "{progress}");
    assert_eq!(arrived.len(), 3, "{progress}");
    for i in 0..2 {
        assert!(
            arrived[i]["at"].as_f64().unwrap() < sent[i + 1].as_f64().unwrap(),
            "notification {i} was held back until after the next was sent: {progress}"
        );
    }
}

pub(crate) fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn official_clients_through_the_edge_with_a_token() {
    let idp = Peer::idp(&[]);
    let server = mcp_server("solo");
    let upstream = format!(r#"{{ url: "{}" }}"#, server.url);
    let routes = format!(
        "{}{}",
        route(
            "tools",
            "/mcp",
            &idp,
            &upstream,
            "    cors: { allowedOrigins: [\"https://inspector.example\"] }\n    keepAlive: 15s\n"
        ),
        route(
            "gateway",
            "/gateway/mcp",
            &idp,
            &upstream,
            "    requestHeaderAllowlist: [Authorization]\n"
        )
    );
    let edge = Gatehouse::start("", &routes);
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let mcp = format!("{}/mcp", edge.url);
    let server_authority = server.url.trim_start_matches("http://");

    // The SDK server refuses a browser Origin that is not its own (DNS-rebinding protection);
    // through the edge the Origin is checked against the route's CORS policy and not
    // forwarded, so an Inspector-style client works.
    let direct = http()
        .post(format!("{}/mcp", server.url))
        .header("origin", "https://inspector.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .unwrap();
    assert_eq!(direct.status(), 403);

    // Python, 2025-11-25 session.
    let out = python_client(&[
        &mcp,
        "--token",
        &token,
        "--origin",
        "https://inspector.example",
    ]);
    assert_eq!(out["tools"], json!(ALL_TOOLS));
    let who = &out["whoami"];
    assert_eq!(
        who["authorization"],
        Value::Null,
        "token passed through: {who}"
    );
    assert_eq!(who["host"], server_authority);
    assert_eq!(who["origin"], Value::Null);
    assert!(who["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(out["whoami_again"]["session"], who["session"]);
    assert_streamed(&out["progress"]);

    // Python, 2026-07-28 stateless: no session at all.
    let out = python_client(&[&mcp, "--token", &token, "--mode", "auto"]);
    assert_eq!(out["whoami"]["session"], Value::Null, "{out}");
    assert_streamed(&out["progress"]);

    // TypeScript through the gateway route, where Authorization is re-propagated.
    let gateway = format!("{}/gateway/mcp", edge.url);
    let out = ts_client(&[&gateway, "--token", &token]);
    assert_eq!(out["tools"], json!(ALL_TOOLS));
    let session = server_session(&out["sessionId"]);
    assert_eq!(out["whoami"]["session"], session);
    assert_eq!(
        out["whoami"]["authorization"],
        format!("Bearer {token}").as_str()
    );
    assert_streamed(&out["progress"]);
    // Resumed with the session id, no new initialize; then DELETE; then the server's 404.
    assert_eq!(out["resumed"]["session"], session);
    assert_eq!(out["terminated"], true);
    assert_ne!(out["afterTerminate"], "succeeded");
    let initializes = out["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().starts_with("POST"))
        .count();
    assert!(initializes >= 4, "{out}");

    // Every request was authenticated and logged; the DELETE too.
    let log = edge.wait_access_log(12);
    assert!(
        log.iter()
            .any(|l| l["method"] == "DELETE" && l["client_id"] == "agent-client"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l["route"] == "gateway")
            .all(|l| l["auth_outcome"] == "ok")
    );
}

#[test]
fn official_clients_discover_and_fetch_their_own_tokens() {
    let idp = Peer::idp(&["--any-resource"]);
    let server = mcp_server("solo");
    let upstream = format!(r#"{{ url: "{}" }}"#, server.url);
    let routes = route(
        "tools",
        "/mcp",
        &idp,
        &upstream,
        "    requestHeaderAllowlist: [Authorization]\n",
    );
    let edge = Gatehouse::start("", &routes);
    let mcp = format!("{}/mcp", edge.url);
    let credentials = [
        "--client-id",
        "agent-client",
        "--client-secret",
        "agent-secret",
        "--issuer",
        &idp.url,
        "--scope",
        "invoke",
    ];

    for (name, out) in [
        (
            "python",
            python_client(&[&[mcp.as_str()][..], &credentials].concat()),
        ),
        (
            "typescript",
            ts_client(&[&[mcp.as_str()][..], &credentials].concat()),
        ),
    ] {
        let requests: Vec<&str> = out["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        // The first request met the 401; discovery went through the edge's metadata.
        let prm = format!("GET {}/.well-known/oauth-protected-resource/mcp", edge.url);
        assert!(
            requests.iter().any(|r| r.starts_with(&prm)),
            "{name}: {requests:?}"
        );
        assert!(
            requests
                .iter()
                .any(|r| r.starts_with(&format!("POST {}/token", idp.url))),
            "{name}: {requests:?}"
        );
        // The token the SDK obtained is for exactly the public MCP URL (RFC 8707 resource
        // from the metadata), and it works.
        let authorization = out["whoami"]["authorization"].as_str().unwrap();
        let token = authorization.strip_prefix("Bearer ").unwrap();
        assert_eq!(claims(token)["aud"], mcp.as_str(), "{name}");
        assert_eq!(claims(token)["scope"], "invoke", "{name}");
        assert_streamed(&out["progress"]);
    }
    let log = edge.access_log();
    assert!(
        log.iter()
            .any(|l| l["status"] == 401 && l["auth_outcome"] == "missing")
    );
}

#[test]
fn sessions_stay_on_their_replica() {
    let idp = Peer::idp(&[]);
    let servers = [mcp_server("a"), mcp_server("b"), mcp_server("c")];
    let upstream = format!(
        "{{ urls: [{}] }}",
        servers
            .iter()
            .map(|s| format!("\"{}\"", s.url))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let edge = Gatehouse::start("", &route("tools", "/mcp", &idp, &upstream, ""));
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let mcp = format!("{}/mcp", edge.url);
    let mut homes = std::collections::HashSet::new();
    for _ in 0..4 {
        // Stateful sessions: every call (and the resumed client) finds its session.
        let out = ts_client(&[&mcp, "--token", &token]);
        let home = out["whoami"]["server"].as_str().unwrap().to_owned();
        assert_eq!(out["resumed"]["server"], home.as_str(), "{out}");
        assert_eq!(out["resumed"]["session"], server_session(&out["sessionId"]));
        assert_streamed(&out["progress"]);
        homes.insert(home);
        let out = python_client(&[&mcp, "--token", &token]);
        assert_eq!(out["whoami_again"]["server"], out["whoami"]["server"]);
        assert_streamed(&out["progress"]);
    }
    assert!(!homes.is_empty());
}

/// The server's session id inside the one the client holds: the edge binds MCP sessions to
/// the caller (`{id}-{tag}`, a 22-character tag) and the server only sees its own id.
fn server_session(client_held: &Value) -> &str {
    let held = client_held.as_str().expect("the client has a session id");
    let (id, tag) = held.split_at(held.len().checked_sub(23).expect("a bound session id"));
    assert!(tag.starts_with('-'), "{held}");
    id
}

/// The 1.x SDK most deployments run: a `FastMCP` server, and the 1.x `ClientSession` client
/// (with a token, and discovering its own), plus the TypeScript client.
#[test]
fn fastmcp_1x_server_and_client() {
    let v1 = root().join(".interop/venv-mcp1/bin/python");
    let idp = Peer::idp(&["--any-resource"]);
    let server = Peer::spawn(
        "fastmcp-1x",
        &v1,
        &[
            "tests/interop/mcp/server.py",
            "--port",
            "0",
            "--watch-stdin",
            "--name",
            "fastmcp",
        ],
    );
    let upstream = format!(r#"{{ url: "{}" }}"#, server.url);
    let routes = route(
        "tools",
        "/mcp",
        &idp,
        &upstream,
        "    requestHeaderAllowlist: [Authorization]\n    keepAlive: 15s\n",
    );
    let edge = Gatehouse::start("", &routes);
    let mcp = format!("{}/mcp", edge.url);
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");

    let out = client(
        &v1,
        "tests/interop/mcp/client_v1.py",
        &[&mcp, "--token", &token],
    );
    assert_eq!(out["protocolVersion"], "2025-11-25");
    assert_eq!(out["tools"], json!(ALL_TOOLS));
    assert_eq!(out["whoami"]["server"], "fastmcp");
    assert_eq!(out["whoami"]["session"], server_session(&out["sessionId"]));
    assert_eq!(
        out["whoami_again"]["session"],
        server_session(&out["sessionId"])
    );
    assert_eq!(
        out["whoami"]["host"],
        server.url.trim_start_matches("http://")
    );
    assert_streamed(&out["progress"]);

    let out = client(
        &v1,
        "tests/interop/mcp/client_v1.py",
        &[
            &mcp,
            "--client-id",
            "agent-client",
            "--client-secret",
            "agent-secret",
            "--issuer",
            &idp.url,
            "--scope",
            "invoke",
        ],
    );
    let authorization = out["whoami"]["authorization"].as_str().unwrap();
    let token = authorization.strip_prefix("Bearer ").unwrap();
    assert_eq!(claims(token)["aud"], mcp.as_str());
    assert!(
        out["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with(&format!(
                "GET {}/.well-known/oauth-protected-resource/mcp",
                edge.url
            ))),
        "{out}"
    );

    let out = ts_client(&[&mcp, "--token", token]);
    assert_eq!(out["whoami"]["server"], "fastmcp");
    assert_eq!(out["resumed"]["session"], server_session(&out["sessionId"]));
    assert_streamed(&out["progress"]);
}
