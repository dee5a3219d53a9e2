//! `headerReadTimeout` on HTTP/1.1 connections, kept by one timer per connection instead of one
//! per request.
//!
//! hyper's own header read timeout makes a boxed sleep for every request head it waits for,
//! registers it in tokio's timer wheel and takes it out again when the head arrives: an
//! allocation and ≈ 1,200 instructions per proxied request (`bench/callgrind.sh`), for a
//! deadline that is almost never reached. Here the request path only writes down when the
//! connection started waiting for a head (one relaxed store when a response ends, one when the
//! next head has arrived), and a single sleep per connection, gated so that it is polled only
//! when it fires, checks that note at most once per `headerReadTimeout` and re-arms itself for
//! what is left. The connection is closed when it has waited for a head (silent, idle between
//! requests, or trickling one in) for the whole timeout: what hyper's timeout did.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// When the connection started waiting for a request head.
#[derive(Debug)]
pub(super) struct HeadClock {
    opened: Instant,
    /// Milliseconds from `opened` to when the wait began, or [`BUSY`] while a request is in.
    waiting_since: AtomicU64,
}

/// A request's head has arrived and its response has not ended: no head is awaited.
const BUSY: u64 = u64::MAX;

impl HeadClock {
    /// A new connection waits for its first head from the start.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            waiting_since: AtomicU64::new(0),
        })
    }

    /// A request head arrived.
    pub(super) fn busy(&self) {
        self.waiting_since.store(BUSY, Ordering::Relaxed);
    }

    /// The response ended: the next head is awaited from now.
    pub(super) fn waiting(&self) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(BUSY - 1);
        self.waiting_since.store(since, Ordering::Relaxed);
    }

    /// When the wait for a head runs out; `None` while a request is in.
    fn due(&self, timeout: Duration) -> Option<Instant> {
        match self.waiting_since.load(Ordering::Relaxed) {
            BUSY => None,
            since => Some(self.opened + Duration::from_millis(since) + timeout),
        }
    }
}

/// Resolves when the connection has waited `timeout` for a request head. Poll it gated
/// ([`super::gated::Gated`]): it only needs a poll when its sleep fires.
pub(super) async fn expired(clock: Arc<HeadClock>, timeout: Duration) {
    let sleep = tokio::time::sleep_until(clock.opened + timeout);
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let now = Instant::now();
        let next = match clock.due(timeout) {
            Some(due) if due <= now => return,
            Some(due) => due,
            // A request is in: nothing can run out before a whole timeout from now.
            None => now + timeout,
        };
        sleep.as_mut().reset(next);
    }
}

pin_project! {
    /// A response body that, when hyper is done with it, notes that the connection waits for
    /// its next request head (hyper reads the next head once the response is written).
    pub(super) struct Timed<B> {
        #[pin]
        inner: B,
        clock: Arc<HeadClock>,
    }

    impl<B> PinnedDrop for Timed<B> {
        fn drop(this: Pin<&mut Self>) {
            this.clock.waiting();
        }
    }
}

impl<B> Timed<B> {
    pub(super) fn new(inner: B, clock: Arc<HeadClock>) -> Self {
        Self { inner, clock }
    }
}

impl<B: Body<Data = Bytes>> Body for Timed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
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

    #[tokio::test(start_paused = true)]
    async fn the_wait_for_a_head_runs_out_only_while_waiting() {
        let timeout = Duration::from_secs(10);
        let clock = HeadClock::new();
        let expiry = tokio::spawn(expired(clock.clone(), timeout));

        // A head arrives after 4 s; its response takes 30 s (a stream): no expiry meanwhile.
        tokio::time::sleep(Duration::from_secs(4)).await;
        clock.busy();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!expiry.is_finished(), "expired while a request was in");

        // The response ends; the next head is awaited from here, for 10 s.
        clock.waiting();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(
            !expiry.is_finished(),
            "expired before the timeout since the response"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(expiry.is_finished(), "did not expire after the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_runs_out_after_the_timeout() {
        let clock = HeadClock::new();
        let started = Instant::now();
        expired(clock, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
