//! What the wire benchmarks share: the release `toolgate gateway` in its own process.
// Each bench binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running gateway, killed when dropped.
pub struct Gateway {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without `/mcp/{upstream}`.
    pub mcp: String,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control: String,
    _dir: tempfile::TempDir,
}

/// Starts `toolgate gateway` on `config` (its `data_dir` relative to a temporary dir) and
/// waits until it prints where it listens.
pub async fn gateway(config: &str) -> Gateway {
    gateway_of(env!("CARGO_BIN_EXE_toolgate"), config).await
}

/// As `gateway`, with another build of `toolgate` (a baseline to compare with).
pub async fn gateway_of(binary: &str, config: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    let mut child = Command::new(binary)
        .args(["gateway", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env("TOOLGATE_LOG", "toolgate=warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut mcp, mut control) = (String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.strip_prefix("toolgate gateway: MCP endpoint ") {
            mcp = rest.rsplit_once("/mcp/").unwrap().0.to_owned();
        }
        if let Some(rest) = line.strip_prefix("toolgate gateway: control API ") {
            control = rest.to_owned();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Gateway {
        child,
        mcp,
        control,
        _dir: dir,
    }
}

/// Stops a gateway as a service manager would (SIGTERM), waiting at most 10 s, then kills it.
pub async fn terminate(gateway: &mut Gateway) {
    if let Some(pid) = gateway.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), gateway.child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = gateway.child.kill().await;
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100)
}

/// A process's CPU time so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_of(pid: u32, ticks_per_second: u64) -> Duration {
    try_cpu_of(pid, ticks_per_second).unwrap_or_else(|| panic!("no CPU time for process {pid}"))
}

/// As `cpu_of`, or `None` for a process that is gone.
pub fn try_cpu_of(pid: u32, ticks_per_second: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// An MCP upstream on 127.0.0.1 that answers every call at once with `text`.
pub async fn answering_upstream(text: &'static str) -> u16 {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let answer = serde_json::json!({"jsonrpc": "2.0", "id": request["id"],
                "result": {"content": [{"type": "text", "text": text}], "isError": false}});
            ([("content-type", "application/json")], answer.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Resident memory of a process (`self` or a pid), in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends one `tools/call` as the agent `token` (no session: the 2026-07-28 era, or a
/// stateless upstream) and gives the whole answer body.
pub async fn call_tool(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: u64,
    tool: &str,
    arguments: serde_json::Value,
) -> String {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    http.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sends `echo` calls as the agent `token` at `rate` a second for `length`, open loop
/// (a slow answer does not delay the next call), and returns each call's latency in ms.
pub async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    rate: u64,
    length: std::time::Duration,
) -> Vec<f64> {
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < length {
        ticks.tick().await;
        i += 1;
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        calls.push(tokio::spawn(async move {
            let sent = std::time::Instant::now();
            let text = call_tool(&http, &url, &token, i, "echo", serde_json::json!({"n": i})).await;
            assert!(text.contains("\"ok\""), "{text}");
            sent.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// The p50 and p99 of latencies in ms (sorts them).
pub fn p50_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}
