//! The edge's own telemetry, in process: the span tree and its ids and attributes (through the
//! SDK's in-memory exporter), sampling, `/metrics` parsed as Prometheus text, tokens kept out
//! of every output, and requests that succeed whatever the collector does.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::app::SpanOutput;
use gatehouse::dev::Alg;
use gatehouse::telemetry::export::{ExporterSource, QueueConfig};
use http::Method;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{InMemorySpanExporter, InMemorySpanExporterBuilder, SpanData};

use crate::support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn in_memory() -> (InMemorySpanExporter, SpanOutput) {
    let exporter = InMemorySpanExporterBuilder::new().build();
    let output = SpanOutput::Exporter(
        ExporterSource::custom(exporter.clone()),
        QueueConfig {
            delay: Duration::from_millis(10),
            ..QueueConfig::default()
        },
    );
    (exporter, output)
}

pub(crate) async fn traced_edge(top: &str, routes: &str) -> (Edge, InMemorySpanExporter) {
    let (exporter, output) = in_memory();
    let yaml =
        format!("listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.2:0 }}\n{top}\nroutes:\n{routes}");
    let issuer = issuer().await;
    let agent = agent().await;
    let yaml = fill(&yaml, &issuer, &agent);
    let edge = Edge::from_yaml_with_spans(issuer, agent, &yaml, Some(output)).await;
    (edge, exporter)
}

/// Flushes the edge's span queue until at least `n` spans arrived (or 5 s passed).
pub(crate) async fn collect(
    edge: &Edge,
    exporter: &InMemorySpanExporter,
    n: usize,
) -> Vec<SpanData> {
    let pipeline = edge.app.spans.as_ref().expect("span pipeline");
    for _ in 0..250 {
        pipeline.flush(Duration::from_secs(5)).await;
        let spans = exporter.get_finished_spans().unwrap();
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exporter.get_finished_spans().unwrap()
}

pub(crate) fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

pub(crate) fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span in {:#?}", names(spans));
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn hex_span(id: &str) -> SpanId {
    SpanId::from_hex(id).unwrap()
}

#[tokio::test]
async fn spans_form_the_request_tree_with_the_wire_ids() {
    let (edge, exporter) = traced_edge("telemetry: { serverTiming: true }", &support_route()).await;
    let token = edge.valid_token();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let session = "telemetry-session-0123456789abcdef0123456789";
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("traceparent", &traceparent),
                ("tracestate", "vendor=abc"),
                ("user-agent", "telemetry-test/1.0"),
                ("x-amzn-bedrock-agentcore-runtime-session-id", session),
                ("content-type", "application/json"),
            ],
            r#"{"prompt":"hi"}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    let spans = collect(&edge, &exporter, 3).await;
    assert_eq!(spans.len(), 3, "{:?}", names(&spans));

    let server = one(&spans, "POST /runtimes/support/invocations");
    let auth = one(&spans, "gatehouse.auth");
    let upstream = one(&spans, "POST");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(auth.span_kind, SpanKind::Internal);
    assert_eq!(upstream.span_kind, SpanKind::Client);

    // One trace, continued from the client; the server span's parent is the client's span.
    let trace = TraceId::from_hex(CLIENT_TRACE).unwrap();
    for span in &spans {
        assert_eq!(span.span_context.trace_id(), trace, "{}", span.name);
        assert!(span.span_context.is_sampled());
        assert_eq!(span.span_context.trace_state().header(), "vendor=abc");
    }
    assert_eq!(server.parent_span_id, hex_span(CLIENT_SPAN));
    assert!(server.parent_span_is_remote);
    let server_id = server.span_context.span_id();
    assert_eq!(auth.parent_span_id, server_id);
    assert_eq!(upstream.parent_span_id, server_id);
    assert!(!auth.parent_span_is_remote && !upstream.parent_span_is_remote);

    // The upstream saw the edge's client span as its parent.
    let received = edge.agent.requests();
    let sent = received[0].header("traceparent").unwrap();
    assert_eq!(
        sent,
        format!("00-{CLIENT_TRACE}-{}-01", upstream.span_context.span_id())
    );
    assert_eq!(
        received[0].header("tracestate").as_deref(),
        Some("vendor=abc")
    );
    assert!(
        received[0]
            .header("baggage")
            .unwrap()
            .contains(&format!("session.id={session}"))
    );

    // Timing: children inside the server span, which ends with the body.
    assert!(auth.start_time >= server.start_time && auth.end_time <= upstream.start_time);
    assert!(upstream.start_time >= server.start_time && upstream.end_time <= server.end_time);

    // Attributes (SPEC §10).
    let expect = |span: &SpanData, key: &str, value: &str| {
        assert_eq!(
            attr(span, key).as_deref(),
            Some(value),
            "{} {key}",
            span.name
        );
    };
    expect(server, "http.request.method", "POST");
    expect(server, "http.route", "/runtimes/support/invocations");
    expect(server, "url.path", "/runtimes/support/invocations");
    expect(server, "url.scheme", "http");
    expect(server, "http.response.status_code", "200");
    expect(server, "client.address", "127.0.0.1");
    expect(server, "user_agent.original", "telemetry-test/1.0");
    expect(server, "session.id", session);
    expect(server, "gatehouse.route", "support");
    expect(server, "gatehouse.auth.outcome", "ok");
    expect(server, "gatehouse.client_id", CLIENT);
    expect(server, "enduser.id", "user-1");
    expect(
        server,
        "gatehouse.request_id",
        reply.header("x-amzn-requestid").unwrap(),
    );
    assert_eq!(server.status, Status::Unset);
    expect(auth, "gatehouse.auth.outcome", "ok");
    expect(auth, "gatehouse.auth.cache_hit", "false");
    expect(auth, "gatehouse.jwt.alg", "RS256");
    expect(auth, "gatehouse.jwt.kid", edge.issuer.signing_key().kid());
    expect(upstream, "http.request.method", "POST");
    expect(upstream, "server.address", "127.0.0.1");
    expect(
        upstream,
        "server.port",
        &edge.agent.addr().port().to_string(),
    );
    expect(upstream, "http.response.status_code", "200");

    // The same token again: a cache hit, in a new trace (no traceparent), a root server span.
    exporter.reset();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 200);
    let spans = collect(&edge, &exporter, 3).await;
    let server = one(&spans, "POST /runtimes/support/invocations");
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    assert!(!server.parent_span_is_remote);
    expect(
        one(&spans, "gatehouse.auth"),
        "gatehouse.auth.cache_hit",
        "true",
    );
    let sent = edge.agent.requests()[1].header("traceparent").unwrap();
    assert_eq!(
        &sent[3..35],
        server.span_context.trace_id().to_string(),
        "the access log, the span and the upstream agree on the trace"
    );
    let lines = edge.access_lines(2).await;
    assert_eq!(
        lines[1]["trace_id"],
        server.span_context.trace_id().to_string()
    );
}

#[tokio::test]
async fn rejected_requests_are_traced_with_their_outcome() {
    let (edge, exporter) = traced_edge("", &support_route()).await;
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "missing"),
        (Some("not.a.token".into()), 401, "invalid"),
        (
            Some(edge.token(|o| o.issued_at = Some(now() - 7200))),
            401,
            "expired",
        ),
        (
            Some(edge.token(|o| o.client_id = Some("intruder".into()))),
            403,
            "forbidden",
        ),
        (
            Some(edge.token(|o| o.scope = Some("read".into()))),
            403,
            "insufficient_scope",
        ),
    ];
    for (token, status, outcome) in &cases {
        exporter.reset();
        let reply = edge.invoke("support", token.as_deref(), "{}").await;
        assert_eq!(reply.status, *status, "{outcome}");
        let spans = collect(&edge, &exporter, 2).await;
        assert_eq!(
            spans.len(),
            2,
            "{outcome}: no upstream span: {:?}",
            names(&spans)
        );
        let server = one(&spans, "POST /runtimes/support/invocations");
        let auth = one(&spans, "gatehouse.auth");
        assert_eq!(
            attr(server, "gatehouse.auth.outcome").as_deref(),
            Some(*outcome)
        );
        assert_eq!(
            attr(auth, "gatehouse.auth.outcome").as_deref(),
            Some(*outcome)
        );
        assert_eq!(
            attr(server, "http.response.status_code"),
            Some(status.to_string())
        );
        assert_eq!(auth.parent_span_id, server.span_context.span_id());
        // A 4xx is the client's problem, not the server span's error.
        assert_eq!(server.status, Status::Unset, "{outcome}");
    }
    // The refused caller is named: who was denied.
    let spans = exporter.get_finished_spans().unwrap();
    let server = one(&spans, "POST /runtimes/support/invocations");
    assert_eq!(attr(server, "gatehouse.client_id").as_deref(), Some(CLIENT));
    assert_eq!(
        attr(one(&spans, "gatehouse.auth"), "gatehouse.jwt.alg").as_deref(),
        Some("RS256")
    );
    assert_eq!(edge.agent.request_count(), 0);

    // No route: a server span named by the method alone, outcome none.
    exporter.reset();
    let reply = edge.invoke("nowhere", None, "{}").await;
    assert_eq!(reply.status, 404);
    let spans = collect(&edge, &exporter, 1).await;
    let server = one(&spans, "POST");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        attr(server, "gatehouse.auth.outcome").as_deref(),
        Some("none")
    );
    assert_eq!(attr(server, "http.route"), None);
}

#[tokio::test]
async fn upstream_failures_mark_the_client_and_server_spans() {
    let (edge, exporter) = traced_edge("limits: { requestTimeout: 1s }", &support_route()).await;
    edge.agent
        .set_behavior(gatehouse::dev::Behavior::Status(503));
    let token = edge.valid_token();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 503);
    let spans = collect(&edge, &exporter, 3).await;
    let upstream = one(&spans, "POST");
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(attr(upstream, "error.type").as_deref(), Some("503"));
    assert!(matches!(upstream.status, Status::Error { .. }));
    let server = one(&spans, "POST /runtimes/support/invocations");
    assert!(matches!(server.status, Status::Error { .. }));

    exporter.reset();
    edge.agent
        .set_behavior(gatehouse::dev::Behavior::CloseImmediately);
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 502);
    let spans = collect(&edge, &exporter, 3).await;
    let upstream = one(&spans, "POST");
    assert_eq!(upstream.span_kind, SpanKind::Client);
    assert_eq!(
        attr(upstream, "error.type").as_deref(),
        Some("upstream_unreachable")
    );
    assert_eq!(attr(upstream, "http.response.status_code"), None);
}

#[tokio::test]
async fn a_key_fetch_for_an_unknown_kid_is_a_child_of_auth() {
    let (edge, exporter) =
        traced_edge("jwt: { jwksMinRefetchInterval: 1ms }", &support_route()).await;
    edge.issuer.rotate(Alg::ES256).unwrap();
    let token = edge.valid_token();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 200);
    let spans = collect(&edge, &exporter, 4).await;
    let auth = one(&spans, "gatehouse.auth");
    let fetch = one(&spans, "gatehouse.jwks.fetch");
    assert_eq!(fetch.parent_span_id, auth.span_context.span_id());
    assert_eq!(fetch.span_context.trace_id(), auth.span_context.trace_id());
    assert_eq!(
        attr(fetch, "gatehouse.jwks.reason").as_deref(),
        Some("unknown_kid")
    );
    assert_eq!(attr(fetch, "gatehouse.jwks.result").as_deref(), Some("ok"));
    assert_eq!(
        attr(fetch, "gatehouse.jwks.issuer").as_deref(),
        Some(edge.issuer.url().trim_end_matches('/'))
    );
    assert!(fetch.start_time >= auth.start_time && fetch.end_time <= auth.end_time);
    assert_eq!(attr(auth, "gatehouse.jwt.alg").as_deref(), Some("ES256"));
}

#[tokio::test]
async fn sampling_is_parent_based_and_enduser_id_can_be_off() {
    let (edge, exporter) = traced_edge(
        "telemetry: { sampling: 0, enduserId: false }",
        &support_route(),
    )
    .await;
    let token = edge.valid_token();
    let auth = format!("Bearer {token}");
    let path = "/runtimes/support/invocations";
    // New traces: sampling 0 keeps none, and the upstream is told so.
    for _ in 0..3 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    // A client that sampled its trace is followed; one that did not, too.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    for traceparent in [&sampled, &unsampled] {
        let reply = edge
            .send(
                Method::POST,
                path,
                &[("authorization", &auth), ("traceparent", traceparent)],
                "{}",
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let spans = collect(&edge, &exporter, 3).await;
    assert_eq!(
        spans.len(),
        3,
        "only the sampled client trace: {:?}",
        names(&spans)
    );
    for span in &spans {
        assert_eq!(span.span_context.trace_id().to_string(), CLIENT_TRACE);
    }
    let server = one(&spans, "POST /runtimes/support/invocations");
    assert_eq!(attr(server, "enduser.id"), None, "enduserId: false");
    assert_eq!(attr(server, "gatehouse.client_id").as_deref(), Some(CLIENT));
    let flags: Vec<String> = edge
        .agent
        .requests()
        .iter()
        .map(|r| r.header("traceparent").unwrap()[53..].to_owned())
        .collect();
    assert_eq!(flags, ["00", "00", "00", "01", "00"]);
}

#[tokio::test]
async fn an_xray_trace_header_is_continued() {
    let (edge, exporter) = traced_edge("", &support_route()).await;
    let token = edge.valid_token();
    let reply = edge
        .send(
            Method::POST,
            "/runtimes/support/invocations",
            &[
                ("authorization", &format!("Bearer {token}")),
                (
                    "x-amzn-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
                ),
            ],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 200);
    let spans = collect(&edge, &exporter, 3).await;
    let server = one(&spans, "POST /runtimes/support/invocations");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "5759e988bd862e3fe1be46a994272793"
    );
    assert_eq!(server.parent_span_id, hex_span("53995c3f42cd8ad8"));
    let sent = edge.agent.requests()[0].header("traceparent").unwrap();
    assert!(
        sent.starts_with("00-5759e988bd862e3fe1be46a994272793-"),
        "{sent}"
    );
}

#[tokio::test]
async fn an_sse_stream_is_one_server_span_ending_with_the_body() {
    let (edge, exporter) = traced_edge("", &support_route()).await;
    let token = edge.valid_token();
    let reply = edge
        .invoke(
            "support",
            Some(&token),
            r#"{"stream": 3, "intervalMs": 20}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let spans = collect(&edge, &exporter, 3).await;
    let server = one(&spans, "POST /runtimes/support/invocations");
    let upstream = one(&spans, "POST");
    // Both end when the last event went out, not when the headers arrived.
    assert_eq!(server.end_time, upstream.end_time);
    let lines = edge.access_lines(1).await;
    assert!(lines[0]["duration_ms"].as_f64().unwrap() >= 40.0);
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// A Prometheus / OpenMetrics text-format parser: every sample as `name{k="v",...}` (labels
/// sorted) → value. Strict: a line it cannot read fails the test.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if line == "# EOF" || line.is_empty() {
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad comment {line:?}"
            );
            if kind == "TYPE" {
                types.insert(name.to_owned(), parts.next().unwrap().to_owned());
            }
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("bad line {line:?}"));
                let name = &line[..open];
                let mut labels = parse_labels(&line[open + 1..close], line);
                labels.sort();
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                (
                    format!("{name}{{{}}}", labels.join(",")),
                    &line[close + 1..],
                )
            }
            None => {
                let space = line
                    .find(' ')
                    .unwrap_or_else(|| panic!("bad line {line:?}"));
                (line[..space].to_owned(), &line[space..])
            }
        };
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        samples.insert(series, value);
    }
    assert!(!types.is_empty(), "no TYPE lines");
    samples
}

fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let key = rest[..eq].trim().to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 1..].char_indices();
        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
        labels.push((key, value));
        rest = rest[end..].trim_start_matches(',');
    }
    labels
}

async fn metrics(edge: &Edge) -> BTreeMap<String, f64> {
    let reply = edge.admin("/metrics").await;
    assert_eq!(reply.status, 200);
    parse_prometheus(std::str::from_utf8(&reply.body).unwrap())
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_by_exactly_the_requests_sent() {
    let edge = Edge::start("", &support_route()).await;
    let token = edge.valid_token();
    let intruder = edge.token(|o| o.client_id = Some("intruder".into()));
    let before = metrics(&edge).await;
    let (ok, missing, forbidden) = (7, 3, 2);
    for _ in 0..ok {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    for _ in 0..missing {
        assert_eq!(edge.invoke("support", None, "{}").await.status, 401);
    }
    for _ in 0..forbidden {
        assert_eq!(
            edge.invoke("support", Some(&intruder), "{}").await.status,
            403
        );
    }
    edge.access_lines(ok + missing + forbidden).await;
    let after = metrics(&edge).await;
    let delta = |series: &str| get(&after, series) - get(&before, series);
    let requests = |class: &str, outcome: &str| {
        delta(&format!(
            "gatehouse_requests_total{{auth_outcome=\"{outcome}\",route=\"support\",status_class=\"{class}\"}}"
        ))
    };
    assert_eq!(requests("2xx", "ok"), ok as f64);
    assert_eq!(requests("4xx", "missing"), missing as f64);
    assert_eq!(requests("4xx", "forbidden"), forbidden as f64);
    let total: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("gatehouse_requests_total{"))
        .map(|(k, v)| v - get(&before, k))
        .sum();
    assert_eq!(total, (ok + missing + forbidden) as f64);
    assert_eq!(
        delta("gatehouse_request_duration_seconds_count{route=\"support\"}"),
        (ok + missing + forbidden) as f64
    );
    assert_eq!(
        delta("gatehouse_upstream_duration_seconds_count{route=\"support\"}"),
        ok as f64
    );
    // Validation latency: one miss per distinct token, the rest hits, all in µs buckets
    // below 100ms; missing tokens are not validations.
    let auth = |cache: &str, suffix: &str| {
        delta(&format!(
            "gatehouse_auth_duration_seconds_{suffix}{{cache=\"{cache}\",route=\"support\"}}"
        ))
    };
    assert_eq!(auth("miss", "count"), 2.0);
    assert_eq!(auth("hit", "count"), (ok + forbidden - 2) as f64);
    let bucket = |cache: &str, le: &str| {
        delta(&format!(
            "gatehouse_auth_duration_seconds_bucket{{cache=\"{cache}\",le=\"{le}\",route=\"support\"}}"
        ))
    };
    let micro_buckets = [
        "0.000001",
        "0.0000025",
        "0.000005",
        "0.00001",
        "0.000025",
        "0.00005",
        "0.000075",
        "0.0001",
        "0.00025",
        "0.0005",
    ];
    for le in micro_buckets {
        assert!(
            after.contains_key(&format!(
                "gatehouse_auth_duration_seconds_bucket{{cache=\"hit\",le=\"{le}\",route=\"support\"}}"
            )),
            "bucket {le}"
        );
    }
    assert!(
        bucket("hit", "0.0005") >= 1.0,
        "cache hits observed in the µs buckets: {}",
        bucket("hit", "0.0005")
    );
    assert_eq!(bucket("hit", "+Inf"), auth("hit", "count"));
    // Every SPEC §10 family is exposed.
    for family in [
        "gatehouse_requests_total",
        "gatehouse_request_duration_seconds_bucket",
        "gatehouse_auth_duration_seconds_bucket",
        "gatehouse_jwks_fetches_total",
        "gatehouse_jwks_keys",
        "gatehouse_jwks_age_seconds",
        "gatehouse_token_cache_entries",
        "gatehouse_upstream_duration_seconds_bucket",
        "gatehouse_active_streams",
        "gatehouse_spans_dropped_total",
        "gatehouse_spans_exported_total",
    ] {
        assert!(
            after.keys().any(|k| k.split('{').next() == Some(family)),
            "{family} missing"
        );
    }
    assert_eq!(get(&after, "gatehouse_token_cache_entries"), 2.0);
    // Labels stay low-cardinality: nothing the client sent.
    for key in after.keys() {
        assert!(!key.contains(&token) && !key.contains("user-1"), "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On one thread, so that every task of the edge logs into the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn no_token_reaches_logs_spans_metrics_or_the_access_log() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (edge, exporter) = traced_edge("telemetry: { serverTiming: true }", &support_route()).await;
    let good = edge.valid_token();
    let expired = edge.token(|o| o.issued_at = Some(now() - 7200));
    let forged = stranger(Alg::RS256)
        .sign(&default_claims_for(&edge))
        .unwrap();
    let intruder = edge.token(|o| o.client_id = Some("intruder".into()));
    let tokens = [&good, &expired, &forged, &intruder];
    for token in tokens {
        edge.invoke("support", Some(token), "{}").await;
        // Also in odd places a careless log line might echo.
        edge.send(
            Method::GET,
            &format!("/runtimes/support/invocations?token={token}"),
            &[
                ("authorization", &format!("bearer  {token}")),
                ("x-debug", token),
            ],
            "",
        )
        .await;
    }
    let spans = collect(&edge, &exporter, 8).await;
    edge.access_lines(8).await;
    let metrics = edge.admin("/metrics").await;

    let mut outputs = vec![
        (
            "process log",
            String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned(),
        ),
        ("access log", edge.log.text()),
        (
            "metrics",
            String::from_utf8_lossy(&metrics.body).into_owned(),
        ),
        ("spans", format!("{spans:?}")),
    ];
    outputs.push(("agent", format!("{:?}", edge.agent.requests())));
    assert!(outputs[1].1.lines().count() >= 8);
    for token in tokens {
        // The signature alone is enough to replay nothing, but it is the token's unique part.
        let signature = token.rsplit('.').next().unwrap();
        for (name, text) in &outputs {
            assert!(!text.contains(signature), "{name} contains a token");
        }
    }
}

fn default_claims_for(edge: &Edge) -> serde_json::Value {
    let mut options = default_claims();
    options.iss = edge.issuer.issuer();
    options.claims_json()
}

// ---------------------------------------------------------------------------------------------
// Failure isolation

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn requests_succeed_when_the_collector_is_down() {
    for protocol in ["grpc", "http/protobuf"] {
        let port = closed_port();
        let top = format!(
            "telemetry: {{ otlp: {{ endpoint: \"http://127.0.0.1:{port}\", protocol: \"{protocol}\", timeout: 1s }} }}"
        );
        let edge = Edge::start(&top, &support_route()).await;
        let token = edge.valid_token();
        for _ in 0..10 {
            assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
        }
        // The spans were built and given up on, and counted.
        let pipeline = edge.app.spans.as_ref().expect("exporter configured");
        let mut dropped = 0.0;
        for _ in 0..100 {
            pipeline.flush(Duration::from_secs(5)).await;
            let samples = metrics(&edge).await;
            dropped = get(
                &samples,
                "gatehouse_spans_dropped_total{reason=\"export_failed\"}",
            ) + get(
                &samples,
                "gatehouse_spans_dropped_total{reason=\"export_timeout\"}",
            );
            if dropped >= 30.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(dropped, 30.0, "{protocol}: 10 requests × 3 spans dropped");
    }
}

/// An exporter whose exports never finish: a collector that accepts and never answers.
#[derive(Debug, Clone, Default)]
struct Stuck;

impl opentelemetry_sdk::trace::SpanExporter for Stuck {
    fn export(&self, _batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::pending()
    }
}

#[tokio::test]
async fn a_stuck_collector_fills_a_bounded_queue_and_drops_are_counted() {
    let issuer = issuer().await;
    let agent = agent().await;
    let yaml = fill(
        &format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.2:0 }}\nroutes:\n{}",
            support_route()
        ),
        &issuer,
        &agent,
    );
    let output = SpanOutput::Exporter(
        ExporterSource::custom(Stuck),
        QueueConfig {
            max_queue: 4,
            max_batch: 2,
            delay: Duration::from_millis(1),
        },
    );
    let edge = Edge::from_yaml_with_spans(issuer, agent, &yaml, Some(output)).await;
    let token = edge.valid_token();
    for _ in 0..20 {
        assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    }
    let samples = metrics(&edge).await;
    let dropped = get(
        &samples,
        "gatehouse_spans_dropped_total{reason=\"queue_full\"}",
    );
    // 20 requests of 3 spans: at most 2 requests in the stuck export and 4 queued; the rest
    // dropped (and counted as spans), never waited on.
    assert!(dropped == 42.0 || dropped == 45.0, "dropped {dropped}");
    assert_eq!(get(&samples, "gatehouse_spans_exported_total"), 0.0);
}
