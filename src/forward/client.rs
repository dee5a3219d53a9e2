//! The pooled clients toward upstreams: one per connect settings (connect timeout, h2),
//! shared by every route that uses them and kept across reloads, so that a reload does not
//! drop warm connections. The connector is the edge's one HTTPS connector ([`crate::tls`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::BoxError;

pub(crate) type OutboundBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle pooled connections are closed after this (see `build_client`).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The pooled client toward upstreams (HTTP/1.1, or h2c/h2 when configured).
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// Connection pools shared by every route with the same connect settings, and kept across
/// reloads so that a reload does not drop warm connections.
#[derive(Debug, Default)]
pub struct UpstreamClients {
    pools: Mutex<HashMap<(Duration, bool), UpstreamClient>>,
}

impl UpstreamClients {
    pub fn get(&self, connect_timeout: Duration, http2: bool) -> UpstreamClient {
        let Ok(mut pools) = self.pools.lock() else {
            return build_client(connect_timeout, http2);
        };
        pools
            .entry((connect_timeout, http2))
            .or_insert_with(|| build_client(connect_timeout, http2))
            .clone()
    }
}

fn build_client(connect_timeout: Duration, http2: bool) -> UpstreamClient {
    let https = crate::tls::https_connector(connect_timeout, http2);
    let mut client = Client::builder(TokioExecutor::new());
    client
        // Below the keep-alive timeouts common agent servers close idle connections at
        // (uvicorn and Node: 5 s): reusing a connection the server is closing at that moment
        // fails a request that was already written, which cannot be retried safely.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if http2 {
        client.http2_only(true);
    }
    client.build(https)
}
