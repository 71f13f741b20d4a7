//! The single writer: group commits, dense seqs, and writes a caller can withdraw.
//!
//! It runs on a thread of its own with a synchronous SQLite connection (rusqlite), so
//! a transaction of any size costs one wake-up of this thread and one of each caller.
//! (sqlx's SQLite driver runs each statement on its worker thread through a channel:
//! three thread round trips for the smallest transaction. Reads stay on sqlx.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use tokio::sync::oneshot;

use super::{Committed, Health, ListedTool, Published, Reply, StoreError, WriteOp};
use crate::api::{Event, EventBody, HoldPhase, PolicyVersion, Risk, ToolRow};
use crate::config::OnToolChange;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 512;

/// How long records that nobody waits for (how a call ended) may wait to share the
/// next decision's commit. At a steady stream of calls, each commit then carries one
/// decision and the last call's ending, instead of two commits per call.
const LINGER: Duration = Duration::from_millis(10);

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

    /// Whether only the audit log waits for this write.
    fn can_linger(&self) -> bool {
        matches!(&self.op, WriteOp::Event(body) if matches!(**body, EventBody::CallCompleted { .. }))
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

/// Starts the writer on its own thread. It stops when every sender is gone.
pub fn spawn(
    conn: Connection,
    rx: Receiver<Job>,
    outlets: Outlets,
    next_seq: u64,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("toolgate-store".into())
        .spawn(move || run(conn, rx, outlets, next_seq))
        .map(drop)
}

fn run(conn: Connection, rx: Receiver<Job>, outlets: Outlets, mut next_seq: u64) {
    let health = outlets.health.clone();
    let mut batch: Vec<Job> = Vec::new();
    let mut reported = false;
    loop {
        if batch.is_empty() {
            match rx.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
        batch.extend(rx.try_iter().take(MAX_BATCH - batch.len()));
        if batch.iter().all(Job::can_linger) {
            match rx.recv_timeout(LINGER) {
                Ok(job) => {
                    batch.push(job);
                    batch.extend(rx.try_iter().take(MAX_BATCH.saturating_sub(batch.len())));
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Stopping: commit what is here, then the next recv ends the loop.
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
        batch.retain(|job| !job.withdrawn());
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            health.fail();
            if !reported {
                tracing::error!(error = %e, "audit store cannot begin a write; calls are denied until it can");
                reported = true;
            }
            std::thread::sleep(Duration::from_millis(5));
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
        let result = (|| {
            if recovering {
                let body = EventBody::StoreRecovered { denied_unlogged };
                insert_event(&conn, body, &now, &mut seqs)?;
            }
            let mut done = Vec::with_capacity(ops.len());
            for op in ops {
                // A refused edit is that edit's answer; it wrote nothing, so the rest
                // of the group commits. Any other error fails the group.
                done.push(match apply(&conn, op, &now, &mut seqs) {
                    Err(
                        e @ (StoreError::NoSuchTool
                        | StoreError::StaleVersion(_)
                        | StoreError::StalePolicy(_)),
                    ) => Err(e),
                    other => Ok(other?),
                });
            }
            conn.execute_batch("COMMIT")?;
            Ok::<_, StoreError>(done)
        })();
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
                let _ = conn.execute_batch("ROLLBACK");
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

fn insert_event(
    conn: &Connection,
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
    conn.prepare_cached(
        "INSERT INTO events (seq, ts, kind, call_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.seq as i64,
        now,
        event.body.kind(),
        event.body.call_id(),
        &json
    ])?;
    seqs.inserted.push(Published {
        seq: event.seq,
        json,
    });
    seqs.next += 1;
    Ok(event)
}

fn apply(
    conn: &Connection,
    op: WriteOp,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    match op {
        WriteOp::Event(body) => Ok(Committed {
            events: vec![insert_event(conn, *body, now, seqs)?],
            risk: None,
        }),
        WriteOp::Flush => Ok(Committed::default()),
        WriteOp::Together(ops) => {
            // A savepoint: when a part is refused (a stale edit), none of the parts is
            // kept, and the rest of the group still commits. Any other error fails the
            // whole group, as it would without one.
            conn.execute_batch("SAVEPOINT together")?;
            let mut all = Committed::default();
            let mark = (seqs.next, seqs.inserted.len());
            for op in ops {
                match apply(conn, op, now, seqs) {
                    Ok(c) => {
                        all.events.extend(c.events);
                        all.risk = all.risk.or(c.risk);
                    }
                    Err(e) => {
                        conn.execute_batch("ROLLBACK TO together; RELEASE together")?;
                        seqs.next = mark.0;
                        seqs.inserted.truncate(mark.1);
                        return Err(e);
                    }
                }
            }
            conn.execute_batch("RELEASE together")?;
            Ok(all)
        }
        WriteOp::ListedTool(tool) => record_listing(conn, &tool, now, seqs),
        WriteOp::SeedRisk {
            upstream,
            tool,
            risk,
            suggested,
        } => {
            // A seed fills in only where nobody has chosen a class: no row yet, or a
            // class that came from no one (the untrusted default).
            conn.execute(
                "INSERT INTO tools (upstream, name, suggested_risk, risk, risk_source, version, updated_by, updated_at, note)
                 VALUES (?1, ?2, ?3, ?4, 'seed', 1, 'config', ?5, 'seeded by [[risk]]')
                 ON CONFLICT (upstream, name) DO UPDATE SET
                    risk = excluded.risk, risk_source = 'seed', version = tools.version + 1,
                    updated_by = 'config', updated_at = excluded.updated_at, note = excluded.note
                 WHERE tools.risk_source = 'default'",
                params![upstream, tool, suggested.as_str(), risk.as_str(), now],
            )?;
            let row = tool_row(conn, &upstream, &tool)?;
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
            let current = tool_row(conn, &upstream, &tool)?.ok_or(StoreError::NoSuchTool)?;
            if expected_version.is_some_and(|v| v != current.version) {
                return Err(StoreError::StaleVersion(Box::new(current)));
            }
            conn.execute(
                "UPDATE tools SET risk = ?3, risk_source = 'operator', version = version + 1,
                    updated_by = ?4, updated_at = ?5, note = ?6
                 WHERE upstream = ?1 AND name = ?2",
                params![upstream, tool, risk.as_str(), by, now, note],
            )?;
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
                events: vec![insert_event(conn, body, now, seqs)?],
                risk: Some(risk),
            })
        }
        WriteOp::HoldCreated(hold) => {
            conn.execute(
                "INSERT INTO holds (call_id, call_hash, identity, decision, session_id, request_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    hold.call_id,
                    hold.call_hash,
                    hold.identity,
                    hold.decision,
                    hold.session_id,
                    hold.request_id,
                    hold.created_at,
                    hold.expires_at
                ],
            )?;
            let body = EventBody::HoldCreated {
                call_id: hold.call_id.clone(),
                expires_at: hold.expires_at.clone(),
                ttl_ms: hold.ttl_ms,
                phase: HoldPhase::Waiting,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs)?],
                risk: None,
            })
        }
        WriteOp::HoldResolved {
            call_id,
            resolution,
            by,
            reason,
        } => {
            conn.execute(
                "UPDATE holds SET resolution = ?2, resolved_by = ?3, reason = ?4, resolved_at = ?5 WHERE call_id = ?1",
                params![call_id, resolution.as_str(), by, reason, now],
            )?;
            let body = EventBody::HoldResolved {
                call_id,
                resolution,
                by,
                reason,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs)?],
                risk: None,
            })
        }
        WriteOp::Policy {
            text,
            sha256,
            by,
            note,
            expected_version,
            file_sha256,
        } => {
            let current = current_policy(conn)?;
            let current_version = current.as_ref().map_or(0, |p| p.version);
            if expected_version.is_some_and(|v| v != current_version) {
                return Err(StoreError::StalePolicy(current.map(Box::new)));
            }
            let version = current_version + 1;
            conn.execute(
                "INSERT INTO policies (version, text, sha256, by, created_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![version as i64, text, sha256, by, now, note],
            )?;
            if let Some(file) = file_sha256 {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('policy_file_sha256', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![file],
                )?;
            }
            let body = EventBody::PolicyChanged {
                version,
                sha256,
                by,
                note,
            };
            Ok(Committed {
                events: vec![insert_event(conn, body, now, seqs)?],
                risk: None,
            })
        }
    }
}

/// Records one listing. The first listing of a tool, seeded or not, records its hash
/// and is not a change; a different hash later is a change, which sends a classified
/// tool back to review unless its upstream says `on_tool_change = "keep"`.
fn record_listing(
    conn: &Connection,
    t: &ListedTool,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    let previous: Option<(Option<String>, String)> = conn
        .query_row(
            "SELECT definition_sha256, risk FROM tools WHERE upstream = ?1 AND name = ?2",
            params![t.upstream, t.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let annotations = t.annotations.as_ref().map(|a| a.to_string());
    let input_schema = t.input_schema.as_ref().map(|s| s.to_string());
    conn.execute(
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
        params![
            t.upstream,
            t.name,
            t.title,
            t.description,
            annotations,
            input_schema,
            t.sha256,
            t.suggested_risk.as_str(),
            t.starting_risk.as_str(),
            t.starting_source,
            now
        ],
    )?;
    conn.execute(
        "INSERT INTO tool_definitions (upstream, name, sha256, definition, first_seen)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        params![t.upstream, t.name, t.sha256, t.canonical_definition, now],
    )?;

    let body = match previous {
        None | Some((None, _)) => None,
        Some((Some(old), _)) if old == t.sha256 => {
            return Ok(Committed {
                events: Vec::new(),
                risk: tool_row(conn, &t.upstream, &t.name)?.map(|r| r.risk),
            });
        }
        Some((Some(old), risk)) => Some((old, risk)),
    };
    let event = match body {
        None => {
            let row = tool_row(conn, &t.upstream, &t.name)?.expect("just written");
            EventBody::ToolDiscovered(row)
        }
        Some((old_sha, risk)) => {
            if t.on_change == OnToolChange::Reset && risk != Risk::Unclassified.as_str() {
                conn.execute(
                    "UPDATE tools SET risk = 'unclassified', risk_source = 'reset', version = version + 1,
                        updated_by = 'toolgate', updated_at = ?3,
                        note = 'definition changed; review the tool and set its class again'
                     WHERE upstream = ?1 AND name = ?2",
                    params![t.upstream, t.name, now],
                )?;
            }
            let old_definition: Option<String> = conn
                .query_row(
                    "SELECT definition FROM tool_definitions WHERE upstream = ?1 AND name = ?2 AND sha256 = ?3",
                    params![t.upstream, t.name, old_sha],
                    |r| r.get(0),
                )
                .optional()?;
            let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
            EventBody::ToolChanged {
                tool: tool_row(conn, &t.upstream, &t.name)?.expect("just written"),
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
        events: vec![insert_event(conn, event, now, seqs)?],
        risk: Some(risk),
    })
}

/// The newest stored policy version, without its text.
fn current_policy(conn: &Connection) -> Result<Option<PolicyVersion>, StoreError> {
    let sql = format!(
        "SELECT {} FROM policies ORDER BY version DESC LIMIT 1",
        super::POLICY_JSON
    );
    let json: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row([], |r| r.get(0))
        .optional()?;
    json.as_deref()
        .map(super::policy_version_from_json)
        .transpose()
}

fn tool_row(conn: &Connection, upstream: &str, name: &str) -> Result<Option<ToolRow>, StoreError> {
    let sql = format!(
        "SELECT {} FROM tools WHERE upstream = ?1 AND name = ?2",
        super::TOOL_JSON
    );
    let json: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row(params![upstream, name], |r| r.get(0))
        .optional()?;
    json.as_deref().map(super::tool_row_from_json).transpose()
}
