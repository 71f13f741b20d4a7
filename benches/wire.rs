//! What toolgate adds on the wire: `tools/call` round trips straight to an upstream (A)
//! and through the gateway (B), alternating A, B, A, B in one run, at concurrency 1, 16
//! and 64, against a fast upstream in both protocol eras and against the reference
//! `server-everything` (2025-11-25), and against the demo's server over stdio (`toolgate
//! sample-server`, straight over its pipes, A, or as the gateway's stdio upstream, B). Then a deny's latency, the time from an approval POST
//! to the held client's answer, and the gateway's CPU per call from `/proc/<pid>/stat`.
//! With a PostgreSQL cluster (`TOOLGATE_TEST_PG`, as `.ci/postgres start DIR` prints it),
//! the same calls through a gateway on PostgreSQL beside one on SQLite (direct, SQLite,
//! PostgreSQL in turn), and an approval given on one replica to a client waiting on
//! another.
//!
//!     cargo bench --bench wire
//!
//! With `TOOLGATE_BENCH_BASELINE=/path/to/toolgate` (another build, such as one of the
//! commit before a performance change, from its own worktree), the same rows also go
//! through a gateway of that build, its rounds beside this build's, and a second table
//! compares the two (issue 20 measures every change so, in one run).
//!
//! The gateway is the `toolgate` binary in its own process; this process is the load
//! client, and also hosts the fast upstream (the demo's rmcp server, which answers from
//! memory). server-everything runs under node, from `.ci/node_modules` (`./.ci/run`
//! installs it). Without `--bench` (as `cargo test --all-targets` runs it), every case
//! runs for a moment, in under 10 s. Everything binds 127.0.0.1 and stops on exit.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

#[path = "common/mod.rs"]
mod common;
use common::Gateway;

const AGENT: &str = "tg_bench-wire-agent";
const ADMIN: &str = "tg_bench-wire-admin";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Era {
    Sessions,
    Stateless,
}

/// One upstream, reached directly or through the gateway.
struct Upstream {
    label: &'static str,
    /// Its URL; empty for the stdio server, reached directly over its pipes.
    direct: String,
    via: String,
    era: Era,
    tool: &'static str,
    args: Value,
}

struct Settings {
    full: bool,
    round: Duration,
    rounds: usize,
    concurrency: &'static [usize],
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let settings = if full {
        Settings {
            full,
            round: Duration::from_secs(3),
            rounds: 4,
            concurrency: &[1, 16, 64],
        }
    } else {
        Settings {
            full,
            round: Duration::from_millis(150),
            rounds: 2,
            concurrency: &[1, 16],
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(settings));
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The demo's upstream in this process, on a port of its own.
async fn fast_upstream() -> u16 {
    let data = Arc::new(Mutex::new(toolgate::demo::upstream::Data::sample()));
    let router = axum::Router::new().nest_service(
        "/mcp",
        toolgate::demo::upstream::service(data, CancellationToken::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // As the demo serves it: no Nagle delay on streamed answers.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

/// server-everything under node, bound to 127.0.0.1.
async fn server_everything() -> Option<(Child, u16)> {
    let js =
        repo_root().join(".ci/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !js.exists() {
        eprintln!("wire: server-everything is not installed (run ./.ci/run); skipping it");
        return None;
    }
    let mut child = Command::new("node")
        .arg("-r")
        .arg(repo_root().join("tests/peers/localhost.cjs"))
        .arg(js)
        .arg("streamableHttp")
        // The system picks the port; the preload prints the one it bound.
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.strip_prefix("toolgate-peer: listening on 127.0.0.1:") {
                return at.parse::<u16>().ok();
            }
        }
        None
    };
    let port = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .ok()
        .flatten()
        .expect("server-everything reports where it listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some((child, port))
}

async fn gateway(fast: u16, everything: Option<u16>) -> Gateway {
    common::gateway(&config(fast, everything, "")).await
}

/// The bench's gateway config; `gateway_keys` join `[gateway]`.
fn config(fast: u16, everything: Option<u16>, gateway_keys: &str) -> String {
    let sha = toolgate::gateway::identity::token_sha256;
    let mut config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         hold_timeout_secs = 30\n{gateway_keys}\
         [[upstream]]\nname = \"fast\"\nurl = \"http://127.0.0.1:{fast}/mcp\"\ntrust_annotations = true\n\
         [[upstream]]\nname = \"sample\"\ncommand = [{:?}, \"sample-server\"]\ntrust_annotations = true\nmax_processes = 200\n\
         [[identity]]\nname = \"bench\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n\
         [[operator]]\nname = \"ada\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        env!("CARGO_BIN_EXE_toolgate"),
        sha(AGENT),
        sha(ADMIN)
    );
    if let Some(port) = everything {
        config.push_str(&format!(
            "[[upstream]]\nname = \"everything\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
             [[risk]]\nupstream = \"everything\"\ntool = \"echo\"\nrisk = \"read\"\n"
        ));
    }
    config
}

/// Two gateway replicas on one fresh PostgreSQL database (and their key's directory), or
/// `None` without a cluster.
async fn postgres_replicas(fast: u16) -> Option<(Gateway, Gateway, tempfile::TempDir)> {
    let location = toolgate::gateway::store::testing::fresh_postgres().await?;
    let toolgate::gateway::store::Location::Postgres { url, .. } = location else {
        unreachable!("a PostgreSQL location")
    };
    let key = tempfile::tempdir().unwrap();
    let key_file = key.path().join("toolgate.key");
    toolgate::gateway::keys::DeploymentKey::generate()
        .write_new(&key_file)
        .unwrap();
    let config = format!(
        "{}[store]\nurl = \"{url}\"\n",
        config(
            fast,
            None,
            &format!("key_file = \"{}\"\n", key_file.display())
        )
    );
    let one = common::gateway(&config).await;
    let two = common::gateway(&config).await;
    Some((one, two, key))
}

/// CPU time so far of every PostgreSQL server process on this machine.
fn postgres_cpu(ticks: u64) -> Duration {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        if is_postgres {
            total += common::try_cpu_of(pid, ticks).unwrap_or_default();
        }
    }
    total
}

/// A client of one upstream in one era: a session opened once for the 2025-11-25 era.
#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    url: String,
    era: Era,
    session: Option<String>,
}

impl Caller {
    async fn open(http: &reqwest::Client, url: &str, era: Era) -> Caller {
        let mut caller = Caller {
            http: http.clone(),
            url: url.to_owned(),
            era,
            session: None,
        };
        if era == Era::Sessions {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "toolgate-bench", "version": "1"}}});
            let resp = caller
                .post(init.to_string(), "initialize", None)
                .send()
                .await
                .unwrap();
            caller.session = resp
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = resp.text().await;
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            caller
                .post(note.to_string(), "notifications/initialized", None)
                .send()
                .await
                .unwrap();
        }
        caller
    }

    fn post(&self, body: String, method: &str, name: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(AGENT)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        match self.era {
            Era::Sessions => {
                if let Some(s) = &self.session {
                    r = r
                        .header("mcp-session-id", s)
                        .header("mcp-protocol-version", "2025-11-25");
                }
            }
            Era::Stateless => {
                r = r
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", method);
                if let Some(n) = name {
                    r = r.header("mcp-name", n);
                }
            }
        }
        r.body(body)
    }

    /// Ends its session, if it has one (a stdio upstream's child goes with it).
    async fn close(&self) {
        if let Some(session) = &self.session {
            let _ = self
                .http
                .delete(&self.url)
                .bearer_auth(AGENT)
                .header("mcp-session-id", session)
                .send()
                .await;
        }
    }

    fn call_body(&self, id: u64, method: &str, params: Value) -> String {
        let mut params = params;
        if self.era == Era::Stateless {
            params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                     "io.modelcontextprotocol/clientCapabilities": {}});
        }
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    }

    /// One request; its latency and the whole answer body.
    async fn request(&self, id: u64, method: &str, params: Value) -> (Duration, String) {
        let name = params["name"].as_str().map(str::to_owned);
        let body = self.call_body(id, method, params);
        let sent = Instant::now();
        let resp = self
            .post(body, method, name.as_deref())
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        (sent.elapsed(), text)
    }
}

/// One closed-loop caller: an HTTP client of one era, or the bench itself on a stdio
/// server's pipes.
enum Worker {
    Http(Caller),
    Stdio(toolgate::gateway::stdio::StdioChild),
}

impl Worker {
    /// A caller of `url`, or (with `url` empty) a child of the sample server of its own,
    /// initialised, as the gateway runs one per session.
    async fn open(http: &reqwest::Client, url: &str, upstream: &Upstream) -> Worker {
        if !url.is_empty() {
            return Worker::Http(Caller::open(http, url, upstream.era).await);
        }
        use toolgate::gateway::stdio::{ChildSpec, StdioChild};
        let spec = ChildSpec {
            name: "sample".into(),
            command: vec![
                env!("CARGO_BIN_EXE_toolgate").into(),
                "sample-server".into(),
            ],
            env: Vec::new(),
            cwd: None,
        };
        let child = StdioChild::spawn(&spec, |_| {}).unwrap();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "toolgate-bench", "version": "1"}}});
        child.request(init.to_string().as_bytes()).await.unwrap();
        child
            .send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await
            .unwrap();
        Worker::Stdio(child)
    }

    /// One `tools/call`, its answer checked; its latency.
    async fn call(&self, id: u64, params: &Value) -> Duration {
        match self {
            Worker::Http(caller) => {
                let (took, text) = caller.request(id, "tools/call", params.clone()).await;
                assert!(text.contains("\"result\""), "{text}");
                assert!(!text.contains("\"isError\":true"), "{text}");
                took
            }
            Worker::Stdio(child) => {
                let body =
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
                let sent = Instant::now();
                let answer = child.request(body.to_string().as_bytes()).await.unwrap();
                let took = sent.elapsed();
                assert!(answer.value.get("result").is_some(), "{:?}", answer.value);
                took
            }
        }
    }

    /// Ends its session (a stdio upstream's child goes with it), or its child.
    async fn close(self) {
        match self {
            Worker::Http(caller) => caller.close().await,
            Worker::Stdio(child) => drop(child),
        }
    }
}

/// Closed-loop calls from `concurrency` workers for `length`, over HTTP to `url` or
/// (with `url` empty) over the sample server's pipes; latencies of every call.
async fn side(
    http: &reqwest::Client,
    url: &str,
    upstream: &Upstream,
    concurrency: usize,
    length: Duration,
) -> Vec<Duration> {
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let worker = Worker::open(http, url, upstream).await;
        let params = json!({"name": upstream.tool, "arguments": upstream.args});
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let started = Instant::now();
            let mut id = (w as u64) << 32;
            while started.elapsed() < length {
                id += 1;
                times.push(worker.call(id, &params).await);
            }
            worker.close().await;
            times
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all
}

/// One gateway's figures in a row: p50 (ms), CPU per call (µs), calls made.
struct Figures {
    p50: f64,
    cpu_us: f64,
    calls: usize,
}

impl Figures {
    fn of(sorted: &[Duration], cpu: Duration) -> Self {
        Self {
            p50: pct(sorted, 0.5),
            cpu_us: cpu.as_secs_f64() * 1e6 / sorted.len().max(1) as f64,
            calls: sorted.len(),
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "pass" } else { "MISS" }
}

async fn run(settings: Settings) {
    let fast = fast_upstream().await;
    let everything = server_everything().await;
    let mut gw = gateway(fast, everything.as_ref().map(|(_, p)| *p)).await;
    let pid = gw.child.id().unwrap();
    let mut baseline = match std::env::var("TOOLGATE_BENCH_BASELINE") {
        Ok(binary) => Some(
            common::gateway_of(
                &binary,
                &config(fast, everything.as_ref().map(|(_, p)| *p), ""),
            )
            .await,
        ),
        Err(_) => None,
    };
    let ticks = common::clock_ticks();
    // Idle connections go before node closes them (5 s), as the gateway's do: a request
    // sent on one it is closing is reset.
    let http = toolgate::http::client_builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(128)
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap();

    let mut upstreams = vec![
        Upstream {
            label: "fast (rmcp), 2026-07-28",
            direct: format!("http://127.0.0.1:{fast}/mcp"),
            via: format!("{}/mcp/fast", gw.mcp),
            era: Era::Stateless,
            tool: "jira_get_issue",
            args: json!({"issueKey": "OPS-1"}),
        },
        Upstream {
            label: "fast (rmcp), 2025-11-25",
            direct: format!("http://127.0.0.1:{fast}/mcp"),
            via: format!("{}/mcp/fast", gw.mcp),
            era: Era::Sessions,
            tool: "jira_get_issue",
            args: json!({"issueKey": "OPS-1"}),
        },
    ];
    for (label, era) in [
        ("sample-server over stdio (rmcp), 2025-11-25", Era::Sessions),
        (
            "sample-server over stdio (rmcp), 2026-07-28",
            Era::Stateless,
        ),
    ] {
        upstreams.push(Upstream {
            label,
            direct: String::new(),
            via: format!("{}/mcp/sample", gw.mcp),
            era,
            tool: "jira_get_issue",
            args: json!({"issueKey": "OPS-1"}),
        });
    }
    if let Some((_, port)) = &everything {
        upstreams.push(Upstream {
            label: "server-everything, 2025-11-25",
            direct: format!("http://127.0.0.1:{port}/mcp"),
            via: format!("{}/mcp/everything", gw.mcp),
            era: Era::Sessions,
            tool: "echo",
            args: json!({"message": "hello"}),
        });
    }
    // The baseline's URL of an upstream's row.
    let base_via = |u: &Upstream| {
        baseline
            .as_ref()
            .map(|b| u.via.replacen(&gw.mcp, &b.mcp, 1))
    };
    // The gateways learn the fast upstream's classes from a tools/list, as from any client.
    for mcp in std::iter::once(&gw.mcp).chain(baseline.as_ref().map(|b| &b.mcp)) {
        for via in [format!("{mcp}/mcp/fast"), format!("{mcp}/mcp/sample")] {
            let lister = Caller::open(&http, &via, Era::Stateless).await;
            let (_, listed) = lister.request(1, "tools/list", json!({})).await;
            assert!(listed.contains("jira_get_issue"), "{listed}");
        }
    }
    // Warm up every path once.
    for u in &upstreams {
        side(&http, &u.direct, u, 4, Duration::from_millis(300)).await;
        side(&http, &u.via, u, 4, Duration::from_millis(300)).await;
        if let Some(via) = base_via(u) {
            side(&http, &via, u, 4, Duration::from_millis(300)).await;
        }
    }
    // Per row: (label, c, this build's p50 / CPU per call / calls, the baseline's, direct p50).
    let mut compared: Vec<(&str, usize, Figures, Figures, f64)> = Vec::new();

    println!(
        "\nwire: {} rounds of {:?} per side, alternating direct (A) and through the gateway (B)\n",
        settings.rounds, settings.round
    );
    println!(
        "| upstream | c | direct p50 / p99 | gateway p50 / p99 | added p50 / p99 | throughput direct / gateway | ratio | gateway CPU per call |"
    );
    println!("|---|---:|---|---|---|---|---:|---:|");
    let mut checks = Vec::new();
    for u in &upstreams {
        for &c in settings.concurrency {
            let (mut a, mut b, mut base) = (Vec::new(), Vec::new(), Vec::new());
            let (mut cpu, mut base_cpu) = (Duration::ZERO, Duration::ZERO);
            for r in 0..settings.rounds {
                if r % 2 == 0 {
                    a.extend(side(&http, &u.direct, u, c, settings.round).await);
                    continue;
                }
                // This build and the baseline in turn, each first every other time.
                let mut turns = vec![(u.via.clone(), pid, false)];
                if let (Some(via), Some(b)) = (base_via(u), &baseline) {
                    turns.push((via, b.child.id().unwrap(), true));
                    if r % 4 == 3 {
                        turns.reverse();
                    }
                }
                for (via, of, is_base) in turns {
                    let before = common::cpu_of(of, ticks);
                    let times = side(&http, &via, u, c, settings.round).await;
                    let spent = common::cpu_of(of, ticks).saturating_sub(before);
                    if is_base {
                        base.extend(times);
                        base_cpu += spent;
                    } else {
                        b.extend(times);
                        cpu += spent;
                    }
                }
            }
            if baseline.is_some() {
                base.sort();
                b.sort();
                a.sort();
                compared.push((
                    u.label,
                    c,
                    Figures::of(&b, cpu),
                    Figures::of(&base, base_cpu),
                    pct(&a, 0.5),
                ));
            }
            a.sort();
            b.sort();
            let seconds = settings.round.as_secs_f64() * (settings.rounds / 2) as f64;
            let (ta, tb) = (a.len() as f64 / seconds, b.len() as f64 / seconds);
            let cpu_us = cpu.as_secs_f64() * 1e6 / b.len() as f64;
            let added50 = pct(&b, 0.5) - pct(&a, 0.5);
            let added99 = pct(&b, 0.99) - pct(&a, 0.99);
            println!(
                "| {} | {c} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:+.3} / {:+.3} ms | {:.0} / {:.0} calls/s | {:.2} | {:.0} µs |",
                u.label,
                pct(&a, 0.5),
                pct(&a, 0.99),
                pct(&b, 0.5),
                pct(&b, 0.99),
                added50,
                added99,
                ta,
                tb,
                tb / ta,
                cpu_us
            );
            if u.label.starts_with("server-everything") {
                let ratio = tb / ta;
                let targets: &[(&str, f64, &str, bool)] = match c {
                    1 => &[
                        ("added p50 (ms)", added50, "≤ 0.15", added50 <= 0.15),
                        (
                            "gateway CPU per call (µs)",
                            cpu_us,
                            "≤ 100",
                            cpu_us <= 100.0,
                        ),
                        ("throughput ratio", ratio, "≥ 0.90", ratio >= 0.90),
                    ],
                    16 => &[
                        ("throughput ratio", ratio, "≥ 0.95", ratio >= 0.95),
                        ("added p99 (ms)", added99, "≤ 1", added99 <= 1.0),
                    ],
                    _ => &[],
                };
                for (what, figure, target, ok) in targets {
                    checks.push(format!(
                        "c={c} {what} {figure:.3} (target {target}): {}",
                        verdict(*ok)
                    ));
                }
            }
        }
    }

    if !compared.is_empty() {
        println!(
            "\nthis build (B) against the baseline (C, TOOLGATE_BENCH_BASELINE), same rounds\n"
        );
        println!("| upstream | c | added p50 C / B | CPU per call C / B | CPU B/C | calls B/C |");
        println!("|---|---:|---|---|---:|---:|");
        for (label, c, this, base, direct50) in &compared {
            println!(
                "| {label} | {c} | {:+.3} / {:+.3} ms | {:.0} / {:.0} µs | {:.2} | {:.2} |",
                base.p50 - direct50,
                this.p50 - direct50,
                base.cpu_us,
                this.cpu_us,
                this.cpu_us / base.cpu_us,
                this.calls as f64 / base.calls as f64
            );
        }
    }

    // The same calls with the store on PostgreSQL: direct, SQLite, PostgreSQL in turn.
    let replicas = postgres_replicas(fast).await;
    if let Some((pg, pg_two, _key)) = &replicas {
        store_rows(&settings, &http, &upstreams[0], &gw, pg, ticks, &mut checks).await;
        // An approval on the other replica, to a client waiting on this one.
        let n = if settings.full { 100 } else { 3 };
        let mut approvals = Vec::new();
        for i in 0..n {
            approvals.push(
                approve_once(&http, &format!("{}/mcp/fast", pg.mcp), &pg_two.control, i).await,
            );
        }
        approvals.sort();
        let p50 = pct(&approvals, 0.5);
        println!(
            "approval on replica B to the client waiting on replica A (PostgreSQL): {n} holds, p50 {p50:.3} ms, p99 {:.3} ms",
            pct(&approvals, 0.99)
        );
        checks.push(format!(
            "cross-replica approval to answer p50 {p50:.3} ms (target ≤ 50): {}",
            verdict(p50 <= 50.0)
        ));
    }

    // A deny: decided, committed to the store, then answered.
    let denier = Caller::open(&http, &upstreams[0].via, Era::Stateless).await;
    let n = if settings.full { 2000 } else { 50 };
    let mut denies = Vec::new();
    for i in 0..n {
        let (took, text) = denier
            .request(
                i,
                "tools/call",
                json!({"name": "jira_delete_issue", "arguments": {"issueKey": "OPS-1"}}),
            )
            .await;
        assert!(text.contains("Denied by toolgate"), "{text}");
        denies.push(took);
    }
    denies.sort();
    let deny50 = pct(&denies, 0.5);
    println!(
        "\ndeny (destructive call by a token, committed before the answer): {n} calls, p50 {deny50:.3} ms, p99 {:.3} ms",
        pct(&denies, 0.99)
    );
    checks.push(format!(
        "deny p50 {deny50:.3} ms (target ≤ 0.07): {}",
        verdict(deny50 <= 0.07)
    ));

    // An approval: from the POST to the held client's answer.
    let n = if settings.full { 100 } else { 3 };
    let mut approvals = Vec::new();
    for i in 0..n {
        approvals.push(approve_once(&http, &upstreams[0].via, &gw.control, i).await);
    }
    approvals.sort();
    let approve50 = pct(&approvals, 0.5);
    println!(
        "approval POST to the held client's answer: {n} holds, p50 {approve50:.3} ms, p99 {:.3} ms",
        pct(&approvals, 0.99)
    );
    checks.push(format!(
        "approval to answer p50 {approve50:.3} ms (target < 5): {}",
        verdict(approve50 < 5.0)
    ));

    println!("\ntargets (against server-everything):");
    for c in checks {
        println!("- {c}");
    }
    // SIGTERM, so the gateways stop their stdio servers and remove their sockets.
    let mut replicas = replicas;
    let replica_gateways = replicas.iter_mut().flat_map(|(one, two, _)| [one, two]);
    for g in std::iter::once(&mut gw)
        .chain(baseline.as_mut())
        .chain(replica_gateways)
    {
        common::terminate(g).await;
    }
}

/// Holds one write made at `via`, approves it on the control API at `control` as soon as
/// its stream opens, and returns the time from the approval POST to the client's answer.
async fn approve_once(http: &reqwest::Client, via: &str, control: &str, i: u64) -> Duration {
    let caller = Caller::open(http, via, Era::Stateless).await;
    let body = caller.call_body(
        i,
        "tools/call",
        json!({"name": "jira_add_comment", "arguments": {"issueKey": "OPS-1", "body": format!("bench {i}")}}),
    );
    let mut resp = caller
        .post(body, "tools/call", Some("jira_add_comment"))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    let call_id = first
        .split("held for approval as ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("not held: {first}"))
        .to_owned();
    let posted = Instant::now();
    let approve = http
        .post(format!("{control}/api/v1/holds/{call_id}/approve"))
        .bearer_auth(ADMIN)
        .send();
    let answer = async {
        let mut text = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("\"result\"") {
                break;
            }
        }
        (posted.elapsed(), text)
    };
    let (approved, (took, text)) = tokio::join!(approve, answer);
    assert_eq!(approved.unwrap().status(), 200);
    assert!(text.contains("comments"), "{text}");
    took
}

/// The fast upstream through a gateway on each backend, at c=1 and c=16: rounds of
/// direct, SQLite and PostgreSQL calls in turn, with each gateway's CPU per call and the
/// PostgreSQL server's.
async fn store_rows(
    settings: &Settings,
    http: &reqwest::Client,
    fast: &Upstream,
    sqlite: &Gateway,
    pg: &Gateway,
    ticks: u64,
    checks: &mut Vec<String>,
) {
    let pg_via = format!("{}/mcp/fast", pg.mcp);
    // The catalog learns the classes on this replica too.
    let lister = Caller::open(http, &pg_via, Era::Stateless).await;
    lister.request(1, "tools/list", json!({})).await;
    side(http, &pg_via, fast, 4, Duration::from_millis(300)).await;
    println!(
        "\nstore: {} rounds of {:?} per side, direct (A), SQLite gateway (S), PostgreSQL gateway (P) in turn; {}\n",
        settings.rounds, settings.round, fast.label
    );
    println!(
        "| store | c | gateway p50 / p99 | added p50 / p99 | throughput ratio to direct | gateway CPU per call | PostgreSQL CPU per call |"
    );
    println!("|---|---:|---|---|---:|---:|---:|");
    let (sqlite_pid, pg_pid) = (sqlite.child.id().unwrap(), pg.child.id().unwrap());
    for &c in &settings.concurrency[..2] {
        let (mut a, mut s, mut p) = (Vec::new(), Vec::new(), Vec::new());
        let (mut s_cpu, mut p_cpu, mut server_cpu) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..settings.rounds {
            a.extend(side(http, &fast.direct, fast, c, settings.round).await);
            let before = common::cpu_of(sqlite_pid, ticks);
            s.extend(side(http, &fast.via, fast, c, settings.round).await);
            s_cpu += common::cpu_of(sqlite_pid, ticks).saturating_sub(before);
            let (before, server_before) = (common::cpu_of(pg_pid, ticks), postgres_cpu(ticks));
            p.extend(side(http, &pg_via, fast, c, settings.round).await);
            p_cpu += common::cpu_of(pg_pid, ticks).saturating_sub(before);
            server_cpu += postgres_cpu(ticks).saturating_sub(server_before);
        }
        a.sort();
        s.sort();
        p.sort();
        let per_call = |cpu: Duration, n: usize| cpu.as_secs_f64() * 1e6 / n as f64;
        let rate = |v: &[Duration]| v.len() as f64;
        for (store, b, cpu, server) in [
            ("SQLite", &s, per_call(s_cpu, s.len()), None),
            (
                "PostgreSQL",
                &p,
                per_call(p_cpu, p.len()),
                Some(per_call(server_cpu, p.len())),
            ),
        ] {
            let added50 = pct(b, 0.5) - pct(&a, 0.5);
            println!(
                "| {store} | {c} | {:.3} / {:.3} ms | {added50:+.3} / {:+.3} ms | {:.2} | {cpu:.0} µs | {} |",
                pct(b, 0.5),
                pct(b, 0.99),
                pct(b, 0.99) - pct(&a, 0.99),
                rate(b) / rate(&a),
                server.map_or("—".to_owned(), |s| format!("{s:.0} µs"))
            );
        }
        if c == 1 {
            let ratio = rate(&p) / rate(&a);
            checks.push(format!(
                "PostgreSQL c=1: added p50 {:.3} ms, gateway CPU {:.0} µs per call, ratio to direct {ratio:.2} (recorded, no target)",
                pct(&p, 0.5) - pct(&a, 0.5),
                per_call(p_cpu, p.len())
            ));
        }
    }
}
