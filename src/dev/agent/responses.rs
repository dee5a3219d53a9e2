//! The echo agent's generated responses: SSE event streams (one frame per event, when due),
//! large bodies produced only as the connection takes them, and a reset mid-stream.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::{Response, header};
use serde_json::json;

use super::State;
use super::serve::Body;

pub(super) fn sse_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Counts a stream as active while its body exists, and as cancelled if the body is dropped
/// (the connection went away) before the last event.
struct StreamGuard {
    state: Arc<State>,
    finished: bool,
}

impl StreamGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.active_streams.fetch_sub(1, Ordering::SeqCst);
        if self.finished {
            self.state.completed_streams.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.cancelled.send_modify(|n| *n += 1);
        }
    }
}

pub(super) fn sse(
    state: &Arc<State>,
    n: u64,
    interval: Duration,
    session: Option<String>,
) -> Response<Body> {
    state.active_streams.fetch_add(1, Ordering::SeqCst);
    let guard = StreamGuard {
        state: Arc::clone(state),
        finished: false,
    };
    // Each event is its own frame, produced only when due: hyper writes it out before asking
    // for the next, so nothing is buffered here.
    let stream = futures_util::stream::unfold((0u64, guard), move |(i, mut guard)| {
        let session = session.clone();
        async move {
            if i >= n {
                guard.finish();
                return None;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let event = json!({
                "index": i,
                "count": n,
                "sessionId": session,
                "timeMs": SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            });
            let frame = Frame::data(Bytes::from(format!("data: {event}\n\n")));
            Some((Ok::<_, io::Error>(frame), (i + 1, guard)))
        }
    });
    sse_response(StreamBody::new(stream).boxed_unsync())
}

/// `total` bytes of `x`, one `chunk` per frame, each made only when hyper asks for it.
pub(super) fn bytes_response(state: &Arc<State>, total: u64, chunk: usize) -> Response<Body> {
    let block = Bytes::from(vec![b'x'; chunk]);
    let state = Arc::clone(state);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let block = block.clone();
        let state = Arc::clone(&state);
        async move {
            if sent >= total {
                return None;
            }
            let n = usize::try_from(total - sent).map_or(block.len(), |left| left.min(block.len()));
            state.streamed_bytes.fetch_add(n as u64, Ordering::SeqCst);
            Some((
                Ok::<_, io::Error>(Frame::data(block.slice(..n))),
                sent + n as u64,
            ))
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// Headers and one event, then a body error: hyper aborts the connection mid-response.
pub(super) fn reset_mid_stream() -> Response<Body> {
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((
                Ok(Frame::data(Bytes::from_static(b"data: {\"index\":0}\n\n"))),
                1,
            )),
            1 => {
                // Let the first event reach the wire before breaking the connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(io::Error::other("echo agent: reset mid-stream")), 2))
            }
            _ => None,
        }
    });
    sse_response(StreamBody::new(stream).boxed_unsync())
}
