//! The JWS front end on any string: `Jws::parse`, then what a verifier does next with its
//! parts (signature bytes, claims). Nothing here may panic, whatever the token.
#![no_main]

use gatehouse::auth::token::Jws;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jws) = Jws::parse(token) {
        assert!(!jws.signing_input.is_empty());
        let _ = jws.signature_bytes();
        if let Ok(claims) = jws.claims() {
            for (name, _) in claims.iter() {
                let _ = claims.render(name);
            }
        }
    }
});
