//! The JSON side of list filtering: a list response taken apart just enough to rewrite it,
//! borrowing from the message (keys and names without escapes, raw values, raw list entries)
//! rather than copying it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON string, borrowed from the message when it has no escapes (as most keys and names).
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        de.deserialize_str(V(PhantomData))
    }
}

/// An object's members in order (duplicates kept), values raw.
pub(super) struct Members<'a>(pub(super) Vec<(Text<'a>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry::<Text<'a>, &'a RawValue>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        de.deserialize_map(V(PhantomData))
    }
}

/// A response taken apart as far as the rewrite needs: the top-level members, `result`'s
/// members and the entries of its list member; everything else is raw bytes of the message.
pub(super) struct Response<'a>(pub(super) Vec<(Text<'a>, Top<'a>)>);

pub(super) enum Top<'a> {
    Raw(&'a RawValue),
    /// A `result` object.
    Result(Vec<(Text<'a>, Member<'a>)>),
}

pub(super) enum Member<'a> {
    Raw(&'a RawValue),
    /// The list member (`tools`, ...) of `result`, an array.
    List(Vec<&'a RawValue>),
}

/// Reads a [`Response`] in one pass when `result` is an object and its list member an array
/// (any other shape fails, and the filter takes the general way, member by member).
pub(super) struct ResponseSeed(pub(super) &'static str);

impl<'de> DeserializeSeed<'de> for ResponseSeed {
    type Value = Response<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Response<'de>, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed {
    type Value = Response<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC response")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Response<'de>, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let value = if key.0 == "result" {
                Top::Result(map.next_value_seed(ResultSeed(self.0))?)
            } else {
                Top::Raw(map.next_value()?)
            };
            out.push((key, value));
        }
        Ok(Response(out))
    }
}

/// `result`, with its list member (named by the seed) as an array of raw entries.
struct ResultSeed(&'static str);

impl<'de> DeserializeSeed<'de> for ResultSeed {
    type Value = Vec<(Text<'de>, Member<'de>)>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed {
    type Value = Vec<(Text<'de>, Member<'de>)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a result object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let value = if key.0 == self.0 {
                Member::List(map.next_value()?)
            } else {
                Member::Raw(map.next_value()?)
            };
            out.push((key, value));
        }
        Ok(out)
    }
}

pub(super) fn write_key(out: &mut Vec<u8>, key: &Text<'_>) {
    // A str always serializes, and a Vec takes every write.
    let _ = serde_json::to_writer(&mut *out, &*key.0);
    out.push(b':');
}
