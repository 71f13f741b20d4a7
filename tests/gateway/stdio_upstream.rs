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

/// SIGTERM, so the gateway stops its stdio servers as it would in production: none is
/// left, nor the bridge's socket.
async fn stop(mut gw: GatewayProc) {
    let pid = gateway_pid(&gw);
    let sockets = bridge_dirs(pid);
    assert!(!sockets.is_empty(), "the bridge's socket is open");
    let (status, _) = gw.proc.terminate().await;
    assert!(status.success(), "{status}");
    assert_eq!(
        children_of(pid),
        Vec::<u32>::new(),
        "no stdio server outlives the gateway"
    );
    for dir in sockets {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}

/// The directories of the bridge sockets the process `pid` listens on.
fn bridge_dirs(pid: u32) -> Vec<PathBuf> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let net = std::fs::read_to_string("/proc/net/unix").unwrap();
    let mut dirs: Vec<PathBuf> = net
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (inodes.iter().any(|i| i == inode) && path.contains("toolgate-stdio-"))
                .then(|| Path::new(path).parent().unwrap().to_owned())
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A gateway fronting the tests' Python stdio server (`mode` as its argument) as `py`,
/// trusting its annotations (all its tools but `write_file` read).
async fn python_gateway(mode: &str, extra: &str) -> GatewayProc {
    let mut command = vec![
        venv_python().display().to_string(),
        peer_script("py_stdio_server.py").display().to_string(),
    ];
    if !mode.is_empty() {
        command.push(mode.to_owned());
    }
    let body = format!(
        "[[upstream]]\nname = \"py\"\ncommand = {command:?}\ntrust_annotations = true\n{extra}\n{}{}",
        test_identities(),
        operators()
    );
    start_gateway(&body).await
}

/// A gateway fronting the sample server (`toolgate sample-server`) as `jira`.
async fn sample_gateway(extra: &str, identities: &str) -> GatewayProc {
    let body = format!(
        "[[upstream]]\nname = \"jira\"\ncommand = [{:?}, \"sample-server\"]\ntrust_annotations = true\n{extra}\n{identities}{}",
        env!("CARGO_BIN_EXE_toolgate"),
        operators()
    );
    start_gateway(&body).await
}

fn post(url: &str, token: &str, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let mut request = http()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    request
}

/// A 2025-11-25 session through the gateway: its id.
async fn open_session(url: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let resp = post(url, token, None, &init).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert!(body["result"]["serverInfo"].is_object(), "{body}");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = post(url, token, Some(&session), &initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    session
}

/// The answer in a JSON or SSE body.
fn answer_in(text: &str) -> Value {
    crate::decisions::answer_of(text).unwrap_or_else(|| panic!("no answer in {text}"))
}

async fn call(
    url: &str,
    token: &str,
    session: Option<&str>,
    id: u64,
    tool: &str,
    args: Value,
) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}});
    let resp = post(url, token, session, &body).send().await.unwrap();
    answer_in(&resp.text().await.unwrap())
}

/// A 2025-11-25 session on the Python server `py`, whose tools the catalog has learned.
async fn listed_session(gw: &GatewayProc) -> (String, String) {
    let url = gw.url("py");
    let session = open_session(&url, AGENT_TOKEN).await;
    list(&url, &session).await;
    catalog_learned(gw, "py").await;
    (url, session)
}

/// tools/list on a session, so that the gateway knows the tools' classes.
async fn list(url: &str, session: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": "list", "method": "tools/list"});
    let resp = post(url, AGENT_TOKEN, Some(session), &body)
        .send()
        .await
        .unwrap();
    answer_in(&resp.text().await.unwrap())
}

/// `read_file` of the Python server's notes.txt on a session (its answer is "hello").
async fn read_notes(url: &str, session: &str, id: u64) -> Value {
    call(
        url,
        AGENT_TOKEN,
        Some(session),
        id,
        "read_file",
        json!({"name": "notes.txt"}),
    )
    .await
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(&pid.to_string()))
        })
        .collect()
}

fn gateway_pid(gw: &GatewayProc) -> u32 {
    gw.proc.child.id().expect("the gateway runs")
}

async fn stdio_status(gw: &GatewayProc, upstream: &str) -> Value {
    let status = gw.control_get(crate::holds::VIEWER, "/api/v1/status").await;
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .unwrap_or_else(|| panic!("{upstream} in {status}"))
        .clone()
}

/// The Python SDK's client that answers sampling, run against `url`: what it saw.
async fn sampling_client(url: &str, tool: &str, args: Value, mode: &str) -> Value {
    let args = args.to_string();
    run_py_peer(
        "py_sampling_client.py",
        &[url, AGENT_TOKEN, tool, &args, mode],
    )
    .await
}

/// The server asked the client once, with `prompt`, and its answer is in the result.
fn assert_sampled(seen: &Value, prompt: &str) {
    assert_eq!(seen["prompts"], json!([prompt]), "{seen}");
    let text = seen["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("a short summary"), "{seen}");
}

#[tokio::test]
async fn a_handshake_era_servers_sampling_request_reaches_a_2026_07_28_client_as_input_required() {
    // server-everything over stdio speaks 2025-11-25 only, and registers its sampling
    // tool for a client that declares sampling: the gateway initialises it with the
    // 2026-07-28 client's capabilities, and asks that client through input_required.
    let body = format!(
        "[[upstream]]\nname = \"everything\"\ncommand = [\"node\", {:?}, \"stdio\"]\n\
         [[risk]]\nupstream = \"everything\"\ntool = \"trigger-sampling-request\"\nrisk = \"read\"\n{}{}",
        server_everything_js().display().to_string(),
        test_identities(),
        operators()
    );
    let gw = start_gateway(&body).await;
    let seen = sampling_client(
        &gw.url("everything"),
        "trigger-sampling-request",
        json!({"prompt": "the quarterly report", "maxTokens": 50}),
        "auto",
    )
    .await;
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
    assert_sampled(
        &seen,
        "Resource trigger-sampling-request context: the quarterly report",
    );
    // One decision: the call again with the answer runs nothing new.
    let decided = crate::decisions::decisions(&gw).await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["outcome"], "allow");
    assert_eq!(
        stdio_status(&gw, "everything").await["stdio"]["waiting_for_input"],
        0
    );
    stop(gw).await;
}

#[tokio::test]
async fn progress_and_a_sampling_request_of_a_stdio_server_reach_the_client() {
    let gw = python_gateway("", "").await;
    prime_catalog(&gw).await;
    let seen = sampling_client(
        &gw.url("py"),
        "summarize",
        json!({"text": "the quarterly report"}),
        "legacy",
    )
    .await;
    assert_eq!(seen["prompts"], json!(["Summarize: the quarterly report"]));
    assert_eq!(seen["progress"], json!([1.0, 2.0]));
    assert_eq!(
        seen["result"]["content"][0]["text"],
        "summary: a short summary"
    );
    stop(gw).await;
}

#[tokio::test]
async fn a_child_killed_mid_call_fails_the_call_shows_in_status_and_the_next_call_starts_another() {
    let gw = python_gateway("", "").await;
    let (url, session) = listed_session(&gw).await;
    let children = children_of(gateway_pid(&gw));
    assert_eq!(children.len(), 1, "one child for the session");
    let slow = tokio::spawn({
        let (url, session) = (url.clone(), session.clone());
        async move { call(&url, AGENT_TOKEN, Some(&session), 1, "slow", json!({})).await }
    });
    eventually("the slow call to be decided", || async {
        (!crate::decisions::decisions(&gw).await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &children[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let answer = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the waiting client is answered")
        .unwrap();
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ended (killed by signal 9)"), "{answer}");
    let completed = eventually("call.completed", || async {
        stored_events(&gw, "call.completed").await.pop()
    })
    .await;
    assert_eq!(completed["result"], "upstream_error");
    let status = eventually("the death in /status", || async {
        let up = stdio_status(&gw, "py").await;
        up["stdio"]["last_exit"].is_object().then_some(up)
    })
    .await;
    assert_eq!(status["url"], format!("stdio: {}", venv_python().display()));
    assert_eq!(status["stdio"]["last_exit"]["how"], "killed by signal 9");
    assert_eq!(status["stdio"]["processes"], 0);
    assert!(gw.log().contains("stdio server ended"), "logged");

    // The next call on the session starts another child.
    let answer = read_notes(&url, &session, 2).await;
    assert_eq!(result_text(&answer), "hello", "{answer}");
    let now = children_of(gateway_pid(&gw));
    assert_eq!(now.len(), 1);
    assert_ne!(now, children);
    let status = stdio_status(&gw, "py").await;
    assert_eq!(status["stdio"]["restarts"], 1);
    assert_eq!(status["stdio"]["started"], 2);
    assert_eq!(status["stdio"]["processes"], 1);
    stop(gw).await;
}

#[tokio::test]
async fn a_hundred_sessions_opened_and_closed_leave_no_child_behind() {
    let gw = sample_gateway(
        "max_processes = 4\nmax_processes_per_identity = 4",
        &test_identities(),
    )
    .await;
    let url = gw.url("jira");
    let pid = gateway_pid(&gw);
    for round in 0..25 {
        let sessions: Vec<String> =
            futures_util::future::join_all((0..4).map(|_| open_session(&url, AGENT_TOKEN))).await;
        assert_eq!(
            children_of(pid).len(),
            4,
            "round {round}: a child per session"
        );
        for session in sessions {
            let resp = http()
                .delete(&url)
                .bearer_auth(AGENT_TOKEN)
                .header("mcp-session-id", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
    eventually("every child to be gone", || async {
        children_of(pid).is_empty().then_some(())
    })
    .await;
    let status = stdio_status(&gw, "jira").await;
    assert_eq!(status["stdio"]["started"], 100);
    assert_eq!(status["stdio"]["processes"], 0);
    assert_eq!(status["stdio"]["sessions"], 0);
    assert_eq!(
        status["stdio"]["last_exit"],
        Value::Null,
        "none died on its own"
    );
    stop(gw).await;
}

/// A 2026-07-28 call of the sample server's `jira_get_issue`: its HTTP status and answer.
async fn modern_get_issue(gw: &GatewayProc, token: &str, id: u64) -> (u16, Value) {
    let body = modern_call(
        id,
        "jira_get_issue",
        json!({"issueKey": "OPS-1"}),
        json!({}),
    );
    let resp = modern_request(&http(), &gw.url("jira"), "jira_get_issue", body.to_string())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, answer_in(&resp.text().await.unwrap()))
}

#[tokio::test]
async fn pooled_children_serve_one_identity_each_within_max_processes_and_idle_ones_stop() {
    let gw = sample_gateway(
        "max_processes = 2\nmax_processes_per_identity = 2\nidle_timeout_secs = 2\nhold_timeout_secs = 2",
        &owned_identities(),
    )
    .await;
    let pid = gateway_pid(&gw);
    list_tools(&gw.url("jira"), AGENT_TOKEN).await;
    catalog_learned(&gw, "jira").await;
    // Two identities, two children: a pooled child serves one identity only.
    let (status, answer) = modern_get_issue(&gw, AGENT_TOKEN, 1).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert!(result_text(&answer).contains("OPS-1"), "{answer}");
    assert_eq!(
        children_of(pid).len(),
        1,
        "the agent's child serves it again"
    );
    let (status, _) = modern_get_issue(&gw, crate::holds::OTHER_AGENT, 2).await;
    assert_eq!(status, 200);
    assert_eq!(children_of(pid).len(), 2);

    // Two sessions take both places (idle pooled children make room), and then a
    // request that needs a third child is refused, saying why.
    let first = open_session(&gw.url("jira"), AGENT_TOKEN).await;
    let second = open_session(&gw.url("jira"), crate::holds::OTHER_AGENT).await;
    assert_eq!(children_of(pid).len(), 2);
    let (status, refused) = modern_get_issue(&gw, AGENT_TOKEN, 3).await;
    assert_eq!(status, 503, "{refused}");
    let text = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("max_processes (2)"), "{refused}");
    // A session is its identity's: another's id finds nothing.
    let stolen = call(
        &gw.url("jira"),
        AGENT_TOKEN,
        Some(&second),
        4,
        "jira_get_issue",
        json!({"issueKey": "OPS-1"}),
    )
    .await;
    assert!(stolen.get("result").is_none(), "{stolen}");

    // Unused for idle_timeout_secs, the sessions' children stop; the sessions are gone.
    eventually_within(15, "idle children to stop", || async {
        children_of(pid).is_empty().then_some(())
    })
    .await;
    let resp = post(
        &gw.url("jira"),
        AGENT_TOKEN,
        Some(&first),
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404, "an idle session ended");
    assert_eq!(stdio_status(&gw, "jira").await["stdio"]["processes"], 0);
    stop(gw).await;
}

#[tokio::test]
async fn a_stdio_server_that_never_answers_initialize_is_killed_and_reported() {
    let body = format!(
        "[[upstream]]\nname = \"mute\"\ncommand = [\"sleep\", \"60\"]\ninitialize_timeout_secs = 1\n{}{}",
        test_identities(),
        operators()
    );
    let gw = start_gateway(&body).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let resp = post(&gw.url("mute"), AGENT_TOKEN, None, &init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["error"]["message"],
        "toolgate: the stdio server of upstream \"mute\" did not answer initialize within 1 s; killed"
    );
    let status = stdio_status(&gw, "mute").await;
    assert_eq!(
        status["stdio"]["last_exit"]["how"],
        "did not answer initialize within 1 s; killed"
    );
    eventually("the mute child to be gone", || async {
        children_of(gateway_pid(&gw)).is_empty().then_some(())
    })
    .await;
    stop(gw).await;
}

#[tokio::test]
async fn one_identity_takes_at_most_its_share_of_the_processes() {
    // max_processes_per_identity is half of max_processes unless set.
    let gw = sample_gateway("max_processes = 4", &owned_identities()).await;
    let url = gw.url("jira");
    open_session(&url, AGENT_TOKEN).await;
    open_session(&url, AGENT_TOKEN).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let resp = post(&url, AGENT_TOKEN, None, &init).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let refused: Value = resp.json().await.unwrap();
    assert_eq!(
        refused["error"]["message"],
        "toolgate: this identity already runs max_processes_per_identity (2) stdio servers of upstream \"jira\", all in use; end a session or try again later"
    );
    // Another identity still gets its own.
    open_session(&url, crate::holds::OTHER_AGENT).await;
    assert_eq!(children_of(gateway_pid(&gw)).len(), 3);
    stop(gw).await;
}

#[tokio::test]
async fn clients_that_hang_up_during_initialize_leave_no_place_taken() {
    // The Python server takes a few hundred milliseconds to start: every client below
    // is gone before its initialize is answered.
    let gw = python_gateway("", "max_processes = 2\nmax_processes_per_identity = 2").await;
    let url = gw.url("py");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    for _ in 0..8 {
        let sent = post(&url, AGENT_TOKEN, None, &init)
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        assert!(sent.is_err(), "the client hung up first");
    }
    eventually("every place to be given back", || async {
        let up = stdio_status(&gw, "py").await;
        (up["stdio"]["processes"] == 0 && children_of(gateway_pid(&gw)).is_empty()).then_some(())
    })
    .await;
    let up = stdio_status(&gw, "py").await;
    assert_eq!(
        up["stdio"]["last_exit"],
        Value::Null,
        "a hang-up is no death"
    );
    assert_eq!(up["stdio"]["restarts"], 0);
    // Both places are free: two sessions open.
    open_session(&url, AGENT_TOKEN).await;
    open_session(&url, AGENT_TOKEN).await;
    stop(gw).await;
}

#[tokio::test]
async fn a_client_declaring_another_version_cannot_switch_the_upstreams_era() {
    let gw = python_gateway("", "").await;
    let url = gw.url("py");
    let odd = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let _ = http()
        .post(&url)
        .bearer_auth(AGENT_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .body(odd.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await;
    // Another identity's 2026-07-28 client is served by the server's own 2026-07-28.
    let seen = run_py_client(
        &url,
        crate::holds::OTHER_AGENT,
        "read_file",
        &json!({"name": "notes.txt"}),
        "auto",
    )
    .await;
    assert_eq!(seen["protocol_version"], "2026-07-28");
    assert!(
        !gw.log().contains("speaks the handshake era"),
        "{}",
        gw.log()
    );
    stop(gw).await;
}

#[tokio::test]
async fn ids_a_server_could_answer_otherwise_and_ids_still_running_are_refused() {
    let gw = python_gateway("", "").await;
    let (url, session) = listed_session(&gw).await;
    // 8.0 is 8 to one server and not an id to another: refused at once, not left hanging.
    let body = r#"{"jsonrpc":"2.0","id":8.0,"method":"ping"}"#;
    let resp = http()
        .post(&url)
        .bearer_auth(AGENT_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .timeout(Duration::from_secs(5))
        .body(body)
        .send()
        .await
        .unwrap();
    let answer = answer_in(&resp.text().await.unwrap());
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a string or an integer"),
        "{answer}"
    );

    // A call whose client hung up is still running: its id is not given to another
    // call, which would get its late answer.
    let abandoned = post(
        &url,
        AGENT_TOKEN,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "slow", "arguments": {}}}),
    )
    .timeout(Duration::from_millis(500))
    .send()
    .await;
    assert!(abandoned.is_err(), "the client hung up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = read_notes(&url, &session, 5).await;
    assert_eq!(again["error"]["code"], -32600, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request id 5 is still running on the server"),
        "{again}"
    );
    let other = read_notes(&url, &session, 6).await;
    assert_eq!(result_text(&other), "hello", "{other}");
    stop(gw).await;
}

#[tokio::test]
async fn an_approved_call_that_asks_its_client_something_is_not_held_again() {
    // The sampling tool as a write: a token's call is held, and after the approval its
    // server asks the client to sample; the call again that brings the answer continues
    // the approved call (nothing new runs), so it is neither decided nor held again.
    let body = format!(
        "[[upstream]]\nname = \"everything\"\ncommand = [\"node\", {:?}, \"stdio\"]\nhold_timeout_secs = 30\n\
         [[risk]]\nupstream = \"everything\"\ntool = \"trigger-sampling-request\"\nrisk = \"write\"\n{}{}",
        server_everything_js().display().to_string(),
        owned_identities(),
        operators()
    );
    let gw = start_gateway(&body).await;
    let client = tokio::spawn({
        let url = gw.url("everything");
        async move {
            sampling_client(
                &url,
                "trigger-sampling-request",
                json!({"prompt": "the change", "maxTokens": 50}),
                "auto",
            )
            .await
        }
    });
    let call_id = wait_for_hold(&gw, "waiting").await;
    let (status, body) = resolve(&gw, BOB, &call_id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let seen = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .unwrap()
        .unwrap();
    assert_sampled(
        &seen,
        "Resource trigger-sampling-request context: the change",
    );
    let decided = crate::decisions::decisions(&gw).await;
    assert_eq!(decided.len(), 1, "one decision, the hold: {decided:?}");
    assert_eq!(decided[0]["outcome"], "hold");
    assert!(
        gw.log()
            .contains("call again continues a call waiting on its stdio server"),
        "{}",
        gw.log()
    );
    stop(gw).await;
}

#[tokio::test]
async fn a_server_that_dies_while_a_process_it_started_holds_its_stdout_is_seen_dead() {
    let body = format!(
        "[[upstream]]\nname = \"jira\"\ncommand = [\"sh\", \"-c\", \"sleep 100000 & exec {} sample-server\"]\ntrust_annotations = true\n{}{}",
        env!("CARGO_BIN_EXE_toolgate"),
        test_identities(),
        operators()
    );
    let gw = start_gateway(&body).await;
    let url = gw.url("jira");
    let session = open_session(&url, AGENT_TOKEN).await;
    let server = children_of(gateway_pid(&gw));
    assert_eq!(server.len(), 1);
    let sleeper = children_of(server[0]);
    assert_eq!(sleeper.len(), 1, "the server's own child holds its stdout");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let up = eventually("the death in /status", || async {
        let up = stdio_status(&gw, "jira").await;
        up["stdio"]["last_exit"].is_object().then_some(up)
    })
    .await;
    assert_eq!(up["stdio"]["last_exit"]["how"], "killed by signal 9");
    assert_eq!(up["health"], "failing");
    let gone = sleeper[0];
    eventually("the rest of its group to be gone", || async move {
        let state = std::fs::read_to_string(format!("/proc/{gone}/stat")).unwrap_or_default();
        (state.is_empty() || state.contains(") Z ")).then_some(())
    })
    .await;
    // The session's next request starts it again.
    let listed = list(&url, &session).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");
    assert_eq!(stdio_status(&gw, "jira").await["health"], "ok");
    stop(gw).await;
}
