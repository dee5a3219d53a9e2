//! Hop-by-hop headers (RFC 9110 §7.6.1): the one list, and the one parser of the `Connection`
//! header's tokens. The forwarder strips them from responses, the enrich phase never copies
//! them (its allowlist excludes them and whatever `Connection` names), and configuration
//! refuses them in allowlists.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// The hop-by-hop headers a proxy removes. `HeaderName`s, not strings: removing by a string
/// parses it again on every response.
pub(crate) static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The position of `name` in [`HOP_BY_HOP`], from its text: a `match` on a string rejects
/// by length first, where comparing a name with each of the nine costs a comparison each,
/// and this runs for every header of every response.
fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "proxy-connection" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Whether a header name (any case) is hop-by-hop: on the list, or of the `Proxy-*` family.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|start| start.eq_ignore_ascii_case("proxy-"))
}

/// Header names listed in `Connection` (hop-by-hop by declaration).
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    let values = headers.get_all(header::CONNECTION);
    tokens(|| values.iter())
}

/// The header names in the `Connection` values `values` iterates.
fn tokens<'a, I>(values: impl Fn() -> I) -> Vec<HeaderName>
where
    I: Iterator<Item = &'a HeaderValue>,
{
    // Answered before any parsing: no `Connection`, or the usual `keep-alive` alone (which
    // names a header on the list anyway), as nearly every response from an upstream carries.
    let mut first_two = values();
    match (first_two.next(), first_two.next()) {
        (None, _) => return Vec::new(),
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") => {
            return Vec::new();
        }
        _ => {}
    }
    values()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual value names a header on the list anyway: no allocation for it.
        .filter(|token| !token.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::try_from(token).ok())
        .collect()
}

/// Removes the hop-by-hop headers and those `Connection` names.
pub(crate) fn strip(headers: &mut HeaderMap) {
    // One pass over the names present (the standard ones compare by their enum), then only
    // those are removed: each removal hashes its name, and a typical response carries one
    // hop-by-hop header (`Connection: keep-alive`), not nine.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection` is first on the list: what it names goes too. Read through its entry, so
    // that when it names nothing else (the usual `keep-alive`) it is removed without hashing
    // its name again; else the named headers go first and then the list, as before.
    if present & 1 != 0
        && let Entry::Occupied(connection) = headers.entry(header::CONNECTION)
    {
        let named = tokens(|| connection.iter());
        if named.is_empty() {
            connection.remove();
            present &= !1;
        }
        for name in named {
            if !HOP_BY_HOP.contains(&name) {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn hop_index_is_the_position_on_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        for name in [header::CONTENT_TYPE, header::SERVER, header::DATE] {
            assert_eq!(hop_index(&name), None);
        }
        assert_eq!(hop_index(&HeaderName::from_static("proxy-foo")), None);
    }

    #[test]
    fn connection_named_headers() {
        let h = headers(&[("connection", "keep-alive, X-Custom"), ("x-custom", "1")]);
        let tokens = connection_tokens(&h);
        assert!(tokens.contains(&HeaderName::from_static("x-custom")));
        assert!(connection_tokens(&headers(&[("connection", "Keep-Alive")])).is_empty());
        assert!(connection_tokens(&headers(&[])).is_empty());
        // A second `Connection` line is read too, whatever the first says.
        let two = headers(&[("connection", "keep-alive"), ("connection", "x-other")]);
        assert_eq!(
            connection_tokens(&two),
            [HeaderName::from_static("x-other")]
        );
    }

    #[test]
    fn strip_removes_the_list_and_what_connection_names() {
        let mut h = headers(&[
            ("connection", "X-Custom"),
            ("x-custom", "1"),
            ("keep-alive", "5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ]);
        strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
        assert!(is_hop_by_hop("Proxy-Foo") && is_hop_by_hop("TE") && !is_hop_by_hop("Accept"));

        // What nginx sends: only `Connection` goes.
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("content-length", "2"),
            ("upgrade", "h2c"),
        ]);
        strip(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["content-length"]);
        // `Connection: keep-alive` alone goes through its entry; what stays keeps its order.
        let mut h = headers(&[
            ("content-type", "text/plain"),
            ("connection", "keep-alive"),
            ("content-length", "2"),
            ("server", "nginx"),
        ]);
        strip(&mut h);
        assert_eq!(
            h.keys().collect::<Vec<_>>(),
            ["content-type", "server", "content-length"]
        );
        let mut none = headers(&[("content-type", "text/plain")]);
        strip(&mut none);
        assert_eq!(none.len(), 1);
    }
}
