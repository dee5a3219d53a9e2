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
//! Drain (SIGTERM/SIGINT): stop accepting, let in-flight requests and streams finish for up to
//! `shutdownGracePeriod`, then return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::App;
use crate::context::ConnInfo;
use crate::settings::Startup;

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
    let graceful = Arc::new(GracefulShutdown::new());
    let permits = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
    ));
    let mut tasks = Vec::new();
    for listener in listeners.public {
        let context = AcceptContext {
            app: app.clone(),
            builder: builder.clone(),
            tls: tls.clone(),
            graceful: graceful.clone(),
            permits: permits.clone(),
            handshake_timeout: limits.header_read_timeout,
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            context,
            stop_rx.clone(),
        )));
    }
    if let Some(admin) = listeners.admin {
        tasks.push(tokio::spawn(crate::admin::serve(
            admin,
            app.clone(),
            stop_rx.clone(),
        )));
    }

    shutdown.await;
    tracing::info!(grace_seconds = startup.shutdown_grace.as_secs(), "draining");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    match tokio::time::timeout(startup.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    Ok(())
}

struct AcceptContext {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    graceful: Arc<GracefulShutdown>,
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
            _ = stop.changed() => return,
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
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo::new(remote, context.tls.is_some());
        let service = crate::stack::build::<Incoming>(context.app.clone());
        let hyper_service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            service.clone().oneshot(request)
        });
        match &context.tls {
            None => {
                let connection = context
                    .builder
                    .serve_connection(TokioIo::new(stream), hyper_service)
                    .into_owned();
                let connection = context.graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = context.builder.clone();
                let graceful = context.graceful.clone();
                let timeout = context.handshake_timeout;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                    let Ok(Ok(tls_stream)) = handshake else {
                        tracing::debug!(%remote, "TLS handshake failed or timed out");
                        return;
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(tls_stream), hyper_service)
                        .into_owned();
                    let _ = graceful.watch(connection).await;
                    drop(permit);
                });
            }
        }
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
