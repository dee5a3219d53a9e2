//! The in-process harness: the real server on port 0, a [`TestIssuer`] it fetches keys from,
//! and a recording [`EchoAgent`] upstream. No outside processes. [`Edge::send`] goes through a
//! socket; [`Edge::oneshot`] drives the same stack in-process, for what needs no connection.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gatehouse::app::{App, Outputs, SpanOutput};
use gatehouse::dev::{Alg, EchoAgent, MintOptions, SigningKey, TestIssuer};
use gatehouse::server::{self, Listeners};
use gatehouse::telemetry::access_log::AccessLog;
use gatehouse::telemetry::metrics::Metrics;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

pub const CLIENT: &str = "client-a";
pub const AUDIENCE: &str = "https://agents.example.com";

/// A route block requiring client `client-a` and scope `invoke`, `{discovery}` and `{agent}`
/// filled in by [`Edge::start`].
pub fn support_route() -> String {
    RouteYaml::new("support").build()
}

/// One `customJwtAuthorizer` route block of the routes YAML, built: the tests' one way to write
/// an authorizer, instead of an inline block each. By default it names `{discovery}` (filled in
/// by [`Edge::start`]), requires client `client-a` and scope `invoke`, and forwards to
/// `{agent}`; each method changes one thing.
#[derive(Clone, Debug)]
pub struct RouteYaml {
    name: String,
    route_keys: Vec<String>,
    authorizer_keys: Vec<String>,
    clients: Option<String>,
    scopes: Option<String>,
    upstream: String,
}

impl RouteYaml {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            route_keys: Vec::new(),
            authorizer_keys: Vec::new(),
            clients: Some("[client-a]".into()),
            scopes: Some("[invoke]".into()),
            upstream: r#"{ url: "{agent}" }"#.into(),
        }
    }

    /// An MCP route at `path`.
    pub fn mcp(self, path: &str) -> Self {
        self.key("protocol: MCP").key(&format!("path: {path}"))
    }

    /// `allowedClients` (`None`: any client).
    pub fn clients(mut self, list: Option<&str>) -> Self {
        self.clients = list.map(str::to_owned);
        self
    }

    /// `allowedScopes` (`None`: no scope required).
    pub fn scopes(mut self, list: Option<&str>) -> Self {
        self.scopes = list.map(str::to_owned);
        self
    }

    /// Another key of `customJwtAuthorizer`, as one YAML line (`allowedAudience: [...]`).
    pub fn authorizer(mut self, line: &str) -> Self {
        self.authorizer_keys.push(line.to_owned());
        self
    }

    /// Another key of the route, as YAML at route indentation (may span lines).
    pub fn key(mut self, yaml: &str) -> Self {
        self.route_keys.push(yaml.to_owned());
        self
    }

    /// The `upstream` value (flow YAML); the default is `{ url: "{agent}" }`.
    pub fn upstream(mut self, flow: &str) -> Self {
        self.upstream = flow.to_owned();
        self
    }

    pub fn build(&self) -> String {
        let mut yaml = format!("\n  - name: {}\n", self.name);
        let route_line = |yaml: &mut String, text: &str| {
            for line in text.lines() {
                yaml.push_str("    ");
                yaml.push_str(line);
                yaml.push('\n');
            }
        };
        // Route keys that shape the route come before the authorizer, as people write them.
        for key in &self.route_keys {
            route_line(&mut yaml, key);
        }
        yaml.push_str("    authorizerConfiguration:\n      customJwtAuthorizer:\n");
        yaml.push_str("        discoveryUrl: \"{discovery}\"\n");
        if let Some(clients) = &self.clients {
            yaml.push_str(&format!("        allowedClients: {clients}\n"));
        }
        if let Some(scopes) = &self.scopes {
            yaml.push_str(&format!("        allowedScopes: {scopes}\n"));
        }
        for line in &self.authorizer_keys {
            yaml.push_str(&format!("        {line}\n"));
        }
        route_line(&mut yaml, &format!("upstream: {}", self.upstream));
        yaml
    }
}

/// Collects access-log lines written by the edge's writer thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn error_type(&self) -> Option<&str> {
        self.header("x-amzn-errortype")
    }
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One running edge with its issuer and upstream.
pub struct Edge {
    pub issuer: TestIssuer,
    pub agent: EchoAgent,
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: Captured,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub async fn issuer() -> TestIssuer {
    TestIssuer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub async fn agent() -> EchoAgent {
    EchoAgent::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The routes part of a config with placeholders replaced.
pub fn fill(template: &str, issuer: &TestIssuer, agent: &EchoAgent) -> String {
    template
        .replace("{discovery}", &issuer.discovery_url())
        .replace("{agent}", &agent.url())
        .replace("{issuer}", &issuer.issuer())
}

impl Edge {
    /// An edge with a fresh issuer and agent; `top` is prepended to `routes:` + `routes_yaml`.
    pub async fn start(top: &str, routes_yaml: &str) -> Edge {
        let issuer = issuer().await;
        let agent = agent().await;
        Self::start_with(issuer, agent, top, routes_yaml).await
    }

    pub async fn start_with(
        issuer: TestIssuer,
        agent: EchoAgent,
        top: &str,
        routes_yaml: &str,
    ) -> Edge {
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.2:0 }}\n{}\nroutes:\n{}",
            fill(top, &issuer, &agent),
            fill(routes_yaml, &issuer, &agent)
        );
        Self::from_yaml(issuer, agent, &yaml).await
    }

    pub async fn from_yaml(issuer: TestIssuer, agent: EchoAgent, yaml: &str) -> Edge {
        Self::from_yaml_with_spans(issuer, agent, yaml, None).await
    }

    /// As [`Self::from_yaml`]; `spans` replaces the configured span pipeline.
    pub async fn from_yaml_with_spans(
        issuer: TestIssuer,
        agent: EchoAgent,
        yaml: &str,
        spans: Option<SpanOutput>,
    ) -> Edge {
        let loaded =
            gatehouse::config::load_str("test.yaml", yaml, Path::new("tests/fixtures"), &|_| None)
                .unwrap_or_else(|e| panic!("config does not load: {e:?}\n{yaml}"));
        let log = Captured::default();
        let access_log = AccessLog::start(Box::new(log.clone()), Arc::new(Metrics::new()));
        let outputs = Outputs {
            access_log: Some(access_log),
            spans,
        };
        let (app, startup) = App::with_outputs(&loaded.config, &loaded.base_dir, outputs).unwrap();
        let listeners = Listeners::bind(&startup).await.unwrap();
        let addr = listeners.public_addrs()[0];
        let admin = listeners.admin_addr();
        app.wait_for_keys(Duration::from_secs(5)).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(app.clone(), startup, listeners, async {
            let _ = stopped.await;
        }));
        Edge {
            issuer,
            agent,
            app,
            addr,
            admin,
            log,
            stop: Some(stop),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token from the issuer's current key: client `client-a`, scope `invoke`, audience
    /// [`AUDIENCE`], one hour; `change` adjusts it.
    pub fn token(&self, change: impl FnOnce(&mut MintOptions)) -> String {
        let mut opts = default_claims();
        change(&mut opts);
        self.issuer.mint(&opts).unwrap()
    }

    pub fn valid_token(&self) -> String {
        self.token(|_| {})
    }

    /// Sends a request; `headers` are added as given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The same request as [`Edge::send`], driven through the edge's request stack in-process
    /// with `tower::ServiceExt::oneshot` (as axum and linkerd test theirs): the real stack, App
    /// and upstream, but no client socket and no HTTP codec in between. For what the stack
    /// decides (statuses, headers, bodies, refusals); connection-level behaviour (the
    /// listener's address, TLS, timeouts on the wire) needs [`Edge::send`]. Like an HTTP/1.1
    /// client, it sends `Host` (the edge's address) and a `Content-Length` for a body, unless
    /// `headers` has them.
    pub async fn oneshot(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            builder = builder.header("host", self.addr.to_string());
        }
        if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            builder = builder.header("content-length", body.len());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = gatehouse::stack::build(self.app.clone())
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POST to a route's invocation path with an optional bearer token.
    pub async fn invoke(&self, route: &str, token: Option<&str>, body: &str) -> Reply {
        let path = format!("/runtimes/{route}/invocations");
        match token {
            Some(token) => {
                let auth = format!("Bearer {token}");
                self.send(
                    Method::POST,
                    &path,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await
            }
            None => {
                self.send(
                    Method::POST,
                    &path,
                    &[("content-type", "application/json")],
                    body,
                )
                .await
            }
        }
    }

    pub async fn admin(&self, path: &str) -> Reply {
        let admin = self.admin.expect("admin listener");
        let request = Request::get(format!("http://{admin}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// Writes raw bytes on a new connection and reads until the server closes or `wait` passes.
    pub async fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Access-log lines, waiting until at least `n` were written.
    pub async fn access_lines(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let lines = self.log.lines();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.log.lines()
    }

    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<Result<(), String>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }
}

/// A valid token for `issuer` (the default claims), for tests that drive a [`Binary`].
pub fn token_of(issuer: &TestIssuer) -> String {
    let mut claims = default_claims();
    claims.iss = issuer.issuer();
    issuer.mint(&claims).unwrap()
}

pub fn default_claims() -> MintOptions {
    MintOptions {
        sub: Some("user-1".into()),
        aud: vec![AUDIENCE.into()],
        client_id: Some(CLIENT.into()),
        scope: Some("invoke".into()),
        ttl: Duration::from_secs(3600),
        ..MintOptions::default()
    }
}

/// A key the issuer does not publish.
pub fn stranger(alg: Alg) -> SigningKey {
    SigningKey::generate(alg, Some("stranger".into())).unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Everything the edge logs through `tracing` on this thread (the tests' current-thread
/// runtime runs the edge, the issuer refresh and the agent here), at DEBUG and above.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs a capturing subscriber for this thread until the guard drops. Call it before
    /// starting the edge, so the first key fetch is captured too.
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Captured(writer.0.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Resident memory of a process, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Open file descriptors of a process, from `/proc/PID/fd`.
pub fn open_fds(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// The `gatehouse` binary the slow tier runs: this build's, or `GATEHOUSE_BIN` to measure
/// another (docs/security.md quotes a release binary).
pub fn gatehouse_bin() -> String {
    std::env::var("GATEHOUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gatehouse").to_owned())
}

/// The real binary on its own ports, so its memory is measured alone.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: String,
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last `lines` lines the edge wrote to stderr (its own log), for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("edge.stderr")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The configuration file the binary was started with (rewrite it, then SIGHUP).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("gatehouse.yaml")
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the binary.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// The binary's whole stderr (its own log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.stderr")).unwrap_or_default()
    }

    /// A GET on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://{}{path}", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary serving [`&support_route()`] with the access log off.
pub async fn start_binary(issuer: &TestIssuer, agent: &EchoAgent) -> Binary {
    start_binary_with(
        issuer,
        agent,
        "telemetry: { accessLog: \"off\" }",
        &support_route(),
    )
    .await
}

/// The binary on two free loopback ports; `top` is prepended to `routes:` + `routes_yaml`
/// (placeholders filled as in [`fill`]). Returns once `/readyz` answers 200.
pub async fn start_binary_with(
    issuer: &TestIssuer,
    agent: &EchoAgent,
    top: &str,
    routes_yaml: &str,
) -> Binary {
    start_binary_env(issuer, agent, top, routes_yaml, &[]).await
}

/// [`start_binary_with`], with environment variables for the process.
pub async fn start_binary_env(
    issuer: &TestIssuer,
    agent: &EchoAgent,
    top: &str,
    routes_yaml: &str,
    env: &[(&str, &str)],
) -> Binary {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin_port} }}\n{}\nroutes:\n{}",
        fill(top, issuer, agent),
        fill(routes_yaml, issuer, agent)
    );
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, yaml).unwrap();
    let stderr = std::fs::File::create(dir.path().join("edge.stderr")).unwrap();
    let child = std::process::Command::new(gatehouse_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let binary = Binary {
        child,
        addr: format!("127.0.0.1:{port}"),
        admin: format!("127.0.0.1:{admin_port}"),
        dir,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let ready = eventually_async(Duration::from_secs(30), || async {
        let request = Request::get(format!("http://{}/readyz", binary.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        matches!(client.request(request).await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(
        ready,
        "the binary became ready:\n{}",
        binary.stderr_tail(20)
    );
    binary
}

pub async fn eventually_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
