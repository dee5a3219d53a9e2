//! The metrics every request writes — its count, its duration, its upstream's and its token
//! check's — kept per request thread ([`crate::shard`]) and summed when `/metrics` is read.
//!
//! prometheus-client's `Histogram` is one mutex per series and its `Counter` one atomic: with
//! several request threads, every request of a route took the same lock and wrote the same
//! cache lines on every core. Here each thread writes its own cache-line-aligned shard
//! (relaxed atomic adds nobody else touches), and the text exposition is the same as before:
//! same type, buckets, sum and count (the tests compare both encodings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::shard::{self, SHARDS};

/// Upper bounds a [`ShardedHistogram`] can have, `+Inf` not counted.
const MAX_BOUNDS: usize = 23;

/// One shard per cache line (two, against the adjacent-line prefetcher).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A counter (`_total`) written per thread.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub fn inc(&self) {
        self.0[shard::current()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every thread.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|shard| shard.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram with fixed upper bounds, written per thread.
#[derive(Clone, Debug)]
pub struct ShardedHistogram(Arc<Histogram>);

#[derive(Debug)]
struct Histogram {
    /// Ascending, finite; at most [`MAX_BOUNDS`].
    bounds: &'static [f64],
    shards: [Padded<Shard>; SHARDS],
}

#[derive(Debug, Default)]
struct Shard {
    /// The sum's `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Per bucket (not cumulative), `+Inf` after the last bound.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
}

impl ShardedHistogram {
    /// `bounds`: ascending and finite, at most [`MAX_BOUNDS`] (the ones in `metrics` are).
    pub fn new(bounds: &'static [f64]) -> Self {
        let bounds = &bounds[..bounds.len().min(MAX_BOUNDS)];
        Self(Arc::new(Histogram {
            bounds,
            shards: Default::default(),
        }))
    }

    pub fn observe(&self, value: f64) {
        let histogram = &*self.0;
        let shard = &histogram.shards[shard::current()].0;
        // NaN and values above every bound land in +Inf, as in prometheus-client.
        let bucket = histogram
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(histogram.bounds.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        // Only this thread writes this shard (unless threads share one): the exchange
        // succeeds the first time.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// Sum, count and per-bucket counts (bounds then `+Inf`) over every thread.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let histogram = &*self.0;
        let mut buckets: Vec<(f64, u64)> = histogram
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|bound| (bound, 0))
            .collect();
        let (mut sum, mut count) = (0.0, 0u64);
        for shard in &histogram.shards {
            let shard = &shard.0;
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            count = count.wrapping_add(shard.count.load(Ordering::Relaxed));
            for ((_, total), bucket) in buckets.iter_mut().zip(&shard.buckets) {
                *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    const BOUNDS: [f64; 4] = [0.001, 0.01, 0.1, 1.0];

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    /// Observes `values` from request threads 1..=3 (and the main thread) into both kinds.
    fn observed(values: &[f64]) -> (Registry, Registry) {
        let (ours, theirs) = (ShardedHistogram::new(&BOUNDS), Histogram::new(BOUNDS));
        let (our_count, their_count) = (ShardedCounter::default(), Counter::<u64>::default());
        std::thread::scope(|scope| {
            for (index, chunk) in values.chunks(values.len().div_ceil(4)).enumerate() {
                let (ours, theirs, our_count, their_count) =
                    (&ours, &theirs, &our_count, &their_count);
                scope.spawn(move || {
                    crate::shard::set_worker(index);
                    for &value in chunk {
                        ours.observe(value);
                        theirs.observe(value);
                        our_count.inc();
                        their_count.inc();
                    }
                });
            }
        });
        let mut a = Registry::default();
        a.register("latency_seconds", "help", ours);
        a.register("requests", "help", our_count);
        let mut b = Registry::default();
        b.register("latency_seconds", "help", theirs);
        b.register("requests", "help", their_count);
        (a, b)
    }

    #[test]
    fn encodes_as_prometheus_clients_own_metrics_do() {
        // Exact binary fractions, so the sum does not depend on the order of the additions.
        let values = [
            0.0, 0.0005, 0.001, 0.0078125, 0.0625, 0.5, 1.0, 2.0, 1024.0, 0.25,
        ];
        let (ours, theirs) = observed(&values);
        let text = text(&ours);
        assert_eq!(text, self::text(&theirs));
        assert!(text.contains("latency_seconds_count 10"), "{text}");
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.001\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"+Inf\"} 10"),
            "{text}"
        );
        assert!(text.contains("requests_total 10"), "{text}");
    }

    #[test]
    fn every_thread_counts() {
        let counter = ShardedCounter::default();
        std::thread::scope(|scope| {
            for index in 0..12 {
                let counter = &counter;
                scope.spawn(move || {
                    crate::shard::set_worker(index);
                    for _ in 0..1000 {
                        counter.inc();
                    }
                });
            }
        });
        assert_eq!(counter.get(), 12_000, "threads beyond the shards share one");
    }

    #[test]
    fn nan_and_large_values_land_in_inf() {
        let histogram = ShardedHistogram::new(&BOUNDS);
        histogram.observe(f64::NAN);
        histogram.observe(5.0);
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!(count, 2);
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 2)));
    }
}
