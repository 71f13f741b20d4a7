//! `toolgate demo`: the whole system in one process. Checked from outside, through the
//! control API, a real MCP client and a real terminal.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::*;

/// A headless demo and what it printed.
pub(crate) struct Demo {
    child: Child,
    pub(crate) endpoint: String,
    pub(crate) control: String,
    upstream: String,
    pub(crate) operator: String,
    /// The agents' credentials: ci-bot's and support-legacy's tokens, alice's JWT.
    pub(crate) ci_bot: String,
    pub(crate) support: String,
    pub(crate) alice: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    pub(crate) async fn start(extra: &[&str]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("demo.err");
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(["demo", "--no-console"])
            .args(extra)
            // The agents log each answer they get at debug level.
            .env("TOOLGATE_LOG", "toolgate::demo=debug,toolgate=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("toolgate demo starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let done = line.starts_with("Stop with Ctrl-C");
                printed.push(line);
                if done {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the demo prints where to connect");
        // The words after `prefix` on the line that starts with it.
        let words = |prefix: &str| -> Vec<String> {
            printed
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in {printed:#?}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let after = |prefix: &str| words(prefix).swap_remove(0);
        // `ci-bot TOKEN · support-legacy TOKEN`
        let agents = words("toolgate demo: agent tokens ");
        let token_of = |name: &str| {
            let at = agents.iter().position(|w| w == name);
            at.and_then(|i| agents.get(i + 1))
                .unwrap_or_else(|| panic!("no token for {name} in {agents:?}"))
                .clone()
        };
        Demo {
            endpoint: after("toolgate demo: MCP endpoint "),
            control: after("toolgate demo: control API "),
            upstream: after("toolgate demo: sample upstream "),
            operator: after("toolgate demo: operator token "),
            ci_bot: token_of("ci-bot"),
            support: token_of("support-legacy"),
            alice: after("toolgate demo: OAuth user alice@example.com: Bearer "),
            child,
            stderr,
            _dir: dir,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let resp = http()
            .get(format!("{}{path}", self.control))
            .bearer_auth(&self.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }

    async fn decisions(&self) -> Vec<Value> {
        self.get("/api/v1/decisions?limit=1000").await["decisions"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM, as Ctrl-C or a service manager would, and waits (10 s at most) for
    /// the demo to exit 0; how long that took.
    async fn terminate(&mut self) -> Duration {
        let pid = self.child.id().expect("the demo is running");
        let started = Instant::now();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the demo exits within 10 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}: {}", self.log());
        started.elapsed()
    }
}

fn port_of(url: &str) -> u16 {
    reqwest::Url::parse(url).unwrap().port().unwrap()
}

#[tokio::test]
async fn the_headless_demo_decides_holds_and_reclassifies_then_leaves_nothing_behind() {
    let mut demo = Demo::start(&[]).await;

    // Every outcome arrives, from all three identities.
    let decisions = eventually_within(30, "allow, deny and hold from three identities", || async {
        let d = demo.decisions().await;
        let outcomes: HashSet<String> = d
            .iter()
            .map(|x| x["outcome"].as_str().unwrap().to_owned())
            .collect();
        let who: HashSet<String> = d
            .iter()
            .map(|x| x["identity"]["name"].as_str().unwrap().to_owned())
            .collect();
        (outcomes.len() == 3 && who.len() == 3).then_some(d)
    })
    .await;
    let kinds: HashSet<&str> = decisions
        .iter()
        .map(|d| d["identity"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, HashSet::from(["oauth", "api_token"]));

    // A waiting hold is approved; the agent on its stream gets the upstream's real answer.
    let hold = eventually_within(20, "a waiting pull request", || async {
        demo.get("/api/v1/holds").await["holds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| {
                h["phase"] == "waiting" && h["call"]["tool"] == "bitbucket_create_pull_request"
            })
            .cloned()
    })
    .await;
    let call_id = hold["call_id"].as_str().unwrap().to_owned();
    let resp = http()
        .post(format!("{}/api/v1/holds/{call_id}/approve", demo.control))
        .bearer_auth(&demo.operator)
        .header("content-type", "application/json")
        .body(r#"{"reason":"demo test"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let log = eventually_within(15, "the agent's answer", || async {
        let log = demo.log();
        log.contains("pullRequest").then_some(log)
    })
    .await;
    assert!(
        log.lines()
            .any(|l| l.contains("agent=\"ci-bot\"") && l.contains("pullRequest")),
        "ci-bot got the pull request: {log}"
    );

    // A risk edit changes the next decision for that tool: run_pipeline is unclassified,
    // so ci-bot's runs are denied; as a read they are allowed.
    let tools = demo.get("/api/v1/tools").await;
    let pipeline = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bitbucket_run_pipeline")
        .unwrap()
        .clone();
    assert_eq!(pipeline["risk"], "unclassified", "it has no annotations");
    let resp = http()
        .put(format!(
            "{}/api/v1/tools/atlassian/bitbucket_run_pipeline/risk",
            demo.control
        ))
        .bearer_auth(&demo.operator)
        .header("content-type", "application/json")
        .body(json!({"risk": "read", "expected_version": pipeline["version"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let edited_at: Value = resp.json().await.unwrap();
    let edit_seq = edited_at["seq"].as_u64().unwrap();
    let next = eventually_within(40, "a run_pipeline decision after the edit", || async {
        demo.decisions().await.into_iter().rev().find(|d| {
            d["tool"] == "bitbucket_run_pipeline" && d["seq"].as_u64().unwrap() > edit_seq
        })
    })
    .await;
    assert_eq!(
        (next["risk"].as_str(), next["outcome"].as_str()),
        (Some("read"), Some("allow")),
        "{next}"
    );

    // SIGTERM with holds open: exit 0 within 5 s, and nothing left listening.
    assert!(
        !demo.get("/api/v1/holds").await["holds"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let pid = demo.child.id().unwrap();
    let took = demo.terminate().await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for url in [&demo.endpoint, &demo.control, &demo.upstream] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port_of(url)))
                .await
                .is_err(),
            "{url} still accepts connections"
        );
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process is gone"
    );
}

#[tokio::test]
async fn a_demo_restarted_on_its_data_dir_keeps_its_tokens_and_refuses_them_when_others_can_read_them()
 {
    let data = tempfile::tempdir().unwrap();
    let args = ["--no-agents", "--data-dir", data.path().to_str().unwrap()];
    let mut first = Demo::start(&args).await;
    let operator = first.operator.clone();
    let control = first.control.clone();
    first.terminate().await;

    let mut second = Demo::start(&args).await;
    assert_eq!(second.operator, operator, "the operator token is kept");
    assert_eq!(
        second.control, control,
        "and the control port, so that a console reconnects by itself"
    );
    let holds = |token: &str| {
        http()
            .get(format!("{}/api/v1/holds", second.control))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(holds(&operator).await.unwrap().status(), 200);
    assert_eq!(holds("tg_not-the-demos").await.unwrap().status(), 401);
    second.terminate().await;

    // Kept secrets that other users can read are refused before anything starts.
    let path = data.path().join("demo-secrets.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["demo", "--no-console"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(30), refused)
        .await
        .expect("the demo stops at once")
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "toolgate: the demo's secrets {0} can be read by other users (mode 644); run `chmod 600 {0}`\n",
            path.display()
        )
    );
    assert!(refused.stdout.is_empty());
}

#[tokio::test]
async fn the_sample_upstream_serves_the_python_client_in_both_eras_and_its_data_changes() {
    let demo = Demo::start(&["--no-agents"]).await;
    let url = demo.upstream.clone();

    let created = run_py_client(
        &url,
        "unused",
        "jira_create_issue",
        &json!({"projectKey": "PAY", "summary": "Python was here"}),
        "legacy",
    )
    .await;
    assert_eq!(created["protocol_version"], "2025-11-25");
    assert_eq!(created["tools"].as_array().unwrap().len(), 15);
    let text = created["result"]["content"][0]["text"].as_str().unwrap();
    let key = serde_json::from_str::<Value>(text).unwrap()["created"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(key, "PAY-3");

    let found = run_py_client(
        &url,
        "unused",
        "jira_search_issues",
        &json!({"text": "python"}),
        "auto",
    )
    .await;
    assert_eq!(found["protocol_version"], "2026-07-28");
    let text = found["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap()["issues"][0]["key"],
        key
    );

    let deleted = run_py_client(
        &url,
        "unused",
        "confluence_delete_page",
        &json!({"pageId": "1003"}),
        "auto",
    )
    .await;
    assert_ne!(deleted["result"]["is_error"], true, "{deleted}");
    let gone = run_py_client(
        &url,
        "unused",
        "confluence_get_page",
        &json!({"pageId": "1003"}),
        "legacy",
    )
    .await;
    assert_eq!(gone["result"]["is_error"], true, "{gone}");
    assert_eq!(
        gone["result"]["content"][0]["text"],
        "page 1003 does not exist"
    );
}

#[tokio::test]
async fn the_full_demo_in_a_terminal_approves_with_keys_and_quits_cleanly() {
    let config_home = tempfile::tempdir().unwrap();
    let command = format!(
        "{} demo; echo demo-exit=$?; sleep 60",
        env!("CARGO_BIN_EXE_toolgate")
    );
    let tmux = Tmux::start(
        &command,
        &[("XDG_CONFIG_HOME", config_home.path().to_str().unwrap())],
        120,
        40,
    );
    tmux.wait_for("press : for views, ? for help").await;
    tmux.wait_for("● connected").await;
    // Once decisions are on screen, the tool column is named after the one upstream.
    let screen = tmux.wait_for("tool (atlassian)").await;
    assert_capture_is_current(&screen);
    tmux.send(&[":held", "Enter"]);
    let screen = tmux.wait_for("waiting").await;
    let first = screen
        .lines()
        .find(|l| l.contains("waiting"))
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    tmux.send(&["a"]);
    tmux.wait_for("Approve held call").await;
    tmux.send(&["y"]);
    tmux.wait_for("approved by operator").await;
    assert!(
        tmux.screen().contains(&first),
        "the approved call is the first in the queue"
    );

    tmux.send(&["q"]);
    let screen = tmux.wait_for("demo-exit=").await;
    assert!(screen.contains("demo-exit=0"), "{screen}");
    // The shell's screen is back: the console left its alternate screen.
    assert!(!screen.contains("held calls"), "{screen}");
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", &format!("{} demo$", env!("CARGO_BIN_EXE_toolgate"))])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "a demo process is left: {:?}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

/// The README's console capture must show the console as it is now: its column headers
/// and key hints. `./.ci/capture-console` refreshes it.
fn assert_capture_is_current(screen: &str) {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let capture = readme
        .split("<!-- console-capture:start -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README.md has a console capture");
    let lines: Vec<&str> = capture.lines().collect();
    let now: Vec<&str> = screen.lines().collect();
    let hints = |lines: &[&str]| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with("? help"))
            .map(|l| l.trim_end().to_owned())
    };
    // Column widths follow what the rows hold, so the names are compared, not the spacing;
    // and the optional columns (policy, took), which a row of long values pushes out at
    // 120 columns, are left out: whether they show depends on the demo's random calls.
    let columns = |line: &str| {
        line.split_whitespace()
            .filter(|name| !["policy", "took"].contains(name))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (readme_hints, screen_hints) = (hints(&lines), hints(&now));
    assert!(
        screen_hints.is_some(),
        "the console shows its key hints:\n{screen}"
    );
    assert_eq!(
        (columns(lines[2]), readme_hints),
        (columns(now[2]), screen_hints),
        "README.md's console capture is out of date: run ./.ci/capture-console"
    );
}

#[tokio::test]
async fn sigterm_stops_the_demo_and_gives_the_terminal_back() {
    let config_home = tempfile::tempdir().unwrap();
    // A flag of its own, so that pgrep finds this demo and no other test's.
    let command = format!(
        "{} demo --bell off; echo demo-exit=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | sed 's/^/tty:/'; sleep 60",
        env!("CARGO_BIN_EXE_toolgate")
    );
    let tmux = Tmux::start(
        &command,
        &[("XDG_CONFIG_HOME", config_home.path().to_str().unwrap())],
        100,
        30,
    );
    // The agents keep calling, so the count may pass 1 between two looks.
    tmux.wait_until("a held call", |screen| {
        screen
            .split_once("held: ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|count| count.parse::<u32>().ok())
            .is_some_and(|count| count >= 1)
    })
    .await;
    let pattern = format!("{} demo --bell off$", env!("CARGO_BIN_EXE_toolgate"));
    let pids = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    let pid = String::from_utf8(pids.stdout).unwrap().trim().to_owned();
    assert!(!pid.is_empty() && !pid.contains('\n'), "one demo: {pid:?}");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let screen = tmux.wait_for("demo-exit=").await;
    assert!(screen.contains("demo-exit=0"), "{screen}");
    assert!(
        !screen.contains("decisions"),
        "the console's screen is gone:\n{screen}"
    );
    // Raw mode is off again: line editing and echo are back.
    let screen = tmux.wait_for("tty:").await;
    let modes: Vec<&str> = screen
        .lines()
        .filter_map(|l| l.strip_prefix("tty:"))
        .collect();
    assert_eq!(modes, ["icanon", "echo"], "{screen}");
}
