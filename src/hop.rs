//! Hop-by-hop headers (RFC 9110 §7.6.1): the one list, and the one parser of the `Connection`
//! header's tokens. The forwarder strips them from responses, the enrich phase never copies
//! them (its allowlist excludes them and whatever `Connection` names), and configuration
//! refuses them in allowlists.

use http::header::{self, HeaderMap, HeaderName};

/// The hop-by-hop headers a proxy removes, lowercase.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header name (any case) is hop-by-hop: on the list, or of the `Proxy-*` family.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|start| start.eq_ignore_ascii_case("proxy-"))
}

/// Header names listed in `Connection` (hop-by-hop by declaration).
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect()
}

/// Removes the hop-by-hop headers and those `Connection` names.
pub(crate) fn strip(headers: &mut HeaderMap) {
    for name in connection_tokens(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_named_headers() {
        let h = headers(&[("connection", "keep-alive, X-Custom"), ("x-custom", "1")]);
        let tokens = connection_tokens(&h);
        assert!(tokens.contains(&HeaderName::from_static("x-custom")));
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
    }
}
