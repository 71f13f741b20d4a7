//! Test harness: the real gateway binary and the real third-party MCP peers that
//! `.ci/run` installs, each started on 127.0.0.1 and killed when its guard drops,
//! also when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The shipped default policy, as a file's content.
pub const DEFAULT_POLICY: &str = include_str!("../../src/gateway/policy/default.cedar");

/// The agent token the test configs accept, and its SHA-256.
pub const AGENT_TOKEN: &str = "tg_test-agent-token";
/// A token whose identity expired in 2020.
pub const EXPIRED_TOKEN: &str = "tg_test-expired-token";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sha256_hex(s: &str) -> String {
    toolgate::gateway::identity::token_sha256(s)
}

/// A path a peer needs, or a panic that says how to get it. Tests never skip quietly.
fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is missing at {}: run ./.ci/run (or the install steps in it) to install the test peers",
        path.display()
    );
    path
}

pub fn server_everything_js() -> PathBuf {
    require(
        repo_root().join(".ci/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
        "@modelcontextprotocol/server-everything",
    )
}

pub fn venv_python() -> PathBuf {
    require(
        repo_root().join(".ci/venv/bin/python"),
        "the Python venv with the `mcp` SDK",
    )
}

pub fn peer_script(name: &str) -> PathBuf {
    repo_root().join("tests/peers").join(name)
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    /// Kills the process and waits until it is gone, so its port is free again.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM, as a service manager would, and waits (at most 10 s) for the exit.
    /// Returns its status and how long it took.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.id().expect("the process is running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(sent.success());
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 10 s of SIGTERM", self.name))
            .expect("wait");
        (status, started.elapsed())
    }
}

fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
    let child = cmd
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { child, name }
}

/// The line a test peer prints on stdout once it listens, followed by `127.0.0.1:PORT`
/// (see tests/peers/localhost.cjs and tests/peers/py_server.py).
const PEER_LISTENING: &str = "toolgate-peer: listening on ";

/// Reads `proc`'s stdout line by line until `parse` finds what it waits for (at most
/// 30 s), then keeps draining stdout in the background, so the process never blocks on
/// a full pipe. Says why if the process exits or stays silent first.
///
/// Servers report the address they bound only after binding it, and a port has one
/// listener at a time, so the address read here is this process's and no other's.
async fn read_report<T>(
    proc: &mut Proc,
    what: &str,
    mut parse: impl FnMut(&str) -> Option<T>,
) -> Result<T, String> {
    let stdout = proc
        .child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("{}'s stdout is piped", proc.name));
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(found) = parse(&line) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(found)
        }
        Ok(None) => {
            let status = tokio::time::timeout(Duration::from_secs(5), proc.child.wait()).await;
            Err(format!(
                "{} closed its stdout ({status:?}) before it reported {what}",
                proc.name
            ))
        }
        Err(_) => Err(format!("{} did not report {what} within 30 s", proc.name)),
    }
}

/// Waits until a test peer reports where it listens, and returns its port. With `want`
/// not 0 the peer was asked for that port, and must have bound exactly it.
async fn peer_port(proc: &mut Proc, want: u16) -> u16 {
    let at = read_report(proc, "the address it listens on", |line| {
        line.strip_prefix(PEER_LISTENING).map(str::to_owned)
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (asked for 127.0.0.1:{want}; a port it cannot bind ends it)"));
    let port = at
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{} listens on {at}, not on 127.0.0.1", proc.name));
    assert!(
        want == 0 || port == want,
        "{} was asked for port {want} and bound {port}",
        proc.name
    );
    port
}

/// The reference server, in Streamable HTTP mode, on 127.0.0.1 and a port the system
/// picks, which it reports.
pub async fn start_server_everything() -> (Proc, u16) {
    let mut proc = spawn(
        "server-everything",
        Command::new("node")
            .arg("-r")
            .arg(peer_script("localhost.cjs"))
            .arg(server_everything_js())
            .arg("streamableHttp")
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let port = peer_port(&mut proc, 0).await;
    (proc, port)
}

/// The Python SDK test server on `port` (0: one the system picks), and the port it
/// bound. Every POST it receives is appended to `log`.
pub async fn start_py_server(port: u16, variant: &str, log: &Path) -> (Proc, u16) {
    let mut proc = spawn(
        "python mcp server",
        Command::new(venv_python())
            .arg(peer_script("py_server.py"))
            .arg(port.to_string())
            .arg(variant)
            .env("TOOLGATE_TEST_UPSTREAM_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let port = peer_port(&mut proc, port).await;
    (proc, port)
}

/// The Python test server on a port of its own, logging every POST it receives.
pub struct PyUpstream {
    pub proc: Proc,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyUpstream {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("upstream.log");
        let (proc, port) = start_py_server(0, "a", &log).await;
        Self {
            proc,
            port,
            log,
            _dir: dir,
        }
    }

    /// Restarts on the same port, as `variant` (which changes one tool's annotations).
    /// The new process must bind that very port, or the test fails.
    pub async fn restart_as(self, variant: &str) -> Self {
        let Self {
            proc,
            port,
            log,
            _dir,
        } = self;
        proc.stop().await;
        let (proc, port) = start_py_server(port, variant, &log).await;
        Self {
            proc,
            port,
            log,
            _dir,
        }
    }

    pub fn direct_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// A gateway config body with this server as upstream `py`, plus `extra` keys for it.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[[upstream]]\nname = \"py\"\nurl = \"{}\"\n{extra}\n{}",
            self.direct_url(),
            test_identities()
        )
    }

    pub fn posts(&self) -> Vec<UpstreamPost> {
        upstream_posts(&self.log)
    }
}

/// Lists upstream `py`'s tools through the gateway (2026-07-28), and waits until the
/// catalog has learned them, so calls are decided with their real classes.
pub async fn prime_catalog(gw: &GatewayProc) {
    list_tools(&gw.url("py"), AGENT_TOKEN).await;
    catalog_learned(gw, "py").await;
}

/// Waits until the catalog has stored at least five of `upstream`'s tools (it learns them
/// from a `tools/list` answer on a task of its own).
pub async fn catalog_learned(gw: &GatewayProc, upstream: &str) {
    eventually(
        &format!("the catalog to learn {upstream}'s tools"),
        || async {
            let rows = query_rows(
                &gw.db_path(),
                &format!("SELECT name FROM tools WHERE upstream = '{upstream}'"),
            )
            .await;
            (rows.len() >= 5).then_some(())
        },
    )
    .await;
}

/// A 2026-07-28 `tools/list` to an MCP endpoint as the agent `token`, read to its end.
/// The gateway learns the tools from the answer on a task of its own.
pub async fn list_tools(url: &str, token: &str) {
    let list = serde_json::json!({"jsonrpc": "2.0", "id": "prime", "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let resp = http()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(list.to_string())
        .send()
        .await
        .expect("tools/list through the gateway");
    assert_eq!(resp.status(), 200, "tools/list failed");
    resp.bytes().await.expect("tools/list answer");
}

/// A gateway config body with server-everything on `port` as upstream `everything`.
/// Its annotations are not trusted, so the tools the tests call are seeded as reads,
/// which the default policy lets an API token call.
pub fn everything_config(port: u16) -> String {
    let seeds: String = [
        "echo",
        "trigger-long-running-operation",
        "trigger-elicitation-request",
    ]
    .iter()
    .map(|tool| {
        format!("[[risk]]\nupstream = \"everything\"\ntool = \"{tool}\"\nrisk = \"read\"\n")
    })
    .collect();
    format!(
        "[[upstream]]\nname = \"everything\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n{}{seeds}",
        test_identities()
    )
}

/// One POST as the Python upstream logged it.
#[derive(Debug, serde::Deserialize)]
pub struct UpstreamPost {
    pub body: String,
    pub authorization: Option<String>,
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// What the Python upstream says it received, in order.
pub fn upstream_posts(log: &Path) -> Vec<UpstreamPost> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("upstream log line"))
        .collect()
}

/// A running gateway with its own config and data dir. Its log is `dir/gateway.log`.
pub struct GatewayProc {
    pub proc: Proc,
    pub addr: String,
    pub control: String,
    pub dir: tempfile::TempDir,
}

impl GatewayProc {
    pub fn url(&self, upstream: &str) -> String {
        format!("http://{}/mcp/{upstream}", self.addr)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/toolgate.db")
    }

    pub fn control_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control)
    }

    /// `GET` of a control API path as `token`, its body as JSON.
    pub async fn control_get(&self, token: &str, path: &str) -> Value {
        http()
            .get(self.control_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Asserts that `secret` is in no file under the data dir; returns how many files
    /// were read (the database, its WAL and shared-memory files).
    pub fn assert_secret_not_stored(&self, secret: &str) -> usize {
        let mut files = 0;
        for entry in std::fs::read_dir(self.dir.path().join("data")).expect("data dir") {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("readable");
            files += 1;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                path.display()
            );
        }
        files
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Stops the gateway, runs `between` (to change its files), and starts it again.
    pub async fn stop_then(self, between: impl FnOnce()) -> GatewayProc {
        let GatewayProc { proc, dir, .. } = self;
        proc.stop().await;
        between();
        launch_gateway(dir).await
    }

    /// Kills the gateway with SIGKILL, as a crash would, and starts it again on the
    /// same config and data dir.
    pub async fn crash_and_restart(self) -> GatewayProc {
        self.stop_then(|| {}).await
    }

    /// Stops the gateway and starts it again with its control API on the port it had,
    /// for a client that must find it there again (the MCP port may change). The new
    /// process must bind that very port, or the test fails.
    pub async fn restart_on_the_same_control_port(self) -> GatewayProc {
        self.restart_on_the_same_control_port_with(|config| config.to_owned())
            .await
    }

    /// As `restart_on_the_same_control_port`, with its config changed by `edit` first
    /// (a rotated operator token, say).
    pub async fn restart_on_the_same_control_port_with(
        self,
        edit: impl FnOnce(&str) -> String,
    ) -> GatewayProc {
        let control = self.control.clone();
        let config = self.dir.path().join("gateway.toml");
        let text = edit(&std::fs::read_to_string(&config).expect("the gateway config"));
        let pinned: String = text
            .lines()
            .map(|line| {
                if line.starts_with("control_listen = ") {
                    format!("control_listen = \"{control}\"\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let gw = self
            .stop_then(|| std::fs::write(&config, pinned).expect("write config"))
            .await;
        assert_eq!(gw.control, control, "the restarted gateway's control API");
        gw
    }
}

/// The `[[identity]]` tables every test config carries.
pub fn test_identities() -> String {
    format!(
        r#"
[[identity]]
name = "ci-bot"
kind = "api_token"
token_sha256 = "{}"
groups = ["ci"]
issued = "2026-01-01T00:00:00Z"

[[identity]]
name = "old-support"
kind = "api_token"
token_sha256 = "{}"
issued = "2019-01-01T00:00:00Z"
expires = "2020-01-01T00:00:00Z"
"#,
        sha256_hex(AGENT_TOKEN),
        sha256_hex(EXPIRED_TOKEN)
    )
}

/// Starts the gateway binary on a config made of `[gateway]` defaults plus `body`.
pub async fn start_gateway(body: &str) -> GatewayProc {
    start_gateway_with_files(body, &[]).await
}

/// As `start_gateway`, with extra files (such as a policy) beside the config.
/// Both listeners ask for port 0; the gateway reports the ports it bound.
pub async fn start_gateway_with_files(body: &str, files: &[(&str, &str)]) -> GatewayProc {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write file");
    }
    // A body that sets its own body limit keeps it; the tests' default is small.
    let body_limit = if body.contains("max_body_bytes") {
        ""
    } else {
        "max_body_bytes = 65536\n"
    };
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{body_limit}{body}"
    );
    std::fs::write(dir.path().join("gateway.toml"), config).expect("write config");
    launch_gateway(dir).await
}

async fn launch_gateway(dir: tempfile::TempDir) -> GatewayProc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("gateway.log"))
        .expect("gateway log");
    let mut proc = spawn(
        "toolgate gateway",
        Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .arg("gateway")
            .arg("--config")
            .arg(dir.path().join("gateway.toml"))
            .env("TOOLGATE_LOG", "toolgate=debug")
            .stdout(Stdio::piped())
            .stderr(log),
    );
    // The gateway prints these once it has bound both listeners (see gateway::run).
    let (mut addr, mut control) = (None, None);
    let found = read_report(&mut proc, "its endpoints", |line| {
        if let Some(rest) = line.strip_prefix("toolgate gateway: MCP endpoint http://") {
            addr = rest.split('/').next().map(String::from);
        }
        if let Some(rest) = line.strip_prefix("toolgate gateway: control API http://") {
            control = Some(rest.to_owned());
        }
        addr.clone().zip(control.clone())
    })
    .await;
    let (addr, control) = found.unwrap_or_else(|e| {
        let log_text = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
        panic!("{e}; its log:\n{log_text}")
    });
    GatewayProc {
        proc,
        addr,
        control,
        dir,
    }
}

/// Runs the Python SDK client against `url` and returns what it printed.
pub async fn run_py_client(url: &str, token: &str, tool: &str, args: &Value, mode: &str) -> Value {
    run_py_peer("py_client.py", &[url, token, tool, &args.to_string(), mode]).await
}

/// Runs a Python peer script (tests/peers) with `args` and returns the JSON it printed.
pub async fn run_py_peer(script: &str, args: &[&str]) -> Value {
    let out = Command::new(venv_python())
        .arg(peer_script(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within 60 s"))
        .unwrap_or_else(|e| panic!("{script} ran: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Polls `check` until it returns `Some`, for state the gateway writes in the background.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(10, what, check).await
}

/// Polls `check` until it gives something, for at most `secs` seconds.
pub async fn eventually_within<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads rows from the gateway's SQLite store through the real driver.
pub async fn query_rows(db: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(mut conn) = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await else {
        return Vec::new();
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
                .collect()
        })
        .collect()
}

/// A reqwest client for raw HTTP against the gateway or an upstream.
pub fn http() -> reqwest::Client {
    toolgate::http::client_builder()
        .build()
        .expect("http client")
}

/// A tmux server of the test's own, killed when dropped, with one session running `command`.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(command: &str, env: &[(&str, &str)], width: u16, height: u16) -> Self {
        static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("toolgate-test-{}-{n}", std::process::id());
        let mut cmd = std::process::Command::new("tmux");
        cmd.args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        let status = cmd
            .arg(command)
            .status()
            .expect("tmux is installed (./.ci/run installs it)");
        assert!(status.success(), "tmux could not start a session");
        Self { socket }
    }

    pub fn send(&self, keys: &[&str]) {
        let status = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    pub fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`, and returns the screen.
    pub async fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?}"), |screen| screen.contains(text))
            .await
    }

    /// Waits until `shows` holds for the screen, and returns the screen.
    /// `what` names the expectation in the failure message.
    pub async fn wait_until(&self, what: &str, shows: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if shows(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}; it shows:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// A 2026-07-28 `tools/call` body; `extra_meta` joins the protocol envelope in `_meta`.
pub fn modern_call(id: u64, tool: &str, args: Value, extra_meta: Value) -> Value {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    meta.as_object_mut()
        .unwrap()
        .extend(extra_meta.as_object().unwrap().clone());
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args, "_meta": meta}})
}

/// A POST of `body` with the routing headers a 2026-07-28 client sends.
pub fn modern_request(
    client: &reqwest::Client,
    url: &str,
    tool: &str,
    body: String,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(body)
}

/// The control API's event stream as SSE, replayed from the first event, as `token`.
pub async fn event_stream(gw: &GatewayProc, token: &str) -> reqwest::Response {
    http()
        .get(gw.control_url("/api/v1/events?since=0"))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("the event stream")
}

/// Holds the store's write lock from another connection, as a stalled disk would,
/// until released.
pub struct StoreLock(sqlx::SqliteConnection);

impl StoreLock {
    pub async fn take(gw: &GatewayProc) -> Self {
        use sqlx::Connection as _;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", gw.db_path().display()))
                .await
                .expect("a connection to the store");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("the store's lock");
        Self(conn)
    }

    pub async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("the lock released");
    }
}

/// Serves `app` on 127.0.0.1, on a port of its own, for the rest of the test; its address.
pub async fn serve_local(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serving") });
    addr
}

/// POSTs a 2026-07-28 `tools/call` body to upstream `py` as the agent, and returns the
/// status and the JSON-RPC answer in it (the body, or the answer in a held stream).
pub async fn post_call(gw: &GatewayProc, tool: &str, body: String) -> (u16, Value) {
    let resp = modern_request(&http(), &gw.url("py"), tool, body)
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("the answer");
    let answer =
        toolgate::demo::agents::answer_of(&text).unwrap_or_else(|| panic!("no answer in {text}"));
    (status, answer)
}

/// Sends a 2026-07-28 `write_page` as the agent `token`, on a task of its own (a held
/// call's client waits), and yields the whole answer body.
pub fn spawn_write_page(
    gw: &GatewayProc,
    token: &str,
    page: &str,
    body: &str,
    extra_meta: Value,
) -> tokio::task::JoinHandle<String> {
    let url = gw.url("py");
    let token = token.to_owned();
    let call = modern_call(
        9,
        "write_page",
        serde_json::json!({"page_id": page, "body": body}),
        extra_meta,
    );
    tokio::spawn(async move {
        let resp = modern_request(&http(), &url, "write_page", call.to_string())
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "a held call answers with a stream"
        );
        resp.text().await.expect("the held stream")
    })
}
