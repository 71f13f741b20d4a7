use chrono::TimeZone;
use serde_json::json;

use super::*;

fn user() -> Identity {
    Identity {
        kind: IdentityKind::Oauth,
        name: "alice@corp.example".into(),
        groups: vec!["sre".into()],
        issued: None,
        expires: None,
        owner: None,
    }
}

fn token() -> Identity {
    Identity {
        kind: IdentityKind::ApiToken,
        name: "ci-bot".into(),
        groups: vec!["ci".into()],
        issued: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
        expires: None,
        owner: Some("alice".into()),
    }
}

fn decide_with(
    engine: &PolicyEngine,
    who: &Identity,
    tool: &str,
    risk: Risk,
    args: Value,
) -> Decision {
    let args = args.as_object().unwrap().clone();
    engine.decide(&CallFacts {
        identity: who,
        upstream: "atlassian",
        tool,
        risk,
        args: &args,
        target: None,
        workflow: None,
        now: Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(),
    })
}

fn default_engine() -> PolicyEngine {
    PolicyEngine::compile(DEFAULT_POLICY).unwrap()
}

#[test]
fn every_cell_of_the_default_matrix() {
    let engine = default_engine();
    let cases = [
        (user(), Risk::Read, Outcome::Allow, "read-allowed"),
        (user(), Risk::Write, Outcome::Allow, "user-write-allowed"),
        (user(), Risk::Destructive, Outcome::Hold, "user-risky-held"),
        (user(), Risk::Unclassified, Outcome::Hold, "user-risky-held"),
        (token(), Risk::Read, Outcome::Allow, "read-allowed"),
        (token(), Risk::Write, Outcome::Hold, "token-write-held"),
        (
            token(),
            Risk::Destructive,
            Outcome::Deny,
            "token-risky-denied",
        ),
        (
            token(),
            Risk::Unclassified,
            Outcome::Deny,
            "token-risky-denied",
        ),
    ];
    for (who, risk, outcome, policy) in cases {
        let d = decide_with(&engine, &who, "some_tool", risk, json!({}));
        assert_eq!(d.outcome, outcome, "{:?} {risk}", who.kind);
        assert_eq!(
            d.policy_ids,
            vec![policy.to_owned()],
            "{:?} {risk}",
            who.kind
        );
        assert!(!d.reason.is_empty());
    }
}

#[test]
fn deny_beats_hold_beats_allow() {
    let text = r#"
        @id("allow-all") permit (principal, action, resource);
        @id("hold-writes") @outcome("hold") permit (principal, action, resource) when { resource.risk == "write" };
        @id("forbid-prod") forbid (principal, action, resource)
            when { context.args.hasTag("/env") && context.args.getTag("/env") == "prod" };
    "#;
    let engine = PolicyEngine::compile(text).unwrap();
    let d = decide_with(&engine, &user(), "t", Risk::Read, json!({}));
    assert_eq!(
        (d.outcome, d.policy_ids),
        (Outcome::Allow, vec!["allow-all".to_owned()])
    );
    let d = decide_with(&engine, &user(), "t", Risk::Write, json!({}));
    assert_eq!(
        (d.outcome, d.policy_ids),
        (Outcome::Hold, vec!["hold-writes".to_owned()])
    );
    let d = decide_with(&engine, &user(), "t", Risk::Write, json!({"env": "prod"}));
    assert_eq!(
        (d.outcome, d.policy_ids),
        (Outcome::Deny, vec!["forbid-prod".to_owned()])
    );
}

#[test]
fn nothing_permitted_is_a_default_deny() {
    let engine = PolicyEngine::compile(r#"@id("only-reads") permit (principal, action, resource) when { resource.risk == "read" };"#).unwrap();
    let d = decide_with(&engine, &user(), "t", Risk::Write, json!({}));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.policy_ids.is_empty());
    assert_eq!(d.named_policy(), "default-deny");
}

#[test]
fn an_erroring_forbid_next_to_a_permit_is_a_deny() {
    // Valid under the schema, but overflows for any token older than a day: Cedar
    // skips the forbid on error, and toolgate must not let the permit win.
    let text = r#"
        @id("allow-all") permit (principal, action, resource);
        @id("overflowing-forbid") forbid (principal is Token, action, resource)
            when { principal.age_days * 4611686018427387904 > 0 };
    "#;
    let engine = PolicyEngine::compile(text).unwrap();
    let d = decide_with(&engine, &token(), "t", Risk::Read, json!({}));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.policy_ids, vec!["overflowing-forbid".to_owned()]);
    assert!(
        d.reason.contains("policy evaluation failed"),
        "{}",
        d.reason
    );
    // A user is not a Token, so the forbid does not apply and nothing errors.
    assert_eq!(
        decide_with(&engine, &user(), "t", Risk::Read, json!({})).outcome,
        Outcome::Allow
    );
    // Only the user's decision is remembered: a failure is evaluated again next time.
    assert_eq!(remembered(&engine), 1);
}

#[test]
fn an_argument_rule_applies_only_to_tools_that_have_the_argument() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"no-ops-projects\") @reason(\"OPS projects are off limits\")\n\
         forbid (principal, action, resource)\n\
         when {{ context.args.hasTag(\"/projectKey\") && context.args.getTag(\"/projectKey\") like \"OPS-*\" }};"
    );
    let engine = PolicyEngine::compile(&text).unwrap();
    let d = decide_with(
        &engine,
        &user(),
        "search_issues",
        Risk::Read,
        json!({"projectKey": "OPS-12"}),
    );
    assert_eq!(
        (d.outcome, d.reason.as_str()),
        (Outcome::Deny, "OPS projects are off limits")
    );
    let d = decide_with(
        &engine,
        &user(),
        "search_issues",
        Risk::Read,
        json!({"projectKey": "DEV-1"}),
    );
    assert_eq!(d.outcome, Outcome::Allow);
    // A tool without the argument is decided by the rest of the policy.
    let d = decide_with(
        &engine,
        &user(),
        "get_page",
        Risk::Read,
        json!({"pageId": "42"}),
    );
    assert_eq!(d.outcome, Outcome::Allow);
}

#[test]
fn nested_arguments_are_tagged_by_json_pointer() {
    let args = json!({"a/b": {"c~d": [true, 3, null, "x"]}});
    let mut tags = argument_tags(args.as_object().unwrap()).unwrap();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("/a~1b/c~0d/0".to_owned(), "true".to_owned()),
            ("/a~1b/c~0d/1".to_owned(), "3".to_owned()),
            ("/a~1b/c~0d/3".to_owned(), "x".to_owned()),
        ]
    );
}

#[test]
fn too_many_argument_values_fail_closed() {
    let many: Vec<u32> = (0..5000).collect();
    let d = decide_with(
        &default_engine(),
        &user(),
        "t",
        Risk::Read,
        json!({"xs": many}),
    );
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.reason.contains("too many"), "{}", d.reason);
}

#[test]
fn empty_containers_count_toward_the_argument_limit() {
    let empties: Vec<Value> = (0..9000).map(|_| json!([])).collect();
    let d = decide_with(
        &default_engine(),
        &user(),
        "t",
        Risk::Read,
        json!({"xs": empties}),
    );
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.reason.contains("too many"), "{}", d.reason);
    let few: Vec<Value> = (0..100).map(|_| json!({})).collect();
    let d = decide_with(
        &default_engine(),
        &user(),
        "t",
        Risk::Read,
        json!({"xs": few}),
    );
    assert_eq!(d.outcome, Outcome::Allow);
}

#[test]
fn per_tool_caches_stay_bounded_whatever_names_callers_send() {
    let engine = default_engine();
    for i in 0..(MAX_SLICES + 50) {
        let tool = format!("{}-{i}", "n".repeat(200));
        decide_with(&engine, &user(), &tool, Risk::Read, json!({}));
    }
    assert!(engine.slices.read().unwrap().len() <= MAX_SLICES);
    let remembered = engine.remembered.decisions.read().unwrap();
    assert!(remembered.len() <= MAX_SLICES + 50);
    assert!(
        engine
            .remembered
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            <= MAX_REMEMBERED_BYTES
    );
}

#[test]
fn policies_scoped_to_one_tool_do_not_touch_another() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"no-delete-branch\") forbid (principal, action, resource == Tool::\"atlassian/delete_branch\");\n\
         @id(\"no-other-upstream\") forbid (principal, action, resource in Upstream::\"github\");"
    );
    let engine = PolicyEngine::compile(&text).unwrap();
    assert_eq!(
        decide_with(&engine, &user(), "delete_branch", Risk::Read, json!({})).outcome,
        Outcome::Deny
    );
    assert_eq!(
        decide_with(&engine, &user(), "get_branch", Risk::Read, json!({})).outcome,
        Outcome::Allow
    );
    assert_eq!(
        engine
            .slice("atlassian", "get_branch", None)
            .policies
            .policies()
            .count(),
        5
    );
    assert_eq!(
        engine
            .slice("atlassian", "delete_branch", None)
            .policies
            .policies()
            .count(),
        6
    );
}

#[test]
fn workflow_and_target_are_visible_to_policies() {
    let text = r#"
        @id("ticketed-writes") permit (principal, action, resource)
            when { context has workflow && context.workflow has ticket && context has target && context.target.kind == "jira_project" };
    "#;
    let engine = PolicyEngine::compile(text).unwrap();
    let args = serde_json::Map::new();
    let target = Target {
        kind: "jira_project".into(),
        id: "OPS".into(),
    };
    let workflow = Workflow {
        ticket: Some("CHG-1".into()),
        change_window: Some(true),
    };
    let alice = user();
    let facts = |workflow| CallFacts {
        identity: &alice,
        upstream: "atlassian",
        tool: "t",
        risk: Risk::Write,
        args: &args,
        target: Some(&target),
        workflow,
        now: Utc::now(),
    };
    assert_eq!(
        engine.decide(&facts(Some(&workflow))).outcome,
        Outcome::Allow
    );
    assert_eq!(engine.decide(&facts(None)).outcome, Outcome::Deny);
}

#[test]
fn syntax_errors_name_line_and_column() {
    let err = PolicyEngine::compile(
        "permit (principal, action, resource);\nforbid (principal action, resource);",
    )
    .err()
    .unwrap();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.column.is_some(), "{err}");
    assert!(err.to_string().starts_with("line 2, column "), "{err}");
}

#[test]
fn schema_violations_are_refused_with_their_place() {
    let err = PolicyEngine::compile(
        "permit (principal, action, resource)\nwhen { resource.colour == \"red\" };",
    )
    .err()
    .unwrap();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("colour"), "{err}");
    // Reading a tag without checking for it first is refused too.
    let err = PolicyEngine::compile(
        "forbid (principal, action, resource)\nwhen { context.args.getTag(\"/x\") == \"y\" };",
    )
    .err()
    .unwrap();
    assert!(err.message.starts_with("invalid policy"), "{err}");
}

#[test]
fn hold_is_only_for_permits() {
    let err = PolicyEngine::compile("@outcome(\"hold\") forbid (principal, action, resource);")
        .err()
        .unwrap();
    assert!(err.message.contains("only a permit"), "{err}");
    let err = PolicyEngine::compile("@outcome(\"maybe\") permit (principal, action, resource);")
        .err()
        .unwrap();
    assert!(err.message.contains("@outcome(\"maybe\")"), "{err}");
}

#[test]
fn a_hold_asks_for_the_most_approvals_any_of_its_holding_permits_asks_for() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"two-for-deletes\")\n@outcome(\"hold\")\n@approvals(\"2\")\n\
         permit (principal is User, action == Action::\"call_tool\", resource)\n\
         when {{ resource.risk == \"destructive\" }};\n"
    );
    let engine = PolicyEngine::compile(&text).unwrap();
    let d = decide_with(
        &engine,
        &user(),
        "confluence_delete_page",
        Risk::Destructive,
        json!({}),
    );
    assert_eq!(d.outcome, Outcome::Hold);
    assert_eq!(d.approvals, 2, "{d:?}");
    assert!(
        d.policy_ids.contains(&"two-for-deletes".to_owned()),
        "{d:?}"
    );
    // A hold no @approvals permit takes part in needs one; allows and denies need none.
    let d = decide_with(
        &engine,
        &token(),
        "jira_create_issue",
        Risk::Write,
        json!({}),
    );
    assert_eq!((d.outcome, d.approvals), (Outcome::Hold, 1));
    let d = decide_with(&engine, &user(), "jira_get_issue", Risk::Read, json!({}));
    assert_eq!((d.outcome, d.approvals), (Outcome::Allow, 1));

    for (annotation, expected) in [
        (
            "@approvals(\"2\") permit (principal, action, resource);",
            "is only for a permit with @outcome(\"hold\")",
        ),
        (
            "@outcome(\"hold\") @approvals(\"11\") permit (principal, action, resource);",
            "must be a number from 1 to 10",
        ),
        (
            "@outcome(\"hold\") @approvals(\"two\") permit (principal, action, resource);",
            "must be a number from 1 to 10",
        ),
    ] {
        let err = PolicyEngine::compile(annotation).err().unwrap();
        assert!(err.message.contains(expected), "{annotation}: {err}");
    }
}

#[test]
fn built_requests_conform_to_the_schema() {
    let args = json!({"projectKey": "OPS-1"});
    let target = Target {
        kind: "jira_project".into(),
        id: "OPS".into(),
    };
    let workflow = Workflow {
        ticket: Some("CHG-1".into()),
        change_window: None,
    };
    let mut expiring = token();
    expiring.expires = Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    for who in [user(), expiring] {
        let facts = CallFacts {
            identity: &who,
            upstream: "atlassian",
            tool: "t",
            risk: Risk::Read,
            args: args.as_object().unwrap(),
            target: Some(&target),
            workflow: Some(&workflow),
            now: Utc::now(),
        };
        let (request, entities) = build_request(&facts, &uid("Action", "call_tool")).unwrap();
        let schema = schema();
        Request::new(
            request.principal().unwrap().clone(),
            request.action().unwrap().clone(),
            request.resource().unwrap().clone(),
            request.context().unwrap().clone(),
            Some(&schema),
        )
        .expect("the request conforms to the schema");
        Entities::from_entities(entities.iter().cloned(), Some(&schema))
            .expect("the entities conform to the schema");
    }
}

#[test]
fn a_slice_for_one_kind_of_caller_leaves_out_policies_only_the_other_kind_can_match() {
    let engine = PolicyEngine::compile(DEFAULT_POLICY).unwrap();
    let ids = |kind| {
        let mut ids: Vec<String> = engine
            .slice("jira", "create_issue", kind)
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(Some(IdentityKind::ApiToken)),
        ["read-allowed", "token-risky-denied", "token-write-held"]
    );
    assert_eq!(
        ids(Some(IdentityKind::Oauth)),
        ["read-allowed", "user-risky-held", "user-write-allowed"]
    );
    assert_eq!(ids(None).len(), 5);
}

fn remembered(engine: &PolicyEngine) -> usize {
    engine.remembered.decisions.read().unwrap().len()
}

#[test]
fn a_remembered_decision_is_the_one_cedar_gives() {
    let engine = default_engine();
    for who in [user(), token()] {
        for risk in [
            Risk::Read,
            Risk::Write,
            Risk::Destructive,
            Risk::Unclassified,
        ] {
            let first = decide_with(&engine, &who, "t", risk, json!({"a": 1}));
            let again = decide_with(&engine, &who, "t", risk, json!({"b": 2}));
            assert_eq!(first, again);
            let args = json!({"b": 2}).as_object().unwrap().clone();
            let cedar = engine.evaluate(&CallFacts {
                identity: &who,
                upstream: "atlassian",
                tool: "t",
                risk,
                args: &args,
                target: None,
                workflow: None,
                now: Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(),
            });
            assert_eq!(again, cedar, "{who:?} {risk:?}");
        }
    }
    // One per caller and risk class; the arguments are no part of it.
    assert_eq!(remembered(&engine), 8);
}

#[test]
fn what_the_principal_entity_carries_is_part_of_what_is_remembered() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"old-token\") forbid (principal is Token, action, resource) when {{ principal.age_days > 300 }};\n\
         @id(\"no-contractors\") forbid (principal in Group::\"contractors\", action, resource);"
    );
    let engine = PolicyEngine::compile(&text).unwrap();
    let at = |days_after_issue: i64, who: &Identity| {
        let args = Map::new();
        engine
            .decide(&CallFacts {
                identity: who,
                upstream: "atlassian",
                tool: "t",
                risk: Risk::Read,
                args: &args,
                target: None,
                workflow: None,
                now: who.issued.unwrap_or_default() + chrono::Duration::days(days_after_issue),
            })
            .outcome
    };
    let young = token();
    assert_eq!(at(300, &young), Outcome::Allow);
    assert_eq!(at(300, &young), Outcome::Allow);
    assert_eq!(
        at(301, &young),
        Outcome::Deny,
        "a day older is a new decision"
    );
    let mut contractor = user();
    assert_eq!(at(0, &contractor), Outcome::Allow);
    contractor.groups.push("contractors".into());
    assert_eq!(
        at(0, &contractor),
        Outcome::Deny,
        "other groups, other decision"
    );
}

#[test]
fn a_call_whose_policies_read_its_context_is_always_evaluated() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"no-prod\") forbid (principal, action, resource) \
         when {{ context.args.hasTag(\"/env\") && context.args.getTag(\"/env\") == \"prod\" }};"
    );
    let engine = PolicyEngine::compile(&text).unwrap();
    let outcome =
        |env: &str| decide_with(&engine, &user(), "t", Risk::Read, json!({"env": env})).outcome;
    assert_eq!(outcome("dev"), Outcome::Allow);
    assert_eq!(outcome("prod"), Outcome::Deny);
    assert_eq!(outcome("dev"), Outcome::Allow);
    assert_eq!(remembered(&engine), 0);
}

#[test]
fn a_user_literal_that_can_never_match_is_refused_with_its_place() {
    let text = format!(
        "{DEFAULT_POLICY}\n@id(\"no-alice\")\nforbid (principal == User::\"Alice@Corp.example\", action, resource);\n"
    );
    let err = PolicyEngine::compile(&text).err().expect("refused");
    assert!(
        err.message.contains("User::\"alice@corp.example\""),
        "{}",
        err.message
    );
    assert_eq!(err.line, Some(DEFAULT_POLICY.lines().count() + 3));
    let fine = text.replace("Alice@Corp.example", "alice@corp.example");
    assert!(PolicyEngine::compile(&fine).is_ok());
}
