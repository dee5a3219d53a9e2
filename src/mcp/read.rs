//! Reading the one JSON-RPC message of an MCP POST (SPEC §11): the body, bounded; the message,
//! strictly; and the `Mcp-Method` / `Mcp-Name` headers, which must say what the body says.
//!
//! Strict because two parsers must never disagree about what a message asks for: the edge
//! decides on what it reads here and the server executes what it reads itself. So a member
//! name repeated at the top level or in `params` (`{"method":"tools/list","method":"tools/call"}`)
//! is refused rather than guessed at, `params` must be an object (MCP only sends objects), a
//! name may not carry control characters (NUL included), and nesting deeper than serde_json's
//! limit (128) is a parse error. Everything the rules do not look at (`arguments`, `_meta`)
//! stays raw: it is checked to be JSON and forwarded as the client wrote it.
//!
//! [`read_message`] is the whole step and can be used on its own (quotas keying on the tool).
//!
//! ```
//! use gatehouse::mcp::read::parse;
//! let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#).unwrap();
//! assert_eq!(m.tool(), Some("echo"));
//! assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#).is_err());
//! ```

use std::fmt;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::HeaderName;
use http_body::Body;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::McpMessage;
use crate::body::BoxError;

pub static MCP_METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
pub static MCP_NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");

/// JSON-RPC 2.0 error codes the reader answers with.
pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const INVALID_PARAMS: i32 = -32602;
/// MCP 2026-07-28 `HeaderMismatch`.
pub const HEADER_MISMATCH: i32 = -32020;

/// Why a POST's message was refused before any decision. Messages are fixed texts: they never
/// quote the body.
#[derive(Debug)]
pub enum ReadError {
    /// Larger than `maxMessageBytes` (413).
    TooLarge { limit: u64 },
    /// The client's body failed while being read (a reset, bad framing).
    Body,
    /// Not a JSON-RPC 2.0 message the edge can decide on (400 with a JSON-RPC error).
    Invalid {
        code: i32,
        message: &'static str,
        /// The request's id when it was readable.
        id: Option<Box<RawValue>>,
    },
}

impl ReadError {
    fn invalid(code: i32, message: &'static str) -> Self {
        Self::Invalid {
            code,
            message,
            id: None,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "MCP message exceeds {limit} bytes"),
            Self::Body => f.write_str("the request body could not be read"),
            Self::Invalid { message, .. } => f.write_str(message),
        }
    }
}

/// Reads the body (at most `limit` bytes), parses the message and checks the mirrored
/// headers. The bytes are returned untouched, to be forwarded as they came.
pub async fn read_message<B>(
    headers: &HeaderMap,
    body: B,
    limit: u64,
) -> Result<(McpMessage, Bytes), ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = collect(body, limit).await?;
    let message = parse(&bytes)?;
    check_headers(headers, &message)?;
    Ok((message, bytes))
}

/// The whole body, refusing it as soon as it passes `limit` (a declared `Content-Length` over
/// it is refused before reading anything).
pub async fn collect<B>(body: B, limit: u64) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we forward differently
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return Err(ReadError::TooLarge { limit });
        }
        // One frame (the usual case) is kept as it is: no copy.
        match (&mut first, &mut more) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let mut joined = BytesMut::with_capacity(head.len() + data.len());
                joined.extend_from_slice(head);
                joined.extend_from_slice(&data);
                more = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }
    Ok(match (first, more) {
        (_, Some(joined)) => joined.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    })
}

/// Parses one JSON-RPC 2.0 message (see the module docs for what is refused).
pub fn parse(bytes: &[u8]) -> Result<McpMessage, ReadError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Err(ReadError::invalid(
            INVALID_REQUEST,
            "JSON-RPC batches are not accepted: send one message per POST",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = Envelope::deserialize(&mut de).map_err(|e| with_id(classify(e), bytes))?;
    de.end().map_err(|_| {
        ReadError::invalid(PARSE_ERROR, "Parse error: trailing data after the message")
    })?;
    raw.into_message()
}

/// A refusal found while reading still answers with the request's id when one can be read
/// unambiguously (valid JSON, one `id`, a string or an integer), so the client can match it.
fn with_id(error: ReadError, bytes: &[u8]) -> ReadError {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<Box<RawValue>>,
    }
    match error {
        ReadError::Invalid { code, message, .. } if code != PARSE_ERROR => {
            let id = serde_json::from_slice::<IdOnly>(bytes)
                .ok()
                .and_then(|i| i.id)
                .filter(|id| id.get().starts_with('"') || is_integer(id.get()));
            ReadError::Invalid { code, message, id }
        }
        other => other,
    }
}

fn classify(error: serde_json::Error) -> ReadError {
    let text = error.to_string();
    for known in [DUPLICATE, NOT_OBJECT, BAD_PARAMS] {
        if text.contains(known) {
            return ReadError::invalid(
                if known == BAD_PARAMS {
                    INVALID_PARAMS
                } else {
                    INVALID_REQUEST
                },
                known,
            );
        }
    }
    match error.classify() {
        serde_json::error::Category::Data => ReadError::invalid(
            INVALID_REQUEST,
            "Invalid Request: a member has the wrong type",
        ),
        _ => ReadError::invalid(PARSE_ERROR, "Parse error: the body is not valid JSON"),
    }
}

const DUPLICATE: &str = "Invalid Request: a member name appears twice";
const NOT_OBJECT: &str = "Invalid Request: a JSON-RPC message is an object";
const BAD_PARAMS: &str = "Invalid params: params must be an object";

/// The top level as read: every member the edge decides on, each at most once.
#[derive(Default)]
struct Envelope {
    jsonrpc: Option<String>,
    method: Option<String>,
    id: Option<Box<RawValue>>,
    params: Option<Params>,
    result: bool,
    error: bool,
}

#[derive(Default)]
struct Params {
    name: Option<Box<RawValue>>,
    uri: Option<Box<RawValue>>,
    arguments: Option<Box<RawValue>>,
}

/// Stores `value` in `slot`, refusing a second occurrence of the member.
fn once<E: de::Error, T>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::custom(DUPLICATE));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NOT_OBJECT)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut out = Envelope::default();
                let mut seen_result = false;
                let mut seen_error = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "jsonrpc" => once(&mut out.jsonrpc, map.next_value::<String>()?)?,
                        "method" => once(&mut out.method, map.next_value::<String>()?)?,
                        "id" => once(&mut out.id, map.next_value::<Box<RawValue>>()?)?,
                        "params" => once(&mut out.params, map.next_value::<Params>()?)?,
                        "result" | "error" => {
                            let seen = if key == "result" {
                                &mut seen_result
                            } else {
                                &mut seen_error
                            };
                            if std::mem::replace(seen, true) {
                                return Err(de::Error::custom(DUPLICATE));
                            }
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                out.result = seen_result;
                out.error = seen_error;
                Ok(out)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Envelope, A::Error> {
                Err(de::Error::custom(NOT_OBJECT))
            }
        }
        de.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(BAD_PARAMS)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut out = Params::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "name" => once(&mut out.name, map.next_value()?)?,
                        "uri" => once(&mut out.uri, map.next_value()?)?,
                        "arguments" => once(&mut out.arguments, map.next_value()?)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Params, A::Error> {
                Err(de::Error::custom(BAD_PARAMS))
            }
        }
        de.deserialize_any(V)
    }
}

impl Envelope {
    fn into_message(self) -> Result<McpMessage, ReadError> {
        let id = match self.id {
            // MCP ids are strings or integers; an integer of any size is echoed as written.
            Some(id) if id.get().starts_with('"') || is_integer(id.get()) => Some(id),
            Some(_) => {
                return Err(ReadError::invalid(
                    INVALID_REQUEST,
                    "Invalid Request: id must be a string or an integer",
                ));
            }
            None => None,
        };
        let refuse = |code, message| ReadError::Invalid {
            code,
            message,
            id: id.clone(),
        };
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Err(refuse(
                INVALID_REQUEST,
                "Invalid Request: jsonrpc must be \"2.0\"",
            ));
        }
        let Some(method) = self.method else {
            // A response from the client (to a server request): id and result or error.
            if id.is_none() || self.result == self.error || self.params.is_some() {
                return Err(refuse(
                    INVALID_REQUEST,
                    "Invalid Request: neither a request, a notification nor a response",
                ));
            }
            return Ok(McpMessage {
                method: None,
                name: None,
                id,
                arguments: None,
            });
        };
        if self.result || self.error {
            return Err(refuse(
                INVALID_REQUEST,
                "Invalid Request: a request carries no result or error",
            ));
        }
        let params = self.params.unwrap_or_default();
        // The member that names what the call is about, for the methods that have one.
        let named = match method.as_str() {
            "tools/call" | "prompts/get" => Some(("name", params.name)),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some(("uri", params.uri))
            }
            _ => None,
        };
        let name = match named {
            None => None,
            Some((_, None)) => {
                return Err(refuse(
                    INVALID_PARAMS,
                    "Invalid params: the name (params.name or params.uri) is missing",
                ));
            }
            Some((_, Some(raw))) => match serde_json::from_str::<String>(raw.get()) {
                Ok(name) if !name.chars().any(char::is_control) => Some(name),
                Ok(_) => {
                    return Err(refuse(
                        INVALID_PARAMS,
                        "Invalid params: the name contains control characters",
                    ));
                }
                Err(_) => {
                    return Err(refuse(
                        INVALID_PARAMS,
                        "Invalid params: the name must be a string",
                    ));
                }
            },
        };
        let arguments = match params.arguments {
            Some(raw) if method == "tools/call" => {
                if raw.get().as_bytes().first() != Some(&b'{') && raw.get() != "null" {
                    return Err(refuse(
                        INVALID_PARAMS,
                        "Invalid params: arguments must be an object",
                    ));
                }
                Some(raw)
            }
            _ => None,
        };
        Ok(McpMessage {
            method: Some(method),
            name,
            id,
            arguments,
        })
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `Mcp-Method` and `Mcp-Name`, when present, must repeat the body (MCP 2026-07-28 mirrors
/// them so middleboxes can route; a box that trusted them could be made to allow what the
/// server then executes). Several values of one header are refused too.
pub fn check_headers(headers: &HeaderMap, message: &McpMessage) -> Result<(), ReadError> {
    let refuse = |text: &'static str| ReadError::Invalid {
        code: HEADER_MISMATCH,
        message: text,
        id: message.id.clone(),
    };
    if let Some(value) = single(headers, &MCP_METHOD_HEADER)
        .map_err(|()| refuse("Header mismatch: Mcp-Method appears more than once"))?
        && Some(value) != message.method.as_deref().map(str::as_bytes)
    {
        return Err(refuse(
            "Header mismatch: Mcp-Method does not match the body's method",
        ));
    }
    if let Some(value) = single(headers, &MCP_NAME_HEADER)
        .map_err(|()| refuse("Header mismatch: Mcp-Name appears more than once"))?
    {
        let agrees = message
            .name
            .as_deref()
            .is_some_and(|name| header_text(value).as_deref() == Some(name));
        if !agrees {
            return Err(refuse(
                "Header mismatch: Mcp-Name does not match the body's name",
            ));
        }
    }
    Ok(())
}

fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h [u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first.map(http::HeaderValue::as_bytes))
}

/// A mirrored header's text: plain ASCII, or MCP's `=?base64?...?=` form for anything else.
fn header_text(value: &[u8]) -> Option<String> {
    if let Some(encoded) = value
        .strip_prefix(b"=?base64?")
        .and_then(|v| v.strip_suffix(b"?="))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        return String::from_utf8(decoded).ok();
    }
    std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .map(str::to_owned)
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
