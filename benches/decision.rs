//! Decision cost: from a parsed `tools/call` to its decision (risk lookup, target,
//! Cedar, redaction of the stored arguments), as `Gateway::evaluate_call` does it on
//! every call. With the default policy and 10, 100 and 1,000 known tools, and with a
//! policy of 100 argument and identity rules on top.
//!
//!     cargo bench --bench decision
//!
//! Criterion measures the median; a second pass times 200,000 single decisions to give
//! p50 and p99. Without `--bench` (as `cargo test --all-targets` runs it), every case runs
//! once, in well under 10 s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use serde_json::{Map, Value, json};
use toolgate::api::IdentityKind;
use toolgate::gateway::Gateway;
use toolgate::gateway::identity::Identity;
use toolgate::gateway::policy::{CallFacts, DEFAULT_POLICY, PolicyEngine};

const UPSTREAM: &str = "bench";
const TARGET_MEDIAN_US: f64 = 10.0;

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

fn identity() -> Identity {
    Identity {
        kind: IdentityKind::ApiToken,
        name: "ci-bot".into(),
        groups: vec!["ci".into(), "g5".into()],
        issued: Some(chrono::Utc::now() - chrono::Duration::days(40)),
        expires: None,
        owner: None,
    }
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let who = identity();
    let args = args();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut rows = Vec::new();
    let mut group = criterion.benchmark_group("decision");
    for (tools, policy) in [
        (10, "default"),
        (100, "default"),
        (1000, "default"),
        (1000, "100 rules"),
    ] {
        let gw = gateway(tools, &runtime, dir.path());
        if policy != "default" {
            gw.replace_policy(PolicyEngine::compile(&hundred_rules()).unwrap());
        }
        // A tool from the middle that is a write (i % 3 == 1), which the default policy
        // holds for a token.
        let middle = tools / 2;
        let tool = format!("tool_{}", middle - middle % 3 + 1);
        let decide = || gw.evaluate_call(&who, UPSTREAM, &tool, &args, None);
        let first = decide();
        group.bench_function(BenchmarkId::new(policy, tools), |b| {
            b.iter(|| black_box(decide()))
        });
        // The Cedar part alone (request, entities, evaluation), to see where time goes.
        let engine = gw.policy();
        let risk = gw.catalog.risk(UPSTREAM, &tool);
        group.bench_function(
            BenchmarkId::new(format!("{policy}, Cedar only"), tools),
            |b| {
                b.iter(|| {
                    black_box(engine.decide(&CallFacts {
                        identity: &who,
                        upstream: UPSTREAM,
                        tool: &tool,
                        risk,
                        args: &args,
                        target: None,
                        workflow: None,
                        now: chrono::Utc::now(),
                    }))
                })
            },
        );
        let samples = if full { 200_000 } else { 1_000 };
        let mut times: Vec<Duration> = (0..samples)
            .map(|_| {
                let started = Instant::now();
                black_box(decide());
                started.elapsed()
            })
            .collect();
        times.sort();
        rows.push((
            tools,
            policy,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            first.outcome,
            first.risk,
        ));
    }
    group.finish();
    println!(
        "\ndecision cost, {} single decisions each:",
        if full { 200_000 } else { 1_000 }
    );
    println!(
        "| tools | policy | outcome | p50 | p99 | target: median < {TARGET_MEDIAN_US} µs at 1,000 tools |"
    );
    println!("|---:|---|---|---:|---:|---|");
    for (tools, policy, p50, p99, outcome, risk) in rows {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let verdict = if us(p50) < TARGET_MEDIAN_US {
            "pass"
        } else {
            "MISS"
        };
        println!(
            "| {tools} | {policy} | {} ({}) | {:.2} µs | {:.2} µs | {verdict} |",
            outcome.as_str(),
            risk.as_str(),
            us(p50),
            us(p99)
        );
    }
    criterion.final_summary();
}
