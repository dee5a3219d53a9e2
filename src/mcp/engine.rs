//! One route's compiled `mcp` block: how much to read, what decides (rules or Cedar), whether
//! to enforce or only log, and whether lists are filtered.
//!
//! [`McpPolicy::compile`] turns the validated file block into it (settings call it once per
//! route and per reload: a policy file that no longer parses rejects the reload).
//! [`McpPolicy::decide`] is the per-message decision; [`McpPolicy::hides`] the per-entry one
//! used for list filtering.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::McpMessage;
use super::cedar::{CedarPolicy, PolicyFileError};
use super::filter::{Keep, ListKind};
use super::rules::{ForMethod, Glob, Refusal, Rule, Rules, Verdict};
use crate::auth::claims::Claims;
use crate::auth::policy::{ClaimRule, Policy};
use crate::config::defaults;
use crate::config::file::McpFile;

/// What decides.
#[derive(Debug)]
pub enum Decider {
    /// `mcp.rules` (possibly none: then `default` decides everything).
    Rules(Rules),
    /// `mcp.cedar` for `tools/call`; `default` for every other method.
    Cedar {
        policy: Box<CedarPolicy>,
        default_allow: bool,
    },
    /// Read the message only, decide nothing (a route that needs the message for another
    /// reason, such as quotas keyed on the tool).
    ReadOnly,
}

/// A route's compiled `mcp` block.
#[derive(Debug)]
pub struct McpPolicy {
    pub max_message_bytes: u64,
    /// `enforcement: enforce` (`false`: `logOnly`, decide and forward anyway).
    pub enforce: bool,
    pub filter_lists: bool,
    pub decider: Decider,
}

impl McpPolicy {
    /// A reader that decides nothing: for routes that need the message but have no `mcp`
    /// rules.
    pub fn read_only(max_message_bytes: u64) -> Self {
        Self {
            max_message_bytes,
            enforce: true,
            filter_lists: false,
            decider: Decider::ReadOnly,
        }
    }

    /// Compiles a validated block. `advertise` maps a scope to the name challenges advertise
    /// (the route's `advertisedScopeMapping`); `route_scopes` are the route authorizer's
    /// advertised scopes; `claim_rule` compiles a `customClaims` entry as the authorizer does;
    /// policy files are read relative to `base_dir`.
    ///
    /// A rule's step-up challenge names the route's scopes and then the rule's: MCP asks a
    /// challenge to carry every scope the operation needs, and a client that requests exactly
    /// the challenged scopes (the TypeScript SDK 1.x) would otherwise trade the route's scope
    /// for the rule's and be refused by the authorizer next.
    pub fn compile(
        file: &McpFile,
        route_name: &str,
        base_dir: &Path,
        advertise: &dyn Fn(&str) -> String,
        route_scopes: &[String],
        claim_rule: &dyn Fn(&crate::config::file::CustomClaim) -> Result<ClaimRule, String>,
    ) -> Result<Self, String> {
        let default_allow = file.default.as_deref() != Some("deny");
        let decider = match &file.cedar {
            Some(cedar) => {
                let files = cedar
                    .policies
                    .0
                    .iter()
                    .map(|p| {
                        std::fs::read_to_string(base_dir.join(p))
                            .map(|text| (p.clone(), text))
                            .map_err(|e| format!("cannot read Cedar policy file {p}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let resource = cedar.resource.as_deref().unwrap_or(route_name);
                let policy = CedarPolicy::new(&files, resource).map_err(|errors| {
                    errors
                        .iter()
                        .map(show_policy_error)
                        .collect::<Vec<_>>()
                        .join("; ")
                })?;
                Decider::Cedar {
                    policy: Box::new(policy),
                    default_allow,
                }
            }
            None => {
                let rules =
                    file.rules
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, rule)| {
                            let mut advertised: Vec<String> = Vec::new();
                            if rule.allowed_scopes.is_some() {
                                let wanted = route_scopes.iter().cloned().chain(
                                    rule.allowed_scopes.iter().flatten().map(|s| advertise(s)),
                                );
                                for scope in wanted {
                                    if !advertised.contains(&scope) {
                                        advertised.push(scope);
                                    }
                                }
                            }
                            Ok(Rule {
                                label: Arc::from(format!("rules[{i}]")),
                                method: rule
                                    .match_
                                    .as_ref()
                                    .and_then(|m| m.method.as_deref())
                                    .map(Glob::new),
                                name: rule
                                    .match_
                                    .as_ref()
                                    .and_then(|m| m.name.as_deref())
                                    .map(Glob::new),
                                policy: Policy {
                                    allowed_clients: rule.allowed_clients.clone(),
                                    allowed_audience: None,
                                    allowed_scopes: rule.allowed_scopes.clone(),
                                    custom_claims: rule
                                        .custom_claims
                                        .iter()
                                        .flatten()
                                        .map(claim_rule)
                                        .collect::<Result<_, _>>()?,
                                },
                                deny: rule.deny.unwrap_or(false),
                                scope_challenge: (!advertised.is_empty())
                                    .then(|| Arc::from(advertised.join(" "))),
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                Decider::Rules(Rules {
                    rules,
                    default_allow,
                })
            }
        };
        Ok(Self {
            max_message_bytes: file
                .max_message_bytes
                .map_or(defaults::MCP_MAX_MESSAGE_BYTES, |b| b.0),
            enforce: file.enforcement.as_deref() != Some("logOnly"),
            filter_lists: file.filter_lists.unwrap_or(false),
            decider,
        })
    }

    /// Whether this route decides on messages at all (a read-only reader does not).
    pub fn decides(&self) -> bool {
        !matches!(self.decider, Decider::ReadOnly)
    }

    /// The decision on one message; `None` for a read-only reader.
    pub fn decide(&self, claims: &Claims, message: &McpMessage) -> Option<Verdict> {
        let method = message.method.as_deref().unwrap_or_default();
        match &self.decider {
            Decider::ReadOnly => None,
            Decider::Rules(rules) => Some(rules.decide(claims, method, message.name.as_deref())),
            Decider::Cedar {
                policy,
                default_allow,
            } => Some(match message.tool() {
                Some(tool) => policy.decide(claims, tool, message.arguments.as_deref()),
                None => default(*default_allow),
            }),
        }
    }

    /// Whether a list entry is hidden from this caller: the call it stands for is denied
    /// whatever its arguments (a missing scope included: the list follows the token).
    pub fn hides(&self, claims: &Claims, kind: ListKind, name: &str) -> bool {
        match &self.decider {
            Decider::ReadOnly => false,
            Decider::Rules(rules) => rules
                .decide(claims, kind.use_method(), Some(name))
                .outcome
                .is_err(),
            Decider::Cedar {
                policy,
                default_allow,
            } => match kind {
                ListKind::Tools => policy.never_allows(claims, name),
                ListKind::Prompts | ListKind::Resources => !default_allow,
            },
        }
    }
}

fn default(allow: bool) -> Verdict {
    Verdict {
        outcome: if allow { Ok(()) } else { Err(Refusal::Default) },
        rule: None,
    }
}

/// `FILE:LINE:COL: message`, as every other configuration problem.
pub fn show_policy_error(e: &PolicyFileError) -> String {
    format!("{}:{}:{}: {}", e.file, e.line, e.column, e.message)
}

/// The list filter's judge: one caller, one route's policy.
#[derive(Debug)]
pub struct CallerLists {
    policy: Arc<McpPolicy>,
    claims: Arc<Claims>,
    /// With rules: per list kind, the rules for its method with their outcomes for this
    /// caller, prepared for the first entry ([`Rules::for_method`]).
    prepared: [OnceLock<ForMethod>; 3],
}

impl CallerLists {
    pub fn new(policy: Arc<McpPolicy>, claims: Arc<Claims>) -> Self {
        Self {
            policy,
            claims,
            prepared: Default::default(),
        }
    }
}

impl Keep for CallerLists {
    fn keeps(&self, kind: ListKind, name: &str) -> bool {
        if let Decider::Rules(rules) = &self.policy.decider {
            let slot = match kind {
                ListKind::Tools => &self.prepared[0],
                ListKind::Prompts => &self.prepared[1],
                ListKind::Resources => &self.prepared[2],
            };
            let prepared = slot.get_or_init(|| rules.for_method(&self.claims, kind.use_method()));
            return rules.allows(prepared, name);
        }
        !self.policy.hides(&self.claims, kind, name)
    }
}
