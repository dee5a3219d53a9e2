//! Lingering close: an accepted socket that, when hyper shuts it down, half-closes and keeps
//! reading (and discarding) what the client still sends, for a bounded time, before it is
//! closed (SPEC §7, last paragraph).
//!
//! Why: the edge often answers before it has read the whole request — a 431 from the parser
//! while a 100 KB header is still arriving, a 413 on a `Content-Length` over the limit, a 401
//! before the body. Hyper then writes the response and drops the socket. Closing a socket
//! whose receive queue holds unread bytes makes the kernel send RST instead of FIN, and a
//! client that is still writing (Python's `http.client` writes the whole request before it
//! reads) gets EPIPE or "connection reset" and never sees the status. Reading until the
//! client's FIN, as nginx's `lingering_close` does, lets the response arrive first.
//!
//! The bounds are nginx's idea with shorter numbers: at most [`LINGER_TOTAL`] in all and at
//! most [`LINGER_GAP`] between two reads. Discarded bytes cost no memory (one stack buffer);
//! the time bounds what a client that never closes can hold. A client that closes when it
//! sees the edge's FIN (every HTTP client does) ends the linger at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a closing connection keeps reading.
pub(super) const LINGER_TOTAL: Duration = Duration::from_secs(10);
/// The longest a closing connection waits for the client's next bytes or its FIN.
pub(super) const LINGER_GAP: Duration = Duration::from_secs(2);

/// An IO whose `poll_shutdown` lingers; reads and writes pass through untouched.
#[derive(Debug)]
pub(super) struct Lingering<T> {
    inner: T,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// Our FIN is sent; reading until the client's, or a bound.
    Draining {
        total: Instant,
        gap: Pin<Box<Sleep>>,
    },
    Closed,
}

impl<T> Lingering<T> {
    pub(super) fn new(inner: T) -> Self {
        Self {
            inner,
            state: State::Open,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Lingering<T> {
    /// Reads and discards until EOF, an error or a bound; `Ready` when the linger is over.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Draining { total, gap } = &mut self.state else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 8 * 1024];
        // A fast client could keep this loop busy: yield after a bounded number of reads.
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    if Instant::now() >= *total {
                        return Poll::Ready(());
                    }
                    let next = (Instant::now() + LINGER_GAP).min(*total);
                    gap.as_mut().reset(next);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return gap.as_mut().poll(cx),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let State::Open = this.state {
            // The FIN goes out after everything written: the response is complete.
            let result = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
            if result.is_err() {
                this.state = State::Closed;
                return Poll::Ready(result);
            }
            let now = Instant::now();
            this.state = State::Draining {
                total: now + LINGER_TOTAL,
                gap: Box::pin(tokio::time::sleep_until(now + LINGER_GAP)),
            };
        }
        ready!(this.poll_drain(cx));
        this.state = State::Closed;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_sends_fin_then_reads_until_the_peer_closes() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        let mut client = client;
        server.write_all(b"HTTP/1.1 431\r\n\r\n").await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        // The client still writes more than the pipe holds: the linger must read it.
        client.write_all(&[b'x'; 4096]).await.unwrap();
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"HTTP/1.1 431\r\n\r\n");
        assert!(!closing.is_finished());
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_closes_is_given_up_after_the_gap() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        let started = Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() >= LINGER_GAP);
        assert!(started.elapsed() < LINGER_TOTAL);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_sending_is_given_up_after_the_total() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        let started = Instant::now();
        let closing = tokio::spawn(async move { server.shutdown().await });
        let sender = tokio::spawn(async move {
            while client.write_all(b"more").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        closing.await.unwrap().unwrap();
        let lingered = started.elapsed();
        assert!(lingered >= LINGER_TOTAL, "{lingered:?}");
        assert!(lingered < LINGER_TOTAL + LINGER_GAP, "{lingered:?}");
        sender.abort();
    }
}
