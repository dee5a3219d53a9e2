//! The access log: one JSON line per request on stdout, answering "who invoked which agent,
//! when, with what outcome" (SPEC §10 fields), written when the response ends.
//!
//! Lines are formatted on the request's thread and written by one dedicated thread through a
//! bounded queue, so a slow or blocked stdout never slows a request; when the queue is full
//! the line is dropped and `gatehouse_access_log_dropped_total` counts it. Never written: the
//! token, any other header value, a request or response body.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::Metrics;
use crate::auth::AuthOutcome;
use crate::context::RequestRecord;
use crate::error::ErrorReason;

/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// The fields of one line, borrowed from the request's record.
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub record: &'a RequestRecord,
    pub status: u16,
    pub duration: Duration,
    pub bytes_out: u64,
    pub aborted: bool,
    pub error: Option<ErrorReason>,
}

#[derive(Serialize)]
struct Json<'a> {
    time: String,
    request_id: &'a str,
    route: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    auth_outcome: &'static str,
    client_id: Option<&'a str>,
    sub: Option<&'a str>,
    session_id: Option<&'a str>,
    upstream_status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    trace_id: String,
    client_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_name: Option<&'a str>,
    /// The MCP policy decision (`allow`, `deny`, `log_only_deny`).
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// The quota rule that refused the request (SPEC §12).
    #[serde(skip_serializing_if = "Option::is_none")]
    throttled: Option<&'a str>,
}

impl AccessLine<'_> {
    /// The JSON line (with trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let r = self.record;
        let auth = r.auth();
        let json = Json {
            time: rfc3339(r.started_wall),
            request_id: r.request_id.to_str().unwrap_or_default(),
            route: r.route().map(|route| &*route.name),
            method: r.method.as_str(),
            path: r.path(),
            status: self.status,
            duration_ms: (self.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            auth_outcome: auth.map_or(AuthOutcome::None, |a| a.outcome).as_str(),
            client_id: auth.and_then(|a| a.client_id.as_deref()),
            sub: auth.and_then(|a| a.sub.as_deref()),
            session_id: r.session_id(),
            upstream_status: r.upstream_status(),
            bytes_in: r.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out: self.bytes_out,
            trace_id: r.trace.trace_id_hex(),
            client_address: r.conn.remote.ip().to_string(),
            mcp_method: r.mcp().and_then(|m| m.method.as_deref()),
            mcp_name: r.mcp().and_then(|m| m.name.as_deref()),
            policy: r.mcp().and_then(|m| m.decision),
            aborted: self.aborted,
            error: self.error.map(ErrorReason::as_str),
            throttled: r.throttled(),
        };
        let mut line = serde_json::to_vec(&json).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<Vec<u8>>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer thread over `out` (stdout in production, a buffer in tests).
    pub fn start(out: Box<dyn Write + Send>, metrics: Arc<Metrics>) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || write_lines(receiver, out));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the access-log writer; access log disabled");
            return Self {
                sender: None,
                metrics,
            };
        }
        Self {
            sender: Some(sender),
            metrics,
        }
    }

    /// An access log that writes nothing.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self {
            sender: None,
            metrics,
        }
    }

    pub fn write(&self, line: &AccessLine<'_>) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(line.to_json()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.inc();
            }
        }
    }
}

fn write_lines(receiver: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = receiver.recv() {
        if out.write_all(&line).is_err() {
            return;
        }
        // Batch whatever is already queued, then flush once.
        while let Ok(line) = receiver.try_recv() {
            if out.write_all(&line).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// `2026-11-22T22:39:05.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_131_545_123)),
            "2026-11-19T23:39:05.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
