//! The shared backend: PostgreSQL, for several gateway replicas on one database.
//!
//! Each replica's writer holds one connection on its own thread (driven by a private
//! current-thread runtime, so the writer's loop stays the same for both backends). A
//! write transaction begins by locking the one row of `seq_counter`: commits from every
//! replica are serialised there, so the seqs they hand out are dense, and a reader that
//! sees seq N sees every seq below it. The commit notifies `toolgate_events`, which wakes
//! the other replicas; the rows are the truth.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::writer::WriteConn;
use super::{Head, HoldState, ListedTool, StoreError, StoredHold, shared_sql};
use crate::api::{Grant, PolicyVersion, Resolution, Risk, ToolRow};
use crate::gateway::audit::Checkpoint;

/// The channel a commit notifies, with its last seq as the payload.
pub const CHANNEL: &str = "toolgate_events";

/// Held while migrations run, so that replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x746f_6f6c_6761_7465; // "toolgate"

/// Each step runs once, in order, in its own transaction; `toolgate_migrations` records
/// which have run. A step is never edited once released: a change is a new step.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('store_id', md5(random()::text || clock_timestamp()::text));

-- The next event's seq is handed out under this row's lock: one writer at a time, across
-- every replica, so seqs are dense and commit in order.
CREATE TABLE seq_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO seq_counter (id, value) VALUES (1, 0);

-- The audit log and event stream: every event, in order, as the wire shows it.
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    call_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_call ON events (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX events_by_kind ON events (kind, seq);
CREATE INDEX events_by_kind_ts ON events (kind, ts);

-- The catalog: one row per (upstream, tool), listed or only seeded.
CREATE TABLE tools (
    upstream TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT,
    description TEXT,
    annotations TEXT,
    input_schema TEXT,
    definition_sha256 TEXT,
    suggested_risk TEXT NOT NULL,
    risk TEXT NOT NULL,
    risk_source TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_by TEXT,
    updated_at TEXT NOT NULL,
    note TEXT,
    first_listed TEXT,
    last_listed TEXT,
    PRIMARY KEY (upstream, name)
);

CREATE TABLE tool_definitions (
    upstream TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (upstream, name, sha256)
);

-- Held calls. The arguments here are redacted; the unredacted ones live only in the
-- memory of the replica the client waits on.
CREATE TABLE holds (
    call_id TEXT PRIMARY KEY,
    call_hash TEXT NOT NULL,
    identity TEXT NOT NULL,
    decision TEXT NOT NULL,
    session_id TEXT,
    request_id TEXT NOT NULL,
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
    version BIGINT PRIMARY KEY,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    "by" TEXT NOT NULL,
    created_at TEXT NOT NULL,
    note TEXT
);
"#,
    // An identical retry on one replica finds an approval given on another by its hash.
    "CREATE INDEX holds_approved_by_hash ON holds (call_hash) WHERE resolution = 'approved';",
    // Which identity created each MCP session (2025-11-25 clients), so that whichever
    // replica a session's next request lands on admits it, and only for them.
    r#"
CREATE TABLE mcp_sessions (
    upstream TEXT NOT NULL,
    session_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (upstream, session_id)
);
CREATE INDEX mcp_sessions_by_age ON mcp_sessions (created_at);
"#,
    // The approvals of a hold that needs several, one row per approver.
    r#"
CREATE TABLE hold_approvals (
    call_id TEXT NOT NULL,
    "by" TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (call_id, "by")
);
"#,
    // Time-boxed grants an approval made, and what each approval of a two-person hold
    // asked for.
    super::GRANTS_MIGRATION,
    // The hash chain of the audit log, and its signed checkpoints.
    super::CHAIN_MIGRATION,
    // Where the chain stands, beside the seq, under the same lock: every replica's writer
    // chains on from the last event any of them committed.
    "ALTER TABLE seq_counter ADD COLUMN hash TEXT;",
];

/// A grant row as the JSON of a `Grant`.
const GRANT_JSON: &str =
    "(body::jsonb || jsonb_build_object('uses', uses, 'last_used_at', last_used_at,
    'revoked_at', revoked_at, 'revoked_by', revoked_by))::text";

const POLICY_JSON: &str = "json_build_object('version', version, 'sha256', sha256, 'by', \"by\", 'at', created_at, 'note', note)::text";

const TOOL_JSON: &str = "json_build_object('upstream', upstream, 'name', name, 'title', title,
    'annotations', annotations::json, 'definition_sha256', definition_sha256,
    'suggested_risk', suggested_risk, 'risk', risk, 'source', risk_source, 'version', version,
    'updated_by', updated_by, 'updated_at', updated_at, 'note', note)::text";

const HOLD_COLUMNS: &str = "call_id, call_hash, identity, decision, session_id, request_id, created_at, expires_at, resolution, resolved_by, reason, resolved_at";

/// Where the database is and how to log in. The password never comes from the URL:
/// only from the environment variable the config names (`PGPASSWORD` by default).
pub fn connect_options(url: &str, password_env: &str) -> Result<PgConnectOptions, StoreError> {
    let parsed =
        url::Url::parse(url).map_err(|e| StoreError::Config(format!("[store] url: {e}")))?;
    if parsed.password().is_some()
        || parsed
            .query_pairs()
            .any(|(k, _)| k.to_ascii_lowercase().contains("password"))
    {
        return Err(StoreError::Config(format!(
            "[store] url must not carry a password: put it in the environment variable {password_env} instead"
        )));
    }
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("[store] url: {e}")))?
        .application_name("toolgate");
    if let Ok(password) = std::env::var(password_env)
        && !password.is_empty()
    {
        options = options.password(&password);
    }
    Ok(options)
}

/// Connects, migrates, and opens the reader pool.
pub async fn open(
    options: PgConnectOptions,
    op_timeout: Duration,
) -> Result<(PgWrite, PgPool), StoreError> {
    let mut conn = connect(&options, op_timeout).await?;
    migrate(&mut conn).await?;
    conn.close().await.ok();
    let readers = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(op_timeout.max(Duration::from_secs(1)))
        .connect_with(reader_options(options.clone()))
        .await?;
    let write = PgWrite::new(writer_options(options, op_timeout), op_timeout)
        .map_err(|e| StoreError::Sql(format!("cannot start the store writer: {e}")))?;
    Ok((write, readers))
}

/// The writer's session, bounded on the server's side too: a client-side timeout drops
/// the connection, but only these stop what the server does for it. A replica frozen
/// (SIGSTOP, a VM paused) while it holds the seq lock loses it after
/// `idle_in_transaction_session_timeout`, so the other replicas go on; a writer queued
/// behind it gives up after `lock_timeout` instead of piling up connections in the lock
/// queue; a statement stops after `statement_timeout`; and a client that vanished is
/// noticed within a second even mid-statement.
pub(super) fn writer_options(options: PgConnectOptions, op_timeout: Duration) -> PgConnectOptions {
    let op = op_timeout.max(Duration::from_millis(200)).as_millis();
    let idle = (op * 5).max(1000);
    options.options([
        ("lock_timeout", op.to_string()),
        ("statement_timeout", op.to_string()),
        ("idle_in_transaction_session_timeout", idle.to_string()),
        ("client_connection_check_interval", "1000".to_owned()),
        ("tcp_keepalives_idle", "10".to_owned()),
        ("tcp_keepalives_interval", "5".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ])
}

/// The readers' sessions: a query never hangs a request (a hold's lookup, a page of
/// decisions) for long, and a replay's snapshot, idle between pages, is bounded too.
/// Readers of the database, for reading the audit log with no gateway running.
pub async fn open_read_only(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(reader_options(options))
        .await?)
}

fn reader_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("statement_timeout", "10000"),
        ("idle_in_transaction_session_timeout", "60000"),
        ("client_connection_check_interval", "1000"),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
    ])
}

async fn connect(options: &PgConnectOptions, within: Duration) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(
        within.max(Duration::from_secs(1)),
        PgConnection::connect_with(options),
    )
    .await
    {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(StoreError::Sql(
            "PostgreSQL did not accept a connection in time".into(),
        )),
    }
}

/// Runs the steps not run yet, under an advisory lock; answers how many ran.
pub async fn migrate(conn: &mut PgConnection) -> Result<usize, StoreError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = migrate_locked(conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<usize, StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS toolgate_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *conn)
    .await?;
    let done: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0)::bigint FROM toolgate_migrations")
            .fetch_one(&mut *conn)
            .await?;
    let mut ran = 0;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(AssertSqlSafe(*step))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO toolgate_migrations (version) VALUES ($1)")
            .bind(i as i32 + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        ran += 1;
    }
    Ok(ran)
}

/// Migrates the database at `options` (`toolgate store migrate`): how many steps ran,
/// and how many there are.
pub async fn migrate_url(options: PgConnectOptions) -> Result<(usize, usize), StoreError> {
    let mut conn = connect(&options, Duration::from_secs(10)).await?;
    let ran = migrate(&mut conn).await?;
    conn.close().await.ok();
    Ok((ran, MIGRATIONS.len()))
}

/// The writer's connection. A broken or silent connection is dropped, and the next
/// transaction connects again: a database that comes back is used again by itself.
pub struct PgWrite {
    runtime: tokio::runtime::Runtime,
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    /// The seq the open transaction began at.
    began_at: u64,
    /// The open transaction's id, to learn whether a COMMIT whose answer was lost took.
    xid: String,
    /// How long one statement may take before the connection is given up.
    op_timeout: Duration,
}

impl PgWrite {
    pub(super) fn new(options: PgConnectOptions, op_timeout: Duration) -> std::io::Result<PgWrite> {
        Ok(PgWrite {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            options,
            conn: None,
            began_at: 0,
            xid: String::new(),
            op_timeout: op_timeout.max(Duration::from_millis(200)),
        })
    }
}

impl PgWrite {
    /// Whether the transaction whose COMMIT lost its answer committed, asked on a new
    /// connection: committed is success; aborted (or never seen) is `lost`; still in
    /// progress after a few tries is an error that says the outcome is unknown.
    pub(super) fn commit_outcome(&mut self, lost: StoreError) -> Result<(), StoreError> {
        let xid = self.xid.clone();
        let options = self.options.clone();
        let within = self.op_timeout;
        let status: Result<Option<String>, StoreError> = self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + within * 10;
            loop {
                let mut conn = connect(&options, within).await?;
                let status: Option<String> =
                    sqlx::query_scalar("SELECT pg_xact_status($1::xid8)::text")
                        .bind(&xid)
                        .fetch_one(&mut conn)
                        .await?;
                conn.close().await.ok();
                if status.as_deref() != Some("in progress")
                    || tokio::time::Instant::now() >= deadline
                {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        match status {
            Ok(Some(s)) if s == "committed" => {
                tracing::warn!(xid = %self.xid, "a commit's answer was lost; it had committed");
                Ok(())
            }
            Ok(Some(s)) if s == "in progress" => Err(StoreError::Sql(format!(
                "a commit's answer was lost and transaction {} is still in progress: its outcome is unknown ({lost})",
                self.xid
            ))),
            Ok(_) => Err(lost),
            Err(e) => Err(StoreError::Sql(format!(
                "a commit's answer was lost, and whether it committed cannot be learned ({e}): its outcome is unknown ({lost})"
            ))),
        }
    }
}

/// Runs one statement on the writer's connection, within its timeout. A failure that
/// is not the database's answer (I/O, a protocol error, no answer in time) drops the
/// connection.
macro_rules! pg {
    ($self:ident, |$c:ident| $body:expr) => {{
        let Some($c) = $self.conn.as_mut() else {
            return Err(StoreError::Sql("not connected to PostgreSQL".into()));
        };
        let within = $self.op_timeout;
        // The timer is made inside the writer's runtime, which owns the clock.
        let outcome = $self
            .runtime
            .block_on(async { tokio::time::timeout(within, $body).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.as_database_error().is_none() {
                    $self.conn = None;
                }
                Err(StoreError::from(e))
            }
            Err(_) => {
                $self.conn = None;
                Err(StoreError::Sql(format!(
                    "PostgreSQL did not answer within {} ms",
                    $self.op_timeout.as_millis()
                )))
            }
        }
    }};
}

impl WriteConn for PgWrite {
    fn begin(&mut self) -> Result<Head, StoreError> {
        if self.conn.is_none() {
            let connected = self
                .runtime
                .block_on(connect(&self.options, self.op_timeout))?;
            self.conn = Some(connected);
        }
        pg!(self, |c| sqlx::raw_sql("BEGIN").execute(&mut *c))?;
        let locked: Result<(i64, Option<String>, String), StoreError> = pg!(self, |c| {
            sqlx::query_as(
                "SELECT value, hash, pg_current_xact_id()::text FROM seq_counter WHERE id = 1 FOR UPDATE",
            )
            .fetch_one(&mut *c)
        });
        match locked {
            Ok((value, hash, xid)) => {
                self.began_at = value as u64 + 1;
                self.xid = xid;
                Ok(Head {
                    next_seq: self.began_at,
                    last_hash: hash.unwrap_or_else(|| super::GENESIS_HASH.to_owned()),
                })
            }
            Err(e) => {
                // The lock was not had (another replica holds it past `lock_timeout`):
                // the aborted transaction must end before the next one begins.
                self.rollback();
                Err(e)
            }
        }
    }

    fn commit(&mut self, head: &Head) -> Result<(), StoreError> {
        if head.next_seq > self.began_at {
            let last = head.next_seq as i64 - 1;
            pg!(self, |c| sqlx::query(
                "UPDATE seq_counter SET value = $1, hash = $2 WHERE id = 1"
            )
            .bind(last)
            .bind(&head.last_hash)
            .execute(&mut *c))?;
            pg!(self, |c| sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(last.to_string())
                .execute(&mut *c))?;
        }
        match pg!(self, |c| sqlx::raw_sql("COMMIT").execute(&mut *c)) {
            Ok(_) => Ok(()),
            // The server said no: nothing was committed.
            Err(e) if self.conn.is_some() => Err(e),
            // The answer was lost (connection dropped, no answer in time): the commit may
            // have happened. The server is asked, so that the callers hear the truth and
            // a write answered "failed" never takes effect later.
            Err(lost) => self.commit_outcome(lost),
        }
    }

    fn rollback(&mut self) {
        let mut roll_back = || -> Result<_, StoreError> {
            pg!(self, |c| sqlx::raw_sql("ROLLBACK").execute(&mut *c))
        };
        let rolled_back = roll_back();
        if rolled_back.is_err() {
            self.conn = None;
        }
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::raw_sql("SAVEPOINT together")
            .execute(&mut *c))
        .map(drop)
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::raw_sql(
            "ROLLBACK TO SAVEPOINT together; RELEASE SAVEPOINT together"
        )
        .execute(&mut *c))
        .map(drop)
    }

    fn release_savepoint(&mut self) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::raw_sql("RELEASE SAVEPOINT together")
            .execute(&mut *c))
        .map(drop)
    }

    fn insert_event(
        &mut self,
        seq: u64,
        ts: &str,
        kind: &str,
        call_id: Option<&str>,
        json: &str,
        chain: (&str, &str),
    ) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO events (seq, ts, kind, call_id, body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(seq as i64)
        .bind(ts)
        .bind(kind)
        .bind(call_id)
        .bind(json)
        .bind(chain.0)
        .bind(chain.1)
        .execute(&mut *c))
        .map(drop)
    }

    fn tool_row(&mut self, upstream: &str, name: &str) -> Result<Option<ToolRow>, StoreError> {
        let sql = format!("SELECT {TOOL_JSON} FROM tools WHERE upstream = $1 AND name = $2");
        let json: Option<String> = pg!(self, |c| sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(upstream)
            .bind(name)
            .fetch_optional(&mut *c))?;
        json.as_deref().map(super::tool_row_from_json).transpose()
    }

    fn seed_risk(
        &mut self,
        upstream: &str,
        name: &str,
        risk: Risk,
        suggested: Risk,
        now: &str,
    ) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO tools (upstream, name, suggested_risk, risk, risk_source, version, updated_by, updated_at, note)
             VALUES ($1, $2, $3, $4, 'seed', 1, 'config', $5, 'seeded by [[risk]]')
             ON CONFLICT (upstream, name) DO UPDATE SET
                risk = excluded.risk, risk_source = 'seed', version = tools.version + 1,
                updated_by = 'config', updated_at = excluded.updated_at, note = excluded.note
             WHERE tools.risk_source = 'default'"
        )
        .bind(upstream)
        .bind(name)
        .bind(suggested.as_str())
        .bind(risk.as_str())
        .bind(now)
        .execute(&mut *c))
        .map(drop)
    }

    fn set_risk(
        &mut self,
        upstream: &str,
        name: &str,
        risk: Risk,
        by: &str,
        now: &str,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "UPDATE tools SET risk = $3, risk_source = 'operator', version = version + 1,
                updated_by = $4, updated_at = $5, note = $6
             WHERE upstream = $1 AND name = $2"
        )
        .bind(upstream)
        .bind(name)
        .bind(risk.as_str())
        .bind(by)
        .bind(now)
        .bind(note)
        .execute(&mut *c))
        .map(drop)
    }

    fn reset_risk(&mut self, upstream: &str, name: &str, now: &str) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "UPDATE tools SET risk = 'unclassified', risk_source = 'reset', version = version + 1,
                updated_by = 'toolgate', updated_at = $3,
                note = 'definition changed; review the tool and set its class again'
             WHERE upstream = $1 AND name = $2"
        )
        .bind(upstream)
        .bind(name)
        .bind(now)
        .execute(&mut *c))
        .map(drop)
    }

    fn listed_before(
        &mut self,
        upstream: &str,
        name: &str,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        let row: Option<PgRow> = pg!(self, |c| sqlx::query(
            "SELECT definition_sha256, risk FROM tools WHERE upstream = $1 AND name = $2"
        )
        .bind(upstream)
        .bind(name)
        .fetch_optional(&mut *c))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn upsert_listing(&mut self, t: &ListedTool, now: &str) -> Result<(), StoreError> {
        let annotations = t.annotations.as_ref().map(|a| a.to_string());
        let input_schema = t.input_schema.as_ref().map(|s| s.to_string());
        pg!(self, |c| sqlx::query(
            "INSERT INTO tools (upstream, name, title, description, annotations, input_schema,
                definition_sha256, suggested_risk, risk, risk_source, version, updated_by, updated_at,
                first_listed, last_listed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, 'toolgate', $11, $11, $11)
             ON CONFLICT (upstream, name) DO UPDATE SET
                title = excluded.title, description = excluded.description,
                annotations = excluded.annotations, input_schema = excluded.input_schema,
                definition_sha256 = excluded.definition_sha256,
                suggested_risk = excluded.suggested_risk,
                first_listed = coalesce(tools.first_listed, excluded.first_listed),
                last_listed = excluded.last_listed"
        )
        .bind(&t.upstream)
        .bind(&t.name)
        .bind(&t.title)
        .bind(&t.description)
        .bind(annotations)
        .bind(input_schema)
        .bind(&t.sha256)
        .bind(t.suggested_risk.as_str())
        .bind(t.starting_risk.as_str())
        .bind(t.starting_source)
        .bind(now)
        .execute(&mut *c))
        .map(drop)
    }

    fn insert_definition(&mut self, t: &ListedTool, now: &str) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO tool_definitions (upstream, name, sha256, definition, first_seen)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        )
        .bind(&t.upstream)
        .bind(&t.name)
        .bind(&t.sha256)
        .bind(&t.canonical_definition)
        .bind(now)
        .execute(&mut *c))
        .map(drop)
    }

    fn definition(
        &mut self,
        upstream: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        pg!(self, |c| {
            sqlx::query_scalar(
            "SELECT definition FROM tool_definitions WHERE upstream = $1 AND name = $2 AND sha256 = $3"
        )
        .bind(upstream)
        .bind(name)
        .bind(sha256)
        .fetch_optional(&mut *c)
        })
    }

    fn insert_hold(&mut self, hold: &StoredHold) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO holds (call_id, call_hash, identity, decision, session_id, request_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(&hold.call_id)
        .bind(&hold.call_hash)
        .bind(&hold.identity)
        .bind(&hold.decision)
        .bind(&hold.session_id)
        .bind(&hold.request_id)
        .bind(&hold.created_at)
        .bind(&hold.expires_at)
        .execute(&mut *c))
        .map(drop)
    }

    fn resolve_hold(
        &mut self,
        call_id: &str,
        from: HoldState,
        resolution: Resolution,
        by: &str,
        reason: Option<&str>,
        now: &str,
        due_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = match from {
            // An expiry only of a hold whose (perhaps extended) time is up.
            HoldState::Unresolved if resolution == Resolution::Expired => {
                "UPDATE holds SET resolution = $2, resolved_by = $3, reason = $4, resolved_at = $5
                 WHERE call_id = $1 AND resolution IS NULL AND expires_at <= $6"
            }
            HoldState::Unresolved => {
                "UPDATE holds SET resolution = $2, resolved_by = $3, reason = $4, resolved_at = $5
                 WHERE call_id = $1 AND resolution IS NULL"
            }
            HoldState::Approved => {
                "UPDATE holds SET resolution = $2, resolved_by = $3, reason = $4, resolved_at = $5
                 WHERE call_id = $1 AND resolution = 'approved'"
            }
        };
        let due = due_by.unwrap_or(now).to_owned();
        let done = pg!(self, |c| {
            let query = sqlx::query(sql)
                .bind(call_id)
                .bind(resolution.as_str())
                .bind(by)
                .bind(reason)
                .bind(now);
            if resolution == Resolution::Expired && from == HoldState::Unresolved {
                query.bind(due).execute(&mut *c)
            } else {
                query.execute(&mut *c)
            }
        })?;
        Ok(done.rows_affected() == 1)
    }

    fn hold(&mut self, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
        let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE call_id = $1");
        let row: Option<PgRow> = pg!(self, |c| sqlx::query(AssertSqlSafe(sql))
            .bind(call_id)
            .fetch_optional(&mut *c))?;
        Ok(row.as_ref().map(stored_hold))
    }

    fn add_approval(
        &mut self,
        call_id: &str,
        by: &str,
        reason: Option<&str>,
        grant: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        let added = pg!(self, |c| {
            sqlx::query(
            "INSERT INTO hold_approvals (call_id, \"by\", at, reason, grant_request) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING"
        )
        .bind(call_id)
        .bind(by)
        .bind(now)
        .bind(reason)
        .bind(grant)
        .execute(&mut *c)
        })?;
        Ok(added.rows_affected() == 1)
    }

    fn extend_hold(&mut self, call_id: &str, expires_at: &str) -> Result<bool, StoreError> {
        let done = pg!(self, |c| sqlx::query(
            "UPDATE holds SET expires_at = $2 WHERE call_id = $1 AND resolution IS NULL"
        )
        .bind(call_id)
        .bind(expires_at)
        .execute(&mut *c))?;
        Ok(done.rows_affected() == 1)
    }

    fn approvers(&mut self, call_id: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
        pg!(self, |c| sqlx::query_as(
            "SELECT \"by\", grant_request FROM hold_approvals WHERE call_id = $1 ORDER BY at, ctid"
        )
        .bind(call_id)
        .fetch_all(&mut *c))
    }

    fn insert_grant(&mut self, g: &Grant, principal: &str, body: &str) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(shared_sql::INSERT_GRANT)
            .bind(&g.id)
            .bind(principal)
            .bind(&g.upstream)
            .bind(&g.tool)
            .bind(g.scope.as_str())
            .bind(&g.call_hash)
            .bind(body)
            .bind(&g.expires_at)
            .execute(&mut *c))?;
        Ok(())
    }

    fn use_grant(&mut self, id: &str, now: &str) -> Result<bool, StoreError> {
        let done = pg!(self, |c| sqlx::query(shared_sql::USE_GRANT)
            .bind(id)
            .bind(now)
            .execute(&mut *c))?;
        Ok(done.rows_affected() == 1)
    }

    fn revoke_grant(&mut self, id: &str, by: &str, now: &str) -> Result<bool, StoreError> {
        let done = pg!(self, |c| sqlx::query(shared_sql::REVOKE_GRANT)
            .bind(id)
            .bind(now)
            .bind(by)
            .execute(&mut *c))?;
        Ok(done.rows_affected() == 1)
    }

    fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError> {
        let sql = format!("SELECT {GRANT_JSON} FROM grants WHERE id = $1");
        let json: Option<String> = pg!(self, |c| sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *c))?;
        json.as_deref().map(super::grant_from_json).transpose()
    }

    fn approval_count(&mut self, call_id: &str) -> Result<u32, StoreError> {
        let n: i64 = pg!(self, |c| sqlx::query_scalar(
            "SELECT count(*) FROM hold_approvals WHERE call_id = $1"
        )
        .bind(call_id)
        .fetch_one(&mut *c))?;
        Ok(n as u32)
    }

    fn current_policy(&mut self) -> Result<Option<PolicyVersion>, StoreError> {
        let sql = format!("SELECT {POLICY_JSON} FROM policies ORDER BY version DESC LIMIT 1");
        let json: Option<String> = pg!(self, |c| sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_optional(&mut *c))?;
        json.as_deref()
            .map(super::policy_version_from_json)
            .transpose()
    }

    fn insert_policy(
        &mut self,
        version: u64,
        text: &str,
        sha256: &str,
        by: &str,
        now: &str,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO policies (version, text, sha256, \"by\", created_at, note) VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(version as i64)
        .bind(text)
        .bind(sha256)
        .bind(by)
        .bind(now)
        .bind(note)
        .execute(&mut *c))
        .map(drop)
    }

    fn bind_session(
        &mut self,
        upstream: &str,
        id: &str,
        principal: &str,
        now: &str,
        stale_before: &str,
    ) -> Result<bool, StoreError> {
        pg!(self, |c| sqlx::query(
            "DELETE FROM mcp_sessions WHERE created_at < $1"
        )
        .bind(stale_before)
        .execute(&mut *c))?;
        let holder: String = pg!(self, |c| sqlx::query_scalar(
            "INSERT INTO mcp_sessions (upstream, session_id, principal, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (upstream, session_id) DO UPDATE SET created_at = excluded.created_at
                WHERE mcp_sessions.principal = excluded.principal
             RETURNING principal"
        )
        .bind(upstream)
        .bind(id)
        .bind(principal)
        .bind(now)
        .fetch_optional(&mut *c))?
        .unwrap_or_default();
        Ok(holder == principal)
    }

    fn end_session(&mut self, upstream: &str, id: &str) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "DELETE FROM mcp_sessions WHERE upstream = $1 AND session_id = $2"
        )
        .bind(upstream)
        .bind(id)
        .execute(&mut *c))
        .map(drop)
    }

    fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        pg!(self, |c2| sqlx::query(shared_sql::INSERT_CHECKPOINT)
            .bind(c.seq as i64)
            .bind(&c.hash)
            .bind(&c.at)
            .bind(&c.public_key)
            .bind(&c.signature)
            .execute(&mut *c2))?;
        Ok(())
    }

    fn last_checkpoint(&mut self) -> Result<u64, StoreError> {
        let seq: i64 = pg!(self, |c| sqlx::query_scalar(shared_sql::LAST_CHECKPOINT)
            .fetch_one(&mut *c))?;
        Ok(seq as u64)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        pg!(self, |c| sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(key)
        .bind(value)
        .execute(&mut *c))
        .map(drop)
    }
}

// --- the readers ---------------------------------------------------------------------

fn stored_hold(r: &PgRow) -> StoredHold {
    StoredHold::from_text(|c| r.try_get::<Option<String>, _>(c).ok().flatten())
}

pub async fn events_between(
    pool: &PgPool,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<(u64, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, body FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(after.min(i64::MAX as u64) as i64)
    .bind(until.min(i64::MAX as u64) as i64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>("seq") as u64, r.get("body")))
        .collect())
}

super::shared_readers!(PgPool, PgRow);

pub async fn meta(pool: &PgPool, key: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?)
}

pub async fn tools(
    pool: &PgPool,
) -> Result<Vec<(String, String, Option<String>, Option<String>, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT upstream, name, input_schema, definition_sha256, risk FROM tools ORDER BY upstream, name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("upstream"),
                r.get("name"),
                r.get("input_schema"),
                r.get("definition_sha256"),
                r.get("risk"),
            )
        })
        .collect())
}

pub async fn open_holds(pool: &PgPool) -> Result<Vec<StoredHold>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE resolution IS NULL OR resolution = 'approved' ORDER BY created_at"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_hold).collect())
}

pub async fn session_owner(
    pool: &PgPool,
    upstream: &str,
    id: &str,
    fresh_since: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT principal FROM mcp_sessions WHERE upstream = $1 AND session_id = $2 AND created_at >= $3",
    )
    .bind(upstream)
    .bind(id)
    .bind(fresh_since)
    .fetch_optional(pool)
    .await?)
}

pub async fn approved_holds(pool: &PgPool, call_hash: &str) -> Result<Vec<StoredHold>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE call_hash = $1 AND resolution = 'approved'"
    )))
    .bind(call_hash)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_hold).collect())
}

pub async fn hold(pool: &PgPool, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE call_id = $1"
    )))
    .bind(call_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(stored_hold))
}

pub async fn tool_rows(
    pool: &PgPool,
) -> Result<(Vec<String>, Vec<super::OutcomeCount>), StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {TOOL_JSON} FROM tools ORDER BY upstream, name"
    )))
    .fetch_all(pool)
    .await?;
    let counts = sqlx::query(
        "SELECT body::json->>'upstream' AS upstream, body::json->>'tool' AS tool,
                body::json->>'outcome' AS outcome, count(*) AS n
         FROM events WHERE kind = 'decision' GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|c| super::OutcomeCount {
        upstream: c.get("upstream"),
        tool: c.get("tool"),
        outcome: c.get("outcome"),
        n: c.get::<i64, _>("n").max(0) as u64,
    })
    .collect();
    Ok((rows, counts))
}

pub async fn decisions(
    pool: &PgPool,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<super::DecisionRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.body AS body, h.resolution AS resolution, h.resolved_by AS resolved_by, h.reason AS reason,
                h.resolved_at AS resolved_at, h.expires_at AS expires_at, h.call_id AS held
         FROM events e LEFT JOIN holds h ON h.call_id = e.call_id
         WHERE e.kind = 'decision' AND e.seq < $1 ORDER BY e.seq DESC LIMIT $2",
    )
    .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| super::DecisionRow {
            body: r.get("body"),
            held: r.get("held"),
            expires_at: r.get("expires_at"),
            resolution: r.get("resolution"),
            resolved_by: r.get("resolved_by"),
            resolved_at: r.get("resolved_at"),
            reason: r.get("reason"),
        })
        .collect())
}

pub async fn policy_text(
    pool: &PgPool,
    version: Option<u64>,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {POLICY_JSON} AS stored, text FROM policies
         WHERE $1::bigint IS NULL OR version = $1 ORDER BY version DESC LIMIT 1"
    )))
    .bind(version.map(|v| v.min(i64::MAX as u64) as i64))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get("stored"), r.get("text"))))
}

pub async fn policy_versions(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {POLICY_JSON} FROM policies ORDER BY version DESC"
    )))
    .fetch_all(pool)
    .await?)
}

/// A repeatable-read transaction for a decision snapshot, and the window's bounds in it.
pub async fn snapshot(
    pool: &PgPool,
    window: &crate::api::ReplayWindow,
    upto: Option<u64>,
    most: u64,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, i64, i64), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let newest: i64 = sqlx::query_scalar("SELECT value FROM seq_counter WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let upto = upto.map_or(newest, |u| (u.min(i64::MAX as u64) as i64).min(newest));
    let floor: Option<i64> = sqlx::query_scalar(
        "SELECT min(seq) FROM (SELECT seq FROM events WHERE kind = 'decision' AND seq <= $1
         ORDER BY seq DESC LIMIT $2) AS newest",
    )
    .bind(upto)
    .bind(most.min(i64::MAX as u64) as i64)
    .fetch_one(&mut *tx)
    .await?;
    let first: Option<i64> =
        match window {
            crate::api::ReplayWindow::Last(n) => sqlx::query_scalar(
                "SELECT min(seq) FROM (SELECT seq FROM events WHERE kind = 'decision' AND seq <= $1
             ORDER BY seq DESC LIMIT $2) AS newest",
            )
            .bind(upto)
            .bind((*n).min(i64::MAX as u64) as i64)
            .fetch_one(&mut *tx)
            .await?,
            crate::api::ReplayWindow::Since(ts) => sqlx::query_scalar(
                "SELECT min(seq) FROM events WHERE kind = 'decision' AND ts >= $1 AND seq <= $2",
            )
            .bind(ts)
            .bind(upto)
            .fetch_one(&mut *tx)
            .await?,
        };
    let first = first.map(|f| f.max(floor.unwrap_or(f)));
    Ok((tx, first.map_or(upto, |f| f - 1), upto))
}

pub async fn snapshot_page(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    after: i64,
    upto: i64,
    size: u32,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM events WHERE kind = 'decision' AND seq > $1 AND seq <= $2
         ORDER BY seq LIMIT $3",
    )
    .bind(after)
    .bind(upto)
    .bind(size as i64)
    .fetch_all(&mut **tx)
    .await?)
}

/// The newest committed seq.
pub async fn last_seq(pool: &PgPool) -> Result<u64, StoreError> {
    let value: i64 = sqlx::query_scalar("SELECT value FROM seq_counter WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(value.max(0) as u64)
}

/// Where the tail publishes.
pub struct Outlet {
    pub live: tokio::sync::broadcast::Sender<std::sync::Arc<super::Published>>,
    pub last_seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How often the tail looks for new events when nothing woke it: the safety net under
/// notifications lost while a connection was down.
const TAIL_CHECK: Duration = Duration::from_millis(500);

/// How many events the tail reads at a time.
const TAIL_PAGE: u32 = 1000;

/// Publishes every replica's committed events here, in seq order, each once: woken by
/// this replica's writer, by a notification from another replica's commit, or by the
/// periodic check. It stops when every subscriber handle is gone (the store dropped).
pub async fn tail(pool: PgPool, outlet: Outlet, mut committed: tokio::sync::watch::Receiver<u64>) {
    let mut listener = None;
    loop {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        catch_up(&pool, &outlet).await;
        let notified = async {
            match listener.as_mut() {
                // `Ok(None)`: the connection was lost and is made again by the next
                // call; the catch-up at the top of the loop covers the gap.
                Some(l) => l.try_recv().await.map(drop),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            woke = notified => {
                if woke.is_err() {
                    listener = None;
                    tokio::time::sleep(TAIL_CHECK).await;
                }
            }
            changed = committed.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(TAIL_CHECK) => {}
        }
    }
}

async fn listen(pool: &PgPool) -> Option<sqlx::postgres::PgListener> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    Some(listener)
}

/// Publishes the events committed after the last one published, in order and without
/// a gap: a seq that is not the next one is left for the next round.
async fn catch_up(pool: &PgPool, outlet: &Outlet) {
    use std::sync::atomic::Ordering;
    loop {
        let last = outlet.last_seq.load(Ordering::Acquire);
        let rows = match events_between(pool, last, u64::MAX >> 1, TAIL_PAGE).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read new events from PostgreSQL; trying again");
                return;
            }
        };
        let full = rows.len() == TAIL_PAGE as usize;
        for (expected, (seq, json)) in (last + 1..).zip(rows) {
            if seq != expected {
                return;
            }
            outlet.last_seq.store(seq, Ordering::Release);
            let _ = outlet
                .live
                .send(std::sync::Arc::new(super::Published { seq, json }));
        }
        if !full {
            return;
        }
    }
}
