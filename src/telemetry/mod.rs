//! The edge's own telemetry: the per-request record and the logging phase ([`record`]),
//! metrics ([`metrics`]), the access log ([`access_log`]), trace context ([`trace`]), spans
//! ([`spans`]) and their OTLP export ([`export`]), and process logging setup.

pub mod access_log;
pub mod export;
pub mod metrics;
pub mod record;
pub mod sharded;
pub mod spans;
pub mod trace;

use tracing_subscriber::EnvFilter;

/// `--log-format`: human-readable lines or JSON, both on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Process logs on stderr, filtered by `RUST_LOG` (default `info`); stdout is the access log.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not for log collectors and files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
