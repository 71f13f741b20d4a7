//! The durable store: SQLite under `data_dir`.
//!
//! One writer thread owns the only write connection (rusqlite) and commits in groups:
//! whatever arrived while the last commit ran goes into the next transaction, and each
//! caller awaits its own commit. The event seq is assigned inside that transaction, so
//! it is dense and durable. WAL with `synchronous = NORMAL` survives a process crash; a
//! pool of sqlx reader connections serves queries beside the writer.

mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};
use tokio::sync::oneshot;

use crate::api::{
    CallCounts, DecisionEvent, DecisionRecord, Event, EventBody, HoldSummary, PolicyText,
    PolicyVersion, Resolution, Risk, ToolRow,
};
use crate::config::OnToolChange;
pub use writer::Job;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("store error: {0}")]
    Sql(String),
    #[error("the audit store did not commit in time")]
    Timeout,
    #[error("the store writer has stopped")]
    Closed,
    #[error("store holds an unknown risk class {0:?}")]
    BadRisk(String),
    #[error("no such tool")]
    NoSuchTool,
    #[error("the tool is at version {}, not the expected one", .0.version)]
    StaleVersion(Box<ToolRow>),
    /// A policy edit's expected version is not the one in force (`None`: none is stored).
    #[error("the policy is at version {}, not the expected one", .0.as_ref().map_or(0, |p| p.version))]
    StalePolicy(Option<Box<PolicyVersion>>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Sql(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.to_string())
    }
}

/// Whether commits are succeeding, and how many calls were denied while they were not.
#[derive(Default)]
pub struct Health {
    failing: AtomicBool,
    denied_unlogged: AtomicU64,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    fn fail(&self) {
        self.failing.store(true, Ordering::Release);
    }

    /// Counts a call that was denied because its decision could not be stored.
    pub fn note_denied_unlogged(&self) {
        self.fail();
        self.denied_unlogged.fetch_add(1, Ordering::AcqRel);
    }
}

/// A write the writer task performs in its next transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Append one event.
    Event(Box<EventBody>),
    /// Nothing: commits whatever the writer holds back, such as lingering records.
    Flush,
    /// Record one listing of a tool, with `tool.discovered` or `tool.changed`.
    ListedTool(Box<ListedTool>),
    /// Store a `[[risk]]` seed where nobody has chosen a class yet.
    SeedRisk {
        upstream: String,
        tool: String,
        risk: Risk,
        suggested: Risk,
    },
    /// An operator's class for a tool, with `risk.changed`. `expected_version`
    /// guards against overwriting an edit the operator has not seen.
    SetRisk {
        upstream: String,
        tool: String,
        risk: Risk,
        expected_version: Option<u64>,
        by: String,
        note: Option<String>,
    },
    /// Store a new hold, with `hold.created`.
    HoldCreated(Box<StoredHold>),
    /// Resolve a hold, with `hold.resolved`.
    HoldResolved {
        call_id: String,
        resolution: Resolution,
        by: String,
        reason: Option<String>,
    },
    /// Several writes that take effect together or not at all.
    Together(Vec<WriteOp>),
    /// Store a new policy version, with `policy.changed`. `expected_version` guards
    /// against replacing a version the operator has not seen.
    Policy {
        text: String,
        sha256: String,
        by: String,
        note: Option<String>,
        expected_version: Option<u64>,
        /// Set when the version came from `[policy] file`.
        file_sha256: Option<String>,
    },
}

/// A tool as one listing showed it.
#[derive(Debug, Clone)]
pub struct ListedTool {
    pub upstream: String,
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub annotations: Option<serde_json::Value>,
    pub input_schema: Option<serde_json::Value>,
    pub canonical_definition: String,
    pub sha256: String,
    pub suggested_risk: Risk,
    /// The class a tool gets the first time it is seen.
    pub starting_risk: Risk,
    pub starting_source: &'static str,
    pub on_change: OnToolChange,
}

/// What one committed write produced.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub events: Vec<Event>,
    /// For a listed or seeded tool: its class after the write.
    pub risk: Option<Risk>,
}

/// A catalog row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTool {
    pub upstream: String,
    pub name: String,
    pub input_schema: Option<String>,
    pub definition_sha256: Option<String>,
    pub risk: Risk,
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHold {
    pub call_id: String,
    pub call_hash: String,
    /// JSON of the caller's identity.
    pub identity: String,
    /// JSON of the decision event.
    pub decision: String,
    pub session_id: Option<String>,
    pub request_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub ttl_ms: u64,
    pub resolution: Option<Resolution>,
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    pub resolved_at: Option<String>,
}

/// Each step runs once, in order; the store records how many have run (SQLite's
/// `user_version`). A step is never edited once released: a change is a new step.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));

-- The audit log and event stream: every event, in order, as the wire shows it.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    call_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_call ON events (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX events_by_kind ON events (kind, seq);

-- The catalog: one row per (upstream, tool), listed or only seeded.
CREATE TABLE tools (
    upstream TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT,
    description TEXT,
    annotations TEXT,            -- JSON object, NULL when the tool has none
    input_schema TEXT,           -- JSON
    definition_sha256 TEXT,      -- NULL until the tool is listed
    suggested_risk TEXT NOT NULL,
    risk TEXT NOT NULL,
    risk_source TEXT NOT NULL,   -- annotations | default | seed | operator | reset
    version INTEGER NOT NULL,
    updated_by TEXT,
    updated_at TEXT NOT NULL,
    note TEXT,
    first_listed TEXT,
    last_listed TEXT,
    PRIMARY KEY (upstream, name)
);

-- Every definition a tool has been listed with, so a change can show old and new.
CREATE TABLE tool_definitions (
    upstream TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,    -- RFC 8785 canonical JSON
    first_seen TEXT NOT NULL,
    PRIMARY KEY (upstream, name, sha256)
);

-- Held calls. The arguments here are redacted; the unredacted ones live only in memory.
CREATE TABLE holds (
    call_id TEXT PRIMARY KEY,
    call_hash TEXT NOT NULL,     -- identity, upstream, tool and canonical arguments
    identity TEXT NOT NULL,      -- JSON
    decision TEXT NOT NULL,      -- JSON: the decision event
    session_id TEXT,
    request_id TEXT NOT NULL,    -- JSON
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    resolution TEXT,
    resolved_by TEXT,
    reason TEXT,
    resolved_at TEXT
);
CREATE INDEX holds_open ON holds (expires_at) WHERE resolution IS NULL OR resolution = 'approved';

-- Every policy version; the highest is in force.
CREATE TABLE policies (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // Why a policy version was stored, as its edit said.
    "ALTER TABLE policies ADD COLUMN note TEXT;",
    // A replay's `since` window finds its first decision without reading older ones.
    "CREATE INDEX events_by_kind_ts ON events (kind, ts);",
];

/// A committed event as subscribers get it: its seq and its JSON, serialized once.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub json: String,
}

/// How many committed events the live channel keeps for slow subscribers; one that
/// falls further behind is closed with `lagged` and resumes with `since=`.
pub const LIVE_EVENTS: usize = 1024;

/// The store's handle: cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    readers: SqlitePool,
    writes: std::sync::mpsc::SyncSender<Job>,
    health: Arc<Health>,
    timeout: Duration,
    live: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// The highest committed seq, set before that event is published.
    last_seq: Arc<AtomicU64>,
}

/// The database file in `data_dir`.
const DB_FILE: &str = "toolgate.db";

fn connect_options(data_dir: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(data_dir.join(DB_FILE))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal))
}

impl Store {
    /// Opens (or creates) the store and starts its writer. `timeout` bounds how long a
    /// decision waits for its commit before the call is denied.
    pub async fn open(data_dir: &Path, timeout: Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        // The writer waits on a busy database only briefly, so it can drop calls whose
        // callers gave up and take in new ones while it retries.
        let path = data_dir.join(DB_FILE);
        let mut write_conn = rusqlite::Connection::open(&path)?;
        write_conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        write_conn.busy_timeout(Duration::from_millis(20))?;
        migrate(&mut write_conn)?;
        let next_seq: i64 =
            write_conn.query_row("SELECT coalesce(max(seq), 0) + 1 FROM events", [], |r| {
                r.get(0)
            })?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                connect_options(data_dir)?
                    .busy_timeout(Duration::from_secs(5))
                    .read_only(true),
            )
            .await?;
        let health = Arc::new(Health::default());
        let (writes, rx) = std::sync::mpsc::sync_channel(4096);
        let (live, _) = tokio::sync::broadcast::channel(LIVE_EVENTS);
        let last_seq = Arc::new(AtomicU64::new(next_seq as u64 - 1));
        writer::spawn(
            write_conn,
            rx,
            writer::Outlets {
                health: health.clone(),
                live: live.clone(),
                last_seq: last_seq.clone(),
            },
            next_seq as u64,
        )
        .map_err(|e| StoreError::Sql(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            readers,
            writes,
            health,
            timeout,
            live,
            last_seq,
        })
    }

    /// How long a write may take before its caller gives up on it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Subscribes to committed events, and says the last seq committed before the
    /// subscription: every later event arrives on the receiver, every earlier one is
    /// in the store. That is the seam a replaying subscriber stitches at.
    pub fn subscribe(&self) -> (tokio::sync::broadcast::Receiver<Arc<Published>>, u64) {
        let rx = self.live.subscribe();
        (rx, self.last_seq.load(Ordering::Acquire))
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }

    /// Stored events with `after < seq <= until`, oldest first, at most `limit`.
    pub async fn events_between(
        &self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<Published>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(after as i64)
        .bind(until as i64)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Published {
                seq: r.get::<i64, _>("seq") as u64,
                json: r.get("body"),
            })
            .collect())
    }

    /// Commits a decision's event within the store timeout, or not at all: a caller
    /// that gives up withdraws its write, so the log never holds a decision that the
    /// client did not get.
    pub async fn commit_decision(&self, body: EventBody) -> Result<Event, StoreError> {
        self.commit_call(WriteOp::Event(Box::new(body)))
            .await
            .map(first_event)
    }

    /// Commits a decision together with another write, in one transaction: both or
    /// neither. The decision is the first of the committed events.
    pub async fn commit_decision_with(
        &self,
        body: EventBody,
        also: WriteOp,
    ) -> Result<Committed, StoreError> {
        self.commit_call(WriteOp::Together(vec![
            WriteOp::Event(Box::new(body)),
            also,
        ]))
        .await
    }

    /// A write a call's answer waits on: one that did not commit in time is a call
    /// denied unlogged, which `/readyz` and `store.recovered` report.
    async fn commit_call(&self, op: WriteOp) -> Result<Committed, StoreError> {
        let committed = self.write_in_time(op).await;
        if matches!(committed, Err(StoreError::Timeout)) {
            self.health.note_denied_unlogged();
        }
        committed
    }

    /// Commits a write within the store timeout, or not at all. A caller that gives up
    /// withdraws its write, so an answer of "not stored" is the truth: an edit or an
    /// approval answered 503 never takes effect later. A write the writer already holds
    /// the lock with is a moment from its commit, and its real outcome is awaited.
    pub async fn write_in_time(&self, op: WriteOp) -> Result<Committed, StoreError> {
        let (job, claimed, mut reply) = Job::new(op);
        match self.writes.try_send(job) {
            Ok(()) => {}
            // A queue thousands deep is a store that cannot keep up: fail now, and
            // without tying up a thread to wait for room.
            Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(StoreError::Timeout),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        match tokio::time::timeout(self.timeout, &mut reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) if Job::withdraw(&claimed) => Err(StoreError::Timeout),
            Err(_) => reply.await.map_err(|_| StoreError::Closed)?,
        }
    }

    /// Commits a write that is not on a call's path, waiting as long as it takes.
    pub async fn write(&self, op: WriteOp) -> Result<Committed, StoreError> {
        let (job, _claimed, reply) = Job::new(op);
        self.enqueue(job).await?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits every record queued so far; for a stop.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write_in_time(WriteOp::Flush).await.map(drop)
    }

    /// Queues a record of something that already happened (how a call ended), which
    /// nobody waits for: the writer may hold it briefly to commit it with the next
    /// decision. A failed commit is logged by the writer.
    pub fn record(&self, op: WriteOp) {
        let (job, _claimed, _reply) = Job::new(op);
        match self.writes.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!("the store writer has stopped; a record is lost");
            }
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let writes = self.writes.clone();
                tokio::task::spawn_blocking(move || writes.send(job).is_ok());
            }
        }
    }

    /// Hands a job to the writer; a full queue is waited out off the runtime's threads.
    async fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        match self.writes.try_send(job) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(StoreError::Closed),
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let writes = self.writes.clone();
                let sent = tokio::task::spawn_blocking(move || writes.send(job).is_ok()).await;
                match sent {
                    Ok(true) => Ok(()),
                    _ => Err(StoreError::Closed),
                }
            }
        }
    }

    pub async fn store_id(&self) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'store_id'")
                .fetch_one(&self.readers)
                .await?,
        )
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.readers)
            .await?)
    }

    pub async fn tools(&self) -> Result<Vec<StoredTool>, StoreError> {
        let rows = sqlx::query(
            "SELECT upstream, name, input_schema, definition_sha256, risk FROM tools ORDER BY upstream, name",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|r| {
                let risk: String = r.get("risk");
                Ok(StoredTool {
                    upstream: r.get("upstream"),
                    name: r.get("name"),
                    input_schema: r.get("input_schema"),
                    definition_sha256: r.get("definition_sha256"),
                    risk: Risk::parse(&risk).ok_or(StoreError::BadRisk(risk))?,
                })
            })
            .collect()
    }

    /// Holds that can still matter: unresolved, or approved and not yet run.
    pub async fn open_holds(&self) -> Result<Vec<StoredHold>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM holds WHERE resolution IS NULL OR resolution = 'approved' ORDER BY created_at",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.iter().map(stored_hold).collect())
    }

    pub async fn hold(&self, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
        let row = sqlx::query("SELECT * FROM holds WHERE call_id = ?1")
            .bind(call_id)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.as_ref().map(stored_hold))
    }

    /// The catalog as `GET /tools` shows it, with each tool's decisions by outcome.
    pub async fn tool_rows(&self) -> Result<Vec<(ToolRow, CallCounts)>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {TOOL_JSON} FROM tools ORDER BY upstream, name"
        )))
        .fetch_all(&self.readers)
        .await?;
        let counts = sqlx::query(
            "SELECT json_extract(body, '$.upstream') AS upstream, json_extract(body, '$.tool') AS tool,
                    json_extract(body, '$.outcome') AS outcome, count(*) AS n
             FROM events WHERE kind = 'decision' GROUP BY 1, 2, 3",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let row = tool_row_from_json(r)?;
                let mut calls = CallCounts::default();
                for c in &counts {
                    let (u, t): (Option<String>, Option<String>) =
                        (c.get("upstream"), c.get("tool"));
                    if u.as_deref() == Some(&row.upstream)
                        && t.as_deref() == Some(&row.name)
                        && let Some(outcome) = c
                            .get::<Option<String>, _>("outcome")
                            .and_then(|o| serde_json::from_value(serde_json::Value::String(o)).ok())
                    {
                        calls.add(outcome, c.get::<i64, _>("n").max(0) as u64);
                    }
                }
                Ok((row, calls))
            })
            .collect()
    }

    /// Decisions newest first, below `before`, each with its hold folded in.
    pub async fn decisions(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.body AS body, h.resolution AS resolution, h.resolved_by AS resolved_by, h.reason AS reason,
                    h.resolved_at AS resolved_at, h.expires_at AS expires_at, h.call_id AS held
             FROM events e LEFT JOIN holds h ON h.call_id = e.call_id
             WHERE e.kind = 'decision' AND e.seq < ?1 ORDER BY e.seq DESC LIMIT ?2",
        )
        .bind(before.map_or(i64::MAX, |b| b as i64))
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let mut record: DecisionRecord = serde_json::from_str(&r.get::<String, _>("body"))
                    .map_err(|e| {
                        StoreError::Sql(format!("a stored decision does not read: {e}"))
                    })?;
                record.hold = r.get::<Option<String>, _>("held").map(|_| HoldSummary {
                    expires_at: r.get("expires_at"),
                    resolution: r
                        .get::<Option<String>, _>("resolution")
                        .as_deref()
                        .and_then(Resolution::parse),
                    resolved_by: r.get("resolved_by"),
                    resolved_at: r.get("resolved_at"),
                    reason: r.get("reason"),
                });
                Ok(record)
            })
            .collect()
    }

    /// A consistent snapshot of the recorded decisions in `window`, read page by page in
    /// one read transaction: the writer goes on (WAL), and what the snapshot shows does
    /// not move while it is read.
    /// At most `most` decisions, the newest of the window; `upto` pins the window's end.
    pub async fn decision_snapshot(
        &self,
        window: &crate::api::ReplayWindow,
        upto: Option<u64>,
        most: u64,
    ) -> Result<DecisionSnapshot, StoreError> {
        let mut tx = self.readers.begin().await?;
        // The first read fixes the snapshot.
        let newest: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        let upto = upto.map_or(newest, |u| (u.min(i64::MAX as u64) as i64).min(newest));
        let floor: Option<i64> = sqlx::query_scalar(
            "SELECT min(seq) FROM (SELECT seq FROM events WHERE kind = 'decision' AND seq <= ?1
             ORDER BY seq DESC LIMIT ?2)",
        )
        .bind(upto)
        .bind(most.min(i64::MAX as u64) as i64)
        .fetch_one(&mut *tx)
        .await?;
        let first: Option<i64> = match window {
            crate::api::ReplayWindow::Last(n) => sqlx::query_scalar(
                "SELECT min(seq) FROM (SELECT seq FROM events WHERE kind = 'decision' AND seq <= ?1
                 ORDER BY seq DESC LIMIT ?2)",
            )
            .bind(upto)
            .bind((*n).min(i64::MAX as u64) as i64)
            .fetch_one(&mut *tx)
            .await?,
            crate::api::ReplayWindow::Since(ts) => sqlx::query_scalar(
                "SELECT min(seq) FROM events WHERE kind = 'decision' AND ts >= ?1 AND seq <= ?2",
            )
            .bind(ts)
            .bind(upto)
            .fetch_one(&mut *tx)
            .await?,
        };
        // A window never reaches further back than `most` decisions.
        let first = first.map(|f| f.max(floor.unwrap_or(f)));
        Ok(DecisionSnapshot {
            tx,
            after: first.map_or(upto, |f| f - 1),
            upto,
        })
    }

    /// The policy in force: the newest stored version.
    pub async fn current_policy(&self) -> Result<Option<PolicyText>, StoreError> {
        self.policy_text(None).await
    }

    /// A stored policy version and its text.
    pub async fn policy_version(&self, version: u64) -> Result<Option<PolicyText>, StoreError> {
        self.policy_text(Some(version)).await
    }

    /// Version `version`, or the newest one.
    async fn policy_text(&self, version: Option<u64>) -> Result<Option<PolicyText>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {POLICY_JSON} AS stored, text FROM policies
             WHERE ?1 IS NULL OR version = ?1 ORDER BY version DESC LIMIT 1"
        )))
        .bind(version.map(|v| v as i64))
        .fetch_optional(&self.readers)
        .await?;
        row.map(|r| {
            Ok(PolicyText {
                stored: policy_version_from_json(&r.get::<String, _>("stored"))?,
                text: r.get("text"),
            })
        })
        .transpose()
    }

    /// Every stored policy version, newest first, without their texts.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {POLICY_JSON} FROM policies ORDER BY version DESC"
        )))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(|r| policy_version_from_json(r)).collect()
    }
}

/// A `policies` row (without its text) as the JSON of a `PolicyVersion`, so the writer
/// (rusqlite) and the readers (sqlx) share one mapping.
const POLICY_JSON: &str =
    "json_object('version', version, 'sha256', sha256, 'by', by, 'at', created_at, 'note', note)";

fn policy_version_from_json(json: &str) -> Result<PolicyVersion, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(format!("a stored policy row: {e}")))
}

/// Recorded decisions read in pages from one snapshot (see `Store::decision_snapshot`).
/// Dropping it ends the read transaction.
pub struct DecisionSnapshot {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    after: i64,
    upto: i64,
}

impl DecisionSnapshot {
    /// The window's end: the newest seq the snapshot reads.
    pub fn upto(&self) -> u64 {
        self.upto as u64
    }

    /// The next `size` decisions in seq order, or none once the window is read.
    pub async fn next_page(&mut self, size: u32) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM events WHERE kind = 'decision' AND seq > ?1 AND seq <= ?2
             ORDER BY seq LIMIT ?3",
        )
        .bind(self.after)
        .bind(self.upto)
        .bind(size as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        let page = rows
            .iter()
            .map(|body| {
                serde_json::from_str::<DecisionRecord>(body)
                    .map_err(|e| StoreError::Sql(format!("a stored decision does not read: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = page.last() {
            self.after = last.seq as i64;
        }
        Ok(page)
    }
}

/// A catalog row as the JSON of a `ToolRow`, so the writer (rusqlite) and the readers
/// (sqlx) share one mapping.
const TOOL_JSON: &str = "json_object('upstream', upstream, 'name', name, 'title', title,
    'annotations', json(annotations), 'definition_sha256', definition_sha256,
    'suggested_risk', suggested_risk, 'risk', risk, 'source', risk_source, 'version', version,
    'updated_by', updated_by, 'updated_at', updated_at, 'note', note)";

fn tool_row_from_json(json: &str) -> Result<ToolRow, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(format!("a stored tool row: {e}")))
}

fn stored_hold(r: &sqlx::sqlite::SqliteRow) -> StoredHold {
    let created_at: String = r.get("created_at");
    let expires_at: String = r.get("expires_at");
    let ttl_ms = match (
        chrono::DateTime::parse_from_rfc3339(&created_at),
        chrono::DateTime::parse_from_rfc3339(&expires_at),
    ) {
        (Ok(c), Ok(e)) => (e - c).num_milliseconds().max(0) as u64,
        _ => 0,
    };
    StoredHold {
        call_id: r.get("call_id"),
        call_hash: r.get("call_hash"),
        identity: r.get("identity"),
        decision: r.get("decision"),
        session_id: r.get("session_id"),
        request_id: r.get("request_id"),
        created_at,
        expires_at,
        ttl_ms,
        resolution: r
            .get::<Option<String>, _>("resolution")
            .and_then(|s| Resolution::parse(&s)),
        resolved_by: r.get("resolved_by"),
        reason: r.get("reason"),
        resolved_at: r.get("resolved_at"),
    }
}

impl Committed {
    /// The decision a decision's commit begins with.
    pub fn into_decision(self) -> DecisionEvent {
        decision_of(first_event(self))
    }
}

/// The decision in a committed decision event.
pub fn decision_of(event: Event) -> DecisionEvent {
    match event.body {
        EventBody::Decision(d) => d,
        _ => unreachable!("a decision commits as a decision"),
    }
}

fn first_event(c: Committed) -> Event {
    c.events
        .into_iter()
        .next()
        .expect("an event write commits one event")
}

fn migrate(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        // The version is an integer: nothing to inject.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// A reply channel's sending half, as the writer holds it.
type Reply = oneshot::Sender<Result<Committed, StoreError>>;

#[cfg(test)]
mod tests;
