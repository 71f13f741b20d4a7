//! What event subscribers cost the data plane, at 200 calls a second: 20 of them, and
//! 100 for scale.
//!
//! Starts the release `toolgate gateway` in its own process in front of a minimal MCP
//! upstream (in this process, answering at once), then sends `tools/call` at a steady
//! 200 per second, open loop, in rounds that cycle through 0, 20 and 100 WebSocket
//! subscribers reading every event. Prints p50 and p99 per subscriber count.
//!
//!     cargo bench --bench subscribers
//!
//! Everything binds 127.0.0.1; the gateway is killed on exit. Without `--bench` (as
//! `cargo test --all-targets` runs it) the rounds last 300 ms, for a smoke run of a few
//! seconds.

use std::time::Duration;

use futures_util::StreamExt;

#[path = "common/mod.rs"]
mod common;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const RATE: u64 = 200;
/// Subscriber counts, one round each per cycle.
const SUBSCRIBERS: [usize; 3] = [0, 20, 100];
const CYCLES: usize = 2;
const AGENT: &str = "tg_bench-agent";
const VIEWER: &str = "tg_bench-viewer";

fn main() {
    let round = if std::env::args().any(|a| a == "--bench") {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(300)
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(round));
}

async fn run(length: Duration) {
    let port = common::answering_upstream("ok").await;
    let sha = |t: &str| toolgate::gateway::identity::token_sha256(t);
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [[upstream]]\nname = \"up\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
         [[risk]]\nupstream = \"up\"\ntool = \"echo\"\nrisk = \"read\"\n\
         [[identity]]\nname = \"bench\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n\
         [[operator]]\nname = \"viv\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
        sha(AGENT),
        sha(VIEWER)
    );
    let gw = common::gateway(&config).await;
    let mcp = format!("{}/mcp/up", gw.mcp);
    let control = gw.control.trim_start_matches("http://").to_owned();
    let http = toolgate::http::client_builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    // Warm up connections and caches.
    common::open_loop(&http, &mcp, AGENT, RATE, length.min(Duration::from_secs(2))).await;

    let pid = gw.child.id().unwrap().to_string();
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); SUBSCRIBERS.len()];
    let mut memory = vec![0u64; SUBSCRIBERS.len()];
    for _ in 0..CYCLES {
        for ((count, samples), rss) in SUBSCRIBERS.iter().zip(&mut latencies).zip(&mut memory) {
            let subscribers = subscribe(&control, *count).await;
            samples.extend(common::open_loop(&http, &mcp, AGENT, RATE, length).await);
            *rss = (*rss).max(common::rss_kib(&pid));
            for s in subscribers {
                s.abort();
            }
        }
    }
    println!("calls at {RATE}/s, {CYCLES} rounds of {length:?} per subscriber count, in turn");
    let (base50, base99) = common::p50_p99(&mut latencies[0]);
    for ((count, samples), rss) in SUBSCRIBERS.iter().zip(&mut latencies).zip(memory) {
        let (p50, p99) = common::p50_p99(samples);
        println!(
            "{count:>3} subscribers: {} calls  p50 {p50:.3} ms  p99 {p99:.3} ms  (added {:+.3} / {:+.3} ms)  gateway RSS {:.1} MiB",
            samples.len(),
            p50 - base50,
            p99 - base99,
            rss as f64 / 1024.0
        );
    }
}

async fn subscribe(control: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let mut request = format!("ws://{control}/api/v1/events")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        tasks.push(tokio::spawn(
            async move { while ws.next().await.is_some() {} },
        ));
    }
    tasks
}
