//! Time-boxed grants: an approval that also lets the same identity's identical calls
//! (or calls of the same tool) through for a time, audited on every use, revocable at
//! once, and never a way past a deny.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::run_control_cli;
use crate::decisions::{call_tool, decisions, result_text, stored_events};
use crate::holds::{BOB, CAROL, DAVE, VIEWER, resolve, runs_of, setup_with_policy, wait_for_hold};
use crate::support::*;
use crate::two_person::two_for_token_writes;

/// The default policy, and a deny for one page: no grant may let it through.
fn default_with_a_forbidden_page() -> String {
    format!(
        "{}\n@id(\"no-secret-page\")\n@reason(\"the SECRET page is never written by tokens\")\n\
         forbid (principal is Token, action == Action::\"call_tool\", resource)\n\
         when {{ context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") == \"SECRET\" }};\n",
        toolgate::gateway::policy::DEFAULT_POLICY
    )
}

pub(crate) async fn approve_with(
    gw: &GatewayProc,
    token: &str,
    call_id: &str,
    grant: Value,
) -> (u16, Value) {
    let resp = http()
        .post(gw.control_url(&format!("/api/v1/holds/{call_id}/approve")))
        .bearer_auth(token)
        .json(&json!({"reason": "on call", "grant": grant}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn grants(gw: &GatewayProc) -> Vec<Value> {
    let listed: Value = gw.control_get(VIEWER, "/api/v1/grants").await;
    listed["grants"].as_array().unwrap().clone()
}

pub(crate) async fn revoke(gw: &GatewayProc, token: &str, id: &str) -> (u16, Value) {
    let resp = http()
        .delete(gw.control_url(&format!("/api/v1/grants/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Holds one write of `page` by ci-bot and approves it with `grant`, returning the
/// grant as the approval's answer shows it.
async fn held_then_granted(
    gw: &GatewayProc,
    upstream: &PyUpstream,
    page: &str,
    grant: Value,
) -> Value {
    let client = spawn_write_page(gw, AGENT_TOKEN, page, "x", json!({}));
    let call_id = wait_for_hold(gw, "waiting").await;
    let (status, body) = approve_with(gw, BOB, &call_id, grant).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains(&format!("wrote {page}")), "{text}");
    assert_eq!(runs_of(upstream, page), 1);
    body["grant"].clone()
}

/// Asserts that a write of `page` by ci-bot is held (and denies it, to end it).
async fn assert_held(gw: &GatewayProc, upstream: &PyUpstream, page: &str) {
    let runs = runs_of(upstream, page);
    let client = spawn_write_page(gw, AGENT_TOKEN, page, "x", json!({}));
    let call_id = wait_for_hold(gw, "waiting").await;
    let held = decisions(gw)
        .await
        .into_iter()
        .find(|d| d["call_id"] == call_id.as_str())
        .unwrap();
    assert_eq!(held["outcome"], "hold", "{held}");
    assert!(held.get("grant").is_none(), "{held}");
    assert_eq!(
        resolve(gw, BOB, &call_id, "deny", Some("test")).await.0,
        200
    );
    let _ = tokio::time::timeout(Duration::from_secs(15), client).await;
    assert_eq!(runs_of(upstream, page), runs, "{page} must not run");
}

/// The decision of the newest call, as stored.
async fn last_decision(gw: &GatewayProc) -> Value {
    decisions(gw).await.pop().unwrap()
}

#[tokio::test]
async fn an_identical_grant_lets_the_same_call_through_until_it_expires_and_nothing_else() {
    let (upstream, gw) = setup_with_policy(30, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let grant = held_then_granted(
        &gw,
        &upstream,
        "SAME-1",
        json!({"for_secs": 4, "scope": "identical"}),
    )
    .await;
    assert_eq!(grant["scope"], "identical", "{grant}");
    assert_eq!(grant["approvers"], json!(["bob"]));
    assert_eq!(grant["identity"]["name"], "ci-bot");
    let id = grant["id"].as_str().unwrap().to_owned();

    // The identical call runs at once, twice, each use in the log naming the grant.
    for n in 2..=3 {
        let reply = call_tool(
            &gw,
            AGENT_TOKEN,
            "write_page",
            json!({"page_id": "SAME-1", "body": "x"}),
        )
        .await;
        assert_eq!(result_text(&reply), "wrote SAME-1 (1 bytes)");
        assert_eq!(runs_of(&upstream, "SAME-1"), n);
        let d = last_decision(&gw).await;
        assert_eq!(
            (d["outcome"].as_str(), d["grant"].as_str()),
            (Some("allow"), Some(id.as_str())),
            "{d}"
        );
        assert!(
            d["reason"].as_str().unwrap().contains(&id[id.len() - 8..]),
            "the reason names the grant: {d}"
        );
        assert_eq!(d["policy_ids"], json!(["token-write-held"]));
    }
    let listed = grants(&gw).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["uses"], 2, "{listed:?}");
    // Another argument is not the identical call: held.
    assert_held(&gw, &upstream, "SAME-2").await;
    let created = stored_events(&gw, "grant.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["id"], id.as_str());

    // Past its time it lets nothing through.
    let expires = chrono::DateTime::parse_from_rfc3339(grant["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_held(&gw, &upstream, "SAME-1").await;
    assert!(
        grants(&gw).await.is_empty(),
        "an expired grant is not listed"
    );
    // Nothing the grant did went unrecorded: 1 approved run + 2 granted.
    assert_eq!(runs_of(&upstream, "SAME-1"), 3);
}

#[tokio::test]
async fn a_tool_grant_never_lets_a_denied_call_through_and_a_revoked_one_stops_at_once() {
    let (upstream, gw) = setup_with_policy(30, &default_with_a_forbidden_page()).await;
    let grant = held_then_granted(
        &gw,
        &upstream,
        "TOOL-1",
        json!({"for_secs": 600, "scope": "tool"}),
    )
    .await;
    let id = grant["id"].as_str().unwrap().to_owned();
    assert!(grant.get("call_hash").is_none(), "{grant}");

    // Any arguments the policy would hold: through, naming the grant.
    let reply = call_tool(
        &gw,
        AGENT_TOKEN,
        "write_page",
        json!({"page_id": "TOOL-2", "body": "other"}),
    )
    .await;
    assert_eq!(result_text(&reply), "wrote TOOL-2 (5 bytes)");
    assert_eq!(last_decision(&gw).await["grant"], id.as_str());

    // A call the policy denies stays denied: the grant widens holds only.
    let reply = call_tool(
        &gw,
        AGENT_TOKEN,
        "write_page",
        json!({"page_id": "SECRET", "body": "x"}),
    )
    .await;
    assert!(
        reply["result"]["isError"] == true || reply.get("error").is_some(),
        "{reply}"
    );
    let d = last_decision(&gw).await;
    assert_eq!(d["outcome"], "deny", "{d}");
    assert!(d.get("grant").is_none(), "{d}");
    assert_eq!(runs_of(&upstream, "SECRET"), 0);
    // Another identity's call of the tool is not covered: held as before.
    let other = spawn_write_page(&gw, crate::holds::OTHER_AGENT, "TOOL-OTHER", "x", json!({}));
    let other_id = wait_for_hold(&gw, "waiting").await;
    assert_eq!(
        resolve(&gw, BOB, &other_id, "deny", None).await.0,
        200,
        "another identity's call is held"
    );
    let _ = other.await;

    // Only an approver revokes, and only what they may approve.
    assert_eq!(revoke(&gw, VIEWER, &id).await.0, 403);
    let (status, body) = revoke(&gw, BOB, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_by"], "bob");
    assert_eq!(body["uses"], 1);
    // From the next call on: held again.
    assert_held(&gw, &upstream, "TOOL-3").await;
    let (status, body) = revoke(&gw, BOB, &id).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let revoked = stored_events(&gw, "grant.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (revoked[0]["id"].as_str(), revoked[0]["by"].as_str()),
        (Some(id.as_str()), Some("bob"))
    );
    assert!(grants(&gw).await.is_empty());
}

#[tokio::test]
async fn a_grant_is_bounded_by_config_and_comes_only_with_an_approval() {
    let (upstream, gw) = setup_with_policy(30, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "BOUND-1", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    for (grant, says) in [
        (json!({"for_secs": 3601, "scope": "tool"}), "max_grant_secs"),
        (json!({"for_secs": 0, "scope": "tool"}), "max_grant_secs"),
        (
            json!({"for_secs": 60, "scope": "everything"}),
            "unknown variant",
        ),
        (json!({"for_secs": 60}), "missing field `scope`"),
    ] {
        let (status, body) = approve_with(&gw, BOB, &call_id, grant.clone()).await;
        assert_eq!(status, 400, "{grant}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{grant}: {body}"
        );
    }
    let resp = http()
        .post(gw.control_url(&format!("/api/v1/holds/{call_id}/deny")))
        .bearer_auth(BOB)
        .json(&json!({"grant": {"for_secs": 60, "scope": "tool"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_grant", "{body}");
    // None of that touched the hold.
    assert_eq!(crate::holds::open_holds(&gw).await.len(), 1);

    // From a shell: over the limit is the gateway's clear refusal; within it, a grant.
    let (status, _, stderr) = run_control_cli(
        &gw,
        BOB,
        &[
            "approve",
            &call_id,
            "--grant-for",
            "2h",
            "--grant-scope",
            "tool",
        ],
    )
    .await;
    assert!(!status.success());
    assert!(stderr.contains("max_grant_secs"), "{stderr}");
    let (status, stdout, stderr) = run_control_cli(
        &gw,
        BOB,
        &[
            "approve",
            &call_id,
            "--grant-for",
            "15m",
            "--grant-scope",
            "tool",
        ],
    )
    .await;
    assert!(status.success(), "{stderr}");
    let hold: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(hold["grant"]["scope"], "tool", "{hold}");
    assert_eq!(hold["grant"]["for_secs"], 900, "{hold}");
    let _ = client.await;
    assert_eq!(runs_of(&upstream, "BOUND-1"), 1);
    let (status, stdout, _) = run_control_cli(&gw, VIEWER, &["grants", "--output", "json"]).await;
    assert!(status.success());
    let listed: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    let id = listed["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["approvers"], json!(["bob"]));
    let short = &id[id.len() - 8..];
    let (status, _, stderr) = run_control_cli(&gw, VIEWER, &["grants", "--revoke", short]).await;
    assert!(!status.success(), "a viewer does not revoke");
    assert!(stderr.contains("approver"), "{stderr}");
    let (status, stdout, stderr) = run_control_cli(&gw, BOB, &["grants", "--revoke", short]).await;
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.starts_with(&format!("revoked grant {short}")),
        "{stdout}"
    );
    assert!(grants(&gw).await.is_empty());
}

#[tokio::test]
async fn a_two_person_hold_becomes_a_grant_only_when_every_approval_asks_for_the_same_one() {
    let (upstream, gw) = setup_with_policy(30, &two_for_token_writes()).await;
    let fifteen = json!({"for_secs": 900, "scope": "identical"});

    // bob asks for one grant, carol for another: refused, and the hold stays.
    let client = spawn_write_page(&gw, AGENT_TOKEN, "PAIR-1", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    assert_eq!(
        approve_with(&gw, BOB, &call_id, fifteen.clone()).await.0,
        200
    );
    let (status, body) = approve_with(
        &gw,
        CAROL,
        &call_id,
        json!({"for_secs": 900, "scope": "tool"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("grant_mismatch")),
        "{body}"
    );
    assert_eq!(body["hold"]["approvals"][0]["grant"], fifteen);
    // dave approves without one: it runs, and no grant is made.
    let (status, body) = resolve(&gw, DAVE, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("approved"))
    );
    assert!(body.get("grant").is_none(), "{body}");
    let _ = client.await;
    assert_eq!(runs_of(&upstream, "PAIR-1"), 1);
    assert!(grants(&gw).await.is_empty());

    // Both ask for the same one: a grant by both, which covers the identical call.
    let client = spawn_write_page(&gw, AGENT_TOKEN, "PAIR-2", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    assert_eq!(
        approve_with(&gw, BOB, &call_id, fifteen.clone()).await.0,
        200
    );
    let (status, body) = approve_with(&gw, CAROL, &call_id, fifteen.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["grant"]["approvers"],
        json!(["bob", "carol"]),
        "{body}"
    );
    let _ = client.await;
    let reply = call_tool(
        &gw,
        AGENT_TOKEN,
        "write_page",
        json!({"page_id": "PAIR-2", "body": "x"}),
    )
    .await;
    assert_eq!(result_text(&reply), "wrote PAIR-2 (1 bytes)");
    assert_eq!(runs_of(&upstream, "PAIR-2"), 2);
    let approved: Vec<Value> = stored_events(&gw, "hold.resolved")
        .await
        .into_iter()
        .filter(|e| e["resolution"] == "approved")
        .collect();
    assert_eq!(
        approved.last().unwrap()["approvers"],
        json!(["bob", "carol"])
    );
    let created = stored_events(&gw, "grant.created").await;
    assert_eq!(created.len(), 1, "no grant from the mismatched approvals");
    assert_eq!(created[0]["call_id"], call_id.as_str());
}
