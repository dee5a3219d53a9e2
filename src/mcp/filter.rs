//! Filtered lists (`filterLists`): the response to the caller's `tools/list`, `prompts/list` or
//! `resources/list` loses the entries this token could never use.
//!
//! Only the one JSON-RPC response whose `id` is the list request's is rewritten, and in it only
//! `result.tools` (`prompts`, `resources`); every other member and every kept entry keeps its
//! bytes. A JSON response is read whole (bounded by [`MAX_LIST_BYTES`]) and sent rewritten. An
//! SSE response is cut at event boundaries: each event goes out as soon as its blank line
//! arrives (a client cannot act on an event before that either), untouched unless it is the
//! list response; after that one, frames pass straight through, unparsed. A response too large
//! to check ends with an error rather than unfiltered.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde::Deserialize;
use serde::de::DeserializeSeed;
use serde_json::Value;
use serde_json::value::RawValue;

use self::json::{Member, Members, Response, ResponseSeed, Text, Top, write_key};
use crate::body::BoxError;

#[path = "filter_json.rs"]
mod json;

/// A list response (or one SSE event) larger than this is not rewritten: the body fails.
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// Which list, and the method its entries are used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    pub fn of(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            _ => None,
        }
    }

    /// The member of `result` that holds the entries.
    fn member(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }

    /// The member of an entry that names it.
    fn key(self) -> &'static str {
        match self {
            Self::Resources => "uri",
            Self::Tools | Self::Prompts => "name",
        }
    }

    /// The method an entry is used with, which the rules decide.
    pub fn use_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/call",
            Self::Prompts => "prompts/get",
            Self::Resources => "resources/read",
        }
    }
}

/// Says which entries stay.
pub trait Keep: Send + Sync + 'static {
    fn keeps(&self, kind: ListKind, name: &str) -> bool;
}

/// What to rewrite: the list kind, the request's id and who decides.
#[derive(Clone)]
pub struct ListFilter {
    pub kind: ListKind,
    pub id: Value,
    pub keep: Arc<dyn Keep>,
}

impl fmt::Debug for ListFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListFilter")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ListFilter {
    /// The rewritten message when `message` is the list response (also when nothing was
    /// removed); `None` when it is another message.
    ///
    /// The rewrite is the message's members written compactly, in order, keys re-escaped as
    /// serde_json writes them, values as they came, except that `result`'s list member keeps
    /// only the entries the caller may use (each with its bytes as sent).
    pub fn rewrite(&self, message: &[u8]) -> Option<Vec<u8>> {
        let response = self.parse(message)?;
        let is_ours = response.0.iter().any(|(key, value)| {
            key.0 == "id"
                && matches!(value, Top::Raw(raw)
                    if serde_json::from_str::<Value>(raw.get()).ok().as_ref() == Some(&self.id))
        });
        if !is_ours {
            return None;
        }
        let mut out = Vec::with_capacity(message.len());
        out.push(b'{');
        for (i, (key, value)) in response.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, key);
            match value {
                Top::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                Top::Result(members) => self.write_result(members, &mut out),
            }
        }
        out.push(b'}');
        Some(out)
    }

    fn write_result(&self, members: &[(Text<'_>, Member<'_>)], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, key);
            match value {
                Member::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                Member::List(entries) => {
                    out.push(b'[');
                    let mut first = true;
                    for entry in entries.iter().filter(|entry| self.keeps_entry(entry)) {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(entry.get().as_bytes());
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
    }

    /// The message taken apart: in one pass when it has the usual shape; otherwise member by
    /// member, where a `result` that is not an object, or a list member that is not an array,
    /// stays raw. `None` when the message is not a JSON object.
    fn parse<'a>(&self, message: &'a [u8]) -> Option<Response<'a>> {
        let member = self.kind.member();
        let mut de = serde_json::Deserializer::from_slice(message);
        if let Ok(response) = ResponseSeed(member).deserialize(&mut de)
            && de.end().is_ok()
        {
            return Some(response);
        }
        let top: Members<'a> = serde_json::from_slice(message).ok()?;
        let members = top.0.into_iter().map(|(key, raw)| {
            let result = (key.0 == "result")
                .then(|| serde_json::from_str::<Members<'a>>(raw.get()).ok())
                .flatten();
            let value = match result {
                Some(result) => Top::Result(
                    result
                        .0
                        .into_iter()
                        .map(|(name, raw)| {
                            let list = (name.0 == member)
                                .then(|| serde_json::from_str(raw.get()).ok())
                                .flatten();
                            (name, list.map_or(Member::Raw(raw), Member::List))
                        })
                        .collect(),
                ),
                None => Top::Raw(raw),
            };
            (key, value)
        });
        Some(Response(members.collect()))
    }

    /// An entry stays when its name is allowed; an entry without a readable name goes (the
    /// caller could not call it by a name the rules have seen).
    fn keeps_entry(&self, entry: &RawValue) -> bool {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: Option<Text<'a>>,
            #[serde(borrow)]
            uri: Option<Text<'a>>,
        }
        let Ok(named) = serde_json::from_str::<Named<'_>>(entry.get()) else {
            return false;
        };
        let name = match self.kind.key() {
            "uri" => named.uri,
            _ => named.name,
        };
        name.is_some_and(|n| self.keep.keeps(self.kind, &n.0))
    }

    /// Wraps a response body: JSON or SSE (by the response's content type); anything else is
    /// handed back untouched.
    ///
    /// A compressed body (`content_encoding` other than `identity`; the edge asks upstreams
    /// for none) cannot be read, so it is not passed on unfiltered: the body fails.
    pub fn wrap<B>(
        self,
        body: B,
        content_type: &[u8],
        content_encoding: Option<&[u8]>,
    ) -> Result<FilterBody, B>
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let media = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let encoded =
            content_encoding.is_some_and(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"));
        let mode = if encoded {
            Mode::Unreadable
        } else if media.eq_ignore_ascii_case(b"application/json") {
            Mode::Json(BytesMut::new())
        } else if media.eq_ignore_ascii_case(b"text/event-stream") {
            Mode::Sse(BytesMut::new())
        } else {
            return Err(body);
        };
        Ok(FilterBody {
            inner: Box::pin(body),
            filter: self,
            mode,
        })
    }
}

enum Mode {
    /// Collecting the whole JSON body.
    Json(BytesMut),
    /// Holding the bytes of the SSE event not yet complete.
    Sse(BytesMut),
    /// Done: frames pass through.
    Through,
    /// Compressed: the body fails rather than go out unfiltered.
    Unreadable,
}

/// A response body with its list response rewritten (see the module docs).
pub struct FilterBody {
    inner: Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>,
    filter: ListFilter,
    mode: Mode,
}

impl fmt::Debug for FilterBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterBody")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// Why a list response could not be filtered (the body ends with this error).
#[derive(Debug)]
enum Unfilterable {
    TooLarge,
    Compressed,
}

impl fmt::Display for Unfilterable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "the MCP list response exceeds {MAX_LIST_BYTES} bytes and cannot be filtered"
            ),
            Self::Compressed => {
                f.write_str("the MCP list response is compressed and cannot be filtered")
            }
        }
    }
}

impl std::error::Error for Unfilterable {}

/// The end of the first complete SSE event in `buf` (just past its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = buf.get(i..)?.iter().position(|&b| b == b'\n' || b == b'\r') {
        let line_end = i + at;
        // The line break: \r\n, \n or \r.
        let after = match (buf.get(line_end), buf.get(line_end + 1)) {
            (Some(b'\r'), Some(b'\n')) => line_end + 2,
            (Some(b'\r'), None) => return None, // maybe \r\n split across frames
            _ => line_end + 1,
        };
        // The line just ended was empty: the event ends here.
        if line_end == i && i > 0 || line_end == 0 {
            return Some(after);
        }
        i = after;
    }
    None
}

/// The `data:` of one SSE event, joined by `\n` as a client would, or `None` without any.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match value.first() {
            Some(b':') => value.get(1..).unwrap_or_default(),
            None => value,
            Some(_) => continue, // another field ("dataset:")
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

/// The event with its data replaced by `message` (one `data:` line; JSON has no raw newline).
fn rebuild_event(event: &[u8], message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 64);
    let mut wrote = false;
    for line in event.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            continue;
        }
        let is_data = bare
            .strip_prefix(b"data")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b':');
        if is_data {
            if !wrote {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(message);
                out.extend_from_slice(b"\n");
                wrote = true;
            }
        } else {
            out.extend_from_slice(bare);
            out.extend_from_slice(b"\n");
        }
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

impl FilterBody {
    /// Takes the complete events out of `pending`, rewriting the list response; returns what
    /// can go out now.
    fn sse_events(filter: &ListFilter, pending: &mut BytesMut) -> (Option<Bytes>, bool) {
        let mut out: Option<BytesMut> = None;
        let mut done = false;
        while let Some(end) = event_end(pending) {
            let event = pending.split_to(end);
            let rewritten = event_data(&event)
                .and_then(|data| filter.rewrite(&data))
                .map(|message| rebuild_event(&event, &message));
            let piece = match rewritten {
                Some(bytes) => {
                    done = true;
                    BytesMut::from(&bytes[..])
                }
                None => event,
            };
            match &mut out {
                None => out = Some(piece),
                Some(o) => o.unsplit(piece),
            }
            if done {
                break;
            }
        }
        (out.map(BytesMut::freeze), done)
    }
}

impl Body for FilterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if matches!(this.mode, Mode::Unreadable) {
            this.mode = Mode::Through;
            return Poll::Ready(Some(Err(Box::new(Unfilterable::Compressed))));
        }
        loop {
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            match (&mut this.mode, frame) {
                (Mode::Through | Mode::Unreadable, frame) => return Poll::Ready(frame),
                (_, Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                (Mode::Json(buf), Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if buf.len() + data.len() > MAX_LIST_BYTES {
                            return Poll::Ready(Some(Err(Box::new(Unfilterable::TooLarge))));
                        }
                        buf.extend_from_slice(&data);
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                (Mode::Json(buf), None) => {
                    let whole = std::mem::take(buf).freeze();
                    this.mode = Mode::Through;
                    let out = this.filter.rewrite(&whole).map_or(whole, Bytes::from);
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out))));
                }
                (Mode::Sse(pending), Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        pending.extend_from_slice(&data);
                        let (out, done) = Self::sse_events(&this.filter, pending);
                        if done {
                            // The rest of this frame (the next events) goes out with it.
                            let rest = std::mem::take(pending);
                            this.mode = Mode::Through;
                            let mut all = BytesMut::from(&out.unwrap_or_default()[..]);
                            all.unsplit(rest);
                            return Poll::Ready(Some(Ok(Frame::data(all.freeze()))));
                        }
                        if pending.len() > MAX_LIST_BYTES {
                            return Poll::Ready(Some(Err(Box::new(Unfilterable::TooLarge))));
                        }
                        if let Some(out) = out {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                (Mode::Sse(pending), None) => {
                    // An unfinished last event goes out as it came.
                    let rest = std::mem::take(pending).freeze();
                    this.mode = Mode::Through;
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.mode, Mode::Through) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
