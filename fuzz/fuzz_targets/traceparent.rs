//! Trace context from any `traceparent`, `tracestate` and `X-Amzn-Trace-Id` values (split on
//! newlines, in that order): never an error, and what goes upstream is always a well-formed
//! version-00 `traceparent`.
#![no_main]

use gatehouse::telemetry::trace::TraceContext;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let names = ["traceparent", "tracestate", "x-amzn-trace-id"];
    for (name, value) in names.iter().zip(data.split(|&b| b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(*name, value);
        }
    }
    let trace = TraceContext::from_headers(&headers);
    assert_ne!(trace.trace_id, [0; 16]);
    let upstream = trace.upstream_traceparent();
    let text = upstream.to_str().expect("ASCII");
    assert_eq!(text.len(), 55);
    assert!(text.starts_with("00-"));
    assert_eq!(&text[3..35], trace.trace_id_hex());
});
