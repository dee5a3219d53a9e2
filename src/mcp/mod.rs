//! MCP method and tool authorization (SPEC §11), the phase between the session and enrich
//! phases on MCP routes with an `mcp` block.
//!
//! - [`read`]: the POST's one JSON-RPC message, read once and bounded; the mirrored
//!   `Mcp-Method` / `Mcp-Name` headers checked against it. The result is a [`McpMessage`]
//!   request extension (quotas and telemetry use it) and the body, forwarded byte for byte.
//! - [`rules`] (`mcp.rules`, first match decides) or [`cedar`] (`mcp.cedar`, AgentCore Policy
//!   compatible) decide; [`engine`] holds a route's compiled block.
//! - [`filter`]: list responses lose the entries the caller could never use.
//! - [`policy`]: the Layer/Service that runs all of it.
//!
//! Routes without an `mcp` block never read the body: their requests stream as before.

pub mod cedar;
pub mod engine;
pub mod filter;
pub mod message;
pub mod policy;
pub mod read;
pub mod rules;

use serde_json::value::RawValue;

pub use engine::McpPolicy;
pub use message::McpMessage;
pub use policy::{McpPolicyLayer, PolicyBody};

use self::read::ReadError;
use self::rules::Refusal;

/// The JSON-RPC error code of a denial (in the server-defined range; MCP defines none).
pub const ACCESS_DENIED: i32 = -32003;

/// Why the MCP phase answered a request itself.
#[derive(Debug)]
pub enum McpError {
    /// The message could not be read or is not one the edge decides on (400, 413).
    Read(ReadError),
    /// The rules or the Cedar policies refused it (403).
    Denied(Box<Denied>),
}

/// A refused message: what it asked and why it was refused.
#[derive(Debug)]
pub struct Denied {
    pub id: Option<Box<RawValue>>,
    pub method: Option<String>,
    pub name: Option<String>,
    pub refusal: Refusal,
    /// The route's RFC 9728 metadata URL, for the step-up challenge.
    pub resource_metadata: String,
}

impl Denied {
    /// `Access denied: tools/call admin_wipe`, naming the method and what it was about.
    pub fn message(&self) -> String {
        let method = self.method.as_deref().unwrap_or("response");
        match &self.name {
            Some(name) => format!("Access denied: {method} {name}"),
            None => format!("Access denied: {method}"),
        }
    }
}
