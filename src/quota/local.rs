//! The local store: one keyed GCRA limiter per rule ([`governor`]), in this process's memory.
//!
//! A decision is a hash lookup and a compare-and-swap on the key's state; no lock is held and
//! nothing awaits. Keys that have fully replenished carry no information, so a sweeper drops
//! them once a minute (governor's `retain_recent`): memory follows the keys active in the last
//! window, not every key ever seen.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::rules::Rate;

/// How often idle keys are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// One rule's limiter.
pub struct LocalLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    sweeper: OnceLock<()>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl LocalLimiter {
    pub fn new(rate: Rate, burst: NonZeroU32) -> Arc<Self> {
        // `with_period` refuses only a zero period; a rate of at most u32::MAX per second
        // never rounds down to zero nanoseconds... except above 1e9/s, clamped here.
        let period = rate.emission_interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = DefaultClock::default();
        Arc::new(Self {
            limiter: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            sweeper: OnceLock::new(),
        })
    }

    /// Takes one request from `key`'s bucket: `Ok` when it conforms, otherwise how long until
    /// it would.
    pub fn check(self: &Arc<Self>, key: &String) -> Result<(), Duration> {
        self.sweeper.get_or_init(|| self.start_sweeper());
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// Drops the keys that are back to a full bucket.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// A task that sweeps while the limiter lives (it is dropped with its configuration on
    /// reload). Outside a runtime (benchmarks) there is no sweeper.
    fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.sweep();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = LocalLimiter::new(Rate::parse("10/s").unwrap(), NonZeroU32::new(3).unwrap());
        let a = "a".to_owned();
        let b = "b".to_owned();
        for _ in 0..3 {
            assert_eq!(limiter.check(&a), Ok(()));
        }
        let wait = limiter.check(&a).unwrap_err();
        // One request's worth comes back every 100ms.
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Keys are independent.
        assert_eq!(limiter.check(&b), Ok(()));
        assert_eq!(limiter.len(), 2);
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(limiter.check(&a), Ok(()));
    }

    #[test]
    fn sweep_drops_replenished_keys() {
        let limiter =
            LocalLimiter::new(Rate::parse("1000/s").unwrap(), NonZeroU32::new(1).unwrap());
        assert_eq!(limiter.check(&"x".to_owned()), Ok(()));
        assert_eq!(limiter.len(), 1);
        std::thread::sleep(Duration::from_millis(5));
        limiter.sweep();
        assert!(limiter.is_empty());
    }

    #[test]
    fn slow_rates_wait_long() {
        let limiter = LocalLimiter::new(Rate::parse("2/h").unwrap(), NonZeroU32::new(1).unwrap());
        let k = "k".to_owned();
        assert_eq!(limiter.check(&k), Ok(()));
        let wait = limiter.check(&k).unwrap_err();
        assert!(wait > Duration::from_secs(1790), "{wait:?}");
    }
}
