//! Development and test tooling: signing keys and token minting ([`keys`]), an in-process OIDC
//! issuer ([`issuer`]) and an echo agent that follows the AgentCore runtime contract ([`agent`]).
//!
//! Three users: `gatehouse dev` (issuer + agent + edge in one process), `gatehouse token`
//! (mint a JWT from a local key or from a running `gatehouse dev`), and the in-process
//! integration tests, which need an issuer they can break on purpose and an upstream that
//! records what reached it.

pub mod agent;
pub mod issuer;
pub mod keys;
mod mint_args;
pub mod run;
mod serve;

pub use agent::{AgentOptions, Behavior, EchoAgent, Recorded};
pub use issuer::{IssuerOptions, Mode, TestIssuer};
pub use keys::{
    Alg, DevState, DevStateError, KeyError, MintOptions, SigningKey, mint, parse_claim_arg,
};
pub use mint_args::MintArgs;
pub use run::{DevOptions, dev_config};
pub use serve::WaitTimeout;
