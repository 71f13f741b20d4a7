//! Transport hardening: what reaches the gateway's log.

use serde_json::json;

use crate::relay::legacy_post;
use crate::support::*;

#[tokio::test]
async fn request_values_cannot_forge_a_line_in_the_gateways_log() {
    // Neither request goes upstream (one has no token, the other is denied), so none runs.
    let gw = start_gateway(&format!(
        "[[upstream]]\nname = \"rec\"\nurl = \"http://127.0.0.1:9/mcp\"\n{}",
        test_identities()
    ))
    .await;
    let client = http();
    let forged_path = format!("http://{}/mcp/x%0Aforged%20line", gw.addr);
    let refused = client.post(&forged_path).body("{}").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo\n2026-01-01T00:00:00Z  INFO forged tool line", "arguments": {}}});
    let denied = legacy_post(&client, &gw.url("rec"), AGENT_TOKEN, None, &call)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    denied.bytes().await.unwrap();

    let log = eventually("the decision in the log", || async {
        let log = gw.log();
        log.contains("decided").then_some(log)
    })
    .await;
    for line in log.lines() {
        assert!(
            !line.starts_with("forged") && !line.starts_with("2026-01-01T00:00:00Z  INFO forged"),
            "a request forged a log line: {line:?}\nthe whole log:\n{log}"
        );
    }
    // Both values were logged, escaped, on the lines they belong to.
    assert!(log.contains(r#"upstream="x\nforged line""#), "{log}");
    assert!(
        log.contains(r#"tool="echo\n2026-01-01T00:00:00Z  INFO forged tool line""#),
        "{log}"
    );
}
