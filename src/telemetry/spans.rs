//! The spans of SPEC §10, built when the response body ends from what the request record
//! holds, with the ids the edge already put on the wire:
//!
//! ```text
//!  {METHOD} {route}        SERVER  id = trace.span_id, parent = the client's span (remote)
//!  ├─ gatehouse.auth       INTERNAL
//!  │  └─ gatehouse.jwks.fetch   INTERNAL, when this request made the edge fetch keys
//!  └─ {METHOD}             CLIENT  id = trace.upstream_span_id (the upstream's parent)
//! ```
//!
//! Why at the end and not as the request goes: an unsampled request (or an edge without an
//! exporter) then costs nothing — no span objects, no attribute vectors, no extra clock
//! reads; and a sampled one costs its request thread one queue push: the export thread builds
//! the spans from the record.
//! Start and end times come from the record's monotonic offsets anchored at its wall-clock
//! start, so durations are exact even if the wall clock steps. A 10-minute SSE stream is one
//! server span of ten minutes; a client abort ends the span there (`gatehouse.aborted`).
//!
//! Records go to the bounded export queue ([`super::export`]); nothing here blocks.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use http::uri::Authority;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use rand::RngCore;

use super::export::{ExporterSource, OtlpConfig, QueueConfig, SpanQueue};
use super::metrics::Metrics;
use super::trace::Sampler;
use crate::auth::AuthOutcome;
use crate::auth::jwks::Reason;
use crate::config::file::TelemetryFile;
use crate::context::RequestRecord;
use crate::error::ErrorReason;
use crate::route::Protocol;

/// The per-configuration tracing settings (reloadable), held by [`crate::settings::Settings`].
#[derive(Debug, Clone, Copy)]
pub struct TraceSettings {
    pub sampler: Sampler,
    /// `telemetry.enduserId`: put the token's `sub` in spans as `enduser.id`.
    pub enduser_id: bool,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            sampler: Sampler::ALWAYS,
            enduser_id: true,
        }
    }
}

impl TraceSettings {
    pub fn from_file(telemetry: Option<&TelemetryFile>) -> Self {
        Self {
            sampler: Sampler::ratio(telemetry.and_then(|t| t.sampling).unwrap_or(1.0)),
            enduser_id: telemetry.and_then(|t| t.enduser_id).unwrap_or(true),
        }
    }
}

/// What only a recorded (sampled, exported) request keeps: taken when the request arrives,
/// filled in by the phases, read when the body ends. Unrecorded requests have none.
#[derive(Debug, Default)]
pub struct SpanCapture {
    user_agent: Option<HeaderValue>,
    mcp_method: Option<HeaderValue>,
    /// Microseconds from the request's start (`u64::MAX`: not set).
    auth_end_us: AtomicU64,
    upstream_start_us: AtomicU64,
    jwks: OnceLock<JwksFetch>,
    upstream_address: OnceLock<Authority>,
    upstream_arn: OnceLock<Arc<str>>,
}

const UNSET: u64 = u64::MAX;

impl SpanCapture {
    pub(crate) fn new(headers: &http::HeaderMap) -> Self {
        Self {
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            mcp_method: headers.get("mcp-method").cloned(),
            auth_end_us: AtomicU64::new(UNSET),
            upstream_start_us: AtomicU64::new(UNSET),
            ..Self::default()
        }
    }

    pub(crate) fn auth_ended(&self, at: Duration) {
        self.auth_end_us.store(micros(at), Ordering::Relaxed);
    }

    pub(crate) fn upstream_started(&self, at: Duration) {
        self.upstream_start_us.store(micros(at), Ordering::Relaxed);
    }

    pub(crate) fn set_upstream_address(&self, address: Authority) {
        let _ = self.upstream_address.set(address);
    }

    pub(crate) fn set_upstream_arn(&self, arn: Arc<str>) {
        let _ = self.upstream_arn.set(arn);
    }

    pub(crate) fn fetched(&self) -> bool {
        self.jwks.get().is_some()
    }

    fn offset(value: &AtomicU64) -> Option<Duration> {
        match value.load(Ordering::Relaxed) {
            UNSET => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(UNSET - 1)
}

/// One discovery + JWKS fetch.
#[derive(Debug, Clone)]
pub struct JwksFetch {
    issuer: String,
    reason: Reason,
    started_wall: SystemTime,
    started: Instant,
    duration: Duration,
    error: Option<String>,
}

tokio::task_local! {
    /// The recorded request whose task is running, so a key fetch it triggers becomes a child
    /// of its `gatehouse.auth` span without threading the record through the auth code.
    static CURRENT: Arc<RequestRecord>;
}

/// Runs `future` with `record` as the current request (only recorded requests are scoped).
pub(crate) async fn scope<F: Future>(record: Arc<RequestRecord>, future: F) -> F::Output {
    CURRENT.scope(record, future).await
}

/// Where fetches outside any request (the background refresh) are reported, set once by
/// `gatehouse serve`. Tests leave it unset.
static BACKGROUND: OnceLock<(Arc<Spans>, Sampler)> = OnceLock::new();

/// Reports key fetches that no request triggered as root spans through `spans`.
pub fn report_background_fetches(spans: Arc<Spans>, sampler: Sampler) {
    let _ = BACKGROUND.set((spans, sampler));
}

/// Times one key fetch (see `auth::jwks`). Costs two clock reads per fetch; fetches are rare.
#[derive(Debug)]
pub struct FetchTimer {
    started_wall: SystemTime,
    started: Instant,
}

impl FetchTimer {
    pub fn start() -> Self {
        Self {
            started_wall: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// Records the fetch: on the current request's auth span, or as a background root span.
    pub fn finish<T, E: std::fmt::Display>(
        self,
        issuer: &str,
        reason: Reason,
        result: &Result<T, E>,
    ) {
        let fetch = JwksFetch {
            issuer: issuer.to_owned(),
            reason,
            started_wall: self.started_wall,
            started: self.started,
            duration: self.started.elapsed(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        let in_request = CURRENT.try_with(|record| {
            if let Some(capture) = record.capture() {
                let _ = capture.jwks.set(fetch.clone());
            }
        });
        if in_request.is_err()
            && let Some((spans, sampler)) = BACKGROUND.get()
        {
            spans.background_fetch(&fetch, *sampler);
        }
    }
}

/// The span pipeline of the process: the export queue, and a builder for spans made outside
/// requests.
#[derive(Debug)]
pub struct Spans {
    queue: SpanQueue,
    builder: Builder,
}

/// Turns finished requests and fetches into [`SpanData`]; the export thread has its own.
#[derive(Debug, Clone)]
pub(crate) struct Builder {
    scope: InstrumentationScope,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            scope: InstrumentationScope::builder("gatehouse")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }
}

/// What a finished request looked like, for [`Spans::request`].
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub status: u16,
    pub elapsed: Duration,
    pub error: Option<ErrorReason>,
    pub aborted: bool,
}

impl Spans {
    /// The exporter `telemetry.otlp` and the `OTEL_*` environment ask for; `None` when no
    /// endpoint is configured anywhere.
    pub fn from_config(
        telemetry: Option<&TelemetryFile>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, String> {
        let env = |name: &str| std::env::var(name).ok();
        let Some(config) = OtlpConfig::resolve(telemetry.and_then(|t| t.otlp.as_ref()), &env)?
        else {
            return Ok(None);
        };
        let (queue, timeout) = (config.queue, config.timeout);
        Self::start(
            ExporterSource::Otlp(config),
            queue,
            timeout,
            resource(telemetry),
            metrics,
        )
        .map(Some)
    }

    /// A pipeline over any exporter (tests, tools).
    pub fn start(
        source: ExporterSource,
        queue: QueueConfig,
        timeout: Duration,
        resource: Resource,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        Ok(Self {
            queue: SpanQueue::start(source, queue, timeout, resource, metrics)?,
            builder: Builder::default(),
        })
    }

    /// Exports what is queued, within `timeout` (shutdown, tests).
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.queue.flush(timeout).await
    }

    /// Hands a finished request to the export thread, which builds its spans: the request's
    /// own thread pays one non-blocking queue push (nothing unless it was recorded).
    pub fn request(&self, record: Arc<RequestRecord>, done: Finished) {
        if record.capture().is_some() {
            self.queue.push_request(record, done);
        }
    }

    /// A fetch no request triggered: the root of its own trace, sampled like new traces.
    fn background_fetch(&self, fetch: &JwksFetch, sampler: Sampler) {
        let mut trace_id = [0u8; 16];
        rand::rng().fill_bytes(&mut trace_id);
        if !sampler.sample(&trace_id) {
            return;
        }
        let context = SpanContext::new(
            TraceId::from_bytes(trace_id),
            random_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let span = self
            .builder
            .fetch_span(fetch, context, SpanId::INVALID, fetch.started_wall);
        self.queue.push(span);
    }
}

impl Builder {
    /// One span; `ids` is its context, its parent's id, and whether that parent is remote.
    fn span(
        &self,
        (context, parent, parent_is_remote): (SpanContext, SpanId, bool),
        kind: SpanKind,
        name: Cow<'static, str>,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The spans of one finished request, children first (none unless it was recorded).
    pub(crate) fn request(&self, record: &RequestRecord, done: Finished) -> Vec<SpanData> {
        let mut out = Vec::with_capacity(4);
        let Some(capture) = record.capture() else {
            return out;
        };
        let trace = &record.trace;
        let trace_id = TraceId::from_bytes(trace.trace_id);
        let state = trace
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<TraceState>().ok())
            .unwrap_or_default();
        let context =
            |id: SpanId| SpanContext::new(trace_id, id, TraceFlags::SAMPLED, false, state.clone());
        let at = |offset: Duration| record.started_wall + offset;
        let end = at(done.elapsed);
        let server_id = SpanId::from_bytes(trace.span_id);
        let route = record.route();
        let auth = record.auth();
        let outcome = auth.map_or(AuthOutcome::None, |a| a.outcome);
        let method = method_name(&record.method);

        // The server span.
        let name: Cow<'static, str> = match route {
            Some(route) => Cow::Owned(format!("{method} {}", route.path)),
            None => Cow::Borrowed(method),
        };
        let mut attributes = Vec::with_capacity(20);
        attributes.push(KeyValue::new("http.request.method", method));
        if method == "_OTHER" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                record.method.as_str().to_owned(),
            ));
        }
        attributes.push(KeyValue::new("url.path", record.path().to_owned()));
        attributes.push(KeyValue::new(
            "url.scheme",
            if record.conn.tls { "https" } else { "http" },
        ));
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(done.status),
        ));
        attributes.push(KeyValue::new(
            "client.address",
            record.conn.remote.ip().to_string(),
        ));
        if let Some(agent) = capture.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        attributes.push(KeyValue::new(
            "gatehouse.request_id",
            record.request_id.to_str().unwrap_or_default().to_owned(),
        ));
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.path.clone()));
            attributes.push(KeyValue::new("gatehouse.route", shared(&route.name)));
        }
        attributes.push(KeyValue::new("gatehouse.auth.outcome", outcome.as_str()));
        if let Some(client_id) = auth.and_then(|a| a.client_id.as_deref()) {
            attributes.push(KeyValue::new("gatehouse.client_id", client_id.to_owned()));
        }
        if record.settings.tracing.enduser_id
            && let Some(sub) = auth.and_then(|a| a.sub.as_deref())
        {
            attributes.push(KeyValue::new("enduser.id", sub.to_owned()));
        }
        if let Some(session) = record.session_id() {
            attributes.push(KeyValue::new("session.id", session.to_owned()));
            if route.is_some_and(|r| r.protocol == Protocol::Mcp) {
                attributes.push(KeyValue::new("mcp.session.id", session.to_owned()));
            }
        }
        // The message the MCP policy phase read is what the server executes; the mirrored
        // header is only a fallback for routes that read none.
        if let Some(mcp) = record.mcp() {
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
        } else if let Some(mcp) = capture.mcp_method.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(KeyValue::new("mcp.method.name", mcp.to_owned()));
        }
        if done.aborted {
            attributes.push(KeyValue::new("gatehouse.aborted", true));
        }
        // Server spans: only 5xx is an error (semantic conventions); 4xx is the client's.
        let status = if done.status >= 500 {
            let kind = done.error.unwrap_or(ErrorReason::Http5xx).as_str();
            attributes.push(KeyValue::new("error.type", kind));
            Status::error(kind)
        } else {
            if let Some(error) = done.error.filter(|_| done.aborted) {
                attributes.push(KeyValue::new("error.type", error.as_str()));
            }
            Status::Unset
        };
        let parent = trace
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes);
        let server = self.span(
            (context(server_id), parent, trace.parent_span_id.is_some()),
            SpanKind::Server,
            name,
            (record.started_wall, end),
            attributes,
            status,
        );

        // gatehouse.auth, and the key fetch it waited for.
        let auth_span = auth.filter(|a| a.outcome != AuthOutcome::None).map(|auth| {
            let auth_end = SpanCapture::offset(&capture.auth_end_us).unwrap_or_default();
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
                self.span(
                    (context(id), server_id, false),
                    SpanKind::Internal,
                    Cow::Borrowed("gatehouse.auth"),
                    (at(start), at(auth_end)),
                    attributes,
                    status,
                ),
            )
        });
        let fetch = capture.jwks.get().map(|fetch| {
            let parent = auth_span.as_ref().map_or(server_id, |(id, _)| *id);
            let id = random_span_id();
            // Anchored on the request's clock, like its other spans.
            let start = fetch.started.saturating_duration_since(record.started);
            self.fetch_span(fetch, context(id), parent, at(start))
        });

        // The upstream client span: its id is the parent the upstream saw in `traceparent`.
        let upstream_failed = done.error.is_some_and(ErrorReason::upstream_failed);
        let upstream = (record.upstream_status().is_some() || upstream_failed)
            .then_some(route)
            .flatten()
            .map(|route| {
                let start = SpanCapture::offset(&capture.upstream_start_us)
                    .or_else(|| SpanCapture::offset(&capture.auth_end_us))
                    .unwrap_or_default();
                let address = capture
                    .upstream_address
                    .get()
                    .unwrap_or(&route.upstream.authority);
                let mut attributes = vec![
                    KeyValue::new("http.request.method", method),
                    KeyValue::new("server.address", address.host().to_owned()),
                ];
                if let Some(port) = address.port_u16() {
                    attributes.push(KeyValue::new("server.port", i64::from(port)));
                }
                if let Some(arn) = capture.upstream_arn.get() {
                    attributes.push(KeyValue::new("aws.operation.name", "InvokeAgentRuntime"));
                    attributes.push(KeyValue::new("aws.resource.arn", shared(arn)));
                }
                let status = match record.upstream_status() {
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
                        let kind = done
                            .error
                            .unwrap_or(ErrorReason::UpstreamUnreachable)
                            .as_str();
                        attributes.push(KeyValue::new("error.type", kind));
                        Status::error(kind)
                    }
                };
                self.span(
                    (
                        context(SpanId::from_bytes(trace.upstream_span_id)),
                        server_id,
                        false,
                    ),
                    SpanKind::Client,
                    Cow::Borrowed(method),
                    (at(start), end),
                    attributes,
                    status,
                )
            });

        // Children first: a collector that assembles trees as batches arrive sees the root last.
        if let Some((_, span)) = auth_span {
            if let Some(fetch) = fetch {
                out.push(fetch);
            }
            out.push(span);
        } else if let Some(fetch) = fetch {
            out.push(fetch);
        }
        if let Some(upstream) = upstream {
            out.push(upstream);
        }
        out.push(server);
        out
    }

    fn fetch_span(
        &self,
        fetch: &JwksFetch,
        context: SpanContext,
        parent: SpanId,
        start: SystemTime,
    ) -> SpanData {
        let mut attributes = vec![
            KeyValue::new("gatehouse.jwks.issuer", fetch.issuer.clone()),
            KeyValue::new(
                "gatehouse.jwks.reason",
                match fetch.reason {
                    Reason::Scheduled => "scheduled",
                    Reason::UnknownKid => "unknown_kid",
                    Reason::NoKeys => "no_keys",
                },
            ),
            KeyValue::new(
                "gatehouse.jwks.result",
                if fetch.error.is_some() { "error" } else { "ok" },
            ),
        ];
        let status = match &fetch.error {
            Some(error) => {
                attributes.push(KeyValue::new("error.type", "fetch_failed"));
                Status::error(error.clone())
            }
            None => Status::Unset,
        };
        self.span(
            (context, parent, false),
            SpanKind::Internal,
            Cow::Borrowed("gatehouse.jwks.fetch"),
            (start, start + fetch.duration),
            attributes,
            status,
        )
    }
}

/// `service.name` (file, else `OTEL_SERVICE_NAME`, else "gatehouse"), `service.version`, and
/// `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(telemetry: Option<&TelemetryFile>) -> Resource {
    let from_env = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let name = telemetry
        .and_then(|t| t.service_name.clone())
        .or(from_env)
        .unwrap_or_else(|| "gatehouse".to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn random_span_id() -> SpanId {
    let mut rng = rand::rng();
    loop {
        let id = rng.next_u64();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// An `Arc<str>` as an attribute value without copying it.
fn shared(text: &Arc<str>) -> Value {
    Value::String(StringValue::from(text.clone()))
}

/// The semantic-conventions method name: the known methods, else `_OTHER`.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

pub fn alg_name(alg: jsonwebtoken::Algorithm) -> &'static str {
    use jsonwebtoken::Algorithm as A;
    match alg {
        A::HS256 => "HS256",
        A::HS384 => "HS384",
        A::HS512 => "HS512",
        A::ES256 => "ES256",
        A::ES384 => "ES384",
        A::RS256 => "RS256",
        A::RS384 => "RS384",
        A::RS512 => "RS512",
        A::PS256 => "PS256",
        A::PS384 => "PS384",
        A::PS512 => "PS512",
        A::EdDSA => "EdDSA",
        _ => "other",
    }
}
