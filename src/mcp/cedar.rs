//! `mcp.cedar`: AgentCore Policy compatible tool authorization with AWS's `cedar-policy` crate.
//!
//! The authorization request is built as AgentCore Gateway builds it (developer guide,
//! "Authorization flow"), so a policy file written for AgentCore works here unchanged:
//!
//! - principal `AgentCore::OAuthUser::"<sub>"`, with attribute `id` = `sub` and the token's
//!   claims as tags (`principal.getTag("scope")`): strings as they are, numbers and booleans
//!   in their JSON spelling, arrays of scalars joined with `,`; object claims are left out;
//! - action `AgentCore::Action::"<tool name>"`;
//! - resource `AgentCore::Gateway::"<cedar.resource>"` (default: the route name);
//! - `context.input`: the call's `arguments` (an empty record when there are none).
//!
//! Cedar's own semantics apply: default deny, a satisfied `forbid` wins. The arguments are
//! turned into Cedar values directly, never through Cedar's JSON entity syntax, so an argument
//! spelled `{"__entity": ...}` stays a record. A number Cedar cannot hold (beyond 64-bit
//! integers, or a fraction not expressible as a `decimal`) refuses the call: a `forbid` that
//! errors on it would otherwise quietly not apply.
//!
//! For filtered tool lists, [`CedarPolicy::never_allows`] evaluates with `context` unknown
//! (Cedar partial evaluation): a tool is dropped only when no input could make it allowed.
//!
//! Each request is evaluated against only the policies whose scope can name its action
//! ([`CedarPolicy::applicable`]): most of Cedar's time per request is building and evaluating
//! each policy's condition, and a 20-policy AgentCore set typically has one or two per tool.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RequestBuilder, RestrictedExpression,
};
use serde_json::Value;
use serde_json::value::RawValue;

use super::rules::{Refusal, Verdict};
use crate::auth::claims::Claims;

/// A problem with a policy file, located in that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFileError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// A compiled policy set and the names it is evaluated with.
#[derive(Debug)]
pub struct CedarPolicy {
    policies: PolicySet,
    /// For each action a policy scope names, the policies that can apply to it: those naming
    /// it and those naming no action. See [`Self::applicable`].
    by_action: HashMap<EntityUid, PolicySet>,
    /// The policies whose scope names no action (`action`, unconstrained): all that can apply
    /// to an action no scope names.
    any_action: PolicySet,
    resource: EntityUid,
    user_type: EntityTypeName,
    action_type: EntityTypeName,
    /// Policy id -> its `@id` annotation, or `file#n`: what spans and logs name.
    labels: HashMap<PolicyId, Arc<str>>,
    authorizer: Authorizer,
}

fn type_name(name: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(name).map_err(|e| e.to_string())
}

impl CedarPolicy {
    /// Compiles policy files given as `(name for messages, text)`.
    pub fn new(files: &[(String, String)], resource: &str) -> Result<Self, Vec<PolicyFileError>> {
        let mut policies = PolicySet::new();
        let mut labels = HashMap::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            let set = match PolicySet::from_str(text) {
                Ok(set) => set,
                Err(parse) => {
                    errors.extend(parse.iter().map(|e| located(file, text, e)));
                    continue;
                }
            };
            if set.templates().next().is_some() {
                errors.push(PolicyFileError {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                    message: "policy templates (?principal, ?resource) are not supported: write each policy out".into(),
                });
                continue;
            }
            for (n, policy) in set.policies().enumerate() {
                let id = PolicyId::new(format!("{file}#{n}"));
                let label: Arc<str> = policy
                    .annotation("id")
                    .map_or_else(|| Arc::from(id.to_string()), Arc::from);
                labels.insert(id.clone(), label);
                if let Err(e) = policies.add(policy.new_id(id)) {
                    errors.push(PolicyFileError {
                        file: file.clone(),
                        line: 1,
                        column: 1,
                        message: e.to_string(),
                    });
                }
            }
        }
        let internal = |message: String| {
            vec![PolicyFileError {
                file: String::new(),
                line: 1,
                column: 1,
                message,
            }]
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (by_action, any_action) = by_action(&policies).map_err(internal)?;
        let gateway = type_name("AgentCore::Gateway").map_err(internal)?;
        Ok(Self {
            policies,
            by_action,
            any_action,
            resource: EntityUid::from_type_name_and_id(gateway, EntityId::new(resource)),
            user_type: type_name("AgentCore::OAuthUser").map_err(internal)?,
            action_type: type_name("AgentCore::Action").map_err(internal)?,
            labels,
            authorizer: Authorizer::new(),
        })
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policies that can apply to a request for `action`; the others are left out of its
    /// evaluation. That changes nothing Cedar answers: a policy's condition is its scope
    /// conjoined, left to right, with its `when`/`unless` clauses, and a scope never errors,
    /// so a policy whose action scope excludes `action` is false without error — neither a
    /// reason nor an error in the response. The request's entities hold only the principal, so
    /// an action has no ancestors and `action in [A, B]` names exactly A and B.
    fn applicable(&self, action: &EntityUid) -> &PolicySet {
        self.by_action.get(action).unwrap_or(&self.any_action)
    }

    /// The principal of `claims`' requests, built once per claims (see [`PrincipalMemo`]).
    fn principal<'c>(&self, claims: &'c Claims) -> Option<&'c CedarPrincipal> {
        claims
            .cedar
            .0
            .get_or_init(|| self.build_principal(claims).map(Box::new))
            .as_deref()
    }

    fn build_principal(&self, claims: &Claims) -> Option<CedarPrincipal> {
        let sub = claims.sub().unwrap_or_default();
        let uid = EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(sub));
        let tags = claims.iter().filter_map(|(name, value)| {
            value
                .render()
                .map(|value| (name.to_owned(), RestrictedExpression::new_string(value)))
        });
        let entity = Entity::new_with_tags(
            uid.clone(),
            [(
                "id".to_owned(),
                RestrictedExpression::new_string(sub.to_owned()),
            )],
            [],
            tags,
        )
        .ok()?;
        let entities = Entities::from_entities([entity], None).ok()?;
        Some(CedarPrincipal { uid, entities })
    }

    fn action(&self, tool: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(tool))
    }

    /// Decides a `tools/call` of `tool` with `arguments`.
    pub fn decide(&self, claims: &Claims, tool: &str, arguments: Option<&RawValue>) -> Verdict {
        let refuse = |refusal| Verdict {
            outcome: Err(refusal),
            rule: None,
        };
        let Some(input) = arguments_value(arguments) else {
            return refuse(Refusal::CedarInput);
        };
        let Ok(context) = Context::from_pairs([("input".to_owned(), input)]) else {
            return refuse(Refusal::CedarInput);
        };
        let Some(principal) = self.principal(claims) else {
            return refuse(Refusal::Cedar);
        };
        let action = self.action(tool);
        let policies = self.applicable(&action);
        let Ok(request) = Request::new(
            principal.uid.clone(),
            action,
            self.resource.clone(),
            context,
            None,
        ) else {
            return refuse(Refusal::Cedar);
        };
        let response = self
            .authorizer
            .is_authorized(&request, policies, &principal.entities);
        let rule = response
            .diagnostics()
            .reason()
            .next()
            .and_then(|id| self.labels.get(id).cloned());
        Verdict {
            outcome: match response.decision() {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(Refusal::Cedar),
            },
            rule,
        }
    }

    /// Whether this caller is denied `tool` whatever the arguments (for list filtering): the
    /// policy set evaluated with `context` unknown reaches Deny. A tool no policy can apply
    /// to is denied without evaluation (Cedar's default deny, which is what evaluating no
    /// policies returns).
    pub fn never_allows(&self, claims: &Claims, tool: &str) -> bool {
        let action = self.action(tool);
        let policies = self.applicable(&action);
        if policies.is_empty() {
            return true;
        }
        let Some(principal) = self.principal(claims) else {
            return true;
        };
        let request = RequestBuilder::default()
            .principal(principal.uid.clone())
            .action(action)
            .resource(self.resource.clone())
            .build();
        let response =
            self.authorizer
                .is_authorized_partial(&request, policies, &principal.entities);
        response.decision() == Some(Decision::Deny)
    }
}

/// A caller as Cedar sees it: `AgentCore::OAuthUser::"<sub>"` and the entity holding its tags.
#[derive(Debug)]
struct CedarPrincipal {
    uid: EntityUid,
    entities: Entities,
}

/// The Cedar principal of one set of claims, built on first use and kept in the [`Claims`]:
/// the verified-token cache shares one `Arc<Claims>` among every request with the token, so
/// the entity, its tags and Cedar's transitive closure are computed once per token. It
/// depends on the claims alone (the entity type is AgentCore's, the same on every route).
/// Boxed: most tokens never meet a Cedar policy, and every cached one carries the memo.
#[derive(Default)]
pub struct PrincipalMemo(OnceLock<Option<Box<CedarPrincipal>>>);

/// A copy of the claims may be changed afterwards: it builds its own principal.
impl Clone for PrincipalMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Derived from the claims, not part of what they say.
impl PartialEq for PrincipalMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PrincipalMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "PrincipalMemo(built)"
        } else {
            "PrincipalMemo(empty)"
        })
    }
}

/// The policy sets of [`CedarPolicy::applicable`]: per action named in a scope, and for any
/// other action.
fn by_action(policies: &PolicySet) -> Result<(HashMap<EntityUid, PolicySet>, PolicySet), String> {
    let mut any = PolicySet::new();
    let mut named: HashMap<EntityUid, Vec<&cedar_policy::Policy>> = HashMap::new();
    for policy in policies.policies() {
        let actions = match policy.action_constraint() {
            ActionConstraint::Any => {
                any.add(policy.clone()).map_err(|e| e.to_string())?;
                continue;
            }
            ActionConstraint::Eq(action) => vec![action],
            ActionConstraint::In(actions) => actions,
        };
        for action in actions {
            let list = named.entry(action).or_default();
            // `action in [A, A]` names A once.
            if !list.iter().any(|p| p.id() == policy.id()) {
                list.push(policy);
            }
        }
    }
    let mut by_action = HashMap::with_capacity(named.len());
    for (action, own) in named {
        let mut set = any.clone();
        for policy in own {
            set.add(policy.clone()).map_err(|e| e.to_string())?;
        }
        by_action.insert(action, set);
    }
    Ok((by_action, any))
}

/// `context.input`: the arguments as a Cedar record; `None` when they cannot be represented.
fn arguments_value(arguments: Option<&RawValue>) -> Option<RestrictedExpression> {
    let value = match arguments {
        None => Value::Object(serde_json::Map::new()),
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
    };
    match value {
        Value::Null => RestrictedExpression::new_record([]).ok(),
        Value::Object(_) => cedar_value(value),
        _ => None,
    }
}

/// A JSON value as a Cedar value: records, sets, strings, booleans, longs and decimals.
fn cedar_value(value: Value) -> Option<RestrictedExpression> {
    Some(match value {
        Value::String(s) => RestrictedExpression::new_string(s),
        Value::Bool(b) => RestrictedExpression::new_bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_decimal(decimal(&n)?),
        },
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .into_iter()
                .map(cedar_value)
                .collect::<Option<Vec<_>>>()?,
        ),
        Value::Object(members) => RestrictedExpression::new_record(
            members
                .into_iter()
                .map(|(k, v)| Some((k, cedar_value(v)?)))
                .collect::<Option<Vec<_>>>()?,
        )
        .ok()?,
        // Cedar has no null.
        Value::Null => return None,
    })
}

/// A JSON number Cedar's `decimal` holds exactly: at most 4 fraction digits, within i64 / 10⁴.
fn decimal(n: &serde_json::Number) -> Option<String> {
    let f = n.as_f64().filter(|f| f.is_finite())?;
    let scaled = f * 10_000.0;
    if scaled.fract() != 0.0 || scaled.abs() >= 9.2e18 {
        return None;
    }
    let text = format!("{f:.4}");
    text.contains('.').then_some(text)
}

fn located(file: &str, text: &str, error: &cedar_policy::ParseError) -> PolicyFileError {
    use miette::Diagnostic;
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |label| label.offset());
    let (line, column) = line_column(text, offset);
    let mut message = error.to_string();
    if let Some(help) = error.help() {
        message = format!("{message} ({help})");
    }
    PolicyFileError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
#[path = "cedar_tests.rs"]
mod tests;
