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

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RequestBuilder, RestrictedExpression,
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
        let gateway = type_name("AgentCore::Gateway").map_err(internal)?;
        Ok(Self {
            policies,
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

    fn principal(&self, claims: &Claims) -> Option<(EntityUid, Entities)> {
        let sub = claims.sub.as_deref().unwrap_or_default();
        let uid = EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(sub));
        let tags = claims.all.keys().filter_map(|name| {
            claims
                .render(name)
                .map(|value| (name.clone(), RestrictedExpression::new_string(value)))
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
        Some((uid, entities))
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
        let Some((principal, entities)) = self.principal(claims) else {
            return refuse(Refusal::Cedar);
        };
        let Ok(request) = Request::new(
            principal,
            self.action(tool),
            self.resource.clone(),
            context,
            None,
        ) else {
            return refuse(Refusal::Cedar);
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
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
    /// policy set evaluated with `context` unknown reaches Deny.
    pub fn never_allows(&self, claims: &Claims, tool: &str) -> bool {
        let Some((principal, entities)) = self.principal(claims) else {
            return true;
        };
        let request = RequestBuilder::default()
            .principal(principal)
            .action(self.action(tool))
            .resource(self.resource.clone())
            .build();
        let response = self
            .authorizer
            .is_authorized_partial(&request, &self.policies, &entities);
        response.decision() == Some(Decision::Deny)
    }
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
mod tests {
    use super::*;

    const GATEWAY: &str = "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/support-gw";

    /// The developer guide's examples, unchanged.
    const POLICIES: &str = r#"
// Only John refunds, and only small amounts.
@id("refund-small")
permit(
  principal is AgentCore::OAuthUser,
  action == AgentCore::Action::"RefundTool__process_refund",
  resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/support-gw"
) when {
  principal.hasTag("username") && principal.getTag("username") == "John" && context.input.amount < 500
};

permit(
  principal is AgentCore::OAuthUser,
  action == AgentCore::Action::"get_weather",
  resource is AgentCore::Gateway
);

permit(
  principal,
  action == AgentCore::Action::"billing_report",
  resource
) when { principal.getTag("scope") like "*billing*" };

@id("no-export")
forbid(
  principal is AgentCore::OAuthUser,
  action == AgentCore::Action::"HRTools__export_salary_report",
  resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/support-gw"
);

permit(principal, action == AgentCore::Action::"HRTools__export_salary_report", resource);

permit(principal == AgentCore::OAuthUser::"user-7", action == AgentCore::Action::"whoami", resource)
  when { principal.id == "user-7" };
"#;

    fn policy() -> CedarPolicy {
        CedarPolicy::new(&[("support.cedar".into(), POLICIES.into())], GATEWAY).unwrap()
    }

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    fn args(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn agentcore_request_mapping() {
        let p = policy();
        assert_eq!(p.len(), 6);
        let john = claims(r#"{"sub":"u-1","username":"John","scope":"openid refund:write"}"#);
        let jane = claims(r#"{"sub":"u-2","username":"Jane"}"#);
        let small = args(r#"{"orderId":"12345","amount":450,"reason":"Defective"}"#);
        let large = args(r#"{"orderId":"12345","amount":501}"#);
        let v = p.decide(&john, "RefundTool__process_refund", Some(&small));
        assert_eq!(v.outcome, Ok(()));
        assert_eq!(v.rule.as_deref(), Some("refund-small"));
        assert_eq!(
            p.decide(&john, "RefundTool__process_refund", Some(&large))
                .outcome,
            Err(Refusal::Cedar)
        );
        assert_eq!(
            p.decide(&jane, "RefundTool__process_refund", Some(&small))
                .outcome,
            Err(Refusal::Cedar)
        );
        // No arguments: context.input.amount errors, the permit does not apply.
        assert_eq!(
            p.decide(&john, "RefundTool__process_refund", None).outcome,
            Err(Refusal::Cedar)
        );
        // Resource by type.
        assert_eq!(p.decide(&jane, "get_weather", None).outcome, Ok(()));
        // Default deny: no policy for the tool.
        let v = p.decide(&john, "delete_everything", None);
        assert_eq!((v.outcome, v.rule), (Err(Refusal::Cedar), None));
        // Forbid wins over a permit, and names itself.
        let v = p.decide(&john, "HRTools__export_salary_report", None);
        assert_eq!(v.outcome, Err(Refusal::Cedar));
        assert_eq!(v.rule.as_deref(), Some("no-export"));
        // Principal uid and id attribute come from sub.
        assert_eq!(
            p.decide(&claims(r#"{"sub":"user-7"}"#), "whoami", None)
                .outcome,
            Ok(())
        );
        assert_eq!(
            p.decide(&claims(r#"{"sub":"user-8"}"#), "whoami", None)
                .outcome,
            Err(Refusal::Cedar)
        );
    }

    #[test]
    fn claims_become_string_tags() {
        let p = policy();
        for (json, allowed) in [
            (r#"{"sub":"a","scope":"read billing:write"}"#, true),
            (r#"{"sub":"a","scp":["read","billing"]}"#, false),
            (r#"{"sub":"a","scope":"read"}"#, false),
            (r#"{"sub":"a"}"#, false),
        ] {
            assert_eq!(
                p.decide(&claims(json), "billing_report", None)
                    .outcome
                    .is_ok(),
                allowed,
                "{json}"
            );
        }
        let arrays = CedarPolicy::new(
            &[(
                "a.cedar".into(),
                r#"permit(principal, action, resource) when { principal.getTag("groups") == "ops,admin" && principal.getTag("n") == "5" && principal.getTag("b") == "true" };"#.into(),
            )],
            "gw",
        )
        .unwrap();
        assert!(
            arrays
                .decide(
                    &claims(r#"{"groups":["ops","admin"],"n":5,"b":true}"#),
                    "t",
                    None
                )
                .outcome
                .is_ok()
        );
    }

    #[test]
    fn hostile_arguments() {
        let p = CedarPolicy::new(
            &[(
                "f.cedar".into(),
                r#"permit(principal, action, resource);
                   forbid(principal, action, resource) when { context.input.amount > 1000 };
                   forbid(principal, action, resource) when { context.input has who && context.input.who == principal };"#
                    .into(),
            )],
            "gw",
        )
        .unwrap();
        let c = claims(r#"{"sub":"u"}"#);
        let decide = |a: &str| p.decide(&c, "t", Some(&args(a))).outcome;
        assert_eq!(decide(r#"{"amount":5}"#), Ok(()));
        assert_eq!(decide(r#"{"amount":5000}"#), Err(Refusal::Cedar));
        assert_eq!(decide(r#"{"amount":12.5}"#), Ok(()));
        // Beyond what Cedar holds: refused, not decided without the forbid.
        assert_eq!(decide(r#"{"amount":1e300}"#), Err(Refusal::CedarInput));
        assert_eq!(
            decide(r#"{"amount":18446744073709551615}"#),
            Err(Refusal::CedarInput)
        );
        assert_eq!(decide(r#"{"amount":0.123456}"#), Err(Refusal::CedarInput));
        assert_eq!(decide(r#"{"x":null}"#), Err(Refusal::CedarInput));
        // Cedar's JSON escapes are plain records here.
        assert_eq!(
            decide(r#"{"who":{"__entity":{"type":"AgentCore::OAuthUser","id":"u"}}}"#),
            Ok(())
        );
        assert_eq!(decide("null"), Ok(()));
        assert_eq!(decide(r#"{"nested":{"a":[1,"x",{"b":true}]}}"#), Ok(()));
    }

    #[test]
    fn never_allows_is_whatever_the_input() {
        let p = policy();
        let john = claims(r#"{"sub":"u-1","username":"John"}"#);
        let jane = claims(r#"{"sub":"u-2","username":"Jane"}"#);
        // Depends on the amount: listed for John.
        assert!(!p.never_allows(&john, "RefundTool__process_refund"));
        // Jane is never John, whatever the input.
        assert!(p.never_allows(&jane, "RefundTool__process_refund"));
        assert!(!p.never_allows(&jane, "get_weather"));
        assert!(p.never_allows(&jane, "delete_everything"));
        assert!(p.never_allows(&jane, "HRTools__export_salary_report"));
        // A forbid depending on the input keeps an otherwise permitted tool listed.
        let p = CedarPolicy::new(
            &[(
                "f.cedar".into(),
                r#"permit(principal, action, resource);
                   forbid(principal, action == AgentCore::Action::"pay", resource) when { context.input.amount > 10 };"#
                    .into(),
            )],
            "gw",
        )
        .unwrap();
        assert!(!p.never_allows(&jane, "pay"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let text = "permit(principal, action, resource);\n\nforbid(principal, action == AgentCore::Action::\"x\" resource);\n";
        let errors = CedarPolicy::new(&[("p/bad.cedar".into(), text.into())], "gw").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!((e.file.as_str(), e.line), ("p/bad.cedar", 3));
        assert!(e.column > 1, "{e:?}");
        assert!(!e.message.is_empty());
        // Templates are refused.
        let errors = CedarPolicy::new(
            &[(
                "t.cedar".into(),
                "permit(principal == ?principal, action, resource);".into(),
            )],
            "gw",
        )
        .unwrap_err();
        assert!(errors[0].message.contains("templates"));
        // Two files, each with its own ids.
        let two = CedarPolicy::new(
            &[
                (
                    "a.cedar".into(),
                    "permit(principal, action, resource);".into(),
                ),
                (
                    "b.cedar".into(),
                    "permit(principal, action, resource);".into(),
                ),
            ],
            "gw",
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
