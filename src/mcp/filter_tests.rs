//! Unit tests of list filtering: the JSON rewrite, SSE event boundaries, whole bodies.

use super::*;
use http_body_util::BodyExt;
use serde::de::{Deserializer, MapAccess, Visitor};

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

/// The rewrite before it was done in one pass (member by member, each level parsed again and
/// re-serialised), kept as the oracle: the one-pass rewrite must give the same bytes.
fn member_by_member(filter: &ListFilter, message: &[u8]) -> Option<Vec<u8>> {
    type Owned = Vec<(String, Box<RawValue>)>;
    struct Ordered(Owned);
    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Ordered;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                        out.push(entry);
                    }
                    Ok(Ordered(out))
                }
            }
            de.deserialize_map(V)
        }
    }
    fn write(members: &Owned, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, k).unwrap();
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
    let mut top = serde_json::from_slice::<Ordered>(message).ok()?.0;
    let ours = top.iter().any(|(k, v)| {
        k == "id" && serde_json::from_str::<Value>(v.get()).ok().as_ref() == Some(&filter.id)
    });
    if !ours {
        return None;
    }
    for (key, value) in &mut top {
        if key != "result" {
            continue;
        }
        let Ok(Ordered(mut result)) = serde_json::from_str::<Ordered>(value.get()) else {
            continue;
        };
        for (member, entries) in &mut result {
            if member != filter.kind.member() {
                continue;
            }
            let Ok(list) = serde_json::from_str::<Vec<Box<RawValue>>>(entries.get()) else {
                continue;
            };
            let kept: Vec<Box<RawValue>> = list
                .into_iter()
                .filter(|entry| {
                    #[derive(Deserialize)]
                    struct Named {
                        name: Option<String>,
                        uri: Option<String>,
                    }
                    let Ok(named) = serde_json::from_str::<Named>(entry.get()) else {
                        return false;
                    };
                    let name = match filter.kind {
                        ListKind::Resources => named.uri,
                        _ => named.name,
                    };
                    name.is_some_and(|n| filter.keep.keeps(filter.kind, &n))
                })
                .collect();
            *entries = RawValue::from_string(serde_json::to_string(&kept).unwrap()).unwrap();
        }
        let mut bytes = Vec::new();
        write(&result, &mut bytes);
        *value = RawValue::from_string(String::from_utf8(bytes).unwrap()).unwrap();
    }
    let mut out = Vec::new();
    write(&top, &mut out);
    Some(out)
}

/// Shapes the one-pass reader does not take (a `result` that is no object, a list that is no
/// array, a number serde_json cannot hold where it would look) and tricks on the usual shape:
/// the rewrite is byte for byte the member-by-member one.
#[test]
fn same_bytes_as_member_by_member() {
    let cases = [
        LIST,
        r#" { "jsonrpc" : "2.0" , "id" : 2 , "result" : { "tools" : [ { "name" : "a" } , { "name" : "admin_x" } ] , "x" : [1, 2] } } "#,
        r#"{"id":2,"result":"not an object"}"#,
        r#"{"id":2,"result":{"tools":"not an array","other":1}}"#,
        r#"{"id":2,"result":{"tools":{"name":"a"}}}"#,
        r#"{"id":2,"result":{"tools":[{"name":"a","big":1e400},{"name":"admin"}],"n":1e400}}"#,
        r#"{"id":2,"result":1e400}"#,
        r#"{"id":2,"result":{"tools":[{"name":"a"}]},"result":{"tools":[{"name":"admin_b"},{"name":"c"}]}}"#,
        r#"{"id":2,"result":{"tools":[{"name":"a"}],"tools":[{"name":"admin_b"},{"name":"c"}]}}"#,
        r#"{"i\u0064":2,"\u0072esult":{"t\u006fols":[{"n\u0061me":"adm\u0069n_x"},{"name":"\u00e9t\u00e9 \"q\" \\ /"},{"name":"\ud83d\ude00"}]}}"#,
        r#"{"id":2,"result":{"tools":[{"name":"a","name":"b"},{"name":5},{"name":null},["x","y"],["admin_z","q"],["x"],7,"s",{"uri":"u"}]}}"#,
        r#"{"id":2.0,"result":{"tools":[]}}"#,
        r#"{"id":2,"id":3,"result":{"tools":[{"name":"admin"}]}}"#,
        r#"{"id":2,"result":{"tools":[{"name":"a","d":{"deep":[[[[{"x":"\u0000"}]]]]}}]}}"#,
        r#"{"id":2,"result":{"tools":[]}} trailing"#,
        r#"{"id":2,"result":{"tools":[]}"#,
        r#"[{"id":2}]"#,
        r#"{"id":2,"result":{"tools":[{"name":"a"}],}}"#,
        "{\"id\":2,\"result\":{\"tools\":[{\"name\":\"caf\u{e9}\"}]}}",
    ];
    let deep = format!(
        r#"{{"id":2,"result":{{"tools":[{{"name":"a","x":{}{}}}]}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
        for case in cases.iter().copied().chain([deep.as_str()]) {
            let f = filter(kind);
            let ours = f.rewrite(case.as_bytes());
            assert_eq!(
                ours.as_deref().map(String::from_utf8_lossy),
                member_by_member(&f, case.as_bytes())
                    .as_deref()
                    .map(String::from_utf8_lossy),
                "{kind:?} {case}"
            );
        }
    }
    // Invalid UTF-8 inside a string: not JSON, not rewritten.
    let mut bad = br#"{"id":2,"result":{"tools":[{"name":"a","d":"x"}]}}"#.to_vec();
    let at = bad.iter().position(|&b| b == b'x').unwrap();
    bad[at] = 0xff;
    assert_eq!(filter(ListKind::Tools).rewrite(&bad), None);
    assert_eq!(member_by_member(&filter(ListKind::Tools), &bad), None);
}
