//! Both protocol eras pass through unchanged, and streams are not buffered.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

/// Everything but the server-assigned bits a second run cannot reproduce.
fn stable(result: &Value) -> Value {
    let mut r = result.clone();
    r.as_object_mut().unwrap().remove("protocol_version");
    r
}

#[tokio::test]
async fn python_client_negotiates_2025_11_25_with_server_everything() {
    let (_upstream, port) = start_server_everything().await;
    let gw = start_gateway(&everything_config(port)).await;
    let args = json!({"message": "through toolgate"});

    let via = run_py_client(&gw.url("everything"), AGENT_TOKEN, "echo", &args, "auto").await;
    let direct = run_py_client(
        &format!("http://127.0.0.1:{port}/mcp"),
        "unused",
        "echo",
        &args,
        "auto",
    )
    .await;

    assert_eq!(via["protocol_version"], "2025-11-25");
    assert_eq!(
        via["result"]["content"][0]["text"],
        "Echo: through toolgate"
    );
    assert!(
        via["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "trigger-long-running-operation")
    );
    assert_eq!(via, direct, "the gateway changed what the client saw");
}

#[tokio::test]
async fn python_client_negotiates_2026_07_28_with_the_python_server() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("trust_annotations = true")).await;
    let args = json!({"page_id": "ops-runbook"});

    let via = run_py_client(&gw.url("py"), AGENT_TOKEN, "read_page", &args, "auto").await;
    let direct = run_py_client(&upstream.direct_url(), "unused", "read_page", &args, "auto").await;

    assert_eq!(via["protocol_version"], "2026-07-28");
    assert_eq!(via["result"]["content"][0]["text"], "Restart the pager.");
    assert_eq!(via["result"]["result_type"], "complete");
    assert_eq!(stable(&via), stable(&direct));
}

#[tokio::test]
async fn a_modern_answer_is_relayed_byte_for_byte() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("trust_annotations = true")).await;
    prime_catalog(&gw).await;
    let client = http();
    let body = modern_call(
        9,
        "read_page",
        json!({"page_id": "release-notes"}),
        json!({}),
    )
    .to_string();

    let direct = modern_request(&client, &upstream.direct_url(), "read_page", body.clone())
        .send()
        .await
        .unwrap();
    let via = modern_request(&client, &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();

    assert_eq!(via.status(), direct.status());
    assert_eq!(
        via.headers().get("content-type"),
        direct.headers().get("content-type")
    );
    let (via, direct) = (via.bytes().await.unwrap(), direct.bytes().await.unwrap());
    assert!(String::from_utf8_lossy(&via).contains("1.0 shipped."));
    assert_eq!(via, direct);
}

/// Opens a 2025-11-25 session and returns its id.
pub async fn legacy_session(client: &reqwest::Client, url: &str, token: &str) -> String {
    legacy_session_with(client, url, token, json!({})).await
}

async fn legacy_session_with(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    capabilities: Value,
) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities,
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let resp = legacy_post(client, url, token, None, &init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "initialize failed");
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    resp.bytes().await.unwrap();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = legacy_post(client, url, token, Some(&session), &initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    session
}

/// A 2025-11-25 POST of `body` as `token`, in `session` when given.
pub fn legacy_post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string());
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req
}

/// Reads an SSE response and notes when each JSON-RPC message arrived.
async fn timed_messages(resp: reqwest::Response) -> Vec<(Duration, Value)> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()).replace("\r\n", "\n"));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                {
                    out.push((start.elapsed(), v));
                }
            }
        }
    }
    out
}

fn assert_progress_streams_ahead(messages: &[(Duration, Value)], steps: usize) {
    let progress: Vec<_> = messages
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .collect();
    let (result_at, _) = messages
        .iter()
        .find(|(_, m)| m.get("result").is_some())
        .expect("a result");
    assert_eq!(progress.len(), steps, "{messages:?}");
    let (first_at, _) = progress[0];
    // The upstream spaces its steps out; relayed unbuffered, the first progress arrives
    // well before the result. Buffered, they would arrive together.
    assert!(
        *result_at >= *first_at + Duration::from_millis(400),
        "progress at {first_at:?}, result at {result_at:?}: progress was held back"
    );
}

#[tokio::test]
async fn progress_from_server_everything_arrives_before_its_result() {
    let (_upstream, port) = start_server_everything().await;
    let gw = start_gateway(&everything_config(port)).await;
    let client = http();
    let url = gw.url("everything");
    let session = legacy_session(&client, &url, AGENT_TOKEN).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 1.2, "steps": 4},
        "_meta": {"progressToken": "p1"}}});
    let resp = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_progress_streams_ahead(&timed_messages(resp).await, 4);
}

#[tokio::test]
async fn progress_from_the_python_server_arrives_before_its_result() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config(
        "trust_annotations = true\n[[risk]]\nupstream = \"py\"\ntool = \"count_slowly\"\nrisk = \"read\"",
    ))
    .await;
    let body = modern_call(
        4,
        "count_slowly",
        json!({"steps": 4}),
        json!({"progressToken": "p4"}),
    );
    let resp = modern_request(&http(), &gw.url("py"), "count_slowly", body.to_string())
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_progress_streams_ahead(&timed_messages(resp).await, 4);
}

#[tokio::test]
async fn get_stream_and_delete_pass_through_to_server_everything() {
    let (_upstream, port) = start_server_everything().await;
    let gw = start_gateway(&everything_config(port)).await;
    let client = http();
    let url = gw.url("everything");
    let session = legacy_session(&client, &url, AGENT_TOKEN).await;

    let stream = client
        .get(&url)
        .bearer_auth(AGENT_TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);

    let deleted = client
        .delete(&url)
        .bearer_auth(AGENT_TOKEN)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    // The session is gone. server-everything would answer 400; the gateway forgot the
    // session at its DELETE and answers 404 itself, as the spec says.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let after = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &call)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Session not found");
}

#[tokio::test]
async fn a_server_to_client_request_and_its_answer_pass_through() {
    let (_upstream, port) = start_server_everything().await;
    let gw = start_gateway(&everything_config(port)).await;
    let client = http();
    let url = gw.url("everything");
    let session = legacy_session_with(&client, &url, AGENT_TOKEN, json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "trigger-elicitation-request", "arguments": {}}});
    let resp = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &call)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut answered = false;
    let result = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream went quiet")
            .expect("the stream ended without a result")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        let messages: Vec<Value> = buf
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect();
        if let Some(request) = messages
            .iter()
            .find(|m| m["method"] == "elicitation/create")
            && !answered
        {
            // The upstream asks the client something mid-call; the client answers by POST.
            let answer = json!({"jsonrpc": "2.0", "id": request["id"],
                                "result": {"action": "accept", "content": {"name": "Ada Lovelace", "check": true}}});
            let ack = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &answer)
                .send()
                .await
                .unwrap();
            assert_eq!(
                ack.status(),
                202,
                "the answer to the server's request was not accepted"
            );
            answered = true;
        }
        if let Some(done) = messages.iter().find(|m| m["id"] == 5) {
            break done.clone();
        }
    };
    assert!(answered, "the upstream's elicitation request never arrived");
    assert!(result.to_string().contains("Ada Lovelace"), "{result}");
}
