//! TLS: the listener's certificate (HTTPS with HTTP/1.1 and h2 by ALPN) and the trust store
//! used toward identity providers and HTTPS upstreams.
//!
//! The client trust store is the Mozilla root set (webpki-roots) plus the platform's
//! certificates (rustls-native-certs, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), so a
//! private IdP CA can be trusted without rebuilding.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Builds the listener's TLS configuration from PEM files, offering `h2` then `http/1.1`.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("{}: cannot read certificates: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad certificate PEM: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: cannot read private key: {e}", key_file.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for outbound HTTPS (identity providers, AgentCore, upstreams),
/// read once per process: parsing the platform's certificate bundle costs about 18 million
/// instructions (≈ 5 ms), and every connector (the JWKS fetcher, each upstream pool) needs it —
/// three times over at start-up before this was cached.
pub(crate) fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(load_client_config).clone()
}

fn load_client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping a platform certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "platform certificates trusted");
    // No ALPN here: the connector sets it from the HTTP versions it enables.
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The one HTTPS (and plain HTTP) connector for outbound connections — upstreams, JWKS and
/// discovery, the OTLP exporter — with this trust store, `TCP_NODELAY` and TCP keep-alive.
/// With `http2`, h2 is offered by ALPN (and h2c spoken when the client is `http2_only`).
pub(crate) fn https_connector(
    connect_timeout: Duration,
    http2: bool,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*client_config()).clone())
        .https_or_http();
    if http2 {
        builder.enable_http1().enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    }
}
