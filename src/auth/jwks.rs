//! One identity provider: OIDC discovery, JWKS fetching, the cached keys and their refresh.
//!
//! The rules, each with a reason:
//! - **One fetch in flight per issuer.** Every fetch (background refresh, unknown `kid`,
//!   first load) takes the issuer's fetch lock; requests that need its result wait for it,
//!   the others never touch it. So a hanging IdP never blocks a request whose key is cached.
//! - **Unknown `kid` refetches at most once per `jwksMinRefetchInterval`.** A flood of tokens
//!   with random `kid`s costs the IdP one request per interval, not one per token.
//! - **Refresh in the background** every `jwksRefreshInterval`, or sooner when the IdP's
//!   `Cache-Control: max-age` says so (never sooner than the minimum refetch interval); after a
//!   failure, retry with backoff (1s doubling, capped at 30s) so an IdP that comes back is
//!   picked up without a restart.
//! - **Keep the last good keys** while the IdP fails — errors are never cached as keys —
//!   until they are older than `maxKeyStaleness`; then fail closed (503, `/readyz` 503).
//! - **Bounded fetches**: a timeout, 1 MiB bodies, no redirects, JSON only.
//!
//! A plain struct with a lock and an `ArcSwap` rather than a general-purpose cache: the value
//! must outlive failed refreshes and carry its age, which an evicting cache works against.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Uri;

mod fetch;

use self::fetch::{Discovery, parse_discovery};
pub use self::fetch::{FetchError, Fetcher};
use super::keys::{KeySet, parse_jwks};
use crate::telemetry::metrics::Metrics;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Per-issuer timing, from the `jwt` blocks of the routes that use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerConfig {
    pub refresh_interval: Duration,
    pub min_refetch_interval: Duration,
    pub max_staleness: Duration,
    pub fetch_timeout: Duration,
}

/// The configuration's defaults (`jwt.jwksRefreshInterval` and the others, docs/configuration.md).
impl Default for IssuerConfig {
    fn default() -> Self {
        use crate::config::defaults;
        Self {
            refresh_interval: defaults::JWKS_REFRESH_INTERVAL,
            min_refetch_interval: defaults::JWKS_MIN_REFETCH_INTERVAL,
            max_staleness: defaults::MAX_KEY_STALENESS,
            fetch_timeout: defaults::JWKS_FETCH_TIMEOUT,
        }
    }
}

impl IssuerConfig {
    /// The stricter of two configurations (routes sharing an issuer share its keys).
    pub fn strictest(self, other: Self) -> Self {
        Self {
            refresh_interval: self.refresh_interval.min(other.refresh_interval),
            min_refetch_interval: self.min_refetch_interval.min(other.min_refetch_interval),
            max_staleness: self.max_staleness.min(other.max_staleness),
            fetch_timeout: self.fetch_timeout.min(other.fetch_timeout),
        }
    }
}

/// State only the holder of the fetch lock touches.
#[derive(Debug, Default)]
struct FetchState {
    discovery: Option<Discovery>,
    discovery_at: Option<Instant>,
    /// Skipped-key reasons already logged, so each is logged once.
    logged: HashSet<String>,
}

/// What the refresh loop needs to pick its next wake-up; outside the fetch lock so that
/// computing it never looks like a fetch in flight.
#[derive(Debug, Default, Clone, Copy)]
struct Schedule {
    failures: u32,
    max_age: Option<Duration>,
}

/// Why a fetch happens; decides whether it may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The background timer.
    Scheduled,
    /// A token names a `kid` the cached keys do not have.
    UnknownKid,
    /// A request found no usable keys at all (never loaded, or stale).
    NoKeys,
}

/// The readiness of one issuer, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerStatus {
    Ready,
    Loading {
        last_error: Option<String>,
    },
    Stale {
        age: Duration,
        last_error: Option<String>,
    },
}

/// One identity provider, shared by every route that names its discovery URL.
pub struct Issuer {
    pub discovery_url: Uri,
    /// Metrics label: the discovery URL without `/.well-known/openid-configuration`.
    pub label: String,
    config: ArcSwap<IssuerConfig>,
    keys: ArcSwapOption<KeySet>,
    /// The discovery document's `token_endpoint`, read without the fetch lock.
    token_endpoint: ArcSwapOption<Uri>,
    fetch: tokio::sync::Mutex<FetchState>,
    /// Start of the last fetch attempt, as nanoseconds since `epoch` (0 = never).
    last_attempt: AtomicU64,
    epoch: Instant,
    last_error: Mutex<Option<String>>,
    schedule: Mutex<Schedule>,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
    wake: tokio::sync::Notify,
    /// Keys given at construction, never fetched ([`Issuer::with_keys`]).
    fixed: bool,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("discovery_url", &self.discovery_url)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Creates the issuer and starts its background refresh (which fetches right away).
    pub fn start(
        discovery_url: Uri,
        config: IssuerConfig,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let text = discovery_url.to_string();
        let label = text
            .strip_suffix("/.well-known/openid-configuration")
            .unwrap_or(&text)
            .to_owned();
        let issuer = Arc::new(Self {
            discovery_url,
            label,
            config: ArcSwap::from_pointee(config),
            keys: ArcSwapOption::empty(),
            token_endpoint: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            last_attempt: AtomicU64::new(0),
            epoch: Instant::now(),
            last_error: Mutex::new(None),
            schedule: Mutex::new(Schedule::default()),
            fetcher,
            metrics,
            wake: tokio::sync::Notify::new(),
            fixed: false,
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&issuer)));
        issuer
    }

    /// An issuer with fixed keys and no background refresh (benchmarks, tests, tools).
    pub fn with_keys(
        issuer: &str,
        jwks: &[u8],
        config: IssuerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let parsed = parse_jwks(jwks)?;
        let keys = KeySet::new(Arc::from(issuer), parsed.keys, None);
        let discovery_url: Uri = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
        .parse()
        .map_err(|_| format!("issuer {issuer:?} is not a URL"))?;
        Ok(Arc::new(Self {
            label: issuer.to_owned(),
            discovery_url,
            config: ArcSwap::from_pointee(config),
            keys: ArcSwapOption::from_pointee(keys),
            token_endpoint: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            last_attempt: AtomicU64::new(0),
            epoch: Instant::now(),
            last_error: Mutex::new(None),
            schedule: Mutex::new(Schedule::default()),
            fetcher: Fetcher::new(),
            metrics,
            wake: tokio::sync::Notify::new(),
            fixed: true,
        }))
    }

    pub fn config(&self) -> IssuerConfig {
        **self.config.load()
    }

    /// Applies a reloaded configuration (the refresh loop picks it up at once).
    pub fn set_config(&self, config: IssuerConfig) {
        if self.config() != config {
            self.config.store(Arc::new(config));
            self.wake.notify_one();
        }
    }

    /// The cached keys, if they exist and are not older than `maxKeyStaleness`.
    pub fn fresh_keys(&self) -> Option<Arc<KeySet>> {
        let keys = self.keys.load_full()?;
        (self.fixed || keys.fetched_at.elapsed() <= self.config().max_staleness).then_some(keys)
    }

    /// The `token_endpoint` of the last discovery document, if it named a usable one.
    pub fn token_endpoint(&self) -> Option<Arc<Uri>> {
        self.token_endpoint.load_full()
    }

    /// Usable keys for a request, fetching (coalesced, rate-limited) when there are none.
    pub async fn keys_for_request(&self) -> Option<Arc<KeySet>> {
        if let Some(keys) = self.fresh_keys() {
            return Some(keys);
        }
        self.refresh(Reason::NoKeys).await;
        self.fresh_keys()
    }

    pub fn status(&self) -> IssuerStatus {
        let last_error = self.last_error.lock().map(|e| e.clone()).unwrap_or(None);
        match self.keys.load_full() {
            None => IssuerStatus::Loading { last_error },
            Some(keys) => {
                let age = keys.fetched_at.elapsed();
                if age <= self.config().max_staleness {
                    IssuerStatus::Ready
                } else {
                    IssuerStatus::Stale { age, last_error }
                }
            }
        }
    }

    /// Exports the key count and age gauges.
    pub fn export_metrics(&self) {
        match self.keys.load_full() {
            Some(keys) => self.metrics.set_jwks_state(
                &self.label,
                keys.keys.len(),
                keys.fetched_at.elapsed().as_secs(),
            ),
            None => self.metrics.set_jwks_state(&self.label, 0, 0),
        }
    }

    fn since_last_attempt(&self) -> Option<Duration> {
        match self.last_attempt.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(nanos)),
            ),
        }
    }

    fn mark_attempt(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_attempt.store(nanos, Ordering::Release);
    }

    /// Fetches new keys if `reason` allows it now; returns once the keys are as fresh as they
    /// will get. Never holds a lock while a request that has keys could be waiting.
    pub async fn refresh(&self, reason: Reason) {
        if self.fixed {
            return;
        }
        let mut state = match self.fetch.try_lock() {
            Ok(state) => state,
            Err(_) => {
                // A fetch is in flight: its result is what this caller wants.
                if reason != Reason::Scheduled {
                    let _ = self.fetch.lock().await;
                }
                return;
            }
        };
        let min_interval = self.config().min_refetch_interval;
        let recently = self
            .since_last_attempt()
            .is_some_and(|since| since < min_interval);
        if reason != Reason::Scheduled && recently {
            return;
        }
        self.mark_attempt();
        let timer = crate::telemetry::spans::FetchTimer::start();
        let result = self.fetch_once(&mut state).await;
        timer.finish(&self.label, reason, &result);
        self.metrics.jwks_fetch(&self.label, result.is_ok());
        drop(state);
        match result {
            Ok(max_age) => {
                if let Ok(mut schedule) = self.schedule.lock() {
                    *schedule = Schedule {
                        failures: 0,
                        max_age,
                    };
                }
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
            }
            Err(error) => {
                if let Ok(mut schedule) = self.schedule.lock() {
                    schedule.failures = schedule.failures.saturating_add(1);
                }
                let stale_keys = self.keys.load().is_some();
                tracing::warn!(
                    issuer = %self.label,
                    %error,
                    keeping_cached_keys = stale_keys,
                    "fetching the issuer's keys failed"
                );
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(error.to_string());
                }
            }
        }
        self.export_metrics();
    }

    async fn fetch_once(&self, state: &mut FetchState) -> Result<Option<Duration>, FetchError> {
        let config = self.config();
        let discovery_due = state
            .discovery_at
            .is_none_or(|at| at.elapsed() >= config.refresh_interval);
        if discovery_due || state.discovery.is_none() {
            match self
                .fetcher
                .get(&self.discovery_url, config.fetch_timeout)
                .await
            {
                Ok((body, _)) => match parse_discovery(&body, &self.discovery_url) {
                    Ok(discovery) => {
                        self.token_endpoint
                            .store(discovery.token_endpoint.clone().map(Arc::new));
                        state.discovery = Some(discovery);
                        state.discovery_at = Some(Instant::now());
                    }
                    Err(e) if state.discovery.is_none() => return Err(e),
                    Err(e) => {
                        tracing::warn!(issuer = %self.label, error = %e, "keeping the previous discovery document")
                    }
                },
                Err(e) if state.discovery.is_none() => {
                    return Err(FetchError::Invalid(format!("discovery document: {e}")));
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.label, error = %e, "keeping the previous discovery document")
                }
            }
        }
        let Some(discovery) = state.discovery.clone() else {
            return Err(FetchError::Invalid("no discovery document".into()));
        };
        let (body, max_age) = self
            .fetcher
            .get(&discovery.jwks_uri, config.fetch_timeout)
            .await
            .map_err(|e| FetchError::Invalid(format!("JWKS: {e}")))?;
        let parsed = parse_jwks(&body).map_err(FetchError::Invalid)?;
        for reason in &parsed.skipped {
            if state.logged.insert(reason.clone()) {
                tracing::warn!(issuer = %self.label, "{reason}");
            }
        }
        if parsed.keys.is_empty() {
            return Err(FetchError::Invalid("JWKS has no usable signing key".into()));
        }
        let previous = self.keys.load_full();
        let set = KeySet::new(discovery.issuer, parsed.keys, previous.as_deref());
        tracing::debug!(issuer = %self.label, keys = set.keys.len(), "keys loaded");
        self.keys.store(Some(Arc::new(set)));
        Ok(max_age)
    }

    /// How long the refresh loop sleeps before the next scheduled fetch.
    fn next_delay(&self) -> Duration {
        let config = self.config();
        let schedule = self.schedule.lock().map(|s| *s).unwrap_or_default();
        if schedule.failures > 0 {
            let exp = schedule.failures.saturating_sub(1).min(5);
            return Duration::from_secs(1 << exp)
                .min(MAX_BACKOFF)
                .min(config.refresh_interval);
        }
        match schedule.max_age {
            Some(max_age) => max_age
                .max(config.min_refetch_interval)
                .min(config.refresh_interval),
            None => config.refresh_interval,
        }
    }
}

async fn refresh_loop(issuer: Weak<Issuer>) {
    loop {
        let Some(strong) = issuer.upgrade() else {
            return;
        };
        strong.refresh(Reason::Scheduled).await;
        let delay = strong.next_delay();
        // Sleep without keeping the issuer alive: dropping the last route that uses it ends
        // this task at its next wake-up.
        let woken = async {
            strong.wake.notified().await;
        };
        let sleep = tokio::time::sleep(delay);
        tokio::select! {
            () = sleep => {}
            () = woken => {}
        }
        drop(strong);
    }
}

/// `validate --online`: fetches a discovery document and its JWKS once, without caching,
/// and describes what was found.
pub async fn probe(
    fetcher: &Fetcher,
    discovery_url: &str,
    timeout: Duration,
) -> Result<String, String> {
    let url: Uri = discovery_url.parse().map_err(|_| "not a URL".to_owned())?;
    let (body, _) = fetcher
        .get(&url, timeout)
        .await
        .map_err(|e| format!("discovery document: {e}"))?;
    let discovery = parse_discovery(&body, &url).map_err(|e| e.to_string())?;
    let (body, max_age) = fetcher
        .get(&discovery.jwks_uri, timeout)
        .await
        .map_err(|e| format!("JWKS {}: {e}", discovery.jwks_uri))?;
    let parsed = parse_jwks(&body)?;
    if parsed.keys.is_empty() {
        return Err(format!(
            "JWKS {} has no usable signing key ({})",
            discovery.jwks_uri,
            parsed.skipped.join("; ")
        ));
    }
    let keys: Vec<String> = parsed
        .keys
        .iter()
        .map(|k| format!("{} {:?}", k.kid.as_deref().unwrap_or("(no kid)"), k.kind))
        .collect();
    let mut report = format!(
        "issuer {}, jwks_uri {}, {} usable key(s): {}",
        discovery.issuer,
        discovery.jwks_uri,
        keys.len(),
        keys.join(", ")
    );
    if let Some(max_age) = max_age {
        report.push_str(&format!(", Cache-Control max-age {}s", max_age.as_secs()));
    }
    for skipped in parsed.skipped {
        report.push_str(&format!("\n  warning: {skipped}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::fetch::max_age;
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("Max-Age = \"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn discovery_documents() {
        let url: Uri = "https://idp.example/.well-known/openid-configuration"
            .parse()
            .unwrap();
        let ok = parse_discovery(
            br#"{"issuer":"https://idp.example","jwks_uri":"https://idp.example/keys"}"#,
            &url,
        )
        .unwrap();
        assert_eq!(&*ok.issuer, "https://idp.example");
        assert!(parse_discovery(br#"{"jwks_uri":"https://idp.example/keys"}"#, &url).is_err());
        assert!(
            parse_discovery(
                br#"{"issuer":"x","jwks_uri":"http://idp.example/keys"}"#,
                &url
            )
            .is_err()
        );
        assert!(
            parse_discovery(br#"{"issuer":"x","jwks_uri":"file:///etc/passwd"}"#, &url).is_err()
        );
        assert!(parse_discovery(b"<html>", &url).is_err());
    }

    #[test]
    fn strictest_config() {
        let a = IssuerConfig {
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(10),
            max_staleness: Duration::from_secs(86400),
            fetch_timeout: Duration::from_secs(5),
        };
        let b = IssuerConfig {
            refresh_interval: Duration::from_secs(60),
            ..a
        };
        assert_eq!(a.strictest(b).refresh_interval, Duration::from_secs(60));
    }
}
