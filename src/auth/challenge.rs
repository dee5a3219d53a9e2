//! Where a route's OAuth protected resource metadata lives (RFC 9728), in one place: the
//! well-known suffix the route phase resolves, the base URL clients reach the edge at, the
//! resource path they used, and the `WWW-Authenticate` challenge that points at the metadata.
//! The auth phase (a refused token) and the metadata phase (keys unavailable) both answer with
//! the same [`Challenge`]; `error.rs` turns it into the header.

use std::sync::Arc;

use http::header::{self, HeaderMap};

use crate::context::RequestRecord;
use crate::route::Route;

/// The well-known suffix of RFC 9728.
pub const PRM_SUFFIX: &str = "/.well-known/oauth-protected-resource";

/// What a `WWW-Authenticate` challenge for one route says.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Absolute URL of the protected resource metadata (RFC 9728).
    pub resource_metadata: String,
    /// The advertised scopes, space-separated, when the route requires scopes.
    pub scope: Option<Arc<str>>,
}

impl Challenge {
    /// The challenge a failed request gets: where the route's metadata is (the RFC 9728
    /// path-inserted form of `path_used`) and which scopes it wants.
    pub fn new(route: &Route, base_url: &str, path_used: &str) -> Self {
        Self {
            resource_metadata: format!("{base_url}{PRM_SUFFIX}{path_used}"),
            scope: route.auth.as_ref().and_then(|a| a.scope_challenge.clone()),
        }
    }
}

/// The scheme and authority clients use to reach the edge, without trailing slash:
/// `publicUrl`, else derived from the request (`Host`, TLS, or `X-Forwarded-*` when trusted).
/// A `Host` with characters outside a host name becomes `localhost`, so a challenge never
/// carries a quote.
pub fn base_url(record: &RequestRecord, headers: &HeaderMap) -> String {
    if let Some(url) = &record.settings.public_url {
        return url.clone();
    }
    let trusted = record.settings.trust_forwarded_headers;
    let forwarded = |name: &str| {
        trusted
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some("https") => "https",
        Some("http") => "http",
        _ if record.conn.tls => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The route path a client used to reach `route` with `request_path` (for challenges).
pub fn resource_path(route: &Route, request_path: &str) -> String {
    if route.prefix {
        route.path.clone()
    } else {
        request_path.to_owned()
    }
}
