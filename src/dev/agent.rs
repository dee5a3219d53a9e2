//! An echo agent that follows the AgentCore runtime container contract, and records every
//! request it receives.
//!
//! - `GET /ping` → `{"status":"Healthy","time_of_last_update":<start time, unix s>}` (the
//!   timestamp only moves on a status change, as the contract asks).
//! - `POST /invocations` (and any other path, so it also stands in for an MCP server at `/mcp`)
//!   → 200 JSON `{"payload", "headers", "sessionId", "method", "path", "query", "bodyBytes"}`.
//! - A JSON payload with `"stream": N` (and optional `"intervalMs"`, default 100) → an SSE
//!   response of N `data: {"index":i,...}` events, each written as its own frame when due.
//! - A JSON payload with `"bytes": N` (and optional `"chunk"`, default 64 KiB) → 200
//!   `application/octet-stream` of N bytes, produced a chunk at a time only when the
//!   connection takes it; [`EchoAgent::streamed_bytes`] counts what was handed over, so tests
//!   can see backpressure (a slow reader holds the producer back).
//! - Bodies are read whole (any size) but only the first `record_body_limit` bytes are kept and
//!   echoed; a longer body is echoed as `"<N bytes, not echoed>"`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gatehouse::dev::agent::{Behavior, EchoAgent};
//! use std::time::Duration;
//!
//! let agent = EchoAgent::start("127.0.0.1:0".parse()?).await?;
//! // Route the edge to agent.url(); after a request went through:
//! // let seen = agent.wait_for_requests(1, Duration::from_secs(5)).await?;
//! // assert_eq!(seen[0].header("x-amzn-bedrock-agentcore-runtime-session-id"), Some(...));
//! agent.set_behavior(Behavior::Status(500)); // the upstream starts failing
//! assert_eq!(agent.request_count(), 0);
//! agent.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::keys::now_unix;
pub use super::serve::WaitTimeout;
use super::serve::{self, Body, Server, wait_for};

const SESSION_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
/// Upper bounds that keep a long-running `gatehouse dev` (and `gatehouse bench` against it)
/// from growing without limit.
const MAX_STREAM_EVENTS: u64 = 100_000;
const DEFAULT_INTERVAL_MS: u64 = 100;

/// How the agent answers; for fault tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    Normal,
    /// This status with a JSON `{"message"}` body.
    Status(u16),
    /// Answer normally after this pause (upstream timeouts).
    Delay(Duration),
    /// Never answer (until shutdown).
    Hang,
    /// Close the connection without reading the body or answering.
    CloseImmediately,
    /// 200 `text/event-stream`, one event, then drop the connection mid-body.
    ResetMidStream,
}

/// Where and how to start an [`EchoAgent`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub addr: SocketAddr,
    /// Requests kept for [`EchoAgent::requests`]; older ones are dropped first.
    pub record_limit: usize,
    /// Body bytes kept per request (the whole body is still read and counted).
    pub record_body_limit: usize,
    /// Body bytes kept over all recorded requests; older requests are dropped first.
    pub record_total_limit: usize,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            record_limit: 1024,
            record_body_limit: 1024 * 1024,
            record_total_limit: 64 * 1024 * 1024,
        }
    }
}

/// One request as the agent received it. `Authorization` and `Cookie` values are marked
/// sensitive, so `Debug` does not print them.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The first `record_body_limit` bytes of the body.
    pub body: Bytes,
    /// The full body length, even when `body` was cut.
    pub body_len: u64,
    pub body_truncated: bool,
    pub received_at: SystemTime,
    pub peer: SocketAddr,
}

impl Recorded {
    /// A header's value (all values joined with `, `), if present and text.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The body as JSON, when it was recorded whole and parses.
    pub fn body_json(&self) -> Option<Value> {
        if self.body_truncated {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running echo agent. Clones share the server; it stops on [`shutdown`](Self::shutdown) or
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    state: Arc<State>,
    server: Arc<Server>,
}

#[derive(Debug)]
struct State {
    opts: AgentOptions,
    started: i64,
    behavior: Mutex<Behavior>,
    log: Mutex<Log>,
    /// Requests seen since the last clear; a watch so tests can wait on it.
    seen: watch::Sender<u64>,
    active_streams: AtomicUsize,
    cancelled: watch::Sender<u64>,
    /// Requests whose handler was dropped before it answered (the peer went away).
    abandoned: watch::Sender<u64>,
    completed_streams: AtomicU64,
    /// Bytes of `"bytes": N` responses handed to the connection so far.
    streamed_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Log {
    entries: VecDeque<Recorded>,
    body_bytes: usize,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EchoAgent {
    /// Start on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> io::Result<EchoAgent> {
        Self::start_with(AgentOptions {
            addr,
            ..AgentOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: AgentOptions) -> io::Result<EchoAgent> {
        let listener = TcpListener::bind(opts.addr).await?;
        let state = Arc::new(State {
            opts,
            started: now_unix(),
            behavior: Mutex::new(Behavior::Normal),
            log: Mutex::new(Log::default()),
            seen: watch::Sender::new(0),
            active_streams: AtomicUsize::new(0),
            cancelled: watch::Sender::new(0),
            abandoned: watch::Sender::new(0),
            completed_streams: AtomicU64::new(0),
            streamed_bytes: AtomicU64::new(0),
        });
        let shared = Arc::clone(&state);
        let server = Server::spawn(listener, move |req, peer| {
            handle(Arc::clone(&shared), req, peer)
        })?;
        Ok(EchoAgent {
            state,
            server: Arc::new(server),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41235`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *locked(&self.state.behavior) = behavior;
    }

    /// The recorded requests, oldest first (at most `record_limit`).
    pub fn requests(&self) -> Vec<Recorded> {
        locked(&self.state.log).entries.iter().cloned().collect()
    }

    /// Requests received since start or [`clear`](Self::clear), including ones no longer kept.
    pub fn request_count(&self) -> u64 {
        *self.state.seen.borrow()
    }

    /// Forget recorded requests and reset the counters.
    pub fn clear(&self) {
        *locked(&self.state.log) = Log::default();
        self.state.seen.send_replace(0);
        self.state.cancelled.send_replace(0);
        self.state.abandoned.send_replace(0);
        self.state.completed_streams.store(0, Ordering::SeqCst);
        self.state.streamed_bytes.store(0, Ordering::SeqCst);
    }

    /// Wait until at least `n` requests arrived, then return the recorded ones.
    pub async fn wait_for_requests(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<Vec<Recorded>, WaitTimeout> {
        wait_for(&self.state.seen, n, timeout).await?;
        Ok(self.requests())
    }

    /// SSE responses still being written.
    pub fn active_streams(&self) -> usize {
        self.state.active_streams.load(Ordering::SeqCst)
    }

    /// SSE responses that ended before their last event: the reader went away (client
    /// disconnect propagated through the edge) or the connection broke.
    pub fn cancelled_streams(&self) -> u64 {
        *self.state.cancelled.borrow()
    }

    /// SSE responses that sent every event.
    pub fn completed_streams(&self) -> u64 {
        self.state.completed_streams.load(Ordering::SeqCst)
    }

    /// Bytes of `"bytes": N` responses handed to the connection so far (produced on demand,
    /// so this minus what the client read is what sits in buffers along the way).
    pub fn streamed_bytes(&self) -> u64 {
        self.state.streamed_bytes.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` streams were cancelled.
    pub async fn wait_for_cancelled_streams(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        wait_for(&self.state.cancelled, n, timeout).await
    }

    /// Requests dropped before the agent answered them, typically a [`Behavior::Hang`] or
    /// [`Behavior::Delay`] request whose caller (the edge) gave up and closed the connection.
    pub fn abandoned_requests(&self) -> u64 {
        *self.state.abandoned.borrow()
    }

    /// Wait until at least `n` requests were abandoned.
    pub async fn wait_for_abandoned_requests(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        wait_for(&self.state.abandoned, n, timeout).await
    }

    /// Stop serving and drop open connections (hung requests and streams included).
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

impl State {
    fn record(&self, parts: &Parts, peer: SocketAddr, body: Bytes, body_len: u64, truncated: bool) {
        let mut headers = parts.headers.clone();
        for name in [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ] {
            if let header::Entry::Occupied(mut e) = headers.entry(name) {
                for v in e.iter_mut() {
                    v.set_sensitive(true);
                }
            }
        }
        let rec = Recorded {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers,
            body,
            body_len,
            body_truncated: truncated,
            received_at: SystemTime::now(),
            peer,
        };
        {
            let mut log = locked(&self.log);
            let size = rec.body.len();
            while !log.entries.is_empty()
                && (log.entries.len() >= self.opts.record_limit.max(1)
                    || log.body_bytes + size > self.opts.record_total_limit)
            {
                if let Some(old) = log.entries.pop_front() {
                    log.body_bytes = log.body_bytes.saturating_sub(old.body.len());
                }
            }
            log.body_bytes += size;
            log.entries.push_back(rec);
        }
        self.seen.send_modify(|n| *n += 1);
    }
}

/// Read the whole body, keeping the first `keep` bytes. A body that fails midway (the client
/// went away) is recorded as far as it got.
async fn read_body(mut body: Incoming, keep: usize) -> (Bytes, u64, bool) {
    let mut kept = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let truncated = total > kept.len() as u64;
    (kept.freeze(), total, truncated)
}

/// Counts the request as abandoned if the handler is dropped before it answers.
struct Answering {
    state: Arc<State>,
    answered: bool,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            self.state.abandoned.send_modify(|n| *n += 1);
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, io::Error> {
    let mut answering = Answering {
        state: Arc::clone(&state),
        answered: false,
    };
    let result = answer(&state, req, peer).await;
    answering.answered = true;
    result
}

async fn answer(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, io::Error> {
    let behavior = locked(&state.behavior).clone();
    let (parts, body) = req.into_parts();
    tracing::debug!(method = %parts.method, uri = %parts.uri, "echo agent: request");
    match behavior {
        Behavior::Hang => {
            state.record(&parts, peer, Bytes::new(), 0, false);
            return std::future::pending().await;
        }
        Behavior::CloseImmediately => {
            state.record(&parts, peer, Bytes::new(), 0, false);
            return Err(io::Error::other("echo agent: closing the connection"));
        }
        _ => {}
    }
    let (bytes, len, truncated) = read_body(body, state.opts.record_body_limit).await;
    state.record(&parts, peer, bytes.clone(), len, truncated);
    match behavior {
        Behavior::Status(code) => Ok(serve::json(
            serve::status(code),
            &json!({ "message": format!("echo agent configured to answer {code}") }),
        )),
        Behavior::ResetMidStream => Ok(reset_mid_stream()),
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(respond(state, &parts, &bytes, len, truncated))
        }
        _ => Ok(respond(state, &parts, &bytes, len, truncated)),
    }
}

fn respond(
    state: &Arc<State>,
    parts: &Parts,
    body: &Bytes,
    len: u64,
    truncated: bool,
) -> Response<Body> {
    if parts.uri.path() == "/ping" && parts.method == Method::GET {
        return serve::json(
            StatusCode::OK,
            &json!({ "status": "Healthy", "time_of_last_update": state.started }),
        );
    }
    let payload = if body.is_empty() {
        Value::Null
    } else if truncated {
        Value::String(format!("<{len} bytes, not echoed>"))
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(total) = payload.get("bytes").and_then(Value::as_u64) {
        let chunk = payload
            .get("chunk")
            .and_then(Value::as_u64)
            .and_then(|c| usize::try_from(c).ok())
            .filter(|&c| c > 0)
            .unwrap_or(64 * 1024)
            .min(16 * 1024 * 1024);
        return bytes_response(state, total, chunk);
    }
    let mut resp = match payload.get("stream").and_then(Value::as_u64) {
        Some(n) => {
            let interval = payload
                .get("intervalMs")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_INTERVAL_MS);
            sse(
                state,
                n.min(MAX_STREAM_EVENTS),
                Duration::from_millis(interval),
                session,
            )
        }
        None => {
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            for (name, value) in &parts.headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                headers
                    .entry(name.as_str().to_owned())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert_with(|| value.into_owned());
            }
            serve::json(
                StatusCode::OK,
                &json!({
                    "payload": payload,
                    "headers": headers,
                    "sessionId": session,
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "bodyBytes": len,
                }),
            )
        }
    };
    // MCP servers return their session id; echoing it lets tests see it pass back untouched.
    if let Some(v) = parts.headers.get("mcp-session-id") {
        resp.headers_mut().insert("mcp-session-id", v.clone());
    }
    resp
}

mod responses;

use self::responses::{bytes_response, reset_mid_stream, sse};
#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
