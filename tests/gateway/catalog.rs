//! `tools/list` answers are learned on the way back and stored with their hashes.

use serde_json::json;

use crate::support::*;

async fn tool_rows(gw: &GatewayProc, upstream: &str) -> Vec<Vec<Option<String>>> {
    query_rows(
        &gw.db_path(),
        &format!(
            "SELECT name, definition_sha256, suggested_risk, risk, risk_source FROM tools
             WHERE upstream = '{upstream}' ORDER BY name"
        ),
    )
    .await
}

async fn definition_count(gw: &GatewayProc, tool: &str) -> usize {
    query_rows(
        &gw.db_path(),
        &format!("SELECT sha256 FROM tool_definitions WHERE name = '{tool}'"),
    )
    .await
    .len()
}

#[tokio::test]
async fn listings_are_stored_with_hashes_and_classes_in_both_eras() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("trust_annotations = true")).await;
    let args = json!({"page_id": "x"});

    let seen = run_py_client(&gw.url("py"), AGENT_TOKEN, "read_page", &args, "auto").await;
    assert_eq!(seen["protocol_version"], "2026-07-28");
    let rows = eventually("five tools in the catalog", || async {
        let rows = tool_rows(&gw, "py").await;
        (rows.len() == 5).then_some(rows)
    })
    .await;
    let class_of = |name: &str| {
        let r = rows.iter().find(|r| r[0].as_deref() == Some(name)).unwrap();
        (r[3].clone().unwrap(), r[4].clone().unwrap())
    };
    assert_eq!(class_of("read_page"), ("read".into(), "annotations".into()));
    assert_eq!(
        class_of("write_page"),
        ("write".into(), "annotations".into())
    );
    assert_eq!(
        class_of("delete_page"),
        ("destructive".into(), "annotations".into())
    );
    // No annotations object: unclassified, whatever the upstream's trust.
    assert_eq!(
        class_of("count_slowly"),
        ("unclassified".into(), "default".into())
    );
    for r in &rows {
        let hash = r[1].as_deref().unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hash}"
        );
    }
    let first_hash = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("write_page"))
        .unwrap()[1]
        .clone();

    // The same tools listed in the other era have the same hashes.
    let seen = run_py_client(&gw.url("py"), AGENT_TOKEN, "read_page", &args, "legacy").await;
    assert_eq!(seen["protocol_version"], "2025-11-25");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        tool_rows(&gw, "py").await,
        rows,
        "a listing in the other era changed the catalog"
    );
    assert_eq!(definition_count(&gw, "write_page").await, 1);

    // The upstream comes back with write_page's destructiveHint flipped.
    let _upstream = upstream.restart_as("b").await;
    run_py_client(&gw.url("py"), AGENT_TOKEN, "read_page", &args, "auto").await;
    eventually("write_page's second definition", || async {
        (definition_count(&gw, "write_page").await == 2).then_some(())
    })
    .await;
    let after = tool_rows(&gw, "py").await;
    let new_hash = after
        .iter()
        .find(|r| r[0].as_deref() == Some("write_page"))
        .unwrap()[1]
        .clone();
    assert_ne!(new_hash, first_hash);
    assert_eq!(
        definition_count(&gw, "read_page").await,
        1,
        "an unchanged tool got a new hash"
    );
}

#[tokio::test]
async fn an_untrusted_upstream_starts_every_tool_unclassified() {
    let (_upstream, port) = start_server_everything().await;
    let gw = start_gateway(&format!(
        "[[upstream]]\nname = \"everything\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n{}",
        test_identities()
    ))
    .await;
    // The echo is denied (unclassified, API token), but the listing before it is learned.
    run_py_client(
        &gw.url("everything"),
        AGENT_TOKEN,
        "echo",
        &json!({"message": "x"}),
        "auto",
    )
    .await;
    let rows = eventually("server-everything's tools in the catalog", || async {
        let rows = tool_rows(&gw, "everything").await;
        (rows.len() >= 10).then_some(rows)
    })
    .await;
    assert!(
        rows.iter().all(|r| r[3].as_deref() == Some("unclassified")),
        "{rows:?}"
    );
    let echo = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("echo"))
        .expect("echo listed");
    assert_eq!(echo[2].as_deref(), Some("read"), "echo's suggested class");
}
