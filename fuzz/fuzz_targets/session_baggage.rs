//! The session id and baggage rules: any bytes as header values (split on newlines:
//! first the session ids, after a blank line the baggage values), through `runtime_id` and
//! the baggage merge. The merged baggage must stay within the W3C limits and keep the edge's
//! own `session.id` entry first.
#![no_main]

use gatehouse::enrich::HeaderPolicy;
use gatehouse::session::{SESSION_HEADER, runtime_id};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (sessions, baggage) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for value in sessions.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(SESSION_HEADER.clone(), value);
        }
    }
    for value in baggage.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static("baggage"), value);
        }
    }
    let session = match runtime_id(&headers) {
        Ok(id) => {
            let text = id.to_str().expect("a session id is ASCII");
            assert!((33..=256).contains(&text.len()), "{text:?}");
            Some(text.to_owned())
        }
        Err(_) => None,
    };
    let Ok(policy) = HeaderPolicy::new(&[], None, &[], &[], false) else {
        return;
    };
    let merged = policy.baggage(&headers, session.as_deref(), None);
    assert!(merged.len() <= 8192);
    assert!(merged.split(',').count() <= 180);
    if let Some(session) = &session {
        assert!(merged.starts_with(&format!("session.id={session}")));
        let ours = merged
            .split(',')
            .filter(|m| {
                m.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "session.id")
            })
            .count();
        assert_eq!(ours, 1, "{merged}");
    }
    if !merged.is_empty() {
        HeaderValue::from_str(&merged).expect("merged baggage is a header value");
    }
});
