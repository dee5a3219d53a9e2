//! The spans of one finished request (the tree in [`super`]'s docs), built on the export
//! thread from its record: the server span, `gatehouse.auth` and the key fetch it waited for,
//! the outbound-token span, and the upstream client span.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::SpanData;

use super::{Builder, Finished, SpanCapture, alg_name, method_name, random_span_id, shared};
use crate::auth::AuthOutcome;
use crate::context::{OutboundResult, RequestRecord};
use crate::error::ErrorReason;
use crate::route::Protocol;

impl Builder {
    /// The spans of one finished request, children first (none unless it was recorded).
    pub(crate) fn request(&self, record: &RequestRecord, done: Finished) -> Vec<SpanData> {
        let Some(capture) = record.capture() else {
            return Vec::new();
        };
        let spans = RequestSpans::new(self, record, capture, done);
        let auth = spans.auth();
        let fetch = spans.fetch(auth.as_ref().map_or(spans.server_id, |(id, _)| *id));
        let exchange = spans.token_exchange();
        let upstream = spans.upstream();
        // Children first: a collector that assembles trees as batches arrive sees the root last.
        let mut out = Vec::with_capacity(5);
        out.extend(fetch);
        out.extend(auth.map(|(_, span)| span));
        out.extend(exchange);
        out.extend(upstream);
        out.push(spans.server());
        out
    }
}

/// What the spans of one request share: its trace (ids and state), its clock, and the server
/// span's id that the others hang under.
struct RequestSpans<'a> {
    builder: &'a Builder,
    record: &'a RequestRecord,
    capture: &'a SpanCapture,
    done: Finished,
    trace_id: TraceId,
    state: TraceState,
    server_id: SpanId,
    method: &'static str,
}

impl<'a> RequestSpans<'a> {
    fn new(
        builder: &'a Builder,
        record: &'a RequestRecord,
        capture: &'a SpanCapture,
        done: Finished,
    ) -> Self {
        let trace = &record.trace;
        let state = trace
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<TraceState>().ok())
            .unwrap_or_default();
        Self {
            builder,
            record,
            capture,
            done,
            trace_id: TraceId::from_bytes(trace.trace_id),
            state,
            server_id: SpanId::from_bytes(trace.span_id),
            method: method_name(&record.method),
        }
    }

    fn context(&self, id: SpanId) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            id,
            TraceFlags::SAMPLED,
            false,
            self.state.clone(),
        )
    }

    /// A point on the request's clock: monotonic offsets anchored at its wall-clock start.
    fn at(&self, offset: Duration) -> SystemTime {
        self.record.started_wall + offset
    }

    fn end(&self) -> SystemTime {
        self.at(self.done.elapsed)
    }

    /// `{METHOD} {route}`, the root: HTTP semantic conventions plus the edge's own facts.
    fn server(&self) -> SpanData {
        let route = self.record.route();
        let auth = self.record.auth();
        let outcome = auth.map_or(AuthOutcome::None, |a| a.outcome);
        let name: Cow<'static, str> = match route {
            Some(route) => Cow::Owned(format!("{} {}", self.method, route.path)),
            None => Cow::Borrowed(self.method),
        };
        let mut attributes = Vec::with_capacity(20);
        attributes.push(KeyValue::new("http.request.method", self.method));
        if self.method == "_OTHER" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                self.record.method.as_str().to_owned(),
            ));
        }
        attributes.push(KeyValue::new("url.path", self.record.path().to_owned()));
        attributes.push(KeyValue::new(
            "url.scheme",
            if self.record.conn.tls {
                "https"
            } else {
                "http"
            },
        ));
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(self.done.status),
        ));
        attributes.push(KeyValue::new(
            "client.address",
            self.record.conn.remote.ip().to_string(),
        ));
        if let Some(agent) = self
            .capture
            .user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        attributes.push(KeyValue::new(
            "gatehouse.request_id",
            self.record
                .request_id
                .to_str()
                .unwrap_or_default()
                .to_owned(),
        ));
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.path.clone()));
            attributes.push(KeyValue::new("gatehouse.route", shared(&route.name)));
        }
        attributes.push(KeyValue::new("gatehouse.auth.outcome", outcome.as_str()));
        if let Some(client_id) = auth.and_then(|a| a.client_id.as_deref()) {
            attributes.push(KeyValue::new("gatehouse.client_id", client_id.to_owned()));
        }
        if self.record.settings.tracing.enduser_id
            && let Some(sub) = auth.and_then(|a| a.sub.as_deref())
        {
            attributes.push(KeyValue::new("enduser.id", sub.to_owned()));
        }
        if let Some(session) = self.record.session_id() {
            attributes.push(KeyValue::new("session.id", session.to_owned()));
            if route.is_some_and(|r| r.protocol == Protocol::Mcp) {
                attributes.push(KeyValue::new("mcp.session.id", session.to_owned()));
            }
        }
        // The message the MCP policy phase read is what the server executes; the mirrored
        // header is only a fallback for routes that read none.
        if let Some(mcp) = self.record.mcp() {
            if let Some(method) = &mcp.method {
                attributes.push(KeyValue::new("mcp.method.name", method.clone()));
                if method == "tools/call"
                    && let Some(tool) = &mcp.name
                {
                    attributes.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
                }
            }
            if let Some(id) = &mcp.id {
                attributes.push(KeyValue::new("jsonrpc.request.id", id.clone()));
            }
            if let Some(decision) = mcp.decision {
                attributes.push(KeyValue::new("gatehouse.policy.decision", decision));
                attributes.push(KeyValue::new(
                    "gatehouse.policy.rule",
                    mcp.rule.as_deref().unwrap_or("default").to_owned(),
                ));
            }
        } else if let Some(mcp) = self
            .capture
            .mcp_method
            .as_ref()
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("mcp.method.name", mcp.to_owned()));
        }
        if self.done.aborted {
            attributes.push(KeyValue::new("gatehouse.aborted", true));
        }
        // Server spans: only 5xx is an error (semantic conventions); 4xx is the client's.
        let status = if self.done.status >= 500 {
            let kind = self.done.error.unwrap_or(ErrorReason::Http5xx).as_str();
            attributes.push(KeyValue::new("error.type", kind));
            Status::error(kind)
        } else {
            if let Some(error) = self.done.error.filter(|_| self.done.aborted) {
                attributes.push(KeyValue::new("error.type", error.as_str()));
            }
            Status::Unset
        };
        let trace = &self.record.trace;
        let parent = trace
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes);
        self.builder.span(
            (
                self.context(self.server_id),
                parent,
                trace.parent_span_id.is_some(),
            ),
            SpanKind::Server,
            name,
            (self.record.started_wall, self.end()),
            attributes,
            status,
        )
    }

    /// `gatehouse.auth`, when authentication ran; with its id, the parent of a key fetch.
    fn auth(&self) -> Option<(SpanId, SpanData)> {
        self.record
            .auth()
            .filter(|a| a.outcome != AuthOutcome::None)
            .map(|auth| {
                let auth_end = SpanCapture::offset(&self.capture.auth_end_us).unwrap_or_default();
                let start = auth_end.saturating_sub(auth.duration);
                let id = random_span_id();
                let mut attributes = vec![
                    KeyValue::new("gatehouse.auth.outcome", auth.outcome.as_str()),
                    KeyValue::new("gatehouse.auth.cache_hit", auth.cache_hit),
                ];
                if let Some(kid) = &auth.kid {
                    attributes.push(KeyValue::new("gatehouse.jwt.kid", shared(kid)));
                }
                if let Some(alg) = auth.alg {
                    attributes.push(KeyValue::new("gatehouse.jwt.alg", alg_name(alg)));
                }
                let status = if auth.outcome == AuthOutcome::Unavailable {
                    Status::error("issuer keys unavailable")
                } else {
                    Status::Unset
                };
                (
                    id,
                    self.builder.span(
                        (self.context(id), self.server_id, false),
                        SpanKind::Internal,
                        Cow::Borrowed("gatehouse.auth"),
                        (self.at(start), self.at(auth_end)),
                        attributes,
                        status,
                    ),
                )
            })
    }

    /// `gatehouse.jwks.fetch`, when this request made the edge fetch keys.
    fn fetch(&self, parent: SpanId) -> Option<SpanData> {
        self.capture.jwks.get().map(|fetch| {
            let id = random_span_id();
            // Anchored on the request's clock, like its other spans.
            let start = fetch.started.saturating_duration_since(self.record.started);
            self.builder
                .fetch_span(fetch, self.context(id), parent, self.at(start))
        })
    }

    /// `gatehouse.token_exchange`: the outbound credential (SPEC §13), never the token.
    fn token_exchange(&self) -> Option<SpanData> {
        self.record.outbound().map(|outbound| {
            let start = outbound
                .started
                .saturating_duration_since(self.record.started);
            let result = outbound.result;
            let mut attributes = vec![
                KeyValue::new("gatehouse.cache_hit", result == OutboundResult::Hit),
                KeyValue::new("gatehouse.outbound.result", result.as_str()),
            ];
            let status = match result {
                OutboundResult::Refused | OutboundResult::Error => {
                    attributes.push(KeyValue::new("error.type", result.as_str()));
                    Status::error(result.as_str())
                }
                OutboundResult::Hit | OutboundResult::Issued => Status::Unset,
            };
            let id = random_span_id();
            self.builder.span(
                (self.context(id), self.server_id, false),
                SpanKind::Internal,
                Cow::Borrowed("gatehouse.token_exchange"),
                (self.at(start), self.at(start + outbound.duration)),
                attributes,
                status,
            )
        })
    }

    /// The upstream client span: its id is the parent the upstream saw in `traceparent`.
    fn upstream(&self) -> Option<SpanData> {
        let upstream_failed = self.done.error.is_some_and(ErrorReason::upstream_failed);
        (self.record.upstream_status().is_some() || upstream_failed)
            .then_some(self.record.route())
            .flatten()
            .map(|route| {
                let start = SpanCapture::offset(&self.capture.upstream_start_us)
                    .or_else(|| SpanCapture::offset(&self.capture.auth_end_us))
                    .unwrap_or_default();
                let address = self
                    .capture
                    .upstream_address
                    .get()
                    .unwrap_or(&route.upstream.authority);
                let mut attributes = vec![
                    KeyValue::new("http.request.method", self.method),
                    KeyValue::new("server.address", address.host().to_owned()),
                ];
                if let Some(port) = address.port_u16() {
                    attributes.push(KeyValue::new("server.port", i64::from(port)));
                }
                if let Some(arn) = self.capture.upstream_arn.get() {
                    attributes.push(KeyValue::new("aws.operation.name", "InvokeAgentRuntime"));
                    attributes.push(KeyValue::new("aws.resource.arn", shared(arn)));
                }
                let status = match self.record.upstream_status() {
                    Some(code) => {
                        attributes
                            .push(KeyValue::new("http.response.status_code", i64::from(code)));
                        // Client spans: 4xx and 5xx are errors (semantic conventions).
                        if code >= 400 {
                            attributes.push(KeyValue::new("error.type", code.to_string()));
                            Status::error(code.to_string())
                        } else {
                            Status::Unset
                        }
                    }
                    None => {
                        let kind = self
                            .done
                            .error
                            .unwrap_or(ErrorReason::UpstreamUnreachable)
                            .as_str();
                        attributes.push(KeyValue::new("error.type", kind));
                        Status::error(kind)
                    }
                };
                self.builder.span(
                    (
                        self.context(SpanId::from_bytes(self.record.trace.upstream_span_id)),
                        self.server_id,
                        false,
                    ),
                    SpanKind::Client,
                    Cow::Borrowed(self.method),
                    (self.at(start), self.end()),
                    attributes,
                    status,
                )
            })
    }
}
