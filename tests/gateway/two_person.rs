//! The two-person rule: a hold a policy marks `@approvals("2")` runs only after two
//! different operators approve it, neither of them its requester's owner; one deny ends
//! it, and of two racing last approvals one wins.

use std::time::Duration;

use serde_json::{Value, json};

use crate::decisions::{answer_of, result_text, stored_events};
use crate::holds::{ALICE, BOB, CAROL, DAVE, resolve, runs_of, setup_with_policy, wait_for_hold};
use crate::support::*;

/// The default policy, and two approvals for an API token's writes.
pub(crate) fn two_for_token_writes() -> String {
    format!(
        "{}\n@id(\"two-for-token-writes\")\n@outcome(\"hold\")\n@approvals(\"2\")\n@reason(\"a token's write needs two operators\")\n\
         permit (principal is Token, action == Action::\"call_tool\", resource)\nwhen {{ resource.risk == \"write\" }};\n",
        toolgate::gateway::policy::DEFAULT_POLICY
    )
}

async fn answer_of_client(client: tokio::task::JoinHandle<String>) -> Value {
    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .expect("the waiting client gets an answer")
        .unwrap();
    answer_of(&text).unwrap()
}

#[tokio::test]
async fn a_two_person_hold_runs_after_two_different_approvers_and_never_on_its_owners_word() {
    let (upstream, gw) = setup_with_policy(30, &two_for_token_writes()).await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "TWO-1", "hi", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;

    // alice owns ci-bot's token: she does not count.
    let (status, body) = resolve(&gw, ALICE, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("self_approval"))
    );
    // bob's is the first of two: the call stays held, and says so.
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", Some("looks fine")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("resolution").is_none(), "{body}");
    assert_eq!(body["call"]["approvals_required"], 2);
    assert_eq!(body["approvals"][0]["by"], "bob");
    assert_eq!(body["approvals"][0]["reason"], "looks fine");
    // Twice by bob is still one.
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_approved")),
        "{body}"
    );
    assert_eq!(body["hold"]["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(runs_of(&upstream, "TWO-1"), 0, "one approval runs nothing");
    let listed: Value = gw.control_get(BOB, "/api/v1/holds").await;
    assert_eq!(listed["holds"][0]["approvals"][0]["by"], "bob", "{listed}");

    // carol's is the second: it runs, once.
    let (status, body) = resolve(&gw, CAROL, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let reply = answer_of_client(client).await;
    assert_eq!(result_text(&reply), "wrote TWO-1 (2 bytes)");
    assert_eq!(runs_of(&upstream, "TWO-1"), 1);

    let approvals = stored_events(&gw, "hold.approval").await;
    let shown: Vec<(&str, u64, u64)> = approvals
        .iter()
        .map(|e| {
            (
                e["by"].as_str().unwrap(),
                e["approvals"].as_u64().unwrap(),
                e["required"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, [("bob", 1, 2), ("carol", 2, 2)]);
    let resolved = stored_events(&gw, "hold.resolved").await;
    assert_eq!(resolved[0]["resolution"], "approved");
    assert_eq!(resolved[0]["approvers"], json!(["bob", "carol"]));
}

#[tokio::test]
async fn one_deny_after_an_approval_ends_a_two_person_hold_and_racing_last_approvals_give_one_winner()
 {
    let (upstream, gw) = setup_with_policy(30, &two_for_token_writes()).await;
    // bob approves, carol denies: it never runs.
    let client = spawn_write_page(&gw, AGENT_TOKEN, "TWO-DENY", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    assert_eq!(resolve(&gw, BOB, &call_id, "approve", None).await.0, 200);
    let (status, body) = resolve(&gw, CAROL, &call_id, "deny", Some("not today")).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let reply = answer_of_client(client).await;
    assert!(result_text(&reply).contains("not today"), "{reply}");
    assert_eq!(runs_of(&upstream, "TWO-DENY"), 0);

    // bob approves; carol and dave race for the second: one wins, it runs once.
    for round in 0..5 {
        let page = format!("TWO-RACE-{round}");
        let client = spawn_write_page(&gw, AGENT_TOKEN, &page, "x", json!({}));
        let call_id = wait_for_hold(&gw, "waiting").await;
        assert_eq!(resolve(&gw, BOB, &call_id, "approve", None).await.0, 200);
        let (c, d) = tokio::join!(
            resolve(&gw, CAROL, &call_id, "approve", None),
            resolve(&gw, DAVE, &call_id, "approve", None)
        );
        let mut statuses = [c.0, d.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {c:?} {d:?}");
        let reply = answer_of_client(client).await;
        assert_eq!(result_text(&reply), format!("wrote {page} (1 bytes)"));
        assert_eq!(runs_of(&upstream, &page), 1, "round {round}");
    }
}

#[tokio::test]
async fn a_policy_that_asks_more_approvals_while_a_call_is_held_is_followed() {
    let (upstream, gw) = setup_with_policy(30, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "TIGHT-1", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    // Held under one approval; then the policy asks two.
    let admin =
        toolgate::client::ControlClient::new(&format!("http://{}", gw.control), BOB).unwrap();
    admin
        .put_policy(&two_for_token_writes(), None, None)
        .await
        .unwrap();
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("resolution").is_none(),
        "one is not enough now: {body}"
    );
    assert_eq!(body["call"]["approvals_required"], 2);
    assert_eq!(runs_of(&upstream, "TIGHT-1"), 0);
    let (status, body) = resolve(&gw, CAROL, &call_id, "approve", None).await;
    assert_eq!(
        (status, body["resolution"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let reply = answer_of_client(client).await;
    assert_eq!(result_text(&reply), "wrote TIGHT-1 (1 bytes)");
    assert_eq!(runs_of(&upstream, "TIGHT-1"), 1);
}

#[tokio::test]
async fn toolgate_approve_says_a_first_approval_is_not_the_end() {
    let (_upstream, gw) = setup_with_policy(30, &two_for_token_writes()).await;
    let client = spawn_write_page(&gw, AGENT_TOKEN, "TWO-CLI", "x", json!({}));
    let call_id = wait_for_hold(&gw, "waiting").await;
    // What `toolgate approve` prints for a person, from the API's answer.
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200);
    let hold: toolgate::api::HoldView = serde_json::from_value(body).unwrap();
    assert_eq!(
        toolgate::cli_output::resolution_line(&hold),
        format!(
            "approval 1 of 2 recorded for {} (token:ci-bot, py/write_page); still held: it needs 1 more from other operators (so far: bob)",
            toolgate::api::short_id(&call_id)
        )
    );
    client.abort();
}
