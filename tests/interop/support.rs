//! Real peers as child processes (READY protocol, see tests/interop/README.md) and the real
//! `gatehouse` binary in front of them. Everything binds 127.0.0.1 on ports the OS picks.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The interop venv's Python.
pub fn python() -> PathBuf {
    root().join(".interop/venv/bin/python")
}

/// A child process that is stopped (SIGTERM, then kill) when dropped.
pub struct Peer {
    pub url: String,
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Peer {
    /// Spawns `program args`, waits for `READY <url>` on stdout.
    pub fn spawn(name: &str, program: &Path, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {name} ({}): {e}; run scripts/setup-interop.sh",
                    program.display()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{name} did not become ready"));
        let url = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"))
            .to_owned();
        let stdin = child.stdin.take();
        Peer {
            url,
            child,
            _stdin: stdin,
        }
    }

    pub fn idp(args: &[&str]) -> Peer {
        let mut all = vec![
            "tests/interop/idp/server.mjs",
            "--port",
            "0",
            "--quiet",
            "--watch-stdin",
        ];
        all.extend_from_slice(args);
        Peer::spawn("oidc-provider", Path::new("node"), &all)
    }

    /// The botocore-checked fake AgentCore data plane (tests/interop/agentcore_fake).
    pub fn agentcore_fake() -> Peer {
        Peer::spawn(
            "agentcore-fake",
            &python(),
            &[
                "tests/interop/agentcore_fake/server.py",
                "--port",
                "0",
                "--watch-stdin",
            ],
        )
    }

    /// The OTLP receiver (`tests/interop/otlp/receiver.py`), writing spans to `out`.
    pub fn otlp_receiver(protocol: &str, out: &Path) -> Peer {
        Peer::spawn(
            "otlp-receiver",
            &python(),
            &[
                "tests/interop/otlp/receiver.py",
                "--protocol",
                protocol,
                "--out",
                out.to_str().unwrap(),
                "--watch-stdin",
            ],
        )
    }

    pub fn agentcore_agent() -> Peer {
        Peer::spawn(
            "agentcore-agent",
            &python(),
            &["tests/interop/agent/app.py", "--port", "0", "--watch-stdin"],
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `gatehouse serve` binary with a generated config; its stdout (the access log) is kept.
pub struct Gatehouse {
    pub url: String,
    pub admin: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Gatehouse {
    /// `routes` is the YAML of the `routes:` list; `top` adds top-level keys.
    pub fn start(top: &str, routes: &str) -> Gatehouse {
        Self::start_with(top, routes, &[])
    }

    /// As [`Self::start`], with extra environment variables (`RUST_LOG` included) and stderr
    /// kept (see [`Self::raw_stderr`]).
    pub fn start_with(top: &str, routes: &str, env: &[(&str, &str)]) -> Gatehouse {
        let port = free_port();
        let admin_port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gatehouse.yaml");
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin_port} }}\n{top}\nroutes:\n{routes}"
        );
        std::fs::File::create(&config)
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["validate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "config invalid:\n{}\n{yaml}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if env.is_empty() {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = stderr_lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let gatehouse = Gatehouse {
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            child,
            stdout: lines,
            stderr: stderr_lines,
            _dir: dir,
        };
        gatehouse.wait_ready();
        gatehouse
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http().get(format!("{}/readyz", self.admin)).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gatehouse not ready within 30s");
    }

    /// Access-log lines written so far (JSON).
    pub fn access_log(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until at least `n` access-log lines were written.
    pub fn wait_access_log(&self, n: usize) -> Vec<Value> {
        self.access_log_when(|lines| lines.len() >= n)
    }

    /// Waits (10 s at most) until the access log satisfies `done`: a line is written when its
    /// response has ended, which may be just after the client has read the response.
    pub fn access_log_when(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if done(&lines) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn raw_stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// What the process logged, when started with [`Self::start_with`].
    pub fn raw_stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for the exit (drain and telemetry flush); returns its status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        terminate(&mut self.child);
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// A small blocking client over hyper: enough for the interop assertions, no extra crate.
pub fn http() -> Client {
    Client
}

pub struct Client;

pub struct RequestBuilder {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Client {
    pub fn get(&self, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            method: "GET",
            url: url.into(),
            headers: vec![],
            body: vec![],
        }
    }
    pub fn post(&self, url: impl Into<String>) -> RequestBuilder {
        RequestBuilder {
            method: "POST",
            url: url.into(),
            headers: vec![],
            body: vec![],
        }
    }
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.header("content-type", "application/json")
    }
    pub fn form(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self.header("content-type", "application/x-www-form-urlencoded")
    }
    pub fn send(self) -> std::io::Result<Response> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            use http_body_util::BodyExt;
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let mut request = http::Request::builder().method(self.method).uri(&self.url);
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            let request = request
                .body(http_body_util::Full::new(bytes::Bytes::from(self.body)))
                .map_err(std::io::Error::other)?;
            let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client-credentials access token from the oidc-provider.
pub fn client_credentials(idp: &Peer, client: &str, secret: &str, scope: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}"));
    let response = http()
        .post(format!("{}/token", idp.url))
        .header("authorization", &format!("Basic {basic}"))
        .form(&format!("grant_type=client_credentials&scope={scope}"))
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "token request failed: {}",
        response.text()
    );
    response.json()["access_token"].as_str().unwrap().to_owned()
}

/// The decoded JOSE header of a token.
pub fn jose_header(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}
