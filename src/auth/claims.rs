//! The token's claims, parsed once, strictly, and shared by the verified-token cache, the
//! policy checks and the identity headers.
//!
//! Registered claims are typed (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `client_id`,
//! `scope`/`scp`); every claim is also kept for `customClaims`, `claimsToHeaders`,
//! `claimsToBaggage`, quota keys and Cedar tags. Parsing is deliberately strict because the
//! payload is attacker-chosen until the signature is checked, and a lenient reading is how
//! confusion bugs start: a duplicate top-level name, a registered claim of the wrong JSON type,
//! or a NumericDate that is not a finite number within years 0..9999 rejects the whole token.
//!
//! Claims live as long as their token stays in the verified-token cache (up to `maxEntries`
//! of them), so they are stored once and compactly: every claim name and string value in one
//! text, each claim as two offsets into it (sorted by name), other values as JSON beside it;
//! what the route policy reads on every request is ready without a search or a split: `iss`,
//! `sub`, `client_id` as offsets, the audiences and scopes as lists of offsets, the dates as
//! integers. Measured in `benches/token_memory.rs` and docs/performance.md.
//!
//! ```
//! use gatehouse::auth::claims::Claims;
//! let c = Claims::parse(br#"{"iss":"https://idp","exp":2000000000,"aud":"api","scope":"a b"}"#).unwrap();
//! assert_eq!(c.aud().collect::<Vec<_>>(), ["api"]);
//! assert!(c.has_scope("b"));
//! ```

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::mcp::cedar::PrincipalMemo;

/// Latest NumericDate accepted: 9999-12-31T23:59:59Z. Anything larger is an attack or a bug.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Parsed claims of a verified token; the default has no claims at all.
#[derive(Clone, PartialEq)]
pub struct Claims {
    /// Every claim name and string value, one after the other, then the strings of an `aud`
    /// or `scp` array again.
    text: Box<str>,
    /// Every claim, sorted by name (byte order) for binary search.
    entries: Box<[Entry]>,
    /// The values that are not strings, in the order of `entries`.
    json: Box<[Value]>,
    /// The audiences, then from `scopes_from` on the scopes: read on every request by the
    /// route policy, so kept split rather than split per request.
    lists: Box<[Span]>,
    scopes_from: u32,
    /// `exp`, `nbf`, `iat` in seconds, [`NO_DATE`] when absent.
    dates: [i64; 3],
    /// `iss`, `sub`, `client_id` ([`NO_SPAN`] when absent).
    strings: [Span; 3],
    /// The caller as MCP Cedar policies see it, built on the first Cedar decision and kept
    /// with the claims: for a cached token, once per token rather than once per request.
    pub cedar: PrincipalMemo,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            text: Box::default(),
            entries: Box::default(),
            json: Box::default(),
            lists: Box::default(),
            scopes_from: 0,
            dates: [NO_DATE; 3],
            strings: [NO_SPAN; 3],
            cedar: PrincipalMemo::default(),
        }
    }
}

/// The registered string claims, read without a search.
const STRINGS: [&str; 3] = ["iss", "sub", "client_id"];
const ISS: usize = 0;
const SUB: usize = 1;
const CLIENT_ID: usize = 2;
/// No text offset reaches it (see [`JSON`]).
const NO_SPAN: Span = Span {
    start: JSON,
    end: JSON,
};
/// Up to this many claims, [`Claims::get`] scans rather than bisects.
const LINEAR_SEARCH: usize = 16;
/// Outside the NumericDate range.
const NO_DATE: i64 = i64::MIN;

/// A stretch of [`Claims::text`]. Offsets fit: a payload is refused if its text would not.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// Where a claim's value is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A string, in the text.
    Str(Span),
    /// Anything else, at this index of [`Claims::json`].
    Json(u32),
}

/// A claim: its name, and its [`Slot`] in 8 bytes rather than an enum's 12 (a string's
/// span, or [`JSON`] and an index), which keeps a dev token's seven entries in 112 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    name: Span,
    value: Span,
}

/// `Entry::value.start` of a value kept in [`Claims::json`]; no text offset reaches it.
const JSON: u32 = u32::MAX;

impl Entry {
    fn new(name: Span, slot: Slot) -> Self {
        let value = match slot {
            Slot::Str(span) => span,
            Slot::Json(index) => Span {
                start: JSON,
                end: index,
            },
        };
        Self { name, value }
    }

    fn slot(self) -> Slot {
        match self.value {
            Span { start: JSON, end } => Slot::Json(end),
            span => Slot::Str(span),
        }
    }
}

/// One claim's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim<'a> {
    String(&'a str),
    /// A number, boolean, array, object or null, as sent.
    Json(&'a Value),
}

static NULL: Value = Value::Null;

impl<'a> Claim<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Self::String(s) => Some(s),
            Self::Json(_) => None,
        }
    }

    /// The elements, if it is an array.
    pub fn as_array(self) -> Option<&'a [Value]> {
        match self {
            Self::Json(Value::Array(items)) => Some(items),
            _ => None,
        }
    }

    /// Rendered for an HTTP header or baggage value: strings as-is, arrays of scalars joined
    /// with `,`, numbers and booleans in JSON form; objects and nulls give `None`.
    pub fn render(self) -> Option<String> {
        match self {
            Self::String(s) => Some(s.to_owned()),
            Self::Json(Value::String(s)) => Some(s.clone()),
            Self::Json(Value::Number(n)) => Some(n.to_string()),
            Self::Json(Value::Bool(b)) => Some(b.to_string()),
            Self::Json(Value::Array(items)) => {
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match item {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        _ => return None,
                    }
                }
                Some(out)
            }
            Self::Json(Value::Null | Value::Object(_)) => None,
        }
    }
}

// Claims are personal data; keep them out of debug output except the routing-relevant bits.
impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss())
            .field("client_id", &self.client_id())
            .field("exp", &self.exp())
            .finish_non_exhaustive()
    }
}

/// Why a payload was refused. The text is safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsError(pub String);

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Claims {
    /// Parses a JWT payload (already base64url-decoded).
    pub fn parse(json: &[u8]) -> Result<Self, ClaimsError> {
        Self::from_map(unique_object(json)?)
    }

    fn from_map(all: Map<String, Value>) -> Result<Self, ClaimsError> {
        // Every check reads the map first; only a valid payload is packed.
        for name in ["iss", "sub", "client_id"] {
            if all.get(name).is_some_and(|v| !v.is_string()) {
                return Err(ClaimsError(format!("claim '{name}' must be a string")));
            }
        }
        match all.get("aud") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'aud' must be a string or an array of strings".into(),
                ));
            }
        }
        match all.get("scope") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'scope' must be a space-delimited string".into(),
                ));
            }
        }
        match all.get("scp") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(ClaimsError(
                    "claim 'scp' must be a string or an array of strings".into(),
                ));
            }
        }
        let mut dates = [NO_DATE; 3];
        for (date, name) in dates.iter_mut().zip(["exp", "nbf", "iat"]) {
            *date = numeric_date(&all, name)?.unwrap_or(NO_DATE);
        }
        Self::pack(all, dates)
    }

    /// The compact form of a checked map (see the module comment).
    fn pack(all: Map<String, Value>, dates: [i64; 3]) -> Result<Self, ClaimsError> {
        let array_strings = |value: Option<&Value>| match value {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::len).sum(),
            _ => 0,
        };
        let text_len: usize = all
            .iter()
            .map(|(name, value)| name.len() + value.as_str().map_or(0, str::len))
            .sum::<usize>()
            + array_strings(all.get("aud"))
            + array_strings(all.get("scp"));
        if text_len >= JSON as usize || all.len() >= JSON as usize {
            return Err(ClaimsError("token payload is too large".into()));
        }
        let mut text = String::with_capacity(text_len);
        let mut entries = Vec::with_capacity(all.len());
        let mut json = Vec::with_capacity(all.values().filter(|v| !v.is_string()).count());
        let (mut aud, mut scope, mut scp) = (Vec::new(), Vec::new(), Vec::new());
        let mut claims = Self {
            dates,
            ..Self::default()
        };
        for (name, value) in all {
            let name_span = append(&mut text, &name);
            let list = match name.as_str() {
                "aud" => Some((&mut aud, false)),
                "scope" => Some((&mut scope, true)),
                "scp" => Some((&mut scp, true)),
                _ => None,
            };
            let slot = match value {
                Value::String(s) => {
                    let span = append(&mut text, &s);
                    match list {
                        Some((list, true)) => list.extend(words(&s, span.start)),
                        Some((list, false)) => list.push(span),
                        None => {}
                    }
                    if let Some(i) = STRINGS.iter().position(|r| *r == name) {
                        claims.strings[i] = span;
                    }
                    Slot::Str(span)
                }
                other => {
                    // An `aud` or `scp` array's elements, each one value (never split).
                    if let (Some((list, _)), Value::Array(items)) = (list, &other) {
                        for item in items.iter().filter_map(Value::as_str) {
                            list.push(append(&mut text, item));
                        }
                    }
                    json.push(other);
                    Slot::Json(u32::try_from(json.len() - 1).unwrap_or(u32::MAX))
                }
            };
            entries.push(Entry::new(name_span, slot));
        }
        // `serde_json::Map` keeps the payload's order (its `preserve_order` feature is on).
        entries.sort_unstable_by(|a: &Entry, b: &Entry| {
            let name = |e: &Entry| text.get(e.name.start as usize..e.name.end as usize);
            name(a).cmp(&name(b))
        });
        claims.scopes_from = u32::try_from(aud.len()).unwrap_or(u32::MAX);
        aud.reserve_exact(scope.len() + scp.len());
        aud.extend(scope.into_iter().chain(scp));
        claims.lists = aud.into_boxed_slice();
        claims.text = text.into_boxed_str();
        claims.entries = entries.into_boxed_slice();
        claims.json = json.into_boxed_slice();
        Ok(claims)
    }

    fn str_at(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    fn value(&self, slot: Slot) -> Claim<'_> {
        match slot {
            Slot::Str(span) => Claim::String(self.str_at(span)),
            Slot::Json(i) => Claim::Json(self.json.get(i as usize).unwrap_or(&NULL)),
        }
    }

    /// The claim `name`, if the token has it.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        // Names compare as bytes (the order of `str`), without `str`'s boundary checks. A
        // token has a handful of claims: comparing lengths first beats a binary search there.
        let text = self.text.as_bytes();
        let name_of = |entry: &Entry| text.get(entry.name.start as usize..entry.name.end as usize);
        let entry = if self.entries.len() <= LINEAR_SEARCH {
            self.entries.iter().find(|entry| {
                entry.name.end.saturating_sub(entry.name.start) as usize == name.len()
                    && name_of(entry) == Some(name.as_bytes())
            })?
        } else {
            let i = self
                .entries
                .binary_search_by(|entry| name_of(entry).unwrap_or_default().cmp(name.as_bytes()))
                .ok()?;
            self.entries.get(i)?
        };
        Some(self.value(entry.slot()))
    }

    /// Every claim, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Claim<'_>)> {
        self.entries
            .iter()
            .map(|entry| (self.str_at(entry.name), self.value(entry.slot())))
    }

    fn registered_str(&self, which: usize) -> Option<&str> {
        let span = *self.strings.get(which)?;
        (span != NO_SPAN).then(|| self.str_at(span))
    }

    fn date(&self, which: usize) -> Option<i64> {
        self.dates.get(which).copied().filter(|d| *d != NO_DATE)
    }

    pub fn iss(&self) -> Option<&str> {
        self.registered_str(ISS)
    }

    pub fn sub(&self) -> Option<&str> {
        self.registered_str(SUB)
    }

    pub fn client_id(&self) -> Option<&str> {
        self.registered_str(CLIENT_ID)
    }

    pub fn exp(&self) -> Option<i64> {
        self.date(0)
    }

    pub fn nbf(&self) -> Option<i64> {
        self.date(1)
    }

    pub fn iat(&self) -> Option<i64> {
        self.date(2)
    }

    /// The audiences: `aud` as one string or an array of strings; none for null or `[]`.
    pub fn aud(&self) -> impl Iterator<Item = &str> {
        self.split_lists().0.iter().map(|span| self.str_at(*span))
    }

    /// Union of the space-delimited `scope` string and the `scp` claim (array or string),
    /// in that order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.split_lists().1.iter().map(|span| self.str_at(*span))
    }

    /// [`Self::lists`] as the audiences and the scopes.
    fn split_lists(&self) -> (&[Span], &[Span]) {
        self.lists
            .split_at_checked(self.scopes_from as usize)
            .unwrap_or_default()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// A claim rendered for an HTTP header or baggage value (see [`Claim::render`]).
    pub fn render(&self, name: &str) -> Option<String> {
        self.get(name)?.render()
    }
}

/// The spans of the ASCII-whitespace-separated words of `s`, which starts at `start`.
fn words(s: &str, start: u32) -> impl Iterator<Item = Span> {
    let base = s.as_ptr() as usize;
    s.split_ascii_whitespace().map(move |word| {
        let offset = |at: usize| u32::try_from(at).map_or(JSON, |at| start.saturating_add(at));
        let from = word.as_ptr() as usize - base;
        Span {
            start: offset(from),
            end: offset(from + word.len()),
        }
    })
}

/// Appends `s` to `text`, whose final length was checked to fit a `u32`.
fn append(text: &mut String, s: &str) -> Span {
    let offset = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
    let start = offset(text.len());
    text.push_str(s);
    Span {
        start,
        end: offset(text.len()),
    }
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional (floored).
fn numeric_date(all: &Map<String, Value>, name: &str) -> Result<Option<i64>, ClaimsError> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let seconds = n
                .as_f64()
                .filter(|s| s.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(s))
                .ok_or_else(|| ClaimsError(format!("claim '{name}' is out of range")))?;
            // In range by the filter above, so the conversion is exact after flooring.
            #[allow(clippy::cast_possible_truncation)]
            Ok(Some(seconds.floor() as i64))
        }
        Some(_) => Err(ClaimsError(format!(
            "claim '{name}' must be a number of seconds (NumericDate)"
        ))),
    }
}

/// Parses a JSON object, refusing duplicate top-level member names and trailing data.
///
/// The error text is fixed per kind of failure and never quotes the input: serde_json's own
/// messages do (`invalid type: string "eyJ..."`), and a payload that is a nested token would
/// be echoed to the client in the body and the `WWW-Authenticate` challenge.
pub(crate) fn unique_object(json: &[u8]) -> Result<Map<String, Value>, ClaimsError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let map = UniqueKeys::deserialize(&mut de)
        .map_err(|e| {
            let what = if e.to_string().starts_with(DUPLICATE) {
                DUPLICATE
            } else {
                match e.classify() {
                    serde_json::error::Category::Data => "not an object",
                    serde_json::error::Category::Eof => "truncated",
                    serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                        "not valid JSON"
                    }
                }
            };
            ClaimsError(format!("token payload is not a JSON object: {what}"))
        })?
        .0;
    de.end()
        .map_err(|_| ClaimsError("token payload has trailing data".into()))?;
    Ok(map)
}

const DUPLICATE: &str = "duplicate member name";

/// A JSON object whose top-level member names are unique (RFC 7519 §4 says a parser MUST
/// either reject duplicates or take the last; taking the last lets two parsers disagree).
struct UniqueKeys(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueKeys, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.insert(key, value).is_some() {
                        return Err(de::Error::custom(DUPLICATE));
                    }
                }
                Ok(UniqueKeys(map))
            }
        }
        de.deserialize_map(V)
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
