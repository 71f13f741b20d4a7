//! A stdio MCP server as a child process (the Python SDK's, over stdio): requests routed
//! back by id, its own messages apart, and a child that dies or writes garbage failing its
//! waiting requests with why.

use std::time::Duration;

use serde_json::{Value, json};
use toolgate::gateway::stdio::{ChildSpec, Incoming, StdioChild, StdioError};

use crate::support::*;

fn spec(mode: &str) -> ChildSpec {
    let mut command = vec![
        venv_python().display().to_string(),
        peer_script("py_stdio_server.py").display().to_string(),
    ];
    if !mode.is_empty() {
        command.push(mode.to_owned());
    }
    ChildSpec {
        name: "files".into(),
        command,
        env: Vec::new(),
        cwd: None,
    }
}

/// Starts a child whose own messages land on the receiver.
fn spawn(spec: &ChildSpec) -> (StdioChild, std::sync::mpsc::Receiver<Incoming>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let child = StdioChild::spawn(spec, move |m| {
        let _ = tx.send(m);
    })
    .unwrap();
    (child, rx)
}

async fn initialized(child: &StdioChild) -> Value {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        child.request(init.to_string().as_bytes()),
    )
    .await
    .expect("initialize answered")
    .unwrap()
    .value;
    child
        .send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await
        .unwrap();
    answer
}

fn call(id: u64, tool: &str, args: Value, meta: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args, "_meta": meta}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn answers_come_back_by_id_and_the_servers_own_messages_apart() {
    let (child, incoming) = spawn(&spec(""));
    let init = initialized(&child).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "toolgate-test-stdio");
    // A body with line breaks still goes as one line.
    let listed = child
        .request(b"{\"jsonrpc\": \"2.0\",\n \"id\": \"list\",\n \"method\": \"tools/list\"}")
        .await
        .unwrap()
        .value;
    assert_eq!(listed["id"], "list");
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["read_file", "write_file", "count", "slow", "summarize"]
    );
    // Two requests at once: each gets its own answer.
    let read = call(7, "read_file", json!({"name": "notes.txt"}), json!({}));
    let write = call(
        8,
        "write_file",
        json!({"name": "a.txt", "body": "x"}),
        json!({}),
    );
    let (r, w) = tokio::join!(child.request(&read), child.request(&write));
    assert_eq!(r.unwrap().value["result"]["content"][0]["text"], "hello");
    assert_eq!(
        w.unwrap().value["result"]["content"][0]["text"],
        "wrote a.txt"
    );
    // Progress is the server's own message: it arrives apart, before the answer.
    let counted = child
        .request(&call(
            9,
            "count",
            json!({"steps": 3}),
            json!({"progressToken": "p"}),
        ))
        .await
        .unwrap();
    assert_eq!(counted.value["result"]["content"][0]["text"], "counted 3");
    // Delivered before the answer, and as the child wrote them.
    let mut progress = Vec::new();
    while let Ok(m) = incoming.try_recv() {
        if m.value["method"] == "notifications/progress" {
            assert_eq!(serde_json::from_slice::<Value>(&m.raw).unwrap(), m.value);
            progress.push(m.value["params"]["progress"].as_f64().unwrap());
        }
    }
    assert_eq!(progress, [1.0, 2.0, 3.0]);
    assert!(child.ended().is_none());
}

#[tokio::test]
async fn a_child_that_dies_or_writes_garbage_fails_its_waiting_request_with_why() {
    let (child, _incoming) = spawn(&spec("crash-on-call"));
    initialized(&child).await;
    match child
        .request(&call(2, "read_file", json!({"name": "x"}), json!({})))
        .await
    {
        Err(StdioError::Ended(ended)) => assert_eq!(ended.how, "exited with status 137"),
        other => panic!("{other:?}"),
    }
    assert!(child.ended().is_some());
    // Later requests hear it at once.
    assert!(matches!(
        child
            .request(&call(3, "read_file", json!({}), json!({})))
            .await,
        Err(StdioError::Ended(_))
    ));

    let (child, _incoming) = spawn(&spec("garbage"));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    match child.request(init.to_string().as_bytes()).await {
        Err(StdioError::Ended(ended)) => {
            assert!(ended.how.contains("not JSON-RPC"), "{}", ended.how);
            assert!(ended.how.contains("this is not json"), "{}", ended.how);
        }
        other => panic!("{other:?}"),
    }
    // And it is stopped, with its process group.
    let pid = child.pid();
    eventually("the broken child to be gone", || async move {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_child_gets_only_the_configured_environment_and_a_kill_stops_it() {
    // `env` prints its environment: a line that is not JSON-RPC, quoted in the error.
    let (child, _incoming) = spawn(&ChildSpec {
        name: "env".into(),
        command: vec!["/usr/bin/env".into()],
        env: vec![("ONLY".into(), "this".into())],
        cwd: None,
    });
    let ended = eventually("env to end", || {
        let ended = child.ended();
        async move { ended }
    })
    .await;
    assert!(ended.how.contains("\"ONLY=this\""), "{}", ended.how);

    let (child, _incoming) = spawn(&spec(""));
    initialized(&child).await;
    let pid = child.pid();
    drop(child);
    eventually("a dropped child to be gone", || async move {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (state.is_empty() || state.contains(") Z ")).then_some(())
    })
    .await;
    let missing = StdioChild::spawn(
        &ChildSpec {
            name: "nope".into(),
            command: vec!["/nonexistent/server".into()],
            env: Vec::new(),
            cwd: None,
        },
        |_| {},
    );
    assert!(matches!(missing, Err(StdioError::Spawn { .. })));
}

#[tokio::test]
async fn stderr_of_any_bytes_and_any_length_is_read_and_kept_in_cut_lines() {
    let script = format!(
        "printf 'bad \\377 byte\\n' >&2; head -c 100000 /dev/zero | tr '\\0' x >&2; echo >&2; exec {} {}",
        venv_python().display(),
        peer_script("py_stdio_server.py").display()
    );
    let (child, _incoming) = spawn(&ChildSpec {
        name: "noisy".into(),
        command: vec!["/bin/sh".into(), "-c".into(), script],
        env: Vec::new(),
        cwd: None,
    });
    // The server still starts and answers: its stderr never blocked it.
    initialized(&child).await;
    let read = child
        .request(&call(
            2,
            "read_file",
            json!({"name": "notes.txt"}),
            json!({}),
        ))
        .await
        .unwrap();
    assert_eq!(read.value["result"]["content"][0]["text"], "hello");
    child.kill();
    let ended = eventually("the child to end", || {
        let ended = child.ended();
        async move { ended }
    })
    .await;
    assert!(
        ended.stderr.iter().any(|l| l == "bad \u{fffd} byte"),
        "{:?}",
        ended.stderr
    );
    let long = ended
        .stderr
        .iter()
        .find(|l| l.starts_with("xxx"))
        .expect("the long line, cut");
    assert_eq!(long.len(), 2000);
}
