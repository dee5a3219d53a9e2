//! The record phase: the outermost layer. It opens a [`RequestRecord`] that the inner phases
//! fill in (route, authentication, session, upstream), turns any [`ProxyError`] into its
//! response (the only call of [`ProxyError::into_response`]), decorates every response with
//! what applies to all outcomes (request id, session id, CORS, `Server-Timing`), and writes
//! the metrics and access-log line when the response body ends — for a 10-minute SSE stream
//! that is ten minutes later, and a client abort counts as an end. Like pingora's logging
//! phase it always runs, also on failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::access_log::AccessLine;
use super::spans::Finished;
use crate::app::App;
use crate::auth::AuthOutcome;
use crate::body::{BoxError, ProxyBody};
use crate::context::{AuthRecord, ConnInfo, Recorded, RequestRecord};
use crate::error::{ErrorReason, ProxyError};
use crate::phase::ResponseFuture;

/// The app behind a reference count of the connection's own (the stack, and so this layer, is
/// built per connection): each request holds it until its body ends, and cloning the
/// `Arc<App>` itself would write one count shared by every request thread.
type ConnApp = Arc<Arc<App>>;

/// The outermost layer (see the module docs).
#[derive(Clone, Debug)]
pub struct RecordLayer {
    app: ConnApp,
    conn: ConnInfo,
}

impl RecordLayer {
    /// For the requests of one client connection (`conn`; the stack is built per connection).
    pub fn new(app: Arc<App>, conn: ConnInfo) -> Self {
        Self {
            app: Arc::new(app),
            conn,
        }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            app: self.app.clone(),
            conn: self.conn.clone(),
        }
    }
}

/// See [`RecordLayer`].
#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    app: ConnApp,
    conn: ConnInfo,
}

static X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

impl<S, B> Service<Request<B>> for Record<S>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<RecordBody>;
    type Error = std::convert::Infallible;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let record = Arc::new(RequestRecord::new(
            &request,
            self.conn.clone(),
            self.app.settings(),
            self.app.spans.is_some(),
        ));
        // The record rides on the body to the phases below (context::Recorded).
        let request = request.map(|body| Recorded::new(body, record.clone()));
        // Called here, not in the future: the stack's futures own what they need, so the
        // future need not own a clone of the whole stack (one per request).
        let called = self.inner.call(request);
        // A recorded request is the task's current request, so key fetches it triggers land
        // on its auth span (telemetry::spans).
        let called = if record.capture().is_some() {
            Either::Right(Box::pin(super::spans::scope(record.clone(), called)) as ResponseFuture)
        } else {
            Either::Left(called)
        };
        RecordFuture {
            called,
            done: Some((self.app.clone(), record)),
        }
    }
}

pin_project! {
    /// The record phase's future: the stack's, then its outcome made the response. Not boxed:
    /// it is the outermost future of every request.
    pub struct RecordFuture<F> {
        #[pin]
        called: Either<F, ResponseFuture>,
        // Until the response is made.
        done: Option<(ConnApp, Arc<RequestRecord>)>,
    }
}

impl<F> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ProxyError>>,
{
    type Output = Result<Response<RecordBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Polled again after its response (which no caller does): there is nothing more.
        if this.done.is_none() {
            return Poll::Pending;
        }
        let result = ready!(this.called.poll(cx));
        match this.done.take() {
            Some((app, record)) => Poll::Ready(Ok(respond(app, record, result))),
            None => Poll::Pending,
        }
    }
}

/// The response for the stack's outcome, decorated, with its body watched to the end.
fn respond(
    app: ConnApp,
    record: Arc<RequestRecord>,
    result: Result<Response<ProxyBody>, ProxyError>,
) -> Response<RecordBody> {
    let (mut response, error) = match result {
        Ok(response) => (response, None),
        Err(error) => {
            if let Some(outcome) = error.auth_outcome()
                && record.auth().is_none()
            {
                record.set_auth(AuthRecord::new(outcome, Duration::ZERO));
            }
            let reason = error.reason();
            (error.into_response(), Some(reason))
        }
    };
    decorate(&mut response, &record);
    let streaming = crate::forward::is_event_stream(response.headers());
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
    response.map(|body| RecordBody {
        inner: body,
        finish: Some(finish),
    })
}

/// Headers every response gets, whichever phase produced it.
fn decorate(response: &mut Response<ProxyBody>, record: &RequestRecord) {
    let headers = response.headers_mut();
    headers.insert(X_AMZN_REQUESTID.clone(), record.request_id.clone());
    crate::session::echo(record, headers);
    if let Some((origin, policy)) = record.cors() {
        policy.decorate(headers, origin);
    }
    if record.settings.server_timing {
        let mut timing = String::new();
        if let Some(auth) = record.auth().filter(|a| a.checked()) {
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
    app: ConnApp,
    record: Arc<RequestRecord>,
    status: u16,
    error: Option<ErrorReason>,
    streaming: bool,
    bytes_out: u64,
}

impl Finish {
    fn done(self, aborted: bool) {
        let record = &self.record;
        if !record.finish() {
            return;
        }
        let elapsed = record.started.elapsed();
        let outcome = record.auth().map_or(AuthOutcome::None, |a| a.outcome);
        let metrics = record
            .route()
            .map_or(&self.app.unmatched_metrics, |r| &r.metrics);
        metrics.count_request(self.status, outcome);
        metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(auth) = record.auth().filter(|a| a.checked()) {
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
                    finish.error = Some(finish.error.unwrap_or(ErrorReason::StreamError));
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
