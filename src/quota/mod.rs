//! The quota phase (SPEC §12): rate and concurrency limits per key, after authentication and
//! MCP policy and before any upstream contact, so only authorized requests use quota and a
//! throttled request reaches nothing.
//!
//! For each rule of the route ([`policy::RouteQuotas`]: the global rules, then the route's
//! own) that applies to the request — its `match` fits the MCP message, and its key can be
//! built ([`rules::build_key`]) — the phase takes a concurrency [`concurrency::Permit`] if the
//! rule has a limit, and one request from the rule's rate bucket: in this process
//! ([`local`], governor's GCRA, no await) or in Redis ([`redis`], one script call for every
//! rate rule of the request together). The first rule that refuses answers 429 with
//! `Retry-After` and the `RateLimit` headers ([`headers`]); with the local store, buckets of
//! rules checked before it have already given one request (as Envoy's local limits do), while
//! the Redis script takes from all buckets or none. Permits ride on the response body and are
//! given back when it ends or the client goes away.
//!
//! Redis slow or down: the decision waits at most the store's `timeout`, then `onError`
//! applies — `allow` passes the request unlimited, `deny` answers 503 — and the error is
//! counted (`gatehouse_quota_store_errors_total`) and logged (at most every few seconds).
//!
//! The MCP message (`tool` keys, `match`) is the [`McpMessage`] extension the MCP policy phase
//! inserts; a request without one calls no tool and matches no `match`.

pub mod concurrency;
pub mod headers;
pub mod local;
pub mod policy;
pub mod redis;
pub mod rules;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{Either, ready};
use http::{Method, Request, Response};
use serde_json::value::RawValue;
use tower::{Layer, Service};

use self::concurrency::Permits;
use self::headers::{Limit, Throttle};
use self::policy::{OnError, RouteQuotas, Store};
use self::redis::{Bucket, Verdict};
use self::rules::{KeyInput, build_key};
use crate::auth::Principal;
use crate::body::ProxyBody;
use crate::context::{Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::mcp::McpMessage;
use crate::phase::ResponseFuture;
use crate::route::Protocol;

pub use policy::Quotas;

/// Why the quota phase answered a request itself.
#[derive(Debug)]
pub enum QuotaError {
    /// Over a rate or concurrency limit, or over `authFailuresPerIp`: 429.
    Throttled {
        throttle: Throttle,
        /// MCP POSTs are answered with a JSON-RPC error carrying the request's id (`None`
        /// inside: a notification, or no message read: `null`).
        jsonrpc: Option<Option<Box<RawValue>>>,
    },
    /// The shared store did not answer in time and `onError: deny`: 503.
    StoreUnavailable,
}

/// Applies the route's quota rules (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct QuotaLayer;

impl<S> Layer<S> for QuotaLayer {
    type Service = QuotaService<S>;
    fn layer(&self, inner: S) -> QuotaService<S> {
        QuotaService { inner }
    }
}

/// See [`QuotaLayer`].
#[derive(Clone, Debug)]
pub struct QuotaService<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for QuotaService<S>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let route = request.body().record().route();
        let Some(quotas) = route.and_then(|r| r.quotas.clone()) else {
            return Either::Left(self.inner.call(request));
        };
        let admitted = match admit_locally(&quotas, &request) {
            Ok(admitted) => admitted,
            Err(refusal) => return Either::Right(Box::pin(ready(Err(refusal)))),
        };
        let Admission {
            permits,
            buckets,
            bucket_rules,
        } = admitted;
        if buckets.is_empty() && permits.is_empty() {
            return Either::Left(self.inner.call(request));
        }
        let mut inner = self.inner.clone();
        // What a refusal needs, taken now: the request body need not be `Sync`.
        let facts = (!buckets.is_empty()).then(|| Facts::of(&request));
        Either::Right(Box::pin(async move {
            if let Some(facts) = facts {
                shared_decision(&quotas, &facts, &buckets, &bucket_rules).await?;
            }
            let response = inner.call(request).await?;
            Ok(response.map(|body| ProxyBody::guarded(body, permits)))
        }))
    }
}

/// What the local part of a decision leaves: permits held, and the Redis buckets still to ask
/// about (with the index of each one's rule).
#[derive(Debug, Default)]
pub struct Admission {
    pub permits: Permits,
    pub buckets: Vec<Bucket>,
    bucket_rules: Vec<usize>,
}

/// The rule (by index in [`RouteQuotas::rules`]) that refused a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub rule: usize,
    pub limit: Limit,
    pub retry_after: Duration,
}

impl RouteQuotas {
    /// The synchronous part of a decision: concurrency permits and local rate buckets, rule
    /// by rule; the first refusal answers. Rate rules of a Redis store are left in
    /// [`Admission::buckets`] for one round trip.
    pub fn admit(&self, input: &KeyInput<'_>) -> Result<Admission, Refusal> {
        let mut admission = Admission::default();
        let mut key = String::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule
                .matcher
                .as_ref()
                .is_some_and(|m| !m.matches(input.message))
            {
                continue;
            }
            if !build_key(&rule.key, input, &mut key) {
                continue;
            }
            if let Some(inflight) = &rule.inflight {
                match inflight.acquire(&key) {
                    Some(permit) => admission.permits.push(permit),
                    None => {
                        return Err(Refusal {
                            rule: i,
                            limit: Limit::Concurrency(inflight.limit()),
                            retry_after: Duration::from_secs(1),
                        });
                    }
                }
            }
            let Some(rate) = rule.rate else { continue };
            match (&*self.store, &rule.local) {
                (Store::Local, Some(limiter)) => {
                    if let Err(wait) = limiter.check(&key) {
                        return Err(Refusal {
                            rule: i,
                            limit: Limit::Rate(rate),
                            retry_after: wait,
                        });
                    }
                }
                _ => {
                    admission.buckets.push(rule.bucket(&key));
                    admission.bucket_rules.push(i);
                }
            }
        }
        Ok(admission)
    }
}

/// [`RouteQuotas::admit`] for a request, its refusal already recorded and answered.
fn admit_locally<B>(
    quotas: &RouteQuotas,
    request: &Request<Recorded<B>>,
) -> Result<Admission, ProxyError> {
    let extensions = request.extensions();
    let record = request.body().record();
    let input = KeyInput {
        route: record.route().map_or("", |r| &r.name),
        principal: extensions.get::<Principal>(),
        ip: record.conn.remote.ip(),
        message: extensions.get::<McpMessage>(),
    };
    quotas.admit(&input).map_err(|refusal| {
        throttled(
            quotas,
            refusal.rule,
            refusal.limit,
            refusal.retry_after,
            &Facts::of(request),
        )
    })
}

/// The Redis part: one round trip for every rate rule of the request.
async fn shared_decision(
    quotas: &RouteQuotas,
    facts: &Facts,
    buckets: &[Bucket],
    bucket_rules: &[usize],
) -> Result<(), ProxyError> {
    let Store::Redis {
        redis,
        timeout,
        on_error,
    } = &*quotas.store
    else {
        return Ok(());
    };
    let started = Instant::now();
    match redis.decide(buckets, *timeout).await {
        Ok(verdict) => {
            quotas
                .metrics
                .quota_store_duration
                .observe(started.elapsed().as_secs_f64());
            match verdict {
                Verdict::Allow => Ok(()),
                Verdict::Deny { index, retry_after } => {
                    let i = bucket_rules.get(index).copied().unwrap_or_default();
                    let rate = quotas.rules.get(i).and_then(|r| r.rate);
                    let limit = rate.map_or(Limit::Concurrency(0), Limit::Rate);
                    Err(throttled(quotas, i, limit, retry_after, facts))
                }
            }
        }
        Err(error) => {
            quotas.metrics.quota_store_errors.inc();
            if redis.should_log() {
                tracing::warn!(
                    store = redis.url(),
                    %error,
                    on_error = ?on_error,
                    "quota store did not decide; onError applied (further errors are counted in gatehouse_quota_store_errors_total)"
                );
            }
            match on_error {
                OnError::Allow => Ok(()),
                OnError::Deny => Err(ProxyError::Quota(QuotaError::StoreUnavailable)),
            }
        }
    }
}

/// What a refusal needs from the request.
struct Facts {
    record: Arc<RequestRecord>,
    /// MCP POSTs get a JSON-RPC error body with the message's id.
    jsonrpc: Option<Option<Box<RawValue>>>,
}

impl Facts {
    fn of<B>(request: &Request<Recorded<B>>) -> Self {
        let extensions = request.extensions();
        let record = request.body().record();
        let mcp_post = request.method() == Method::POST
            && record.route().is_some_and(|r| r.protocol == Protocol::Mcp);
        Self {
            record: record.clone(),
            jsonrpc: mcp_post.then(|| extensions.get::<McpMessage>().and_then(|m| m.id.clone())),
        }
    }
}

/// Records and builds the 429 of rule `i`.
fn throttled(
    quotas: &RouteQuotas,
    i: usize,
    limit: Limit,
    retry_after: Duration,
    facts: &Facts,
) -> ProxyError {
    let rule = quotas
        .rules
        .get(i)
        .map_or_else(|| Arc::from(""), |r| r.name.clone());
    if let Some(counter) = quotas.throttled.get(i) {
        counter.inc();
    }
    facts.record.set_throttled(rule.clone());
    ProxyError::Quota(QuotaError::Throttled {
        throttle: Throttle {
            rule,
            limit,
            retry_after,
        },
        jsonrpc: facts.jsonrpc.clone(),
    })
}
