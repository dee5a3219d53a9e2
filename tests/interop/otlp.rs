//! Telemetry against real peers: the edge exports its spans over OTLP (gRPC and HTTP/protobuf)
//! to a receiver built on the official protocol definitions (`opentelemetry-proto` +
//! `grpcio`), with oidc-provider tokens, in front of the AgentCore SDK agent. The span tree,
//! its links to the client's and the agent's trace context, the process's output free of
//! tokens, and the flush on shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn routes(idp: &Peer, agent: &Peer) -> String {
    format!(
        r#"
  - name: support
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: {idp}/.well-known/openid-configuration
        allowedClients: [agent-client]
        allowedScopes: [invoke]
    upstream: {{ url: "{agent}" }}
"#,
        idp = idp.url,
        agent = agent.url
    )
}

fn telemetry(receiver: &Peer, protocol: &str) -> String {
    format!(
        "telemetry: {{ serviceName: gatehouse-interop, serverTiming: true, otlp: {{ endpoint: \"{}\", protocol: \"{protocol}\", timeout: 5s }} }}",
        receiver.url
    )
}

/// The spans the receiver wrote, waiting until `done` accepts them (at most 15 s).
fn received(out: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans: Vec<Value> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if done(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn in_trace<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

fn one<'a>(spans: &[&'a Value], name: &str) -> &'a Value {
    let found: Vec<&&Value> = spans.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} in {spans:#?}");
    found[0]
}

/// The header the agent received (its `raw_headers` echo: every header as uvicorn saw it).
fn raw_header(echo: &Value, name: &str) -> Option<String> {
    echo["raw_headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str().map(str::to_owned))
}

#[test]
fn spans_reach_an_otlp_receiver_over_grpc_and_http_with_the_wire_ids() {
    let idp = Peer::idp(&[]);
    let agent = Peer::agentcore_agent();
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let dir = tempfile::tempdir().unwrap();
    for protocol in ["grpc", "http/protobuf"] {
        let out = dir
            .path()
            .join(format!("{}.jsonl", protocol.replace('/', "-")));
        let receiver = Peer::otlp_receiver(if protocol == "grpc" { "grpc" } else { "http" }, &out);
        let mut edge = Gatehouse::start_with(
            &telemetry(&receiver, protocol),
            &routes(&idp, &agent),
            &[
                ("RUST_LOG", "debug"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=interop"),
            ],
        );
        let url = format!("{}/runtimes/support/invocations", edge.url);
        let session = "otlp-interop-session-0123456789abcdef01234";

        // An accepted call continuing the client's trace.
        let response = http()
            .post(&url)
            .bearer(&token)
            .header(
                "traceparent",
                &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
            )
            .header("x-amzn-bedrock-agentcore-runtime-session-id", session)
            .header("user-agent", "otlp-interop/1")
            .json(&json!({"prompt": "trace me"}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text());
        let echo = response.json();
        // The AgentCore agent got the edge's client span as its parent, and the session in
        // baggage.
        let traceparent = raw_header(&echo, "traceparent").expect("traceparent upstream");
        assert!(
            traceparent.starts_with(&format!("00-{CLIENT_TRACE}-")),
            "{traceparent}"
        );
        assert!(traceparent.ends_with("-01"));
        let upstream_parent = traceparent[36..52].to_owned();
        assert_ne!(upstream_parent, CLIENT_SPAN);
        let baggage = raw_header(&echo, "baggage").expect("baggage upstream");
        assert!(
            baggage.contains(&format!("session.id={session}")),
            "{baggage}"
        );

        // A rejected call, in a trace of its own.
        let rejected = http().post(&url).json(&json!({})).send().unwrap();
        assert_eq!(rejected.status(), 401);
        let rejected_trace = edge.wait_access_log(2)[1]["trace_id"]
            .as_str()
            .unwrap()
            .to_owned();

        let spans = received(&out, |s| {
            in_trace(s, CLIENT_TRACE).len() >= 3 && in_trace(s, &rejected_trace).len() >= 2
        });
        let trace = in_trace(&spans, CLIENT_TRACE);
        assert_eq!(trace.len(), 3, "{protocol}: {trace:#?}");
        let server = one(&trace, "POST /runtimes/support/invocations");
        let auth = one(&trace, "gatehouse.auth");
        let client = one(&trace, "POST");
        assert_eq!(server["kind"], "SERVER");
        assert_eq!(auth["kind"], "INTERNAL");
        assert_eq!(client["kind"], "CLIENT");
        assert_eq!(server["parent_span_id"], CLIENT_SPAN);
        assert_eq!(auth["parent_span_id"], server["span_id"]);
        assert_eq!(client["parent_span_id"], server["span_id"]);
        assert_eq!(
            client["span_id"], upstream_parent,
            "the agent's parent is the client span"
        );
        for span in &trace {
            assert_eq!(span["resource"]["service.name"], "gatehouse-interop");
            assert_eq!(span["resource"]["deployment.environment"], "interop");
            assert_eq!(span["scope"]["name"], "gatehouse");
            assert_eq!(
                span["protocol"],
                if protocol == "grpc" { "grpc" } else { "http" }
            );
            assert!(span["end_ns"].as_u64() >= span["start_ns"].as_u64());
        }
        let a = &server["attributes"];
        assert_eq!(a["http.request.method"], "POST");
        assert_eq!(a["http.route"], "/runtimes/support/invocations");
        assert_eq!(a["url.path"], "/runtimes/support/invocations");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(a["client.address"], "127.0.0.1");
        assert_eq!(a["user_agent.original"], "otlp-interop/1");
        assert_eq!(a["session.id"], session);
        assert_eq!(a["gatehouse.route"], "support");
        assert_eq!(a["gatehouse.auth.outcome"], "ok");
        assert_eq!(a["gatehouse.client_id"], "agent-client");
        // oidc-provider's client_credentials tokens have sub = client_id.
        assert_eq!(a["enduser.id"], "agent-client");
        let a = &auth["attributes"];
        assert_eq!(a["gatehouse.auth.cache_hit"], false);
        assert_eq!(a["gatehouse.jwt.alg"], "RS256");
        assert_eq!(
            a["gatehouse.jwt.kid"],
            jose_header(&token)["kid"],
            "the kid of the provider's key"
        );
        let a = &client["attributes"];
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(
            a["server.port"].as_i64().unwrap().to_string(),
            agent.url.rsplit(':').next().unwrap()
        );

        let refused = in_trace(&spans, &rejected_trace);
        assert_eq!(
            refused.len(),
            2,
            "server and auth, no upstream: {refused:#?}"
        );
        let server = one(&refused, "POST /runtimes/support/invocations");
        assert_eq!(server["attributes"]["gatehouse.auth.outcome"], "missing");
        assert_eq!(server["attributes"]["http.response.status_code"], 401);
        assert_eq!(server["parent_span_id"], "");
        assert_eq!(
            one(&refused, "gatehouse.auth")["attributes"]["gatehouse.auth.outcome"],
            "missing"
        );

        // Whatever the log level, neither stdout (access log) nor stderr holds the token.
        let status = edge.stop();
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!edge.raw_stdout().contains(signature), "token in stdout");
        let stderr = edge.raw_stderr();
        assert!(stderr.contains("exporting spans over OTLP"), "{stderr}");
        assert!(!stderr.contains(signature), "token in stderr");
    }
}

#[test]
fn queued_spans_are_flushed_on_shutdown() {
    let idp = Peer::idp(&[]);
    let agent = Peer::agentcore_agent();
    let token = client_credentials(&idp, "agent-client", "agent-secret", "invoke");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let receiver = Peer::otlp_receiver("grpc", &out);
    // Batches would wait ten minutes: only the shutdown flush can deliver these spans.
    let mut edge = Gatehouse::start_with(
        &telemetry(&receiver, "grpc"),
        &routes(&idp, &agent),
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let url = format!("{}/runtimes/support/invocations", edge.url);
    let response = http()
        .post(&url)
        .bearer(&token)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = edge.wait_access_log(1)[0]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "nothing exported before the shutdown"
    );
    let status = edge.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let spans = received(&out, |s| in_trace(s, &trace).len() >= 3);
    assert_eq!(in_trace(&spans, &trace).len(), 3, "{spans:#?}");
}
