//! Request limits the edge enforces itself, before authentication: header bytes
//! (`maxRequestHeaderBytes`, 431) and a declared `Content-Length` over
//! `maxRequestBodyBytes` (413, without reading the body). A chunked body that grows past the
//! limit is cut while streaming ([`crate::forward::body::RequestBody`]). Header-read timeouts
//! and the hard parser limits live in the accept phase ([`crate::server`]).

use http::{HeaderMap, Request};

use crate::context::Recorded;
use crate::error::ProxyError;
use crate::phase::Check;

/// Bytes the header section occupies on the wire (name, `: `, value, CRLF per field).
pub(crate) fn header_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// Refuses oversized headers and declared bodies.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestLimits;

impl Check for RequestLimits {
    fn check<B>(&self, request: &mut Request<Recorded<B>>) -> Result<(), ProxyError> {
        let limits = &request.body().record().settings.limits;
        let header_limit = limits.max_request_header_bytes;
        if header_bytes(request.headers()) > header_limit {
            return Err(ProxyError::HeadersTooLarge {
                limit: header_limit,
            });
        }
        let body_limit = limits.max_request_body_bytes;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > body_limit) {
            return Err(ProxyError::BodyTooLarge { limit: body_limit });
        }
        Ok(())
    }
}
