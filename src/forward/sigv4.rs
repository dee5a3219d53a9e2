//! AgentCore Runtime with IAM auth (`upstream.agentRuntimeArn`): the request goes to
//! `POST {endpoint}/runtimes/{url-escaped ARN}/invocations?qualifier=Q`, signed with SigV4
//! (service `bedrock-agentcore`) by `aws-sigv4`, with credentials from the standard AWS chain
//! (`aws-config`: environment, shared config and credentials files, web identity token as used
//! by EKS IRSA, ECS container credentials, EC2 instance metadata).
//!
//! **Credentials** are held in an [`ArcSwap`] that requests read without a lock. A background
//! refresh starts when they are within [`REFRESH_BEFORE`] of expiry, so requests keep signing
//! with the current ones while the chain fetches new ones; only a request that finds none at
//! all (the first one, if the start-up prefetch has not finished, or after they expired while
//! the chain was failing) waits, for one shared fetch. aws-config 1.x has no stand-alone caching
//! credentials provider any more (its lazy identity cache needs an SDK client's runtime
//! components and refreshes on the request path), hence this small cache over its default
//! chain.
//!
//! **Payload.** Bodies up to [`SIGNED_PAYLOAD_LIMIT`] (almost every agent invocation: a JSON
//! prompt) are read once into memory, hashed, and sent from that buffer with
//! `x-amz-content-sha256: <hex>` — exactly what the AWS SDKs send for `InvokeAgentRuntime`, so
//! the service accepts it whatever its payload-signing policy. A larger body is not held in
//! memory: what was read so far and the rest stream through, signed as `UNSIGNED-PAYLOAD`
//! (TLS protects the body's integrity on the wire; the signature still covers the method,
//! path, query and headers). Either way the body is read once.
//!
//! The caller's `Authorization` is never sent: the signature replaces it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

/// The signing name of the AgentCore data plane.
pub const SERVICE: &str = "bedrock-agentcore";
/// Bodies up to this size are hashed into the signature; larger ones are `UNSIGNED-PAYLOAD`.
pub const SIGNED_PAYLOAD_LIMIT: usize = 4 * 1024 * 1024;
/// Credentials this close to expiry are refreshed in the background.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Credentials this close to expiry are not used any more (clock skew, request duration).
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// One attempt of the credential chain.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

pub static X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Why a request could not be signed.
#[derive(Debug, Clone)]
pub struct SigningError(pub String);

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SigningError {}

/// SigV4's URI encoding: everything but the unreserved characters `A-Za-z0-9-_.~`. Query
/// values are sent in this form so that the query on the wire is already canonical: AWS
/// re-encodes it this way before checking the signature, botocore takes it as it is.
pub const URI_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the signature says about the body.
#[derive(Debug, Clone)]
pub enum Payload {
    /// SHA-256 of the body, lowercase hex.
    Hash(String),
    Unsigned,
}

impl Payload {
    pub fn of(body: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
        Payload::Hash(hex(digest.as_ref()))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Signs `headers` in place for `method uri`: adds `x-amz-date`, `x-amz-security-token` (for
/// temporary credentials), `x-amz-content-sha256` (when `content_sha256` is set) and
/// `authorization`. `uri` is already percent-encoded; its path is encoded once more for the
/// canonical request, as every AWS service but S3 expects. Signed: `host`, `content-type`,
/// every `x-amz-*`, `x-amzn-bedrock-agentcore-*` and `mcp-*` header — the ones the service
/// reads; the rest (trace context, `user-agent`, `x-forwarded-*`) stay unsigned so that a
/// proxy on the way may touch them.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    payload: &Payload,
    content_sha256: bool,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SigningError> {
    headers.remove(http::header::AUTHORIZATION);
    if !headers.contains_key(http::header::HOST) {
        let host = uri
            .authority()
            .ok_or_else(|| SigningError("the upstream URL has no host".into()))?;
        let value = HeaderValue::from_str(host.as_str())
            .map_err(|_| SigningError("the upstream host is not a header value".into()))?;
        headers.insert(http::header::HOST, value);
    }
    let body_hash = match payload {
        Payload::Hash(hash) => hash.as_str(),
        Payload::Unsigned => UNSIGNED_PAYLOAD,
    };
    if content_sha256 {
        let value = HeaderValue::from_str(body_hash)
            .map_err(|_| SigningError("bad payload hash".into()))?;
        headers.insert(X_AMZ_CONTENT_SHA256.clone(), value);
    }
    let signed: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| is_signed(name))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let body = match payload {
        Payload::Hash(hash) => SignableBody::Precomputed(hash.clone()),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let mut settings = SigningSettings::default();
    // The header is already in `headers` (and so signed) when wanted.
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    let identity: Identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SigningError(format!("signing parameters: {e}")))?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        Cow::Owned(uri.to_string()),
        signed.into_iter(),
        body,
    )
    .map_err(|e| SigningError(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| SigningError(format!("cannot sign the request: {e}")))?
        .into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| SigningError(format!("{} is not a header value", header.name())))?;
        // Never printed in logs: the signature and the session token are credentials.
        value.set_sensitive(
            header.sensitive()
                || header.name() == "authorization"
                || header.name() == "x-amz-security-token",
        );
        headers.insert(HeaderName::from_static(header.name()), value);
    }
    Ok(())
}

fn is_signed(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "host"
        || name == "content-type"
        || name.starts_with("x-amz-")
        || name.starts_with("x-amzn-bedrock-agentcore-")
        || name.starts_with("mcp-")
}

/// Credentials from the AWS default chain, cached and refreshed ahead of expiry.
pub struct CredentialCache {
    current: ArcSwapOption<Credentials>,
    source: Source,
    /// One load at a time; requests that find nothing usable wait on it.
    loading: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

enum Source {
    /// The default chain, built on first use (building it is async).
    DefaultChain {
        region: String,
        chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    },
    Fixed(SharedCredentialsProvider),
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiry = self.current.load().as_ref().and_then(|c| c.expiry());
        f.debug_struct("CredentialCache")
            .field("loaded", &self.current.load().is_some())
            .field("expiry", &expiry)
            .finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// The default chain; `region` is where STS is asked for web identity credentials.
    pub fn default_chain(region: &str) -> Arc<Self> {
        Arc::new(Self::new(Source::DefaultChain {
            region: region.to_owned(),
            chain: tokio::sync::OnceCell::new(),
        }))
    }

    /// A given provider (tests, embedding).
    pub fn with_provider(provider: impl ProvideCredentials + 'static) -> Arc<Self> {
        Arc::new(Self::new(Source::Fixed(SharedCredentialsProvider::new(
            provider,
        ))))
    }

    fn new(source: Source) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            source,
            loading: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Starts loading in the background, when a runtime is there to do it.
    pub fn prefetch(self: &Arc<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let this = self.clone();
            handle.spawn(async move {
                if let Err(error) = this.load().await {
                    tracing::warn!(%error, "no AWS credentials yet for agentRuntimeArn upstreams; requests will retry the chain");
                }
            });
        }
    }

    /// Usable credentials: the cached ones (refreshing them in the background when they
    /// expire soon), or, when there are none, the result of one shared load.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<Credentials>, SigningError> {
        let now = SystemTime::now();
        if let Some(current) = self.current.load_full() {
            match current.expiry() {
                None => return Ok(current),
                Some(expiry) if expiry > now + REFRESH_BEFORE => return Ok(current),
                Some(expiry) if expiry > now + EXPIRY_MARGIN => {
                    self.refresh_in_background();
                    return Ok(current);
                }
                Some(_) => {}
            }
        }
        self.load().await
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            if let Err(error) = this.load_now().await {
                tracing::warn!(%error, "AWS credentials refresh failed; using the current ones until they expire");
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Loads unless another caller just did.
    async fn load(&self) -> Result<Arc<Credentials>, SigningError> {
        let _guard = self.loading.lock().await;
        if let Some(current) = self.current.load_full()
            && current
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + EXPIRY_MARGIN)
        {
            return Ok(current);
        }
        self.fetch().await
    }

    async fn load_now(&self) -> Result<Arc<Credentials>, SigningError> {
        let _guard = self.loading.lock().await;
        self.fetch().await
    }

    async fn fetch(&self) -> Result<Arc<Credentials>, SigningError> {
        let provider = match &self.source {
            Source::Fixed(provider) => provider.clone(),
            Source::DefaultChain { region, chain } => chain
                .get_or_init(|| async {
                    let chain =
                        aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                            .region(aws_config::Region::new(region.clone()))
                            .build()
                            .await;
                    SharedCredentialsProvider::new(chain)
                })
                .await
                .clone(),
        };
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, provider.provide_credentials())
            .await
            .map_err(|_| SigningError("loading AWS credentials timed out".into()))?
            .map_err(|e| SigningError(format!("no AWS credentials: {e}")))?;
        let loaded = Arc::new(loaded);
        self.current.store(Some(loaded.clone()));
        Ok(loaded)
    }
}

/// One `agentRuntimeArn` upstream's signing setup.
#[derive(Debug)]
pub struct AgentCoreSigner {
    pub region: String,
    pub credentials: Arc<CredentialCache>,
}

impl AgentCoreSigner {
    /// Signs the request headers (see [`sign_headers`]).
    pub async fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        payload: &Payload,
    ) -> Result<(), SigningError> {
        let credentials = self.credentials.get().await?;
        sign_headers(
            method,
            uri,
            headers,
            payload,
            true,
            &credentials,
            &self.region,
            SERVICE,
            SystemTime::now(),
        )
    }
}

/// The data-plane endpoint for a region (`endpointUrl` overrides it).
pub fn default_endpoint(arn: &str, region: &str) -> String {
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    let suffix = if partition == "aws-cn" {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://bedrock-agentcore.{region}.{suffix}")
}

/// The region in an ARN (`arn:partition:service:REGION:...`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests;
