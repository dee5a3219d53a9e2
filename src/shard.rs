//! Which request thread the code runs on, for state kept per thread: the upstream pools' idle
//! lists ([`crate::forward::pool`]) and the per-request metrics
//! ([`crate::telemetry::sharded`]). Request threads (`serve --threads N`) number themselves
//! from 1; every other thread (the main runtime, `--threads 1`, tests) is 0. Beyond
//! [`SHARDS`] threads, shards are shared (index modulo `SHARDS`): still correct, only no longer
//! uncontended.

use std::cell::Cell;

/// Shards per piece of per-thread state.
pub(crate) const SHARDS: usize = 8;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Called once on request thread `index` (from 1).
pub(crate) fn set_worker(index: usize) {
    SHARD.with(|shard| shard.set(index % SHARDS));
}

/// This thread's shard, below [`SHARDS`].
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}
