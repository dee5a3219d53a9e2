//! The authenticate phase: a CUSTOM_JWT route's bearer token is verified against the
//! issuer's keys and the route's policy before anything reaches the upstream, and before the
//! request body is read.
//!
//! [`Authorizer::authenticate`] runs SPEC §4.2 in this order: one `Authorization: Bearer`
//! header ([`token`]); the verified-token cache ([`cache`]); on a miss, the JOSE header
//! ([`token::Jws`]), the route's algorithm list, the issuer's keys ([`jwks`], [`keys`]) with
//! one refetch for an unknown `kid`, the signature, the claims ([`claims`]), `iss` equal to the
//! discovery document's `issuer`, `exp` (required), `nbf` and `iat` within the clock skew; then
//! on every request, cached or not, the route policy ([`policy`]). The result is a
//! [`Principal`] in the request extensions.

pub mod cache;
pub mod challenge;
pub mod claims;
pub mod failures;
pub mod jwks;
pub mod keys;
pub mod policy;
pub mod token;

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::{Either, ready};
use http::{HeaderMap, Request, Response};
use jsonwebtoken::Algorithm;
use tower::{Layer, Service};

use self::cache::{CachedToken, TokenCache, TokenHash};
use self::challenge::Challenge;
use self::claims::Claims;
use self::failures::FailureBudget;
use self::jwks::{Issuer, Reason};
use self::keys::{KeySet, Lookup};
use self::policy::{Denial, Policy};
use self::token::{Jws, TokenError};
use crate::body::ProxyBody;
use crate::context::{AuthRecord, Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::phase::ResponseFuture;
use crate::quota::QuotaError;
use crate::quota::headers::{Limit, Throttle};
use crate::route::{Route, Target};

/// Authentication outcomes (SPEC §10 `gatehouse.auth.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Ok,
    Missing,
    Invalid,
    Expired,
    Forbidden,
    InsufficientScope,
    Unavailable,
    /// The route needs no token (`authorizerType: NONE`), or no authentication happened.
    None,
}

impl AuthOutcome {
    const ALL: [AuthOutcome; 8] = [
        Self::Ok,
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Forbidden,
        Self::InsufficientScope,
        Self::Unavailable,
        Self::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Forbidden => "forbidden",
            Self::InsufficientScope => "insufficient_scope",
            Self::Unavailable => "unavailable",
            Self::None => "none",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(7)
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials (401, bare challenge).
    Missing,
    /// Bad header, token, signature, key or claim (401 `invalid_token`).
    Invalid(Cow<'static, str>),
    /// `exp` has passed (401 `invalid_token`).
    Expired,
    /// A policy check failed (401 for `aud`, 403 otherwise).
    Denied(Denial),
    /// The issuer's keys are not available and none are cached within `maxKeyStaleness` (503).
    Unavailable,
}

impl AuthError {
    pub fn outcome(&self) -> AuthOutcome {
        match self {
            Self::Missing => AuthOutcome::Missing,
            Self::Invalid(_) | Self::Denied(Denial::Audience) => AuthOutcome::Invalid,
            Self::Expired => AuthOutcome::Expired,
            Self::Denied(Denial::Scope) => AuthOutcome::InsufficientScope,
            Self::Denied(_) => AuthOutcome::Forbidden,
            Self::Unavailable => AuthOutcome::Unavailable,
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Missing => Self::Missing,
            TokenError::Malformed(reason) => Self::Invalid(reason.into()),
        }
    }
}

/// Who the caller is, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub claims: Arc<Claims>,
    pub cache_hit: bool,
    pub kid: Option<Arc<str>>,
    pub alg: Algorithm,
}

impl Principal {
    /// The record of this caller's authentication (also of a refused one: who was denied).
    pub fn record(&self, outcome: AuthOutcome, duration: Duration) -> AuthRecord {
        AuthRecord {
            cache_hit: self.cache_hit,
            client_id: self.claims.client_id().map(str::to_owned),
            sub: self.claims.sub().map(str::to_owned),
            kid: self.kid.clone(),
            alg: Some(self.alg),
            ..AuthRecord::new(outcome, duration)
        }
    }
}

/// A route's compiled `customJwtAuthorizer` plus the `jwt` settings that apply to it.
#[derive(Debug)]
pub struct Authorizer {
    pub issuer: Arc<Issuer>,
    pub policy: Policy,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_secs: i64,
    /// `allowedScopes` after `advertisedScopeMapping`, for challenges and metadata.
    pub advertised_scopes: Vec<String>,
    /// The same, space-separated, for the `scope` challenge parameter.
    pub scope_challenge: Option<Arc<str>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the verified-token cache says about a request's token, without waiting.
enum Cached {
    /// Decided: the cached principal, or what is wrong with the token.
    Decided(Result<(Principal, Option<TokenHash>), AuthError>),
    /// Not decided by the cache: verify the token (its digest, when the cache is on).
    Verify(Option<TokenHash>),
}

impl Authorizer {
    fn issuer_id(&self) -> usize {
        Arc::as_ptr(&self.issuer) as usize
    }

    /// Authenticates the request's headers: the token is genuine, from this issuer, and
    /// within its validity period. Route policy is [`Self::authorize`], a separate step so the
    /// caller can record who was refused.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        cache: &TokenCache,
    ) -> Result<Principal, AuthError> {
        let authenticated = match self.authenticate_cached(headers, cache) {
            Cached::Decided(result) => result,
            Cached::Verify(hash) => self.authenticate_verified(headers, cache, hash).await,
        };
        authenticated.map(|(principal, _)| principal)
    }

    /// What can be decided without waiting: a token the verified-token cache holds for this
    /// issuer (accepted, or refused for its times or algorithm), or a request without a
    /// usable bearer token. Anything else needs [`Self::authenticate_verified`].
    fn authenticate_cached(&self, headers: &HeaderMap, cache: &TokenCache) -> Cached {
        let token = match token::bearer(headers) {
            Ok(token) => token,
            Err(error) => return Cached::Decided(Err(error.into())),
        };
        let hash = cache.enabled().then(|| TokenCache::hash(token));
        let Some(hit) = hash.as_ref().and_then(|h| cache.get(h)) else {
            return Cached::Verify(hash);
        };
        match self.accept_cached(hit, unix_now()) {
            Ok(Some(principal)) => Cached::Decided(Ok((principal, hash))),
            Ok(None) => Cached::Verify(hash),
            Err(error) => Cached::Decided(Err(error)),
        }
    }

    /// The full verification of the request's token (its `hash` when the cache is on), which
    /// the cache then holds.
    async fn authenticate_verified(
        &self,
        headers: &HeaderMap,
        cache: &TokenCache,
        hash: Option<TokenHash>,
    ) -> Result<(Principal, Option<TokenHash>), AuthError> {
        let token = token::bearer(headers)?;
        let verified = self.verify(token, unix_now()).await?;
        let principal = Principal {
            claims: verified.claims.clone(),
            cache_hit: false,
            kid: verified.key.kid.clone(),
            alg: verified.alg,
        };
        if let Some(hash) = hash {
            cache.insert(hash, verified);
        }
        Ok((principal, hash))
    }

    /// An authentication's result with the route's policy applied: a refused principal is
    /// kept for the record (who was denied).
    fn authorized(
        &self,
        result: Result<(Principal, Option<TokenHash>), AuthError>,
    ) -> Result<(Principal, Option<TokenHash>), (AuthError, Option<Principal>)> {
        match result {
            Ok((principal, hash)) => match self.authorize(&principal) {
                Ok(()) => Ok((principal, hash)),
                Err(error) => Err((error, Some(principal))),
            },
            Err(error) => Err((error, None)),
        }
    }

    /// The route's policy (allowed audience, clients, scopes, custom claims), checked on
    /// every request.
    pub fn authorize(&self, principal: &Principal) -> Result<(), AuthError> {
        self.policy
            .check(&principal.claims)
            .map_err(AuthError::Denied)
    }

    /// A cache hit is used only if it was verified by this route's issuer with a key that is
    /// still published; otherwise the token is verified from scratch.
    fn accept_cached(&self, hit: CachedToken, now: i64) -> Result<Option<Principal>, AuthError> {
        if hit.issuer_id != self.issuer_id() {
            return Ok(None);
        }
        let keys = self.issuer.fresh_keys().ok_or(AuthError::Unavailable)?;
        if !keys.contains(&hit.key) || hit.claims.iss() != Some(&*keys.issuer) {
            return Ok(None);
        }
        if !self.algorithms.contains(&hit.alg) {
            return Err(AuthError::Invalid(
                "token alg is not allowed for this route".into(),
            ));
        }
        self.check_times(&hit.claims, now)?;
        Ok(Some(Principal {
            claims: hit.claims,
            cache_hit: true,
            kid: hit.key.kid.clone(),
            alg: hit.alg,
        }))
    }

    /// The full verification of a token not in the cache.
    async fn verify(&self, token: &str, now: i64) -> Result<CachedToken, AuthError> {
        let jws = Jws::parse(token)?;
        if !self.algorithms.contains(&jws.alg) {
            return Err(AuthError::Invalid(
                "token alg is not allowed for this route".into(),
            ));
        }
        let keys = self
            .issuer
            .keys_for_request()
            .await
            .ok_or(AuthError::Unavailable)?;
        let (key, keys) = match keys.find(jws.kid.as_deref(), jws.alg) {
            Lookup::Found(key) => (key, keys),
            Lookup::UnknownKid => {
                // Perhaps the IdP rotated its keys: refetch (at most once per interval).
                self.issuer.refresh(Reason::UnknownKid).await;
                let keys = self.issuer.fresh_keys().ok_or(AuthError::Unavailable)?;
                match keys.find(jws.kid.as_deref(), jws.alg) {
                    Lookup::Found(key) => (key, keys),
                    other => return Err(lookup_error(&other)),
                }
            }
            other => return Err(lookup_error(&other)),
        };
        let signature = jws.signature_bytes()?;
        if !key.verify(jws.alg, jws.signing_input.as_bytes(), &signature) {
            return Err(AuthError::Invalid("token signature is invalid".into()));
        }
        let claims = jws.claims().map_err(|e| AuthError::Invalid(e.into()))?;
        check_issuer(&claims, &keys)?;
        self.check_times(&claims, now)?;
        Ok(CachedToken {
            issuer_id: self.issuer_id(),
            key,
            alg: jws.alg,
            claims: Arc::new(claims),
        })
    }

    /// `exp` required and not passed, `nbf` reached, `iat` not in the future — all within the
    /// route's clock skew.
    fn check_times(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let skew = self.clock_skew_secs;
        let exp = claims
            .exp()
            .ok_or_else(|| AuthError::Invalid("token has no 'exp' claim".into()))?;
        if now >= exp.saturating_add(skew) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf()
            .is_some_and(|nbf| now.saturating_add(skew) < nbf)
        {
            return Err(AuthError::Invalid("token is not valid yet ('nbf')".into()));
        }
        if claims
            .iat()
            .is_some_and(|iat| iat > now.saturating_add(skew))
        {
            return Err(AuthError::Invalid(
                "token was issued in the future ('iat')".into(),
            ));
        }
        Ok(())
    }
}

fn check_issuer(claims: &Claims, keys: &KeySet) -> Result<(), AuthError> {
    match claims.iss() {
        Some(iss) if iss == &*keys.issuer => Ok(()),
        Some(_) => Err(AuthError::Invalid(
            "token issuer does not match the issuer of the discovery document".into(),
        )),
        None => Err(AuthError::Invalid("token has no 'iss' claim".into())),
    }
}

fn lookup_error(lookup: &Lookup) -> AuthError {
    AuthError::Invalid(
        match lookup {
            Lookup::UnknownKid => "token kid is not among the issuer's keys",
            Lookup::WrongAlgorithm => "token alg does not match its key",
            Lookup::NoUniqueKey | Lookup::Found(_) => {
                "token has no kid and the issuer has no single key for its alg"
            }
        }
        .into(),
    )
}

/// The 429 of an address over `limits.authFailuresPerIp`.
fn over_failure_budget(
    route: &Route,
    record: &RequestRecord,
    budget: &FailureBudget,
    wait: std::time::Duration,
) -> ProxyError {
    const RULE: &str = "authFailuresPerIp";
    route.metrics.throttled(RULE).inc();
    let rule: Arc<str> = Arc::from(RULE);
    record.set_throttled(rule.clone());
    ProxyError::Quota(QuotaError::Throttled {
        throttle: Throttle {
            rule,
            limit: Limit::AuthFailures(budget.rate()),
            retry_after: wait,
        },
        jsonrpc: None,
    })
}

/// Authenticates requests on CUSTOM_JWT routes; metadata requests and NONE routes pass.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    cache: TokenCache,
}

impl AuthLayer {
    pub fn new(cache: TokenCache) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    cache: TokenCache,
}

impl<S, B> Service<Request<Recorded<B>>> for Auth<S>
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

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let record = request.body().record();
        let Some(route) = record.route() else {
            return Either::Right(Box::pin(ready(Err(ProxyError::NoRoute))));
        };
        let metadata = matches!(record.target(), Some(Target::Metadata { .. }));
        // No token to check (authorizerType NONE, or a metadata document): the inner future
        // as it is, not boxed.
        if route.auth.is_none() || metadata {
            record.set_auth(AuthRecord::new(AuthOutcome::None, Duration::ZERO));
            return Either::Left(self.inner.call(request));
        }
        // From here the request's own record lends the route and its authorizer while the
        // request is split or moved: its count is this request's alone, where the route's is
        // written by every request thread.
        let record = Arc::clone(record);
        let Some((route, authorizer)) = authorizer_of(&record) else {
            return Either::Right(Box::pin(ready(Err(ProxyError::NoRoute))));
        };
        // An address over its budget of failed validations is refused before any token work:
        // a forged-token flood costs one lookup per request, not a verification. The 429 is
        // sent when the budget has room again (at most a second later): a client that retries
        // at once gains nothing, and a flood that waits for answers slows to the budget's pace
        // instead of taking turns with honest callers.
        if let Some(budget) = &record.settings.auth_failures
            && let Some(wait) = budget.blocked(record.conn.remote.ip())
        {
            let budget = budget.clone();
            return Either::Right(Box::pin(async move {
                tokio::time::sleep(wait.min(failures::MAX_HOLD)).await;
                Err(match record.route() {
                    Some(route) => over_failure_budget(route, &record, &budget, wait),
                    None => ProxyError::NoRoute,
                })
            }));
        }
        let started = Instant::now();
        // Most requests carry a token the verified-token cache holds: decided here, and the
        // inner future goes on unboxed, without a clone of the stack behind it.
        let hash = match authorizer.authenticate_cached(request.headers(), &self.cache) {
            Cached::Decided(result) => {
                let result = authorizer.authorized(result);
                let (mut parts, body) = request.into_parts();
                return match settle(route, &record, &mut parts, result, started.elapsed()) {
                    Ok(()) => Either::Left(self.inner.call(Request::from_parts(parts, body))),
                    Err(error) => Either::Right(Box::pin(ready(Err(error)))),
                };
            }
            Cached::Verify(hash) => hash,
        };
        let mut inner = self.inner.clone();
        let cache = self.cache.clone();
        Either::Right(Box::pin(async move {
            let Some((route, authorizer)) = authorizer_of(&record) else {
                return Err(ProxyError::NoRoute);
            };
            let result = authorizer
                .authenticate_verified(request.headers(), &cache, hash)
                .await;
            let result = authorizer.authorized(result);
            let (mut parts, body) = request.into_parts();
            settle(route, &record, &mut parts, result, started.elapsed())?;
            inner.call(Request::from_parts(parts, body)).await
        }))
    }
}

/// The request's route and its authorizer (`None` on a route without one).
fn authorizer_of(record: &RequestRecord) -> Option<(&Route, &Authorizer)> {
    let route = record.route()?;
    Some((route, route.auth.as_ref()?))
}

/// Records the authentication's outcome and readies the request for the inner phases
/// (the principal; the subject token for routes that exchange it), or builds the refusal
/// (401/403 with its challenge) and counts a failure against the client's budget.
fn settle(
    route: &Route,
    record: &RequestRecord,
    request: &mut http::request::Parts,
    result: Result<(Principal, Option<TokenHash>), (AuthError, Option<Principal>)>,
    duration: Duration,
) -> Result<(), ProxyError> {
    match result {
        Ok((principal, hash)) => {
            // Routes that exchange the caller's token (SPEC §13) get it handed over; the
            // others never hold a copy.
            if route.outbound.as_ref().is_some_and(|o| o.needs_subject())
                && let Some(header) = request.headers.get(http::header::AUTHORIZATION)
            {
                let hash = hash.unwrap_or_else(|| {
                    TokenCache::hash(token::bearer(&request.headers).unwrap_or_default())
                });
                let subject = crate::outbound::SubjectToken::new(
                    header.clone(),
                    hash,
                    principal.claims.exp(),
                );
                request.extensions.insert(subject);
            }
            record.set_auth(principal.record(AuthOutcome::Ok, duration));
            request.extensions.insert(principal);
            Ok(())
        }
        Err((error, refused)) => {
            if let Some(budget) = record.settings.auth_failures.as_ref()
                && matches!(error, AuthError::Invalid(_) | AuthError::Expired)
            {
                budget.failed(record.conn.remote.ip());
            }
            let outcome = error.outcome();
            record.set_auth(match refused {
                Some(principal) => principal.record(outcome, duration),
                None => AuthRecord::new(outcome, duration),
            });
            let base = challenge::base_url(record, &request.headers);
            let challenge = Challenge::new(
                route,
                &base,
                &challenge::resource_path(route, request.uri.path()),
            );
            Err(ProxyError::Auth {
                error,
                challenge: Box::new(challenge),
            })
        }
    }
}
