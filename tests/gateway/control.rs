//! The control API's contract: statuses and error codes, races, risk and policy edits,
//! and that no secret leaks through it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::decisions::{answer_of, call_tool, result_text};
use crate::support::*;

pub const ADMIN: &str = "tg_test-control-admin";
pub const APPROVER: &str = "tg_test-control-approver";
pub const APPROVER_TWO: &str = "tg_test-control-approver-two";
pub const VIEWER: &str = "tg_test-control-viewer";

pub fn operators() -> String {
    [("ada", "admin", ADMIN, "[]"), ("abe", "approver", APPROVER, "[]"), ("amy", "approver", APPROVER_TWO, "[]"), ("viv", "viewer", VIEWER, "[]")]
        .iter()
        .map(|(name, role, token, principals)| {
            format!(
                "[[operator]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\nprincipals = {principals}\n",
                sha256_hex(token)
            )
        })
        .collect()
}

pub async fn setup() -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let config = format!(
        "{}\n{}",
        upstream
            .config("trust_annotations = true\nhold_timeout_secs = 30")
            .replace("groups = [\"ci\"]", "groups = [\"ci\"]\nowner = \"ada\""),
        operators()
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

/// One control-API request as `token`: the status, and the body as JSON (or as a string).
pub async fn api(
    gw: &GatewayProc,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = http().request(method, gw.control_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The Prometheus text, as a viewer reads it.
pub async fn metrics(gw: &GatewayProc) -> String {
    http()
        .get(gw.control_url("/metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `error.code` of a control-API answer, or "".
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Starts a held write in the background and returns its call id once it waits.
pub async fn start_hold(gw: &GatewayProc, page: &str) -> (String, tokio::task::JoinHandle<String>) {
    let client = spawn_write_page(gw, AGENT_TOKEN, page, "b", json!({}));
    let call_id = eventually("the hold", || async {
        pending_holds(gw)
            .await
            .into_iter()
            .find(|h| h["call"]["args"]["page_id"] == page)
            .map(|h| h["call_id"].as_str().unwrap().to_owned())
    })
    .await;
    (call_id, client)
}

/// The unresolved holds, soonest expiry first, as a viewer lists them.
pub async fn pending_holds(gw: &GatewayProc) -> Vec<Value> {
    let (status, body) = api(
        gw,
        reqwest::Method::GET,
        "/api/v1/holds",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["holds"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_status_and_error_code() {
    use reqwest::Method;
    let (_upstream, gw) = setup().await;
    let (s, b) = api(&gw, Method::GET, "/api/v1/status", None, None).await;
    assert_eq!((s, code(&b)), (401, "unauthorized"));
    let (s, b) = api(&gw, Method::GET, "/api/v1/status", Some("tg_nobody"), None).await;
    assert_eq!((s, code(&b)), (401, "unauthorized"));
    let (s, b) = api(&gw, Method::GET, "/api/v1/status", Some(VIEWER), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["upstreams"][0]["name"], "py");
    assert_eq!(b["upstreams"][0]["tools"], 5);
    assert_eq!(b["store_id"].as_str().unwrap().len(), 32);

    let (call_id, client) = start_hold(&gw, "codes").await;
    let approve = format!("/api/v1/holds/{call_id}/approve");
    let (s, b) = api(&gw, Method::POST, &approve, Some(VIEWER), None).await;
    assert_eq!((s, code(&b)), (403, "forbidden_role"));
    let (s, b) = api(&gw, Method::POST, &approve, Some(ADMIN), None).await;
    assert_eq!(
        (s, code(&b)),
        (403, "self_approval"),
        "ada owns the calling token"
    );
    let (s, b) = api(
        &gw,
        Method::POST,
        "/api/v1/holds/no-such-call/approve",
        Some(APPROVER),
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = api(
        &gw,
        Method::POST,
        &approve,
        Some(APPROVER),
        Some(r#"{"reason": "ok"}"#.into()),
    )
    .await;
    assert_eq!((s, b["resolution"].as_str()), (200, Some("approved")));
    let (s, b) = api(
        &gw,
        Method::POST,
        &format!("/api/v1/holds/{call_id}/deny"),
        Some(APPROVER_TWO),
        None,
    )
    .await;
    assert_eq!((s, code(&b)), (409, "already_resolved"));
    assert!(b["hold"]["resolution"].is_string(), "{b}");
    assert!(answer_of(&client.await.unwrap()).is_some());

    let risk = "/api/v1/tools/py/read_page/risk";
    let (s, b) = api(
        &gw,
        Method::PUT,
        risk,
        Some(APPROVER),
        Some(r#"{"risk":"write","expected_version":1}"#.into()),
    )
    .await;
    assert_eq!((s, code(&b)), (403, "forbidden_role"));
    let (s, b) = api(
        &gw,
        Method::PUT,
        risk,
        Some(ADMIN),
        Some(r#"{"risk":"spicy","expected_version":1}"#.into()),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_risk"));
    assert_eq!(
        b["error"]["valid"],
        json!(["read", "write", "destructive", "unclassified"])
    );
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/tools/py/nope/risk",
        Some(ADMIN),
        Some(r#"{"risk":"read","expected_version":1}"#.into()),
    )
    .await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = api(
        &gw,
        Method::PUT,
        risk,
        Some(ADMIN),
        Some(r#"{"risk":"read","expected_version":7}"#.into()),
    )
    .await;
    assert_eq!((s, code(&b)), (409, "stale_version"));
    assert_eq!(b["tool"]["version"], 1);
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some("permit (principal, action resource);".into()),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "invalid_policy"));
    assert_eq!(b["error"]["line"], 1);
    assert!(b["error"]["column"].as_u64().is_some(), "{b}");

    let (s, text) = api(&gw, Method::GET, "/metrics", None, None).await;
    assert_eq!(s, 401, "{text}");
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains("toolgate_decisions_total{outcome=\"hold\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("toolgate_decision_seconds_count "),
        "{metrics}"
    );
    assert!(
        metrics.contains("toolgate_holds{phase=\"waiting\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_approvers_racing_fifty_times_give_one_winner_and_at_most_one_run() {
    let (upstream, gw) = setup().await;
    for i in 0..50 {
        let page = format!("MARK-RACE-{i}");
        let (call_id, client) = start_hold(&gw, &page).await;
        let path = format!("/api/v1/holds/{call_id}/approve");
        let (a, b) = tokio::join!(
            api(&gw, reqwest::Method::POST, &path, Some(APPROVER), None),
            api(&gw, reqwest::Method::POST, &path, Some(APPROVER_TWO), None)
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "race {i}: {a:?} {b:?}");
        let text = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            result_text(&answer_of(&text).unwrap()),
            format!("wrote {page} (1 bytes)")
        );
        let quoted = format!("\"{page}\"");
        let runs: Vec<String> = upstream
            .posts()
            .into_iter()
            .filter(|p| p.body.contains(&quoted))
            .map(|p| p.body)
            .collect();
        assert_eq!(runs.len(), 1, "race {i}: {runs:#?}");
    }
}

#[tokio::test]
async fn a_risk_edit_takes_effect_on_the_next_call_and_a_bad_policy_leaves_the_old_one() {
    use reqwest::Method;
    let (_upstream, gw) = setup().await;
    let (_, tools) = api(&gw, Method::GET, "/api/v1/tools", Some(VIEWER), None).await;
    let write_page = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "write_page")
        .unwrap()
        .clone();
    assert_eq!(write_page["risk"], "write");
    let version = write_page["version"].as_u64().unwrap();
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/tools/py/write_page/risk",
        Some(ADMIN),
        Some(
            json!({"risk": "read", "expected_version": version, "note": "a sandbox wiki"})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["kind"].as_str(), b["from"].as_str(), b["to"].as_str()),
        (Some("risk.changed"), Some("write"), Some("read"))
    );
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "write_page",
        json!({"page_id": "edited", "body": "x"}),
    )
    .await;
    assert_eq!(
        result_text(&answer),
        "wrote edited (1 bytes)",
        "allowed without a hold"
    );

    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some("forbid (principal, action, resource)\nwhen { resource.nope };".into()),
    )
    .await;
    assert_eq!(
        (s, code(&b), b["error"]["line"].as_u64()),
        (400, "invalid_policy", Some(2))
    );
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "still"})).await;
    assert_eq!(
        result_text(&answer),
        "no page still",
        "the old policy is still in force"
    );
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some(
            "@id(\"lockdown\") @reason(\"maintenance\") forbid (principal, action, resource);"
                .into(),
        ),
    )
    .await;
    assert_eq!(
        (s, b["kind"].as_str()),
        (200, Some("policy.changed")),
        "{b}"
    );
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "now"})).await;
    assert_eq!(
        result_text(&answer),
        "Denied by toolgate policy lockdown: maintenance"
    );
    let (_, policy) = api(&gw, Method::GET, "/api/v1/policy", Some(VIEWER), None).await;
    assert_eq!(policy["by"], "ada");
    assert!(policy["text"].as_str().unwrap().contains("lockdown"));
}

#[tokio::test]
async fn a_password_is_in_no_event_answer_log_or_file() {
    use reqwest::Method;
    const SECRET: &str = "s3cr3t-XYZ";
    let (_upstream, gw) = setup().await;
    call_tool(
        &gw,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "pw", "password": SECRET}),
    )
    .await;
    let (_call_id, client) = start_hold(&gw, "pw-held").await;
    drop(client);
    let mut answers = String::new();
    for path in [
        "/api/v1/decisions?limit=100",
        "/api/v1/holds",
        "/api/v1/tools",
        "/api/v1/status",
    ] {
        let (s, b) = api(&gw, Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(s, 200, "{path}");
        answers.push_str(&b.to_string());
    }
    let (_, decisions) = api(
        &gw,
        Method::GET,
        "/api/v1/decisions?limit=100",
        Some(VIEWER),
        None,
    )
    .await;
    let pw = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["args"]["page_id"] == "pw")
        .unwrap();
    assert_eq!(pw["args"]["password"], "[REDACTED]");
    let sse = event_stream(&gw, VIEWER).await;
    let mut stream = sse.bytes_stream();
    let mut events = String::new();
    while !events.contains("pw-held") {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(events.contains("\"page_id\":\"pw\""));
    for (what, text) in [
        ("an API answer", &answers),
        ("the event stream", &events),
        ("the log", &gw.log()),
    ] {
        assert!(!text.contains(SECRET), "the password is in {what}");
    }
    gw.assert_secret_not_stored(SECRET);
}

#[tokio::test]
async fn the_command_line_lists_approves_and_reports_a_lost_race() {
    let (upstream, gw) = setup().await;
    let (call_id, client) = start_hold(&gw, "MARK-CLI").await;
    let toolgate = |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(args)
            .args(["--gateway", &format!("http://{}", gw.control)])
            .env("TOOLGATE_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = toolgate(&["holds"], VIEWER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listed["call_id"], call_id);

    let out = toolgate(
        &["approve", &call_id, "--reason", "from the shell"],
        APPROVER,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            approved["resolution"].as_str(),
            approved["resolved_by"].as_str()
        ),
        (Some("approved"), Some("abe"))
    );
    let text = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote MARK-CLI (1 bytes)"
    );
    assert_eq!(
        upstream
            .posts()
            .iter()
            .filter(|p| p.body.contains("MARK-CLI"))
            .count(),
        1
    );

    let out = toolgate(&["deny", &call_id], APPROVER_TWO);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{call_id}: already ")) && stderr.contains(" by "),
        "{stderr}"
    );
    let out = toolgate(&["approve", &call_id], VIEWER);
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("forbidden_role")
    );
}
