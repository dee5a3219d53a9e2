//! Interop tier: gatehouse against real third-party peers no one here wrote — the certified
//! OpenID provider `oidc-provider` (npm) issuing JWT access tokens by client_credentials, and an
//! agent built with the AgentCore Python SDK (`bedrock-agentcore`, `BedrockAgentCoreApp`).
//!
//! Needs `scripts/setup-interop.sh` (the README's test command runs it). Run with
//! `cargo test --features interop --test interop`.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod agentcore;
mod mcp;
mod mcp_policy;
mod otlp;
mod outbound;
mod sigv4;
mod support;
