//! The `Authorization` header rules: any bytes, split on newlines into one or more header
//! values, through `bearer` and, when a token comes out, `Jws::parse`.
#![no_main]

use gatehouse::auth::token::{Jws, MAX_TOKEN_BYTES, TokenError, bearer};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for value in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(AUTHORIZATION, value);
        }
    }
    let several = headers.get_all(AUTHORIZATION).iter().count() > 1;
    match bearer(&headers) {
        Ok(token) => {
            assert!(!several, "two Authorization headers were accepted");
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            assert!(!token.starts_with([' ', '\t']));
            let _ = Jws::parse(token);
        }
        Err(TokenError::Missing) => assert!(!several),
        Err(TokenError::Malformed(_)) => {}
    }
});
