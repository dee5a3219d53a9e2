//! Unit tests of the Cedar mapping: AgentCore's request shape, claims as tags, hostile
//! arguments, partial evaluation for lists, the per-action policy sets, located errors.

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

fn never(p: &CedarPolicy, claims: &Claims, tool: &str) -> bool {
    p.never_allows(claims, tool)
}

/// Evaluating only [`CedarPolicy::applicable`] answers what evaluating every policy does:
/// the same decision, the same reasons, the same errors, for actions named by `==`, by
/// `in [...]`, by no scope, in another namespace, and for errors in conditions.
#[test]
fn applicable_policies_answer_as_the_whole_set() {
    let text = r#"
        @id("any") permit(principal, action, resource) when { context.input.n > 3 };
        @id("eq") permit(principal, action == AgentCore::Action::"a", resource);
        @id("in") forbid(principal, action in [AgentCore::Action::"a", AgentCore::Action::"b", AgentCore::Action::"a"], resource)
          when { context.input.block == true };
        @id("err") permit(principal, action == AgentCore::Action::"c", resource) when { principal.getTag("missing") == "x" };
        @id("other-ns") permit(principal, action == Other::Action::"a", resource);
        @id("group") permit(principal, action in AgentCore::Action::"d", resource);
        @id("forbid-any") forbid(principal is AgentCore::OAuthUser, action, resource) when { context.input has nope };
    "#;
    let p = CedarPolicy::new(&[("s.cedar".into(), text.into())], "gw").unwrap();
    assert_eq!(p.by_action.len(), 5, "a, b, c, d, Other::Action::a");
    assert_eq!(p.any_action.num_of_policies(), 2);
    assert_eq!(p.applicable(&p.action("a")).num_of_policies(), 4);
    assert_eq!(p.applicable(&p.action("zzz")).num_of_policies(), 2);
    let caller = claims(r#"{"sub":"u","scope":"s"}"#);
    let principal = p.principal(&caller).unwrap();
    for tool in ["a", "b", "c", "d", "zzz", ""] {
        for input in [
            r#"{}"#,
            r#"{"n":5}"#,
            r#"{"n":"x"}"#,
            r#"{"block":true}"#,
            r#"{"block":true,"n":9}"#,
            r#"{"nope":1,"n":9}"#,
        ] {
            let context = Context::from_pairs([(
                "input".to_owned(),
                arguments_value(Some(&args(input))).unwrap(),
            )])
            .unwrap();
            let request = Request::new(
                principal.uid.clone(),
                p.action(tool),
                p.resource.clone(),
                context,
                None,
            )
            .unwrap();
            let answer = |set: &PolicySet| {
                let r = p
                    .authorizer
                    .is_authorized(&request, set, &principal.entities);
                let mut reasons: Vec<String> =
                    r.diagnostics().reason().map(ToString::to_string).collect();
                reasons.sort();
                let mut errors: Vec<String> =
                    r.diagnostics().errors().map(ToString::to_string).collect();
                errors.sort();
                (r.decision(), reasons, errors)
            };
            let whole = answer(&p.policies);
            assert_eq!(
                answer(p.applicable(&p.action(tool))),
                whole,
                "{tool} {input}"
            );
            let verdict = p.decide(&caller, tool, Some(&args(input)));
            assert_eq!(
                verdict.outcome.is_ok(),
                whole.0 == Decision::Allow,
                "{tool} {input}"
            );
        }
        // Partial evaluation (list filtering) likewise.
        let request = RequestBuilder::default()
            .principal(principal.uid.clone())
            .action(p.action(tool))
            .resource(p.resource.clone())
            .build();
        let partial = |set: &PolicySet| {
            p.authorizer
                .is_authorized_partial(&request, set, &principal.entities)
                .decision()
        };
        assert_eq!(
            partial(p.applicable(&p.action(tool))),
            partial(&p.policies),
            "{tool}"
        );
        assert_eq!(
            never(&p, &caller, tool),
            partial(&p.policies) == Some(Decision::Deny),
            "{tool}"
        );
    }
    // No policy can apply: denied without evaluation, as Cedar would.
    let only_a = CedarPolicy::new(
        &[(
            "a.cedar".into(),
            r#"permit(principal, action == AgentCore::Action::"a", resource);"#.into(),
        )],
        "gw",
    )
    .unwrap();
    assert!(only_a.applicable(&only_a.action("b")).is_empty());
    assert!(never(&only_a, &caller, "b"));
    assert!(!never(&only_a, &caller, "a"));
    // The principal is built once per claims; a copy of the claims builds its own.
    assert!(format!("{:?}", caller.cedar).contains("built"));
    assert!(format!("{:?}", caller.clone().cedar).contains("empty"));
    assert_eq!(
        only_a.decide(&caller, "b", None),
        Verdict {
            outcome: Err(Refusal::Cedar),
            rule: None
        }
    );
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
    assert!(!never(&p, &john, "RefundTool__process_refund"));
    // Jane is never John, whatever the input.
    assert!(never(&p, &jane, "RefundTool__process_refund"));
    assert!(!never(&p, &jane, "get_weather"));
    assert!(never(&p, &jane, "delete_everything"));
    assert!(never(&p, &jane, "HRTools__export_salary_report"));
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
    assert!(!never(&p, &jane, "pay"));
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
