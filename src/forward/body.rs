//! Bodies on their way through: the request body toward the upstream (size limit, byte
//! count) and the upstream's response body toward the client (idle timeout).
//!
//! Both stream frame by frame; nothing is buffered, so SSE events reach the client as the
//! agent writes them, and dropping either side drops the other (a client that goes away
//! closes the upstream connection).

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::telemetry::record::RequestRecord;

/// The request body exceeded `maxRequestBodyBytes` while streaming.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge(pub u64);

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body exceeds {} bytes", self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client's request body failed while streaming (bad chunked framing, a reset stream, a
/// dropped connection): the client's fault, not the upstream's, so it must not become a 502.
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the client's request body failed: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The upstream sent nothing for `streamIdleTimeout`.
#[derive(Debug, Clone, Copy)]
pub struct StreamIdle(pub Duration);

impl fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream stream idle for {}s", self.0.as_secs())
    }
}

impl std::error::Error for StreamIdle {}

/// The client's request body, limited and counted on its way upstream.
pub struct RequestBody<B> {
    inner: B,
    limit: u64,
    seen: u64,
    record: Option<Arc<RequestRecord>>,
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("limit", &self.limit)
            .field("seen", &self.seen)
            .finish()
    }
}

impl<B> RequestBody<B> {
    pub fn new(inner: B, limit: u64, record: Option<Arc<RequestRecord>>) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            record,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    this.seen = this.seen.saturating_add(len);
                    if let Some(record) = &this.record {
                        record.bytes_in.fetch_add(len, Ordering::Relaxed);
                    }
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(Box::new(ClientBodyError(error.into()))))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body, cut when it stays silent for the idle timeout.
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    /// Armed on the first wait; reset after every frame.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// `idle` of zero means no idle timeout.
    pub fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            progressed: true,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.idle.is_zero() => Poll::Pending,
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if this.progressed {
                    timer.as_mut().reset(deadline);
                    this.progressed = false;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(StreamIdle(this.idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
