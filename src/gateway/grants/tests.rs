use std::time::Duration;

use super::*;
use crate::api::{GrantRequest, IdentityKind, IdentityRef, Resolution, Risk};
use crate::gateway::holds::CallKey;
use crate::gateway::store::HoldState;

fn token(name: &str) -> Identity {
    Identity {
        kind: IdentityKind::ApiToken,
        name: name.into(),
        groups: vec![],
        issued: None,
        expires: None,
        owner: None,
    }
}

fn held(identity: &Identity, risk: Risk) -> DecisionEvent {
    DecisionEvent {
        call_id: "01900000-0000-7000-8000-000000000001".into(),
        upstream: "py".into(),
        tool: "write_page".into(),
        risk,
        identity: IdentityRef {
            kind: identity.kind,
            name: identity.name.clone(),
            groups: vec![],
        },
        target: None,
        workflow: None,
        outcome: Outcome::Hold,
        policy_ids: vec!["token-write-held".into()],
        reason: "a write by an API token needs an operator's approval".into(),
        decision_us: 1,
        args: serde_json::json!({"page_id": "P"}),
        args_truncated: false,
        shadow: None,
        approved_as: None,
        approvals_required: 1,
        traceparent: None,
        grant: None,
    }
}

fn key(identity: &Identity, args: &str) -> CallKey {
    let mac = crate::gateway::keys::DeploymentKey::from_bytes([7; 32]).call_mac();
    CallKey::new(&mac, identity, "py", "write_page", args.as_bytes())
}

/// A store with one approved hold of ci-bot's that made a grant of `scope`.
async fn granted(scope: GrantScope) -> (tempfile::TempDir, Store, Grants) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(2))
        .await
        .unwrap();
    let bot = token("ci-bot");
    let decision = held(&bot, Risk::Write);
    let hold = crate::gateway::store::testing::hold_row(
        &decision.call_id,
        &serde_json::to_string(&bot).unwrap(),
        &serde_json::to_string(&decision).unwrap(),
        &key(&bot, r#"{"page_id":"P"}"#).hash,
    );
    store
        .write(WriteOp::HoldCreated(Box::new(hold)))
        .await
        .unwrap();
    store
        .write(WriteOp::HoldResolved {
            call_id: decision.call_id,
            from: HoldState::Unresolved,
            resolution: Resolution::Approved,
            by: "bob".into(),
            reason: None,
            approvers: Vec::new(),
            due_by: None,
            grant: Some(GrantRequest {
                for_secs: 600,
                scope,
            }),
        })
        .await
        .unwrap();
    let grants = Grants::load(store.clone()).await.unwrap();
    (dir, store, grants)
}

#[tokio::test]
async fn a_grant_covers_only_the_calls_it_was_approved_for() {
    let (_dir, _store, grants) = granted(GrantScope::Tool).await;
    let bot = token("ci-bot");
    let other_args = key(&bot, r#"{"page_id":"Q"}"#);
    let run = |who: Identity, d: DecisionEvent, definition: Option<&'static str>| {
        let k = key(&who, r#"{"page_id":"Q"}"#);
        let grants = &grants;
        async move {
            grants
                .run_under_grant(&who, &k, &d, definition)
                .await
                .unwrap()
        }
    };
    // The same identity and tool, other arguments: through, naming the grant.
    let allowed = grants
        .run_under_grant(&bot, &other_args, &held(&bot, Risk::Write), None)
        .await
        .unwrap()
        .expect("the tool grant covers other arguments");
    assert_eq!(allowed.outcome, Outcome::Allow);
    assert!(allowed.grant.is_some());
    assert!(
        allowed.reason.contains("the policy held it"),
        "{}",
        allowed.reason
    );

    let mut denied = held(&bot, Risk::Write);
    denied.outcome = Outcome::Deny;
    assert!(
        run(bot.clone(), denied, None).await.is_none(),
        "a deny stays"
    );
    assert!(
        run(
            token("ci-bot-two"),
            held(&token("ci-bot-two"), Risk::Write),
            None
        )
        .await
        .is_none(),
        "another identity"
    );
    let mut two = held(&bot, Risk::Write);
    two.approvals_required = 2;
    assert!(
        run(bot.clone(), two, None).await.is_none(),
        "one approver's grant never stands in for two"
    );
    assert!(
        run(bot.clone(), held(&bot, Risk::Destructive), None)
            .await
            .is_none(),
        "the tool's class changed since the approval"
    );
    assert!(
        run(
            bot.clone(),
            held(&bot, Risk::Write),
            Some("a-new-definition")
        )
        .await
        .is_none(),
        "the tool's definition changed since the approval"
    );
    let mut other_tool = held(&bot, Risk::Write);
    other_tool.tool = "delete_page".into();
    assert!(run(bot.clone(), other_tool, None).await.is_none());
}

#[tokio::test]
async fn an_identical_grant_covers_only_the_exact_call() {
    let (_dir, _store, grants) = granted(GrantScope::Identical).await;
    let bot = token("ci-bot");
    let d = held(&bot, Risk::Write);
    let same = key(&bot, r#"{"page_id":"P"}"#);
    let other = key(&bot, r#"{"page_id":"P","extra":1}"#);
    assert!(
        grants
            .run_under_grant(&bot, &other, &d, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        grants
            .run_under_grant(&bot, &same, &d, None)
            .await
            .unwrap()
            .is_some()
    );
}
