//! Span export: the OTLP exporter (gRPC or HTTP/protobuf) behind a bounded queue, drained by
//! one dedicated thread, so that a collector that is down, slow or failing costs a request
//! nothing but a non-blocking `try_send`.
//!
//! - **Bounded.** The queue holds at most `OTEL_BSP_MAX_QUEUE_SIZE` entries (default 8192): a
//!   finished request (its 2–4 spans) or a lone span. When it is full the entry is dropped and
//!   `gatehouse_spans_dropped_total{reason="queue_full"}` counts its spans. A batch the collector refuses or does not take within the export timeout is
//!   dropped too (`reason="export_failed"` / `"export_timeout"`): no retry queue grows behind
//!   a dead collector.
//! - **Off the request path.** A request's thread pushes an `Arc` of its record; the export
//!   thread builds the spans and exports them, on its own single-threaded Tokio runtime (tonic
//!   and hyper need one). The request workers never build a span or poll an export.
//! - **Batched.** Up to `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (default 512) per export, sent
//!   as soon as a batch is full or `OTEL_BSP_SCHEDULE_DELAY` (default 1000 ms) after its first
//!   span.
//! - **Flushed on shutdown** ([`SpanQueue::flush`]), within a bound.
//!
//! Configuration: `telemetry.otlp` in the file wins; what it leaves out comes from the standard
//! variables (`OTEL_EXPORTER_OTLP_TRACES_*`, then `OTEL_EXPORTER_OTLP_*`). With neither an
//! endpoint in the file nor in the environment there is no exporter at all.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use super::spans::{Builder, Finished, SpanCapture};
use crate::config::file::OtlpFile;
use crate::context::RequestRecord;

/// `telemetry.otlp.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are exported, resolved from the file and the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL: for HTTP/protobuf including `/v1/traces`.
    pub endpoint: String,
    pub protocol: Protocol,
    /// From the file; the library adds `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` on top.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub queue: QueueConfig,
}

impl fmt::Debug for OtlpConfig {
    // Header values are often API keys: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .finish()
    }
}

/// The queue and batch limits (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queue: 8192,
            max_batch: 512,
            delay: Duration::from_millis(1000),
        }
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpConfig {
    /// Resolves the exporter settings; `Ok(None)` when no endpoint is configured anywhere.
    /// `env` reads an environment variable (injected for tests).
    pub fn resolve(
        file: Option<&OtlpFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let protocol = match file.and_then(|f| f.protocol.as_deref()) {
            Some(text) => Protocol::parse(text)
                .ok_or_else(|| format!("telemetry.otlp.protocol {text:?} is not supported"))?,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
                .or_else(|| {
                    env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
                }) {
                Some((name, value)) => Protocol::parse(&value).ok_or_else(|| {
                    format!("{name}={value:?} is not supported: use grpc or http/protobuf")
                })?,
                None => Protocol::Grpc,
            },
        };
        // A base URL (the file's, or OTEL_EXPORTER_OTLP_ENDPOINT) gets the signal path for
        // HTTP; the per-signal variable is used as is (OTLP exporter specification).
        let endpoint = if let Some(file) = file {
            signal_url(&file.endpoint, protocol)
        } else if let Some(url) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            url
        } else if let Some(url) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            signal_url(&url, protocol)
        } else {
            return Ok(None);
        };
        let timeout = match file.and_then(|f| f.timeout) {
            Some(timeout) => timeout.0,
            None => env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        };
        let number = |name: &str| {
            env(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let defaults = QueueConfig::default();
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE").map_or(defaults.max_queue, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
        let queue = QueueConfig {
            max_queue,
            max_batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
                .map_or(defaults.max_batch, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                })
                .min(max_queue),
            delay: number("OTEL_BSP_SCHEDULE_DELAY").map_or(defaults.delay, Duration::from_millis),
        };
        Ok(Some(Self {
            endpoint,
            protocol,
            headers: file
                .map(|f| {
                    f.headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            timeout,
            queue,
        }))
    }

    /// Builds the OTLP exporter. Must run inside a Tokio runtime (tonic spawns its worker).
    fn build(&self) -> Result<opentelemetry_otlp::SpanExporter, String> {
        let built = match self.protocol {
            Protocol::Grpc => {
                let mut headers = http::HeaderMap::new();
                for (name, value) in &self.headers {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                        http::HeaderValue::from_str(value),
                    ) {
                        headers.append(name, value);
                    }
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(self.endpoint.clone())
                    .with_timeout(self.timeout)
                    .with_metadata(
                        opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                            headers,
                        ),
                    )
                    .build()
            }
            Protocol::HttpProtobuf => {
                let client = opentelemetry_http::hyper::HyperClient::new(
                    crate::tls::https_connector(Duration::from_secs(5), true),
                    self.timeout,
                    None,
                );
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_endpoint(self.endpoint.clone())
                    .with_timeout(self.timeout)
                    .with_headers(self.headers.iter().cloned().collect::<HashMap<_, _>>())
                    .build()
            }
        };
        built.map_err(|e| format!("cannot build the OTLP exporter for {}: {e}", self.endpoint))
    }
}

/// `base` with `/v1/traces` for HTTP (unless it already ends so); gRPC uses the base.
fn signal_url(base: &str, protocol: Protocol) -> String {
    let base = base.trim();
    match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf if base.trim_end_matches('/').ends_with("/v1/traces") => {
            base.to_owned()
        }
        Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// [`SpanExporter`] is not object-safe (its `export` returns `impl Future`); this is.
trait DynExporter: Send + Sync {
    fn export(&self, batch: Vec<SpanData>) -> BoxFuture<'_, OTelSdkResult>;
    fn set_resource(&mut self, resource: &Resource);
}

impl<E: SpanExporter + 'static> DynExporter for E {
    fn export(&self, batch: Vec<SpanData>) -> BoxFuture<'_, OTelSdkResult> {
        Box::pin(SpanExporter::export(self, batch))
    }
    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(self, resource);
    }
}

/// How the export thread gets its exporter: built from config inside its runtime, or given.
#[allow(private_interfaces)]
pub enum ExporterSource {
    Otlp(OtlpConfig),
    /// Any exporter (tests use the SDK's in-memory one): see [`ExporterSource::custom`].
    Custom(Box<dyn DynExporter>),
}

impl ExporterSource {
    pub fn custom(exporter: impl SpanExporter + 'static) -> Self {
        Self::Custom(Box::new(exporter))
    }
}

impl fmt::Debug for ExporterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Otlp(config) => f.debug_tuple("Otlp").field(config).finish(),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// What the queue carries: a finished request whose spans the export thread builds, or a
/// ready span.
enum Item {
    Request(Arc<RequestRecord>, Finished),
    Span(Box<SpanData>),
}

impl Item {
    /// How many spans this item stands for (for the dropped-span count).
    fn spans(&self) -> u64 {
        match self {
            Self::Span(_) => 1,
            Self::Request(record, done) => {
                let auth = record
                    .auth()
                    .is_some_and(|a| a.outcome != crate::auth::AuthOutcome::None);
                let fetch = record.capture().is_some_and(SpanCapture::fetched);
                let upstream = record.upstream_status().is_some()
                    || done
                        .error
                        .is_some_and(crate::error::ErrorReason::upstream_failed);
                1 + u64::from(auth) + u64::from(fetch && auth) + u64::from(upstream)
            }
        }
    }
}

enum Control {
    /// Export everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The producer side of the export queue (see the module docs).
#[derive(Debug)]
pub struct SpanQueue {
    spans: mpsc::Sender<Item>,
    control: mpsc::UnboundedSender<Control>,
    metrics: Arc<Metrics>,
}

impl SpanQueue {
    /// Starts the export thread. Errors: the thread or its runtime cannot start. An exporter
    /// that cannot be built is logged by the thread, which then drops (and counts) every span.
    pub fn start(
        source: ExporterSource,
        queue: QueueConfig,
        timeout: Duration,
        resource: Resource,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let (spans, receiver) = mpsc::channel(queue.max_queue.max(1));
        let (control, control_receiver) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the span export runtime: {e}"))?;
        let thread_metrics = metrics.clone();
        // Detached: it ends when the queue is dropped, and `flush` is how callers wait for it.
        std::thread::Builder::new()
            .name("gatehouse-otlp".into())
            .spawn(move || {
                runtime.block_on(export_loop(
                    source,
                    queue,
                    timeout,
                    resource,
                    receiver,
                    control_receiver,
                    thread_metrics,
                ));
            })
            .map_err(|e| format!("cannot start the span export thread: {e}"))?;
        Ok(Self {
            spans,
            control,
            metrics,
        })
    }

    /// Queues a finished span; never blocks. A full queue drops it (counted).
    pub fn push(&self, span: SpanData) {
        self.send(Item::Span(Box::new(span)));
    }

    /// Queues a finished request for the export thread to turn into spans; never blocks.
    pub fn push_request(&self, record: Arc<RequestRecord>, done: Finished) {
        self.send(Item::Request(record, done));
    }

    fn send(&self, item: Item) {
        if let Err(error) = self.spans.try_send(item) {
            let item = match error {
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item) => {
                    item
                }
            };
            self.metrics.spans_dropped("queue_full", item.spans());
        }
    }

    /// Exports everything queued so far; waits at most `timeout`. Returns whether it finished.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(())))
    }
}

async fn export_loop(
    source: ExporterSource,
    queue: QueueConfig,
    timeout: Duration,
    resource: Resource,
    mut spans: mpsc::Receiver<Item>,
    mut control: mpsc::UnboundedReceiver<Control>,
    metrics: Arc<Metrics>,
) {
    let mut exporter: Option<Box<dyn DynExporter>> = match source {
        ExporterSource::Custom(exporter) => Some(exporter),
        ExporterSource::Otlp(config) => match config.build() {
            Ok(exporter) => {
                tracing::info!(endpoint = %config.endpoint, protocol = config.protocol.as_str(), "exporting spans over OTLP");
                Some(Box::new(exporter))
            }
            Err(error) => {
                tracing::error!(%error, "spans will not be exported");
                None
            }
        },
    };
    if let Some(exporter) = exporter.as_mut() {
        exporter.set_resource(&resource);
    }
    let mut failures = FailureLog::default();
    let builder = Builder::default();
    let mut items: Vec<Item> = Vec::with_capacity(queue.max_batch);
    let mut batch: Vec<SpanData> = Vec::with_capacity(queue.max_batch);
    // Spans are built here, off the request threads.
    let build = |items: &mut Vec<Item>, batch: &mut Vec<SpanData>| {
        for item in items.drain(..) {
            match item {
                Item::Span(span) => batch.push(*span),
                Item::Request(record, done) => batch.extend(builder.request(&record, done)),
            }
        }
    };
    let exporter = exporter.as_deref();
    loop {
        let mut flush = None;
        tokio::select! {
            biased;
            message = control.recv() => match message {
                Some(Control::Flush(done)) => flush = Some(done),
                None => return,
            },
            received = spans.recv_many(&mut items, queue.max_batch) => {
                if received == 0 {
                    return;
                }
                build(&mut items, &mut batch);
                // Linger for a fuller batch, but never longer than the delay, and not at all
                // once a flush is asked for.
                let linger = tokio::time::sleep(queue.delay);
                tokio::pin!(linger);
                while batch.len() < queue.max_batch {
                    let room = queue.max_batch - batch.len();
                    tokio::select! {
                        biased;
                        message = control.recv() => {
                            if let Some(Control::Flush(done)) = message {
                                flush = Some(done);
                            }
                            break;
                        }
                        () = &mut linger => break,
                        more = spans.recv_many(&mut items, room) => {
                            if more == 0 {
                                break;
                            }
                            build(&mut items, &mut batch);
                        }
                    }
                }
                export(exporter, &mut batch, timeout, &metrics, &mut failures).await;
            }
        }
        if let Some(done) = flush {
            while spans
                .recv_many(&mut items, queue.max_batch)
                .now_or_never_nonzero()
            {
                build(&mut items, &mut batch);
                export(exporter, &mut batch, timeout, &metrics, &mut failures).await;
            }
            let _ = done.send(());
        }
    }
}

/// `recv_many` that does not wait: true when it moved at least one span.
trait NowOrNever {
    fn now_or_never_nonzero(self) -> bool;
}

impl<F: std::future::Future<Output = usize>> NowOrNever for F {
    fn now_or_never_nonzero(self) -> bool {
        futures_util::FutureExt::now_or_never(self).is_some_and(|n| n > 0)
    }
}

async fn export(
    exporter: Option<&dyn DynExporter>,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    metrics: &Metrics,
    failures: &mut FailureLog,
) {
    let spans = std::mem::take(batch);
    let count = spans.len() as u64;
    if count == 0 {
        return;
    }
    let Some(exporter) = exporter else {
        metrics.spans_dropped("export_failed", count);
        return;
    };
    // The exporter has its own timeout; this one bounds retries and a hung connection too.
    match tokio::time::timeout(timeout + Duration::from_secs(1), exporter.export(spans)).await {
        Ok(Ok(())) => {
            metrics.spans_exported(count);
            failures.recovered();
        }
        Ok(Err(error)) => {
            metrics.spans_dropped("export_failed", count);
            failures.failed(&error.to_string());
        }
        Err(_) => {
            metrics.spans_dropped("export_timeout", count);
            failures.failed("no answer within the export timeout");
        }
    }
}

/// Logs the first export failure and the recovery, not every failed batch: a dead collector
/// must not flood the process log.
#[derive(Default)]
struct FailureLog {
    failing: bool,
}

impl FailureLog {
    fn failed(&mut self, error: &str) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(%error, "exporting spans failed; dropping them until the collector answers (gatehouse_spans_dropped_total)");
        }
    }
    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!("exporting spans works again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn file(endpoint: &str, protocol: Option<&str>) -> OtlpFile {
        OtlpFile {
            endpoint: endpoint.into(),
            protocol: protocol.map(Into::into),
            headers: Default::default(),
            timeout: None,
        }
    }

    #[test]
    fn nothing_configured_means_no_exporter() {
        assert_eq!(OtlpConfig::resolve(None, &env(&[])).unwrap(), None);
        assert_eq!(
            OtlpConfig::resolve(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn file_wins_and_http_gets_the_signal_path() {
        let c = OtlpConfig::resolve(
            Some(&file("http://c:4318", Some("http/protobuf"))),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4317"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let c = OtlpConfig::resolve(Some(&file("http://c:4317", None)), &env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.protocol),
            ("http://c:4317", Protocol::Grpc)
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn environment_variables() {
        let c = OtlpConfig::resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://collector:4318/v1/traces");
        assert_eq!(c.queue.max_queue, 100);
        assert_eq!(c.queue.max_batch, 100, "a batch never exceeds the queue");
        assert_eq!(c.queue.delay, Duration::from_millis(50));
        let c = OtlpConfig::resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x:4318/custom"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://x:4318/custom", "per-signal URL as is");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        let error = OtlpConfig::resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]),
        )
        .unwrap_err();
        assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
    }

    #[test]
    fn headers_never_print() {
        let mut f = file("http://c:4317", None);
        f.headers.insert("x-api-key".into(), "secret-value".into());
        let c = OtlpConfig::resolve(Some(&f), &env(&[])).unwrap().unwrap();
        let printed = format!("{c:?}");
        assert!(printed.contains("x-api-key") && !printed.contains("secret-value"));
    }
}
