//! Holds with real peers: a risky call waits for a person, and approvals cannot be
//! stretched to run a call twice, another call, or a call whose client went away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::decisions::{answer_of, is_held, result_text};
use crate::support::*;

pub(crate) const ALICE: &str = "tg_test-operator-alice";
pub(crate) const BOB: &str = "tg_test-operator-bob";
pub(crate) const VIEWER: &str = "tg_test-operator-viewer";
pub(crate) const CAROL: &str = "tg_test-operator-carol";
pub(crate) const DAVE: &str = "tg_test-operator-dave";
pub(crate) const ERIN: &str = "tg_test-operator-erin";
pub(crate) const OTHER_AGENT: &str = "tg_test-agent-two";

/// Operators (alice owns the agent token ci-bot) and a second agent token.
pub(crate) fn operators() -> String {
    format!(
        r#"
[[identity]]
name = "ci-bot-two"
kind = "api_token"
token_sha256 = "{}"
issued = "2026-01-01T00:00:00Z"

[[operator]]
name = "alice"
role = "approver"
token_sha256 = "{}"

[[operator]]
name = "bob"
role = "admin"
token_sha256 = "{}"
principals = ["oauth:bob@corp.example"]

[[operator]]
name = "viv"
role = "viewer"
token_sha256 = "{}"

[[operator]]
name = "carol"
role = "approver"
token_sha256 = "{}"

[[operator]]
name = "dave"
role = "approver"
token_sha256 = "{}"

[[operator]]
name = "erin"
role = "approver"
token_sha256 = "{}"
approves = ["py/read_*", "jira/*"]
"#,
        sha256_hex(OTHER_AGENT),
        sha256_hex(ALICE),
        sha256_hex(BOB),
        sha256_hex(VIEWER),
        sha256_hex(CAROL),
        sha256_hex(DAVE),
        sha256_hex(ERIN)
    )
}

/// The test identities' ci-bot token belongs to alice.
pub(crate) fn owned_identities() -> String {
    test_identities().replace("groups = [\"ci\"]", "groups = [\"ci\"]\nowner = \"alice\"")
}

/// As `setup`, with `policy` as the `[policy] file`.
pub(crate) async fn setup_with_policy(
    hold_timeout_secs: u64,
    policy: &str,
) -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let body = format!(
        "{}{}\n[policy]\nfile = \"policy.cedar\"\n",
        upstream
            .config(&format!(
                "trust_annotations = true\nhold_timeout_secs = {hold_timeout_secs}"
            ))
            .replace(&test_identities(), &owned_identities()),
        operators()
    );
    let gw = start_gateway_with_files(&body, &[("policy.cedar", policy)]).await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

/// A gateway in front of the Python upstream; `gateway_keys` go into `[gateway]`.
async fn setup(gateway_keys: &str, hold_timeout_secs: u64) -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let body = format!(
        "{gateway_keys}\n{}{}",
        upstream
            .config(&format!(
                "trust_annotations = true\nhold_timeout_secs = {hold_timeout_secs}"
            ))
            .replace(&test_identities(), &owned_identities()),
        operators()
    );
    let gw = start_gateway(&body).await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

pub(crate) async fn held_call(
    gw: &GatewayProc,
    token: &str,
    page: &str,
    body: &str,
) -> reqwest::Response {
    let call = modern_call(
        7,
        "write_page",
        json!({"page_id": page, "body": body}),
        json!({"progressToken": "w1"}),
    );
    let resp = modern_request(&http(), &gw.url("py"), "write_page", call.to_string())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

pub(crate) async fn answer(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    answer_of(&text).unwrap_or_else(|| panic!("no answer in {text}"))
}

pub(crate) async fn open_holds(gw: &GatewayProc) -> Vec<Value> {
    let resp = http()
        .get(gw.control_url("/api/v1/holds"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["holds"].as_array().unwrap().clone()
}

pub(crate) async fn wait_for_hold(gw: &GatewayProc, phase: &str) -> String {
    eventually(&format!("a {phase} hold"), || async {
        open_holds(gw)
            .await
            .into_iter()
            .find(|h| h["phase"] == phase)
            .map(|h| h["call_id"].as_str().unwrap().to_owned())
    })
    .await
}

pub(crate) async fn resolve(
    gw: &GatewayProc,
    token: &str,
    call_id: &str,
    verb: &str,
    reason: Option<&str>,
) -> (u16, Value) {
    let body = reason
        .map(|r| json!({"reason": r}).to_string())
        .unwrap_or_default();
    let resp = http()
        .post(gw.control_url(&format!("/api/v1/holds/{call_id}/{verb}")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

pub(crate) fn runs_of(upstream: &PyUpstream, marker: &str) -> usize {
    upstream
        .posts()
        .iter()
        .filter(|p| p.body.contains("tools/call") && p.body.contains(marker))
        .count()
}

#[tokio::test]
async fn a_token_write_approved_within_the_wait_gets_the_real_result_on_its_stream() {
    let (upstream, gw) = setup("", 30).await;
    let client = spawn_write_page(
        &gw,
        AGENT_TOKEN,
        "MARK-WAIT",
        "hello",
        json!({"progressToken": "w7"}),
    );
    let call_id = wait_for_hold(&gw, "waiting").await;
    assert_eq!(
        runs_of(&upstream, "MARK-WAIT"),
        0,
        "nothing runs while held"
    );

    let (status, body) = resolve(&gw, VIEWER, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden_role"))
    );
    let (status, body) = resolve(&gw, ALICE, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("self_approval")),
        "alice owns the token"
    );
    // Past one keep-alive interval, so the stream must have shown it is alive.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", Some("ticket CHG-9")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resolution"], "approved");

    let text = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    let answer = answer_of(&text).unwrap();
    assert_eq!(result_text(&answer), "wrote MARK-WAIT (5 bytes)");
    assert_eq!(answer["result"]["isError"], false);
    let keep_alive = text.find(": keep-alive").expect("a keep-alive comment");
    let progress = text
        .find(r#""method":"notifications/progress""#)
        .expect("a progress heartbeat");
    let result = text.find("wrote MARK-WAIT").unwrap();
    assert!(keep_alive < result && progress < result, "{text}");
    assert!(text.contains(r#""progressToken":"w7""#), "{text}");
    assert_eq!(runs_of(&upstream, "MARK-WAIT"), 1);
    let (status, body) = resolve(&gw, BOB, &call_id, "deny", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_resolved"))
    );
    assert_eq!(body["hold"]["resolution"], "consumed");
}

#[tokio::test]
async fn an_approval_after_the_wait_serves_exactly_one_identical_retry() {
    let (upstream, gw) = setup("", 1).await;
    let first = answer(held_call(&gw, AGENT_TOKEN, "MARK-RETRY", "v1").await).await;
    // A 2026-07-28 client that does not send the state back, but makes the call again.
    assert!(is_held(&first), "{first}");
    let call_id = wait_for_hold(&gw, "pending").await;
    // Approved two minutes after the client stopped waiting, as on-call at 3 a.m. might.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (status, _) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        runs_of(&upstream, "MARK-RETRY"),
        0,
        "an approval alone runs nothing"
    );

    // Another identity, or one changed argument: not the approved call.
    let other = answer(held_call(&gw, OTHER_AGENT, "MARK-RETRY", "v1").await).await;
    assert!(is_held(&other), "{other}");
    let changed = answer(held_call(&gw, AGENT_TOKEN, "MARK-RETRY", "v2").await).await;
    assert!(is_held(&changed), "{changed}");
    assert_eq!(runs_of(&upstream, "MARK-RETRY"), 0);

    let retry = answer(held_call(&gw, AGENT_TOKEN, "MARK-RETRY", "v1").await).await;
    assert_eq!(result_text(&retry), "wrote MARK-RETRY (2 bytes)");
    assert_eq!(runs_of(&upstream, "MARK-RETRY"), 1);
    let again = answer(held_call(&gw, AGENT_TOKEN, "MARK-RETRY", "v1").await).await;
    assert!(is_held(&again), "{again}");
    assert_eq!(runs_of(&upstream, "MARK-RETRY"), 1, "the approval ran once");
}

#[tokio::test]
async fn denial_and_expiry_come_back_as_denies() {
    let (upstream, gw) = setup("", 30).await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "MARK-DENY", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    let (status, _) = resolve(&gw, BOB, &call_id, "deny", Some("not during the freeze")).await;
    assert_eq!(status, 200);
    let text = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    let denied = answer_of(&text).unwrap();
    assert_eq!(
        result_text(&denied),
        format!("Denied by toolgate: bob denied the held call {call_id}: not during the freeze")
    );
    assert_eq!(denied["result"]["isError"], true);
    assert_eq!(runs_of(&upstream, "MARK-DENY"), 0);

    // Approval time that ends with the wait: the client hears the expiry.
    let (upstream, gw) = setup("approval_ttl_secs = 1", 1).await;
    let expired = answer(held_call(&gw, AGENT_TOKEN, "MARK-EXPIRE", "x").await).await;
    let text = result_text(&expired);
    assert!(
        text.starts_with("Denied by toolgate: the held call ")
            && text.ends_with(" expired without approval"),
        "{text}"
    );
    let call_id = text.split_whitespace().nth(6).unwrap();
    let (status, body) = resolve(&gw, BOB, call_id, "approve", None).await;
    assert_eq!(
        (status, body["hold"]["resolution"].as_str()),
        (409, Some("expired")),
        "{body}"
    );
    assert_eq!(runs_of(&upstream, "MARK-EXPIRE"), 0);
}

#[tokio::test]
async fn a_client_that_goes_away_while_held_never_has_its_call_run() {
    let (upstream, gw) = setup("", 30).await;
    let resp = held_call(&gw, AGENT_TOKEN, "MARK-GONE", "x").await;
    let call_id = wait_for_hold(&gw, "waiting").await;
    drop(resp);
    wait_for_hold(&gw, "pending").await;
    let (status, _) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs_of(&upstream, "MARK-GONE"),
        0,
        "a call whose client left ran on approval"
    );
    // The approval waits for the identical retry.
    let retry = answer(held_call(&gw, AGENT_TOKEN, "MARK-GONE", "x").await).await;
    assert_eq!(result_text(&retry), "wrote MARK-GONE (1 bytes)");
    assert_eq!(runs_of(&upstream, "MARK-GONE"), 1);
}

#[tokio::test]
async fn webhooks_hear_every_new_hold_and_a_dead_one_slows_nothing() {
    // A receiver that records, and one that accepts connections and never answers.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |axum::Json(body): axum::Json<Value>| async move {
                received.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let live_addr = serve_local(app).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = dead.accept().await {
            held.push(socket);
        }
    });

    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "{}\n[[notify]]\nurl = \"http://{dead_addr}/hook\"\n[[notify]]\nurl = \"http://{live_addr}/hook\"\n",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 1")
    ))
    .await;
    prime_catalog(&gw).await;

    for i in 0..3 {
        let started = Instant::now();
        let held =
            answer(held_call(&gw, AGENT_TOKEN, &format!("MARK-HOOK-{i}"), "secret body").await)
                .await;
        assert!(is_held(&held));
        // The wait is 1 s; a webhook that never answers (5 s per attempt) adds nothing.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "held call {i} took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let read =
            crate::decisions::call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"}))
                .await;
        assert_eq!(result_text(&read), "no page x");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a read took {:?}",
            started.elapsed()
        );
    }
    let bodies = eventually("three hold notifications", || async {
        let got = received.lock().unwrap().clone();
        (got.len() == 3).then_some(got)
    })
    .await;
    let holds = query_rows(
        &gw.db_path(),
        "SELECT call_id FROM holds ORDER BY created_at",
    )
    .await;
    for (body, row) in bodies.iter().zip(&holds) {
        assert_eq!(body["call_id"].as_str(), row[0].as_deref());
        assert_eq!(
            body["identity"],
            json!({"kind": "api_token", "name": "ci-bot", "groups": ["ci"]})
        );
        assert_eq!(
            (body["tool"].as_str(), body["risk"].as_str()),
            (Some("write_page"), Some("write"))
        );
        assert_eq!(body["target"]["kind"], "page");
        assert!(
            body["expires_at"]
                .as_str()
                .is_some_and(|e| e.ends_with('Z'))
        );
        assert!(
            body.get("args").is_none() && !body.to_string().contains("secret body"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_cancelled_held_call_is_resolved_and_later_resolvers_conflict() {
    let (upstream, gw) = setup("", 30).await;
    let resp = held_call(&gw, AGENT_TOKEN, "MARK-CANCEL", "x").await;
    let call_id = wait_for_hold(&gw, "waiting").await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 7, "reason": "user pressed stop"}});
    let ack = http()
        .post(gw.url("py"))
        .bearer_auth(AGENT_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(cancel.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 202);
    // The gateway closes the held stream itself.
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("the stream closes");
    assert!(
        answer_of(&rest.unwrap()).is_none(),
        "a cancelled call gets no answer"
    );
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["hold"]["resolution"].as_str()),
        (409, Some("cancelled")),
        "{body}"
    );
    assert_eq!(body["hold"]["resolved_by"], "client");
    assert_eq!(runs_of(&upstream, "MARK-CANCEL"), 0);
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("notifications/cancelled")),
        "a cancellation for a call the upstream never saw went upstream"
    );
}

#[tokio::test]
async fn sigterm_with_a_hold_open_denies_the_waiting_client_and_exits_cleanly_within_5_s() {
    let (_upstream, mut gw) = setup("", 60).await;
    let held = tokio::spawn({
        let url = gw.url("py");
        async move {
            let call = modern_call(
                7,
                "write_page",
                json!({"page_id": "p", "body": "b"}),
                json!({}),
            );
            let resp = modern_request(&http(), &url, "write_page", call.to_string())
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .unwrap();
            resp.text().await.unwrap()
        }
    });
    let call_id = wait_for_hold(&gw, "waiting").await;
    // A live event subscriber, which must not keep the gateway up either.
    let mut events = http()
        .get(gw.control_url("/api/v1/events"))
        .header("accept", "text/event-stream")
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(events.chunk().await.unwrap().is_some(), "the hello frame");

    let (status, took) = gw.proc.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let text = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held client is answered")
        .unwrap();
    let answer = answer_of(&text).unwrap_or_else(|| panic!("no answer in {text}"));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let said = result_text(&answer);
    assert!(
        said.starts_with(&format!(
            "Denied by toolgate: the gateway is shutting down before {call_id} was decided"
        )),
        "{said}"
    );
    let mut rest = String::new();
    while let Ok(Some(chunk)) = events.chunk().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("\"kind\":\"shutdown\""), "{rest}");
}

#[tokio::test]
async fn progress_keeps_increasing_through_a_hold_longer_than_a_keep_alive() {
    let seed = "[[risk]]\nupstream = \"py\"\ntool = \"count_slowly\"\nrisk = \"write\"\n";
    let (_upstream, gw) = setup(seed, 30).await;
    let call = modern_call(
        5,
        "count_slowly",
        json!({"steps": 4}),
        json!({"progressToken": "c5"}),
    );
    let client = {
        let request = modern_request(&http(), &gw.url("py"), "count_slowly", call.to_string())
            .bearer_auth(AGENT_TOKEN);
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    };
    let call_id = wait_for_hold(&gw, "waiting").await;
    // Past one keep-alive: the gateway's own progress (1) goes out before the upstream's.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let text = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    let progress: Vec<(f64, Option<f64>)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            assert_eq!(m["params"]["progressToken"], "c5");
            (
                m["params"]["progress"].as_f64().unwrap(),
                m["params"]["total"].as_f64(),
            )
        })
        .collect();
    assert!(progress.len() >= 5, "the wait's and the upstream's: {text}");
    assert!(
        progress.windows(2).all(|w| w[1].0 > w[0].0),
        "progress must increase: {progress:?}"
    );
    assert!(
        progress
            .iter()
            .all(|(p, total)| total.is_none_or(|t| *p <= t))
    );
    assert_eq!(result_text(&answer_of(&text).unwrap()), "counted to 4");
}

#[tokio::test]
async fn an_approver_resolves_only_the_tools_their_approves_name() {
    let (upstream, gw) = setup("", 30).await;
    let me: Value = gw.control_get(ERIN, "/api/v1/me").await;
    assert_eq!(
        me,
        json!({"name": "erin", "role": "approver", "approves": ["py/read_*", "jira/*"]})
    );
    let client = spawn_write_page(&gw, AGENT_TOKEN, "MARK-SCOPE", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    for verb in ["approve", "deny"] {
        let (status, body) = resolve(&gw, ERIN, &call_id, verb, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("out_of_scope")),
            "{verb}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("py/write_page"),
            "{body}"
        );
    }
    assert_eq!(runs_of(&upstream, "MARK-SCOPE"), 0);
    let (status, _) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200);
    let text = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote MARK-SCOPE (1 bytes)"
    );
}

async fn extend(gw: &GatewayProc, token: &str, call_id: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(gw.control_url(&format!("/api/v1/holds/{call_id}/extend")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn an_extended_hold_stays_approvable_past_its_first_expiry() {
    let (upstream, gw) = setup("approval_ttl_secs = 3\nmax_extend_secs = 60\n", 1).await;
    let held = answer(held_call(&gw, AGENT_TOKEN, "MARK-EXTEND", "v1").await).await;
    assert!(is_held(&held), "{held}");
    let call_id = wait_for_hold(&gw, "pending").await;
    let before = open_holds(&gw).await[0]["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, code, says) in [
        (json!({"secs": 0}), 400, "secs must be from 1 to 60"),
        (json!({"secs": 61}), 400, "max_extend_secs"),
        (json!({"minutes": 5}), 400, "invalid body"),
    ] {
        let (status, answer) = extend(&gw, BOB, &call_id, body.clone()).await;
        assert_eq!(status, code, "{body}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (status, answer) = extend(&gw, ERIN, &call_id, json!({"secs": 30})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("out_of_scope"))
    );
    let (status, answer) = extend(&gw, BOB, &call_id, json!({"secs": 30})).await;
    assert_eq!(status, 200, "{answer}");
    let after = answer["expires_at"].as_str().unwrap();
    let moved = chrono::DateTime::parse_from_rfc3339(after).unwrap()
        - chrono::DateTime::parse_from_rfc3339(&before).unwrap();
    assert!(moved >= chrono::Duration::seconds(29), "{before} → {after}");
    // Past its first expiry, it is still there to approve, and its retry runs once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, answer) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(
        (status, answer["resolution"].as_str()),
        (200, Some("approved")),
        "{answer}"
    );
    let retry = answer_of_retry(&gw).await;
    assert_eq!(result_text(&retry), "wrote MARK-EXTEND (2 bytes)");
    assert_eq!(runs_of(&upstream, "MARK-EXTEND"), 1);
    let extended = crate::decisions::stored_events(&gw, "hold.extended").await;
    assert_eq!(extended.len(), 1);
    assert_eq!(
        (
            extended[0]["by"].as_str(),
            extended[0]["expires_at"].as_str()
        ),
        (Some("bob"), Some(after))
    );
}

async fn answer_of_retry(gw: &GatewayProc) -> Value {
    answer(held_call(gw, AGENT_TOKEN, "MARK-EXTEND", "v1").await).await
}

#[tokio::test]
async fn slack_gets_a_message_and_pagerduty_a_trigger_then_a_resolve_with_no_arguments() {
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = |path: &'static str| {
        let received = received.clone();
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| async move {
            received.lock().unwrap().push((path.to_owned(), body));
            "ok"
        })
    };
    let app = axum::Router::new()
        .route("/slack", record("slack"))
        .route("/pd", record("pd"));
    let addr = serve_local(app).await;
    let (upstream, gw) = setup(
        &format!(
            "public_control_url = \"https://toolgate.example.com/\"\n\
             [[notify]]\nurl = \"http://{addr}/slack\"\nformat = \"slack\"\n\
             [[notify]]\nurl = \"http://{addr}/pd\"\nformat = \"pagerduty\"\nrouting_key = \"R0UT1NGKEY\"\n"
        ),
        30,
    )
    .await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "MARK-PAGE", "secret body", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    let pages = eventually("a Slack message and a PagerDuty trigger", || async {
        let got = received.lock().unwrap().clone();
        (got.len() == 2).then_some(got)
    })
    .await;
    let of = |path: &str| pages.iter().find(|(p, _)| p == path).unwrap().1.clone();
    let slack = of("slack");
    assert_eq!(
        slack["text"],
        "token:ci-bot wants to run py/write_page (write) on page:MARK-PAGE: held for approval"
    );
    assert_eq!(slack["blocks"][0]["type"], "section");
    assert!(
        slack["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "POST https://toolgate.example.com/api/v1/holds/{call_id}/approve"
            )),
        "the address people reach: {slack}"
    );
    let trigger = of("pd");
    assert_eq!(
        (
            trigger["routing_key"].as_str(),
            trigger["event_action"].as_str(),
            trigger["dedup_key"].as_str()
        ),
        (Some("R0UT1NGKEY"), Some("trigger"), Some(call_id.as_str()))
    );
    assert_eq!(trigger["payload"]["severity"], "warning");
    assert_eq!(trigger["payload"]["source"], "toolgate/py");
    assert_eq!(trigger["payload"]["custom_details"]["tool"], "write_page");
    // A link is opened with GET: it lists the held calls, never a POST-only URL.
    assert_eq!(
        trigger["links"][0]["href"],
        "https://toolgate.example.com/api/v1/holds"
    );
    for (_, body) in &pages {
        assert!(
            !body.to_string().contains("secret body"),
            "no arguments: {body}"
        );
    }
    // Denied: the incident is resolved under the same key; Slack hears nothing more.
    let (status, _) = resolve(&gw, BOB, &call_id, "deny", None).await;
    assert_eq!(status, 200);
    client.await.unwrap();
    let resolved = eventually("a PagerDuty resolve", || async {
        let got = received.lock().unwrap().clone();
        (got.len() == 3).then(|| got[2].clone())
    })
    .await;
    assert_eq!(resolved.0, "pd");
    assert_eq!(
        resolved.1,
        json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": call_id})
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.lock().unwrap().len(), 3);
    assert_eq!(runs_of(&upstream, "MARK-PAGE"), 0);
}

#[tokio::test]
async fn a_pagerduty_resolve_never_overtakes_its_trigger() {
    // PagerDuty refuses the first event it gets (a hiccup), and accepts the rest.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/pd",
        axum::routing::post({
            let (accepted, seen) = (accepted.clone(), seen.clone());
            move |axum::Json(body): axum::Json<Value>| async move {
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                accepted
                    .lock()
                    .unwrap()
                    .push(body["event_action"].as_str().unwrap().to_owned());
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let addr = serve_local(app).await;
    let (_upstream, gw) = setup(
        &format!("\n[[notify]]\nurl = \"http://{addr}/pd\"\nformat = \"pagerduty\"\nrouting_key = \"K\"\n"),
        30,
    )
    .await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "MARK-PD-ORDER", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    // Denied at once, while the trigger waits for its retry.
    assert_eq!(resolve(&gw, BOB, &call_id, "deny", None).await.0, 200);
    client.await.unwrap();
    let order = eventually("the trigger and the resolve", || async {
        let got = accepted.lock().unwrap().clone();
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(order, ["trigger", "resolve"]);
}
