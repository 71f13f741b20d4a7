//! The single writer: group commits, dense seqs, and writes a caller can withdraw.
//!
//! It runs on a thread of its own with a synchronous connection (`WriteConn`), so a
//! transaction of any size costs one wake-up of this thread and one of each caller.
//! What a write means (the checks, the events it makes) is written once here, over the
//! backend's primitive statements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::mpsc::{Receiver, RecvTimeoutError};

use tokio::sync::oneshot;

use super::{
    Committed, Head, Health, HoldState, ListedTool, Published, Reply, StoreError, StoredHold,
    WriteOp,
};
use crate::api::{
    Event, EventBody, Grant, GrantRequest, GrantScope, HoldPhase, PolicyVersion, Resolution, Risk,
    ToolRow,
};
use crate::config::OnToolChange;
use crate::gateway::audit::{AuditSigner, Checkpoint};

/// A backend's write connection: the statements the writer's transactions are made of.
/// Every method but `begin` runs inside the transaction `begin` opened.
pub trait WriteConn: Send + 'static {
    /// Opens a transaction that holds the store's write lock, so that no other writer
    /// (thread or replica) commits until it ends, and answers the seq the next event
    /// takes and the hash it chains on: seqs are dense, and the chain unbroken, because
    /// they are handed out under that lock.
    fn begin(&mut self) -> Result<Head, StoreError>;
    /// Commits; `head` is where the chain stands after the last event inserted.
    fn commit(&mut self, head: &Head) -> Result<(), StoreError>;
    fn rollback(&mut self);
    fn savepoint(&mut self) -> Result<(), StoreError>;
    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    fn release_savepoint(&mut self) -> Result<(), StoreError>;

    /// One event, with its place in the chain: `(prev_hash, hash)`.
    fn insert_event(
        &mut self,
        seq: u64,
        ts: &str,
        kind: &str,
        call_id: Option<&str>,
        json: &str,
        chain: (&str, &str),
    ) -> Result<(), StoreError>;
    fn tool_row(&mut self, upstream: &str, name: &str) -> Result<Option<ToolRow>, StoreError>;
    /// A `[[risk]]` seed, where nobody has chosen a class yet.
    fn seed_risk(
        &mut self,
        upstream: &str,
        name: &str,
        risk: Risk,
        suggested: Risk,
        now: &str,
    ) -> Result<(), StoreError>;
    fn set_risk(
        &mut self,
        upstream: &str,
        name: &str,
        risk: Risk,
        by: &str,
        now: &str,
        note: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Sends a tool back to review after its definition changed.
    fn reset_risk(&mut self, upstream: &str, name: &str, now: &str) -> Result<(), StoreError>;
    /// The tool's stored definition hash and class before a listing.
    fn listed_before(
        &mut self,
        upstream: &str,
        name: &str,
    ) -> Result<Option<(Option<String>, String)>, StoreError>;
    fn upsert_listing(&mut self, tool: &ListedTool, now: &str) -> Result<(), StoreError>;
    fn insert_definition(&mut self, tool: &ListedTool, now: &str) -> Result<(), StoreError>;
    fn definition(
        &mut self,
        upstream: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError>;
    fn insert_hold(&mut self, hold: &StoredHold) -> Result<(), StoreError>;
    /// Resolves a hold if it is still in `from`; false when it is not (another replica,
    /// or another request, resolved it first).
    /// An expiry (`due_by` set) only of a hold whose stored expiry is at or before
    /// `due_by`: one extended elsewhere meanwhile is not expired.
    #[allow(clippy::too_many_arguments)]
    fn resolve_hold(
        &mut self,
        call_id: &str,
        from: HoldState,
        resolution: Resolution,
        by: &str,
        reason: Option<&str>,
        now: &str,
        due_by: Option<&str>,
    ) -> Result<bool, StoreError>;
    fn hold(&mut self, call_id: &str) -> Result<Option<StoredHold>, StoreError>;
    /// Records `by`'s approval of a hold, with the grant it asked for (JSON); false when
    /// `by` approved it already.
    fn add_approval(
        &mut self,
        call_id: &str,
        by: &str,
        reason: Option<&str>,
        grant: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError>;
    fn approval_count(&mut self, call_id: &str) -> Result<u32, StoreError>;
    /// Who approved a hold, first first, each with the grant they asked for (JSON).
    fn approvers(&mut self, call_id: &str) -> Result<Vec<(String, Option<String>)>, StoreError>;
    fn insert_grant(
        &mut self,
        grant: &Grant,
        principal: &str,
        body: &str,
    ) -> Result<(), StoreError>;
    /// Counts one use of a grant that is active at `now`; false when it is not
    /// (revoked, expired, or unknown).
    fn use_grant(&mut self, id: &str, now: &str) -> Result<bool, StoreError>;
    /// Revokes a grant active at `now`; false when it is not.
    fn revoke_grant(&mut self, id: &str, by: &str, now: &str) -> Result<bool, StoreError>;
    fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Sets an unresolved hold's expiry; false when it is resolved (or unknown).
    fn extend_hold(&mut self, call_id: &str, expires_at: &str) -> Result<bool, StoreError>;
    fn current_policy(&mut self) -> Result<Option<PolicyVersion>, StoreError>;
    fn insert_policy(
        &mut self,
        version: u64,
        text: &str,
        sha256: &str,
        by: &str,
        now: &str,
        note: Option<&str>,
    ) -> Result<(), StoreError>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Records who created an MCP session (dropping records older than `stale_before`);
    /// false when another identity holds the id.
    fn bind_session(
        &mut self,
        upstream: &str,
        id: &str,
        principal: &str,
        now: &str,
        stale_before: &str,
    ) -> Result<bool, StoreError>;
    fn end_session(&mut self, upstream: &str, id: &str) -> Result<(), StoreError>;
    /// Stores a signed checkpoint (a second one for the same seq, from another replica,
    /// is the same statement and is skipped).
    fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError>;
    /// The seq of the newest checkpoint, 0 when there is none.
    fn last_checkpoint(&mut self) -> Result<u64, StoreError>;
}

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

/// Seqs handed out in the current transaction, where the chain stands, and what to
/// publish once it commits.
struct Seqs {
    next: u64,
    /// The hash of the last event inserted (or of the one before the transaction).
    hash: String,
    inserted: Vec<Published>,
}

/// Signed checkpoints of the chain: every `every_events` events, and whenever a
/// `WriteOp::Checkpoint` asks (the gateway does every `checkpoint_every_secs`).
pub struct Checkpointing {
    pub signer: std::sync::Arc<AuditSigner>,
    pub every_events: u64,
}

/// Where committed results go besides their callers.
pub struct Outlets {
    pub health: Arc<Health>,
    /// Where this writer's own commits are published, or `None` when a tail of the
    /// store publishes every writer's events (several replicas on one database).
    pub live: Option<tokio::sync::broadcast::Sender<Arc<Published>>>,
    pub last_seq: Arc<AtomicU64>,
    /// Told the last seq of each commit, for a tail that publishes.
    pub committed: Option<tokio::sync::watch::Sender<u64>>,
    pub checkpoints: Option<Checkpointing>,
}

/// Starts the writer on its own thread. It stops when every sender is gone.
pub fn spawn<C: WriteConn>(conn: C, rx: Receiver<Job>, outlets: Outlets) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("toolgate-store".into())
        .spawn(move || run(conn, rx, outlets))
        .map(drop)
}

fn run<C: WriteConn>(mut conn: C, rx: Receiver<Job>, outlets: Outlets) {
    let health = outlets.health.clone();
    let mut batch: Vec<Job> = Vec::new();
    let mut reported = false;
    // The newest checkpoint's seq, once read from the store.
    let mut checkpointed: Option<u64> = None;
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
        let head = match conn.begin() {
            Ok(head) => head,
            Err(e) => {
                health.fail();
                if !reported {
                    tracing::error!(error = %e, "audit store cannot begin a write; calls are denied until it can");
                    reported = true;
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        // The lock is ours: from here on, each claimed write will be committed or
        // reported failed, and its caller waits for which.
        let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch
            .drain(..)
            .filter(Job::claim)
            .map(|job| (job.op, job.reply))
            .unzip();
        let asked_checkpoint = ops.iter().any(|op| matches!(op, WriteOp::Checkpoint));
        let mut seqs = Seqs {
            next: head.next_seq,
            hash: head.last_hash,
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
                insert_event(&mut conn, body, &now, &mut seqs)?;
            }
            let mut done = Vec::with_capacity(ops.len());
            for op in ops {
                // A refused write is that write's answer; it wrote nothing, so the rest
                // of the group commits. Any other error fails the group.
                done.push(match apply(&mut conn, op, &now, &mut seqs) {
                    Err(e) if e.is_refusal() => Err(e),
                    other => Ok(other?),
                });
            }
            let signed = match &outlets.checkpoints {
                Some(c) => checkpoint(
                    &mut conn,
                    c,
                    &seqs,
                    &mut checkpointed,
                    asked_checkpoint,
                    &now,
                )?,
                None => None,
            };
            conn.commit(&Head {
                next_seq: seqs.next,
                last_hash: seqs.hash.clone(),
            })?;
            Ok::<_, StoreError>((done, signed))
        })();
        match result {
            Ok((done, signed)) => {
                if signed.is_some() {
                    checkpointed = signed;
                }
                if recovering {
                    tracing::warn!(denied_unlogged, "audit store recovered");
                }
                // Only committed events are published, in seq order, each after the
                // last-seq mark that subscribers stitch their replay to.
                let last = seqs.next - 1;
                if let Some(live) = &outlets.live {
                    for published in seqs.inserted {
                        outlets.last_seq.store(published.seq, Ordering::Release);
                        let _ = live.send(Arc::new(published));
                    }
                }
                if let Some(committed) = &outlets.committed {
                    committed.send_if_modified(|seen| {
                        let newer = last > *seen;
                        *seen = (*seen).max(last);
                        newer
                    });
                }
                health.failing.store(false, Ordering::Release);
                reported = false;
                for (reply, result) in replies.into_iter().zip(done) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                conn.rollback();
                // Read again: another replica may have checkpointed meanwhile.
                checkpointed = None;
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

/// Signs where the chain stands, in this transaction, when `every_events` events went
/// unsigned or a checkpoint was asked for and any went unsigned. The seq signed, if any.
fn checkpoint<C: WriteConn>(
    conn: &mut C,
    c: &Checkpointing,
    seqs: &Seqs,
    checkpointed: &mut Option<u64>,
    asked: bool,
    now: &str,
) -> Result<Option<u64>, StoreError> {
    let last = seqs.next - 1;
    let since = match *checkpointed {
        Some(seq) => seq,
        None => {
            let seq = conn.last_checkpoint()?;
            *checkpointed = Some(seq);
            seq
        }
    };
    // Nothing new, or a chain not begun (events from before it only).
    if last <= since || seqs.hash == super::GENESIS_HASH {
        return Ok(None);
    }
    if !asked && last - since < c.every_events {
        return Ok(None);
    }
    conn.insert_checkpoint(&c.signer.checkpoint(last, &seqs.hash, now))?;
    Ok(Some(last))
}

fn insert_event<C: WriteConn>(
    conn: &mut C,
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
    let hash = super::chain_hash(&seqs.hash, &json);
    conn.insert_event(
        event.seq,
        now,
        event.body.kind(),
        event.body.call_id(),
        &json,
        (&seqs.hash, &hash),
    )?;
    seqs.inserted.push(Published {
        seq: event.seq,
        json,
    });
    seqs.next += 1;
    seqs.hash = hash;
    Ok(event)
}

/// One event, and no class.
fn one<C: WriteConn>(
    conn: &mut C,
    body: EventBody,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    Ok(Committed {
        events: vec![insert_event(conn, body, now, seqs)?],
        risk: None,
    })
}

fn apply<C: WriteConn>(
    conn: &mut C,
    op: WriteOp,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    match op {
        WriteOp::Event(body) => one(conn, *body, now, seqs),
        // The checkpoint itself is made once the group's events are in (`checkpoint`).
        WriteOp::Flush | WriteOp::Checkpoint => Ok(Committed::default()),
        WriteOp::Together(ops) => {
            // A savepoint: when a part is refused (a stale edit), none of the parts is
            // kept, and the rest of the group still commits. Any other error fails the
            // whole group, as it would without one.
            conn.savepoint()?;
            let mut all = Committed::default();
            let mark = (seqs.next, seqs.inserted.len(), seqs.hash.clone());
            for op in ops {
                match apply(conn, op, now, seqs) {
                    Ok(c) => {
                        all.events.extend(c.events);
                        all.risk = all.risk.or(c.risk);
                    }
                    Err(e) => {
                        conn.rollback_to_savepoint()?;
                        seqs.next = mark.0;
                        seqs.inserted.truncate(mark.1);
                        seqs.hash = mark.2;
                        return Err(e);
                    }
                }
            }
            conn.release_savepoint()?;
            Ok(all)
        }
        WriteOp::ListedTool(tool) => record_listing(conn, &tool, now, seqs),
        WriteOp::SeedRisk {
            upstream,
            tool,
            risk,
            suggested,
        } => {
            conn.seed_risk(&upstream, &tool, risk, suggested, now)?;
            let row = conn.tool_row(&upstream, &tool)?;
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
            let current = conn
                .tool_row(&upstream, &tool)?
                .ok_or(StoreError::NoSuchTool)?;
            if expected_version.is_some_and(|v| v != current.version) {
                return Err(StoreError::StaleVersion(Box::new(current)));
            }
            conn.set_risk(&upstream, &tool, risk, &by, now, note.as_deref())?;
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
            conn.insert_hold(&hold)?;
            let body = EventBody::HoldCreated {
                call_id: hold.call_id.clone(),
                expires_at: hold.expires_at.clone(),
                ttl_ms: hold.ttl_ms,
                phase: HoldPhase::Waiting,
            };
            one(conn, body, now, seqs)
        }
        WriteOp::HoldExtended {
            call_id,
            expires_at,
            by,
        } => {
            if !conn.extend_hold(&call_id, &expires_at)? {
                return Err(match conn.hold(&call_id)? {
                    Some(current) => StoreError::HoldTaken(Box::new(current)),
                    None => StoreError::NoSuchHold,
                });
            }
            let body = EventBody::HoldExtended {
                call_id,
                expires_at,
                by,
            };
            one(conn, body, now, seqs)
        }
        WriteOp::HoldApproval {
            call_id,
            by,
            reason,
            required,
            grant,
        } => {
            // Only an open hold takes approvals; of two racing, each counts once.
            match conn.hold(&call_id)? {
                None => return Err(StoreError::NoSuchHold),
                Some(h) if h.resolution.is_some() => {
                    return Err(StoreError::HoldTaken(Box::new(h)));
                }
                Some(_) => {}
            }
            let asked = grant.map(|g| serde_json::to_string(&g)).transpose();
            let asked = asked.map_err(|e| StoreError::Sql(e.to_string()))?;
            if !conn.add_approval(&call_id, &by, reason.as_deref(), asked.as_deref(), now)? {
                return Err(StoreError::AlreadyApproved);
            }
            let approvals = conn.approval_count(&call_id)?;
            let body = EventBody::HoldApproval {
                call_id: call_id.clone(),
                by: by.clone(),
                reason: reason.clone(),
                approvals,
                required,
                grant,
            };
            let mut committed = one(conn, body, now, seqs)?;
            if approvals >= required {
                let approvers = conn.approvers(&call_id)?;
                if !conn.resolve_hold(
                    &call_id,
                    HoldState::Unresolved,
                    Resolution::Approved,
                    &by,
                    reason.as_deref(),
                    now,
                    None,
                )? {
                    return Err(StoreError::Sql(format!(
                        "hold {call_id} was resolved in the middle of its last approval"
                    )));
                }
                // A grant only when every approver asked for this same one.
                let grant = grant.filter(|g| {
                    let g = serde_json::to_string(g).ok();
                    approvers.iter().all(|(_, asked)| *asked == g)
                });
                let approvers: Vec<String> = approvers.into_iter().map(|(by, _)| by).collect();
                let body = EventBody::HoldResolved {
                    call_id: call_id.clone(),
                    resolution: Resolution::Approved,
                    by,
                    reason: reason.clone(),
                    approvers: approvers.clone(),
                };
                committed.events.push(insert_event(conn, body, now, seqs)?);
                if let Some(asked) = grant {
                    let made = make_grant(conn, &call_id, asked, approvers, reason, now, seqs)?;
                    committed.events.push(made);
                }
            }
            Ok(committed)
        }
        WriteOp::HoldResolved {
            call_id,
            from,
            resolution,
            by,
            reason,
            approvers,
            due_by,
            grant,
        } => {
            // Conditional: of two resolutions racing (two approvers, two replicas), the
            // first to commit wins and the other learns how the hold ended.
            if !conn.resolve_hold(
                &call_id,
                from,
                resolution,
                &by,
                reason.as_deref(),
                now,
                due_by.as_deref(),
            )? {
                return Err(match conn.hold(&call_id)? {
                    Some(current) => StoreError::HoldTaken(Box::new(current)),
                    None => StoreError::NoSuchHold,
                });
            }
            let body = EventBody::HoldResolved {
                call_id: call_id.clone(),
                resolution,
                by: by.clone(),
                reason: reason.clone(),
                approvers,
            };
            let mut committed = one(conn, body, now, seqs)?;
            if let Some(asked) = grant.filter(|_| resolution == Resolution::Approved) {
                let made = make_grant(conn, &call_id, asked, vec![by], reason, now, seqs)?;
                committed.events.push(made);
            }
            Ok(committed)
        }
        WriteOp::GrantUsed { id } => {
            if conn.use_grant(&id, now)? {
                Ok(Committed::default())
            } else {
                Err(StoreError::GrantEnded(conn.grant(&id)?.map(Box::new)))
            }
        }
        WriteOp::GrantRevoked { id, by } => {
            if !conn.revoke_grant(&id, &by, now)? {
                return Err(StoreError::GrantEnded(conn.grant(&id)?.map(Box::new)));
            }
            one(conn, EventBody::GrantRevoked { id, by }, now, seqs)
        }
        WriteOp::SessionBound {
            upstream,
            id,
            principal,
        } => {
            // A week-old record is nobody's: bounded, whatever the idle setting.
            let stale_before = crate::time::rfc3339(
                chrono::DateTime::parse_from_rfc3339(now)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(|_| chrono::Utc::now())
                    - chrono::Duration::days(7),
            );
            if conn.bind_session(&upstream, &id, &principal, now, &stale_before)? {
                Ok(Committed::default())
            } else {
                Err(StoreError::SessionTaken)
            }
        }
        WriteOp::SessionEnded { upstream, id } => {
            conn.end_session(&upstream, &id)?;
            Ok(Committed::default())
        }
        WriteOp::Policy {
            text,
            sha256,
            by,
            note,
            expected_version,
            file_sha256,
        } => {
            let current = conn.current_policy()?;
            let current_version = current.as_ref().map_or(0, |p| p.version);
            if expected_version.is_some_and(|v| v != current_version) {
                return Err(StoreError::StalePolicy(current.map(Box::new)));
            }
            let version = current_version + 1;
            conn.insert_policy(version, &text, &sha256, &by, now, note.as_deref())?;
            if let Some(file) = file_sha256 {
                conn.set_meta("policy_file_sha256", &file)?;
            }
            let body = EventBody::PolicyChanged {
                version,
                sha256,
                by,
                note,
            };
            one(conn, body, now, seqs)
        }
    }
}

/// Makes the grant an approval of hold `call_id` asked for, for that hold's identity and
/// tool (and, for scope `identical`, its exact call), counted from this commit.
fn make_grant<C: WriteConn>(
    conn: &mut C,
    call_id: &str,
    asked: GrantRequest,
    approvers: Vec<String>,
    reason: Option<String>,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Event, StoreError> {
    let hold = conn.hold(call_id)?.ok_or(StoreError::NoSuchHold)?;
    let unreadable = |e: serde_json::Error| StoreError::Sql(format!("hold {call_id}: {e}"));
    let identity: crate::gateway::identity::Identity =
        serde_json::from_str(&hold.identity).map_err(unreadable)?;
    let decision: crate::api::DecisionEvent =
        serde_json::from_str(&hold.decision).map_err(unreadable)?;
    let from = chrono::DateTime::parse_from_rfc3339(now)
        .map_err(|e| StoreError::Sql(format!("the commit's time: {e}")))?
        .with_timezone(&chrono::Utc);
    let secs = asked.for_secs.min(i64::MAX as u64 / 2000) as i64;
    let tool = conn.tool_row(&decision.upstream, &decision.tool)?;
    let grant = Grant {
        risk: tool.as_ref().map_or(decision.risk, |t| t.risk),
        definition_sha256: tool.and_then(|t| t.definition_sha256),
        id: uuid::Uuid::now_v7().to_string(),
        scope: asked.scope,
        identity: identity.to_wire(),
        upstream: decision.upstream,
        tool: decision.tool,
        call_hash: (asked.scope == GrantScope::Identical).then_some(hold.call_hash),
        call_id: call_id.to_owned(),
        approvers,
        reason,
        for_secs: asked.for_secs,
        created_at: now.to_owned(),
        expires_at: crate::time::rfc3339(from + chrono::Duration::seconds(secs)),
        uses: 0,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    let body = serde_json::to_string(&grant).map_err(|e| StoreError::Sql(e.to_string()))?;
    conn.insert_grant(&grant, &identity.principal(), &body)?;
    insert_event(conn, EventBody::GrantCreated(grant), now, seqs)
}

/// Records one listing. The first listing of a tool, seeded or not, records its hash
/// and is not a change; a different hash later is a change, which sends a classified
/// tool back to review unless its upstream says `on_tool_change = "keep"`.
fn record_listing<C: WriteConn>(
    conn: &mut C,
    t: &ListedTool,
    now: &str,
    seqs: &mut Seqs,
) -> Result<Committed, StoreError> {
    let previous = conn.listed_before(&t.upstream, &t.name)?;
    conn.upsert_listing(t, now)?;
    conn.insert_definition(t, now)?;
    let changed = match previous {
        None | Some((None, _)) => None,
        Some((Some(old), _)) if old == t.sha256 => {
            return Ok(Committed {
                events: Vec::new(),
                risk: conn.tool_row(&t.upstream, &t.name)?.map(|r| r.risk),
            });
        }
        Some((Some(old), risk)) => Some((old, risk)),
    };
    let event = match changed {
        None => {
            let row = conn
                .tool_row(&t.upstream, &t.name)?
                .ok_or(StoreError::NoSuchTool)?;
            EventBody::ToolDiscovered(row)
        }
        Some((old_sha, risk)) => {
            if t.on_change == OnToolChange::Reset && risk != Risk::Unclassified.as_str() {
                conn.reset_risk(&t.upstream, &t.name, now)?;
            }
            let old_definition = conn.definition(&t.upstream, &t.name, &old_sha)?;
            let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
            EventBody::ToolChanged {
                tool: conn
                    .tool_row(&t.upstream, &t.name)?
                    .ok_or(StoreError::NoSuchTool)?,
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
