//! Sending one request to a route's [`Upstream`]: the plain path (one `url`, no buffering),
//! several replicas (balanced; a refused connection moves the untouched body on; a new MCP
//! session is placed on the replica its id hashes to), and AgentCore (signed). Then the
//! response's hop-by-hop headers are stripped and its body streams back under the idle timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::UpstreamError;
use super::balance::Balancer;
use super::body::{RequestBody, UpstreamBody};
use super::client::{OutboundBody, UpstreamClient};
use super::pool::{Checkin, Pool, PoolError};
use super::reclaim::{Prefixed, Reclaimable};
use super::sigv4::{Payload, SIGNED_PAYLOAD_LIMIT};
use crate::body::{BoxError, ProxyBody};
use crate::context::Recorded;
use crate::error::ProxyError;
use crate::route::{Protocol, Route};
use crate::session::{MCP_SESSION_HEADER, affinity_key};
use crate::upstream::{AgentCore, Upstream};

impl Upstream {
    /// Sends the (already enriched) request and returns the streaming response.
    pub async fn send<B>(
        &self,
        route: &Route,
        request: Request<Recorded<B>>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let (body, record) = body.into_parts();
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let body = RequestBody::new(body, self.max_body_bytes, Some(record.clone()));
        // One clock read for both (tokio's clock is the system's unless a test pauses it).
        let started = tokio::time::Instant::now();
        let deadline = started + self.request_timeout;
        // The replica and AgentCore paths are boxed: inlined, their state would make every
        // request's future (the plain path's too) larger to build and move.
        let sent = if let Some(agentcore) = &self.agentcore {
            record.set_upstream_arn(&agentcore.arn);
            tokio::time::timeout_at(deadline, Box::pin(self.send_signed(agentcore, parts, body)))
                .await
        } else if let Some(balancer) = &self.balancer {
            let placing = route.protocol == Protocol::Mcp
                && parts.method == http::Method::POST
                && affinity_key(&parts.headers).is_none();
            let sending = Box::pin(async {
                let sent = if placing {
                    self.send_placing(balancer, route, &parts, body).await
                } else {
                    self.send_balanced(balancer, route, &parts, body).await
                };
                sent.map(|(exchange, index)| {
                    // The replica that answered, for the client span's server.address.
                    if let Some(replica) = self.replicas.get(index) {
                        record.set_upstream_address(&replica.authority);
                    }
                    exchange
                })
            });
            tokio::time::timeout_at(deadline, sending).await
        } else {
            let replica = self.replica(0)?;
            parts.uri = replica.uri_for(route, &parts.uri)?;
            let request = Request::from_parts(parts, body.boxed_unsync());
            tokio::time::timeout_at(
                deadline,
                exchange(replica.pool.as_ref(), &self.client, request),
            )
            .await
            .map(|r| r.map_err(SendError::Client))
        };
        let (response, checkin) = match sent {
            Err(_) => {
                return Err(ProxyError::Upstream(UpstreamError::Timeout(
                    self.request_timeout,
                )));
            }
            Ok(Err(SendError::Edge(error))) => return Err(error),
            Ok(Err(SendError::Client(error))) => {
                let error = ProxyError::from_upstream(error.as_error());
                if let ProxyError::Upstream(UpstreamError::Unreachable(chain)) = &error {
                    tracing::debug!(route = %route.name, error = %chain, "upstream request failed");
                }
                return Err(error);
            }
            Ok(Ok(exchange)) => exchange,
        };
        record.set_upstream(response.status().as_u16(), started.elapsed());
        let (mut parts, body) = response.into_parts();
        crate::hop::strip(&mut parts.headers);
        crate::session::record_upstream_id(route.protocol, &record, &parts.headers);
        let mut body = UpstreamBody::new(body, self.stream_idle_timeout).with_checkin(checkin);
        if is_event_stream(&parts.headers) {
            // Reverse proxies in front of the edge (nginx) must not buffer the stream either.
            parts
                .headers
                .entry(X_ACCEL_BUFFERING.clone())
                .or_insert(HeaderValue::from_static("no"));
            if let Some(interval) = route.keep_alive {
                body = body.with_keep_alive(interval);
            }
        }
        Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
    }

    /// Several replicas: the session's replica (or the next in round robin); a replica that
    /// refuses the connection is marked down and the request goes to the next choice, as long
    /// as its body has not started to go out. Returns the response and the replica's index.
    async fn send_balanced<R>(
        &self,
        balancer: &Balancer,
        route: &Route,
        parts: &http::request::Parts,
        body: R,
    ) -> Result<(Exchange, usize), SendError>
    where
        R: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
    {
        let session = affinity_key(&parts.headers);
        let mut tried: Vec<usize> = Vec::new();
        let slot = Arc::new(Mutex::new(Some(body)));
        loop {
            let Some(index) = balancer.pick(session.as_ref().map(|s| s.as_bytes()), &tried) else {
                return Err(SendError::Edge(ProxyError::Upstream(
                    UpstreamError::Unreachable("every replica refused the connection".into()),
                )));
            };
            tried.push(index);
            let replica = self.replica(index).map_err(SendError::Edge)?;
            let mut request = Request::new(Reclaimable::new(slot.clone()).boxed_unsync());
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = replica
                .uri_for(route, &parts.uri)
                .map_err(SendError::Edge)?;
            *request.headers_mut() = parts.headers.clone();
            *request.version_mut() = parts.version;
            match exchange(replica.pool.as_ref(), &self.client, request).await {
                Ok(exchange) => return Ok((exchange, index)),
                Err(error) if error.is_connect() => {
                    balancer.mark_down(index);
                    tracing::warn!(route = %route.name, replica = %replica.authority, error = %crate::error::error_chain(error.as_error()), "replica refused the connection; marked down");
                    // The body never left if hyper did not take it out of the slot.
                    let untouched = slot.lock().map(|b| b.is_some()).unwrap_or(false);
                    if !untouched {
                        return Err(SendError::Client(error));
                    }
                }
                Err(error) => return Err(SendError::Client(error)),
            }
        }
    }

    /// A sessionless MCP POST to several replicas, which may be an `initialize` that makes a
    /// stateful server choose a session id. Later requests with that id go to the replica the
    /// id hashes to, so the session must be created there: when the answer carries a new
    /// `Mcp-Session-Id` that hashes elsewhere, the session is deleted again on the replica
    /// that made it and the request is repeated (round robin moves on) until a replica makes
    /// an id that hashes to itself — on average as many attempts as there are replicas, only
    /// when a session starts, and no state shared between edges. The body is replayed from
    /// memory (JSON-RPC messages are small); a body above [`PLACEMENT_BODY_LIMIT`] is sent once.
    async fn send_placing<B>(
        &self,
        balancer: &Balancer,
        route: &Route,
        parts: &http::request::Parts,
        body: RequestBody<B>,
    ) -> Result<(Exchange, usize), SendError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (prefix, rest) = read_up_to(body, PLACEMENT_BODY_LIMIT).await?;
        if let Some(rest) = rest {
            let whole = Prefixed::new(prefix, rest.boxed_unsync());
            return self.send_balanced(balancer, route, parts, whole).await;
        }
        let body = prefix;
        // Each attempt lands right with probability 1/n: after 16n attempts a miss is
        // below 1e-7 (n = 3: 4e-9), while the expected count stays n.
        let attempts = balancer.len().saturating_mul(16).max(32);
        for attempt in 1..=attempts {
            let full = http_body_util::Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            let (exchange, index) = self.send_balanced(balancer, route, parts, full).await?;
            let Some(id) = exchange.0.headers().get(&MCP_SESSION_HEADER) else {
                return Ok((exchange, index));
            };
            if balancer.pick(Some(id.as_bytes()), &[]) == Some(index) {
                return Ok((exchange, index));
            }
            if attempt == attempts {
                tracing::warn!(route = %route.name, attempts, "no replica created a session that hashes to itself; later requests of this session may reach another replica");
                return Ok((exchange, index));
            }
            self.delete_session(route, parts, index, id.clone());
        }
        Err(SendError::Edge(ProxyError::Upstream(
            UpstreamError::Unreachable("no replica answered".into()),
        )))
    }

    /// Ends a session the edge made by mistake (best effort, in the background).
    fn delete_session(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        index: usize,
        id: HeaderValue,
    ) {
        let Some(replica) = self.replicas.get(index) else {
            return;
        };
        let Ok(uri) = replica.uri_for(route, &parts.uri) else {
            return;
        };
        let mut request = Request::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = http::Method::DELETE;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in &parts.headers {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(MCP_SESSION_HEADER.clone(), id);
        let client = self.client.clone();
        let pool = replica.pool.clone();
        tokio::spawn(async move {
            let deleting = exchange(pool.as_ref(), &client, request);
            let _ = tokio::time::timeout(Duration::from_secs(10), deleting).await;
        });
    }

    /// AgentCore Runtime: reads a small body once to hash it (larger ones stream, unsigned
    /// payload), signs, sends.
    async fn send_signed<B>(
        &self,
        agentcore: &AgentCore,
        mut parts: http::request::Parts,
        body: RequestBody<B>,
    ) -> Result<Exchange, SendError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let replica = self.replica(0).map_err(SendError::Edge)?;
        parts.uri = replica.base_uri.clone();
        parts.method = http::Method::POST;
        let (buffered, rest) = read_up_to(body, SIGNED_PAYLOAD_LIMIT).await?;
        let (payload, outbound) = match rest {
            None => (
                Payload::of(&buffered),
                http_body_util::Full::new(buffered)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            Some(rest) => (
                Payload::Unsigned,
                Prefixed::new(buffered, rest.boxed_unsync()).boxed_unsync(),
            ),
        };
        agentcore
            .signer
            .sign(&parts.method, &parts.uri, &mut parts.headers, &payload)
            .await
            .map_err(|e| SendError::Edge(ProxyError::Upstream(UpstreamError::Signing(e.0))))?;
        exchange(None, &self.client, Request::from_parts(parts, outbound))
            .await
            .map_err(SendError::Client)
    }
}

/// A response, and the pooled connection to give back when its body ends.
type Exchange = (Response<Incoming>, Option<Checkin>);

/// Sends through the replica's own pool, or hyper-util's client where there is none.
async fn exchange(
    pool: Option<&Arc<Pool>>,
    client: &UpstreamClient,
    request: Request<OutboundBody>,
) -> Result<Exchange, ClientError> {
    let Some(pool) = pool else {
        let response = client.request(request).await.map_err(ClientError::Client)?;
        return Ok((response, None));
    };
    let (response, checkin) = pool.send(request).await.map_err(ClientError::Pool)?;
    if response.body().is_end_stream() {
        // No body to wait for (204, 304, `Content-Length: 0`).
        checkin.give_back();
        return Ok((response, None));
    }
    Ok((response, Some(checkin)))
}

/// How the upstream exchange failed, by whichever client sent it.
enum ClientError {
    Pool(PoolError),
    Client(hyper_util::client::legacy::Error),
}

impl ClientError {
    /// Nothing left: the connection was refused or could not be made.
    fn is_connect(&self) -> bool {
        match self {
            Self::Pool(error) => error.is_connect(),
            Self::Client(error) => error.is_connect(),
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Self::Pool(error) => error,
            Self::Client(error) => error,
        }
    }
}

/// Sessionless MCP bodies up to this size are kept to be replayed (see `send_placing`).
const PLACEMENT_BODY_LIMIT: usize = 256 * 1024;

/// Reads `body` until it ends or passes `limit` bytes: the bytes read, and the rest of the
/// body when it did not end.
async fn read_up_to<B>(
    mut body: RequestBody<B>,
    limit: usize,
) -> Result<(Bytes, Option<RequestBody<B>>), SendError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut buffered = BytesMut::new();
    while buffered.len() <= limit {
        match body.frame().await {
            None => return Ok((buffered.freeze(), None)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffered.extend_from_slice(&data);
                }
            }
            // The client's body failed: over the limit (413) or unreadable (400).
            Some(Err(error)) => return Err(SendError::Edge(ProxyError::from_upstream(&*error))),
        }
    }
    Ok((buffered.freeze(), Some(body)))
}

/// How sending failed: an error the edge decided, or the client's.
enum SendError {
    Edge(ProxyError),
    Client(ClientError),
}

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether a response is a server-sent event stream (media types are case-insensitive). The
/// record layer counts such responses in `gatehouse_active_streams` by the same test.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii_start()
            .get(..17)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn event_streams_are_told_by_their_media_type_in_any_case() {
        for (content_type, streaming) in [
            ("text/event-stream", true),
            ("Text/Event-Stream", true),
            ("text/event-stream; charset=utf-8", true),
            (" TEXT/EVENT-STREAM", true),
            ("application/json", false),
            ("text/event", false),
            ("text/plain", false),
        ] {
            assert_eq!(
                is_event_stream(&headers(&[("content-type", content_type)])),
                streaming,
                "{content_type:?}"
            );
        }
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
