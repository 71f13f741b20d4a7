//! Stdio upstreams: MCP servers that run as local processes and speak JSON-RPC on their
//! stdin and stdout.
//!
//! The relay speaks Streamable HTTP to every upstream, and decides, holds, redacts and
//! audits on that path. For a stdio upstream the gateway is itself the HTTP server in
//! front of the process: a bridge ([`bridge`]) that serves the upstream's Streamable HTTP
//! on a Unix socket in a directory only this user can open, and drives the children. So
//! every path of the relay (held calls, the catalog, `call.completed`, cancellation)
//! works for stdio exactly as for HTTP, and the bytes decided are the bytes written.
//!
//! Children: a 2025-11-25 session has its own, started at `initialize` and stopped at
//! `DELETE`, after `idle_timeout_secs` unused, or when the gateway stops; a 2026-07-28
//! request is served by a child from a pool per identity (and declared capabilities),
//! initialised by the gateway, one request at a time. At most `max_processes` run at
//! once. A child that dies is reported (log and `GET /status`) and started again, with
//! back-off, on the next request.

mod bridge;
mod child;
mod conn;
mod era;
mod input;
mod slots;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use child::{ChildSpec, Ended, Incoming, StdioChild, StdioError, expand_env, request_key};
use conn::Conn;
use era::Declared;
use slots::{Full, Slots};

use crate::api::{StdioExit, StdioStatus};
use crate::config::{Transport, UpstreamConfig};

/// Whose request it is (the principal, hex-encoded), set by the relay on every request
/// to a stdio upstream and removed from what clients send: a pooled child serves one
/// identity only.
pub const PRINCIPAL_HEADER: &str = "x-toolgate-principal";
/// A secret made at start that the relay's client sends and the bridge checks: other
/// processes of this user (the children among them) cannot use the socket.
pub const BRIDGE_KEY_HEADER: &str = "x-toolgate-bridge";

/// The gateway's variables a stdio server gets without asking: the set the official MCP
/// SDKs pass the servers they start (so `npx` finds `node`), and no other (so the
/// gateway's own secrets stay its own).
pub const INHERITED_ENV: [&str; 6] = ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

/// The first wait before a child that died is started again; it doubles per death in a
/// row, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One configured stdio upstream: its children and its bridge.
pub struct StdioUpstream {
    name: String,
    spec: ChildSpec,
    idle_timeout: Duration,
    initialize_timeout: Duration,
    /// Places among `max_processes`, in all and per identity.
    slots: Arc<Slots>,
    /// What the relay's client proves itself with.
    bridge_key: String,
    state: Mutex<State>,
    stats: Arc<Mutex<Stats>>,
    /// Calls of 2026-07-28 clients waiting for their answers to a child's request.
    suspensions: input::Suspensions,
    /// Whether this server speaks 2026-07-28 itself, once a pooled child was asked.
    speaks_modern: Mutex<Option<bool>>,
    socket: PathBuf,
    /// The socket's directory, removed at shutdown (and on drop).
    dir: tempfile::TempDir,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// Pooled children not serving a request, by pool.
    idle: HashMap<String, Vec<Arc<Conn>>>,
    /// Every child started, to stop them all at the end.
    all: Vec<Weak<Conn>>,
}

/// A 2025-11-25 session: its child, and how to start another like it.
struct Session {
    conn: Arc<Conn>,
    principal: String,
    /// The client's `initialize`, sent again to a child started after one died.
    initialize: Bytes,
}

#[derive(Default)]
struct Stats {
    started: u64,
    restarts: u64,
    /// Deaths since the last child that initialised; sets the back-off.
    deaths_in_a_row: u32,
    last_death: Option<Instant>,
    /// A child died since the last start: the next start is a restart.
    restart_due: bool,
    last_exit: Option<StdioExit>,
}

/// Why the bridge could not serve a request: what the client is told, and the HTTP
/// status it comes with.
#[derive(Debug)]
pub struct Refused {
    pub status: axum::http::StatusCode,
    pub text: String,
}

impl StdioUpstream {
    /// Checks the config, and starts the bridge (no child yet: they start on demand).
    pub fn start(config: &UpstreamConfig) -> anyhow::Result<Arc<Self>> {
        let Transport::Stdio(command) = config.transport() else {
            anyhow::bail!("upstream {:?} is not a stdio upstream", config.name);
        };
        // What the MCP SDKs pass a stdio server they start, then the configured env.
        let mut env: std::collections::BTreeMap<String, String> = INHERITED_ENV
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        for (k, v) in &config.env {
            let value = expand_env(v, |name| std::env::var(name).ok())
                .map_err(|e| anyhow::anyhow!("[[upstream]] {:?}: env {k}: {e}", config.name))?;
            env.insert(k.clone(), value);
        }
        let env = env.into_iter().collect();
        let spec = ChildSpec {
            name: config.name.clone(),
            command: command.to_vec(),
            env,
            cwd: config.cwd.clone(),
        };
        // Only this user can reach the socket: the directory is 0700 whatever the umask.
        use std::os::unix::fs::PermissionsExt as _;
        sweep_stale_dirs(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix("toolgate-stdio-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .context("cannot create the directory for a stdio upstream's socket")?;
        let socket = dir.path().join("bridge.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let upstream = Arc::new(Self {
            name: config.name.clone(),
            spec,
            idle_timeout: config.idle_timeout(),
            initialize_timeout: config.initialize_timeout(),
            slots: Slots::new(config.max_processes(), config.max_processes_per_identity()),
            bridge_key: {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).context("the system's random source")?;
                hex::encode(key)
            },
            state: Mutex::default(),
            stats: Arc::default(),
            suspensions: input::Suspensions::default(),
            speaks_modern: Mutex::default(),
            socket,
            dir,
            stop: CancellationToken::new(),
        });
        let router = bridge::router(upstream.clone());
        let stop = upstream.stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "stdio bridge stopped");
            }
        });
        tokio::spawn(reap_idle(Arc::downgrade(&upstream)));
        Ok(upstream)
    }

    /// The HTTP client that reaches this upstream's bridge.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(BRIDGE_KEY_HEADER, self.bridge_key.parse()?);
        crate::http::client_builder()
            .unix_socket(self.socket.clone())
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the client of a stdio upstream")
    }

    /// Stops every child; the bridge answers no more.
    pub fn shutdown(&self) {
        self.stop.cancel();
        let all: Vec<_> = {
            let mut state = self.state.lock().expect("stdio state");
            state.sessions.clear();
            state.idle.clear();
            std::mem::take(&mut state.all)
        };
        for conn in all.iter().filter_map(Weak::upgrade) {
            self.retire(&conn);
        }
        // Now, not when the last handle goes (which a process exit does not wait for).
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    /// Whether `message` from `principal` continues a 2026-07-28 call that waits on its
    /// server for the client's answer (same identity, method, tool and arguments): it
    /// runs nothing new, it answers the server.
    pub fn continues(&self, principal: &str, message: &Value) -> bool {
        self.suspensions.continues(&hex::encode(principal), message)
    }

    /// What `GET /status` shows.
    pub fn status(&self) -> StdioStatus {
        let stats = self.stats.lock().expect("stdio stats");
        StdioStatus {
            processes: self.slots.taken(),
            max_processes: self.slots.max(),
            sessions: self.state.lock().expect("stdio state").sessions.len(),
            waiting_for_input: self.suspensions.count(),
            started: stats.started,
            restarts: stats.restarts,
            last_exit: stats.last_exit.clone(),
        }
    }

    /// How it is going: `ok` once a child initialised and none died since, `failing`
    /// while children die (or do not start), `unknown` before the first.
    pub fn health(&self) -> &'static str {
        let stats = self.stats.lock().expect("stdio stats");
        match (stats.started, stats.deaths_in_a_row) {
            (_, n) if n > 0 => "failing",
            (0, _) => "unknown",
            _ => "ok",
        }
    }

    /// Starts a child for `principal`, after the back-off a recent death asks for, in a
    /// place among `max_processes` (made by stopping an idle pooled child if need be).
    async fn spawn_conn(self: &Arc<Self>, principal: &str) -> Result<Arc<Conn>, Refused> {
        let wait = {
            let stats = self.stats.lock().expect("stdio stats");
            match (stats.deaths_in_a_row, stats.last_death) {
                (n, Some(at)) if n > 0 => {
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << (n - 1).min(16))
                        .min(MAX_BACKOFF);
                    backoff.saturating_sub(at.elapsed())
                }
                _ => Duration::ZERO,
            }
        };
        if !wait.is_zero() {
            tracing::info!(upstream = %self.name, ?wait, "stdio server: waiting before starting it again");
            tokio::time::sleep(wait).await;
        }
        let slot = match self.slots.take(principal) {
            Ok(slot) => slot,
            Err(full) => {
                // An idle pooled child makes room: this identity's own when it is the
                // identity that is full, anyone's when the upstream is.
                let evicted = {
                    let mut state = self.state.lock().expect("stdio state");
                    state.idle.values_mut().find_map(|pool| {
                        let at = pool
                            .iter()
                            .position(|c| full == Full::Upstream || c.principal == principal)?;
                        Some(pool.swap_remove(at))
                    })
                };
                let Some(evicted) = evicted else {
                    return Err(self.full(full));
                };
                self.retire(&evicted);
                self.slots.take(principal).map_err(|full| self.full(full))?
            }
        };
        let conn = match Conn::spawn(&self.spec, slot) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(upstream = %self.name, error = %e, "stdio server did not start");
                self.note_death(format!("did not start: {e}"), Vec::new());
                return Err(Refused {
                    status: axum::http::StatusCode::BAD_GATEWAY,
                    text: format!(
                        "toolgate: the stdio server of upstream {:?} did not start",
                        self.name
                    ),
                });
            }
        };
        {
            let mut stats = self.stats.lock().expect("stdio stats");
            stats.started += 1;
            if std::mem::take(&mut stats.restart_due) {
                stats.restarts += 1;
            }
        }
        self.state
            .lock()
            .expect("stdio state")
            .all
            .push(Arc::downgrade(&conn));
        tracing::info!(upstream = %self.name, pid = conn.child.pid(), "stdio server started");
        self.watch(&conn);
        Ok(conn)
    }

    fn full(&self, full: Full) -> Refused {
        let text = match full {
            Full::Upstream => format!(
                "toolgate: upstream {:?} already runs max_processes ({}) stdio servers, all in use; end a session or try again later",
                self.name,
                self.slots.max()
            ),
            Full::Identity => format!(
                "toolgate: this identity already runs max_processes_per_identity ({}) stdio servers of upstream {:?}, all in use; end a session or try again later",
                self.slots.per_identity(),
                self.name
            ),
        };
        Refused {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            text,
        }
    }

    /// When the child ends: its place given back, and reported unless it was stopped on
    /// purpose before it ended.
    fn watch(self: &Arc<Self>, conn: &Arc<Conn>) {
        let ended = conn.child.wait_ended();
        let weak_up = Arc::downgrade(self);
        let weak_conn = Arc::downgrade(conn);
        let (retired_at, slot) = (conn.retired_at.clone(), conn.slot.clone());
        let pid = conn.child.pid();
        tokio::spawn(async move {
            let ended = ended.await;
            slot.lock().expect("slot").take();
            if let Some(conn) = weak_conn.upgrade() {
                conn.stop_listening();
            }
            let Some(up) = weak_up.upgrade() else { return };
            let on_purpose = retired_at
                .lock()
                .expect("retired")
                .is_some_and(|at| at <= ended.at);
            if on_purpose {
                tracing::debug!(upstream = %up.name, pid, how = %ended.how, "stdio server stopped");
                return;
            }
            let stderr = ended.stderr.join("\n");
            tracing::warn!(upstream = %up.name, pid, how = %ended.how,
                stderr = %crate::gateway::escape::Escaped(&stderr), "stdio server ended");
            up.note_death(ended.how, ended.stderr);
        });
    }

    fn note_death(&self, how: String, stderr: Vec<String>) {
        let mut stats = self.stats.lock().expect("stdio stats");
        stats.deaths_in_a_row += 1;
        stats.last_death = Some(Instant::now());
        stats.restart_due = true;
        stats.last_exit = Some(StdioExit {
            at: Utc::now(),
            how,
            stderr,
        });
    }

    /// Stops a child on purpose.
    fn retire(&self, conn: &Conn) {
        conn.retire();
    }

    /// Sends `initialize` (the client's, or the gateway's for a pooled child) and waits
    /// for its answer, within `initialize_timeout_secs`. A child that initialised is
    /// sent `notifications/initialized` when `confirm` (its client does that itself).
    async fn initialize(
        &self,
        conn: &Conn,
        request: &[u8],
        confirm: bool,
    ) -> Result<Incoming, Refused> {
        let answered =
            tokio::time::timeout(self.initialize_timeout, conn.child.request(request)).await;
        let answer = match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.retire(conn);
                return Err(Refused {
                    status: axum::http::StatusCode::BAD_GATEWAY,
                    text: format!(
                        "toolgate: the stdio server of upstream {:?} {} during initialize",
                        self.name,
                        ended_text(&e)
                    ),
                });
            }
            Err(_) => {
                let how = format!(
                    "did not answer initialize within {} s; killed",
                    self.initialize_timeout.as_secs()
                );
                tracing::error!(upstream = %self.name, pid = conn.child.pid(), "stdio server {how}");
                self.retire(conn);
                self.note_death(how.clone(), Vec::new());
                return Err(Refused {
                    status: axum::http::StatusCode::GATEWAY_TIMEOUT,
                    text: format!(
                        "toolgate: the stdio server of upstream {:?} {how}",
                        self.name
                    ),
                });
            }
        };
        if let Some(result) = answer.value.get("result") {
            *conn.init.lock().expect("init") = result.clone();
            self.stats.lock().expect("stdio stats").deaths_in_a_row = 0;
            if confirm {
                let _ = conn
                    .child
                    .send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                    .await;
            }
        } else {
            self.retire(conn);
        }
        Ok(answer)
    }

    /// A new 2025-11-25 session: its child, initialised by the client.
    async fn open_session(
        self: &Arc<Self>,
        principal: &str,
        initialize: Bytes,
    ) -> Result<(Option<String>, Incoming), Refused> {
        let conn = self.spawn_conn(principal).await?;
        let answer = self.initialize(&conn, &initialize, false).await?;
        if answer.value.get("result").is_none() {
            return Ok((None, answer));
        }
        let id = new_session_id();
        self.state.lock().expect("stdio state").sessions.insert(
            id.clone(),
            Session {
                conn,
                principal: principal.to_owned(),
                initialize,
            },
        );
        Ok((Some(id), answer))
    }

    /// The child of a session this principal holds, started again if it died.
    async fn session_conn(
        self: &Arc<Self>,
        id: &str,
        principal: &str,
    ) -> Result<Arc<Conn>, Refused> {
        let (conn, initialize) = {
            let state = self.state.lock().expect("stdio state");
            match state.sessions.get(id) {
                Some(s) if s.principal == principal => (s.conn.clone(), s.initialize.clone()),
                _ => return Err(no_session()),
            }
        };
        conn.touch();
        if conn.is_alive() {
            return Ok(conn);
        }
        let fresh = self.spawn_conn(principal).await?;
        let answer = self.initialize(&fresh, &initialize, true).await?;
        if answer.value.get("result").is_none() {
            return Err(Refused {
                status: axum::http::StatusCode::BAD_GATEWAY,
                text: format!(
                    "toolgate: the stdio server of upstream {:?} was started again and refused the session's initialize",
                    self.name
                ),
            });
        }
        tracing::info!(upstream = %self.name, pid = fresh.child.pid(), "stdio server started again for its session");
        let mut state = self.state.lock().expect("stdio state");
        match state.sessions.get_mut(id) {
            Some(session) => {
                session.conn = fresh.clone();
                Ok(fresh)
            }
            None => {
                drop(state);
                self.retire(&fresh);
                Err(no_session())
            }
        }
    }

    /// Ends a session and its child.
    fn close_session(&self, id: &str, principal: &str) -> bool {
        let removed = {
            let mut state = self.state.lock().expect("stdio state");
            match state.sessions.get(id) {
                Some(s) if s.principal == principal => state.sessions.remove(id),
                _ => None,
            }
        };
        match removed {
            Some(session) => {
                self.retire(&session.conn);
                true
            }
            None => false,
        }
    }

    /// A pooled child for this pool, idle or new. A new one is asked first (once per
    /// upstream) whether it speaks the client's 2026-07-28 itself (`server/discover`);
    /// one that does serves as it is, any other is initialised in the handshake era.
    async fn pooled_conn(
        self: &Arc<Self>,
        principal: &str,
        pool: &str,
        declared: &Declared,
    ) -> Result<Arc<Conn>, Refused> {
        loop {
            let idle = {
                let mut state = self.state.lock().expect("stdio state");
                state.idle.get_mut(pool).and_then(Vec::pop)
            };
            match idle {
                Some(conn) if conn.is_alive() => {
                    conn.touch();
                    return Ok(conn);
                }
                Some(dead) => self.retire(&dead),
                None => break,
            }
        }
        let mut conn = self.spawn_conn(principal).await?;
        let known = *self.speaks_modern.lock().expect("stdio era");
        if known != Some(false) {
            // Asked in the gateway's own 2026-07-28 words, never a client's: what a child
            // answers decides for every identity.
            let probe = serde_json::to_vec(&declared.discover()).expect("a JSON value serializes");
            let asked =
                tokio::time::timeout(self.initialize_timeout, conn.child.request(&probe)).await;
            match asked {
                Ok(Ok(answer)) if era::speaks_modern(&answer.value) => {
                    *self.speaks_modern.lock().expect("stdio era") = Some(true);
                    *conn.init.lock().expect("init") = answer.value["result"].clone();
                    conn.speaks_modern.store(true, Ordering::SeqCst);
                    self.stats.lock().expect("stdio stats").deaths_in_a_row = 0;
                    return Ok(conn);
                }
                Ok(Ok(_)) => {
                    tracing::info!(upstream = %self.name, "stdio server speaks the handshake era: 2026-07-28 clients are served through initialize");
                    *self.speaks_modern.lock().expect("stdio era") = Some(false);
                }
                // It could not take the question (it died, or said nothing in time): this
                // time a new child, initialised; the question is asked again next time.
                _ => {
                    self.retire(&conn);
                    conn = self.spawn_conn(principal).await?;
                }
            }
        }
        let request = serde_json::to_vec(&declared.initialize()).expect("a JSON value serializes");
        let answer = self.initialize(&conn, &request, true).await?;
        match answer.value.get("error") {
            None => Ok(conn),
            Some(error) => Err(Refused {
                status: axum::http::StatusCode::BAD_GATEWAY,
                text: format!(
                    "toolgate: the stdio server of upstream {:?} refused initialize: {}",
                    self.name,
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ),
            }),
        }
    }

    /// A pooled child back in its pool after a request, if it can serve another.
    fn release(&self, pool: &str, conn: Arc<Conn>) {
        if !conn.is_alive() || self.stop.is_cancelled() {
            self.retire(&conn);
            return;
        }
        conn.touch();
        self.state
            .lock()
            .expect("stdio state")
            .idle
            .entry(pool.to_owned())
            .or_default()
            .push(conn);
    }

    /// Stops sessions and pooled children unused for `idle_timeout_secs`.
    fn reap(&self) {
        let mut stale = Vec::new();
        {
            let mut state = self.state.lock().expect("stdio state");
            let idle_timeout = self.idle_timeout;
            state.sessions.retain(|id, s| {
                let keep = s.conn.has_open_routes() || s.conn.idle_for() < idle_timeout;
                if !keep {
                    tracing::info!(upstream = %self.name, session = %id, "stdio session idle; its server stopped");
                    stale.push(s.conn.clone());
                }
                keep
            });
            for pool in state.idle.values_mut() {
                pool.retain(|c| {
                    let keep = c.is_alive() && c.idle_for() < idle_timeout;
                    if !keep {
                        stale.push(c.clone());
                    }
                    keep
                });
            }
            state.idle.retain(|_, pool| !pool.is_empty());
            state.all.retain(|c| c.strong_count() > 0);
        }
        for conn in stale {
            self.retire(&conn);
        }
    }
}

impl Drop for StdioUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Removes what gateways that were killed (and so could not remove them) left of their
/// bridges in `tmp`: a directory of ours older than a minute whose socket nobody
/// listens on. Other users' directories cannot be read, and are left alone.
fn sweep_stale_dirs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("toolgate-stdio-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > Duration::from_secs(60)));
        if !ours || !old {
            continue;
        }
        let socket = path.join("bridge.sock");
        let listened = std::os::unix::net::UnixStream::connect(&socket).is_ok();
        let readable = std::fs::read_dir(&path).is_ok();
        if readable && !listened {
            tracing::debug!(dir = %path.display(), "removing a stale stdio bridge directory");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

async fn reap_idle(upstream: Weak<StdioUpstream>) {
    let every = match upstream.upgrade() {
        Some(up) => (up.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(up) = upstream.upgrade() else { return };
        if up.stop.is_cancelled() {
            return;
        }
        up.reap();
    }
}

fn no_session() -> Refused {
    Refused {
        status: axum::http::StatusCode::NOT_FOUND,
        text: "toolgate: no such session (it ended, or went idle); initialize a new one".into(),
    }
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

/// What a client is told when its request's child failed (no stderr: that is for the
/// log, which has it).
fn ended_text(e: &StdioError) -> String {
    match e {
        StdioError::Ended(ended) => format!("ended ({})", ended.how),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> UpstreamConfig {
        toml::from_str(toml).unwrap()
    }

    #[tokio::test]
    async fn a_variable_that_is_not_set_stops_the_start_and_is_named() {
        let err = StdioUpstream::start(&config(
            "name = \"files\"\ncommand = [\"server\"]\nenv = { TOKEN = \"Bearer ${TOOLGATE_TEST_SURELY_UNSET}\" }",
        ))
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            err,
            "[[upstream]] \"files\": env TOKEN: \"Bearer ${TOOLGATE_TEST_SURELY_UNSET}\": the environment variable TOOLGATE_TEST_SURELY_UNSET is not set"
        );
    }

    #[tokio::test]
    async fn the_child_gets_the_sdks_inherited_variables_and_the_configured_ones_only() {
        let up = StdioUpstream::start(&config(
            "name = \"files\"\ncommand = [\"server\"]\nenv = { HOME = \"/srv/files\", LEVEL = \"$$5\" }",
        ))
        .unwrap();
        let names: Vec<&str> = up.spec.env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| INHERITED_ENV.contains(n) || *n == "LEVEL"),
            "{names:?}"
        );
        assert!(names.contains(&"LEVEL"));
        let home = up.spec.env.iter().find(|(k, _)| k == "HOME").unwrap();
        assert_eq!(home.1, "/srv/files", "the configured value wins");
        assert!(up.socket.exists());
        let dir = up.socket.parent().unwrap().to_owned();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        up.shutdown();
    }

    #[test]
    fn stale_bridge_directories_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join("toolgate-stdio-stale");
        std::fs::create_dir(&stale).unwrap();
        // A socket file nobody listens on any more (its listener dropped).
        drop(std::os::unix::net::UnixListener::bind(stale.join("bridge.sock")).unwrap());
        let live = tmp.path().join("toolgate-stdio-live");
        std::fs::create_dir(&live).unwrap();
        let _listening = std::os::unix::net::UnixListener::bind(live.join("bridge.sock")).unwrap();
        let young = tmp.path().join("toolgate-stdio-young");
        std::fs::create_dir(&young).unwrap();
        let other = tmp.path().join("not-ours");
        std::fs::create_dir(&other).unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for dir in [&stale, &live, &other] {
            std::fs::File::open(dir)
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        sweep_stale_dirs(tmp.path());
        assert!(!stale.exists(), "a dead gateway's directory is swept");
        assert!(live.exists(), "a listening bridge's is kept");
        assert!(
            young.exists(),
            "one just made (its socket not bound yet) is kept"
        );
        assert!(other.exists());
    }

    #[tokio::test]
    async fn the_bridge_answers_the_gateways_client_only() {
        let up = StdioUpstream::start(&config("name = \"files\"\ncommand = [\"server\"]")).unwrap();
        // Another process of this user, on the socket, without the key.
        let stranger = crate::http::client_builder()
            .unix_socket(up.socket.clone())
            .build()
            .unwrap();
        let resp = stranger
            .get("http://localhost/")
            .header(PRINCIPAL_HEADER, hex::encode("api_token:ci-bot"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        // The gateway's client gets past the check (and, without a session, a 405).
        let resp = up
            .client()
            .unwrap()
            .get("http://localhost/")
            .header(PRINCIPAL_HEADER, hex::encode("api_token:ci-bot"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
        up.shutdown();
    }
}
