//! The one JSON-RPC message of an MCP POST, as read by the MCP policy phase (SPEC §11).
//!
//! The reader ([`super::read`]) inserts it into the request's extensions after authentication;
//! quotas (§12) key and match on it (`tool`, `match: { method, name }`) and telemetry records
//! it. A request without this extension carried no message (GET, DELETE, or a route that reads
//! none).

use serde_json::value::RawValue;

/// One JSON-RPC 2.0 message from the client.
#[derive(Debug, Clone)]
pub struct McpMessage {
    /// The method (`tools/call`, `initialize`, ...); `None` for a response from the client.
    pub method: Option<String>,
    /// What the call is about: the tool (`tools/call`), the prompt (`prompts/get`) or the
    /// resource URI (`resources/read`), from `params.name` / `params.uri`.
    pub name: Option<String>,
    /// The request's `id` exactly as sent (`7`, `"a-1"`), for JSON-RPC error bodies; `None`
    /// for a notification.
    pub id: Option<Box<RawValue>>,
    /// `params.arguments` of a `tools/call`, as sent (Cedar's `context.input`).
    pub arguments: Option<Box<RawValue>>,
}

impl McpMessage {
    /// `tools/call` with a tool name: the tool, for quota keys and span attributes.
    pub fn tool(&self) -> Option<&str> {
        match self.method.as_deref() {
            Some("tools/call") => self.name.as_deref(),
            _ => None,
        }
    }
}
