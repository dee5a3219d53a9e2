//! The MCP policy phase: on a route with an `mcp` block, each POST's JSON-RPC message is read
//! (bounded), decided on by the route's rules or Cedar policies, and either refused here —
//! nothing reaches the upstream — or forwarded with exactly the bytes the client sent. List
//! responses are filtered on the way back (`filterLists`).
//!
//! Every other request (GET, DELETE, routes without `mcp`) passes with its body still
//! streaming: the body type only gains a [`PolicyBody::Stream`] wrapper, no read, no copy.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::engine::{CallerLists, McpPolicy};
use super::filter::{ListFilter, ListKind};
use super::read::read_message;
use super::rules::Verdict;
use super::{Denied, McpError, McpMessage};
use crate::auth::Principal;
use crate::auth::challenge::{self, Challenge};
use crate::auth::claims::Claims;
use crate::body::{BoxError, ProxyBody};
use crate::context::{McpRecord, Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::phase::ResponseFuture;
use crate::route::Route;

pin_project! {
    /// The request body after the MCP phase: still streaming, or the message read whole.
    #[project = PolicyBodyProj]
    #[derive(Debug)]
    pub enum PolicyBody<B> {
        Stream { #[pin] body: B },
        Read { data: Option<Bytes> },
    }
}

impl<B> PolicyBody<B> {
    pub fn stream(body: B) -> Self {
        Self::Stream { body }
    }

    pub fn read(data: Bytes) -> Self {
        Self::Read {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<B> Body for PolicyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PolicyBodyProj::Stream { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
            PolicyBodyProj::Read { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream { body } => body.is_end_stream(),
            Self::Read { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream { body } => body.size_hint(),
            Self::Read { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// What the phase decided, for spans, metrics and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Denied by the rules, forwarded because `enforcement: logOnly`.
    LogOnlyDeny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::LogOnlyDeny => "log_only_deny",
        }
    }
}

/// Runs the MCP policy phase (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct McpPolicyLayer;

impl<S> Layer<S> for McpPolicyLayer {
    type Service = McpPolicyService<S>;
    fn layer(&self, inner: S) -> McpPolicyService<S> {
        McpPolicyService { inner }
    }
}

/// See [`McpPolicyLayer`].
#[derive(Clone, Debug)]
pub struct McpPolicyService<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for McpPolicyService<S>
where
    S: Service<
            Request<Recorded<PolicyBody<B>>>,
            Response = Response<ProxyBody>,
            Error = ProxyError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let policy = request
            .body()
            .record()
            .route()
            .and_then(|route| route.mcp.clone())
            .filter(|_| request.method() == Method::POST);
        let Some(policy) = policy else {
            return Either::Left(
                self.inner
                    .call(request.map(|body| body.map(PolicyBody::stream))),
            );
        };
        let mut inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let (body, record) = body.into_parts();
            let (message, bytes) = read_message(&parts.headers, body, policy.max_message_bytes)
                .await
                .map_err(|e| ProxyError::Mcp(McpError::Read(e)))?;
            let claims = parts
                .extensions
                .get::<Principal>()
                .map_or_else(no_claims, |p| p.claims.clone());
            let verdict = policy.decide(&claims, &message);
            let decision = verdict
                .as_ref()
                .map(|v| match (&v.outcome, policy.enforce) {
                    (Ok(()), _) => Decision::Allow,
                    (Err(_), true) => Decision::Deny,
                    (Err(_), false) => Decision::LogOnlyDeny,
                });
            let route = record.route();
            note(
                &record,
                route.map(|r| &**r),
                &message,
                decision,
                verdict.as_ref(),
            );
            if let (
                Some(Decision::Deny),
                Some(Verdict {
                    outcome: Err(refusal),
                    ..
                }),
            ) = (decision, verdict)
            {
                let resource_metadata = match route {
                    Some(route) => {
                        let base = challenge::base_url(&record, &parts.headers);
                        Challenge::new(
                            route,
                            &base,
                            &challenge::resource_path(route, parts.uri.path()),
                        )
                        .resource_metadata
                    }
                    None => String::new(),
                };
                return Err(ProxyError::Mcp(McpError::Denied(Box::new(Denied {
                    id: message.id,
                    method: message.method,
                    name: message.name,
                    refusal,
                    resource_metadata,
                }))));
            }
            let filter = list_filter(&policy, &claims, &message);
            parts.extensions.insert(message);
            let body = Recorded::new(PolicyBody::read(bytes), record);
            let response = inner.call(Request::from_parts(parts, body)).await?;
            Ok(match filter {
                Some(filter) if response.status() == StatusCode::OK => filtered(response, filter),
                _ => response,
            })
        }))
    }
}

/// The caller of a route without an authorizer has no claims.
fn no_claims() -> Arc<Claims> {
    Arc::new(Claims::default())
}

/// The filter for the caller's list request, when lists are filtered and enforced.
fn list_filter(
    policy: &Arc<McpPolicy>,
    claims: &Arc<Claims>,
    message: &McpMessage,
) -> Option<ListFilter> {
    if !policy.filter_lists || !policy.enforce || !policy.decides() {
        return None;
    }
    let kind = ListKind::of(message.method.as_deref()?)?;
    let id = serde_json::from_str(message.id.as_ref()?.get()).ok()?;
    Some(ListFilter {
        kind,
        id,
        keep: Arc::new(CallerLists::new(policy.clone(), claims.clone())),
    })
}

fn filtered(response: Response<ProxyBody>, filter: ListFilter) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let encoding = parts.headers.get(CONTENT_ENCODING).map(|v| v.as_bytes());
    match filter.wrap(body, &content_type, encoding) {
        Ok(body) => {
            // The length changes with the entries removed.
            parts.headers.remove(CONTENT_LENGTH);
            Response::from_parts(parts, ProxyBody::filtered(body))
        }
        Err(body) => Response::from_parts(parts, body),
    }
}

/// Logs and counts the decision; records it for the span and the access log.
fn note(
    record: &RequestRecord,
    route: Option<&Route>,
    message: &McpMessage,
    decision: Option<Decision>,
    verdict: Option<&Verdict>,
) {
    let Some(decision) = decision else {
        return;
    };
    let rule = verdict.and_then(|v| v.rule.as_deref()).unwrap_or("default");
    let reason = verdict
        .and_then(|v| v.outcome.as_ref().err())
        .map(|r| r.as_str());
    if decision != Decision::Allow {
        tracing::info!(
            route = route.map(|r| &*r.name),
            mcp_method = message.method.as_deref(),
            mcp_name = message.name.as_deref(),
            decision = decision.as_str(),
            rule,
            reason,
            "MCP message denied"
        );
    }
    if let Some(route) = route {
        route.metrics.count_policy_decision(decision.as_str());
    }
    record.set_mcp(McpRecord {
        method: message.method.clone(),
        name: message.name.clone(),
        id: message.id.as_ref().map(|id| id.get().to_owned()),
        decision: Some(decision.as_str()),
        rule: verdict.and_then(|v| v.rule.clone()),
    });
}
