//! Quotas shared through a real `redis-server` (the Debian package; `.ci/run` installs it):
//! two edge processes enforcing one limit, Redis killed and restarted mid-run, and a Redis
//! that accepts connections but never answers. The server is started by the test on a free
//! loopback port and stopped by its PID.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

/// A `redis-server` of our own, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

fn redis_binary() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed: the shared-quota tests need it (apt-get install -y redis-server; .ci/run does this)"
            )
        })
}

impl RedisServer {
    fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On `port` (again, after a kill: the same address the edges know).
    fn start_on(port: u16) -> Self {
        let child = Command::new(redis_binary())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL, by PID) and waits for it to be gone.
    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_top(url: &str, extra: &str, rules: &str) -> String {
    format!("quotas:\n  store: {{ type: redis, url: \"{url}\"{extra} }}\n  rules:\n{rules}")
}

async fn metric(edge: &Edge, name: &str) -> f64 {
    let text = String::from_utf8_lossy(&edge.admin("/metrics").await.body).into_owned();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn replicas_with_one_redis_share_one_limit() {
    let redis = RedisServer::start();
    // A generous timeout: on a loaded machine a slow answer would fail open and look like a
    // shared limit not enforced; timeouts have their own tests.
    let top = redis_top(
        &redis.url(),
        ", timeout: 2s",
        "    - { name: per-client, key: [client_id], rate: 3/m }\n",
    );
    let a = Edge::start(&top, &support_route()).await;
    // The second replica trusts the first one's issuer and forwards to the same agent.
    let b = Edge::start(&top, &fill(&support_route(), &a.issuer, &a.agent)).await;
    let token = a.valid_token();
    assert_eq!(a.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(b.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(a.invoke("support", Some(&token), "{}").await.status, 200);
    for edge in [&a, &b] {
        let reply = edge.invoke("support", Some(&token), "{}").await;
        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""per-client";q=3;w=60"#)
        );
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
    }
    assert_eq!(
        a.agent.request_count(),
        3,
        "throttled requests reached nothing"
    );
    assert!(metric(&a, "gatehouse_quota_store_duration_seconds_count").await >= 3.0);
    assert_eq!(metric(&a, "gatehouse_quota_store_errors_total").await, 0.0);
}

#[tokio::test]
async fn redis_down_fails_open_and_decisions_resume_when_it_is_back() {
    let redis = RedisServer::start();
    let top = redis_top(
        &redis.url(),
        ", timeout: 1s, onError: allow",
        "    - { name: per-client, key: [client_id], rate: 2/m }\n",
    );
    let edge = Edge::start(&top, &support_route()).await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 429);

    let port = redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let reply = edge.invoke("support", Some(&token), "{}").await;
        assert_eq!(reply.status, 200, "fail open while Redis is down");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "never hangs on Redis"
        );
    }
    assert!(metric(&edge, "gatehouse_quota_store_errors_total").await >= 5.0);

    // Back (empty, on the same port): limits apply again without a restart.
    let _redis = RedisServer::start_on(port);
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let status = edge
            .invoke("support", Some(&token), "{}")
            .await
            .status
            .as_u16();
        statuses.push(status);
        if status == 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test]
async fn redis_down_with_on_error_deny_is_503() {
    let redis = RedisServer::start();
    let top = redis_top(
        &redis.url(),
        ", timeout: 1s, onError: deny",
        "    - { name: per-client, key: [client_id], rate: 100/s }\n",
    );
    let edge = Edge::start(&top, &support_route()).await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    redis.kill();
    let reply = edge.invoke("support", Some(&token), "{}").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_type(), Some("ServiceUnavailableException"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(edge.agent.request_count(), 1);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_at_most_the_timeout() {
    // Accepts connections and reads whatever comes, never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    });
    for (on_error, expected) in [("allow", 200), ("deny", 503)] {
        let top = redis_top(
            &format!("redis://127.0.0.1:{port}/0"),
            &format!(", timeout: 100ms, onError: {on_error}"),
            "    - { name: per-client, key: [client_id], rate: 1/m }\n",
        );
        let edge = Edge::start(&top, &support_route()).await;
        let token = edge.valid_token();
        for _ in 0..3 {
            let started = Instant::now();
            let reply = edge.invoke("support", Some(&token), "{}").await;
            assert_eq!(reply.status, expected, "onError: {on_error}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "a request waited {:?} on a silent Redis",
                started.elapsed()
            );
        }
        assert!(metric(&edge, "gatehouse_quota_store_errors_total").await >= 3.0);
    }
    assert!(
        accepted.load(Ordering::Relaxed) >= 1,
        "the edge did connect"
    );
}

/// Two `gatehouse` processes, one Redis, one 50/s limit: together they admit 50/s (± 10%)
/// over 10 s while both are loaded well past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_admit_the_shared_rate_between_them() {
    let redis = RedisServer::start();
    let issuer = issuer().await;
    let agent = agent().await;
    let top = format!(
        "telemetry: {{ accessLog: \"off\" }}\n{}",
        redis_top(
            &redis.url(),
            ", timeout: 2s, onError: deny",
            "    - { name: shared, key: [client_id], rate: 50/s, burst: 5 }\n",
        )
    );
    let a = start_binary_with(&issuer, &agent, &top, &support_route()).await;
    let b = start_binary_with(&issuer, &agent, &top, &support_route()).await;
    let token = issuer.mint(&{
        let mut o = default_claims();
        o.iss = issuer.issuer();
        o
    });
    let token = token.unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(10);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for addr in [a.addr.clone(), b.addr.clone()] {
        for _ in 0..4 {
            let (addr, token) = (addr.clone(), token.clone());
            let (admitted, throttled, other) = (admitted.clone(), throttled.clone(), other.clone());
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                while started.elapsed() < run_for {
                    let request =
                        Request::post(format!("http://{addr}/runtimes/support/invocations"))
                            .header("authorization", format!("Bearer {token}"))
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap();
                    let Ok(response) = client.request(request).await else {
                        other.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    match status {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => throttled.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let throttled = throttled.load(Ordering::Relaxed);
    let rate = (admitted - 5.0) / elapsed;
    eprintln!(
        "two edges, one Redis: admitted {admitted} in {elapsed:.2}s ({rate:.1}/s), throttled {throttled}, other {}",
        other.load(Ordering::Relaxed)
    );
    assert_eq!(other.load(Ordering::Relaxed), 0);
    assert!(
        throttled as f64 > admitted,
        "the load was well past the limit (admitted {admitted}, throttled {throttled})"
    );
    assert!(
        (45.0..=55.0).contains(&rate),
        "admitted {rate:.1}/s between them; the shared limit is 50/s ± 10%\nedge a:\n{}\nedge b:\n{}",
        a.stderr_tail(10),
        b.stderr_tail(10)
    );
}

/// The GCRA script against a real Redis: a burst, then refusal with the time to wait; and with
/// several buckets, one that refuses leaves the others untouched.
#[tokio::test]
async fn the_script_takes_from_every_bucket_or_none() {
    use gatehouse::quota::redis::{Bucket, RedisStore, Verdict};
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).unwrap();
    let timeout = Duration::from_secs(2);
    // 1 per second, burst 2: emission 1 s, tolerance 2 s.
    let bucket = |key: &str| Bucket {
        key: key.into(),
        emission_us: 1_000_000,
        tolerance_us: 2_000_000,
    };
    // 1 per 10 s, burst 3.
    let wide = Bucket {
        key: "wide".into(),
        emission_us: 10_000_000,
        tolerance_us: 30_000_000,
    };
    assert_eq!(
        store.decide(&[bucket("a")], timeout).await,
        Ok(Verdict::Allow)
    );
    assert_eq!(
        store.decide(&[bucket("a")], timeout).await,
        Ok(Verdict::Allow)
    );
    match store.decide(&[wide.clone(), bucket("a")], timeout).await {
        Ok(Verdict::Deny { index, retry_after }) => {
            assert_eq!(index, 1);
            assert!(
                retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The refused decision took nothing from `wide`: its whole burst of 3 is still there.
    for _ in 0..3 {
        assert_eq!(
            store.decide(std::slice::from_ref(&wide), timeout).await,
            Ok(Verdict::Allow)
        );
    }
    assert!(matches!(
        store.decide(std::slice::from_ref(&wide), timeout).await,
        Ok(Verdict::Deny { index: 0, .. })
    ));
}
