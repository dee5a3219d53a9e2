//! The connections toward upstreams, kept across reloads so that a reload does not drop warm
//! connections: one HTTP/1.1 [`Pool`] per origin and connect timeout (what `url`/`urls`
//! replicas use), and hyper-util's pooled client per connect settings for h2 upstreams and
//! AgentCore. The connector is the edge's one HTTPS connector ([`crate::tls`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::Pool;
use crate::body::BoxError;

pub(crate) type OutboundBody = UnsyncBoxBody<Bytes, BoxError>;

/// Idle pooled connections are closed after this (see `build_client`).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The pooled client toward upstreams (HTTP/1.1, or h2c/h2 when configured).
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// Connection pools shared by every route with the same upstream and connect settings, and
/// kept across reloads so that a reload does not drop warm connections. Looked up when a
/// configuration is loaded, never per request.
#[derive(Debug, Default)]
pub struct UpstreamClients {
    pools: Mutex<HashMap<(Duration, bool), UpstreamClient>>,
    origins: Mutex<HashMap<(String, Duration), Arc<Pool>>>,
}

impl UpstreamClients {
    /// The HTTP/1.1 pool toward `scheme://authority`.
    pub(crate) fn pool(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        connect_timeout: Duration,
    ) -> Result<Arc<Pool>, String> {
        let build = || {
            let connector = crate::tls::https_connector(connect_timeout, false);
            Pool::new(scheme.clone(), authority.clone(), connector).map(Arc::new)
        };
        let Ok(mut origins) = self.origins.lock() else {
            return build();
        };
        let key = (format!("{scheme}://{authority}"), connect_timeout);
        if let Some(pool) = origins.get(&key) {
            return Ok(Arc::clone(pool));
        }
        let pool = build()?;
        origins.insert(key, Arc::clone(&pool));
        Ok(pool)
    }

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
