//! Spreading client connections over the request threads (`serve --threads N`).
//!
//! Every thread accepts on its own handle of the same listening socket, and the kernel wakes
//! whichever threads wait on it: which one wins is a race, and a burst of connections (a load
//! generator's or a connection pool's start) often lands on one thread while the others sit
//! idle. A connection then lives on its thread to the end, so the imbalance lasts. With two
//! threads, one `wrk -c64` run measured 292 ticks of CPU on one thread and none on the other.
//!
//! So a thread that accepts a connection serves it only while it has no more than
//! [`SLACK`] connections above the least loaded thread; otherwise it hands the socket, before
//! any byte is read, to that thread's inbox, as HAProxy moves accepted connections to its
//! least loaded thread. The counts are the `gatehouse_client_connections{thread}` gauges:
//! touched once when a connection opens and once when it closes, never per request.

use std::net::SocketAddr;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::{AcceptContext, connection};

/// How many connections a thread may have above the least loaded one and still keep a
/// connection it accepted. Above 0 so that short connections do not all change threads.
const SLACK: i64 = 1;

/// The open connections of every request thread, and each thread's inbox.
#[derive(Debug)]
pub(super) struct Spread {
    open: Box<[Gauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection accepted on one thread, to be served on another.
#[derive(Debug)]
pub(super) struct Handoff {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    open: Open,
}

/// One open connection on one thread: counted while it lives.
#[derive(Debug)]
pub(super) struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Spread {
    /// A spread over `open.len()` threads (their gauges), and each thread's inbox to read.
    pub(super) fn new(open: Vec<Gauge>) -> (Self, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = open.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let spread = Self {
            open: open.into_boxed_slice(),
            inboxes: Vec::into_boxed_slice(inboxes),
        };
        (spread, receivers)
    }

    /// Where a connection thread `me` accepted is served, counted there from now on: `me`,
    /// unless `me` has more than [`SLACK`] connections above the least loaded thread.
    fn place(&self, me: usize) -> (usize, Open) {
        let mine = self.open.get(me).map_or(0, Gauge::get);
        let least = self
            .open
            .iter()
            .enumerate()
            .min_by_key(|(_, open)| open.get())
            .map(|(index, open)| (index, open.get()));
        let thread = match least {
            Some((index, count)) if mine > count + SLACK => index,
            _ => me,
        };
        (thread, self.count(thread))
    }

    /// Counts one connection on `thread`.
    pub(super) fn count(&self, thread: usize) -> Open {
        let gauge = self.open.get(thread).cloned().unwrap_or_default();
        gauge.inc();
        Open(gauge)
    }

    /// Serves `stream` on this thread (`me`), or hands it to a less loaded one.
    pub(super) fn dispatch(
        &self,
        me: usize,
        context: &AcceptContext,
        stream: TcpStream,
        remote: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let (thread, open) = self.place(me);
        let inbox = (thread != me).then(|| self.inboxes.get(thread)).flatten();
        let Some(inbox) = inbox else {
            tokio::spawn(connection(context, stream, remote, permit, open));
            return;
        };
        // Out of this thread's reactor, to be registered with the other's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%remote, %error, "cannot hand a connection to another thread");
                return;
            }
        };
        let handoff = Handoff {
            stream,
            remote,
            permit,
            open,
        };
        if let Err(mpsc::error::SendError(mut handoff)) = inbox.send(handoff) {
            // That thread stopped taking connections (the drain began): serve it here.
            handoff.open = self.count(me);
            handoff.serve(context);
        }
    }
}

impl Handoff {
    /// Serves the connection on the current thread (its runtime's reactor).
    fn serve(self, context: &AcceptContext) {
        match TcpStream::from_std(self.stream) {
            Ok(stream) => {
                tokio::spawn(connection(
                    context,
                    stream,
                    self.remote,
                    self.permit,
                    self.open,
                ));
            }
            Err(error) => {
                tracing::debug!(remote = %self.remote, %error, "cannot take a connection from another thread");
            }
        }
    }
}

/// Serves the connections other threads hand to this one, until the listeners close; then
/// closes the inbox and serves what was already in it.
pub(super) async fn inbox(
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    context: AcceptContext,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            handoff = inbox.recv() => match handoff {
                Some(handoff) => handoff.serve(&context),
                None => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    inbox.close();
    while let Some(handoff) = inbox.recv().await {
        handoff.serve(&context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(counts: &[i64]) -> Spread {
        let gauges: Vec<Gauge> = counts
            .iter()
            .map(|&count| {
                let gauge = Gauge::default();
                gauge.set(count);
                gauge
            })
            .collect();
        Spread::new(gauges).0
    }

    #[test]
    fn a_thread_keeps_its_connection_within_the_slack() {
        let spread = spread(&[3, 2, 3]);
        let (thread, _open) = spread.place(0);
        assert_eq!(thread, 0);
        assert_eq!(spread.open[0].get(), 4, "counted where it is served");
    }

    #[test]
    fn a_thread_above_the_slack_hands_to_the_least_loaded() {
        let spread = spread(&[4, 3, 2]);
        let (thread, open) = spread.place(0);
        assert_eq!(thread, 2);
        assert_eq!(
            (spread.open[0].get(), spread.open[2].get()),
            (4, 3),
            "counted on the thread it goes to"
        );
        drop(open);
        assert_eq!(spread.open[2].get(), 2, "uncounted when it closes");
    }

    #[test]
    fn a_burst_on_one_thread_ends_spread_evenly() {
        let spread = spread(&[0, 0, 0]);
        // Thread 0 wins every accept race; the connections stay open.
        let placed: Vec<Open> = (0..30).map(|_| spread.place(0).1).collect();
        let counts: Vec<i64> = spread.open.iter().map(Gauge::get).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            max.zip(min)
                .is_some_and(|(max, min)| max - min <= SLACK + 1),
            "{counts:?}"
        );
        assert_eq!(counts.iter().sum::<i64>(), 30);
        drop(placed);
        assert!(spread.open.iter().all(|open| open.get() == 0));
    }
}
