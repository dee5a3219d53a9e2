//! Quota rules as the request path uses them: a rate (`25/s`) with its burst, an optional
//! concurrency limit, which parts of a request make the key (`client_id`, `sub`, `route`,
//! `ip`, `tool`, `claim:<name>`), and for MCP routes which messages count (`match`).
//!
//! Parsing lives here so that `validate` and the compiled settings read the same text the same
//! way. A key is built per request into one string, its parts separated by `:` and escaped
//! (`%` → `%25`, `:` → `%3A`), so two different requests never share a key by accident and the
//! Redis keys stay readable in `redis-cli`.
//!
//! ```
//! use gatehouse::quota::rules::{KeyPart, Rate};
//! let rate = Rate::parse("25/s").unwrap();
//! assert_eq!((rate.count, rate.window_secs()), (25, 1));
//! assert_eq!(KeyPart::parse("claim:tenant"), Ok(KeyPart::Claim("tenant".into())));
//! ```

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::auth::Principal;
use crate::auth::claims::Claim;
use crate::mcp::McpMessage;

/// `N/s`, `N/m` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Per,
}

/// The unit of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Rate {
    /// Parses `25/s`, `400/m`, `1000/h` (also `/sec`, `/min`, `/hour`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (count, unit) = text.trim().split_once('/').ok_or_else(|| {
            format!("rate {text:?} has no unit: write it like \"25/s\", \"400/m\" or \"1000/h\"")
        })?;
        let count: u32 = count.trim().parse().map_err(|_| {
            format!("rate {text:?} must start with a whole number of requests (1 to 4294967295)")
        })?;
        if count == 0 {
            return Err(format!(
                "rate {text:?} allows nothing: use at least 1 (remove the rule to stop limiting)"
            ));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            other => {
                return Err(format!(
                    "rate {text:?} has unknown unit {other:?}: use s, m or h"
                ));
            }
        };
        Ok(Self { count, per })
    }

    /// The window the count is for, in seconds (`w` of `RateLimit-Policy`).
    pub fn window_secs(self) -> u64 {
        match self.per {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }

    /// The time one request's worth of quota takes to come back (GCRA's emission interval).
    pub fn emission_interval(self) -> Duration {
        Duration::from_secs(self.window_secs()) / self.count
    }
}

/// One part of a rule's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    ClientId,
    Sub,
    Route,
    /// The client's address (IPv6: its /64, which one host usually owns whole).
    Ip,
    /// The `tools/call` tool (MCP routes).
    Tool,
    /// Any claim of the token, by name.
    Claim(String),
}

impl KeyPart {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "client_id" => Self::ClientId,
            "sub" => Self::Sub,
            "route" => Self::Route,
            "ip" => Self::Ip,
            "tool" => Self::Tool,
            _ => match text.strip_prefix("claim:") {
                Some(name) if !name.is_empty() => Self::Claim(name.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown key part {text:?}: use client_id, sub, route, ip, tool or claim:<name>"
                    ));
                }
            },
        })
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    pub fn matches(&self, text: &str) -> bool {
        let mut parts = self.0.split('*');
        let Some(first) = parts.next() else {
            return true;
        };
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*`: an exact match.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// `match: { method, name }`: which MCP messages a rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMatch {
    pub method: Option<Glob>,
    pub name: Option<Glob>,
}

impl MessageMatch {
    /// A request without a message (GET, DELETE, or a route whose messages are not read)
    /// matches nothing.
    pub fn matches(&self, message: Option<&McpMessage>) -> bool {
        let Some(message) = message else {
            return false;
        };
        let fits = |glob: &Option<Glob>, value: Option<&str>| match glob {
            None => true,
            Some(glob) => value.is_some_and(|v| glob.matches(v)),
        };
        fits(&self.method, message.method.as_deref()) && fits(&self.name, message.name.as_deref())
    }
}

/// What a key is built from: the request as the phases before quotas left it.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub route: &'a str,
    pub principal: Option<&'a Principal>,
    pub ip: IpAddr,
    pub message: Option<&'a McpMessage>,
}

/// The address a per-address budget is kept for: IPv4 as is, IPv6 by /64, the block one host
/// (or one customer) usually owns whole, so rotating through it gains nothing.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Builds the key of `parts` for one request into `out` (cleared first). `false` when the rule
/// does not apply: it is keyed on `tool` and the request calls no tool.
///
/// A claim the token lacks is the empty value: every caller without it shares one bucket,
/// so leaving a claim out never escapes a limit.
pub fn build_key(parts: &[KeyPart], input: &KeyInput<'_>, out: &mut String) -> bool {
    out.clear();
    let claims = input.principal.map(|p| &*p.claims);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        match part {
            KeyPart::ClientId => escape(claims.and_then(|c| c.client_id()), out),
            KeyPart::Sub => escape(claims.and_then(|c| c.sub()), out),
            KeyPart::Route => escape(Some(input.route), out),
            KeyPart::Ip => {
                let start = out.len();
                let _ = write!(out, "{}", address_key(input.ip));
                // IPv6 text has colons: escaped like any value.
                if out[start..].contains(':') {
                    let text = out.split_off(start);
                    escape(Some(&text), out);
                }
            }
            KeyPart::Tool => match input.message.and_then(McpMessage::tool) {
                Some(tool) => escape(Some(tool), out),
                None => return false,
            },
            KeyPart::Claim(name) => match claims.and_then(|c| c.get(name)) {
                None | Some(Claim::Json(Value::Null)) => {}
                Some(Claim::String(s)) => escape(Some(s), out),
                // Numbers, booleans, arrays: their JSON text, as stable as the token.
                Some(Claim::Json(other)) => escape(Some(&other.to_string()), out),
            },
        }
    }
    true
}

fn escape(value: Option<&str>, out: &mut String) {
    let Some(value) = value else { return };
    if !value.contains([':', '%']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            ':' => out.push_str("%3A"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::claims::Claims;

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("25/s"),
            Ok(Rate {
                count: 25,
                per: Per::Second
            })
        );
        assert_eq!(Rate::parse("400/m").unwrap().window_secs(), 60);
        assert_eq!(Rate::parse(" 10 / hour ").unwrap().window_secs(), 3600);
        assert_eq!(
            Rate::parse("4/s").unwrap().emission_interval(),
            Duration::from_millis(250)
        );
        assert!(Rate::parse("25").unwrap_err().contains("no unit"));
        assert!(Rate::parse("0/s").unwrap_err().contains("at least 1"));
        assert!(Rate::parse("x/s").unwrap_err().contains("whole number"));
        assert!(Rate::parse("-1/s").is_err());
        assert!(Rate::parse("5/d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn key_parts() {
        assert_eq!(KeyPart::parse("client_id"), Ok(KeyPart::ClientId));
        assert_eq!(KeyPart::parse("tool"), Ok(KeyPart::Tool));
        assert_eq!(
            KeyPart::parse("claim:cognito:groups"),
            Ok(KeyPart::Claim("cognito:groups".into()))
        );
        assert!(KeyPart::parse("claim:").is_err());
        assert!(KeyPart::parse("user").unwrap_err().contains("client_id"));
    }

    #[test]
    fn globs() {
        let g = Glob::new("search_*");
        assert!(g.matches("search_docs"));
        assert!(g.matches("search_"));
        assert!(!g.matches("research_docs"));
        assert!(Glob::new("tools/call").matches("tools/call"));
        assert!(!Glob::new("tools/call").matches("tools/callx"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a*b*c").matches("abc"));
        assert!(Glob::new("a*b*c").matches("a-b-b-c"));
        assert!(!Glob::new("a*b*c").matches("a-c-b"));
        assert!(!Glob::new("ab*ba").matches("aba"));
    }

    fn principal(json: &str) -> Principal {
        Principal {
            claims: Arc::new(Claims::parse(json.as_bytes()).unwrap()),
            cache_hit: true,
            kid: None,
            alg: jsonwebtoken::Algorithm::RS256,
        }
    }

    fn message(method: &str, name: Option<&str>) -> McpMessage {
        McpMessage {
            method: Some(method.into()),
            name: name.map(Into::into),
            id: None,
            arguments: None,
        }
    }

    #[test]
    fn keys() {
        let p = principal(
            r#"{"iss":"i","sub":"u:1","client_id":"app","tenant":"t%1","level":3,"exp":1}"#,
        );
        let call = message("tools/call", Some("search"));
        let input = KeyInput {
            route: "support",
            principal: Some(&p),
            ip: "2001:db8:1:2:3:4:5:6".parse().unwrap(),
            message: Some(&call),
        };
        let mut key = String::new();
        let parts = [
            KeyPart::ClientId,
            KeyPart::Sub,
            KeyPart::Route,
            KeyPart::Ip,
            KeyPart::Tool,
            KeyPart::Claim("tenant".into()),
            KeyPart::Claim("level".into()),
            KeyPart::Claim("absent".into()),
        ];
        assert!(build_key(&parts, &input, &mut key));
        assert_eq!(
            key,
            "app:u%3A1:support:2001%3Adb8%3A1%3A2%3A%3A:search:t%251:3:"
        );

        // No tool: a tool-keyed rule does not apply; other rules still do.
        let list = message("tools/list", None);
        let input = KeyInput {
            message: Some(&list),
            ..input
        };
        assert!(!build_key(&[KeyPart::Tool], &input, &mut key));
        let input = KeyInput {
            message: None,
            ..input
        };
        assert!(!build_key(&[KeyPart::Tool], &input, &mut key));
        // No principal (authorizerType NONE): identity parts are empty, shared.
        let input = KeyInput {
            principal: None,
            ip: "10.0.0.1".parse().unwrap(),
            ..input
        };
        assert!(build_key(
            &[KeyPart::ClientId, KeyPart::Ip],
            &input,
            &mut key
        ));
        assert_eq!(key, ":10.0.0.1");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address_key("2001:db8::1".parse().unwrap()),
            address_key("2001:db8::ffff:1".parse().unwrap())
        );
        assert_ne!(
            address_key("2001:db8:0:1::1".parse().unwrap()),
            address_key("2001:db8:0:2::1".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn message_matches() {
        let m = MessageMatch {
            method: Some(Glob::new("tools/call")),
            name: Some(Glob::new("search_*")),
        };
        assert!(m.matches(Some(&message("tools/call", Some("search_web")))));
        assert!(!m.matches(Some(&message("tools/call", Some("billing")))));
        assert!(!m.matches(Some(&message("tools/list", None))));
        assert!(!m.matches(None));
        let any_initialize = MessageMatch {
            method: Some(Glob::new("initialize")),
            name: None,
        };
        assert!(any_initialize.matches(Some(&message("initialize", None))));
    }
}
