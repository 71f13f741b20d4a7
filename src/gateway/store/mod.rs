//! The durable store: SQLite through sqlx, under `data_dir`.
//!
//! WAL with `synchronous = NORMAL` survives a process crash and lets readers run beside
//! the writer. Schema changes are numbered steps recorded in `PRAGMA user_version`.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use crate::api::Risk;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("store holds an unknown risk class {0:?}")]
    BadRisk(String),
}

/// Each step runs once, in order; the store records how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));

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
"#];

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A catalog row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTool {
    pub upstream: String,
    pub name: String,
    pub annotations: Option<String>,
    pub input_schema: Option<String>,
    pub definition_sha256: Option<String>,
    pub suggested_risk: Risk,
    pub risk: Risk,
    pub risk_source: String,
    pub version: i64,
}

/// A tool as one listing showed it.
#[derive(Debug, Clone)]
pub struct ListedTool<'a> {
    pub upstream: &'a str,
    pub name: &'a str,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub annotations: Option<String>,
    pub input_schema: Option<String>,
    pub canonical_definition: &'a str,
    pub sha256: &'a str,
    pub suggested_risk: Risk,
    /// The class a tool gets the first time it is seen.
    pub starting_risk: Risk,
    pub starting_source: &'a str,
}

impl Store {
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join("toolgate.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let done: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            // Steps are compile-time constants and the version an integer: nothing to inject.
            sqlx::raw_sql(AssertSqlSafe(*step))
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1)))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn store_id(&self) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'store_id'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn tools(&self) -> Result<Vec<StoredTool>, StoreError> {
        let rows = sqlx::query(
            "SELECT upstream, name, annotations, input_schema, definition_sha256, suggested_risk, risk, risk_source, version
             FROM tools ORDER BY upstream, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let risk = |col: &str| {
                    let s: String = r.get(col);
                    Risk::parse(&s).ok_or(StoreError::BadRisk(s))
                };
                Ok(StoredTool {
                    upstream: r.get("upstream"),
                    name: r.get("name"),
                    annotations: r.get("annotations"),
                    input_schema: r.get("input_schema"),
                    definition_sha256: r.get("definition_sha256"),
                    suggested_risk: risk("suggested_risk")?,
                    risk: risk("risk")?,
                    risk_source: r.get("risk_source"),
                    version: r.get("version"),
                })
            })
            .collect()
    }

    /// Records one listing of a tool: a new tool gets its starting class, a known one
    /// its current definition. Both keep every definition ever seen.
    pub async fn record_listed_tool(
        &self,
        t: &ListedTool<'_>,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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
        .bind(t.upstream)
        .bind(t.name)
        .bind(t.title)
        .bind(t.description)
        .bind(&t.annotations)
        .bind(&t.input_schema)
        .bind(t.sha256)
        .bind(t.suggested_risk.as_str())
        .bind(t.starting_risk.as_str())
        .bind(t.starting_source)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tool_definitions (upstream, name, sha256, definition, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .bind(t.upstream)
        .bind(t.name)
        .bind(t.sha256)
        .bind(t.canonical_definition)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
