//! The process: the current [`Settings`] behind one `ArcSwap`, and the long-lived pieces they
//! point into (issuers with their cached keys, connection pools, the verified-token cache,
//! metrics, the access log), which survive reloads.
//!
//! A reload (SPEC §9) validates and compiles the new file completely, waits for the first key
//! fetch of every issuer it adds, and only then swaps: a request in flight keeps the `Arc` of
//! the settings it started with, and no connection is touched. A file that fails is logged and
//! the running configuration stays.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::cache::TokenCache;
use crate::auth::jwks::{Issuer, IssuerStatus};
use crate::config;
use crate::settings::{self, Settings, Shared, Startup};
use crate::shard::SHARDS;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::export::{ExporterSource, QueueConfig};
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::telemetry::spans::{self, Spans};

/// Everything the request path and the admin listener share.
#[derive(Debug)]
pub struct App {
    settings: ArcSwap<PerThread>,
    pub shared: Shared,
    pub token_cache: TokenCache,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    /// Metrics for requests that matched no route.
    pub unmatched_metrics: RouteMetrics,
    /// The span pipeline; `None` when no OTLP endpoint is configured (no span is ever built).
    pub spans: Option<Arc<Spans>>,
}

/// One configuration's settings, a copy per request thread ([`crate::shard`]). Every request
/// holds its settings for its whole life, and with one copy for all threads that reference
/// count would be written by every thread on every request (its cache line moving between
/// cores). The copies are shallow (the routes themselves are shared); each is taken and
/// released by its own thread only. A reload replaces all of them at once.
#[derive(Debug)]
struct PerThread([Arc<Settings>; SHARDS]);

impl PerThread {
    fn new(settings: Settings) -> Self {
        Self(std::array::from_fn(|_| Arc::new(settings.clone())))
    }
}

/// Where the telemetry of [`App::with_outputs`] goes; the defaults follow the configuration.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Default: stdout, unless `telemetry.accessLog: off`.
    pub access_log: Option<AccessLog>,
    /// Default: `telemetry.otlp` / `OTEL_EXPORTER_OTLP_*`, or none.
    pub spans: Option<SpanOutput>,
}

/// A span pipeline to use instead of the configured one.
#[derive(Debug)]
pub enum SpanOutput {
    Off,
    /// Spans go to this exporter (tests use the SDK's in-memory exporter).
    Exporter(ExporterSource, QueueConfig),
}

impl App {
    /// Compiles a loaded configuration. Needs a Tokio runtime (issuers start fetching).
    pub fn new(
        file: &config::file::FileConfig,
        base_dir: &Path,
        access_log: Option<AccessLog>,
    ) -> Result<(Arc<Self>, Startup), String> {
        Self::with_outputs(
            file,
            base_dir,
            Outputs {
                access_log,
                spans: None,
            },
        )
    }

    /// As [`Self::new`], with telemetry outputs chosen by the caller.
    pub fn with_outputs(
        file: &config::file::FileConfig,
        base_dir: &Path,
        outputs: Outputs,
    ) -> Result<(Arc<Self>, Startup), String> {
        let access_log = outputs.access_log;
        let metrics = Arc::new(Metrics::new());
        let shared = Shared::new(metrics.clone());
        let (startup, settings) = settings::compile(file, base_dir, &shared)?;
        let access_log = access_log.unwrap_or_else(|| {
            if settings.access_log {
                AccessLog::start(Box::new(std::io::stdout()), metrics.clone())
            } else {
                AccessLog::disabled(metrics.clone())
            }
        });
        let telemetry = file.telemetry.as_ref();
        let spans = match outputs.spans {
            None => Spans::from_config(telemetry, metrics.clone())?,
            Some(SpanOutput::Off) => None,
            Some(SpanOutput::Exporter(source, queue)) => Some(Spans::start(
                source,
                queue,
                Duration::from_secs(10),
                spans::resource(telemetry),
                metrics.clone(),
            )?),
        }
        .map(Arc::new);
        let app = Self {
            spans,
            settings: ArcSwap::from_pointee(PerThread::new(settings)),
            token_cache: TokenCache::new(startup.token_cache_entries),
            unmatched_metrics: metrics.route("_unmatched"),
            shared,
            metrics,
            access_log,
        };
        Ok((Arc::new(app), startup))
    }

    /// Exports the spans still queued, within `timeout` (SPEC §2: flush telemetry on
    /// shutdown). The access log needs nothing: its writer flushes after every batch.
    pub async fn flush_telemetry(&self, timeout: Duration) {
        if let Some(spans) = &self.spans
            && !spans.flush(timeout).await
        {
            tracing::warn!(
                timeout_ms = timeout.as_millis(),
                "spans not exported before shutdown (collector slow or down)"
            );
        }
    }

    /// The settings a new request runs on.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load().0[crate::shard::current()].clone()
    }

    /// Every issuer the current routes use.
    pub fn issuers(&self) -> Vec<Arc<Issuer>> {
        let settings = self.settings();
        let mut seen = HashSet::new();
        settings
            .routes
            .routes
            .iter()
            .filter_map(|r| r.auth.as_ref().map(|a| a.issuer.clone()))
            .filter(|i| seen.insert(Arc::as_ptr(i) as usize))
            .collect()
    }

    /// Waits until every issuer has keys, or `timeout` passes. Returns the issuers still
    /// without keys.
    pub async fn wait_for_keys(&self, timeout: Duration) -> Vec<Arc<Issuer>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending: Vec<_> = self
                .issuers()
                .into_iter()
                .filter(|i| i.fresh_keys().is_none())
                .collect();
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Readiness: every issuer's keys loaded and fresh (SPEC §9).
    pub fn readiness(&self) -> Result<(), serde_json::Value> {
        let problems: Vec<serde_json::Value> = self
            .issuers()
            .iter()
            .filter_map(|issuer| match issuer.status() {
                IssuerStatus::Ready => None,
                IssuerStatus::Loading { last_error } => Some(serde_json::json!({
                    "issuer": issuer.label, "state": "loading", "error": last_error,
                })),
                IssuerStatus::Stale { age, last_error } => Some(serde_json::json!({
                    "issuer": issuer.label, "state": "stale", "keyAgeSeconds": age.as_secs(), "error": last_error,
                })),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(serde_json::json!({ "status": "not ready", "issuers": problems }))
        }
    }

    /// Reloads from `path`; on any error the running configuration stays.
    pub async fn reload(&self, path: &Path) -> Result<(), String> {
        let loaded = config::load_path(path).map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let (_, settings) = settings::compile(&loaded.config, &loaded.base_dir, &self.shared)?;
        let known: HashSet<usize> = self
            .issuers()
            .iter()
            .map(|i| Arc::as_ptr(i) as usize)
            .collect();
        let new_issuers: Vec<Arc<Issuer>> = settings
            .routes
            .routes
            .iter()
            .filter_map(|r| r.auth.as_ref().map(|a| a.issuer.clone()))
            .filter(|i| !known.contains(&(Arc::as_ptr(i) as usize)))
            .collect();
        for issuer in &new_issuers {
            let timeout = issuer.config().fetch_timeout;
            let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
            while issuer.fresh_keys().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if issuer.fresh_keys().is_none() {
                return Err(format!(
                    "issuer {}: no keys could be fetched; keeping the running configuration",
                    issuer.label
                ));
            }
        }
        self.settings.store(Arc::new(PerThread::new(settings)));
        Ok(())
    }
}
