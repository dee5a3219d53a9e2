//! Concurrency limits: requests (and response streams) in flight per key.
//!
//! A [`Permit`] is taken before the request goes upstream and travels with the response body
//! ([`crate::body::ProxyBody::guarded`]); it is given back when the body ends, fails, or is
//! dropped because the client went away — whichever comes first — and never twice. Counts live
//! in this process (per replica, also with the Redis store: an in-flight count needs no
//! cross-replica agreement to protect the upstream behind this replica, and a lost replica
//! must not leave counts behind in Redis). A key whose count returns to zero is removed, so
//! the map holds only keys with something in flight.

use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// One rule's in-flight counts.
#[derive(Debug)]
pub struct InFlight {
    limit: u32,
    counts: DashMap<String, u32>,
}

impl InFlight {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: DashMap::new(),
        })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A permit for one more request under `key`, unless `limit` are already in flight.
    pub fn acquire(self: &Arc<Self>, key: &str) -> Option<Permit> {
        if let Some(mut count) = self.counts.get_mut(key) {
            if *count >= self.limit {
                return None;
            }
            *count += 1;
        } else {
            match self.counts.entry(key.to_owned()) {
                Entry::Occupied(mut count) => {
                    if *count.get() >= self.limit {
                        return None;
                    }
                    *count.get_mut() += 1;
                }
                Entry::Vacant(slot) => {
                    slot.insert(1);
                }
            }
        }
        Some(Permit {
            owner: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Requests in flight under `key`.
    pub fn in_flight(&self, key: &str) -> u32 {
        self.counts.get(key).map_or(0, |c| *c)
    }

    /// Keys with something in flight.
    pub fn keys(&self) -> usize {
        self.counts.len()
    }
}

/// One request in flight; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<InFlight>,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Entry::Occupied(mut count) = self.owner.counts.entry(std::mem::take(&mut self.key)) {
            if *count.get() <= 1 {
                count.remove();
            } else {
                *count.get_mut() -= 1;
            }
        }
    }
}

/// The permits one request holds (one per concurrency rule that applied).
pub type Permits = Vec<Permit>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_release() {
        let inflight = InFlight::new(2);
        let a1 = inflight.acquire("a").unwrap();
        let a2 = inflight.acquire("a").unwrap();
        assert!(inflight.acquire("a").is_none());
        assert_eq!(inflight.in_flight("a"), 2);
        let b = inflight.acquire("b").unwrap();
        drop(a1);
        assert_eq!(inflight.in_flight("a"), 1);
        let a3 = inflight.acquire("a").unwrap();
        drop((a2, a3, b));
        assert_eq!(inflight.keys(), 0, "idle keys are removed");
    }

    #[test]
    fn many_threads_never_exceed_the_limit() {
        let inflight = InFlight::new(3);
        let peak = Arc::new(std::sync::atomic::AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let inflight = inflight.clone();
                let peak = peak.clone();
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Some(permit) = inflight.acquire("k") {
                            peak.fetch_max(
                                inflight.in_flight("k"),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            drop(permit);
                        }
                    }
                });
            }
        });
        assert!(peak.load(std::sync::atomic::Ordering::Relaxed) <= 3);
        assert_eq!(inflight.keys(), 0);
    }
}
