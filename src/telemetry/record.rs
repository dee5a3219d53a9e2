//! The record phase: the outermost layer. It opens a [`RequestRecord`] that the inner phases
//! fill in (route, authentication, session, upstream), turns any [`ProxyError`] into its
//! response (the only call of [`ProxyError::into_response`]), decorates every response with
//! what applies to all outcomes (request id, session id, CORS, `Server-Timing`), and writes
//! the metrics and access-log line when the response body ends — for a 10-minute SSE stream
//! that is ten minutes later, and a client abort counts as an end. Like pingora's logging
//! phase it always runs, also on failure.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::access_log::AccessLine;
use super::metrics::AuthOutcome;
use super::spans::{Finished, SpanCapture};
use super::trace::TraceContext;
use crate::app::App;
use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::route::Route;
use crate::settings::Settings;

/// Facts about the client connection, set by the accept phase once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The client's IP as a header value (`X-Forwarded-For`), made once per connection.
    pub remote_ip: HeaderValue,
    pub tls: bool,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, tls: bool) -> Self {
        let remote_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            remote,
            remote_ip,
            tls,
        }
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
    pub started: Instant,
    pub started_wall: SystemTime,
    pub method: Method,
    /// The request URI as sent (its path is logged; never a metrics label).
    pub uri: http::Uri,
    pub conn: ConnInfo,
    pub trace: TraceContext,
    /// The configuration this request runs on, start to finish.
    pub settings: Arc<Settings>,
    route: OnceLock<Arc<Route>>,
    auth: OnceLock<AuthRecord>,
    session_id: OnceLock<HeaderValue>,
    mcp: OnceLock<McpRecord>,
    /// The `Origin` to echo in CORS response headers, when the route's policy allows it.
    cors_origin: OnceLock<(HeaderValue, Arc<crate::cors::CorsPolicy>)>,
    upstream_status: AtomicU16,
    upstream_duration_us: AtomicU64,
    pub bytes_in: AtomicU64,
    finished: AtomicBool,
    /// Only for requests whose spans are exported (sampled, and an exporter configured).
    capture: Option<Box<SpanCapture>>,
}

impl RequestRecord {
    fn new<B>(
        request: &Request<B>,
        conn: ConnInfo,
        settings: Arc<Settings>,
        exporting: bool,
    ) -> Self {
        let trace = TraceContext::from_headers_sampled(request.headers(), settings.tracing.sampler);
        let capture =
            (exporting && trace.sampled).then(|| Box::new(SpanCapture::new(request.headers())));
        Self {
            request_id: super::trace::uuid_v4(),
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
            upstream_status: AtomicU16::new(0),
            upstream_duration_us: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            capture,
        }
    }

    /// The span-only facts, when this request's spans are exported.
    pub fn capture(&self) -> Option<&SpanCapture> {
        self.capture.as_deref()
    }

    pub fn set_route(&self, route: Arc<Route>) {
        let _ = self.route.set(route);
    }
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.get()
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
    pub fn set_cors(&self, origin: HeaderValue, policy: Arc<crate::cors::CorsPolicy>) {
        let _ = self.cors_origin.set((origin, policy));
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

/// The outermost layer (see the module docs).
#[derive(Clone, Debug)]
pub struct RecordLayer {
    app: Arc<App>,
}

impl RecordLayer {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            app: self.app.clone(),
        }
    }
}

/// See [`RecordLayer`].
#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    app: Arc<App>,
}

static X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

impl<S, B> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<RecordBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let conn = request
            .extensions()
            .get::<ConnInfo>()
            .cloned()
            .unwrap_or_default();
        let record = Arc::new(RequestRecord::new(
            &request,
            conn,
            self.app.settings(),
            self.app.spans.is_some(),
        ));
        request.extensions_mut().insert(record.clone());
        let mut inner = self.inner.clone();
        let app = self.app.clone();
        Box::pin(async move {
            let called = inner.call(request);
            // A recorded request is the task's current request, so key fetches it triggers
            // land on its auth span (telemetry::spans).
            let result = if record.capture().is_some() {
                super::spans::scope(record.clone(), called).await
            } else {
                called.await
            };
            let (mut response, error) = match result {
                Ok(response) => (response, None),
                Err(error) => {
                    if let Some(outcome) = error.auth_outcome()
                        && record.auth().is_none()
                    {
                        record.set_auth(AuthRecord {
                            outcome,
                            cache_hit: false,
                            duration: Duration::ZERO,
                            client_id: None,
                            sub: None,
                            kid: None,
                            alg: None,
                        });
                    }
                    let reason = error.reason();
                    (error.into_response(), Some(reason))
                }
            };
            decorate(&mut response, &record);
            let streaming = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            if streaming && let Some(route) = record.route() {
                route.metrics.active_streams.inc();
            }
            let status = response.status().as_u16();
            let finish = Finish {
                app,
                record,
                status,
                error,
                streaming,
                bytes_out: 0,
            };
            Ok(response.map(|body| RecordBody {
                inner: body,
                finish: Some(finish),
            }))
        })
    }
}

/// Headers every response gets, whichever phase produced it.
fn decorate(response: &mut Response<ProxyBody>, record: &RequestRecord) {
    let headers = response.headers_mut();
    headers.insert(X_AMZN_REQUESTID.clone(), record.request_id.clone());
    if let (Some(route), Some(session)) = (record.route(), record.session_header())
        && route.protocol == crate::route::Protocol::Http
    {
        headers.insert(crate::enrich::SESSION_HEADER.clone(), session.clone());
    }
    if let Some((origin, policy)) = record.cors_origin.get() {
        policy.decorate(headers, origin);
    }
    if record.settings.server_timing {
        let mut timing = String::new();
        if let Some(auth) = record
            .auth()
            .filter(|a| !matches!(a.outcome, AuthOutcome::None | AuthOutcome::Missing))
        {
            let desc = if auth.cache_hit { "hit" } else { "miss" };
            timing.push_str(&format!(
                "auth;dur={:.3};desc=\"{desc}\"",
                auth.duration.as_secs_f64() * 1000.0
            ));
        }
        if let Some(upstream) = record.upstream_duration() {
            if !timing.is_empty() {
                timing.push_str(", ");
            }
            timing.push_str(&format!(
                "upstream;dur={:.3}",
                upstream.as_secs_f64() * 1000.0
            ));
        }
        if let Ok(value) = HeaderValue::from_str(&timing)
            && !timing.is_empty()
        {
            headers.append(SERVER_TIMING.clone(), value);
        }
    }
}

/// Emits the metrics and the access-log line exactly once.
struct Finish {
    app: Arc<App>,
    record: Arc<RequestRecord>,
    status: u16,
    error: Option<&'static str>,
    streaming: bool,
    bytes_out: u64,
}

impl Finish {
    fn done(self, aborted: bool) {
        let record = &self.record;
        if record.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let elapsed = record.started.elapsed();
        let outcome = record.auth().map_or(AuthOutcome::None, |a| a.outcome);
        let metrics = record
            .route()
            .map_or(&self.app.unmatched_metrics, |r| &r.metrics);
        metrics.count_request(self.status, outcome);
        metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(auth) = record
            .auth()
            .filter(|a| a.outcome != AuthOutcome::None && a.outcome != AuthOutcome::Missing)
        {
            let histogram = if auth.cache_hit {
                &metrics.auth_hit
            } else {
                &metrics.auth_miss
            };
            histogram.observe(auth.duration.as_secs_f64());
        }
        if let Some(upstream) = record.upstream_duration() {
            metrics.upstream_duration.observe(upstream.as_secs_f64());
        }
        if self.streaming {
            metrics.active_streams.dec();
        }
        if record.settings.access_log {
            let line = AccessLine {
                record,
                status: self.status,
                duration: elapsed,
                bytes_out: self.bytes_out,
                aborted,
                error: self.error,
            };
            self.app.access_log.write(&line);
        }
        if let Some(spans) = &self.app.spans {
            spans.request(
                record.clone(),
                Finished {
                    status: self.status,
                    elapsed,
                    error: self.error,
                    aborted,
                },
            );
        }
    }
}

/// The response body, watched to its end.
pub struct RecordBody {
    inner: ProxyBody,
    finish: Option<Finish>,
}

impl std::fmt::Debug for RecordBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBody").finish_non_exhaustive()
    }
}

impl Body for RecordBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(finish)) = (frame.data_ref(), this.finish.as_mut()) {
                    finish.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream()
                    && let Some(finish) = this.finish.take()
                {
                    finish.done(false);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut finish) = this.finish.take() {
                    finish.error = Some(finish.error.unwrap_or("stream_error"));
                    finish.done(true);
                }
            }
            Poll::Ready(None) => {
                if let Some(finish) = this.finish.take() {
                    finish.done(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the connection closed). Bodies
        // that were empty from the start are never polled, so they end here too.
        if let Some(finish) = self.finish.take() {
            let aborted = !self.inner.is_end_stream();
            finish.done(aborted);
        }
    }
}
