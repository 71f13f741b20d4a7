//! The single writer: group commits, dense seqs, and writes a caller can withdraw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{Committed, Health, ListedTool, Published, Reply, StoreError, WriteOp};
use crate::api::{Event, EventBody, HoldPhase, Risk, ToolRow};
use crate::config::OnToolChange;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 512;

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// One write on its way to the writer. Until the writer holds the database lock and
/// claims it, its caller may withdraw it.
pub struct Job {
    op: WriteOp,
    state: Arc<AtomicU8>,
    reply: Reply,
}

impl Job {
    pub fn new(
        op: WriteOp,
    ) -> (
        Self,
        Arc<AtomicU8>,
        oneshot::Receiver<Result<Committed, StoreError>>,
    ) {
        let state = Arc::new(AtomicU8::new(PENDING));
        let (reply, rx) = oneshot::channel();
        (
            Self {
                op,
                state: state.clone(),
                reply,
            },
            state,
            rx,
        )
    }

    /// Withdraws a write the writer has not claimed; false if it already has.
    pub fn withdraw(state: &AtomicU8) -> bool {
        state
            .compare_exchange(PENDING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn claim(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn withdrawn(&self) -> bool {
        self.state.load(Ordering::Acquire) == WITHDRAWN
    }
}

/// Seqs handed out in the current transaction, and what to publish once it commits.
struct Seqs {
    next: u64,
    inserted: Vec<Published>,
}

/// Where committed results go besides their callers.
pub struct Outlets {
    pub health: Arc<Health>,
    pub live: tokio::sync::broadcast::Sender<Arc<Published>>,
    pub last_seq: Arc<AtomicU64>,
}

pub async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    outlets: Outlets,
    mut next_seq: u64,
) {
    let health = outlets.health.clone();
    let mut batch: Vec<Job> = Vec::new();
    let mut reported = false;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.retain(|job| !job.withdrawn());
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
            health.fail();
            if !reported {
                tracing::error!(error = %e, "audit store cannot begin a write; calls are denied until it can");
                reported = true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        // The lock is ours: from here on, each claimed write will be committed or
        // reported failed, and its caller waits for which.
        let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch
            .drain(..)
            .filter(Job::claim)
            .map(|job| (job.op, job.reply))
            .unzip();
        let mut seqs = Seqs {
            next: next_seq,
            inserted: Vec::new(),
        };
        let now = crate::time::now_rfc3339();
        let recovering = !health.is_ready();
        let denied_unlogged = if recovering {
            health.denied_unlogged.swap(0, Ordering::AcqRel)
        } else {
            0
        };
        let result = async {
            if recovering {
                let body = EventBody::StoreRecovered { denied_unlogged };
                insert_event(&mut conn, body, &now, &mut seqs).await?;
            }
            let mut done = Vec::with_capacity(ops.len());
            for op in ops {
                // A refused edit is that edit's answer; it wrote nothing, so the rest
                // of the group commits. Any other error fails the group.
                done.push(match apply(&mut conn, op, &now, &mut seqs).await {
                    Err(e @ (StoreError::NoSuchTool | StoreError::StaleVersion(_))) => Err(e),
                    other => Ok(other?),
                });
            }
            sqlx::query("COMMIT").execute(&mut conn).await?;
            Ok::<_, StoreError>(done)
        }
        .await;
        match result {
            Ok(done) => {
                if recovering {
                    tracing::warn!(denied_unlogged, "audit store recovered");
                }
                // Only committed events are published, in seq order, each after the
                // last-seq mark that subscribers stitch their replay to.
                next_seq = seqs.next;
                for published in seqs.inserted {
                    outlets.last_seq.store(published.seq, Ordering::Release);
                    let _ = outlets.live.send(Arc::new(published));
                }
                health.failing.store(false, Ordering::Release);
                reported = false;
                for (reply, result) in replies.into_iter().zip(done) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                health
                    .denied_unlogged
                    .fetch_add(denied_unlogged, Ordering::AcqRel);
                health.fail();
                tracing::error!(error = %e, "audit store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn insert_event(
    conn: &mut SqliteConnection,
    body: EventBody,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Event, StoreError> {
    let event = Event {
        seq: seqs.next,
        ts: now.to_owned(),
        body,
    };
    let json = serde_json::to_string(&event).map_err(|e| StoreError::Sql(e.to_string()))?;
    sqlx::query("INSERT INTO events (seq, ts, kind, call_id, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(event.seq as i64)
        .bind(now)
        .bind(event.body.kind())
        .bind(event.body.call_id())
        .bind(&json)
        .execute(&mut *conn)
        .await?;
    seqs.inserted.push(Published {
        seq: event.seq,
        json,
    });
    seqs.next += 1;
    Ok(event)
}

async fn apply(
    conn: &mut SqliteConnection,
    op: WriteOp,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    match op {
        WriteOp::Event(body) => Ok(Committed {
            events: vec![insert_event(conn, *body, now, seqs).await?],
            risk: None,
        }),
        WriteOp::ListedTool(tool) => record_listing(conn, &tool, now, seqs).await,
        WriteOp::SeedRisk {
            upstream,
            tool,
            risk,
            suggested,
        } => {
            // A seed fills in only where nobody has chosen a class: no row yet, or a
            // class that came from no one (the untrusted default).
            sqlx::query(
                "INSERT INTO tools (upstream, name, suggested_risk, risk, risk_source, version, updated_by, updated_at, note)
                 VALUES (?1, ?2, ?3, ?4, 'seed', 1, 'config', ?5, 'seeded by [[risk]]')
                 ON CONFLICT (upstream, name) DO UPDATE SET
                    risk = excluded.risk, risk_source = 'seed', version = tools.version + 1,
                    updated_by = 'config', updated_at = excluded.updated_at, note = excluded.note
                 WHERE tools.risk_source = 'default'",
            )
            .bind(&upstream)
            .bind(&tool)
            .bind(suggested.as_str())
            .bind(risk.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let row = tool_row(conn, &upstream, &tool).await?;
            Ok(Committed {
                events: Vec::new(),
                risk: row.map(|r| r.risk),
            })
        }
        WriteOp::SetRisk {
            upstream,
            tool,
            risk,
            expected_version,
            by,
            note,
        } => {
            let current = tool_row(conn, &upstream, &tool)
                .await?
                .ok_or(StoreError::NoSuchTool)?;
            if expected_version.is_some_and(|v| v != current.version) {
                return Err(StoreError::StaleVersion(Box::new(current)));
            }
            sqlx::query(
                "UPDATE tools SET risk = ?3, risk_source = 'operator', version = version + 1,
                    updated_by = ?4, updated_at = ?5, note = ?6
                 WHERE upstream = ?1 AND name = ?2",
            )
            .bind(&upstream)
            .bind(&tool)
            .bind(risk.as_str())
            .bind(&by)
            .bind(now)
            .bind(&note)
            .execute(&mut *conn)
            .await?;
            let body = EventBody::RiskChanged {
                upstream,
                tool,
                from: current.risk,
                to: risk,
                version: current.version + 1,
                by,
                note,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs).await?],
                risk: Some(risk),
            })
        }
        WriteOp::HoldCreated(hold) => {
            sqlx::query(
                "INSERT INTO holds (call_id, call_hash, identity, decision, session_id, request_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(&hold.call_id)
            .bind(&hold.call_hash)
            .bind(&hold.identity)
            .bind(&hold.decision)
            .bind(&hold.session_id)
            .bind(&hold.request_id)
            .bind(&hold.created_at)
            .bind(&hold.expires_at)
            .execute(&mut *conn)
            .await?;
            let body = EventBody::HoldCreated {
                call_id: hold.call_id.clone(),
                expires_at: hold.expires_at.clone(),
                ttl_ms: hold.ttl_ms,
                phase: HoldPhase::Waiting,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs).await?],
                risk: None,
            })
        }
        WriteOp::HoldResolved {
            call_id,
            resolution,
            by,
            reason,
        } => {
            sqlx::query(
                "UPDATE holds SET resolution = ?2, resolved_by = ?3, reason = ?4, resolved_at = ?5 WHERE call_id = ?1",
            )
            .bind(&call_id)
            .bind(resolution.as_str())
            .bind(&by)
            .bind(&reason)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let body = EventBody::HoldResolved {
                call_id,
                resolution,
                by,
                reason,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs).await?],
                risk: None,
            })
        }
        WriteOp::Policy {
            text,
            sha256,
            by,
            file_sha256,
        } => {
            let version: i64 =
                sqlx::query_scalar("SELECT coalesce(max(version), 0) + 1 FROM policies")
                    .fetch_one(&mut *conn)
                    .await?;
            sqlx::query(
                "INSERT INTO policies (version, text, sha256, by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(version)
            .bind(&text)
            .bind(&sha256)
            .bind(&by)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            if let Some(file) = file_sha256 {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('policy_file_sha256', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(file)
                .execute(&mut *conn)
                .await?;
            }
            let body = EventBody::PolicyChanged {
                version: version as u64,
                sha256,
                by,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs).await?],
                risk: None,
            })
        }
    }
}

/// Records one listing. The first listing of a tool, seeded or not, records its hash
/// and is not a change; a different hash later is a change, which sends a classified
/// tool back to review unless its upstream says `on_tool_change = "keep"`.
async fn record_listing(
    conn: &mut SqliteConnection,
    t: &ListedTool,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    let existing =
        sqlx::query("SELECT definition_sha256, risk FROM tools WHERE upstream = ?1 AND name = ?2")
            .bind(&t.upstream)
            .bind(&t.name)
            .fetch_optional(&mut *conn)
            .await?;
    let previous: Option<(Option<String>, String)> =
        existing.map(|r| (r.get("definition_sha256"), r.get("risk")));
    let annotations = t.annotations.as_ref().map(|a| a.to_string());
    let input_schema = t.input_schema.as_ref().map(|s| s.to_string());
    sqlx::query(
        "INSERT INTO tools (upstream, name, title, description, annotations, input_schema,
            definition_sha256, suggested_risk, risk, risk_source, version, updated_by, updated_at,
            first_listed, last_listed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, 'toolgate', ?11, ?11, ?11)
         ON CONFLICT (upstream, name) DO UPDATE SET
            title = excluded.title, description = excluded.description,
            annotations = excluded.annotations, input_schema = excluded.input_schema,
            definition_sha256 = excluded.definition_sha256,
            suggested_risk = excluded.suggested_risk,
            first_listed = coalesce(tools.first_listed, excluded.first_listed),
            last_listed = excluded.last_listed",
    )
    .bind(&t.upstream)
    .bind(&t.name)
    .bind(&t.title)
    .bind(&t.description)
    .bind(&annotations)
    .bind(&input_schema)
    .bind(&t.sha256)
    .bind(t.suggested_risk.as_str())
    .bind(t.starting_risk.as_str())
    .bind(t.starting_source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO tool_definitions (upstream, name, sha256, definition, first_seen)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    )
    .bind(&t.upstream)
    .bind(&t.name)
    .bind(&t.sha256)
    .bind(&t.canonical_definition)
    .bind(now)
    .execute(&mut *conn)
    .await?;

    let body = match previous {
        None | Some((None, _)) => None,
        Some((Some(old), _)) if old == t.sha256 => {
            return Ok(Committed {
                events: Vec::new(),
                risk: tool_row(conn, &t.upstream, &t.name).await?.map(|r| r.risk),
            });
        }
        Some((Some(old), risk)) => Some((old, risk)),
    };
    let event = match body {
        None => {
            let row = tool_row(conn, &t.upstream, &t.name)
                .await?
                .expect("just written");
            EventBody::ToolDiscovered(row)
        }
        Some((old_sha, risk)) => {
            if t.on_change == OnToolChange::Reset && risk != Risk::Unclassified.as_str() {
                sqlx::query(
                    "UPDATE tools SET risk = 'unclassified', risk_source = 'reset', version = version + 1,
                        updated_by = 'toolgate', updated_at = ?3,
                        note = 'definition changed; review the tool and set its class again'
                     WHERE upstream = ?1 AND name = ?2",
                )
                .bind(&t.upstream)
                .bind(&t.name)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            let old_definition: Option<String> = sqlx::query_scalar(
                "SELECT definition FROM tool_definitions WHERE upstream = ?1 AND name = ?2 AND sha256 = ?3",
            )
            .bind(&t.upstream)
            .bind(&t.name)
            .bind(&old_sha)
            .fetch_optional(&mut *conn)
            .await?;
            let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
            EventBody::ToolChanged {
                tool: tool_row(conn, &t.upstream, &t.name)
                    .await?
                    .expect("just written"),
                old_definition: old_definition
                    .as_deref()
                    .map_or(serde_json::Value::Null, parse),
                new_definition: parse(&t.canonical_definition),
            }
        }
    };
    let risk = match &event {
        EventBody::ToolDiscovered(row) | EventBody::ToolChanged { tool: row, .. } => row.risk,
        _ => unreachable!("a listing records a tool event"),
    };
    Ok(Committed {
        events: vec![insert_event(conn, event, now, seqs).await?],
        risk: Some(risk),
    })
}

async fn tool_row(
    conn: &mut SqliteConnection,
    upstream: &str,
    name: &str,
) -> Result<Option<ToolRow>, StoreError> {
    let sql = format!(
        "SELECT {} FROM tools WHERE upstream = ?1 AND name = ?2",
        super::TOOL_COLUMNS
    );
    // The column list is a constant; the values are bound.
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(upstream)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(super::tool_row_from).transpose()
}
