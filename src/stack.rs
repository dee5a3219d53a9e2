//! The request stack, composed once, in order. Read it top to bottom to follow a request from
//! the socket to the upstream; each layer says what it needs from the ones above it.
//!
//! ```text
//!  client ─▶ Record ─▶ Route ─▶ Limits ─▶ Cors ─▶ Metadata ─▶ Auth ─▶ Session ─▶ McpPolicy ─▶ Quota ─▶ Enrich ─▶ Outbound ─▶ Forward ─▶ agent
//!         ◀─ (error → response, decorate, log at body end) ◀──────── streaming response ◀──
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Service, ServiceBuilder};

use crate::app::App;
use crate::auth::AuthLayer;
use crate::body::BoxError;
use crate::context::ConnInfo;
use crate::cors::CorsLayer;
use crate::enrich::Enrich;
use crate::forward::Forward;
use crate::limits::RequestLimits;
use crate::mcp::McpPolicyLayer;
use crate::metadata::MetadataLayer;
use crate::outbound::OutboundLayer;
use crate::phase::Phase;
use crate::quota::QuotaLayer;
use crate::route::Routing;
use crate::session::SessionLayer;
use crate::telemetry::record::{RecordBody, RecordLayer};

/// Builds the stack for request bodies of type `B` (any body: tests, benches), as if for a
/// connection whose address is unknown (`0.0.0.0`).
pub fn build<B>(
    app: Arc<App>,
) -> impl Service<Request<B>, Response = Response<RecordBody>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    for_connection(app, ConnInfo::default())
}

/// Builds the stack for the requests of one client connection (the server builds one per
/// accepted connection; the record carries `conn` instead of each request's extensions).
pub(crate) fn for_connection<B>(
    app: Arc<App>,
    conn: ConnInfo,
) -> impl Service<Request<B>, Response = Response<RecordBody>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    ServiceBuilder::new()
        // Outermost, so it sees every outcome: opens the request record (id, trace, the
        // settings snapshot) and hands it down on the request body (context::Recorded), turns
        // errors from any layer below into their one response (error.rs), adds the headers
        // all responses share, and logs when the body ends.
        .layer(RecordLayer::new(app.clone(), conn))
        // Needs the record's settings snapshot. Everything below is per route.
        .layer(Phase(Routing))
        // Cheap refusals (431, declared 413) before any real work.
        .layer(Phase(RequestLimits))
        // Needs the route's CORS policy. Before metadata and auth: preflights and the
        // metadata documents are answered without a token, and a foreign Origin is refused
        // before anything else happens.
        .layer(CorsLayer)
        // Needs the route's target. Answers RFC 9728 metadata requests; no token needed.
        .layer(MetadataLayer)
        // Needs the route's authorizer. Verifies the token and policy before any upstream
        // contact and before the body is read; adds the Principal.
        .layer(AuthLayer::new(app.token_cache.clone()))
        // Needs the Principal. Checks that a session id is the caller's and unwraps it (MCP),
        // or issues one bound to the caller (HTTP routes with sessionBinding).
        .layer(SessionLayer)
        // Needs the Principal (rules and Cedar decide on its claims) and the session checked
        // (a refused session is answered before the body is read). MCP routes with an `mcp`
        // block only: reads the POST's JSON-RPC message (bounded), decides, refuses or
        // forwards the same bytes; adds the McpMessage; filters list responses. Before
        // Enrich, so nothing is prepared for a request that will be refused.
        .layer(McpPolicyLayer)
        // Needs the Principal, the client address and (for `tool` keys and `match`) the MCP
        // message, so after auth, session and MCP policy: only authorized requests use
        // quota. Before enrich and forward: a throttled request reaches nothing. Its permits
        // ride on the response body, released when the body ends or the client goes away.
        .layer(QuotaLayer)
        // Needs the Principal (identity headers, baggage) and the record (ids, trace).
        .layer(Phase(Enrich))
        // Needs the enriched headers (it sets Authorization after Enrich rebuilt them) and
        // the caller's token that Auth handed over. Routes with outboundAuth get the
        // upstream's own credential (RFC 8693 exchange or client credentials), or a 403/503
        // and nothing forwarded; other routes pass without a boxed future.
        .layer(OutboundLayer)
        // Needs the enriched request; streams it to the route's upstream and back.
        .service(Forward)
}
