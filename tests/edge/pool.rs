//! The upstream keep-alive pool: a connection is reused once its response has been read to
//! the end, never while it is busy, never after the upstream closed it, never after the idle
//! bound; a response the client abandons closes its connection instead of poisoning the pool.
//! The upstream here is a bare socket server that counts the connections it accepts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// How the counting upstream answers each request on a connection.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// `200` with a small body, connection kept.
    KeepAlive,
    /// `200` with `Connection: close`, then closes.
    Close,
    /// `200`, then closes the connection without saying so (an idle timeout at its end).
    SilentClose,
    /// Headers promising 100,000 bytes, then 10 of them, then silence.
    Stall,
}

struct Upstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, answer));
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and `Content-Length` body); `false` at end of stream.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + 4 + length);
            return true;
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve(mut socket: TcpStream, answer: Answer) {
    let mut buf = Vec::new();
    while read_request(&mut socket, &mut buf).await {
        let reply: &[u8] = match answer {
            Answer::KeepAlive | Answer::SilentClose => {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
            }
            Answer::Close => {
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
            }
            Answer::Stall => b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789",
        };
        if socket.write_all(reply).await.is_err() {
            return;
        }
        match answer {
            Answer::KeepAlive => {}
            Answer::Close | Answer::SilentClose => return,
            Answer::Stall => {
                // Hold the connection until the edge closes it.
                let mut rest = [0u8; 64];
                while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

async fn edge_to(upstream: &Upstream) -> Edge {
    let route = support_route().replace("{agent}", &upstream.url);
    Edge::start("", &route).await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let upstream = Upstream::start(Answer::KeepAlive).await;
    let edge = edge_to(&upstream).await;
    let token = edge.valid_token();
    for _ in 0..20 {
        let reply = edge.invoke("support", Some(&token), "{}").await;
        assert_eq!(reply.status, 200);
        assert_eq!(&reply.body[..], b"{\"ok\":true}");
    }
    assert_eq!(upstream.accepted(), 1);
}

#[tokio::test]
async fn concurrent_requests_use_at_most_one_connection_each_and_come_back_to_them() {
    let upstream = Upstream::start(Answer::KeepAlive).await;
    let edge = Arc::new(edge_to(&upstream).await);
    let token = edge.valid_token();
    for _ in 0..3 {
        let mut wave = Vec::new();
        for _ in 0..8 {
            let (edge, token) = (edge.clone(), token.clone());
            wave.push(tokio::spawn(async move {
                edge.invoke("support", Some(&token), "{}").await.status
            }));
        }
        for request in wave {
            assert_eq!(request.await.unwrap(), 200);
        }
    }
    let accepted = upstream.accepted();
    assert!((1..=8).contains(&accepted), "{accepted} connections");
}

#[tokio::test]
async fn an_upstream_that_closes_after_each_response_gets_a_new_connection_each_time() {
    for answer in [Answer::Close, Answer::SilentClose] {
        let upstream = Upstream::start(answer).await;
        let edge = edge_to(&upstream).await;
        let token = edge.valid_token();
        for _ in 0..5 {
            let reply = edge.invoke("support", Some(&token), "{}").await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            // Let the close arrive, as an idle timeout would between two requests.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(upstream.accepted(), 5);
    }
}

#[tokio::test]
async fn a_response_the_client_abandons_closes_its_connection_and_the_pool_stays_healthy() {
    let stalled = Upstream::start(Answer::Stall).await;
    let healthy = Upstream::start(Answer::KeepAlive).await;
    let routes = format!(
        "{}{}",
        support_route().replace("{agent}", &stalled.url),
        support_route()
            .replace("{agent}", &healthy.url)
            .replace("name: support", "name: healthy")
    );
    let edge = Edge::start("", &routes).await;
    let token = edge.valid_token();
    // The client reads the head and a few bytes, then goes away.
    for _ in 0..3 {
        let head = edge
            .raw(
                format!(
                    "POST /runtimes/support/invocations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                )
                .as_bytes(),
                Duration::from_millis(300),
            )
            .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // Every abandoned exchange held its own connection: none was reused while busy.
    assert_eq!(stalled.accepted(), 3);
    let reply = edge.invoke("healthy", Some(&token), "{}").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_connection_idle_beyond_the_bound_is_not_reused() {
    let upstream = Upstream::start(Answer::KeepAlive).await;
    let edge = edge_to(&upstream).await;
    let token = edge.valid_token();
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(upstream.accepted(), 1);
    // The pool's idle bound is 4 s (below the 5 s at which uvicorn and Node close).
    tokio::time::sleep(Duration::from_millis(4300)).await;
    assert_eq!(edge.invoke("support", Some(&token), "{}").await.status, 200);
    assert_eq!(upstream.accepted(), 2);
}
