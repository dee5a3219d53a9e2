//! The enrich phase: the headers the upstream receives (SPEC §5), rebuilt from an allowlist
//! rather than filtered from the client's set, so nothing the client sends reaches the agent
//! unless a rule says it should.
//!
//! What the upstream gets: the standard set (`Content-Type`, `Content-Encoding`, `Accept`,
//! `Content-Length`, `User-Agent`, the MCP protocol headers and every `Mcp-Param-*`), the
//! route's `requestHeaderAllowlist` (with `Authorization` only when listed), and what the edge
//! sets itself: the session id (HTTP routes: the client's if valid, else 400; a fresh one when
//! absent — the rules are [`crate::session`]'s), the request id, `X-Forwarded-*`,
//! `traceparent`/`tracestate`/`baggage`, and the identity headers (`userIdClaim`,
//! `claimsToHeaders`). Identity headers are never taken from the client, even if allowlisted:
//! a client cannot spoof who it is. Hop-by-hop headers and any header named by `Connection`
//! are never forwarded. `Host` is the upstream's own (set by the client connector).

use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::auth::Principal;
use crate::context::{Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::phase::Check;
use crate::route::Protocol;
use crate::telemetry::trace::{TRACEPARENT, TRACESTATE};

pub static REQUEST_ID_HEADER: HeaderName =
    HeaderName::from_static("x-amzn-bedrock-agentcore-runtime-request-id");
pub static USER_ID_HEADER: HeaderName =
    HeaderName::from_static("x-amzn-bedrock-agentcore-runtime-user-id");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers every route forwards (besides the allowlist and what the edge sets).
const STANDARD: [&str; 11] = [
    "content-type",
    "content-encoding",
    "content-length",
    "accept",
    "user-agent",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "x-amzn-bedrock-agentcore-runtime-session-id",
];

/// The client headers the pass over them tells apart by a `match` on the name, which costs
/// less than hashing the name for a set lookup: the standard set, then the headers the edge
/// reads from the client (the pass notes which are present, so absent ones are not looked up).
const KNOWN: [&str; 14] = {
    let mut known = [""; 14];
    let mut i = 0;
    while i < STANDARD.len() {
        known[i] = STANDARD[i];
        i += 1;
    }
    known[11] = "host";
    known[12] = "connection";
    known[13] = "baggage";
    known
};
const KNOWN_MCP_SESSION: u16 = 1 << 5;
const KNOWN_SESSION: u16 = 1 << 10;
const KNOWN_HOST: usize = 11;
const KNOWN_BAGGAGE: u16 = 1 << 13;

/// The position of `name` in [`KNOWN`].
fn known_index(name: &str) -> Option<usize> {
    Some(match name {
        "content-type" => 0,
        "content-encoding" => 1,
        "content-length" => 2,
        "accept" => 3,
        "user-agent" => 4,
        "mcp-session-id" => 5,
        "mcp-protocol-version" => 6,
        "last-event-id" => 7,
        "mcp-method" => 8,
        "mcp-name" => 9,
        "x-amzn-bedrock-agentcore-runtime-session-id" => 10,
        "host" => 11,
        "connection" => 12,
        "baggage" => 13,
        _ => return None,
    })
}

/// W3C baggage limits: more entries or bytes are dropped (never an error).
const BAGGAGE_MAX_ENTRIES: usize = 180;
const BAGGAGE_MAX_BYTES: usize = 8192;
/// Baggage values: percent-encode everything outside `baggage-octet`.
const BAGGAGE_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// One route's compiled header rules.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// Which of the [`KNOWN`] names are copied upstream (bit `i`: `KNOWN[i]`).
    known: u16,
    /// The other client headers copied upstream (lowercase names): the allowlist's.
    /// A `HeaderMap` used as a set: `http`'s own hashing of header names is much cheaper than
    /// SipHash, and an empty one answers without hashing.
    forward: HeaderMap<()>,
    /// `userIdClaim`.
    user_id_claim: Option<String>,
    /// `claimsToHeaders`: header ← claim.
    claim_headers: Vec<(HeaderName, String)>,
    /// `claimsToBaggage`: baggage key ← claim.
    claim_baggage: Vec<(String, String)>,
    /// Whether `X-Forwarded-*` from the client are kept (appended to).
    trust_forwarded: bool,
}

impl HeaderPolicy {
    /// Compiles the rules; `allowlist` names are already validated header names.
    pub fn new(
        allowlist: &[String],
        user_id_claim: Option<String>,
        claims_to_headers: &[(String, String)],
        claims_to_baggage: &[(String, String)],
        trust_forwarded: bool,
    ) -> Result<Self, String> {
        let mut forward: HeaderMap<()> = HeaderMap::with_capacity(32);
        for name in STANDARD {
            forward.insert(HeaderName::from_static(name), ());
        }
        for name in allowlist {
            forward.insert(
                HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("invalid header name {name:?}"))?,
                (),
            );
        }
        let mut claim_headers = Vec::new();
        for (name, claim) in claims_to_headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            forward.remove(&name);
            claim_headers.push((name, claim.clone()));
        }
        if user_id_claim.is_some() {
            forward.remove(&USER_ID_HEADER);
        }
        // The edge sets these itself.
        for name in [
            &USER_ID_HEADER,
            &REQUEST_ID_HEADER,
            &TRACEPARENT,
            &TRACESTATE,
            &BAGGAGE,
        ] {
            forward.remove(name);
        }
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &header::HOST,
            &header::CONNECTION,
        ] {
            forward.remove(name);
        }
        // The known names are decided by their bit; the set keeps the rest.
        let mut known = 0;
        for (i, name) in KNOWN.into_iter().enumerate() {
            if forward.remove(name).is_some() {
                known |= 1 << i;
            }
        }
        Ok(Self {
            known,
            forward,
            user_id_claim,
            claim_headers,
            claim_baggage: claims_to_baggage.to_vec(),
            trust_forwarded,
        })
    }

    /// Whether a client header called `name` is copied upstream.
    #[cfg(test)]
    fn forwards(&self, name: &HeaderName) -> bool {
        self.forwards_at(name, known_index(name.as_str()))
    }

    /// [`Self::forwards`], given the name's position in [`KNOWN`].
    fn forwards_at(&self, name: &HeaderName, known: Option<usize>) -> bool {
        match known {
            Some(i) => self.known & (1 << i) != 0,
            None => self.forward.contains_key(name) || name.as_str().starts_with("mcp-param-"),
        }
    }

    /// The upstream's headers for this request.
    pub fn upstream_headers(
        &self,
        client: &HeaderMap,
        protocol: Protocol,
        principal: Option<&Principal>,
        record: &RequestRecord,
    ) -> Result<HeaderMap, ProxyError> {
        let mut out = HeaderMap::with_capacity(client.len() + 8);
        // Parsed only when there is a `Connection` header: a scan of the names compares them,
        // where a lookup hashes one.
        let named_by_connection = if client.keys().any(|name| name == header::CONNECTION) {
            crate::hop::connection_tokens(client)
        } else {
            Vec::new()
        };
        // One pass decides each header and notes which of the known ones the client sent:
        // the edge looks up only those it did.
        let mut seen = 0u16;
        let mut host = None;
        for (name, value) in client {
            let known = known_index(name.as_str());
            if let Some(i) = known {
                seen |= 1 << i;
                if i == KNOWN_HOST && host.is_none() {
                    host = Some(value);
                }
            }
            if self.forwards_at(name, known) && !named_by_connection.contains(name) {
                out.append(name.clone(), value.clone());
            }
        }

        // Session id (HTTP routes: validated or generated), sent and recorded.
        let sent = seen
            & match protocol {
                Protocol::Http => KNOWN_SESSION,
                Protocol::Mcp => KNOWN_MCP_SESSION,
            };
        let session = crate::session::forward_id(protocol, client, sent != 0, &mut out, record)?;

        out.insert(REQUEST_ID_HEADER.clone(), record.request_id.clone());
        self.forwarded_headers(client, host, record, &mut out);

        out.insert(TRACEPARENT.clone(), record.upstream_traceparent.clone());
        if let Some(state) = &record.trace.tracestate {
            out.insert(TRACESTATE.clone(), state.clone());
        }
        let session = session.as_ref().and_then(|v| v.to_str().ok());
        let client_baggage = (seen & KNOWN_BAGGAGE != 0).then(|| client.get_all(&BAGGAGE));
        let baggage = self.merge_baggage(client_baggage.into_iter().flatten(), session, principal);
        if !baggage.is_empty()
            && let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(baggage))
        {
            out.insert(BAGGAGE.clone(), value);
        }

        if let Some(principal) = principal {
            if let Some(claim) = &self.user_id_claim
                && let Some(value) = principal
                    .claims
                    .render(claim)
                    .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                out.insert(USER_ID_HEADER.clone(), value);
            }
            for (name, claim) in &self.claim_headers {
                if let Some(value) = principal
                    .claims
                    .render(claim)
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    out.insert(name.clone(), value);
                }
            }
        }
        Ok(out)
    }

    /// `host`: the client's `Host` (its first value), which the pass over its headers found.
    fn forwarded_headers(
        &self,
        client: &HeaderMap,
        host: Option<&HeaderValue>,
        record: &RequestRecord,
        out: &mut HeaderMap,
    ) {
        let ip = &record.conn.remote_ip;
        // The client's own values are looked up only when they are trusted.
        let trusted = |name: &HeaderName| self.trust_forwarded.then(|| client.get(name)).flatten();
        let xff = match trusted(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) => {
                HeaderValue::from_str(&format!("{previous}, {}", ip.to_str().unwrap_or_default()))
                    .ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(value) = xff {
            out.insert(X_FORWARDED_FOR.clone(), value);
        }
        let proto = match trusted(&X_FORWARDED_PROTO) {
            Some(previous) => previous.clone(),
            None => HeaderValue::from_static(if record.conn.tls { "https" } else { "http" }),
        };
        out.insert(X_FORWARDED_PROTO.clone(), proto);
        if let Some(host) = trusted(&X_FORWARDED_HOST).or(host) {
            out.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
    }

    /// The edge's entries first (`session.id`, `claimsToBaggage`), then the client's entries
    /// for other keys, within the W3C limits. Public for the fuzz target (`fuzz/`).
    pub fn baggage(
        &self,
        client: &HeaderMap,
        session: Option<&str>,
        principal: Option<&Principal>,
    ) -> String {
        self.merge_baggage(client.get_all(&BAGGAGE), session, principal)
    }

    /// [`Self::baggage`], given the client's `baggage` values.
    fn merge_baggage<'a>(
        &self,
        client: impl IntoIterator<Item = &'a HeaderValue>,
        session: Option<&str>,
        principal: Option<&Principal>,
    ) -> String {
        // Sized for `session.id=<id>` exactly, the usual whole value: a `String` at its
        // capacity becomes the header's `Bytes` as it is, where spare capacity costs another
        // allocation.
        let mut out = String::with_capacity(session.map_or(0, |s| "session.id=".len() + s.len()));
        let mut entries = 0;
        // Written straight into `out` (no list, no `format!`): this runs on every request.
        if let Some(session) = session {
            push_encoded(&mut out, &mut entries, "session.id", session);
        }
        let mut claims: Vec<&str> = Vec::new();
        if let Some(principal) = principal {
            for (key, claim) in &self.claim_baggage {
                if let Some(value) = principal.claims.render(claim) {
                    push_encoded(&mut out, &mut entries, key, &value);
                    claims.push(key);
                }
            }
        }
        let ours = |key: &str| (session.is_some() && key == "session.id") || claims.contains(&key);
        for value in client {
            let Ok(text) = value.to_str() else { continue };
            for member in text.split(',') {
                let member = member.trim();
                let Some((key, _)) = member.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                if key.is_empty() || !key.bytes().all(is_token_char) || ours(key) {
                    continue;
                }
                push_member(&mut out, &mut entries, member);
            }
        }
        out
    }
}

/// Appends `key=value` (the value percent-encoded) unless it would pass the limits.
fn push_encoded(out: &mut String, entries: &mut usize, key: &str, value: &str) {
    let start = out.len();
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(key);
    out.push('=');
    // The usual value, an id, needs no encoding: copied whole, where the encoder's iterator
    // tests each byte against its set at a higher cost.
    // Folded without an early exit, so the compiler checks many bytes at once.
    if value
        .bytes()
        .fold(true, |plain, b| plain & is_plain_baggage_octet(b))
    {
        out.push_str(value);
    } else {
        out.extend(utf8_percent_encode(value, BAGGAGE_VALUE));
    }
    if *entries >= BAGGAGE_MAX_ENTRIES || out.len() > BAGGAGE_MAX_BYTES {
        out.truncate(start);
    } else {
        *entries += 1;
    }
}

fn push_member(out: &mut String, entries: &mut usize, member: &str) {
    let extra = member.len() + usize::from(!out.is_empty());
    if *entries >= BAGGAGE_MAX_ENTRIES || out.len() + extra > BAGGAGE_MAX_BYTES {
        return;
    }
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(member);
    *entries += 1;
}

/// A byte [`BAGGAGE_VALUE`] leaves as it is: visible ASCII other than `"`, `,`, `;`, `\` and
/// `%` (the test `plain_octets_are_what_the_encoder_leaves` keeps the two in step).
fn is_plain_baggage_octet(b: u8) -> bool {
    matches!(b, b'!'..=b'~') & !matches!(b, b'"' | b',' | b';' | b'\\' | b'%')
}

/// RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Rewrites the request's headers for the upstream.
#[derive(Clone, Debug, Default)]
pub struct Enrich;

impl Check for Enrich {
    fn check<B>(&self, request: &mut Request<Recorded<B>>) -> Result<(), ProxyError> {
        let record = request.body().record();
        let Some(route) = record.route() else {
            return Err(ProxyError::NoRoute);
        };
        let headers = route.headers.upstream_headers(
            request.headers(),
            route.protocol,
            request.extensions().get::<Principal>(),
            record,
        )?;
        *request.headers_mut() = headers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn baggage_members_and_limits() {
        let policy = HeaderPolicy::new(&[], None, &[], &[], false).unwrap();
        let client = headers(&[("baggage", "a=1, session.id=spoofed;p=1, bad key=2, =3, b=2")]);
        let out = policy.baggage(&client, Some("sess 1"), None);
        assert_eq!(out, "session.id=sess%201,a=1,b=2");

        let many: Vec<String> = (0..300).map(|i| format!("k{i}=v")).collect();
        let client = headers(&[("baggage", &many.join(","))]);
        let out = policy.baggage(&client, Some("s"), None);
        assert_eq!(out.split(',').count(), BAGGAGE_MAX_ENTRIES);
        assert!(out.starts_with("session.id=s,"));

        let big = format!("big={}", "x".repeat(9000));
        let client = headers(&[("baggage", &format!("{big},small=1"))]);
        assert_eq!(
            policy.baggage(&client, Some("s"), None),
            "session.id=s,small=1"
        );
    }

    #[test]
    fn plain_octets_are_what_the_encoder_leaves() {
        for b in 0..=u8::MAX {
            let bytes = [b];
            let text = String::from_utf8_lossy(&bytes);
            let encoded = utf8_percent_encode(&text, BAGGAGE_VALUE).to_string();
            assert_eq!(is_plain_baggage_octet(b), encoded == text, "byte {b:#04x}");
        }
    }

    #[test]
    fn session_only_baggage_fills_its_capacity() {
        let policy = HeaderPolicy::new(&[], None, &[], &[], false).unwrap();
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let out = policy.baggage(&HeaderMap::new(), Some(id), None);
        assert_eq!(out, format!("session.id={id}"));
        assert_eq!(out.len(), out.capacity(), "no spare capacity to copy away");
    }

    #[test]
    fn identity_headers_are_not_forwardable() {
        let policy = HeaderPolicy::new(
            &[
                "X-Gatehouse-Sub".into(),
                "X-Amzn-Bedrock-AgentCore-Runtime-User-Id".into(),
                "Authorization".into(),
            ],
            Some("sub".into()),
            &[("X-Gatehouse-Sub".into(), "sub".into())],
            &[],
            false,
        )
        .unwrap();
        assert!(!policy.forwards(&HeaderName::from_static("x-gatehouse-sub")));
        assert!(!policy.forwards(&USER_ID_HEADER));
        assert!(policy.forwards(&header::AUTHORIZATION));
        assert!(policy.forwards(&HeaderName::from_static("mcp-param-region")));
        assert!(!policy.forwards(&header::COOKIE));
        assert!(!policy.forwards(&header::HOST));
        let without = HeaderPolicy::new(&[], None, &[], &[], false).unwrap();
        assert!(!without.forwards(&header::AUTHORIZATION));
    }

    #[test]
    fn known_index_is_the_position_on_the_list() {
        for (i, name) in KNOWN.into_iter().enumerate() {
            assert_eq!(known_index(name), Some(i), "{name}");
        }
        assert_eq!(known_index("accept-encoding"), None);
        assert_eq!(known_index("mcp-param-x"), None);
    }

    /// The rule as it reads in SPEC §5 (a set of names, built once), against the policy's
    /// faster form (known names by bit, the rest in a set), for policies that move names in
    /// and out of the standard set.
    #[test]
    fn forwarding_is_decided_as_the_rule_says() {
        let edge_sets = [
            "x-amzn-bedrock-agentcore-runtime-user-id",
            "x-amzn-bedrock-agentcore-runtime-request-id",
            "traceparent",
            "tracestate",
            "baggage",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "host",
            "connection",
        ];
        let names: Vec<&str> = STANDARD
            .iter()
            .chain(KNOWN.iter())
            .chain(edge_sets.iter())
            .copied()
            .chain([
                "accept-encoding",
                "authorization",
                "cookie",
                "x-tenant",
                "mcp-param-region",
                "x-gatehouse-sub",
            ])
            .collect();
        let cases: [(&[&str], &[&str]); 4] = [
            (&[], &[]),
            (
                &["Authorization", "X-Tenant", "Host", "Baggage", "Connection"],
                &[],
            ),
            (&["Accept-Encoding"], &["Content-Type", "X-Gatehouse-Sub"]),
            (
                &["X-Tenant", "mcp-param-region"],
                &["mcp-param-region", "Accept"],
            ),
        ];
        for (allowlist, claim_headers) in cases {
            for user_id_claim in [None, Some("sub".to_string())] {
                let allow: Vec<String> = allowlist.iter().map(|n| n.to_string()).collect();
                let claims: Vec<(String, String)> = claim_headers
                    .iter()
                    .map(|n| (n.to_string(), "sub".to_string()))
                    .collect();
                let policy =
                    HeaderPolicy::new(&allow, user_id_claim.clone(), &claims, &[], false).unwrap();
                let lower = |names: &[&str]| -> Vec<String> {
                    names.iter().map(|n| n.to_ascii_lowercase()).collect()
                };
                let (allow, claims) = (lower(allowlist), lower(claim_headers));
                for name in &names {
                    let set = (STANDARD.contains(name) || allow.iter().any(|a| a == name))
                        && !claims.iter().any(|c| c == name)
                        && !edge_sets.contains(name);
                    let expected = set || name.starts_with("mcp-param-");
                    let header = HeaderName::from_bytes(name.as_bytes()).unwrap();
                    assert_eq!(
                        policy.forwards(&header),
                        expected,
                        "{name} with {allowlist:?}, {claim_headers:?}, {user_id_claim:?}"
                    );
                }
            }
        }
    }
}
