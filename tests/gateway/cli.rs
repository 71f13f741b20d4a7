//! The command line, as an operator meets it.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::control::{APPROVER, VIEWER, pending_holds, setup, start_hold};
use crate::support::*;

fn toolgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .output()
        .expect("toolgate runs")
}

#[test]
fn help_documents_every_subcommand() {
    let out = toolgate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (command, about) in [
        ("gateway", "Run the MCP gateway"),
        ("token", "Manage API tokens"),
        ("store", "Work with the gateway's store"),
    ] {
        assert!(
            help.contains(command) && help.contains(about),
            "{command} missing from:\n{help}"
        );
    }
    let token_help = String::from_utf8(toolgate(&["token", "new", "--help"]).stdout).unwrap();
    assert!(token_help.contains("token_sha256"), "{token_help}");
    let policy_help = String::from_utf8(toolgate(&["policy", "--help"]).stdout).unwrap();
    for (command, about) in [
        ("check", "Validate a policy file"),
        ("pull", "Print the gateway's policy in force"),
        ("push", "Put a policy file in force"),
        ("log", "List the gateway's stored policy versions"),
        (
            "diff",
            "Show what changed between two stored policy versions",
        ),
    ] {
        assert!(
            policy_help.contains(&format!("  {command} ")) && policy_help.contains(about),
            "policy {command} missing from:\n{policy_help}"
        );
    }
}

#[test]
fn token_new_prints_a_token_and_the_hash_of_that_token() {
    let out = toolgate(&["token", "new", "ci-bot"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let value_of = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_owned()
    };
    let token = value_of("token");
    assert!(token.starts_with("tg_"));
    assert_eq!(value_of("token_sha256"), sha256_hex(&token));
    assert!(chrono::DateTime::parse_from_rfc3339(&value_of("issued")).is_ok());
    assert!(text.contains("name = \"ci-bot\""));
    assert_ne!(token, value_of_other_run());
}

#[test]
fn keygen_writes_a_private_key_once_and_a_gateway_refuses_a_readable_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toolgate.key");
    let out = toolgate(&["keygen", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let again = toolgate(&["keygen", "-o", path.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing key was overwritten");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), key);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nkey_file = \"toolgate.key\"\n[[upstream]]\nname = \"x\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
    )
    .unwrap();
    let refused = toolgate(&["gateway", "--config", config.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

fn value_of_other_run() -> String {
    let text = String::from_utf8(toolgate(&["token", "new", "x"]).stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned()
}

#[test]
fn a_config_typo_fails_the_start_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[gateway]\n\n[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\nhide_denied_tool = true\n",
    )
    .unwrap();
    let out = toolgate(&["gateway", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml: line 6: unknown field `hide_denied_tool`"),
        "{err}"
    );
}

#[test]
fn policy_check_accepts_the_default_and_places_an_error() {
    let default = repo_root().join("src/gateway/policy/default.cedar");
    let out = toolgate(&["policy", "check", default.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .ends_with(": ok, 5 policies\n")
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let out = toolgate(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.cedar:2:8: invalid policy"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn the_console_refuses_an_unknown_or_broken_theme_before_taking_the_terminal() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["console", "--theme", "neon", "--token", "x"])
        .env("XDG_CONFIG_HOME", empty.path())
        .env_remove("TOOLGATE_CONSOLE_CONFIG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("theme \"neon\": no such theme; the shipped ones are default, light, high-contrast, mono"), "{err}");

    let home = tempfile::tempdir().unwrap();
    let themes = home.path().join("toolgate/themes");
    std::fs::create_dir_all(&themes).unwrap();
    std::fs::write(
        themes.join("ops.toml"),
        "[outcome]\nallow = { fg = \"grene\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["console", "--theme", "ops", "--token", "x"])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("ops.toml: line 2: unknown colour \"grene\""),
        "{err}"
    );
}

fn console(args: &[&str], config_home: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .arg("console")
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("TOOLGATE_CONSOLE_CONFIG")
        .env_remove("TOOLGATE_TOKEN")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

#[test]
fn the_console_config_path_is_printed_and_a_bad_config_names_file_line_and_key() {
    let home = tempfile::tempdir().unwrap();
    let out = console(&["--print-config-path"], home.path());
    assert!(out.status.success());
    let path = home.path().join("toolgate/config.toml");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        path.display().to_string()
    );
    let elsewhere = home.path().join("ops.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["console", "--print-config-path"])
        .env("TOOLGATE_CONSOLE_CONFIG", &elsewhere)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        elsewhere.display().to_string()
    );

    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "ring = 100\nbel = \"off\"\n").unwrap();
    let out = console(&["--token", "x"], home.path());
    assert_eq!(out.status.code(), Some(1), "an error, not a panic");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:2: bel: unknown field `bel`", path.display())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(
        &path,
        "[[context]]\nname = \"prod\"\ngateway = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let err = String::from_utf8(console(&["--context", "stage"], home.path()).stderr).unwrap();
    assert!(
        err.contains("--context: no context is named \"stage\"; the contexts are prod"),
        "{err}"
    );
    let err = String::from_utf8(console(&["--context", "prod"], home.path()).stderr).unwrap();
    assert!(err.contains("no operator token"), "{err}");
}

#[test]
fn key_conflicts_are_reported_when_the_console_starts() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("toolgate/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "[keys]\napprove = \"d\"\n").unwrap();
    // Without a terminal the console stops right after its start-up checks.
    let out = console(&["--token", "x"], home.path());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("key d was deny's by default and is now approve's; deny has no key left"),
        "{err}"
    );
    assert!(err.contains("needs a terminal"), "{err}");
}

/// `toolgate ARGS` against `gw`'s control API as `token`, stdout going to `stdout` and
/// stderr piped. Killed when dropped, also when the test fails.
fn control_cli(
    gw: &GatewayProc,
    token: &str,
    args: &[&str],
    stdout: impl Into<Stdio>,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .env("TOOLGATE_GATEWAY", format!("http://{}", gw.control))
        .env("TOOLGATE_TOKEN", token)
        // The event stream's "connected" line is information, not output under test.
        .env("TOOLGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("toolgate runs")
}

/// Runs `toolgate ARGS` to its end (within 30 s): its status, stdout and stderr.
pub async fn run_control_cli(
    gw: &GatewayProc,
    token: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        control_cli(gw, token, args, Stdio::piped()).wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("toolgate {args:?} did not finish within 30 s"))
    .unwrap();
    (
        out.status,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Reads the first line of `toolgate ARGS`, then closes the pipe as `head -1` does. The
/// line, and how the process ended, which it must within 10 s.
async fn first_line_then_hang_up(
    gw: &GatewayProc,
    args: &[&str],
) -> (String, std::process::ExitStatus, String) {
    let mut child = control_cli(gw, VIEWER, args, Stdio::piped());
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line))
        .await
        .unwrap_or_else(|_| panic!("toolgate {args:?} printed no line within 30 s"))
        .unwrap();
    drop(reader);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("toolgate {args:?} kept running after its reader left"))
        .unwrap();
    (line, out.status, String::from_utf8(out.stderr).unwrap())
}

/// Runs `toolgate ARGS` into a pipe whose reader is gone before the first write, so
/// that write fails for certain. How it ended (within 10 s), and its stderr.
async fn into_a_closed_pipe(gw: &GatewayProc, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = control_cli(gw, VIEWER, args, writer);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("toolgate {args:?} kept running into a closed pipe"))
        .unwrap();
    (out.status, String::from_utf8(out.stderr).unwrap())
}

async fn pending_ids(gw: &GatewayProc) -> Vec<String> {
    pending_holds(gw)
        .await
        .iter()
        .map(|h| h["call_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn holds_and_events_end_quietly_with_status_0_when_their_reader_goes_away() {
    let (_upstream, gw) = setup().await;
    let (first, _c1) = start_hold(&gw, "pipe-1").await;
    let (second, _c2) = start_hold(&gw, "pipe-2").await;

    let (line, status, stderr) = first_line_then_hang_up(&gw, &["holds"]).await;
    let hold: Value = serde_json::from_str(&line).expect("a JSON hold");
    assert!(
        [&first, &second].contains(&&hold["call_id"].as_str().unwrap().to_owned()),
        "{line}"
    );
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));

    // Replayed, then live: the stream would go on, and must not once nobody reads it.
    let (line, status, stderr) = first_line_then_hang_up(&gw, &["events", "--since", "0"]).await;
    let event: Value = serde_json::from_str(&line).expect("a JSON event");
    assert_eq!(event["seq"], 1, "{line}");
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));

    for args in [&["holds"][..], &["events", "--since", "0"]] {
        let (status, stderr) = into_a_closed_pipe(&gw, args).await;
        assert_eq!(
            (status.code(), stderr.as_str()),
            (Some(0), ""),
            "toolgate {args:?} into a closed pipe"
        );
    }
}

#[tokio::test]
async fn holds_and_events_print_json_lines_into_a_pipe_and_a_table_when_asked() {
    let (_upstream, gw) = setup().await;
    let (first, _c1) = start_hold(&gw, "table-1").await;
    let (second, _c2) = start_hold(&gw, "table-2").await;

    let (status, stdout, stderr) = run_control_cli(&gw, VIEWER, &["holds"]).await;
    assert!(status.success(), "{stderr}");
    let ids: Vec<String> = stdout
        .lines()
        .map(|l| {
            let hold: Value = serde_json::from_str(l).expect("one JSON hold a line");
            hold["call_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, [first.clone(), second.clone()], "soonest expiry first");

    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["holds", "--output", "table"]).await;
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>().join(" "),
        "call state left identity upstream/tool risk target"
    );
    for (line, (id, page)) in lines[1..]
        .iter()
        .zip([(&first, "table-1"), (&second, "table-2")])
    {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], &id[id.len() - 8..], "{line}");
        assert_eq!(cells[1], "waiting", "{line}");
        assert!(cells[2].len() == 5 && cells[2].contains(':'), "{line}");
        assert_eq!(
            &cells[3..],
            [
                "token:ci-bot",
                "py/write_page",
                "write",
                &format!("page:{page}")
            ],
            "{line}"
        );
    }
    // Columns line up: every cell starts where its header does.
    let at = |line: &str, cell: &str| line.find(cell).unwrap();
    assert_eq!(at(lines[1], "token:"), at(lines[0], "identity"));
    assert_eq!(at(lines[2], "page:"), at(lines[0], "target"));

    // The live table: a header, then a line an event, the hold among them by its short id.
    let mut child = control_cli(
        &gw,
        VIEWER,
        &["events", "--since", "0", "--output", "table"],
        Stdio::piped(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let wanted = format!("{} held (waiting)", &second[second.len() - 8..]);
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains(&wanted);
            seen.push(line);
            if done {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line {wanted:?} in:\n{}", seen.join("\n")));
    assert_eq!(
        seen[0].split_whitespace().collect::<Vec<_>>(),
        ["seq", "time", "kind", "summary"]
    );
    assert!(seen[1].trim_start().starts_with("1  "), "{}", seen[1]);
    let decision = format!(
        "decision         {} hold token:ci-bot py/write_page",
        &second[second.len() - 8..]
    );
    assert!(
        seen.iter().any(|l| l.contains(&decision)),
        "no {decision:?} in:\n{}",
        seen.join("\n")
    );
    assert!(
        !seen.iter().any(|l| l.starts_with('{')),
        "every event of this version reads as a row:\n{}",
        seen.join("\n")
    );
}

fn common_prefix<'a>(ids: &[&'a str]) -> &'a str {
    let first = ids[0];
    let n = (0..first.len())
        .take_while(|&i| {
            ids.iter()
                .all(|id| id.as_bytes().get(i) == first.as_bytes().get(i))
        })
        .count();
    &first[..n]
}

#[tokio::test]
async fn approve_and_deny_take_the_short_id_or_a_unique_start_and_refuse_an_ambiguous_part() {
    let (_upstream, gw) = setup().await;
    let (a, _ca) = start_hold(&gw, "part-a").await;
    let (b, _cb) = start_hold(&gw, "part-b").await;
    let (c, _cc) = start_hold(&gw, "part-c").await;

    // UUIDv7: calls held within a minute share their start.
    let shared = common_prefix(&[&a, &b, &c]);
    assert!(shared.len() >= 4, "{a} {b} {c}");
    let (status, stdout, stderr) = run_control_cli(&gw, APPROVER, &["approve", shared]).await;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&format!(
            "\"{shared}\" matches 3 pending holds; nothing was resolved"
        )),
        "{stderr}"
    );
    for id in [&a, &b, &c] {
        assert!(
            stderr
                .lines()
                .any(|l| l.trim_start().starts_with(id.as_str())
                    && l.contains("token:ci-bot  py/write_page")),
            "{id} is not listed:\n{stderr}"
        );
    }
    assert_eq!(pending_ids(&gw).await, [a.clone(), b.clone(), c.clone()]);

    // The console's short id: the last 8 characters.
    let short = &a[a.len() - 8..];
    let (status, stdout, stderr) =
        run_control_cli(&gw, APPROVER, &["approve", short, "--reason", "CHG-7"]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr,
        format!("toolgate: approving {a} (token:ci-bot, py/write_page)\n")
    );
    let hold: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(
        (
            hold["call_id"].as_str(),
            hold["resolution"].as_str(),
            hold["reason"].as_str()
        ),
        (Some(a.as_str()), Some("approved"), Some("CHG-7"))
    );

    // A start that only b has, now that a is no longer pending.
    let unique = &b[..common_prefix(&[&b, &c]).len() + 1];
    let (status, stdout, stderr) = run_control_cli(&gw, APPROVER, &["deny", unique]).await;
    assert!(status.success(), "{stderr}");
    let hold: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(
        (hold["call_id"].as_str(), hold["resolution"].as_str()),
        (Some(b.as_str()), Some("denied"))
    );
    assert_eq!(pending_ids(&gw).await, std::slice::from_ref(&c));

    // A resolved hold is no longer pending: its short id names nothing.
    let (status, stdout, stderr) = run_control_cli(&gw, APPROVER, &["deny", short]).await;
    assert_eq!((status.code(), stdout.as_str()), (Some(1), ""));
    assert!(
        stderr.contains(&format!("no pending hold matches \"{short}\"")),
        "{stderr}"
    );
    assert_eq!(pending_ids(&gw).await, [c]);
}

#[tokio::test]
async fn store_migrate_runs_the_steps_not_run_yet_on_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let upstream = "[[upstream]]\nname = \"docs\"\nurl = \"http://127.0.0.1:9/mcp\"\n";
    std::fs::write(
        &config,
        format!("[gateway]\ndata_dir = \"data\"\n{upstream}"),
    )
    .unwrap();
    let migrate = || toolgate(&["store", "migrate", "--config", config.to_str().unwrap()]);
    let first = migrate();
    assert!(first.status.success(), "{first:?}");
    let steps = toolgate::gateway::store::MIGRATIONS.len();
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!(
            "toolgate store migrate: SQLite in {} at schema step {steps} of {steps} ({steps} run now)\n",
            dir.path().join("data").display()
        )
    );
    assert!(dir.path().join("data/toolgate.db").exists());
    let again = migrate();
    assert!(
        String::from_utf8_lossy(&again.stdout).ends_with("(0 run now)\n"),
        "{again:?}"
    );

    // A password in the URL is refused, and never echoed.
    std::fs::write(
        &config,
        format!(
            "[gateway]\nkey_file = \"k\"\n{upstream}[store]\nurl = \"postgres://tg:hunter2@db/x\"\n"
        ),
    )
    .unwrap();
    let refused = migrate();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("must not carry a password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let Some(toolgate::gateway::store::Location::Postgres { url, .. }) =
        toolgate::gateway::store::testing::fresh_postgres().await
    else {
        return;
    };
    std::fs::write(
        &config,
        format!("[gateway]\nkey_file = \"k\"\n{upstream}[store]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let first = migrate();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    let steps = toolgate::gateway::store::POSTGRES_MIGRATIONS.len();
    assert!(
        out.starts_with("toolgate store migrate: PostgreSQL at /")
            && out.contains(" (socket)/t_")
            && out.ends_with(&format!(
                "at schema step {steps} of {steps} ({steps} run now)\n"
            )),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&migrate().stdout).ends_with("(0 run now)\n"));
}
