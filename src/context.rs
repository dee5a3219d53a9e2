//! The per-request context every phase may read and add to: the [`RequestRecord`] the record
//! layer opens for each request (ids, trace, the settings snapshot, and the facts the phases
//! learn, each set once) and the request body that carries it to them ([`Recorded`]), the
//! accept phase's [`ConnInfo`], and what authentication established ([`AuthRecord`]). It holds
//! data only — no phase logic, no I/O — so that every phase can depend on it without depending
//! on each other (or on telemetry, which reads it when the request ends).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use http::{Method, Request};

use crate::auth::AuthOutcome;
use crate::cors::CorsPolicy;
use crate::route::{Route, Target};
use crate::settings::Settings;
use crate::telemetry::spans::SpanCapture;
use crate::telemetry::trace::TraceContext;

/// Facts about the client connection, set by the accept phase once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The client's IP as a header value (`X-Forwarded-For`), made once per connection.
    pub remote_ip: HeaderValue,
    pub tls: bool,
    /// The address of the listener that accepted the connection, when known: a loopback
    /// listener's own origins are the edge's (CORS, SPEC §8).
    pub listener: Option<SocketAddr>,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        let remote_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            remote,
            remote_ip,
            tls,
            listener: None,
        }
    }

    /// The same connection, accepted by the listener at `listener`.
    pub fn on_listener(self, listener: Option<SocketAddr>) -> Self {
        Self { listener, ..self }
    }
}

impl Default for ConnInfo {
    fn default() -> Self {
        Self::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), false)
    }
}

/// What the authentication phase established, for logs, metrics and `Server-Timing`.
#[derive(Debug, Clone)]
pub struct AuthRecord {
    pub outcome: AuthOutcome,
    pub cache_hit: bool,
    pub duration: Duration,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    /// The key and algorithm that verified the token, when it was verified.
    pub kid: Option<Arc<str>>,
    pub alg: Option<jsonwebtoken::Algorithm>,
}

impl AuthRecord {
    /// An outcome without a token to describe: none was needed or read, or it was refused
    /// before a caller was known.
    pub fn new(outcome: AuthOutcome, duration: Duration) -> Self {
        Self {
            outcome,
            cache_hit: false,
            duration,
            client_id: None,
            sub: None,
            kid: None,
            alg: None,
        }
    }

    /// Whether a token was actually checked (not `None`, not `Missing`): what the auth
    /// histograms and `Server-Timing` report.
    pub fn checked(&self) -> bool {
        !matches!(self.outcome, AuthOutcome::None | AuthOutcome::Missing)
    }
}

/// What the outbound phase's acquisition of the upstream's credential came to (SPEC §13):
/// the `result` label of `gatehouse_outbound_tokens_total` and of the
/// `gatehouse.token_exchange` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundResult {
    /// Cached, or fetched by a concurrent request this one waited for.
    Hit,
    /// Fetched by this request.
    Issued,
    /// The endpoint refused (403).
    Refused,
    /// No credential for another reason (503).
    Error,
}

impl OutboundResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Issued => "issued",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// One acquisition of the upstream's credential, for the `gatehouse.token_exchange` span.
#[derive(Debug, Clone, Copy)]
pub struct OutboundRecord {
    pub result: OutboundResult,
    pub started: Instant,
    pub duration: Duration,
}

/// What the MCP policy phase read and decided, for the span and the access log.
#[derive(Debug, Clone, Default)]
pub struct McpRecord {
    pub method: Option<String>,
    pub name: Option<String>,
    /// The JSON-RPC id as sent (`7`, `"a-1"`).
    pub id: Option<String>,
    /// `allow`, `deny` or `log_only_deny`; `None` when the route only reads messages.
    pub decision: Option<&'static str>,
    /// The rule (`rules[2]`) or Cedar policy that decided; `None` for the default.
    pub rule: Option<Arc<str>>,
}

/// One request as the edge saw it. Each phase sets the facts it learns, once.
#[derive(Debug)]
pub struct RequestRecord {
    /// A fresh UUID, sent upstream and returned as `x-amzn-requestid`.
    pub request_id: HeaderValue,
    /// The `traceparent` the upstream gets (made with the request id: one allocation).
    pub upstream_traceparent: HeaderValue,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub method: Method,
    /// The request URI as sent (its path is logged; never a metrics label).
    pub uri: http::Uri,
    pub conn: ConnInfo,
    pub trace: TraceContext,
    /// The configuration this request runs on, start to finish.
    pub settings: Arc<Settings>,
    /// The resolved route's position in `settings.routes` and what the request asks of it
    /// (the routing phase's answer).
    route: OnceLock<(usize, Target)>,
    auth: OnceLock<AuthRecord>,
    session_id: OnceLock<HeaderValue>,
    mcp: OnceLock<McpRecord>,
    /// The `Origin` to echo in CORS response headers, when the route's policy allows it.
    cors_origin: OnceLock<(HeaderValue, Arc<CorsPolicy>)>,
    /// The quota rule that refused the request.
    throttled: OnceLock<Arc<str>>,
    upstream_status: AtomicU16,
    upstream_duration_us: AtomicU64,
    /// The outbound credential (SPEC §13), on routes with `outboundAuth`.
    outbound: OnceLock<OutboundRecord>,
    pub bytes_in: AtomicU64,
    finished: AtomicBool,
    /// Only for requests whose spans are exported (sampled, and an exporter configured).
    capture: Option<Box<SpanCapture>>,
}

impl RequestRecord {
    pub(crate) fn new<B>(
        request: &Request<B>,
        conn: ConnInfo,
        settings: Arc<Settings>,
        exporting: bool,
    ) -> Self {
        let trace = TraceContext::from_headers_sampled(request.headers(), settings.tracing.sampler);
        let capture =
            (exporting && trace.sampled).then(|| Box::new(SpanCapture::new(request.headers())));
        let (request_id, upstream_traceparent) = trace.request_id_and_traceparent();
        Self {
            request_id,
            upstream_traceparent,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            conn,
            trace,
            settings,
            route: OnceLock::new(),
            auth: OnceLock::new(),
            session_id: OnceLock::new(),
            mcp: OnceLock::new(),
            cors_origin: OnceLock::new(),
            throttled: OnceLock::new(),
            upstream_status: AtomicU16::new(0),
            upstream_duration_us: AtomicU64::new(0),
            outbound: OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            capture,
        }
    }

    /// The span-only facts, when this request's spans are exported.
    pub fn capture(&self) -> Option<&SpanCapture> {
        self.capture.as_deref()
    }

    /// `index`: the route's position in this record's `settings.routes`.
    pub fn set_route(&self, index: usize, target: Target) {
        let _ = self.route.set((index, target));
    }
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route
            .get()
            .and_then(|(index, _)| self.settings.routes.get(*index))
    }
    pub fn target(&self) -> Option<&Target> {
        self.route.get().map(|(_, target)| target)
    }
    pub fn set_auth(&self, auth: AuthRecord) {
        if let Some(capture) = self.capture() {
            capture.auth_ended(self.started.elapsed());
        }
        let _ = self.auth.set(auth);
    }
    pub fn auth(&self) -> Option<&AuthRecord> {
        self.auth.get()
    }
    pub fn set_mcp(&self, mcp: McpRecord) {
        let _ = self.mcp.set(mcp);
    }
    /// What the MCP policy phase read and decided, when it ran.
    pub fn mcp(&self) -> Option<&McpRecord> {
        self.mcp.get()
    }
    pub fn set_session_id(&self, id: HeaderValue) {
        let _ = self.session_id.set(id);
    }
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.get().and_then(|v| v.to_str().ok())
    }
    pub fn session_header(&self) -> Option<&HeaderValue> {
        self.session_id.get()
    }
    /// The request path, cut to 1024 characters (for logs).
    pub fn path(&self) -> &str {
        let path = self.uri.path();
        match path.char_indices().nth(1024) {
            Some((cut, _)) => &path[..cut],
            None => path,
        }
    }
    pub fn set_throttled(&self, rule: Arc<str>) {
        let _ = self.throttled.set(rule);
    }
    pub fn throttled(&self) -> Option<&str> {
        self.throttled.get().map(|r| &**r)
    }
    pub fn set_cors(&self, origin: HeaderValue, policy: Arc<CorsPolicy>) {
        let _ = self.cors_origin.set((origin, policy));
    }
    /// The allowed `Origin` and the policy that allowed it, for the CORS response headers.
    pub fn cors(&self) -> Option<&(HeaderValue, Arc<CorsPolicy>)> {
        self.cors_origin.get()
    }
    /// True the first time only: the record is finished (metrics and log written) once.
    pub(crate) fn finish(&self) -> bool {
        !self.finished.swap(true, Ordering::AcqRel)
    }
    pub fn set_upstream(&self, status: u16, duration: Duration) {
        self.upstream_status.store(status, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.upstream_duration_us.store(micros, Ordering::Relaxed);
        if let Some(capture) = self.capture() {
            capture.upstream_started(self.started.elapsed().saturating_sub(duration));
        }
    }

    /// The upstream actually called (a replica of `urls`), for the upstream span; without it
    /// the span names the route's configured upstream.
    pub fn set_upstream_address(&self, address: &http::uri::Authority) {
        if let Some(capture) = self.capture() {
            capture.set_upstream_address(address.clone());
        }
    }

    /// The AgentCore runtime invoked (SigV4 upstreams), for `aws.resource.arn`.
    pub fn set_upstream_arn(&self, arn: &Arc<str>) {
        if let Some(capture) = self.capture() {
            capture.set_upstream_arn(arn.clone());
        }
    }
    pub fn set_outbound(&self, outbound: OutboundRecord) {
        let _ = self.outbound.set(outbound);
    }
    pub fn outbound(&self) -> Option<&OutboundRecord> {
        self.outbound.get()
    }
    pub fn upstream_status(&self) -> Option<u16> {
        match self.upstream_status.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }
    pub fn upstream_duration(&self) -> Option<Duration> {
        self.upstream_status()
            .map(|_| Duration::from_micros(self.upstream_duration_us.load(Ordering::Relaxed)))
    }
}

/// The request body as the phases see it: the client's body and the request's record, which
/// the record phase attaches to every request. The record rides with the body rather than in
/// the request's `http::Extensions` (a type-keyed map: three allocations to insert it, a hash
/// lookup each time a phase reads it), so every phase reads it by a field access; a phase that
/// replaces the body (MCP policy) keeps the record on the new one ([`Recorded::map`]).
#[derive(Debug)]
pub struct Recorded<B> {
    body: B,
    record: Arc<RequestRecord>,
}

impl<B> Recorded<B> {
    pub(crate) fn new(body: B, record: Arc<RequestRecord>) -> Self {
        Self { body, record }
    }

    /// The request's record.
    pub fn record(&self) -> &Arc<RequestRecord> {
        &self.record
    }

    /// The client's body and the record, apart.
    pub fn into_parts(self) -> (B, Arc<RequestRecord>) {
        (self.body, self.record)
    }

    /// The same record on another body.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Recorded<C> {
        Recorded {
            body: f(self.body),
            record: self.record,
        }
    }
}
