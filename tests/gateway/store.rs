//! The audit store: a decision is committed before it takes effect, or the call is
//! denied; nothing a client saw is lost in a crash; no secret is ever written.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::decisions::{call_tool, decisions, result_text, trusted_py};
use crate::support::*;

pub async fn readyz(gw: &GatewayProc) -> u16 {
    http()
        .get(gw.control_url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_locked_store_denies_calls_after_the_timeout_and_then_recovers() {
    let (upstream, gw) = trusted_py().await;
    assert_eq!(readyz(&gw).await, 200);
    let lock = StoreLock::take(&gw).await;

    for (tool, marker) in [
        ("read_page", "MARK-LOCKED-ALLOW"),
        ("delete_page", "MARK-LOCKED-DENY"),
    ] {
        let started = Instant::now();
        let answer = call_tool(&gw, AGENT_TOKEN, tool, json!({"page_id": marker})).await;
        let waited = started.elapsed();
        assert_eq!(
            result_text(&answer),
            "toolgate: audit store unavailable",
            "{tool}: {answer}"
        );
        assert_eq!(answer["result"]["isError"], true);
        // store_timeout_ms is 200: the call waited for it, and not much longer.
        assert!(
            waited >= Duration::from_millis(190),
            "{tool} answered after {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{tool} answered after {waited:?}"
        );
    }
    assert_eq!(
        readyz(&gw).await,
        503,
        "/readyz must report the failing store"
    );
    assert!(
        !upstream
            .posts()
            .iter()
            .any(|p| p.body.contains("MARK-LOCKED")),
        "a call whose decision was not stored reached the upstream"
    );

    lock.release().await;
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "MARK-AFTER"}),
    )
    .await;
    assert_eq!(result_text(&answer), "no page MARK-AFTER");
    assert_eq!(readyz(&gw).await, 200);

    let recovered = query_rows(
        &gw.db_path(),
        "SELECT body FROM events WHERE kind = 'store.recovered'",
    )
    .await;
    assert_eq!(recovered.len(), 1);
    let event: Value = serde_json::from_str(recovered[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(event["denied_unlogged"], 2);
    let stored = decisions(&gw).await;
    assert!(!stored.iter().any(|d| {
        d["args"]["page_id"]
            .as_str()
            .unwrap_or("")
            .starts_with("MARK-LOCKED")
    }));
}

#[tokio::test]
async fn every_decision_a_client_saw_survives_a_crash_with_dense_seqs() {
    let (_upstream, gw) = trusted_py().await;
    let seen: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..4 {
        let url = gw.url("py");
        let seen = seen.clone();
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let (tool, marker) = match i % 2 {
                    0 => ("read_page", format!("MARK-CRASH-{client}-{i}")),
                    _ => ("delete_page", format!("MARK-CRASH-{client}-{i}")),
                };
                let body = modern_call(i, tool, json!({"page_id": marker}), json!({}));
                let sent = modern_request(&http(), &url, tool, body.to_string())
                    .bearer_auth(AGENT_TOKEN)
                    .send()
                    .await;
                let Ok(resp) = sent else { return };
                let Ok(text) = resp.text().await else { return };
                let outcome = if text.contains(&format!("no page {marker}")) {
                    "allow"
                } else if text.contains("Denied by toolgate policy") {
                    "deny"
                } else {
                    return;
                };
                seen.lock().unwrap().push((marker, outcome));
            }
        }));
    }
    eventually("clients to see 60 answers", || async {
        (seen.lock().unwrap().len() >= 60).then_some(())
    })
    .await;
    let gw = gw.crash_and_restart().await;
    for c in clients {
        tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("clients stop")
            .unwrap();
    }

    let stored: std::collections::HashMap<String, String> = decisions(&gw)
        .await
        .iter()
        .map(|d| {
            (
                d["args"]["page_id"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 60);
    for (marker, outcome) in &seen {
        assert_eq!(
            stored.get(marker).map(String::as_str),
            Some(*outcome),
            "{marker} was answered but not stored"
        );
    }
    let seqs: Vec<u64> = query_rows(
        &gw.db_path(),
        "SELECT CAST(seq AS TEXT) FROM events ORDER BY seq",
    )
    .await
    .iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect();
    let dense: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, dense, "seqs are not dense");
}

#[tokio::test]
async fn a_secret_argument_never_reaches_the_data_dir_or_the_log() {
    const SECRET: &str = "hunter2-TOPSECRET-4711";
    let (_upstream, gw) = trusted_py().await;
    call_tool(
        &gw,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "x", "password": SECRET}),
    )
    .await;
    call_tool(
        &gw,
        AGENT_TOKEN,
        "delete_page",
        json!({"page_id": "y", "nested": [{"API_Key": SECRET}]}),
    )
    .await;
    let stored = decisions(&gw).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["args"]["password"], "[REDACTED]");
    assert_eq!(stored[1]["args"]["nested"][0]["API_Key"], "[REDACTED]");

    let files = gw.assert_secret_not_stored(SECRET);
    assert!(files >= 2, "expected the database and its WAL");
    let log = gw.log();
    assert!(
        log.contains("decided"),
        "the gateway log is not being written"
    );
    assert!(!log.contains(SECRET), "the secret is in the gateway's log");
}
