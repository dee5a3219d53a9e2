//! The accept phase: listeners, TLS, HTTP/1.1 and HTTP/2 (h2c by prior knowledge on plain
//! listeners, ALPN on TLS), connection limits, and the graceful drain.
//!
//! Hyper's own protections sit here, below the request stack: a header section must arrive
//! within `headerReadTimeout` (slowloris), the parser refuses header sections beyond
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

mod drain;
mod linger;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::App;
use crate::context::ConnInfo;
use crate::settings::Startup;
use drain::{DRAIN_IDLE, Drain, Watcher};
use linger::Lingering;

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Hyper's parser limit sits above ours so that over-limit headers within the margin get
    // the edge's JSON 431; beyond it hyper answers a bare 431.
    let parser_limit = usize::try_from(limits.max_request_header_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(16 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(parser_limit.max(8 * 1024 + 1))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(parser_limit).unwrap_or(u32::MAX));

    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = Drain::new();
    let permits = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    let context = AcceptContext {
        app: app.clone(),
        builder,
        tls,
        watcher: drain.watcher(),
        permits,
        handshake_timeout: limits.header_read_timeout,
    };
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    if startup.workers <= 1 {
        for listener in listeners.public {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                context.clone(),
                stop_rx.clone(),
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
        for index in 0..startup.workers {
            let handles = handles
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(unshared)?;
            workers.push(worker::start(
                index,
                handles,
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

#[derive(Clone)]
struct AcceptContext {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    watcher: Watcher,
    permits: Arc<Semaphore>,
    handshake_timeout: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    context: AcceptContext,
    mut stop: watch::Receiver<bool>,
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
        tokio::spawn(connection(&context, stream, remote, Some(permit)));
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
            tokio::spawn(connection(&context, stream, remote, None));
        }
    }
}

/// One client connection, from the accepted socket to its close.
fn connection(
    context: &AcceptContext,
    stream: TcpStream,
    remote: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    // The listener's own address: its origins are the edge's own (SPEC §8).
    let local = stream.local_addr().ok();
    let stream = Lingering::new(stream);
    let info = ConnInfo::new(remote, context.tls.is_some()).on_listener(local);
    let service = crate::stack::for_connection::<Incoming>(context.app.clone(), info);
    let draining = context.watcher.flag();
    let hyper_service = service_fn(move |request: Request<Incoming>| {
        let http1 = request.version() < Version::HTTP_2;
        let draining = draining.clone();
        service.clone().oneshot(request).map(move |mut result| {
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
            result
        })
    });
    let builder = context.builder.clone();
    let tls = context.tls.clone();
    let timeout = context.handshake_timeout;
    let watcher = context.watcher.clone();
    async move {
        match tls {
            None => serve_connection(builder, stream, hyper_service, watcher, false).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                let Ok(Ok(tls_stream)) = handshake else {
                    tracing::debug!(%remote, "TLS handshake failed or timed out");
                    return;
                };
                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_connection(builder, tls_stream, hyper_service, watcher, h2).await;
            }
        }
        drop(permit);
    }
}

/// Runs hyper on one connection until it closes, and drains it when the drain starts (see
/// the `drain` module for why HTTP/1.1 waits for an idle moment and HTTP/2 does not).
async fn serve_connection<I, S, B>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut watcher: Watcher,
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = watcher.started() => {}
    }
    if !h2 {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep(DRAIN_IDLE) => {}
        }
    }
    // HTTP/1.1: closes the connection if idle, or after the response in flight; HTTP/2: GOAWAY.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
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
