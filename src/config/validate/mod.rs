//! Every rule of SPEC §3, checked on a deserialized [`FileConfig`]; all problems are collected,
//! never just the first.
//!
//! Each problem names the path of the offending value (`routes[0].upstream.url`) and says what
//! to do about it; the location index turns the path into a line and column. Rules that
//! AgentCore also enforces follow its model (research/agentcore.md §1 and §3.4), so a block
//! pasted from AgentCore passes here, except where gatehouse is deliberately stricter (HMAC and
//! `none` algorithms, workload identities) or has nothing to act on (`privateEndpoint`: a
//! warning).
//!
//! Split by scope: this file has the edge-wide keys, `route` one route and the rules across
//! routes, `authorizer` the pasted `customJwtAuthorizer`, [`headers`] header-name rules and
//! `syntax` the small parsers (listen addresses, URLs, origins, ARNs).

use std::collections::HashSet;
use std::fmt::Display;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::file::{CorsFile, FileConfig, JwtFile, LimitsFile, TelemetryFile, TlsFile};
use super::locate::{Index, Kind, Pos, YPath};
use super::units::DurationStr;

mod authorizer;
pub mod headers;
mod mcp;
mod outbound;
mod quotas;
mod route;
mod syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_authorizer;
#[cfg(test)]
mod tests_mcp;
#[cfg(test)]
mod tests_outbound;
#[cfg(test)]
mod tests_quotas;
#[cfg(test)]
mod tests_route;

use syntax::{Listen, parse_http_url, parse_listen, show_duration};

/// Located messages, ready to become diagnostics.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) errors: Vec<(Pos, String)>,
    pub(super) warnings: Vec<(Pos, String)>,
    /// Errors beyond [`MAX_ERRORS`], not reported.
    pub(super) omitted: usize,
    /// Errors located in another file the configuration names (Cedar policies).
    pub(super) in_other_files: Vec<PolicyFileProblem>,
}

/// A problem located in a file other than the configuration (a Cedar policy file).
#[derive(Debug, Clone)]
pub(super) struct PolicyFileProblem {
    pub(super) file: String,
    pub(super) line: u32,
    pub(super) column: u32,
    pub(super) message: String,
}

/// What the rules need besides the config: where things are, and where relative paths start.
struct Ctx<'a> {
    index: &'a Index,
    base_dir: &'a Path,
    report: Report,
}

/// Errors reported at most; the rest are counted. Fixing the first few hundred comes first,
/// and a hostile file should not make locating them expensive.
pub(crate) const MAX_ERRORS: usize = 500;

impl Ctx<'_> {
    /// A problem with the value at `path`.
    fn error(&mut self, path: &YPath, message: impl Display) {
        if self.full() {
            return;
        }
        let pos = self.index.value_pos(path);
        self.report.errors.push((pos, format!("{path}: {message}")));
    }

    /// A problem with the key itself (it should not be there).
    fn error_at_key(&mut self, path: &YPath, message: impl Display) {
        if self.full() {
            return;
        }
        let pos = self.index.key_pos(path);
        self.report.errors.push((pos, format!("{path}: {message}")));
    }

    /// A problem located in another file (its own line and column).
    fn policy_file_error(&mut self, problem: PolicyFileProblem) {
        if self.full() {
            return;
        }
        self.report.in_other_files.push(problem);
    }

    /// Whether the report is full; counts what it leaves out.
    fn full(&mut self) -> bool {
        let full = self.report.errors.len() + self.report.in_other_files.len() >= MAX_ERRORS;
        if full {
            self.report.omitted += 1;
        }
        full
    }

    fn warn(&mut self, path: &YPath, message: impl Display) {
        if self.report.warnings.len() >= MAX_ERRORS {
            return;
        }
        let pos = self.index.key_pos(path);
        self.report
            .warnings
            .push((pos, format!("{path}: {message}")));
    }

    /// The path of item `i` of a `OneOrMany` key: `listen[1]` for a list, `listen` for a scalar.
    fn item_path(&self, path: &YPath, i: usize) -> YPath {
        match self.index.get(path).map(|n| &n.kind) {
            Some(Kind::Seq(_)) => path.index(i),
            _ => path.clone(),
        }
    }

    /// Whether the file wrote `path` (keys with an empty default cannot tell otherwise).
    fn written(&self, path: &YPath) -> bool {
        self.index.has(path)
    }
}

/// Checks every rule; the caller turns the report into diagnostics.
pub(super) fn validate(config: &FileConfig, index: &Index, base_dir: &Path) -> Report {
    let mut ctx = Ctx {
        index,
        base_dir,
        report: Report::default(),
    };
    let root = YPath::root();
    let public = check_listen(&mut ctx, config);
    if let Some(admin) = &config.admin {
        check_admin_listen(
            &mut ctx,
            &root.key("admin").key("listen"),
            &admin.listen,
            &public,
        );
    }
    if let Some(url) = &config.public_url {
        check_public_url(&mut ctx, &root.key("publicUrl"), url);
    }
    if let Some(tls) = &config.tls {
        check_tls(&mut ctx, &root.key("tls"), tls);
    }
    // shutdownGracePeriod: any duration, 0 meaning "exit without draining".
    if let Some(limits) = &config.limits {
        check_limits(&mut ctx, &root.key("limits"), limits);
    }
    if let Some(jwt) = &config.jwt {
        check_jwt(&mut ctx, &root.key("jwt"), jwt, true);
    }
    if let Some(telemetry) = &config.telemetry {
        check_telemetry(&mut ctx, &root.key("telemetry"), telemetry);
    }
    if let Some(cors) = &config.cors {
        check_cors(&mut ctx, &root.key("cors"), cors);
    }
    route::check_routes(&mut ctx, config);
    quotas::check(&mut ctx, config);
    ctx.report
}

const MAX_LISTENERS: usize = 64;

/// Every public listener that parsed, with its text; duplicates are reported here.
fn check_listen(ctx: &mut Ctx<'_>, config: &FileConfig) -> Vec<(Listen, String)> {
    let path = YPath::root().key("listen");
    let mut seen: Vec<(Listen, String)> = Vec::new();
    if config.listen.0.is_empty() {
        ctx.error(
            &path,
            "at least one listener is required: add listen: 0.0.0.0:8080 (or a list of addresses)",
        );
        return seen;
    }
    // Overlaps are checked pairwise; a real edge has a handful of listeners.
    if config.listen.0.len() > MAX_LISTENERS {
        ctx.error(
            &path,
            format!(
                "has {} listeners; at most {MAX_LISTENERS} are supported: listen on 0.0.0.0 or [::] instead of each address",
                config.listen.0.len()
            ),
        );
        return seen;
    }
    for (i, text) in config.listen.0.iter().enumerate() {
        let item = ctx.item_path(&path, i);
        match parse_listen(text) {
            Err(e) => ctx.error(&item, e),
            Ok(addr) => match seen.iter().find(|(other, _)| other.overlaps(&addr)) {
                Some((_, other)) => {
                    let message = format!("{text} overlaps the listener {other} above: remove one");
                    ctx.error(&item, message);
                }
                None => seen.push((addr, text.clone())),
            },
        }
    }
    seen
}

fn check_admin_listen(ctx: &mut Ctx<'_>, path: &YPath, text: &str, public: &[(Listen, String)]) {
    match parse_listen(text) {
        Err(e) => ctx.error(path, e),
        Ok(addr) => {
            if let Some((_, other)) = public.iter().find(|(p, _)| p.overlaps(&addr)) {
                let message = format!(
                    "{text} overlaps the public listener {other}: /metrics and the health checks must never be served on the public listener; use another port"
                );
                ctx.error(path, message);
            }
        }
    }
}

fn check_public_url(ctx: &mut Ctx<'_>, path: &YPath, text: &str) {
    match parse_http_url(text) {
        Err(e) => ctx.error(path, e),
        Ok(_) if text.ends_with('/') => ctx.error(
            path,
            format!(
                "must not end with \"/\" (got {text:?}): write {:?}; route paths are appended to it",
                text.trim_end_matches('/')
            ),
        ),
        Ok(_) => {}
    }
}

/// TLS files are read now, so a typo fails `validate` instead of the first handshake.
fn check_tls(ctx: &mut Ctx<'_>, path: &YPath, tls: &TlsFile) {
    let cert_path = path.key("certFile");
    if let Some(bytes) = read_small_file(ctx, &cert_path, &tls.cert_file) {
        let certs: Result<Vec<CertificateDer<'_>>, pem::Error> =
            CertificateDer::pem_slice_iter(&bytes).collect();
        match certs {
            Ok(certs) if !certs.is_empty() => {}
            Ok(_) => ctx.error(
                &cert_path,
                format!(
                    "{:?} has no PEM certificate (-----BEGIN CERTIFICATE-----): give the certificate chain, leaf first",
                    tls.cert_file
                ),
            ),
            Err(e) => ctx.error(
                &cert_path,
                format!("{:?} is not valid PEM ({e}): give the certificate chain in PEM", tls.cert_file),
            ),
        }
    }
    let key_path = path.key("keyFile");
    if let Some(bytes) = read_small_file(ctx, &key_path, &tls.key_file) {
        match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(_) => {}
            Err(pem::Error::NoItemsFound) => ctx.error(
                &key_path,
                format!(
                    "{:?} has no unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): give the certificate's key without a passphrase",
                    tls.key_file
                ),
            ),
            Err(e) => ctx.error(
                &key_path,
                format!("{:?} is not valid PEM ({e}): give the private key in PEM", tls.key_file),
            ),
        }
    }
}

/// TLS files beyond this are refused: a certificate chain is a few KiB.
const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file named in the config, relative to the config's directory.
fn read_small_file(ctx: &mut Ctx<'_>, path: &YPath, name: &str) -> Option<Vec<u8>> {
    let full = ctx.base_dir.join(name);
    let read = std::fs::File::open(&full).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_TLS_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) if bytes.len() as u64 > MAX_TLS_FILE_BYTES => {
            ctx.error(
                path,
                format!("{name:?} is larger than 1 MiB: is it the right file?"),
            );
            None
        }
        Ok(bytes) => Some(bytes),
        Err(e) => {
            ctx.error(
                path,
                format!(
                    "cannot read {} ({e}): relative paths are relative to the configuration file's directory",
                    full.display()
                ),
            );
            None
        }
    }
}

fn check_limits(ctx: &mut Ctx<'_>, path: &YPath, limits: &LimitsFile) {
    const MIN_HEADER: u64 = 1024;
    const MAX_HEADER: u64 = 1024 * 1024;
    if let Some(size) = limits.max_request_header_bytes
        && !(MIN_HEADER..=MAX_HEADER).contains(&size.0)
    {
        ctx.error(
            &path.key("maxRequestHeaderBytes"),
            format!(
                "must be between 1KiB and 1MiB (got {} bytes); the default is 64KiB",
                size.0
            ),
        );
    }
    if let Some(size) = limits.max_request_body_bytes
        && size.0 == 0
    {
        ctx.error(
            &path.key("maxRequestBodyBytes"),
            "must be greater than 0 (e.g. 100MB, AgentCore's payload limit)",
        );
    }
    positive(
        ctx,
        &path.key("requestTimeout"),
        limits.request_timeout,
        "15m",
    );
    positive(
        ctx,
        &path.key("headerReadTimeout"),
        limits.header_read_timeout,
        "10s",
    );
    // streamIdleTimeout: 0 means no idle limit.
    if let Some(rate) = &limits.auth_failures_per_ip {
        quotas::check_auth_failures(ctx, &path.key("authFailuresPerIp"), rate);
    }
    if limits.max_connections == Some(0) {
        ctx.error(
            &path.key("maxConnections"),
            "must be greater than 0 (the default is 10000)",
        );
    }
}

/// A duration that must be more than zero when given.
fn positive(ctx: &mut Ctx<'_>, path: &YPath, value: Option<DurationStr>, example: &str) {
    if value.is_some_and(|d| d.0.is_zero()) {
        ctx.error(path, format!("must be greater than 0 (e.g. \"{example}\")"));
    }
}

/// The algorithms gatehouse verifies: asymmetric only.
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The longest clock skew accepted: beyond it an expired token stays valid too long.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The `jwt` block, top level or per route (`verifiedTokenCache` only at the top).
fn check_jwt(ctx: &mut Ctx<'_>, path: &YPath, jwt: &JwtFile, top_level: bool) {
    if let Some(skew) = jwt.clock_skew
        && skew.0 > MAX_CLOCK_SKEW
    {
        ctx.error(
            &path.key("clockSkew"),
            format!(
                "must be at most 5m (got {}): a longer skew keeps expired tokens valid; fix the clocks instead (NTP)",
                show_duration(skew.0)
            ),
        );
    }
    positive(
        ctx,
        &path.key("jwksRefreshInterval"),
        jwt.jwks_refresh_interval,
        "5m",
    );
    positive(
        ctx,
        &path.key("jwksMinRefetchInterval"),
        jwt.jwks_min_refetch_interval,
        "10s",
    );
    positive(
        ctx,
        &path.key("maxKeyStaleness"),
        jwt.max_key_staleness,
        "24h",
    );
    positive(
        ctx,
        &path.key("jwksFetchTimeout"),
        jwt.jwks_fetch_timeout,
        "5s",
    );
    if let Some(algorithms) = &jwt.algorithms {
        check_algorithms(ctx, &path.key("algorithms"), algorithms);
    }
    if !top_level && jwt.verified_token_cache.is_some() {
        ctx.error_at_key(
            &path.key("verifiedTokenCache"),
            "the verified-token cache is shared by all routes: move verifiedTokenCache to the top-level jwt block",
        );
    }
}

fn check_algorithms(ctx: &mut Ctx<'_>, path: &YPath, algorithms: &[String]) {
    if algorithms.is_empty() {
        ctx.error(
            path,
            format!(
                "must list at least one algorithm ({}), or be removed to accept all of them",
                ALGORITHMS.join(", ")
            ),
        );
        return;
    }
    let mut seen = HashSet::new();
    for (i, alg) in algorithms.iter().enumerate() {
        let item = path.index(i);
        let upper = alg.to_ascii_uppercase();
        if upper == "NONE" || upper.starts_with("HS") {
            ctx.error(
                &item,
                format!("{alg} is never accepted: HMAC and none are rejected by design; remove it"),
            );
        } else if !ALGORITHMS.contains(&alg.as_str()) {
            let message = match ALGORITHMS.iter().find(|a| a.eq_ignore_ascii_case(alg)) {
                Some(exact) => format!("unknown algorithm {alg:?}: did you mean {exact}?"),
                None => format!(
                    "unknown algorithm {alg:?}: use some of {}",
                    ALGORITHMS.join(", ")
                ),
            };
            ctx.error(&item, message);
        } else if !seen.insert(alg) {
            ctx.error(&item, format!("{alg} is listed twice: remove one"));
        }
    }
}

fn check_telemetry(ctx: &mut Ctx<'_>, path: &YPath, telemetry: &TelemetryFile) {
    if telemetry
        .service_name
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        ctx.error(
            &path.key("serviceName"),
            "must not be empty: it names this edge in traces (default \"gatehouse\")",
        );
    }
    if let Some(rate) = telemetry.sampling
        && !(0.0..=1.0).contains(&rate)
    {
        ctx.error(
            &path.key("sampling"),
            format!("must be between 0 and 1 (got {rate}): 1 traces every request, 0.1 one in ten"),
        );
    }
    if let Some(log) = &telemetry.access_log
        && log != "stdout"
        && log != "off"
    {
        ctx.error(
            &path.key("accessLog"),
            format!("must be \"stdout\" or \"off\" (got {log:?})"),
        );
    }
    let Some(otlp) = &telemetry.otlp else { return };
    let otlp_path = path.key("otlp");
    if let Err(e) = parse_http_url(&otlp.endpoint) {
        ctx.error(
            &otlp_path.key("endpoint"),
            format!("{e} (e.g. http://127.0.0.1:4317)"),
        );
    }
    if let Some(protocol) = &otlp.protocol
        && protocol != "grpc"
        && protocol != "http/protobuf"
    {
        ctx.error(
            &otlp_path.key("protocol"),
            format!("must be \"grpc\" or \"http/protobuf\" (got {protocol:?})"),
        );
    }
    positive(ctx, &otlp_path.key("timeout"), otlp.timeout, "10s");
    for (name, value) in &otlp.headers {
        let header = otlp_path.key("headers").key(name);
        if !syntax::is_token(name) {
            ctx.error_at_key(&header, format!("{name:?} is not a valid header name"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            ctx.error(
                &header,
                "the value contains control characters (line breaks?): remove them",
            );
        }
    }
}

fn check_cors(ctx: &mut Ctx<'_>, path: &YPath, cors: &CorsFile) {
    let origins = path.key("allowedOrigins");
    let any = cors.allowed_origins.iter().any(|o| o == "*");
    let mut seen = HashSet::new();
    for (i, origin) in cors.allowed_origins.iter().enumerate() {
        let item = origins.index(i);
        if origin == "*" {
            continue;
        }
        if any {
            ctx.error(
                &item,
                "\"*\" already allows every origin: remove the other entries or the \"*\"",
            );
        } else if let Err(e) = syntax::check_origin(origin) {
            ctx.error(&item, e);
        } else if !seen.insert(origin) {
            ctx.error(&item, format!("{origin} is listed twice: remove one"));
        }
    }
    for (i, name) in cors.allowed_headers.iter().enumerate() {
        if !syntax::is_token(name) {
            ctx.error(
                &path.key("allowedHeaders").index(i),
                format!("{name:?} is not a valid header name: use letters, digits and -"),
            );
        }
    }
}
