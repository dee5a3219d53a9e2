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
        /// Worker threads (default: one per CPU). 1 runs everything on one thread.
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
    /// Use the key, issuer, client and scope of the running `gatehouse dev`.
    #[arg(long, conflicts_with = "key")]
    dev: bool,
    /// Private key file: PEM (PKCS#8, PKCS#1 RSA, SEC1 EC) or a private JWK.
    #[arg(long, required_unless_present = "dev")]
    key: Option<PathBuf>,
    /// Signing algorithm (default: from the key type; RS256 for RSA).
    #[arg(long)]
    alg: Option<String>,
    /// `kid` header (default: the JWK's kid, or the key's RFC 7638 thumbprint).
    #[arg(long)]
    kid: Option<String>,
    /// `iss` claim (must equal the issuer in the discovery document).
    #[arg(long)]
    iss: Option<String>,
    /// `sub` claim.
    #[arg(long)]
    sub: Option<String>,
    /// `aud` claim (repeat for several).
    #[arg(long)]
    aud: Vec<String>,
    /// `client_id` claim.
    #[arg(long)]
    client_id: Option<String>,
    /// `scope` claim (space-separated).
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime, e.g. 15m or 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Extra claim `name=value`; the value is parsed as JSON when it is JSON (repeatable).
    #[arg(long = "claim")]
    claims: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let result = match cli.command {
        Command::Serve { config, threads } => {
            runtime(threads).and_then(|rt| rt.block_on(serve(&config)))
        }
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

async fn serve(path: &Path) -> Result<ExitCode, String> {
    let loaded = load(path)?;
    let (app, startup) = App::new(&loaded.config, &loaded.base_dir, None)?;
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
    use gatehouse::dev::{Alg, DevState, MintOptions, SigningKey, mint, parse_claim_arg};
    let alg: Option<Alg> = args
        .alg
        .as_deref()
        .map(|a| a.parse().map_err(|_| format!("unknown --alg {a:?}: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")))
        .transpose()?;
    let (key, mut options) = if args.dev {
        let state = DevState::read().map_err(|e| e.to_string())?;
        (
            state.signing_key().map_err(|e| e.to_string())?,
            state.mint_options(),
        )
    } else {
        let path = args.key.as_ref().ok_or("give --key FILE or --dev")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = if text.trim_start().starts_with('{') {
            let jwk: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a JWK: {e}", path.display()))?;
            SigningKey::from_jwk(&jwk)
        } else {
            SigningKey::from_pem(&text, alg, args.kid.clone())
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        (key, MintOptions::default())
    };
    let key = match alg {
        Some(alg) if alg != key.alg() => key.with_alg(alg).map_err(|e| e.to_string())?,
        _ => key,
    };
    let key = match &args.kid {
        Some(kid) => key.with_kid(kid.clone()),
        None => key,
    };
    if let Some(iss) = &args.iss {
        options.iss = iss.clone();
    }
    if args.sub.is_some() {
        options.sub = args.sub.clone();
    }
    if !args.aud.is_empty() {
        options.aud = args.aud.clone();
    }
    if args.client_id.is_some() {
        options.client_id = args.client_id.clone();
    }
    if args.scope.is_some() {
        options.scope = args.scope.clone();
    }
    options.ttl =
        gatehouse::config::units::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?;
    for claim in &args.claims {
        options
            .claims
            .push(parse_claim_arg(claim).map_err(|e| format!("--claim {claim:?}: {e}"))?);
    }
    if options.iss.is_empty() {
        return Err("give --iss (the issuer in the discovery document), or use --dev".into());
    }
    println!("{}", mint(&key, &options).map_err(|e| e.to_string())?);
    Ok(ExitCode::SUCCESS)
}
