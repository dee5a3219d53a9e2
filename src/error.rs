//! The one place where a failed request becomes an HTTP response (SPEC §7).
//!
//! Every phase has its own small error; they meet here in [`ProxyError`], and
//! [`ProxyError::into_response`] is the only function that maps them to a status, an
//! `x-amzn-ErrorType`, a JSON `{"message": ...}` body and, for authentication failures, the
//! RFC 6750 / RFC 9728 `WWW-Authenticate` challenge. The conversion has no side effects; the
//! record layer calls it and then records the outcome.
//!
//! Messages are written for the caller and never contain the token. Quoted challenge values
//! never contain `"` (they are built from configuration checked at load time and from fixed
//! strings), because the MCP SDKs parse them with unanchored regular expressions.
//!
//! ```
//! use gatehouse::error::ProxyError;
//! let response = ProxyError::NoRoute.into_response();
//! assert_eq!(response.status(), 404);
//! assert_eq!(response.headers()["x-amzn-ErrorType"], "ResourceNotFoundException");
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::auth::challenge::Challenge;
use crate::auth::policy::Denial;
use crate::auth::{AuthError, AuthOutcome};
use crate::body::ProxyBody;
use crate::forward::UpstreamError;
use crate::forward::body::{BodyTooLarge, ClientBodyError};
use crate::mcp::{self, McpError, read::ReadError, rules::Refusal};
use crate::outbound::OutboundError;
use crate::quota::QuotaError;
use crate::route::Protocol;
use serde_json::value::RawValue;

pub static X_AMZN_ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");

/// Seconds a client should wait before retrying while the issuer's keys are unavailable.
const RETRY_AFTER_SECONDS: &str = "5";

/// Why a request ended in error, for the access log (`error`), the spans (`error.type`) and
/// span status. Telemetry reads this type; [`ErrorReason::as_str`] is the one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    NoRoute,
    /// Authentication failed (the outcome's own label: `missing`, `invalid`, ...).
    Auth(AuthOutcome),
    OriginNotAllowed,
    MethodNotAllowed,
    BadRequest,
    HeadersTooLarge,
    BodyTooLarge,
    SessionNotBound,
    /// Over a quota rule or `authFailuresPerIp` (429).
    Throttled,
    /// The quota store failed and `onError: deny` (503).
    QuotaStoreUnavailable,
    /// The token endpoint refused the upstream's credential (SPEC §13).
    OutboundRefused,
    /// The upstream's credential could not be obtained (SPEC §13).
    OutboundUnavailable,
    /// An MCP message over `mcp.maxMessageBytes` (SPEC §11).
    McpTooLarge,
    /// An MCP message the edge cannot decide on (not JSON-RPC, a batch, headers disagreeing).
    McpInvalid,
    /// An MCP message refused by the route's rules or Cedar policies.
    McpDenied,
    /// Refused for a scope the token lacks (the MCP step-up challenge).
    McpInsufficientScope,
    UpstreamTimeout,
    UpstreamSigning,
    UpstreamUnreachable,
    /// The response body failed, or the client went away, before it ended.
    StreamError,
    /// The upstream answered 5xx (server spans only: the edge itself saw no error).
    Http5xx,
}

impl ErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::Auth(outcome) => outcome.as_str(),
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest => "bad_request",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::SessionNotBound => "session_not_bound",
            Self::Throttled => "throttled",
            Self::QuotaStoreUnavailable => "quota_store_unavailable",
            Self::OutboundRefused => "outbound_refused",
            Self::OutboundUnavailable => "outbound_unavailable",
            Self::McpTooLarge => "mcp_too_large",
            Self::McpInvalid => "mcp_invalid",
            Self::McpDenied => "mcp_denied",
            Self::McpInsufficientScope => "mcp_insufficient_scope",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamSigning => "upstream_signing",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::StreamError => "stream_error",
            Self::Http5xx => "http_5xx",
        }
    }

    /// The upstream was called and did not answer: the request still has a client span.
    pub fn upstream_failed(self) -> bool {
        matches!(self, Self::UpstreamTimeout | Self::UpstreamUnreachable)
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first error of type `E` in `error`'s cause chain.
fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `error: cause: cause...`, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Every way the edge itself can answer a request with an error.
#[derive(Debug)]
pub enum ProxyError {
    /// No route for the path.
    NoRoute,
    /// The token was missing, invalid or not allowed, or keys were unavailable.
    Auth {
        error: AuthError,
        challenge: Box<Challenge>,
    },
    /// A browser `Origin` that the route's CORS policy does not allow.
    OriginNotAllowed,
    /// A method the edge's own endpoints (metadata) do not serve.
    MethodNotAllowed,
    /// A request the edge refuses to forward (bad session id, malformed header, ...).
    BadRequest(Cow<'static, str>),
    HeadersTooLarge {
        limit: u64,
    },
    BodyTooLarge {
        limit: u64,
    },
    Upstream(UpstreamError),
    /// A session id not bound to this caller (`sessionBinding`): 404 on MCP routes, as for a
    /// session the server no longer knows, 403 on HTTP routes.
    SessionNotBound {
        protocol: Protocol,
    },
    /// Over a quota (SPEC §12) or `authFailuresPerIp`, or the quota store failed closed.
    Quota(QuotaError),
    /// The upstream's own credential could not be obtained (SPEC §13): nothing forwarded.
    Outbound(OutboundError),
    /// The MCP policy phase refused the message (SPEC §11): unreadable, or denied.
    Mcp(McpError),
}

impl ProxyError {
    /// The authentication outcome this error represents, for spans, metrics and logs.
    pub fn auth_outcome(&self) -> Option<AuthOutcome> {
        match self {
            Self::Auth { error, .. } => Some(error.outcome()),
            _ => None,
        }
    }

    /// Why, as a type: the access log's `error` and the spans' `error.type`.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::NoRoute => ErrorReason::NoRoute,
            Self::Auth { error, .. } => ErrorReason::Auth(error.outcome()),
            Self::OriginNotAllowed => ErrorReason::OriginNotAllowed,
            Self::MethodNotAllowed => ErrorReason::MethodNotAllowed,
            Self::BadRequest(_) => ErrorReason::BadRequest,
            Self::HeadersTooLarge { .. } => ErrorReason::HeadersTooLarge,
            Self::BodyTooLarge { .. } => ErrorReason::BodyTooLarge,
            Self::SessionNotBound { .. } => ErrorReason::SessionNotBound,
            Self::Quota(QuotaError::Throttled { .. }) => ErrorReason::Throttled,
            Self::Quota(QuotaError::StoreUnavailable) => ErrorReason::QuotaStoreUnavailable,
            Self::Outbound(OutboundError::Refused(_)) => ErrorReason::OutboundRefused,
            Self::Outbound(OutboundError::Unavailable(_)) => ErrorReason::OutboundUnavailable,
            Self::Mcp(McpError::Read(ReadError::TooLarge { .. })) => ErrorReason::McpTooLarge,
            Self::Mcp(McpError::Read(_)) => ErrorReason::McpInvalid,
            Self::Mcp(McpError::Denied(denied)) => match denied.refusal {
                Refusal::Scope(_) => ErrorReason::McpInsufficientScope,
                _ => ErrorReason::McpDenied,
            },
            Self::Upstream(UpstreamError::Timeout(_)) => ErrorReason::UpstreamTimeout,
            Self::Upstream(UpstreamError::Signing(_)) => ErrorReason::UpstreamSigning,
            Self::Upstream(UpstreamError::Unreachable(_)) => ErrorReason::UpstreamUnreachable,
        }
    }

    /// Classifies a failed upstream exchange by walking the error's cause chain: the client's
    /// body over the limit is 413, the client's body unreadable (malformed chunking, a client
    /// gone mid-body) is 400 — not a 502 that blames the agent — and anything else (refused,
    /// reset, TLS, protocol) is the upstream unreachable, 502.
    pub fn from_upstream(error: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(limit) = find_cause::<BodyTooLarge>(error) {
            return Self::BodyTooLarge { limit: limit.0 };
        }
        if find_cause::<ClientBodyError>(error).is_some() {
            return Self::BadRequest("The request body could not be read.".into());
        }
        Self::Upstream(UpstreamError::Unreachable(error_chain(error)))
    }

    /// The response: status, `x-amzn-ErrorType`, JSON body, and challenge headers.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, kind, message, challenge): (
            StatusCode,
            &str,
            Cow<'static, str>,
            Option<String>,
        ) = match self {
            Self::NoRoute => (
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "No agent is configured at this path.".into(),
                None,
            ),
            Self::Auth { error, challenge } => return auth_response(error, &challenge),
            Self::Quota(error) => return quota_response(error),
            Self::Mcp(error) => return mcp_response(error),
            Self::OriginNotAllowed => (
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "Origin not allowed.".into(),
                None,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "ValidationException",
                "Only GET is served here.".into(),
                None,
            ),
            Self::SessionNotBound {
                protocol: Protocol::Mcp,
            } => (
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "Session not found: start a new session (initialize without Mcp-Session-Id)."
                    .into(),
                None,
            ),
            Self::SessionNotBound {
                protocol: Protocol::Http,
            } => (
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "This session id was not issued to this caller: send none to be given one.".into(),
                None,
            ),
            // The caller's token was valid, but the identity provider will not issue the
            // upstream's credential for it: the OAuth error code says why.
            Self::Outbound(OutboundError::Refused(code)) => (
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!("The identity provider refused the credential for the agent: {code}.")
                    .into(),
                None,
            ),
            Self::Outbound(OutboundError::Unavailable(_)) => {
                let mut response = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "The credential for the agent could not be obtained from the identity provider; retry shortly.",
                    None,
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
                return response;
            }
            Self::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "ValidationException",
                message,
                None,
            ),
            Self::HeadersTooLarge { limit } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "ValidationException",
                format!("Request headers exceed the limit of {limit} bytes.").into(),
                None,
            ),
            Self::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "ValidationException",
                format!("Request body exceeds the limit of {limit} bytes.").into(),
                None,
            ),
            Self::Upstream(UpstreamError::Timeout(after)) => (
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeoutException",
                format!("The agent did not answer within {}s.", after.as_secs()).into(),
                None,
            ),
            Self::Upstream(UpstreamError::Unreachable(_)) => (
                StatusCode::BAD_GATEWAY,
                "BadGatewayException",
                "The agent could not be reached.".into(),
                None,
            ),
            // The edge's own AWS credentials are missing or expired: nothing the caller did.
            Self::Upstream(UpstreamError::Signing(_)) => (
                StatusCode::BAD_GATEWAY,
                "BadGatewayException",
                "The edge could not sign the request to the agent (no AWS credentials).".into(),
                None,
            ),
        };
        json_error(status, kind, &message, challenge)
    }
}

fn auth_response(error: AuthError, challenge: &Challenge) -> Response<ProxyBody> {
    let metadata = &challenge.resource_metadata;
    let scope = challenge.scope.as_deref();
    match error {
        AuthError::Missing => {
            // RFC 6750 §3.1: no error code when the request had no credentials.
            let header = match scope {
                Some(scope) => format!(r#"Bearer resource_metadata="{metadata}", scope="{scope}""#),
                None => format!(r#"Bearer resource_metadata="{metadata}""#),
            };
            json_error(
                StatusCode::UNAUTHORIZED,
                "UnauthorizedException",
                "Missing Authentication Token",
                Some(header),
            )
        }
        AuthError::Invalid(reason) => invalid_token(&reason, metadata),
        AuthError::Expired => invalid_token("The token has expired.", metadata),
        AuthError::Denied(Denial::Audience) => invalid_token(&Denial::Audience.message(), metadata),
        AuthError::Denied(Denial::Scope) => {
            let scope = scope.unwrap_or("");
            let header = format!(
                r#"Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{metadata}""#
            );
            json_error(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                &Denial::Scope.message(),
                Some(header),
            )
        }
        AuthError::Denied(denial) => json_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &denial.message(),
            None,
        ),
        AuthError::Unavailable => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "The identity provider's keys are unavailable; retry shortly.",
                None,
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            response
        }
    }
}

/// AgentCore's throttling answer.
const RATE_EXCEEDED: &str = "Rate exceeded.";
/// The JSON-RPC error code of a throttled MCP request (AgentCore's MCP throttling code).
const JSONRPC_THROTTLED: i64 = -32003;

fn quota_response(error: QuotaError) -> Response<ProxyBody> {
    match error {
        QuotaError::Throttled { throttle, jsonrpc } => {
            let mut response = match jsonrpc {
                None => json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ThrottlingException",
                    RATE_EXCEEDED,
                    None,
                ),
                Some(id) => {
                    let body = serde_json::json!({
                        "jsonrpc": "2.0",
                        "id": id,
                        "error": { "code": JSONRPC_THROTTLED, "message": RATE_EXCEEDED },
                    });
                    let mut response = json_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "ThrottlingException",
                        RATE_EXCEEDED,
                        None,
                    );
                    *response.body_mut() = ProxyBody::full(Bytes::from(body.to_string()));
                    response
                }
            };
            throttle.write(response.headers_mut());
            response
        }
        QuotaError::StoreUnavailable => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "The quota store is unavailable; retry shortly.",
                None,
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// MCP refusals carry a JSON-RPC error body (with the request's id when it had one), so an
/// MCP client reports them as the answer to its call.
fn mcp_response(error: McpError) -> Response<ProxyBody> {
    let (status, kind, code, message, id, challenge) = match error {
        McpError::Read(ReadError::TooLarge { limit }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            mcp::read::INVALID_REQUEST,
            format!("The MCP message exceeds the limit of {limit} bytes."),
            None,
            None,
        ),
        McpError::Read(ReadError::Body) => (
            StatusCode::BAD_REQUEST,
            "ValidationException",
            mcp::read::PARSE_ERROR,
            "The request body could not be read.".to_owned(),
            None,
            None,
        ),
        McpError::Read(ReadError::Invalid { code, message, id }) => (
            StatusCode::BAD_REQUEST,
            "ValidationException",
            code,
            message.to_owned(),
            id,
            None,
        ),
        McpError::Denied(denied) => {
            let challenge = match &denied.refusal {
                Refusal::Scope(scope) => Some(format!(
                    r#"Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{}""#,
                    denied.resource_metadata
                )),
                _ => None,
            };
            let message = denied.message();
            (
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                mcp::ACCESS_DENIED,
                message,
                denied.id,
                challenge,
            )
        }
    };
    let id = id.as_deref().map_or("null", RawValue::get);
    let message = serde_json::to_string(&message).unwrap_or_else(|_| "\"\"".to_owned());
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#);
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_AMZN_ERROR_TYPE.clone(), HeaderValue::from_static(kind));
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    response
}

fn invalid_token(reason: &str, metadata: &str) -> Response<ProxyBody> {
    let description = quotable(reason);
    let header = format!(
        r#"Bearer error="invalid_token", error_description="{description}", resource_metadata="{metadata}""#
    );
    json_error(
        StatusCode::UNAUTHORIZED,
        "UnauthorizedException",
        reason,
        Some(header),
    )
}

/// A value safe inside a quoted-string: printable ASCII without `"` and `\`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '\''
            }
        })
        .collect()
}

fn json_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    challenge: Option<String>,
) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(X_AMZN_ERROR_TYPE.clone(), value);
    }
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests;
