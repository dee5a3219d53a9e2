//! Small parsers for the value syntaxes the rules need: listen addresses, http(s) URLs,
//! browser origins and AgentCore runtime ARNs. Pure functions; each error says what was
//! expected. Hand-written rather than regex-based: the patterns are short and this keeps
//! the crate free of a regex engine.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A listener: `ip:port`, `[v6]:port` or `localhost:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listen {
    /// `None` for `localhost` (both loopback addresses).
    pub(super) ip: Option<IpAddr>,
    pub(super) port: u16,
}

impl Listen {
    /// Whether binding both would clash: same port and overlapping addresses.
    pub(super) fn overlaps(&self, other: &Listen) -> bool {
        if self.port != other.port || self.port == 0 {
            return false;
        }
        let ips = |l: &Listen| -> Vec<IpAddr> {
            l.ip.map_or_else(
                || {
                    vec![
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ]
                },
                |ip| vec![ip],
            )
        };
        // A wildcard covers its own family; `[::]` also covers IPv4, because sockets are
        // dual-stack by default (binding `[::]:p` and `0.0.0.0:p` together fails).
        let covers = |a: &IpAddr, b: &IpAddr| {
            a == b || (a.is_unspecified() && (a.is_ipv6() || a.is_ipv4() == b.is_ipv4()))
        };
        ips(self)
            .iter()
            .any(|a| ips(other).iter().any(|b| covers(a, b) || covers(b, a)))
    }
}

pub(super) fn parse_listen(text: &str) -> Result<Listen, String> {
    let usage = || {
        format!(
            "{text:?} is not a listen address: write ip:port, [ipv6]:port or localhost:port (e.g. 0.0.0.0:8080)"
        )
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Listen {
            ip: Some(addr.ip()),
            port: addr.port(),
        });
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
    if !host.eq_ignore_ascii_case("localhost") {
        return Err(usage());
    }
    let port = port.parse::<u16>().map_err(|_| usage())?;
    Ok(Listen { ip: None, port })
}

/// An absolute `http` or `https` URL, split as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HttpUrl {
    pub(super) https: bool,
    /// Without IPv6 brackets.
    pub(super) host: String,
    pub(super) path: String,
}

/// Parses an absolute http(s) URL with a host and without query, fragment or credentials.
pub(super) fn parse_http_url(text: &str) -> Result<HttpUrl, String> {
    let usage = || {
        format!("{text:?} is not an absolute http(s) URL: write it like https://host[:port][/path]")
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?} contains spaces or control characters: remove them"
        ));
    }
    let scheme_end = text.find("://").ok_or_else(usage)?;
    let https = match text[..scheme_end].to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        other => {
            return Err(format!(
                "{text:?} has scheme {other:?}: only http and https URLs are supported"
            ));
        }
    };
    if text.contains('#') {
        return Err(format!("{text:?} has a fragment (#...): remove it"));
    }
    if text.contains('?') {
        return Err(format!("{text:?} has a query (?...): remove it"));
    }
    let uri: http::Uri = text.parse().map_err(|_| usage())?;
    let authority = uri.authority().ok_or_else(usage)?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} has credentials in the URL: remove user:password@ (use headers for credentials)"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(usage());
    }
    // http::Uri accepts any digits after ':'; a port must also fit in 16 bits.
    if let Some(port) = authority.as_str().rsplit_once(':').map(|(_, p)| p)
        && !authority.as_str().ends_with(']')
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{text:?} has an invalid port: use 1 to 65535"));
    }
    Ok(HttpUrl {
        https,
        host: host.to_owned(),
        path: uri.path().to_owned(),
    })
}

/// Loopback hosts, where plain http cannot be intercepted on the network.
pub(super) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A browser origin: `scheme://host[:port]`, no path.
pub(super) fn check_origin(text: &str) -> Result<(), String> {
    let usage = || {
        format!(
            "{text:?} is not an origin: write scheme://host[:port] with no path or trailing slash (e.g. https://app.example.com), or \"*\" for any origin"
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(usage)?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok
        || rest.is_empty()
        || rest
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | ' ') || c.is_control())
    {
        return Err(usage());
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6.split_once(']').ok_or_else(usage)?;
            ip.parse::<Ipv6Addr>().map_err(|_| usage())?;
            (ip, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(usage());
    }
    Ok(())
}

/// `^arn:aws(-[^:]+)?:bedrock-agentcore:[a-z0-9-]+:[0-9]{12}:runtime/[a-zA-Z][a-zA-Z0-9_]{0,47}-[a-zA-Z0-9]{10}$`
/// (AgentCore's runtime ARN); returns the region.
pub(super) fn parse_runtime_arn(text: &str) -> Result<&str, String> {
    let usage = || {
        format!(
            "{text:?} is not an AgentCore runtime ARN: expected arn:aws:bedrock-agentcore:REGION:ACCOUNT:runtime/NAME-XXXXXXXXXX (e.g. arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj)"
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    let [arn, partition, service, region, account, resource] = parts.as_slice() else {
        return Err(usage());
    };
    let partition_ok = *partition == "aws"
        || partition
            .strip_prefix("aws-")
            .is_some_and(|p| !p.is_empty());
    let region_ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    let resource_ok = resource
        .strip_prefix("runtime/")
        .and_then(|id| id.rsplit_once('-'))
        .is_some_and(|(name, suffix)| {
            let mut name_chars = name.chars();
            name_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.len() <= 48
                && name_chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && suffix.len() == 10
                && suffix.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if *arn == "arn"
        && partition_ok
        && *service == "bedrock-agentcore"
        && region_ok
        && account_ok
        && resource_ok
    {
        Ok(region)
    } else {
        Err(usage())
    }
}

/// RFC 7230 `token`: header field names, baggage keys.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '!' | '#'
                        | '$'
                        | '%'
                        | '&'
                        | '\''
                        | '*'
                        | '+'
                        | '-'
                        | '.'
                        | '^'
                        | '_'
                        | '`'
                        | '|'
                        | '~'
                )
        })
}

/// A duration as the file would write it: `250ms`, `30s`, `5m`, `1h30m`.
pub(super) fn show_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0".to_owned();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let mut secs = millis / 1000;
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("0.0.0.0:8080"),
            Ok(Listen {
                ip: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: 8080
            })
        );
        assert!(parse_listen("[::1]:9901").is_ok());
        assert_eq!(
            parse_listen("localhost:80"),
            Ok(Listen { ip: None, port: 80 })
        );
        for bad in [
            "8080",
            ":8080",
            "example.com:80",
            "1.2.3.4",
            "1.2.3.4:99999",
            "localhost",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        let all = parse_listen("0.0.0.0:8080").unwrap();
        let lo = parse_listen("127.0.0.1:8080").unwrap();
        let local = parse_listen("localhost:8080").unwrap();
        assert!(all.overlaps(&lo) && lo.overlaps(&local) && local.overlaps(&all));
        assert!(!lo.overlaps(&parse_listen("127.0.0.2:8080").unwrap()));
        let v6_all = parse_listen("[::]:8080").unwrap();
        let v6_lo = parse_listen("[::1]:8080").unwrap();
        assert!(v6_all.overlaps(&all) && v6_all.overlaps(&lo) && v6_all.overlaps(&v6_lo));
        assert!(!all.overlaps(&v6_lo) && local.overlaps(&v6_lo));
        assert!(!lo.overlaps(&parse_listen("127.0.0.1:8081").unwrap()));
        assert!(
            !parse_listen("127.0.0.1:0")
                .unwrap()
                .overlaps(&parse_listen("0.0.0.0:0").unwrap())
        );
    }

    #[test]
    fn http_urls() {
        let u = parse_http_url("https://Example.com:8443/a/b").unwrap();
        assert!(u.https);
        assert_eq!(u.host, "Example.com");
        assert_eq!(u.path, "/a/b");
        assert_eq!(parse_http_url("http://[::1]:80").unwrap().host, "::1");
        let cases = [
            ("ftp://x", "only http and https"),
            ("example.com", "not an absolute"),
            ("https://", "not an absolute"),
            ("https://x/y?q=1", "query"),
            ("https://x/y#f", "fragment"),
            ("https://u:p@x", "credentials"),
            ("https://x:99999", "invalid port"),
            ("http://x:0", "invalid port"),
            ("https://x y", "spaces"),
        ];
        for (bad, why) in cases {
            let err = parse_http_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            is_loopback_host("localhost")
                && is_loopback_host("127.9.0.1")
                && is_loopback_host("::1")
        );
        assert!(!is_loopback_host("10.0.0.1") && !is_loopback_host("localhost.example.com"));
    }

    #[test]
    fn origins() {
        for ok in [
            "https://a.example.com",
            "http://localhost:3000",
            "http://[::1]:80",
            "vscode-webview://abc",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://a.example.com/",
            "https://a/b",
            "a.example.com",
            "https://",
            "https://a:x",
            "*.example.com",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runtime_arns() {
        assert_eq!(
            parse_runtime_arn(
                "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj"
            ),
            Ok("us-east-1")
        );
        assert!(
            parse_runtime_arn(
                "arn:aws-us-gov:bedrock-agentcore:us-gov-west-1:123456789012:runtime/a_b-0123456789"
            )
            .is_ok()
        );
        for bad in [
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhI",
            "arn:aws:bedrock-agentcore:us-east-1:12345678901:runtime/support-AbCdEfGhIj",
            "arn:aws:bedrock:us-east-1:123456789012:runtime/support-AbCdEfGhIj",
            "arn:aws:bedrock-agentcore:US-EAST-1:123456789012:runtime/support-AbCdEfGhIj",
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/9support-AbCdEfGhIj",
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/sup-port-AbCdEfGhIj",
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/support-AbCdEfGhIj",
            "arn:aws-:bedrock-agentcore:us-east-1:123456789012:runtime/support-AbCdEfGhIj",
        ] {
            assert!(parse_runtime_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_and_durations() {
        assert!(
            is_token("enduser.id") && is_token("X-Tenant") && !is_token("a b") && !is_token("")
        );
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::ZERO), "0");
    }
}
