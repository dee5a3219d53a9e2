//! The plumbing the dev servers share: an accept loop serving HTTP/1.1 and h2c (hyper-util's
//! auto builder), and a shutdown that also drops connections a handler is deliberately hanging
//! on, so tests end promptly and ports are freed.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Response body of the dev servers. Not `Sync`: streamed bodies hold timers and futures.
pub(super) type Body = UnsyncBoxBody<Bytes, io::Error>;

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A JSON response; `value` always serialises (it is a `serde_json::Value`).
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A status from a test-supplied number; out-of-range numbers become 500 rather than a panic.
pub(super) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A `wait_for_*` helper of the echo agent or test issuer gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimeout {
    pub wanted: u64,
    pub seen: u64,
    pub waited: Duration,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waited {:?} for {} event(s), saw {}",
            self.waited, self.wanted, self.seen
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Wait until `counter` reaches `n`.
pub(super) async fn wait_for(
    counter: &watch::Sender<u64>,
    n: u64,
    timeout: Duration,
) -> Result<(), WaitTimeout> {
    let mut rx = counter.subscribe();
    match tokio::time::timeout(timeout, rx.wait_for(|seen| *seen >= n)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(WaitTimeout {
            wanted: n,
            seen: *counter.borrow(),
            waited: timeout,
        }),
    }
}

/// A running server. Dropping it (or [`Server::shutdown`]) stops accepting and drops every
/// open connection.
#[derive(Debug)]
pub(super) struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Serve `listener` with `handler`. A handler error closes the connection without a
    /// response, which is how the servers simulate a peer that hangs up.
    pub(super) fn spawn<H, F>(listener: TcpListener, handler: H) -> io::Result<Server>
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Response<Body>, io::Error>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::new(handler), stopped));
        Ok(Server {
            addr,
            stop,
            accept: Mutex::new(Some(accept)),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, drop open connections, and wait until the listener is closed.
    pub(super) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Resolves once shutdown is requested (or the `Server` is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop<H, F>(listener: TcpListener, handler: Arc<H>, stop: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, io::Error>> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE under a load test; back off instead of spinning.
                    tracing::debug!(error = %e, "dev server: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = Arc::clone(&handler);
                async move { handler(req, peer).await }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = conn => {
                    if let Err(e) = served {
                        tracing::trace!(error = %e, %peer, "dev server: connection ended");
                    }
                }
                () = stopped(stop) => {}
            }
        });
    }
}

/// A plain hyper client for the dev servers' own tests.
#[cfg(test)]
pub(super) mod client {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::{HeaderMap, Method, Request, Response, StatusCode};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub(in crate::dev) type Http =
        Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    pub(in crate::dev) fn http() -> Http {
        Client::builder(TokioExecutor::new()).build_http()
    }

    /// Send and return the response with its body still streaming.
    pub(in crate::dev) async fn send(
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        http().request(req).await
    }

    /// Send and read the whole body.
    pub(in crate::dev) async fn fetch(
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let resp = tokio::time::timeout(Duration::from_secs(10), send(method, url, headers, body))
            .await
            .expect("response within 10s")
            .expect("request succeeds");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, bytes)
    }

    pub(in crate::dev) async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
        fetch(Method::GET, url, &[], Bytes::new()).await
    }

    pub(in crate::dev) async fn get_json(url: &str) -> serde_json::Value {
        let (status, _, body) = get(url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body:?}");
        serde_json::from_slice(&body).expect("JSON body")
    }
}
