//! SPEC §11 through the real server: the JSON-RPC message is read and decided on; denials
//! forward nothing and carry JSON-RPC error bodies; allowed calls arrive byte for byte; list
//! responses are filtered, on JSON and on SSE without holding other events back; logOnly
//! forwards what it would deny; Cedar policies decide tools/call; reload re-reads them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::mcp::{Handler, scripted};
use crate::support::*;

const RULES: &str = r#"    mcp:
      maxMessageBytes: 2KiB
      filterLists: true
      rules:
        - match: { method: tools/call, name: "billing_*" }
          allowedScopes: [billing]
        - match: { method: tools/call, name: "admin_*" }
          deny: true
        - match: { method: tools/call, name: "ops_*" }
          allowedClients: [ops-console]
"#;

fn route(upstream: &str, mcp: &str) -> String {
    format!(
        r#"
  - name: tools
    protocol: MCP
    path: /mcp
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: "{{discovery}}"
        allowedClients: [client-a, ops-console]
        allowedScopes: [invoke]
    sessionBinding: {{ enabled: false }}
    upstream: {{ url: "{upstream}" }}
{mcp}"#
    )
}

async fn post(edge: &Edge, token: &str, body: &str, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    edge.send(Method::POST, "/mcp", &headers, body).await
}

fn call(id: Value, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

#[tokio::test]
async fn rules_allow_deny_and_step_up() {
    let agent = agent().await;
    let edge = Edge::start_with(
        issuer().await,
        agent.clone(),
        "",
        &route(&agent.url(), RULES),
    )
    .await;
    let token = edge.valid_token();

    // Allowed: the upstream sees exactly the bytes sent (odd spacing, escapes, key order).
    let body = "{ \"params\" : {\"arguments\":{\"city\":\"Z\\u00fcrich\",\"n\":1.50},\"name\":\"get_weather\"},\n \"method\":\"tools/call\",\"id\":\"a-1\",\"jsonrpc\":\"2.0\"}";
    let reply = post(
        &edge,
        &token,
        body,
        &[("mcp-method", "tools/call"), ("mcp-name", "get_weather")],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = agent.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes());

    // A rule needing a scope the token lacks: the MCP step-up challenge (the route's scope and
    // the rule's: everything the call needs), nothing forwarded.
    let reply = post(&edge, &token, &call(json!("b-2"), "billing_refund"), &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_type(), Some("AccessDeniedException"));
    let www = reply.header("www-authenticate").unwrap();
    assert!(
        www.starts_with(
            r#"Bearer error="insufficient_scope", scope="invoke billing", resource_metadata="http://"#
        ),
        "{www}"
    );
    assert!(
        www.ends_with(r#"/.well-known/oauth-protected-resource/mcp""#),
        "{www}"
    );
    let error = reply.json();
    assert_eq!(error["jsonrpc"], "2.0");
    assert_eq!(error["id"], "b-2");
    assert_eq!(error["error"]["code"], -32003);
    assert_eq!(
        error["error"]["message"],
        "Access denied: tools/call billing_refund"
    );
    // With the scope, it passes.
    let billing = edge.token(|o| o.scope = Some("invoke billing".into()));
    assert_eq!(
        post(&edge, &billing, &call(json!(3), "billing_refund"), &[])
            .await
            .status,
        200
    );

    // A deny rule and a client mismatch: plain 403s, no challenge.
    for (token, tool) in [(&billing, "admin_wipe"), (&token, "ops_restart")] {
        let reply = post(&edge, token, &call(json!(4), tool), &[]).await;
        assert_eq!(reply.status, 403, "{tool}");
        assert!(reply.header("www-authenticate").is_none(), "{tool}");
        assert_eq!(reply.json()["id"], 4);
    }
    let ops = edge.token(|o| o.client_id = Some("ops-console".into()));
    assert_eq!(
        post(&edge, &ops, &call(json!(5), "ops_restart"), &[])
            .await
            .status,
        200
    );

    // GET and DELETE carry no message and pass.
    let auth = format!("Bearer {token}");
    let reply = edge
        .send(Method::GET, "/mcp", &[("authorization", &auth)], "")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(agent.request_count(), 4);
}

#[tokio::test]
async fn unreadable_messages_are_refused_with_json_rpc_errors() {
    let agent = agent().await;
    let edge = Edge::start_with(
        issuer().await,
        agent.clone(),
        "",
        &route(&agent.url(), RULES),
    )
    .await;
    let token = edge.valid_token();
    // (body, extra headers, status, JSON-RPC code, id in the answer)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, i64, Value);
    let cases: &[Case] = &[
        ("not json", &[], 400, -32700, Value::Null),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            &[],
            400,
            -32600,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"admin_wipe"}}"#,
            &[],
            400,
            -32600,
            json!(1),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["admin_wipe"]}"#,
            &[],
            400,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"admin\u0000"}}"#,
            &[],
            400,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather"}}"#,
            &[("mcp-name", "admin_wipe")],
            400,
            -32020,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"admin_wipe"}}"#,
            &[("mcp-method", "tools/list")],
            400,
            -32020,
            json!(7),
        ),
    ];
    for (body, headers, status, code, id) in cases {
        let reply = post(&edge, &token, body, headers).await;
        assert_eq!(reply.status, *status, "{body}");
        assert_eq!(reply.error_type(), Some("ValidationException"), "{body}");
        let error = reply.json();
        assert_eq!(error["error"]["code"], *code, "{body}");
        assert_eq!(error["id"], *id, "{body}");
    }
    // Over maxMessageBytes (2 KiB): 413, declared or streamed.
    let big = call(json!(1), &"x".repeat(3000));
    let reply = post(&edge, &token, &big, &[]).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], -32600);
    assert_eq!(agent.request_count(), 0, "nothing may reach the upstream");
}

fn list_body() -> &'static str {
    r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}},{"name":"billing_refund","inputSchema":{"type":"object"}},{"name":"admin_wipe","inputSchema":{"type":"object"}}]}}"#
}

fn names(result: &Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn json_tool_lists_follow_the_token() {
    let handler: Handler = Arc::new(|_req: Request<Incoming>| {
        Box::pin(async move {
            let mut response =
                Response::new(Full::new(Bytes::from_static(list_body().as_bytes())).boxed_unsync());
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        })
    });
    let upstream = scripted(handler).await;
    let edge = Edge::start("", &route(&format!("http://{upstream}"), RULES)).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let reply = post(&edge, &edge.valid_token(), list, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(names(&reply.json()), ["get_weather"]);
    // The upstream's length no longer holds: the filtered body goes out chunked.
    assert!(reply.header("content-length").is_none());
    let billing = edge.token(|o| o.scope = Some("invoke billing".into()));
    let reply = post(&edge, &billing, list, &[]).await;
    assert_eq!(names(&reply.json()), ["get_weather", "billing_refund"]);
    // Another method's response is untouched, whatever it contains.
    let other = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let reply = post(&edge, &edge.valid_token(), other, &[]).await;
    assert_eq!(reply.body, list_body().as_bytes());
}

#[tokio::test]
async fn sse_lists_are_filtered_without_holding_other_events() {
    let (tx_slot, mut rx_slot) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |_req| {
        let tx_slot = tx_slot.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel::<String>();
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), rx))
            });
            let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            let _ = tx_slot.send(tx);
            response
        })
    });
    let upstream = scripted(handler).await;
    let edge = Edge::start("", &route(&format!("http://{upstream}"), RULES)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(edge.url("/mcp"))
        .header("authorization", format!("Bearer {}", edge.valid_token()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let tx = rx_slot.recv().await.unwrap();
    let mut body = response.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event held back")
            .unwrap()
            .unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    // An event before the list response arrives on its own, while the list is still to come.
    let progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
    tx.send(progress.to_owned()).unwrap();
    assert_eq!(next().await, progress);
    // The list response, split across frames: rewritten once complete.
    let event = format!("event: message\ndata: {}\n\n", list_body());
    let (a, b) = event.split_at(40);
    tx.send(a.to_owned()).unwrap();
    tx.send(b.to_owned()).unwrap();
    let rewritten = next().await;
    let data = rewritten
        .strip_prefix("event: message\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{rewritten:?}"));
    assert_eq!(names(&serde_json::from_str(data).unwrap()), ["get_weather"]);
    // After it, events pass as they come.
    tx.send("data: later\n\n".to_owned()).unwrap();
    assert_eq!(next().await, "data: later\n\n");
}

#[tokio::test]
async fn log_only_decides_counts_and_forwards() {
    let agent = agent().await;
    let mcp = RULES.replace("      filterLists: true\n", "      enforcement: logOnly\n");
    let edge = Edge::start_with(
        issuer().await,
        agent.clone(),
        "",
        &route(&agent.url(), &mcp),
    )
    .await;
    let reply = post(
        &edge,
        &edge.valid_token(),
        &call(json!(1), "admin_wipe"),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(agent.request_count(), 1);
    let metrics = String::from_utf8_lossy(&edge.admin("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(
            r#"gatehouse_policy_decisions_total{route="tools",decision="log_only_deny"} 1"#
        ),
        "{metrics}"
    );
}

const CEDAR: &str = r#"
@id("weather")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"get_weather",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw");
@id("small-refunds")
permit(principal, action == AgentCore::Action::"billing_refund", resource)
  when { principal.getTag("scope") like "*billing*" && context.input.amount <= 500 };
"#;

#[tokio::test]
async fn cedar_decides_tool_calls_and_reload_rereads_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("tools.cedar");
    std::fs::write(&policies, CEDAR).unwrap();
    let agent = agent().await;
    let mcp = format!(
        "    mcp:\n      filterLists: true\n      cedar:\n        policies: {}\n        resource: arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw\n",
        policies.display()
    );
    let routes = route(&agent.url(), &mcp);
    let edge = Edge::start_with(issuer().await, agent.clone(), "", &routes).await;
    let billing = edge.token(|o| o.scope = Some("invoke billing".into()));
    let refund = |amount: i64| {
        json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"billing_refund","arguments":{"amount":amount}}}).to_string()
    };
    assert_eq!(
        post(&edge, &billing, &call(json!(1), "get_weather"), &[])
            .await
            .status,
        200
    );
    assert_eq!(post(&edge, &billing, &refund(400), &[]).await.status, 200);
    let reply = post(&edge, &billing, &refund(900), &[]).await;
    assert_eq!(reply.status, 403);
    assert!(reply.header("www-authenticate").is_none());
    assert_eq!(reply.json()["id"], 9);
    assert_eq!(
        post(&edge, &edge.valid_token(), &refund(1), &[])
            .await
            .status,
        403
    );
    // Default deny for tools no policy names; other methods follow `default` (allow).
    assert_eq!(
        post(&edge, &billing, &call(json!(1), "admin_wipe"), &[])
            .await
            .status,
        403
    );
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(post(&edge, &billing, ping, &[]).await.status, 200);
    assert_eq!(agent.request_count(), 3);

    // Reload re-reads the policy file; a broken one rejects the reload.
    let config = dir.path().join("gatehouse.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nroutes:\n{}",
        fill(&routes, &edge.issuer, &edge.agent)
    );
    std::fs::write(&config, &yaml).unwrap();
    std::fs::write(&policies, "permit(principal, action, resource)\n").unwrap();
    let error = edge.app.reload(&config).await.unwrap_err();
    assert!(error.contains("tools.cedar:"), "{error}");
    assert_eq!(
        post(&edge, &billing, &call(json!(1), "admin_wipe"), &[])
            .await
            .status,
        403
    );
    std::fs::write(&policies, "permit(principal, action, resource);\n").unwrap();
    edge.app.reload(&config).await.unwrap();
    assert_eq!(
        post(&edge, &billing, &call(json!(1), "admin_wipe"), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn decisions_reach_the_span_and_the_access_log() {
    use gatehouse::app::SpanOutput;
    use gatehouse::telemetry::export::{ExporterSource, QueueConfig};
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::InMemorySpanExporterBuilder;

    let exporter = InMemorySpanExporterBuilder::new().build();
    let output = SpanOutput::Exporter(
        ExporterSource::custom(exporter.clone()),
        QueueConfig {
            delay: Duration::from_millis(10),
            ..QueueConfig::default()
        },
    );
    let issuer = issuer().await;
    let agent = agent().await;
    let yaml = fill(
        &format!(
            "listen: 127.0.0.1:0\nroutes:\n{}",
            route(&agent.url(), RULES)
        ),
        &issuer,
        &agent,
    );
    let edge = Edge::from_yaml_with_spans(issuer, agent, &yaml, Some(output)).await;
    let reply = post(
        &edge,
        &edge.valid_token(),
        &call(json!("r-9"), "admin_wipe"),
        &[],
    )
    .await;
    assert_eq!(reply.status, 403);
    let allowed = post(
        &edge,
        &edge.valid_token(),
        &call(json!(10), "get_weather"),
        &[],
    )
    .await;
    assert_eq!(allowed.status, 200);

    let pipeline = edge.app.spans.as_ref().unwrap();
    let mut servers = Vec::new();
    for _ in 0..250 {
        pipeline.flush(Duration::from_secs(5)).await;
        servers = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_kind == SpanKind::Server)
            .collect();
        if servers.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attr = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    let denied = servers
        .iter()
        .find(|s| attr(s, "jsonrpc.request.id").as_deref() == Some("\"r-9\""))
        .expect("the denied request's span");
    assert_eq!(
        attr(denied, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        attr(denied, "gen_ai.tool.name").as_deref(),
        Some("admin_wipe")
    );
    assert_eq!(
        attr(denied, "gatehouse.policy.decision").as_deref(),
        Some("deny")
    );
    assert_eq!(
        attr(denied, "gatehouse.policy.rule").as_deref(),
        Some("rules[1]")
    );
    let ok = servers
        .iter()
        .find(|s| attr(s, "jsonrpc.request.id").as_deref() == Some("10"))
        .expect("the allowed request's span");
    assert_eq!(
        attr(ok, "gatehouse.policy.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attr(ok, "gatehouse.policy.rule").as_deref(),
        Some("default")
    );

    let lines = edge.access_lines(2).await;
    let line = lines
        .iter()
        .find(|l| l["mcp_name"] == "admin_wipe")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(line["mcp_method"], "tools/call");
    assert_eq!(line["policy"], "deny");
    assert_eq!(line["error"], "mcp_denied");
    assert!(
        lines
            .iter()
            .any(|l| l["mcp_name"] == "get_weather" && l["policy"] == "allow")
    );
}
