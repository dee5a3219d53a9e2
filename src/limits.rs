//! Request limits the edge enforces itself, before authentication: header bytes
//! (`maxRequestHeaderBytes`, 431) and a declared `Content-Length` over
//! `maxRequestBodyBytes` (413, without reading the body). A chunked body that grows past the
//! limit is cut while streaming ([`crate::forward::body::RequestBody`]). Header-read timeouts
//! and the hard parser limits live in the accept phase ([`crate::server`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::telemetry::record::RequestRecord;

/// Bytes the header section occupies on the wire (name, `: `, value, CRLF per field).
pub fn header_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// Refuses oversized headers and declared bodies.
#[derive(Clone, Debug, Default)]
pub struct LimitsLayer;

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        Limits { inner }
    }
}

/// See [`LimitsLayer`].
#[derive(Clone, Debug)]
pub struct Limits<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Limits<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(record) = request.extensions().get::<Arc<RequestRecord>>() else {
            return Box::pin(self.inner.call(request));
        };
        let limits = &record.settings.limits;
        let header_limit = limits.max_request_header_bytes;
        if header_bytes(request.headers()) > header_limit {
            return Box::pin(async move {
                Err(ProxyError::HeadersTooLarge {
                    limit: header_limit,
                })
            });
        }
        let body_limit = limits.max_request_body_bytes;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > body_limit) {
            return Box::pin(async move { Err(ProxyError::BodyTooLarge { limit: body_limit }) });
        }
        Box::pin(self.inner.call(request))
    }
}
