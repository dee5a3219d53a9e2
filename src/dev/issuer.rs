//! An OIDC issuer on a loopback port: discovery document, JWKS and a client-credentials token
//! endpoint, with knobs to rotate keys and to make either document misbehave.
//!
//! `gatehouse dev` runs one as its development issuer; the integration tests start one per test
//! and break it on purpose (`set_mode`) to check how the edge copes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gatehouse::dev::issuer::{Mode, TestIssuer};
//! use gatehouse::dev::keys::{Alg, MintOptions};
//!
//! let issuer = TestIssuer::start("127.0.0.1:0".parse()?).await?;
//! // Point an authorizer at issuer.discovery_url(); mint tokens it will accept:
//! let token = issuer.mint(&MintOptions { client_id: Some("app".into()), ..Default::default() })?;
//! let old = issuer.signing_key();
//! let new = issuer.rotate(Alg::ES256)?; // new primary; the old key stays published
//! assert_ne!(old.kid(), new.kid());
//! issuer.set_jwks_mode(Mode::Status(503)); // the IdP goes down
//! assert_eq!(issuer.jwks_fetches(), 0);
//! issuer.shutdown().await;
//! # let _ = token; Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::keys::{Alg, KeyError, MintOptions, SigningKey, mint};
use super::serve::{self, Body, Server, WaitTimeout, wait_for};

mod token;
use token::token;

const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// RFC 8414 metadata, which MCP clients look for first; served with the same document.
const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
const JWKS_PATH: &str = "/jwks.json";
const TOKEN_PATH: &str = "/token";

/// How the discovery or JWKS endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The real document.
    Normal,
    /// The real document after a pause (concurrent-miss collapsing, slow IdPs).
    Delay(Duration),
    /// This status with a small JSON error body.
    Status(u16),
    /// Accept the request and never answer (until shutdown).
    Hang,
    /// 200 `application/json` whose body is not JSON.
    Garbage,
    /// 200 `text/html` (a login page where JSON was expected).
    Html,
    /// 200 `application/json`, chunked (no `Content-Length`), this many bytes.
    Huge(usize),
    /// 302 to the same URL, forever.
    Redirect,
    /// Close the connection without answering.
    Close,
    /// 200 with exactly this JSON (a discovery document without `jwks_uri`, `keys` not an
    /// array...).
    Json(Value),
}

/// Where and how to start a [`TestIssuer`].
#[derive(Debug, Clone)]
pub struct IssuerOptions {
    pub addr: SocketAddr,
    /// The primary signing key; default a fresh RS256 key.
    pub key: Option<SigningKey>,
    /// Serve under this path (`/tenant-1`), like multi-tenant IdPs; the issuer is then
    /// `http://host:port/tenant-1`.
    pub path_prefix: String,
}

impl Default for IssuerOptions {
    fn default() -> Self {
        IssuerOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: None,
            path_prefix: String::new(),
        }
    }
}

/// A running issuer. Clones share the server; it stops on [`shutdown`](Self::shutdown) or when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    state: Arc<State>,
    server: Arc<Server>,
}

#[derive(Debug)]
struct State {
    /// `http://addr`, for absolute redirects.
    origin: String,
    /// `origin` + prefix: the default issuer and the base of every endpoint.
    base: String,
    prefix: String,
    knobs: Mutex<Knobs>,
    /// Watches rather than atomics so tests can wait for a (background) fetch.
    discovery_fetches: watch::Sender<u64>,
    jwks_fetches: watch::Sender<u64>,
    token_requests: watch::Sender<u64>,
}

#[derive(Debug)]
struct Knobs {
    primary: SigningKey,
    published: Vec<SigningKey>,
    extra: Vec<Value>,
    issuer_claim: Option<String>,
    jwks_uri: Option<String>,
    cache_control: Option<String>,
    discovery_mode: Mode,
    jwks_mode: Mode,
}

impl State {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        // A panicking test thread must not take the issuer down with it.
        self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issuer(&self) -> String {
        self.knobs()
            .issuer_claim
            .clone()
            .unwrap_or_else(|| self.base.clone())
    }
}

impl TestIssuer {
    /// Start on `addr` (port 0 picks a free port) with a fresh RS256 key.
    pub async fn start(addr: SocketAddr) -> io::Result<TestIssuer> {
        Self::start_with(IssuerOptions {
            addr,
            ..IssuerOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: IssuerOptions) -> io::Result<TestIssuer> {
        let primary = match opts.key {
            Some(k) => k,
            None => SigningKey::generate(Alg::RS256, None).map_err(io::Error::other)?,
        };
        let listener = TcpListener::bind(opts.addr).await?;
        let prefix = opts.path_prefix.trim_end_matches('/').to_owned();
        let origin = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            base: format!("{origin}{prefix}"),
            origin,
            prefix,
            knobs: Mutex::new(Knobs {
                published: vec![primary.clone()],
                primary,
                extra: Vec::new(),
                issuer_claim: None,
                jwks_uri: None,
                cache_control: None,
                discovery_mode: Mode::Normal,
                jwks_mode: Mode::Normal,
            }),
            discovery_fetches: watch::Sender::new(0),
            jwks_fetches: watch::Sender::new(0),
            token_requests: watch::Sender::new(0),
        });
        let shared = Arc::clone(&state);
        let server = Server::spawn(listener, move |req, _peer| handle(Arc::clone(&shared), req))?;
        Ok(TestIssuer {
            state,
            server: Arc::new(server),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (plus the path prefix, if any).
    pub fn url(&self) -> String {
        self.state.base.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// What goes in an authorizer's `discoveryUrl`.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.state.base)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.state.base)
    }

    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.state.base)
    }

    /// The `issuer` the discovery document announces (and tokens must carry as `iss`).
    pub fn issuer(&self) -> String {
        self.state.issuer()
    }

    /// Announce a different `issuer` than the URL (mismatch tests, fixed-`iss` fixtures).
    pub fn set_issuer_claim(&self, issuer: impl Into<String>) {
        self.state.knobs().issuer_claim = Some(issuer.into());
    }

    /// Announce the URL as `issuer` again.
    pub fn reset_issuer_claim(&self) {
        self.state.knobs().issuer_claim = None;
    }

    /// Announce another `jwks_uri` (another host, a plain-http URL...); `None` restores ours.
    pub fn set_jwks_uri(&self, uri: Option<String>) {
        self.state.knobs().jwks_uri = uri;
    }

    /// Publish another key (not used for signing).
    pub fn add_key(&self, key: SigningKey) {
        self.state.knobs().published.push(key);
    }

    /// Stop publishing every key with this `kid`; the primary keeps signing, so tokens from a
    /// withdrawn key can still be made. Returns whether a key was removed.
    pub fn remove_key(&self, kid: &str) -> bool {
        let mut k = self.state.knobs();
        let before = k.published.len();
        k.published.retain(|key| key.kid() != kid);
        k.published.len() != before
    }

    /// Generate a key for `alg`, publish it and make it the primary; older keys stay published.
    pub fn rotate(&self, alg: Alg) -> Result<SigningKey, KeyError> {
        let key = SigningKey::generate(alg, None)?;
        self.rotate_to(key.clone());
        Ok(key)
    }

    /// Publish `key` (if not already) and make it the primary.
    pub fn rotate_to(&self, key: SigningKey) {
        let mut k = self.state.knobs();
        if !k.published.iter().any(|p| p.kid() == key.kid()) {
            k.published.push(key.clone());
        }
        k.primary = key;
    }

    /// The primary key, which [`mint`](Self::mint) signs with.
    pub fn signing_key(&self) -> SigningKey {
        self.state.knobs().primary.clone()
    }

    /// The `kid`s currently published, in JWKS order (extra JWKs not included).
    pub fn published_kids(&self) -> Vec<String> {
        let k = self.state.knobs();
        k.published.iter().map(|p| p.kid().to_owned()).collect()
    }

    /// The JWK Set as the JWKS endpoint serves it in [`Mode::Normal`].
    pub fn jwks(&self) -> Value {
        jwks_document(&self.state.knobs())
    }

    /// Append a raw JWK to the set as given (unknown `kty`, `use: enc`, missing `n`...).
    pub fn publish_extra_jwk(&self, jwk: Value) {
        self.state.knobs().extra.push(jwk);
    }

    pub fn clear_extra_jwks(&self) {
        self.state.knobs().extra.clear();
    }

    /// `Cache-Control` on discovery and JWKS responses (`max-age=60`, `no-store`...).
    pub fn set_cache_control(&self, value: Option<String>) {
        self.state.knobs().cache_control = value;
    }

    /// Set how both discovery and JWKS answer.
    pub fn set_mode(&self, mode: Mode) {
        let mut k = self.state.knobs();
        k.discovery_mode = mode.clone();
        k.jwks_mode = mode;
    }

    pub fn set_discovery_mode(&self, mode: Mode) {
        self.state.knobs().discovery_mode = mode;
    }

    pub fn set_jwks_mode(&self, mode: Mode) {
        self.state.knobs().jwks_mode = mode;
    }

    /// Requests to the discovery document (either well-known path), whatever the mode.
    pub fn discovery_fetches(&self) -> u64 {
        *self.state.discovery_fetches.borrow()
    }

    /// Requests to the JWKS, whatever the mode.
    pub fn jwks_fetches(&self) -> u64 {
        *self.state.jwks_fetches.borrow()
    }

    pub fn token_requests(&self) -> u64 {
        *self.state.token_requests.borrow()
    }

    pub fn reset_counters(&self) {
        self.state.discovery_fetches.send_replace(0);
        self.state.jwks_fetches.send_replace(0);
        self.state.token_requests.send_replace(0);
    }

    /// Wait until the discovery document was requested at least `n` times in all.
    pub async fn wait_for_discovery_fetches(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        wait_for(&self.state.discovery_fetches, n, timeout).await
    }

    /// Wait until the JWKS was requested at least `n` times in all (background refresh tests).
    pub async fn wait_for_jwks_fetches(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        wait_for(&self.state.jwks_fetches, n, timeout).await
    }

    /// Mint with the primary key; an empty `opts.iss` is filled with [`issuer`](Self::issuer).
    pub fn mint(&self, opts: &MintOptions) -> Result<String, KeyError> {
        let key = self.signing_key();
        if opts.iss.is_empty() {
            let opts = MintOptions {
                iss: self.issuer(),
                ..opts.clone()
            };
            return mint(&key, &opts);
        }
        mint(&key, opts)
    }

    /// Stop serving and drop open connections (hung requests included).
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

fn discovery_document(state: &State, k: &Knobs) -> Value {
    let base = &state.base;
    let mut algs: Vec<&str> = Vec::new();
    for alg in k.published.iter().map(|p| p.alg().as_str()) {
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    json!({
        "issuer": k.issuer_claim.clone().unwrap_or_else(|| base.clone()),
        "jwks_uri": k.jwks_uri.clone().unwrap_or_else(|| format!("{base}{JWKS_PATH}")),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "grant_types_supported": ["client_credentials", crate::outbound::client::TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": ["openid"],
    })
}

fn jwks_document(k: &Knobs) -> Value {
    let mut keys: Vec<Value> = k.published.iter().map(SigningKey::public_jwk).collect();
    keys.extend(k.extra.iter().cloned());
    json!({ "keys": keys })
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
    let path = req.uri().path();
    let local = path.strip_prefix(state.prefix.as_str()).unwrap_or("");
    tracing::debug!(method = %req.method(), path, "dev issuer: request");
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    match local {
        DISCOVERY_PATH | OAUTH_METADATA_PATH if is_read => {
            state.discovery_fetches.send_modify(|n| *n += 1);
            let mode = state.knobs().discovery_mode.clone();
            let url = format!("{}{path}", state.origin);
            answer(&state, mode, &url, discovery_document).await
        }
        JWKS_PATH if is_read => {
            state.jwks_fetches.send_modify(|n| *n += 1);
            let mode = state.knobs().jwks_mode.clone();
            let url = format!("{}{path}", state.origin);
            answer(&state, mode, &url, |_, k| jwks_document(k)).await
        }
        TOKEN_PATH if req.method() == Method::POST => {
            state.token_requests.send_modify(|n| *n += 1);
            Ok(token(&state, req).await)
        }
        DISCOVERY_PATH | OAUTH_METADATA_PATH | JWKS_PATH | TOKEN_PATH => Ok(serve::json(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "method not allowed" }),
        )),
        _ => Ok(serve::json(
            StatusCode::NOT_FOUND,
            &json!({ "error": "not found" }),
        )),
    }
}

/// Answer a document request according to `mode`; `document` is built only when needed, after
/// any delay, so it reflects the knobs at the time of answering.
async fn answer(
    state: &State,
    mode: Mode,
    self_url: &str,
    document: impl Fn(&State, &Knobs) -> Value,
) -> Result<Response<Body>, io::Error> {
    let with_cache_control = |mut resp: Response<Body>| {
        if let Some(cc) = state.knobs().cache_control.as_deref()
            && let Ok(v) = header::HeaderValue::from_str(cc)
        {
            resp.headers_mut().insert(header::CACHE_CONTROL, v);
        }
        resp
    };
    let normal = || {
        let doc = document(state, &state.knobs());
        with_cache_control(serve::json(StatusCode::OK, &doc))
    };
    let body_of = |ctype: &'static str, body: Body| {
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        resp
    };
    Ok(match mode {
        Mode::Normal => normal(),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            normal()
        }
        Mode::Status(code) => serve::json(
            serve::status(code),
            &json!({ "error": "test issuer mode", "status": code }),
        ),
        Mode::Hang => std::future::pending().await,
        Mode::Garbage => body_of(
            "application/json",
            serve::full(r#"{"keys": [ this is not JSON"#),
        ),
        Mode::Html => body_of(
            "text/html; charset=utf-8",
            serve::full("<!doctype html><html><body><h1>Sign in</h1></body></html>"),
        ),
        Mode::Huge(n) => body_of("application/json", huge_body(n)),
        Mode::Redirect => {
            let mut resp = Response::new(serve::full(""));
            *resp.status_mut() = StatusCode::FOUND;
            if let Ok(v) = header::HeaderValue::from_str(self_url) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Mode::Close => return Err(io::Error::other("test issuer: closing the connection")),
        Mode::Json(v) => with_cache_control(serve::json(StatusCode::OK, &v)),
    })
}

/// `n` bytes of JSON-looking padding, streamed in 64 KiB chunks so that a 1 GiB answer costs
/// no memory here.
fn huge_body(n: usize) -> Body {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(br#"{"keys":["#);
    let pad = Bytes::from(vec![b' '; CHUNK]);
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let (head, pad) = (head.clone(), pad.clone());
        async move {
            if sent >= n {
                return None;
            }
            let chunk = if sent == 0 {
                head.slice(..head.len().min(n))
            } else {
                pad.slice(..CHUNK.min(n - sent))
            };
            let len = chunk.len();
            Some((Ok::<_, io::Error>(Frame::data(chunk)), sent + len))
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
#[path = "issuer_tests.rs"]
mod tests;
