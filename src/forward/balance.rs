//! Replica choice for routes with several upstream `urls`: session affinity by rendezvous
//! (highest-random-weight) hashing, round robin for requests without a session, and passive
//! health.
//!
//! **Affinity.** A request that carries a session id (the runtime session header, which HTTP
//! routes always have after the enrich phase, or `Mcp-Session-Id`) goes to the replica with the
//! highest score `mix(hash(session) ^ hash(replica URL))`. Every gatehouse process computes the
//! same scores from the same configuration, so a fleet of edges agrees without sharing state;
//! removing a replica moves exactly the sessions that scored it highest (each to its own
//! second choice) and no other. The hash is written out here (FNV-1a and the murmur3
//! finalizer), not `std`'s, whose output may change between Rust releases and so between
//! gatehouse versions running side by side during a rolling upgrade.
//!
//! **No session.** Round robin over the healthy replicas (MCP requests before a session exists,
//! and stateless 2026 MCP traffic).
//!
//! **Passive health.** A replica whose connection fails (refused, unreachable, connect timeout)
//! is marked down for [`COOLDOWN`]: it gets no traffic while down, sessions that scored it
//! highest go to their next choice, and the request that found it down is retried on that next
//! choice when its body was not sent yet. When the cooldown ends the next request tries it
//! again; a success keeps it up. Connection failures are the only signal: an answer, even a
//! 5xx, proves the replica is there, and retrying a request the agent may have started is not
//! the edge's to decide. When every replica is down the edge tries them anyway (fail open):
//! a probe that may succeed beats a certain 502.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a replica that refused a connection is left alone.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(10);

/// A set of replicas and their health.
#[derive(Debug)]
pub struct Balancer {
    seeds: Vec<u64>,
    /// Per replica: milliseconds since `epoch` until which it is down (0: up).
    down_until: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
    cooldown: Duration,
}

impl Balancer {
    /// One entry per replica, identified by its URL (the identity every edge agrees on).
    pub fn new<S: AsRef<str>>(replicas: &[S]) -> Self {
        Self::with_cooldown(replicas, COOLDOWN)
    }

    pub fn with_cooldown<S: AsRef<str>>(replicas: &[S], cooldown: Duration) -> Self {
        Self {
            seeds: replicas
                .iter()
                .map(|r| fnv1a(r.as_ref().as_bytes()))
                .collect(),
            down_until: replicas.iter().map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            cooldown,
        }
    }

    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_up(&self, replica: usize) -> bool {
        self.down_until
            .get(replica)
            .is_none_or(|d| d.load(Ordering::Relaxed) <= self.now_ms())
    }

    /// Marks `replica` down for the cooldown (a connection to it failed).
    pub fn mark_down(&self, replica: usize) {
        if let Some(d) = self.down_until.get(replica) {
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX))
                .max(1);
            d.store(until, Ordering::Relaxed);
        }
    }

    /// The replica for a request: by session affinity when `session` is given, else round
    /// robin; healthy replicas first, never one in `tried`. `None` when all were tried.
    pub fn pick(&self, session: Option<&[u8]>, tried: &[usize]) -> Option<usize> {
        match session {
            Some(key) => self.by_session(key, tried),
            None => self.round_robin(tried),
        }
    }

    /// The replica a session belongs to while every replica is up (for tests and docs).
    pub fn home(&self, session: &[u8]) -> usize {
        let key = fnv1a(session);
        (0..self.len())
            .max_by_key(|&i| (score(key, self.seeds[i]), std::cmp::Reverse(i)))
            .unwrap_or(0)
    }

    fn by_session(&self, session: &[u8], tried: &[usize]) -> Option<usize> {
        let key = fnv1a(session);
        let mut best: Option<(bool, u64, usize)> = None;
        for (i, seed) in self.seeds.iter().enumerate() {
            if tried.contains(&i) {
                continue;
            }
            // Healthy beats down; then the highest score. Ties (astronomically rare) go to
            // the lower index, the same on every edge.
            let candidate = (self.is_up(i), score(key, *seed), i);
            let better = match best {
                None => true,
                Some((up, s, _)) => (candidate.0, candidate.1) > (up, s),
            };
            if better {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, i)| i)
    }

    fn round_robin(&self, tried: &[usize]) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let untried = |i: &usize| !tried.contains(i);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(untried)
            .find(|&i| self.is_up(i))
            .or_else(|| (0..n).map(|k| (start + k) % n).find(untried))
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// murmur3's 64-bit finalizer: FNV alone mixes the last bytes poorly, and sessions often
/// differ only there.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

fn score(key: u64, seed: u64) -> u64 {
    fmix64(key ^ fmix64(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:8080")).collect()
    }

    #[test]
    fn sessions_spread_evenly_and_stay_put() {
        let b = Balancer::new(&urls(3));
        let mut counts = [0usize; 3];
        for s in 0..30_000 {
            let key = format!("session-{s:040}");
            let home = b.home(key.as_bytes());
            assert_eq!(b.pick(Some(key.as_bytes()), &[]), Some(home));
            counts[home] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_replica_moves_only_its_sessions() {
        let all = urls(4);
        let before = Balancer::new(&all);
        let after = Balancer::new(&all[..3]);
        for s in 0..5_000 {
            let key = format!("s{s}");
            let was = before.home(key.as_bytes());
            let now = after.home(key.as_bytes());
            if was != 3 {
                assert_eq!(was, now, "{key} moved although its replica stayed");
            }
        }
    }

    #[test]
    fn edges_agree_without_sharing_state() {
        let a = Balancer::new(&urls(5));
        let b = Balancer::new(&urls(5));
        for s in 0..1_000 {
            let key = format!("k{s}");
            assert_eq!(a.home(key.as_bytes()), b.home(key.as_bytes()));
        }
        // Fixed values: a change of hash would move every session in a running fleet.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Balancer::new(&["x", "y", "z"]).home(b"session-1"), 1);
    }

    #[test]
    fn down_replicas_are_skipped_then_retried() {
        let b = Balancer::with_cooldown(&urls(3), Duration::from_millis(50));
        let key = b"some-session-id";
        let home = b.home(key);
        b.mark_down(home);
        let moved = b.pick(Some(key), &[]).unwrap();
        assert_ne!(moved, home);
        for _ in 0..10 {
            assert_ne!(b.pick(None, &[]), Some(home));
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.pick(Some(key), &[]), Some(home));
    }

    #[test]
    fn all_down_fails_open_and_tried_is_respected() {
        let b = Balancer::new(&urls(2));
        b.mark_down(0);
        b.mark_down(1);
        assert!(b.pick(None, &[]).is_some());
        assert!(b.pick(Some(b"s"), &[]).is_some());
        assert_eq!(b.pick(Some(b"s"), &[0]), Some(1));
        assert_eq!(b.pick(None, &[0, 1]), None);
        assert_eq!(b.pick(Some(b"s"), &[0, 1]), None);
    }

    #[test]
    fn round_robin_is_even() {
        let b = Balancer::new(&urls(3));
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            counts[b.pick(None, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }
}
