//! Unit tests of the JSON-RPC reader: shapes, hostile inputs, mirrored headers, bounded reads.

use super::*;
use http::HeaderValue;
use http_body_util::{Full, StreamBody};

fn code(bytes: &str) -> i32 {
    match parse(bytes.as_bytes()) {
        Err(ReadError::Invalid { code, .. }) => code,
        other => panic!("{bytes}: {other:?}"),
    }
}

#[test]
fn requests_notifications_and_responses() {
    let m = parse(br#"{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"billing_refund","arguments":{"amount":5}}}"#).unwrap();
    assert_eq!(m.method.as_deref(), Some("tools/call"));
    assert_eq!(m.tool(), Some("billing_refund"));
    assert_eq!(m.id.as_ref().unwrap().get(), r#""a-1""#);
    assert_eq!(m.arguments.as_ref().unwrap().get(), r#"{"amount":5}"#);

    let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert!(m.id.is_none() && m.name.is_none());

    let m = parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
    assert!(m.method.is_none());
    assert_eq!(m.id.unwrap().get(), "3");

    let m = parse(
        br#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"file:///a"}}"#,
    )
    .unwrap();
    assert_eq!(m.name.as_deref(), Some("file:///a"));
    assert_eq!(m.tool(), None);

    // Unknown members and _meta are fine, and stay in the forwarded bytes.
    let m = parse(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"x":[1,2]}},"extra":1}"#).unwrap();
    assert_eq!(m.method.as_deref(), Some("tools/list"));
}

#[test]
fn garbage_and_batches() {
    assert_eq!(code("not json"), PARSE_ERROR);
    assert_eq!(code(""), PARSE_ERROR);
    assert_eq!(code(r#"{"jsonrpc":"2.0","method":"x"} {}"#), PARSE_ERROR);
    assert_eq!(
        code(r#"  [{"jsonrpc":"2.0","method":"x"}]"#),
        INVALID_REQUEST
    );
    assert_eq!(code("42"), INVALID_REQUEST);
    assert_eq!(code(r#""tools/call""#), INVALID_REQUEST);
    assert_eq!(code(r#"{"method":"x"}"#), INVALID_REQUEST);
    assert_eq!(code(r#"{"jsonrpc":"1.0","method":"x"}"#), INVALID_REQUEST);
    assert_eq!(code(r#"{"jsonrpc":"2.0","method":7}"#), INVALID_REQUEST);
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#),
        INVALID_REQUEST
    );
    assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), INVALID_REQUEST);
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"x","result":1}"#),
        INVALID_REQUEST
    );
}

#[test]
fn duplicate_members_are_refused() {
    assert_eq!(
        code(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#
        ),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","name":"admin_wipe"}}"#
        ),
        INVALID_REQUEST
    );
    assert_eq!(
        code(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#
        ),
        INVALID_REQUEST
    );
    // An escaped spelling is the same member name once decoded.
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","\u006dethod":"tools/call"}"#),
        INVALID_REQUEST
    );
}

#[test]
fn hostile_params_and_names() {
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["admin_wipe"]}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin\u0000"}}"#),
        INVALID_PARAMS
    );
    assert_eq!(
        code(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}"#
        ),
        INVALID_PARAMS
    );
    // A look-alike is a different name, exactly as the server sees it.
    let m = parse(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"аdmin_wipe"}}"#
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(m.tool(), Some("\u{430}dmin_wipe"));
    // Deep nesting where the edge does not look is skipped without recursion (it stays
    // raw, for the server to judge); unbalanced, it is a parse error.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"x":{}{}}}}},"extra":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000),
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000),
    );
    assert_eq!(parse(deep.as_bytes()).unwrap().tool(), Some("a"));
    let unbalanced = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"x":{}}}}}"#,
        "[".repeat(100_000)
    );
    assert_eq!(code(&unbalanced), PARSE_ERROR);
    // Huge numbers: an id is echoed as written; a number JSON cannot hold is a parse error.
    let m =
        parse(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#).unwrap();
    assert_eq!(m.id.unwrap().get(), "123456789012345678901234567890");
    for id in ["1e400", "1.5", "-0.0"] {
        let json = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        assert_eq!(code(&json), INVALID_REQUEST, "{id}");
    }
    assert!(parse(br#"{"jsonrpc":"2.0","id":-3,"method":"ping"}"#).is_ok());
}

fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn mirrored_headers_must_agree() {
    let m =
        parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}"#)
            .unwrap();
    assert!(check_headers(&HeaderMap::new(), &m).is_ok());
    let ok = headers(&[
        (&MCP_METHOD_HEADER, "tools/call"),
        (&MCP_NAME_HEADER, "get_weather"),
    ]);
    assert!(check_headers(&ok, &m).is_ok());
    for bad in [
        headers(&[(&MCP_METHOD_HEADER, "tools/list")]),
        headers(&[(&MCP_NAME_HEADER, "billing_refund")]),
        headers(&[
            (&MCP_NAME_HEADER, "get_weather"),
            (&MCP_NAME_HEADER, "get_weather"),
        ]),
        headers(&[(&MCP_METHOD_HEADER, "TOOLS/CALL")]),
    ] {
        match check_headers(&bad, &m) {
            Err(ReadError::Invalid { code, id, .. }) => {
                assert_eq!(code, HEADER_MISMATCH);
                assert_eq!(id.unwrap().get(), "1");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Non-ASCII names travel base64-encoded.
    let m = parse(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"météo"}}"#.as_bytes(),
    )
    .unwrap();
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("météo")
    );
    assert!(check_headers(&headers(&[(&MCP_NAME_HEADER, &encoded)]), &m).is_ok());
    let other = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("meteo")
    );
    assert!(check_headers(&headers(&[(&MCP_NAME_HEADER, &other)]), &m).is_err());
    // A name header on a message without a name.
    let list = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    assert!(check_headers(&headers(&[(&MCP_NAME_HEADER, "x")]), &list).is_err());
}

#[tokio::test]
async fn bounded_collect() {
    let body = Full::new(Bytes::from_static(b"0123456789"));
    assert_eq!(collect(body, 10).await.unwrap(), "0123456789");
    let body = Full::new(Bytes::from_static(b"0123456789"));
    assert!(matches!(
        collect(body, 9).await,
        Err(ReadError::TooLarge { limit: 9 })
    ));
    // Streamed in pieces without a declared length: stops once over.
    let chunks = futures_util::stream::iter(
        ["ab", "cd", "ef"]
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c)))),
    );
    assert_eq!(collect(StreamBody::new(chunks), 6).await.unwrap(), "abcdef");
    let chunks = futures_util::stream::iter(
        ["ab", "cd", "ef"]
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c)))),
    );
    assert!(collect(StreamBody::new(chunks), 5).await.is_err());
}
