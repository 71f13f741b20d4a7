//! The backends a store test runs against: SQLite in a temporary directory, and
//! PostgreSQL in a fresh database of the test cluster that `TOOLGATE_TEST_PG` names
//! (`.ci/run` starts one with `.ci/postgres`). Without that variable the PostgreSQL
//! half is skipped with a message, except under `CI`, where it is an error.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

use super::{Location, StoredHold};

/// An open hold's row, approvable until 2099: of `identity` and `decision` (their JSON),
/// whose call hashes to `call_hash`.
pub fn hold_row(call_id: &str, identity: &str, decision: &str, call_hash: &str) -> StoredHold {
    StoredHold {
        call_id: call_id.into(),
        call_hash: call_hash.into(),
        identity: identity.into(),
        decision: decision.into(),
        session_id: None,
        request_id: "1".into(),
        created_at: "2026-01-02T03:04:05.000Z".into(),
        expires_at: "2099-01-02T03:04:05.000Z".into(),
        ttl_ms: 0,
        resolution: None,
        resolved_by: None,
        reason: None,
        resolved_at: None,
        approvals: Vec::new(),
    }
}

pub struct Backend {
    location: Location,
    /// Keeps a SQLite store's directory until the test ends.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn location(&self) -> &Location {
        &self.location
    }

    pub async fn each() -> Vec<Backend> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut all = vec![Backend {
            location: Location::Sqlite(dir.path().to_owned()),
            _dir: Some(dir),
        }];
        if let Some(location) = fresh_postgres().await {
            all.push(Backend {
                location,
                _dir: None,
            });
        }
        all
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.location {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres { .. } => "postgres",
        })
    }
}

/// A new, empty database in the test cluster, or `None` when there is no cluster.
pub async fn fresh_postgres() -> Option<Location> {
    let Ok(base) = std::env::var("TOOLGATE_TEST_PG") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TOOLGATE_TEST_PG is unset under CI: .ci/run starts a PostgreSQL cluster for the tests"
        );
        eprintln!(
            "skipping PostgreSQL: TOOLGATE_TEST_PG is unset (`.ci/postgres start DIR` prints one)"
        );
        return None;
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("the test cluster at {base}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("a test database");
    admin.close().await.ok();
    let mut url = url::Url::parse(&base).expect("TOOLGATE_TEST_PG is a URL");
    url.set_path(&format!("/{name}"));
    Some(Location::Postgres {
        url: url.to_string(),
        password_env: "TOOLGATE_TEST_PG_PASSWORD".into(),
    })
}
