//! The session phase: sessions are not identity. A session id created under one token subject
//! cannot be used with another subject's token.
//!
//! The binding needs no shared state: a session id the client holds carries a tag, an
//! HMAC-SHA256 (truncated to 128 bits) over the route, the token's issuer and subject (`sub`,
//! or `client_id` when a token has no `sub`, marked as such) and the session id itself, keyed by the route's
//! `sessionBinding.key`. Every edge replica with the same key verifies every other's ids.
//!
//! - **MCP routes** (on by default): the MCP server's `Mcp-Session-Id` reaches the client as
//!   `{id}-{tag}`, and the tag is checked and stripped on the way in, so the server only ever
//!   sees its own ids. A missing or foreign tag is answered 404, which MCP clients take as
//!   "session gone" and answer with a fresh `initialize`.
//! - **HTTP routes** (off by default, as AgentCore clients usually pick their own ids): the edge
//!   issues `{uuid}-{tag}` when the client sends no session id, and refuses with 403 any id it
//!   did not issue to this caller. Client and agent see the same id.
//!
//! Routes without an authorizer (`authorizerType: NONE`) have no subject and are not bound.
//!
//! This module is the one owner of session ids: the header names, the runtime id's rules and
//! generation, the binding, what the request record keeps (for logs and spans), the id echoed
//! on HTTP responses, and the key replicas are chosen by.

use std::task::{Context, Poll};

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::{Either, ready};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::auth::Principal;
use crate::body::ProxyBody;
use crate::context::{Recorded, RequestRecord};
use crate::error::ProxyError;
use crate::phase::ResponseFuture;
use crate::route::{Protocol, Route};

/// The runtime session id of HTTP routes (SPEC §5).
pub static SESSION_HEADER: HeaderName =
    HeaderName::from_static("x-amzn-bedrock-agentcore-runtime-session-id");
/// The MCP server's session id (MCP streamable HTTP).
pub static MCP_SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");

/// A new session id: a UUID v4.
fn fresh_id() -> HeaderValue {
    crate::telemetry::trace::uuid_v4()
}

/// The runtime session id: the client's, if it is 33–256 characters of `[A-Za-z0-9._:-]`
/// (else 400), or a new one when it sent none.
pub fn runtime_id(headers: &HeaderMap) -> Result<HeaderValue, ProxyError> {
    let value = single(headers, &SESSION_HEADER)
        .map_err(|_| ProxyError::BadRequest("More than one session id header.".into()))?;
    let Some(value) = value else {
        return Ok(fresh_id());
    };
    let id = value.as_bytes();
    let valid = (33..=256).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        return Err(ProxyError::BadRequest(
            "Invalid session id: X-Amzn-Bedrock-AgentCore-Runtime-Session-Id must be 33 to 256 characters of [A-Za-z0-9._:-]."
                .into(),
        ));
    }
    Ok(value.clone())
}

/// The session id the upstream gets, recorded for logs and spans: on HTTP routes the runtime
/// id (validated, or made) is set in `upstream`; on MCP routes it is the client's
/// `Mcp-Session-Id` (already unbound by the session phase), which `upstream` copies already.
/// `sent`: whether `client` has the route's session header at all (the enrich phase's pass
/// over the headers knows), so that an absent one is not looked up.
pub(crate) fn forward_id(
    protocol: Protocol,
    client: &HeaderMap,
    sent: bool,
    upstream: &mut HeaderMap,
    record: &RequestRecord,
) -> Result<Option<HeaderValue>, ProxyError> {
    let session = match protocol {
        Protocol::Http => {
            let id = if sent {
                runtime_id(client)?
            } else {
                fresh_id()
            };
            upstream.insert(SESSION_HEADER.clone(), id.clone());
            Some(id)
        }
        Protocol::Mcp if sent => client.get(&MCP_SESSION_HEADER).cloned(),
        Protocol::Mcp => None,
    };
    if let Some(id) = &session {
        record.set_session_id(id.clone());
    }
    Ok(session)
}

/// An MCP server's new session id (the answer to `initialize`), recorded when the request
/// had none.
pub(crate) fn record_upstream_id(protocol: Protocol, record: &RequestRecord, headers: &HeaderMap) {
    if protocol == Protocol::Mcp
        && record.session_id().is_none()
        && let Some(id) = headers.get(&MCP_SESSION_HEADER)
    {
        record.set_session_id(id.clone());
    }
}

/// HTTP routes' responses carry the runtime session id, whichever phase answered (the record
/// layer calls this for every response); MCP servers set their own header.
pub(crate) fn echo(record: &RequestRecord, response: &mut HeaderMap) {
    if let (Some(route), Some(session)) = (record.route(), record.session_header())
        && route.protocol == Protocol::Http
    {
        response.insert(SESSION_HEADER.clone(), session.clone());
    }
}

/// The session a request belongs to, for replica affinity: `Mcp-Session-Id`, else the
/// runtime session id (which HTTP routes always carry after the enrich phase).
pub(crate) fn affinity_key(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(&MCP_SESSION_HEADER)
        .or_else(|| headers.get(&SESSION_HEADER))
        .cloned()
}

/// Bytes of HMAC kept in a tag: 128 bits, 22 base64url characters.
const TAG_BYTES: usize = 16;
const TAG_CHARS: usize = 22;
/// Between the session id and its tag. The tag has a fixed length, so the split is by position
/// and unambiguous; `-` keeps bound ids within AgentCore's session-id alphabet
/// (`[a-zA-Z0-9][a-zA-Z0-9-_]*`) whenever the id itself is.
const SEPARATOR: u8 = b'-';
/// Domain separation, and a version should the format ever change.
const CONTEXT: &[u8] = b"gatehouse session binding v1";

/// One route's binding key.
pub struct SessionBinding {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionBinding(..)")
    }
}

impl SessionBinding {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The tag of `session` for this caller on this route, base64url.
    fn tag(&self, route: &str, principal: &Principal, session: &[u8]) -> [u8; TAG_CHARS] {
        let claims = &principal.claims;
        // Which claim names the subject is part of it: a client whose id equals a user's
        // `sub` is not that user.
        let (kind, subject): (&[u8], _) = match (claims.sub(), claims.client_id()) {
            (Some(sub), _) => (b"sub", sub),
            (None, Some(client)) => (b"client_id", client),
            (None, None) => (b"", ""),
        };
        let mut context = hmac::Context::with_key(&self.key);
        context.update(CONTEXT);
        // Length-prefixed, so no two different tuples hash the same bytes.
        for part in [
            route.as_bytes(),
            claims.iss().unwrap_or_default().as_bytes(),
            kind,
            subject.as_bytes(),
            session,
        ] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mac = context.sign();
        let mut out = [0u8; TAG_CHARS];
        // 16 bytes always encode to exactly 22 characters without padding.
        let _ = URL_SAFE_NO_PAD.encode_slice(&mac.as_ref()[..TAG_BYTES], &mut out);
        out
    }

    /// `{session}-{tag}`: the session id as the client holds it.
    pub fn bind(&self, route: &str, principal: &Principal, session: &[u8]) -> Option<HeaderValue> {
        let mut bound = Vec::with_capacity(session.len() + 1 + TAG_CHARS);
        bound.extend_from_slice(session);
        bound.push(SEPARATOR);
        bound.extend_from_slice(&self.tag(route, principal, session));
        HeaderValue::from_bytes(&bound).ok()
    }

    /// The session id inside a bound id, when its tag is this caller's; `None` otherwise.
    pub fn verify<'a>(
        &self,
        route: &str,
        principal: &Principal,
        bound: &'a [u8],
    ) -> Option<&'a [u8]> {
        let split = bound.len().checked_sub(TAG_CHARS + 1)?;
        let (session, tag) = bound.split_at_checked(split)?;
        let tag = tag.strip_prefix(&[SEPARATOR])?;
        constant_time::verify_slices_are_equal(tag, &self.tag(route, principal, session)).ok()?;
        Some(session)
    }
}

/// Binds session ids to the caller (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SessionLayer;

impl<S> Layer<S> for SessionLayer {
    type Service = Sessions<S>;
    fn layer(&self, inner: S) -> Sessions<S> {
        Sessions { inner }
    }
}

/// See [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct Sessions<S> {
    inner: S,
}

impl<S, B> Service<Request<Recorded<B>>> for Sessions<S>
where
    S: Service<Request<Recorded<B>>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, ResponseFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Recorded<B>>) -> Self::Future {
        let bound = request
            .body()
            .record()
            .route()
            .is_some_and(|route| route.session_binding.is_some());
        if !bound || request.extensions().get::<Principal>().is_none() {
            return Either::Left(self.inner.call(request));
        }
        // Split, so the headers can change while the route and principal are borrowed.
        let (mut parts, body) = request.into_parts();
        let (Some(route), Some(principal)) =
            (body.record().route(), parts.extensions.get::<Principal>())
        else {
            return Either::Left(self.inner.call(Request::from_parts(parts, body)));
        };
        let Some(binding) = &route.session_binding else {
            return Either::Left(self.inner.call(Request::from_parts(parts, body)));
        };
        let checked = match route.protocol {
            Protocol::Mcp => unbind_mcp(binding, route, principal, &mut parts.headers),
            Protocol::Http => bind_runtime(binding, route, principal, &mut parts.headers),
        };
        if let Err(error) = checked {
            return Either::Right(Box::pin(ready(Err(error))));
        }
        // Only MCP responses are rewritten, so only they keep the route and caller.
        let rewrite = (route.protocol == Protocol::Mcp).then(|| (route.clone(), principal.clone()));
        let response = self.inner.call(Request::from_parts(parts, body));
        let Some((route, principal)) = rewrite else {
            return Either::Left(response);
        };
        Either::Right(Box::pin(async move {
            let mut response = response.await?;
            // The server's new (or repeated) session id goes to the client bound.
            if let Some(binding) = &route.session_binding
                && let Some(id) = response.headers().get(&MCP_SESSION_HEADER)
                && let Some(bound) = binding.bind(&route.name, &principal, id.as_bytes())
            {
                response
                    .headers_mut()
                    .insert(MCP_SESSION_HEADER.clone(), bound);
            }
            Ok(response)
        }))
    }
}

/// The single value of a header, `Ok(None)` when absent; two values are a bad request.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, ProxyError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ProxyError::BadRequest(
            format!("More than one {name} header.").into(),
        ));
    }
    Ok(first)
}

/// MCP: a client's `Mcp-Session-Id` must carry this caller's tag; the server gets it without.
fn unbind_mcp(
    binding: &SessionBinding,
    route: &Route,
    principal: &Principal,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let Some(bound) = single(headers, &MCP_SESSION_HEADER)? else {
        return Ok(());
    };
    let Some(session) = binding.verify(&route.name, principal, bound.as_bytes()) else {
        return Err(mismatch(route, principal));
    };
    let session = HeaderValue::from_bytes(session).map_err(|_| mismatch(route, principal))?;
    headers.insert(MCP_SESSION_HEADER.clone(), session);
    Ok(())
}

/// HTTP: issue a bound runtime session id when the client has none; refuse one it was not
/// issued. Two session headers are left for the enrich phase to refuse.
fn bind_runtime(
    binding: &SessionBinding,
    route: &Route,
    principal: &Principal,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    match single(headers, &SESSION_HEADER) {
        Err(_) => Ok(()),
        Ok(Some(id)) => match binding.verify(&route.name, principal, id.as_bytes()) {
            Some(_) => Ok(()),
            None => Err(mismatch(route, principal)),
        },
        Ok(None) => {
            let fresh = fresh_id();
            let bound = binding
                .bind(&route.name, principal, fresh.as_bytes())
                .ok_or_else(|| mismatch(route, principal))?;
            headers.insert(SESSION_HEADER.clone(), bound);
            Ok(())
        }
    }
}

fn mismatch(route: &Route, principal: &Principal) -> ProxyError {
    let claims = &principal.claims;
    tracing::warn!(
        route = %route.name,
        client_id = claims.client_id().unwrap_or_default(),
        sub = claims.sub().unwrap_or_default(),
        "session id refused: not bound to this caller (another subject's, forged, or issued under another key)"
    );
    ProxyError::SessionNotBound {
        protocol: route.protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Claims;
    use crate::test_support::headers;
    use std::sync::Arc;

    fn principal(iss: &str, sub: Option<&str>, client_id: Option<&str>) -> Principal {
        let json = serde_json::json!({
            "exp": 4102444800_u64, "iss": iss, "sub": sub, "client_id": client_id,
        });
        // An absent claim, not a null one (a null `sub` is refused).
        let json: serde_json::Map<_, _> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let claims = Claims::parse(serde_json::Value::Object(json).to_string().as_bytes()).unwrap();
        Principal {
            claims: Arc::new(claims),
            cache_hit: false,
            kid: None,
            alg: jsonwebtoken::Algorithm::RS256,
        }
    }

    #[test]
    fn session_id_rules() {
        let generated = runtime_id(&HeaderMap::new()).unwrap();
        assert_eq!(generated.len(), 36);
        let ok = "a".repeat(33);
        assert_eq!(
            runtime_id(&headers(&[(
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &ok
            )]))
            .unwrap(),
            ok.as_str()
        );
        let ok = "a".repeat(33);
        assert_eq!(
            runtime_id(&headers(&[(
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &ok
            )]))
            .unwrap(),
            ok
        );
        let ok = format!("user:42.{}-_", "x".repeat(246));
        assert_eq!(ok.len(), 256);
        assert!(
            runtime_id(&headers(&[(
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &ok
            )]))
            .is_ok()
        );
        for bad in [
            "a".repeat(32),
            "a".repeat(257),
            format!("{}/", "a".repeat(40)),
            format!("{} x", "a".repeat(40)),
        ] {
            let err = runtime_id(&headers(&[(
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &bad,
            )]))
            .unwrap_err();
            assert!(matches!(err, ProxyError::BadRequest(_)), "{bad}");
        }
        let two = headers(&[
            (
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &"a".repeat(40),
            ),
            (
                "x-amzn-bedrock-agentcore-runtime-session-id",
                &"b".repeat(40),
            ),
        ]);
        assert!(runtime_id(&two).is_err());
    }

    #[test]
    fn a_bound_id_verifies_only_for_its_caller_route_and_key() {
        let binding = SessionBinding::new(b"k".repeat(32).as_slice());
        let alice = principal("https://idp", Some("alice"), Some("app"));
        let bound = binding.bind("tools", &alice, b"srv-1").unwrap();
        let bytes = bound.as_bytes();
        assert_eq!(bytes.len(), 5 + 1 + TAG_CHARS);
        assert_eq!(binding.verify("tools", &alice, bytes), Some(&b"srv-1"[..]));

        let others = [
            principal("https://idp", Some("bob"), Some("app")),
            principal("https://other-idp", Some("alice"), Some("app")),
            // No `sub`: the client id is the subject.
            principal("https://idp", None, Some("alice")),
        ];
        for other in &others {
            assert_eq!(binding.verify("tools", other, bytes), None);
        }
        assert_eq!(binding.verify("other-route", &alice, bytes), None);
        let other_key = SessionBinding::new(b"j".repeat(32).as_slice());
        assert_eq!(other_key.verify("tools", &alice, bytes), None);
        // The client id stands in for a missing subject, and binds.
        let app = principal("https://idp", None, Some("app"));
        let by_client = binding.bind("tools", &app, b"s").unwrap();
        assert!(
            binding
                .verify("tools", &app, by_client.as_bytes())
                .is_some()
        );
    }

    #[test]
    fn malformed_ids_never_verify() {
        let binding = SessionBinding::new(&[7u8; 32]);
        let alice = principal("https://idp", Some("alice"), None);
        let bound = binding.bind("r", &alice, b"id.with.dots").unwrap();
        let good = bound.as_bytes();
        assert_eq!(
            binding.verify("r", &alice, good),
            Some(&b"id.with.dots"[..])
        );
        let mut no_separator = good.to_vec();
        no_separator[good.len() - TAG_CHARS - 1] = b'.';
        let empty_session = binding.bind("r", &alice, b"").unwrap();
        for bad in [
            &b""[..],
            b"-",
            &good[..good.len() - 1],
            &good[1..],
            &no_separator,
            b"id.with.dots",
        ] {
            assert_eq!(binding.verify("r", &alice, bad), None, "{bad:?}");
        }
        // An empty session id binds like any other (the server chose it).
        assert_eq!(
            binding.verify("r", &alice, empty_session.as_bytes()),
            Some(&b""[..])
        );
    }
}
