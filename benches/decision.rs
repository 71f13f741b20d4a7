//! Decision cost: from a parsed `tools/call` to its decision (risk lookup, target,
//! policy, redaction of the stored arguments), as `Gateway::evaluate_call` does it on
//! every call. With the default policy and 10, 100 and 1,000 known tools, and with a
//! policy of 100 argument and identity rules on top.
//!
//!     cargo bench --bench decision
//!
//! The calls are a stream in which 20 callers (tokens and OAuth users) each call every
//! tool, after one pass through it, as a gateway that has been running sees them: the
//! engine remembers decisions whose policies cannot read the call's context. A second
//! row per case times Cedar's evaluation alone, which a first call, or any call whose
//! policies read its arguments, target or workflow, pays.
//!
//! Criterion measures the median; a second pass times 200,000 single decisions to give
//! p50 and p99. Without `--bench` (as `cargo test --all-targets` runs it), a few hundred
//! of each run, in well under 10 s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use serde_json::{Map, Value, json};
use toolgate::api::IdentityKind;
use toolgate::gateway::Gateway;
use toolgate::gateway::identity::Identity;
use toolgate::gateway::policy::{CallFacts, DEFAULT_POLICY, PolicyEngine};

#[path = "common/mod.rs"]
mod common;

const UPSTREAM: &str = "bench";
const TARGET_MEDIAN_US: f64 = 10.0;
/// How many identities call in the stream: every tool is called by each of them.
const CALLERS: usize = 20;

/// A gateway whose catalog knows `tools` tools, a third each read, write, destructive.
fn gateway(tools: usize, runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> Arc<Gateway> {
    let path = dir.join(format!("gateway-{tools}.toml"));
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\n\
             data_dir = \"data-{tools}\"\n\
             [[upstream]]\nname = \"{UPSTREAM}\"\nurl = \"http://127.0.0.1:9/mcp\"\ntrust_annotations = true\n\
             [[resource]]\ntool = \"*\"\npointer = \"/projectKey\"\nkind = \"jira_project\"\n\
             [redact]\nkeys = [\"password\", \"token\"]\n"
        ),
    )
    .unwrap();
    let config = toolgate::config::Config::load(&path).unwrap();
    runtime.block_on(async {
        let gw = Gateway::new(config).await.unwrap();
        let listed: Vec<Value> = (0..tools)
            .map(|i| {
                let annotations = match i % 3 {
                    0 => json!({"readOnlyHint": true}),
                    1 => json!({"readOnlyHint": false, "destructiveHint": false}),
                    _ => json!({"readOnlyHint": false, "destructiveHint": true}),
                };
                json!({"name": format!("tool_{i}"), "inputSchema": {"type": "object"}, "annotations": annotations})
            })
            .collect();
        let upstream = gw.config.upstreams[0].clone();
        gw.catalog.learn(&upstream, &listed).await.unwrap();
        Arc::new(gw)
    })
}

/// 100 rules over arguments and identities, a quarter of them scoped to one tool, on top
/// of the default matrix.
fn hundred_rules() -> String {
    let mut text = DEFAULT_POLICY.to_owned();
    for i in 0..100 {
        let rule = match i % 4 {
            0 => format!(
                "@id(\"no-project-{i}\")\nforbid (principal, action == Action::\"call_tool\", resource)\n\
                 when {{ context.args.hasTag(\"/projectKey\") && context.args.getTag(\"/projectKey\") == \"P{i}\" }};\n"
            ),
            1 => format!(
                "@id(\"group-{i}-held\")\n@outcome(\"hold\")\npermit (principal in Group::\"g{i}\", action == Action::\"call_tool\", resource)\n\
                 when {{ resource.risk == \"write\" }};\n"
            ),
            2 => format!(
                "@id(\"tool-{i}-ticket\")\nforbid (principal, action == Action::\"call_tool\", resource == Tool::\"{UPSTREAM}/tool_{i}\")\n\
                 unless {{ context has workflow && context.workflow has ticket }};\n"
            ),
            _ => format!(
                "@id(\"old-token-{i}\")\nforbid (principal is Token, action == Action::\"call_tool\", resource)\n\
                 when {{ principal.age_days > {} && context.args.hasTag(\"/summary\") && context.args.getTag(\"/summary\") like \"*secret-{i}*\" }};\n",
                1000 + i
            ),
        };
        text.push_str(&rule);
    }
    text
}

/// The callers of the stream: tokens of several ages and groups, and OAuth users.
fn callers() -> Vec<Identity> {
    (0..CALLERS)
        .map(|i| {
            let token = i % 2 == 0;
            Identity {
                kind: if token {
                    IdentityKind::ApiToken
                } else {
                    IdentityKind::Oauth
                },
                name: format!("caller-{i}"),
                groups: vec!["ci".into(), format!("g{}", i % 7)],
                issued: token.then(|| chrono::Utc::now() - chrono::Duration::days(40 + i as i64)),
                expires: None,
                owner: None,
            }
        })
        .collect()
}

fn args() -> Map<String, Value> {
    json!({"projectKey": "P7", "summary": "Rotate the staging credentials", "password": "hunter2",
           "fields": {"labels": ["ops", "security"], "priority": "High"}})
    .as_object()
    .unwrap()
    .clone()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// What one row of the table measured.
struct Row {
    tools: usize,
    policy: &'static str,
    path: &'static str,
    p50: Duration,
    p99: Duration,
}

/// Times `samples` single runs of `decide` and gives p50 and p99.
fn percentiles(samples: usize, mut decide: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            decide();
            started.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// What the audit chain adds to each stored event: one SHA-256 over the previous hash
/// and the event's JSON, for a decision of the sizes the log holds.
fn chain_cost(samples: usize) {
    use toolgate::gateway::store::{GENESIS_HASH, chain_hash};
    const TARGET_US: f64 = 10.0;
    println!("\naudit chain, {samples} events each: the hash the writer adds to every event");
    println!("| event JSON | p50 | p99 | target: < {TARGET_US} µs per event |");
    println!("|---:|---:|---:|---|");
    // A typical decision (a few hundred bytes), and one at the 16 KiB the stored
    // arguments are cut at.
    for size in [600usize, 16 * 1024] {
        let body = format!(
            r#"{{"seq":123456,"ts":"2026-11-27T10:00:00.000Z","kind":"decision","args":"{}"}}"#,
            "x".repeat(size.saturating_sub(80))
        );
        let mut prev = GENESIS_HASH.to_owned();
        let (p50, p99) = percentiles(samples, || {
            prev = chain_hash(&prev, black_box(&body));
        });
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {} B | {:.2} µs | {:.2} µs | {} |",
            body.len(),
            us(p50),
            us(p99),
            if us(p50) < TARGET_US { "pass" } else { "MISS" }
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let callers = callers();
    let args = args();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let samples = if full { 200_000 } else { 300 };
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    let mut group = criterion.benchmark_group("decision");
    for (tools, policy) in [
        (10, "default"),
        (100, "default"),
        (1000, "default"),
        (1000, "100 rules"),
    ] {
        let before = common::rss_kib("self");
        let gw = gateway(tools, &runtime, dir.path());
        memory.push((tools, common::rss_kib("self").saturating_sub(before)));
        if policy != "default" {
            gw.replace_policy(
                PolicyEngine::compile(&hundred_rules()).unwrap(),
                gw.policy_version() + 1,
            );
        }
        // The stream: every caller calls every tool, in an order that moves on to
        // another tool and caller each time.
        let calls: Vec<(&Identity, String)> = (0..tools * CALLERS)
            .map(|i| {
                (
                    &callers[i % CALLERS],
                    format!("tool_{}", (i * 7919) % tools),
                )
            })
            .collect();
        let mut next = 0;
        let mut decide = || {
            let (who, tool) = &calls[next % calls.len()];
            next += 1;
            black_box(gw.evaluate_call(who, UPSTREAM, tool, &args, None));
        };
        // Once through the stream first, as a running gateway would have been (the
        // smoke run only starts it).
        let warm = if full { calls.len() } else { samples };
        (0..warm).for_each(|_| decide());
        group.bench_function(BenchmarkId::new(policy, tools), |b| b.iter(&mut decide));
        let (p50, p99) = percentiles(samples, &mut decide);
        rows.push(Row {
            tools,
            policy,
            path: "evaluate_call, the stream",
            p50,
            p99,
        });
        // What Cedar costs when it runs: a first call, or a policy that reads the
        // call's arguments, target or workflow.
        let engine = gw.policy();
        let mut next = 0;
        let mut evaluate = || {
            let (who, tool) = &calls[next % calls.len()];
            next += 1;
            black_box(engine.evaluate(&CallFacts {
                identity: who,
                upstream: UPSTREAM,
                tool,
                risk: gw.catalog.risk(UPSTREAM, tool),
                args: &args,
                target: None,
                workflow: None,
                now: chrono::Utc::now(),
            }));
        };
        group.bench_function(
            BenchmarkId::new(format!("{policy}, Cedar evaluation"), tools),
            |b| b.iter(&mut evaluate),
        );
        let (p50, p99) = percentiles(samples, &mut evaluate);
        rows.push(Row {
            tools,
            policy,
            path: "Cedar evaluation alone",
            p50,
            p99,
        });
    }
    group.finish();
    println!("\ndecision cost, {samples} single decisions each, {CALLERS} callers x every tool:");
    println!(
        "| tools | policy | what | p50 | p99 | target: median < {TARGET_MEDIAN_US} µs at 1,000 tools |"
    );
    println!("|---:|---|---|---:|---:|---|");
    for row in rows {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let verdict = match (row.path, us(row.p50) < TARGET_MEDIAN_US) {
            ("Cedar evaluation alone", _) => "",
            (_, true) => "pass",
            (_, false) => "MISS",
        };
        println!(
            "| {} | {} | {} | {:.2} µs | {:.2} µs | {verdict} |",
            row.tools,
            row.policy,
            row.path,
            us(row.p50),
            us(row.p99)
        );
    }
    for (tools, kib) in memory {
        println!("memory: a gateway with {tools} tools learned grew this process by {kib} KiB");
    }
    chain_cost(samples);
    criterion.final_summary();
}
