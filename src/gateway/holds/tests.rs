use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{IdentityKind, Risk};
use crate::config::RiskSeed;
use crate::gateway::catalog::Catalog;
use crate::gateway::decide::reevaluate;
use crate::gateway::policy::{DEFAULT_POLICY, PolicyEngine};
use crate::gateway::redact::REDACTED;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    holds: Arc<Holds>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(2))
        .await
        .unwrap();
    let holds = Arc::new(Holds::load(store.clone()).await.unwrap());
    Fixture {
        _dir: dir,
        store,
        holds,
    }
}

fn token_owned_by(owner: &str) -> Arc<Identity> {
    Arc::new(Identity {
        kind: IdentityKind::ApiToken,
        name: "ci-bot".into(),
        groups: vec!["ci".into()],
        issued: Some(Utc::now()),
        expires: None,
        owner: Some(owner.into()),
    })
}

fn oauth_user(name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        kind: IdentityKind::Oauth,
        name: name.into(),
        groups: vec![],
        issued: None,
        expires: None,
        owner: None,
    })
}

fn approver(name: &str, principals: &[&str]) -> Approver {
    Approver {
        name: name.into(),
        principals: principals.iter().map(|p| p.to_string()).collect(),
        approves: None,
    }
}

async fn hold_for(
    holds: &Holds,
    identity: Arc<Identity>,
    tool: &str,
    risk: Risk,
) -> (String, oneshot::Receiver<Verdict>) {
    open_hold(holds, identity, tool, risk, r#"{"page_id":"p1"}"#, 900).await
}

/// A held call with these arguments (JSON text) and a TTL in seconds.
async fn open_hold(
    holds: &Holds,
    identity: Arc<Identity>,
    tool: &str,
    risk: Risk,
    args: &str,
    ttl: i64,
) -> (String, oneshot::Receiver<Verdict>) {
    let mut new = new_hold(identity, tool, args, ttl);
    new.call.decision.risk = risk;
    new.call.decision.policy_ids = vec!["token-write-held".into()];
    let call_id = new.call.decision.call_id.clone();
    let rx = holds.create(new).await.unwrap().verdict;
    (call_id, rx)
}

fn test_mac() -> CallMac {
    crate::gateway::keys::DeploymentKey::from_bytes([7; 32]).call_mac()
}

/// The key of a call with these arguments, as JSON text.
fn key_of(identity: &Identity, tool: &str, args: &str) -> CallKey {
    let canonical = crate::gateway::exact::canonical(args.as_bytes());
    CallKey::new(&test_mac(), identity, "wiki", tool, &canonical)
}

/// A retry of a held call: the call id of the approval it ran on, if any.
async fn retry(holds: &Holds, key: &CallKey) -> Result<Option<String>, StoreError> {
    let decision = held_decision(&oauth_user("x"));
    Ok(
        match holds.consume_identical(key, Utc::now(), decision).await? {
            Retry::Ran(d) => {
                assert_eq!(d.outcome, Outcome::Allow);
                // The event names the held call it ran as, and reads as the policy's hold.
                assert_eq!(
                    d.approved_as.as_deref(),
                    Some(d.reason.rsplit(' ').next().unwrap())
                );
                assert_eq!(super::policy_outcome(&d), Outcome::Hold);
                d.approved_as
            }
            Retry::NotApproved(d) => {
                assert_eq!(d.outcome, Outcome::Hold);
                None
            }
        },
    )
}

fn allow(_: &HeldCall) -> Decision {
    Decision {
        outcome: Outcome::Hold,
        policy_ids: vec![],
        reason: "still needs approval".into(),
        approvals: 1,
    }
}

#[tokio::test]
async fn fifty_concurrent_resolvers_give_exactly_one_winner() {
    let f = fixture().await;
    let (call_id, verdict) =
        hold_for(&f.holds, token_owned_by("alice"), "write_page", Risk::Write).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let holds = f.holds.clone();
        let call_id = call_id.clone();
        tasks.push(tokio::spawn(async move {
            let who = approver(&format!("op{i}"), &[]);
            if i % 2 == 0 {
                holds.approve(&call_id, &who, None, None, allow).await
            } else {
                holds.deny(&call_id, &who, Some("no".into())).await
            }
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(view) => winners.push(view),
            Err(ResolveError::AlreadyResolved(view)) => {
                conflicts += 1;
                assert!(view.resolution.is_some());
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one resolver wins");
    assert_eq!(conflicts, 49);
    let winner = &winners[0];
    let expected = match winner.resolution.unwrap() {
        Resolution::Approved => Verdict::Approved,
        Resolution::Denied => Verdict::Denied {
            by: winner.resolved_by.clone().unwrap(),
            reason: Some("no".into()),
        },
        other => panic!("resolved {other:?}"),
    };
    assert_eq!(
        verdict.await.unwrap(),
        expected,
        "the waiting client hears the winner"
    );
    // The store agrees, and holds one hold.resolved.
    let stored = f.store.hold(&call_id).await.unwrap().unwrap();
    assert_eq!(stored.resolution, winner.resolution);
    assert_eq!(stored.resolved_by, winner.resolved_by);
}

#[tokio::test]
async fn self_approval_is_refused_and_another_approver_succeeds() {
    let f = fixture().await;
    let (token_call, _rx1) =
        hold_for(&f.holds, token_owned_by("alice"), "write_page", Risk::Write).await;
    let err = f
        .holds
        .approve(&token_call, &approver("alice", &[]), None, None, allow)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::SelfApproval(ref who) if who == "alice"),
        "{err}"
    );

    let (user_call, _rx2) = hold_for(
        &f.holds,
        oauth_user("carol@corp.example"),
        "delete_page",
        Risk::Destructive,
    )
    .await;
    let carol = approver("carol", &["oauth:carol@corp.example"]);
    let err = f.holds.deny(&user_call, &carol, None).await.unwrap_err();
    assert!(matches!(err, ResolveError::SelfApproval(_)), "{err}");

    let bob = approver("bob", &["oauth:bob@corp.example"]);
    let view = f
        .holds
        .approve(&token_call, &bob, Some("looks fine".into()), None, allow)
        .await
        .unwrap();
    assert_eq!(view.resolution, Some(Resolution::Approved));
    assert_eq!(view.resolved_by.as_deref(), Some("bob"));
    assert_eq!(view.reason.as_deref(), Some("looks fine"));
    let view = f
        .holds
        .approve(&user_call, &bob, None, None, allow)
        .await
        .unwrap();
    assert_eq!(view.resolution, Some(Resolution::Approved));
}

#[tokio::test]
async fn a_risk_edit_to_destructive_before_approval_makes_it_a_policy_denial() {
    let f = fixture().await;
    let catalog = Catalog::load(f.store.clone()).await.unwrap();
    catalog
        .seed(&[RiskSeed {
            upstream: "wiki".into(),
            tool: "write_page".into(),
            risk: Risk::Write,
        }])
        .await
        .unwrap();
    let engine = PolicyEngine::compile(DEFAULT_POLICY).unwrap();
    let (call_id, verdict) =
        hold_for(&f.holds, token_owned_by("alice"), "write_page", Risk::Write).await;

    catalog
        .set_risk(
            "wiki",
            "write_page",
            Risk::Destructive,
            Some(1),
            "carol",
            None,
        )
        .await
        .unwrap();

    let bob = approver("bob", &[]);
    let err = f
        .holds
        .approve(&call_id, &bob, None, None, |call| {
            reevaluate(&engine, &catalog, call, Utc::now())
        })
        .await
        .unwrap_err();
    let ResolveError::AlreadyResolved(view) = err else {
        panic!("expected a conflict, got {err}")
    };
    assert_eq!(view.resolution, Some(Resolution::Denied));
    assert_eq!(view.resolved_by.as_deref(), Some("policy"));
    assert!(
        view.reason
            .as_deref()
            .unwrap()
            .contains("API tokens may not"),
        "{view:?}"
    );
    assert!(matches!(verdict.await.unwrap(), Verdict::Denied { by, .. } if by == "policy"));
    // Later resolvers see the policy's resolution.
    let err = f.holds.deny(&call_id, &bob, None).await.unwrap_err();
    assert!(
        matches!(err, ResolveError::AlreadyResolved(v) if v.resolved_by.as_deref() == Some("policy"))
    );
}

#[tokio::test]
async fn an_approval_serves_one_identical_retry_only() {
    let f = fixture().await;
    let identity = token_owned_by("alice");
    let (call_id, rx) = hold_for(&f.holds, identity.clone(), "write_page", Risk::Write).await;
    drop(rx);
    f.holds.release_waiter(&call_id).await;
    f.holds
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap();
    let other = key_of(&identity, "write_page", r#"{"page_id":"p2"}"#);
    assert_eq!(retry(&f.holds, &other).await.unwrap(), None);
    let other_identity = token_owned_by("dave");
    let mut renamed = (*other_identity).clone();
    renamed.name = "other-bot".into();
    let by_other = key_of(&renamed, "write_page", r#"{"page_id":"p1"}"#);
    assert_eq!(retry(&f.holds, &by_other).await.unwrap(), None);
    let key = key_of(&identity, "write_page", r#"{ "page_id" : "p1" }"#);
    assert_eq!(
        retry(&f.holds, &key).await.unwrap().as_deref(),
        Some(call_id.as_str()),
        "the approval serves the retry"
    );
    assert_eq!(
        retry(&f.holds, &key).await.unwrap(),
        None,
        "a second retry is decided afresh"
    );
    assert_eq!(
        f.store.hold(&call_id).await.unwrap().unwrap().resolution,
        Some(Resolution::Consumed)
    );
}

#[tokio::test]
async fn expiry_and_cancellation_resolve_and_later_resolvers_conflict() {
    let f = fixture().await;
    let identity = token_owned_by("alice");
    let (expiring, rx) = hold_for(&f.holds, identity.clone(), "write_page", Risk::Write).await;
    let later = Utc::now() + chrono::Duration::seconds(901);
    assert_eq!(f.holds.expire_due(later).await.unwrap(), 1);
    assert_eq!(rx.await.unwrap(), Verdict::Expired);
    let err = f
        .holds
        .approve(&expiring, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::AlreadyResolved(v) if v.resolution == Some(Resolution::Expired)),
        "forgotten in memory, found in the store"
    );

    let (cancelled, rx) = hold_for(&f.holds, identity.clone(), "write_page", Risk::Write).await;
    assert_eq!(
        f.holds
            .cancel("api_token:ci-bot", "other-upstream", None, &json!(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.holds
            .cancel("api_token:ci-bot", "wiki", None, &json!(2))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.holds
            .cancel("api_token:ci-bot", "wiki", None, &json!(1))
            .await
            .unwrap(),
        Some(cancelled.clone())
    );
    assert_eq!(rx.await.unwrap(), Verdict::Cancelled);
    let err = f
        .holds
        .deny(&cancelled, &approver("bob", &[]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::AlreadyResolved(v) if v.resolution == Some(Resolution::Cancelled))
    );
}

#[tokio::test]
async fn holds_survive_a_restart_as_pending() {
    let f = fixture().await;
    let (call_id, _rx) =
        hold_for(&f.holds, token_owned_by("alice"), "write_page", Risk::Write).await;
    let reloaded = Holds::load(f.store.clone()).await.unwrap();
    let open = reloaded.open().await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].call_id, call_id);
    assert_eq!(open[0].phase, HoldPhase::Pending);
    let view = reloaded
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap();
    assert_eq!(view.resolution, Some(Resolution::Approved));
}

#[tokio::test]
async fn an_approval_from_before_a_restart_serves_one_identical_retry_after_it() {
    let f = fixture().await;
    let identity = token_owned_by("alice");
    let (call_id, rx) = hold_for(&f.holds, identity.clone(), "write_page", Risk::Write).await;
    drop(rx);
    f.holds
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap();
    let reloaded = Holds::load(f.store.clone()).await.unwrap();
    let key = key_of(&identity, "write_page", r#"{"page_id":"p1"}"#);
    assert_eq!(
        retry(&reloaded, &key).await.unwrap().as_deref(),
        Some(call_id.as_str()),
        "the stored approval serves the retry"
    );
    assert_eq!(retry(&reloaded, &key).await.unwrap(), None);
}

#[tokio::test]
async fn after_a_restart_a_rule_on_a_redacted_argument_denies_the_approval() {
    let f = fixture().await;
    let catalog = Catalog::load(f.store.clone()).await.unwrap();
    let policy = format!(
        "{DEFAULT_POLICY}\n@id(\"no-root\") forbid (principal, action, resource)\n\
         when {{ context.args.hasTag(\"/password\") && context.args.getTag(\"/password\") == \"root\" }};"
    );
    let engine = PolicyEngine::compile(&policy).unwrap();
    let identity = token_owned_by("alice");
    let stored_args = json!({"page_id": "p1", "password": REDACTED})
        .as_object()
        .unwrap()
        .clone();
    let mut decision = held_decision(&identity);
    decision.args = Value::Object(stored_args);
    catalog
        .seed(&[RiskSeed {
            upstream: "wiki".into(),
            tool: "write_page".into(),
            risk: Risk::Write,
        }])
        .await
        .unwrap();
    // Before the restart the real password was known; after it, only "[REDACTED]".
    let after_restart = HeldCall {
        identity: identity.clone(),
        args: None,
        decision: decision.clone(),
    };
    let d = reevaluate(&engine, &catalog, &after_restart, Utc::now());
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert!(d.reason.contains("redacted"), "{}", d.reason);
    assert_eq!(d.policy_ids, vec!["no-root".to_owned()]);
    // A policy that does not look at the redacted value still decides normally.
    let plain = PolicyEngine::compile(DEFAULT_POLICY).unwrap();
    assert_eq!(
        reevaluate(&plain, &catalog, &after_restart, Utc::now()).outcome,
        Outcome::Hold
    );
}

#[tokio::test]
async fn an_approval_never_serves_a_retry_whose_big_number_differs_in_its_last_digit() {
    let f = fixture().await;
    let identity = token_owned_by("alice");
    let approved = r#"{"page_id":9007199254740993}"#;
    let call_id = hold_with(&f.holds, identity.clone(), approved, 900).await;
    f.holds
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap();
    // As doubles, both are 9007199254740992: a lossy canonical form made them equal.
    let neighbour = key_of(&identity, "write_page", r#"{"page_id":9007199254740992}"#);
    assert_eq!(retry(&f.holds, &neighbour).await.unwrap(), None);
    let spelled_otherwise = key_of(&identity, "write_page", r#"{"page_id":9007199254740993.0}"#);
    assert_eq!(retry(&f.holds, &spelled_otherwise).await.unwrap(), None);
    let exact = key_of(&identity, "write_page", approved);
    assert_eq!(
        retry(&f.holds, &exact).await.unwrap().as_deref(),
        Some(call_id.as_str())
    );
}

#[tokio::test]
async fn a_retry_whose_commit_fails_keeps_the_approval_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_millis(200))
        .await
        .unwrap();
    let holds = Holds::load(store.clone()).await.unwrap();
    let identity = token_owned_by("alice");
    let args = r#"{"page_id":"p1"}"#;
    let call_id = hold_with(&holds, identity.clone(), args, 900).await;
    holds
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap();
    let key = key_of(&identity, "write_page", args);

    let lock = rusqlite::Connection::open(dir.path().join("toolgate.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failed = retry(&holds, &key).await;
    assert!(matches!(failed, Err(StoreError::Timeout)), "{failed:?}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    assert_eq!(
        store.hold(&call_id).await.unwrap().unwrap().resolution,
        Some(Resolution::Approved),
        "the failed retry must not have used the approval"
    );
    assert_eq!(
        retry(&holds, &key).await.unwrap().as_deref(),
        Some(call_id.as_str()),
        "the next identical retry runs on the approval"
    );
    assert_eq!(
        store.hold(&call_id).await.unwrap().unwrap().resolution,
        Some(Resolution::Consumed)
    );
}

#[tokio::test]
async fn a_hold_past_its_expiry_cannot_be_approved_before_the_timer_runs() {
    let f = fixture().await;
    let identity = token_owned_by("alice");
    let call_id = hold_with(&f.holds, identity, r#"{"page_id":"p1"}"#, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // expire_due has not run: only the approval sees the time.
    let err = f
        .holds
        .approve(&call_id, &approver("bob", &[]), None, None, allow)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::AlreadyResolved(v) if v.resolution == Some(Resolution::Expired)),
        "{err:?}"
    );
    assert_eq!(
        f.store.hold(&call_id).await.unwrap().unwrap().resolution,
        Some(Resolution::Expired)
    );
}

/// A held write_page call whose client stopped waiting.
async fn hold_with(holds: &Holds, identity: Arc<Identity>, args: &str, ttl: i64) -> String {
    let (call_id, rx) = open_hold(holds, identity, "write_page", Risk::Write, args, ttl).await;
    drop(rx);
    holds.release_waiter(&call_id).await;
    call_id
}

#[tokio::test]
async fn holds_are_capped_per_identity_in_all_and_by_size_and_a_refusal_is_a_stored_deny() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(2))
        .await
        .unwrap();
    let holds = Holds::load(store.clone())
        .await
        .unwrap()
        .with_limits(HoldLimits {
            per_identity: 2,
            total: 3,
            call_bytes: 200,
        });
    let alice_bot = token_owned_by("alice");
    let mut other = (*token_owned_by("bob")).clone();
    other.name = "other-bot".into();
    let other = Arc::new(other);
    let first = hold_with(&holds, alice_bot.clone(), r#"{"page_id":"p1"}"#, 900).await;
    hold_with(&holds, alice_bot.clone(), r#"{"page_id":"p2"}"#, 900).await;
    let refused = |e: CreateError| match e {
        CreateError::Refused(d) => *d,
        other => panic!("expected a refusal, got {other}"),
    };
    let third = try_hold(&holds, alice_bot.clone(), r#"{"page_id":"p3"}"#).await;
    let denied = refused(third.unwrap_err());
    assert_eq!(denied.outcome, Outcome::Deny);
    assert_eq!(denied.policy_ids, vec![HOLD_LIMIT_POLICY.to_owned()]);
    assert!(
        denied.reason.contains("max_holds_per_identity"),
        "{}",
        denied.reason
    );
    // The refusal is in the audit log as a deny.
    let stored = store.decisions(10, None).await.unwrap();
    assert!(
        stored.iter().any(
            |d| d.call.call_id == denied.call_id && d.call.outcome == crate::api::Outcome::Deny
        ),
        "{stored:?}"
    );

    hold_with(&holds, other.clone(), r#"{"page_id":"p4"}"#, 900).await;
    let denied = refused(
        try_hold(&holds, other.clone(), r#"{"page_id":"p5"}"#)
            .await
            .unwrap_err(),
    );
    assert!(denied.reason.contains("max_holds "), "{}", denied.reason);

    // A resolved hold no longer counts: its call is gone from memory.
    holds
        .deny(&first, &approver("bob", &[]), None)
        .await
        .unwrap();
    let big = format!(r#"{{"page_id":"{}"}}"#, "x".repeat(300));
    let denied = refused(try_hold(&holds, alice_bot.clone(), &big).await.unwrap_err());
    assert!(
        denied.reason.contains("max_held_call_bytes"),
        "{}",
        denied.reason
    );
    assert!(
        try_hold(&holds, alice_bot, r#"{"page_id":"p6"}"#)
            .await
            .is_ok()
    );
}

async fn try_hold(
    holds: &Holds,
    identity: Arc<Identity>,
    args: &str,
) -> Result<Created, CreateError> {
    holds
        .create(new_hold(identity, "write_page", args, 900))
        .await
}

/// A new hold of a call with these arguments (JSON text) and a TTL in seconds.
fn new_hold(identity: Arc<Identity>, tool: &str, args: &str, ttl: i64) -> NewHold {
    let map: Map<String, Value> = serde_json::from_str(args).unwrap();
    let mut decision = held_decision(&identity);
    decision.tool = tool.into();
    decision.args = Value::Object(map.clone());
    NewHold {
        key: key_of(&identity, tool, args),
        call: HeldCall {
            identity,
            args: Some(map),
            decision,
        },
        size: 0,
        session_id: None,
        request_id: json!(1),
        ttl: chrono::Duration::seconds(ttl),
    }
}

fn held_decision(identity: &Identity) -> DecisionEvent {
    DecisionEvent {
        call_id: uuid::Uuid::now_v7().to_string(),
        upstream: "wiki".into(),
        tool: "write_page".into(),
        risk: Risk::Write,
        identity: identity.to_wire(),
        target: None,
        workflow: None,
        outcome: Outcome::Hold,
        policy_ids: vec![],
        reason: "needs approval".into(),
        decision_us: 1,
        args: json!({}),
        args_truncated: false,
        shadow: None,
        approved_as: None,
        approvals_required: 1,
        traceparent: None,
        grant: None,
    }
}

#[test]
fn a_call_a_grant_let_through_reads_as_the_policys_hold() {
    let mut d = held_decision(&oauth_user("x"));
    d.outcome = Outcome::Allow;
    d.reason = "allowed by grant 1a2b3c4d".into();
    assert_eq!(super::policy_outcome(&d), Outcome::Allow);
    d.grant = Some("01900000-0000-7000-8000-00001a2b3c4d".into());
    assert_eq!(
        super::policy_outcome(&d),
        Outcome::Hold,
        "replay compares with what the policy decided, not what the grant did"
    );
}
