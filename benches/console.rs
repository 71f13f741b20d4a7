//! The console's own costs: how fast its state ingests events while drawing at its frame
//! cap, how long one frame takes to draw with a full ring, the memory a full ring of
//! 10,000 decisions holds, and the CPU of an open console with no traffic.
//!
//!     cargo bench --bench console
//!
//! Frames are drawn into ratatui's `TestBackend`, which does everything a real frame does
//! but write to the terminal. Idle CPU is the real `toolgate console` in a tmux pane,
//! connected to the release `toolgate gateway`, measured from `/proc/<pid>/stat` over
//! 10 s (tmux missing: skipped). Without `--bench` each part runs briefly, in under 10 s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};
use toolgate::console::app::{App, NetEvent};
use toolgate::console::ui::{self, Theme};

#[path = "common/mod.rs"]
mod common;

const RING: usize = 10_000;
/// The console's frame cap: at most one frame every 33 ms.
const FRAME: Duration = Duration::from_millis(33);

fn decision(seq: u64) -> Value {
    let outcome = ["allow", "allow", "allow", "hold", "deny"][(seq % 5) as usize];
    let tool = [
        "jira_get_issue",
        "confluence_update_page",
        "bitbucket_force_push",
    ][(seq % 3) as usize];
    json!({
        "seq": seq, "ts": "2026-11-26T10:00:00.000Z", "kind": "decision",
        "call_id": format!("01a219a0-7ef0-74d5-b669-{seq:012}"),
        "upstream": "atlassian", "tool": tool,
        "risk": "write", "identity": {"kind": "api_token", "name": "ci-bot", "groups": ["ci"]},
        "target": {"kind": "jira_issue", "id": format!("OPS-{}", seq % 97)}, "workflow": null,
        "outcome": outcome, "policy_ids": ["token-write-held"], "reason": "a write by an API token needs an operator's approval",
        "decision_us": 12, "args": {"issueKey": format!("OPS-{}", seq % 97), "body": "Build passed on main."}
    })
}

/// A decision as the network task hands it over: parsed.
fn event(seq: u64) -> NetEvent {
    NetEvent::Event(Box::new(serde_json::from_value(decision(seq)).unwrap()))
}

fn full_app() -> App {
    let mut app = App::new(RING, false);
    app.on_net(NetEvent::Connected {
        store_id: "bench".into(),
    });
    for seq in 1..=RING as u64 {
        app.on_net(event(seq));
    }
    app
}

fn draw(app: &App, terminal: &mut Terminal<TestBackend>, theme: &Theme) {
    terminal
        .draw(|f| ui::draw(f, app, theme, chrono::Utc::now()))
        .unwrap();
}

/// Feeds events as fast as the state takes them, drawing a frame whenever 33 ms have
/// passed, for `length`. Returns events per second and the frames drawn.
fn ingest(length: Duration, prepared: u64) -> (f64, usize) {
    let mut app = full_app();
    let theme = Theme::default();
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    // Prepared up front, as the network task hands over parsed frames.
    let events: Vec<NetEvent> = (0..prepared).map(|i| event(RING as u64 + 1 + i)).collect();
    let started = Instant::now();
    let mut last_frame = Instant::now();
    let mut fed = 0usize;
    let mut frames = 0;
    for e in events {
        app.on_net(e);
        fed += 1;
        if last_frame.elapsed() >= FRAME {
            draw(&app, &mut terminal, &theme);
            frames += 1;
            last_frame = Instant::now();
        }
        if started.elapsed() >= length {
            break;
        }
    }
    (fed as f64 / started.elapsed().as_secs_f64(), frames)
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// A tmux server of the bench's own, killed when dropped.
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The share of one core an open console uses over `length` with no traffic, or None
/// without tmux.
async fn idle_cpu(length: Duration) -> Option<f64> {
    const VIEWER: &str = "tg_bench-console-viewer";
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [[upstream]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/mcp\"\n\
         [[operator]]\nname = \"viv\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
        toolgate::gateway::identity::token_sha256(VIEWER)
    );
    let gw = common::gateway(&config).await;
    let config_home = tempfile::tempdir().unwrap();
    let tmux = Tmux(format!("toolgate-bench-{}", std::process::id()));
    let command = format!(
        "{} console --gateway {} --token {VIEWER} --bell off",
        env!("CARGO_BIN_EXE_toolgate"),
        gw.control
    );
    let env = format!("XDG_CONFIG_HOME={}", config_home.path().display());
    if tmux
        .run(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-e",
            &env,
            &command,
        ])
        .is_none()
    {
        eprintln!("console: tmux is not installed (run ./.ci/run); idle CPU skipped");
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmux
        .run(&["capture-pane", "-p"])
        .is_some_and(|screen| screen.contains("● connected"))
    {
        assert!(Instant::now() < deadline, "the console did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = tmux.run(&["display", "-p", "#{pane_pid}"]).unwrap();
    let pid: u32 = pid.trim().parse().unwrap();
    let ticks = common::clock_ticks();
    let (cpu, started) = (common::cpu_of(pid, ticks), Instant::now());
    tokio::time::sleep(length).await;
    let used = common::cpu_of(pid, ticks) - cpu;
    Some(used.as_secs_f64() / started.elapsed().as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let idle_for = if full {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(1)
    };
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(idle_cpu(idle_for));
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let theme = Theme::default();

    let before = rss_kib();
    let app = full_app();
    let ring_kib = rss_kib().saturating_sub(before);

    let mut frames = Vec::new();
    for (w, h) in [(80u16, 24u16), (200, 50)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        criterion.bench_function(&format!("frame {w}x{h}, full ring"), |b| {
            b.iter(|| draw(black_box(&app), &mut terminal, &theme))
        });
        let n = if full { 2000 } else { 20 };
        let mut times: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                draw(&app, &mut terminal, &theme);
                t.elapsed()
            })
            .collect();
        times.sort();
        frames.push((w, h, times[n / 2], times[n * 99 / 100]));
    }
    let (rate, drawn) = if full {
        ingest(Duration::from_secs(5), 400_000)
    } else {
        ingest(Duration::from_millis(300), 5_000)
    };

    println!("\nconsole, ring of {RING} decisions:");
    println!("| measure | figure | target | |");
    println!("|---|---:|---|---|");
    for (w, h, p50, p99) in frames {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| one frame at {w}x{h} (p50 / p99) | {:.3} / {:.3} ms | < 1 ms | {} |",
            ms(p50),
            ms(p99),
            if ms(p50) < 1.0 { "pass" } else { "MISS" }
        );
    }
    println!(
        "| events ingested per second, drawing at 30 fps ({drawn} frames) | {rate:.0} | ≥ 20,000 | {} |",
        if rate >= 20_000.0 { "pass" } else { "MISS" }
    );
    println!("| memory of a full ring (RSS growth) | {ring_kib} KiB | — | |");
    match idle {
        Some(share) => println!(
            "| idle CPU, console open with no traffic, over {idle_for:?} | {:.2}% of a core | < 1% | {} |",
            share * 100.0,
            if share < 0.01 { "pass" } else { "MISS" }
        ),
        None => println!("| idle CPU | skipped: no tmux | < 1% | |"),
    }
    criterion.final_summary();
}
