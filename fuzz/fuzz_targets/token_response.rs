//! Token-endpoint answers as an identity provider (or whoever answers in its place) may send
//! them (SPEC §13): any status and bytes through `parse_response`. Whatever it returns, an
//! issued credential is a valid `Bearer` header value marked sensitive, and a refusal names
//! only an RFC 6749-shaped error code — never the body's other text.
#![no_main]

use gatehouse::outbound::client::{EndpointError, parse_response};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (status, body) = input;
    let Ok(status) = StatusCode::from_u16(100 + status % 500) else {
        return;
    };
    match parse_response(status, body) {
        Ok(issued) => {
            assert_eq!(status, StatusCode::OK);
            assert!(issued.authorization.is_sensitive());
            let value = issued.authorization.to_str().unwrap();
            assert!(value.starts_with("Bearer ") && !value[7..].contains(' '));
        }
        Err(EndpointError::Refused(code)) => {
            assert!(matches!(status.as_u16(), 400 | 401 | 403));
            assert!(!code.is_empty() && code.len() <= 64);
            assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
        }
        Err(EndpointError::Unavailable(_)) => {}
    }
});
