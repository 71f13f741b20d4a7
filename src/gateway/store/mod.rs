//! The durable store: SQLite under `data_dir` (the default), or PostgreSQL shared by
//! several replicas. The data plane and the control API see one interface.
//!
//! One writer thread per process owns the only write connection and commits in groups:
//! whatever arrived while the last commit ran goes into the next transaction, and each
//! caller awaits its own commit. The event seq is assigned inside that transaction,
//! under the store's write lock, so it is dense and durable. A pool of reader
//! connections serves queries beside the writer.

/// Readers written once for both backends: the SQL's `$N` placeholders first appear in
/// order (SQLite binds them by position, a repeated one to the same value, as PostgreSQL
/// does), `"by"` is quoted for PostgreSQL (SQLite takes it too), and `GRANT_JSON` is the
/// backend's own (a name in the macro resolves where it is expanded).
macro_rules! shared_readers {
    ($pool:ty, $row:ty) => {
        /// Grants active at `now`, soonest to end first; with `of`, only those of that
        /// (principal, upstream, tool).
        pub async fn active_grants(
            pool: &$pool,
            now: &str,
            of: Option<(&str, &str, &str)>,
        ) -> Result<Vec<String>, StoreError> {
            let (principal, upstream, tool) = of.unwrap_or_default();
            Ok(sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT {GRANT_JSON} FROM grants WHERE revoked_at IS NULL AND expires_at > $1
                 AND ($2 = '' OR (principal = $2 AND upstream = $3 AND tool = $4))
                 ORDER BY expires_at"
            )))
            .bind(now)
            .bind(principal)
            .bind(upstream)
            .bind(tool)
            .fetch_all(pool)
            .await?)
        }

        /// The approvals of every open hold, oldest first, as (call id, approval).
        pub async fn open_approvals(
            pool: &$pool,
        ) -> Result<Vec<(String, crate::api::HoldApproval)>, StoreError> {
            let rows = sqlx::query(
                "SELECT a.call_id AS call_id, a.\"by\" AS \"by\", a.at AS at, a.reason AS reason,
                 a.grant_request AS grant_request
                 FROM hold_approvals a JOIN holds h ON h.call_id = a.call_id
                 WHERE h.resolution IS NULL ORDER BY a.at",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r: &$row| {
                    (
                        r.get("call_id"),
                        super::approval_of(|c| r.try_get(c).ok().flatten()),
                    )
                })
                .collect())
        }

        pub async fn approvals_of(
            pool: &$pool,
            call_id: &str,
        ) -> Result<Vec<crate::api::HoldApproval>, StoreError> {
            let rows = sqlx::query(
                "SELECT \"by\" AS \"by\", at, reason, grant_request FROM hold_approvals
                 WHERE call_id = $1 ORDER BY at",
            )
            .bind(call_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r: &$row| super::approval_of(|c| r.try_get(c).ok().flatten()))
                .collect())
        }

        /// Events after `after` with their chain columns, oldest first.
        pub async fn chain_rows(
            pool: &$pool,
            after: u64,
            limit: u32,
        ) -> Result<Vec<crate::gateway::audit::ChainRow>, StoreError> {
            let rows = sqlx::query(
                "SELECT seq, body, prev_hash, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after.min(i64::MAX as u64) as i64)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r: &$row| crate::gateway::audit::ChainRow {
                    seq: r.get::<i64, _>("seq") as u64,
                    body: r.get("body"),
                    prev_hash: r.get("prev_hash"),
                    hash: r.get("hash"),
                })
                .collect())
        }

        /// Every signed checkpoint, oldest first.
        pub async fn checkpoints(
            pool: &$pool,
        ) -> Result<Vec<crate::gateway::audit::Checkpoint>, StoreError> {
            let rows =
                sqlx::query("SELECT seq, hash, at, public_key, signature FROM checkpoints ORDER BY seq")
                    .fetch_all(pool)
                    .await?;
            Ok(rows
                .iter()
                .map(|r: &$row| crate::gateway::audit::Checkpoint {
                    seq: r.get::<i64, _>("seq") as u64,
                    hash: r.get("hash"),
                    at: r.get("at"),
                    public_key: r.get("public_key"),
                    signature: r.get("signature"),
                })
                .collect())
        }
    };
}
use shared_readers;

mod postgres;
mod sqlite;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{PgPool, SqlitePool};
use tokio::sync::oneshot;

use crate::api::{
    CallCounts, DecisionEvent, DecisionRecord, Event, EventBody, Grant, GrantRequest, HoldSummary,
    PolicyText, PolicyVersion, Resolution, Risk, ToolRow,
};
use crate::config::OnToolChange;
pub use postgres::MIGRATIONS as POSTGRES_MIGRATIONS;
pub use sqlite::{DB_FILE, MIGRATIONS};
pub use writer::{Checkpointing, Job};

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
    /// A resolution found the hold no longer in the state it expected: someone (another
    /// request, another replica) resolved it first. This is the hold as it is now.
    #[error("the hold was already resolved")]
    HoldTaken(Box<StoredHold>),
    #[error("no such hold")]
    NoSuchHold,
    /// This operator has approved this hold already.
    #[error("already approved by this operator")]
    AlreadyApproved,
    /// The grant is revoked or expired (as it is now), or unknown (`None`).
    #[error("the grant is no longer active")]
    GrantEnded(Option<Box<crate::api::Grant>>),
    /// Another identity holds this MCP session id (on another replica).
    #[error("the session id belongs to another identity")]
    SessionTaken,
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// A write refused as that write's answer (it wrote nothing), not a failure of the
    /// store: the rest of its group commits.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::NoSuchTool
                | StoreError::StaleVersion(_)
                | StoreError::StalePolicy(_)
                | StoreError::HoldTaken(_)
                | StoreError::NoSuchHold
                | StoreError::AlreadyApproved
                | StoreError::GrantEnded(_)
                | StoreError::SessionTaken
        )
    }
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
    /// Sign where the chain stands, if any event since the last checkpoint is unsigned.
    Checkpoint,
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
    /// Resolve a hold that is still in `from`, with `hold.resolved`; refused with
    /// `HoldTaken` when it is not.
    HoldResolved {
        call_id: String,
        from: HoldState,
        resolution: Resolution,
        by: String,
        reason: Option<String>,
        /// For a hold that needed several approvals: every approver, in order.
        approvers: Vec<String>,
        /// For an expiry: the expiry the resolver knows; a hold whose stored expiry is
        /// later (extended on another replica) does not expire.
        due_by: Option<String>,
        /// For an approval: the grant it makes, with `grant.created`.
        grant: Option<GrantRequest>,
    },
    /// A new expiry for an unresolved hold, with `hold.extended`; refused with
    /// `HoldTaken` when it is resolved.
    HoldExtended {
        call_id: String,
        expires_at: String,
        by: String,
    },
    /// One approval of an unresolved hold that needs `required`, with `hold.approval`;
    /// refused with `AlreadyApproved` when this operator approved it already, and with
    /// `HoldTaken` when it is resolved. The store counts: when this approval makes
    /// `required`, the hold resolves `approved` in the same transaction, with every
    /// approver (`hold.resolved` follows in the committed events), wherever the other
    /// approvals were given.
    HoldApproval {
        call_id: String,
        by: String,
        reason: Option<String>,
        required: u32,
        /// The grant this approval asks for. The last approval makes it (with
        /// `grant.created`) only when every approval asked for this same grant.
        grant: Option<GrantRequest>,
    },
    /// One call a grant let through; refused with `GrantEnded` when the grant is no
    /// longer active (revoked, on any replica, or expired). No event: the decision it
    /// commits with names the grant.
    GrantUsed { id: String },
    /// Revoke an active grant, with `grant.revoked`; refused with `GrantEnded` when it
    /// is not active.
    GrantRevoked { id: String, by: String },
    /// Several writes that take effect together or not at all.
    Together(Vec<WriteOp>),
    /// On a shared store: `principal` created MCP session `id` on `upstream`, so that any
    /// replica admits it (and only for them). Refused with `SessionTaken` when another
    /// identity holds the id. No event.
    SessionBound {
        upstream: String,
        id: String,
        principal: String,
    },
    /// On a shared store: the session ended, or its upstream no longer knows it.
    SessionEnded { upstream: String, id: String },
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

/// Which holds a resolution applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Not resolved yet: an approval, a denial, an expiry, a cancel.
    Unresolved,
    /// Approved and not yet run: its run (`consumed`).
    Approved,
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
    /// The approvals given so far, when it needs several.
    pub approvals: Vec<crate::api::HoldApproval>,
}

/// An approval from a row's columns, each read as text by name (both backends).
fn approval_of(get: impl Fn(&str) -> Option<String>) -> crate::api::HoldApproval {
    crate::api::HoldApproval {
        by: get("by").unwrap_or_default(),
        at: get("at").unwrap_or_default(),
        reason: get("reason"),
        grant: get("grant_request").and_then(|g| serde_json::from_str(&g).ok()),
    }
}

impl StoredHold {
    /// From a row's columns, each read as text by name.
    fn from_text(get: impl Fn(&str) -> Option<String>) -> StoredHold {
        let created_at = get("created_at").unwrap_or_default();
        let expires_at = get("expires_at").unwrap_or_default();
        let ttl_ms = match (
            chrono::DateTime::parse_from_rfc3339(&created_at),
            chrono::DateTime::parse_from_rfc3339(&expires_at),
        ) {
            (Ok(c), Ok(e)) => (e - c).num_milliseconds().max(0) as u64,
            _ => 0,
        };
        StoredHold {
            call_id: get("call_id").unwrap_or_default(),
            call_hash: get("call_hash").unwrap_or_default(),
            identity: get("identity").unwrap_or_default(),
            decision: get("decision").unwrap_or_default(),
            session_id: get("session_id"),
            request_id: get("request_id").unwrap_or_default(),
            created_at,
            expires_at,
            ttl_ms,
            resolution: get("resolution").as_deref().and_then(Resolution::parse),
            resolved_by: get("resolved_by"),
            reason: get("reason"),
            resolved_at: get("resolved_at"),
            approvals: Vec::new(),
        }
    }
}

/// The migration that adds grants, the same text on both backends.
const GRANTS_MIGRATION: &str = r#"
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    upstream TEXT NOT NULL,
    tool TEXT NOT NULL,
    scope TEXT NOT NULL,         -- identical | tool
    call_hash TEXT,              -- for identical: the keyed hash of the exact call
    body TEXT NOT NULL,          -- JSON: the grant as made
    expires_at TEXT NOT NULL,
    uses BIGINT NOT NULL DEFAULT 0,
    last_used_at TEXT,
    revoked_at TEXT,
    revoked_by TEXT
);
CREATE INDEX grants_by_call ON grants (principal, upstream, tool) WHERE revoked_at IS NULL;
-- JSON of the grant an approval of a two-person hold asked for.
ALTER TABLE hold_approvals ADD COLUMN grant_request TEXT;
"#;

/// The migration that chains the audit log, the same text on both backends: each event's
/// `hash` is SHA-256 over the previous event's hash and the event's stored bytes (see
/// `chain_hash`), and signed checkpoints pin the chain where it stood.
const CHAIN_MIGRATION: &str = r#"
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
CREATE TABLE checkpoints (
    seq BIGINT PRIMARY KEY,      -- the last event the checkpoint covers
    hash TEXT NOT NULL,          -- that event's hash
    at TEXT NOT NULL,
    public_key TEXT NOT NULL,    -- hex of the Ed25519 key that signed it
    signature TEXT NOT NULL      -- hex of the signature of `checkpoint_message`
);
"#;

/// The hash before the first chained event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event's hash: SHA-256 over the previous event's hash (its 32 bytes) and the event's
/// JSON as stored, in hex. A `prev_hash` that is not 64 hex digits hashes as written.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    let mut prev = [0u8; 32];
    match hex::decode_to_slice(prev_hash, &mut prev) {
        Ok(()) => digest.update(prev),
        Err(_) => digest.update(prev_hash.as_bytes()),
    }
    digest.update(body.as_bytes());
    hex::encode(digest.finalize())
}

/// Where the next transaction starts: the seq the next event takes, and the hash of the
/// event before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub next_seq: u64,
    pub last_hash: String,
}

/// Statements both backends run as written: `$N` placeholders, which PostgreSQL binds
/// by position and SQLite by name (`"$1"`), in whatever order the text uses them.
mod shared_sql {
    pub const INSERT_GRANT: &str =
        "INSERT INTO grants (id, principal, upstream, tool, scope, call_hash, body, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    /// One use of a grant, only while it is active.
    pub const USE_GRANT: &str = "UPDATE grants SET uses = uses + 1, last_used_at = $2
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";
    pub const INSERT_CHECKPOINT: &str =
        "INSERT INTO checkpoints (seq, hash, at, public_key, signature)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    pub const LAST_CHECKPOINT: &str = "SELECT coalesce(max(seq), 0) FROM checkpoints";
    pub const REVOKE_GRANT: &str = "UPDATE grants SET revoked_at = $2, revoked_by = $3
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";
}

/// A grant row's JSON as stored: the grant as made, with its counters and revocation
/// from their columns.
fn grant_from_json(json: &str) -> Result<crate::api::Grant, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(format!("a stored grant: {e}")))
}

/// A committed event as subscribers get it: its seq and its JSON, serialized once.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub json: String,
}

/// How many committed events the live channel keeps for slow subscribers; one that
/// falls further behind is closed with `lagged` and resumes with `since=`.
pub const LIVE_EVENTS: usize = 1024;

/// Where the store lives: `[store] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database in this directory (`sqlite://DIR`, or the data dir).
    Sqlite(PathBuf),
    /// A PostgreSQL database several replicas share; the password comes from the
    /// environment variable `password_env`, never from the URL.
    Postgres { url: String, password_env: String },
}

impl Location {
    /// What the logs and errors call it, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(dir) => format!("SQLite in {}", dir.display()),
            Location::Postgres { url, .. } => match url::Url::parse(url) {
                // A Unix socket's directory is named by `?host=`; only the database's
                // place is shown, never a credential.
                Ok(u) => {
                    let socket = u
                        .query_pairs()
                        .find(|(k, v)| k == "host" && v.starts_with('/'))
                        .map(|(_, v)| v.into_owned());
                    match socket {
                        Some(dir) => format!("PostgreSQL at {dir} (socket){}", u.path()),
                        None => format!(
                            "PostgreSQL at {}:{}{}",
                            u.host_str().unwrap_or("localhost"),
                            u.port().unwrap_or(5432),
                            u.path()
                        ),
                    }
                }
                Err(_) => "PostgreSQL at an unreadable URL".into(),
            },
        }
    }
}

/// The reader connections of the backend in use.
#[derive(Clone)]
enum Readers {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same read on whichever backend the store has.
macro_rules! read {
    ($readers:expr, $f:ident ( $($arg:expr),* )) => {
        match $readers {
            Readers::Sqlite(pool) => sqlite::$f(pool $(, $arg)*).await,
            Readers::Postgres(pool) => postgres::$f(pool $(, $arg)*).await,
        }
    };
}

/// A decision row with its hold's columns, as both backends read it.
struct DecisionRow {
    body: String,
    held: Option<String>,
    expires_at: Option<String>,
    resolution: Option<String>,
    resolved_by: Option<String>,
    resolved_at: Option<String>,
    reason: Option<String>,
}

/// How many decisions of one tool had one outcome.
struct OutcomeCount {
    upstream: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    n: u64,
}

/// The store's handle: cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    readers: Readers,
    writes: std::sync::mpsc::SyncSender<Job>,
    health: Arc<Health>,
    timeout: Duration,
    live: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// The highest committed seq, set before that event is published.
    last_seq: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates) a SQLite store in `data_dir` and starts its writer. `timeout`
    /// bounds how long a decision waits for its commit before the call is denied.
    pub async fn open(data_dir: &Path, timeout: Duration) -> Result<Self, StoreError> {
        Store::open_at(&Location::Sqlite(data_dir.to_owned()), timeout).await
    }

    /// Opens the store at `location`, migrated, and starts its writer (and, on
    /// PostgreSQL, the tail that publishes every replica's events here).
    pub async fn open_at(location: &Location, timeout: Duration) -> Result<Self, StoreError> {
        Store::open_with(location, timeout, None).await
    }

    /// As `open_at`, signing checkpoints of the audit chain with `checkpoints`.
    pub async fn open_with(
        location: &Location,
        timeout: Duration,
        checkpoints: Option<Checkpointing>,
    ) -> Result<Self, StoreError> {
        let health = Arc::new(Health::default());
        let (writes, rx) = std::sync::mpsc::sync_channel(4096);
        let (live, _) = tokio::sync::broadcast::channel(LIVE_EVENTS);
        let spawned = match location {
            Location::Sqlite(dir) => {
                let (write, readers) = sqlite::open(dir).await?;
                let last_seq = Arc::new(AtomicU64::new(write.next_seq() - 1));
                let outlets = writer::Outlets {
                    health: health.clone(),
                    live: Some(live.clone()),
                    last_seq: last_seq.clone(),
                    committed: None,
                    checkpoints,
                };
                writer::spawn(write, rx, outlets).map(|()| (Readers::Sqlite(readers), last_seq))
            }
            Location::Postgres { url, password_env } => {
                let options = postgres::connect_options(url, password_env)?;
                let (write, readers) = postgres::open(options, timeout).await?;
                let newest = postgres::last_seq(&readers).await?;
                let last_seq = Arc::new(AtomicU64::new(newest));
                let (committed, woken) = tokio::sync::watch::channel(newest);
                let outlets = writer::Outlets {
                    health: health.clone(),
                    live: None,
                    last_seq: last_seq.clone(),
                    committed: Some(committed),
                    checkpoints,
                };
                tokio::spawn(postgres::tail(
                    readers.clone(),
                    postgres::Outlet {
                        live: live.clone(),
                        last_seq: last_seq.clone(),
                    },
                    woken,
                ));
                writer::spawn(write, rx, outlets).map(|()| (Readers::Postgres(readers), last_seq))
            }
        };
        let (readers, last_seq) =
            spawned.map_err(|e| StoreError::Sql(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            readers,
            writes,
            health,
            timeout,
            live,
            last_seq,
        })
    }

    /// Whether other replicas may write to this store too (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.readers, Readers::Postgres(_))
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
        let rows = read!(&self.readers, events_between(after, until, limit))?;
        Ok(rows
            .into_iter()
            .map(|(seq, json)| Published { seq, json })
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
        self.meta("store_id")
            .await?
            .ok_or_else(|| StoreError::Sql("the store has no id".into()))
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        read!(&self.readers, meta(key))
    }

    pub async fn tools(&self) -> Result<Vec<StoredTool>, StoreError> {
        read!(&self.readers, tools())?
            .into_iter()
            .map(|(upstream, name, input_schema, definition_sha256, risk)| {
                Ok(StoredTool {
                    upstream,
                    name,
                    input_schema,
                    definition_sha256,
                    risk: Risk::parse(&risk).ok_or(StoreError::BadRisk(risk))?,
                })
            })
            .collect()
    }

    /// Holds that can still matter: unresolved, or approved and not yet run.
    pub async fn open_holds(&self) -> Result<Vec<StoredHold>, StoreError> {
        let mut holds = read!(&self.readers, open_holds())?;
        let mut approvals: std::collections::HashMap<String, Vec<crate::api::HoldApproval>> =
            Default::default();
        for (call_id, approval) in read!(&self.readers, open_approvals())? {
            approvals.entry(call_id).or_default().push(approval);
        }
        for hold in &mut holds {
            hold.approvals = approvals.remove(&hold.call_id).unwrap_or_default();
        }
        Ok(holds)
    }

    pub async fn hold(&self, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
        let Some(mut hold) = read!(&self.readers, hold(call_id))? else {
            return Ok(None);
        };
        hold.approvals = read!(&self.readers, approvals_of(call_id))?;
        Ok(Some(hold))
    }

    /// Who created MCP session `id` on `upstream`, if it was recorded at or after
    /// `fresh_since` (a shared store's sessions; none on SQLite, where sessions live in
    /// the one process's memory).
    pub async fn session_owner(
        &self,
        upstream: &str,
        id: &str,
        fresh_since: &str,
    ) -> Result<Option<String>, StoreError> {
        match &self.readers {
            Readers::Sqlite(_) => Ok(None),
            Readers::Postgres(pool) => {
                postgres::session_owner(pool, upstream, id, fresh_since).await
            }
        }
    }

    /// Grants active now, soonest to end first; with `of`, only those of that
    /// (principal, upstream, tool).
    pub async fn active_grants(
        &self,
        of: Option<(&str, &str, &str)>,
    ) -> Result<Vec<Grant>, StoreError> {
        let now = crate::time::now_rfc3339();
        read!(&self.readers, active_grants(&now, of))?
            .iter()
            .map(|g| grant_from_json(g))
            .collect()
    }

    /// Approved holds not yet run whose call hashes to `call_hash`.
    pub async fn approved_holds(&self, call_hash: &str) -> Result<Vec<StoredHold>, StoreError> {
        read!(&self.readers, approved_holds(call_hash))
    }

    /// The catalog as `GET /tools` shows it, with each tool's decisions by outcome.
    pub async fn tool_rows(&self) -> Result<Vec<(ToolRow, CallCounts)>, StoreError> {
        let (rows, counts) = read!(&self.readers, tool_rows())?;
        rows.iter()
            .map(|r| {
                let row = tool_row_from_json(r)?;
                let mut calls = CallCounts::default();
                for c in &counts {
                    if c.upstream.as_deref() == Some(&row.upstream)
                        && c.tool.as_deref() == Some(&row.name)
                        && let Some(outcome) = c
                            .outcome
                            .clone()
                            .and_then(|o| serde_json::from_value(serde_json::Value::String(o)).ok())
                    {
                        calls.add(outcome, c.n);
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
        read!(&self.readers, decisions(limit, before))?
            .into_iter()
            .map(|r| {
                let mut record: DecisionRecord = serde_json::from_str(&r.body).map_err(|e| {
                    StoreError::Sql(format!("a stored decision does not read: {e}"))
                })?;
                record.hold = r.held.map(|_| HoldSummary {
                    expires_at: r.expires_at,
                    resolution: r.resolution.as_deref().and_then(Resolution::parse),
                    resolved_by: r.resolved_by,
                    resolved_at: r.resolved_at,
                    reason: r.reason,
                });
                Ok(record)
            })
            .collect()
    }

    /// A consistent snapshot of the recorded decisions in `window`, read page by page in
    /// one read transaction: the writer goes on, and what the snapshot shows does not
    /// move while it is read. At most `most` decisions, the newest of the window; `upto`
    /// pins the window's end.
    pub async fn decision_snapshot(
        &self,
        window: &crate::api::ReplayWindow,
        upto: Option<u64>,
        most: u64,
    ) -> Result<DecisionSnapshot, StoreError> {
        let (tx, after, upto) = match &self.readers {
            Readers::Sqlite(pool) => {
                let (tx, after, upto) = sqlite::snapshot(pool, window, upto, most).await?;
                (SnapshotTx::Sqlite(tx), after, upto)
            }
            Readers::Postgres(pool) => {
                let (tx, after, upto) = postgres::snapshot(pool, window, upto, most).await?;
                (SnapshotTx::Postgres(tx), after, upto)
            }
        };
        Ok(DecisionSnapshot { tx, after, upto })
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
        read!(&self.readers, policy_text(version))?
            .map(|(stored, text)| {
                Ok(PolicyText {
                    stored: policy_version_from_json(&stored)?,
                    text,
                })
            })
            .transpose()
    }

    /// Every stored policy version, newest first, without their texts.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        read!(&self.readers, policy_versions())?
            .iter()
            .map(|r| policy_version_from_json(r))
            .collect()
    }
}

/// The audit log of a store, read with no gateway running: `toolgate audit verify` and
/// `export`. It never writes.
pub struct AuditReader(Readers);

impl AuditReader {
    pub async fn open(location: &Location) -> Result<Self, StoreError> {
        Ok(Self(match location {
            Location::Sqlite(dir) => Readers::Sqlite(sqlite::open_read_only(dir).await?),
            Location::Postgres { url, password_env } => Readers::Postgres(
                postgres::open_read_only(postgres::connect_options(url, password_env)?).await?,
            ),
        }))
    }

    /// Stored events with `after < seq`, oldest first, at most `limit`, with their place
    /// in the chain.
    pub async fn chain_rows(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<crate::gateway::audit::ChainRow>, StoreError> {
        read!(&self.0, chain_rows(after, limit))
    }

    /// Every signed checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<crate::gateway::audit::Checkpoint>, StoreError> {
        read!(&self.0, checkpoints())
    }
}

/// Runs the migrations not run yet at `location` (`toolgate store migrate`): how many
/// ran, and how many there are.
pub async fn migrate(location: &Location) -> Result<(usize, usize), StoreError> {
    match location {
        Location::Sqlite(dir) => sqlite::migrate_dir(dir),
        Location::Postgres { url, password_env } => {
            postgres::migrate_url(postgres::connect_options(url, password_env)?).await
        }
    }
}

fn policy_version_from_json(json: &str) -> Result<PolicyVersion, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(format!("a stored policy row: {e}")))
}

/// A snapshot's read transaction, on whichever backend.
enum SnapshotTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Recorded decisions read in pages from one snapshot (see `Store::decision_snapshot`).
/// Dropping it ends the read transaction.
pub struct DecisionSnapshot {
    tx: SnapshotTx,
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
        let rows = match &mut self.tx {
            SnapshotTx::Sqlite(tx) => {
                sqlite::snapshot_page(tx, self.after, self.upto, size).await?
            }
            SnapshotTx::Postgres(tx) => {
                postgres::snapshot_page(tx, self.after, self.upto, size).await?
            }
        };
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

fn tool_row_from_json(json: &str) -> Result<ToolRow, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(format!("a stored tool row: {e}")))
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

/// A reply channel's sending half, as the writer holds it.
type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// Test support, for this crate's tests and the integration tests alike.
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests;
