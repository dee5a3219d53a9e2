//! The load engine: a fixed set of HTTP/1.1 connections, one worker each, sending requests
//! until a duration or a request count is reached.
//!
//! - **Closed loop** (no `--rate`): each worker sends its next request when the previous
//!   response ended; latency is send → body end.
//! - **Fixed rate** (`--rate R`): request `i` is *intended* at `start + i/R`. Workers take the
//!   next index when they are free, wait for its intended time, and measure latency from that
//!   time, not from when they got round to sending it. A stalled edge therefore shows up as the
//!   queueing delay it caused for every request that should have been sent meanwhile
//!   (coordinated omission: a closed-loop tool that waits politely would hide it).
//!
//! Every response is read to its end. `Server-Timing: auth;dur=…;desc="hit|miss"` and
//! `upstream;dur=…` are recorded beside the client latency. Histograms are HDR (microseconds,
//! 3 significant digits), one per worker, merged at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// Everything a run needs, already parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: Uri,
    pub method: Method,
    /// Sent on every request (plus `Host` and the rotating `Authorization`).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `Bearer …` values, used in turn (request `i` gets token `i % n`); empty: none.
    pub tokens: Vec<HeaderValue>,
    pub connections: usize,
    pub stop: Stop,
    /// Requests per second over all connections; `None`: closed loop.
    pub rate: Option<f64>,
    /// Local address to connect from; `None`: the system's choice.
    pub source: Option<std::net::IpAddr>,
    /// Per request, headers and body.
    pub timeout: Duration,
}

/// Why a request got no response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub io: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.io
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub elapsed: Duration,
    /// Count per HTTP status, ascending.
    pub status: Vec<(u16, u64)>,
    pub errors: Errors,
    pub bytes_received: u64,
    /// Client latency, µs (responses only).
    pub latency: Histogram<u64>,
    /// `Server-Timing` auth durations, µs, all / cache hits / misses.
    pub server_auth: Histogram<u64>,
    pub server_auth_hits: u64,
    pub server_auth_misses: u64,
    /// `Server-Timing` upstream durations, µs.
    pub server_upstream: Histogram<u64>,
}

impl Outcome {
    /// Requests that got a response.
    pub fn responses(&self) -> u64 {
        self.status.iter().map(|(_, n)| n).sum()
    }
}

/// µs from 1 µs to one hour (larger values are clamped), 3 significant digits.
fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

trait Micros {
    fn micros(self) -> u64;
}

impl Micros for Duration {
    fn micros(self) -> u64 {
        u64::try_from(self.as_micros()).unwrap_or(u64::MAX)
    }
}

/// Shared by the workers.
struct Run {
    plan: Plan,
    host: HeaderValue,
    start: Instant,
    deadline: Option<Instant>,
    next: AtomicU64,
    done: AtomicU64,
    stopping: AtomicBool,
}

struct Tally {
    status: [u64; 600],
    errors: Errors,
    bytes: u64,
    latency: Histogram<u64>,
    auth: Histogram<u64>,
    hits: u64,
    misses: u64,
    upstream: Histogram<u64>,
}

impl Tally {
    fn new() -> Result<Self, String> {
        Ok(Self {
            status: [0; 600],
            errors: Errors::default(),
            bytes: 0,
            latency: histogram()?,
            auth: histogram()?,
            hits: 0,
            misses: 0,
            upstream: histogram()?,
        })
    }

    fn merge(&mut self, other: &Tally) {
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        self.errors.connect += other.errors.connect;
        self.errors.timeout += other.errors.timeout;
        self.errors.io += other.errors.io;
        self.bytes += other.bytes;
        let _ = self.latency.add(&other.latency);
        let _ = self.auth.add(&other.auth);
        let _ = self.upstream.add(&other.upstream);
        self.hits += other.hits;
        self.misses += other.misses;
    }
}

/// A handle to watch a run's progress from another task.
#[derive(Clone, Debug)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn completed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs `plan`; `on_start` gets a progress handle once the connections are up.
pub async fn run(plan: Plan, on_start: impl FnOnce(Progress)) -> Result<Outcome, String> {
    let host = plan
        .url
        .authority()
        .ok_or("the URL has no host")?
        .as_str()
        .parse::<HeaderValue>()
        .map_err(|_| "the URL's host is not a valid Host header")?;
    if plan.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    // The first connection is made before the clock starts, so a wrong URL fails fast.
    let first = connect(&plan.url, plan.source)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.url))?;
    let start = Instant::now();
    let deadline = match plan.stop {
        Stop::After(d) => Some(start + d),
        Stop::Requests(_) => None,
    };
    let run = Arc::new(Run {
        plan,
        host,
        start,
        deadline,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let progress = Progress(Arc::new(AtomicU64::new(0)));
    on_start(progress.clone());
    let mut workers = Vec::with_capacity(run.plan.connections);
    let mut first = Some(first);
    for _ in 0..run.plan.connections {
        let tally = Tally::new()?;
        workers.push(tokio::spawn(worker(
            run.clone(),
            first.take(),
            progress.clone(),
            tally,
        )));
    }
    let mut tally = Tally::new()?;
    for worker in workers {
        match worker.await {
            Ok(part) => tally.merge(&part),
            Err(e) => return Err(format!("a load worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let status = tally
        .status
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| (u16::try_from(code).unwrap_or(0), *n))
        .collect();
    Ok(Outcome {
        elapsed,
        status,
        errors: tally.errors,
        bytes_received: tally.bytes,
        latency: tally.latency,
        server_auth: tally.auth,
        server_auth_hits: tally.hits,
        server_auth_misses: tally.misses,
        server_upstream: tally.upstream,
    })
}

type Sender = SendRequest<Full<Bytes>>;

async fn worker(
    run: Arc<Run>,
    mut conn: Option<Sender>,
    progress: Progress,
    mut tally: Tally,
) -> Tally {
    let plan = &run.plan;
    loop {
        if run.stopping.load(Ordering::Relaxed) {
            break;
        }
        let index = run.next.fetch_add(1, Ordering::Relaxed);
        if let Stop::Requests(n) = plan.stop
            && index >= n
        {
            break;
        }
        // When this request should start, by the schedule (rate) or now (closed loop).
        let due = match plan.rate {
            Some(rate) => {
                let due = run.start + Duration::from_secs_f64(index as f64 / rate);
                if run.deadline.is_some_and(|d| due >= d) {
                    run.stopping.store(true, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep_until(due).await;
                due
            }
            None => {
                let now = Instant::now();
                if run.deadline.is_some_and(|d| now >= d) {
                    run.stopping.store(true, Ordering::Relaxed);
                    break;
                }
                now
            }
        };
        let sender = match conn.as_mut() {
            Some(sender) if !sender.is_closed() => sender,
            _ => match connect(&plan.url, plan.source).await {
                Ok(sender) => conn.insert(sender),
                Err(_) => {
                    tally.errors.connect += 1;
                    progress.0.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                    // Do not spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = build(&run, index);
        let exchange = async {
            sender.ready().await.map_err(|_| Failure::Io)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Failure::Io)?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|_| Failure::Io)?;
            Ok::<_, Failure>((parts, body.to_bytes().len()))
        };
        match tokio::time::timeout(plan.timeout, exchange).await {
            Ok(Ok((parts, bytes))) => {
                let latency = due.elapsed();
                tally.latency.saturating_record(latency.micros().max(1));
                if let Some(slot) = tally.status.get_mut(usize::from(parts.status.as_u16())) {
                    *slot += 1;
                }
                tally.bytes += bytes as u64;
                server_timing(&parts.headers, &mut tally);
                if parts
                    .headers
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                {
                    conn = None;
                }
            }
            Ok(Err(Failure::Io)) => {
                tally.errors.io += 1;
                conn = None;
            }
            Err(_) => {
                tally.errors.timeout += 1;
                conn = None;
            }
        }
        run.done.fetch_add(1, Ordering::Relaxed);
        progress.0.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

enum Failure {
    Io,
}

fn build(run: &Run, index: u64) -> Request<Full<Bytes>> {
    let plan = &run.plan;
    let mut request = Request::new(Full::new(plan.body.clone()));
    *request.method_mut() = plan.method.clone();
    *request.uri_mut() = plan.url.path_and_query().map_or_else(
        || Uri::from_static("/"),
        |pq| Uri::try_from(pq.as_str()).unwrap_or_else(|_| Uri::from_static("/")),
    );
    let headers = request.headers_mut();
    headers.clone_from(&plan.headers);
    headers.insert(HOST, run.host.clone());
    if !plan.tokens.is_empty() {
        let slot = usize::try_from(index % plan.tokens.len() as u64).unwrap_or(0);
        if let Some(token) = plan.tokens.get(slot) {
            headers.insert(http::header::AUTHORIZATION, token.clone());
        }
    }
    request
}

/// Records `auth;dur=…;desc=…` and `upstream;dur=…` (ms with µs precision).
fn server_timing(headers: &HeaderMap, tally: &mut Tally) {
    for value in headers.get_all("server-timing") {
        let Ok(text) = value.to_str() else { continue };
        for metric in text.split(',') {
            let mut params = metric.split(';').map(str::trim);
            let name = params.next().unwrap_or_default();
            let mut dur = None;
            let mut desc = None;
            for param in params {
                if let Some((key, value)) = param.split_once('=') {
                    match key.trim() {
                        "dur" => dur = value.trim().parse::<f64>().ok(),
                        "desc" => desc = Some(value.trim().trim_matches('"')),
                        _ => {}
                    }
                }
            }
            let Some(ms) = dur.filter(|d| d.is_finite() && *d >= 0.0) else {
                continue;
            };
            let micros = Duration::from_secs_f64(ms / 1000.0).micros();
            match name {
                "auth" => {
                    tally.auth.saturating_record(micros);
                    match desc {
                        Some("hit") => tally.hits += 1,
                        Some("miss") => tally.misses += 1,
                        _ => {}
                    }
                }
                "upstream" => {
                    tally.upstream.saturating_record(micros);
                }
                _ => {}
            }
        }
    }
}

/// One HTTP/1.1 connection (TLS for https URLs), driven by its own task.
async fn connect(url: &Uri, source: Option<std::net::IpAddr>) -> Result<Sender, String> {
    let host = url.host().ok_or("no host")?;
    let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match source {
        None => TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?,
        Some(source) => {
            let target = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| e.to_string())?
                .find(|a| a.is_ipv4() == source.is_ipv4())
                .ok_or_else(|| format!("{host} has no address of {source}'s family"))?;
            let socket = if source.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(|e| e.to_string())?;
            socket
                .bind(std::net::SocketAddr::new(source, 0))
                .map_err(|e| format!("cannot connect from {source}: {e}"))?;
            socket.connect(target).await.map_err(|e| e.to_string())?
        }
    };
    let _ = tcp.set_nodelay(true);
    if https {
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(crate::tls::client_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        handshake(TokioIo::new(tls)).await
    } else {
        handshake(TokioIo::new(tcp)).await
    }
}

async fn handshake<T>(io: T) -> Result<Sender, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_server_timing() {
        let mut headers = HeaderMap::new();
        headers.append(
            "server-timing",
            HeaderValue::from_static(r#"auth;dur=0.012;desc="hit", upstream;dur=1.500"#),
        );
        headers.append(
            "server-timing",
            HeaderValue::from_static(r#"auth;desc="miss";dur=0.080, cdn;dur=4"#),
        );
        let mut tally = Tally::new().unwrap();
        server_timing(&headers, &mut tally);
        assert_eq!((tally.hits, tally.misses), (1, 1));
        assert_eq!(tally.auth.len(), 2);
        assert_eq!(tally.auth.min(), 12);
        assert_eq!(tally.auth.max(), 80);
        assert_eq!(tally.upstream.len(), 1);
        assert!(tally.upstream.equivalent(tally.upstream.max(), 1500));
    }
}
