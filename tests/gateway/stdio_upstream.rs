//! Stdio upstreams behind the gateway: the reference filesystem server
//! (`@modelcontextprotocol/server-filesystem`, run by the gateway over stdio) with the
//! Python SDK's client in both eras and the MCP Inspector CLI; the tests' own Python
//! stdio server for progress, sampling and a child killed mid-call; and children that
//! end with their sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::decisions::{result_text, stored_events};
use crate::holds::{BOB, operators, owned_identities, resolve, wait_for_hold};
use crate::support::*;

fn server_filesystem_js() -> PathBuf {
    let path =
        repo_root().join(".ci/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(
        path.exists(),
        "run ./.ci/run first: {} is missing",
        path.display()
    );
    path
}

/// The Inspector CLI reads its own package.json relative to the working directory.
fn inspector_cli_dir() -> PathBuf {
    let dir = repo_root().join(".ci/node_modules/@modelcontextprotocol/inspector-cli/build");
    assert!(
        dir.exists(),
        "run ./.ci/run first: {} is missing",
        dir.display()
    );
    dir
}

/// A gateway fronting server-filesystem over `docs`: reads allowed, `write_file` a
/// write (held for a token), `move_file` destructive, `edit_file` left unclassified.
async fn filesystem_gateway(docs: &Path, extra: &str) -> GatewayProc {
    let risks: String = [
        ("read_text_file", "read"),
        ("list_allowed_directories", "read"),
        ("write_file", "write"),
        ("move_file", "destructive"),
    ]
    .iter()
    .map(|(tool, risk)| {
        format!("[[risk]]\nupstream = \"files\"\ntool = \"{tool}\"\nrisk = \"{risk}\"\n")
    })
    .collect();
    let body = format!(
        r#"
[[upstream]]
name = "files"
command = ["node", "{js}", "{docs}"]
hold_timeout_secs = 30
{extra}
{risks}{identities}{operators}"#,
        js = server_filesystem_js().display(),
        docs = docs.display(),
        identities = owned_identities(),
        operators = operators(),
    );
    start_gateway(&body).await
}

/// What the directory holds, name → content.
fn listing(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

async fn inspector(gw: &GatewayProc, args: &[&str]) -> Value {
    let out = Command::new("node")
        .current_dir(inspector_cli_dir())
        .arg("cli.js")
        .arg("--cli")
        .arg(gw.url("files"))
        .args(["--transport", "http", "--header"])
        .arg(format!("Authorization: Bearer {AGENT_TOKEN}"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the inspector finished within 60 s")
        .expect("the inspector ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspector failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It prints a deprecation notice first, then the JSON.
    let json = &stdout[stdout.find('{').expect("JSON in the inspector's output")..];
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn server_filesystem_over_stdio_is_decided_held_and_denied_in_both_eras_and_for_the_inspector()
 {
    let scratch = tempfile::tempdir().unwrap();
    let docs = scratch.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), "hello\n").unwrap();
    let gw = filesystem_gateway(&docs, "").await;
    let a = docs.join("a.txt").display().to_string();

    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        // tools/list learns the catalog; a read is allowed.
        let seen = run_py_client(
            &gw.url("files"),
            AGENT_TOKEN,
            "read_text_file",
            &json!({"path": a}),
            mode,
        )
        .await;
        assert_eq!(seen["protocol_version"], version);
        let tools = seen["tools"].as_array().unwrap();
        for tool in ["read_text_file", "write_file", "edit_file", "move_file"] {
            assert!(tools.contains(&json!(tool)), "{tool} in {tools:?}");
        }
        assert_eq!(seen["result"]["content"][0]["text"], "hello\n", "{seen}");

        // A write by a token is held: the file appears only after the approval.
        let new = docs.join(format!("new-{mode}.txt"));
        let client = tokio::spawn({
            let (url, path) = (gw.url("files"), new.display().to_string());
            async move {
                run_py_client(
                    &url,
                    AGENT_TOKEN,
                    "write_file",
                    &json!({"path": path, "content": "written"}),
                    mode,
                )
                .await
            }
        });
        let call_id = wait_for_hold(&gw, "waiting").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!new.exists(), "nothing is written while the call is held");
        let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
        assert_eq!(status, 200, "{body}");
        let seen = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen["result"]["is_error"], false, "{seen}");
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "written");
        let completed = eventually("the write's call.completed", || async {
            let ended: Vec<_> = stored_events(&gw, "call.completed")
                .await
                .into_iter()
                .filter(|e| e["call_id"] == call_id.as_str())
                .collect();
            (!ended.is_empty()).then_some(ended)
        })
        .await;
        assert_eq!(completed.len(), 1, "it ran once: {completed:?}");
        assert_eq!(completed[0]["result"], "ok");

        // Destructive and unclassified calls are denied, and touch nothing.
        let before = listing(&docs);
        let moved = run_py_client(
            &gw.url("files"),
            AGENT_TOKEN,
            "move_file",
            &json!({"source": a, "destination": docs.join("b.txt").display().to_string()}),
            mode,
        )
        .await;
        let edited = run_py_client(
            &gw.url("files"),
            AGENT_TOKEN,
            "edit_file",
            &json!({"path": a, "edits": [{"oldText": "hello", "newText": "bye"}]}),
            mode,
        )
        .await;
        for denied in [&moved, &edited] {
            assert_eq!(denied["result"]["is_error"], true, "{denied}");
            let text = denied["result"]["content"][0]["text"].as_str().unwrap();
            assert!(text.starts_with("Denied by toolgate policy"), "{text}");
        }
        assert_eq!(listing(&docs), before);
    }

    // The Inspector CLI (2025-11-25, its own SDK) sees the same gateway.
    let listed = inspector(&gw, &["--method", "tools/list"]).await;
    assert!(
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "read_text_file")
    );
    let read = inspector(
        &gw,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "read_text_file",
            "--tool-arg",
            &format!("path={a}"),
        ],
    )
    .await;
    assert_eq!(read["content"][0]["text"], "hello\n");
    let before = listing(&docs);
    let moved = inspector(
        &gw,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "move_file",
            "--tool-arg",
            &format!("source={a}"),
            "--tool-arg",
            &format!("destination={}", docs.join("c.txt").display()),
        ],
    )
    .await;
    assert_eq!(moved["isError"], true, "{moved}");
    assert!(result_text(&json!({"result": moved})).starts_with("Denied by toolgate policy"));
    assert_eq!(listing(&docs), before);
    stop(gw).await;
}

/// SIGTERM, so the gateway stops its stdio servers as it would in production.
async fn stop(mut gw: GatewayProc) {
    let (status, _) = gw.proc.terminate().await;
    assert!(status.success(), "{status}");
}
