//! OAuth 2.0 Protected Resource Metadata (RFC 9728, SPEC §8), served without a token.
//!
//! For a route whose resource is `R = publicUrl + path`, the document says `resource: R`
//! exactly (MCP clients compare it with the URL they called), `authorization_servers:
//! [issuer]` (the discovery document's `issuer`), `scopes_supported` (the route's scopes after
//! `advertisedScopeMapping`), `bearer_methods_supported: ["header"]` and `resource_name`.
//! Without `publicUrl`, the base URL is derived from the request (`Host`, TLS, or
//! `X-Forwarded-*` when trusted); set `publicUrl` in production.

use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::auth::AuthError;
use crate::auth::challenge::{Challenge, base_url};
use crate::body::ProxyBody;
use crate::context::Recorded;
use crate::error::ProxyError;
use crate::route::{Route, Target};

/// Answers metadata requests; everything else goes on.
#[derive(Clone, Debug, Default)]
pub(crate) struct MetadataLayer;

impl<S> Layer<S> for MetadataLayer {
    type Service = Metadata<S>;
    fn layer(&self, inner: S) -> Metadata<S> {
        Metadata { inner }
    }
}

/// See [`MetadataLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Metadata<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for Metadata<S>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    /// The inner future itself for every request but a metadata one: no box, no move.
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, ProxyError>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let record = request.body().record();
        let Some(Target::Metadata { resource_path }) = record.target().cloned() else {
            return Either::Left(self.inner.call(request));
        };
        let route = record.route().cloned();
        let base = base_url(record, request.headers());
        let method = request.method().clone();
        Either::Right(Box::pin(async move {
            let Some(route) = route else {
                return Err(ProxyError::NoRoute);
            };
            if method != Method::GET && method != Method::HEAD {
                return Err(ProxyError::MethodNotAllowed);
            }
            document(&route, &base, &resource_path).await
        }))
    }
}

async fn document(
    route: &Route,
    base: &str,
    resource_path: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(auth) = &route.auth else {
        return Err(ProxyError::NoRoute);
    };
    let Some(keys) = auth.issuer.keys_for_request().await else {
        let challenge = Challenge::new(route, base, resource_path);
        return Err(ProxyError::Auth {
            error: AuthError::Unavailable,
            challenge: Box::new(challenge),
        });
    };
    let mut doc = serde_json::json!({
        "resource": format!("{base}{resource_path}"),
        "authorization_servers": [&*keys.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": &*route.name,
    });
    if !auth.advertised_scopes.is_empty() {
        doc["scopes_supported"] = serde_json::json!(auth.advertised_scopes);
    }
    let mut response = Response::new(ProxyBody::full(Bytes::from(doc.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    Ok(response)
}
