use std::time::{Duration, Instant};

use super::*;
use crate::api::{CallResult, DecisionEvent, IdentityKind, IdentityRef, Outcome};

fn completed(call_id: &str) -> WriteOp {
    WriteOp::Event(Box::new(EventBody::CallCompleted {
        call_id: call_id.into(),
        result: CallResult::Ok,
        upstream_status: Some(200),
        duration_ms: 1,
    }))
}

fn decision(call_id: &str) -> EventBody {
    EventBody::Decision(DecisionEvent {
        call_id: call_id.into(),
        upstream: "wiki".into(),
        tool: "read_page".into(),
        risk: Risk::Read,
        identity: IdentityRef {
            kind: IdentityKind::ApiToken,
            name: "ci-bot".into(),
            groups: vec![],
        },
        target: None,
        workflow: None,
        outcome: Outcome::Allow,
        policy_ids: vec!["read-allowed".into()],
        reason: "reads are allowed".into(),
        decision_us: 3,
        args: serde_json::json!({}),
        args_truncated: false,
        shadow: None,
    })
}

async fn stored(store: &Store) -> Vec<serde_json::Value> {
    store
        .events_between(0, u64::MAX >> 1, 100)
        .await
        .unwrap()
        .iter()
        .map(|p| serde_json::from_str(&p.json).unwrap())
        .collect()
}

#[tokio::test]
async fn a_call_ending_shares_the_next_decisions_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(2))
        .await
        .unwrap();
    store.record(completed("first"));
    // Within the linger, and long enough that two commits would differ in ts (ms).
    tokio::time::sleep(Duration::from_millis(2)).await;
    let committed = store.commit_decision(decision("second")).await.unwrap();
    let events = stored(&store).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["kind"], "call.completed");
    assert_eq!(events[1]["call_id"], "second");
    assert_eq!(events[0]["ts"], events[1]["ts"], "one transaction, one ts");
    assert_eq!(committed.seq, events[1]["seq"].as_u64().unwrap());
}

#[tokio::test]
async fn a_call_ending_alone_is_committed_soon_and_a_stop_flushes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(2))
        .await
        .unwrap();
    store.record(completed("alone"));
    let started = Instant::now();
    while stored(&store).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lingering record was never committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store.record(completed("at stop"));
    store.flush().await.unwrap();
    let events = stored(&store).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["call_id"], "at stop");
}
