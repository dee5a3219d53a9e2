//! gatehouse: an authenticating edge for AI agents and MCP servers.
#![forbid(unsafe_code)]

pub mod config;
pub mod dev;
