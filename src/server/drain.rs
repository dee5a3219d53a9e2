//! The drain: what SIGTERM does to connections that are already open.
//!
//! Closing an idle HTTP/1.1 keep-alive connection at once races with a client that is just
//! sending its next request on it: the request is lost and the client sees a read error (21 of
//! them in a 32-connection wrk run before this module). So during the drain an HTTP/1.1
//! connection keeps being served, every response says `Connection: close` (hyper then closes
//! after it), and only a connection that stays idle for [`DRAIN_IDLE`] is closed by the edge.
//! HTTP/2 gets GOAWAY at once (hyper's graceful shutdown sends the two-step GOAWAY: clients
//! stop opening streams, open ones finish). The process exits when the last connection is
//! gone, or at `shutdownGracePeriod`.
//!
//! One `watch` channel is both the signal and the count: every connection holds a
//! [`Watcher`], and [`Drain::finished`] resolves when the last one is dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::gated::Gated;

/// How long an HTTP/1.1 connection may sit idle during the drain before the edge closes it.
pub(super) const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Held by `serve`: starts the drain and waits for it.
#[derive(Debug)]
pub(super) struct Drain {
    signal: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
}

/// Held by each connection while it is open.
#[derive(Debug, Clone)]
pub(super) struct Watcher {
    signal: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
}

impl Drain {
    pub(super) fn new() -> Self {
        Self {
            signal: watch::Sender::new(false),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn watcher(&self) -> Watcher {
        Watcher {
            signal: self.signal.subscribe(),
            draining: self.draining.clone(),
        }
    }

    pub(super) fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.signal.send_replace(true);
    }

    /// Resolves when every [`Watcher`] is gone (every connection closed).
    pub(super) async fn finished(&self) {
        self.signal.closed().await;
    }
}

impl Watcher {
    /// The flag the request path reads to add `Connection: close` (one relaxed load).
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Resolves once the drain has started.
    pub(super) fn started(&mut self) -> impl Future<Output = ()> + Send + '_ {
        Gated::new(async {
            // Err: the Drain is gone, which only happens once serve has returned.
            let _ = self.signal.wait_for(|draining| *draining).await;
        })
    }
}
