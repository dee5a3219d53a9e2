//! Prometheus metrics with the names of SPEC §10, served on the admin listener.
//!
//! Labels are low-cardinality by construction: route names and issuers come from the
//! configuration, status classes and outcomes from fixed sets; nothing a client sends (path,
//! token, subject, session) becomes a label. Per-route handles are resolved once when the
//! configuration is compiled ([`RouteMetrics`]), so recording a request is a few atomic adds
//! and no label hashing or allocation.

use std::sync::{Arc, OnceLock};

use crate::auth::AuthOutcome;
use crate::telemetry::sharded::{ShardedCounter, ShardedHistogram};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Token-validation latency buckets: 1µs … 100ms (SPEC §10), so a cache hit (~1µs) and an
/// RS256/ES256 verification (~20–80µs) land in different buckets.
static AUTH_BUCKETS: [f64; 17] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_075,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
];
/// Request and upstream latency buckets: 100µs … 15 minutes (AgentCore's sync limit).
static REQUEST_BUCKETS: [f64; 20] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status_class: &'static str,
    auth_outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    route: String,
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    route: String,
    rule: String,
}

/// Quota store round trips: 100µs … 1s (a decision waits at most the store's `timeout`).
const STORE_BUCKETS: [f64; 13] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabel {
    thread: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    result: &'static str,
}

/// The per-request histograms: written per request thread ([`crate::telemetry::sharded`]).
type HistogramFamily<L> = Family<L, ShardedHistogram, fn() -> ShardedHistogram>;

/// Every metric family of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, ShardedCounter>,
    request_duration: HistogramFamily<RouteLabel>,
    auth_duration: HistogramFamily<AuthLabels>,
    upstream_duration: HistogramFamily<RouteLabel>,
    active_streams: Family<RouteLabel, Gauge>,
    jwks_fetches: Family<FetchLabels, Counter>,
    jwks_keys: Family<IssuerLabel, Gauge>,
    jwks_age: Family<IssuerLabel, Gauge>,
    token_cache_entries: Gauge,
    client_connections: Family<ThreadLabel, Gauge>,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    spans_exported: Counter,
    spans_dropped: Family<DropLabel, Counter>,
    throttled: Family<ThrottleLabels, Counter>,
    /// Quota decisions the store (Redis) could not make in time; `onError` applied.
    pub quota_store_errors: Counter,
    /// Round trips to the quota store that answered.
    pub quota_store_duration: Histogram,
    outbound_tokens: Family<OutboundLabels, Counter>,
    policy_decisions: Family<DecisionLabels, Counter>,
}

fn auth_histogram() -> ShardedHistogram {
    ShardedHistogram::new(&AUTH_BUCKETS)
}

fn request_histogram() -> ShardedHistogram {
    ShardedHistogram::new(&REQUEST_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        let request_duration: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(request_histogram);
        let auth_duration: HistogramFamily<AuthLabels> =
            Family::new_with_constructor(auth_histogram);
        let upstream_duration: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(request_histogram);
        let active_streams = Family::<RouteLabel, Gauge>::default();
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        let jwks_keys = Family::<IssuerLabel, Gauge>::default();
        let jwks_age = Family::<IssuerLabel, Gauge>::default();
        let token_cache_entries = Gauge::default();
        let client_connections = Family::<ThreadLabel, Gauge>::default();
        let access_log_dropped = Counter::default();
        let spans_exported = Counter::default();
        let spans_dropped = Family::<DropLabel, Counter>::default();
        let throttled = Family::<ThrottleLabels, Counter>::default();
        let quota_store_errors = Counter::default();
        let quota_store_duration = Histogram::new(STORE_BUCKETS);
        let outbound_tokens = Family::<OutboundLabels, Counter>::default();
        registry.register(
            "gatehouse_outbound_tokens",
            "Outbound credentials (SPEC §13), by route and result (hit, issued, refused, error)",
            outbound_tokens.clone(),
        );
        let policy_decisions = Family::<DecisionLabels, Counter>::default();
        // Present from the start at 0, so rate() and alerts work before the first drop.
        for reason in SPAN_DROP_REASONS {
            let _ = spans_dropped.get_or_create(&DropLabel { reason });
        }
        registry.register(
            "gatehouse_requests",
            "Requests handled, by route, status class and authentication outcome",
            requests.clone(),
        );
        registry.register(
            "gatehouse_request_duration_seconds",
            "Time from request received to response body end",
            request_duration.clone(),
        );
        registry.register(
            "gatehouse_auth_duration_seconds",
            "Token validation latency (cache hit or miss)",
            auth_duration.clone(),
        );
        registry.register(
            "gatehouse_upstream_duration_seconds",
            "Time from upstream request sent to upstream response headers",
            upstream_duration.clone(),
        );
        registry.register(
            "gatehouse_active_streams",
            "Responses currently streaming to clients",
            active_streams.clone(),
        );
        registry.register(
            "gatehouse_jwks_fetches",
            "Discovery and JWKS fetches, by issuer and result",
            jwks_fetches.clone(),
        );
        registry.register(
            "gatehouse_jwks_keys",
            "Usable keys per issuer",
            jwks_keys.clone(),
        );
        registry.register(
            "gatehouse_jwks_age_seconds",
            "Age of the keys in use per issuer",
            jwks_age.clone(),
        );
        registry.register(
            "gatehouse_token_cache_entries",
            "Entries in the verified-token cache",
            token_cache_entries.clone(),
        );
        registry.register(
            "gatehouse_client_connections",
            "Open client connections, by request thread (serve --threads)",
            client_connections.clone(),
        );
        registry.register(
            "gatehouse_access_log_dropped",
            "Access-log lines dropped because stdout could not keep up",
            access_log_dropped.clone(),
        );
        registry.register(
            "gatehouse_spans_exported",
            "Spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        registry.register(
            "gatehouse_spans_dropped",
            "Spans dropped: export queue full, collector refused the batch, or no answer in time",
            spans_dropped.clone(),
        );
        registry.register(
            "gatehouse_throttled",
            "Requests refused with 429 by a quota rule (or authFailuresPerIp), by route and rule",
            throttled.clone(),
        );
        registry.register(
            "gatehouse_quota_store_errors",
            "Quota decisions the shared store (Redis) did not answer in time; onError applied",
            quota_store_errors.clone(),
        );
        registry.register(
            "gatehouse_quota_store_duration_seconds",
            "Round-trip time of quota decisions to the shared store (Redis)",
            quota_store_duration.clone(),
        );
        registry.register(
            "gatehouse_policy_decisions",
            "MCP messages decided by a route's mcp rules or Cedar policies, by decision",
            policy_decisions.clone(),
        );
        Self {
            registry,
            policy_decisions,
            requests,
            request_duration,
            auth_duration,
            upstream_duration,
            active_streams,
            jwks_fetches,
            jwks_keys,
            jwks_age,
            token_cache_entries,
            client_connections,
            access_log_dropped,
            spans_exported,
            spans_dropped,
            throttled,
            quota_store_errors,
            quota_store_duration,
            outbound_tokens,
        }
    }

    /// `gatehouse_outbound_tokens_total` of one route with `outboundAuth`, resolved once.
    pub fn outbound_counters(&self, route: &str) -> crate::outbound::OutboundCounters {
        let counter = |result| {
            self.outbound_tokens.get_or_create_owned(&OutboundLabels {
                route: route.to_owned(),
                result,
            })
        };
        crate::outbound::OutboundCounters {
            hit: counter("hit"),
            issued: counter("issued"),
            refused: counter("refused"),
            error: counter("error"),
        }
    }

    /// The `gatehouse_throttled_total` counter of one route and rule (resolved when the
    /// configuration is compiled).
    pub fn throttled(&self, route: &str, rule: &str) -> Counter {
        self.throttled.get_or_create_owned(&ThrottleLabels {
            route: route.to_owned(),
            rule: rule.to_owned(),
        })
    }

    /// Counts spans that will never reach the collector.
    pub fn spans_dropped(&self, reason: &'static str, count: u64) {
        self.spans_dropped
            .get_or_create(&DropLabel { reason })
            .inc_by(count);
    }

    pub fn spans_exported(&self, count: u64) {
        self.spans_exported.inc_by(count);
    }

    /// The handles one route records into.
    pub fn route(self: &Arc<Self>, route: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        RouteMetrics {
            metrics: self.clone(),
            route: route.to_owned(),
            request_duration: self.request_duration.get_or_create_owned(&label),
            upstream_duration: self.upstream_duration.get_or_create_owned(&label),
            auth_hit: self.auth_duration.get_or_create_owned(&AuthLabels {
                route: route.to_owned(),
                cache: "hit",
            }),
            auth_miss: self.auth_duration.get_or_create_owned(&AuthLabels {
                route: route.to_owned(),
                cache: "miss",
            }),
            active_streams: self.active_streams.get_or_create_owned(&label),
            requests: Default::default(),
        }
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        self.jwks_fetches
            .get_or_create(&FetchLabels {
                issuer: issuer.to_owned(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn set_jwks_state(&self, issuer: &str, keys: usize, age_seconds: u64) {
        let label = IssuerLabel {
            issuer: issuer.to_owned(),
        };
        self.jwks_keys
            .get_or_create(&label)
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.jwks_age
            .get_or_create(&label)
            .set(i64::try_from(age_seconds).unwrap_or(i64::MAX));
    }

    /// `gatehouse_client_connections{thread}` of request thread `thread` (from 0).
    pub fn client_connections(&self, thread: usize) -> Gauge {
        self.client_connections.get_or_create_owned(&ThreadLabel {
            thread: thread.to_string(),
        })
    }

    pub fn set_token_cache_entries(&self, entries: u64) {
        self.token_cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Why a span was dropped (`gatehouse_spans_dropped_total{reason}`).
const SPAN_DROP_REASONS: [&str; 3] = ["queue_full", "export_failed", "export_timeout"];

/// Status classes, in the order of [`RouteMetrics`]' counter table.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Pre-resolved metric handles of one route.
#[derive(Debug)]
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    route: String,
    pub request_duration: ShardedHistogram,
    pub upstream_duration: ShardedHistogram,
    pub auth_hit: ShardedHistogram,
    pub auth_miss: ShardedHistogram,
    pub active_streams: Gauge,
    requests: [[OnceLock<ShardedCounter>; 8]; 5],
}

impl RouteMetrics {
    /// `gatehouse_throttled_total{route, rule}` of this route.
    pub fn throttled(&self, rule: &str) -> Counter {
        self.metrics.throttled(&self.route, rule)
    }

    /// Counts one MCP policy decision (`allow`, `deny`, `log_only_deny`).
    pub fn count_policy_decision(&self, decision: &'static str) {
        self.metrics
            .policy_decisions
            .get_or_create(&DecisionLabels {
                route: self.route.clone(),
                decision,
            })
            .inc();
    }

    /// Counts one finished request.
    pub fn count_request(&self, status: u16, outcome: AuthOutcome) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let counter = self.requests[class][outcome.index()].get_or_init(|| {
            self.metrics.requests.get_or_create_owned(&RequestLabels {
                route: self.route.clone(),
                status_class: STATUS_CLASSES[class],
                auth_outcome: outcome.as_str(),
            })
        });
        counter.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let metrics = Arc::new(Metrics::new());
        let route = metrics.route("support");
        route.count_request(200, AuthOutcome::Ok);
        route.count_request(401, AuthOutcome::Missing);
        route.count_request(401, AuthOutcome::Missing);
        route.auth_hit.observe(0.000_000_8);
        route.count_policy_decision("deny");
        route.count_policy_decision("deny");
        let text = metrics.encode();
        assert!(text.contains(r#"gatehouse_requests_total{route="support",status_class="2xx",auth_outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"gatehouse_requests_total{route="support",status_class="4xx",auth_outcome="missing"} 2"#));
        assert!(
            text.contains(r#"gatehouse_policy_decisions_total{route="support",decision="deny"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"gatehouse_auth_duration_seconds_bucket{le="0.000001",route="support",cache="hit"} 1"#), "{text}");
    }
}
