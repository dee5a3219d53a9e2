//! Request bodies that can be taken back or put together without copying: [`Reclaimable`]
//! lets a request whose connection was refused go to another replica with the same body (it
//! never left), and [`Prefixed`] sends bytes already read (for signing) ahead of the rest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;

/// A body that stays in a shared slot until the client first polls it. If the connection
/// fails before that (refused, unreachable), the slot still holds the body and the caller can
/// send it elsewhere; once polled, it belongs to this request.
#[derive(Debug)]
pub(super) struct Reclaimable<B> {
    slot: Arc<Mutex<Option<B>>>,
    taken: Option<B>,
}

impl<B> Reclaimable<B> {
    pub(super) fn new(slot: Arc<Mutex<Option<B>>>) -> Self {
        Self { slot, taken: None }
    }

    fn peek<T>(&self, f: impl FnOnce(&B) -> T, default: T) -> T {
        if let Some(body) = &self.taken {
            return f(body);
        }
        match self.slot.lock() {
            Ok(guard) => guard.as_ref().map_or(default, f),
            Err(_) => default,
        }
    }
}

impl<B> Body for Reclaimable<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.taken.is_none() {
            this.taken = this.slot.lock().ok().and_then(|mut slot| slot.take());
        }
        match &mut this.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(Body::is_end_stream, true)
    }

    fn size_hint(&self) -> SizeHint {
        self.peek(Body::size_hint, SizeHint::with_exact(0))
    }
}

/// `prefix`, then `rest`.
#[derive(Debug)]
pub(super) struct Prefixed<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> Prefixed<B> {
    pub(super) fn new(prefix: Bytes, rest: B) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        // Upper first: `set_lower` above the current upper bound panics.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(extra));
        }
        hint.set_lower(rest.lower().saturating_add(extra));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

    fn full(s: &'static str) -> Boxed {
        http_body_util::Full::new(Bytes::from_static(s.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn unpolled_body_can_be_taken_back() {
        let slot = Arc::new(Mutex::new(Some(full("hello"))));
        let first = Reclaimable::new(slot.clone());
        assert_eq!(first.size_hint().exact(), Some(5));
        drop(first);
        assert!(slot.lock().unwrap().is_some());
        let second = Reclaimable::new(slot.clone());
        let body = second.collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert!(slot.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn prefix_then_rest() {
        let body = Prefixed::new(Bytes::from_static(b"ab"), full("cd"));
        assert_eq!(body.size_hint().exact(), Some(4));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
    }
}
