//! The outbound-credential phase (SPEC §13): what the upstream receives instead of the
//! caller's token.
//!
//! The MCP specification forbids passing a client's token through to another resource, and
//! AgentCore Gateway calls its targets with credentials of its own. A route with
//! `outboundAuth` therefore sends `Authorization: Bearer <a token of its own>`:
//! - `tokenExchange`: an RFC 8693 exchange of the caller's validated token (the
//!   [`SubjectToken`] the auth phase hands over) for one whose audience is the upstream,
//!   cached per caller token;
//! - `clientCredentials`: one edge token per route, for upstreams that trust the edge and read
//!   the caller from the identity headers.
//!
//! The phase sits right after Enrich (which rebuilt the upstream headers from the allowlist,
//! and `validate` keeps `Authorization` out of it on these routes) and before Forward. A
//! token is fetched through [`client`] with the edge's client credentials, at most
//! `maxConcurrency` requests in flight to the endpoint per route (a flood of distinct
//! callers queues here rather than at the IdP), and the whole wait — queue, single-flight,
//! request — is bounded by `timeout`, so a hanging endpoint answers 503 instead of holding
//! requests. Nothing is forwarded without the credential. Cached in [`cache`].
//!
//! Never a token in logs, spans or `Debug`: the credential header is marked sensitive, the
//! cache is keyed by a digest, errors carry only OAuth error codes and transport reasons.

pub mod cache;
pub mod client;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::Either;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, Uri};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use self::cache::{CLIENT_CREDENTIALS_KEY, Credential, OutboundCache, Source};
use self::client::{EndpointError, Grant, TokenRequest};
use crate::auth::cache::TokenHash;
use crate::auth::jwks::{Fetcher, Issuer};
use crate::body::ProxyBody;
use crate::context::Recorded;
pub use crate::context::{OutboundRecord, OutboundResult};
use crate::error::ProxyError;
use crate::phase::ResponseFuture;

/// Why the upstream could not be given its credential. Nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// The token endpoint refused, with this RFC 6749 error code (403).
    Refused(String),
    /// The endpoint is unreachable, slow, failing or not speaking OAuth (503). The text is
    /// for the log.
    Unavailable(String),
}

impl From<EndpointError> for OutboundError {
    fn from(error: EndpointError) -> Self {
        match error {
            EndpointError::Refused(code) => Self::Refused(code),
            EndpointError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// The caller's validated token, handed over by the auth phase on routes that exchange it.
/// `Debug` shows neither the token nor its digest.
#[derive(Clone)]
pub struct SubjectToken {
    /// The caller's `Authorization` value (`Bearer <token>`), shared, not copied.
    header: HeaderValue,
    /// SHA-256 of the token: the cache key.
    pub hash: TokenHash,
    /// The caller token's `exp` (Unix seconds).
    pub exp: Option<i64>,
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectToken")
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl SubjectToken {
    pub fn new(header: HeaderValue, hash: TokenHash, exp: Option<i64>) -> Self {
        Self { header, hash, exp }
    }

    /// The token itself (the header was validated by the auth phase).
    fn token(&self) -> Option<&str> {
        let value = self.header.to_str().ok()?.trim();
        let (_, token) = value.split_once([' ', '\t'])?;
        Some(token.trim())
    }

    /// Time left before the caller's token expires.
    fn left(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = self.exp.and_then(|e| u64::try_from(e).ok()).unwrap_or(0);
        Duration::from_secs(exp.saturating_sub(now))
    }
}

/// Which grant a route uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TokenExchange,
    ClientCredentials,
}

/// Where the token endpoint is.
#[derive(Debug)]
pub enum Endpoint {
    /// `tokenEndpoint`.
    Fixed(Uri),
    /// The `token_endpoint` of the route's issuer, read from its discovery document.
    Discovered(Arc<Issuer>),
}

/// `gatehouse_outbound_tokens_total{route,result}` of one route.
#[derive(Debug, Clone, Default)]
pub struct OutboundCounters {
    pub hit: Counter,
    pub issued: Counter,
    pub refused: Counter,
    pub error: Counter,
}

/// A route's compiled `outboundAuth`.
#[derive(Debug)]
pub struct OutboundAuth {
    pub kind: Kind,
    pub endpoint: Endpoint,
    pub request: TokenRequest,
    /// Bounds the whole acquisition: queue, single-flight wait and the request.
    pub timeout: Duration,
    /// Token requests in flight to the endpoint (`maxConcurrency`).
    pub permits: Arc<Semaphore>,
    pub cache: OutboundCache,
    pub fetcher: Fetcher,
    pub counters: OutboundCounters,
}

impl OutboundAuth {
    /// Whether the auth phase must hand over the caller's token.
    pub fn needs_subject(&self) -> bool {
        self.kind == Kind::TokenExchange
    }

    /// The upstream's `Authorization` for this request.
    pub async fn credential(
        &self,
        subject: Option<&SubjectToken>,
    ) -> Result<(HeaderValue, Source), OutboundError> {
        let (key, caller_left) = match self.kind {
            Kind::ClientCredentials => (CLIENT_CREDENTIALS_KEY, None),
            Kind::TokenExchange => {
                let subject = subject.ok_or_else(|| {
                    OutboundError::Unavailable("no validated caller token to exchange".into())
                })?;
                (subject.hash, Some(subject.left()))
            }
        };
        let fetch = self.fetch(subject, caller_left);
        let found = tokio::time::timeout(self.timeout, self.cache.get_or_fetch(key, fetch))
            .await
            .map_err(|_| {
                OutboundError::Unavailable(format!(
                    "no token within {}ms",
                    self.timeout.as_millis()
                ))
            })?;
        match found {
            Ok((credential, source)) => Ok((credential.authorization, source)),
            Err(shared) => Err((*shared).clone()),
        }
    }

    /// One token request, after a free slot; bounded by the timeout.
    async fn fetch(
        &self,
        subject: Option<&SubjectToken>,
        caller_left: Option<Duration>,
    ) -> Result<Credential, OutboundError> {
        let endpoint = match &self.endpoint {
            Endpoint::Fixed(uri) => Arc::new(uri.clone()),
            Endpoint::Discovered(issuer) => issuer.token_endpoint().ok_or_else(|| {
                OutboundError::Unavailable(
                    "the issuer's discovery document names no usable token_endpoint".into(),
                )
            })?,
        };
        let grant = match (self.kind, subject) {
            (Kind::TokenExchange, Some(subject)) => Grant::Exchange {
                subject_token: subject.token().ok_or_else(|| {
                    OutboundError::Unavailable("the caller's token is not readable".into())
                })?,
            },
            (Kind::TokenExchange, None) => {
                return Err(OutboundError::Unavailable(
                    "no validated caller token to exchange".into(),
                ));
            }
            (Kind::ClientCredentials, _) => Grant::ClientCredentials,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| OutboundError::Unavailable("closed".into()))?;
        let started = Instant::now();
        let issued = self
            .request
            .send(&self.fetcher, &endpoint, grant, self.timeout)
            .await?;
        Ok(Credential::new(
            issued.authorization,
            started,
            issued.expires_in,
            caller_left,
        ))
    }

    fn count(&self, result: &Result<(HeaderValue, Source), OutboundError>) -> OutboundResult {
        let (counter, label) = match result {
            Ok((_, Source::Cache)) => (&self.counters.hit, OutboundResult::Hit),
            Ok((_, Source::Issued)) => (&self.counters.issued, OutboundResult::Issued),
            Err(OutboundError::Refused(_)) => (&self.counters.refused, OutboundResult::Refused),
            Err(OutboundError::Unavailable(_)) => (&self.counters.error, OutboundResult::Error),
        };
        counter.inc();
        label
    }
}

/// Sets the upstream's `Authorization` on routes with `outboundAuth`; others pass untouched
/// (no boxed future for them).
#[derive(Clone, Debug, Default)]
pub struct OutboundLayer;

impl<S> Layer<S> for OutboundLayer {
    type Service = Outbound<S>;
    fn layer(&self, inner: S) -> Outbound<S> {
        Outbound { inner }
    }
}

/// See [`OutboundLayer`].
#[derive(Clone, Debug)]
pub struct Outbound<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for Outbound<S>
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
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Recorded<B>>) -> Self::Future {
        let record = request.body().record();
        if record.route().is_none_or(|r| r.outbound.is_none()) {
            return Either::Left(self.inner.call(request));
        }
        // The request's own record lends the route: its count is this request's alone, where
        // the route's is written by every request thread.
        let record = Arc::clone(record);
        let mut inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let Some((route, outbound)) = record
                .route()
                .and_then(|route| Some((route, route.outbound.as_ref()?)))
            else {
                return inner.call(request).await;
            };
            let started = Instant::now();
            let result = outbound
                .credential(request.extensions().get::<SubjectToken>())
                .await;
            record.set_outbound(OutboundRecord {
                result: outbound.count(&result),
                started,
                duration: started.elapsed(),
            });
            match result {
                Ok((authorization, _)) => {
                    // Replaces whatever Enrich let through: the upstream gets this one.
                    request.headers_mut().insert(AUTHORIZATION, authorization);
                    inner.call(request).await
                }
                Err(error) => {
                    if let OutboundError::Unavailable(why) = &error {
                        tracing::warn!(route = %route.name, reason = %why, "no outbound credential: not forwarded");
                    }
                    Err(ProxyError::Outbound(error))
                }
            }
        }))
    }
}
