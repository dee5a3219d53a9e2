//! `limits.authFailuresPerIp`: a budget of failed token validations per client address, so a
//! flood of well-formed but forged tokens costs the edge a hash lookup per request instead of
//! an RSA or ECDSA verification.
//!
//! Only failures are counted ([`FailureBudget::failed`]: a bad signature, a malformed or
//! expired token), in a keyed GCRA limiter ([`governor`]). When an address runs out, it is
//! marked blocked until its budget has a failure to spare again; while blocked, every request
//! from it is answered 429 before any token work ([`FailureBudget::blocked`]: one lookup in a
//! small concurrent map that is empty unless someone is being refused). Valid tokens never
//! touch the limiter, and other addresses are unaffected. IPv6 addresses count by /64. The
//! refusal is held until the budget has room again (at most [`MAX_HOLD`]), so a flood that
//! waits for its answers runs at the budget's pace.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use moka::sync::Cache;

use crate::quota::rules::{Rate, address_key};

/// The longest a refused request is held before its 429 (see the auth phase).
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// Addresses tracked as blocked at most; beyond that the oldest are forgotten (they would
/// only cost verifications again, never let anything through).
const MAX_BLOCKED: u64 = 100_000;

/// The per-address failure budget.
pub struct FailureBudget {
    rate: Rate,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    /// Address → when its budget has room again.
    blocked: Cache<IpAddr, Instant>,
    sweeper: OnceLock<()>,
}

impl std::fmt::Debug for FailureBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureBudget")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl FailureBudget {
    pub fn new(rate: Rate) -> Arc<Self> {
        let burst = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        let period = rate.emission_interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = DefaultClock::default();
        Arc::new(Self {
            rate,
            failures: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            // A block never outlasts one emission interval (GCRA: the next failure conforms
            // within it), so entries expire by themselves.
            blocked: Cache::builder()
                .max_capacity(MAX_BLOCKED)
                .time_to_live(period.max(Duration::from_millis(1)))
                .build(),
            sweeper: OnceLock::new(),
        })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How long `ip` is still refused, if it is over its budget.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let until = self.blocked.get(&address_key(ip))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Counts one failed validation from `ip`; blocks it when that exhausts its budget.
    pub fn failed(self: &Arc<Self>, ip: IpAddr) {
        self.sweeper.get_or_init(|| self.start_sweeper());
        let key = address_key(ip);
        if let Err(not_until) = self.failures.check_key(&key) {
            let wait = not_until.wait_time_from(self.clock.now());
            self.blocked.insert(key, Instant::now() + wait);
        }
    }

    /// Drops addresses whose budget is full again (called periodically).
    pub fn sweep(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        self.blocked.run_pending_tasks();
    }

    /// Sweeps once a minute while the budget lives (it goes with its configuration).
    fn start_sweeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(budget) = weak.upgrade() else { return };
                budget.sweep();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_over_budget_block() {
        let budget = FailureBudget::new(Rate::parse("3/s").unwrap());
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(budget.blocked(attacker), None);
            budget.failed(attacker);
        }
        // The budget is spent but not exceeded: the next failure is what blocks.
        assert_eq!(budget.blocked(attacker), None);
        budget.failed(attacker);
        let left = budget.blocked(attacker).unwrap();
        assert!(left <= Duration::from_millis(334), "{left:?}");
        assert_eq!(budget.blocked(other), None);
        std::thread::sleep(left + Duration::from_millis(5));
        assert_eq!(budget.blocked(attacker), None);
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let budget = FailureBudget::new(Rate::parse("1/h").unwrap());
        budget.failed("2001:db8::1".parse().unwrap());
        budget.failed("2001:db8::2".parse().unwrap());
        assert!(budget.blocked("2001:db8::3".parse().unwrap()).is_some());
        assert!(budget.blocked("2001:db8:0:1::1".parse().unwrap()).is_none());
    }
}
