//! Every tools/call is decided before it runs, and denied calls never reach the upstream.

use serde_json::{Value, json};

use crate::identity::user_jwt;
use crate::support::*;

pub async fn call_tool(gw: &GatewayProc, token: &str, tool: &str, args: Value) -> Value {
    let body = modern_call(1, tool, args, json!({})).to_string();
    let resp = modern_request(&http(), &gw.url("py"), tool, body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{tool}");
    let text = resp.text().await.unwrap();
    answer_of(&text).unwrap_or_else(|| panic!("{tool}: no answer in {text}"))
}

/// The JSON-RPC answer in a body: the body itself, or the last SSE message that is
/// an answer (a held call's stream carries keep-alives and progress first). The demo's
/// agents read answers the same way.
pub use toolgate::demo::agents::answer_of;

/// Whether an answer says the call is held and not decided yet: a 2026-07-28 client's
/// `input_required` with the state to wait on, or an older client's notice to retry.
pub fn is_held(answer: &Value) -> bool {
    let state = answer["result"]["resultType"] == "input_required"
        && answer["result"]["requestState"]
            .as_str()
            .is_some_and(|s| s.starts_with("tg1."));
    state || result_text(answer).starts_with("Held for approval as ")
}

pub fn result_text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// The stored decision events, oldest first.
pub async fn decisions(gw: &GatewayProc) -> Vec<Value> {
    stored_events(gw, "decision").await
}

/// The stored events of one kind, oldest first.
pub async fn stored_events(gw: &GatewayProc, kind: &str) -> Vec<Value> {
    query_rows(
        &gw.db_path(),
        &format!("SELECT body FROM events WHERE kind = '{kind}' ORDER BY seq"),
    )
    .await
    .into_iter()
    .map(|r| serde_json::from_str(r[0].as_deref().unwrap()).unwrap())
    .collect()
}

pub async fn trusted_py() -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "{}\n{}",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 1"),
        crate::identity::oauth_config()
    ))
    .await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

#[tokio::test]
async fn an_api_tokens_destructive_call_is_denied_with_its_reason_and_never_runs() {
    let (upstream, gw) = trusted_py().await;
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "delete_page",
        json!({"page_id": "MARK-DELETE"}),
    )
    .await;
    assert_eq!(answer["result"]["isError"], true);
    assert_eq!(answer["result"]["resultType"], "complete");
    assert_eq!(
        result_text(&answer),
        "Denied by toolgate policy token-risky-denied: API tokens may not make destructive or unclassified calls"
    );
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("MARK-DELETE")),
        "the upstream ran a denied call"
    );
    let stored = decisions(&gw).await;
    let d = stored
        .iter()
        .find(|d| d["tool"] == "delete_page")
        .expect("the decision is stored");
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["risk"], "destructive");
    assert_eq!(
        d["identity"],
        json!({"kind": "api_token", "name": "ci-bot", "groups": ["ci"]})
    );
    assert_eq!(d["policy_ids"], json!(["token-risky-denied"]));
    assert_eq!(d["target"], json!({"kind": "page", "id": "MARK-DELETE"}));
    assert!(d["call_id"].as_str().unwrap().len() == 36);
}

#[tokio::test]
async fn an_oauth_users_read_is_allowed() {
    let (upstream, gw) = trusted_py().await;
    let answer = call_tool(
        &gw,
        &user_jwt(),
        "read_page",
        json!({"page_id": "ops-runbook"}),
    )
    .await;
    assert_eq!(result_text(&answer), "Restart the pager.");
    assert!(
        upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("ops-runbook"))
    );
    let d = decisions(&gw).await.pop().expect("a decision");
    assert_eq!(
        (d["outcome"].as_str(), d["tool"].as_str()),
        (Some("allow"), Some("read_page"))
    );
    assert_eq!(d["identity"]["kind"], "oauth");
    assert_eq!(d["identity"]["name"], "alice@corp.example");
}

#[tokio::test]
async fn an_unclassified_tool_follows_the_matrix() {
    let (upstream, gw) = trusted_py().await;
    // count_slowly has no annotations, so it is unclassified even on a trusted upstream.
    let by_token = call_tool(&gw, AGENT_TOKEN, "count_slowly", json!({"steps": 1})).await;
    assert!(
        result_text(&by_token).starts_with("Denied by toolgate policy token-risky-denied:"),
        "{by_token}"
    );
    let by_user = call_tool(&gw, &user_jwt(), "count_slowly", json!({"steps": 1})).await;
    assert!(is_held(&by_user), "{by_user}");
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("count_slowly"))
    );
    let outcomes: Vec<(String, String)> = decisions(&gw)
        .await
        .iter()
        .map(|d| {
            (
                d["risk"].as_str().unwrap().into(),
                d["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("unclassified".into(), "deny".into()),
            ("unclassified".into(), "hold".into())
        ]
    );
}

#[tokio::test]
async fn a_definition_change_resets_the_class() {
    let (upstream, gw) = trusted_py().await;
    let user = user_jwt();
    let before = call_tool(
        &gw,
        &user,
        "write_page",
        json!({"page_id": "a", "body": "b"}),
    )
    .await;
    assert_eq!(
        result_text(&before),
        "wrote a (1 bytes)",
        "a user's write is allowed"
    );

    let _upstream = upstream.restart_as("b").await;
    prime_catalog(&gw).await;
    let row = eventually("write_page to be reset", || async {
        let rows = query_rows(
            &gw.db_path(),
            "SELECT risk, risk_source FROM tools WHERE upstream = 'py' AND name = 'write_page'",
        )
        .await;
        rows.into_iter()
            .next()
            .filter(|r| r[1].as_deref() == Some("reset"))
    })
    .await;
    assert_eq!(row[0].as_deref(), Some("unclassified"));

    let changed = query_rows(
        &gw.db_path(),
        "SELECT body FROM events WHERE kind = 'tool.changed'",
    )
    .await;
    assert_eq!(changed.len(), 1, "exactly one tool changed");
    let event: Value = serde_json::from_str(changed[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(event["name"], "write_page");
    assert_eq!(
        event["old_definition"]["annotations"]["destructiveHint"],
        false
    );
    assert_eq!(
        event["new_definition"]["annotations"]["destructiveHint"],
        true
    );

    let after = call_tool(
        &gw,
        &user,
        "write_page",
        json!({"page_id": "a", "body": "c"}),
    )
    .await;
    assert!(is_held(&after), "{after}");
}

#[tokio::test]
async fn hidden_denied_tools_are_left_out_and_unknown() {
    let upstream = PyUpstream::start().await;
    let gw =
        start_gateway(&upstream.config("trust_annotations = true\nhide_denied_tools = true")).await;
    prime_catalog(&gw).await;
    let seen = run_py_client(
        &gw.url("py"),
        AGENT_TOKEN,
        "read_page",
        &json!({"page_id": "x"}),
        "auto",
    )
    .await;
    assert_eq!(
        seen["tools"],
        json!(["get_project", "read_page", "write_page"]),
        "{seen}"
    );
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "delete_page",
        json!({"page_id": "MARK-HIDDEN"}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602);
    assert_eq!(answer["error"]["message"], "Unknown tool: delete_page");
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("MARK-HIDDEN"))
    );
}

#[tokio::test]
async fn workflow_context_is_recorded_and_a_malformed_one_is_refused() {
    let (_upstream, gw) = trusted_py().await;
    let body = modern_call(
        1,
        "read_page",
        json!({"page_id": "x"}),
        json!({"toolgate/context": {"ticket": "CHG-42"}}),
    );
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body.to_string())
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let d = decisions(&gw).await.pop().unwrap();
    assert_eq!(d["workflow"], json!({"ticket": "CHG-42"}));

    let body = modern_call(2, "read_page", json!({"page_id": "x"}), json!({}));
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body.to_string())
        .bearer_auth(AGENT_TOKEN)
        .header("x-toolgate-context", r#"{"tikcet": "CHG-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tikcet"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_policy_file_is_loaded_once_and_again_only_when_it_changes() {
    let upstream = PyUpstream::start().await;
    let strict = "@id(\"nothing\") forbid (principal, action, resource);";
    let config = format!(
        "{}\n[policy]\nfile = \"policy.cedar\"\n",
        upstream.config("trust_annotations = true")
    );
    let gw = start_gateway_with_files(&config, &[("policy.cedar", strict)]).await;
    let versions = |gw: &GatewayProc| {
        let db = gw.db_path();
        async move { query_rows(&db, "SELECT by FROM policies ORDER BY version").await }
    };
    let first = versions(&gw).await;
    assert_eq!(first.len(), 1);
    assert!(
        first[0][0].as_deref().unwrap().starts_with("config:"),
        "{first:?}"
    );
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert!(
        result_text(&answer).starts_with("Denied by toolgate policy nothing"),
        "{answer}"
    );

    // The same file again: no new version.
    let gw = gw.crash_and_restart().await;
    assert_eq!(versions(&gw).await.len(), 1);

    // A changed file: a new version, in force.
    std::fs::write(
        gw.dir.path().join("policy.cedar"),
        crate::support::DEFAULT_POLICY,
    )
    .unwrap();
    let gw = gw.crash_and_restart().await;
    assert_eq!(versions(&gw).await.len(), 2);
    prime_catalog(&gw).await;
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "ops-runbook"}),
    )
    .await;
    assert_eq!(result_text(&answer), "Restart the pager.");
    let changed = query_rows(
        &gw.db_path(),
        "SELECT body FROM events WHERE kind = 'policy.changed'",
    )
    .await;
    assert_eq!(changed.len(), 2);
}

#[tokio::test]
async fn each_call_that_went_upstream_records_how_it_ended() {
    let (_upstream, gw) = trusted_py().await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "done"})).await;
    // A missing required argument: the tool reports an error.
    let failed = call_tool(&gw, AGENT_TOKEN, "read_page", json!({})).await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    call_tool(&gw, AGENT_TOKEN, "delete_page", json!({"page_id": "never"})).await;
    let completed = eventually("two call.completed events", || async {
        let rows = query_rows(
            &gw.db_path(),
            "SELECT body FROM events WHERE kind = 'call.completed' ORDER BY seq",
        )
        .await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let events: Vec<Value> = completed
        .iter()
        .map(|r| serde_json::from_str(r[0].as_deref().unwrap()).unwrap())
        .collect();
    let decisions = decisions(&gw).await;
    assert_eq!(events[0]["call_id"], decisions[0]["call_id"]);
    assert_eq!(
        (
            events[0]["result"].as_str(),
            events[0]["upstream_status"].as_u64()
        ),
        (Some("ok"), Some(200))
    );
    assert_eq!(events[1]["call_id"], decisions[1]["call_id"]);
    assert_eq!(events[1]["result"], "tool_error");
    assert!(events.iter().all(|e| e["duration_ms"].as_u64().is_some()));
    // The denied call never went upstream, so it has no completion.
    assert!(
        !events
            .iter()
            .any(|e| e["call_id"] == decisions[2]["call_id"])
    );
}

#[tokio::test]
async fn a_traceparent_goes_upstream_unchanged_and_is_on_the_stored_decision() {
    let (upstream, gw) = trusted_py().await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // In the header.
    let body = modern_call(1, "read_page", json!({"page_id": "TRACE-1"}), json!({})).to_string();
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .header("traceparent", trace)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    // In `_meta`, as MCP clients carry it.
    let meta_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "TRACE-2"})).await;
    let body = modern_call(
        2,
        "read_page",
        json!({"page_id": "TRACE-3"}),
        json!({"traceparent": meta_trace}),
    )
    .to_string();
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap();
    // A malformed one is not stored, but still goes upstream as sent.
    let body = modern_call(4, "read_page", json!({"page_id": "TRACE-4"}), json!({})).to_string();
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .header("traceparent", "00-nothex\u{7f}")
        .send()
        .await;
    if let Ok(resp) = resp {
        resp.text().await.unwrap();
    }

    let stored = decisions(&gw).await;
    let of = |page: &str| {
        stored
            .iter()
            .find(|d| d["args"]["page_id"] == page)
            .unwrap_or_else(|| panic!("no decision of {page}"))
            .clone()
    };
    assert_eq!(of("TRACE-1")["traceparent"], trace);
    assert!(of("TRACE-2").get("traceparent").is_none());
    assert_eq!(of("TRACE-3")["traceparent"], meta_trace);
    let posts = upstream.posts();
    let post = |page: &str| {
        posts
            .iter()
            .find(|p| p.body.contains(page) && p.body.contains("tools/call"))
            .unwrap()
    };
    assert_eq!(post("TRACE-1").traceparent.as_deref(), Some(trace));
    assert!(
        post("TRACE-3").body.contains(meta_trace),
        "the body goes as sent"
    );
}
