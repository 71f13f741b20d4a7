//! What a replay costs: how long re-deciding 100,000 recorded decisions takes, and what
//! it adds to the data plane's latency while it runs.
//!
//! Starts the release `toolgate gateway` in its own process in front of a minimal MCP
//! upstream (in this process, answering at once), records 100,000 decisions through it
//! (16 calls at a time), then sends `tools/call` at a steady 200 per second, open loop, in
//! rounds that alternate between no replay and replays of the newest 100,000 decisions
//! back to back. Prints each replay's time and the rounds' p50 and p99.
//!
//!     cargo bench --bench replay
//!
//! Everything binds 127.0.0.1; the gateway is killed on exit. Without `--bench` (as
//! `cargo test --all-targets` runs it) it records 2,000 decisions and the rounds last
//! 300 ms, for a smoke run of a few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

const RATE: u64 = 200;
const CYCLES: usize = 3;
const AGENT: &str = "tg_bench-agent";
const ADMIN: &str = "tg_bench-admin";
/// A candidate that changes something: the agent's echo calls are held.
const CANDIDATE: &str = r#"@id("reads")
permit (principal, action == Action::"call_tool", resource) when { resource.risk == "read" };
@id("bench-held")
@outcome("hold")
permit (principal == Token::"bench", action == Action::"call_tool", resource)
when { context.args.hasTag("/n") && context.args.getTag("/n") like "*7" };
"#;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (decisions, round) = if bench {
        (100_000, Duration::from_secs(5))
    } else {
        (2_000, Duration::from_millis(300))
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(decisions, round));
}

async fn run(decisions: u64, length: Duration) {
    let port = common::answering_upstream("ok").await;
    let sha = |t: &str| toolgate::gateway::identity::token_sha256(t);
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [[upstream]]\nname = \"up\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
         [[risk]]\nupstream = \"up\"\ntool = \"echo\"\nrisk = \"read\"\n\
         [[identity]]\nname = \"bench\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n\
         [[operator]]\nname = \"ada\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        sha(AGENT),
        sha(ADMIN)
    );
    let gw = common::gateway(&config).await;
    let mcp = format!("{}/mcp/up", gw.mcp);
    let http = toolgate::http::client_builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();

    let filling = Instant::now();
    record(&http, &mcp, decisions).await;
    println!(
        "recorded {decisions} decisions in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let client = toolgate::client::ControlClient::new(&gw.control, ADMIN).unwrap();
    let request = toolgate::api::ReplayRequest {
        policy: Some(CANDIDATE.into()),
        window: Some(toolgate::api::ReplayWindow::Last(decisions)),
        ..Default::default()
    };
    // Warm up connections and caches.
    common::open_loop(&http, &mcp, AGENT, RATE, length.min(Duration::from_secs(2))).await;

    let mut quiet = Vec::new();
    let mut busy = Vec::new();
    let mut took = Vec::new();
    for _ in 0..CYCLES {
        quiet.extend(common::open_loop(&http, &mcp, AGENT, RATE, length).await);
        let running = Arc::new(AtomicBool::new(true));
        let replays = tokio::spawn({
            let (client, request, running) = (client.clone(), request.clone(), running.clone());
            async move {
                let mut took = Vec::new();
                while running.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let report = client.replay(&request).await.expect("a replay");
                    assert_eq!(report.decisions, decisions, "the whole window");
                    assert!(
                        report.transitions.get("allow→hold").copied().unwrap_or(0) > 0,
                        "{:?}",
                        report.transitions
                    );
                    took.push(started.elapsed().as_secs_f64());
                }
                took
            }
        });
        busy.extend(common::open_loop(&http, &mcp, AGENT, RATE, length).await);
        running.store(false, Ordering::Relaxed);
        took.extend(replays.await.unwrap());
    }
    let (q50, q99) = common::p50_p99(&mut quiet);
    let (b50, b99) = common::p50_p99(&mut busy);
    took.sort_by(|a, b| a.total_cmp(b));
    println!(
        "replays of {decisions} decisions: {} done, each {:.2}–{:.2} s (median {:.2} s, {:.0} decisions/s)",
        took.len(),
        took[0],
        took[took.len() - 1],
        took[took.len() / 2],
        decisions as f64 / took[took.len() / 2]
    );
    println!("calls at {RATE}/s, {CYCLES} rounds of {length:?} each, alternating:");
    println!(
        "  no replay:      {} calls  p50 {q50:.3} ms  p99 {q99:.3} ms",
        quiet.len()
    );
    println!(
        "  while replaying: {} calls  p50 {b50:.3} ms  p99 {b99:.3} ms  (added {:+.3} / {:+.3} ms)",
        busy.len(),
        b50 - q50,
        b99 - q99
    );
}

/// Records `n` allowed calls, 16 at a time, as fast as the gateway takes them.
async fn record(http: &reqwest::Client, url: &str, n: u64) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let text = common::call_tool(
                        &http,
                        &url,
                        AGENT,
                        i,
                        "echo",
                        serde_json::json!({"n": i}),
                    )
                    .await;
                    assert!(text.contains("\"ok\""), "{text}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}
