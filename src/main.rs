//! The `gatehouse` command: `serve`, `validate`, `dev`, `token`, `bench` (SPEC §2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gatehouse::app::App;
use gatehouse::config;
use gatehouse::server::{self, Listeners};
use gatehouse::telemetry::{self, LogFormat};

/// mimalloc: the request path allocates small, short-lived objects; measured against glibc
/// malloc in docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "An authenticating edge for AI agents and MCP servers."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Process log format on stderr (the access log on stdout is always JSON).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormatArg,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the edge.
    Serve {
        /// Configuration file (YAML or JSON).
        #[arg(long, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// Request threads (default: one per CPU), each serving the connections it accepts on
        /// its own runtime. 1 runs everything on one thread.
        #[arg(long, env = "GATEHOUSE_THREADS")]
        threads: Option<usize>,
    },
    /// Check a configuration file without serving.
    Validate {
        /// Configuration file (YAML or JSON).
        #[arg(long, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// Also fetch every discovery document and JWKS and report what was found.
        #[arg(long)]
        online: bool,
    },
    /// Run a development issuer, an echo agent and the edge in one process, and print curl
    /// commands that show a 200, a 401 and a 403.
    Dev {
        /// The edge's port on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The admin listener's port on 127.0.0.1.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Print the generated configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Mint a signed JWT from a local key (PEM or JWK), or from a running `gatehouse dev`.
    Token(Box<TokenArgs>),
    /// Load the edge: closed loop or fixed rate; client latency and the edge's validation
    /// latency (from Server-Timing).
    Bench(Box<gatehouse::bench::BenchArgs>),
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    #[command(flatten)]
    mint: gatehouse::dev::MintArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let result = match cli.command {
        Command::Serve { config, threads } => serve_threads(threads).and_then(|workers| {
            // One request thread: everything on one single-threaded runtime. More: each
            // request thread runs its own (server.rs), and this one keeps the rest
            // (signals, reloads, key refreshes, the admin listener).
            runtime(Some(1)).and_then(|rt| rt.block_on(serve(&config, workers)))
        }),
        Command::Validate { config, online } => validate(&config, online),
        Command::Dev {
            port,
            admin_port,
            print_config,
        } => runtime(None).and_then(|rt| {
            rt.block_on(gatehouse::dev::run::run(gatehouse::dev::DevOptions {
                listen: ([127, 0, 0, 1], port).into(),
                admin: ([127, 0, 0, 1], admin_port).into(),
                print_config,
            }))
            .map(|()| ExitCode::SUCCESS)
        }),
        Command::Token(args) => token(&args),
        Command::Bench(args) => runtime(None).and_then(|rt| {
            rt.block_on(gatehouse::bench::run(&args))
                .map(|()| ExitCode::SUCCESS)
        }),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("gatehouse: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Loads a configuration, printing every problem as `FILE:LINE:COL: message`.
fn load(path: &Path) -> Result<config::Loaded, String> {
    match config::load_path(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(loaded)
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            Err(format!(
                "{} has {} error(s); fix them and run `gatehouse validate --config {}`",
                path.display(),
                diagnostics.len(),
                path.display()
            ))
        }
    }
}

/// `--threads`: request threads, by default one per CPU.
fn serve_threads(threads: Option<usize>) -> Result<usize, String> {
    match threads {
        Some(0) => Err("--threads must be at least 1".into()),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
    }
}

async fn serve(path: &Path, workers: usize) -> Result<ExitCode, String> {
    let loaded = load(path)?;
    let (app, mut startup) = App::new(&loaded.config, &loaded.base_dir, None)?;
    startup.workers = workers;
    let listeners = Listeners::bind(&startup).await?;
    tracing::info!(
        listen = ?listeners.public_addrs(),
        admin = ?listeners.admin_addr(),
        routes = app.settings().routes.routes.len(),
        "gatehouse is listening"
    );
    for issuer in app.wait_for_keys(Duration::from_secs(5)).await {
        tracing::warn!(issuer = %issuer.label, "no keys yet; requests for its routes get 503 until they load");
    }
    tokio::spawn(reload_on_signal(
        app.clone(),
        path.to_owned(),
        startup.watch_config,
    ));
    if let Some(spans) = &app.spans {
        telemetry::spans::report_background_fetches(spans.clone(), app.settings().tracing.sampler);
    }
    let result = server::serve(app.clone(), startup, listeners, server::shutdown_signal()).await;
    // Drained (or failed): what the export queue still holds goes out, within a bound.
    app.flush_telemetry(Duration::from_secs(5)).await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP (and, with `watchConfig`, a changed file) reloads the configuration.
async fn reload_on_signal(app: Arc<App>, path: PathBuf, watch: bool) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    loop {
        let hup = async {
            #[cfg(unix)]
            if let Some(signal) = hangup.as_mut() {
                signal.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        let changed = async {
            if !watch {
                return std::future::pending::<()>().await;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = modified(&path);
                if now != last {
                    last = now;
                    return;
                }
            }
        };
        tokio::select! {
            () = hup => {}
            () = changed => {}
        }
        match app.reload(&path).await {
            Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
            Err(error) => {
                tracing::error!(config = %path.display(), %error, "reload rejected; the running configuration stays")
            }
        }
    }
}

fn validate(path: &Path, online: bool) -> Result<ExitCode, String> {
    let loaded = load(path)?;
    for line in config::summary(&loaded.config) {
        println!("{line}");
    }
    if !online {
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime(Some(1))?;
    let ok = rt.block_on(check_online(&loaded.config));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `validate --online`: fetch each discovery document and JWKS once and report.
async fn check_online(file: &config::file::FileConfig) -> bool {
    let fetcher = gatehouse::auth::jwks::Fetcher::new();
    let mut urls: Vec<&str> = file
        .routes
        .iter()
        .filter_map(|r| r.authorizer_configuration.as_ref())
        .map(|a| a.custom_jwt_authorizer.discovery_url.as_str())
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let mut ok = true;
    for url in urls {
        match gatehouse::auth::jwks::probe(&fetcher, url, Duration::from_secs(10)).await {
            Ok(report) => println!("{url}: {report}"),
            Err(error) => {
                ok = false;
                println!("{url}: FAILED: {error}");
            }
        }
    }
    ok
}

fn token(args: &TokenArgs) -> Result<ExitCode, String> {
    let (key, options) = args.mint.signer()?;
    println!(
        "{}",
        gatehouse::dev::mint(&key, &options).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}
