//! Header-name rules: what `requestHeaderAllowlist` may forward (AgentCore's rules, SPEC §3)
//! and what `claimsToHeaders` may set.
//!
//! The restricted list is AgentCore's (docs: runtime-header-allowlist; mirrored in the Python
//! SDK's `RESTRICTED_HEADERS`, see research/agentcore.md §3.4), kept in one table so the rule
//! and its documentation cannot drift. Every `Access-Control-*` name is treated as restricted,
//! as the AgentCore docs say, not only the eight the SDK spells out.

/// AgentCore's restricted request headers: never forwarded, so never allowlisted.
pub const RESTRICTED_HEADERS: &[&str] = &[
    // Authentication and authorization
    "Proxy-Authorization",
    "WWW-Authenticate",
    // Content negotiation
    "Accept",
    "Accept-Charset",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Content-Language",
    "Content-Location",
    "Content-Range",
    // Caching
    "Cache-Control",
    "ETag",
    "Expires",
    "If-Match",
    "If-Modified-Since",
    "If-None-Match",
    "If-Range",
    "If-Unmodified-Since",
    "Last-Modified",
    "Pragma",
    "Vary",
    // Connection management
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Upgrade",
    // Request context
    "Host",
    "User-Agent",
    "Referer",
    "From",
    // Range and transfer
    "Range",
    "Accept-Ranges",
    "Transfer-Encoding",
    "TE",
    "Trailer",
    // Server information
    "Server",
    "Date",
    "Location",
    "Retry-After",
    // Cookies
    "Set-Cookie",
    "Cookie",
    // Security
    "Content-Security-Policy",
    "Content-Security-Policy-Report-Only",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Referrer-Policy",
    "Permissions-Policy",
    "Cross-Origin-Embedder-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    // CORS (and every other Access-Control-* name, see `is_restricted`)
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Origin",
    // Client hints
    "Accept-CH",
    "Accept-CH-Lifetime",
    "DPR",
    "Width",
    "Viewport-Width",
    "Downlink",
    "ECT",
    "RTT",
    "Save-Data",
    // Experimental and deprecated
    "Clear-Site-Data",
    "Feature-Policy",
    "Expect-CT",
    "Public-Key-Pins",
    "Public-Key-Pins-Report-Only",
    // Proxies
    "Via",
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "X-Requested-With",
    "X-CSRF-Token",
    // IP spoofing and URL rewriting
    "True-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "X-Originating-IP",
    "X-Source-IP",
    "X-Original-URL",
    "X-Original-Host",
    "X-Rewrite-URL",
    // CDNs
    "CF-Ray",
    "CF-Connecting-IP",
    "X-Amz-Cf-Id",
    "X-Cache",
    "X-Served-By",
    // HTTP/2 pseudo-headers
    ":method",
    ":path",
    ":scheme",
    ":authority",
    ":status",
    // Server push
    "Link",
    // WebSocket
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

/// The one `x-amzn-` prefix a route may allowlist or set (AgentCore's custom headers).
pub const CUSTOM_HEADER_PREFIX: &str = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-";

/// AgentCore's allowlist size limit.
pub(super) const MAX_ALLOWLIST: usize = 20;

/// AgentCore's `HeaderName`: `^[A-Za-z][A-Za-z0-9_-]{0,255}$`.
pub fn is_header_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 256
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// On AgentCore's restricted list (case-insensitive), or any `Access-Control-*`.
pub fn is_restricted(name: &str) -> bool {
    RESTRICTED_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        || starts_with_ignore_case(name, "Access-Control-")
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

const NAME_RULE: &str =
    "use letters, digits, '-' and '_', starting with a letter, at most 256 characters";

/// Rules shared by allowlisted and edge-set headers; `None` when the name is fine.
fn common_problem(name: &str) -> Option<String> {
    if !is_header_name(name) {
        return Some(format!("{name:?} is not a valid header name: {NAME_RULE}"));
    }
    if crate::hop::is_hop_by_hop(name) {
        return Some(format!(
            "{name} is a hop-by-hop header, which proxies never forward: remove it"
        ));
    }
    if is_restricted(name) {
        return Some(format!(
            "{name} is on AgentCore's restricted header list (the edge or HTTP itself manages it): remove it"
        ));
    }
    if starts_with_ignore_case(name, "x-amz-") {
        return Some(format!(
            "{name}: x-amz-* headers are reserved for AWS request signing (SigV4): remove it"
        ));
    }
    if starts_with_ignore_case(name, "x-amzn-") {
        let custom = starts_with_ignore_case(name, CUSTOM_HEADER_PREFIX)
            && name.len() > CUSTOM_HEADER_PREFIX.len();
        if !custom {
            return Some(format!(
                "{name}: x-amzn-* headers are reserved for AWS; the only allowed ones start with {CUSTOM_HEADER_PREFIX} (e.g. {CUSTOM_HEADER_PREFIX}Tenant)"
            ));
        }
    }
    None
}

/// Why `name` may not be in a `requestHeaderAllowlist`, if it may not.
pub(super) fn allowlist_problem(name: &str, custom_jwt: bool) -> Option<String> {
    if let Some(problem) = common_problem(name) {
        return Some(problem);
    }
    if name.eq_ignore_ascii_case("Authorization") && !custom_jwt {
        return Some(
            "Authorization can be forwarded only on CUSTOM_JWT routes (as in AgentCore): remove it, or give the route a customJwtAuthorizer"
                .to_owned(),
        );
    }
    None
}

/// Why the edge may not set `name` from a claim (`claimsToHeaders`), if it may not.
pub(super) fn claim_header_problem(name: &str) -> Option<String> {
    if let Some(problem) = common_problem(name) {
        return Some(problem);
    }
    if name.eq_ignore_ascii_case("Authorization") {
        return Some(
            "Authorization carries the caller's token and cannot be set from a claim: choose another header name"
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_rules() {
        assert_eq!(allowlist_problem("X-Tenant", false), None);
        assert_eq!(allowlist_problem("Authorization", true), None);
        assert_eq!(
            allowlist_problem("x-amzn-bedrock-agentcore-runtime-custom-tenant", false),
            None
        );
        let cases = [
            ("Authorization", "only on CUSTOM_JWT routes"),
            ("1X", "not a valid header name"),
            ("X Y", "not a valid header name"),
            ("Keep-Alive", "hop-by-hop"),
            ("proxy-authorization", "hop-by-hop"),
            ("Proxy-Foo", "hop-by-hop"),
            ("te", "hop-by-hop"),
            ("cookie", "restricted"),
            ("Access-Control-Allow-Private-Network", "restricted"),
            ("X-Forwarded-For", "restricted"),
            ("X-Amz-Date", "SigV4"),
            ("X-Amz-Cf-Id", "restricted"),
            ("X-Amzn-Trace-Id", "x-amzn-*"),
            ("X-Amzn-Bedrock-AgentCore-Runtime-Custom-", "x-amzn-*"),
        ];
        for (name, why) in cases {
            let problem = allowlist_problem(name, false).unwrap_or_default();
            assert!(problem.contains(why), "{name}: {problem}");
        }
        assert!(claim_header_problem("Authorization").is_some());
        assert_eq!(claim_header_problem("X-Gatehouse-Sub"), None);
    }

    #[test]
    fn restricted_table_is_consistent() {
        for name in RESTRICTED_HEADERS {
            assert!(is_restricted(name));
            assert!(name.starts_with(':') || is_header_name(name), "{name}");
        }
        assert_eq!(RESTRICTED_HEADERS.len(), 108);
    }
}
