//! `mcp.rules`: the first rule whose `match` fits the message decides; none fits, `default`.
//!
//! A rule's conditions are the authorizer's own compiled checks ([`Policy`]: `allowedClients`,
//! `allowedScopes`, `customClaims`), run on the token's claims, so a rule means exactly what the
//! same keys mean on `customJwtAuthorizer`. A rule with `deny: true` refuses what it matches; a
//! rule with neither conditions nor `deny` allows it. Matching is on the method and on the name
//! (tool, prompt or resource URI) with `*` globs, byte for byte: a look-alike name is another
//! name, as it is to the server.
//!
//! ```
//! use gatehouse::mcp::rules::Glob;
//! assert!(Glob::new("billing_*").matches("billing_refund"));
//! assert!(!Glob::new("billing_*").matches("bіlling_refund")); // Cyrillic і
//! ```

use std::sync::Arc;

use crate::auth::claims::Claims;
use crate::auth::policy::{Denial, Policy};

/// A pattern where `*` stands for any run of characters (also none); everything else is
/// literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Box<str>);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self(pattern.into())
    }

    /// Whole-string match. Linear-time greedy matching with one backtrack point, so a hostile
    /// name cannot make it quadratic in more than the pattern's size.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(&c) if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `rules[3]`, for spans, logs and metrics.
    pub label: Arc<str>,
    /// `None`: any method (and a response from the client, which has none).
    pub method: Option<Glob>,
    /// `None`: any name, and messages without one.
    pub name: Option<Glob>,
    /// The conditions; audience is never set here.
    pub policy: Policy,
    pub deny: bool,
    /// The rule's `allowedScopes` after `advertisedScopeMapping`, space-separated.
    pub scope_challenge: Option<Arc<str>>,
}

impl Rule {
    fn fits(&self, method: &str, name: Option<&str>) -> bool {
        self.method.as_ref().is_none_or(|g| g.matches(method))
            && self
                .name
                .as_ref()
                .is_none_or(|g| name.is_some_and(|n| g.matches(n)))
    }
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token lacks a scope the rule requires: the MCP step-up challenge carries these
    /// (advertised) scopes.
    Scope(Arc<str>),
    /// `allowedClients` did not list the token's client.
    Client,
    /// A `customClaims` entry failed; names the claim.
    Claim(String),
    /// A `deny: true` rule.
    Rule,
    /// No rule matched and `default: deny`.
    Default,
    /// A Cedar policy set denied it (no permit, or a forbid).
    Cedar,
    /// The call's arguments cannot be given to Cedar (a number Cedar cannot hold, ...): denied
    /// rather than decided on a partial input.
    CedarInput,
}

impl Refusal {
    /// The metric/log label of the refusal.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scope(_) => "insufficient_scope",
            Self::Client => "client",
            Self::Claim(_) => "claim",
            Self::Rule => "rule",
            Self::Default => "default",
            Self::Cedar => "cedar",
            Self::CedarInput => "cedar_input",
        }
    }
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Result<(), Refusal>,
    /// The rule (`rules[2]`) or Cedar policy that decided; `None` for the default.
    pub rule: Option<Arc<str>>,
}

/// The ordered rules of one route and its default.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub default_allow: bool,
}

impl Rules {
    /// Decides a message: `method` is empty for a response from the client.
    pub fn decide(&self, claims: &Claims, method: &str, name: Option<&str>) -> Verdict {
        let Some(rule) = self.rules.iter().find(|r| r.fits(method, name)) else {
            return Verdict {
                outcome: if self.default_allow {
                    Ok(())
                } else {
                    Err(Refusal::Default)
                },
                rule: None,
            };
        };
        let outcome = if rule.deny {
            Err(Refusal::Rule)
        } else {
            rule.policy.check(claims).map_err(|denial| match denial {
                Denial::Scope => Refusal::Scope(rule.scope_challenge.clone().unwrap_or_default()),
                Denial::Client | Denial::Audience => Refusal::Client,
                Denial::Claim(claim) => Refusal::Claim(claim),
            })
        };
        Verdict {
            outcome,
            rule: Some(rule.label.clone()),
        }
    }
}

/// The rules that can decide messages with one method, each with its outcome for one caller:
/// a rule's conditions depend on the claims, not on the name, so list filtering, which judges
/// every entry of a list with the same method and caller, matches only the names per entry.
#[derive(Debug)]
pub struct ForMethod(Vec<(usize, bool)>);

impl Rules {
    /// Prepares [`Self::allows`] for `method` and this caller.
    pub fn for_method(&self, claims: &Claims, method: &str) -> ForMethod {
        ForMethod(
            self.rules
                .iter()
                .enumerate()
                .filter(|(_, rule)| rule.method.as_ref().is_none_or(|g| g.matches(method)))
                .map(|(i, rule)| (i, !rule.deny && rule.policy.check(claims).is_ok()))
                .collect(),
        )
    }

    /// Whether [`Self::decide`] allows the message with the prepared method and `name`.
    pub fn allows(&self, prepared: &ForMethod, name: &str) -> bool {
        prepared
            .0
            .iter()
            .find(|(i, _)| {
                self.rules
                    .get(*i)
                    .is_some_and(|rule| rule.name.as_ref().is_none_or(|g| g.matches(name)))
            })
            .map_or(self.default_allow, |&(_, allowed)| allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::ClaimRule;

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn globs() {
        let cases = [
            ("billing_*", "billing_refund", true),
            ("billing_*", "billing_", true),
            ("billing_*", "billing", false),
            ("*", "", true),
            ("tools/*", "tools/call", true),
            ("tools/call", "tools/call", true),
            ("tools/call", "tools/callx", false),
            ("*_refund", "billing_refund", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a*a*a*a*b", &"a".repeat(2000), false),
            ("admin_*", "admin_\u{0}", true),
            ("admin_*", "Admin_x", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern} ~ {text}");
        }
    }

    fn rules() -> Rules {
        Rules {
            rules: vec![
                Rule {
                    label: "rules[0]".into(),
                    method: Some(Glob::new("tools/call")),
                    name: Some(Glob::new("billing_*")),
                    policy: Policy {
                        allowed_scopes: Some(vec!["billing".into()]),
                        ..Policy::default()
                    },
                    deny: false,
                    scope_challenge: Some("api://billing".into()),
                },
                Rule {
                    label: "rules[1]".into(),
                    method: Some(Glob::new("tools/call")),
                    name: Some(Glob::new("admin_*")),
                    policy: Policy::default(),
                    deny: true,
                    scope_challenge: None,
                },
                Rule {
                    label: "rules[2]".into(),
                    method: Some(Glob::new("tools/call")),
                    name: Some(Glob::new("ops_*")),
                    policy: Policy {
                        allowed_clients: Some(vec!["ops-console".into()]),
                        custom_claims: vec![ClaimRule::Contains {
                            claim: "groups".into(),
                            value: "ops".into(),
                        }],
                        ..Policy::default()
                    },
                    deny: false,
                    scope_challenge: None,
                },
                Rule {
                    label: "rules[3]".into(),
                    method: Some(Glob::new("prompts/*")),
                    name: None,
                    policy: Policy::default(),
                    deny: false,
                    scope_challenge: None,
                },
            ],
            default_allow: false,
        }
    }

    #[test]
    fn first_match_decides() {
        let r = rules();
        let plain = claims(r#"{"sub":"u","scope":"read"}"#);
        let billing = claims(r#"{"sub":"u","scope":"read billing"}"#);
        assert_eq!(
            r.decide(&plain, "tools/call", Some("billing_refund")),
            Verdict {
                outcome: Err(Refusal::Scope("api://billing".into())),
                rule: Some("rules[0]".into())
            }
        );
        assert_eq!(
            r.decide(&billing, "tools/call", Some("billing_refund"))
                .outcome,
            Ok(())
        );
        // Even with every scope, a deny rule denies.
        assert_eq!(
            r.decide(&billing, "tools/call", Some("admin_wipe")),
            Verdict {
                outcome: Err(Refusal::Rule),
                rule: Some("rules[1]".into())
            }
        );
        // Nothing matches: the default (deny here), no rule named.
        assert_eq!(
            r.decide(&billing, "tools/call", Some("get_weather")),
            Verdict {
                outcome: Err(Refusal::Default),
                rule: None
            }
        );
        // A rule without a name pattern matches messages without a name.
        assert_eq!(r.decide(&plain, "prompts/list", None).outcome, Ok(()));
        // A name pattern never matches a message without a name.
        assert_eq!(
            r.decide(&plain, "tools/call", None).outcome,
            Err(Refusal::Default)
        );
        // Responses from the client have no method: only method-less rules fit.
        assert_eq!(r.decide(&plain, "", None).outcome, Err(Refusal::Default));
    }

    /// The prepared per-method judgement of list filtering answers as `decide` does.
    #[test]
    fn prepared_method_allows_as_decide() {
        let mut r = rules();
        let callers = [
            claims(r#"{"sub":"u","scope":"read"}"#),
            claims(r#"{"sub":"u","scope":"read billing"}"#),
            claims(r#"{"sub":"u","client_id":"other"}"#),
        ];
        let names = [
            "billing_refund",
            "admin_wipe",
            "get_weather",
            "",
            "x",
            "billing_",
        ];
        for default_allow in [false, true] {
            r.default_allow = default_allow;
            for caller in &callers {
                for method in ["tools/call", "prompts/get", "resources/read", ""] {
                    let prepared = r.for_method(caller, method);
                    for name in names {
                        assert_eq!(
                            r.allows(&prepared, name),
                            r.decide(caller, method, Some(name)).outcome.is_ok(),
                            "{method} {name} {default_allow}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn clients_and_claims_are_the_authorizers_checks() {
        let r = rules();
        let ok = claims(r#"{"client_id":"ops-console","groups":["ops"]}"#);
        assert_eq!(
            r.decide(&ok, "tools/call", Some("ops_restart")).outcome,
            Ok(())
        );
        let wrong_client = claims(r#"{"client_id":"web","groups":["ops"]}"#);
        assert_eq!(
            r.decide(&wrong_client, "tools/call", Some("ops_restart"))
                .outcome,
            Err(Refusal::Client)
        );
        let no_group = claims(r#"{"client_id":"ops-console","groups":"ops"}"#);
        assert_eq!(
            r.decide(&no_group, "tools/call", Some("ops_restart"))
                .outcome,
            Err(Refusal::Claim("groups".into()))
        );
    }

    #[test]
    fn look_alikes_are_other_names() {
        let mut r = rules();
        r.default_allow = true;
        let c = claims("{}");
        assert_eq!(
            r.decide(&c, "tools/call", Some("admin_wipe")).outcome,
            Err(Refusal::Rule)
        );
        // Cyrillic а: not the denied tool, and not a tool the server has either.
        assert_eq!(
            r.decide(&c, "tools/call", Some("\u{430}dmin_wipe")).outcome,
            Ok(())
        );
    }
}
