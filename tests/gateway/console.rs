//! The console end to end, in a real terminal: tmux runs `toolgate console` against a
//! real gateway and upstream; keys approve a held call; a gateway restart is survived.

use std::time::Duration;

use serde_json::json;

use crate::decisions::{answer_of, call_tool, result_text};
use crate::support::*;

const APPROVER: &str = "tg_test-console-approver";

/// `toolgate console` for `gw` in a 120x40 tmux, with `token`, an empty config.toml in
/// `dir`, and `env` besides.
fn console_for(gw: &GatewayProc, token: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Tmux {
    let command = format!(
        "{} console --gateway http://{} --bell off",
        env!("CARGO_BIN_EXE_toolgate"),
        gw.control
    );
    let config = dir.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let mut all = vec![
        ("TOOLGATE_TOKEN", token),
        ("TOOLGATE_CONSOLE_CONFIG", config.to_str().unwrap()),
    ];
    all.extend_from_slice(env);
    Tmux::start(&command, &all, 120, 40)
}

#[tokio::test]
async fn an_operator_approves_a_held_call_in_a_real_terminal_and_the_console_survives_a_restart() {
    let upstream = PyUpstream::start().await;
    let config = format!(
        "{}\n[[operator]]\nname = \"olga\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\n",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 30"),
        sha256_hex(APPROVER)
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "before"})).await;

    let no_config = tempfile::tempdir().unwrap();
    let tmux = console_for(&gw, APPROVER, no_config.path(), &[]);
    tmux.wait_for("● connected").await;
    tmux.wait_for("page:before").await;

    // An API token's write is held; the client waits on its stream.
    let client = spawn_write_page(&gw, AGENT_TOKEN, "tmux", "hi", json!({}));
    tmux.wait_for("held: 1").await;
    tmux.send(&[":held", "Enter"]);
    tmux.wait_for("waiting").await;
    tmux.send(&["a"]);
    tmux.wait_for("Approve held call").await;
    tmux.send(&["y"]);

    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote tmux (2 bytes)"
    );
    tmux.wait_for("approved by olga").await;
    assert_eq!(
        upstream
            .posts()
            .iter()
            .filter(|p| p.body.contains("\"tmux\""))
            .count(),
        1
    );

    // The gateway restarts on the same control port; the console reconnects by itself.
    let gw = gw.restart_on_the_same_control_port().await;
    tmux.send(&[":live", "Enter"]);
    tmux.wait_for("● connected").await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "after"})).await;
    let screen = tmux.wait_for("page:after").await;
    assert!(
        screen.contains("page:before"),
        "the rows from before the restart are kept:\n{screen}"
    );
}

const ADMIN: &str = "tg_test-console-admin";

/// A gateway in front of the Python upstream, with ada as its admin, its catalog read.
async fn gateway_with_admin(upstream_settings: &str) -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let config = format!(
        "{}\n[[operator]]\nname = \"ada\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        upstream.config(upstream_settings),
        sha256_hex(ADMIN)
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

#[tokio::test]
async fn a_risk_edit_in_the_tools_view_turns_the_next_held_call_into_an_allowed_one() {
    let (_upstream, gw) =
        gateway_with_admin("trust_annotations = true\nhold_timeout_secs = 30").await;

    // The console's own config: a context whose token comes from a command.
    let dir = tempfile::tempdir().unwrap();
    let console_config = dir.path().join("config.toml");
    std::fs::write(
        &console_config,
        format!(
            "[[context]]\nname = \"e2e\"\ngateway = \"http://{}\"\n\
             token_command = \"printf %s {ADMIN}\"\n",
            gw.control
        ),
    )
    .unwrap();
    let command = format!(
        "{} console --context e2e --bell off",
        env!("CARGO_BIN_EXE_toolgate")
    );
    let tmux = Tmux::start(
        &command,
        &[("TOOLGATE_CONSOLE_CONFIG", console_config.to_str().unwrap())],
        120,
        40,
    );
    tmux.wait_for("e2e · live · held: 0 · ● connected").await;

    // As a write, an API token's write_page is held.
    let held = spawn_write_page(&gw, AGENT_TOKEN, "first", "one", json!({}));
    tmux.wait_for("held: 1").await;

    // The operator finds the tool, and sets it to read.
    tmux.send(&[":tools", "Enter"]);
    tmux.wait_for("tool (py)").await;
    tmux.send(&["/"]);
    tmux.send(&["-l", "tool:write_page"]);
    tmux.send(&["Enter"]);
    tmux.wait_for("tools · /tool:write_page · 1 of").await;
    tmux.send(&["e"]);
    tmux.wait_for("current, suggested").await;
    tmux.send(&["r"]);
    // Write to read is less strict: the console asks, with what the change would have
    // done to the recorded calls (the held write above: hold → allow), and Enter would
    // cancel.
    tmux.wait_for("write → read: less strict").await;
    tmux.wait_for("decisions: hold→allow 1").await;
    tmux.send(&["y"]);
    tmux.wait_for("py/write_page is now read").await;
    let screen = tmux.wait_for("ada").await;
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("write_page ") && l.contains(" read ")),
        "the row shows the new class:\n{screen}"
    );

    // The next call of that tool runs at once: the client gets its answer, not a hold.
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        call_tool(
            &gw,
            AGENT_TOKEN,
            "write_page",
            json!({"page_id": "second", "body": "two"}),
        ),
    )
    .await
    .expect("the call is not held");
    assert_eq!(result_text(&answer), "wrote second (3 bytes)");
    tmux.send(&[":live", "Enter"]);
    let screen = tmux.wait_for("page:second").await;
    let row = screen.lines().find(|l| l.contains("page:second")).unwrap();
    assert!(
        row.contains(" write_page ") && row.contains(" read ") && row.contains(" allow "),
        "the live view shows it allowed as a read:\n{screen}"
    );
    // The first call stays held: a class edit decides new calls, not waiting ones.
    assert!(screen.contains("held: 1"), "{screen}");
    held.abort();
}

const ROTATED_OLD: &str = "tg_test-console-oncall-old";
const ROTATED_NEW: &str = "tg_test-console-oncall-new";

/// Open holds as the control API lists them.
async fn open_holds(gw: &GatewayProc, token: &str) -> Vec<toolgate::api::HoldView> {
    #[derive(serde::Deserialize)]
    struct Page {
        holds: Vec<toolgate::api::HoldView>,
    }
    http()
        .get(gw.control_url("/api/v1/holds"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<Page>()
        .await
        .unwrap()
        .holds
}

#[tokio::test]
async fn forty_held_calls_scroll_to_the_thirtieth_approve_it_and_a_rotated_token_is_rejected() {
    let upstream = PyUpstream::start().await;
    let operator = |token: &str| {
        format!(
            "[[operator]]\nname = \"olga\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(token)
        )
    };
    let config = format!(
        "{}\n{}",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 240"),
        operator(ROTATED_OLD)
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;

    // The operator's token comes from a file, as from a secrets manager.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ROTATED_OLD).unwrap();
    let console_config = dir.path().join("config.toml");
    std::fs::write(
        &console_config,
        format!(
            "[[context]]\nname = \"oncall\"\ngateway = \"http://{}\"\ntoken_command = \"cat {}\"\n",
            gw.control,
            token_file.display()
        ),
    )
    .unwrap();
    let command = format!(
        "{} console --context oncall --bell off",
        env!("CARGO_BIN_EXE_toolgate")
    );
    // 80x24: the queue of 40 is taller than the screen.
    let tmux = Tmux::start(
        &command,
        &[("TOOLGATE_CONSOLE_CONFIG", console_config.to_str().unwrap())],
        80,
        24,
    );
    tmux.wait_for("● connected").await;

    // Forty held writes, one after another, so that expiry order is p01..p40.
    let mut clients = Vec::new();
    for i in 1..=40 {
        clients.push(spawn_write_page(
            &gw,
            AGENT_TOKEN,
            &format!("p{i:02}"),
            "x",
            json!({}),
        ));
        eventually("the hold is open", || async {
            (open_holds(&gw, ROTATED_OLD).await.len() == i).then_some(())
        })
        .await;
    }
    tmux.wait_for("held: 40").await;
    tmux.send(&[":held", "Enter"]);
    tmux.wait_for("page:p01").await;
    for _ in 0..29 {
        tmux.send(&["j"]);
    }
    let screen = tmux.wait_for("page:p30").await;
    assert!(
        !screen.contains("page:p01 "),
        "the list scrolled:\n{screen}"
    );
    tmux.send(&["a"]);
    let dialog = tmux.wait_for("Approve held call").await;
    assert!(
        dialog.contains("target    page:p30"),
        "the dialog names the 30th:\n{dialog}"
    );
    tmux.send(&["y"]);

    let thirtieth = clients.remove(29);
    let text = tokio::time::timeout(Duration::from_secs(15), thirtieth)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote p30 (1 bytes)"
    );
    let ran: Vec<String> = upstream
        .posts()
        .into_iter()
        .filter(|p| p.body.contains("\"write_page\""))
        .map(|p| p.body)
        .collect();
    assert_eq!(ran.len(), 1, "one call ran upstream: {ran:?}");
    assert!(ran[0].contains("\"p30\""), "and it is the 30th: {ran:?}");
    tmux.wait_for("approved by olga").await;

    // The operator token is rotated and the gateway restarts with only the new one.
    let gw = gw
        .restart_on_the_same_control_port_with(|config| {
            config.replace(&sha256_hex(ROTATED_OLD), &sha256_hex(ROTATED_NEW))
        })
        .await;
    let screen = tmux.wait_for("token rejected by").await;
    assert!(
        screen.contains(&format!("token rejected by http://{} (401)", gw.control)),
        "{screen}"
    );
    // The console stopped retrying; with the new token in place, :reconnect connects.
    std::fs::write(&token_file, ROTATED_NEW).unwrap();
    tmux.send(&[":reconnect", "Enter"]);
    tmux.wait_for("● connected").await;
    // It goes on from where it was: a call held now shows in the queue.
    clients.push(spawn_write_page(&gw, AGENT_TOKEN, "p41", "x", json!({})));
    tmux.send(&["G"]);
    tmux.wait_for("page:p41").await;
    for client in clients {
        client.abort();
    }
}

#[tokio::test]
async fn the_console_network_stops_at_a_rejected_token_instead_of_retrying() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&upstream.config("")).await;
    let client = toolgate::client::ControlClient::new(
        &format!("http://{}", gw.control),
        "tg_not-an-operator",
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(toolgate::console::net::run(client, 10, tx));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the console hears back")
        .expect("an event");
    match first {
        toolgate::console::app::NetEvent::Connection(
            toolgate::console::app::Connection::Rejected {
                status, gateway, ..
            },
        ) => {
            assert_eq!(status, 401);
            assert_eq!(gateway, format!("http://{}", gw.control));
        }
        other => panic!("expected a rejected token, got {other:?}"),
    }
    // No retries: the task ends and the channel closes.
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the network task ends")
        .unwrap();
    assert!(rx.recv().await.is_none());
}

/// A stand-in for vi: it asks for a reason on the terminal (so only a console that
/// gave the terminal away lets the keys reach it), handles a Ctrl-C as emacs handles
/// C-g, then adds a policy to the file.
const FAKE_EDITOR: &str = r#"#!/bin/sh
for f in "$@"; do file="$f"; done
trap 'printf " (ctrl-c: ignored) "' INT
printf 'fake editor: why? '
until read reason; do :; done
cat >> "$file" <<POLICY

@id("e2e-ci-page-reads-denied")
@reason("$reason")
forbid (principal == Token::"ci-bot", action == Action::"call_tool", resource == Tool::"py/read_page");
POLICY
"#;

#[tokio::test]
async fn a_policy_edited_in_the_editor_is_replayed_then_pushed_and_decides_the_next_call() {
    let (_upstream, gw) =
        gateway_with_admin("trust_annotations = true\nhold_timeout_secs = 30").await;
    // The recorded calls the draft is replayed against: two page reads by ci-bot.
    for page in ["one", "two"] {
        let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": page})).await;
        assert!(answer.get("result").is_some(), "{answer}");
    }

    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("fake-editor");
    std::fs::write(&editor, FAKE_EDITOR).unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmux = console_for(
        &gw,
        ADMIN,
        dir.path(),
        &[("VISUAL", ""), ("EDITOR", editor.to_str().unwrap())],
    );
    tmux.wait_for("● connected").await;
    tmux.send(&[":policy", "Enter"]);
    tmux.wait_for("in force   v1").await;
    tmux.wait_for("@id(\"read-allowed\")").await;

    // The editor gets the terminal: it asks on the screen, and the keys reach it. A
    // Ctrl-C there is the editor's: neither the console nor the edit dies of it.
    tmux.send(&["e"]);
    tmux.wait_for("fake editor: why?").await;
    tmux.send(&["C-c"]);
    tmux.wait_for("(ctrl-c: ignored)").await;
    tmux.send(&["-l", "pages are off limits to ci"]);
    // A second Enter, as after vi's `:wq`, must not throw the draft away.
    tmux.send(&["Enter", "Enter"]);

    // Back in the console: the draft, replayed over the recorded calls.
    let screen = tmux.wait_for("valid · replayed the last 2 decisions").await;
    assert!(screen.contains("an edit of v1 (in force)"), "{screen}");
    let screen = tmux.wait_for("allow→deny 2").await;
    for expected in [
        "unchanged 0",
        "tools       py/read_page allow→deny 2",
        "identities  token:ci-bot allow→deny 2",
        "y push over v1",
    ] {
        assert!(screen.contains(expected), "{expected:?}:\n{screen}");
    }
    assert!(
        screen.contains("page:one") && screen.contains("e2e-ci-page-reads-denied"),
        "a sample of the changed calls:\n{screen}"
    );
    tmux.send(&["y"]);
    // The status line says so for a few seconds (the push's answer or the stream's
    // event, whichever came last); the view shows it for good.
    tmux.wait_for("in force   v2 (").await;
    tmux.wait_for("policy v2").await;

    // The next matching call is decided by v2, with the reason typed in the editor.
    let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "three"})).await;
    assert!(
        answer.get("result").is_none() || answer["result"]["isError"] == true,
        "{answer}"
    );
    assert!(
        answer.to_string().contains("pages are off limits to ci"),
        "{answer}"
    );
    let last = crate::decisions::decisions(&gw).await.pop().unwrap();
    assert_eq!(last["outcome"], "deny");
    assert_eq!(last["policy_ids"], json!(["e2e-ci-page-reads-denied"]));
    let versions = http()
        .get(gw.control_url("/api/v1/policy/versions"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(versions["versions"][0]["version"], 2);
    assert_eq!(versions["versions"][0]["by"], "ada");
}

#[tokio::test]
async fn a_drafts_replay_push_and_shadow_read_the_real_gateways_answers() {
    use toolgate::console::app::{DraftFailure, NetEvent};
    use toolgate::console::net;
    let (_upstream, gw) = gateway_with_admin("").await;
    let client =
        toolgate::client::ControlClient::new(&format!("http://{}", gw.control), ADMIN).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the gateway answers")
            .expect("an event")
    };

    // Not Cedar: the draft learns where.
    net::replay_draft(
        client.clone(),
        1,
        "permit (principal, action, resource);\nforbid (principal action, resource);\n".into(),
        tx.clone(),
    );
    match next().await {
        NetEvent::DraftReplayed {
            id: 1,
            outcome: Err(DraftFailure::Invalid { line, column, .. }),
        } => assert_eq!((line, column), (Some(2), Some(19))),
        other => panic!("{other:?}"),
    }

    // Someone stores v2 after the edit began from v1: the push is refused and says who.
    let text = "permit (principal, action, resource);\n";
    client
        .put_policy(text, Some("bob's change".into()), None)
        .await
        .unwrap();
    net::push_draft(client.clone(), 2, text.into(), None, 1, tx.clone());
    match next().await {
        NetEvent::DraftPushed {
            id: 2,
            outcome: Err(DraftFailure::Stale(now)),
        } => assert_eq!(
            (now.version, now.by.as_str(), now.note.as_deref()),
            (2, "ada", Some("bob's change"))
        ),
        other => panic!("{other:?}"),
    }
    // Then what v2 changed from v1, for the operator to merge.
    match next().await {
        NetEvent::DraftConflictDiff { id: 2, diff } => {
            assert!(diff.starts_with("--- v1 ("), "{diff}");
            assert!(
                diff.contains("\n+permit (principal, action, resource);\n")
                    && diff.contains("\n-@id(\"read-allowed\")\n"),
                "{diff}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Installed as the shadow, the draft's text is what the gateway holds.
    net::shadow_draft(client.clone(), 3, text.into(), tx.clone());
    match next().await {
        NetEvent::DraftShadowed {
            id: 3,
            outcome: Ok(view),
        } => assert_eq!(view.sha256, sha256_hex(text)),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.shadow().await.unwrap().unwrap().text, text);
}
