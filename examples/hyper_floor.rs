//! The floor under gatehouse's request path: a bare reverse proxy on the same parts (hyper's
//! HTTP/1.1 server and client connections, tokio's current-thread runtime, mimalloc) with none
//! of the edge (no phases, no record, no header rebuild). What `bench/callgrind.sh` measures for
//! this binary is what hyper and tokio cost per proxied request before gatehouse does anything.
//!
//!     cargo build --release --example hyper_floor
//!     bench/callgrind.sh target/release/examples/hyper_floor target/release/gatehouse
//!
//! It takes the arguments `bench/callgrind.sh` gives gatehouse and reads from its config only
//! `listen:` and the first `url:` (the plain route's upstream). Loopback benches only: it has
//! no limits, no timeouts and no error handling beyond answering 502.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, hyper::Error>;

struct Pool {
    upstream: SocketAddr,
    idle: Mutex<Vec<SendRequest<Incoming>>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = std::env::args()
        .skip_while(|a| a != "--config")
        .nth(1)
        .ok_or("usage: hyper_floor serve --config FILE")?;
    let text = std::fs::read_to_string(config)?;
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.split_once(key).map(|(_, rest)| rest.trim().to_owned()))
    };
    let listen: SocketAddr = value("listen:").ok_or("no listen:")?.parse()?;
    let url = value("url:").ok_or("no url:")?;
    let upstream: SocketAddr = url
        .trim_matches(['{', '}', '"', '\'', ' '])
        .trim_start_matches("http://")
        .parse()?;
    let pool = Arc::new(Pool {
        upstream,
        idle: Mutex::new(Vec::new()),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, pool))
}

async fn serve(listen: SocketAddr, pool: Arc<Pool>) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| proxy(pool.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn proxy(pool: Arc<Pool>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match exchange(&pool, request).await {
        Ok(response) => Ok(response),
        Err(_) => Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap_or_default()),
    }
}

async fn exchange(
    pool: &Pool,
    request: Request<Incoming>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let taken = pool.idle.lock().map_err(|_| "poisoned")?.pop();
    let mut sender = match taken {
        Some(sender) => sender,
        None => {
            let io = TokioIo::new(TcpStream::connect(pool.upstream).await?);
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            sender
        }
    };
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    pool.idle.lock().map_err(|_| "poisoned")?.push(sender);
    Ok(response.map(BodyExt::boxed))
}
