//! The defaults SPEC §3 and `docs/configuration.md` promise, in one place, and the paths a
//! route answers on. The file shape keeps `Option`s so that "not written" stays visible; the
//! runtime settings fill them from here.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub const SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(30);
pub const MAX_REQUEST_HEADER_BYTES: u64 = 64 * 1024;
/// AgentCore's payload limit (100 MB, decimal).
pub const MAX_REQUEST_BODY_BYTES: u64 = 100_000_000;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: u32 = 10_000;

pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Every algorithm gatehouse verifies; HMAC and `none` are never accepted.
pub const ALGORITHMS: &[&str] = super::validate::ALGORITHMS;
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_KEY_STALENESS: Duration = Duration::from_secs(24 * 60 * 60);
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// `0` disables the cache.
pub const VERIFIED_TOKEN_CACHE_ENTRIES: u64 = 100_000;

pub const SERVICE_NAME: &str = "gatehouse";
pub const SAMPLING: f64 = 1.0;
pub const ACCESS_LOG: &str = "stdout";
pub const SERVER_TIMING: bool = false;
pub const OTLP_PROTOCOL: &str = "grpc";

pub const PROTOCOL: &str = "HTTP";
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const QUALIFIER: &str = "DEFAULT";
/// Upstream path of `HTTP` routes (the AgentCore runtime contract).
pub const HTTP_UPSTREAM_PATH: &str = "/invocations";
/// Upstream path of `MCP` routes (Streamable HTTP).
pub const MCP_UPSTREAM_PATH: &str = "/mcp";

// outboundAuth (SPEC §13).
/// One token request, including the wait for a free slot.
pub const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Token requests in flight to the endpoint, per route.
pub const OUTBOUND_MAX_CONCURRENCY: u32 = 16;
/// Tokens cached per route.
pub const OUTBOUND_CACHE_MAX_ENTRIES: u64 = 10_000;

/// The path a route answers on when it sets none: `/runtimes/{name}/invocations`, as
/// AgentCore's data plane.
pub fn route_path(name: &str) -> String {
    format!("/runtimes/{name}/invocations")
}

/// Everything but unreserved characters (RFC 3986) is escaped, so `:` and `/` in the ARN
/// become `%3A` and `%2F`, as AgentCore clients send them.
const ARN_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The alias path of a route with an `arn`: `/runtimes/{url-escaped arn}/invocations`.
pub fn arn_alias_path(arn: &str) -> String {
    format!(
        "/runtimes/{}/invocations",
        utf8_percent_encode(arn, ARN_ESCAPE)
    )
}

/// `mcp.maxMessageBytes`: a JSON-RPC message is read whole to decide on it.
pub const MCP_MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths() {
        assert_eq!(route_path("support"), "/runtimes/support/invocations");
        assert_eq!(
            arn_alias_path(
                "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj"
            ),
            "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fsupport-AbCdEfGhIj/invocations"
        );
    }
}
