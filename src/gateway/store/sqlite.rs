//! The embedded backend: SQLite under `data_dir`.
//!
//! The writer owns the only write connection (rusqlite, on its own thread: sqlx's
//! SQLite driver would run each statement on its worker thread through a channel, three
//! thread round trips for the smallest transaction). WAL with `synchronous = NORMAL`
//! survives a process crash; a pool of sqlx reader connections serves queries beside it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, named_params, params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use super::writer::WriteConn;
use super::{Head, HoldState, ListedTool, StoreError, StoredHold, shared_sql};
use crate::api::{Grant, PolicyVersion, Resolution, Risk, ToolRow};
use crate::gateway::audit::Checkpoint;

/// The database file in `data_dir`.
pub const DB_FILE: &str = "toolgate.db";

/// Each step runs once, in order; the store records how many have run (SQLite's
/// `user_version`). A step is never edited once released: a change is a new step.
pub const MIGRATIONS: &[&str] = &[
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
    // The approvals of a hold that needs several, one row per approver.
    r#"
CREATE TABLE hold_approvals (
    call_id TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (call_id, by)
);
"#,
    // Time-boxed grants an approval made, and what each approval of a two-person hold
    // asked for.
    super::GRANTS_MIGRATION,
    // The hash chain of the audit log, and its signed checkpoints.
    super::CHAIN_MIGRATION,
];

/// A `policies` row (without its text) as the JSON of a `PolicyVersion`, so the writer
/// (rusqlite) and the readers (sqlx) share one mapping.
const POLICY_JSON: &str =
    "json_object('version', version, 'sha256', sha256, 'by', by, 'at', created_at, 'note', note)";

/// A catalog row as the JSON of a `ToolRow`, shared by the writer and the readers.
const TOOL_JSON: &str = "json_object('upstream', upstream, 'name', name, 'title', title,
    'annotations', json(annotations), 'definition_sha256', definition_sha256,
    'suggested_risk', suggested_risk, 'risk', risk, 'source', risk_source, 'version', version,
    'updated_by', updated_by, 'updated_at', updated_at, 'note', note)";

/// A grant row as the JSON of a `Grant`.
const GRANT_JSON: &str = "json_set(body, '$.uses', uses, '$.last_used_at', last_used_at,
    '$.revoked_at', revoked_at, '$.revoked_by', revoked_by)";

fn connect_options(data_dir: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(data_dir.join(DB_FILE))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal))
}

/// Readers of an existing database in `data_dir`, which they never write, migrate or
/// create: for reading the audit log with no gateway running.
pub async fn open_read_only(data_dir: &Path) -> Result<SqlitePool, StoreError> {
    let file = data_dir.join(DB_FILE);
    if !file.is_file() {
        return Err(StoreError::DataDir {
            path: data_dir.display().to_string(),
            message: format!("there is no {DB_FILE} in it"),
        });
    }
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            connect_options(data_dir)?
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(5))
                .read_only(true),
        )
        .await?)
}

/// Opens (or creates) the database in `data_dir`, migrated: the write connection and
/// the reader pool.
pub async fn open(data_dir: &Path) -> Result<(SqliteWrite, SqlitePool), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
        path: data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut conn = write_connection(data_dir)?;
    migrate(&mut conn)?;
    let head = read_head(&conn)?;
    let readers = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            connect_options(data_dir)?
                .busy_timeout(Duration::from_secs(5))
                .read_only(true),
        )
        .await?;
    Ok((SqliteWrite { conn, head }, readers))
}

fn write_connection(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(data_dir.join(DB_FILE))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    // The writer waits on a busy database only briefly, so it can drop calls whose
    // callers gave up and take in new ones while it retries.
    conn.busy_timeout(Duration::from_millis(20))?;
    Ok(conn)
}

/// Runs the steps not run yet; answers how many ran.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut ran = 0;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        // The version is an integer: nothing to inject.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        ran += 1;
    }
    Ok(ran)
}

/// Migrates the database in `data_dir` (`toolgate store migrate`): how many steps ran,
/// and how many there are.
pub fn migrate_dir(data_dir: &Path) -> Result<(usize, usize), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
        path: data_dir.display().to_string(),
        message: e.to_string(),
    })?;
    let ran = migrate(&mut write_connection(data_dir)?)?;
    Ok((ran, MIGRATIONS.len()))
}

/// The write connection. One process writes a SQLite store, so the next seq is kept
/// here; `BEGIN IMMEDIATE` takes the database's write lock.
pub struct SqliteWrite {
    conn: Connection,
    /// One process writes a SQLite store: where the chain stands lives here.
    head: Head,
}

/// The chain's head as stored: the seq after the newest event, and that event's hash (the
/// genesis hash when it has none: an empty log, or one older than the chain).
fn read_head(conn: &Connection) -> Result<Head, StoreError> {
    let newest: Option<(i64, Option<String>)> = conn
        .query_row(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match newest {
        Some((seq, hash)) => Head {
            next_seq: seq as u64 + 1,
            last_hash: hash.unwrap_or_else(|| super::GENESIS_HASH.to_owned()),
        },
        None => Head {
            next_seq: 1,
            last_hash: super::GENESIS_HASH.to_owned(),
        },
    })
}

impl SqliteWrite {
    /// The seq the next event takes.
    pub fn next_seq(&self) -> u64 {
        self.head.next_seq
    }
}

impl WriteConn for SqliteWrite {
    fn begin(&mut self) -> Result<Head, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(self.head.clone())
    }

    fn commit(&mut self, head: &Head) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        self.head = head.clone();
        Ok(())
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("SAVEPOINT together")?)
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self
            .conn
            .execute_batch("ROLLBACK TO together; RELEASE together")?)
    }

    fn release_savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("RELEASE together")?)
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
        self.conn
            .prepare_cached(
                "INSERT INTO events (seq, ts, kind, call_id, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![seq as i64, ts, kind, call_id, json, chain.0, chain.1])?;
        Ok(())
    }

    fn tool_row(&mut self, upstream: &str, name: &str) -> Result<Option<ToolRow>, StoreError> {
        let sql = format!("SELECT {TOOL_JSON} FROM tools WHERE upstream = ?1 AND name = ?2");
        let json: Option<String> = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![upstream, name], |r| r.get(0))
            .optional()?;
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
        // A seed fills in only where nobody has chosen a class: no row yet, or a class
        // that came from no one (the untrusted default).
        self.conn.execute(
            "INSERT INTO tools (upstream, name, suggested_risk, risk, risk_source, version, updated_by, updated_at, note)
             VALUES (?1, ?2, ?3, ?4, 'seed', 1, 'config', ?5, 'seeded by [[risk]]')
             ON CONFLICT (upstream, name) DO UPDATE SET
                risk = excluded.risk, risk_source = 'seed', version = tools.version + 1,
                updated_by = 'config', updated_at = excluded.updated_at, note = excluded.note
             WHERE tools.risk_source = 'default'",
            params![upstream, name, suggested.as_str(), risk.as_str(), now],
        )?;
        Ok(())
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
        self.conn.execute(
            "UPDATE tools SET risk = ?3, risk_source = 'operator', version = version + 1,
                updated_by = ?4, updated_at = ?5, note = ?6
             WHERE upstream = ?1 AND name = ?2",
            params![upstream, name, risk.as_str(), by, now, note],
        )?;
        Ok(())
    }

    fn reset_risk(&mut self, upstream: &str, name: &str, now: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE tools SET risk = 'unclassified', risk_source = 'reset', version = version + 1,
                updated_by = 'toolgate', updated_at = ?3,
                note = 'definition changed; review the tool and set its class again'
             WHERE upstream = ?1 AND name = ?2",
            params![upstream, name, now],
        )?;
        Ok(())
    }

    fn listed_before(
        &mut self,
        upstream: &str,
        name: &str,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT definition_sha256, risk FROM tools WHERE upstream = ?1 AND name = ?2",
                params![upstream, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn upsert_listing(&mut self, t: &ListedTool, now: &str) -> Result<(), StoreError> {
        let annotations = t.annotations.as_ref().map(|a| a.to_string());
        let input_schema = t.input_schema.as_ref().map(|s| s.to_string());
        self.conn.execute(
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
        Ok(())
    }

    fn insert_definition(&mut self, t: &ListedTool, now: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO tool_definitions (upstream, name, sha256, definition, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![t.upstream, t.name, t.sha256, t.canonical_definition, now],
        )?;
        Ok(())
    }

    fn definition(
        &mut self,
        upstream: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT definition FROM tool_definitions WHERE upstream = ?1 AND name = ?2 AND sha256 = ?3",
                params![upstream, name, sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn insert_hold(&mut self, hold: &StoredHold) -> Result<(), StoreError> {
        self.conn.execute(
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
        Ok(())
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
                "UPDATE holds SET resolution = ?2, resolved_by = ?3, reason = ?4, resolved_at = ?5
                 WHERE call_id = ?1 AND resolution IS NULL AND expires_at <= ?6"
            }
            HoldState::Unresolved => {
                "UPDATE holds SET resolution = ?2, resolved_by = ?3, reason = ?4, resolved_at = ?5
                 WHERE call_id = ?1 AND resolution IS NULL"
            }
            HoldState::Approved => {
                "UPDATE holds SET resolution = ?2, resolved_by = ?3, reason = ?4, resolved_at = ?5
                 WHERE call_id = ?1 AND resolution = 'approved'"
            }
        };
        let mut statement = self.conn.prepare_cached(sql)?;
        let changed = if resolution == Resolution::Expired && from == HoldState::Unresolved {
            statement.execute(params![
                call_id,
                resolution.as_str(),
                by,
                reason,
                now,
                due_by.unwrap_or(now)
            ])?
        } else {
            statement.execute(params![call_id, resolution.as_str(), by, reason, now])?
        };
        Ok(changed == 1)
    }

    fn hold(&mut self, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {HOLD_COLUMNS} FROM holds WHERE call_id = ?1"),
                params![call_id],
                |r| {
                    Ok(StoredHold::from_text(|c| {
                        r.get::<_, Option<String>>(c).ok().flatten()
                    }))
                },
            )
            .optional()?)
    }

    fn add_approval(
        &mut self,
        call_id: &str,
        by: &str,
        reason: Option<&str>,
        grant: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        let added = self.conn.execute(
            "INSERT INTO hold_approvals (call_id, by, at, reason, grant_request) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![call_id, by, now, reason, grant],
        )?;
        Ok(added == 1)
    }

    fn extend_hold(&mut self, call_id: &str, expires_at: &str) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE holds SET expires_at = ?2 WHERE call_id = ?1 AND resolution IS NULL",
            params![call_id, expires_at],
        )?;
        Ok(changed == 1)
    }

    fn approvers(&mut self, call_id: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT by, grant_request FROM hold_approvals WHERE call_id = ?1 ORDER BY at, rowid",
        )?;
        let rows = statement.query_map(params![call_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn insert_grant(&mut self, g: &Grant, principal: &str, body: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(shared_sql::INSERT_GRANT)?
            .execute(named_params! {
                "$1": g.id,
                "$2": principal,
                "$3": g.upstream,
                "$4": g.tool,
                "$5": g.scope.as_str(),
                "$6": g.call_hash,
                "$7": body,
                "$8": g.expires_at,
            })?;
        Ok(())
    }

    fn use_grant(&mut self, id: &str, now: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached(shared_sql::USE_GRANT)?
            .execute(named_params! {"$1": id, "$2": now})?;
        Ok(changed == 1)
    }

    fn revoke_grant(&mut self, id: &str, by: &str, now: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached(shared_sql::REVOKE_GRANT)?
            .execute(named_params! {"$1": id, "$2": now, "$3": by})?;
        Ok(changed == 1)
    }

    fn grant(&mut self, id: &str) -> Result<Option<Grant>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                &format!("SELECT {GRANT_JSON} FROM grants WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        json.as_deref().map(super::grant_from_json).transpose()
    }

    fn approval_count(&mut self, call_id: &str) -> Result<u32, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM hold_approvals WHERE call_id = ?1",
            params![call_id],
            |r| r.get(0),
        )?)
    }

    fn current_policy(&mut self) -> Result<Option<PolicyVersion>, StoreError> {
        let sql = format!("SELECT {POLICY_JSON} FROM policies ORDER BY version DESC LIMIT 1");
        let json: Option<String> = self
            .conn
            .prepare_cached(&sql)?
            .query_row([], |r| r.get(0))
            .optional()?;
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
        self.conn.execute(
            "INSERT INTO policies (version, text, sha256, by, created_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![version as i64, text, sha256, by, now, note],
        )?;
        Ok(())
    }

    // One process writes a SQLite store: its sessions live in that process's memory.
    fn bind_session(
        &mut self,
        _upstream: &str,
        _id: &str,
        _principal: &str,
        _now: &str,
        _stale_before: &str,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn end_session(&mut self, _upstream: &str, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn insert_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(shared_sql::INSERT_CHECKPOINT)?
            .execute(named_params! {
                "$1": c.seq as i64,
                "$2": c.hash,
                "$3": c.at,
                "$4": c.public_key,
                "$5": c.signature,
            })?;
        Ok(())
    }

    fn last_checkpoint(&mut self) -> Result<u64, StoreError> {
        let seq: i64 = self
            .conn
            .query_row(shared_sql::LAST_CHECKPOINT, [], |r| r.get(0))?;
        Ok(seq as u64)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

// --- the readers ---------------------------------------------------------------------

pub async fn events_between(
    pool: &SqlitePool,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<(u64, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
    )
    .bind(after as i64)
    .bind(until as i64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>("seq") as u64, r.get("body")))
        .collect())
}

super::shared_readers!(SqlitePool, sqlx::sqlite::SqliteRow);

pub async fn meta(pool: &SqlitePool, key: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
        .bind(key)
        .fetch_optional(pool)
        .await?)
}

/// The catalog as (upstream, name, input schema, definition hash, class).
pub async fn tools(
    pool: &SqlitePool,
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

const HOLD_COLUMNS: &str = "call_id, call_hash, identity, decision, session_id, request_id, created_at, expires_at, resolution, resolved_by, reason, resolved_at";

fn stored_hold(r: &sqlx::sqlite::SqliteRow) -> StoredHold {
    StoredHold::from_text(|c| r.try_get::<Option<String>, _>(c).ok().flatten())
}

pub async fn open_holds(pool: &SqlitePool) -> Result<Vec<StoredHold>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE resolution IS NULL OR resolution = 'approved' ORDER BY created_at"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_hold).collect())
}

pub async fn approved_holds(
    pool: &SqlitePool,
    call_hash: &str,
) -> Result<Vec<StoredHold>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE call_hash = ?1 AND resolution = 'approved'"
    )))
    .bind(call_hash)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(stored_hold).collect())
}

pub async fn hold(pool: &SqlitePool, call_id: &str) -> Result<Option<StoredHold>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE call_id = ?1"
    )))
    .bind(call_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(stored_hold))
}

/// The catalog's rows as `ToolRow` JSON, and the decision counts by (upstream, tool,
/// outcome).
pub async fn tool_rows(
    pool: &SqlitePool,
) -> Result<(Vec<String>, Vec<super::OutcomeCount>), StoreError> {
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {TOOL_JSON} FROM tools ORDER BY upstream, name"
    )))
    .fetch_all(pool)
    .await?;
    let counts = sqlx::query(
        "SELECT json_extract(body, '$.upstream') AS upstream, json_extract(body, '$.tool') AS tool,
                json_extract(body, '$.outcome') AS outcome, count(*) AS n
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

/// Decisions newest first below `before`, each with its hold's columns.
pub async fn decisions(
    pool: &SqlitePool,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<super::DecisionRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.body AS body, h.resolution AS resolution, h.resolved_by AS resolved_by, h.reason AS reason,
                h.resolved_at AS resolved_at, h.expires_at AS expires_at, h.call_id AS held
         FROM events e LEFT JOIN holds h ON h.call_id = e.call_id
         WHERE e.kind = 'decision' AND e.seq < ?1 ORDER BY e.seq DESC LIMIT ?2",
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

/// Version `version`, or the newest: its `PolicyVersion` JSON and its text.
pub async fn policy_text(
    pool: &SqlitePool,
    version: Option<u64>,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {POLICY_JSON} AS stored, text FROM policies
         WHERE ?1 IS NULL OR version = ?1 ORDER BY version DESC LIMIT 1"
    )))
    .bind(version.map(|v| v.min(i64::MAX as u64) as i64))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get("stored"), r.get("text"))))
}

pub async fn policy_versions(pool: &SqlitePool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT {POLICY_JSON} FROM policies ORDER BY version DESC"
    )))
    .fetch_all(pool)
    .await?)
}

/// A read transaction for a decision snapshot, and the window's bounds in it.
pub async fn snapshot(
    pool: &SqlitePool,
    window: &crate::api::ReplayWindow,
    upto: Option<u64>,
    most: u64,
) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, i64, i64), StoreError> {
    let mut tx = pool.begin().await?;
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
    let first: Option<i64> =
        match window {
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
    Ok((tx, first.map_or(upto, |f| f - 1), upto))
}

pub async fn snapshot_page(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    after: i64,
    upto: i64,
    size: u32,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM events WHERE kind = 'decision' AND seq > ?1 AND seq <= ?2
         ORDER BY seq LIMIT ?3",
    )
    .bind(after)
    .bind(upto)
    .bind(size as i64)
    .fetch_all(&mut **tx)
    .await?)
}
