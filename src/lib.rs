//! gatehouse: an authenticating edge for AI agents and MCP servers.
//!
//! Every request on the public listener takes one path, composed in [`stack`]:
//!
//! ```text
//!  accept (server) ─▶ record ─▶ route ─▶ limits ─▶ cors ─▶ metadata ─▶ auth ─▶ session ─▶ mcp ─▶ quota ─▶ enrich ─▶ outbound ─▶ forward ─▶ agent
//! ```
//!
//! - [`server`]: listeners, TLS, HTTP/1.1 + h2, request threads, lingering close, graceful
//!   drain.
//! - [`telemetry::record`]: opens the per-request record (`context`); errors become responses
//!   ([`error`]); the access log and metrics are written when the response body ends.
//! - `route`: path → `Route`, or its OAuth protected resource metadata.
//! - `limits`, `cors`, `metadata`: refusals and answers that need no token.
//! - [`auth`]: JWT validation against the issuer's cached JWKS, then route policy.
//! - [`session`]: session ids bound to the caller; every rule about session ids.
//! - [`mcp`]: on MCP routes with an `mcp` block, the POST's JSON-RPC message read once and
//!   decided by rules or Cedar (AgentCore Policy); denials answered here; lists filtered.
//! - [`quota`]: rate and concurrency limits per key, local or shared through Redis (429).
//! - [`enrich`]: the headers the upstream gets (allowlist, identity, session, trace).
//! - [`outbound`]: the upstream's own credential (RFC 8693 token exchange or client
//!   credentials) in place of the caller's token, where the route says so.
//! - [`forward`]: sends to the route's `upstream` over each replica's own keep-alive pool
//!   (hyper-util's client for h2 and AgentCore); bodies stream both ways.
//!
//! Configuration is loaded and validated by [`config`] and compiled by `settings`; [`app`]
//! holds the current settings and swaps them on reload. `admin` serves health, readiness and
//! metrics on its own listener. [`dev`] holds the development issuer, echo agent and token tools
//! behind `gatehouse dev` and `gatehouse token`, also used by the integration tests.
//! [`bench`] is `gatehouse bench`, the load generator.
//!
//! Only what the binary, the tests, the fuzz targets and the benches use is public; the rest is
//! crate-private so the compiler reports what nothing uses.
#![forbid(unsafe_code)]

mod admin;
pub mod app;
pub mod auth;
pub mod bench;
mod body;
pub mod config;
mod context;
mod cors;
pub mod dev;
pub mod enrich;
pub mod error;
pub mod forward;
mod hop;
mod limits;
pub mod mcp;
mod metadata;
pub mod outbound;
mod phase;
pub mod quota;
mod route;
pub mod server;
pub mod session;
mod settings;
mod shard;
pub mod stack;
pub mod telemetry;
mod tls;
mod upstream;

#[cfg(test)]
mod test_support;
