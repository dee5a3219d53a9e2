//! Unit tests of list filtering: the JSON rewrite, SSE event boundaries, whole bodies.

use super::*;
use http_body_util::BodyExt;

struct Prefix(&'static str);
impl Keep for Prefix {
    fn keeps(&self, _: ListKind, name: &str) -> bool {
        !name.starts_with(self.0)
    }
}

fn filter(kind: ListKind) -> ListFilter {
    ListFilter {
        kind,
        id: Value::from(2),
        keep: Arc::new(Prefix("admin_")),
    }
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}},{"name":"admin_wipe","description":"x"},{"description":"nameless"}],"nextCursor":"c2"}}"#;

#[test]
fn rewrites_only_the_list_response() {
    let out = filter(ListKind::Tools).rewrite(LIST.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}}],"nextCursor":"c2"}}"#
    );
    // Another id, a notification, an error: not ours.
    assert!(
        filter(ListKind::Tools)
            .rewrite(LIST.replace(r#""id":2"#, r#""id":"2""#).as_bytes())
            .is_none()
    );
    assert!(
        filter(ListKind::Tools)
            .rewrite(br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#)
            .is_none()
    );
    let error = br#"{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"m"}}"#;
    assert_eq!(
        filter(ListKind::Tools).rewrite(error).unwrap(),
        error.to_vec()
    );
    // Resources by uri; prompts by name.
    let resources = br#"{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"admin_x"},{"uri":"file:///a","name":"admin_but_uri_counts"}]}}"#;
    assert_eq!(
        String::from_utf8(filter(ListKind::Resources).rewrite(resources).unwrap()).unwrap(),
        r#"{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"file:///a","name":"admin_but_uri_counts"}]}}"#
    );
}

fn sse_body(
    frames: Vec<&'static str>,
) -> impl Body<Data = Bytes, Error = BoxError> + Send + 'static {
    let stream = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<_, BoxError>(Frame::data(Bytes::from(f)))),
    );
    http_body_util::StreamBody::new(stream)
}

#[tokio::test]
async fn sse_rewrites_one_event_and_passes_the_rest() {
    let list_event: &'static str =
        Box::leak(format!("event: message\r\nid: 9\r\ndata: {LIST}\r\n\r\n").into_boxed_str());
    let frames = vec![
        ": keep-alive\n\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n",
        "\n",
        Box::leak(list_event[..20].to_owned().into_boxed_str()),
        Box::leak(
            format!(
                "{}data: {{\"jsonrpc\":\"2.0\",\"method\":\"x\"}}\n\n",
                &list_event[20..]
            )
            .into_boxed_str(),
        ),
        "data: tail",
    ];
    let mut body = filter(ListKind::Tools)
        .wrap(sse_body(frames), b"text/event-stream", None)
        .ok()
        .unwrap();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        out.push(String::from_utf8(frame.unwrap().into_data().unwrap().to_vec()).unwrap());
    }
    assert_eq!(out[0], ": keep-alive\n\n");
    assert_eq!(
        out[1],
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n"
    );
    assert!(out[2].starts_with("event: message\nid: 9\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"get_weather\""), "{out:?}");
    assert!(!out[2].contains("admin_wipe"));
    assert!(
        out[2].ends_with("\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n"),
        "{out:?}"
    );
    assert_eq!(out[3], "data: tail");
    assert_eq!(out.len(), 4);
}

#[tokio::test]
async fn json_body_is_rewritten_whole() {
    let body = sse_body(vec![&LIST[..30], &LIST[30..]]);
    let body = filter(ListKind::Tools)
        .wrap(body, b"application/json; charset=utf-8", Some(b"identity"))
        .ok()
        .unwrap();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("admin_wipe"));
    assert!(String::from_utf8_lossy(&bytes).contains("get_weather"));
    // Another content type is not touched.
    assert!(
        filter(ListKind::Tools)
            .wrap(sse_body(vec![LIST]), b"text/plain", None)
            .is_err()
    );
    // Compressed: the body fails rather than pass unfiltered.
    let body = filter(ListKind::Tools)
        .wrap(sse_body(vec![LIST]), b"application/json", Some(b"gzip"))
        .ok()
        .unwrap();
    assert!(body.collect().await.is_err());
}

#[test]
fn event_boundaries() {
    assert_eq!(event_end(b"data: a\n\nrest"), Some(9));
    assert_eq!(event_end(b"data: a\r\n\r\nrest"), Some(11));
    assert_eq!(event_end(b"data: a\n"), None);
    assert_eq!(event_end(b"data: a\r"), None);
    assert_eq!(event_end(b"\n"), Some(1));
    assert_eq!(
        event_data(b"event: m\ndata: {\"a\":\ndata:1}\n\n").unwrap(),
        b"{\"a\":\n1}"
    );
    assert!(event_data(b": comment\n\n").is_none());
}
