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

use super::pool::Checkin;
use crate::body::BoxError;
use crate::context::RequestRecord;

/// The request body exceeded `maxRequestBodyBytes` while streaming.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTooLarge(pub u64);

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body exceeds {} bytes", self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client's request body failed while streaming (bad chunked framing, a reset stream, a
/// dropped connection): the client's fault, not the upstream's, so it must not become a 502.
#[derive(Debug)]
pub(crate) struct ClientBodyError(pub BoxError);

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
pub(crate) struct StreamIdle(pub Duration);

impl fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream stream idle for {}s", self.0.as_secs())
    }
}

impl std::error::Error for StreamIdle {}

/// The client's request body, limited and counted on its way upstream.
pub(crate) struct RequestBody<B> {
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
    pub(crate) fn new(inner: B, limit: u64, record: Option<Arc<RequestRecord>>) -> Self {
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

/// SSE comment sent as a keep-alive: a line starting with `:` is ignored by every SSE parser.
pub(crate) const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// The upstream's response body, cut when it stays silent for the idle timeout, with optional
/// SSE comment keep-alives toward the client.
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    /// Armed on the first wait; reset after every frame.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    keep_alive: Option<KeepAlive>,
    /// The pooled connection the body arrives on, given back when the body ends.
    checkin: Option<Checkin>,
}

/// Keep-alives for load balancers that cut connections idle toward the client. A comment is
/// only ever written between events (after a blank line), never inside one, and it does not
/// count as upstream activity: `streamIdleTimeout` still measures the agent's silence.
struct KeepAlive {
    interval: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The last bytes sent to the client, to know whether an event just ended.
    tail: [u8; 4],
}

impl KeepAlive {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            timer: None,
            // Nothing sent yet: a boundary.
            tail: *b"\n\n\n\n",
        }
    }

    fn sent(&mut self, data: &[u8]) {
        for &b in data.iter().rev().take(4).rev() {
            self.tail.rotate_left(1);
            self.tail[3] = b;
        }
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(Instant::now() + self.interval);
        }
    }

    /// Whether what was sent ends with an empty line (two line terminators: `\n`, `\r` or
    /// `\r\n`), i.e. between two events.
    fn at_boundary(&self) -> bool {
        let t = &self.tail;
        let mut i = t.len();
        let mut terminators = 0;
        while i > 0 && terminators < 2 {
            match t[i - 1] {
                b'\n' if i >= 2 && t[i - 2] == b'\r' => i -= 2,
                b'\n' | b'\r' => i -= 1,
                _ => break,
            }
            terminators += 1;
        }
        terminators >= 2
    }

    /// A comment to send now, if the interval passed at an event boundary.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        let interval = self.interval;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        timer.as_mut().reset(Instant::now() + interval);
        // Re-register the waker on the new deadline.
        let _ = timer.as_mut().poll(cx);
        if self.at_boundary() {
            self.sent(KEEP_ALIVE_COMMENT);
            Some(Bytes::from_static(KEEP_ALIVE_COMMENT))
        } else {
            None
        }
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("idle", &self.idle)
            .field("keep_alive", &self.keep_alive.as_ref().map(|k| k.interval))
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
            keep_alive: None,
            checkin: None,
        }
    }

    /// Gives `checkin`'s connection back to its pool once the body has been read to its end
    /// (dropped before, the connection closes).
    pub(crate) fn with_checkin(mut self, checkin: Option<Checkin>) -> Self {
        self.checkin = checkin;
        self
    }

    fn ended(&mut self) {
        if let Some(checkin) = self.checkin.take() {
            checkin.give_back();
        }
    }

    /// Sends an SSE comment every `interval` of silence toward the client (SSE bodies only).
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = Some(KeepAlive::new(interval));
        self
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
                match &frame {
                    None => this.ended(),
                    Some(Ok(frame)) => {
                        if let (Some(keep_alive), Some(data)) =
                            (&mut this.keep_alive, frame.data_ref())
                        {
                            keep_alive.sent(data);
                        }
                        if this.inner.is_end_stream() {
                            this.ended();
                        }
                    }
                    Some(Err(_)) => this.checkin = None,
                }
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending if this.idle.is_zero() => {}
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if this.progressed {
                    timer.as_mut().reset(deadline);
                    this.progressed = false;
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(StreamIdle(this.idle)))));
                }
            }
        }
        if let Some(comment) = this.keep_alive.as_mut().and_then(|k| k.poll_due(cx)) {
            return Poll::Ready(Some(Ok(Frame::data(comment))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(chunks: &[&[u8]]) -> bool {
        let mut k = KeepAlive::new(Duration::from_secs(1));
        for c in chunks {
            k.sent(c);
        }
        k.at_boundary()
    }

    #[test]
    fn keep_alives_only_between_events() {
        assert!(after(&[]));
        assert!(after(&[b"data: 1\n\n"]));
        assert!(after(&[b"data: 1\r\n\r\n"]));
        assert!(after(&[b"data: 1\r\r"]));
        assert!(after(&[b"data: 1\n", b"\n"]));
        assert!(after(&[b"data: 1\r\n", b"\r", b"\n"]));
        assert!(after(&[b": ping\n\n"]));
        assert!(!after(&[b"data: 1\n"]));
        assert!(!after(&[b"data: 1\r\n"]));
        assert!(!after(&[b"data: 1\n\ndata: 2"]));
        assert!(!after(&[b"data: 1\n\nid: 3\n"]));
        assert!(!after(&[b"da", b"ta"]));
    }
}
