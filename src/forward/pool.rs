//! Our own keep-alive pool toward one upstream origin over HTTP/1.1, for `url`/`urls`
//! replicas (h2 upstreams and AgentCore keep hyper-util's pooled client, [`super::client`]).
//!
//! Each replica holds its [`Pool`] directly, so a request finds its connections without a key
//! to hash: hyper-util's client looked the (scheme, authority) key up in a SipHash map some 50
//! times per request. A pool is a stack of idle `SendRequest`s behind a mutex held for a push
//! or a pop; a connection goes back when the response body has been read to its end (the
//! [`Checkin`] rides on the body), and a response dropped early closes its connection.
//!
//! Each request thread (`serve --threads N`, [`crate::shard`]) has its own idle list: a
//! connection's task runs on the thread that opened it, and a connection only ever goes back
//! to, and out of, that thread's list, so an exchange never wakes another thread.
//!
//! The rules hyper-util's pool kept, kept: a connection idle for [`POOL_IDLE_TIMEOUT`] is
//! never reused (below the 5 s at which common agent servers close idle connections: reusing
//! one the server is closing at that moment fails a request that was already written), and a
//! request the pool could not even hand to a reused connection (closed before the write) is
//! retried on another. Pools are kept across reloads by [`super::client::UpstreamClients`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt as _;

use super::client::{OutboundBody, POOL_IDLE_TIMEOUT};
use crate::body::BoxError;
use crate::shard::SHARDS;

/// Idle connections kept per origin and worker; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// The keep-alive connections to one origin (`scheme://authority`).
pub(crate) struct Pool {
    origin: Uri,
    /// What hyper-util's client would have set as `Host`: the host, and the port unless it is
    /// the scheme's default.
    host: HeaderValue,
    connector: HttpsConnector<HttpConnector>,
    /// Per worker. Each list has its own reference count: a [`Checkin`] holds its thread's
    /// list, not the pool, whose count every request thread would write.
    idle: [Arc<IdleList>; SHARDS],
}

/// One worker's idle connections.
struct IdleList {
    /// Newest last: a pop reuses the warmest connection, and stale ones sit at the front.
    connections: Mutex<Vec<Idle>>,
    reaping: AtomicBool,
}

struct Idle {
    sender: SendRequest<OutboundBody>,
    since: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field(
                "idle",
                &self
                    .idle
                    .iter()
                    .map(|i| i.connections.lock().map(|i| i.len()).unwrap_or(0))
                    .sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

/// A connection lent to one exchange, given back when its response body has ended.
#[derive(Debug)]
pub(crate) struct Checkin {
    idle: Arc<IdleList>,
    sender: SendRequest<OutboundBody>,
}

impl fmt::Debug for IdleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleList").finish_non_exhaustive()
    }
}

impl Checkin {
    pub(crate) fn give_back(self) {
        self.idle.put(self.sender);
    }
}

/// Why an exchange through the pool failed.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// No connection: refused, unreachable, timed out, TLS failed.
    Connect(BoxError),
    /// The connection failed during the exchange.
    Exchange(hyper::Error),
}

impl PoolError {
    /// Whether nothing of the request left (a replica that refused can be skipped).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(_) => f.write_str("cannot connect to the upstream"),
            Self::Exchange(_) => f.write_str("upstream exchange failed"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) => Some(&**error),
            Self::Exchange(error) => Some(error),
        }
    }
}

impl Pool {
    pub(crate) fn new(
        scheme: Scheme,
        authority: Authority,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Self, String> {
        let default_port = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let host = match authority.port_u16() {
            Some(port) if Some(port) != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::try_from(host.as_str())
            .map_err(|_| format!("upstream host {host:?} cannot be sent as a Host header"))?;
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream origin: {e}"))?;
        Ok(Self {
            origin,
            host,
            connector,
            idle: std::array::from_fn(|_| {
                Arc::new(IdleList {
                    connections: Mutex::new(Vec::new()),
                    reaping: AtomicBool::new(false),
                })
            }),
        })
    }

    /// Sends `request` (its URI absolute or origin-form) on an idle connection or a new one.
    pub(crate) async fn send(
        &self,
        mut request: Request<OutboundBody>,
    ) -> Result<(Response<Incoming>, Checkin), PoolError> {
        if let Some(target) = request.uri().path_and_query().cloned() {
            *request.uri_mut() = Uri::from(target);
        }
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
        loop {
            let (mut sender, reused) = match self.take() {
                Some(sender) => (sender, true),
                // Boxed: a new connection's state (the connector's and the handshake's futures,
                // over a kilobyte) would otherwise be part of every exchange's future, which
                // is built and moved on every request.
                None => (Box::pin(self.connect()).await?, false),
            };
            // A reused connection may still be finishing its previous exchange, or closed.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let checkin = Checkin {
                        idle: Arc::clone(self.idle()),
                        sender,
                    };
                    return Ok((response, checkin));
                }
                Err(mut error) => match error.take_message() {
                    // Closed before the request was written: nothing left, try another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Exchange(error.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<OutboundBody>, PoolError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(PoolError::Exchange)?;
        // Its errors are the exchange's to report (the response future or the body).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// This thread's idle list.
    fn idle(&self) -> &Arc<IdleList> {
        &self.idle[crate::shard::current()]
    }

    fn take(&self) -> Option<SendRequest<OutboundBody>> {
        let mut idle = self.idle().connections.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < POOL_IDLE_TIMEOUT && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }
}

impl IdleList {
    fn put(self: &Arc<Self>, sender: SendRequest<OutboundBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let Ok(mut idle) = self.connections.lock() else {
            return;
        };
        drop_stale(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
        drop(idle);
        if !self.reaping.swap(true, Ordering::Relaxed) {
            spawn_reaper(Arc::downgrade(self));
        }
    }
}

/// Closes the connections idle for [`POOL_IDLE_TIMEOUT`] (they sit at the front).
fn drop_stale(idle: &mut Vec<Idle>, now: Instant) {
    let stale = idle
        .iter()
        .take_while(|e| now.duration_since(e.since) >= POOL_IDLE_TIMEOUT)
        .count();
    idle.drain(..stale);
}

/// Closes idle connections when traffic stops, until the list (its pool) is gone. Spawned
/// by the list's own thread, so the connections close on the thread that opened them.
fn spawn_reaper(list: Weak<IdleList>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(list) = list.upgrade() else { return };
            if let Ok(mut idle) = list.connections.lock() {
                drop_stale(&mut idle, Instant::now());
            }
        }
    });
}
