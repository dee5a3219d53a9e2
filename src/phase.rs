//! The synchronous phases of the stack (route, limits, enrich): each looks at the request,
//! may change it or its extensions, and then passes it on or refuses it with an error. One
//! `Layer`/`Service` pair serves them all, so a phase is only its [`Check`], and none of them
//! boxes a future: a request that passes costs the inner service's future, one that is refused
//! a ready error.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::context::Recorded;
use crate::error::ProxyError;

/// The boxed future of a phase that awaits (auth, session, MCP policy, quota, outbound,
/// forward): one spelling for all of them.
pub(crate) type ResponseFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>,
>;

/// What a synchronous phase does with a request.
pub(crate) trait Check: Clone + Send + Sync + 'static {
    /// `Ok` passes the (possibly changed) request on; `Err` answers it.
    fn check<B>(&self, request: &mut Request<Recorded<B>>) -> Result<(), ProxyError>;
}

/// The layer of a [`Check`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Phase<C>(pub C);

impl<S, C: Check> Layer<S> for Phase<C> {
    type Service = PhaseService<S, C>;
    fn layer(&self, inner: S) -> PhaseService<S, C> {
        PhaseService {
            inner,
            check: self.0.clone(),
        }
    }
}

/// See [`Phase`].
#[derive(Clone, Debug)]
pub(crate) struct PhaseService<S, C> {
    inner: S,
    check: C,
}

impl<S, B, C> Service<Request<Recorded<B>>> for PhaseService<S, C>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>,
    C: Check,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, Ready<Result<Response<ProxyBody>, ProxyError>>>;

    // Every service of the stack is always ready (as the others in it assume too).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Recorded<B>>) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(error) => Either::Right(ready(Err(error))),
        }
    }
}
