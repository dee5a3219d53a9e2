//! The forward phase: the request goes to the route's upstream ([`crate::upstream`]) over a
//! pooled keep-alive connection ([`client`]), and the response streams back ([`send`]). No
//! response headers within `requestTimeout`: 504. Connection refused, reset or TLS failure
//! before a response: 502. After the headers, the body streams under `streamIdleTimeout` (SSE:
//! with the route's comment keep-alives, [`body`]).
//!
//! Three kinds of upstream, one [`crate::upstream::Upstream`]: one `url` (the hot path: no
//! balancing, no buffering); several `urls`, where [`balance`] picks the replica by session
//! affinity and passive health, a refused connection moves the untouched body to the next
//! replica ([`reclaim`]), and a new MCP session is created on the replica its id hashes to; and
//! an `agentRuntimeArn`, signed with SigV4 ([`sigv4`]).

pub(crate) mod balance;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod pool;
mod reclaim;
mod send;
pub mod sigv4;

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

pub(crate) use self::body::UpstreamBody;
pub(crate) use self::client::UpstreamClients;
pub(crate) use self::send::is_event_stream;
use crate::body::{BoxError, ProxyBody};
use crate::context::Recorded;
use crate::error::ProxyError;
use crate::phase::ResponseFuture;

/// Why the upstream exchange failed before a response arrived.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// Refused, reset, TLS or protocol failure (502).
    Unreachable(String),
    /// No response headers within `requestTimeout` (504).
    Timeout(Duration),
    /// An AgentCore request could not be signed: no AWS credentials (502).
    Signing(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "upstream unreachable: {e}"),
            Self::Timeout(d) => write!(f, "upstream timed out after {}s", d.as_secs()),
            Self::Signing(e) => write!(f, "cannot sign the upstream request: {e}"),
        }
    }
}

/// The innermost service: sends the request to the route's upstream.
#[derive(Clone, Debug, Default)]
pub struct Forward;

impl<B> Service<Request<Recorded<B>>> for Forward
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        // The request's own record, not the route: a route's reference count is shared by
        // every request thread, the record's only by this request.
        let record = request.body().record().clone();
        Box::pin(async move {
            let Some(route) = record.route() else {
                return Err(ProxyError::NoRoute);
            };
            route.upstream.send(route, request).await
        })
    }
}
