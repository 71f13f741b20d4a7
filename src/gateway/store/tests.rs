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
        approvals_required: 1,
        traceparent: None,
        grant: None,
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

fn held(call_id: &str) -> StoredHold {
    testing::hold_row(call_id, "{}", "{}", "h")
}

fn resolve(call_id: &str, from: HoldState, resolution: Resolution, by: &str) -> WriteOp {
    WriteOp::HoldResolved {
        call_id: call_id.into(),
        from,
        resolution,
        by: by.into(),
        reason: None,
        approvers: Vec::new(),
        due_by: (resolution == Resolution::Expired).then(|| "2026-11-27T00:00:00.000Z".into()),
        grant: None,
    }
}

#[tokio::test]
async fn of_two_resolutions_racing_one_wins_and_the_other_learns_how_the_hold_ended() {
    for (store, backend) in stores().await {
        store
            .write(WriteOp::HoldCreated(Box::new(held("h1"))))
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            store.write(resolve(
                "h1",
                HoldState::Unresolved,
                Resolution::Approved,
                "ada"
            )),
            store.write(resolve(
                "h1",
                HoldState::Unresolved,
                Resolution::Denied,
                "bob"
            )),
        );
        let (won, lost) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("{backend}: one winner, got {other:?}"),
        };
        let winner = match &won.events[0].body {
            EventBody::HoldResolved { by, .. } => by.clone(),
            other => panic!("{other:?}"),
        };
        match lost {
            StoreError::HoldTaken(now) => {
                assert_eq!(
                    now.resolved_by.as_deref(),
                    Some(winner.as_str()),
                    "{backend}"
                )
            }
            other => panic!("{backend}: {other:?}"),
        }
        // A run needs an approval; a second run finds it consumed.
        let run = store
            .write(resolve(
                "h1",
                HoldState::Approved,
                Resolution::Consumed,
                "client",
            ))
            .await;
        if winner == "ada" {
            run.unwrap();
            let again = store
                .write(resolve(
                    "h1",
                    HoldState::Approved,
                    Resolution::Consumed,
                    "client",
                ))
                .await;
            assert!(
                matches!(again, Err(StoreError::HoldTaken(h)) if h.resolution == Some(Resolution::Consumed))
            );
        } else {
            assert!(
                matches!(run, Err(StoreError::HoldTaken(h)) if h.resolution == Some(Resolution::Denied))
            );
        }
        assert!(matches!(
            store
                .write(resolve(
                    "nope",
                    HoldState::Unresolved,
                    Resolution::Denied,
                    "ada"
                ))
                .await,
            Err(StoreError::NoSuchHold)
        ));
        let kinds: Vec<String> = stored(&store)
            .await
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        let resolved = kinds.iter().filter(|k| *k == "hold.resolved").count();
        assert_eq!(
            resolved,
            if winner == "ada" { 2 } else { 1 },
            "{backend}: no event for a refused resolution: {kinds:?}"
        );
    }
}

/// Commits `n` decisions from `store`, `width` at a time.
async fn commit_many(store: &Store, prefix: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let store = store.clone();
        let id = format!("{prefix}{i}");
        pending.push(tokio::spawn(async move {
            store.commit_decision(decision(&id)).await.unwrap();
        }));
    }
    for p in pending {
        p.await.unwrap();
    }
}

/// Everything a subscriber gets until `n` events have arrived.
async fn received(rx: &mut tokio::sync::broadcast::Receiver<Arc<Published>>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("events arrive")
            .expect("no lag");
        seqs.push(event.seq);
    }
    seqs
}

#[tokio::test]
async fn two_replicas_on_one_postgres_database_share_one_dense_seq_and_each_sees_every_event() {
    let Some(location) = testing::fresh_postgres().await else {
        return;
    };
    let a = Store::open_at(&location, Duration::from_secs(5))
        .await
        .unwrap();
    let b = Store::open_at(&location, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.store_id().await.unwrap(), b.store_id().await.unwrap());
    let (mut on_a, from_a) = a.subscribe();
    let (mut on_b, from_b) = b.subscribe();
    assert_eq!((from_a, from_b), (0, 0));
    tokio::join!(commit_many(&a, "a", 150), commit_many(&b, "b", 150));
    let every: Vec<u64> = (1..=300).collect();
    assert_eq!(received(&mut on_a, 300).await, every, "replica A, in order");
    assert_eq!(received(&mut on_b, 300).await, every, "replica B, in order");
    let stored: Vec<u64> = a
        .events_between(0, u64::MAX >> 1, 1000)
        .await
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect();
    assert_eq!(stored, every, "dense in the store");
    // A replica's own decisions and the other's are all there, each once.
    let ids: std::collections::HashSet<String> = b
        .decisions(1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.call.call_id)
        .collect();
    assert_eq!(ids.len(), 300);
    assert_eq!((a.last_seq(), b.last_seq()), (300, 300));
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let Some(location) = testing::fresh_postgres().await else {
        return;
    };
    let (a, b, c) = tokio::join!(
        Store::open_at(&location, Duration::from_secs(5)),
        Store::open_at(&location, Duration::from_secs(5)),
        Store::open_at(&location, Duration::from_secs(5)),
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let Readers::Postgres(pool) = &a.readers else {
        unreachable!()
    };
    let steps: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM toolgate_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        steps,
        (1..=postgres::MIGRATIONS.len() as i32).collect::<Vec<_>>()
    );
    assert_eq!(
        migrate(&location).await.unwrap(),
        (0, postgres::MIGRATIONS.len())
    );
}

/// A PostgreSQL writer of the test's own, as a replica's, on `location`.
fn pg_writer(location: &Location) -> postgres::PgWrite {
    let Location::Postgres { url, password_env } = location else {
        unreachable!()
    };
    let op = Duration::from_millis(300);
    postgres::PgWrite::new(
        postgres::writer_options(postgres::connect_options(url, password_env).unwrap(), op),
        op,
    )
    .unwrap()
}

#[tokio::test]
async fn a_replica_frozen_while_it_holds_the_seq_lock_stops_the_others_for_a_second_not_for_good() {
    use writer::WriteConn;
    let Some(location) = testing::fresh_postgres().await else {
        return;
    };
    let store = Store::open_at(&location, Duration::from_secs(5))
        .await
        .unwrap();
    // A replica's writer takes the lock, then freezes (SIGSTOP, a paused VM): its
    // transaction stays open and nothing more comes from it.
    let frozen = tokio::task::spawn_blocking({
        let location = location.clone();
        move || {
            let mut w = pg_writer(&location);
            w.begin().unwrap();
            w
        }
    })
    .await
    .unwrap();
    // Another writer queued behind it gives up at its lock timeout, and can begin again
    // once the lock is free: its aborted transaction was ended.
    let mut queued = tokio::task::spawn_blocking({
        let location = location.clone();
        move || {
            let mut w = pg_writer(&location);
            let started = Instant::now();
            let refused = w.begin();
            (w, refused.is_err(), started.elapsed())
        }
    })
    .await
    .unwrap();
    assert!(
        queued.1,
        "a writer behind a frozen one is refused, not left waiting"
    );
    assert!(queued.2 < Duration::from_secs(2), "{:?}", queued.2);
    // The server ends the frozen session; this replica's commits go through again.
    let started = Instant::now();
    let committed = store.commit_decision(decision("after the freeze")).await;
    assert!(committed.is_ok(), "{committed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let again = tokio::task::spawn_blocking(move || {
        let began = queued.0.begin();
        queued.0.rollback();
        drop(queued);
        began
    })
    .await
    .unwrap();
    assert!(again.is_ok(), "{again:?}");
    // A writer's runtime is dropped off the async threads, as its own thread does.
    tokio::task::spawn_blocking(move || drop(frozen))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_looked_up_committed_or_not() {
    use writer::WriteConn;
    let Some(location) = testing::fresh_postgres().await else {
        return;
    };
    // Migrated by a store first.
    let _store = Store::open_at(&location, Duration::from_secs(5))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let mut w = pg_writer(&location);
        let lost = || StoreError::Sql("the answer was lost".into());
        // Committed: the caller hears success.
        let head = w.begin().unwrap();
        let hash = chain_hash(&head.last_hash, "{}");
        w.insert_event(
            head.next_seq,
            "2026-01-01T00:00:00.000Z",
            "flush",
            None,
            "{}",
            (&head.last_hash, &hash),
        )
        .unwrap();
        w.commit(&Head {
            next_seq: head.next_seq + 1,
            last_hash: hash,
        })
        .unwrap();
        assert!(w.commit_outcome(lost()).is_ok());
        // Rolled back: the caller hears the failure it had.
        w.begin().unwrap();
        w.rollback();
        match w.commit_outcome(lost()) {
            Err(StoreError::Sql(m)) => assert_eq!(m, "the answer was lost"),
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_hold_whose_time_is_not_up_in_the_store_does_not_expire() {
    for (store, backend) in stores().await {
        // Extended (on another replica, say) past now: an expiry of it is refused.
        let mut hold = held("later");
        hold.expires_at = "2999-01-01T00:00:00.000Z".into();
        store
            .write(WriteOp::HoldCreated(Box::new(hold)))
            .await
            .unwrap();
        match store
            .write(resolve(
                "later",
                HoldState::Unresolved,
                Resolution::Expired,
                "toolgate",
            ))
            .await
        {
            Err(StoreError::HoldTaken(now)) => {
                assert_eq!(now.resolution, None, "{backend}");
                assert_eq!(now.expires_at, "2999-01-01T00:00:00.000Z", "{backend}");
            }
            other => panic!("{backend}: {other:?}"),
        }
        // Its time up, it expires.
        let mut hold = held("past");
        hold.expires_at = "2001-01-01T00:00:00.000Z".into();
        store
            .write(WriteOp::HoldCreated(Box::new(hold)))
            .await
            .unwrap();
        store
            .write(resolve(
                "past",
                HoldState::Unresolved,
                Resolution::Expired,
                "toolgate",
            ))
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// A hold whose identity and decision read, so that an approval can make a grant of it.
fn grantable(call_id: &str) -> StoredHold {
    let identity = crate::gateway::identity::Identity {
        kind: IdentityKind::ApiToken,
        name: "ci-bot".into(),
        groups: vec![],
        issued: None,
        expires: None,
        owner: None,
    };
    let mut d = match decision(call_id) {
        EventBody::Decision(d) => d,
        _ => unreachable!(),
    };
    d.outcome = Outcome::Hold;
    testing::hold_row(
        call_id,
        &serde_json::to_string(&identity).unwrap(),
        &serde_json::to_string(&d).unwrap(),
        "hash-of-the-call",
    )
}

#[tokio::test]
async fn a_grant_is_made_with_its_approval_counts_each_use_and_a_revoked_one_refuses_the_next() {
    for (store, backend) in stores().await {
        store
            .write(WriteOp::HoldCreated(Box::new(grantable("g1"))))
            .await
            .unwrap();
        let mut approve = resolve("g1", HoldState::Unresolved, Resolution::Approved, "ada");
        if let WriteOp::HoldResolved { grant, .. } = &mut approve {
            *grant = Some(crate::api::GrantRequest {
                for_secs: 600,
                scope: crate::api::GrantScope::Identical,
            });
        }
        let committed = store.write(approve).await.unwrap();
        let made = match &committed.events[..] {
            [resolved, created] => {
                assert_eq!(resolved.body.kind(), "hold.resolved", "{backend}");
                match &created.body {
                    EventBody::GrantCreated(g) => g.clone(),
                    other => panic!("{backend}: {other:?}"),
                }
            }
            other => panic!("{backend}: {other:?}"),
        };
        assert_eq!(
            (
                made.upstream.as_str(),
                made.tool.as_str(),
                made.call_hash.as_deref()
            ),
            ("wiki", "read_page", Some("hash-of-the-call")),
            "{backend}"
        );
        assert_eq!(made.approvers, ["ada"]);
        let used = |id: &str| WriteOp::GrantUsed { id: id.to_owned() };
        for _ in 0..2 {
            store
                .commit_decision_with(decision("use"), used(&made.id))
                .await
                .unwrap();
        }
        let listed = store.active_grants(None).await.unwrap();
        assert_eq!(listed.len(), 1, "{backend}");
        assert_eq!(listed[0].uses, 2, "{backend}");
        assert!(listed[0].last_used_at.is_some(), "{backend}");

        let revoke = WriteOp::GrantRevoked {
            id: made.id.clone(),
            by: "bob".into(),
        };
        store.write(revoke.clone()).await.unwrap();
        // The next use is refused, and its decision is not stored either.
        let before = stored(&store).await.len();
        match store
            .commit_decision_with(decision("after"), used(&made.id))
            .await
        {
            Err(StoreError::GrantEnded(Some(now))) => {
                assert_eq!(now.revoked_by.as_deref(), Some("bob"), "{backend}");
                assert_eq!(now.uses, 2, "{backend}");
            }
            other => panic!("{backend}: {other:?}"),
        }
        assert_eq!(stored(&store).await.len(), before, "{backend}");
        assert!(matches!(
            store.write(revoke).await,
            Err(StoreError::GrantEnded(Some(_)))
        ));
        assert!(matches!(
            store.write(used("no-such-grant")).await,
            Err(StoreError::GrantEnded(None))
        ));
        assert!(
            store.active_grants(None).await.unwrap().is_empty(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn every_event_is_chained_and_checkpoints_sign_where_the_chain_stood_on_both_backends() {
    use crate::gateway::audit::{AuditSigner, ChainRow, Verdict, verify};
    let signer = std::sync::Arc::new(AuditSigner::from_seed([3; 32]));
    for backend in testing::Backend::each().await {
        let store = Store::open_with(
            backend.location(),
            Duration::from_secs(2),
            Some(Checkpointing {
                signer: signer.clone(),
                every_events: 3,
            }),
        )
        .await
        .unwrap();
        for n in 0..7 {
            store
                .commit_decision(decision(&format!("c{n}")))
                .await
                .unwrap();
        }
        // Asked for: the tail (7) is signed too.
        store.write(WriteOp::Checkpoint).await.unwrap();
        let reader = AuditReader::open(backend.location()).await.unwrap();
        let rows: Vec<ChainRow> = reader.chain_rows(0, 100).await.unwrap();
        assert_eq!(rows.len(), 7, "{backend}");
        assert!(rows.iter().all(|r| r.hash.is_some()), "{backend}");
        let checkpoints = reader.checkpoints().await.unwrap();
        let seqs: Vec<u64> = checkpoints.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [3, 6, 7], "{backend}");
        assert_eq!(
            verify(rows, &checkpoints, Some(&signer.public_key())),
            Verdict::Intact {
                last_seq: 7,
                signed_up_to: Some(7),
                chained_from: Some(1),
                checkpoints: 3
            },
            "{backend}"
        );
    }
}
