//! A request thread (`serve --threads N`, N > 1): an OS thread with its own single-threaded
//! runtime, accepting on its own handle of every public listener (the kernel hands each new
//! connection to one of the threads waiting on it) and serving the connections it accepted
//! there, or was handed by a busier thread ([`spread`]), start to end. Whatever a request
//! spawns — the upstream connection task of a new pooled connection, a background fetch — runs
//! on the same thread, and the upstream pools keep one idle list per worker
//! ([`crate::shard`]), so an exchange never wakes another thread.
//!
//! The thread lives until `serve` says so: after its accept loops stop (the listeners close at
//! the drain's start) it keeps serving its open connections while they drain, and exits, with
//! whatever is left, when `serve` has waited out the drain.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::spread::{self, Handoff};
use super::{AcceptContext, accept_loop};

/// How `serve` follows one worker thread.
pub(super) struct Worker {
    /// Resolves when the worker's accept loops have returned (listeners closed).
    accepting: Option<oneshot::Receiver<()>>,
    /// Dropped or sent: the worker exits, closing what is still open.
    exit: oneshot::Sender<()>,
    /// Resolves when the worker's runtime is gone.
    done: oneshot::Receiver<()>,
}

/// Starts worker `index` on `listeners` (its own handles of the public listeners), taking
/// the connections other workers hand it from `inbox` ([`spread`]).
pub(super) fn start(
    index: usize,
    listeners: Vec<std::net::TcpListener>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    context: AcceptContext,
    stop: watch::Receiver<bool>,
) -> Result<Worker, String> {
    let (accepting_tx, accepting_rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            format!("cannot start request thread {index}'s runtime: {e} (lower --threads)")
        })?;
    std::thread::Builder::new()
        .name(format!("gatehouse-worker-{index}"))
        .spawn(move || {
            crate::shard::set_worker(index + 1);
            runtime.block_on(async move {
                let mut loops = Vec::new();
                for listener in listeners {
                    let listener = listener
                        .set_nonblocking(true)
                        .and_then(|()| TcpListener::from_std(listener));
                    match listener {
                        Ok(listener) => loops.push(tokio::spawn(accept_loop(
                            listener,
                            context.clone(),
                            stop.clone(),
                            index,
                        ))),
                        Err(error) => tracing::error!(%error, "a worker cannot accept"),
                    }
                }
                loops.push(tokio::spawn(spread::inbox(inbox, context, stop)));
                for accepting in loops {
                    let _ = accepting.await;
                }
                let _ = accepting_tx.send(());
                let _ = exit_rx.await;
            });
            // Cancels the connections still open (the grace period is over).
            drop(runtime);
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("cannot start request thread {index}: {e} (lower --threads)"))?;
    Ok(Worker {
        accepting: Some(accepting_rx),
        exit: exit_tx,
        done: done_rx,
    })
}

impl Worker {
    /// Waits until the worker accepts no more connections.
    pub(super) async fn accepting_stopped(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.await;
        }
    }

    /// Tells the worker to exit and waits (briefly) until it has.
    pub(super) async fn stop(self) {
        let _ = self.exit.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.done).await;
    }
}
