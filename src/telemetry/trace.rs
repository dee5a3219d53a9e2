//! W3C trace context for one request: continue the client's `traceparent` (or an AWS
//! `X-Amzn-Trace-Id`), or start a trace; hand the upstream our own span as its parent.
//!
//! Ids come from the thread-local CSPRNG (`rand::rng()`), which also makes request and
//! session ids unguessable. A malformed `traceparent` is ignored (a new trace starts), never
//! an error: tracing must not be a way to fail a request.
//!
//! ```
//! use gatehouse::telemetry::trace::TraceContext;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
//! let trace = TraceContext::from_headers(&headers);
//! assert_eq!(trace.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
//! assert!(trace.upstream_traceparent().to_str().unwrap().starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
//! ```

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

// Names, not strings, to look up by: a string is parsed into a name again on every lookup.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// The trace this request belongs to and the span ids the edge uses in it.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The client's span, when the client sent one.
    pub parent_span_id: Option<[u8; 8]>,
    /// The edge's server span for this request.
    pub span_id: [u8; 8],
    /// The edge's client span toward the upstream (the upstream's parent).
    pub upstream_span_id: [u8; 8],
    pub sampled: bool,
    pub tracestate: Option<HeaderValue>,
}

/// The sampling decision for traces without a caller's decision (`telemetry.sampling`):
/// parent-based, so a client's `traceparent` flag (or X-Ray `Sampled=0/1`) is kept, and new
/// traces are sampled by trace id ratio — the algorithm of OpenTelemetry's
/// `TraceIdRatioBased`, so every service using the same ratio keeps the same traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// Trace ids whose low 63 bits are below this are sampled.
    upper: u64,
}

impl Sampler {
    pub const ALWAYS: Self = Self { upper: 1 << 63 };

    /// `ratio` in 0..=1 (clamped).
    pub fn ratio(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            1.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // 2^63 as f64 is exact; the product is in range, so the cast does not saturate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let upper = (ratio * (1u64 << 63) as f64) as u64;
        Self { upper }
    }

    pub fn sample(self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.upper
    }
}

impl TraceContext {
    /// Reads `traceparent`/`tracestate`, else `X-Amzn-Trace-Id`, else starts a trace (always
    /// sampled; see [`Self::from_headers_sampled`]).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_headers_sampled(headers, Sampler::ALWAYS)
    }

    /// As [`Self::from_headers`], with `sampler` deciding for traces the edge starts and for
    /// X-Ray headers that leave the decision open.
    pub fn from_headers_sampled(headers: &HeaderMap, sampler: Sampler) -> Self {
        // One draw for every id this request may need.
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let mut ids = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut upstream_span_id = [0u8; 8];
        ids.copy_from_slice(&random[..16]);
        span_id.copy_from_slice(&random[16..24]);
        upstream_span_id.copy_from_slice(&random[24..]);
        // The first value of each, by one scan of the names: the usual request has neither,
        // and comparing its few names costs less than hashing these two for lookups.
        let mut traceparent = None;
        let mut xray = None;
        for (name, value) in headers {
            if *name == TRACEPARENT {
                traceparent = traceparent.or(Some(value));
            } else if *name == X_AMZN_TRACE_ID {
                xray = xray.or(Some(value));
            }
        }
        let parsed = traceparent
            .and_then(|v| parse_traceparent(v.as_bytes()))
            .or_else(|| xray.and_then(|v| parse_xray(v.as_bytes())));
        match parsed {
            Some((trace_id, parent, sampled)) => Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id,
                upstream_span_id,
                sampled: sampled.unwrap_or_else(|| sampler.sample(&trace_id)),
                tracestate: traceparent.and(headers.get(&TRACESTATE)).cloned(),
            },
            None => Self {
                trace_id: ids,
                parent_span_id: None,
                span_id,
                upstream_span_id,
                sampled: sampler.sample(&ids),
                tracestate: None,
            },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` sent upstream: our client span is the upstream's parent.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        let mut text = [0u8; TRACEPARENT_LEN];
        self.write_upstream_traceparent(&mut text);
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
            .unwrap_or(HeaderValue::from_static("00-"))
    }

    fn write_upstream_traceparent(&self, out: &mut [u8; TRACEPARENT_LEN]) {
        *out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.upstream_span_id, &mut out[36..52]);
        if self.sampled {
            out[54] = b'1';
        }
    }

    /// A new request id (as [`uuid_v4`]) and the upstream `traceparent` (as
    /// [`Self::upstream_traceparent`]), as header values that share one allocation: every
    /// request gets both, and each value made from bytes of its own costs one.
    pub fn request_id_and_traceparent(&self) -> (HeaderValue, HeaderValue) {
        let mut text = [0u8; UUID_LEN + TRACEPARENT_LEN];
        let (id, traceparent) = text.split_at_mut(UUID_LEN);
        write_uuid_v4(id);
        if let Ok(traceparent) = traceparent.try_into() {
            self.write_upstream_traceparent(traceparent);
        }
        // Owned by the `Bytes` (see `uuid_v4`), split in two.
        let mut traceparent = bytes::Bytes::from_owner(text);
        let id = traceparent.split_to(UUID_LEN);
        let value =
            |bytes| HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static("0"));
        (value(id), value(traceparent))
    }
}

/// `00-{trace id}-{span id}-{flags}`.
const TRACEPARENT_LEN: usize = 55;
/// `8-4-4-4-12` hex digits.
const UUID_LEN: usize = 36;

/// `version-traceid-parentid-flags`; version 00 exactly, later versions by their prefix.
fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], Option<bool>)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.splitn(5, '-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    let version = decode_hex::<1>(version)?;
    let trace_id = decode_hex::<16>(trace)?;
    let span_id = decode_hex::<8>(span)?;
    let flags = decode_hex::<1>(flags)?;
    let _ = version;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, Some(flags[0] & 1 == 1)))
}

/// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`. `Sampled=?`
/// or no `Sampled` leaves the decision to the edge.
fn parse_xray(value: &[u8]) -> Option<([u8; 16], [u8; 8], Option<bool>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut root = None;
    let mut parent = None;
    let mut sampled = None;
    for field in text.split(';') {
        let (key, value) = field.trim().split_once('=')?;
        match key {
            "Root" => {
                let mut parts = value.split('-');
                if parts.next()? != "1" {
                    return None;
                }
                let epoch = parts.next()?;
                let unique = parts.next()?;
                if epoch.len() != 8 || unique.len() != 24 {
                    return None;
                }
                root = decode_hex::<16>(&format!("{epoch}{unique}"));
            }
            "Parent" => parent = decode_hex::<8>(value),
            "Sampled" => {
                sampled = match value {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some((root?, parent?, sampled))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Writes `bytes` as lowercase hex into `out` (which must be twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// A random UUID (version 4), the shape AgentCore uses for request and session ids, as a
/// header value (ids go into headers more often than anywhere else).
pub fn uuid_v4() -> HeaderValue {
    let mut text = [0u8; UUID_LEN];
    write_uuid_v4(&mut text);
    // Owned by the `Bytes`, not copied into it: an id is cloned into the upstream request, the
    // record and the response, and a copied (`Vec`-backed) `Bytes` allocates again on its
    // first clone to become shareable. Hex digits and dashes are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("0"))
}

/// A random UUID v4 as text into `out` (`UUID_LEN` bytes).
fn write_uuid_v4(out: &mut [u8]) {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    out.fill(b'-');
    hex_into(&bytes[..4], &mut out[..8]);
    hex_into(&bytes[4..6], &mut out[9..13]);
    hex_into(&bytes[6..8], &mut out[14..18]);
    hex_into(&bytes[8..10], &mut out[19..23]);
    hex_into(&bytes[10..], &mut out[24..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn continues_client_trace() {
        let t = TraceContext::from_headers(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
            ("tracestate", "vendor=1"),
        ]));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(!t.sampled);
        assert_eq!(t.tracestate.as_ref().unwrap(), "vendor=1");
        let up = t.upstream_traceparent();
        assert!(up.to_str().unwrap().ends_with("-00"));
        assert_ne!(
            &up.to_str().unwrap()[36..52],
            "00f067aa0ba902b7",
            "upstream parent is the edge's span"
        );
    }

    #[test]
    fn malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::from_headers(&headers(&[
                ("traceparent", bad),
                ("tracestate", "a=b"),
            ]));
            assert!(t.parent_span_id.is_none(), "{bad}");
            assert!(t.tracestate.is_none());
        }
        let future = TraceContext::from_headers(&headers(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever",
        )]));
        assert!(future.parent_span_id.is_some());
    }

    #[test]
    fn accepts_xray_header() {
        let t = TraceContext::from_headers(&headers(&[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )]));
        assert_eq!(t.trace_id_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(t.parent_span_id, Some(0x53995c3f42cd8ad8_u64.to_be_bytes()));
        assert!(t.sampled);
        let up = t.upstream_traceparent();
        assert!(
            up.to_str()
                .unwrap()
                .starts_with("00-5759e988bd862e3fe1be46a994272793-")
        );
        // traceparent wins over X-Ray; X-Ray's Sampled=0 is kept; "?" defers to the edge.
        let both = TraceContext::from_headers(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            ),
        ]));
        assert_eq!(both.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let off = TraceContext::from_headers(&headers(&[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        )]));
        assert!(!off.sampled);
        let open = TraceContext::from_headers_sampled(
            &headers(&[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?",
            )]),
            Sampler::ratio(0.0),
        );
        assert!(!open.sampled);
    }

    #[test]
    fn sampler_ratio() {
        let mut id = [0u8; 16];
        assert!(Sampler::ALWAYS.sample(&[0xff; 16]));
        assert!(!Sampler::ratio(0.0).sample(&id));
        id[8] = 0x3f; // low 63 bits ≈ 0.25 of the range
        assert!(Sampler::ratio(0.5).sample(&id));
        assert!(!Sampler::ratio(0.1).sample(&id));
        let sampled = (0..10_000u32)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                Sampler::ratio(0.25).sample(&id)
            })
            .count();
        assert!((2000..3000).contains(&sampled), "{sampled}");
        // A client's decision is kept whatever the ratio.
        let t = TraceContext::from_headers_sampled(
            &headers(&[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )]),
            Sampler::ratio(0.0),
        );
        assert!(t.sampled);
        let t = TraceContext::from_headers_sampled(&HeaderMap::new(), Sampler::ratio(0.0));
        assert!(!t.sampled);
        assert!(t.upstream_traceparent().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn uuid_shape() {
        let id = uuid_v4();
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(uuid_v4(), id);
    }

    #[test]
    fn request_id_and_traceparent_share_a_buffer_not_a_value() {
        let trace = TraceContext::from_headers(&headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]));
        let (id, traceparent) = trace.request_id_and_traceparent();
        assert_eq!(traceparent, trace.upstream_traceparent());
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(
            id.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'-')
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            [8, 13, 18, 23]
        );
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_ne!(trace.request_id_and_traceparent().0, id);
    }
}
