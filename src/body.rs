//! The response body the edge sends: bytes it made itself (errors, metadata, preflights) or
//! the upstream's body streaming through.
//!
//! One concrete enum instead of a boxed trait object: the common cases cost no allocation,
//! and an upstream body keeps its exact `size_hint`, so a response with a known length keeps
//! its `Content-Length` and a streamed one stays chunked (or DATA frames on h2).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::forward::UpstreamBody;
use crate::mcp::filter::FilterBody;
use crate::quota::concurrency::Permits;

/// Errors a response body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A response body.
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub enum ProxyBody {
        /// A complete body made by the edge (`None` once sent, or for an empty body).
        Full { data: Option<Bytes> },
        /// The upstream's body, streamed with the idle timeout applied.
        Upstream { #[pin] body: UpstreamBody },
        /// A body that holds concurrency permits (quotas) until it ends or is dropped.
        Guarded { body: Box<ProxyBody>, permits: Permits },
        /// An MCP list response whose entries the caller may not use are removed
        /// (`filterLists`, [`crate::mcp::filter`]).
        Filtered { body: Box<FilterBody> },
    }
}

impl ProxyBody {
    pub fn full(data: Bytes) -> Self {
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        Self::Full { data: None }
    }

    pub fn upstream(body: UpstreamBody) -> Self {
        Self::Upstream { body }
    }

    /// `body`, holding `permits` until its last frame, an error, or the client going away
    /// (the body is dropped) — whichever comes first.
    pub fn guarded(body: ProxyBody, permits: Permits) -> Self {
        if permits.is_empty() {
            return body;
        }
        Self::Guarded {
            body: Box::new(body),
            permits,
        }
    }

    pub fn filtered(body: FilterBody) -> Self {
        Self::Filtered {
            body: Box::new(body),
        }
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Upstream { body } => body.poll_frame(cx),
            ProxyBodyProj::Guarded { body, permits } => {
                let polled = Pin::new(&mut **body).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None | Some(Err(_))) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Pending => false,
                };
                if ended {
                    permits.clear();
                }
                polled
            }
            ProxyBodyProj::Filtered { body } => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full { data } => data.is_none(),
            Self::Upstream { body } => body.is_end_stream(),
            Self::Guarded { body, .. } => body.is_end_stream(),
            Self::Filtered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Upstream { body } => body.size_hint(),
            Self::Guarded { body, .. } => body.size_hint(),
            Self::Filtered { body } => body.size_hint(),
        }
    }
}
