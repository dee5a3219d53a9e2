//! The verified-token cache: a repeated token costs a SHA-256 and a lookup instead of a
//! signature verification.
//!
//! Keyed by the SHA-256 of the token (never the token itself: a heap dump does not hold live
//! credentials, and equal-length keys hash cheaply). An entry records what the signature check
//! established — which issuer and which key verified it, and the parsed claims — and expires
//! at the token's `exp`; it never outlives it. What can change between requests is checked on
//! every hit: the key must still be published by the issuer (a key dropped from the JWKS
//! revokes its tokens at once), the issuer's keys must be fresh, `iss` must still match, the
//! route's algorithms, clock skew and policy apply. Bounded by `maxEntries` (moka's TinyLFU
//! eviction keeps the hot tokens); `maxEntries: 0` disables it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use jsonwebtoken::Algorithm;
use moka::Expiry;

use super::claims::Claims;
use super::keys::VerifyKey;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// What a successful verification established. Held by value in the cache (two `Arc`s and
/// two words, cloned on a hit) rather than behind one more `Arc`: an allocation less per token.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// Identity of the [`super::jwks::Issuer`] whose key verified the token.
    pub issuer_id: usize,
    pub key: Arc<VerifyKey>,
    pub alg: Algorithm,
    pub claims: Arc<Claims>,
}

struct UntilExp;

impl Expiry<TokenHash, CachedToken> for UntilExp {
    fn expire_after_create(
        &self,
        _: &TokenHash,
        value: &CachedToken,
        _: Instant,
    ) -> Option<Duration> {
        let exp = value.claims.exp()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = u64::try_from(exp).unwrap_or(0).saturating_sub(now);
        Some(Duration::from_secs(left))
    }
}

/// Keys are SHA-256 digests already: their first eight bytes are as good a hash as any, and
/// an attacker cannot aim at a bucket without breaking SHA-256. Saves a SipHash per request.
#[derive(Clone, Copy, Debug, Default)]
pub struct DigestPrefix;

impl std::hash::BuildHasher for DigestPrefix {
    type Hasher = PrefixHasher;
    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

/// See [`DigestPrefix`].
#[derive(Debug, Default)]
pub struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its bytes (arrays write their elements in one call); fold
        // whatever arrives so that any length works.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Process-wide cache shared by every route.
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<moka::sync::Cache<TokenHash, CachedToken, DigestPrefix>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries())
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens; 0 disables caching.
    pub fn new(max_entries: u64) -> Self {
        let inner = (max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExp)
                .build_with_hasher(DigestPrefix)
        });
        Self { inner }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn hash(token: &str) -> TokenHash {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        out
    }

    pub fn get(&self, hash: &TokenHash) -> Option<CachedToken> {
        self.inner.as_ref()?.get(hash)
    }

    /// Caches a verified token unless it has no `exp` (it is never accepted then anyway).
    pub fn insert(&self, hash: TokenHash, token: CachedToken) {
        if let Some(cache) = &self.inner
            && token.claims.exp().is_some()
        {
            cache.insert(hash, token);
        }
    }

    /// The number of entries, after applying pending evictions (for metrics and tests).
    pub fn entries(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Drops every entry (used when a reload changes the cache size).
    pub fn clear(&self) {
        if let Some(cache) = &self.inner {
            cache.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256() {
        let h = TokenCache::hash("abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let cache = TokenCache::new(0);
        assert!(!cache.enabled());
        assert!(cache.get(&[0; 32]).is_none());
        assert_eq!(cache.entries(), 0);
    }
}
