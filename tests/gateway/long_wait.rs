//! A 2026-07-28 client waits on a hold longer than one HTTP wait, inside the protocol:
//! each wait that ends undecided answers `input_required` with a sealed `requestState`,
//! the client's SDK sends it back, and the wait goes on until the hold is decided. A
//! state that was altered, is another identity's or another call's, or was used already
//! is refused with `-32602`, and nothing runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::decisions::{answer_of, decisions, result_text, stored_events};
use crate::holds::{BOB, OTHER_AGENT, resolve, runs_of, setup_with_policy, wait_for_hold};
use crate::support::*;

/// One 2026-07-28 `tools/call` of write_page by `token` to `url`, with `params` added to
/// its params (a `requestState`, say); the answer read whole (a held call's SSE stream
/// ends with its one answer).
pub(crate) async fn call_with(url: &str, token: &str, page: &str, params: Value) -> Value {
    let mut body = modern_call(
        3,
        "write_page",
        json!({"page_id": page, "body": "x"}),
        json!({}),
    );
    for (key, value) in params.as_object().expect("params").clone() {
        body["params"][key] = value;
    }
    let resp = modern_request(&http(), url, "write_page", body.to_string())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    answer_of(&text).unwrap_or_else(|| panic!("no answer in {text}"))
}

/// As `call_with`, with `state` as its `requestState` when given.
pub(crate) async fn call(gw: &GatewayProc, token: &str, page: &str, state: Option<&str>) -> Value {
    let params = state.map_or(json!({}), |s| json!({"requestState": s}));
    call_with(&gw.url("py"), token, page, params).await
}

/// As `call`, by ci-bot with `state`, on a task of its own.
pub(crate) fn spawn_call(
    gw: &GatewayProc,
    page: &str,
    state: &str,
) -> tokio::task::JoinHandle<Value> {
    let (url, page, params) = (
        gw.url("py"),
        page.to_owned(),
        json!({"requestState": state}),
    );
    tokio::spawn(async move { call_with(&url, AGENT_TOKEN, &page, params).await })
}

pub(crate) fn state_of(answer: &Value) -> String {
    assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
    assert!(
        answer["result"].get("inputRequests").is_none(),
        "a state only: {answer}"
    );
    answer["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestState in {answer}"))
        .to_owned()
}

pub(crate) fn refused(answer: &Value) -> &str {
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(
        answer["error"]["data"]["reason"], "invalid_request_state",
        "{answer}"
    );
    answer["error"]["message"].as_str().unwrap()
}

#[tokio::test]
async fn the_python_sdk_waits_three_legs_in_band_and_gets_the_real_result_after_approval() {
    let (upstream, gw) = setup_with_policy(2, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let url = gw.url("py");
    let client = tokio::spawn(async move {
        run_py_client(
            &url,
            AGENT_TOKEN,
            "write_page",
            &json!({"page_id": "LONG-1", "body": "hello"}),
            "2026-07-28",
        )
        .await
    });
    let call_id = wait_for_hold(&gw, "waiting").await;
    // Three legs of 2 s each end undecided; the client is back each time.
    eventually_within(20, "three legs of the wait", || async {
        let rejoined = stored_events(&gw, "hold.phase")
            .await
            .into_iter()
            .filter(|e| e["call_id"] == call_id.as_str() && e["phase"] == "waiting")
            .count();
        (rejoined >= 3).then_some(())
    })
    .await;
    assert_eq!(runs_of(&upstream, "LONG-1"), 0, "nothing runs while held");
    assert!(!client.is_finished(), "the SDK is still waiting in-band");
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let seen = tokio::time::timeout(Duration::from_secs(30), client)
        .await
        .expect("the client gets its answer")
        .unwrap();
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
    assert_eq!(
        seen["result"]["content"][0]["text"], "wrote LONG-1 (5 bytes)",
        "{seen}"
    );
    assert_eq!(runs_of(&upstream, "LONG-1"), 1);
    // One decision for the call, however many legs it waited; the run is the hold's.
    let ours: Vec<Value> = decisions(&gw)
        .await
        .into_iter()
        .filter(|d| d["tool"] == "write_page")
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["call_id"], call_id.as_str());
    // What ran upstream carried no state of the gateway's.
    let posted = upstream
        .posts()
        .into_iter()
        .find(|p| p.body.contains("LONG-1"))
        .unwrap();
    assert!(!posted.body.contains("requestState"), "{}", posted.body);
}

#[tokio::test]
async fn an_altered_foreign_other_or_spent_state_is_refused_and_nothing_runs() {
    let (upstream, gw) = setup_with_policy(1, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let first = call(&gw, AGENT_TOKEN, "SEAL-1", None).await;
    let state = state_of(&first);
    let call_id = wait_for_hold(&gw, "pending").await;

    // One character of the payload altered (after `tg1.<key id>.`).
    let mut altered = state.clone().into_bytes();
    let at = "tg1.01234567.".len() + 5;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let answer = call(&gw, AGENT_TOKEN, "SEAL-1", Some(&altered)).await;
    assert!(refused(&answer).contains("does not verify"), "{answer}");
    // Another identity's retry with this state.
    let answer = call(&gw, OTHER_AGENT, "SEAL-1", Some(&state)).await;
    assert!(refused(&answer).contains("another identity"), "{answer}");
    // The same identity, another call.
    let answer = call(&gw, AGENT_TOKEN, "SEAL-2", Some(&state)).await;
    assert!(refused(&answer).contains("another call"), "{answer}");
    assert_eq!(runs_of(&upstream, "SEAL-"), 0);
    // None of them opened a hold or a decision of its own.
    assert_eq!(crate::holds::open_holds(&gw).await.len(), 1);

    // The real retry waits again, and is told again how to go on.
    let again = call(&gw, AGENT_TOKEN, "SEAL-1", Some(&state)).await;
    let next = state_of(&again);
    assert_ne!(next, state, "each leg's state is its own");
    // Approved between two legs: the next retry runs it.
    assert_eq!(resolve(&gw, BOB, &call_id, "approve", None).await.0, 200);
    let ran = call(&gw, AGENT_TOKEN, "SEAL-1", Some(&next)).await;
    assert_eq!(result_text(&ran), "wrote SEAL-1 (1 bytes)", "{ran}");
    assert_eq!(runs_of(&upstream, "SEAL-1"), 1);
    // Spent: neither state runs it again.
    for used in [&next, &state] {
        let answer = call(&gw, AGENT_TOKEN, "SEAL-1", Some(used)).await;
        assert!(refused(&answer).contains("already run"), "{answer}");
    }
    assert_eq!(runs_of(&upstream, "SEAL-1"), 1);
    // The refusals are in the gateway's log, never the state itself.
    let log = gw.log();
    assert!(log.contains("requestState refused"), "{log}");
    assert!(!log.contains(&state), "a state is not logged");
}

#[tokio::test]
async fn a_denial_between_legs_is_the_answer_to_the_next_retry() {
    let (upstream, gw) = setup_with_policy(1, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let state = state_of(&call(&gw, AGENT_TOKEN, "GONE-1", None).await);
    let call_id = wait_for_hold(&gw, "pending").await;
    assert_eq!(
        resolve(&gw, BOB, &call_id, "deny", Some("not now")).await.0,
        200
    );
    let answer = call(&gw, AGENT_TOKEN, "GONE-1", Some(&state)).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(result_text(&answer).contains("not now"), "{answer}");
    assert_eq!(runs_of(&upstream, "GONE-1"), 0);
    // A 2025-11-25 client keeps the two-phase hold: told to retry, no state.
    let url = gw.url("py");
    let session = crate::relay::legacy_session(&http(), &url, AGENT_TOKEN).await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "write_page", "arguments": {"page_id": "OLD-1", "body": "x"}}});
    let resp = crate::relay::legacy_post(&http(), &url, AGENT_TOKEN, Some(&session), &call)
        .send()
        .await
        .unwrap();
    let answer = answer_of(&resp.text().await.unwrap()).unwrap();
    assert!(answer["result"].get("requestState").is_none(), "{answer}");
    assert!(
        result_text(&answer).contains("Retry the identical call"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_newest_leg_takes_the_wait_over_and_an_approval_given_between_legs_obeys_the_policy_now()
 {
    let (upstream, gw) = setup_with_policy(3, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let state = state_of(&call(&gw, AGENT_TOKEN, "OVER-1", None).await);
    let call_id = wait_for_hold(&gw, "pending").await;
    // A leg whose connection went quiet, and the client's next try with the same state:
    // the newer one waits, the older is told at once to go on (never left unanswered).
    let stale = spawn_call(&gw, "OVER-1", &state);
    wait_for_hold(&gw, "waiting").await;
    let fresh = spawn_call(&gw, "OVER-1", &state);
    let told = tokio::time::timeout(Duration::from_secs(2), stale)
        .await
        .expect("the older leg is answered at once")
        .unwrap();
    state_of(&told);
    assert!(!fresh.is_finished());
    assert_eq!(resolve(&gw, BOB, &call_id, "approve", None).await.0, 200);
    let ran = tokio::time::timeout(Duration::from_secs(5), fresh)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result_text(&ran), "wrote OVER-1 (1 bytes)", "{ran}");
    assert_eq!(runs_of(&upstream, "OVER-1"), 1);

    // Approved between legs, then the policy turns to deny it: the next leg does not run
    // it, and the deny is in the log.
    let state = state_of(&call(&gw, AGENT_TOKEN, "TURN-1", None).await);
    let call_id = wait_for_hold(&gw, "pending").await;
    assert_eq!(resolve(&gw, BOB, &call_id, "approve", None).await.0, 200);
    let admin =
        toolgate::client::ControlClient::new(&format!("http://{}", gw.control), BOB).unwrap();
    let denying = format!(
        "{}\n@id(\"no-turn\")\n@reason(\"TURN pages are frozen\")\nforbid (principal, action, resource)\n\
         when {{ context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") == \"TURN-1\" }};\n",
        toolgate::gateway::policy::DEFAULT_POLICY
    );
    admin.put_policy(&denying, None, None).await.unwrap();
    let answer = call(&gw, AGENT_TOKEN, "TURN-1", Some(&state)).await;
    assert!(
        result_text(&answer).contains("no-turn: TURN pages are frozen"),
        "{answer}"
    );
    assert_eq!(runs_of(&upstream, "TURN-1"), 0);
    let last = decisions(&gw).await.pop().unwrap();
    assert_eq!(
        (last["outcome"].as_str(), last["policy_ids"][0].as_str()),
        (Some("deny"), Some("no-turn"))
    );

    // Input the gateway never asked for is not carried to the upstream with its state.
    let state = state_of(&call(&gw, AGENT_TOKEN, "ASK-1", None).await);
    let answer = call_with(
        &gw.url("py"),
        AGENT_TOKEN,
        "ASK-1",
        json!({"requestState": state, "inputResponses": {"confirm": {"action": "accept"}}}),
    )
    .await;
    assert!(refused(&answer).contains("inputResponses"), "{answer}");
}

#[tokio::test]
async fn the_last_leg_the_sdks_make_says_how_to_pick_the_approval_up_and_an_upstreams_state_is_left_alone()
 {
    let (upstream, gw) = setup_with_policy(1, toolgate::gateway::policy::DEFAULT_POLICY).await;
    let mut answer = call(&gw, AGENT_TOKEN, "LAST-1", None).await;
    // Legs 0 to 9 end with a state; leg 10 (the SDKs' tenth retry) with the notice.
    for leg in 1..=10 {
        let state = state_of(&answer);
        answer = call(&gw, AGENT_TOKEN, "LAST-1", Some(&state)).await;
        if leg < 10 {
            assert_eq!(
                answer["result"]["resultType"], "input_required",
                "leg {leg}"
            );
        }
    }
    assert!(answer["result"].get("requestState").is_none(), "{answer}");
    assert!(
        result_text(&answer).contains("Retry the identical call after approval"),
        "{answer}"
    );
    assert_eq!(runs_of(&upstream, "LAST-1"), 0);
    // A state the gateway did not make is the upstream's: the call is decided afresh
    // (held), and its wait ends with the notice, since the SDK would send back only ours.
    let answer = call_with(
        &gw.url("py"),
        AGENT_TOKEN,
        "UP-1",
        json!({"requestState": "the-upstream's-own-state"}),
    )
    .await;
    assert!(
        result_text(&answer).starts_with("Held for approval as "),
        "{answer}"
    );
}
