//! Bad input gets the JSON-RPC error and status DESIGN.md gives, and never reaches the
//! upstream: the Python upstream logs every POST it receives, and no bad one is there.

use serde_json::{Value, json};

use crate::support::*;

struct Bad {
    what: &'static str,
    marker: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    code: i64,
}

fn call_with(marker: &str) -> Value {
    modern_call(1, "read_page", json!({"page_id": marker}), json!({}))
}

fn bad_inputs() -> Vec<Bad> {
    let modern = vec![("mcp-method", "tools/call"), ("mcp-name", "read_page")];
    let text = |v: Value| v.to_string().into_bytes();
    vec![
        Bad {
            what: "malformed JSON",
            marker: "MARK-MALFORMED",
            body: br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_page","arguments":{"page_id":"MARK-MALFORMED"}"#.to_vec(),
            headers: vec![],
            status: 400,
            code: -32700,
        },
        Bad {
            what: "invalid UTF-8",
            marker: "MARK-UTF8",
            body: b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_page\",\"arguments\":{\"page_id\":\"MARK-UTF8\xff\"}}}".to_vec(),
            headers: vec![],
            status: 400,
            code: -32700,
        },
        Bad {
            what: "duplicate name key",
            marker: "MARK-DUPNAME",
            body: br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_page","arguments":{"page_id":"MARK-DUPNAME"},"name":"delete_page"}}"#.to_vec(),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "duplicate key deep in the arguments",
            marker: "MARK-DUPDEEP",
            body: br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_page","arguments":{"page_id":"MARK-DUPDEEP","page_id":"ops-runbook"}}}"#.to_vec(),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "a batch",
            marker: "MARK-BATCH",
            body: text(json!([call_with("MARK-BATCH")])),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "method of the wrong type",
            marker: "MARK-METHODTYPE",
            body: text(json!({"jsonrpc": "2.0", "id": 1, "method": 42, "params": {"name": "MARK-METHODTYPE"}})),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "params.name of the wrong type",
            marker: "MARK-NAMETYPE",
            body: text(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": ["read_page"], "arguments": {"page_id": "MARK-NAMETYPE"}}})),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "params.arguments of the wrong type",
            marker: "MARK-ARGSTYPE",
            body: text(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "read_page", "arguments": ["MARK-ARGSTYPE"]}})),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "Mcp-Method that disagrees with the body",
            marker: "MARK-HDRMETHOD",
            body: text(call_with("MARK-HDRMETHOD")),
            headers: vec![("mcp-method", "tools/list"), ("mcp-name", "read_page")],
            status: 400,
            code: -32020,
        },
        Bad {
            what: "Mcp-Name that disagrees with the body",
            marker: "MARK-HDRNAME",
            body: text(call_with("MARK-HDRNAME")),
            headers: vec![("mcp-method", "tools/call"), ("mcp-name", "delete_page")],
            status: 400,
            code: -32020,
        },
        Bad {
            what: "a modern call without Mcp-Name",
            marker: "MARK-NONAME",
            body: text(call_with("MARK-NONAME")),
            headers: vec![("mcp-method", "tools/call")],
            status: 400,
            code: -32020,
        },
        Bad {
            what: "Mcp-Param-Project that disagrees with the argument",
            marker: "MARK-PARAM",
            body: text(modern_call(1, "get_project", json!({"project": "MARK-PARAM"}), json!({}))),
            headers: vec![("mcp-method", "tools/call"), ("mcp-name", "get_project"), ("mcp-param-project", "OPS")],
            status: 400,
            code: -32020,
        },
        Bad {
            what: "Mcp-Param-Project missing for a present argument",
            marker: "MARK-PARAMMISSING",
            body: text(modern_call(1, "get_project", json!({"project": "MARK-PARAMMISSING"}), json!({}))),
            headers: vec![("mcp-method", "tools/call"), ("mcp-name", "get_project")],
            status: 400,
            code: -32020,
        },
        Bad {
            what: "a tool name over 256 bytes",
            marker: "MARK-LONGNAME",
            body: text(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": format!("MARK-LONGNAME{}", "x".repeat(300)), "arguments": {}}})),
            headers: vec![],
            status: 400,
            code: -32602,
        },
        Bad {
            what: "an id over 256 bytes",
            marker: "MARK-LONGID",
            body: text(json!({"jsonrpc": "2.0", "id": format!("MARK-LONGID{}", "i".repeat(300)), "method": "tools/call",
                              "params": {"name": "read_page", "arguments": {"page_id": "MARK-LONGID"}}})),
            headers: vec![],
            status: 400,
            code: -32600,
        },
        Bad {
            what: "a number toolgate would round",
            marker: "MARK-BIGNUMBER",
            body: br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_page","arguments":{"page_id":"MARK-BIGNUMBER","n":123456789012345678901234567890}}}"#.to_vec(),
            headers: vec![],
            status: 400,
            code: -32602,
        },
        Bad {
            what: "a body over max_body_bytes",
            marker: "MARK-OVERSIZED",
            body: text(call_with(&format!("MARK-OVERSIZED{}", "x".repeat(70_000)))),
            headers: modern.clone(),
            status: 413,
            code: -32600,
        },
    ]
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_never_reaches_the_upstream() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("trust_annotations = true")).await;
    let client = http();
    let url = gw.url("py");

    // The catalog must know get_project's Mcp-Param declaration before it can check it.
    run_py_client(
        &url,
        AGENT_TOKEN,
        "read_page",
        &json!({"page_id": "x"}),
        "auto",
    )
    .await;
    eventually("get_project in the catalog", || async {
        let rows = query_rows(
            &gw.db_path(),
            "SELECT name FROM tools WHERE name = 'get_project'",
        )
        .await;
        (!rows.is_empty()).then_some(())
    })
    .await;

    for bad in bad_inputs() {
        let mut req = client
            .post(&url)
            .bearer_auth(AGENT_TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(bad.body.clone());
        for (k, v) in &bad.headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), bad.status, "{}", bad.what);
        if bad.status == 413 {
            // The unread rest of the body is still on the connection: it must close,
            // or the client's next request on it would fail.
            assert_eq!(resp.headers()["connection"], "close", "{}", bad.what);
        }
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", bad.what));
        assert_eq!(body["jsonrpc"], "2.0", "{}", bad.what);
        assert_eq!(body["error"]["code"], bad.code, "{}: {body}", bad.what);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            bad.what
        );
    }

    // The positive control: a good call with a marker does reach the upstream.
    let good = call_with("MARK-GOOD").to_string();
    let resp = modern_request(&client, &url, "read_page", good)
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    let received: Vec<String> = upstream.posts().into_iter().map(|p| p.body).collect();
    assert!(
        received.iter().any(|b| b.contains("MARK-GOOD")),
        "the upstream log is not being written"
    );
    for bad in bad_inputs() {
        assert!(
            !received.iter().any(|b| b.contains(bad.marker)),
            "{} reached the upstream",
            bad.what
        );
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_anything_else() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("trust_annotations = true")).await;
    prime_catalog(&gw).await;
    let client = http();
    let body = call_with("MARK-ORIGIN").to_string();

    let foreign = modern_request(&client, &gw.url("py"), "read_page", body.clone())
        .bearer_auth(AGENT_TOKEN)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    let local = modern_request(&client, &gw.url("py"), "read_page", body)
        .bearer_auth(AGENT_TOKEN)
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    local.bytes().await.unwrap();
    let received = upstream.posts();
    assert_eq!(
        received
            .iter()
            .filter(|p| p.body.contains("MARK-ORIGIN"))
            .count(),
        1
    );
}
