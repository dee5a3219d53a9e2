//! In-process integration tests: the real server on port 0, an in-process issuer and a
//! recording upstream (see `support`). Run by `cargo test`.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod errors;
mod headers;
mod hostile;
mod keys;
mod mcp;
mod reload;
mod replicas;
mod streams;
mod support;
mod surface;
