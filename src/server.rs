//! The accept phase: listeners, TLS, HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain
//! listeners, ALPN on TLS), connection limits, and the graceful drain.
//!
//! Hyper's own protections sit here, below the request stack: a header section must arrive
//! within `headerReadTimeout` (slowloris; on HTTP/1.1 connections kept by `head`'s one timer
//! per connection, on the others by hyper's), the parser refuses header sections beyond
//! `maxRequestHeaderBytes` plus a margin (the stack answers over-limit requests inside the
//! margin with SPEC §7's JSON 431), HTTP/2 streams per connection are capped, and h2's
//! rapid-reset protection is on. `maxConnections` bounds open connections: beyond it, new
//! connections wait in the kernel's accept queue.
//!
//! Every accepted socket closes by lingering (`linger`): after the last response it half-closes
//! and reads what the client still sends, so an early 431/413/401 reaches a client that is
//! still writing its request instead of a reset.
//!
//! Drain (SIGTERM/SIGINT, `drain`): stop accepting, serve the open connections' next requests
//! with `Connection: close` (HTTP/1.1) or send GOAWAY (HTTP/2), close idle ones after a short
//! bound, and return when the last one is gone or at `shutdownGracePeriod`.
//!
//! Threads (`Startup::workers`, `serve --threads N`): with more than one, each worker is an OS
//! thread with its own single-threaded runtime that accepts on its own handle of every public
//! listener, so a connection — its request, the upstream connection it borrows (the pools keep
//! one idle list per worker) and its response — lives on one thread, as in HAProxy's threads.
//! Tokio's work-stealing runtime moved the halves of each exchange between threads: with two
//! threads a plain request cost 38 µs of CPU against 28 µs with one (docs/performance.md).
//! Which thread wins a new connection is the kernel's race, so a thread that accepts one while
//! it has more than its share hands it to the least loaded thread (`spread`).

mod drain;
mod gated;
mod head;
mod linger;
mod spread;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Either;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use crate::app::App;
use crate::context::ConnInfo;
use crate::settings::Startup;
use drain::{DRAIN_IDLE, Drain, Watcher};
use gated::Gated;
use head::{HeadClock, Timed};
use linger::Lingering;
use spread::{Open, Spread};

/// HTTP/2 streams one client connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Bound public listeners, ready to serve.
#[derive(Debug)]
pub struct Listeners {
    pub public: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every configured address, with an error that names the address.
    pub async fn bind(startup: &Startup) -> Result<Self, String> {
        let mut public = Vec::new();
        for addr in &startup.listeners {
            public.push(bind(*addr).await?);
        }
        let admin = match startup.admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self { public, admin })
    }

    pub fn public_addrs(&self) -> Vec<SocketAddr> {
        self.public
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (is another process using it?)"))
}

/// Serves until `shutdown` resolves, then drains.
pub async fn serve(
    app: Arc<App>,
    startup: Startup,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let tls = match &startup.tls {
        Some((cert, key)) => Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?)),
        None => None,
    };
    let limits = app.settings().limits.clone();
    let builders = Arc::new(Builders::new(&limits));

    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = Drain::new();
    let permits = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    let threads = startup.workers.max(1);
    let (spread, inboxes) = Spread::new(
        (0..threads)
            .map(|thread| app.metrics.client_connections(thread))
            .collect(),
    );
    let context = AcceptContext {
        app: app.clone(),
        builders,
        tls,
        watcher: drain.watcher(),
        permits,
        handshake_timeout: limits.header_read_timeout,
        spread: Arc::new(spread),
    };
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    if threads == 1 {
        for listener in listeners.public {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                context.clone(),
                stop_rx.clone(),
                0,
            )));
        }
    } else {
        let unshared = |e: std::io::Error| {
            format!(
                "cannot share a listener between request threads: {e} (serve --threads 1 runs without)"
            )
        };
        let mut handles = Vec::new();
        for listener in listeners.public {
            handles.push(listener.into_std().map_err(unshared)?);
        }
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let handles = handles
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(unshared)?;
            workers.push(worker::start(
                index,
                handles,
                inbox,
                context.clone(),
                stop_rx.clone(),
            )?);
        }
    }
    drop(context);
    if let Some(admin) = listeners.admin {
        tasks.push(tokio::spawn(crate::admin::serve(
            admin,
            app.clone(),
            stop_rx.clone(),
        )));
    }

    shutdown.await;
    tracing::info!(grace_seconds = startup.shutdown_grace.as_secs(), "draining");
    // Listeners close first (new connections are refused from here on), then the open ones
    // are told to finish.
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    for worker in &mut workers {
        worker.accepting_stopped().await;
    }
    drain.start();
    match tokio::time::timeout(startup.shutdown_grace, drain.finished()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    for worker in workers {
        worker.stop().await;
    }
    Ok(())
}

/// hyper's connection settings, shared by every connection: HTTP/1.1 connections known to
/// speak it (most) run on hyper's own builder, HTTP/2 and not-yet-known ones on hyper-util's
/// (see `sniff`). The HTTP/1.1 settings are written for both: the two builders share no type.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    /// `headerReadTimeout`, which `http1` leaves to `head`.
    header_read_timeout: Duration,
}

impl Builders {
    fn new(limits: &crate::settings::Limits) -> Self {
        // Hyper's parser limit sits above ours so that over-limit headers within the margin
        // get the edge's JSON 431; beyond it hyper answers a bare 431.
        let parser_limit = usize::try_from(limits.max_request_header_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(16 * 1024);
        let max_buf_size = parser_limit.max(8 * 1024 + 1);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(max_buf_size)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(parser_limit).unwrap_or(u32::MAX));
        let mut http1 = http1::Builder::new();
        // No timer: hyper's HTTP/1.1 server uses one only for its header read timeout, which
        // `head` keeps instead (without a timer per request).
        http1
            .header_read_timeout(None)
            .max_buf_size(max_buf_size)
            .keep_alive(true);
        Self {
            auto,
            http1,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

#[derive(Clone)]
struct AcceptContext {
    app: Arc<App>,
    builders: Arc<Builders>,
    tls: Option<TlsAcceptor>,
    watcher: Watcher,
    permits: Arc<Semaphore>,
    handshake_timeout: Duration,
    spread: Arc<Spread>,
}

/// Accepts on `listener` for request thread `thread` (0 without threads).
async fn accept_loop(
    listener: TcpListener,
    context: AcceptContext,
    mut stop: watch::Receiver<bool>,
    thread: usize,
) {
    loop {
        let permit = tokio::select! {
            permit = context.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        context
            .spread
            .dispatch(thread, &context, stream, remote, Some(permit));
    }
    // Connections the kernel completed but nobody accepted yet would be reset when the
    // listener closes, and their clients would see a read error rather than a refused
    // connect: take them in and serve them like the other draining connections. The permit
    // limit no longer applies; the drain bounds them.
    let Ok(listener) = listener.into_std() else {
        return;
    };
    while let Ok((stream, remote)) = listener.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            let open = context.spread.count(thread);
            tokio::spawn(connection(&context, stream, remote, None, open));
        }
    }
}

/// One client connection, from the accepted socket to its close.
fn connection(
    context: &AcceptContext,
    stream: TcpStream,
    remote: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    open: Open,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    // The listener's own address: its origins are the edge's own (SPEC §8).
    let local = stream.local_addr().ok();
    let info = ConnInfo::new(remote, context.tls.is_some()).on_listener(local);
    let stack = Mutex::new(crate::stack::for_connection::<Incoming>(
        context.app.clone(),
        info,
    ));
    // One flag for the whole server, behind a reference count of this connection's own:
    // cloning the flag itself for each request would write one count from every request
    // thread.
    let draining = Arc::new(context.watcher.flag());
    let clock = HeadClock::new();
    let head = clock.clone();
    let hyper_service = service_fn(move |request: Request<Incoming>| {
        head.busy();
        let http1 = request.version() < Version::HTTP_2;
        let draining = draining.clone();
        let head = head.clone();
        call(&stack, request).map(move |mut result| {
            // Draining: this HTTP/1.1 response is the connection's last (hyper closes after
            // a response that says so); HTTP/2 has GOAWAY instead.
            if http1
                && draining.load(Ordering::Relaxed)
                && let Ok(response) = &mut result
            {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            result.map(|response| response.map(|body| Timed::new(body, head)))
        })
    });
    let builders = context.builders.clone();
    let tls = context.tls.clone();
    let timeout = context.handshake_timeout;
    let watcher = context.watcher.clone();
    async move {
        match tls {
            None => {
                // A client silent for the whole header timeout is closed, as one whose
                // headers do not arrive in time would be.
                let Ok(version) = tokio::time::timeout(timeout, sniff(&stream)).await else {
                    return;
                };
                let stream = Lingering::new(stream);
                serve_connection(builders, stream, hyper_service, watcher, version, clock).await;
            }
            Some(acceptor) => {
                // Boxed, handshake and all: rustls's state is kilobytes inline, and would
                // otherwise size every plaintext connection's task as well.
                let tls = async move {
                    let handshake =
                        tokio::time::timeout(timeout, acceptor.accept(Lingering::new(stream)))
                            .await;
                    let Ok(Ok(tls_stream)) = handshake else {
                        tracing::debug!(%remote, "TLS handshake failed or timed out");
                        return;
                    };
                    let version = match tls_stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Some(Version::HTTP_2),
                        Some(b"http/1.1") => Some(Version::HTTP_11),
                        _ => None,
                    };
                    serve_connection(builders, tls_stream, hyper_service, watcher, version, clock)
                        .await;
                };
                Box::pin(tls).await;
            }
        }
        drop(permit);
        drop(open);
    }
}

/// One request into the connection's stack. hyper calls a service by `&self`, tower's take
/// `&mut self`: the stack sits behind a lock that nothing contends (a connection's requests
/// are called one at a time, on its own task) instead of being cloned for every request, a
/// clone and a drop of every layer (≈ 500 instructions, `bench/callgrind.sh`).
fn call<S, R>(stack: &Mutex<S>, request: R) -> Either<S::Future, Oneshot<S, R>>
where
    S: Service<R> + Clone,
{
    let mut stack = stack.lock().unwrap_or_else(PoisonError::into_inner);
    let mut cx = Context::from_waker(Waker::noop());
    match stack.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => Either::Left(stack.call(request)),
        // Not ready (no layer is ever, today) or failed: tower's way, on a clone.
        _ => Either::Right(stack.clone().oneshot(request)),
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a plaintext connection, from its first bytes without consuming them: the
/// HTTP/2 preface means h2 with prior knowledge, anything else HTTP/1.x; `None` when the
/// first bytes are the start of the preface but not all of it (hyper-util then reads on).
/// Knowing it up front spares hyper-util's own sniffing, which reads the first 24 bytes ahead
/// of hyper: hyper's read buffer then grows to 16 KiB for the connection's life instead of
/// 8 KiB (docs/performance.md, memory per idle connection).
async fn sniff(stream: &TcpStream) -> Option<Version> {
    let mut first = [0u8; 24];
    match stream.peek(&mut first).await {
        // Closed or failed before a byte: hyper sees the same and ends the connection.
        Ok(0) | Err(_) => Some(Version::HTTP_11),
        Ok(24) if &first == H2_PREFACE => Some(Version::HTTP_2),
        Ok(n) if first[..n] == H2_PREFACE[..n] => None,
        Ok(_) => Some(Version::HTTP_11),
    }
}

/// Runs hyper on one connection until it closes: HTTP/1.1 straight on hyper's own
/// connection (inline in the connection's task, which then holds no HTTP/2 state), HTTP/2 or
/// a protocol still to sniff on hyper-util's (boxed).
async fn serve_connection<I, S, B>(
    builders: Arc<Builders>,
    io: I,
    service: S,
    watcher: Watcher,
    version: Option<Version>,
    clock: Arc<HeadClock>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(io);
    match version {
        Some(Version::HTTP_2) => {
            let builder = builders.auto.clone().http2_only();
            let connection = builder.serve_connection(io, service).into_owned();
            Box::pin(drive(connection, watcher, true, None)).await;
        }
        Some(_) => {
            let head = Some((clock, builders.header_read_timeout));
            drive(
                builders.http1.serve_connection(io, service),
                watcher,
                false,
                head,
            )
            .await
        }
        None => {
            Box::pin(drive(
                builders.auto.serve_connection(io, service).into_owned(),
                watcher,
                false,
                None,
            ))
            .await
        }
    }
}

/// Drives a connection to its end, and drains it when the drain starts (see the `drain`
/// module for why HTTP/1.1 waits for an idle moment and HTTP/2 does not). With `head`, the
/// connection is closed (dropped) once it has waited that long for a request head (`head`).
async fn drive<C: GracefulConnection>(
    connection: C,
    mut watcher: Watcher,
    h2: bool,
    head: Option<(Arc<HeadClock>, Duration)>,
) {
    tokio::pin!(connection);
    let expired = Gated::new(async move {
        match head {
            Some((clock, timeout)) => head::expired(clock, timeout).await,
            None => std::future::pending().await,
        }
    });
    tokio::pin!(expired);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = expired.as_mut() => return,
        () = watcher.started() => {}
    }
    if !h2 {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = expired.as_mut() => return,
            () = tokio::time::sleep(DRAIN_IDLE) => {}
        }
    }
    // HTTP/1.1: closes the connection if idle, or after the response in flight; HTTP/2: GOAWAY.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection => {}
        () = expired => {}
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
