//! The Redis store: every replica that shares a Redis and a `keyPrefix` enforces one limit per
//! key.
//!
//! One decision is one round trip: a server-side script ([`GCRA_SCRIPT`], sent once and then
//! called by its SHA) checks the bucket of every rate rule that applies to the request and
//! takes one request from each only if all of them conform, so a request refused by one rule
//! costs the others nothing. Time is Redis's own clock (`TIME`), so replicas with skewed clocks
//! still agree. A bucket is one string key holding its theoretical arrival time in
//! microseconds, expiring when the bucket would be full again: idle keys cost Redis nothing.
//!
//! The connection is the `redis` crate's `ConnectionManager`: one multiplexed connection per
//! store (requests pipeline on it, none waits for a pool slot), reconnected in the background
//! after it drops, created lazily so the edge starts while Redis is down. Every decision waits
//! at most `timeout`; what happens then (`onError`) is the phase's business.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

/// The GCRA over several buckets. `KEYS[i]` is bucket i; `ARGV[2i-1]` its emission interval
/// and `ARGV[2i]` its tolerance (emission interval × burst), both in microseconds. Returns
/// `{1, 0, 0}` when every bucket conforms (and takes one request from each), else
/// `{0, i, µs until bucket i conforms}` and changes nothing.
pub const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  local next_tat = tat + emission
  if next_tat - now > tolerance then
    return {0, i, next_tat - now - tolerance}
  end
  tats[i] = next_tat
end
for i = 1, #KEYS do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
return {1, 0, 0}
";

/// How long a connection attempt may take; the decision itself never waits past `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one log line per this interval while Redis fails (the counter has every error).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One bucket a decision checks.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The full Redis key (prefix, rule, request key).
    pub key: String,
    pub emission_us: u64,
    pub tolerance_us: u64,
}

/// Why Redis gave no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within `timeout`.
    Timeout,
    /// Connection refused or dropped, a script error, an unexpected reply.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer within the timeout"),
            Self::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Redis's answer: everything conforms, or bucket `index` does not for `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny { index: usize, retry_after: Duration },
}

/// A shared Redis, one per `(url)` for the process (kept across reloads).
pub struct RedisStore {
    client: Client,
    url_shown: String,
    manager: OnceLock<ConnectionManager>,
    script: Script,
    started: Instant,
    last_log_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url_shown)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://` or `rediss://`); nothing connects until the first
    /// decision.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Self {
            client,
            url_shown: redact(url),
            manager: OnceLock::new(),
            script: Script::new(GCRA_SCRIPT),
            started: Instant::now(),
            last_log_ms: AtomicU64::new(0),
        })
    }

    /// The URL without its password, for logs.
    pub fn url(&self) -> &str {
        &self.url_shown
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    /// One round trip: checks and takes from every bucket, or none. Waits at most `timeout`.
    pub async fn decide(
        &self,
        buckets: &[Bucket],
        timeout: Duration,
    ) -> Result<Verdict, StoreError> {
        let mut manager = self.manager()?;
        let mut invocation = self.script.prepare_invoke();
        for bucket in buckets {
            invocation
                .key(&bucket.key)
                .arg(bucket.emission_us)
                .arg(bucket.tolerance_us);
        }
        let reply: (i64, i64, i64) =
            match tokio::time::timeout(timeout, invocation.invoke_async(&mut manager)).await {
                Err(_) => return Err(StoreError::Timeout),
                Ok(Err(e)) => return Err(StoreError::Failed(e.to_string())),
                Ok(Ok(reply)) => reply,
            };
        match reply {
            (1, _, _) => Ok(Verdict::Allow),
            (0, index, wait) if index >= 1 && (index as usize) <= buckets.len() => {
                Ok(Verdict::Deny {
                    index: index as usize - 1,
                    retry_after: Duration::from_micros(wait.max(0) as u64),
                })
            }
            other => Err(StoreError::Failed(format!(
                "unexpected reply from the quota script: {other:?}"
            ))),
        }
    }

    /// Whether to log this error: at most one line per [`LOG_EVERY`].
    pub fn should_log(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let every = LOG_EVERY.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://edge:pw@cache/1"),
            "rediss://edge:***@cache/1"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(RedisStore::new("http://x").is_err());
        assert!(RedisStore::new("redis://127.0.0.1:6379/0").is_ok());
    }

    #[tokio::test]
    async fn a_dead_redis_fails_within_the_timeout() {
        // A port nothing listens on: refused at once, or at worst the timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/0")).unwrap();
        let started = Instant::now();
        let bucket = Bucket {
            key: "k".into(),
            emission_us: 1000,
            tolerance_us: 1000,
        };
        let result = store.decide(&[bucket], Duration::from_millis(100)).await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
