//! In-process integration tests: the real server on port 0, an in-process issuer and a
//! recording upstream (see `support`). Run by `cargo test`.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod abuse;
mod bench;
mod closing;
mod errors;
mod faults;
mod header_rules;
mod headers;
mod hostile;
mod keys;
mod load;
mod mcp;
mod mcp_policy;
mod outbound;
mod pool;
mod quotas;
mod quotas_redis;
mod reload;
mod replicas;
mod rollout;
mod sessions;
mod soak;
mod streams;
mod support;
mod surface;
mod telemetry;
mod threads;
