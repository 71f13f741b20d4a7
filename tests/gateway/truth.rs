//! What the API answers is what happened: a write answered 503 never takes effect later,
//! the policy in force is the policy stored however edits race, and `/readyz` comes
//! back by itself once the store does.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::control::{ADMIN, APPROVER, APPROVER_TWO, VIEWER, api, code, setup, start_hold};
use crate::decisions::{call_tool, result_text, stored_events};
use crate::store::readyz;
use crate::support::*;

#[tokio::test]
async fn writes_answered_503_never_take_effect_later() {
    let (upstream, gw) = setup().await;
    let (call_id, client) = start_hold(&gw, "MARK-503").await;
    let (_, policy_before) = api(&gw, Method::GET, "/api/v1/policy", Some(VIEWER), None).await;

    let lock = StoreLock::take(&gw).await;
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/tools/py/read_page/risk",
        Some(ADMIN),
        Some(r#"{"risk":"destructive","expected_version":1}"#.into()),
    )
    .await;
    assert_eq!((s, code(&b)), (503, "store_unavailable"), "{b}");
    let (s, b) = api(
        &gw,
        Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some(format!("{DEFAULT_POLICY}\n// MARK-503-POLICY\n")),
    )
    .await;
    assert_eq!((s, code(&b)), (503, "store_unavailable"), "{b}");
    let approve = format!("/api/v1/holds/{call_id}/approve");
    let (s, b) = api(&gw, Method::POST, &approve, Some(APPROVER), None).await;
    assert_eq!((s, code(&b)), (503, "store_unavailable"), "{b}");
    // The writer retries its lock while these wait; give it every chance to sneak the
    // withdrawn writes in after the lock goes.
    lock.release().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(stored_events(&gw, "risk.changed").await.is_empty());
    let read_page = read_page_row(&gw).await;
    assert_eq!(read_page["risk"], "read", "{read_page}");
    let read = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(
        result_text(&read),
        "no page x",
        "the 503 risk edit is in force"
    );

    let (_, policy_after) = api(&gw, Method::GET, "/api/v1/policy", Some(VIEWER), None).await;
    assert_eq!(policy_after["version"], policy_before["version"]);
    assert!(
        !policy_after["text"]
            .as_str()
            .unwrap()
            .contains("MARK-503-POLICY")
    );

    assert!(
        stored_events(&gw, "hold.resolved").await.is_empty(),
        "the 503 approval was stored"
    );
    assert!(
        !upstream.posts().iter().any(|p| p.body.contains("MARK-503")),
        "the 503 approval ran the call"
    );
    // The hold is still open: the next approver is the one who wins, alone.
    let (s, b) = api(&gw, Method::POST, &approve, Some(APPROVER_TWO), None).await;
    assert_eq!(s, 200, "{b}");
    client.await.unwrap();
    let resolved = stored_events(&gw, "hold.resolved").await;
    let approvals: Vec<&Value> = resolved
        .iter()
        .filter(|e| e["resolution"] == "approved")
        .collect();
    assert_eq!(approvals.len(), 1, "{resolved:?}");
    assert_eq!(approvals[0]["by"], "amy");
}

#[tokio::test]
async fn readyz_recovers_by_itself_when_the_store_does() {
    let (_upstream, gw) = setup().await;
    let lock = StoreLock::take(&gw).await;
    let denied = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
    assert_eq!(result_text(&denied), "toolgate: audit store unavailable");
    assert_eq!(readyz(&gw).await, 503);
    lock.release().await;
    // No call arrives from here on: only the gateway itself can find out.
    let released = Instant::now();
    loop {
        if readyz(&gw).await == 200 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "/readyz still 503 two seconds after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = stored_events(&gw, "store.recovered").await;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["denied_unlogged"], 1);
}

/// A policy that denies a read of page `probe` naming `round`.
fn policy_named(round: &str) -> String {
    format!(
        "{DEFAULT_POLICY}\n@id(\"{round}\")\n@reason(\"probe\")\nforbid (principal, action, resource)\n\
         when {{ context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") == \"probe\" }};\n"
    )
}

#[tokio::test]
async fn after_racing_policy_puts_the_policy_in_force_is_the_one_stored() {
    let (_upstream, gw) = setup().await;
    let (a, b) = (policy_named("policy-a"), policy_named("policy-b"));
    let rounds = 200;
    let mut in_force_b = 0;
    for round in 0..rounds {
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (ra, rb) = tokio::join!(
            api(
                &gw,
                Method::PUT,
                "/api/v1/policy",
                Some(ADMIN),
                Some(first.clone())
            ),
            api(
                &gw,
                Method::PUT,
                "/api/v1/policy",
                Some(ADMIN),
                Some(second.clone())
            ),
        );
        assert_eq!((ra.0, rb.0), (200, 200), "round {round}: {ra:?} {rb:?}");
        let (_, stored) = api(&gw, Method::GET, "/api/v1/policy", Some(VIEWER), None).await;
        let stored_id = if stored["text"].as_str().unwrap().contains("\"policy-b\"") {
            "policy-b"
        } else {
            "policy-a"
        };
        let probe = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "probe"})).await;
        assert!(
            result_text(&probe).contains(stored_id),
            "round {round}: stored {stored_id}, but in force: {}",
            result_text(&probe)
        );
        in_force_b += usize::from(stored_id == "policy-b");
    }
    // Both orders happened, or the race was never run.
    assert!(
        in_force_b > 0 && in_force_b < rounds,
        "{in_force_b} of {rounds}"
    );
}

/// Two edits from the same version race, a hundred times: one wins, and the class in
/// force is always the one stored.
#[tokio::test]
async fn after_racing_risk_edits_the_class_in_force_is_the_one_stored() {
    let (_upstream, gw) = setup().await;
    let path = "/api/v1/tools/py/read_page/risk";
    let mut version = read_page_row(&gw).await["version"].as_u64().unwrap();
    for round in 0..100 {
        let edit = |risk: &str| json!({"risk": risk, "expected_version": version}).to_string();
        let (ra, rb) = tokio::join!(
            api(&gw, Method::PUT, path, Some(ADMIN), Some(edit("read"))),
            api(
                &gw,
                Method::PUT,
                path,
                Some(ADMIN),
                Some(edit("destructive"))
            ),
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {ra:?} {rb:?}");
        let row = read_page_row(&gw).await;
        version = row["version"].as_u64().unwrap();
        let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "x"})).await;
        let ran = result_text(&answer) == "no page x";
        assert_eq!(
            ran,
            row["risk"] == "read",
            "round {round}: stored {}, but the call {}",
            row["risk"],
            if ran { "ran" } else { "was denied" }
        );
    }
}

async fn read_page_row(gw: &GatewayProc) -> Value {
    let (_, tools) = api(gw, Method::GET, "/api/v1/tools", Some(VIEWER), None).await;
    tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "read_page")
        .unwrap()
        .clone()
}

/// The identical write, which may run at once (JSON) or be held (a stream).
fn spawn_retry(gw: &GatewayProc, page: &str) -> tokio::task::JoinHandle<String> {
    let call = modern_call(
        9,
        "write_page",
        json!({"page_id": page, "body": "b"}),
        json!({}),
    );
    let request = modern_request(&http(), &gw.url("py"), "write_page", call.to_string())
        .bearer_auth(AGENT_TOKEN);
    tokio::spawn(async move {
        let resp = request.send().await.expect("the gateway answers");
        let json = resp.headers()["content-type"] == "application/json";
        let text = resp.text().await.expect("the answer");
        // One shape for both: a JSON answer as the data of one SSE message.
        if json {
            format!("data: {text}\n\n")
        } else {
            text
        }
    })
}

/// The JSON-RPC results in a held call's stream.
fn results_in(stream: &str) -> Vec<Value> {
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|m| m.get("result").is_some() || m.get("error").is_some())
        .collect()
}

#[tokio::test]
async fn a_retry_racing_the_approval_leaves_every_held_stream_with_one_result() {
    let (upstream, gw) = setup().await;
    for i in 0..30 {
        let page = format!("MARK-RETRY-RACE-{i}");
        let (call_id, original) = start_hold(&gw, &page).await;
        let approve = format!("/api/v1/holds/{call_id}/approve");
        // The retry is on its way while the approval is sent: either may land first.
        let retry = spawn_retry(&gw, &page);
        let (s, b) = api(&gw, Method::POST, &approve, Some(APPROVER), None).await;
        assert_eq!(s, 200, "race {i}: {b}");
        // A retry that came before the approval is held in its own right: approve it too.
        let second = eventually("the retry to run or be held", || async {
            if retry.is_finished() {
                return Some(None);
            }
            let (_, holds) = api(&gw, Method::GET, "/api/v1/holds", Some(VIEWER), None).await;
            holds["holds"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| {
                    h["call"]["args"]["page_id"] == page.as_str()
                        && h["call_id"] != call_id.as_str()
                })
                .map(|h| Some(h["call_id"].as_str().unwrap().to_owned()))
        })
        .await;
        if let Some(second) = &second {
            let path = format!("/api/v1/holds/{second}/approve");
            let (s, b) = api(&gw, Method::POST, &path, Some(APPROVER), None).await;
            assert_eq!(s, 200, "race {i}: {b}");
        }
        for (what, task) in [("original", original), ("retry", retry)] {
            let stream = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap_or_else(|_| panic!("race {i}: the {what} stream never ended"))
                .unwrap();
            let results = results_in(&stream);
            assert_eq!(results.len(), 1, "race {i}: the {what} stream: {stream}");
        }
        let runs = upstream
            .posts()
            .iter()
            .filter(|p| p.body.contains(&format!("\"{page}\"")))
            .count();
        let approvals = 1 + usize::from(second.is_some());
        assert_eq!(
            runs, approvals,
            "race {i}: {runs} runs for {approvals} approvals"
        );
    }
}

/// An upstream on 127.0.0.1 whose every POST is answered with this SSE stream: the
/// events given, then `linger` before the stream ends.
async fn sse_upstream(events: &'static str, linger: Duration) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move || async move {
            let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                axum::body::Bytes::from_static(events.as_bytes()),
            )])
            .chain(futures_util::stream::once(async move {
                tokio::time::sleep(linger).await;
                Ok(axum::body::Bytes::from_static(b": bye\n\n"))
            }));
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
        }),
    );
    let addr = serve_local(app).await;
    format!("http://{addr}/mcp")
}

/// A gateway before the upstream at `url`, and its answer to one `read_page` as the agent.
async fn read_page_through(url: &str) -> (GatewayProc, reqwest::Response) {
    let gw = start_gateway(&format!(
        "[[upstream]]\nname = \"py\"\nurl = \"{url}\"\n[[risk]]\nupstream = \"py\"\ntool = \"read_page\"\nrisk = \"read\"\n{}",
        test_identities()
    ))
    .await;
    let body = modern_call(1, "read_page", json!({"page_id": "x"}), json!({})).to_string();
    let resp = modern_request(&http(), &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    (gw, resp)
}

async fn completions(gw: &GatewayProc) -> Vec<Value> {
    eventually("call.completed", || async {
        let rows = stored_events(gw, "call.completed").await;
        (!rows.is_empty()).then_some(rows)
    })
    .await
}

#[tokio::test]
async fn an_answer_read_in_full_is_ok_even_when_the_client_leaves_before_the_stream_ends() {
    let url = sse_upstream(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n",
        Duration::from_secs(3),
    )
    .await;
    let (gw, resp) = read_page_through(&url).await;
    let mut stream = resp.bytes_stream();
    let mut seen = Vec::new();
    while let Some(chunk) = stream.next().await {
        seen.extend_from_slice(&chunk.unwrap());
        if seen.ends_with(b"\n\n") && String::from_utf8_lossy(&seen).contains("\"result\"") {
            break;
        }
    }
    // The client has its answer and hangs up, as SDK clients do.
    drop(stream);
    let done = completions(&gw).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["result"], "ok", "{done:?}");
}

#[tokio::test]
async fn a_stream_that_ends_without_the_answer_is_not_recorded_as_ok() {
    let url = sse_upstream(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n",
        Duration::from_millis(10),
    )
    .await;
    let (gw, resp) = read_page_through(&url).await;
    resp.bytes().await.unwrap();
    let done = completions(&gw).await;
    assert_eq!(done[0]["result"], "no_answer", "{done:?}");
}

#[tokio::test]
async fn an_approved_answer_streams_through_whatever_its_size_and_gives_one_result() {
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":9,"result":{{"content":[{{"type":"text","text":"{}"}}]}}}}"#,
        "x".repeat(10_000)
    );
    let big: &'static str = Box::leak(big.into_boxed_str());
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move || async move { ([("content-type", "application/json")], big) }),
    );
    let addr = serve_local(app).await;
    let gw = start_gateway(&format!(
        "max_response_bytes = 4096\n[[upstream]]\nname = \"py\"\nurl = \"http://{addr}/mcp\"\nhold_timeout_secs = 30\n[[risk]]\nupstream = \"py\"\ntool = \"write_page\"\nrisk = \"write\"\n{}{}",
        test_identities(),
        crate::control::operators()
    ))
    .await;
    let (call_id, client) = start_hold(&gw, "MARK-BIG-ANSWER").await;
    let (s, b) = api(
        &gw,
        Method::POST,
        &format!("/api/v1/holds/{call_id}/approve"),
        Some(APPROVER),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let stream = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    let results = results_in(&stream);
    assert_eq!(results.len(), 1, "{stream}");
    // The tool ran: its answer arrives whole, however big, never swapped for an error.
    let text = results[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.len(), 10_000);
    let done = completions(&gw).await;
    assert_eq!(done[0]["result"], "ok");
}
