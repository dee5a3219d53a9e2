//! The outbound-token cache of one route: exchanged tokens per caller token, the
//! client-credentials token under one fixed key.
//!
//! Keyed by the SHA-256 of the caller's token (the same digest the verified-token cache uses,
//! handed over by the auth phase, so a hit costs no second hash) — never by the token itself:
//! nothing that might be logged or dumped holds a live credential as a key. Entries expire 30 s
//! before the earlier of the issued token's `expires_in` and the caller's `exp` (see
//! [`Credential::new`]), so the upstream never receives a token about to lapse and an exchanged
//! token never outlives the identity it stands for. Bounded in entries (moka's TinyLFU keeps
//! the active callers). Concurrent misses for one key run one fetch: moka's
//! `entry().or_try_insert_with` makes every other caller wait for the first one's result, and
//! a failed fetch is not cached (each later request tries again, bounded by the phase's
//! semaphore).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use moka::Expiry;

use crate::auth::cache::{DigestPrefix, TokenHash};

/// How long before its deadline a token stops being handed out.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// The key of a route's client-credentials token (it does not depend on the caller).
pub const CLIENT_CREDENTIALS_KEY: TokenHash = [0; 32];

/// A token for the upstream and how long it may be handed out.
#[derive(Clone)]
pub struct Credential {
    /// `Bearer <token>`, marked sensitive.
    pub authorization: HeaderValue,
    /// When the cache drops it.
    pub valid_until: Instant,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A token issued `now` with `expires_in`, for a caller whose token expires in
    /// `caller_left` (`None` for client credentials): cached until [`REFRESH_MARGIN`] before
    /// the earlier of the two. A deadline already inside the margin means "use once, do not
    /// cache".
    pub fn new(
        authorization: HeaderValue,
        now: Instant,
        expires_in: Duration,
        caller_left: Option<Duration>,
    ) -> Self {
        let lifetime = caller_left.map_or(expires_in, |left| left.min(expires_in));
        Self {
            authorization,
            valid_until: now + lifetime.saturating_sub(REFRESH_MARGIN),
        }
    }
}

struct UntilValid;

impl Expiry<TokenHash, Credential> for UntilValid {
    fn expire_after_create(
        &self,
        _: &TokenHash,
        value: &Credential,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(now))
    }
}

/// A route's cache (see the module docs).
#[derive(Clone)]
pub struct OutboundCache {
    inner: moka::future::Cache<TokenHash, Credential, DigestPrefix>,
}

impl std::fmt::Debug for OutboundCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already cached, or fetched by a concurrent request this one waited for.
    Cache,
    /// Fetched by this request.
    Issued,
}

impl OutboundCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilValid)
                .build_with_hasher(DigestPrefix),
        }
    }

    /// The cached credential for `key`, or the one `fetch` obtains — exactly one `fetch` runs
    /// per key at a time, whoever else asks meanwhile waits for its result. Errors are shared
    /// with those waiters, never cached.
    pub async fn get_or_fetch<F, E>(
        &self,
        key: TokenHash,
        fetch: F,
    ) -> Result<(Credential, Source), Arc<E>>
    where
        F: Future<Output = Result<Credential, E>>,
        E: Send + Sync + 'static,
    {
        // The hit path first: no init future is built or polled.
        if let Some(hit) = self.inner.get(&key).await {
            return Ok((hit, Source::Cache));
        }
        let entry = self.inner.entry(key).or_try_insert_with(fetch).await?;
        let source = if entry.is_fresh() {
            Source::Issued
        } else {
            Source::Cache
        };
        Ok((entry.into_value(), source))
    }

    /// Entries, after pending maintenance (tests and metrics).
    pub async fn entries(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn bearer(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn deadline_is_the_earlier_minus_the_margin() {
        let now = Instant::now();
        let c = Credential::new(bearer("t"), now, Duration::from_secs(300), None);
        assert_eq!(c.valid_until, now + Duration::from_secs(270));
        let c = Credential::new(
            bearer("t"),
            now,
            Duration::from_secs(300),
            Some(Duration::from_secs(100)),
        );
        assert_eq!(c.valid_until, now + Duration::from_secs(70));
        let c = Credential::new(
            bearer("t"),
            now,
            Duration::from_secs(20),
            Some(Duration::from_secs(100)),
        );
        assert_eq!(c.valid_until, now, "inside the margin: not cached");
        let c = Credential::new(bearer("Bearer secret"), now, Duration::from_secs(60), None);
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_fetch() {
        let cache = OutboundCache::new(100);
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch([7; 32], async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(Credential::new(
                            bearer("Bearer one"),
                            Instant::now(),
                            Duration::from_secs(300),
                            None,
                        ))
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut issued = 0;
        for task in tasks {
            let (credential, source) = task.await.unwrap();
            assert_eq!(credential.authorization, "Bearer one");
            issued += usize::from(source == Source::Issued);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(issued, 1);
        // And then it is a hit.
        let (_, source) = cache
            .get_or_fetch([7; 32], async { Err::<Credential, ()>(()) })
            .await
            .unwrap();
        assert_eq!(source, Source::Cache);
    }

    #[tokio::test]
    async fn errors_are_shared_but_not_cached_and_keys_are_separate() {
        let cache = OutboundCache::new(100);
        let err = cache
            .get_or_fetch([1; 32], async { Err::<Credential, &str>("refused") })
            .await
            .unwrap_err();
        assert_eq!(*err, "refused");
        let (c, source) = cache
            .get_or_fetch([1; 32], async {
                Ok::<_, ()>(Credential::new(
                    bearer("Bearer a"),
                    Instant::now(),
                    Duration::from_secs(300),
                    None,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            (c.authorization.to_str().unwrap(), source),
            ("Bearer a", Source::Issued)
        );
        let (c, _) = cache
            .get_or_fetch([2; 32], async {
                Ok::<_, ()>(Credential::new(
                    bearer("Bearer b"),
                    Instant::now(),
                    Duration::from_secs(300),
                    None,
                ))
            })
            .await
            .unwrap();
        assert_eq!(c.authorization, "Bearer b");
        assert_eq!(cache.entries().await, 2);
    }

    #[tokio::test]
    async fn a_credential_inside_the_margin_is_used_once_not_cached() {
        let cache = OutboundCache::new(100);
        let fetch = |n: &'static str| async move {
            Ok::<_, ()>(Credential::new(
                bearer(n),
                Instant::now(),
                Duration::from_secs(10),
                None,
            ))
        };
        let (c, s) = cache
            .get_or_fetch([3; 32], fetch("Bearer 1"))
            .await
            .unwrap();
        assert_eq!(
            (c.authorization.to_str().unwrap(), s),
            ("Bearer 1", Source::Issued)
        );
        let (c, s) = cache
            .get_or_fetch([3; 32], fetch("Bearer 2"))
            .await
            .unwrap();
        assert_eq!(
            (c.authorization.to_str().unwrap(), s),
            ("Bearer 2", Source::Issued)
        );
    }
}
