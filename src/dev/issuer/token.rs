//! The development issuer's token endpoint: client credentials (RFC 6749 §4.4) and a minimal
//! RFC 8693 token exchange, for `gatehouse dev` and the tests.

use super::*;

/// A minimal OAuth 2.0 client-credentials grant (RFC 6749 §4.4): any client id is accepted
/// (this is a development issuer), `scope` is copied, `resource` (RFC 8707) or `audience`
/// becomes `aud`. Also a minimal RFC 8693 token exchange: the `subject_token` must be a JWT of
/// this issuer (its `iss`; being a development issuer, the signature is not re-checked) and
/// its `sub` is copied, with `act: {sub: <client>}`; an `audience` of `refuse` answers
/// `invalid_grant` (for tests of refusals).
pub(super) async fn token(state: &State, req: Request<Incoming>) -> Response<Body> {
    let bad = |error: &str, description: &str| {
        serve::json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": error, "error_description": description }),
        )
    };
    let basic_client = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(id, _)| id.to_owned()));
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("invalid_request", "body unreadable or over 64 KiB"),
    };
    let form = parse_form(&body);
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let exchange = match get("grant_type").as_deref() {
        Some("client_credentials") => false,
        Some(crate::outbound::client::TOKEN_EXCHANGE_GRANT) => true,
        _ => {
            return bad(
                "unsupported_grant_type",
                "this development issuer supports client_credentials and token exchange",
            );
        }
    };
    let Some(client_id) = get("client_id").or(basic_client) else {
        return bad("invalid_client", "client_id missing");
    };
    let scope = get("scope");
    let mut opts = MintOptions {
        iss: state.issuer(),
        sub: Some(client_id.clone()),
        client_id: Some(client_id.clone()),
        scope: scope.clone(),
        aud: get("resource")
            .or_else(|| get("audience"))
            .into_iter()
            .collect(),
        ..MintOptions::default()
    };
    if exchange {
        let subject = get("subject_token").unwrap_or_default();
        if get("audience").as_deref() == Some("refuse") {
            return bad("invalid_grant", "refused on request");
        }
        let claims = subject
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let Some(claims) = claims.filter(|c| c["iss"] == state.issuer().as_str()) else {
            return bad(
                "invalid_grant",
                "subject_token is not a token of this issuer",
            );
        };
        opts.sub = claims["sub"].as_str().map(str::to_owned);
        opts.claims
            .push(("act".into(), json!({ "sub": client_id })));
    }
    let key = state.knobs().primary.clone();
    match mint(&key, &opts) {
        Ok(token) => serve::json(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": opts.ttl.as_secs(),
                "scope": scope,
            }),
        ),
        Err(e) => serve::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "server_error", "error_description": e.to_string() }),
        ),
    }
}

/// `application/x-www-form-urlencoded` pairs, `+` as space.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
