//! MCP-specific phases. [`message`] holds the JSON-RPC message a policy phase reads from a POST
//! body once (bounded) and hands on as a typed request extension, so later phases (quotas,
//! telemetry) never parse the body again.

pub mod message;

pub use message::McpMessage;
