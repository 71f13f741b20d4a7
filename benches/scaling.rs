//! How toolgate's costs grow: with pending holds (in-process through `Holds`, and as
//! held HTTP clients of the gateway binary) and with the number of policies.
//!
//!     cargo bench --bench scaling
//!
//! - Holds in-process: 1,000 and 10,000 holds created one after another (each waits for
//!   its commit, as the data plane does), then the costs that a pending hold adds to
//!   others: the look for an approved identical call that every held call makes, the
//!   listing the control API serves, an expiry sweep, and memory per hold.
//! - Holds over HTTP: 1,000 clients held at once on the release `toolgate gateway` (the
//!   bench raises its open-file limit, which the gateway inherits), then all approved
//!   through the control API, 16 at a time, until every client has its answer.
//! - Policies: Cedar's evaluation with 10 to 10,000 extra policies, scoped to other tools
//!   (sliced away) or unscoped (evaluated on every call).
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) every part runs small, in
//! well under 10 s. Everything binds 127.0.0.1; the gateway is killed on exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};
use toolgate::api::{DecisionEvent, IdentityKind, Outcome, Risk};
use toolgate::gateway::holds::{Approver, CallKey, HeldCall, Holds, NewHold, Retry};
use toolgate::gateway::identity::Identity;
use toolgate::gateway::policy::{CallFacts, DEFAULT_POLICY, Decision, PolicyEngine};
use toolgate::gateway::store::Store;

#[path = "common/mod.rs"]
mod common;

const AGENT: &str = "tg_bench-scaling-agent";
const APPROVER: &str = "tg_bench-scaling-approver";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let in_process: &[usize] = if full { &[1_000, 10_000] } else { &[100, 200] };
    runtime.block_on(async {
        for &n in in_process {
            holds_in_process(n).await;
        }
        holds_over_http(if full { 1_000 } else { 50 }).await;
    });
    policies(if full {
        &[10, 100, 1_000, 10_000]
    } else {
        &[10, 100]
    });
}

fn token() -> Arc<Identity> {
    Arc::new(Identity {
        kind: IdentityKind::ApiToken,
        name: "ci-bot".into(),
        groups: vec!["ci".into()],
        issued: Some(Utc::now()),
        expires: None,
        owner: None,
    })
}

fn page_args(i: usize) -> Map<String, Value> {
    json!({"page_id": format!("PAGE-{i}"), "body": "Release notes for the next version."})
        .as_object()
        .unwrap()
        .clone()
}

fn key(identity: &Identity, i: usize) -> CallKey {
    static MAC: std::sync::LazyLock<toolgate::gateway::keys::CallMac> =
        std::sync::LazyLock::new(|| {
            toolgate::gateway::keys::DeploymentKey::from_bytes([9; 32]).call_mac()
        });
    let args = serde_json::to_vec(&page_args(i)).unwrap();
    CallKey::new(
        &MAC,
        identity,
        "wiki",
        "write_page",
        &toolgate::gateway::exact::canonical(&args),
    )
}

fn held_decision(identity: &Identity, args: &Map<String, Value>) -> DecisionEvent {
    DecisionEvent {
        call_id: uuid::Uuid::now_v7().to_string(),
        upstream: "wiki".into(),
        tool: "write_page".into(),
        risk: Risk::Write,
        identity: identity.to_wire(),
        target: None,
        workflow: None,
        outcome: Outcome::Hold,
        policy_ids: vec!["token-write-held".into()],
        reason: "a write by an API token needs an operator's approval".into(),
        decision_us: 3,
        args: Value::Object(args.clone()),
        args_truncated: false,
        shadow: None,
        approved_as: None,
        approvals_required: 1,
        traceparent: None,
        grant: None,
    }
}

fn new_hold(identity: &Arc<Identity>, i: usize) -> NewHold {
    let args = page_args(i);
    let decision = held_decision(identity, &args);
    NewHold {
        key: key(identity, i),
        call: HeldCall {
            identity: identity.clone(),
            args: Some(args),
            decision,
        },
        size: 0,
        session_id: None,
        request_id: json!(i),
        ttl: chrono::Duration::seconds(3600),
    }
}

fn per(total: Duration, n: usize) -> String {
    let us = total.as_secs_f64() * 1e6 / n as f64;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

async fn holds_in_process(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Duration::from_secs(5))
        .await
        .unwrap();
    let holds = Holds::load(store).await.unwrap();
    let identity = token();
    let before = common::rss_kib("self");
    let mut waiting = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        waiting.push(holds.create(new_hold(&identity, i)).await.unwrap().verdict);
    }
    let create = started.elapsed();
    let grown = common::rss_kib("self").saturating_sub(before);

    // What every held call does first: look for an approved identical call (a miss).
    let lookups = 1_000;
    let started = Instant::now();
    for i in 0..lookups {
        let decision = held_decision(&identity, &page_args(n + i));
        let retry = holds
            .consume_identical(&key(&identity, n + i), Utc::now(), decision)
            .await
            .unwrap();
        assert!(matches!(retry, Retry::NotApproved(_)));
    }
    let lookup = started.elapsed();
    let started = Instant::now();
    let open = holds.open().await;
    let listing = started.elapsed();
    assert_eq!(open.len(), n);
    let started = Instant::now();
    assert_eq!(holds.expire_due(Utc::now()).await.unwrap(), 0);
    let sweep = started.elapsed();

    let approver = Approver {
        name: "ada".into(),
        principals: vec!["user:ada".into()],
        approves: None,
    };
    let still_held = |_: &HeldCall| Decision {
        outcome: Outcome::Hold,
        policy_ids: vec!["token-write-held".into()],
        reason: "still needs approval".into(),
        approvals: 1,
    };
    let started = Instant::now();
    for view in &open {
        holds
            .approve(&view.call_id, &approver, None, None, still_held)
            .await
            .unwrap();
    }
    let approve = started.elapsed();
    for rx in waiting {
        assert!(rx.await.is_ok(), "every waiting client hears its approval");
    }
    println!(
        "holds in-process, {n:>6}: create {} each ({:.0}/s), memory {:.1} KiB each; \
         with {n} pending: identical-call look {} each, listing {:.2} ms, expiry sweep {:.2} ms; \
         approve {} each",
        per(create, n),
        n as f64 / create.as_secs_f64(),
        grown as f64 / n as f64,
        per(lookup, lookups),
        listing.as_secs_f64() * 1e3,
        sweep.as_secs_f64() * 1e3,
        per(approve, n),
    );
}

/// Lets this process, and the gateway it starts, open as many files as allowed.
fn raise_open_files() -> u64 {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        limit.rlim_cur
    }
}

async fn holds_over_http(n: usize) {
    let files = raise_open_files();
    let port = common::answering_upstream("written").await;
    let sha = |t: &str| toolgate::gateway::identity::token_sha256(t);
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         hold_timeout_secs = 600\n\
         max_holds_per_identity = {n}\n\
         [[upstream]]\nname = \"wiki\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
         [[risk]]\nupstream = \"wiki\"\ntool = \"write_page\"\nrisk = \"write\"\n\
         [[identity]]\nname = \"ci-bot\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n\
         [[operator]]\nname = \"ada\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\n",
        sha(AGENT),
        sha(APPROVER)
    );
    let gw = common::gateway(&config).await;
    let pid = gw.child.id().unwrap().to_string();
    let url = format!("{}/mcp/wiki", gw.mcp);
    let http = toolgate::http::client_builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let idle_rss = common::rss_kib(&pid);
    let started = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let arguments = Value::Object(page_args(i));
                let text =
                    common::call_tool(&http, &url, AGENT, i as u64, "write_page", arguments).await;
                assert!(text.contains("written"), "{text}");
            })
        })
        .collect();
    let held = loop {
        let holds: Value = http
            .get(format!("{}/api/v1/holds", gw.control))
            .bearer_auth(APPROVER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let held = holds["holds"].as_array().cloned().unwrap_or_default();
        if held.len() == n {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {n} calls held",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_held = started.elapsed();
    let held_rss = common::rss_kib(&pid);
    let started = Instant::now();
    let ids: Vec<String> = held
        .iter()
        .map(|h| h["call_id"].as_str().unwrap().to_owned())
        .collect();
    let approvals = futures_util::future::join_all(ids.chunks(n.div_ceil(16)).map(|chunk| {
        let (http, control) = (http.clone(), gw.control.clone());
        let chunk = chunk.to_vec();
        async move {
            for id in chunk {
                let status = http
                    .post(format!("{control}/api/v1/holds/{id}/approve"))
                    .bearer_auth(APPROVER)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
            }
        }
    }));
    approvals.await;
    for c in clients {
        c.await.unwrap();
    }
    let answered = started.elapsed();
    println!(
        "holds over HTTP, {n:>5} clients (open-file limit {files}): all held after {:.2} s; \
         gateway RSS {:.1} MiB idle, {:.1} MiB with them held ({:.1} KiB each); \
         all approved and answered in {:.2} s ({} per approval)",
        all_held.as_secs_f64(),
        idle_rss as f64 / 1024.0,
        held_rss as f64 / 1024.0,
        held_rss.saturating_sub(idle_rss) as f64 / n as f64,
        answered.as_secs_f64(),
        per(answered, n),
    );
}

/// Cedar's evaluation of one call with `extra` policies beside the default ones.
fn policies(counts: &[usize]) {
    let identity = token();
    let args = page_args(7);
    let time = |engine: &PolicyEngine, extra: usize| {
        let facts = CallFacts {
            identity: &identity,
            upstream: "wiki",
            tool: "write_page",
            risk: Risk::Write,
            args: &args,
            target: None,
            workflow: None,
            now: Utc::now(),
        };
        engine.evaluate(&facts);
        let rounds = (200_000 / (extra + 10)).clamp(20, 2_000);
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(engine.evaluate(&facts));
        }
        per(started.elapsed(), rounds)
    };
    for &extra in counts {
        let mut scoped = DEFAULT_POLICY.to_owned();
        let mut unscoped = DEFAULT_POLICY.to_owned();
        for i in 0..extra {
            scoped.push_str(&format!(
                "@id(\"other-{i}\") forbid (principal, action, resource == Tool::\"wiki/tool_{i}\");\n"
            ));
            unscoped.push_str(&format!(
                "@id(\"page-{i}\") forbid (principal, action, resource) when {{ context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") == \"LOCKED-{i}\" }};\n"
            ));
        }
        let before = common::rss_kib("self");
        let scoped = PolicyEngine::compile(&scoped).unwrap();
        let unscoped = PolicyEngine::compile(&unscoped).unwrap();
        let grown = common::rss_kib("self").saturating_sub(before);
        println!(
            "policies, default + {extra:>5}: Cedar evaluation {} with the extra ones scoped to other tools, {} with them unscoped; \
             both engines hold {:.1} MiB",
            time(&scoped, extra),
            time(&unscoped, extra),
            grown as f64 / 1024.0
        );
    }
}
