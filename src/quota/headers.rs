//! The headers of a throttled answer: `Retry-After` in whole seconds (at least 1), and
//! `RateLimit-Policy` / `RateLimit` as the IETF httpapi draft (-08 and later) writes them —
//! structured-field lists whose items are the policy name (a string) with parameters: `q` the
//! quota, `w` its window in seconds, `qu="concurrent-requests"` for an in-flight limit; `r` the
//! remaining quota and `t` the seconds until it comes back.
//!
//! ```
//! use std::time::Duration;
//! use gatehouse::quota::headers::{Limit, Throttle};
//! use gatehouse::quota::rules::Rate;
//! let t = Throttle {
//!     rule: "per-client".into(),
//!     limit: Limit::Rate(Rate::parse("25/s").unwrap()),
//!     retry_after: Duration::from_millis(40),
//! };
//! assert_eq!(t.policy(), r#""per-client";q=25;w=1"#);
//! assert_eq!(t.remaining(), r#""per-client";r=0;t=1"#);
//! assert_eq!(t.retry_after_secs(), 1);
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::rules::Rate;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Which limit a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rate(Rate),
    /// Requests in flight per key.
    Concurrency(u32),
    /// Failed token validations per client address (`limits.authFailuresPerIp`).
    AuthFailures(Rate),
}

/// A refused request: the rule, its limit and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// The rule's name (`authFailuresPerIp` for the per-address failure budget).
    pub rule: Arc<str>,
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Throttle {
    /// Whole seconds, rounded up, at least 1: a client that waits this long finds quota.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The `RateLimit-Policy` value.
    pub fn policy(&self) -> String {
        let name = &self.rule;
        match self.limit {
            Limit::Rate(rate) | Limit::AuthFailures(rate) => {
                format!("\"{name}\";q={};w={}", rate.count, rate.window_secs())
            }
            Limit::Concurrency(limit) => {
                format!("\"{name}\";q={limit};qu=\"concurrent-requests\"")
            }
        }
    }

    /// The `RateLimit` value: nothing left, back in `t` seconds.
    pub fn remaining(&self) -> String {
        format!("\"{}\";r=0;t={}", self.rule, self.retry_after_secs())
    }

    /// Adds the three headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
        // Rule names are `[A-Za-z][A-Za-z0-9_-]*`: always valid header text.
        if let Ok(value) = HeaderValue::from_str(&self.policy()) {
            headers.insert(RATELIMIT_POLICY.clone(), value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.remaining()) {
            headers.insert(RATELIMIT.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(limit: Limit, retry_after: Duration) -> Throttle {
        Throttle {
            rule: "per-client".into(),
            limit,
            retry_after,
        }
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        let rate = Limit::Rate(Rate::parse("25/s").unwrap());
        assert_eq!(throttle(rate, Duration::ZERO).retry_after_secs(), 1);
        assert_eq!(
            throttle(rate, Duration::from_millis(1)).retry_after_secs(),
            1
        );
        assert_eq!(throttle(rate, Duration::from_secs(2)).retry_after_secs(), 2);
        assert_eq!(
            throttle(rate, Duration::from_millis(2001)).retry_after_secs(),
            3
        );
    }

    #[test]
    fn headers() {
        let mut headers = HeaderMap::new();
        throttle(
            Limit::Rate(Rate::parse("400/m").unwrap()),
            Duration::from_millis(149_500),
        )
        .write(&mut headers);
        assert_eq!(headers[RETRY_AFTER], "150");
        assert_eq!(headers[&RATELIMIT_POLICY], r#""per-client";q=400;w=60"#);
        assert_eq!(headers[&RATELIMIT], r#""per-client";r=0;t=150"#);

        let mut headers = HeaderMap::new();
        throttle(Limit::Concurrency(10), Duration::from_secs(1)).write(&mut headers);
        assert_eq!(
            headers[&RATELIMIT_POLICY],
            r#""per-client";q=10;qu="concurrent-requests""#
        );
        assert_eq!(headers[&RATELIMIT], r#""per-client";r=0;t=1"#);
    }
}
