//! JWKS documents as an identity provider (or whoever answers in its place) may send them:
//! any bytes through `parse_jwks`, the key set built from them, and lookups.
#![no_main]

use std::sync::Arc;

use gatehouse::auth::keys::{KeySet, Lookup, parse_jwks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_jwks(data) else {
        return;
    };
    let kids: Vec<Option<Arc<str>>> = parsed.keys.iter().map(|k| k.kid.clone()).collect();
    let set = KeySet::new(Arc::from("issuer"), parsed.keys, None);
    let again = KeySet::new(Arc::from("issuer"), Vec::new(), Some(&set));
    assert!(again.keys.is_empty());
    for alg in [
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::PS512,
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::ES384,
        jsonwebtoken::Algorithm::EdDSA,
        jsonwebtoken::Algorithm::HS256,
    ] {
        for kid in &kids {
            if let Lookup::Found(key) = set.find(kid.as_deref(), alg) {
                assert!(key.accepts(alg), "a key was found for an alg it refuses");
                assert!(!key.verify(alg, b"message", &[0u8; 64]));
            }
        }
        let _ = set.find(None, alg);
        let _ = set.find(Some("../../etc/passwd"), alg);
    }
});
