use std::time::{Duration, Instant};

use super::testing::Backend;
use super::*;
use crate::api::{CallResult, DecisionEvent, IdentityKind, IdentityRef, Outcome};
use serde_json::json;

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
        approved_as: None,
    })
}

async fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Duration::from_secs(2)).await.unwrap()
}

/// One store of each backend, each fresh: SQLite in a temporary directory, and
/// PostgreSQL in a new database of the test cluster.
async fn stores() -> Vec<(Store, Backend)> {
    let mut all = Vec::new();
    for backend in Backend::each().await {
        all.push((
            Store::open_at(backend.location(), Duration::from_secs(2))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", backend.location().describe())),
            backend,
        ));
    }
    all
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
    for (store, backend) in stores().await {
        a_call_ending_shares_the_next_decisions_commit_on(&store, &backend).await;
    }
}

async fn a_call_ending_shares_the_next_decisions_commit_on(store: &Store, backend: &Backend) {
    store.record(completed("first"));
    // Within the linger, and long enough that two commits would differ in ts (ms).
    tokio::time::sleep(Duration::from_millis(2)).await;
    let committed = store.commit_decision(decision("second")).await.unwrap();
    let events = stored(store).await;
    assert_eq!(events.len(), 2, "{backend}: {events:?}");
    assert_eq!(events[0]["kind"], "call.completed");
    assert_eq!(events[1]["call_id"], "second");
    assert_eq!(
        events[0]["ts"], events[1]["ts"],
        "{backend}: one transaction, one ts"
    );
    assert_eq!(committed.seq, events[1]["seq"].as_u64().unwrap());
}

#[tokio::test]
async fn a_call_ending_alone_is_committed_soon_and_a_stop_flushes_it() {
    for (store, backend) in stores().await {
        store.record(completed("alone"));
        let started = Instant::now();
        while stored(&store).await.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{backend}: a lingering record was never committed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store.record(completed("at stop"));
        store.flush().await.unwrap();
        let events = stored(&store).await;
        assert_eq!(events.len(), 2, "{backend}: {events:?}");
        assert_eq!(events[1]["call_id"], "at stop");
    }
}

fn policy(text: &str, by: &str, note: Option<&str>, expected_version: Option<u64>) -> WriteOp {
    WriteOp::Policy {
        text: text.into(),
        sha256: crate::gateway::sha256_hex(text.as_bytes()),
        by: by.into(),
        note: note.map(Into::into),
        expected_version,
        file_sha256: None,
    }
}

#[tokio::test]
async fn an_old_database_gains_the_policy_note_in_place_and_its_rows_and_events_still_read() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the first release left it: only the first step run.
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            r#"PRAGMA user_version = 1;
            INSERT INTO policies (version, text, sha256, by, created_at)
                VALUES (1, 'forbid (principal, action, resource);', 'aa', 'default', '2026-01-02T03:04:05.000Z');
            INSERT INTO events (seq, ts, kind, body) VALUES (1, '2026-01-02T03:04:05.000Z', 'policy.changed',
                '{"seq":1,"ts":"2026-01-02T03:04:05.000Z","kind":"policy.changed","version":1,"sha256":"aa","by":"default"}');"#,
        )
        .unwrap();
    }
    let store = open(dir.path()).await;
    let schema_version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(match &store.readers {
            Readers::Sqlite(pool) => pool,
            Readers::Postgres(_) => unreachable!("a SQLite store"),
        })
        .await
        .unwrap();
    assert_eq!(schema_version, MIGRATIONS.len() as i64);
    assert_eq!(
        store.policy_versions().await.unwrap(),
        [PolicyVersion {
            version: 1,
            sha256: "aa".into(),
            by: "default".into(),
            at: "2026-01-02T03:04:05.000Z".into(),
            note: None,
        }]
    );
    let old: Event = serde_json::from_str(&store.events_between(0, 1, 1).await.unwrap()[0].json)
        .expect("an event stored before notes reads");
    assert!(matches!(
        old.body,
        EventBody::PolicyChanged { note: None, .. }
    ));

    // The upgraded table takes a note, and the event carries it.
    let committed = store
        .write(policy(
            "permit (principal, action, resource);",
            "ada",
            Some("open up"),
            Some(1),
        ))
        .await
        .unwrap();
    let event = serde_json::to_value(&committed.events[0]).unwrap();
    assert_eq!(
        (&event["kind"], &event["version"], &event["note"]),
        (&json!("policy.changed"), &json!(2), &json!("open up"))
    );
    let versions = store.policy_versions().await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.by.as_str(), v.note.as_deref()))
            .collect::<Vec<_>>(),
        [(2, "ada", Some("open up")), (1, "default", None)],
        "newest first"
    );
    let two = store.policy_version(2).await.unwrap().unwrap();
    assert_eq!(two.text, "permit (principal, action, resource);");
    assert_eq!(two.stored, versions[0]);
    assert_eq!(store.current_policy().await.unwrap().unwrap(), two);
    assert_eq!(store.policy_version(3).await.unwrap(), None);
}

#[tokio::test]
async fn a_policy_edit_from_a_version_no_longer_in_force_stores_nothing() {
    for (store, backend) in stores().await {
        eprintln!("{backend}");
        a_policy_edit_from_a_version_no_longer_in_force_stores_nothing_on(&store).await;
    }
}

async fn a_policy_edit_from_a_version_no_longer_in_force_stores_nothing_on(store: &Store) {
    store
        .write(policy(
            "forbid (principal, action, resource);",
            "default",
            None,
            None,
        ))
        .await
        .unwrap();
    store
        .write(policy(
            "permit (principal, action, resource);",
            "bob",
            Some("b"),
            Some(1),
        ))
        .await
        .unwrap();
    let refused = store
        .write(policy(
            "forbid (principal, action, resource);",
            "ada",
            None,
            Some(1),
        ))
        .await;
    match refused {
        Err(StoreError::StalePolicy(Some(current))) => {
            assert_eq!((current.version, current.by.as_str()), (2, "bob"));
        }
        other => panic!("expected a stale version, got {other:?}"),
    }
    assert_eq!(store.policy_versions().await.unwrap().len(), 2);
    let events = stored(store).await;
    assert_eq!(events.len(), 2, "no event for the refused edit: {events:?}");
    // Without an expected version, the edit goes through.
    store
        .write(policy(
            "forbid (principal, action, resource);",
            "ada",
            None,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .current_policy()
            .await
            .unwrap()
            .unwrap()
            .stored
            .version,
        3
    );
}
