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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;
use tokio::sync::watch;

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

pin_project! {
    /// A future that is polled only when it woke itself. The drain signal is polled next to
    /// its connection, on every wake of the connection's task (a `select!`), and the channel's
    /// future takes its notify lock on each poll: ≈ 750 instructions per proxied request
    /// (`bench/callgrind.sh`) for a signal that comes once in the process's life.
    struct Gated<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
    }
}

/// Whether the inner future woke (it is polled then), and the task to wake.
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl<F> Gated<F> {
    fn new(inner: F) -> Self {
        Self {
            inner,
            // The first poll goes through: the inner future registers its waker then.
            gate: Arc::new(Gate {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake in between is seen either way.
        this.gate.task.register(cx.waker());
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.gate.clone());
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wakes of the task that polls.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_future_is_polled_only_when_it_woke_itself() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let inner = {
            let (polls, ready, inner_waker) = (polls.clone(), ready.clone(), inner_waker.clone());
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                *inner_waker.lock().unwrap() = Some(cx.waker().clone());
                if ready.load(Ordering::SeqCst) {
                    Poll::Ready(7)
                } else {
                    Poll::Pending
                }
            })
        };
        let mut gated = Box::pin(Gated::new(inner));
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the first poll goes through"
        );
        // The task woke for something else (its connection): the inner future is not polled.
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        // The inner future's own wake reaches the task, and its next poll goes through.
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);

        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Ready(7));
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }
}
