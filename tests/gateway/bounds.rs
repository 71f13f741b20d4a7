//! Bounded, whatever one caller sends: held calls, tool names and answers cannot pin
//! the gateway's memory or grow its store without limit.

use serde_json::json;

use crate::decisions::{is_held, result_text};
use crate::support::*;

/// The gateway's resident memory, in KiB.
fn rss_kib(gw: &GatewayProc) -> u64 {
    let pid = gw.proc.child.id().expect("the gateway runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn store_bytes(gw: &GatewayProc) -> u64 {
    std::fs::read_dir(gw.dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn big_held_calls_are_denied_and_pin_no_memory() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "max_body_bytes = 4194304\n{}",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 1")
    ))
    .await;
    prime_catalog(&gw).await;
    let before = rss_kib(&gw);
    let blob = "x".repeat(3_900_000);
    for i in 0..15 {
        let call = modern_call(
            i,
            "write_page",
            json!({"page_id": format!("MARK-BIG-{i}"), "body": blob}),
            json!({}),
        );
        let (status, answer) = post_call(&gw, "write_page", call.to_string()).await;
        assert_eq!(status, 200);
        let text = result_text(&answer);
        assert!(
            text.contains("toolgate-hold-limit") && text.contains("max_held_call_bytes"),
            "{text}"
        );
    }
    let grown = rss_kib(&gw).saturating_sub(before);
    // Before the limit, these 15 calls pinned 1.3 GiB until their TTL ran out.
    assert!(grown < 100 * 1024, "the gateway grew by {grown} KiB");
    assert!(
        upstream
            .posts()
            .iter()
            .all(|p| !p.body.contains("MARK-BIG-"))
    );
}

#[tokio::test]
async fn a_token_cannot_open_more_holds_than_its_share() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "max_holds_per_identity = 3\n{}",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 1")
    ))
    .await;
    prime_catalog(&gw).await;
    for i in 0..5 {
        let call = modern_call(
            i,
            "write_page",
            json!({"page_id": format!("MARK-CAP-{i}"), "body": "b"}),
            json!({}),
        );
        let (_, answer) = post_call(&gw, "write_page", call.to_string()).await;
        let text = result_text(&answer);
        if i < 3 {
            assert!(is_held(&answer), "call {i}: {answer}");
        } else {
            assert!(text.contains("max_holds_per_identity"), "call {i}: {text}");
        }
    }
    let holds = query_rows(&gw.db_path(), "SELECT call_id FROM holds").await;
    assert_eq!(holds.len(), 3);
}

#[tokio::test]
async fn distinct_long_tool_names_are_refused_and_grow_nothing() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "max_body_bytes = 2097152\n{}",
        upstream.config("trust_annotations = true")
    ))
    .await;
    prime_catalog(&gw).await;
    // Warm up what every call allocates once.
    let warm = modern_call(1, "read_page", json!({"page_id": "x"}), json!({}));
    post_call(&gw, "read_page", warm.to_string()).await;
    let (rss_before, store_before) = (rss_kib(&gw), store_bytes(&gw));
    for i in 0..100 {
        let name = format!("{i}{}", "n".repeat(1024 * 1024));
        let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                          "params": {"name": name, "arguments": {}}});
        let resp = http()
            .post(gw.url("py"))
            .bearer_auth(AGENT_TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(call.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32602, "{body}");
    }
    let rss_grown = rss_kib(&gw).saturating_sub(rss_before);
    let store_grown = store_bytes(&gw).saturating_sub(store_before);
    // Before the limit: 200 MiB of memory kept for good, and 1 MiB of store per call.
    assert!(rss_grown < 40 * 1024, "memory grew by {rss_grown} KiB");
    assert!(
        store_grown < 1024 * 1024,
        "the store grew by {store_grown} bytes"
    );
    let log = gw.log();
    assert!(
        log.len() < 2 * 1024 * 1024,
        "the log is {} bytes",
        log.len()
    );
}
