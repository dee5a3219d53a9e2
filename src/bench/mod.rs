//! `gatehouse bench`: a load generator for people who load test the edge and want its token
//! validation latency (SPEC §2).
//!
//! It drives a fixed pool of HTTP/1.1 connections ([`load`]) closed-loop or at a fixed rate
//! (coordinated-omission safe), with a token, a file of tokens used in turn, or tokens it
//! mints from a local key (`--mint --distinct-tokens N` makes N different tokens, so the
//! edge's verified-token cache misses N times). It reports throughput, status counts, client
//! latency percentiles from an HDR histogram, and the edge's own validation latency read from
//! `Server-Timing` (enable `telemetry.serverTiming` on the edge), as text or `--json`.
//!
//! ```text
//! gatehouse bench --url http://127.0.0.1:8080/runtimes/echo/invocations \
//!     --mint --dev --distinct-tokens 1000 --connections 16 --duration 30s
//! ```

pub mod load;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use serde_json::{Value, json};

use self::load::{Outcome, Plan, Stop};
use crate::dev::{MintArgs, mint};

/// `gatehouse bench` options.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("auth").args(["token", "token_file", "mint"])))]
#[command(group(clap::ArgGroup::new("stop").args(["duration", "requests"])))]
pub struct BenchArgs {
    /// Target URL (http or https), e.g. http://127.0.0.1:8080/runtimes/echo/invocations.
    #[arg(long)]
    pub url: String,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Request body; `@FILE` reads a file. Default `{}` (sent as application/json) for
    /// methods with a body.
    #[arg(long)]
    pub body: Option<String>,
    /// Extra header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Bearer token for every request.
    #[arg(long)]
    pub token: Option<String>,
    /// File with one token per line, used in turn (blank lines and `#` comments skipped).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Mint tokens from a local key (`--key`) or a running `gatehouse dev` (`--dev`).
    #[arg(long)]
    pub mint: bool,
    /// How many distinct tokens to mint (each misses the edge's token cache once).
    #[arg(long, default_value_t = 1, requires = "mint")]
    pub distinct_tokens: usize,
    /// `--mint`: the key and claims of the tokens.
    #[command(flatten)]
    pub signer: MintArgs,
    /// Connections (one request in flight on each).
    #[arg(short = 'c', long, default_value_t = 8)]
    pub connections: usize,
    /// How long to run, e.g. 30s (default 10s unless --requests).
    #[arg(short = 'd', long)]
    pub duration: Option<String>,
    /// Stop after this many requests.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Fixed rate in requests per second over all connections; latency is measured from
    /// each request's scheduled time. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Per-request timeout (headers and body).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Local address to connect from (e.g. 127.0.0.2), to look like another client to
    /// per-address limits.
    #[arg(long)]
    pub source_address: Option<std::net::IpAddr>,
}

/// Runs the command: parse, load, print.
pub async fn run(args: &BenchArgs) -> Result<(), String> {
    let plan = plan(args)?;
    let target = format!("{} {}", plan.method, plan.url);
    let tokens = plan.tokens.len();
    let (connections, rate, stop) = (plan.connections, plan.rate, plan.stop);
    let bar = progress_bar(stop);
    let ticker_bar = bar.clone();
    let mut ticker = None;
    let outcome = load::run(plan, |progress| {
        ticker = Some(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = progress.completed();
                let elapsed = started.elapsed();
                match stop {
                    Stop::Requests(_) => ticker_bar.set_position(done),
                    Stop::After(_) => ticker_bar.set_position(elapsed.as_secs()),
                }
                ticker_bar.set_message(format!(
                    "{done} requests, {:.0}/s",
                    done as f64 / elapsed.as_secs_f64().max(0.001)
                ));
            }
        }));
    })
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    bar.finish_and_clear();
    let outcome = outcome?;
    let report = Report {
        target: &target,
        connections,
        rate,
        tokens,
        outcome: &outcome,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn progress_bar(stop: Stop) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (len, template) = match stop {
        Stop::Requests(n) => (n, "{bar:40} {pos}/{len} {msg}"),
        Stop::After(d) => (d.as_secs().max(1), "{bar:40} {pos}s/{len}s {msg}"),
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Parses the options into a [`Plan`], minting tokens when asked.
pub fn plan(args: &BenchArgs) -> Result<Plan, String> {
    let url: Uri = args
        .url
        .parse()
        .map_err(|_| format!("--url {:?} is not a URL", args.url))?;
    match url.scheme_str() {
        Some("http" | "https") if url.host().is_some() => {}
        _ => {
            return Err(format!(
                "--url {:?}: use http://host[:port]/path or https://…",
                args.url
            ));
        }
    }
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| format!("--method {:?} is not an HTTP method", args.method))?;
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("-H {header:?}: write it as 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H {header:?}: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H {header:?}: the value is not a valid header value"))?;
        headers.append(name, value);
    }
    let body = match args.body.as_deref() {
        Some(text) => match text.strip_prefix('@') {
            Some(path) => {
                Bytes::from(std::fs::read(path).map_err(|e| format!("--body @{path}: {e}"))?)
            }
            None => Bytes::from(text.to_owned()),
        },
        None if method == Method::GET || method == Method::HEAD => Bytes::new(),
        None => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Bytes::from_static(b"{}")
        }
    };
    let stop = match (args.requests, args.duration.as_deref()) {
        (Some(0), _) => return Err("--requests must be at least 1".into()),
        (Some(n), _) => Stop::Requests(n),
        (None, Some(d)) => Stop::After(
            crate::config::units::parse_duration(d).map_err(|e| format!("--duration: {e}"))?,
        ),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("--rate must be a positive number (got {rate})"));
    }
    let timeout = crate::config::units::parse_duration(&args.timeout)
        .map_err(|e| format!("--timeout: {e}"))?;
    let tokens = tokens(args)?
        .into_iter()
        .map(|t| {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| "a token contains characters a header cannot carry".to_owned())?;
            value.set_sensitive(true);
            Ok(value)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Plan {
        url,
        method,
        headers,
        body,
        tokens,
        connections: args.connections,
        stop,
        rate: args.rate,
        timeout,
        source: args.source_address,
    })
}

fn tokens(args: &BenchArgs) -> Result<Vec<String>, String> {
    if !args.mint && args.signer.any() {
        return Err("--dev, --key and the claim options are for --mint".into());
    }
    if let Some(token) = &args.token {
        return Ok(vec![token.clone()]);
    }
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err(format!("--token-file {}: no tokens in it", path.display()));
        }
        return Ok(tokens);
    }
    if !args.mint {
        return Ok(Vec::new());
    }
    if args.distinct_tokens == 0 {
        return Err("--distinct-tokens must be at least 1".into());
    }
    let (key, mut options) = args.signer.signer()?;
    // A random jti per token keeps them distinct.
    options.jti = true;
    (0..args.distinct_tokens)
        .map(|_| mint(&key, &options).map_err(|e| e.to_string()))
        .collect()
}

/// A finished run, ready to print.
#[derive(Debug)]
pub struct Report<'a> {
    pub target: &'a str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub tokens: usize,
    pub outcome: &'a Outcome,
}

/// p50/p90/p99/p99.9/max of a µs histogram, in milliseconds.
fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64) / 1000.0;
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "mean": h.mean().round() / 1000.0,
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

impl Report<'_> {
    fn throughput(&self) -> f64 {
        let secs = self.outcome.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.outcome.responses() as f64 / secs
        } else {
            0.0
        }
    }

    /// The machine-readable form (`--json`); durations in milliseconds.
    pub fn json(&self) -> Value {
        let o = self.outcome;
        let status: serde_json::Map<String, Value> = o
            .status
            .iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        let mut auth = percentiles(&o.server_auth);
        if let Some(map) = auth.as_object_mut() {
            map.insert("hits".into(), json!(o.server_auth_hits));
            map.insert("misses".into(), json!(o.server_auth_misses));
        }
        json!({
            "target": self.target,
            "mode": if self.rate.is_some() { "rate" } else { "closed" },
            "connections": self.connections,
            "rate": self.rate,
            "tokens": self.tokens,
            "duration_s": o.elapsed.as_secs_f64(),
            "requests": o.responses() + o.errors.total(),
            "responses": o.responses(),
            "throughput_rps": self.throughput(),
            "status": status,
            "errors": o.errors,
            "bytes_received": o.bytes_received,
            "latency_ms": percentiles(&o.latency),
            "server_auth_ms": auth,
            "server_upstream_ms": percentiles(&o.server_upstream),
        })
    }

    /// The human-readable form.
    pub fn text(&self) -> String {
        let o = self.outcome;
        let mode = match self.rate {
            Some(rate) => format!("fixed rate {rate}/s (latency from the scheduled send time)"),
            None => "closed loop".to_owned(),
        };
        let mut out = format!(
            "gatehouse bench: {}\n  {} connection(s), {mode}, {} token(s)\n\n",
            self.target, self.connections, self.tokens
        );
        out.push_str(&format!(
            "requests     {} in {:.2}s = {:.1}/s\n",
            o.responses() + o.errors.total(),
            o.elapsed.as_secs_f64(),
            self.throughput()
        ));
        let mut status: Vec<String> = o.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        if o.errors.total() > 0 {
            status.push(format!(
                "errors: {} (connect {}, timeout {}, io {})",
                o.errors.total(),
                o.errors.connect,
                o.errors.timeout,
                o.errors.io
            ));
        }
        out.push_str(&format!("status       {}\n\n", status.join("  ")));
        out.push_str("                           p50       p90       p99     p99.9       max\n");
        out.push_str(&row("client latency (ms)", &o.latency));
        if o.server_auth.is_empty() {
            out.push_str(
                "\nno Server-Timing from the edge: set telemetry.serverTiming: true to see its validation latency\n",
            );
        } else {
            out.push_str(&row("edge validation (ms)", &o.server_auth));
            out.push_str(&row("edge upstream (ms)", &o.server_upstream));
            out.push_str(&format!(
                "\nedge token cache: {} hit(s), {} miss(es)\n",
                o.server_auth_hits, o.server_auth_misses
            ));
        }
        out
    }
}

fn row(label: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("{label:<22}         -\n");
    }
    let ms = |us: u64| (us as f64) / 1000.0;
    format!(
        "{label:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}\n",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    )
}
