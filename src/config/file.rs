//! The configuration file's shape, exactly as SPEC §3 writes it: camelCase keys, YAML or JSON.
//!
//! These types only describe what may appear in the file. They hold strings and numbers as the
//! operator wrote them; [`super::validate`] checks every rule and [`crate::settings`] compiles
//! the result into the runtime [`crate::settings::Settings`] (URLs parsed, header names built,
//! issuers shared). Unknown keys are errors: the loader collects every one of them with its
//! line and column (see [`super::load`]) instead of stopping at the first.
//!
//! The AgentCore `authorizerConfiguration` block is accepted verbatim, including the
//! `customJWTAuthorizer` spelling used by the control-plane API and its fields that have no
//! meaning outside AWS (`privateEndpoint`, `privateEndpointOverrides`), which are accepted and
//! ignored with a warning.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, DurationStr};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FileConfig {
    /// One `host:port` or a list of them.
    #[serde(default)]
    pub listen: OneOrMany<String>,
    pub public_url: Option<String>,
    pub tls: Option<TlsFile>,
    pub admin: Option<AdminFile>,
    pub shutdown_grace_period: Option<DurationStr>,
    /// Keep client-supplied `X-Forwarded-*` (append to them) instead of replacing them.
    pub trust_forwarded_headers: Option<bool>,
    /// Reload when the file changes (SPEC §9), in addition to SIGHUP.
    pub watch_config: Option<bool>,
    pub limits: Option<LimitsFile>,
    pub jwt: Option<JwtFile>,
    pub telemetry: Option<TelemetryFile>,
    /// Default CORS policy for routes that do not set their own.
    pub cors: Option<CorsFile>,
    /// Rate and concurrency limits for every route, and where their counts live (SPEC §12).
    pub quotas: Option<QuotasFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// A scalar or a list of scalars (`listen: a` or `listen: [a, b]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// A visitor rather than `#[serde(untagged)]`: untagged buffers the value, so a bad item would
/// only say "data did not match any variant" without a location, and YAML's plain `8080`
/// would be an integer that a `String` refuses. Here scalars are read as text (YAML is
/// typeless: the rules then say what is wrong with `"8080"`), each list item keeps its own
/// error location, and `null` is an empty list.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
        use std::marker::PhantomData;

        struct V<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> V<T> {
            fn one<E: de::Error>(text: String) -> Result<OneOrMany<T>, E> {
                T::deserialize(text.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
        }

        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Self::one(v.to_owned())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::one(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::one(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::one(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Self::one(v.to_string())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }

        de.deserialize_any(V(PhantomData))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminFile {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitsFile {
    pub max_request_header_bytes: Option<ByteSize>,
    pub max_request_body_bytes: Option<ByteSize>,
    pub request_timeout: Option<DurationStr>,
    pub stream_idle_timeout: Option<DurationStr>,
    pub header_read_timeout: Option<DurationStr>,
    /// Open client connections per process; further connections wait in the accept queue.
    pub max_connections: Option<u32>,
    /// Failed token validations per client address (`20/s`); over it: 429 before any
    /// signature is verified.
    pub auth_failures_per_ip: Option<String>,
}

/// The `jwt` block: defaults for every CUSTOM_JWT authorizer (top level), or a per-route
/// override of them (route level; `verifiedTokenCache` is top-level only).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtFile {
    pub clock_skew: Option<DurationStr>,
    pub algorithms: Option<Vec<String>>,
    pub jwks_refresh_interval: Option<DurationStr>,
    pub jwks_min_refetch_interval: Option<DurationStr>,
    pub max_key_staleness: Option<DurationStr>,
    /// Timeout of one discovery or JWKS fetch (gatehouse extension; default 5s).
    pub jwks_fetch_timeout: Option<DurationStr>,
    pub verified_token_cache: Option<TokenCacheFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCacheFile {
    pub max_entries: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryFile {
    pub service_name: Option<String>,
    pub otlp: Option<OtlpFile>,
    pub sampling: Option<f64>,
    /// `stdout` or `off`.
    pub access_log: Option<String>,
    pub server_timing: Option<bool>,
    /// Put the token's `sub` in spans as `enduser.id` (default true).
    pub enduser_id: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtlpFile {
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<DurationStr>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CorsFile {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Extra request headers a browser may send (added to the MCP and AgentCore defaults).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    pub max_age: Option<DurationStr>,
}

/// One agent behind the edge.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteFile {
    #[serde(default)]
    pub name: String,
    /// `HTTP` or `MCP` (AgentCore `serverProtocol` names). Default `HTTP`.
    pub protocol: Option<String>,
    pub path: Option<String>,
    /// An AgentCore runtime ARN: `/runtimes/{url-escaped arn}/invocations` also matches.
    pub arn: Option<String>,
    /// `CUSTOM_JWT` or `NONE`; `NONE` must be explicit.
    pub authorizer_type: Option<String>,
    pub authorizer_configuration: Option<AuthorizerConfiguration>,
    pub request_header_allowlist: Option<Vec<String>>,
    pub user_id_claim: Option<String>,
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub claims_to_baggage: BTreeMap<String, String>,
    pub jwt: Option<JwtFile>,
    pub upstream: Option<UpstreamFile>,
    pub cors: Option<CorsFile>,
    /// Serve this route's metadata at the root `/.well-known/oauth-protected-resource`.
    pub default_resource: Option<bool>,
    /// Bind session ids to the token subject (issue 5; default on for MCP routes).
    pub session_binding: Option<SessionBindingFile>,
    /// SSE comment keep-alive interval toward the client, e.g. `15s` (0 or absent: none).
    pub keep_alive: Option<DurationStr>,
    /// This route's own quota rules, added to the global ones.
    pub quotas: Option<RouteQuotasFile>,
    /// The credential the upstream gets instead of the caller's token (SPEC §13).
    pub outbound_auth: Option<OutboundAuthFile>,
    /// MCP method and tool authorization (SPEC §11; MCP routes only).
    pub mcp: Option<McpFile>,
}

/// `authorizerConfiguration`, pasted from AgentCore.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerConfiguration {
    #[serde(alias = "customJWTAuthorizer")]
    pub custom_jwt_authorizer: CustomJwtAuthorizer,
}

/// `CustomJWTAuthorizerConfiguration` (AgentCore control-plane model).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CustomJwtAuthorizer {
    #[serde(default)]
    pub discovery_url: String,
    pub allowed_clients: Option<Vec<String>>,
    pub allowed_audience: Option<Vec<String>>,
    pub allowed_scopes: Option<Vec<String>>,
    pub custom_claims: Option<Vec<CustomClaim>>,
    #[serde(default)]
    pub advertised_scope_mapping: BTreeMap<String, String>,
    /// AWS networking for reaching a private IdP: accepted, ignored (gatehouse reaches the IdP
    /// directly), reported as a warning.
    pub private_endpoint: Option<serde_json::Value>,
    pub private_endpoint_overrides: Option<serde_json::Value>,
    /// Workload-identity restrictions: gatehouse cannot verify AgentCore workload identities,
    /// so a block that sets this is rejected rather than silently weakened.
    pub allowed_workload_configuration: Option<serde_json::Value>,
}

/// `CustomClaimValidationType`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomClaim {
    pub inbound_token_claim_name: String,
    /// `STRING` or `STRING_ARRAY`.
    pub inbound_token_claim_value_type: String,
    pub authorizing_claim_match_value: ClaimMatchValue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatchValue {
    /// `EQUALS`, `CONTAINS` or `CONTAINS_ANY`.
    pub claim_match_operator: String,
    pub claim_match_value: ClaimMatchValueUnion,
}

/// Exactly one of the two members (an AgentCore union).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatchValueUnion {
    pub match_value_string: Option<String>,
    pub match_value_string_list: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamFile {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub path: Option<String>,
    pub agent_runtime_arn: Option<String>,
    pub region: Option<String>,
    pub qualifier: Option<String>,
    pub endpoint_url: Option<String>,
    pub connect_timeout: Option<DurationStr>,
    /// Speak HTTP/2 with prior knowledge (h2c) to the upstream.
    pub http2: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionBindingFile {
    pub enabled: Option<bool>,
    /// HMAC key (at least 32 bytes), usually `${GATEHOUSE_SESSION_KEY}`.
    pub key: Option<String>,
}

/// The top-level `quotas` block.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotasFile {
    pub store: Option<QuotaStoreFile>,
    #[serde(default)]
    pub rules: Vec<QuotaRuleFile>,
}

/// A route's `quotas` block: rules only (the store is the edge's).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteQuotasFile {
    #[serde(default)]
    pub rules: Vec<QuotaRuleFile>,
}

/// Where quota counts live: `local` (this process) or `redis` (shared by replicas).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStoreFile {
    /// `local` or `redis`.
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    /// Longest wait for Redis per decision (default 50ms).
    pub timeout: Option<DurationStr>,
    /// `allow` (default) or `deny` when Redis does not answer in time.
    pub on_error: Option<String>,
}

/// One quota rule.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaRuleFile {
    #[serde(default)]
    pub name: String,
    /// Any of `client_id`, `sub`, `route`, `ip`, `tool`, `claim:<name>`.
    #[serde(default)]
    pub key: OneOrMany<String>,
    /// `N/s`, `N/m` or `N/h`.
    pub rate: Option<String>,
    /// Bucket size (default: the rate's N).
    pub burst: Option<u32>,
    /// Requests (and streams) in flight per key.
    pub concurrency: Option<u32>,
    /// MCP routes: only matching messages count.
    #[serde(rename = "match")]
    pub matches: Option<QuotaMatchFile>,
}

/// `match: { method, name }` (globs with `*`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaMatchFile {
    pub method: Option<String>,
    pub name: Option<String>,
}

/// `mcp`: per-method and per-tool authorization of an MCP route (SPEC §11).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct McpFile {
    /// A POSTed JSON-RPC message over this is refused with 413 (default 4MiB).
    pub max_message_bytes: Option<ByteSize>,
    /// `enforce` (default) or `logOnly`.
    pub enforcement: Option<String>,
    /// `allow` (default) or `deny`: when no rule matches.
    pub default: Option<String>,
    /// Remove from list responses what the caller could never use (default false).
    pub filter_lists: Option<bool>,
    pub rules: Option<Vec<McpRuleFile>>,
    /// AgentCore Policy compatible Cedar policies, instead of rules.
    pub cedar: Option<CedarFile>,
}

/// One `mcp.rules` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct McpRuleFile {
    #[serde(rename = "match")]
    pub match_: Option<McpMatchFile>,
    pub allowed_scopes: Option<Vec<String>>,
    pub allowed_clients: Option<Vec<String>>,
    pub custom_claims: Option<Vec<CustomClaim>>,
    pub deny: Option<bool>,
}

/// What a rule applies to: `*` globs on the method and the name.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct McpMatchFile {
    pub method: Option<String>,
    pub name: Option<String>,
}

/// `outboundAuth` (SPEC §13): an RFC 8693 token exchange or a client-credentials token, sent
/// upstream as `Authorization: Bearer` in place of the caller's token.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundAuthFile {
    /// `tokenExchange` or `clientCredentials`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Default: the `token_endpoint` of the route's issuer (its discovery document).
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub client_id: String,
    /// Sent with `client_secret_basic`; usually `${EDGE_CLIENT_SECRET}`.
    #[serde(default)]
    pub client_secret: Secret,
    /// RFC 8693 `audience` of the new token.
    pub audience: Option<String>,
    /// RFC 8707 `resource` of the new token.
    pub resource: Option<String>,
    /// Space-separated scopes to ask for.
    pub scope: Option<String>,
    /// One token request, including the wait for a free slot (default 5s).
    pub timeout: Option<DurationStr>,
    /// Token requests in flight to the endpoint for this route (default 16).
    pub max_concurrency: Option<u32>,
    /// Tokens cached for this route (default 10000).
    pub cache_max_entries: Option<u64>,
}

/// A configuration secret: its `Debug` never shows it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `mcp.cedar`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CedarFile {
    /// One file or a list, relative to the configuration file.
    #[serde(default)]
    pub policies: OneOrMany<String>,
    /// The Cedar resource, `AgentCore::Gateway::"<resource>"` (default: the route name).
    pub resource: Option<String>,
}
